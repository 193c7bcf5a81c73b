//! The real `keda-operator` binary against kube-sim: its probes, its Prometheus endpoint, leader
//! election between two processes, and the gRPC metric service the metrics server calls.
//!
//! Every test starts its own kube-sim and its own operator processes, on loopback ports picked
//! by binding and releasing listeners. Waits have generous deadlines; nothing asserts how long
//! anything took.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use keda_operator_crd::ScaledObject;
use keda_proto::metrics::GetMetricRequest;
use keda_proto::metrics::metric_service_client::MetricServiceClient;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_keda-operator");
/// How long anything may take before a test gives up.
const WAIT: Duration = Duration::from_secs(60);
/// How long a state that must not change is watched.
const HOLD: Duration = Duration::from_secs(6);
const POLL: Duration = Duration::from_millis(200);
const LEASE: &str = "operator.keda.sh";

/// A cron window from January 1st 00:00 to December 31st 23:59 UTC: always open (but for the
/// minute around New Year).
fn cron_trigger() -> Value {
    json!({"type": "cron", "metadata": {
        "timezone": "Etc/UTC", "start": "0 0 1 1 *", "end": "59 23 31 12 *", "desiredReplicas": "3"
    }})
}

/// The cron trigger's metric name, spelled as `scalers/cron.rs` spells it: `s<index>-cron-`,
/// the time zone, then each schedule with its spaces removed and `*` written `x`, and `/` in
/// the time zone normalised to `-`.
const CRON_METRIC: &str = "s0-cron-Etc-UTC-0011x-59233112x";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A kube-sim, a client for it, and a scratch directory with its kubeconfig.
struct Cluster {
    _sim: kube_sim::KubeSim,
    client: kube::Client,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Cluster {
    async fn start() -> Self {
        let sim = kube_sim::start(kube_sim::Config::default()).await.unwrap();
        let dir = std::env::temp_dir().join(format!(
            "keda-operator-binary-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let client = sim.client().unwrap();
        Self {
            _sim: sim,
            client,
            dir,
            kubeconfig,
        }
    }

    /// Creates the keda.sh CRDs and waits until they are Established.
    async fn install_crds(&self) {
        for crd in keda_operator_crd::crds() {
            kube_sim::client::install_crd(&self.client, &crd)
                .await
                .unwrap();
        }
    }

    async fn create_namespace(&self, name: &str) {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }

    /// A Deployment `name` with no replicas and a ScaledObject for it with `triggers`, polled
    /// every second.
    async fn scaled_deployment(&self, namespace: &str, name: &str, triggers: Value) {
        let params = PatchParams::apply("keda-operator-test").force();
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                             "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}
            }
        });
        Api::<Deployment>::namespaced(self.client.clone(), namespace)
            .patch(name, &params, &Patch::Apply(&deployment))
            .await
            .unwrap();
        let scaled_object = json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {"name": name},
                "pollingInterval": 1,
                "maxReplicaCount": 10,
                "triggers": triggers
            }
        });
        Api::<ScaledObject>::namespaced(self.client.clone(), namespace)
            .patch(name, &params, &Patch::Apply(&scaled_object))
            .await
            .unwrap();
    }

    /// The ScaledObject's status once its Ready condition is True.
    async fn wait_ready(&self, namespace: &str, name: &str, operator: &Operator) -> Value {
        let api: Api<ScaledObject> = Api::namespaced(self.client.clone(), namespace);
        eventually("the ScaledObject to be Ready", || async {
            let so = api.get(name).await.ok()?;
            let status = serde_json::to_value(so.status?).ok()?;
            status["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(status)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "the ScaledObject {namespace}/{name} did not become Ready\n{}",
                operator.log()
            )
        })
    }

    async fn lease(&self) -> Option<Lease> {
        Api::<Lease>::namespaced(self.client.clone(), "keda")
            .get_opt(LEASE)
            .await
            .unwrap()
    }

    async fn lease_holder(&self) -> Option<String> {
        self.lease().await?.spec?.holder_identity
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `keda-operator` process.
struct Operator {
    child: Child,
    pid: u32,
    probe: SocketAddr,
    metrics: SocketAddr,
    service: SocketAddr,
    log: PathBuf,
}

impl Operator {
    /// Starts the binary with `POD_NAMESPACE=keda`, `POD_NAME=name` and the extra arguments and
    /// environment, and returns once it listens on all three ports. A port taken between
    /// picking and binding it is picked again.
    async fn spawn(cluster: &Cluster, name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        for attempt in 0..5 {
            let [probe, metrics, service] = free_addrs();
            let log = cluster.dir.join(format!("{name}-{attempt}.log"));
            let mut command = Command::new(BINARY);
            command
                .arg(format!("--health-probe-bind-address={probe}"))
                .arg(format!("--metrics-bind-address={metrics}"))
                .arg(format!("--metrics-service-bind-address={service}"))
                .arg(format!(
                    "--cert-dir={}",
                    cluster.dir.join("no-certs").display()
                ))
                .args(args);
            for (key, _) in std::env::vars() {
                if key.starts_with("KEDA_") || key == "WATCH_NAMESPACE" {
                    command.env_remove(key);
                }
            }
            command
                .env("KUBECONFIG", &cluster.kubeconfig)
                .env("POD_NAMESPACE", "keda")
                .env("POD_NAME", name)
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .kill_on_drop(true);
            let child = command.spawn().unwrap();
            let pid = child.id().unwrap();
            let mut operator = Self {
                child,
                pid,
                probe,
                metrics,
                service,
                log,
            };
            // The binary logs this line once all three listeners are bound.
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                if operator.child.try_wait().unwrap().is_some() {
                    break;
                }
                if operator.log().contains("metric service listening") {
                    return operator;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the operator {name} did not start listening\n{}",
                    operator.log()
                );
                tokio::time::sleep(POLL).await;
            }
            assert!(
                operator.log().contains("cannot listen"),
                "the operator {name} exited\n{}",
                operator.log()
            );
        }
        panic!("the operator {name} found no free ports in five attempts");
    }

    /// `<POD_NAME>_<pid>`, the identity the operator holds the Lease with.
    fn identity(&self, name: &str) -> String {
        format!("{name}_{}", self.pid)
    }

    /// The process's log so far.
    fn log(&self) -> String {
        read_log(&self.log)
    }

    async fn probe_status(&self, path: &str) -> Option<u16> {
        get(self.probe, path).await.map(|(status, _)| status)
    }

    /// Waits until `/readyz` answers 200.
    async fn wait_ready(&self, who: &str) {
        eventually(&format!("{who} to be ready"), || async {
            (self.probe_status("/readyz").await? == 200).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{who} never became ready\n{}", self.log()));
    }

    async fn metrics_text(&self) -> String {
        let (status, body) = get(self.metrics, "/metrics").await.unwrap();
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    async fn metric_client(&self) -> MetricServiceClient<tonic::transport::Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.service))
            .unwrap()
            .connect()
            .await
            .unwrap();
        MetricServiceClient::new(channel)
    }
}

