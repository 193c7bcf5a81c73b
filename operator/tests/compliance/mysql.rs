//! Fixture and source of the `mysql` trigger.
//!
//! The source is the machine's real MariaDB (`KEDA_TEST_MYSQL_URL`, else the local one, started
//! by `external-scalers/scripts/ensure-test-services` when down) behind a proxy on loopback that
//! records what clients send. Each proxy's port names the row its trigger reads. Once told to
//! refuse, the proxy closes every connection and answers new ones as a server refusing the
//! credentials would: a handshake, then `ERROR 1045 (28000)` to the client's login.

use std::net::{SocketAddr, ToSocketAddrs};

use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;
use mysql_async::prelude::Queryable;

use crate::fixtures::{Activation, Fixture, Invalid, Metadata, SecretCase};
use crate::recording_proxy::{RecordingProxy, Refusal};
use crate::sources::Source;

/// The table the fixture reads: one row per proxy port.
const TABLE: &str = "keda_rs_compliance";

fn mysql_url() -> String {
    std::env::var("KEDA_TEST_MYSQL_URL").unwrap_or_else(|_| {
        if std::net::TcpStream::connect(("127.0.0.1", 3306)).is_err() {
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../external-scalers/scripts/ensure-test-services"
            );
            let status = std::process::Command::new(script)
                .arg("mariadb")
                .status()
                .unwrap();
            assert!(
                status.success(),
                "MariaDB is not running and could not be started"
            );
        }
        "mysql://root@127.0.0.1:3306/test".to_owned()
    })
}

fn opts() -> mysql_async::Opts {
    mysql_async::Opts::from_url(&mysql_url()).unwrap()
}

/// MariaDB behind a recording proxy.
struct Store {
    proxy: RecordingProxy,
    db: tokio::sync::Mutex<mysql_async::Conn>,
}

impl Store {
    async fn start() -> Self {
        let opts = opts();
        let upstream = (opts.ip_or_hostname(), opts.tcp_port())
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap();
        let mut db =
            mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false))
                .await
                .unwrap();
        db.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (port int PRIMARY KEY, v double)"
        ))
        .await
        .unwrap();
        let store = Self {
            proxy: RecordingProxy::start(upstream, Refusal::Mysql).await,
            db: tokio::sync::Mutex::new(db),
        };
        store.set_value(0.0).await;
        store
    }

    async fn set_value(&self, value: f64) {
        self.db
            .lock()
            .await
            .exec_drop(
                format!(
                    "INSERT INTO {TABLE} (port, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = \
                     VALUES(v)"
                ),
                (self.proxy.addr().port(), value),
            )
            .await
            .unwrap();
    }
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

pub(crate) struct Mysql;

impl Fixture for Mysql {
    fn types(&self) -> &'static [&'static str] {
        &["mysql"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        let opts = opts();
        vec![
            (
                "query",
                format!("SELECT v FROM {TABLE} WHERE port = {}", source.port()),
            ),
            ("queryValue", "10".to_owned()),
            ("host", source.ip().to_string()),
            ("port", source.port().to_string()),
            ("username", opts.user().unwrap_or("root").to_owned()),
            ("dbName", opts.db_name().unwrap_or("test").to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["query", "queryValue", "host", "port"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("queryValue", "0")]),
            Invalid::Values(&[("queryValue", "ten")]),
            Invalid::Values(&[("activationQueryValue", "ten")]),
            Invalid::Values(&[("activationQueryValue", "NaN")]),
            Invalid::Values(&[("port", "big")]),
            Invalid::Values(&[("useGlobalConnPools", "yes")]),
            Invalid::Values(&[("maxOpenConns", "many")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    fn hostile_name(&self) -> &'static [(&'static str, &'static str)] {
        &[("dbName", "jobs/eu%2F(x):y.z")]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationQueryValue",
            threshold: 5.0,
            step: 0.5,
        }
    }

    fn secrets(&self, source: SocketAddr) -> Vec<SecretCase> {
        let password = "my-pw-5d2a9e61";
        // The user name goes to the server as it is (the password only scrambled), so it is
        // the control that the connection string was used; none of it may show.
        let user = "my-conn-user-83f0c4b7";
        let connection = format!("{user}:my-conn-pw-1e6b7d20@tcp({source})/test");
        vec![
            SecretCase {
                name: "password",
                metadata: Vec::new(),
                auth: owned(&[("password", password)]),
                env: Vec::new(),
                metadata_allowed: false,
                tells: vec![password.to_owned()],
                reaches_source: false,
            },
            SecretCase {
                name: "connectionString",
                metadata: Vec::new(),
                auth: vec![("connectionString", connection.clone())],
                env: Vec::new(),
                metadata_allowed: false,
                tells: vec![
                    user.to_owned(),
                    "my-conn-pw-1e6b7d20".to_owned(),
                    connection,
                ],
                reaches_source: true,
            },
        ]
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        Box::pin(async { Some(Box::new(Store::start().await) as Box<dyn Source>) })
    }
}
