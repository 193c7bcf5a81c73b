//! Fixture and source of the `mysql` trigger.
//!
//! The source is the machine's real MariaDB (`KEDA_TEST_MYSQL_URL`, else the local one, started
//! by `external-scalers/scripts/ensure-test-services` when down) behind a proxy on loopback that
//! records what clients send. Each proxy's port names the row its trigger reads. Once told to
//! refuse, the proxy closes every connection and answers new ones as a server refusing the
//! credentials would: a handshake, then `ERROR 1045 (28000)` to the client's login.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;
use mysql_async::prelude::Queryable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::fixtures::{Activation, Fixture, Invalid, Metadata, SecretCase};
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

#[derive(Default)]
struct ProxyState {
    refusing: bool,
    seen: Vec<u8>,
    tasks: Vec<JoinHandle<()>>,
}

/// MariaDB behind a recording proxy.
struct Store {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    accept: JoinHandle<()>,
    db: tokio::sync::Mutex<mysql_async::Conn>,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.state.lock().unwrap().tasks.drain(..) {
            task.abort();
        }
    }
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
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
        let store = Self {
            addr,
            state,
            accept,
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
                (self.addr.port(), value),
            )
            .await
            .unwrap();
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

/// A MySQL packet: 3-byte little-endian length, sequence number, payload.
fn packet(sequence: u8, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let mut out = vec![length[0], length[1], length[2], sequence];
    out.extend_from_slice(payload);
    out
}

/// Answers as a server that refuses the client's credentials, recording the login it sent
/// (user name, scrambled password, database).
async fn refuse(mut client: TcpStream, state: Arc<Mutex<ProxyState>>) {
    // Protocol 10 handshake offering mysql_native_password, without TLS.
    let mut handshake = vec![10];
    handshake.extend_from_slice(b"10.11.0-refusing\0");
    handshake.extend_from_slice(&7u32.to_le_bytes());
    handshake.extend_from_slice(b"abcdefgh\0");
    // PROTOCOL_41, SECURE_CONNECTION, LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, CONNECT_WITH_DB,
    // TRANSACTIONS; then MULTI_RESULTS and PLUGIN_AUTH in the upper half.
    handshake.extend_from_slice(&0xA20Fu16.to_le_bytes());
    handshake.push(0x21);
    handshake.extend_from_slice(&2u16.to_le_bytes());
    handshake.extend_from_slice(&0x000Au16.to_le_bytes());
    handshake.push(21);
    handshake.extend_from_slice(&[0; 10]);
    handshake.extend_from_slice(b"ijklmnopqrst\0");
    handshake.extend_from_slice(b"mysql_native_password\0");
    if client.write_all(&packet(0, &handshake)).await.is_err() {
        return;
    }
    let mut buffer = vec![0u8; 16 * 1024];
    let n = client.read(&mut buffer).await.unwrap_or(0);
    state.lock().unwrap().seen.extend_from_slice(&buffer[..n]);
    if n > 0 {
        let mut error = vec![0xff];
        error.extend_from_slice(&1045u16.to_le_bytes());
        error.extend_from_slice(b"#28000Access denied");
        let _ = client
            .write_all(&packet(buffer[3].wrapping_add(1), &error))
            .await;
    }
    let _ = client.shutdown().await;
}

impl Source for Store {
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
