//! Scalers: one module per trigger type and one registry line per type.
//!
//! A scaler is built from a [`TriggerInput`] without any network I/O (bad metadata fails here,
//! with an error naming the field); reading a metric talks to the source.

pub mod cpu_memory;
pub mod cron;
pub mod external;
pub mod http_auth;
pub mod kubernetes_workload;
pub mod metrics_api;
pub mod mysql;
pub mod nats_jetstream;
pub mod pooled;
pub mod postgresql;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod schema;
pub(crate) mod tls;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;

use crate::params::{ParamError, Params};

/// Everything a scaler is built from (KEDA's `ScalerConfig`).
#[derive(Clone, Debug)]
pub struct TriggerInput {
    /// Position in `spec.triggers`; the `s<index>-` of metric names.
    pub index: usize,
    pub trigger_type: String,
    /// The trigger's optional `name` (a scalingModifiers formula variable).
    pub name: Option<String>,
    /// The trigger's `metricType` (`AverageValue` when unset).
    pub metric_type: MetricTargetType,
    /// Whether the trigger's `metricType` was given explicitly (cpu/memory require it).
    pub metric_type_set: bool,
    pub params: Params,
    /// Namespace of the ScaledObject (kubernetes-workload counts pods here).
    pub namespace: String,
    /// Name of the ScaledObject (or ScaledJob) the trigger belongs to.
    pub scaled_object: String,
    /// When scalingModifiers combine the triggers, per-trigger targets become optional.
    pub as_metric_source: bool,
    /// Deadline of HTTP requests to sources (`KEDA_HTTP_DEFAULT_TIMEOUT`).
    pub http_timeout: Duration,
}

impl TriggerInput {
    /// A trigger at `index` of `trigger_type` with only metadata; the rest defaulted.
    pub fn new(index: usize, trigger_type: &str, params: Params) -> Self {
        Self {
            index,
            trigger_type: trigger_type.to_owned(),
            name: None,
            metric_type: MetricTargetType::AverageValue,
            metric_type_set: false,
            params,
            namespace: "default".to_owned(),
            scaled_object: String::new(),
            as_metric_source: false,
            http_timeout: Duration::from_secs(3),
        }
    }
}

/// What the HPA is told about one trigger.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricSpec {
    /// An `External` metric served by the metrics server.
    External {
        /// `s<index>-...`
        name: String,
        target_type: MetricTargetType,
        /// Target per replica (`AverageValue`) or in total (`Value`).
        target: f64,
    },
    /// A `Resource` metric (or `ContainerResource` when a container is named).
    Resource {
        /// `cpu` or `memory`.
        resource: String,
        container: Option<String>,
        target: ResourceTarget,
    },
}

impl MetricSpec {
    /// The external metric name, if this is one.
    pub fn external_name(&self) -> Option<&str> {
        match self {
            Self::External { name, .. } => Some(name),
            Self::Resource { .. } => None,
        }
    }
}

/// A Resource metric target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceTarget {
    /// Percent of the request.
    Utilization(i32),
    /// A quantity per pod, as written (`500m`, `1Gi`).
    AverageValue(String),
}

/// One read of a trigger's metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub value: f64,
    /// `value > activation threshold`, strictly.
    pub active: bool,
}

/// Why a scaler could not be built or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScalerError {
    #[error("no scaler found for type: {0}")]
    UnknownType(String),
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("{0}")]
    Config(String),
    /// The source could not be reached or answered with something unusable.
    #[error("{0}")]
    Source(String),
    /// A metric name this scaler does not serve.
    #[error("metric {0} is not served by this trigger")]
    NoSuchMetric(String),
}

impl ScalerError {
    /// A short label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownType(_) | Self::Param(_) | Self::Config(_) => "config",
            Self::Source(_) => "source",
            Self::NoSuchMetric(_) => "metric",
        }
    }
}

/// The target type of a trigger's External metric: the trigger's `metricType`, which for
/// anything but cpu and memory must be `AverageValue` (the default) or `Value`.
pub fn external_target_type(input: &TriggerInput) -> Result<MetricTargetType, ScalerError> {
    match input.metric_type {
        MetricTargetType::Utilization => Err(ScalerError::Config(
            "metricType 'Utilization' is only supported by the cpu and memory triggers; use \
             'AverageValue' or 'Value'"
                .to_owned(),
        )),
        other => Ok(other),
    }
}

/// An error and its causes on one line, each cause once. Each message is cut at " for url ("
/// (what HTTP clients append, and the URL may carry an API key).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut source = Some(error);
    while let Some(e) = source {
        let message = e.to_string();
        let part = message
            .split_once(" for url (")
            .map_or(message.as_str(), |(head, _)| head);
        if !text.contains(part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(part);
        }
        source = e.source();
    }
    text
}

