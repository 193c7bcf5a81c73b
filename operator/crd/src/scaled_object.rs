//! `ScaledObject`: scales a Deployment, StatefulSet or any `/scale` resource, owning its HPA.

#![allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) of the CRD derive repeats the same keys"
)]

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::triggers::{ScaleTriggers, TriggerActivityStatus};

/// Default `pollingInterval`, in seconds.
pub const DEFAULT_POLLING_INTERVAL: i32 = 30;
/// Default `cooldownPeriod`, in seconds.
pub const DEFAULT_COOLDOWN_PERIOD: i32 = 300;
/// Default `maxReplicaCount`.
pub const DEFAULT_MAX_REPLICA_COUNT: i32 = 100;
/// The HPA metric name used for `advanced.scalingModifiers`.
pub const COMPOSITE_METRIC_NAME: &str = "composite-metric";

/// How a ScaledObject scales its target.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    namespaced,
    status = "ScaledObjectStatus",
    shortname = "so",
    derive = "PartialEq",
    doc = "ScaledObject scales a workload (Deployment, StatefulSet or any resource with a /scale subresource) on event-source metrics, between zero and maxReplicaCount, through an HPA it owns.",
    printcolumn(
        name = "ScaleTargetKind",
        type_ = "string",
        json_path = ".status.scaleTargetKind"
    ),
    printcolumn(
        name = "ScaleTargetName",
        type_ = "string",
        json_path = ".spec.scaleTargetRef.name"
    ),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicaCount"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicaCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Active\")].status"
    ),
    printcolumn(
        name = "Fallback",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Fallback\")].status"
    ),
    printcolumn(
        name = "Paused",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Paused\")].status"
    ),
    printcolumn(
        name = "Triggers",
        type_ = "string",
        json_path = ".status.triggersTypes"
    ),
    printcolumn(
        name = "Authentications",
        type_ = "string",
        json_path = ".status.authenticationsTypes"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? self.maxReplicaCount : 100)",
    "message": "minReplicaCount must be less than or equal to maxReplicaCount"
}]))]
pub struct ScaledObjectSpec {
    /// The workload to scale.
    pub scale_target_ref: ScaleTarget,
    /// Seconds between two evaluations of the triggers (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,
    /// Seconds after creation before the target may first be scaled to zero (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_cooldown_period: Option<i32>,
    /// Seconds since the last active trigger before scaling to `minReplicaCount` or
    /// `idleReplicaCount` (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cooldown_period: Option<i32>,
    /// Replicas while no trigger is active; must be less than `minReplicaCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub idle_replica_count: Option<i32>,
    /// Lowest replica count (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replica_count: Option<i32>,
    /// Highest replica count (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<AdvancedConfig>,
    /// What feeds the scaling decisions; at least one.
    #[schemars(length(min = 1))]
    pub triggers: Vec<ScaleTriggers>,
    /// Replicas to run while triggers keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

impl ScaledObjectSpec {
    pub fn polling_interval(&self) -> i32 {
        self.polling_interval.unwrap_or(DEFAULT_POLLING_INTERVAL)
    }

    pub fn cooldown_period(&self) -> i32 {
        self.cooldown_period.unwrap_or(DEFAULT_COOLDOWN_PERIOD)
    }

    pub fn initial_cooldown_period(&self) -> i32 {
        self.initial_cooldown_period.unwrap_or(0)
    }

    pub fn min_replica_count(&self) -> i32 {
        self.min_replica_count.unwrap_or(0)
    }

    /// `maxReplicaCount`, or 100.
    pub fn max_replica_count(&self) -> i32 {
        self.max_replica_count.unwrap_or(DEFAULT_MAX_REPLICA_COUNT)
    }

    /// The HPA's `minReplicas`: `minReplicaCount` when positive, else 1 (an HPA cannot go to 0).
    pub fn hpa_min_replicas(&self) -> i32 {
        match self.min_replica_count {
            Some(n) if n > 0 => n,
            _ => 1,
        }
    }

    pub fn hpa_config(&self) -> Option<&HorizontalPodAutoscalerConfig> {
        self.advanced
            .as_ref()?
            .horizontal_pod_autoscaler_config
            .as_ref()
    }

