//! The scenario harness: a cluster (a `keda-sandbox` process on kube-sim, or the cluster
//! `KEDA_E2E_KUBECONFIG` points at, with keda-rs installed), an event source the test controls,
//! and waiting helpers.

#![allow(dead_code, reason = "each scenario uses part of the harness")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use keda_operator_crd::ScaledObject;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A cluster with keda-rs running.
pub(crate) struct Cluster {
    pub(crate) client: kube::Client,
    pub(crate) kubeconfig: PathBuf,
    /// The address the operator reaches the test's sources on.
    pub(crate) source_host: String,
    sandbox: Option<tokio::process::Child>,
}

impl Cluster {
    /// The cluster `KEDA_E2E_KUBECONFIG` names, else a fresh `keda-sandbox --no-demo`.
    pub(crate) async fn start() -> Self {
        if let Ok(path) = std::env::var("KEDA_E2E_KUBECONFIG") {
            let text = std::fs::read_to_string(&path).unwrap();
            return Self {
                client: keda_sandbox::client_for(&text).await.unwrap(),
                kubeconfig: PathBuf::from(path),
                source_host: std::env::var("KEDA_E2E_SOURCE_HOST").expect(
                    "KEDA_E2E_SOURCE_HOST: an address of this machine the cluster can reach",
                ),
                sandbox: None,
            };
        }
        let kubeconfig = std::env::temp_dir().join(format!(
            "keda-e2e-{}-{}.kubeconfig",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keda-sandbox"))
            .args([
                "--no-demo",
                "--kubeconfig-out",
                kubeconfig.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            // The sandbox's log, kept next to its kubeconfig for when a scenario fails.
            .stderr(std::fs::File::create(kubeconfig.with_extension("log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("ready") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "keda-sandbox did not print its ready line");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let text = std::fs::read_to_string(&kubeconfig).unwrap();
        Self {
            client: keda_sandbox::client_for(&text).await.unwrap(),
            kubeconfig,
            source_host: "127.0.0.1".to_owned(),
            sandbox: Some(child),
        }
    }

    /// A fresh namespace for one scenario.
    pub(crate) async fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        keda_sandbox::ensure_namespace(&self.client, &name)
            .await
            .unwrap();
        name
    }

    pub(crate) async fn apply(&self, namespace: &str, object: Value) {
        let kind = object["kind"].as_str().unwrap().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let params = PatchParams::apply("keda-e2e").force();
        match kind.as_str() {
            "Deployment" => {
                Api::<Deployment>::namespaced(self.client.clone(), namespace)
                    .patch(&name, &params, &Patch::Apply(&object))
                    .await
                    .unwrap();
            }
            "ScaledObject" => {
                Api::<ScaledObject>::namespaced(self.client.clone(), namespace)
                    .patch(&name, &params, &Patch::Apply(&object))
                    .await
                    .unwrap();
            }
            "StatefulSet" => {
                Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(
                    self.client.clone(),
                    namespace,
                )
                .patch(&name, &params, &Patch::Apply(&object))
                .await
                .unwrap();
            }
            "HorizontalPodAutoscaler" => {
                Api::<HorizontalPodAutoscaler>::namespaced(self.client.clone(), namespace)
                    .patch(&name, &params, &Patch::Apply(&object))
                    .await
                    .unwrap();
            }
            "TriggerAuthentication" => {
                Api::<keda_operator_crd::TriggerAuthentication>::namespaced(
                    self.client.clone(),
                    namespace,
                )
                .patch(&name, &params, &Patch::Apply(&object))
                .await
                .unwrap();
            }
            "Secret" => {
                Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
                    self.client.clone(),
                    namespace,
                )
                .patch(&name, &params, &Patch::Apply(&object))
                .await
                .unwrap();
            }
            other => panic!("apply of {other} not supported by the harness"),
        }
    }

    pub(crate) fn scaled_objects(&self, namespace: &str) -> Api<ScaledObject> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub(crate) fn hpas(&self, namespace: &str) -> Api<HorizontalPodAutoscaler> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The Deployment's desired replicas.
    pub(crate) async fn replicas(&self, namespace: &str, name: &str) -> i32 {
        Api::<Deployment>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(1)
    }

    /// Waits until the Deployment has `want` replicas; returns how long it took.
    pub(crate) async fn wait_replicas(
        &self,
        namespace: &str,
        name: &str,
        want: i32,
        within: Duration,
    ) -> Duration {
        let started = tokio::time::Instant::now();
        let mut last = -1;
        while started.elapsed() < within {
            last = self.replicas(namespace, name).await;
            if last == want {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{namespace}/{name}: wanted {want} replicas within {within:?}, still {last}");
    }

    /// Waits until the StatefulSet has `want` replicas.
    pub(crate) async fn wait_statefulset_replicas(
        &self,
        namespace: &str,
        name: &str,
        want: i32,
        within: Duration,
    ) {
        let api: Api<k8s_openapi::api::apps::v1::StatefulSet> =
            Api::namespaced(self.client.clone(), namespace);
        let started = tokio::time::Instant::now();
        let mut last = -1;
        while started.elapsed() < within {
            last = api
                .get(name)
                .await
                .unwrap()
                .spec
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{namespace}/{name}: wanted {want} replicas within {within:?}, still {last}");
    }

    /// Asserts the Deployment keeps `want` replicas for `period`.
    pub(crate) async fn hold_replicas(
        &self,
        namespace: &str,
        name: &str,
        want: i32,
        period: Duration,
    ) {
        let started = tokio::time::Instant::now();
        while started.elapsed() < period {
            assert_eq!(
                self.replicas(namespace, name).await,
                want,
                "{namespace}/{name} changed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the ScaledObject's condition `type_` has `status` (and `reason`, if given).
    pub(crate) async fn wait_condition(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last = Value::Null;
        while tokio::time::Instant::now() < deadline {
            let so = self.scaled_objects(namespace).get(name).await.unwrap();
            let value = serde_json::to_value(&so).unwrap();
            if let Some(found) = value["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == type_))
            {
                last = found.clone();
                if found["status"] == status && reason.is_none_or(|r| found["reason"] == r) {
                    return found.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{namespace}/{name}: condition {type_} never became {status} {reason:?}; last {last}"
        );
    }

    pub(crate) async fn delete_scaled_object(&self, namespace: &str, name: &str) {
        self.scaled_objects(namespace)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    pub(crate) async fn annotate(&self, namespace: &str, name: &str, annotations: Value) {
        self.scaled_objects(namespace)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await
            .unwrap();
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// An event source: `GET /value` answers `{"value": N}`, or 503 while failing.
pub(crate) struct Source {
    pub(crate) addr: SocketAddr,
    value: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    pub(crate) url: String,
}

impl Source {
    pub(crate) async fn start(cluster: &Cluster) -> Self {
        let value = Arc::new(AtomicU64::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let state = (value.clone(), failing.clone());
        let router = Router::new()
            .route(
                "/value",
                get(
                    |State((value, failing)): State<(Arc<AtomicU64>, Arc<AtomicBool>)>| async move {
                        if failing.load(Ordering::Relaxed) {
                            return Err(StatusCode::SERVICE_UNAVAILABLE);
                        }
                        Ok(axum::Json(
                            json!({ "value": value.load(Ordering::Relaxed) }),
                        ))
                    },
                ),
            )
            .with_state(state);
        let bind = if cluster.sandbox.is_some() {
            "127.0.0.1:0"
        } else {
            "0.0.0.0:0"
        };
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url: format!("http://{}:{}/value", cluster.source_host, addr.port()),
            addr,
            value,
            failing,
        }
    }

    pub(crate) fn set(&self, value: u64) {
        self.value.store(value, Ordering::Relaxed);
    }

    pub(crate) fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

/// A Deployment with `replicas` replicas.
pub(crate) fn deployment(name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}
        }
    })
}

/// A `metrics-api` trigger reading `source`, `target` per replica.
pub(crate) fn metrics_api_trigger(source: &Source, target: u32) -> Value {
    json!({"type": "metrics-api", "metadata": {"url": source.url, "valueLocation": "value", "targetValue": target.to_string()}})
}

/// A ScaledObject for Deployment `name` with quick polling and cooldown, and an HPA without
/// stabilization windows or rate limits.
pub(crate) fn scaled_object(name: &str, triggers: Value, extra: Value) -> Value {
    let mut so = json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": 1,
            "cooldownPeriod": 2,
            "maxReplicaCount": 10,
            // No HPA stabilization or rate limits, so each step shows the HPA's arithmetic at once.
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 0},
                "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 100, "periodSeconds": 1}]}
            }}},
            "triggers": []
        }
    });
    so["spec"]["triggers"] = triggers;
    if let (Some(spec), Value::Object(extra)) = (so["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    so
}
