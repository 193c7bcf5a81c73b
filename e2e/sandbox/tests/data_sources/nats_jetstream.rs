//! `nats-jetstream`: the backlog of a JetStream consumer, read from a real nats-server's
//! monitoring endpoint (started on free ports by `test-server nats-monitoring`). The test
//! publishes messages to raise the backlog and fetches and acknowledges them to lower it; with
//! `activationPush`, a message scales the workload from zero long before the next poll.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Mutex;

use crate::nats_text::NatsText;
use crate::support::{Cluster, deployment, scaled_object};
use crate::test_server::TestServer;
use crate::{Scenario, source_host, zero_to_n_to_zero};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_backlog_scales_zero_to_n_and_back_to_zero() {
    let server = TestServer::start("nats-monitoring");
    let client = server.get("client").parse().unwrap();
    let port = server
        .get("monitoring")
        .rsplit_once(':')
        .map(|(_, port)| port.to_owned())
        .unwrap();
    let mut nats = NatsText::connect(client).await;
    nats.stream_and_consumer("JOBS", &["jobs.>"], "workers")
        .await;
    let scenario = Scenario {
        name: "nats-jetstream",
        trigger: json!({"type": "nats-jetstream", "metadata": {
            "natsServerMonitoringEndpoint": format!("{}:{port}", source_host()),
            "account": "$G",
            "stream": "JOBS",
            "consumer": "workers",
            "lagThreshold": "4",
        }}),
        objects: Vec::new(),
        high: 14,
        replicas: 4,
    };
    // The connection and the backlog it has made so far.
    let state = Arc::new(Mutex::new((nats, 0_u64)));
    zero_to_n_to_zero(scenario, |backlog| {
        let state = state.clone();
        async move {
            let mut state = state.lock().await;
            let (nats, current) = &mut *state;
            if backlog > *current {
                nats.publish("jobs.new", usize::try_from(backlog - *current).unwrap())
                    .await;
            } else if backlog < *current {
                let acks = nats
                    .fetch(
                        "JOBS",
                        "workers",
                        usize::try_from(*current - backlog).unwrap(),
                    )
                    .await;
                nats.ack(&acks).await;
            }
            *current = backlog;
        }
    })
    .await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_activation_push_scales_from_zero_without_waiting_for_the_polling_interval()
{
    let server = TestServer::start("nats-monitoring");
    let client = server.get("client").parse().unwrap();
    let port = server
        .get("monitoring")
        .rsplit_once(':')
        .map(|(_, port)| port.to_owned())
        .unwrap();
    let mut nats = NatsText::connect(client).await;
    nats.stream_and_consumer("PUSH", &["push.>"], "workers")
        .await;
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("nats-push").await;
    cluster.apply(&ns, deployment("worker", 0)).await;
    let trigger = json!({"type": "nats-jetstream", "metadata": {
        "natsServerMonitoringEndpoint": format!("{}:{port}", source_host()),
        "account": "$G",
        "stream": "PUSH",
        "consumer": "workers",
        "lagThreshold": "5",
        "activationLagThreshold": "1",
        "activationPush": "true",
    }});
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
    // One message is not above the activation threshold: the push makes the loop read, and
    // the read keeps the workload at zero. The subscription is armed again 5 s after a push.
    nats.publish("push.new", 1).await;
    cluster
        .hold_replicas(&ns, "worker", 0, Duration::from_secs(6))
        .await;
    let published = tokio::time::Instant::now();
    nats.publish("push.new", 1).await;
    let took = cluster
        .wait_replicas(&ns, "worker", 1, Duration::from_secs(20))
        .await;
    println!(
        "nats-jetstream push activation: message published → 1 replica in {:?} (pollingInterval 600 s)",
        published.elapsed().min(took)
    );
    drop(server);
}
