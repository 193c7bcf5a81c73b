//! Fallback: what the HPA is told while a trigger keeps failing.
//!
//! Each external metric has a failure count (`status.health`); once it exceeds
//! `fallback.failureThreshold`, the error is replaced by a synthetic value that makes the HPA
//! settle on the fallback replica count, and the trigger counts as active (so a workload at zero
//! is brought up rather than left down).

use keda_operator_crd::{Fallback, FallbackBehavior, HealthStatus, HealthStatusType, ScaledObject};

/// Why a fallback section is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FallbackError {
    #[error("fallback.failureThreshold must be 0 or more")]
    Threshold,
    #[error("fallback.replicas must be 0 or more")]
    Replicas,
    #[error("fallback needs at least one trigger other than cpu or memory")]
    OnlyResourceTriggers,
    #[error(
        "fallback with scalingModifiers needs an integer scalingModifiers.target greater than 0"
    )]
    CompositeTarget,
}

/// Checks a ScaledObject's fallback the way KEDA does; `Ok(None)` when there is none.
pub fn validate(so: &ScaledObject) -> Result<Option<&Fallback>, FallbackError> {
    let Some(fallback) = so.spec.fallback.as_ref() else {
        return Ok(None);
    };
    if fallback.failure_threshold < 0 {
        return Err(FallbackError::Threshold);
    }
    if fallback.replicas < 0 {
        return Err(FallbackError::Replicas);
    }
    match so.spec.scaling_modifiers() {
        Some(modifiers) => {
            let integer = modifiers
                .target
                .as_deref()
                .and_then(|t| t.trim().parse::<i64>().ok())
                .is_some_and(|t| t > 0);
            if !integer {
                return Err(FallbackError::CompositeTarget);
            }
        }
        None => {
            if so
                .spec
                .triggers
                .iter()
                .all(|t| t.type_ == "cpu" || t.type_ == "memory")
            {
                return Err(FallbackError::OnlyResourceTriggers);
            }
        }
    }
    Ok(Some(fallback))
}

/// Records one read of a metric in its health entry.
pub fn record(health: &mut HealthStatus, success: bool) {
    if success {
        health.number_of_failures = Some(0);
        health.status = Some(HealthStatusType::Happy);
    } else {
        health.number_of_failures = Some(health.number_of_failures.unwrap_or(0).saturating_add(1));
        health.status = Some(HealthStatusType::Failing);
    }
}

/// Whether a metric's failures have gone past the threshold.
pub fn engaged(fallback: &Fallback, health: &HealthStatus) -> bool {
    health.number_of_failures.unwrap_or(0) > fallback.failure_threshold
}

/// The replica count fallback aims for, given the current count.
pub fn replicas(fallback: &Fallback, current: i32) -> i32 {
    match fallback.behavior() {
        FallbackBehavior::Static | FallbackBehavior::ScalingModifiers => fallback.replicas,
        FallbackBehavior::CurrentReplicas => current,
        FallbackBehavior::CurrentReplicasIfHigher => current.max(fallback.replicas),
        FallbackBehavior::CurrentReplicasIfLower => current.min(fallback.replicas),
    }
}

/// The synthetic metric value that makes the HPA compute `replicas` replicas.
///
/// With an `AverageValue` target the HPA divides by the pod count itself, so the value is
/// `replicas × target`. With a `Value` target it does not, so KEDA divides by the ready pods;
/// with no ready pod there is no value that works and fallback fails (`None`).
pub fn synthetic_value(
    replicas: i32,
    target: f64,
    value_target: bool,
    ready_pods: i32,
) -> Option<f64> {
    let replicas = f64::from(replicas);
    if value_target {
        (ready_pods > 0).then(|| replicas / f64::from(ready_pods) * target)
    } else {
        Some(replicas * target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fallback(yaml: &str) -> Fallback {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn replicas_by_behavior() {
        let cases = [
            ("static", 3, 6),
            ("currentReplicas", 3, 3),
            ("currentReplicasIfHigher", 3, 6),
            ("currentReplicasIfHigher", 9, 9),
            ("currentReplicasIfLower", 9, 6),
            ("currentReplicasIfLower", 2, 2),
        ];
        for (behavior, current, expected) in cases {
            let f = fallback(&format!(
                "{{failureThreshold: 3, replicas: 6, behavior: {behavior}}}"
            ));
            assert_eq!(replicas(&f, current), expected, "{behavior} from {current}");
        }
        assert_eq!(
            replicas(&fallback("{failureThreshold: 3, replicas: 6}"), 1),
            6
        );
    }

    #[test]
    fn engages_only_past_the_threshold() {
        let f = fallback("{failureThreshold: 2, replicas: 4}");
        let mut health = HealthStatus::default();
        record(&mut health, false);
        record(&mut health, false);
        assert!(!engaged(&f, &health));
        record(&mut health, false);
        assert!(engaged(&f, &health));
        assert_eq!(health.number_of_failures, Some(3));
        record(&mut health, true);
        assert!(!engaged(&f, &health));
        assert_eq!(health.status, Some(HealthStatusType::Happy));
    }

    #[test]
    fn synthetic_values() {
        assert_eq!(synthetic_value(4, 5.0, false, 0), Some(20.0));
        assert_eq!(synthetic_value(4, 5.0, true, 2), Some(10.0));
        assert_eq!(synthetic_value(4, 5.0, true, 0), None);
    }

    fn so(yaml: &str) -> ScaledObject {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn validation() {
        let base = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a}\nspec:\n  scaleTargetRef: {name: w}\n";
        let only_cpu = so(&format!(
            "{base}  fallback: {{failureThreshold: 3, replicas: 2}}\n  triggers: [{{type: cpu, metricType: Utilization, metadata: {{value: '50'}}}}]\n"
        ));
        assert_eq!(
            validate(&only_cpu),
            Err(FallbackError::OnlyResourceTriggers)
        );
        let negative = so(&format!(
            "{base}  fallback: {{failureThreshold: -1, replicas: 2}}\n  triggers: [{{type: cron, metadata: {{}}}}]\n"
        ));
        assert_eq!(validate(&negative), Err(FallbackError::Threshold));
        let float_target = so(&format!(
            "{base}  fallback: {{failureThreshold: 3, replicas: 2}}\n  advanced: {{scalingModifiers: {{formula: a, target: '2.5'}}}}\n  triggers: [{{type: cron, name: a, metadata: {{}}}}]\n"
        ));
        assert_eq!(validate(&float_target), Err(FallbackError::CompositeTarget));
        let ok = so(&format!(
            "{base}  fallback: {{failureThreshold: 3, replicas: 2}}\n  triggers: [{{type: cron, metadata: {{}}}}]\n"
        ));
        assert_eq!(validate(&ok).unwrap().map(|f| f.replicas), Some(2));
    }
}
