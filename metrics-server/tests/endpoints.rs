//! The real `keda-metrics-apiserver` binary, talked to over HTTPS: directly with kubectl, as the
//! front proxy, and through kube-sim's aggregation layer, with an in-memory operator stand-in
//! behind it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keda_proto::metrics::metric_service_server::{MetricService, MetricServiceServer};
use keda_proto::metrics::{GetMetricRequest, GetMetricResponse, MetricSample};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

/// An in-memory stand-in for the operator's metric service (no real operator yet exists to
/// serve these values in-process): metrics by (namespace, scaled object, metric name).
#[derive(Debug, Default)]
struct OperatorStandIn {
    values: Mutex<HashMap<(String, String, String), i64>>,
    calls: AtomicUsize,
    peers: Mutex<HashSet<SocketAddr>>,
    delay: Mutex<Duration>,
}

/// The tonic service around the shared stand-in state.
struct StandInService(Arc<OperatorStandIn>);

#[tonic::async_trait]
impl MetricService for StandInService {
    async fn get_metric(
        &self,
        request: tonic::Request<GetMetricRequest>,
    ) -> Result<tonic::Response<GetMetricResponse>, tonic::Status> {
        let this = &self.0;
        this.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(peer) = request.remote_addr() {
            this.peers.lock().unwrap().insert(peer);
        }
        let delay = *this.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let r = request.into_inner();
        let key = (
            r.namespace.clone(),
            r.scaled_object.clone(),
            r.metric_name.clone(),
        );
        let value = this.values.lock().unwrap().get(&key).copied();
        match value {
            Some(milli) => Ok(tonic::Response::new(GetMetricResponse {
                samples: vec![MetricSample {
                    metric_name: r.metric_name,
                    milli_value: milli,
                    timestamp_unix_millis: 1_767_225_600_000,
                    source: 1,
                }],
            })),
            None => Err(tonic::Status::not_found(format!(
                "ScaledObject {}/{} has no metric {}",
                r.namespace, r.scaled_object, r.metric_name
            ))),
        }
    }
}

