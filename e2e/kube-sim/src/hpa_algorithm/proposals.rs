//! Per-metric replica proposals (upstream `replica_calculator.go`) and how they combine.

use std::fmt;

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

use super::numbers::{ceil_to_i32, len_i64, saturate_i32, sum, to_f64};

/// Cluster-wide default of `--horizontal-pod-autoscaler-tolerance`.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// Default of `--horizontal-pod-autoscaler-downscale-stabilization`, used when
/// `behavior.scaleDown.stabilizationWindowSeconds` is unset.
pub const DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS: i32 = 300;

/// How far the usage ratio may stray from 1.0 before the HPA reacts.
///
/// Per direction because `behavior.scale{Up,Down}.tolerance` (alpha `HPAConfigurableTolerance`
/// upstream) can override each side separately.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    pub scale_up: f64,
    pub scale_down: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self::uniform(DEFAULT_TOLERANCE)
    }
}

impl Tolerances {
    #[must_use]
    pub const fn uniform(tolerance: f64) -> Self {
        Self {
            scale_up: tolerance,
            scale_down: tolerance,
        }
    }

    /// Applies the per-direction overrides of `behavior` on top of `default`. A quantity that
    /// does not parse falls back to `default`: the API server validates the field, so only a
    /// hand-built object gets here, and failing the whole sync over it would be worse.
    #[must_use]
    pub fn from_behavior(behavior: Option<&HorizontalPodAutoscalerBehavior>, default: f64) -> Self {
        let pick = |rules: Option<&HPAScalingRules>| {
            let quantity = rules.and_then(|r| r.tolerance.as_ref());
            quantity
                .and_then(|q| parse_fraction(&q.0))
                .unwrap_or(default)
        };
        Self {
            scale_up: pick(behavior.and_then(|b| b.scale_up.as_ref())),
            scale_down: pick(behavior.and_then(|b| b.scale_down.as_ref())),
        }
    }

    /// Inclusive, as upstream: a ratio of exactly `1 + tolerance` does not scale.
    #[must_use]
    pub fn is_within(self, usage_ratio: f64) -> bool {
        (1.0 - self.scale_down) <= usage_ratio && usage_ratio <= (1.0 + self.scale_up)
    }
}

/// The subset of quantity syntax a tolerance realistically uses: "0.05", "50m", "5e-2".
fn parse_fraction(quantity: &str) -> Option<f64> {
    let q = quantity.trim();
    let value = match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => q.parse::<f64>().ok()?,
    };
    (value.is_finite() && value >= 0.0).then_some(value)
}

/// Why a metric, or the set of metrics, gave no usable proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricError {
    /// Validation forbids targets <= 0; dividing by one would ask for infinitely many pods.
    NonPositiveTarget,
    /// No ready pod reported a sample.
    NoPodMetrics,
    /// The sampled pods request nothing, so a utilization percentage is undefined.
    NoRequests,
    /// Every metric failed, or some failed while the others asked to scale down: upstream
    /// refuses to shrink a workload on partial information.
    InvalidMetrics { invalid: usize, total: usize },
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NonPositiveTarget => f.write_str("metric target must be greater than zero"),
            Self::NoPodMetrics => f.write_str("did not receive metrics for targeted pods"),
            Self::NoRequests => f.write_str("the pods with metrics request none of the resource"),
            Self::InvalidMetrics { invalid, total } => {
                write!(f, "invalid metrics ({invalid} invalid out of {total})")
            }
        }
    }
}

impl std::error::Error for MetricError {}

/// `Value` target of an Object or External metric (upstream `getUsageRatioReplicaCount`).
/// External metrics sum every series their selector matches, hence the slice.
///
/// `ready_pods` counts running, ready pods rather than replicas, so pods still starting do not
/// inflate the proposal.
///
/// # Errors
/// [`MetricError::NonPositiveTarget`].
pub fn value_replicas(
    current_replicas: i32,
    ready_pods: i32,
    values_milli: &[i64],
    target_milli: i64,
    tolerances: Tolerances,
) -> Result<i32, MetricError> {
    if target_milli <= 0 {
        return Err(MetricError::NonPositiveTarget);
    }
    let ratio = to_f64(sum(values_milli.iter().copied())) / to_f64(target_milli);
    Ok(if current_replicas == 0 {
        // No pods to multiply: the ratio itself is the answer, and skipping the tolerance lets
        // scale-from-zero react to any load at all.
        ceil_to_i32(ratio)
    } else if tolerances.is_within(ratio) {
        current_replicas
    } else {
        ceil_to_i32(ratio * f64::from(ready_pods))
    })
}

