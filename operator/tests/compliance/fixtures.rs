//! One fixture per scaler module: a valid trigger, what its metadata must refuse, how its
//! activation is observed, its secret parameters, and the source a check can control.
//!
//! A new trigger type joins the suite by getting a fixture here and a line in [`all`];
//! `every_known_trigger_type_has_a_fixture` fails until it does.

use std::net::SocketAddr;

use futures::future::BoxFuture;
use keda_operator::scalers::Reading;
use keda_operator_crd::MetricTargetType;

use crate::sources::{self, Source};

/// Metadata a fixture's trigger is built from (key, value).
pub(crate) type Metadata = Vec<(&'static str, String)>;

/// A trigger `build` refuses with a config error naming a parameter.
pub(crate) enum Invalid {
    /// The valid metadata with these values set; the error names the last key.
    Values(&'static [(&'static str, &'static str)]),
    /// The trigger's `metricType` set to this (`None`: not given); the error names
    /// `metricType`.
    MetricType(Option<MetricTargetType>),
}

/// How a trigger's activity is observed.
pub(crate) enum Activation {
    /// The trigger is active while the value the source reports is greater than `key`
    /// (`threshold` in the checks); the source can report values `step` apart.
    Threshold {
        key: &'static str,
        threshold: f64,
        step: f64,
    },
    /// Metadata changes and the reading each gives now.
    Schedule(Vec<(Metadata, Reading)>),
    /// Never read: the HPA reads the resource metrics itself.
    Never,
}

/// One secret parameter and what it takes to make the scaler use it.
pub(crate) struct SecretCase {
    /// The parameter.
    pub(crate) name: &'static str,
    /// Metadata that makes the scaler read it (besides the fixture's own).
    pub(crate) metadata: Metadata,
    /// Authentication parameters: the secret and any it needs.
    pub(crate) auth: Metadata,
    /// Environment of the target container (`<name>FromEnv`).
    pub(crate) env: Metadata,
    /// Whether plain metadata may carry it too (as KEDA allows for some); otherwise moving it
    /// from `auth` into the metadata must be refused.
    pub(crate) metadata_allowed: bool,
    /// Text that must never be shown: the value, or a line of a PEM body.
    pub(crate) tells: Vec<String>,
    /// Whether the first tell reaches the source as it is (headers, query, gRPC metadata):
    /// the control that the scaler really used the secret.
    pub(crate) reaches_source: bool,
}

/// What the checks know about one scaler module.
pub(crate) trait Fixture: Sync {
    /// The trigger types it covers.
    fn types(&self) -> &'static [&'static str];

    /// The metadata of a valid trigger whose source listens at `source`.
    fn metadata(&self, source: SocketAddr) -> Metadata;

    /// The `metricType` a valid trigger sets (`None`: not given).
    fn metric_type(&self) -> Option<MetricTargetType> {
        None
    }

    /// Parameters whose absence `build` refuses, naming them.
    fn required(&self) -> &'static [&'static str];

    fn invalid(&self) -> Vec<Invalid>;

    /// Metadata that puts `/`, `%` and other characters the HPA rejects into the part of the
    /// metric name taken from the trigger; empty when no metadata goes into the name.
    fn hostile_name(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    fn activation(&self) -> Activation;

    /// Secret parameters, for a trigger whose source listens at `source`.
    fn secrets(&self, _source: SocketAddr) -> Vec<SecretCase> {
        Vec::new()
    }

    /// Whether reads talk to a source, so that one that is down must be an error.
    fn reads_source(&self) -> bool {
        false
    }

    /// Starts a source the checks control.
    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        Box::pin(async { None })
    }
}

/// Every fixture, one per scaler module.
pub(crate) fn all() -> [&'static dyn Fixture; 16] {
    [
        &CpuMemory,
        &Cron,
        &External,
        &KubernetesWorkload,
        &MetricsApi,
        &crate::mysql::Mysql,
        &crate::http_sources::NatsJetStream,
        &crate::data_stores::Postgresql,
        &crate::http_sources::Prometheus,
        &crate::rabbitmq::RabbitMq,
        &crate::data_stores::Redis,
        &crate::redis_family::RedisStreams,
        &crate::redis_family::RedisCluster,
        &crate::redis_family::RedisSentinel,
        &crate::redis_family::RedisClusterStreams,
        &crate::redis_family::RedisSentinelStreams,
    ]
}

