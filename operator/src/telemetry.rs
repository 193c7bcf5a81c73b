//! The operator's Prometheus metrics, with KEDA's published names and labels so existing
//! dashboards and alerts keep working. Every metric name lives in this file.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// KEDA's scaler labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case, reason = "label names are KEDA's")]
pub struct ScalerLabels {
    pub namespace: String,
    pub metric: String,
    pub scaledObject: String,
    /// The trigger's name, else KEDA's name for the scaler (see [`scaler_label`]).
    pub scaler: String,
    pub triggerIndex: String,
    /// `scaledobject` or `scaledjob`.
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case, reason = "label names are KEDA's")]
pub struct ObjectLabels {
    pub namespace: String,
    pub scaledObject: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case, reason = "label names are KEDA's")]
pub struct LoopLabels {
    pub namespace: String,
    pub r#type: &'static str,
    pub resource: String,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Telemetry {
    pub registry: Registry,
    pub scaler_value: Family<ScalerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub scaler_latency: Family<ScalerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub scaler_active: Family<ScalerLabels, Gauge>,
    pub scaler_errors: Family<ScalerLabels, Counter>,
    pub object_errors: Family<ObjectLabels, Counter>,
    pub object_paused: Family<ObjectLabels, Gauge>,
    pub loop_latency: Family<LoopLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keda");
        let scaler_value = Family::default();
        let scaler_latency = Family::default();
        let scaler_active = Family::default();
        let scaler_errors = Family::default();
        let object_errors = Family::default();
        let object_paused = Family::default();
        let loop_latency = Family::default();
        registry.register(
            // An Info metric gets `_info` appended: the series is `keda_build_info`.
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "scaler_metrics_value",
            "The current value for each scaler's metric that would be used by the HPA in computing the target average",
            scaler_value.clone(),
        );
        registry.register(
            "scaler_metrics_latency_seconds",
            "The latency of retrieving current metric from each scaler",
            scaler_latency.clone(),
        );
        registry.register(
            "scaler_active",
            "Activity of a scaler: 1 active, 0 not active",
            scaler_active.clone(),
        );
        registry.register(
            "scaler_detail_errors",
            "The number of errors that have occurred for each scaler",
            scaler_errors.clone(),
        );
        registry.register(
            "scaled_object_errors",
            "The number of errors that have occurred for each ScaledObject",
            object_errors.clone(),
        );
        registry.register(
            "scaled_object_paused",
            "Whether a ScaledObject is paused: 1 paused, 0 not",
            object_paused.clone(),
        );
        registry.register(
            "internal_scale_loop_latency_seconds",
            "How late the last polling cycle started compared to its schedule",
            loop_latency.clone(),
        );
        Self {
            registry,
            scaler_value,
            scaler_latency,
            scaler_active,
            scaler_errors,
            object_errors,
            object_paused,
            loop_latency,
        }
    }
}

impl Telemetry {
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// KEDA labels a scaler by the trigger's name, or else by the name of its Go type; dashboards
/// filter on those strings, so they are kept.
pub fn scaler_label(trigger_name: Option<&str>, trigger_type: &str) -> String {
    if let Some(name) = trigger_name.filter(|n| !n.is_empty()) {
        return name.to_owned();
    }
    match trigger_type {
        "cpu" | "memory" => "cpuMemoryScaler",
        "cron" => "cronScaler",
        "metrics-api" => "metricsAPIScaler",
        "kubernetes-workload" => "kubernetesWorkloadScaler",
        "external" => "externalScaler",
        "external-push" => "externalPushScaler",
        "prometheus" => "prometheusScaler",
        "rabbitmq" => "rabbitMQScaler",
        "postgresql" => "postgreSQLScaler",
        "mysql" => "mySQLScaler",
        "redis" | "redis-cluster" | "redis-sentinel" => "redisScaler",
        "redis-streams" | "redis-cluster-streams" | "redis-sentinel-streams" => {
            "redisStreamsScaler"
        }
        "nats-jetstream" => "natsJetStreamScaler",
        other => other,
    }
    .to_owned()
}
