//! End-to-end scenarios for external scalers: the real `keda-sandbox` binary talking to
//! external scalers built on the project's SDK — a test scaler whose value the test sets, and
//! the PostgreSQL job-queue sample against the machine's PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keda_external_scaler::{MetricSpec, MetricValue, Scaler, ScalerRequest, Server};
use kube::api::{DeleteParams, ListParams};
use serde_json::json;
use support::{Cluster, deployment, scaled_object};

const WAIT: Duration = Duration::from_secs(30);

/// An external scaler whose queue length the test sets.
#[derive(Default)]
struct Settable {
    value: AtomicU64,
}

impl Scaler for Settable {
    async fn is_active(&self, _: &ScalerRequest) -> keda_external_scaler::Result<bool> {
        Ok(self.value.load(Ordering::Relaxed) > 0)
    }

    async fn metric_specs(
        &self,
        _: &ScalerRequest,
    ) -> keda_external_scaler::Result<Vec<MetricSpec>> {
        Ok(vec![MetricSpec::new("queue", 5.0)])
    }

    async fn metric_values(
        &self,
        _: &ScalerRequest,
        name: &str,
    ) -> keda_external_scaler::Result<Vec<MetricValue>> {
        #[expect(clippy::cast_precision_loss, reason = "small test values")]
        let value = self.value.load(Ordering::Relaxed) as f64;
        Ok(vec![MetricValue::new(name, value)])
    }
}

/// Serves `scaler` on a free port until the test ends (loopback for the sandbox; every
/// interface when the cluster is a real one, which reaches it at `KEDA_E2E_SOURCE_HOST`).
async fn serve<S: Scaler>(scaler: Arc<S>) -> SocketAddr {
    let bind = if std::env::var_os("KEDA_E2E_KUBECONFIG").is_some() {
        "0.0.0.0:0"
    } else {
        "127.0.0.1:0"
    };
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        Server::from_arc(scaler)
            .serve_on(listener, futures::future::pending())
            .await
            .unwrap();
    });
    addr
}

