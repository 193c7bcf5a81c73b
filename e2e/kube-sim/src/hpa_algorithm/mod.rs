//! Kubernetes HPA (`autoscaling/v2`) replica arithmetic.
//!
//! kube-sim runs its own HPA loop instead of kube-controller-manager, so KEDA-driven scaling
//! only looks like a real cluster if the numbers come out the same. This module reproduces the
//! two pure halves of the upstream controller: the per-metric proposals of
//! `replica_calculator.go` and the behavior normalization of `horizontal.go` (stabilization
//! windows, rate-limiting policies, min/max bounds). The caller fetches metrics and classifies
//! pods; time is passed in, so neither tests nor the simulated clock ever sleep.
//!
//! Metric quantities are integer milli-units (`Quantity::MilliValue()` upstream): upstream
//! truncates utilizations and averages with integer division, and the truncation is visible in
//! the resulting replica counts.

use std::fmt;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior,
};

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

/// Fills the unset fields of `spec.behavior` the way the API server's defaulting and the
/// controller do. Field by field, so setting only `scaleDown.policies` keeps the 300 s window.
/// Useful on its own for writing the defaulted object back, as a real API server would.
pub fn behavior_with_defaults(
    behavior: Option<&HorizontalPodAutoscalerBehavior>,
) -> HorizontalPodAutoscalerBehavior {
    let rules = Rules::resolve(behavior);
    HorizontalPodAutoscalerBehavior {
        scale_up: Some(rules.up),
        scale_down: Some(rules.down),
    }
}

/// Both directions' rules with every default filled in.
struct Rules {
    up: HPAScalingRules,
    down: HPAScalingRules,
}

impl Rules {
    fn resolve(behavior: Option<&HorizontalPodAutoscalerBehavior>) -> Self {
        let fill = |rules: Option<&HPAScalingRules>, window, policies| {
            let mut rules = rules.cloned().unwrap_or_default();
            rules.stabilization_window_seconds.get_or_insert(window);
            rules.select_policy.get_or_insert_with(|| "Max".to_owned());
            rules.policies.get_or_insert(policies);
            rules
        };
        let up = vec![policy("Pods", 4, 15), policy("Percent", 100, 15)];
        let down = vec![policy("Percent", 100, 15)];
        Self {
            up: fill(behavior.and_then(|b| b.scale_up.as_ref()), 0, up),
            down: fill(
                behavior.and_then(|b| b.scale_down.as_ref()),
                DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS,
                down,
            ),
        }
    }
}

fn policy(type_: &str, value: i32, period_seconds: i32) -> HPAScalingPolicy {
    HPAScalingPolicy {
        type_: type_.to_owned(),
        value,
        period_seconds,
    }
}

fn window(rules: &HPAScalingRules) -> i32 {
    rules.stabilization_window_seconds.unwrap_or(0)
}

fn policies(rules: &HPAScalingRules) -> &[HPAScalingPolicy] {
    rules.policies.as_deref().unwrap_or_default()
}

/// Reason of the `AbleToScale` condition after stabilization. The variant names are the
/// upstream reason strings, which is what `Display` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StabilizationReason {
    ReadyForNewScale,
    ScaleUpStabilized,
    ScaleDownStabilized,
}

impl StabilizationReason {
    #[must_use]
    pub const fn message(self) -> &'static str {
        match self {
            Self::ReadyForNewScale => "recommended size matches current size",
            Self::ScaleUpStabilized => {
                "recent recommendations were lower than current one, applying the lowest recent recommendation"
            }
            Self::ScaleDownStabilized => {
                "recent recommendations were higher than current one, applying the highest recent recommendation"
            }
        }
    }
}

/// Reason of the `ScalingLimited` condition; variant names are the upstream reason strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalingLimitReason {
    DesiredWithinRange,
    ScaleUpLimit,
    ScaleDownLimit,
    TooManyReplicas,
    TooFewReplicas,
    /// `spec.replicas` is 0 while `minReplicas` is not: the user paused the HPA. Upstream
    /// reports this as `ScalingActive=False` rather than on `ScalingLimited`.
    ScalingDisabled,
}

