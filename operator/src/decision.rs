//! The scale loop's decision: given what the triggers said and how many replicas the target
//! has, what to do. KEDA moves a workload only between zero (or `idleReplicaCount`) and its
//! minimum; the HPA does everything between 1 and the maximum.

use jiff::{SignedDuration, Timestamp};

/// What one polling cycle observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// Any trigger active (fallback counts as active), or `force-activation`.
    pub active: bool,
    /// A trigger failed and fallback did not cover it.
    pub error: bool,
    /// The target's replica count now.
    pub current: i32,
    pub now: Timestamp,
}

/// The ScaledObject settings the decision depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `minReplicaCount` (0 when unset).
    pub min: i32,
    pub idle: Option<i32>,
    /// `fallback` is set with replicas ≠ 0.
    pub fallback_set: bool,
    pub paused_scale_in: bool,
    pub paused_scale_out: bool,
    pub cooldown: SignedDuration,
    pub initial_cooldown: SignedDuration,
    pub created: Option<Timestamp>,
    pub last_active: Option<Timestamp>,
}

/// The `Active` condition to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// `ScalerActive`
    Active,
    /// `ScalerNotActive`
    NotActive,
    /// `ScalerCooldown`: inactive, waiting for the cooldown before scaling in.
    Cooldown,
}

/// A change to the `Ready` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyChange {
    /// Some triggers are active while another fails (`PartialTriggerError`, Unknown).
    PartialTriggerError,
    /// Nothing active, a trigger fails, no fallback (`TriggerError`, False).
    TriggerError,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub activity: Activity,
    /// Write the target's replicas (`/scale`).
    pub scale_to: Option<i32>,
    /// Set `status.lastActiveTime` to now.
    pub mark_active: bool,
    pub ready: Option<ReadyChange>,
}

/// KEDA's `RequestScale`: the first matching rule of each branch wins.
pub fn decide(observed: &Observation, settings: &Settings) -> Decision {
    let current = observed.current;
    let min = settings.min;
    if observed.active {
        let mut decision = Decision {
            activity: Activity::Active,
            scale_to: None,
            mark_active: false,
            ready: None,
        };
        if (settings.idle.is_some() && current < min) || current == 0 {
            if !settings.paused_scale_out {
                decision.scale_to = Some(min.max(1));
            }
            decision.mark_active = true;
        } else if observed.error {
            decision.ready = Some(ReadyChange::PartialTriggerError);
        } else {
            decision.mark_active = true;
        }
        return decision;
    }
    let mut decision = Decision {
        activity: Activity::NotActive,
        scale_to: None,
        mark_active: false,
        ready: None,
    };
    if observed.error && settings.fallback_set {
        return decision;
    }
    if observed.error {
        decision.ready = Some(ReadyChange::TriggerError);
        return decision;
    }
    let above_idle = settings.idle.is_some_and(|idle| current > idle);
    if above_idle || (current > 0 && min == 0) {
        if settings.paused_scale_in {
            return decision;
        }
        if cooldown_over(observed.now, settings) {
            decision.scale_to = Some(settings.idle.unwrap_or(min));
        } else {
            decision.activity = Activity::Cooldown;
        }
    } else if settings.idle.is_none() && current < min {
        decision.scale_to = Some(min);
    }
    decision
}

/// Scaling in is allowed once `cooldownPeriod` has passed since the last activity, or, if the
/// object was never active, once `initialCooldownPeriod` has passed since it was created.
fn cooldown_over(now: Timestamp, settings: &Settings) -> bool {
    match settings.last_active {
        Some(last) => last
            .saturating_add(settings.cooldown)
            .is_ok_and(|t| t < now),
        None => settings.created.is_none_or(|created| {
            created
                .saturating_add(settings.initial_cooldown)
                .is_ok_and(|t| t < now)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One case of `tests/fixtures/decisions.yaml`; times are seconds before "now".
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[expect(
        clippy::struct_excessive_bools,
        reason = "a fixture row mirrors the inputs"
    )]
    struct Case {
        name: String,
        active: bool,
        #[serde(default)]
        error: bool,
        current: i32,
        #[serde(default)]
        min: i32,
        idle: Option<i32>,
        #[serde(default)]
        fallback: bool,
        #[serde(default)]
        paused_scale_in: bool,
        #[serde(default)]
        paused_scale_out: bool,
        #[serde(default = "default_cooldown")]
        cooldown: i64,
        #[serde(default)]
        initial_cooldown: i64,
        #[serde(default = "default_created")]
        created_ago: i64,
        last_active_ago: Option<i64>,
        expect: Expect,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Expect {
        activity: String,
        scale_to: Option<i32>,
        #[serde(default)]
        mark_active: bool,
        ready: Option<String>,
    }

    fn default_cooldown() -> i64 {
        300
    }

    fn default_created() -> i64 {
        3600
    }

    #[test]
    fn decisions_match_the_fixture_table() {
        let cases: Vec<Case> =
            serde_yaml::from_str(include_str!("../tests/fixtures/decisions.yaml")).unwrap();
        assert!(cases.len() >= 20);
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ago = |s: i64| now.checked_sub(SignedDuration::from_secs(s)).unwrap();
        for case in cases {
            let observed = Observation {
                active: case.active,
                error: case.error,
                current: case.current,
                now,
            };
            let settings = Settings {
                min: case.min,
                idle: case.idle,
                fallback_set: case.fallback,
                paused_scale_in: case.paused_scale_in,
                paused_scale_out: case.paused_scale_out,
                cooldown: SignedDuration::from_secs(case.cooldown),
                initial_cooldown: SignedDuration::from_secs(case.initial_cooldown),
                created: Some(ago(case.created_ago)),
                last_active: case.last_active_ago.map(ago),
            };
            let decision = decide(&observed, &settings);
            let name = &case.name;
            assert_eq!(
                format!("{:?}", decision.activity),
                case.expect.activity,
                "{name}"
            );
            assert_eq!(decision.scale_to, case.expect.scale_to, "{name}");
            assert_eq!(decision.mark_active, case.expect.mark_active, "{name}");
            assert_eq!(
                decision.ready.map(|r| format!("{r:?}")),
                case.expect.ready,
                "{name}"
            );
        }
    }
}
