//! Aggregation, the HPA controller on External metrics, and validating admission webhooks,
//! against a real HTTPS backend that demands kube-sim's front-proxy client certificate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Config};
use serde_json::{Value, json};

use support::tls_backend::{self, Backend};

const SERVICE_NAMES: [&str; 2] = ["metrics.keda.svc", "webhook.keda.svc"];

struct Fixture {
    _sim: kube_sim::KubeSim,
    client: Client,
    backend: Backend,
}

/// kube-sim with `keda/metrics` and `keda/webhook` mapped to the HTTPS backend. The backend
/// trusts the front-proxy CA the simulator generates, so the simulator starts first, with the
/// backend's port reserved in advance.
async fn fixture() -> Fixture {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = reserved.local_addr().unwrap();
    drop(reserved);
    let config = kube_sim::Config {
        hpa_sync_period: Duration::from_millis(200),
        services: vec![
            ("keda".to_owned(), "metrics".to_owned(), backend_addr),
            ("keda".to_owned(), "webhook".to_owned(), backend_addr),
        ],
        ..kube_sim::Config::default()
    };
    let sim = kube_sim::start(config).await.unwrap();
    let backend =
        tls_backend::start_on(backend_addr, &sim.sim.front_proxy.ca_pem, &SERVICE_NAMES).await;
    // kube-rs retries 503s for minutes by default; these tests want to see them.
    let mut client_config = Config::new(sim.url().parse().unwrap());
    client_config.default_retry = false;
    let client = Client::try_from(client_config).unwrap();
    Fixture {
        _sim: sim,
        client,
        backend,
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn register_api_service(f: &Fixture) {
    let api: Api<kube::api::DynamicObject> = Api::all_with(
        f.client.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
            "apiservices",
        ),
    );
    let service: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
        "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                 "versionPriority": 100, "caBundle": b64(&f.backend.ca_pem),
                 "service": {"namespace": "keda", "name": "metrics", "port": 443}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &service).await.unwrap();
}

async fn raw_get(client: &Client, path: &str) -> Result<Value, kube::Error> {
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    client.request::<Value>(request).await
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..150 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_metrics_are_proxied_with_the_front_proxy_identity() {
    let f = fixture().await;
    register_api_service(&f).await;
    f.backend.state.queue_milli.store(42_500, Ordering::SeqCst);
    let list = raw_get(&f.client, "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/queue?labelSelector=scaledobject.keda.sh%2Fname%3Dorders")
        .await
        .unwrap();
    assert_eq!(list["kind"], json!("ExternalMetricValueList"));
    assert_eq!(list["items"][0]["value"], json!("42500m"));
    assert_eq!(
        f.backend
            .state
            .remote_users
            .lock()
            .unwrap()
            .last()
            .map(String::as_str),
        Some(kube_sim::aggregator::PROXY_USER)
    );
    assert_eq!(
        f.backend
            .state
            .selectors
            .lock()
            .unwrap()
            .last()
            .map(String::as_str),
        Some("labelSelector=scaledobject.keda.sh%2Fname%3Dorders"),
        "the query string reaches the backend unchanged"
    );
    // Further requests reuse the kept-alive connection instead of a handshake each.
    let before = f.backend.state.connections.load(Ordering::SeqCst);
    for _ in 0..10 {
        raw_get(
            &f.client,
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/queue?labelSelector=a%3Db",
        )
        .await
        .unwrap();
    }
    let opened = f.backend.state.connections.load(Ordering::SeqCst) - before;
    assert!(
        opened <= 1,
        "10 sequential proxied requests opened {opened} connections"
    );
    let groups = raw_get(&f.client, "/apis").await.unwrap();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == json!("external.metrics.k8s.io"))
    );
    let missing = raw_get(
        &f.client,
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/other",
    )
    .await
    .unwrap_err();
    match missing {
        kube::Error::Api(e) => assert_eq!((e.code, e.reason.as_str()), (404, "NotFound")),
        other => panic!("expected the backend's 404, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_proxy_ca_is_published_for_aggregated_servers() {
    let f = fixture().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(f.client.clone(), "kube-system");
    let cm = config_maps
        .get("extension-apiserver-authentication")
        .await
        .unwrap();
    let data = cm.data.unwrap();
    assert!(data["requestheader-client-ca-file"].starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        data["requestheader-allowed-names"],
        "[\"front-proxy-client\"]"
    );
    assert_eq!(
        data["requestheader-username-headers"],
        "[\"X-Remote-User\"]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_service_becomes_available_and_an_unmapped_one_does_not() {
    let f = fixture().await;
    register_api_service(&f).await;
    let api: Api<kube::api::DynamicObject> = Api::all_with(
        f.client.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
            "apiservices",
        ),
    );
    let available = eventually("Available=True", async || {
        let s = api.get("v1beta1.external.metrics.k8s.io").await.ok()?;
        let c = s.data["status"]["conditions"][0].clone();
        (c["status"] == json!("True")).then_some(c)
    })
    .await;
    assert_eq!(available["reason"], json!("Passed"));
    let orphan: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1.nowhere.example.com"},
        "spec": {"group": "nowhere.example.com", "version": "v1", "insecureSkipTLSVerify": true,
                 "service": {"namespace": "keda", "name": "absent"}}
    })).unwrap();
    api.create(&PostParams::default(), &orphan).await.unwrap();
    let missing = eventually("Available=False", async || {
        let s = api.get("v1.nowhere.example.com").await.ok()?;
        let c = s.data["status"]["conditions"][0].clone();
        (c["status"] == json!("False")).then_some(c)
    })
    .await;
    assert_eq!(missing["reason"], json!("MissingEndpoints"));
    let err = raw_get(&f.client, "/apis/nowhere.example.com/v1")
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => assert_eq!(e.code, 503),
        other => panic!("expected 503, got {other:?}"),
    }
}

