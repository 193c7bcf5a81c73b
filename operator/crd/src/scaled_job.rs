//! `ScaledJob`: runs one Kubernetes Job per batch of pending events.

#![allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) of the CRD derive repeats the same keys"
)]

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::scaled_object::{DEFAULT_MAX_REPLICA_COUNT, DEFAULT_POLLING_INTERVAL};
use crate::triggers::{ScaleTriggers, TriggerActivityStatus};

/// Default for both job history limits.
pub const DEFAULT_JOBS_HISTORY_LIMIT: i32 = 100;

/// How a ScaledJob creates Jobs.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledJob",
    namespaced,
    status = "ScaledJobStatus",
    shortname = "sj",
    derive = "PartialEq",
    doc = "ScaledJob creates Kubernetes Jobs from a template as events wait in a source, up to maxReplicaCount running at once.",
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
pub struct ScaledJobSpec {
    /// The Job to create for each batch of events.
    #[schemars(schema_with = "crate::schema::job_spec")]
    pub job_target_ref: JobSpec,
    /// Seconds between two evaluations of the triggers (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,
    /// Finished Jobs kept (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub successful_jobs_history_limit: Option<i32>,
    /// Failed Jobs kept (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failed_jobs_history_limit: Option<i32>,
    /// Deprecated: use `rollout.strategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<RolloutStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Container whose environment resolves `*FromEnv` metadata; the first one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
    /// Jobs kept running even without events (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replica_count: Option<i32>,
    /// Most Jobs running at once (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_strategy: Option<ScalingStrategy>,
    /// What feeds the scaling decisions; at least one. `metricType` is not allowed here.
    #[schemars(length(min = 1))]
    pub triggers: Vec<ScaleTriggers>,
}

impl ScaledJobSpec {
    pub fn polling_interval(&self) -> i32 {
        self.polling_interval.unwrap_or(DEFAULT_POLLING_INTERVAL)
    }

    pub fn successful_jobs_history_limit(&self) -> i32 {
        self.successful_jobs_history_limit
            .unwrap_or(DEFAULT_JOBS_HISTORY_LIMIT)
    }

    pub fn failed_jobs_history_limit(&self) -> i32 {
        self.failed_jobs_history_limit
            .unwrap_or(DEFAULT_JOBS_HISTORY_LIMIT)
    }

    /// Effective minimum: `min(minReplicaCount, maxReplicaCount)`.
    pub fn min_replica_count(&self) -> i32 {
        self.min_replica_count
            .unwrap_or(0)
            .min(self.max_replica_count())
    }

    /// `maxReplicaCount`, or 100.
    pub fn max_replica_count(&self) -> i32 {
        self.max_replica_count.unwrap_or(DEFAULT_MAX_REPLICA_COUNT)
    }

    /// The rollout strategy, preferring `rollout.strategy` over the deprecated field.
    pub fn rollout_strategy(&self) -> Option<RolloutStrategy> {
        self.rollout
            .as_ref()
            .and_then(|r| r.strategy)
            .or(self.rollout_strategy)
    }
}

/// What happens to running Jobs when the ScaledJob changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RolloutStrategy {
    // Keep running Jobs; new Jobs use the new template.
    Gradual,
    // Delete Jobs created from an older generation.
    Immediate,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RolloutStrategy>,
    /// How deleted Jobs' pods go (`background` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<PropagationPolicy>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PropagationPolicy {
    Foreground,
    #[default]
    Background,
}

/// How many Jobs to create per cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStrategy {
    /// `default` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ScalingStrategyKind>,
    /// For `custom`: subtracted from the queue length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_queue_length_deduction: Option<i32>,
    /// For `custom`: the share of running Jobs subtracted, a number written as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_running_job_percentage: Option<String>,
    /// Pod condition types that must all be true for a Job to count as no longer pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_pod_conditions: Option<Vec<String>>,
    /// How several triggers' queue lengths combine (`max` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_scalers_calculation: Option<MultipleScalersCalculation>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ScalingStrategyKind {
    #[default]
    Default,
    Custom,
    Accurate,
    Eager,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MultipleScalersCalculation {
    Min,
    Avg,
    Sum,
    #[default]
    Max,
}

/// What the operator observed and decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Legacy field kept for compatibility (KEDA writes it with a capital `P`).
    #[serde(rename = "Paused", default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_metric_names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_activity: Option<BTreeMap<String, TriggerActivityStatus>>,
}
