//! `mysql`: the number a MySQL (or MariaDB) query returns.
//!
//! The query runs over the text protocol, as KEDA's Go driver runs it; the value is the only
//! column of the first row, read as a number. No row, more than one column, `NULL` or text that
//! is not a number is an error, never 0. Triggers reading the same server, user, password,
//! database and TLS settings share one connection, and concurrent reads of the same query on
//! it are one query. No error or `Debug` output shows the password or the connection string.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, SslOpts, Value};

use super::pooled::{Pool, Pooled};
use super::{MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput, error_chain, tls};
use crate::metric_name;
use crate::params::{METADATA, ParamError, Source};

/// Where `connectionString` and `password` may come from: not plain metadata.
const SECRET: &[Source] = &[Source::Auth, Source::Env];
/// Where `username` may come from (KEDA's order).
const USERNAME: &[Source] = &[Source::Metadata, Source::Auth, Source::Env];
/// Where `host`, `port` and `dbName` may come from (KEDA's order).
const CONNECTION_PART: &[Source] = &[Source::Metadata, Source::Auth];

crate::parameters! {
    /// A Go MySQL driver DSN, `user:password@tcp(host:port)/dbname?param=value`: either this
    /// or `host` and `port` is required. Of its parameters, `tls` is used (`true`: verified
    /// against the system's trust store, `skip-verify`: encrypted, not verified, `false`); the
    /// driver's other client options are accepted and have no effect, and any other parameter
    /// is set as a session variable (`SET name=value`) on connecting.
    "connectionString": Secret, optional, [Auth, Env];
    /// The user, when `connectionString` is not given.
    "username": Text, optional, [Metadata, Auth, Env];
    /// The user's password, when `connectionString` is not given.
    "password": Secret, optional, [Auth, Env];
    /// The server's host name, when `connectionString` is not given.
    "host": Text, optional, [Metadata, Auth];
    /// The server's port, when `connectionString` is not given.
    "port": Integer, optional, [Metadata, Auth];
    /// The database, when `connectionString` is not given; also part of the metric name.
    "dbName": Text, optional, [Metadata, Auth];
    /// SQL returning one numeric column, for example
    /// `SELECT CEIL(COUNT(*) / 6) FROM tasks WHERE state = 'queued'`.
    "query": Text, required, [Metadata];
    /// The value per replica the HPA aims for; a number greater than 0.
    "queryValue": Number, required, [Metadata];
    /// The trigger is active while the value is greater than this.
    "activationQueryValue": Number = "0", optional, [Metadata];
    /// Accepted and ignored: the metric name is always `s<index>-mysql-<dbName>`.
    "metricName": Text, optional, [Metadata];
    /// Accepted and checked, no effect: triggers reading the same server always share one
    /// connection.
    "useGlobalConnPools": Bool = "false", optional, [Metadata];
    /// Accepted and checked (an integer), no effect: one connection per server is used.
    "maxOpenConns": Integer, optional, [Metadata];
    /// Accepted and checked (an integer), no effect: one connection per server is used.
    "maxIdleConns": Integer, optional, [Metadata];
    /// Accepted and checked (an integer of seconds), no effect: the shared connection stays
    /// open while a trigger uses it.
    "connMaxIdleTime": Integer, optional, [Metadata];
}

/// Client options of the Go driver's DSN that change nothing about the value read here.
const NO_EFFECT_OPTIONS: &[&str] = &[
    "allowAllFiles",
    "allowCleartextPasswords",
    "allowFallbackToPlaintext",
    "allowNativePasswords",
    "allowOldPasswords",
    "charset",
    "checkConnLiveness",
    "clientFoundRows",
    "collation",
    "columnsWithAlias",
    "compress",
    "connectionAttributes",
    "interpolateParams",
    "loc",
    "maxAllowedPacket",
    "multiStatements",
    "parseTime",
    "readTimeout",
    "rejectReadOnly",
    "serverPubKey",
    "timeout",
    "timeTruncate",
    "writeTimeout",
];

/// TLS to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tls {
    Off,
    /// Verified against the system's trust store.
    Verify,
    /// Encrypted, the certificate not checked (`skip-verify`).
    SkipVerify,
}