async fn start_stand_in() -> (Arc<OperatorStandIn>, SocketAddr) {
    let stand_in = Arc::new(OperatorStandIn::default());
    stand_in.values.lock().unwrap().insert(
        ("default".into(), "orders".into(), "s0-queue".into()),
        42_500,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = MetricServiceServer::new(StandInService(stand_in.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (stand_in, addr)
}

struct Server {
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    _child: tokio::process::Child,
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Starts the binary on a free port with `--insecure-skip-auth` (local use, as kubectl talks to
/// it directly).
async fn start_server(operator: SocketAddr) -> Server {
    start_server_with(operator, &[]).await
}

async fn start_server_with(operator: SocketAddr, extra: &[&str]) -> Server {
    let metrics_addr = free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keda-metrics-apiserver"));
    cmd.args([
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        "0",
        "--insecure-skip-auth",
    ])
    .args(extra)
    .args(["--metrics-service-address", &operator.to_string()])
    .args(["--metrics-bind-address", &metrics_addr.to_string()])
    .stdout(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr: SocketAddr = line.rsplit("https://").next().unwrap().parse().unwrap();
    Server {
        addr,
        metrics_addr,
        _child: child,
    }
}

fn uuid_like() -> String {
    format!(
        "{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// kubectl against the server directly, skipping TLS verification (self-signed serving cert).
async fn kubectl_raw(server: &Server, path: &str) -> (bool, String, String) {
    support::kubectl_raw_with_token(server.addr, "unused", path).await
}

const METRIC_PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-queue?labelSelector=scaledobject.keda.sh%2Fname%3Dorders";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_discovery_and_metric_values_directly() {
    let (_stand_in, operator) = start_stand_in().await;
    let server = start_server(operator).await;
    let (ok, out, err) = kubectl_raw(&server, METRIC_PATH).await;
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], json!("ExternalMetricValueList"));
    assert_eq!(list["apiVersion"], json!("external.metrics.k8s.io/v1beta1"));
    assert_eq!(list["items"][0]["metricName"], json!("s0-queue"));
    assert_eq!(list["items"][0]["value"], json!("42500m"));
    assert_eq!(list["items"][0]["timestamp"], json!("2026-01-01T00:00:00Z"));
    let (ok, out, _) = kubectl_raw(&server, "/apis/external.metrics.k8s.io/v1beta1").await;
    assert!(ok);
    let resources: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resources["resources"][0]["name"], json!("externalmetrics"));
    let (ok, out, _) = kubectl_raw(&server, "/apis").await;
    assert!(ok);
    let groups: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        groups["groups"][0]["preferredVersion"]["groupVersion"],
        json!("external.metrics.k8s.io/v1beta1")
    );
    let (ok, out, _) = kubectl_raw(&server, "/apis/external.metrics.k8s.io").await;
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["kind"],
        json!("APIGroup")
    );
    let (ok, out, _) =
        kubectl_raw(&server, "/openapi/v3/apis/external.metrics.k8s.io/v1beta1").await;
    assert!(ok);
    assert!(serde_json::from_str::<Value>(&out).unwrap()["components"]["schemas"]["ExternalMetricValueList"].is_object());
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(kubectl_raw(&server, path).await.1, "ok");
    }
    let (ok, out, _) = kubectl_raw(&server, "/openapi/v2").await;
    assert!(ok && serde_json::from_str::<Value>(&out).unwrap()["swagger"] == json!("2.0"));
    let (ok, out, _) = kubectl_raw(&server, "/openapi/v3").await;
    assert!(ok && out.contains("apis/external.metrics.k8s.io/v1beta1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_kubernetes_statuses_with_meaningful_codes() {
    let (_stand_in, operator) = start_stand_in().await;
    let server = start_server(operator).await;
    let (ok, _, err) = kubectl_raw(
        &server,
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-queue",
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("Error from server (BadRequest)")
            && err.contains("scaledObject name is not specified"),
        "{err}"
    );
    let (ok, _, err) = kubectl_raw(&server, "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-queue?labelSelector=scaledobject.keda.sh%2Fname%3Dmissing").await;
    assert!(!ok);
    assert!(
        err.contains("Error from server (NotFound)")
            && err.contains("ScaledObject default/missing has no metric s0-queue"),
        "{err}"
    );
    // No operator listening: 503.
    let down = start_server(free_port()).await;
    let (ok, _, err) = kubectl_raw(&down, METRIC_PATH).await;
    assert!(!ok);
    assert!(
        err.contains("Error from server (ServiceUnavailable)"),
        "{err}"
    );
    let (ok, _, err) = kubectl_raw(&server, "/apis/nope").await;
    assert!(!ok && err.contains("NotFound"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_operator_is_a_gateway_timeout() {
    let (stand_in, operator) = start_stand_in().await;
    *stand_in.delay.lock().unwrap() = Duration::from_secs(2);
    let server = start_server_with(operator, &["--metrics-service-timeout", "200ms"]).await;
    let (ok, _, err) = kubectl_raw(&server, METRIC_PATH).await;
    assert!(!ok);
    assert!(
        err.contains("Error from server (Timeout)") && err.contains("did not answer within 200ms"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_operator_is_retried_with_backoff_not_on_every_request() {
    // A port that accepts connections and drops them at once, counting the attempts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator = listener.local_addr().unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let server = start_server(operator).await;
    for _ in 0..20 {
        let (ok, _, err) = kubectl_raw(&server, METRIC_PATH).await;
        assert!(!ok && err.contains("ServiceUnavailable"), "{err}");
    }
    let made = attempts.load(Ordering::SeqCst);
    assert!(made >= 1, "the operator was tried");
    assert!(
        made < 20,
        "20 requests while the operator is down made {made} connection attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_metric_make_one_call_on_one_connection() {
    let (stand_in, operator) = start_stand_in().await;
    *stand_in.delay.lock().unwrap() = Duration::from_millis(500);
    let server = Arc::new(start_server(operator).await);
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { kubectl_raw(&server, METRIC_PATH).await })
        })
        .collect();
    for r in requests {
        assert!(r.await.unwrap().0);
    }
    let calls = stand_in.calls.load(Ordering::SeqCst);
    assert!(
        calls < 20,
        "20 concurrent requests should share calls, made {calls}"
    );
    assert_eq!(
        stand_in.peers.lock().unwrap().len(),
        1,
        "one connection to the operator"
    );
    let body = reqwest_free_get(server.metrics_addr, "/metrics").await;
    assert!(
        body.contains(
            "keda_metrics_server_requests_total{endpoint=\"external_metric\",code=\"200\"} 20"
        ),
        "{body}"
    );
    assert!(
        body.contains(&format!("keda_metrics_server_operator_calls_total {calls}")),
        "{body}"
    );
}

/// A plain HTTP/1.1 GET, enough for the metrics endpoint.
async fn reqwest_free_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kube_sim_aggregation_with_front_proxy_authentication() {
    let (_stand_in, operator) = start_stand_in().await;
    // kube-sim first (it generates the front-proxy CA), with the metrics server's port reserved.
    let reserved = free_port();
    let config = kube_sim::Config {
        services: vec![("keda".into(), "keda-metrics-apiserver".into(), reserved)],
        ..kube_sim::Config::default()
    };
    let sim = kube_sim::start(config).await.unwrap();
    let kubeconfig = std::env::temp_dir().join(format!("keda-rs-ms-{}.kubeconfig", uuid_like()));
    sim.write_kubeconfig(&kubeconfig).unwrap();
    // The front-proxy CA is read from the ConfigMap kube-sim publishes, as in a cluster.
    let server = start_server_on(operator, None, reserved, &kubeconfig, &[]).await;
    // Direct requests: no credentials, or a token the apiserver rejects, are refused; the
    // simulator's own token passes TokenReview and SubjectAccessReview.
    let (ok, _, err) = kubectl_raw(&server, METRIC_PATH).await;
    assert!(
        !ok && err.contains("the bearer token was not accepted"),
        "{err}"
    );
    let (ok, _, err) = support::kubectl_raw_with_token(server.addr, "kube-sim", METRIC_PATH).await;
    assert!(ok, "{err}");
    let apiservice = json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
        "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": true,
                 "groupPriorityMinimum": 100, "versionPriority": 100,
                 "service": {"namespace": "keda", "name": "keda-metrics-apiserver", "port": 443}}
    });
    kubectl_apply(&kubeconfig, &apiservice).await;
    let out = tokio::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "get",
            "--raw",
            METRIC_PATH,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["items"][0]["value"], json!("42500m"));
}

/// A simulator and a kubeconfig file for it.
async fn simulator() -> (kube_sim::KubeSim, std::path::PathBuf) {
    let sim = kube_sim::start(kube_sim::Config::default()).await.unwrap();
    let kubeconfig = std::env::temp_dir().join(format!("keda-rs-ms-{}.kubeconfig", uuid_like()));
    sim.write_kubeconfig(&kubeconfig).unwrap();
    (sim, kubeconfig)
}

/// `kubectl apply -f -` of one object against the simulator.
async fn kubectl_apply(kubeconfig: &std::path::Path, object: &Value) {
    let mut apply = tokio::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "apply",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        apply.stdin.as_mut().unwrap(),
        object.to_string().as_bytes(),
    )
    .await
    .unwrap();
    drop(apply.stdin.take());
    assert!(apply.wait().await.unwrap().success());
}

/// A metric request as the aggregation layer sends it for `user`.
async fn as_front_proxy(
    sim: &kube_sim::KubeSim,
    addr: SocketAddr,
    user: &str,
) -> hyper::Response<hyper::body::Bytes> {
    let request = hyper::Request::get(METRIC_PATH)
        .header("x-remote-user", user)
        .header("x-remote-group", "system:authenticated")
        .body(hyper::body::Bytes::new())
        .unwrap();
    kube_sim::upstream::send(
        addr,
        &kube_sim::upstream::Trust::Insecure,
        &sim.sim.front_proxy,
        request,
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_proxied_users_are_authorized_with_subject_access_reviews() {
    let (_stand_in, operator) = start_stand_in().await;
    let (sim, kubeconfig) = simulator().await;
    // The CA given as a file this time, and no decision caching, so the new binding counts.
    let ca = sim.sim.front_proxy.ca_pem.clone();
    let server = start_server_on(
        operator,
        Some(&ca),
        free_port(),
        &kubeconfig,
        &["--authorization-cache-ttl", "0s"],
    )
    .await;
    let response = as_front_proxy(&sim, server.addr, "alice").await;
    assert_eq!(response.status(), 403, "alice has no RBAC binding yet");
    let status: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(status["reason"], json!("Forbidden"));
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("User \"alice\" cannot get resource \"s0-queue\""),
        "{status}"
    );
    kubectl_apply(&kubeconfig, &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "external-metrics-reader"},
        "rules": [{"apiGroups": ["external.metrics.k8s.io"], "resources": ["*"], "verbs": ["get"]}]})).await;
    kubectl_apply(&kubeconfig, &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "alice-reads-metrics"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "external-metrics-reader"},
        "subjects": [{"kind": "User", "name": "alice"}]})).await;
    let response = as_front_proxy(&sim, server.addr, "alice").await;
    assert_eq!(response.status(), 200, "allowed once bound");
    let list: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(list["items"][0]["value"], json!("42500m"));
    // Another user is still refused.
    assert_eq!(
        as_front_proxy(&sim, server.addr, "mallory").await.status(),
        403
    );
}

