//! `redis`: the length of a Redis list.
//!
//! The value is the size of the key `listName`, whatever its type, as KEDA counts it: `LLEN`
//! for a list (and 0 for a missing key), `SCARD` for a set, `ZCARD` for a sorted set, `HLEN`
//! for a hash; one server-side script does the type check and the count in one round trip.
//! Triggers reading the same server (address, credentials, database) share one multiplexed
//! connection, and concurrent reads of the same key on it are one command. A server that
//! cannot be reached is an error, never 0; no error or `Debug` output shows a password.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;
use redis::aio::MultiplexedConnection;

use super::pooled::{Pool, Pooled};
use super::{MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput, error_chain};
use crate::metric_name;
use crate::params::{METADATA, ParamError, Params, Source};

/// Where `address` may come from (KEDA's order).
const ADDRESS: &[Source] = &[Source::Metadata, Source::Auth, Source::Env];
/// Where `host`, `port` and `username` may come from (KEDA's order).
const HOST: &[Source] = &[Source::Metadata, Source::Env, Source::Auth];
/// Where `password` may come from: not plain metadata.
const PASSWORD: &[Source] = &[Source::Env, Source::Auth];
/// Where `tls` may come from.
const AUTH: &[Source] = &[Source::Auth];

/// Counts the key by its type, as KEDA does (a missing key counts as an empty list).
const COUNT_SCRIPT: &str = "local t = redis.call('TYPE', KEYS[1]).ok \
    local cmd = ({zset = 'ZCARD', set = 'SCARD', list = 'LLEN', hash = 'HLEN', none = 'LLEN'})[t] \
    if not cmd then return redis.error_reply('WRONGTYPE key is a ' .. t) end \
    return redis.call(cmd, KEYS[1])";

crate::parameters! {
    /// `host:port` of the server. Either this (or `addresses`, whose first entry is used) or
    /// `host` and `port` is required.
    "address": Text, optional, [Metadata, Auth, Env];
    /// A comma-separated list of `host:port`; the first is used.
    "addresses": List, optional, [Metadata, Auth, Env];
    /// The server's host name, when `address` is not given.
    "host": Text, optional, [Metadata, Env, Auth];
    /// Comma-separated host names; the first is used.
    "hosts": List, optional, [Metadata, Env, Auth];
    /// The server's port, when `address` is not given.
    "port": Integer, optional, [Metadata, Env, Auth];
    /// Comma-separated ports, one per entry of `hosts`.
    "ports": List, optional, [Metadata, Env, Auth];
    /// The ACL user name.
    "username": Text, optional, [Metadata, Env, Auth];
    /// The password.
    "password": Secret, optional, [Env, Auth];
    /// The key whose length is read: a list (`LLEN`), a set, a sorted set or a hash.
    "listName": Text, required, [Metadata];
    /// The length per replica the HPA aims for; an integer greater than 0.
    "listLength": Integer = "5", optional, [Metadata];
    /// The trigger is active while the length is greater than this.
    "activationListLength": Integer = "0", optional, [Metadata];
    /// The database selected on the connection.
    "databaseIndex": Integer = "0", optional, [Metadata];
    /// Connect over TLS (not together with `tls` of a TriggerAuthentication).
    "enableTLS": Bool = "false", optional, [Metadata];
    /// `enable` or `disable`: TLS, set by a TriggerAuthentication.
    "tls": Choice, optional, [Auth];
}

/// The parameters of a `redis` trigger.
#[derive(Clone, PartialEq)]
pub struct Metadata {
    /// `address` (or `addresses`; the first of a comma-separated list): `host:port` of the
    /// server, from the metadata, the TriggerAuthentication or the environment
    /// (`addressFromEnv`). Alternatively `host` (or `hosts`) and `port` (or `ports`), whose
    /// first entries are used.
    pub host: String,
    pub port: u16,
    /// `username` (optional): the ACL user, from the metadata, the environment or the
    /// TriggerAuthentication.
    pub username: Option<String>,
    /// `password` (optional, a secret): from the environment (`passwordFromEnv`) or the
    /// TriggerAuthentication, never plain metadata.
    pub password: Option<String>,
    /// `listName` (required): the key whose length is read.
    pub list_name: String,
    /// `listLength` (optional, default 5): the length per replica the HPA aims for, an
    /// integer greater than 0.
    pub list_length: i64,
    /// `activationListLength` (optional, default 0): the trigger is active while the length
    /// is greater than this.
    pub activation_list_length: i64,
    /// `databaseIndex` (optional, default 0): the database selected on the connection.
    pub database_index: i64,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("list_name", &self.list_name)
            .field("list_length", &self.list_length)
            .field("activation_list_length", &self.activation_list_length)
            .field("database_index", &self.database_index)
            .finish()
    }
}

