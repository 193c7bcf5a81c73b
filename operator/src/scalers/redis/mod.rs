//! The Redis family of triggers: `redis`, `redis-cluster` and `redis-sentinel` read the length
//! of a key ([`list`]); `redis-streams`, `redis-cluster-streams` and `redis-sentinel-streams`
//! read a stream ([`streams`]).
//!
//! This module holds what they share: where the server is and how to reach it ([`Connection`]:
//! one server, a cluster by its seed nodes, or the master a set of sentinels names; optionally
//! over TLS), and the shared clients ([`RedisPool`]): triggers that reach the same servers
//! the same way (kind, addresses, credentials, database, TLS) share one connection, and
//! concurrent identical reads on it are one command. A server that cannot be reached is an
//! error, never 0; no error or `Debug` output shows a password or a key.
//!
//! `activationPush: "true"` (a key of this implementation only; KEDA ignores it) makes a
//! trigger push: besides polling, a connection of its own waits for the source to change and
//! the loop runs at once when the trigger has become active ([`Scaler::activity_pushes`]).

/// The connection parameters every Redis trigger type declares, then `[extra]` entries (the
/// database, sentinel keys) and the trigger's own.
macro_rules! connection_parameters {
    ([$($extra:tt)*] $($rest:tt)*) => {
        crate::parameters! {
            /// `host:port` of the server (of a seed node of a cluster, of a sentinel); a
            /// comma-separated list is read as `addresses`. Either this (or `addresses`) or
            /// `host` and `port` is required.
            "address": Text, optional, [Metadata, Auth, Env];
            /// A comma-separated list of `host:port`: the seed nodes of a cluster, the
            /// sentinels; a single server uses the first.
            "addresses": List, optional, [Metadata, Auth, Env];
            /// The server's host name, when `address` is not given.
            "host": Text, optional, [Metadata, Env, Auth];
            /// Comma-separated host names, one per entry of `ports`.
            "hosts": List, optional, [Metadata, Env, Auth];
            /// The server's port, when `address` is not given.
            "port": Integer, optional, [Metadata, Env, Auth];
            /// Comma-separated ports, one per entry of `hosts`.
            "ports": List, optional, [Metadata, Env, Auth];
            /// The ACL user name.
            "username": Text, optional, [Metadata, Env, Auth];
            /// The password.
            "password": Secret, optional, [Env, Auth];
            /// Connect over TLS (not together with `tls` of a TriggerAuthentication).
            "enableTLS": Bool = "false", optional, [Metadata];
            /// `enable` or `disable`: TLS, set by a TriggerAuthentication.
            "tls": Choice, optional, [Auth];
            /// With TLS, accept any server certificate (no verification at all).
            "unsafeSsl": Bool = "false", optional, [Metadata];
            /// With TLS, the PEM certificate of the CA that signed the server's certificate
            /// (instead of the system's trust store).
            "ca": Secret, optional, [Auth];
            /// With TLS, the PEM client certificate (with `key`).
            "cert": Secret, optional, [Auth];
            /// The same as `cert` (KEDA reads both spellings).
            "Cert": Secret, optional, [Auth];
            /// With TLS, the PEM private key of `cert` (unencrypted).
            "key": Secret, optional, [Auth];
            /// The password of an encrypted `key`: not supported (an error); give the key
            /// unencrypted.
            "keyPassword": Secret, optional, [Auth];
            /// `true`: besides polling, wait for the source to change on a connection of the
            /// trigger's own and act at once when it has become active (not a KEDA key).
            /// Streams wait with `XREAD BLOCK`; keys (not on a cluster) wait for keyspace
            /// notifications, which the server sends only when its `notify-keyspace-events`
            /// includes `K` and the key's type (`Kl` for lists, `KA` for all).
            "activationPush": Bool = "false", optional, [Metadata];
            $($extra)*
            $($rest)*
        }
    };
}

pub mod list;
pub mod streams;

use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo};

use super::pooled::{Pool, Pooled};
use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;

