//! Fixtures and sources of the triggers that read data stores: `postgresql` and `redis`.
//!
//! The source is the machine's real server (`KEDA_TEST_POSTGRES_URL`, `KEDA_TEST_REDIS_URL`,
//! else the local ones, started by `external-scalers/scripts/ensure-test-services` when down)
//! behind a proxy on loopback that records what clients send. Each proxy's port names the row
//! (PostgreSQL) or list (Redis) its trigger reads. Once told to refuse, the proxy closes every
//! connection and answers new ones as a server refusing the credentials would.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;

use crate::fixtures::{Activation, Fixture, Invalid, Metadata, SecretCase};
use crate::recording_proxy::{RecordingProxy, Refusal};
use crate::sources::Source;

/// The table the `postgresql` fixture reads: one row per proxy port.
const TABLE: &str = "keda_rs_compliance";

/// Runs the project's script that starts a test server, when nothing answers on `port`.
fn ensure(service: &str, port: u16) {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../external-scalers/scripts/ensure-test-services"
        );
        let status = std::process::Command::new(script)
            .arg(service)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{service} is not running and could not be started"
        );
    }
}

fn postgres_url() -> String {
    std::env::var("KEDA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        ensure("postgres", 5432);
        "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned()
    })
}

fn redis_url() -> String {
    std::env::var("KEDA_TEST_REDIS_URL").unwrap_or_else(|_| {
        ensure("redis", 6379);
        "redis://127.0.0.1:6379/".to_owned()
    })
}

/// The list a `redis` trigger whose source listens at `source` reads.
fn list_name(source: SocketAddr) -> String {
    format!(
        "keda-rs-compliance:{}:{}",
        std::process::id(),
        source.port()
    )
}

/// The stream a `redis-streams` trigger whose source listens at `source` reads.
pub(crate) fn stream_name(source: SocketAddr) -> String {
    format!(
        "keda-rs-compliance-stream:{}:{}",
        std::process::id(),
        source.port()
    )
}

/// The machine's Redis behind a recording proxy, with a stream of `value` entries.
pub(crate) fn redis_stream_source() -> BoxFuture<'static, Option<Box<dyn Source>>> {
    Box::pin(async { Some(Box::new(Store::start(Protocol::RedisStream).await) as Box<dyn Source>) })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Postgres,
    Redis,
    /// Redis, where the value is the length of a stream.
    RedisStream,
}

/// A real server behind a recording proxy.
struct Store {
    proxy: RecordingProxy,
    protocol: Protocol,
    postgres: Option<tokio_postgres::Client>,
    redis: Option<redis::aio::MultiplexedConnection>,
}

impl Store {
    async fn start(protocol: Protocol) -> Self {
        let (upstream, postgres, redis) = match protocol {
            Protocol::Postgres => {
                let url = postgres_url();
                let config = tokio_postgres::Config::from_str(&url).unwrap();
                let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                client
                    .batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS {TABLE} (port int PRIMARY KEY, v float8)"
                    ))
                    .await
                    .unwrap();
                (tcp_addr_of_postgres(&config), Some(client), None)
            }
            Protocol::Redis | Protocol::RedisStream => {
                let client = redis::Client::open(redis_url().as_str()).unwrap();
                let upstream = match client.get_connection_info().addr() {
                    redis::ConnectionAddr::Tcp(host, port) => (host.as_str(), *port)
                        .to_socket_addrs()
                        .unwrap()
                        .next()
                        .unwrap(),
                    other => panic!("KEDA_TEST_REDIS_URL must be redis://host:port: {other:?}"),
                };
                let connection = client.get_multiplexed_async_connection().await.unwrap();
                (upstream, None, Some(connection))
            }
        };
        let refusal = match protocol {
            Protocol::Postgres => Refusal::Postgres,
            Protocol::Redis | Protocol::RedisStream => Refusal::Redis,
        };
        let store = Self {
            proxy: RecordingProxy::start(upstream, refusal).await,
            protocol,
            postgres,
            redis,
        };
        store.set_value(0.0).await;
        store
    }

    async fn set_value(&self, value: f64) {
        match self.protocol {
            Protocol::Postgres => {
                let client = self.postgres.as_ref().unwrap();
                client
                    .execute(
                        &format!(
                            "INSERT INTO {TABLE} (port, v) VALUES ($1, $2) \
                             ON CONFLICT (port) DO UPDATE SET v = EXCLUDED.v"
                        ),
                        &[&i32::from(self.proxy.addr().port()), &value],
                    )
                    .await
                    .unwrap();
            }
            Protocol::RedisStream => {
                let mut connection = self.redis.clone().unwrap();
                let stream = stream_name(self.proxy.addr());
                let _: i64 = redis::cmd("DEL")
                    .arg(&stream)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "the checks set small whole lengths"
                )]
                let length = value.round() as usize;
                for _ in 0..length {
                    let _: String = redis::cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg("k")
                        .arg("v")
                        .query_async(&mut connection)
                        .await
                        .unwrap();
                }
                if length > 0 {
                    // The stream lives as long as the process's checks do.
                    let _: i64 = redis::cmd("EXPIRE")
                        .arg(&stream)
                        .arg(600)
                        .query_async(&mut connection)
                        .await
                        .unwrap();
                }
            }
            Protocol::Redis => {
                let mut connection = self.redis.clone().unwrap();
                let list = list_name(self.proxy.addr());
                let _: i64 = redis::cmd("DEL")
                    .arg(&list)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "the checks set small whole lengths"
                )]
                let length = value.round() as usize;
                if length > 0 {
                    let items = vec!["x"; length];
                    let _: i64 = redis::cmd("RPUSH")
                        .arg(&list)
                        .arg(&items[..])
                        .query_async(&mut connection)
                        .await
                        .unwrap();
                    // The list lives as long as the process's checks do.
                    let _: i64 = redis::cmd("EXPIRE")
                        .arg(&list)
                        .arg(600)
                        .query_async(&mut connection)
                        .await
                        .unwrap();
                }
            }
        }
    }
}