/// The first entry of a comma-separated list.
fn first(text: &str) -> &str {
    text.split(',').next().unwrap_or_default().trim()
}

/// `host:port`, `[v6]:port`.
fn split_address(address: &str) -> Result<(String, u16), ParamError> {
    let invalid = || ParamError::invalid("address", format!("{address:?} is not host:port"));
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

/// Reads and checks the metadata of a `redis` trigger; no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let list_name = params.require("listName", METADATA)?.to_owned();
    let list_length = params.int("listLength", METADATA, Some(5))?;
    if list_length <= 0 {
        return Err(ParamError::invalid(
            "listLength",
            format!("{list_length} must be greater than 0"),
        )
        .into());
    }
    let activation_list_length = params.int("activationListLength", METADATA, Some(0))?;
    let database_index = params.int("databaseIndex", METADATA, Some(0))?;
    if database_index < 0 {
        return Err(ParamError::invalid(
            "databaseIndex",
            format!("{database_index} must not be negative"),
        )
        .into());
    }
    let address = params
        .get("address", ADDRESS)
        .or_else(|| params.get("addresses", ADDRESS));
    let (host, port) = if let Some(address) = address {
        split_address(first(address))?
    } else {
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
        let host = hosts.first().copied().unwrap_or_default();
        let port = ports.first().copied().unwrap_or_default();
        if host.is_empty() {
            return Err(ParamError::invalid("host", "is empty").into());
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| ParamError::invalid("port", format!("{port:?} is not a port")))?;
        (host.to_owned(), port)
    };
    let username = params.get("username", HOST).map(str::to_owned);
    let password = params.secret("password", PASSWORD)?.map(str::to_owned);
    let metadata_tls = params.get("enableTLS", METADATA);
    let auth_tls = params.get("tls", AUTH);
    let tls = match (metadata_tls, auth_tls) {
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
    if tls {
        return Err(ScalerError::Config(
            "TLS connections to Redis (enableTLS / tls) are not supported yet".to_owned(),
        ));
    }
    Ok(Metadata {
        host,
        port,
        username,
        password,
        list_name,
        list_length,
        activation_list_length,
        database_index,
    })
}

/// What makes two triggers share a connection.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    database: i64,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// The shared connections of `redis` triggers (one per process, in [`Services`]).
pub type RedisPool = Pool<Key, Client>;

/// One Redis server as a set of triggers reads it: a multiplexed connection made on first use
/// and made again after it broke.
pub struct Client {
    redis: redis::Client,
    /// `host:port`, for errors.
    shown: String,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Client {
    async fn connection(&self, timeout: Duration) -> Result<MultiplexedConnection, ScalerError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let connection = self
            .redis
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(&e))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    fn error(&self, error: &redis::RedisError) -> ScalerError {
        ScalerError::Source(format!("Redis at {}: {}", self.shown, error_chain(error)))
    }

    /// The size of `key`, on a new connection once more if the shared one broke.
    async fn count(&self, key: &str, timeout: Duration) -> Result<f64, ScalerError> {
        let mut retried = false;
        loop {
            let mut connection = self.connection(timeout).await?;
            let reply: redis::RedisResult<i64> = redis::cmd("EVAL")
                .arg(COUNT_SCRIPT)
                .arg(1)
                .arg(key)
                .query_async(&mut connection)
                .await;
            match reply {
                // Lengths are far below 2^53.
                #[allow(clippy::cast_precision_loss, reason = "list lengths are below 2^53")]
                Ok(length) => return Ok(length as f64),
                Err(error) => {
                    let broken = error.is_io_error()
                        || error.is_connection_dropped()
                        || error.is_connection_refusal()
                        || error.is_timeout()
                        || error.is_unrecoverable_error();
                    if broken {
                        *self.connection.lock().await = None;
                        if !retried {
                            retried = true;
                            continue;
                        }
                    }
                    return Err(self.error(&error));
                }
            }
        }
    }
}

/// Builds a `redis` trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = super::external_target_type(input)?;
    let metadata = parse(input)?;
    let key = Key {
        host: metadata.host.clone(),
        port: metadata.port,
        username: metadata.username.clone(),
        password: metadata.password.clone(),
        database: metadata.database_index,
    };
    let mut settings = redis::RedisConnectionInfo::default().set_db(metadata.database_index);
    if let Some(username) = &metadata.username {
        settings = settings.set_username(username);
    }
    if let Some(password) = &metadata.password {
        settings = settings.set_password(password);
    }
    let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
        metadata.host.clone(),
        metadata.port,
    ))
    .map_err(|_| ParamError::invalid("address", "is not host:port"))?
    .set_redis_settings(settings);
    let client = redis::Client::open(info)
        .map_err(|_| ParamError::invalid("address", "is not host:port"))?;
    let shown = if metadata.host.contains(':') {
        format!("[{}]:{}", metadata.host, metadata.port)
    } else {
        format!("{}:{}", metadata.host, metadata.port)
    };
    let pooled = services.redis.get(&key, || Client {
        redis: client,
        shown,
        connection: tokio::sync::Mutex::new(None),
    });
    Ok(Box::new(RedisScaler {
        name: metric_name::normalized(input.index, &format!("redis-{}", metadata.list_name)),
        target_type,
        timeout: input.http_timeout,
        pooled,
        metadata,
    }))
}