use super::{MetricSpec, Reading, Scaler, ScalerError, TriggerInput, error_chain};
use crate::params::{METADATA, ParamError, Params, Source};

/// Where `address`, `sentinelMaster` and `sentinelUsername` may come from (KEDA's order).
const ADDRESS: &[Source] = &[Source::Metadata, Source::Auth, Source::Env];
/// Where `host`, `port` and `username` may come from (KEDA's order).
const HOST: &[Source] = &[Source::Metadata, Source::Env, Source::Auth];
/// Where passwords may come from: not plain metadata.
const PASSWORD: &[Source] = &[Source::Env, Source::Auth];
/// Where `tls` and the certificates may come from.
const AUTH: &[Source] = &[Source::Auth];

/// How the servers are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One server (`redis`, `redis-streams`).
    Standalone,
    /// A Redis Cluster, found from its seed nodes (`redis-cluster`, `redis-cluster-streams`).
    Cluster,
    /// The master that sentinels name (`redis-sentinel`, `redis-sentinel-streams`).
    Sentinel,
}

impl Kind {
    /// The kind of a trigger type (`redis-cluster-streams` → cluster).
    pub fn of(trigger_type: &str) -> Self {
        if trigger_type.starts_with("redis-cluster") {
            Self::Cluster
        } else if trigger_type.starts_with("redis-sentinel") {
            Self::Sentinel
        } else {
            Self::Standalone
        }
    }
}

/// TLS settings (`enableTLS` / `tls: enable`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tls {
    /// `ca`: PEM CA certificates that replace the system's trust store.
    pub ca: Option<String>,
    /// `cert` and `key`: the PEM client certificate and its private key.
    pub client: Option<(String, String)>,
    /// `unsafeSsl`: no verification of the server's certificate.
    pub unsafe_ssl: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .field("unsafe_ssl", &self.unsafe_ssl)
            .finish()
    }
}

/// The sentinel side of a `redis-sentinel*` trigger.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sentinel {
    /// `sentinelMaster` (required): the name the sentinels monitor the master by.
    pub master: String,
    /// `sentinelUsername` (optional): the ACL user on the sentinels.
    pub username: Option<String>,
    /// `sentinelPassword` (optional, a secret): the sentinels' password.
    pub password: Option<String>,
}

impl fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sentinel")
            .field("master", &self.master)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .finish()
    }
}

/// Where the servers are and how to reach them; also what makes triggers share a client.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Connection {
    pub kind: Kind,
    /// `host`, `port`: the server; the seed nodes of a cluster; the sentinels.
    pub addresses: Vec<(String, u16)>,
    /// `username` (optional): the ACL user, from the metadata, the environment or the
    /// TriggerAuthentication.
    pub username: Option<String>,
    /// `password` (optional, a secret): from the environment (`passwordFromEnv`) or the
    /// TriggerAuthentication, never plain metadata.
    pub password: Option<String>,
    /// `databaseIndex` (optional, default 0; not for a cluster, which has database 0 only).
    pub database: i64,
    pub sentinel: Option<Sentinel>,
    pub tls: Option<Tls>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("kind", &self.kind)
            .field("addresses", &self.addresses)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("database", &self.database)
            .field(
                "sentinel_master",
                &self.sentinel.as_ref().map(|s| s.master.as_str()),
            )
            .field("tls", &self.tls)
            .finish()
    }
}

/// `host:port`, `[v6]:port`, from the parameter `name`.
fn split_address(name: &str, address: &str) -> Result<(String, u16), ParamError> {
    let invalid = || ParamError::invalid(name, format!("{address:?} is not host:port"));
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid());
    }
    let port = port.parse::<u16>().map_err(|_| invalid())?;
    Ok((host.to_owned(), port))
}

fn list<'a>(params: &'a Params, names: [&str; 2]) -> Option<Vec<&'a str>> {
    names
        .iter()
        .find_map(|name| params.get(name, HOST))
        .map(|text| text.split(',').map(str::trim).collect())
}

