//! Fixtures of the Redis family beyond `redis`: `redis-streams` reads the machine's Redis
//! through the recording proxy of `data_stores.rs`; `redis-cluster`, `redis-sentinel` and
//! their streams types read [`FakeRedis`], a server on loopback that speaks enough RESP to be
//! a one-node cluster (`CLUSTER SLOTS` names itself) and a sentinel whose master is itself
//! (`SENTINEL get-master-addr-by-name`), and answers every read with the value the checks
//! set. Real clusters and sentinels are tested in `tests/redis_servers.rs`; here the checks
//! need a source they control, refusing included, that a proxy in front of a real cluster
//! (whose nodes announce their own addresses) cannot be.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::data_stores::{redis_stream_source, stream_name};
use crate::fixtures::{Activation, Fixture, Invalid, Metadata, SecretCase};
use crate::sources::Source;

/// The master name [`FakeRedis`] knows.
const MASTER: &str = "mymaster";

fn owned(pairs: &[(&'static str, &str)]) -> Metadata {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

#[derive(Default)]
struct FakeState {
    value: i64,
    refusing: bool,
    seen: Vec<u8>,
    tasks: Vec<JoinHandle<()>>,
}

/// A RESP server on loopback: a one-node cluster, a sentinel and the master it names.
pub(crate) struct FakeRedis {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    accept: JoinHandle<()>,
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.state.lock().unwrap().tasks.drain(..) {
            task.abort();
        }
    }
}

impl FakeRedis {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<FakeState>> = Arc::default();
        let accept = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let task = tokio::spawn(serve(client, addr, state.clone()));
                    state.lock().unwrap().tasks.push(task);
                }
            })
        };
        Self {
            addr,
            state,
            accept,
        }
    }
}

/// One command (a RESP array of bulk strings) from the front of `buffer`, if it is complete.
fn command(buffer: &mut Vec<u8>) -> Option<Vec<String>> {
    fn line(buffer: &[u8], at: usize) -> Option<(String, usize)> {
        let end = buffer[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((
            String::from_utf8_lossy(&buffer[at..end]).into_owned(),
            end + 2,
        ))
    }
    let (header, mut at) = line(buffer, 0)?;
    let count: usize = header.strip_prefix('*')?.parse().ok()?;
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let (length, next) = line(buffer, at)?;
        let length: usize = length.strip_prefix('$')?.parse().ok()?;
        if buffer.len() < next + length + 2 {
            return None;
        }
        parts.push(String::from_utf8_lossy(&buffer[next..next + length]).into_owned());
        at = next + length + 2;
    }
    buffer.drain(..at);
    Some(parts)
}

fn bulk(text: &str) -> String {
    format!("${}\r\n{text}\r\n", text.len())
}

/// The answer to one command.
fn answer(parts: &[String], addr: SocketAddr, value: i64) -> String {
    let name = parts
        .first()
        .map(|p| p.to_ascii_uppercase())
        .unwrap_or_default();
    let sub = parts
        .get(1)
        .map(|p| p.to_ascii_uppercase())
        .unwrap_or_default();
    let host = addr.ip().to_string();
    match (name.as_str(), sub.as_str()) {
        ("PING", _) => "+PONG\r\n".to_owned(),
        ("AUTH" | "SELECT" | "CLIENT" | "READONLY", _) => "+OK\r\n".to_owned(),
        ("CLUSTER", "SLOTS") => format!(
            "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n{}:{}\r\n",
            bulk(&host),
            addr.port()
        ),
        ("SENTINEL", "GET-MASTER-ADDR-BY-NAME") => {
            if parts.get(2).map(String::as_str) == Some(MASTER) {
                format!("*2\r\n{}{}", bulk(&host), bulk(&addr.port().to_string()))
            } else {
                "*-1\r\n".to_owned()
            }
        }
        ("ROLE", _) => format!("*3\r\n{}:0\r\n*0\r\n", bulk("master")),
        ("EVAL" | "XLEN", _) => format!(":{value}\r\n"),
        ("XPENDING", _) => format!("*4\r\n:{value}\r\n$-1\r\n$-1\r\n*-1\r\n"),
        _ => format!("-ERR unknown command '{name}'\r\n"),
    }
}

