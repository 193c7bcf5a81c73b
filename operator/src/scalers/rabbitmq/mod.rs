//! `rabbitmq`: the length (or the message rates) of a RabbitMQ queue.
//!
//! Over AMQP (`amqp://` hosts; `amqps://` or `tls: enable` for TLS) the value is the message
//! count of a passive `queue.declare`: the ready messages of one queue, counted by the broker
//! at once. Over HTTP (`http://` or `https://` hosts) it comes from the management API:
//! `messages` (ready and unacknowledged) or `messages_ready`, the publish and deliver/get
//! rates, and with `useRegex` the sum, average or maximum over every queue whose name
//! matches. A count the broker has not collected yet (a new queue) is 0, as in KEDA; a rate
//! without traffic is 0. Triggers reading the same broker (endpoint, credentials, virtual
//! host, TLS settings) share one AMQP connection (a channel per read) or one HTTP client, and
//! concurrent reads of the same queue are one read. A broker that cannot be reached, refuses
//! the credentials or has no such queue is an error, never 0; no error or
//! `Debug` output shows the host URL (it carries the password) or a password.
//!
//! This module parses the metadata and builds the trigger; `amqp` holds the AMQP connections and
//! `http` the management API.

mod amqp;
mod http;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;

use super::pooled::Pooled;
use super::{MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput};
use crate::metric_name;
use crate::params::{METADATA, ParamError, Source};

pub use amqp::{AmqpClient, AmqpKey, AmqpPool, AmqpTls};
pub use http::{HttpClient, HttpKey, HttpPool, QueueStats, combine, evaluate};
use http::{HttpQuery, QueueInfo, QueuePage, http_client, http_endpoint};

/// Where `host` may come from (KEDA's order).
const HOST: &[Source] = &[Source::Metadata, Source::Auth, Source::Env];
/// Where `protocol` and `vhostName` may come from.
const META_AUTH: &[Source] = &[Source::Metadata, Source::Auth];
/// Where `username` and `password` may come from: not plain metadata.
const CREDENTIALS: &[Source] = &[Source::Auth, Source::Env];
/// Where the TLS settings may come from.
const AUTH: &[Source] = &[Source::Auth];

/// The longest queue name AMQP can carry (a short string), in bytes.
const MAX_QUEUE_NAME: usize = 255;

crate::parameters! {
    /// The broker's URL: `amqp://user:password@host:port/vhost` (AMQP, the ready messages of
    /// one queue) or `http://user:password@host:port/path/vhost` (the management API). It
    /// usually carries a password, so it is best given by a TriggerAuthentication or
    /// `hostFromEnv`.
    "host": Text, required, [Metadata, Auth, Env];
    /// `auto` (from the scheme of `host`), `amqp` or `http`.
    "protocol": Choice = "auto", optional, [Metadata, Auth];
    /// The queue (with `useRegex`, a regular expression matched against queue names).
    "queueName": Text, required, [Metadata];
    /// `QueueLength`, `MessageRate`, `DeliverGetRate`, `PublishedToDeliveredRatio` or
    /// `ExpectedQueueConsumptionTime`; all but `QueueLength` need the HTTP protocol. Without
    /// `mode`, `value` and `queueLength` the trigger aims at a queue length of 20.
    "mode": Choice, optional, [Metadata];
    /// The value per replica the HPA aims for (messages, messages per second, a ratio or
    /// seconds, by `mode`); required with `mode`.
    "value": Number, optional, [Metadata];
    /// The trigger is active while the value is greater than this.
    "activationValue": Number = "0", optional, [Metadata];
    /// Deprecated: a queue length target; the same as `mode: QueueLength` and this `value`.
    "queueLength": Number, optional, [Metadata];
    /// The virtual host, instead of the one in `host`.
    "vhostName": Text, optional, [Metadata, Auth];
    /// Whether `queueName` is a regular expression (HTTP only).
    "useRegex": Bool = "false", optional, [Metadata];
    /// `sum`, `avg` or `max`: how the queues matched by `useRegex` make one value.
    "operation": Choice = "sum", optional, [Metadata];
    /// Count only the ready messages, not those delivered but unacknowledged (HTTP only).
    "excludeUnacknowledged": Bool = "false", optional, [Metadata];
    /// How many queues `useRegex` may match; more is an error.
    "pageSize": Integer = "100", optional, [Metadata];
    /// Milliseconds an HTTP request may take, instead of `KEDA_HTTP_DEFAULT_TIMEOUT` (HTTP only).
    "timeout": Integer, optional, [Metadata];
    /// Accept any server certificate (HTTPS, AMQP over TLS).
    "unsafeSsl": Bool = "false", optional, [Metadata];
    /// The user name, instead of the one in `host` (together with `password`).
    "username": Text, optional, [Auth, Env];
    /// The password, instead of the one in `host` (together with `username`).
    "password": Secret, optional, [Auth, Env];
    /// `enable` or `disable`: TLS with the settings of `ca`, `cert` and `key` (AMQP over TLS even
    /// with an `amqp://` host; an `amqps://` host is TLS in any case).
    "tls": Choice = "disable", optional, [Auth];
    /// PEM certificate authorities that sign the server's certificate.
    "ca": Secret, optional, [Auth];
    /// PEM client certificate (together with `key`).
    "cert": Secret, optional, [Auth];
    /// PEM private key of `cert`.
    "key": Secret, optional, [Auth];
    /// The password of an encrypted `key`: not supported, a trigger that gives one is refused.
    "keyPassword": Secret, optional, [Auth];
    /// Azure AD Workload Identity (an application ID URI): not supported, a trigger that
    /// gives one is refused.
    "workloadIdentityResource": Text, optional, [Auth];
    /// OAuth2 client credentials token endpoint: not supported, a trigger that gives it (or
    /// `clientID`, `clientSecret`) is refused.
    "oauthTokenURI": Text, optional, [Auth];
    /// OAuth2 client ID: not supported (see `oauthTokenURI`).
    "clientID": Text, optional, [Auth];
    /// OAuth2 client secret: not supported (see `oauthTokenURI`).
    "clientSecret": Secret, optional, [Auth];
}