fn deployment(name: &str, replicas: i32, labels: &Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hpa_scales_on_an_external_metric_through_aggregation() {
    let f = fixture().await;
    register_api_service(&f).await;
    f.backend.state.queue_milli.store(30_000, Ordering::SeqCst);
    let deployments: Api<Deployment> = Api::default_namespaced(f.client.clone());
    deployments
        .create(&PostParams::default(), &deployment("worker", 1, &json!({})))
        .await
        .unwrap();
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "worker"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
                 "minReplicas": 1, "maxReplicas": 10,
                 "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 100, "periodSeconds": 1}]},
                              "scaleDown": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 100, "periodSeconds": 1}]}},
                 "metrics": [{"type": "External", "external": {
                     "metric": {"name": "queue", "selector": {"matchLabels": {"scaledobject.keda.sh/name": "worker"}}},
                     "target": {"type": "AverageValue", "averageValue": "5"}}}]}
    }))
    .unwrap();
    let hpas: Api<HorizontalPodAutoscaler> = Api::default_namespaced(f.client.clone());
    hpas.create(&PostParams::default(), &hpa).await.unwrap();
    // 30 / 5 = 6 replicas.
    eventually("6 replicas", async || {
        let d = deployments.get("worker").await.ok()?;
        (d.spec?.replicas == Some(6)).then_some(())
    })
    .await;
    let status = eventually("HPA status", async || {
        let h = hpas.get("worker").await.ok()?;
        let s = h.status?;
        (s.desired_replicas == 6).then_some(s)
    })
    .await;
    let current = serde_json::to_value(&status.current_metrics.unwrap()[0]).unwrap();
    assert_eq!(current["external"]["metric"]["name"], json!("queue"));
    let events: Api<Event> = Api::default_namespaced(f.client.clone());
    let rescaled = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("SuccessfulRescale"))
        .unwrap();
    assert_eq!(
        rescaled.message.as_deref(),
        Some(
            "New size: 6; reason: external metric queue(scaledobject.keda.sh/name=worker) above target"
        )
    );
    assert!(
        f.backend
            .state
            .selectors
            .lock()
            .unwrap()
            .iter()
            .all(|s| s == "labelSelector=scaledobject.keda.sh%2Fname%3Dworker")
    );
    // Down to 2 when the queue drains to 10.
    f.backend.state.queue_milli.store(10_000, Ordering::SeqCst);
    eventually("2 replicas", async || {
        let d = deployments.get("worker").await.ok()?;
        (d.spec?.replicas == Some(2)).then_some(())
    })
    .await;
}

async fn register_webhook(f: &Fixture, failure_policy: &str, service: &str) {
    let api: Api<kube::api::DynamicObject> = Api::all_with(
        f.client.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
            ),
            "validatingwebhookconfigurations",
        ),
    );
    let config: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": format!("test-{}", failure_policy.to_lowercase())},
        "webhooks": [{"name": "deny.test.keda.sh", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": failure_policy,
            "clientConfig": {"service": {"namespace": "keda", "name": service, "path": "/validate"}, "caBundle": b64(&f.backend.ca_pem)},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]}]
    }))
    .unwrap();
    api.create(&PostParams::default(), &config).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validating_webhook_can_deny_a_request() {
    let f = fixture().await;
    register_webhook(&f, "Fail", "webhook").await;
    let deployments: Api<Deployment> = Api::default_namespaced(f.client.clone());
    deployments
        .create(
            &PostParams::default(),
            &deployment("allowed", 1, &json!({})),
        )
        .await
        .unwrap();
    let err = deployments
        .create(
            &PostParams::default(),
            &deployment("denied", 1, &json!({"deny": "true"})),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 403);
            assert_eq!(
                e.message,
                "admission webhook \"deny.test.keda.sh\" denied the request: label deny=true is not allowed"
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert!(
        deployments.get_opt("denied").await.unwrap().is_none(),
        "a denied object is not stored"
    );
    assert_eq!(f.backend.state.reviews.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policy_decides_when_the_webhook_is_unreachable() {
    let f = fixture().await;
    register_webhook(&f, "Fail", "absent").await;
    let deployments: Api<Deployment> = Api::default_namespaced(f.client.clone());
    let err = deployments
        .create(
            &PostParams::default(),
            &deployment("blocked", 1, &json!({})),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 500);
            assert!(
                e.message
                    .contains("failed calling webhook \"deny.test.keda.sh\""),
                "{}",
                e.message
            );
        }
        other => panic!("expected a webhook failure, got {other:?}"),
    }
    let configs: Api<kube::api::DynamicObject> = Api::all_with(
        f.client.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
            ),
            "validatingwebhookconfigurations",
        ),
    );
    configs
        .delete("test-fail", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    register_webhook(&f, "Ignore", "absent").await;
    deployments
        .create(
            &PostParams::default(),
            &deployment("let-through", 1, &json!({})),
        )
        .await
        .unwrap();
}