/// `AverageValue` target of an Object or External metric: the total over the target average
/// is directly the pod count, no per-pod data needed.
///
/// `status_replicas` is the target's `status.replicas`, as upstream. At zero the tolerance
/// check cannot pass (the ratio is infinite or NaN) and the plain quotient is used.
///
/// # Errors
/// [`MetricError::NonPositiveTarget`].
pub fn average_value_replicas(
    status_replicas: i32,
    values_milli: &[i64],
    target_average_milli: i64,
    tolerances: Tolerances,
) -> Result<i32, MetricError> {
    if target_average_milli <= 0 {
        return Err(MetricError::NonPositiveTarget);
    }
    let usage = to_f64(sum(values_milli.iter().copied()));
    let target = to_f64(target_average_milli);
    let ratio = usage / (target * f64::from(status_replicas));
    Ok(if tolerances.is_within(ratio) {
        status_replicas
    } else {
        ceil_to_i32(usage / target)
    })
}

/// One pod's sample and request, in milli-units of the metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodSample {
    pub usage_milli: i64,
    /// Only read for `Utilization` targets.
    pub request_milli: i64,
}

impl PodSample {
    #[must_use]
    pub const fn new(usage_milli: i64, request_milli: i64) -> Self {
        Self {
            usage_milli,
            request_milli,
        }
    }
}

/// The pods behind the scale target, grouped as upstream `groupPods` does.
///
/// Leave out pods being deleted or `Failed`. Pending pods are unready for every metric; running
/// pods count as unready only for the `cpu` resource (not Ready yet, or inside the CPU
/// initialization period), since start-up CPU says nothing about steady-state load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMetrics {
    /// Ready pods that reported a sample: the only usage that is trusted.
    pub ready: Vec<PodSample>,
    /// Requests of unready pods; their samples, if any, are discarded.
    pub unready_requests_milli: Vec<i64>,
    /// Requests of running pods that reported no sample.
    pub missing_requests_milli: Vec<i64>,
}

/// Resource metric with a `Utilization` target, in percent of the pods' requests.
///
/// Includes upstream's conservative rebalancing: pods without metrics are assumed to use
/// `max(100%, target)` of their request on a scale-down and 0% on a scale-up, unready pods are
/// assumed idle on a scale-up, and if those guesses flip the direction nothing changes.
///
/// # Errors
/// [`MetricError::NonPositiveTarget`], [`MetricError::NoPodMetrics`] or
/// [`MetricError::NoRequests`].
pub fn utilization_replicas(
    current_replicas: i32,
    pods: &PodMetrics,
    target_utilization: i32,
    tolerances: Tolerances,
) -> Result<i32, MetricError> {
    if target_utilization <= 0 {
        return Err(MetricError::NonPositiveTarget);
    }
    let fallback_percent = i64::from(target_utilization.max(100));
    rebalanced_replicas(
        current_replicas,
        pods,
        tolerances,
        |samples| utilization_ratio(samples, target_utilization),
        |request| request.saturating_mul(fallback_percent) / 100,
    )
}

/// `AverageValue` target over per-pod samples: a Pods metric, or a Resource metric with an
/// `AverageValue` target (upstream `calcPlainMetricReplicas`). Rebalances like
/// [`utilization_replicas`], except that missing pods sit exactly at the target on a
/// scale-down.
///
/// # Errors
/// [`MetricError::NonPositiveTarget`] or [`MetricError::NoPodMetrics`].
pub fn pods_average_value_replicas(
    current_replicas: i32,
    pods: &PodMetrics,
    target_average_milli: i64,
    tolerances: Tolerances,
) -> Result<i32, MetricError> {
    if target_average_milli <= 0 {
        return Err(MetricError::NonPositiveTarget);
    }
    rebalanced_replicas(
        current_replicas,
        pods,
        tolerances,
        |samples| Ok(average_ratio(samples, target_average_milli)),
        |_| target_average_milli,
    )
}

