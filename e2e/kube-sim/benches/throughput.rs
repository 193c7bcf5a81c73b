//! Throughput and latency of an in-process kube-sim under kube-rs clients.
//!
//! A benchmark, not a test: it measures and prints, and asserts nothing about time. It starts a
//! simulator on 127.0.0.1 and, for a fixed duration each, keeps `concurrency` tasks issuing one
//! kind of request through a shared `kube::Client`: GET of one ConfigMap, LIST of 100
//! ConfigMaps, merge PATCH of one Deployment, GET of its `/scale`, the delay from a merge PATCH
//! of a ConfigMap to its watch event arriving (a watch is open on those ConfigMaps), and CREATE
//! of ConfigMaps (last, since it grows the store every other operation would then work on).
//! Then it prints the requests, rate, p50 and p99 latency of each and the process RSS after
//! each one and at the end.
//!
//! Settings, from the environment: `KUBE_SIM_BENCH_SECONDS` (default 5) per operation and
//! `KUBE_SIM_BENCH_CONCURRENCY` (default 16) tasks at once.
//!
//! `cargo bench -p kube-sim --bench throughput`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark stops at the first failure of its setup"
)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::oneshot;

/// How long one PATCH may wait for its watch event before it counts as an error.
const WATCH_TIMEOUT: Duration = Duration::from_secs(10);
const SEQ_ANNOTATION: &str = "bench.kube-sim.keda.sh/seq";

struct Settings {
    duration: Duration,
    concurrency: usize,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        Self {
            duration: Duration::from_secs(number("KUBE_SIM_BENCH_SECONDS", 5)),
            concurrency: usize::try_from(number("KUBE_SIM_BENCH_CONCURRENCY", 16)).unwrap_or(16),
        }
    }
}

/// What one operation measured.
struct Row {
    operation: &'static str,
    elapsed: Duration,
    /// Latencies of the requests that succeeded, sorted.
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    /// The process RSS once the operation had run.
    rss_after: String,
}

/// Runs `op` from `settings.concurrency` tasks until `settings.duration` has passed. `op` gets
/// its task's index (so a task can own an object) and a sequence number unique to the call.
async fn measure<F, Fut>(operation: &'static str, settings: &Settings, op: F) -> Row
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let sequence = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + settings.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..settings.concurrency {
        let op = op.clone();
        let sequence = sequence.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            while Instant::now() < deadline {
                let n = sequence.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                match op(task, n).await {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut row = Row {
        operation,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
        rss_after: String::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors, first_error) = done.expect("a benchmark task panicked");
        row.latencies.extend(latencies);
        row.errors += errors;
        row.first_error = row.first_error.or(first_error);
    }
    row.elapsed = start.elapsed();
    row.latencies.sort_unstable();
    row.rss_after = status_field("VmRSS:");
    eprintln!("  {operation}: done");
    row
}

/// The nearest-rank `p`th percentile of sorted latencies, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: usize) -> Option<f64> {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).map(|d| d.as_secs_f64() * 1000.0)
}

fn as_f64(n: usize) -> f64 {
    u32::try_from(n).map_or(f64::from(u32::MAX), f64::from)
}

fn print_table(rows: &[Row], settings: &Settings) {
    println!();
    println!(
        "kube-sim throughput: {} concurrent tasks, {} s per operation, one kube::Client, 127.0.0.1",
        settings.concurrency,
        settings.duration.as_secs()
    );
    println!();
    println!(
        "{:<34} {:>9} {:>7} {:>10} {:>9} {:>9} {:>13}",
        "operation", "requests", "errors", "req/s", "p50 ms", "p99 ms", "RSS after"
    );
    println!("{}", "-".repeat(97));
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    for row in rows {
        let requests = row.latencies.len();
        println!(
            "{:<34} {:>9} {:>7} {:>10.1} {:>9} {:>9} {:>13}",
            row.operation,
            requests,
            row.errors,
            as_f64(requests) / row.elapsed.as_secs_f64(),
            ms(percentile_ms(&row.latencies, 50)),
            ms(percentile_ms(&row.latencies, 99)),
            row.rss_after,
        );
    }
    for row in rows {
        if let Some(e) = &row.first_error {
            println!("first error of {}: {e}", row.operation);
        }
    }
}

/// A field of /proc/self/status, e.g. `VmRSS:`.
fn status_field(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map_or_else(|| "unknown".to_owned(), |v| v.trim().to_owned())
}

fn from_json<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn config_map(name: &str, labels: &serde_json::Value) -> ConfigMap {
    from_json(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"key": "value", "other": "a somewhat longer value, to carry a few bytes"}
    }))
}

fn seq_patch(n: u64) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"annotations": {SEQ_ANNOTATION: n.to_string()}}}))
}

/// Objects waiting for their watch event: name → (sequence number, whom to tell).
type Pending = Arc<Mutex<HashMap<String, (String, oneshot::Sender<()>)>>>;