    /// The scaling modifiers, when any field of them is set.
    pub fn scaling_modifiers(&self) -> Option<&ScalingModifiers> {
        self.advanced
            .as_ref()?
            .scaling_modifiers
            .as_ref()
            .filter(|m| **m != ScalingModifiers::default())
    }

    pub fn restore_to_original_replica_count(&self) -> bool {
        self.advanced
            .as_ref()
            .and_then(|a| a.restore_to_original_replica_count)
            .unwrap_or(false)
    }
}

/// The object a ScaledObject scales.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    #[schemars(length(min = 1))]
    pub name: String,
    /// `apps/v1` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `Deployment` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Container whose environment resolves `*FromEnv` metadata; the first one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
}

impl ScaleTarget {
    pub fn api_version(&self) -> &str {
        self.api_version
            .as_deref()
            .filter(|v| !v.is_empty())
            .unwrap_or("apps/v1")
    }

    pub fn kind(&self) -> &str {
        self.kind
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or("Deployment")
    }
}

/// Advanced scaling options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<HorizontalPodAutoscalerConfig>,
    /// On deletion, scale the target back to `status.originalReplicaCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_to_original_replica_count: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_modifiers: Option<ScalingModifiers>,
}

/// Settings of the HPA the ScaledObject owns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscalerConfig {
    /// HPA name; `keda-hpa-<scaledobject>` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Copied verbatim into the HPA's `spec.behavior`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::hpa_behavior")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// Combines the triggers' metrics into one with a formula.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingModifiers {
    /// An expression over trigger names, e.g. `(queue + backlog) / 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
    /// Target of the composite metric, a number written as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Activation threshold of the composite metric, a number written as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_target: Option<String>,
    /// `AverageValue` (default) or `Value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<ModifierMetricType>,
}

/// The metric target types a composite metric may have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ModifierMetricType {
    #[default]
    AverageValue,
    Value,
}

/// Replicas to run when triggers keep failing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Consecutive failures after which the fallback applies.
    #[schemars(range(min = 0))]
    pub failure_threshold: i32,
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// How `replicas` combines with the current replica count (`static` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "static"))]
    pub behavior: Option<FallbackBehavior>,
}

impl Fallback {
    pub fn behavior(&self) -> FallbackBehavior {
        self.behavior.unwrap_or_default()
    }
}

/// How fallback replicas are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FallbackBehavior {
    // Exactly `fallback.replicas`.
    #[default]
    Static,
    // Keep the current replica count.
    CurrentReplicas,
    // The higher of the current count and `fallback.replicas`.
    CurrentReplicasIfHigher,
    // The lower of the current count and `fallback.replicas`.
    CurrentReplicasIfLower,
    // Let the scaling-modifiers formula see the failing trigger as `nil`.
    ScalingModifiers,
}

/// What the operator observed and decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectStatus {
    /// `group/version.Kind` of the target, e.g. `apps/v1.Deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_kind: Option<String>,
    #[serde(
        rename = "scaleTargetGVKR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scale_target_gvkr: Option<GroupVersionKindResource>,
    /// The target's replica count when keda-rs first saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replica_count: Option<i32>,
    /// Last time a trigger was active; cooldown counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<Time>,
    /// The HPA's external metric names (`s<index>-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_metric_names: Option<Vec<String>>,
    /// The HPA's resource metric names (`cpu`, `memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_metric_names: Option<Vec<String>>,
    /// `composite-metric` when scaling modifiers are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_scaler_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Per-metric failure counts, kept while a fallback is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<BTreeMap<String, HealthStatus>>,
    /// Per-metric activity from the last cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_activity: Option<BTreeMap<String, TriggerActivityStatus>>,
    /// Mirrors the `autoscaling.keda.sh/paused-replicas` annotation once applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_name: Option<String>,
    /// Comma-separated distinct trigger types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// Comma-separated distinct `authenticationRef` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
}

/// A resolved scale target type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupVersionKindResource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub resource: String,
}

/// Health of one metric, for fallback.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_failures: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HealthStatusType>,
}

/// Whether a metric's reads are succeeding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HealthStatusType {
    Happy,
    Failing,
}
