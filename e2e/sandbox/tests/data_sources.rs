//! End-to-end scenarios of the data-source scalers: a Deployment scaled 0 → N → 0 by a trigger
//! that reads a real server on this machine (started by `external-scalers/scripts/
//! ensure-test-services` when it is down, or a private one from `external-scalers/scripts/
//! test-server`). One module per scaler, in `data_sources/`.
//!
//! On a real cluster (`KEDA_E2E_KUBECONFIG`), the operator reaches the servers at
//! `KEDA_E2E_SOURCE_HOST`; the test itself writes to them on loopback. The `test-server`
//! servers then listen on every address of this machine and announce `KEDA_E2E_SOURCE_HOST`
//! where they name themselves (Redis Cluster nodes, the sentinel's master; see
//! `operator/tests/support/test_server.rs`); the machine's standard services (Redis :6379,
//! PostgreSQL :5432, MariaDB :3306) must be made to listen on that address by hand.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod support;

#[path = "data_sources/mysql.rs"]
mod mysql;
#[path = "data_sources/nats_jetstream.rs"]
mod nats_jetstream;
#[path = "../../../operator/tests/support/nats_text.rs"]
mod nats_text;
#[path = "data_sources/postgresql.rs"]
mod postgresql;
#[path = "data_sources/prometheus.rs"]
mod prometheus;
#[path = "data_sources/rabbitmq.rs"]
mod rabbitmq;
#[path = "data_sources/redis.rs"]
mod redis;
#[path = "../../../operator/tests/support/test_server.rs"]
mod test_server;

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Cluster, deployment, scaled_object};

const WAIT: Duration = Duration::from_secs(30);

/// Runs the project's script that starts a test server when nothing answers on `port`.
pub(crate) fn ensure(service: &str, port: u16) {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../external-scalers/scripts/ensure-test-services"
        );
        let status = std::process::Command::new(script)
            .arg(service)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{service} is down and could not be started"
        );
    }
}

/// What one scenario scales on.
pub(crate) struct Scenario {
    /// Namespace prefix and workload name.
    pub(crate) name: &'static str,
    /// The trigger (type, metadata, authenticationRef).
    pub(crate) trigger: Value,
    /// Objects applied first (Secrets, TriggerAuthentications).
    pub(crate) objects: Vec<Value>,
    /// The source's value that must scale the workload to `replicas`.
    pub(crate) high: u64,
    pub(crate) replicas: i32,
}

/// Applies the scenario's objects, a Deployment at 0 and a ScaledObject with its trigger; then
/// drives the source with `set`: 0 keeps 0 replicas, `high` scales to `replicas`, 0 again scales
/// back to 0.
pub(crate) async fn zero_to_n_to_zero<F, Fut>(scenario: Scenario, set: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let cluster = Cluster::start().await;
    let ns = cluster.namespace(scenario.name).await;
    let name = scenario.name;
    set(0).await;
    for object in scenario.objects {
        cluster.apply(&ns, object).await;
    }
    cluster.apply(&ns, deployment(name, 0)).await;
    cluster
        .apply(
            &ns,
            scaled_object(name, json!([scenario.trigger]), json!({})),
        )
        .await;
    cluster
        .wait_condition(&ns, name, "Ready", "True", Some("ScaledObjectReady"))
        .await;
    cluster
        .hold_replicas(&ns, name, 0, Duration::from_secs(2))
        .await;
    set(scenario.high).await;
    cluster
        .wait_replicas(&ns, name, scenario.replicas, WAIT)
        .await;
    cluster
        .wait_condition(&ns, name, "Active", "True", Some("ScalerActive"))
        .await;
    set(0).await;
    cluster.wait_replicas(&ns, name, 0, WAIT).await;
    cluster
        .wait_condition(&ns, name, "Active", "False", Some("ScalerNotActive"))
        .await;
}

/// The address the operator reaches a server on this machine at.
pub(crate) fn source_host() -> String {
    std::env::var("KEDA_E2E_SOURCE_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned())
}