fn tcp_addr_of_postgres(config: &tokio_postgres::Config) -> SocketAddr {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host.as_str(), port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
}

impl Source for Store {
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

fn owned(pairs: &[(&'static str, &str)]) -> Metadata {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

pub(crate) struct Postgresql;

impl Fixture for Postgresql {
    fn types(&self) -> &'static [&'static str] {
        &["postgresql"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        let config = tokio_postgres::Config::from_str(&postgres_url()).unwrap();
        let user = config.get_user().unwrap_or("postgres").to_owned();
        let database = config.get_dbname().unwrap_or(&user).to_owned();
        vec![
            (
                "query",
                format!("SELECT v FROM {TABLE} WHERE port = {}", source.port()),
            ),
            ("targetQueryValue", "10".to_owned()),
            ("host", source.ip().to_string()),
            ("port", source.port().to_string()),
            ("userName", user),
            ("dbName", database),
            ("sslmode", "disable".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &[
            "query",
            "targetQueryValue",
            "host",
            "port",
            "userName",
            "dbName",
            "sslmode",
        ]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("targetQueryValue", "0")]),
            Invalid::Values(&[("targetQueryValue", "ten")]),
            Invalid::Values(&[("activationTargetQueryValue", "ten")]),
            Invalid::Values(&[("activationTargetQueryValue", "NaN")]),
            Invalid::Values(&[("port", "big")]),
            Invalid::Values(&[("sslmode", "often")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationTargetQueryValue",
            threshold: 5.0,
            step: 0.5,
        }
    }

    fn secrets(&self, source: SocketAddr) -> Vec<SecretCase> {
        let password = "pg-pw-4e81c9a2";
        let connection = format!(
            "host={} port={} user=postgres dbname=test password=pg-conn-7b3d10f5 sslmode=disable",
            source.ip(),
            source.port()
        );
        vec![
            SecretCase {
                name: "password",
                metadata: Vec::new(),
                auth: owned(&[("password", password)]),
                env: Vec::new(),
                metadata_allowed: false,
                tells: vec![password.to_owned()],
                reaches_source: true,
            },
            SecretCase {
                name: "connection",
                metadata: Vec::new(),
                auth: vec![("connection", connection.clone())],
                env: Vec::new(),
                metadata_allowed: false,
                tells: vec!["pg-conn-7b3d10f5".to_owned(), connection],
                reaches_source: true,
            },
        ]
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        Box::pin(async {
            Some(Box::new(Store::start(Protocol::Postgres).await) as Box<dyn Source>)
        })
    }
}

pub(crate) struct Redis;

impl Fixture for Redis {
    fn types(&self) -> &'static [&'static str] {
        &["redis"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            ("address", source.to_string()),
            ("listName", list_name(source)),
            ("listLength", "10".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["listName", "address"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("listLength", "0")]),
            Invalid::Values(&[("listLength", "2.5")]),
            Invalid::Values(&[("activationListLength", "x")]),
            Invalid::Values(&[("databaseIndex", "-1")]),
            Invalid::Values(&[("enableTLS", "yes")]),
            Invalid::Values(&[("address", "redis")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    fn hostile_name(&self) -> &'static [(&'static str, &'static str)] {
        &[("listName", "jobs/eu%2F(x):y.z")]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationListLength",
            threshold: 2.0,
            step: 1.0,
        }
    }

    fn secrets(&self, _: SocketAddr) -> Vec<SecretCase> {
        let password = "redis-pw-0c5f7e19";
        vec![SecretCase {
            name: "password",
            metadata: Vec::new(),
            auth: owned(&[("password", password)]),
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
        Box::pin(async { Some(Box::new(Store::start(Protocol::Redis).await) as Box<dyn Source>) })
    }
}