/// Where and how to connect, credentials included (never shown). Equal settings share one
/// connection.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: Option<String>,
    pub tls: Tls,
    /// `SET name=value` statements run on connecting.
    pub session: Vec<String>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Server {
    /// `host:port/database`, for errors and `Debug`.
    fn shown(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "{host}:{}/{}",
            self.port,
            self.database.as_deref().unwrap_or_default()
        )
    }

    fn opts(&self) -> Opts {
        let ssl = match self.tls {
            Tls::Off => None,
            // The system's trust store, as Go's driver verifies against.
            Tls::Verify => Some(
                SslOpts::default()
                    .with_disable_built_in_roots(true)
                    .with_root_certs(
                        tls::system_root_certificates()
                            .iter()
                            .map(|der| der.as_ref().into())
                            .collect(),
                    ),
            ),
            Tls::SkipVerify => Some(SslOpts::default().with_danger_accept_invalid_certs(true)),
        };
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(self.user.clone())
            .pass(self.password.clone())
            .db_name(self.database.clone())
            .ssl_opts(ssl)
            // Stay on TCP: the server's own socket is not the trigger's to use.
            .prefer_socket(false)
            .stmt_cache_size(0)
            .setup(self.session.clone())
            .into()
    }
}

/// The parameters of a `mysql` trigger.
#[derive(Clone)]
pub struct Metadata {
    /// `query` (required): SQL returning one numeric column.
    pub query: String,
    /// `queryValue` (required): the value per replica the HPA aims for, greater than 0.
    pub query_value: f64,
    /// `activationQueryValue` (optional, default 0): the trigger is active while the value is
    /// greater than this.
    pub activation_query_value: f64,
    /// The `<dbName>` of the metric name: `dbName`, or with `connectionString` what follows
    /// its last `/` (as KEDA takes it, parameters included).
    pub name_part: String,
    /// `connectionString` (a secret, from the TriggerAuthentication or the environment), or
    /// `host`, `port` (required then), `dbName` (from the metadata or the
    /// TriggerAuthentication), `username` (also from the environment) and `password` (a
    /// secret).
    pub server: Server,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("query", &self.query)
            .field("query_value", &self.query_value)
            .field("activation_query_value", &self.activation_query_value)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn finite(name: &str, value: f64) -> Result<f64, ScalerError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ParamError::invalid(name, format!("{value} is not a finite number")).into())
    }
}

/// Reads and checks the metadata of a `mysql` trigger; no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let query = params.require("query", METADATA)?.to_owned();
    let query_value = finite("queryValue", params.float("queryValue", METADATA, None)?)?;
    if query_value <= 0.0 {
        return Err(ParamError::invalid(
            "queryValue",
            format!("{query_value} must be greater than 0"),
        )
        .into());
    }
    let activation_query_value = finite(
        "activationQueryValue",
        params.float("activationQueryValue", METADATA, Some(0.0))?,
    )?;
    // Accepted as KEDA accepts them; the name is always generated, the connection shared.
    let _ = params.get("metricName", METADATA);
    params.bool("useGlobalConnPools", METADATA, false)?;
    for name in ["maxOpenConns", "maxIdleConns", "connMaxIdleTime"] {
        params.int(name, METADATA, Some(0))?;
    }
    let password = params.secret("password", SECRET)?;
    let (server, name_part) = if let Some(dsn) = params.secret("connectionString", SECRET)? {
        let server =
            parse_dsn(dsn).map_err(|message| ParamError::invalid("connectionString", message))?;
        // KEDA names the metric after everything following the last `/`.
        let name_part = dsn.rsplit('/').next().unwrap_or_default().to_owned();
        (server, name_part)
    } else {
        let host = params.require("host", CONNECTION_PART)?;
        let port = params.require("port", CONNECTION_PART)?;
        let port = port
            .parse::<u16>()
            .map_err(|_| ParamError::invalid("port", format!("{port:?} is not a port")))?;
        let database = params.get("dbName", CONNECTION_PART);
        let server = Server {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            user: params.get("username", USERNAME).map(str::to_owned),
            password: password.map(str::to_owned),
            database: database.map(str::to_owned),
            tls: Tls::Off,
            session: Vec::new(),
        };
        (server, database.unwrap_or_default().to_owned())
    };
    Ok(Metadata {
        query,
        query_value,
        activation_query_value,
        name_part,
        server,
    })
}

