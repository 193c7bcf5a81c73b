//! `postgresql`: the number a PostgreSQL query returns.
//!
//! The query must return one column; the value is that column of the first row, read from any
//! integer, floating-point or `numeric` column (or text holding a number). No row, `NULL`, or a
//! value that is not a number is an error, never 0. Triggers reading the same server, user,
//! password and database share one connection, and concurrent reads of the same query on it are
//! one query. Connections are made without TLS: `sslmode` `disable`, `allow` and `prefer` are
//! accepted, the modes that require TLS are refused when the trigger is built. No error or
//! `Debug` output shows the password or the connection string.

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{FromSql, Type};

use super::pooled::{Pool, Pooled};
use super::{MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput, error_chain};
use crate::metric_name;
use crate::params::{METADATA, ParamError, Source};

/// Where `connection` and `password` may come from: not plain metadata.
const SECRET: &[Source] = &[Source::Auth, Source::Env];
/// Where `host`, `port`, `userName`, `dbName` and `sslmode` may come from (KEDA's order).
const CONNECTION_PART: &[Source] = &[Source::Auth, Source::Metadata];

/// The parameters of a `postgresql` trigger.
#[derive(Clone)]
pub struct Metadata {
    /// `query` (required): SQL returning one numeric column, for example
    /// `SELECT count(*) FROM jobs WHERE state = 'ready'`.
    pub query: String,
    /// `targetQueryValue`: the value per replica the HPA aims for (a float greater than 0).
    /// Required, except when the ScaledObject's scalingModifiers combine the triggers.
    pub target_query_value: f64,
    /// `activationTargetQueryValue` (optional, default 0): the trigger is active while the
    /// value is greater than this.
    pub activation_target_query_value: f64,
    /// Either `connection` (a secret, from the TriggerAuthentication or the environment:
    /// `host=... port=... user=... password=... dbname=... sslmode=...` or a
    /// `postgresql://` URL), or `host`, `port`, `userName`, `dbName`, `sslmode` (all required,
    /// from the TriggerAuthentication or the metadata) and `password` (optional, a secret, from
    /// the TriggerAuthentication or the environment).
    pub config: tokio_postgres::Config,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("query", &self.query)
            .field("target_query_value", &self.target_query_value)
            .field(
                "activation_target_query_value",
                &self.activation_target_query_value,
            )
            .field("server", &shown(&self.config))
            .finish_non_exhaustive()
    }
}

/// `host:port/dbname` of a configuration, for errors and `Debug`.
fn shown(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default();
    format!("{host}:{port}/{database}")
}

/// Reads and checks the metadata of a `postgresql` trigger; no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let query = params.require("query", METADATA)?.to_owned();
    let target_query_value = if input.as_metric_source {
        params.float("targetQueryValue", METADATA, Some(0.0))?
    } else {
        let target = params.float("targetQueryValue", METADATA, None)?;
        if !target.is_finite() || target <= 0.0 {
            return Err(ParamError::invalid(
                "targetQueryValue",
                format!("{target} must be greater than 0"),
            )
            .into());
        }
        target
    };
    let activation_target_query_value =
        params.float("activationTargetQueryValue", METADATA, Some(0.0))?;
    if !activation_target_query_value.is_finite() {
        return Err(ParamError::invalid(
            "activationTargetQueryValue",
            format!("{activation_target_query_value} is not a finite number"),
        )
        .into());
    }
    let password = params.secret("password", SECRET)?;
    let config = if let Some(connection) = params.secret("connection", SECRET)? {
        let config = tokio_postgres::Config::from_str(connection).map_err(|e| {
            ParamError::invalid(
                "connection",
                format!(
                    "is not a PostgreSQL connection string (key=value pairs or a \
                     postgresql:// URL): {}",
                    error_chain(&e)
                ),
            )
        })?;
        if config.get_hosts().is_empty() {
            return Err(ParamError::invalid("connection", "names no host").into());
        }
        if config.get_ssl_mode() == SslMode::Require {
            return Err(tls_not_supported("require"));
        }
        config
    } else {
        let host = params.require("host", CONNECTION_PART)?;
        let port = params.require("port", CONNECTION_PART)?;
        let port = port
            .parse::<u16>()
            .map_err(|_| ParamError::invalid("port", format!("{port:?} is not a port")))?;
        let user = params.require("userName", CONNECTION_PART)?;
        let database = params.require("dbName", CONNECTION_PART)?;
        let ssl_mode = match params.require("sslmode", CONNECTION_PART)? {
            "disable" | "allow" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            mode @ ("require" | "verify-ca" | "verify-full") => {
                return Err(tls_not_supported(mode));
            }
            other => {
                return Err(ParamError::invalid(
                    "sslmode",
                    format!(
                        "{other:?} is not one of disable, allow, prefer, require, \
                         verify-ca, verify-full"
                    ),
                )
                .into());
            }
        };
        let mut config = tokio_postgres::Config::new();
        config
            .host(host)
            .port(port)
            .user(user)
            .dbname(database)
            .ssl_mode(ssl_mode);
        if let Some(password) = password {
            config.password(password);
        }
        config
    };
    Ok(Metadata {
        query,
        target_query_value,
        activation_target_query_value,
        config,
    })
}

