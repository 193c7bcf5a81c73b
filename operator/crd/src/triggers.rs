//! `spec.triggers[]`, shared by ScaledObjects and ScaledJobs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One trigger: which scaler to run and how to configure it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTriggers {
    /// The scaler, e.g. `rabbitmq`, `prometheus`, `cron`, `external`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1))]
    pub type_: String,
    /// Optional name, unique within the object; the variable name in
    /// `advanced.scalingModifiers.formula`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Scaler settings. Keys ending in `FromEnv` name an environment variable of the scale
    /// target's container whose value is used instead.
    pub metadata: BTreeMap<String, String>,
    /// Where the scaler's secrets come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<AuthenticationRef>,
    /// HPA target type of this trigger's metric; `AverageValue` when unset. `Utilization` is
    /// only valid for `cpu` and `memory`. Not allowed on ScaledJobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<MetricTargetType>,
    /// Serve the HPA's metric requests from the last polling cycle instead of querying the
    /// source again. Not allowed for `cpu`, `memory` and `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cached_metrics: Option<bool>,
}

impl ScaleTriggers {
    /// The HPA target type, with KEDA's default.
    pub fn metric_type(&self) -> MetricTargetType {
        self.metric_type.unwrap_or_default()
    }

    pub fn use_cached_metrics(&self) -> bool {
        self.use_cached_metrics.unwrap_or(false)
    }
}

/// The autoscaling/v2 metric target types KEDA lets a trigger choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MetricTargetType {
    #[default]
    AverageValue,
    Value,
    Utilization,
}

impl MetricTargetType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AverageValue => "AverageValue",
            Self::Value => "Value",
            Self::Utilization => "Utilization",
        }
    }
}

/// A reference to a TriggerAuthentication (same namespace) or a ClusterTriggerAuthentication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    pub name: String,
    /// `TriggerAuthentication` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AuthenticationKind>,
}

impl AuthenticationRef {
    pub fn kind(&self) -> AuthenticationKind {
        self.kind.unwrap_or_default()
    }
}

/// The two kinds an `authenticationRef` may point at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AuthenticationKind {
    #[default]
    TriggerAuthentication,
    ClusterTriggerAuthentication,
}

/// Per-metric activity from the last scale-loop cycle (`status.triggersActivity`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerActivityStatus {
    pub is_active: bool,
}
