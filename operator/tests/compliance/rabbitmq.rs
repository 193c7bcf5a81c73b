//! The fixture and source of the `rabbitmq` trigger (over AMQP).
//!
//! The source is a RabbitMQ broker started once for this test binary
//! (`external-scalers/scripts/test-server rabbitmq-management`) behind a proxy on loopback that
//! records what clients send. Each proxy's port names the queue its trigger reads; setting a
//! value purges the queue and publishes that many messages. Once told to refuse, the proxy
//! closes every connection and answers new ones as a broker refusing the credentials would:
//! `connection.start`, then, after the client's `start-ok`, `connection.close` 403.

use std::net::SocketAddr;
use std::sync::OnceLock;

use amqprs::BasicProperties;
use amqprs::channel::{BasicPublishArguments, Channel, QueueDeclareArguments, QueuePurgeArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;

use crate::fixtures::{Activation, Fixture, Invalid, Metadata, SecretCase};
use crate::recording_proxy::{RecordingProxy, Refusal};
use crate::sources::Source;
use crate::test_server::TestServer;

/// The broker's AMQP address (the broker is started on first use and lives as long as the
/// test binary).
fn broker() -> SocketAddr {
    static BROKER: OnceLock<TestServer> = OnceLock::new();
    BROKER
        .get_or_init(|| TestServer::start("rabbitmq-management"))
        .get("amqp")
        .parse()
        .unwrap()
}

/// The queue a trigger whose source listens at `source` reads.
fn queue_name(source: SocketAddr) -> String {
    format!(
        "keda-rs-compliance.{}.{}",
        std::process::id(),
        source.port()
    )
}

/// The broker behind a recording proxy, and a channel of the fixture's own to fill the queue.
struct Broker {
    proxy: RecordingProxy,
    _connection: Connection,
    channel: Channel,
}

impl Broker {
    async fn start() -> Self {
        let upstream = tokio::task::spawn_blocking(broker).await.unwrap();
        let connection = Connection::open(&OpenConnectionArguments::new(
            &upstream.ip().to_string(),
            upstream.port(),
            "guest",
            "guest",
        ))
        .await
        .unwrap();
        let channel = connection.open_channel(None).await.unwrap();
        let proxy = RecordingProxy::start(upstream, Refusal::Amqp).await;
        channel
            .queue_declare(QueueDeclareArguments::new(&queue_name(proxy.addr())))
            .await
            .unwrap();
        Self {
            proxy,
            _connection: connection,
            channel,
        }
    }

    async fn set_value(&self, value: f64) {
        let queue = queue_name(self.proxy.addr());
        self.channel
            .queue_purge(QueuePurgeArguments::new(&queue))
            .await
            .unwrap();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "the checks set small whole lengths"
        )]
        let count = value.round() as u32;
        for _ in 0..count {
            self.channel
                .basic_publish(
                    BasicProperties::default(),
                    b"x".to_vec(),
                    BasicPublishArguments::new("", &queue),
                )
                .await
                .unwrap();
        }
        // The broker has taken them once a declare on the same channel counts them.
        for _ in 0..100 {
            let declared = self
                .channel
                .queue_declare(QueueDeclareArguments::new(&queue).passive(true).finish())
                .await
                .unwrap();
            if declared.is_some_and(|(_, messages, _)| messages == count) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the queue {queue} never held {count} messages");
    }
}

impl Source for Broker {
    fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    fn set(&self, value: f64) -> BoxFuture<'_, ()> {
        Box::pin(self.set_value(value))
    }

    fn refuse(&self) -> bool {
        self.proxy.refuse();
        true
    }

    fn seen(&self) -> String {
        self.proxy.seen()
    }
}

pub(crate) struct RabbitMq;

impl Fixture for RabbitMq {
    fn types(&self) -> &'static [&'static str] {
        &["rabbitmq"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            // No credentials: guest/guest, as the AMQP URI scheme defaults them.
            ("host", format!("amqp://{source}/")),
            ("queueName", queue_name(source)),
            ("mode", "QueueLength".to_owned()),
            ("value", "10".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["queueName", "host"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("value", "ten")]),
            Invalid::Values(&[("value", "-1")]),
            Invalid::Values(&[("value", "5"), ("mode", "Bogus")]),
            Invalid::Values(&[("value", "5"), ("mode", "MessageRate")]),
            Invalid::Values(&[("queueLength", "5"), ("value", "5")]),
            Invalid::Values(&[("activationValue", "x")]),
            Invalid::Values(&[("protocol", "stomp")]),
            Invalid::Values(&[("host", "ftp://rabbit/")]),
            Invalid::Values(&[("useRegex", "true")]),
            Invalid::Values(&[("excludeUnacknowledged", "true")]),
            Invalid::Values(&[("pageSize", "0")]),
            Invalid::Values(&[("operation", "min")]),
            Invalid::Values(&[("timeout", "1000")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    fn hostile_name(&self) -> &'static [(&'static str, &'static str)] {
        &[("queueName", "jobs/eu%2F(x):y.z")]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationValue",
            threshold: 2.0,
            step: 1.0,
        }
    }

    fn secrets(&self, _: SocketAddr) -> Vec<SecretCase> {
        let password = "rabbit-pw-5d2a8c71";
        vec![SecretCase {
            name: "password",
            metadata: Vec::new(),
            auth: vec![
                ("username", "guest".to_owned()),
                ("password", password.to_owned()),
            ],
            env: Vec::new(),
            metadata_allowed: false,
            tells: vec![password.to_owned()],
            reaches_source: true,
        }]
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        Box::pin(async { Some(Box::new(Broker::start().await) as Box<dyn Source>) })
    }
}