/// The error of a parameter that is known to be missing.
fn missing(params: &Params, name: &str, order: &[Source]) -> ScalerError {
    match params.require(name, order) {
        Err(error) => error.into(),
        Ok(_) => ScalerError::Config(format!("{name} is not usable")),
    }
}

/// `host:port` as written in errors.
fn shown(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The addresses: `address`/`addresses` (comma-separated), or `host(s)` with `port(s)`.
fn addresses(params: &Params) -> Result<Vec<(String, u16)>, ScalerError> {
    let address = ["address", "addresses"]
        .into_iter()
        .find_map(|name| params.get(name, ADDRESS).map(|value| (name, value)));
    if let Some((name, address)) = address {
        return address
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| split_address(name, a).map_err(ScalerError::from))
            .collect();
    }
    let hosts = list(params, ["host", "hosts"]);
    let ports = list(params, ["port", "ports"]);
    let (hosts, ports) = match (hosts, ports) {
        (Some(hosts), Some(ports)) => (hosts, ports),
        (None, None) => return Err(missing(params, "address", ADDRESS)),
        (Some(_), None) => return Err(missing(params, "port", HOST)),
        (None, Some(_)) => return Err(missing(params, "host", HOST)),
    };
    if hosts.len() != ports.len() {
        return Err(ScalerError::Config(
            "the number of hosts and ports differ".to_owned(),
        ));
    }
    hosts
        .into_iter()
        .zip(ports)
        .map(|(host, port)| {
            if host.is_empty() {
                return Err(ParamError::invalid("host", "is empty").into());
            }
            let port = port
                .parse::<u16>()
                .map_err(|_| ParamError::invalid("port", format!("{port:?} is not a port")))?;
            Ok((host.to_owned(), port))
        })
        .collect()
}

/// `enableTLS` (metadata) or `tls` (TriggerAuthentication), then the certificates.
fn tls(params: &Params) -> Result<Option<Tls>, ScalerError> {
    let metadata_tls = params.get("enableTLS", METADATA);
    let auth_tls = params.get("tls", AUTH);
    let enabled = match (metadata_tls, auth_tls) {
        (Some(_), Some(_)) => {
            return Err(ScalerError::Config(
                "enableTLS (metadata) and tls (TriggerAuthentication) cannot both be set"
                    .to_owned(),
            ));
        }
        (Some(_), None) => params.bool("enableTLS", METADATA, false)?,
        (None, Some("enable")) => true,
        (None, Some("disable") | None) => false,
        (None, Some(other)) => {
            return Err(ParamError::invalid(
                "tls",
                format!("{other:?} is not one of enable, disable"),
            )
            .into());
        }
    };
    let unsafe_ssl = params.bool("unsafeSsl", METADATA, false)?;
    if !enabled {
        return Ok(None);
    }
    if params.secret("keyPassword", AUTH)?.is_some() {
        return Err(ParamError::invalid(
            "keyPassword",
            "encrypted private keys are not supported; give key unencrypted",
        )
        .into());
    }
    let ca = params.secret("ca", AUTH)?.map(str::to_owned);
    let cert = match params.secret("cert", AUTH)? {
        Some(cert) => Some(cert),
        None => params.secret("Cert", AUTH)?,
    };
    let key = params.secret("key", AUTH)?;
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert.to_owned(), key.to_owned())),
        (None, None) => None,
        (Some(_), None) => return Err(missing(params, "key", AUTH)),
        (None, Some(_)) => return Err(missing(params, "cert", AUTH)),
    };
    if let Some(ca) = &ca {
        super::tls::certificates("ca", ca)?;
    }
    if let Some((cert, key)) = &client {
        super::tls::certificates("cert", cert)?;
        super::tls::private_key("key", key)?;
    }
    Ok(Some(Tls {
        ca,
        client,
        unsafe_ssl,
    }))
}