impl ScalingLimitReason {
    #[must_use]
    pub const fn message(self) -> &'static str {
        match self {
            Self::DesiredWithinRange => "the desired count is within the acceptable range",
            Self::ScaleUpLimit => {
                "the desired replica count is increasing faster than the maximum scale rate"
            }
            Self::ScaleDownLimit => {
                "the desired replica count is decreasing faster than the maximum scale rate"
            }
            Self::TooManyReplicas => {
                "the desired replica count is more than the maximum replica count"
            }
            Self::TooFewReplicas => {
                "the desired replica count is less than the minimum replica count"
            }
            Self::ScalingDisabled => {
                "scaling is disabled since the replica count of the target is zero"
            }
        }
    }
}

impl fmt::Display for StabilizationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Display for ScalingLimitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Outcome of one sync's normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Normalized {
    /// What to write into the scale subresource's `spec.replicas`.
    pub desired_replicas: i32,
    /// The recommendation after stabilization, before rate limits and bounds.
    pub stabilized_replicas: i32,
    pub stabilization: StabilizationReason,
    pub limit: ScalingLimitReason,
    /// Status of the `ScalingLimited` condition: limits or bounds changed the recommendation.
    pub scaling_limited: bool,
}

/// A timestamped replica count: a recommendation, or the size of a scale event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamped(SystemTime, i32);

/// What the HPA controller remembers about one autoscaler between syncs. Upstream keeps this
/// in memory too, so a controller restart forgets it exactly like dropping this struct.
#[derive(Clone, Debug, Default)]
pub struct HpaState {
    /// Unstabilized proposals, one per sync.
    recommendations: Vec<Stamped>,
    /// Replicas added by each scale-up.
    scale_up_events: Vec<Stamped>,
    /// Replicas removed by each scale-down, stored positive.
    scale_down_events: Vec<Stamped>,
}

impl HpaState {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// One sync once the caller has the per-metric proposals, like upstream
    /// `reconcileAutoscaler`: an out-of-bounds or paused target is settled without looking at
    /// metrics; otherwise the proposals are combined and normalized. `current_replicas` is
    /// the target's `spec.replicas`.
    ///
    /// # Errors
    /// The error of [`combine_proposals`]. The state is untouched, as upstream skips scaling
    /// on such a sync.
    pub fn reconcile(
        &mut self,
        now: SystemTime,
        current_replicas: i32,
        min_replicas: i32,
        max_replicas: i32,
        behavior: Option<&HorizontalPodAutoscalerBehavior>,
        proposals: &[Result<i32, MetricError>],
    ) -> Result<Normalized, MetricError> {
        let rules = Rules::resolve(behavior);
        let bounds = (min_replicas, max_replicas);
        if let Some(settled) = self.settle_bounds(now, current_replicas, bounds, &rules) {
            return Ok(settled);
        }
        let proposed = combine_proposals(current_replicas, proposals)?;
        Ok(self.normalize_within(now, current_replicas, proposed, bounds, &rules))
    }

    /// Turns a proposal into the replica count to apply (upstream
    /// `normalizeDesiredReplicasWithBehaviors`), records the proposal, and records a scale
    /// event whenever the result differs from `current_replicas`, so the caller must apply it.
    ///
    /// An unset `behavior` means the documented defaults. Upstream instead runs a legacy path
    /// for it (scale-up capped at `max(2 * current, 4)` per sync, no scale-down rate limit),
    /// which only differs below 4 replicas at the default 15 s sync period.
    pub fn normalize(
        &mut self,
        now: SystemTime,
        current_replicas: i32,
        proposed_replicas: i32,
        min_replicas: i32,
        max_replicas: i32,
        behavior: Option<&HorizontalPodAutoscalerBehavior>,
    ) -> Normalized {
        let rules = Rules::resolve(behavior);
        let bounds = (min_replicas, max_replicas);
        self.settle_bounds(now, current_replicas, bounds, &rules)
            .unwrap_or_else(|| {
                self.normalize_within(now, current_replicas, proposed_replicas, bounds, &rules)
            })
    }