/// Shared clients scalers read through.
#[derive(Clone)]
pub struct Services {
    pub kube: kube::Client,
    /// Client connections of the `external` and `external-push` triggers.
    pub external: Arc<external::ExternalPool>,
    /// Connections of the `mysql` triggers, one per server, credentials, database and TLS.
    pub mysql: Arc<mysql::MysqlPool>,
    /// Connections of the `postgresql` triggers, one per server, user and database.
    pub postgres: Arc<postgresql::PostgresPool>,
    /// Connections of the Redis triggers, one per (kind, servers, credentials, database, TLS).
    pub redis: Arc<redis::RedisPool>,
    /// AMQP connections and management API clients of the `rabbitmq` triggers, one per
    /// broker, credentials and virtual host.
    pub rabbitmq: Arc<rabbitmq::RabbitPools>,
    /// Clients of the `metrics-api` triggers, one per URL, authentication and TLS.
    pub metrics_api: Arc<metrics_api::MetricsApiPool>,
    /// Clients of the `prometheus` triggers, one per server, credentials and headers.
    pub prometheus: Arc<prometheus::PrometheusPool>,
    /// Requests of the `nats-jetstream` triggers, one per monitoring URL.
    pub nats: Arc<nats_jetstream::NatsPool>,
}

impl Services {
    /// Services over `kube`, with an empty external scaler pool.
    pub fn new(kube: kube::Client) -> Self {
        Self {
            kube,
            external: Arc::default(),
            mysql: Arc::default(),
            postgres: Arc::default(),
            redis: Arc::default(),
            rabbitmq: Arc::default(),
            metrics_api: Arc::default(),
            prometheus: Arc::default(),
            nats: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// A built trigger.
pub trait Scaler: Send + Sync + std::fmt::Debug {
    /// The metrics this trigger gives the HPA, names already `s<index>-...`.
    fn metric_specs(&self) -> Vec<MetricSpec>;

    /// Reads the external metric `metric` (one of [`Scaler::metric_specs`]) and whether the
    /// trigger is active. Scalers without external metrics (cpu, memory) are never read.
    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>>;

    /// Work that needs the source before the metric specs are known (an external scaler asks
    /// its server for them). Runs once after the scaler is built; an error makes the trigger
    /// count as failing, so fallback applies.
    fn prepare(&self) -> BoxFuture<'_, Result<(), ScalerError>> {
        Box::pin(async { Ok(()) })
    }

    /// For sources that push: a stream that yields whenever the source says the trigger has
    /// become active, so the loop acts at once instead of at the next polling interval. The
    /// stream reconnects on its own and ends only when the scaler is dropped.
    fn activity_pushes(&self) -> Option<futures::stream::BoxStream<'static, ()>> {
        None
    }

    /// Whether an item of [`Scaler::activity_pushes`] only asks the loop to read now, the read
    /// deciding activity, instead of saying the trigger is active (as the stream of an
    /// `external-push` scaler does).
    fn pushes_wake_only(&self) -> bool {
        false
    }
}

type Build = fn(&TriggerInput, &Services) -> Result<Box<dyn Scaler>, ScalerError>;

/// Trigger type → constructor and parameter declarations. Adding a scaler adds one line here.
const REGISTRY: &[(&str, Build, &[schema::Parameter])] = &[
    ("cpu", cpu_memory::build, cpu_memory::PARAMETERS),
    ("memory", cpu_memory::build, cpu_memory::PARAMETERS),
    ("cron", cron::build, cron::PARAMETERS),
    ("external", external::build, external::PARAMETERS),
    ("external-push", external::build, external::PARAMETERS),
    (
        "kubernetes-workload",
        kubernetes_workload::build,
        kubernetes_workload::PARAMETERS,
    ),
    ("metrics-api", metrics_api::build, metrics_api::PARAMETERS),
    ("mysql", mysql::build, mysql::PARAMETERS),
    (
        "nats-jetstream",
        nats_jetstream::build,
        nats_jetstream::PARAMETERS,
    ),
    ("postgresql", postgresql::build, postgresql::PARAMETERS),
    ("prometheus", prometheus::build, prometheus::PARAMETERS),
    ("rabbitmq", rabbitmq::build, rabbitmq::PARAMETERS),
    (
        "redis",
        redis::list::build,
        redis::list::standalone::PARAMETERS,
    ),
    (
        "redis-cluster",
        redis::list::build,
        redis::list::cluster::PARAMETERS,
    ),
    (
        "redis-sentinel",
        redis::list::build,
        redis::list::sentinel::PARAMETERS,
    ),
    (
        "redis-streams",
        redis::streams::build,
        redis::streams::standalone::PARAMETERS,
    ),
    (
        "redis-cluster-streams",
        redis::streams::build,
        redis::streams::cluster::PARAMETERS,
    ),
    (
        "redis-sentinel-streams",
        redis::streams::build,
        redis::streams::sentinel::PARAMETERS,
    ),
];

/// Every trigger type with the parameters it declares (for the generated schema).
pub fn all_parameters() -> impl Iterator<Item = (&'static str, &'static [schema::Parameter])> {
    REGISTRY
        .iter()
        .map(|(name, _, parameters)| (*name, *parameters))
}

/// The parameters a trigger type declares.
pub fn parameters(trigger_type: &str) -> Option<&'static [schema::Parameter]> {
    all_parameters()
        .find(|(name, _)| *name == trigger_type)
        .map(|(_, parameters)| parameters)
}

/// Builds the scaler for a trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let (_, build, _) = REGISTRY
        .iter()
        .find(|(name, _, _)| *name == input.trigger_type)
        .ok_or_else(|| ScalerError::UnknownType(input.trigger_type.clone()))?;
    build(input, services)
}

/// Whether a trigger type is known.
pub fn is_known(trigger_type: &str) -> bool {
    REGISTRY.iter().any(|(name, _, _)| *name == trigger_type)
}

/// The trigger types this build supports.
pub fn known_types() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(name, _, _)| *name)
}