fn tls_not_supported(mode: &str) -> ScalerError {
    ScalerError::Config(format!(
        "sslmode {mode:?} is not supported yet: connections to PostgreSQL are made without TLS \
         (use disable, allow or prefer)"
    ))
}

/// What makes two triggers share a connection: the whole configuration, as written
/// (credentials included; never shown).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The shared connections of `postgresql` triggers (one per process, in [`Services`]).
pub type PostgresPool = Pool<Key, Client>;

/// One PostgreSQL server and database as a set of triggers reads it: a connection made on
/// first use and made again after it closed.
pub struct Client {
    config: tokio_postgres::Config,
    shown: String,
    connection: tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Client {
    async fn client(&self, timeout: Duration) -> Result<Arc<tokio_postgres::Client>, ScalerError> {
        let mut slot = self.connection.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        *slot = None;
        let mut config = self.config.clone();
        config.connect_timeout(timeout);
        let (client, connection) =
            tokio::time::timeout(timeout, config.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| self.error("connecting timed out"))?
                .map_err(|e| self.error(&error_chain(&e)))?;
        let shown = self.shown.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(server = %shown, error = %error_chain(&error), "PostgreSQL connection ended");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    fn error(&self, message: &str) -> ScalerError {
        ScalerError::Source(format!("PostgreSQL at {}: {message}", self.shown))
    }

    /// The first column of the first row of `query`.
    async fn value(&self, query: &str, timeout: Duration) -> Result<f64, ScalerError> {
        let client = self.client(timeout).await?;
        let rows = tokio::time::timeout(timeout, client.query(query, &[]))
            .await
            .map_err(|_| self.error("the query timed out"))?
            .map_err(|e| self.error(&error_chain(&e)))?;
        let row = rows
            .first()
            .ok_or_else(|| self.error("the query returned no row"))?;
        if row.len() != 1 {
            return Err(self.error(&format!(
                "the query returned {} columns; it must return one",
                row.len()
            )));
        }
        let value: Option<Number> = row.try_get(0).map_err(|e| self.error(&error_chain(&e)))?;
        let Some(Number(value)) = value else {
            return Err(self.error("the query returned NULL"));
        };
        if value.is_nan() {
            return Err(self.error("the query returned NaN"));
        }
        Ok(value)
    }
}

/// A number read from any numeric column, or from text holding one.
struct Number(f64);

impl<'a> FromSql<'a> for Number {
    #[allow(
        clippy::cast_precision_loss,
        reason = "a metric value is a float, as in KEDA"
    )]
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let value = match *ty {
            Type::INT2 => f64::from(i16::from_sql(ty, raw)?),
            Type::INT4 => f64::from(i32::from_sql(ty, raw)?),
            Type::INT8 => i64::from_sql(ty, raw)? as f64,
            Type::OID => f64::from(u32::from_sql(ty, raw)?),
            Type::FLOAT4 => f64::from(f32::from_sql(ty, raw)?),
            Type::FLOAT8 => f64::from_sql(ty, raw)?,
            Type::NUMERIC => numeric(raw)?,
            _ => {
                let text = <&str>::from_sql(ty, raw)?;
                text.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("the query returned {text:?}, not a number"))?
            }
        };
        Ok(Self(value))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::OID
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::NUMERIC
        ) || <&str>::accepts(ty)
    }
}

/// A `numeric` in PostgreSQL's binary format: digit count, weight, sign, display scale, then
/// base-10000 digits, the first of weight `weight`.
fn numeric(raw: &[u8]) -> Result<f64, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let digits = word(0)?;
    #[allow(
        clippy::cast_possible_wrap,
        reason = "the weight is a signed 16-bit field"
    )]
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    match sign {
        0xC000 => return Ok(f64::NAN),
        0xD000 => return Ok(f64::INFINITY),
        0xF000 => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    // Decimal text, so the value is rounded once.
    let mut text = String::from("0");
    let mut exponent = weight;
    for i in 0..usize::from(digits) {
        write!(text, "{:04}", word(4 + i)?)?;
        exponent -= 1;
    }
    let value: f64 = format!("{text}e{}", (exponent + 1) * 4).parse()?;
    Ok(if sign == 0x4000 { -value } else { value })
}