/// A built `redis` trigger.
pub struct RedisScaler {
    metadata: Metadata,
    name: String,
    target_type: MetricTargetType,
    timeout: Duration,
    pooled: Arc<Pooled<Key, Client>>,
}

impl fmt::Debug for RedisScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisScaler")
            .field("name", &self.name)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl Scaler for RedisScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        #[allow(clippy::cast_precision_loss, reason = "targets are far below 2^53")]
        let target = self.metadata.list_length as f64;
        vec![MetricSpec::External {
            name: self.name.clone(),
            target_type: self.target_type,
            target,
        }]
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move {
            if metric != self.name {
                return Err(ScalerError::NoSuchMetric(metric.to_owned()));
            }
            let key = self.metadata.list_name.clone();
            let timeout = self.timeout;
            let value = self
                .pooled
                .coalesce(&key.clone(), move |pooled| {
                    async move { pooled.client().count(&key, timeout).await }.boxed()
                })
                .await?;
            #[allow(clippy::cast_precision_loss, reason = "thresholds are far below 2^53")]
            let activation = self.metadata.activation_list_length as f64;
            Ok(Reading {
                value,
                active: value > activation,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(params: Params) -> TriggerInput {
        TriggerInput::new(2, "redis", params)
    }

    fn error(params: Params) -> String {
        parse(&input(params)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_sources() {
        let params = Params::from_metadata([
            ("addressFromEnv", "REDIS_ADDR"),
            ("listName", "jobs"),
            ("passwordFromEnv", "REDIS_PW"),
        ])
        .with_env([("REDIS_ADDR", "redis.svc:6380"), ("REDIS_PW", "hunter2")])
        .with_auth([("username", "worker")]);
        let metadata = parse(&input(params)).unwrap();
        assert_eq!(metadata.host, "redis.svc");
        assert_eq!(metadata.port, 6380);
        assert_eq!(metadata.username.as_deref(), Some("worker"));
        assert_eq!(metadata.password.as_deref(), Some("hunter2"));
        assert_eq!(metadata.list_length, 5);
        assert_eq!(metadata.activation_list_length, 0);
        assert_eq!(metadata.database_index, 0);
        assert!(!format!("{metadata:?}").contains("hunter2"));

        let params = Params::from_metadata([
            ("hosts", "a.svc, b.svc"),
            ("ports", "6379,6380"),
            ("listName", "jobs"),
            ("listLength", "10"),
            ("activationListLength", "3"),
            ("databaseIndex", "4"),
            ("enableTLS", "false"),
        ]);
        let metadata = parse(&input(params)).unwrap();
        assert_eq!((metadata.host.as_str(), metadata.port), ("a.svc", 6379));
        assert_eq!(metadata.list_length, 10);
        assert_eq!(metadata.activation_list_length, 3);
        assert_eq!(metadata.database_index, 4);

        let params = Params::from_metadata([("address", "[::1]:6379"), ("listName", "l")]);
        let metadata = parse(&input(params)).unwrap();
        assert_eq!((metadata.host.as_str(), metadata.port), ("::1", 6379));
    }

    #[test]
    fn invalid_metadata_errors_name_the_field() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("address", "redis:6379")],
                "missing required parameter \"listName\" in [triggerMetadata]",
            ),
            (
                &[("listName", "jobs")],
                "missing required parameter \"address\" in [triggerMetadata authParams resolvedEnv]",
            ),
            (
                &[("listName", "jobs"), ("host", "redis")],
                "missing required parameter \"port\" in [triggerMetadata resolvedEnv authParams]",
            ),
            (
                &[("listName", "jobs"), ("address", "redis")],
                "parameter \"address\": \"redis\" is not host:port",
            ),
            (
                &[("listName", "jobs"), ("host", "a,b"), ("port", "1")],
                "the number of hosts and ports differ",
            ),
            (
                &[("listName", "jobs"), ("host", "a"), ("port", "x")],
                "parameter \"port\": \"x\" is not a port",
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                error(Params::from_metadata(pairs.iter().copied())),
                *expected,
                "{pairs:?}"
            );
        }
        let with = |extra: (&'static str, &'static str)| {
            Params::from_metadata([("address", "redis:6379"), ("listName", "jobs"), extra])
        };
        let cases = [
            (
                ("listLength", "2.5"),
                "parameter \"listLength\": \"2.5\" is not an integer",
            ),
            (
                ("listLength", "0"),
                "parameter \"listLength\": 0 must be greater than 0",
            ),
            (
                ("activationListLength", "x"),
                "parameter \"activationListLength\": \"x\" is not an integer",
            ),
            (
                ("databaseIndex", "-1"),
                "parameter \"databaseIndex\": -1 must not be negative",
            ),
            (
                ("enableTLS", "true"),
                "TLS connections to Redis (enableTLS / tls) are not supported yet",
            ),
            (
                ("enableTLS", "yes"),
                "parameter \"enableTLS\": \"yes\" is not a bool",
            ),
            (
                ("password", "plain"),
                "parameter \"password\" is a secret and must come from a TriggerAuthentication or the container environment, not from metadata",
            ),
        ];
        for (extra, expected) in cases {
            assert_eq!(error(with(extra)), expected, "{extra:?}");
        }
        let both = with(("enableTLS", "false")).with_auth([("tls", "disable")]);
        assert_eq!(
            error(both),
            "enableTLS (metadata) and tls (TriggerAuthentication) cannot both be set"
        );
        let tls = with(("listLength", "5")).with_auth([("tls", "enable")]);
        assert_eq!(
            error(tls),
            "TLS connections to Redis (enableTLS / tls) are not supported yet"
        );
    }

    #[tokio::test]
    async fn names_and_shared_connections() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let params = |list: &str| {
            Params::from_metadata([("address", "127.0.0.1:9"), ("listName", list)])
                .with_auth([("password", "s3cret")])
        };
        let a = build(&input(params("my.list/1")), &services).unwrap();
        let b = build(&input(params("other")), &services).unwrap();
        assert_eq!(
            a.metric_specs(),
            vec![MetricSpec::External {
                name: "s2-redis-my-list-1".into(),
                target_type: MetricTargetType::AverageValue,
                target: 5.0,
            }]
        );
        assert_eq!(services.redis.clients(), 1);
        assert!(!format!("{a:?}").contains("s3cret"));
        let other_db = Params::from_metadata([
            ("address", "127.0.0.1:9"),
            ("listName", "l"),
            ("databaseIndex", "1"),
        ]);
        let c = build(&input(other_db), &services).unwrap();
        assert_eq!(services.redis.clients(), 2);
        drop((a, b, c));
        assert_eq!(services.redis.clients(), 0);
    }
}