fn read_log(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    format!("--- {} ---\n{log}", path.display())
}

/// Three distinct loopback addresses no one listened on a moment ago.
fn free_addrs() -> [SocketAddr; 3] {
    let listeners = [(); 3].map(|()| std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap());
    listeners.map(|l| l.local_addr().unwrap())
}

/// `GET http://<addr><path>`: the status and body, `None` when nothing answers.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Polls `check` until it returns `Some`, for at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("gave up waiting for {what}");
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Checks `check` repeatedly for [`HOLD`]; every check must pass.
async fn holds<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let until = tokio::time::Instant::now() + HOLD;
    while tokio::time::Instant::now() < until {
        check().await;
        tokio::time::sleep(POLL).await;
    }
}

/// The sample lines of one metric family in Prometheus text.
fn samples<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_at_once_readyz_only_once_the_scaled_object_cache_syncs() {
    let cluster = Cluster::start().await;
    // No CRDs yet: the ScaledObject watch cannot list, so the cache cannot sync.
    let operator = Operator::spawn(&cluster, "probes", &[], &[]).await;
    assert_eq!(
        operator.probe_status("/healthz").await,
        Some(200),
        "{}",
        operator.log()
    );
    holds(|| async {
        assert_eq!(
            operator.probe_status("/readyz").await,
            Some(503),
            "ready before ScaledObjects could be listed\n{}",
            operator.log()
        );
        assert_eq!(operator.probe_status("/healthz").await, Some(200));
    })
    .await;

    cluster.install_crds().await;
    operator.wait_ready("the operator").await;
    assert_eq!(operator.probe_status("/healthz").await, Some(200));
    assert_eq!(operator.probe_status("/nowhere").await, Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_build_info_and_scaler_values_with_keda_labels() {
    let cluster = Cluster::start().await;
    cluster.install_crds().await;
    cluster.create_namespace("shop").await;
    let operator = Operator::spawn(&cluster, "metrics", &[], &[]).await;

    let text = operator.metrics_text().await;
    assert!(
        text.lines().any(|l| l.starts_with("keda_build_info")
            && l.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))),
        "{text}"
    );
    assert!(
        samples(&text, "keda_scaler_metrics_value").is_empty(),
        "a scaler value before any ScaledObject exists:\n{text}"
    );

    operator.wait_ready("the operator").await;
    cluster
        .scaled_deployment("shop", "orders", json!([cron_trigger()]))
        .await;
    let found = eventually("a keda_scaler_metrics_value sample", || async {
        let text = operator.metrics_text().await;
        samples(&text, "keda_scaler_metrics_value")
            .into_iter()
            .find(|line| line.contains("scaledObject=\"orders\""))
            .map(str::to_owned)
    })
    .await;
    let Some(line) = found else {
        let text = operator.metrics_text().await;
        panic!(
            "no keda_scaler_metrics_value for the ScaledObject\n{text}\n{}",
            operator.log()
        );
    };
    let metric_label = format!("metric=\"{CRON_METRIC}\"");
    for label in [
        "namespace=\"shop\"",
        "scaledObject=\"orders\"",
        "triggerIndex=\"0\"",
        metric_label.as_str(),
        "scaler=\"cronScaler\"",
        "type=\"scaledobject\"",
    ] {
        assert!(line.contains(label), "{label} missing from {line}");
    }
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (value - 3.0).abs() < f64::EPSILON,
        "inside the window the value is desiredReplicas: {line}"
    );
    let text = operator.metrics_text().await;
    assert!(
        samples(&text, "keda_scaler_active")
            .iter()
            .any(|l| l.contains("scaledObject=\"orders\"") && l.ends_with(" 1")),
        "{text}"
    );
}