/// How the broker is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// A passive `queue.declare` on an AMQP connection.
    Amqp,
    /// The management API.
    Http,
}

/// What the value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Messages in the queue.
    QueueLength,
    /// Messages published per second.
    MessageRate,
    /// Messages delivered (or fetched) per second.
    DeliverGetRate,
    /// Publish rate over deliver/get rate.
    PublishedToDeliveredRatio,
    /// Seconds until the queue is empty at the current rates.
    ExpectedQueueConsumptionTime,
}

impl Mode {
    const NAMES: [(&'static str, Self); 5] = [
        ("QueueLength", Self::QueueLength),
        ("MessageRate", Self::MessageRate),
        ("DeliverGetRate", Self::DeliverGetRate),
        ("PublishedToDeliveredRatio", Self::PublishedToDeliveredRatio),
        (
            "ExpectedQueueConsumptionTime",
            Self::ExpectedQueueConsumptionTime,
        ),
    ];
}

/// How the queues matched by a regular expression make one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Sum,
    Avg,
    Max,
}

/// Client TLS settings of the management API.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Tls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca.is_some())
            .field("cert", &self.cert.is_some())
            .finish_non_exhaustive()
    }
}

/// The parameters of a `rabbitmq` trigger.
#[derive(Clone, PartialEq)]
pub struct Metadata {
    /// `host` (required, from the metadata, the TriggerAuthentication or `hostFromEnv`): the
    /// broker's URL, with credentials.
    pub host: String,
    /// `protocol` (default `auto`: from the scheme of `host`).
    pub protocol: Protocol,
    /// `queueName` (required).
    pub queue_name: String,
    /// `mode` (default `QueueLength`).
    pub mode: Mode,
    /// `value` (or the deprecated `queueLength`; default 20 when neither nor `mode` is given).
    pub value: f64,
    /// `activationValue` (default 0).
    pub activation_value: f64,
    /// `vhostName`: overrides the virtual host of `host`.
    pub vhost_name: Option<String>,
    /// `useRegex` (HTTP only).
    pub use_regex: bool,
    /// `operation` (default `sum`).
    pub operation: Operation,
    /// `excludeUnacknowledged` (HTTP only).
    pub exclude_unacknowledged: bool,
    /// `pageSize` (default 100, at least 1).
    pub page_size: i64,
    /// `timeout` in milliseconds (HTTP only).
    pub timeout: Option<Duration>,
    /// `unsafeSsl`.
    pub unsafe_ssl: bool,
    /// `username` and `password` (a secret), both or neither: override those of `host`.
    pub credentials: Option<(String, String)>,
    /// `tls: enable` with `ca`, `cert`, `key`.
    pub tls: Option<Tls>,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("host", &"..")
            .field("protocol", &self.protocol)
            .field("queue_name", &self.queue_name)
            .field("mode", &self.mode)
            .field("value", &self.value)
            .field("activation_value", &self.activation_value)
            .field("vhost_name", &self.vhost_name)
            .field("use_regex", &self.use_regex)
            .field("operation", &self.operation)
            .field("exclude_unacknowledged", &self.exclude_unacknowledged)
            .field("page_size", &self.page_size)
            .field("timeout", &self.timeout)
            .field("unsafe_ssl", &self.unsafe_ssl)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(user, _)| (user, "..")),
            )
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