fn owned(pairs: &[(&'static str, &str)]) -> Metadata {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// A self-signed certificate and its private key, in PEM.
pub(crate) fn pem_pair() -> (String, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

/// The middle line of a PEM body: text that appears in nothing but this PEM.
pub(crate) fn pem_tell(pem: &str) -> String {
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    body[body.len() / 2].to_owned()
}

struct CpuMemory;

impl Fixture for CpuMemory {
    fn types(&self) -> &'static [&'static str] {
        &["cpu", "memory"]
    }

    fn metadata(&self, _: SocketAddr) -> Metadata {
        owned(&[("value", "50"), ("containerName", "app")])
    }

    fn metric_type(&self) -> Option<MetricTargetType> {
        Some(MetricTargetType::Utilization)
    }

    fn required(&self) -> &'static [&'static str] {
        &["value"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::MetricType(None),
            Invalid::MetricType(Some(MetricTargetType::Value)),
            Invalid::Values(&[("value", "50.5")]),
            Invalid::Values(&[("value", "0")]),
            Invalid::Values(&[("type", "Utilization")]),
        ]
    }

    fn activation(&self) -> Activation {
        Activation::Never
    }
}

struct Cron;

impl Fixture for Cron {
    fn types(&self) -> &'static [&'static str] {
        &["cron"]
    }

    fn metadata(&self, _: SocketAddr) -> Metadata {
        owned(&[
            ("start", "0 8 * * 1-5"),
            ("end", "0 18 * * 1-5"),
            ("timezone", "Europe/Berlin"),
            ("desiredReplicas", "4"),
        ])
    }

    fn required(&self) -> &'static [&'static str] {
        &["start", "end", "timezone", "desiredReplicas"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("timezone", "Mars/Olympus")]),
            Invalid::Values(&[("start", "0 8 * *")]),
            Invalid::Values(&[("start", "0 12 L * *")]),
            Invalid::Values(&[("end", "0 25 * * *")]),
            Invalid::Values(&[("end", "0 8 * * 1-5")]),
            Invalid::Values(&[("desiredReplicas", "0")]),
            Invalid::Values(&[("desiredReplicas", "four")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    fn hostile_name(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("timezone", "America/Argentina/Buenos_Aires"),
            ("start", "*/15 8-11 ? * MON-FRI"),
        ]
    }

    /// A window around the present hour in Kolkata (UTC+05:30, so hours there are not hours
    /// in UTC), and one starting an hour from now: one read is inside, the other outside.
    fn activation(&self) -> Activation {
        let zone = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap();
        let hour = i32::from(jiff::Timestamp::now().to_zoned(zone).hour());
        let at = |offset: i32| format!("0 {} * * *", (hour + offset).rem_euclid(24));
        let window = |start: i32, end: i32| {
            vec![
                ("start", at(start)),
                ("end", at(end)),
                ("timezone", "Asia/Kolkata".to_owned()),
            ]
        };
        Activation::Schedule(vec![
            (
                window(-1, 2),
                Reading {
                    value: 4.0,
                    active: true,
                },
            ),
            (
                window(2, 3),
                Reading {
                    value: 1.0,
                    active: false,
                },
            ),
        ])
    }
}

struct External;

impl Fixture for External {
    fn types(&self) -> &'static [&'static str] {
        &["external", "external-push"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            ("scalerAddress", source.to_string()),
            (sources::METRIC_NAME_KEY, "orders-queue-depth".to_owned()),
            ("queue", "orders".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["scalerAddress"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("enableTLS", "yes")]),
            Invalid::Values(&[("unsafeSsl", "2")]),
            Invalid::Values(&[("scalerAddress", "unix:///run/scaler.sock")]),
            Invalid::Values(&[("scalerAddress", "http://scaler:6000")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    /// The threshold is the server's: the operator passes the trigger's metadata on and
    /// reports what `IsActive` answers.
    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: sources::ACTIVATION_KEY,
            threshold: 5.0,
            step: 0.5,
        }
    }

    fn secrets(&self, _: SocketAddr) -> Vec<SecretCase> {
        let (ca, _) = pem_pair();
        let (cert, key) = pem_pair();
        let tls = |name| SecretCase {
            name,
            metadata: Vec::new(),
            auth: vec![
                ("caCert", ca.clone()),
                ("tlsClientCert", cert.clone()),
                ("tlsClientKey", key.clone()),
            ],
            env: Vec::new(),
            metadata_allowed: false,
            tells: vec![pem_tell(&ca), pem_tell(&cert), pem_tell(&key)],
            reaches_source: false,
        };
        let password = "pw-from-env-6b1e0c77";
        vec![
            tls("caCert"),
            tls("tlsClientCert"),
            tls("tlsClientKey"),
            SecretCase {
                name: "passwordFromEnv",
                metadata: owned(&[("passwordFromEnv", "DB_PASSWORD")]),
                auth: Vec::new(),
                env: owned(&[("DB_PASSWORD", password)]),
                metadata_allowed: true,
                tells: vec![password.to_owned()],
                reaches_source: true,
            },
        ]
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        Box::pin(async { Some(Box::new(sources::GrpcScaler::start().await) as Box<dyn Source>) })
    }
}

struct KubernetesWorkload;

impl Fixture for KubernetesWorkload {
    fn types(&self) -> &'static [&'static str] {
        &["kubernetes-workload"]
    }

    fn metadata(&self, _: SocketAddr) -> Metadata {
        owned(&[("podSelector", sources::POD_SELECTOR), ("value", "2")])
    }

    fn required(&self) -> &'static [&'static str] {
        &["podSelector", "value"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("podSelector", "app in (a")]),
            Invalid::Values(&[("podSelector", "app=a,,b=c")]),
            Invalid::Values(&[("value", "0")]),
            Invalid::Values(&[("value", "-1")]),
            Invalid::Values(&[("groupByNode", "maybe")]),
            Invalid::Values(&[("activationValue", "many")]),
            Invalid::Values(&[("activationValue", "NaN")]),
            Invalid::Values(&[("activationValue", "inf")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationValue",
            threshold: 2.0,
            step: 1.0,
        }
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        Box::pin(async { Some(Box::new(sources::Kube::start().await) as Box<dyn Source>) })
    }
}