/// The algorithm shared by upstream's per-pod calculators. `ratio_of` turns samples into a
/// usage ratio; `scale_down_fill` maps a missing pod's request to its assumed usage.
fn rebalanced_replicas(
    current_replicas: i32,
    pods: &PodMetrics,
    tolerances: Tolerances,
    ratio_of: impl Fn(&[PodSample]) -> Result<f64, MetricError>,
    scale_down_fill: impl Fn(i64) -> i64,
) -> Result<i32, MetricError> {
    if pods.ready.is_empty() {
        return Err(MetricError::NoPodMetrics);
    }
    let ratio = ratio_of(&pods.ready)?;
    let scale_up_with_unready = !pods.unready_requests_milli.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && pods.missing_requests_milli.is_empty() {
        return Ok(if tolerances.is_within(ratio) {
            current_replicas
        } else {
            ceil_to_i32(ratio * to_f64(len_i64(pods.ready.len())))
        });
    }

    let idle = |request: &i64| PodSample::new(0, *request);
    let mut samples = pods.ready.clone();
    let missing = pods.missing_requests_milli.iter();
    if ratio < 1.0 {
        samples.extend(missing.map(|r| PodSample::new(scale_down_fill(*r), *r)));
    } else if ratio > 1.0 {
        samples.extend(missing.map(idle));
    }
    if scale_up_with_unready {
        samples.extend(pods.unready_requests_milli.iter().map(idle));
    }

    let new_ratio = ratio_of(&samples)?;
    let flipped = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
    if flipped || tolerances.is_within(new_ratio) {
        return Ok(current_replicas);
    }
    let new_replicas = ceil_to_i32(new_ratio * to_f64(len_i64(samples.len())));
    let wrong_way = (new_ratio < 1.0 && new_replicas > current_replicas)
        || (new_ratio > 1.0 && new_replicas < current_replicas);
    Ok(if wrong_way {
        current_replicas
    } else {
        new_replicas
    })
}

/// Upstream `GetResourceUtilizationRatio`: a ratio of sums (not a mean of per-pod ratios), the
/// utilization truncated to a whole percent before it is divided by the target.
fn utilization_ratio(samples: &[PodSample], target: i32) -> Result<f64, MetricError> {
    let usage = sum(samples.iter().map(|s| s.usage_milli));
    let requests = sum(samples.iter().map(|s| s.request_milli));
    if requests == 0 {
        return Err(MetricError::NoRequests);
    }
    let utilization = saturate_i32(usage.saturating_mul(100) / requests);
    Ok(f64::from(utilization) / f64::from(target))
}

/// Upstream `GetMetricUsageRatio`: the per-pod average is truncated before dividing.
fn average_ratio(samples: &[PodSample], target: i64) -> f64 {
    let average = sum(samples.iter().map(|s| s.usage_milli)) / len_i64(samples.len()).max(1);
    to_f64(average) / to_f64(target)
}

/// Combines per-metric proposals like upstream `computeReplicasForMetrics`: the largest valid
/// proposal wins, sizing the workload for its most demanding metric. `spec_replicas` is the
/// target's `spec.replicas`.
///
/// # Errors
/// [`MetricError::InvalidMetrics`] when no proposal is valid, or when some metric failed and
/// the valid ones would go below `spec_replicas`.
pub fn combine_proposals(
    spec_replicas: i32,
    proposals: &[Result<i32, MetricError>],
) -> Result<i32, MetricError> {
    let total = proposals.len();
    let invalid = proposals.iter().filter(|p| p.is_err()).count();
    match proposals.iter().filter_map(|p| p.as_ref().ok()).max() {
        Some(&best) if invalid == 0 || best >= spec_replicas => Ok(best),
        _ => Err(MetricError::InvalidMetrics { invalid, total }),
    }
}