/// Reads and checks the connection parameters of a trigger of `kind`; no I/O.
pub fn parse_connection(params: &Params, kind: Kind) -> Result<Connection, ScalerError> {
    let mut addresses = addresses(params)?;
    if addresses.is_empty() {
        return Err(missing(params, "address", ADDRESS));
    }
    if kind == Kind::Standalone {
        addresses.truncate(1);
    }
    let database = if kind == Kind::Cluster {
        0
    } else {
        let database = params.int("databaseIndex", METADATA, Some(0))?;
        if database < 0 {
            return Err(ParamError::invalid(
                "databaseIndex",
                format!("{database} must not be negative"),
            )
            .into());
        }
        database
    };
    let username = params.get("username", HOST).map(str::to_owned);
    let password = params.secret("password", PASSWORD)?.map(str::to_owned);
    let sentinel = if kind == Kind::Sentinel {
        Some(Sentinel {
            master: params.require("sentinelMaster", ADDRESS)?.to_owned(),
            username: params.get("sentinelUsername", ADDRESS).map(str::to_owned),
            password: params
                .secret("sentinelPassword", PASSWORD)?
                .map(str::to_owned),
        })
    } else {
        None
    };
    Ok(Connection {
        kind,
        addresses,
        username,
        password,
        database,
        sentinel,
        tls: tls(params)?,
    })
}

/// `activationPush` (optional, default false).
pub fn parse_push(input: &TriggerInput) -> Result<bool, ScalerError> {
    Ok(input.params.bool("activationPush", METADATA, false)?)
}

/// rustls needs a process-wide provider for the verifier `unsafeSsl` installs: ring, the one
/// provider built in.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed it first; either is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The PEM certificates of `tls` as the client library takes them.
fn certificates(tls: &Tls) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.as_bytes().to_vec(),
                client_key: key.as_bytes().to_vec(),
            }),
        root_cert: tls.ca.as_ref().map(|ca| ca.as_bytes().to_vec()),
    }
}

/// The address of one node, plain or TLS.
fn node_address(host: &str, port: u16, tls: Option<&Tls>) -> ConnectionAddr {
    match tls {
        None => ConnectionAddr::Tcp(host.to_owned(), port),
        Some(tls) => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: tls.unsafe_ssl,
            tls_params: None,
        },
    }
}

/// A client (no I/O yet) of one server.
fn tls_client(
    host: &str,
    port: u16,
    settings: RedisConnectionInfo,
    tls: Option<&Tls>,
) -> redis::RedisResult<redis::Client> {
    let info = node_address(host, port, tls)
        .into_connection_info()?
        .set_redis_settings(settings);
    match tls {
        None => redis::Client::open(info),
        Some(tls) => {
            install_crypto_provider();
            redis::Client::build_with_tls(info, certificates(tls))
        }
    }
}