/// Starts the binary on `addr` with delegated authentication against `kubeconfig`'s apiserver;
/// the front-proxy CA comes from `--requestheader-client-ca-file` when given, else from the
/// cluster's `extension-apiserver-authentication` ConfigMap.
async fn start_server_on(
    operator: SocketAddr,
    ca: Option<&str>,
    addr: SocketAddr,
    kubeconfig: &std::path::Path,
    extra: &[&str],
) -> Server {
    let metrics_addr = free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keda-metrics-apiserver"));
    cmd.args([
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        &addr.port().to_string(),
    ])
    .args(["--metrics-service-address", &operator.to_string()])
    .args(["--metrics-bind-address", &metrics_addr.to_string()])
    .args(extra)
    .env("KUBECONFIG", kubeconfig)
    .stdout(Stdio::piped())
    .kill_on_drop(true);
    if let Some(ca) = ca {
        let path = std::env::temp_dir().join(format!("keda-rs-front-proxy-ca-{}.pem", uuid_like()));
        std::fs::write(&path, ca).unwrap();
        cmd.args(["--requestheader-client-ca-file", path.to_str().unwrap()]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    Server {
        addr,
        metrics_addr,
        _child: child,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_proxy_certificate_with_another_name_is_refused() {
    let (_stand_in, operator) = start_stand_in().await;
    let (sim, kubeconfig) = simulator().await;
    let ca = sim.sim.front_proxy.ca_pem.clone();
    let server = start_server_on(
        operator,
        Some(&ca),
        free_port(),
        &kubeconfig,
        &["--requestheader-allowed-names", "aggregator"],
    )
    .await;
    let response = as_front_proxy(&sim, server.addr, "alice").await;
    assert_eq!(response.status(), 401);
    let status: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(
        status["message"],
        json!("client certificate \"front-proxy-client\" is not an allowed front proxy")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_apiserver_fails_token_reviews_with_500() {
    let (_stand_in, operator) = start_stand_in().await;
    let kubeconfig =
        std::env::temp_dir().join(format!("keda-rs-ms-dead-{}.kubeconfig", uuid_like()));
    std::fs::write(
        &kubeconfig,
        kube_sim::kubeconfig(&format!("http://{}", free_port())),
    )
    .unwrap();
    let ca = kube_sim::upstream::FrontProxy::generate().unwrap().ca_pem;
    let server = start_server_on(operator, Some(&ca), free_port(), &kubeconfig, &[]).await;
    let (ok, _, err) =
        support::kubectl_raw_with_token(server.addr, "some-token", METRIC_PATH).await;
    assert!(!ok);
    assert!(
        err.contains("Error from server (InternalError)") && err.contains("TokenReview failed"),
        "{err}"
    );
}