/// Builds a `postgresql` trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = super::external_target_type(input)?;
    let metadata = parse(input)?;
    let key = Key(format!("{:?}", PgKey(&metadata.config)));
    let shown = shown(&metadata.config);
    let pooled = services.postgres.get(&key, || Client {
        config: metadata.config.clone(),
        shown,
        connection: tokio::sync::Mutex::new(None),
    });
    Ok(Box::new(PostgresqlScaler {
        name: metric_name::normalized(input.index, "postgresql"),
        target_type,
        timeout: input.http_timeout,
        pooled,
        metadata,
    }))
}

/// The parts of a configuration that decide the connection, credentials included (only for
/// the pool key, never shown).
struct PgKey<'a>(&'a tokio_postgres::Config);

impl fmt::Debug for PgKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        f.debug_tuple("PgKey")
            .field(&c.get_hosts())
            .field(&c.get_ports())
            .field(&c.get_user())
            .field(&c.get_password())
            .field(&c.get_dbname())
            .field(&c.get_options())
            .field(&c.get_application_name())
            .field(&c.get_ssl_mode())
            .field(&c.get_target_session_attrs())
            .finish()
    }
}

/// A built `postgresql` trigger.
pub struct PostgresqlScaler {
    metadata: Metadata,
    name: String,
    target_type: MetricTargetType,
    timeout: Duration,
    pooled: Arc<Pooled<Key, Client>>,
}

