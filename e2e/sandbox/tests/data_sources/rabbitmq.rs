//! `rabbitmq`: the length of a queue over AMQP, with the broker's URL (and its password) from
//! a Secret through a TriggerAuthentication. The broker is one of its own
//! (`external-scalers/scripts/test-server rabbitmq-management`).

use amqprs::BasicProperties;
use amqprs::channel::{BasicPublishArguments, QueueDeclareArguments, QueuePurgeArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use serde_json::json;

use crate::test_server::TestServer;
use crate::{Scenario, source_host, zero_to_n_to_zero};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_queue_scales_zero_to_n_and_back_to_zero() {
    let broker = tokio::task::spawn_blocking(|| TestServer::start("rabbitmq-management"))
        .await
        .unwrap();
    let amqp: std::net::SocketAddr = broker.get("amqp").parse().unwrap();
    let connection = Connection::open(&OpenConnectionArguments::new(
        &amqp.ip().to_string(),
        amqp.port(),
        "guest",
        "guest",
    ))
    .await
    .unwrap();
    let channel = connection.open_channel(None).await.unwrap();
    let queue = format!("keda-rs-e2e.{}.jobs", std::process::id());
    channel
        .queue_declare(QueueDeclareArguments::new(&queue))
        .await
        .unwrap();
    let host = format!("amqp://guest:guest@{}:{}/", source_host(), amqp.port());
    let scenario = Scenario {
        name: "rabbitmq",
        trigger: json!({"type": "rabbitmq", "metadata": {
            "queueName": queue,
            "mode": "QueueLength",
            "value": "5",
        }, "authenticationRef": {"name": "rabbitmq"}}),
        objects: vec![
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rabbitmq"},
                   "stringData": {"host": host}}),
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
                   "metadata": {"name": "rabbitmq"},
                   "spec": {"secretTargetRef": [
                       {"parameter": "host", "name": "rabbitmq", "key": "host"}]}}),
        ],
        high: 12,
        replicas: 3,
    };
    zero_to_n_to_zero(scenario, |messages| {
        let channel = &channel;
        let queue = queue.clone();
        async move {
            channel
                .queue_purge(QueuePurgeArguments::new(&queue))
                .await
                .unwrap();
            for _ in 0..messages {
                channel
                    .basic_publish(
                        BasicProperties::default(),
                        b"job".to_vec(),
                        BasicPublishArguments::new("", &queue),
                    )
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    drop(channel);
    drop(broker);
}