fn config(message: impl Into<String>) -> ScalerError {
    ScalerError::Config(message.into())
}

/// The scheme of `host`, lower-cased; the URL is never shown (it carries a password).
fn scheme(host: &str) -> Result<String, ParamError> {
    let url = reqwest::Url::parse(host)
        .map_err(|e| ParamError::invalid("host", format!("is not a URL ({e})")))?;
    Ok(url.scheme().to_ascii_lowercase())
}

/// Reads and checks the metadata of a `rabbitmq` trigger; no I/O.
#[allow(
    clippy::too_many_lines,
    reason = "one check after the other, in KEDA's order"
)]
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let queue_name = params.require("queueName", METADATA)?.to_owned();
    let host = params.require("host", HOST)?.to_owned();
    let protocol = params.get("protocol", META_AUTH).unwrap_or("auto");
    let tls_setting = params.get("tls", AUTH).unwrap_or("disable");
    let ca = params.secret("ca", AUTH)?.map(str::to_owned);
    let cert = params.secret("cert", AUTH)?.map(str::to_owned);
    let key = params.secret("key", AUTH)?.map(str::to_owned);
    let page_size = params.int("pageSize", METADATA, Some(100))?;
    let username = params.get("username", CREDENTIALS).map(str::to_owned);
    let password = params.secret("password", CREDENTIALS)?.map(str::to_owned);
    let vhost_name = params.get("vhostName", META_AUTH).map(str::to_owned);
    let use_regex = params.bool("useRegex", METADATA, false)?;
    let exclude_unacknowledged = params.bool("excludeUnacknowledged", METADATA, false)?;
    let unsafe_ssl = params.bool("unsafeSsl", METADATA, false)?;
    let operation = match params.get("operation", METADATA).unwrap_or("sum") {
        "sum" => Operation::Sum,
        "avg" => Operation::Avg,
        "max" => Operation::Max,
        other => {
            return Err(ParamError::invalid(
                "operation",
                format!("{other:?} is not one of sum, avg, max"),
            )
            .into());
        }
    };
    let timeout = match params.int("timeout", METADATA, Some(0))? {
        0 => None,
        ms if ms < 0 => {
            return Err(ParamError::invalid(
                "timeout",
                format!("{ms} must be a number of milliseconds greater than 0"),
            )
            .into());
        }
        ms => Some(Duration::from_millis(ms.unsigned_abs())),
    };
    let activation_value = params.float("activationValue", METADATA, Some(0.0))?;
    let queue_length = params.float("queueLength", METADATA, Some(0.0))?;
    let value = params.float("value", METADATA, Some(0.0))?;
    let mode = params.get("mode", METADATA).filter(|m| *m != "Unknown");
    for (name, number) in [
        ("activationValue", activation_value),
        ("queueLength", queue_length),
        ("value", value),
    ] {
        if !number.is_finite() {
            return Err(
                ParamError::invalid(name, format!("{number} is not a finite number")).into(),
            );
        }
    }

    if params.get("workloadIdentityResource", AUTH).is_some() {
        return Err(config(
            "workloadIdentityResource (Azure AD Workload Identity) is not supported; use \
             username and password",
        ));
    }
    if ["oauthTokenURI", "clientID", "clientSecret"]
        .iter()
        .any(|name| params.get(name, AUTH).is_some())
    {
        return Err(config(
            "OAuth2 (oauthTokenURI, clientID, clientSecret) is not supported; use username and \
             password",
        ));
    }
    if params.get("keyPassword", AUTH).is_some() {
        return Err(config(
            "keyPassword (an encrypted client key) is not supported; give the key unencrypted",
        ));
    }
    let tls = match tls_setting {
        "enable" => true,
        "disable" => false,
        other => {
            return Err(ParamError::invalid(
                "tls",
                format!("{other:?} is not one of enable, disable"),
            )
            .into());
        }
    };
    if cert.is_some() != key.is_some() {
        return Err(config("both key and cert must be given, or neither"));
    }
    if page_size < 1 {
        return Err(
            ParamError::invalid("pageSize", format!("{page_size} must be 1 or greater")).into(),
        );
    }
    let credentials = match (username, password) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        _ => return Err(config("username and password must be given together")),
    };
    let scheme = scheme(&host)?;
    let protocol = match protocol {
        "auto" => match scheme.as_str() {
            "amqp" | "amqps" => Protocol::Amqp,
            "http" | "https" => Protocol::Http,
            other => {
                return Err(ParamError::invalid(
                    "host",
                    format!("has the scheme {other:?}; use amqp, amqps, http or https"),
                )
                .into());
            }
        },
        "amqp" => Protocol::Amqp,
        "http" => Protocol::Http,
        other => {
            return Err(ParamError::invalid(
                "protocol",
                format!("{other:?} is not one of auto, amqp, http"),
            )
            .into());
        }
    };
    match (protocol, scheme.as_str()) {
        (Protocol::Amqp, "amqp" | "amqps") | (Protocol::Http, "http" | "https") => {}
        (Protocol::Amqp, other) => {
            return Err(ParamError::invalid(
                "host",
                format!("has the scheme {other:?}; protocol amqp needs amqp:// or amqps://"),
            )
            .into());
        }
        (Protocol::Http, other) => {
            return Err(ParamError::invalid(
                "host",
                format!("has the scheme {other:?}; protocol http needs http:// or https://"),
            )
            .into());
        }
    }
    if use_regex && protocol != Protocol::Http {
        return Err(config("useRegex=true needs the HTTP protocol"));
    }
    if exclude_unacknowledged && protocol != Protocol::Http {
        return Err(config("excludeUnacknowledged=true needs the HTTP protocol"));
    }
    let (mode, value) = if queue_length == 0.0 && mode.is_none() && value == 0.0 {
        (Mode::QueueLength, 20.0)
    } else if queue_length != 0.0 {
        if mode.is_some() || value != 0.0 {
            return Err(config("queueLength is deprecated; use mode and value"));
        }
        (Mode::QueueLength, queue_length)
    } else {
        let Some(mode) = mode else {
            return Err(config("mode must be given with value"));
        };
        if value == 0.0 {
            return Err(config("value must be given with mode"));
        }
        let Some((_, mode)) = Mode::NAMES.iter().find(|(name, _)| *name == mode) else {
            return Err(ParamError::invalid(
                "mode",
                format!(
                    "{mode:?} is not one of QueueLength, MessageRate, DeliverGetRate, \
                     PublishedToDeliveredRatio, ExpectedQueueConsumptionTime"
                ),
            )
            .into());
        };
        if *mode != Mode::QueueLength && protocol != Protocol::Http {
            return Err(config(format!(
                "mode {mode:?} needs the HTTP protocol (the management API's rates)"
            )));
        }
        (*mode, value)
    };
    if value < 0.0 {
        return Err(ParamError::invalid("value", format!("{value} must not be negative")).into());
    }
    if protocol == Protocol::Amqp && timeout.is_some() {
        return Err(config(
            "timeout is for the HTTP protocol only; AMQP has no custom timeout",
        ));
    }
    if protocol == Protocol::Amqp && queue_name.len() > MAX_QUEUE_NAME {
        return Err(ParamError::invalid(
            "queueName",
            format!("is longer than {MAX_QUEUE_NAME} bytes"),
        )
        .into());
    }
    let tls = if tls {
        Some(Tls { ca, cert, key })
    } else {
        None
    };
    Ok(Metadata {
        host,
        protocol,
        queue_name,
        mode,
        value,
        activation_value,
        vhost_name,
        use_regex,
        operation,
        exclude_unacknowledged,
        page_size,
        timeout,
        unsafe_ssl,
        credentials,
        tls,
    })
}