struct MetricsApi;

impl Fixture for MetricsApi {
    fn types(&self) -> &'static [&'static str] {
        &["metrics-api"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            ("url", format!("http://{source}/stats?tenant=shop")),
            ("valueLocation", "stats.queue.depth".to_owned()),
            ("targetValue", "10".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["url", "valueLocation", "targetValue"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("format", "csv")]),
            Invalid::Values(&[("url", "ftp://stats/queue")]),
            Invalid::Values(&[("url", "not a url")]),
            Invalid::Values(&[("targetValue", "0")]),
            Invalid::Values(&[("targetValue", "ten")]),
            Invalid::Values(&[("activationTargetValue", "ten")]),
            Invalid::Values(&[("activationTargetValue", "NaN")]),
            Invalid::Values(&[("activationTargetValue", "inf")]),
            Invalid::Values(&[("timeout", "-2s")]),
            Invalid::Values(&[("unsafeSsl", "maybe")]),
            Invalid::Values(&[("aggregationType", "median")]),
            Invalid::Values(&[("authModes", "digest")]),
            Invalid::Values(&[
                ("authModes", "apiKey"),
                ("apiKey", "k"),
                ("method", "cookie"),
            ]),
            Invalid::Values(&[("format", "prometheus"), ("valueLocation", "queue{")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    fn hostile_name(&self) -> &'static [(&'static str, &'static str)] {
        &[("valueLocation", "stats/queue%2F(eu):depth.value")]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationTargetValue",
            threshold: 5.0,
            step: 0.001,
        }
    }

    fn secrets(&self, source: SocketAddr) -> Vec<SecretCase> {
        let case =
            |name, metadata: &[(&'static str, &str)], auth: &[(&'static str, &str)]| SecretCase {
                name,
                metadata: owned(metadata),
                auth: owned(auth),
                env: Vec::new(),
                metadata_allowed: false,
                tells: auth.iter().map(|(_, v)| (*v).to_owned()).collect(),
                reaches_source: true,
            };
        let basic = [("username", "user-3f9a21c4"), ("password", "pw-8d0e55b2")];
        let mut cases = vec![
            SecretCase {
                metadata_allowed: true,
                ..case(
                    "apiKey",
                    &[("authModes", "apiKey")],
                    &[("apiKey", "key-in-header-91c4d7")],
                )
            },
            SecretCase {
                metadata_allowed: true,
                ..case(
                    "apiKey",
                    &[("authModes", "apiKey"), ("method", "query")],
                    &[("apiKey", "key-in-query-2a7f03")],
                )
            },
            // Basic credentials travel base64-encoded.
            SecretCase {
                reaches_source: false,
                ..case("username", &[("authModes", "basic")], &basic)
            },
            SecretCase {
                reaches_source: false,
                ..case("password", &[("authModes", "basic")], &basic)
            },
            case(
                "token",
                &[("authModes", "bearer")],
                &[("token", "token-5e2b8a10")],
            ),
            case(
                "bearerToken",
                &[("authModes", "bearer")],
                &[("bearerToken", "token-c07d4f96")],
            ),
        ];
        let (ca, _) = pem_pair();
        let (cert, key) = pem_pair();
        let https = format!("https://{source}/stats");
        for name in ["cert", "key", "ca"] {
            cases.push(SecretCase {
                name,
                metadata: vec![("authModes", "tls".to_owned()), ("url", https.clone())],
                auth: vec![
                    ("cert", cert.clone()),
                    ("key", key.clone()),
                    ("ca", ca.clone()),
                ],
                env: Vec::new(),
                metadata_allowed: false,
                tells: vec![pem_tell(&cert), pem_tell(&key), pem_tell(&ca)],
                reaches_source: false,
            });
        }
        cases
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        Box::pin(async { Some(Box::new(sources::HttpApi::start().await) as Box<dyn Source>) })
    }
}
