//! Push activation latency of the PostgreSQL queue scaler: from a committed `INSERT` of a job to
//! the `StreamIsActive` message `true` received by a gRPC client, over the machine's real
//! PostgreSQL (or `KEDA_TEST_POSTGRES_URL`).
//!
//! Each trial empties the queue, waits for the pushed `false`, then inserts one row and times
//! until the pushed `true`. Periodic re-checks are off, so every activation is NOTIFY-driven.
//!
//! Run: `cargo bench -p keda-postgres-queue-scaler --bench push_latency`
//! (`PUSH_LATENCY_TRIALS`, default 200, at least 100).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark stops at the first failure"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use keda_external_scaler::testing::next_activity;
use support::{admin, config, create_queue, drop_queue, notify_only, pending_jobs, serve, unique};

const DEFAULT_TRIALS: usize = 200;
const MIN_TRIALS: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short, non-empty list"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials = std::env::var("PUSH_LATENCY_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_TRIALS)
        .max(MIN_TRIALS);
    let admin = admin().await;
    let table = unique("bench_jobs");
    let channel = unique("bench");
    create_queue(&admin, &table, &channel).await;
    let server = serve(config(), notify_only()).await;
    let mut client = server.client().await;
    let mut stream = client
        .stream_is_active(pending_jobs(&table, &channel))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        next_activity(&mut stream, "the next stream message")
            .await
            .expect("the stream ended")
    };
    assert!(!next().await, "the queue starts empty");

    let insert = format!(r#"INSERT INTO "{table}" DEFAULT VALUES"#);
    let empty = format!(r#"DELETE FROM "{table}""#);
    let mut latencies = Vec::with_capacity(trials);
    for trial in 0..=trials {
        let start = Instant::now();
        admin.batch_execute(&insert).await.unwrap();
        assert!(
            next().await,
            "trial {trial}: expected the pushed activation"
        );
        let latency = start.elapsed();
        // Trial 0 warms the connections up and is not counted.
        if trial > 0 {
            latencies.push(latency);
        }
        admin.batch_execute(&empty).await.unwrap();
        assert!(
            !next().await,
            "trial {trial}: expected the pushed deactivation"
        );
    }
    latencies.sort();
    println!(
        "postgres-queue push activation latency (INSERT committed -> StreamIsActive true), {} trials:",
        latencies.len()
    );
    println!(
        "  min {}  p50 {}  p90 {}  p99 {}  max {}",
        ms(latencies[0]),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies[latencies.len() - 1]),
    );
    drop(stream);
    server.shutdown().await.unwrap();
    drop_queue(&admin, &table).await;
}