/// A connection of either kind; both pipeline commands from many callers.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Conn::Single",
            Self::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl Conn {
    /// The answer to `cmd` (an error reply is an error).
    async fn query<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

/// Whether an error means the connection is no longer usable.
fn broken(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

/// The shared clients of the Redis triggers (one per process, in [`super::Services`]).
pub type RedisPool = Pool<Connection, Client>;

/// The servers of a [`Connection`] as a set of triggers reads them: a connection made on first
/// use and made again after it broke.
pub struct Client {
    connection: Connection,
    /// The servers, for errors.
    shown: String,
    current: tokio::sync::Mutex<Option<Conn>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Client {
    fn new(connection: Connection) -> Self {
        let list = connection
            .addresses
            .iter()
            .map(|(host, port)| shown(host, *port))
            .collect::<Vec<_>>()
            .join(",");
        let shown = match (&connection.kind, &connection.sentinel) {
            (Kind::Cluster, _) => format!("Redis cluster at {list}"),
            (Kind::Sentinel, Some(sentinel)) => {
                format!(
                    "Redis master {:?} of the sentinels at {list}",
                    sentinel.master
                )
            }
            _ => format!("Redis at {list}"),
        };
        Self {
            connection,
            shown,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The shared client of `connection` in `pool`.
    fn pooled(pool: &RedisPool, connection: &Connection) -> Arc<Pooled<Connection, Client>> {
        pool.get(connection, || Self::new(connection.clone()))
    }

    fn error(&self, error: &redis::RedisError) -> ScalerError {
        ScalerError::Source(format!("{}: {}", self.shown, error_chain(error)))
    }

    fn settings(&self) -> RedisConnectionInfo {
        let mut settings = RedisConnectionInfo::default().set_db(self.connection.database);
        if let Some(username) = &self.connection.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.connection.password {
            settings = settings.set_password(password);
        }
        settings
    }

    /// The master the sentinels name now: the first sentinel that answers decides.
    async fn master(&self, timeout: Duration) -> Result<(String, u16), ScalerError> {
        let Some(sentinel) = &self.connection.sentinel else {
            let (host, port) = self
                .connection
                .addresses
                .first()
                .cloned()
                .ok_or_else(|| ScalerError::Config("no Redis address is given".to_owned()))?;
            return Ok((host, port));
        };
        let mut settings = RedisConnectionInfo::default();
        if let Some(username) = &sentinel.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &sentinel.password {
            settings = settings.set_password(password);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut errors = Vec::new();
        for (host, port) in &self.connection.addresses {
            let asked = async {
                let client =
                    tls_client(host, *port, settings.clone(), self.connection.tls.as_ref())?;
                let mut connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&sentinel.master)
                    .query_async::<Option<(String, u16)>>(&mut connection)
                    .await
            };
            match asked.await {
                Ok(Some(master)) => return Ok(master),
                Ok(None) => errors.push(format!(
                    "sentinel {} does not know the master {:?}",
                    shown(host, *port),
                    sentinel.master
                )),
                Err(e) => errors.push(format!(
                    "sentinel {}: {}",
                    shown(host, *port),
                    error_chain(&e)
                )),
            }
        }
        Err(ScalerError::Source(format!(
            "{}: {}",
            self.shown,
            errors.join("; ")
        )))
    }

    /// A client of the server to talk to (the master, for sentinels).
    async fn server(&self, timeout: Duration) -> Result<redis::Client, ScalerError> {
        let (host, port) = self.master(timeout).await?;
        tls_client(&host, port, self.settings(), self.connection.tls.as_ref())
            .map_err(|e| self.error(&e))
    }

    /// A new connection, not shared: `response` bounds how long a command may wait for its
    /// answer (a blocking read needs more than the usual timeout).
    async fn connect(&self, timeout: Duration, response: Duration) -> Result<Conn, ScalerError> {
        if self.connection.kind == Kind::Cluster {
            let nodes = self
                .connection
                .addresses
                .iter()
                .map(|(host, port)| {
                    node_address(host, *port, self.connection.tls.as_ref()).into_connection_info()
                })
                .collect::<redis::RedisResult<Vec<_>>>()
                .map_err(|e| self.error(&e))?;
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(timeout)
                .response_timeout(response)
                .retries(1);
            if let Some(username) = &self.connection.username {
                builder = builder.username(username);
            }
            if let Some(password) = &self.connection.password {
                builder = builder.password(password);
            }
            if let Some(tls) = &self.connection.tls {
                install_crypto_provider();
                builder = builder.certs(certificates(tls)).tls(if tls.unsafe_ssl {
                    redis::TlsMode::Insecure
                } else {
                    redis::TlsMode::Secure
                });
            }
            let client = builder.build().map_err(|e| self.error(&e))?;
            let connection =
                tokio::time::timeout(timeout.saturating_mul(2), client.get_async_connection())
                    .await
                    .map_err(|_| {
                        ScalerError::Source(format!("{}: no answer within {timeout:?}", self.shown))
                    })?
                    .map_err(|e| self.error(&e))?;
            return Ok(Conn::Cluster(connection));
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(response));
        let mut connection = self
            .server(timeout)
            .await?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(&e))?;
        if self.connection.kind == Kind::Sentinel {
            // During a failover the sentinels may still name the old master.
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query_async(&mut connection)
                .await
                .map_err(|e| self.error(&e))?;
            let master = matches!(role.first(), Some(redis::Value::BulkString(r)) if r.as_slice() == b"master");
            if !master {
                return Err(ScalerError::Source(format!(
                    "{}: the server the sentinels name is not a master (yet)",
                    self.shown
                )));
            }
        }
        Ok(Conn::Single(connection))
    }

    async fn shared(&self, timeout: Duration) -> Result<Conn, ScalerError> {
        let mut slot = self.current.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = self.connect(timeout, timeout).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// The server's answer to `cmd` on the shared connection (an error reply is `Ok(Err)`),
    /// on a new connection once more if the shared one broke.
    async fn answer<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        timeout: Duration,
    ) -> Result<redis::RedisResult<T>, ScalerError> {
        let mut retried = false;
        loop {
            let mut connection = self.shared(timeout).await?;
            match connection.query(cmd).await {
                Err(error) if broken(&error) => {
                    *self.current.lock().await = None;
                    if !retried {
                        retried = true;
                        continue;
                    }
                    return Err(self.error(&error));
                }
                reply => return Ok(reply),
            }
        }
    }

    /// The answer to `cmd`; an error reply is an error.
    async fn query<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        timeout: Duration,
    ) -> Result<T, ScalerError> {
        self.answer(cmd, timeout).await?.map_err(|e| self.error(&e))
    }

    /// The text of an error of these servers.
    fn describe(&self, error: &redis::RedisError) -> String {
        format!("{}: {}", self.shown, error_chain(error))
    }

    /// The servers, as errors name them.
    fn servers(&self) -> &str {
        &self.shown
    }

    fn database(&self) -> i64 {
        self.connection.database
    }
}

/// Where a push session reports activations.
type Activations = futures::channel::mpsc::Sender<()>;

/// Reports one activation; a report already waiting is enough.
fn activate(activations: &mut Activations) {
    let _ = activations.try_send(());
}

/// What a list or a streams trigger reads and watches; [`RedisScaler`] is the same around both.
pub(super) trait Watched: Send + Sync + 'static {
    /// The value per replica the HPA aims for.
    fn target(&self) -> f64;
    /// Whether `activationPush` is on.
    fn push(&self) -> bool;
    /// The trigger's metadata, for `Debug` (it hides secrets itself).
    fn metadata(&self) -> &dyn fmt::Debug;
    /// A read, joined with the same read of other triggers on the shared connection.
    fn read(&self) -> BoxFuture<'_, Result<Reading, ScalerError>>;
    /// One push session: reports activations until its connection ends.
    fn watch(
        self: Arc<Self>,
        activations: Activations,
    ) -> BoxFuture<'static, Result<(), ScalerError>>;
}

/// A built trigger of the Redis family.
pub(super) struct RedisScaler<S> {
    name: String,
    target_type: MetricTargetType,
    source: Arc<S>,
    /// Dropped with the scaler: ends its pushes.
    alive: tokio::sync::watch::Sender<()>,
}

impl<S: Watched> RedisScaler<S> {
    pub(super) fn new(name: String, target_type: MetricTargetType, source: S) -> Self {
        Self {
            name,
            target_type,
            source: Arc::new(source),
            alive: tokio::sync::watch::Sender::new(()),
        }
    }
}

impl<S: Watched> fmt::Debug for RedisScaler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisScaler")
            .field("name", &self.name)
            .field("metadata", self.source.metadata())
            .finish_non_exhaustive()
    }
}