impl fmt::Debug for PostgresqlScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresqlScaler")
            .field("name", &self.name)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl Scaler for PostgresqlScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.name.clone(),
            target_type: self.target_type,
            target: self.metadata.target_query_value,
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
                active: value > self.metadata.activation_target_query_value,
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
        TriggerInput::new(1, "postgresql", params)
    }

    fn error(params: Params) -> String {
        parse(&input(params)).unwrap_err().to_string()
    }

    const PARTS: [(&str, &str); 6] = [
        ("query", "SELECT 1"),
        ("targetQueryValue", "2.5"),
        ("host", "db.svc"),
        ("port", "5433"),
        ("userName", "keda"),
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
        let params = parts(&[("sslmode", "disable"), ("passwordFromEnv", "PG_PW")])
            .with_env([("PG_PW", "hunter2")])
            .with_auth([("host", "auth.svc")]);
        let metadata = parse(&input(params)).unwrap();
        assert_eq!(metadata.query, "SELECT 1");
        assert_eq!(metadata.target_query_value, 2.5);
        assert_eq!(metadata.activation_target_query_value, 0.0);
        assert_eq!(shown(&metadata.config), "auth.svc:5433/jobs");
        assert_eq!(metadata.config.get_password(), Some(&b"hunter2"[..]));
        assert_eq!(metadata.config.get_ssl_mode(), SslMode::Disable);
        assert!(!format!("{metadata:?}").contains("hunter2"));

        let params = Params::from_metadata([
            ("query", "SELECT 1"),
            ("activationTargetQueryValue", "3"),
            ("connectionFromEnv", "PG"),
        ])
        .with_env([(
            "PG",
            "postgresql://keda:s3cret@pg.svc:5432/work?sslmode=prefer",
        )]);
        let mut metric_source = input(params);
        metric_source.as_metric_source = true;
        let metadata = parse(&metric_source).unwrap();
        assert_eq!(metadata.target_query_value, 0.0);
        assert_eq!(metadata.activation_target_query_value, 3.0);
        assert_eq!(shown(&metadata.config), "pg.svc:5432/work");
        assert!(!format!("{metadata:?}").contains("s3cret"));
    }

    #[test]
    fn invalid_metadata_errors_name_the_field() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("query", "")],
                "missing required parameter \"query\" in [triggerMetadata]",
            ),
            (
                &[("targetQueryValue", "")],
                "missing required parameter \"targetQueryValue\" in [triggerMetadata]",
            ),
            (
                &[("targetQueryValue", "0")],
                "parameter \"targetQueryValue\": 0 must be greater than 0",
            ),
            (
                &[("targetQueryValue", "x")],
                "parameter \"targetQueryValue\": \"x\" is not a number",
            ),
            (
                &[("activationTargetQueryValue", "NaN")],
                "parameter \"activationTargetQueryValue\": NaN is not a finite number",
            ),
            (
                &[("host", "")],
                "missing required parameter \"host\" in [authParams triggerMetadata]",
            ),
            (
                &[("dbName", "")],
                "missing required parameter \"dbName\" in [authParams triggerMetadata]",
            ),
            (
                &[],
                "missing required parameter \"sslmode\" in [authParams triggerMetadata]",
            ),
            (
                &[("sslmode", "disable"), ("port", "big")],
                "parameter \"port\": \"big\" is not a port",
            ),
            (
                &[("sslmode", "often")],
                "parameter \"sslmode\": \"often\" is not one of disable, allow, prefer, require, verify-ca, verify-full",
            ),
            (
                &[("sslmode", "verify-full")],
                "sslmode \"verify-full\" is not supported yet: connections to PostgreSQL are made without TLS (use disable, allow or prefer)",
            ),
            (
                &[("sslmode", "disable"), ("password", "plain")],
                "parameter \"password\" is a secret and must come from a TriggerAuthentication or the container environment, not from metadata",
            ),
            (
                &[("connection", "host=x password=plain")],
                "parameter \"connection\" is a secret and must come from a TriggerAuthentication or the container environment, not from metadata",
            ),
        ];
        for (extra, expected) in cases {
            assert_eq!(error(parts(extra)), *expected, "{extra:?}");
        }
        let connection = |text: &'static str| {
            Params::from_metadata([("query", "SELECT 1"), ("targetQueryValue", "1")])
                .with_auth([("connection", text)])
        };
        assert_eq!(
            error(connection("host=db password=s3cret sslmode=require")),
            "sslmode \"require\" is not supported yet: connections to PostgreSQL are made without TLS (use disable, allow or prefer)"
        );
        let bad = error(connection("host=db password=s3cret sslmode=verify-full"));
        assert!(
            bad.starts_with("parameter \"connection\": is not a PostgreSQL connection string"),
            "{bad}"
        );
        assert!(!bad.contains("s3cret"), "{bad}");
    }

    #[test]
    fn numerics_decode() {
        // 1234.5 = [1234, 5000] weight 0; -0.07 = [700] weight -1; 20000 = [2] weight 1.
        let encode = |digits: &[u16], weight: i16, sign: u16| {
            let mut raw = Vec::new();
            #[allow(clippy::cast_possible_truncation, reason = "test data")]
            raw.extend((digits.len() as u16).to_be_bytes());
            raw.extend(weight.to_be_bytes());
            raw.extend(sign.to_be_bytes());
            raw.extend(0u16.to_be_bytes());
            for d in digits {
                raw.extend(d.to_be_bytes());
            }
            raw
        };
        assert_eq!(numeric(&encode(&[1234, 5000], 0, 0)).unwrap(), 1234.5);
        assert_eq!(numeric(&encode(&[700], -1, 0x4000)).unwrap(), -0.07);
        assert_eq!(numeric(&encode(&[2], 1, 0)).unwrap(), 20000.0);
        assert_eq!(numeric(&encode(&[], 0, 0)).unwrap(), 0.0);
        assert!(numeric(&encode(&[], 0, 0xC000)).unwrap().is_nan());
        assert!(numeric(&[0, 1]).is_err());
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
                ("targetQueryValue", "4"),
                ("host", "127.0.0.1"),
                ("port", "9"),
                ("userName", "keda"),
                ("dbName", db),
                ("sslmode", "disable"),
            ])
            .with_auth([("password", "s3cret")])
        };
        let a = build(&input(with("SELECT 1", "a")), &services).unwrap();
        let b = build(&input(with("SELECT 2", "a")), &services).unwrap();
        let c = build(&input(with("SELECT 1", "c")), &services).unwrap();
        assert_eq!(
            a.metric_specs(),
            vec![MetricSpec::External {
                name: "s1-postgresql".into(),
                target_type: MetricTargetType::AverageValue,
                target: 4.0,
            }]
        );
        assert_eq!(services.postgres.clients(), 2);
        assert!(!format!("{a:?}").contains("s3cret"));
        let down = a.read("s1-postgresql").await.unwrap_err();
        assert_eq!(down.category(), "source");
        assert!(
            down.to_string()
                .starts_with("PostgreSQL at 127.0.0.1:9/a: "),
            "{down}"
        );
        assert!(!down.to_string().contains("s3cret"));
        assert_eq!(
            a.read("s1-other").await,
            Err(ScalerError::NoSuchMetric("s1-other".into()))
        );
        drop((a, b, c));
        assert_eq!(services.postgres.clients(), 0);
    }
}