/// Serves one client: answers each command, or refuses it as a wrong password would be.
async fn serve(mut client: TcpStream, addr: SocketAddr, state: Arc<Mutex<FakeState>>) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = client.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        let (value, refusing) = {
            let mut state = state.lock().unwrap();
            state.seen.extend_from_slice(&chunk[..n]);
            (state.value, state.refusing)
        };
        if refusing {
            let _ = client
                .write_all(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
                .await;
            let _ = client.shutdown().await;
            return;
        }
        let mut out = String::new();
        while let Some(parts) = command(&mut buffer) {
            out.push_str(&answer(&parts, addr, value));
        }
        if client.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

impl Source for FakeRedis {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn set(&self, value: f64) -> BoxFuture<'_, ()> {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the checks set small whole lengths"
        )]
        let value = value.round() as i64;
        self.state.lock().unwrap().value = value;
        Box::pin(async {})
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

fn fake() -> BoxFuture<'static, Option<Box<dyn Source>>> {
    Box::pin(async { Some(Box::new(FakeRedis::start().await) as Box<dyn Source>) })
}

fn password_case(name: &'static str, password: &str) -> SecretCase {
    reaching(name, password, true)
}

/// The master's password of a sentinel trigger: the source refuses the sentinel's part first,
/// so the master is never asked and the password cannot reach it.
fn master_password_case(password: &str) -> SecretCase {
    reaching("password", password, false)
}

fn reaching(name: &'static str, password: &str, reaches_source: bool) -> SecretCase {
    SecretCase {
        name,
        metadata: Vec::new(),
        auth: owned(&[(name, password)]),
        env: Vec::new(),
        metadata_allowed: false,
        tells: vec![password.to_owned()],
        reaches_source,
    }
}

/// A client certificate and key for TLS: never shown (the trigger does not connect over TLS
/// to the checks' plain source, so they are not expected to reach it).
fn certificate_case() -> SecretCase {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (generated.cert.pem(), generated.signing_key.serialize_pem());
    let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let tell = body[body.len() / 2].to_owned();
    SecretCase {
        name: "key",
        metadata: owned(&[("enableTLS", "true")]),
        auth: vec![("cert", cert), ("key", key)],
        env: Vec::new(),
        metadata_allowed: false,
        tells: vec![tell],
        reaches_source: false,
    }
}

/// What the list fixtures have in common.
fn list_invalid() -> Vec<Invalid> {
    vec![
        Invalid::Values(&[("listLength", "0")]),
        Invalid::Values(&[("listLength", "2.5")]),
        Invalid::Values(&[("activationListLength", "x")]),
        Invalid::Values(&[("enableTLS", "yes")]),
        Invalid::Values(&[("unsafeSsl", "maybe")]),
        Invalid::Values(&[("activationPush", "often")]),
        Invalid::MetricType(Some(MetricTargetType::Utilization)),
    ]
}

fn streams_invalid() -> Vec<Invalid> {
    vec![
        Invalid::Values(&[("streamLength", "0")]),
        Invalid::Values(&[("streamLength", "many")]),
        Invalid::Values(&[("activationLagCount", "1.5")]),
        Invalid::Values(&[("enableTLS", "yes")]),
        Invalid::Values(&[("activationPush", "often")]),
        Invalid::MetricType(Some(MetricTargetType::Utilization)),
    ]
}

/// `redis-streams`: the length of a stream on the machine's Redis.
pub(crate) struct RedisStreams;

impl Fixture for RedisStreams {
    fn types(&self) -> &'static [&'static str] {
        &["redis-streams"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            ("address", source.to_string()),
            ("stream", stream_name(source)),
            ("streamLength", "10".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["stream", "address"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        let mut invalid = streams_invalid();
        invalid.push(Invalid::Values(&[("databaseIndex", "-1")]));
        invalid.push(Invalid::Values(&[("address", "redis")]));
        invalid
    }

    fn hostile_name(&self) -> &'static [(&'static str, &'static str)] {
        &[("stream", "orders/eu%2F(x):y.z")]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationLagCount",
            threshold: 2.0,
            step: 1.0,
        }
    }

    fn secrets(&self, _: SocketAddr) -> Vec<SecretCase> {
        vec![
            password_case("password", "redis-streams-pw-5d2a91c3"),
            certificate_case(),
        ]
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        redis_stream_source()
    }
}

