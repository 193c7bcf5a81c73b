//! How fast the sandbox reacts: from a change of the queue length to the Deployment's
//! replicas changing. Prints percentiles over repeated trials; asserts nothing about time.
//!
//! `cargo bench -p keda-sandbox --bench reaction` (runs everything in this process: kube-sim
//! with its HPA syncing every second, the operator and the metrics server).
//!
//! Each trial starts at zero replicas, sets the queue to 20 messages (5 per replica) and records
//! when the operator activates the Deployment (0 → 1, the scale loop's job: up to one polling
//! interval) and when the HPA reaches 4 replicas (the metrics server's value, read by the HPA on
//! its next sync); then empties the queue and records when it is back at zero (the cooldown).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails by panicking"
)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use keda_operator_crd::ScaledObject;
use kube::api::{Api, Patch, PatchParams};

const TRIALS: usize = 30;
const POLLING_INTERVAL: u64 = 1;

#[tokio::main]
async fn main() {
    let kubeconfig =
        std::env::temp_dir().join(format!("keda-bench-{}.kubeconfig", std::process::id()));
    let sandbox = keda_sandbox::start(keda_sandbox::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        kubeconfig_out: kubeconfig,
        hpa_sync_period: Duration::from_secs(1),
    })
    .await
    .unwrap();
    let (addr, queue) = keda_sandbox::demo::serve_queue("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{addr}/queue");
    keda_sandbox::demo::apply(&sandbox.client, &url)
        .await
        .unwrap();
    // The demo, with a 1 s polling interval and cooldown so trials do not wait long.
    let so: Api<ScaledObject> =
        Api::namespaced(sandbox.client.clone(), keda_sandbox::demo::NAMESPACE);
    so.patch(
        keda_sandbox::demo::NAME,
        &PatchParams::default(),
        // Without the HPA's default rate limits (which count the previous trial's scale-ups
        // for 15 s), so each trial measures the reaction, not the policy.
        &Patch::Merge(serde_json::json!({"spec": {"pollingInterval": POLLING_INTERVAL, "cooldownPeriod": 1,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 0},
                "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 100, "periodSeconds": 1}]}
            }}}}})),
    )
    .await
    .unwrap();
    let deployments: Api<Deployment> =
        Api::namespaced(sandbox.client.clone(), keda_sandbox::demo::NAMESPACE);
    let replicas = || async {
        deployments
            .get(keda_sandbox::demo::NAME)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(0)
    };
    let wait = |want: &'static dyn Fn(i32) -> bool| {
        let replicas = &replicas;
        async move {
            let started = Instant::now();
            loop {
                if want(replicas().await) {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "no change within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait(&|r| r == 0).await;
    let (mut activation, mut full, mut zero) = (Vec::new(), Vec::new(), Vec::new());
    for trial in 0..TRIALS {
        // Start each trial at a different point of the polling interval.
        tokio::time::sleep(Duration::from_millis((trial as u64 * 379) % 1000)).await;
        let started = Instant::now();
        queue.set(20);
        wait(&|r| r >= 1).await;
        activation.push(started.elapsed());
        wait(&|r| r == 4).await;
        full.push(started.elapsed());
        let emptied = Instant::now();
        queue.set(0);
        wait(&|r| r == 0).await;
        zero.push(emptied.elapsed());
    }
    println!(
        "sandbox reaction over {TRIALS} trials (pollingInterval {POLLING_INTERVAL} s, HPA sync 1 s, cooldown 1 s, no HPA rate limits)"
    );
    report(
        "queue 0 → 20: Deployment 0 → 1 (scale loop)",
        &mut activation,
    );
    report("queue 0 → 20: Deployment at 4 replicas (HPA)", &mut full);
    report(
        "queue 20 → 0: Deployment back at 0 (after cooldown)",
        &mut zero,
    );
}

fn report(what: &str, samples: &mut [Duration]) {
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
        "  {what}: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}