/// KEDA publishes its build information as the series `keda_build_info`, which dashboards
/// query by that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_has_kedas_series_name() {
    let cluster = Cluster::start().await;
    let operator = Operator::spawn(&cluster, "build-info", &[], &[]).await;
    let text = operator.metrics_text().await;
    let build_info = samples(&text, "keda_build_info");
    assert_eq!(build_info.len(), 1, "{text}");
    assert!(build_info[0].ends_with(" 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_operator_waits_for_the_lease_and_takes_over_when_the_first_dies() {
    let cluster = Cluster::start().await;
    cluster.install_crds().await;
    cluster.create_namespace("keda").await;
    let args = ["--leader-elect"];
    let timings = [
        ("KEDA_OPERATOR_LEADER_ELECTION_LEASE_DURATION", "3s"),
        ("KEDA_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE", "2s"),
        ("KEDA_OPERATOR_LEADER_ELECTION_RETRY_PERIOD", "500ms"),
    ];

    let mut first = Operator::spawn(&cluster, "first", &args, &timings).await;
    let first_identity = first.identity("first");
    let held = eventually("the first operator to hold the Lease", || async {
        (cluster.lease_holder().await? == first_identity).then_some(())
    })
    .await;
    if held.is_none() {
        let holder = cluster.lease_holder().await;
        panic!(
            "the Lease is held by {holder:?}, not {first_identity}\n{}",
            first.log()
        );
    }
    first.wait_ready("the leader").await;
    let lease = cluster.lease().await.unwrap().spec.unwrap();
    assert_eq!(lease.lease_duration_seconds, Some(3));
    assert_eq!(lease.lease_transitions, Some(0));

    let second = Operator::spawn(&cluster, "second", &args, &timings).await;
    let second_identity = second.identity("second");
    assert_eq!(second.probe_status("/healthz").await, Some(200));
    // Longer than the lease lasts: the first keeps renewing, the second keeps waiting.
    holds(|| async {
        assert_eq!(
            cluster.lease_holder().await.as_deref(),
            Some(first_identity.as_str())
        );
        assert_eq!(
            second.probe_status("/readyz").await,
            Some(503),
            "the second operator is ready while the first leads\n{}",
            second.log()
        );
        assert_eq!(first.probe_status("/readyz").await, Some(200));
    })
    .await;
    assert!(
        second.log().contains("waiting for leadership"),
        "{}",
        second.log()
    );
    // The standby's metric service answers at once, with UNAVAILABLE (which the metrics
    // server retries), rather than leaving the caller hanging.
    let standby = second
        .metric_client()
        .await
        .get_metric(keda_proto::metrics::GetMetricRequest {
            namespace: "default".into(),
            scaled_object: "any".into(),
            metric_name: "s0-any".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(standby.code(), tonic::Code::Unavailable, "{standby:?}");

    first.child.kill().await.unwrap();
    eventually("the second operator to take the Lease", || async {
        (cluster.lease_holder().await? == second_identity).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the second operator never took the Lease\n{}", second.log()));
    second.wait_ready("the new leader").await;
    let lease = cluster.lease().await.unwrap().spec.unwrap();
    assert!(lease.holder_identity.unwrap().starts_with("second"));
    assert_eq!(lease.lease_transitions, Some(1));
    assert!(second.log().contains("acquired leadership"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_stops() {
    let cluster = Cluster::start().await;
    cluster.install_crds().await;
    cluster.create_namespace("keda").await;
    let timings = [
        ("KEDA_OPERATOR_LEADER_ELECTION_LEASE_DURATION", "3s"),
        ("KEDA_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE", "2s"),
        ("KEDA_OPERATOR_LEADER_ELECTION_RETRY_PERIOD", "500ms"),
    ];
    let mut leader = Operator::spawn(
        &cluster,
        "leader",
        &["--leader-elect", "--leader-election-id", LEASE],
        &timings,
    )
    .await;
    leader.wait_ready("the leader").await;
    let identity = leader.identity("leader");
    assert_eq!(cluster.lease_holder().await, Some(identity.clone()));

    // Someone else takes the Lease, for a minute.
    let api = Api::<Lease>::namespaced(cluster.client.clone(), "keda");
    let mut lease = api.get(LEASE).await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".to_owned());
    spec.lease_duration_seconds = Some(60);
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        jiff::Timestamp::now(),
    ));
    api.replace(LEASE, &PostParams::default(), &lease)
        .await
        .unwrap();

    let Ok(status) = tokio::time::timeout(WAIT, leader.child.wait()).await else {
        panic!(
            "the operator kept running without the Lease\n{}",
            leader.log()
        );
    };
    let status = status.unwrap();
    assert!(!status.success(), "{status}\n{}", leader.log());
    assert!(leader.log().contains("lost leadership"), "{}", leader.log());
    assert_eq!(cluster.lease_holder().await.as_deref(), Some("intruder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_service_answers_the_cron_value_and_refuses_unknown_or_empty_requests() {
    let cluster = Cluster::start().await;
    cluster.install_crds().await;
    cluster.create_namespace("grpc").await;
    let operator = Operator::spawn(&cluster, "service", &[], &[]).await;
    operator.wait_ready("the operator").await;
    cluster
        .scaled_deployment("grpc", "worker", json!([cron_trigger()]))
        .await;
    let status = cluster.wait_ready("grpc", "worker", &operator).await;
    assert_eq!(
        status["externalMetricNames"],
        json!([CRON_METRIC]),
        "{status}"
    );
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(cluster.client.clone(), "grpc")
        .get("keda-hpa-worker")
        .await
        .unwrap();
    let metrics = hpa.spec.unwrap().metrics.unwrap();
    assert_eq!(
        metrics[0].external.as_ref().unwrap().metric.name,
        CRON_METRIC
    );

    let mut client = operator.metric_client().await;
    let request = |namespace: &str, scaled_object: &str, metric: &str| GetMetricRequest {
        namespace: namespace.to_owned(),
        scaled_object: scaled_object.to_owned(),
        metric_name: metric.to_owned(),
    };
    let response = client
        .get_metric(request("grpc", "worker", CRON_METRIC))
        .await
        .unwrap_or_else(|e| panic!("GetMetric failed: {e}\n{}", operator.log()))
        .into_inner();
    assert_eq!(response.samples.len(), 1, "{response:?}");
    let sample = &response.samples[0];
    assert_eq!(sample.metric_name, CRON_METRIC);
    // Inside the window the trigger reports desiredReplicas against a target of 1.
    assert_eq!(sample.milli_value, 3000, "{sample:?}");
    assert!(sample.timestamp_unix_millis > 0, "{sample:?}");

    let unknown_metric = client
        .get_metric(request("grpc", "worker", "s0-cron-Etc-UTC-nothing"))
        .await
        .unwrap_err();
    assert_eq!(
        unknown_metric.code(),
        tonic::Code::NotFound,
        "{unknown_metric}"
    );
    let unknown_object = client
        .get_metric(request("grpc", "nobody", CRON_METRIC))
        .await
        .unwrap_err();
    assert_eq!(
        unknown_object.code(),
        tonic::Code::NotFound,
        "{unknown_object}"
    );
    let other_namespace = client
        .get_metric(request("default", "worker", CRON_METRIC))
        .await
        .unwrap_err();
    assert_eq!(
        other_namespace.code(),
        tonic::Code::NotFound,
        "{other_namespace}"
    );
    let empty = client
        .get_metric(GetMetricRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument, "{empty}");
}