impl<S: Watched> Scaler for RedisScaler<S> {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.name.clone(),
            target_type: self.target_type,
            target: self.source.target(),
        }]
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move {
            if metric != self.name {
                return Err(ScalerError::NoSuchMetric(metric.to_owned()));
            }
            self.source.read().await
        })
    }

    fn activity_pushes(&self) -> Option<futures::stream::BoxStream<'static, ()>> {
        if !self.source.push() {
            return None;
        }
        let source = self.source.clone();
        Some(pushes(
            self.name.clone(),
            self.alive.subscribe(),
            move |activations| source.clone().watch(activations),
        ))
    }
}

/// The pushes of a trigger: runs `session` (which waits for changes on a connection of its
/// own and reports activations) again and again, 1 s after it ended, doubling up to 30 s
/// while it keeps failing soon; ends when the scaler (the sender of `alive`) is dropped or the
/// stream is.
fn pushes<F, Fut>(
    what: String,
    mut alive: tokio::sync::watch::Receiver<()>,
    mut session: F,
) -> futures::stream::BoxStream<'static, ()>
where
    F: FnMut(Activations) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), ScalerError>> + Send,
{
    use futures::StreamExt;
    let (sender, receiver) = futures::channel::mpsc::channel(1);
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        loop {
            let started = std::time::Instant::now();
            let ended = tokio::select! {
                () = dropped(&mut alive) => return,
                ended = session(sender.clone()) => ended,
            };
            if sender.is_closed() {
                return;
            }
            if started.elapsed() > Duration::from_secs(30) {
                wait = Duration::from_secs(1);
            }
            match ended {
                Ok(()) => {
                    tracing::debug!(trigger = %what, ?wait, "Redis push connection ended; reconnecting");
                }
                Err(error) => {
                    tracing::warn!(trigger = %what, %error, ?wait, "Redis push connection failed; reconnecting");
                }
            }
            tokio::select! {
                () = dropped(&mut alive) => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = wait.saturating_mul(2).min(Duration::from_secs(30));
        }
    });
    receiver.boxed()
}