/// `%XX`-decodes URL text (user names, passwords, virtual hosts).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `%XX`-encodes a path segment: everything but `A-Z a-z 0-9 - _ . ~`.
fn path_escape(text: &str) -> String {
    metric_name::query_escape(text).replace('+', "%20")
}

/// The connections of `rabbitmq` triggers (one per process, in [`Services`]).
#[derive(Debug, Default)]
pub struct RabbitPools {
    pub amqp: AmqpPool,
    pub http: HttpPool,
}

/// How a built trigger reads.
enum Reader {
    Amqp(Arc<Pooled<AmqpKey, AmqpClient>>),
    Http {
        pooled: Arc<Pooled<HttpKey, HttpClient, QueueStats>>,
        query: HttpQuery,
        operation: Operation,
    },
}

/// Builds a `rabbitmq` trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = super::external_target_type(input)?;
    let metadata = parse(input)?;
    let timeout = metadata.timeout.unwrap_or(input.http_timeout);
    let reader = match metadata.protocol {
        Protocol::Amqp => {
            let key = AmqpKey::new(&metadata)?;
            let tls = key.tls_adaptor()?;
            let pooled = services.rabbitmq.amqp.get(&key, || AmqpClient {
                tls,
                shown: key.shown(),
                key: key.clone(),
                connection: tokio::sync::Mutex::new(None),
                idle: std::sync::Mutex::default(),
            });
            Reader::Amqp(pooled)
        }
        Protocol::Http => {
            let (mut key, query) = http_endpoint(&metadata)?;
            key.timeout = timeout;
            let client = http_client(metadata.unsafe_ssl, metadata.tls.as_ref())?;
            let pooled = services.rabbitmq.http.get(&key, || HttpClient {
                client,
                base: key.base.clone(),
                credentials: key.credentials.clone(),
                timeout,
            });
            Reader::Http {
                pooled,
                query,
                operation: metadata.operation,
            }
        }
    };
    Ok(Box::new(RabbitMqScaler {
        name: metric_name::normalized(
            input.index,
            &format!(
                "rabbitmq-{}",
                metric_name::query_escape(&metadata.queue_name)
            ),
        ),
        target_type,
        timeout,
        reader,
        metadata,
    }))
}

