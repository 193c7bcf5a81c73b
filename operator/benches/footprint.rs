//! The operator's footprint: resident memory and CPU of the real `keda-operator` binary, idle
//! and with 100 ScaledObjects polling a `metrics-api` source every 5 s, against kube-sim.
//! Prints figures; asserts nothing about them.
//!
//! `cargo bench -p keda-operator --bench footprint` (the binary is built with the bench
//! profile, i.e. release).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails by panicking"
)]
#![allow(
    clippy::cast_precision_loss,
    clippy::too_many_lines,
    clippy::similar_names,
    reason = "a linear benchmark script printing approximate figures"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use keda_operator_crd::ScaledObject;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const OBJECTS: usize = 100;

#[tokio::main]
async fn main() {
    let sim = kube_sim::start(kube_sim::Config::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("keda-footprint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let client = sim.client().unwrap();
    for crd in keda_operator_crd::crds() {
        kube_sim::client::install_crd(&client, &crd).await.unwrap();
    }

    // The source: counts the reads it answers.
    let reads = Arc::new(AtomicU64::new(0));
    let counter = reads.clone();
    let router = axum::Router::new().route(
        "/value",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { axum::Json(json!({"value": 0})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source = format!("http://{}/value", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let probe = free_port();
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_keda-operator"))
        .args([
            "--metrics-bind-address",
            "0",
            "--health-probe-bind-address",
            &probe.to_string(),
            "--metrics-service-bind-address",
            &free_port().to_string(),
            "--cert-dir",
            dir.to_str().unwrap(),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = operator.id().unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = http
            .get(format!("http://{probe}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the operator did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_rss, idle_cpu) = sample(pid, Duration::from_secs(5)).await;
    println!("keda-operator idle: RSS {idle_rss:.1} MiB, CPU {idle_cpu:.1} % of a core");

    let params = PatchParams::apply("bench").force();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let scaled_objects: Api<ScaledObject> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    for i in 0..OBJECTS {
        let name = format!("worker-{i}");
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}}
        });
        deployments
            .patch(&name, &params, &Patch::Apply(&deployment))
            .await
            .unwrap();
        let so = json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": 5,
                     "triggers": [{"type": "metrics-api", "metadata": {"url": source, "valueLocation": "value", "targetValue": "5"}}]}
        });
        scaled_objects
            .patch(&name, &params, &Patch::Apply(&so))
            .await
            .unwrap();
    }
    loop {
        let ready = scaled_objects
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
        if ready == OBJECTS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {ready} of {OBJECTS} ScaledObjects became Ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{OBJECTS} ScaledObjects Ready {:.1} s after the first was created",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = reads.load(Ordering::Relaxed);
    let window = Duration::from_secs(20);
    let (rss, cpu) = sample(pid, window).await;
    let per_second = (reads.load(Ordering::Relaxed) - before) as f64 / window.as_secs_f64();
    println!(
        "keda-operator with {OBJECTS} ScaledObjects (pollingInterval 5 s): RSS {rss:.1} MiB, CPU {cpu:.1} % of a core, source reads {per_second:.2}/s (one read per object per interval would be {:.1}/s; one per tick {:.1}/s)",
        OBJECTS as f64 / 5.0,
        1.0 / 5.0
    );
    operator.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Peak RSS (MiB) and mean CPU (% of one core) of a process over `period`.
async fn sample(pid: u32, period: Duration) -> (f64, f64) {
    let ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let rss = |pid: u32| -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            / 1024.0
    };
    let start_ticks = ticks(pid);
    let started = Instant::now();
    let mut peak: f64 = 0.0;
    while started.elapsed() < period {
        peak = peak.max(rss(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Linux reports CPU time in clock ticks of 1/100 s.
    let cpu = (ticks(pid) - start_ticks) as f64 / 100.0 / started.elapsed().as_secs_f64() * 100.0;
    (peak, cpu)
}
