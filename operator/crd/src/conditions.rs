//! Status conditions with KEDA's types and reasons.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One status condition. KEDA's conditions carry no timestamps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Active`, `Fallback`, `Paused` or `HPAActive` (see [`ConditionType`]).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase reason (see [`reason`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The status of a condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

/// The condition types KEDA maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    Ready,
    Active,
    Fallback,
    Paused,
    HpaActive,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Active => "Active",
            Self::Fallback => "Fallback",
            Self::Paused => "Paused",
            Self::HpaActive => "HPAActive",
        }
    }
}

/// The reasons KEDA writes on conditions; users alert on them.
pub mod reason {
    pub const SCALED_OBJECT_READY: &str = "ScaledObjectReady";
    pub const SCALED_OBJECT_CHECK_FAILED: &str = "ScaledObjectCheckFailed";
    pub const SCALED_JOB_READY: &str = "ScaledJobReady";
    pub const SCALED_JOB_CHECK_FAILED: &str = "ScaledJobCheckFailed";
    pub const ERROR_GETTING_CURRENT_REPLICAS: &str = "ErrorGettingCurrentReplicas";
    pub const PARTIAL_TRIGGER_ERROR: &str = "PartialTriggerError";
    pub const TRIGGER_ERROR: &str = "TriggerError";
    pub const SCALER_ACTIVE: &str = "ScalerActive";
    pub const SCALER_NOT_ACTIVE: &str = "ScalerNotActive";
    pub const SCALER_COOLDOWN: &str = "ScalerCooldown";
    pub const UNKNOWN_STATE: &str = "UnknownState";
    pub const FALLBACK_EXISTS: &str = "FallbackExists";
    pub const NO_FALLBACK_FOUND: &str = "NoFallbackFound";
    pub const SCALED_OBJECT_PAUSED: &str = "ScaledObjectPaused";
    pub const SCALED_OBJECT_UNPAUSED: &str = "ScaledObjectUnpaused";
    pub const SCALED_JOB_PAUSED: &str = "ScaledJobPaused";
    pub const SCALED_JOB_UNPAUSED: &str = "ScaledJobUnpaused";
    pub const HPA_ACTIVE: &str = "HPAActive";
    pub const SCALING_DISABLED: &str = "ScalingDisabled";
    pub const HPA_METRICS_UNAVAILABLE: &str = "HPAMetricsUnavailable";
}

/// Finds a condition by type.
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}