/// Completes when the scaler that owns `alive` is dropped.
async fn dropped(alive: &mut tokio::sync::watch::Receiver<()>) {
    while alive.changed().await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_trigger_types() {
        assert_eq!(Kind::of("redis"), Kind::Standalone);
        assert_eq!(Kind::of("redis-streams"), Kind::Standalone);
        assert_eq!(Kind::of("redis-cluster"), Kind::Cluster);
        assert_eq!(Kind::of("redis-cluster-streams"), Kind::Cluster);
        assert_eq!(Kind::of("redis-sentinel"), Kind::Sentinel);
        assert_eq!(Kind::of("redis-sentinel-streams"), Kind::Sentinel);
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let key = key.serialize_pem();
        let params = Params::from_metadata([
            ("addresses", "a:1,b:2"),
            ("sentinelMaster", "m"),
            ("enableTLS", "true"),
        ])
        .with_auth([
            ("password", "master-secret"),
            ("sentinelPassword", "sentinel-secret"),
            ("cert", cert.as_str()),
            ("key", key.as_str()),
            ("ca", cert.as_str()),
        ]);
        let connection = parse_connection(&params, Kind::Sentinel).unwrap();
        assert_eq!(connection.sentinel.as_ref().unwrap().master, "m");
        assert!(connection.tls.as_ref().unwrap().client.is_some());
        let shown = format!("{connection:?} {:?}", Client::new(connection.clone()));
        let key_line = key.lines().nth(1).unwrap();
        for secret in ["master-secret", "sentinel-secret", key_line] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn addresses_of_each_kind() {
        let params = Params::from_metadata([("addresses", "a:1, b:2,c:3")]);
        let cluster = parse_connection(&params, Kind::Cluster).unwrap();
        assert_eq!(cluster.addresses.len(), 3);
        assert_eq!(cluster.addresses[1], ("b".to_owned(), 2));
        let single = parse_connection(&params, Kind::Standalone).unwrap();
        assert_eq!(single.addresses, vec![("a".to_owned(), 1)]);
        let params = Params::from_metadata([("hosts", "a,b"), ("ports", "1,2")]);
        let cluster = parse_connection(&params, Kind::Cluster).unwrap();
        assert_eq!(
            cluster.addresses,
            vec![("a".to_owned(), 1), ("b".to_owned(), 2)]
        );
    }
}
