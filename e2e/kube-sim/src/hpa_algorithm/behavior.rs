//! Behavior normalization (upstream `normalizeDesiredReplicasWithBehaviors`): stabilization
//! windows, rate-limiting policies and min/max bounds, with the history an HPA keeps.

use std::fmt;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior,
};

use super::numbers::{saturate_i32, to_f64, to_i64};
use super::proposals::{DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS, MetricError, combine_proposals};

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
pub(super) struct Stamped(SystemTime, i32);

/// What the HPA controller remembers about one autoscaler between syncs. Upstream keeps this
/// in memory too, so a controller restart forgets it exactly like dropping this struct.
#[derive(Clone, Debug, Default)]
pub struct HpaState {
    /// Unstabilized proposals, one per sync.
    pub(super) recommendations: Vec<Stamped>,
    /// Replicas added by each scale-up.
    pub(super) scale_up_events: Vec<Stamped>,
    /// Replicas removed by each scale-down, stored positive.
    pub(super) scale_down_events: Vec<Stamped>,
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