/// `%XX` decoding (Go's `url.PathUnescape`/`QueryUnescape`; `+` is a space in a query).
fn unescape(text: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "has a bad %-escape".to_owned())?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once unescaped".to_owned())
}

/// A Go MySQL driver DSN: `[user[:password]@][tcp[(address)]]/dbname[?param=value&...]`.
/// Error messages never quote the DSN (it holds the password).
fn parse_dsn(dsn: &str) -> Result<Server, String> {
    let (head, tail) = dsn
        .rsplit_once('/')
        .ok_or("has no '/' before the database name (user:password@tcp(host:port)/dbname)")?;
    let (credentials, endpoint) = match head.rsplit_once('@') {
        Some((credentials, endpoint)) => (Some(credentials), endpoint),
        None => (None, head),
    };
    let (user, password) = match credentials {
        Some(text) => match text.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (text, None),
        },
        None => ("", None),
    };
    let (net, address) = match endpoint.split_once('(') {
        Some((net, rest)) => {
            let address = rest
                .strip_suffix(')')
                .ok_or("has an address without its closing ')'")?;
            (net, address)
        }
        None => (endpoint, ""),
    };
    if !matches!(net, "" | "tcp" | "tcp4" | "tcp6") {
        return Err(format!(
            "protocol {net:?} is not supported; use tcp(host:port)"
        ));
    }
    let (host, port) = split_address(address)?;
    let (database, query) = tail.split_once('?').unwrap_or((tail, ""));
    let database = unescape(database, false)?;
    let mut server = Server {
        host,
        port,
        user: (!user.is_empty()).then(|| user.to_owned()),
        password: password.map(str::to_owned),
        database: (!database.is_empty()).then_some(database),
        tls: Tls::Off,
        session: Vec::new(),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = unescape(value, true)?;
        match name {
            "tls" => {
                server.tls = match value.as_str() {
                    "1" | "true" | "TRUE" | "True" => Tls::Verify,
                    "0" | "false" | "FALSE" | "False" => Tls::Off,
                    "skip-verify" => Tls::SkipVerify,
                    _ => {
                        return Err(format!(
                            "parameter tls={value:?} is not supported; use true, false or \
                             skip-verify"
                        ));
                    }
                };
            }
            name if NO_EFFECT_OPTIONS.contains(&name) => {}
            name => {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!("parameter {name:?} is not a session variable name"));
                }
                server.session.push(format!("SET {name}={value}"));
            }
        }
    }
    Ok(server)
}

/// `host:port`, `[v6]:port`, `host` (port 3306) or empty (`127.0.0.1:3306`), as the Go driver
/// reads them.
fn split_address(address: &str) -> Result<(String, u16), String> {
    if address.is_empty() {
        return Ok(("127.0.0.1".to_owned(), 3306));
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("has an IPv6 address without its closing ']'")?;
        (host, after.strip_prefix(':'))
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (address, None),
        }
    };
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| format!("has port {port:?}, which is not a port"))?,
        None => 3306,
    };
    if host.is_empty() {
        return Err("has an address without a host".to_owned());
    }
    Ok((host.to_owned(), port))
}

/// The shared connections of `mysql` triggers (one per process, in [`Services`]).
pub type MysqlPool = Pool<Server, Client>;