/// A built `rabbitmq` trigger.
pub struct RabbitMqScaler {
    metadata: Metadata,
    name: String,
    target_type: MetricTargetType,
    timeout: Duration,
    reader: Reader,
}

impl fmt::Debug for RabbitMqScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqScaler")
            .field("name", &self.name)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl RabbitMqScaler {
    async fn stats(&self) -> Result<(f64, QueueStats), ScalerError> {
        match &self.reader {
            Reader::Amqp(pooled) => {
                let queue = self.metadata.queue_name.clone();
                let timeout = self.timeout;
                let count = pooled
                    .coalesce(&queue.clone(), move |pooled| {
                        async move { pooled.client().message_count(&queue, timeout).await }.boxed()
                    })
                    .await?;
                let stats = QueueStats {
                    messages: count,
                    ready: count,
                    ..QueueStats::default()
                };
                Ok((count, stats))
            }
            Reader::Http {
                pooled,
                query,
                operation,
            } => {
                let owned = query.clone();
                let operation = *operation;
                let queue = self.metadata.queue_name.clone();
                let stats = pooled
                    .coalesce(&format!("{operation:?} {}", query.path), move |pooled| {
                        async move {
                            let client = pooled.client();
                            if !owned.regex {
                                let info: QueueInfo = client.get(&owned.path).await?;
                                return Ok(info.stats());
                            }
                            let page: QueuePage = client.get(&owned.path).await?;
                            if page.page_count > 1 {
                                return Err(client.error(&format!(
                                    "the regex {queue:?} matches more queues than pageSize ({})",
                                    owned.page_size
                                )));
                            }
                            let queues: Vec<QueueStats> =
                                page.items.iter().map(QueueInfo::stats).collect();
                            Ok(combine(&queues, operation))
                        }
                        .boxed()
                    })
                    .await?;
                let messages = if self.metadata.exclude_unacknowledged {
                    stats.ready
                } else {
                    stats.messages
                };
                Ok((messages, stats))
            }
        }
    }
}