    /// The cases upstream settles before computing any metric.
    fn settle_bounds(
        &mut self,
        now: SystemTime,
        current: i32,
        (min, max): (i32, i32),
        rules: &Rules,
    ) -> Option<Normalized> {
        let (desired, limit) = if current == 0 && min != 0 {
            (0, ScalingLimitReason::ScalingDisabled)
        } else if current > max {
            (max, ScalingLimitReason::TooManyReplicas)
        } else if current < min {
            (min, ScalingLimitReason::TooFewReplicas)
        } else {
            return None;
        };
        self.prune(now, rules);
        self.record_scale(now, current, desired);
        Some(Normalized {
            desired_replicas: desired,
            stabilized_replicas: desired,
            stabilization: StabilizationReason::ReadyForNewScale,
            limit,
            scaling_limited: desired != current,
        })
    }

    fn normalize_within(
        &mut self,
        now: SystemTime,
        current: i32,
        proposed: i32,
        bounds: (i32, i32),
        rules: &Rules,
    ) -> Normalized {
        self.prune(now, rules);
        let (stabilized, stabilization) = self.stabilize(now, current, proposed, rules);
        self.recommendations.push(Stamped(now, proposed));
        let (desired, limit) = self.rate_limit(now, current, stabilized, bounds, rules);
        self.record_scale(now, current, desired);
        Normalized {
            desired_replicas: desired,
            stabilized_replicas: stabilized,
            stabilization,
            limit,
            scaling_limited: desired != stabilized,
        }
    }

    /// A scale-up takes the lowest recommendation of its window and a scale-down the highest
    /// of its own, so a single spike or dip cannot move the workload.
    fn stabilize(
        &self,
        now: SystemTime,
        current: i32,
        proposed: i32,
        rules: &Rules,
    ) -> (i32, StabilizationReason) {
        let (mut up, mut down) = (proposed, proposed);
        for &Stamped(at, value) in &self.recommendations {
            if within(at, now, window(&rules.up)) {
                up = up.min(value);
            }
            if within(at, now, window(&rules.down)) {
                down = down.max(value);
            }
        }
        let stabilized = current.max(up).min(down);
        let reason = if stabilized == proposed {
            StabilizationReason::ReadyForNewScale
        } else if proposed >= current {
            StabilizationReason::ScaleUpStabilized
        } else {
            StabilizationReason::ScaleDownStabilized
        };
        (stabilized, reason)
    }

    /// Upstream `convertDesiredReplicasWithBehaviorRate`. Bounds are only checked in the
    /// direction of travel; `settle_bounds` already ensured `min <= current <= max`.
    fn rate_limit(
        &self,
        now: SystemTime,
        current: i32,
        desired: i32,
        (min, max): (i32, i32),
        rules: &Rules,
    ) -> (i32, ScalingLimitReason) {
        if desired > current {
            // Events still inside the period can leave a negative budget; never shrink for it.
            let ceiling = self
                .policy_limit(now, current, &rules.up, true)
                .max(current);
            let (allowed, reason) = if max > ceiling {
                (ceiling, ScalingLimitReason::ScaleUpLimit)
            } else {
                (max, ScalingLimitReason::TooManyReplicas)
            };
            if desired > allowed {
                return (allowed, reason);
            }
        } else if desired < current {
            let floor = self
                .policy_limit(now, current, &rules.down, false)
                .min(current);
            let (allowed, reason) = if min < floor {
                (floor, ScalingLimitReason::ScaleDownLimit)
            } else {
                (min, ScalingLimitReason::TooFewReplicas)
            };
            if desired < allowed {
                return (allowed, reason);
            }
        }
        (desired, ScalingLimitReason::DesiredWithinRange)
    }