fn external_trigger(
    kind: &str,
    addr: SocketAddr,
    metadata: serde_json::Value,
) -> serde_json::Value {
    let host = std::env::var("KEDA_E2E_SOURCE_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let address = format!("{host}:{}", addr.port());
    let mut trigger = json!({"type": kind, "metadata": {"scalerAddress": address}});
    if let (Some(target), serde_json::Value::Object(extra)) =
        (trigger["metadata"].as_object_mut(), metadata)
    {
        target.extend(extra);
    }
    trigger
}

/// Established TCP connections whose local port is `port` (the server's side of them).
fn connections_to(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_trigger_scales_zero_to_n_and_back_to_zero() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("external").await;
    let scaler = Arc::new(Settable::default());
    let addr = serve(scaler.clone()).await;
    cluster.apply(&ns, deployment("worker", 0)).await;
    cluster
        .apply(
            &ns,
            scaled_object(
                "worker",
                json!([external_trigger(
                    "external",
                    addr,
                    json!({"queue": "orders"})
                )]),
                json!({}),
            ),
        )
        .await;
    cluster
        .wait_condition(&ns, "worker", "Ready", "True", Some("ScaledObjectReady"))
        .await;
    let hpa = cluster.hpas(&ns).get("keda-hpa-worker").await.unwrap();
    // KEDA's naming: `s<index>-<the server's metric name>`, not normalised.
    assert_eq!(
        hpa.spec.unwrap().metrics.unwrap()[0]
            .external
            .as_ref()
            .unwrap()
            .metric
            .name,
        "s0-queue"
    );
    cluster
        .hold_replicas(&ns, "worker", 0, Duration::from_secs(2))
        .await;
    scaler.value.store(12, Ordering::Relaxed);
    // ceil(12 / 5) = 3
    cluster.wait_replicas(&ns, "worker", 3, WAIT).await;
    scaler.value.store(0, Ordering::Relaxed);
    cluster.wait_replicas(&ns, "worker", 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_scaled_objects_share_one_connection_which_closes_when_they_are_gone() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("hygiene").await;
    let scaler = Arc::new(Settable::default());
    let addr = serve(scaler.clone()).await;
    for i in 0..200 {
        let name = format!("worker-{i}");
        cluster.apply(&ns, deployment(&name, 0)).await;
        let mut so = scaled_object(
            &name,
            json!([external_trigger("external", addr, json!({}))]),
            json!({}),
        );
        so["spec"]["pollingInterval"] = json!(5);
        cluster.apply(&ns, so).await;
    }
    let api = cluster.scaled_objects(&ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ready = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|so| {
                so.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.type_ == "Ready"
                                && c.status == keda_operator_crd::ConditionStatus::True
                        })
                    })
            })
            .count();
        if ready == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {ready} of 200 ScaledObjects became Ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let every loop poll at least once.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        connections_to(addr.port()),
        1,
        "200 ScaledObjects on one address must share one connection"
    );

    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while connections_to(addr.port()) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection stayed open after every ScaledObject was deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A connection to the test PostgreSQL (`KEDA_TEST_POSTGRES_URL`, else the machine's own,
/// started by the project's script when it is down).
async fn postgres() -> (tokio_postgres::Client, String) {
    let url = std::env::var("KEDA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../external-scalers/scripts/ensure-test-services"
        );
        let status = std::process::Command::new(script)
            .arg("postgres")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "PostgreSQL is not running and could not be started"
        );
        "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned()
    });
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    (client, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_push_activates_on_a_new_row_without_waiting_for_the_polling_interval() {
    let (db, url) = postgres().await;
    let table = format!("e2e_jobs_{}", std::process::id());
    let channel = format!("{table}_keda");
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (id serial PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
         CREATE OR REPLACE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('{channel}', TG_TABLE_NAME); RETURN NULL; END $$;
         CREATE TRIGGER {table}_notify AFTER INSERT OR UPDATE OR DELETE ON {table}
             FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();"
    ))
    .await
    .unwrap();
    let scaler = keda_postgres_queue_scaler::PostgresQueueScaler::new(
        url.parse().unwrap(),
        keda_postgres_queue_scaler::Settings::default(),
    );
    let addr = serve(Arc::new(scaler)).await;

    let cluster = Cluster::start().await;
    let ns = cluster.namespace("push").await;
    cluster.apply(&ns, deployment("worker", 0)).await;
    let trigger = external_trigger(
        "external-push",
        addr,
        json!({"table": table, "statusColumn": "status", "pendingValue": "pending", "channel": channel, "targetPendingJobs": "5"}),
    );
    let mut so = scaled_object("worker", json!([trigger]), json!({}));
    // Far longer than the test: only the push can activate the workload in time.
    so["spec"]["pollingInterval"] = json!(600);
    cluster.apply(&ns, so).await;
    cluster
        .wait_condition(&ns, "worker", "Ready", "True", Some("ScaledObjectReady"))
        .await;
    cluster
        .hold_replicas(&ns, "worker", 0, Duration::from_secs(2))
        .await;

    let inserted = tokio::time::Instant::now();
    db.execute(&format!("INSERT INTO {table} DEFAULT VALUES"), &[])
        .await
        .unwrap();
    let took = cluster
        .wait_replicas(&ns, "worker", 1, Duration::from_secs(20))
        .await;
    println!(
        "push activation: row inserted → 1 replica in {:?} (pollingInterval 600 s)",
        inserted.elapsed().min(took)
    );
    db.batch_execute(&format!(
        "DROP TABLE {table}; DROP FUNCTION {table}_notify();"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_applies_when_the_external_scaler_goes_away() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("external-down").await;
    let scaler = Arc::new(Settable::default());
    scaler.value.store(10, Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::from_arc(scaler.clone()).serve_on(listener, async {
        let _ = stopped.await;
    }));
    cluster.apply(&ns, deployment("worker", 0)).await;
    cluster
        .apply(
            &ns,
            scaled_object(
                "worker",
                json!([external_trigger("external", addr, json!({}))]),
                json!({"fallback": {"failureThreshold": 2, "replicas": 6}}),
            ),
        )
        .await;
    cluster.wait_replicas(&ns, "worker", 2, WAIT).await;
    // The scaler goes away: its metric keeps its name in the HPA and fallback answers it.
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    cluster.wait_replicas(&ns, "worker", 6, WAIT).await;
    cluster
        .wait_condition(&ns, "worker", "Fallback", "True", Some("FallbackExists"))
        .await;
    let hpa = cluster.hpas(&ns).get("keda-hpa-worker").await.unwrap();
    assert_eq!(
        hpa.spec.unwrap().metrics.unwrap()[0]
            .external
            .as_ref()
            .unwrap()
            .metric
            .name,
        "s0-queue"
    );
}
