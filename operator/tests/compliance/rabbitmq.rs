//! The fixture and source of the `rabbitmq` trigger (over AMQP).
//!
//! The source is a RabbitMQ broker started once for this test binary
//! (`external-scalers/scripts/test-server rabbitmq-management`) behind a proxy on loopback that
//! records what clients send. Each proxy's port names the queue its trigger reads; setting a
//! value purges the queue and publishes that many messages. Once told to refuse, the proxy
//! closes every connection and answers new ones as a broker refusing the credentials would:
//! `connection.start`, then, after the client's `start-ok`, `connection.close` 403.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use amqprs::BasicProperties;
use amqprs::channel::{BasicPublishArguments, Channel, QueueDeclareArguments, QueuePurgeArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::fixtures::{Activation, Fixture, Invalid, Metadata, SecretCase};
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

#[derive(Default)]
struct ProxyState {
    refusing: bool,
    seen: Vec<u8>,
    tasks: Vec<JoinHandle<()>>,
}

/// The broker behind a recording proxy, and a channel of the fixture's own to fill the queue.
struct Broker {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    accept: JoinHandle<()>,
    _connection: Connection,
    channel: Channel,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.state.lock().unwrap().tasks.drain(..) {
            task.abort();
        }
    }
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        channel
            .queue_declare(QueueDeclareArguments::new(&queue_name(addr)))
            .await
            .unwrap();
        let state: Arc<Mutex<ProxyState>> = Arc::default();
        let accept = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let refusing = state.lock().unwrap().refusing;
                    let task = if refusing {
                        tokio::spawn(refuse(client, state.clone()))
                    } else {
                        tokio::spawn(forward(client, upstream, state.clone()))
                    };
                    state.lock().unwrap().tasks.push(task);
                }
            })
        };
        Self {
            addr,
            state,
            accept,
            _connection: connection,
            channel,
        }
    }

    async fn set_value(&self, value: f64) {
        let queue = queue_name(self.addr);
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

/// Passes bytes both ways, recording what the client sends.
async fn forward(client: TcpStream, upstream: SocketAddr, state: Arc<Mutex<ProxyState>>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n) = client_read.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            state.lock().unwrap().seen.extend_from_slice(&buffer[..n]);
            if server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::join!(up, down);
}

/// An AMQP method frame on channel 0.
fn method_frame(class: u16, method: u16, arguments: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(arguments);
    let mut frame = vec![1, 0, 0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    frame
}

fn long_string(text: &str) -> Vec<u8> {
    let mut bytes = u32::try_from(text.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// Answers as a broker that refuses the client's credentials, recording what it sent.
async fn refuse(mut client: TcpStream, state: Arc<Mutex<ProxyState>>) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut read = async |client: &mut TcpStream| {
        let n = client.read(&mut buffer).await.unwrap_or(0);
        state.lock().unwrap().seen.extend_from_slice(&buffer[..n]);
        n
    };
    // The protocol header, then connection.start (0-9, no properties, PLAIN, en_US).
    if read(&mut client).await == 0 {
        return;
    }
    let mut start = vec![0, 9, 0, 0, 0, 0];
    start.extend(long_string("PLAIN AMQPLAIN"));
    start.extend(long_string("en_US"));
    if client
        .write_all(&method_frame(10, 10, &start))
        .await
        .is_err()
    {
        return;
    }
    // connection.start-ok with the credentials, then connection.close 403.
    if read(&mut client).await == 0 {
        return;
    }
    let text = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN";
    let mut close = 403u16.to_be_bytes().to_vec();
    close.push(u8::try_from(text.len()).unwrap());
    close.extend_from_slice(text.as_bytes());
    close.extend_from_slice(&[0, 0, 0, 0]);
    let _ = client.write_all(&method_frame(10, 50, &close)).await;
    let _ = client.shutdown().await;
}

impl Source for Broker {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn set(&self, value: f64) -> BoxFuture<'_, ()> {
        Box::pin(self.set_value(value))
    }

    fn refuse(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        state.refusing = true;
        for task in state.tasks.drain(..) {
            task.abort();
        }
        true
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.state.lock().unwrap().seen).into_owned()
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
