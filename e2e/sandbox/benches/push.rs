//! Push activation latency through the whole stack: a row inserted into a PostgreSQL job table
//! → NOTIFY → the PostgreSQL queue sample scaler's `StreamIsActive` → the operator's
//! `external-push` trigger → the scale loop → `/scale` written. Prints percentiles over
//! `KEDA_RS_BENCH_TRIALS` (default 100) trials; asserts nothing about time.
//!
//! `cargo bench -p keda-sandbox --bench push` (needs PostgreSQL: `KEDA_TEST_POSTGRES_URL`, else
//! the machine's own on 127.0.0.1:5432, database `test`, started by
//! `external-scalers/scripts/ensure-test-services postgres` when down).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails by panicking"
)]
#![allow(clippy::too_many_lines, reason = "a linear benchmark script")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use keda_operator_crd::ScaledObject;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

#[tokio::main]
async fn main() {
    let trials: usize = std::env::var("KEDA_RS_BENCH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(100);
    let url = std::env::var("KEDA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../external-scalers/scripts/ensure-test-services"
        );
        assert!(
            std::process::Command::new(script)
                .arg("postgres")
                .status()
                .unwrap()
                .success()
        );
        "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned()
    });
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let table = format!("bench_jobs_{}", std::process::id());
    let channel = format!("{table}_keda");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id serial PRIMARY KEY);
         CREATE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('{channel}', TG_TABLE_NAME); RETURN NULL; END $$;
         CREATE TRIGGER {table}_notify AFTER INSERT OR DELETE ON {table}
             FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();"
    ))
    .await
    .unwrap();

    let scaler = keda_postgres_queue_scaler::PostgresQueueScaler::new(
        url.parse().unwrap(),
        keda_postgres_queue_scaler::Settings::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scaler_addr = listener.local_addr().unwrap();
    tokio::spawn(
        keda_external_scaler::Server::from_arc(Arc::new(scaler))
            .serve_on(listener, futures::future::pending()),
    );

    let kubeconfig =
        std::env::temp_dir().join(format!("keda-push-bench-{}.kubeconfig", std::process::id()));
    let sandbox = keda_sandbox::start(keda_sandbox::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        kubeconfig_out: kubeconfig,
        hpa_sync_period: Duration::from_secs(1),
    })
    .await
    .unwrap();
    let client = sandbox.client.clone();
    let params = PatchParams::apply("bench").force();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .patch("worker", &params, &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "worker"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "worker"}},
                     "template": {"metadata": {"labels": {"app": "worker"}}, "spec": {"containers": [{"name": "w", "image": "w"}]}}}
        })))
        .await
        .unwrap();
    Api::<ScaledObject>::namespaced(client.clone(), "default")
        .patch("worker", &params, &Patch::Apply(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "worker"},
            // Polling far slower than the benchmark: only pushes activate.
            "spec": {"scaleTargetRef": {"name": "worker"}, "pollingInterval": 3600, "cooldownPeriod": 3600,
                     "triggers": [{"type": "external-push", "metadata": {
                         "scalerAddress": scaler_addr.to_string(), "table": table, "channel": channel}}]}
        })))
        .await
        .unwrap();

    // Replica changes as the apiserver reports them.
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let watched = deployments.clone();
    tokio::spawn(async move {
        let mut stream = watcher(
            watched,
            watcher::Config::default().fields("metadata.name=worker"),
        )
        .applied_objects()
        .boxed();
        while let Some(Ok(deployment)) = stream.next().await {
            let _ = tx.send((
                Instant::now(),
                deployment.spec.and_then(|s| s.replicas).unwrap_or(0),
            ));
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut samples = Vec::with_capacity(trials);
    for trial in 0..trials {
        // Back to an empty queue and zero replicas (the scale loop, polling hourly, leaves both).
        db.execute(&format!("DELETE FROM {table}"), &[])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        deployments
            .patch_scale(
                "worker",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 0}})),
            )
            .await
            .unwrap();
        loop {
            let (_, replicas) = changes.recv().await.unwrap();
            if replicas == 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100 + (trial as u64 * 37) % 200)).await;
        while changes.try_recv().is_ok() {}
        let inserted = Instant::now();
        db.execute(&format!("INSERT INTO {table} DEFAULT VALUES"), &[])
            .await
            .unwrap();
        let activated_at = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let (at, replicas) = changes.recv().await.unwrap();
                if replicas >= 1 {
                    return at;
                }
            }
        })
        .await
        .expect("no activation within 30 s");
        samples.push(activated_at - inserted);
    }
    samples.sort();
    let at = |q: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "percentile index"
        )]
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index].as_secs_f64() * 1000.0
    };
    println!(
        "push activation (row inserted → /scale written, pollingInterval 3600 s) over {trials} trials: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    db.batch_execute(&format!(
        "DROP TABLE {table}; DROP FUNCTION {table}_notify();"
    ))
    .await
    .unwrap();
}