/// Opens a watch on the ConfigMaps labelled `bench=watch` from `resource_version`, and tells
/// each pending PATCH when the change it made arrives.
async fn spawn_watch(
    api: Api<ConfigMap>,
    resource_version: &str,
    pending: Pending,
) -> tokio::task::JoinHandle<()> {
    let stream = api
        .watch(
            &WatchParams::default().labels("bench=watch"),
            resource_version,
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(Ok(event)) = stream.next().await {
            let WatchEvent::Modified(cm) = event else {
                continue;
            };
            let name = cm.name_any();
            let seq = cm.annotations().get(SEQ_ANNOTATION);
            let mut waiting = pending.lock().unwrap();
            if waiting
                .get(&name)
                .is_some_and(|(want, _)| Some(want) == seq)
                && let Some((_, tx)) = waiting.remove(&name)
            {
                let _ = tx.send(());
            }
        }
    })
}

#[allow(
    clippy::too_many_lines,
    reason = "the setup and the run of each operation, in the order they run"
)]
#[tokio::main]
async fn main() {
    let settings = Settings::from_env();
    let namespaces = ["bench", "bench-list", "bench-create", "bench-watch"];
    let sim = kube_sim::start(kube_sim::Config {
        namespaces: namespaces.map(str::to_owned).to_vec(),
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let mut config = kube::Config::new(sim.url().parse().unwrap());
    config.default_retry = false;
    let client = Client::try_from(config).unwrap();
    let pp = PostParams::default();

    // Setup: one ConfigMap to GET, 100 to LIST, a Deployment to PATCH and scale, and one
    // ConfigMap per task to PATCH under a watch.
    let bench_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "bench");
    bench_cms
        .create(&pp, &config_map("one", &json!({})))
        .await
        .unwrap();
    let list_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-list");
    for i in 0..100 {
        list_cms
            .create(&pp, &config_map(&format!("item-{i:03}"), &json!({})))
            .await
            .unwrap();
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "bench");
    let deployment: Deployment = from_json(json!({
        "metadata": {"name": "bench", "labels": {"app": "bench"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}
            }
        }
    }));
    deployments.create(&pp, &deployment).await.unwrap();
    let watched: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-watch");
    for task in 0..settings.concurrency {
        watched
            .create(
                &pp,
                &config_map(&format!("watched-{task}"), &json!({"bench": "watch"})),
            )
            .await
            .unwrap();
    }
    let create_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-create");
    println!("RSS after setup: {}", status_field("VmRSS:"));

    eprintln!(
        "kube-sim at {}; measuring {} s per operation",
        sim.url(),
        settings.duration.as_secs()
    );
    let mut rows = Vec::new();

    let api = bench_cms.clone();
    rows.push(
        measure("GET configmap", &settings, move |_, _| {
            let api = api.clone();
            async move { Ok(api.get("one").await.map(drop)?) }
        })
        .await,
    );

    let api = list_cms.clone();
    rows.push(
        measure("LIST 100 configmaps", &settings, move |_, _| {
            let api = api.clone();
            async move {
                let list = api.list(&ListParams::default()).await?;
                anyhow::ensure!(list.items.len() == 100, "listed {}", list.items.len());
                Ok(())
            }
        })
        .await,
    );

    let api = deployments.clone();
    rows.push(
        measure("merge PATCH deployment", &settings, move |_, n| {
            let api = api.clone();
            async move {
                Ok(api
                    .patch("bench", &PatchParams::default(), &seq_patch(n))
                    .await
                    .map(drop)?)
            }
        })
        .await,
    );

    let api = deployments.clone();
    rows.push(
        measure("GET deployment /scale", &settings, move |_, _| {
            let api = api.clone();
            async move { Ok(api.get_scale("bench").await.map(drop)?) }
        })
        .await,
    );

    let pending = Pending::default();
    let listed = watched
        .list(&ListParams::default().labels("bench=watch"))
        .await
        .unwrap();
    let resource_version = listed.metadata.resource_version.unwrap_or_default();
    let watch = spawn_watch(watched.clone(), &resource_version, pending.clone()).await;
    let api = watched.clone();
    rows.push(
        measure(
            "PATCH configmap -> watch event",
            &settings,
            move |task, n| {
                let api = api.clone();
                let pending = pending.clone();
                async move {
                    let name = format!("watched-{task}");
                    let (tx, rx) = oneshot::channel();
                    pending
                        .lock()
                        .unwrap()
                        .insert(name.clone(), (n.to_string(), tx));
                    api.patch(&name, &PatchParams::default(), &seq_patch(n))
                        .await?;
                    match tokio::time::timeout(WATCH_TIMEOUT, rx).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(_)) => anyhow::bail!("the watch ended"),
                        Err(_) => {
                            pending.lock().unwrap().remove(&name);
                            anyhow::bail!("no watch event within {WATCH_TIMEOUT:?}")
                        }
                    }
                }
            },
        )
        .await,
    );
    watch.abort();

    let api = create_cms.clone();
    rows.push(
        measure("CREATE configmap", &settings, move |_, n| {
            let api = api.clone();
            async move {
                let cm = config_map(&format!("created-{n}"), &json!({}));
                Ok(api.create(&PostParams::default(), &cm).await.map(drop)?)
            }
        })
        .await,
    );

    print_table(&rows, &settings);
    println!();
    println!(
        "process RSS (VmRSS): {}; peak (VmHWM): {}",
        status_field("VmRSS:"),
        status_field("VmHWM:")
    );
    drop(sim);
}