impl Scaler for RabbitMqScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.name.clone(),
            target_type: self.target_type,
            target: self.metadata.value,
        }]
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move {
            if metric != self.name {
                return Err(ScalerError::NoSuchMetric(metric.to_owned()));
            }
            let (messages, stats) = self.stats().await?;
            Ok(evaluate(
                self.metadata.mode,
                messages,
                &stats,
                self.metadata.activation_value,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    fn input(params: Params) -> TriggerInput {
        TriggerInput::new(1, "rabbitmq", params)
    }

    fn parsed(pairs: &[(&str, &str)]) -> Metadata {
        parse(&input(Params::from_metadata(pairs.iter().copied()))).unwrap()
    }

    fn error(params: Params) -> String {
        parse(&input(params)).unwrap_err().to_string()
    }

    const AMQP: (&str, &str) = ("host", "amqp://user:pw@rabbit.svc:5672/vh");
    const HTTP: (&str, &str) = ("host", "http://user:pw@rabbit.svc:15672/vh");

    #[test]
    fn defaults_and_sources() {
        let params = Params::from_metadata([("hostFromEnv", "RMQ"), ("queueName", "jobs")])
            .with_env([("RMQ", "amqp://guest:s3cret@rabbit.svc/")])
            .with_auth([("username", "worker"), ("password", "hunter2")]);
        let metadata = parse(&input(params)).unwrap();
        assert_eq!(metadata.protocol, Protocol::Amqp);
        assert_eq!(metadata.mode, Mode::QueueLength);
        assert!((metadata.value - 20.0).abs() < f64::EPSILON);
        assert!(metadata.activation_value.abs() < f64::EPSILON);
        assert_eq!(metadata.page_size, 100);
        assert_eq!(metadata.operation, Operation::Sum);
        assert_eq!(
            metadata.credentials,
            Some(("worker".into(), "hunter2".into()))
        );
        let shown = format!("{metadata:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
        let key = AmqpKey::new(&metadata).unwrap();
        assert_eq!(
            (key.host.as_str(), key.port, key.vhost.as_str()),
            ("rabbit.svc", 5672, "/")
        );
        assert_eq!(
            (key.username.as_str(), key.password.as_str()),
            ("worker", "hunter2")
        );

        let metadata = parsed(&[
            ("host", "amqp://a%40b:p%2Fw@[::1]:5673/my%2Fvhost"),
            ("queueName", "q"),
            ("queueLength", "7.5"),
        ]);
        let key = AmqpKey::new(&metadata).unwrap();
        assert_eq!(
            (key.host.as_str(), key.port, key.vhost.as_str()),
            ("[::1]", 5673, "my/vhost")
        );
        assert_eq!(
            (key.username.as_str(), key.password.as_str()),
            ("a@b", "p/w")
        );
        assert!((metadata.value - 7.5).abs() < f64::EPSILON);

        let metadata = parsed(&[
            HTTP,
            ("queueName", "q.*"),
            ("mode", "MessageRate"),
            ("value", "2.5"),
            ("activationValue", "1"),
            ("useRegex", "true"),
            ("operation", "max"),
            ("pageSize", "10"),
            ("excludeUnacknowledged", "true"),
            ("timeout", "1500"),
            ("unsafeSsl", "true"),
        ]);
        assert_eq!(metadata.protocol, Protocol::Http);
        assert_eq!(metadata.mode, Mode::MessageRate);
        assert_eq!(metadata.operation, Operation::Max);
        assert_eq!(metadata.timeout, Some(Duration::from_millis(1500)));
        let (key, query) = http_endpoint(&metadata).unwrap();
        assert_eq!(key.base, "http://rabbit.svc:15672");
        assert_eq!(key.credentials, Some(("user".into(), "pw".into())));
        assert_eq!(
            query.path,
            "/api/queues/vh?page=1&use_regex=true&pagination=false&name=q.%2A&page_size=10"
        );

        let metadata = parsed(&[
            ("host", "https://rabbit.svc/prefix/mgmt/"),
            ("queueName", "my queue"),
            ("vhostName", "a/b"),
        ]);
        let (key, query) = http_endpoint(&metadata).unwrap();
        assert_eq!(key.base, "https://rabbit.svc/prefix/mgmt");
        assert_eq!(key.credentials, None);
        assert_eq!(query.path, "/api/queues/a%2Fb/my%20queue");
        let metadata = parsed(&[
            ("host", "http://h:1"),
            ("queueName", "q"),
            ("protocol", "http"),
        ]);
        assert_eq!(
            http_endpoint(&metadata).unwrap().1.path,
            "/api/queues/%2F/q"
        );
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "a table of cases")]
    fn invalid_metadata_errors_name_the_field() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[AMQP],
                "missing required parameter \"queueName\" in [triggerMetadata]",
            ),
            (
                &[("queueName", "q")],
                "missing required parameter \"host\" in [triggerMetadata authParams resolvedEnv]",
            ),
            (
                &[("queueName", "q"), ("host", "rabbit:5672")],
                "parameter \"host\": has the scheme \"rabbit\"; use amqp, amqps, http or https",
            ),
            (
                &[("queueName", "q"), ("host", "not a url")],
                "parameter \"host\": is not a URL (relative URL without a base)",
            ),
            (
                &[AMQP, ("queueName", "q"), ("protocol", "http")],
                "parameter \"host\": has the scheme \"amqp\"; protocol http needs http:// or https://",
            ),
            (
                &[HTTP, ("queueName", "q"), ("protocol", "amqp")],
                "parameter \"host\": has the scheme \"http\"; protocol amqp needs amqp:// or amqps://",
            ),
            (
                &[AMQP, ("queueName", "q"), ("protocol", "stomp")],
                "parameter \"protocol\": \"stomp\" is not one of auto, amqp, http",
            ),
            (
                &[AMQP, ("queueName", "q"), ("useRegex", "true")],
                "useRegex=true needs the HTTP protocol",
            ),
            (
                &[AMQP, ("queueName", "q"), ("excludeUnacknowledged", "true")],
                "excludeUnacknowledged=true needs the HTTP protocol",
            ),
            (
                &[
                    AMQP,
                    ("queueName", "q"),
                    ("mode", "MessageRate"),
                    ("value", "5"),
                ],
                "mode MessageRate needs the HTTP protocol (the management API's rates)",
            ),
            (
                &[HTTP, ("queueName", "q"), ("mode", "Bogus"), ("value", "5")],
                "parameter \"mode\": \"Bogus\" is not one of QueueLength, MessageRate, DeliverGetRate, PublishedToDeliveredRatio, ExpectedQueueConsumptionTime",
            ),
            (
                &[HTTP, ("queueName", "q"), ("mode", "QueueLength")],
                "value must be given with mode",
            ),
            (
                &[HTTP, ("queueName", "q"), ("value", "5")],
                "mode must be given with value",
            ),
            (
                &[
                    HTTP,
                    ("queueName", "q"),
                    ("queueLength", "5"),
                    ("value", "5"),
                ],
                "queueLength is deprecated; use mode and value",
            ),
            (
                &[
                    HTTP,
                    ("queueName", "q"),
                    ("value", "x"),
                    ("mode", "QueueLength"),
                ],
                "parameter \"value\": \"x\" is not a number",
            ),
            (
                &[
                    HTTP,
                    ("queueName", "q"),
                    ("value", "-1"),
                    ("mode", "QueueLength"),
                ],
                "parameter \"value\": -1 must not be negative",
            ),
            (
                &[HTTP, ("queueName", "q"), ("activationValue", "inf")],
                "parameter \"activationValue\": inf is not a finite number",
            ),
            (
                &[HTTP, ("queueName", "q"), ("activationValue", "x")],
                "parameter \"activationValue\": \"x\" is not a number",
            ),
            (
                &[HTTP, ("queueName", "q"), ("pageSize", "0")],
                "parameter \"pageSize\": 0 must be 1 or greater",
            ),
            (
                &[HTTP, ("queueName", "q"), ("operation", "min")],
                "parameter \"operation\": \"min\" is not one of sum, avg, max",
            ),
            (
                &[HTTP, ("queueName", "q"), ("timeout", "-5")],
                "parameter \"timeout\": -5 must be a number of milliseconds greater than 0",
            ),
            (
                &[HTTP, ("queueName", "q"), ("useRegex", "yes")],
                "parameter \"useRegex\": \"yes\" is not a bool",
            ),
            (
                &[AMQP, ("queueName", "q"), ("timeout", "1000")],
                "timeout is for the HTTP protocol only; AMQP has no custom timeout",
            ),
            (
                &[AMQP, ("queueName", "q"), ("password", "plain")],
                "parameter \"password\" is a secret and must come from a TriggerAuthentication or the container environment, not from metadata",
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                error(Params::from_metadata(pairs.iter().copied())),
                *expected,
                "{pairs:?}"
            );
        }
        let long = "q".repeat(256);
        assert_eq!(
            error(Params::from_metadata([AMQP, ("queueName", long.as_str())])),
            "parameter \"queueName\": is longer than 255 bytes"
        );
        let base = || Params::from_metadata([HTTP, ("queueName", "q")]);
        assert_eq!(
            error(base().with_auth([("username", "u")])),
            "username and password must be given together"
        );
        assert_eq!(
            error(base().with_auth([("tls", "on")])),
            "parameter \"tls\": \"on\" is not one of enable, disable"
        );
        assert_eq!(
            error(base().with_auth([("tls", "enable"), ("cert", "c")])),
            "both key and cert must be given, or neither"
        );
        assert_eq!(
            error(base().with_auth([("workloadIdentityResource", "api://rabbit")])),
            "workloadIdentityResource (Azure AD Workload Identity) is not supported; use \
             username and password"
        );
        assert_eq!(
            error(base().with_auth([("clientID", "id")])),
            "OAuth2 (oauthTokenURI, clientID, clientSecret) is not supported; use username and \
             password"
        );
        assert_eq!(
            error(base().with_auth([("tls", "enable"), ("keyPassword", "k")])),
            "keyPassword (an encrypted client key) is not supported; give the key unencrypted"
        );
        let amqps = parsed(&[("host", "amqps://rabbit/"), ("queueName", "q")]);
        let key = AmqpKey::new(&amqps).unwrap();
        assert_eq!(key.port, 5671);
        assert!(key.tls.is_some() && key.tls_adaptor().unwrap().is_some());
        let bad_ca = Params::from_metadata([AMQP, ("queueName", "q")])
            .with_auth([("tls", "enable"), ("ca", "not pem")]);
        let metadata = parse(&input(bad_ca)).unwrap();
        let key = AmqpKey::new(&metadata).unwrap();
        assert_eq!(
            key.tls_adaptor().err().unwrap().to_string(),
            "parameter \"ca\": holds no PEM certificate"
        );
        // The URL (with its password) is never part of an error.
        let bad = Params::from_metadata([("queueName", "q")])
            .with_auth([("host", "ftp://user:s3cret@host/")]);
        assert!(!error(bad).contains("s3cret"));
    }

    #[tokio::test]
    async fn names_and_shared_connections() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let amqp = |queue: &str, vhost: &str| {
            Params::from_metadata([("queueName", queue), ("vhostName", vhost)])
                .with_auth([("host", "amqp://guest:s3cret@127.0.0.1:9/")])
        };
        let first = build(&input(amqp("namespace/name", "/")), &services).unwrap();
        let second = build(&input(amqp("other", "/")), &services).unwrap();
        assert_eq!(
            first.metric_specs(),
            vec![MetricSpec::External {
                name: "s1-rabbitmq-namespace-2Fname".into(),
                target_type: MetricTargetType::AverageValue,
                target: 20.0,
            }]
        );
        assert_eq!(services.rabbitmq.amqp.clients(), 1);
        let third = build(&input(amqp("q", "other")), &services).unwrap();
        assert_eq!(services.rabbitmq.amqp.clients(), 2);
        assert!(!format!("{first:?}").contains("s3cret"));
        let http = |queue: &str| {
            Params::from_metadata([("queueName", queue)])
                .with_auth([("host", "http://guest:s3cret@127.0.0.1:9/")])
        };
        let mgmt_a = build(&input(http("a")), &services).unwrap();
        let mgmt_b = build(&input(http("b")), &services).unwrap();
        assert_eq!(services.rabbitmq.http.clients(), 1);
        let error = first
            .read("s1-rabbitmq-namespace-2Fname")
            .await
            .unwrap_err();
        assert_eq!(error.category(), "source");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        let error = mgmt_a.read("s1-rabbitmq-a").await.unwrap_err();
        assert_eq!(error.category(), "source");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        drop((first, second, third, mgmt_a, mgmt_b));
        assert_eq!(services.rabbitmq.amqp.clients(), 0);
        assert_eq!(services.rabbitmq.http.clients(), 0);
    }
}