/// One MySQL server and database as a set of triggers reads it: a connection made on first use
/// and made again after it broke.
pub struct Client {
    server: Server,
    shown: String,
    connection: tokio::sync::Mutex<Option<Conn>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Client {
    fn error(&self, message: &str) -> ScalerError {
        ScalerError::Source(format!("MySQL at {}: {message}", self.shown))
    }

    /// The only column of the first row of `query`; on a new connection once more when the
    /// shared one turns out to be broken.
    async fn value(&self, query: &str, timeout: Duration) -> Result<f64, ScalerError> {
        let mut slot = self.connection.lock().await;
        let mut reused = slot.is_some();
        loop {
            let mut conn = match slot.take() {
                Some(conn) => conn,
                None => tokio::time::timeout(timeout, Conn::new(self.server.opts()))
                    .await
                    .map_err(|_| self.error("connecting timed out"))?
                    .map_err(|e| self.error(&error_chain(&e)))?,
            };
            let row = match tokio::time::timeout(timeout, conn.query_first::<Row, _>(query)).await {
                // The connection's state is unknown: it is dropped.
                Err(_) => return Err(self.error("the query timed out")),
                Ok(Err(error)) => {
                    if error.is_fatal() || matches!(error, mysql_async::Error::Io(_)) {
                        if reused {
                            reused = false;
                            continue;
                        }
                    } else {
                        *slot = Some(conn);
                    }
                    return Err(self.error(&error_chain(&error)));
                }
                Ok(Ok(row)) => row,
            };
            *slot = Some(conn);
            let row = row.ok_or_else(|| self.error("the query returned no row"))?;
            if row.len() != 1 {
                return Err(self.error(&format!(
                    "the query returned {} columns; it must return one",
                    row.len()
                )));
            }
            return number(row.as_ref(0)).map_err(|message| self.error(&message));
        }
    }
}

/// A column value as a number.
fn number(value: Option<&Value>) -> Result<f64, String> {
    #[allow(
        clippy::cast_precision_loss,
        reason = "a metric value is a float, as in KEDA"
    )]
    let value = match value {
        None | Some(Value::NULL) => return Err("the query returned NULL".to_owned()),
        Some(Value::Bytes(bytes)) => {
            let text = String::from_utf8_lossy(bytes);
            text.trim()
                .parse::<f64>()
                .map_err(|_| format!("the query returned {text:?}, not a number"))?
        }
        Some(Value::Int(i)) => *i as f64,
        Some(Value::UInt(u)) => *u as f64,
        Some(Value::Float(f)) => f64::from(*f),
        Some(Value::Double(d)) => *d,
        Some(other) => return Err(format!("the query returned {other:?}, not a number")),
    };
    if value.is_nan() {
        return Err("the query returned NaN".to_owned());
    }
    Ok(value)
}

/// Builds a `mysql` trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = super::external_target_type(input)?;
    let metadata = parse(input)?;
    let pooled = services.mysql.get(&metadata.server, || Client {
        server: metadata.server.clone(),
        shown: metadata.server.shown(),
        connection: tokio::sync::Mutex::new(None),
    });
    Ok(Box::new(MysqlScaler {
        name: metric_name::normalized(input.index, &format!("mysql-{}", metadata.name_part)),
        target_type,
        timeout: input.http_timeout,
        pooled,
        metadata,
    }))
}

/// A built `mysql` trigger.
pub struct MysqlScaler {
    metadata: Metadata,
    name: String,
    target_type: MetricTargetType,
    timeout: Duration,
    pooled: Arc<Pooled<Server, Client>>,
}