    /// The replica count one direction's policies allow right now: a ceiling when scaling up,
    /// a floor when scaling down.
    ///
    /// Unknown policy types are skipped and an unknown `selectPolicy` acts as `Max`; API
    /// validation rejects both, so only hand-built objects can carry them.
    fn policy_limit(
        &self,
        now: SystemTime,
        current: i32,
        rules: &HPAScalingRules,
        up: bool,
    ) -> i32 {
        let select = rules.select_policy.as_deref().unwrap_or("Max");
        // `Max` means the largest change: the highest ceiling, but the lowest floor.
        let highest = (select != "Min") == up;
        let (mut limit, pick): (i64, fn(i64, i64) -> i64) = match select {
            "Disabled" => return current,
            _ if highest => (i64::from(i32::MIN), i64::max),
            _ => (i64::from(i32::MAX), i64::min),
        };
        for policy in policies(rules) {
            let start = self.replicas_at_period_start(now, current, policy.period_seconds);
            let value = i64::from(policy.value);
            let fraction = f64::from(policy.value) / 100.0;
            let allowed = match (policy.type_.as_str(), up) {
                ("Pods", true) => start + value,
                ("Pods", false) => start - value,
                // Rounded up, or a small percentage of a small workload would never add a pod.
                ("Percent", true) => to_i64((to_f64(start) * (1.0 + fraction)).ceil()),
                // Truncated, which rounds the pods removed up: 10% of 72 removes 8.
                ("Percent", false) => to_i64(to_f64(start) * (1.0 - fraction)),
                _ => continue,
            };
            limit = pick(limit, allowed);
        }
        saturate_i32(limit)
    }

    /// The replica count when the policy period began, rebuilt from the events inside it:
    /// changes already made in a period use up that period's budget.
    fn replicas_at_period_start(&self, now: SystemTime, current: i32, period: i32) -> i64 {
        let change = |events: &[Stamped]| -> i64 {
            let recent = events.iter().filter(|e| within(e.0, now, period));
            recent.map(|e| i64::from(e.1)).sum()
        };
        i64::from(current) - change(&self.scale_up_events) + change(&self.scale_down_events)
    }

    fn record_scale(&mut self, now: SystemTime, from: i32, to: i32) {
        if to > from {
            self.scale_up_events.push(Stamped(now, to - from));
        } else if to < from {
            self.scale_down_events.push(Stamped(now, from - to));
        }
    }

    /// Drops what no window or period can see any more. Both event lists live as long as the
    /// longest period of either direction, since each direction's budget nets out both.
    fn prune(&mut self, now: SystemTime, rules: &Rules) {
        let window = window(&rules.up).max(window(&rules.down));
        let periods = policies(&rules.up).iter().chain(policies(&rules.down));
        let period = periods.map(|p| p.period_seconds).max().unwrap_or(0);
        self.recommendations.retain(|r| within(r.0, now, window));
        self.scale_up_events.retain(|e| within(e.0, now, period));
        self.scale_down_events.retain(|e| within(e.0, now, period));
    }
}

/// Strictly after `now - seconds`, like upstream's `timestamp.After(cutoff)`: a recommendation
/// exactly one window old has already left the window.
fn within(at: SystemTime, now: SystemTime, seconds: i32) -> bool {
    let span = Duration::from_secs(u64::from(seconds.max(0).unsigned_abs()));
    now.checked_sub(span).is_none_or(|cutoff| at > cutoff)
}

fn sum(values: impl Iterator<Item = i64>) -> i64 {
    values.fold(0, i64::saturating_add)
}

/// Float-to-int `as` saturates and maps NaN to 0: the sane answer for absurd ratios, where Go
/// leaves the overflow implementation-defined.
#[allow(clippy::cast_possible_truncation)]
fn ceil_to_i32(x: f64) -> i32 {
    x.ceil() as i32
}

/// Truncates toward zero like Go's integer conversion, saturating instead of overflowing.
#[allow(clippy::cast_possible_truncation)]
fn to_i64(x: f64) -> i64 {
    x as i64
}

/// Go converts milli-values to float64 the same lossy way; replica-sized values are exact.
#[allow(clippy::cast_precision_loss)]
fn to_f64(v: i64) -> f64 {
    v as f64
}

fn saturate_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