/// `redis-cluster`: the length of a key on a one-node cluster.
pub(crate) struct RedisCluster;

impl Fixture for RedisCluster {
    fn types(&self) -> &'static [&'static str] {
        &["redis-cluster"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            ("address", source.to_string()),
            ("listName", "jobs".to_owned()),
            ("listLength", "10".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["listName", "address"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        let mut invalid = list_invalid();
        invalid.push(Invalid::Values(&[("address", "a:1,b")]));
        invalid.push(Invalid::Values(&[("activationPush", "true")]));
        invalid
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
        vec![
            password_case("password", "redis-cluster-pw-8f01b2e4"),
            certificate_case(),
        ]
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        fake()
    }
}

/// `redis-sentinel`: the length of a key on the master a sentinel names.
pub(crate) struct RedisSentinel;

impl Fixture for RedisSentinel {
    fn types(&self) -> &'static [&'static str] {
        &["redis-sentinel"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            ("address", source.to_string()),
            ("sentinelMaster", MASTER.to_owned()),
            ("listName", "jobs".to_owned()),
            ("listLength", "10".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["listName", "address", "sentinelMaster"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        let mut invalid = list_invalid();
        invalid.push(Invalid::Values(&[("databaseIndex", "-1")]));
        invalid
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
        vec![
            master_password_case("redis-master-pw-3c7e55a0"),
            password_case("sentinelPassword", "redis-sentinel-pw-71d9e2b6"),
            certificate_case(),
        ]
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        fake()
    }
}

/// `redis-cluster-streams`: the length of a stream on a one-node cluster.
pub(crate) struct RedisClusterStreams;

impl Fixture for RedisClusterStreams {
    fn types(&self) -> &'static [&'static str] {
        &["redis-cluster-streams"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            ("address", source.to_string()),
            ("stream", "orders".to_owned()),
            ("streamLength", "10".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["stream", "address"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        let mut invalid = streams_invalid();
        invalid.push(Invalid::Values(&[("address", "a:1,b")]));
        invalid
    }

    fn hostile_name(&self) -> &'static [(&'static str, &'static str)] {
        &[("stream", "orders/eu%2F(x):y.z")]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationLagCount",
            threshold: 2.0,
            step: 1.0,
        }
    }

    fn secrets(&self, _: SocketAddr) -> Vec<SecretCase> {
        vec![password_case("password", "redis-cs-pw-0a4c8d17")]
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        fake()
    }
}

/// `redis-sentinel-streams`: the pending entries of a consumer group on the master a sentinel
/// names.
pub(crate) struct RedisSentinelStreams;

impl Fixture for RedisSentinelStreams {
    fn types(&self) -> &'static [&'static str] {
        &["redis-sentinel-streams"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            ("address", source.to_string()),
            ("sentinelMaster", MASTER.to_owned()),
            ("stream", "orders".to_owned()),
            ("consumerGroup", "workers".to_owned()),
            ("pendingEntriesCount", "10".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["stream", "address", "sentinelMaster"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("pendingEntriesCount", "0")]),
            Invalid::Values(&[("pendingEntriesCount", "x")]),
            Invalid::Values(&[("lagCount", "-3")]),
            Invalid::Values(&[("activationLagCount", "1.5")]),
            Invalid::Values(&[("databaseIndex", "-1")]),
            Invalid::Values(&[("activationPush", "often")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    fn hostile_name(&self) -> &'static [(&'static str, &'static str)] {
        &[("stream", "orders/eu%2F(x):y.z")]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationLagCount",
            threshold: 2.0,
            step: 1.0,
        }
    }

    fn secrets(&self, _: SocketAddr) -> Vec<SecretCase> {
        vec![
            master_password_case("redis-ss-pw-6b3f02d9"),
            password_case("sentinelPassword", "redis-ss-sentinel-pw-94e1c7a8"),
        ]
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        fake()
    }
}