impl fmt::Debug for MysqlScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlScaler")
            .field("name", &self.name)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl Scaler for MysqlScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.name.clone(),
            target_type: self.target_type,
            target: self.metadata.query_value,
        }]
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move {
            if metric != self.name {
                return Err(ScalerError::NoSuchMetric(metric.to_owned()));
            }
            let query = self.metadata.query.clone();
            let timeout = self.timeout;
            let value = self
                .pooled
                .coalesce(&query.clone(), move |pooled| {
                    async move { pooled.client().value(&query, timeout).await }.boxed()
                })
                .await?;
            Ok(Reading {
                value,
                active: value > self.metadata.activation_query_value,
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp, reason = "exact values are expected")]
mod tests {
    use crate::params::Params;

    use super::*;

    fn input(params: Params) -> TriggerInput {
        TriggerInput::new(2, "mysql", params)
    }

    fn error(params: Params) -> String {
        parse(&input(params)).unwrap_err().to_string()
    }

    const PARTS: [(&str, &str); 6] = [
        ("query", "SELECT 1"),
        ("queryValue", "2.5"),
        ("host", "db.svc"),
        ("port", "3307"),
        ("username", "keda"),
        ("dbName", "jobs"),
    ];

    fn parts(extra: &[(&'static str, &'static str)]) -> Params {
        let mut pairs: Vec<_> = PARTS
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        pairs.extend(extra.iter().copied().filter(|(_, v)| !v.is_empty()));
        Params::from_metadata(pairs)
    }

    #[test]
    fn connection_parts_and_defaults() {
        let params = parts(&[("passwordFromEnv", "DB_PW")])
            .with_env([("DB_PW", "hunter2")])
            .with_auth([("host", "auth.svc")]);
        let metadata = parse(&input(params)).unwrap();
        assert_eq!(metadata.query, "SELECT 1");
        assert_eq!(metadata.query_value, 2.5);
        assert_eq!(metadata.activation_query_value, 0.0);
        // Metadata comes before the TriggerAuthentication for host, as in KEDA.
        assert_eq!(metadata.server.shown(), "db.svc:3307/jobs");
        assert_eq!(metadata.server.user.as_deref(), Some("keda"));
        assert_eq!(metadata.server.password.as_deref(), Some("hunter2"));
        assert_eq!(metadata.server.tls, Tls::Off);
        assert_eq!(metadata.name_part, "jobs");
        assert!(!format!("{metadata:?}").contains("hunter2"));

        let params = Params::from_metadata([
            ("query", "SELECT 1"),
            ("queryValue", "4"),
            ("activationQueryValue", "1.5"),
            ("connectionStringFromEnv", "DSN"),
            ("metricName", "ignored"),
            ("useGlobalConnPools", "true"),
            ("maxOpenConns", "4"),
        ])
        .with_env([(
            "DSN",
            "app:p%40ss:w@rd@tcp(mysql.svc:3310)/stats_db?tls=skip-verify&timeout=5s&sql_mode=%27ANSI%27",
        )]);
        let metadata = parse(&input(params)).unwrap();
        assert_eq!(metadata.activation_query_value, 1.5);
        let server = &metadata.server;
        assert_eq!(server.shown(), "mysql.svc:3310/stats_db");
        assert_eq!(server.user.as_deref(), Some("app"));
        // The password runs to the last '@' and is not unescaped, as in the Go driver.
        assert_eq!(server.password.as_deref(), Some("p%40ss:w@rd"));
        assert_eq!(server.tls, Tls::SkipVerify);
        assert_eq!(server.session, vec!["SET sql_mode='ANSI'".to_owned()]);
        assert_eq!(
            metadata.name_part,
            "stats_db?tls=skip-verify&timeout=5s&sql_mode=%27ANSI%27"
        );
        assert!(!format!("{metadata:?}").contains("w@rd"));
    }

    #[test]
    fn dsn_addresses() {
        let server = |dsn: &str| parse_dsn(dsn).unwrap();
        let s = server("/");
        assert_eq!(
            (s.host.as_str(), s.port, s.user, s.database),
            ("127.0.0.1", 3306, None, None)
        );
        let s = server("root@tcp(db)/x");
        assert_eq!(
            (s.host.as_str(), s.port, s.user.as_deref()),
            ("db", 3306, Some("root"))
        );
        assert_eq!(s.password, None);
        let s = server("u:@tcp([::1]:3307)/x?tls=true");
        assert_eq!((s.host.as_str(), s.port, s.tls), ("::1", 3307, Tls::Verify));
        assert_eq!(s.password.as_deref(), Some(""));
        assert_eq!(s.shown(), "[::1]:3307/x");
        let s = server("u@tcp(::1)/x");
        assert_eq!((s.host.as_str(), s.port), ("::1", 3306));
        for (dsn, expected) in [
            ("tcp(db:3306)", "has no '/'"),
            ("u@tcp(db:3306/x", "closing ')'"),
            (
                "u@unix(/run/mysqld.sock)/x",
                "protocol \"unix\" is not supported",
            ),
            ("u@tcp(db:port)/x", "has port \"port\""),
            ("u@tcp(:3306)/x", "without a host"),
            ("/x?tls=custom", "tls=\"custom\" is not supported"),
            ("/x?a%20b=1", "not a session variable name"),
            ("/x%zz", "bad %-escape"),
        ] {
            let message = parse_dsn(dsn).unwrap_err();
            assert!(message.contains(expected), "{dsn}: {message}");
        }
    }

    #[test]
    fn invalid_metadata_errors_name_the_field() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("query", "")],
                "missing required parameter \"query\" in [triggerMetadata]",
            ),
            (
                &[("queryValue", "")],
                "missing required parameter \"queryValue\" in [triggerMetadata]",
            ),
            (
                &[("queryValue", "0")],
                "parameter \"queryValue\": 0 must be greater than 0",
            ),
            (
                &[("queryValue", "x")],
                "parameter \"queryValue\": \"x\" is not a number",
            ),
            (
                &[("activationQueryValue", "inf")],
                "parameter \"activationQueryValue\": inf is not a finite number",
            ),
            (
                &[("host", "")],
                "missing required parameter \"host\" in [triggerMetadata authParams]",
            ),
            (
                &[("port", "")],
                "missing required parameter \"port\" in [triggerMetadata authParams]",
            ),
            (
                &[("port", "big")],
                "parameter \"port\": \"big\" is not a port",
            ),
            (
                &[("useGlobalConnPools", "yes")],
                "parameter \"useGlobalConnPools\": \"yes\" is not a bool",
            ),
            (
                &[("maxOpenConns", "many")],
                "parameter \"maxOpenConns\": \"many\" is not an integer",
            ),
            (
                &[("password", "plain")],
                "parameter \"password\" is a secret and must come from a TriggerAuthentication or the container environment, not from metadata",
            ),
            (
                &[("connectionString", "u:p@tcp(h)/d")],
                "parameter \"connectionString\" is a secret and must come from a TriggerAuthentication or the container environment, not from metadata",
            ),
        ];
        for (extra, expected) in cases {
            assert_eq!(error(parts(extra)), *expected, "{extra:?}");
        }
        let bad = error(
            Params::from_metadata([("query", "SELECT 1"), ("queryValue", "1")])
                .with_auth([("connectionString", "keda:s3cret@tcp(db:x)/d")]),
        );
        assert_eq!(
            bad,
            "parameter \"connectionString\": has port \"x\", which is not a port"
        );
    }

    #[test]
    fn numbers_from_columns() {
        assert_eq!(number(Some(&Value::Bytes(b"42".to_vec()))), Ok(42.0));
        assert_eq!(number(Some(&Value::Bytes(b"3.50".to_vec()))), Ok(3.5));
        assert_eq!(number(Some(&Value::Int(-3))), Ok(-3.0));
        assert_eq!(number(Some(&Value::UInt(7))), Ok(7.0));
        assert_eq!(number(Some(&Value::Double(0.25))), Ok(0.25));
        assert_eq!(
            number(Some(&Value::NULL)),
            Err("the query returned NULL".to_owned())
        );
        assert_eq!(
            number(Some(&Value::Bytes(b"ten".to_vec()))),
            Err("the query returned \"ten\", not a number".to_owned())
        );
        assert!(number(Some(&Value::Bytes(b"NaN".to_vec()))).is_err());
    }

    #[tokio::test]
    async fn names_and_shared_connections() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let with = |query: &'static str, db: &'static str| {
            Params::from_metadata([
                ("query", query),
                ("queryValue", "4"),
                ("host", "127.0.0.1"),
                ("port", "9"),
                ("username", "keda"),
                ("dbName", db),
            ])
            .with_auth([("password", "s3cret")])
        };
        let a = build(&input(with("SELECT 1", "stats.db")), &services).unwrap();
        let b = build(&input(with("SELECT 2", "stats.db")), &services).unwrap();
        let c = build(&input(with("SELECT 1", "c")), &services).unwrap();
        assert_eq!(
            a.metric_specs(),
            vec![MetricSpec::External {
                name: "s2-mysql-stats-db".into(),
                target_type: MetricTargetType::AverageValue,
                target: 4.0,
            }]
        );
        assert_eq!(services.mysql.clients(), 2);
        assert!(!format!("{a:?}").contains("s3cret"));
        let down = a.read("s2-mysql-stats-db").await.unwrap_err();
        assert_eq!(down.category(), "source");
        assert!(
            down.to_string()
                .starts_with("MySQL at 127.0.0.1:9/stats.db: "),
            "{down}"
        );
        assert!(!down.to_string().contains("s3cret"));
        assert_eq!(
            a.read("s2-other").await,
            Err(ScalerError::NoSuchMetric("s2-other".into()))
        );
        drop((a, b, c));
        assert_eq!(services.mysql.clients(), 0);
    }
}
