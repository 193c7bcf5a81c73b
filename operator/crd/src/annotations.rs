//! Annotation, label and finalizer keys KEDA users already put on their objects.

/// Pauses a ScaledObject or ScaledJob: the scale loop stops and (for a ScaledObject) the HPA is
/// removed, replicas stay where they are. A value that does not parse as a bool counts as `true`.
pub const PAUSED_ANNOTATION: &str = "autoscaling.keda.sh/paused";
/// Pauses a ScaledObject at the given replica count; its presence alone pauses.
pub const PAUSED_REPLICAS_ANNOTATION: &str = "autoscaling.keda.sh/paused-replicas";
/// Blocks scale-in (HPA scaleDown disabled, no scale to zero or idle) while scaling out goes on.
pub const PAUSED_SCALE_IN_ANNOTATION: &str = "autoscaling.keda.sh/paused-scale-in";
/// Blocks scale-out (HPA scaleUp disabled, no scale from zero) while scaling in goes on.
pub const PAUSED_SCALE_OUT_ANNOTATION: &str = "autoscaling.keda.sh/paused-scale-out";
/// Treats the ScaledObject as active whatever its triggers say.
pub const FORCE_ACTIVATION_ANNOTATION: &str = "autoscaling.keda.sh/force-activation";
/// With `advanced.horizontalPodAutoscalerConfig.name`, lets a ScaledObject adopt an existing HPA.
pub const TRANSFER_HPA_OWNERSHIP_ANNOTATION: &str = "scaledobject.keda.sh/transfer-hpa-ownership";
/// On a foreign HPA, `"false"` tells admission validation to ignore it.
pub const VALIDATIONS_HPA_OWNERSHIP_ANNOTATION: &str = "validations.keda.sh/hpa-ownership";
/// Comma-separated ScaledObject label keys not copied to its HPA.
pub const HPA_EXCLUDED_LABELS_ANNOTATION: &str = "scaledobject.keda.sh/hpa-excluded-labels";
/// Comma-separated ScaledJob label keys not copied to its Jobs.
pub const JOB_EXCLUDED_LABELS_ANNOTATION: &str = "scaledjob.keda.sh/job-excluded-labels";
/// On a Job, the ScaledJob generation it was created from (drives rollouts).
pub const SCALED_JOB_GENERATION_ANNOTATION: &str = "scaledjob.keda.sh/generation";

/// Label on a ScaledObject and its HPA, and the external metric selector key.
pub const SCALED_OBJECT_NAME_LABEL: &str = "scaledobject.keda.sh/name";
/// Label on the Jobs (and their pod templates) a ScaledJob created.
pub const SCALED_JOB_NAME_LABEL: &str = "scaledjob.keda.sh/name";

/// Finalizer on ScaledObjects, ScaledJobs and trigger authentications.
pub const FINALIZER: &str = "finalizer.keda.sh";

/// Reads a bool-ish annotation the way KEDA does: absent is `false`, a value that is not a
/// Go-style bool (`1`, `t`, `true`, `0`, `f`, `false`, in any of their usual cases) is `true`.
pub fn bool_annotation(value: Option<&str>) -> bool {
    match value {
        None | Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::bool_annotation;

    #[test]
    fn bool_annotations_follow_go_parsing_and_default_to_true() {
        assert!(!bool_annotation(None));
        for falsy in ["0", "f", "F", "false", "FALSE", "False"] {
            assert!(!bool_annotation(Some(falsy)), "{falsy}");
        }
        for truthy in ["1", "t", "true", "TRUE", "yes", "", "paused"] {
            assert!(bool_annotation(Some(truthy)), "{truthy:?}");
        }
    }
}
