//! Worked examples of the Kubernetes HPA documentation and the controller's edge cases.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;

use super::*;
use serde_json::json;

const TOL: Tolerances = Tolerances::uniform(DEFAULT_TOLERANCE);

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

fn behavior(spec: serde_json::Value) -> HorizontalPodAutoscalerBehavior {
    serde_json::from_value(spec).unwrap()
}

fn ready(samples: &[(i64, i64)]) -> PodMetrics {
    let ready = samples
        .iter()
        .map(|&(usage, request)| PodSample::new(usage, request));
    PodMetrics {
        ready: ready.collect(),
        ..PodMetrics::default()
    }
}

/// Runs one sync on `state` with bounds [1, 100] and returns the desired replicas.
fn sync(
    state: &mut HpaState,
    t: u64,
    current: i32,
    proposed: i32,
    spec: &HorizontalPodAutoscalerBehavior,
) -> i32 {
    state
        .normalize(at(t), current, proposed, 1, 100, Some(spec))
        .desired_replicas
}

#[test]
fn docs_example_200m_over_100m_doubles_one_replica_to_two() {
    assert_eq!(
        pods_average_value_replicas(1, &ready(&[(200, 0)]), 100, TOL),
        Ok(2)
    );
}

#[test]
fn docs_example_50m_over_100m_halves_two_replicas_to_one() {
    let pods = ready(&[(50, 0), (50, 0)]);
    assert_eq!(pods_average_value_replicas(2, &pods, 100, TOL), Ok(1));
}

#[test]
fn tolerance_keeps_replicas_at_ratio_1_05_and_scales_at_1_11() {
    let run = |usage| value_replicas(10, 10, &[usage], 100, TOL);
    assert_eq!(run(105), Ok(10));
    assert_eq!(
        run(110),
        Ok(10),
        "the boundary itself is still within tolerance"
    );
    assert_eq!(run(111), Ok(12));
    assert_eq!(run(95), Ok(10));
    assert_eq!(run(89), Ok(9));
}

#[test]
fn per_direction_tolerance_comes_from_behavior_quantities() {
    let spec = behavior(json!({
        "scaleUp": { "tolerance": "0.2" },
        "scaleDown": { "tolerance": "50m" }
    }));
    let tolerances = Tolerances::from_behavior(Some(&spec), DEFAULT_TOLERANCE);
    assert_eq!(
        tolerances,
        Tolerances {
            scale_up: 0.2,
            scale_down: 0.05
        }
    );
    // With 20 ready pods the default 10% would give 23 and 20 instead.
    assert_eq!(value_replicas(20, 20, &[115], 100, tolerances), Ok(20));
    assert_eq!(value_replicas(20, 20, &[94], 100, tolerances), Ok(19));
    assert_eq!(value_replicas(20, 20, &[115], 100, TOL), Ok(23));
    assert_eq!(value_replicas(20, 20, &[94], 100, TOL), Ok(20));
    assert_eq!(
        Tolerances::from_behavior(None, 0.3),
        Tolerances::uniform(0.3)
    );
}

#[test]
fn external_average_value_queue_of_30_with_target_5_asks_for_6() {
    assert_eq!(average_value_replicas(2, &[30_000], 5_000, TOL), Ok(6));
    assert_eq!(average_value_replicas(6, &[30_000], 5_000, TOL), Ok(6));
    assert_eq!(average_value_replicas(0, &[30_000], 5_000, TOL), Ok(6));
    // Series are summed: 30 over 5 replicas is 1.2 of the target, outside tolerance.
    assert_eq!(
        average_value_replicas(5, &[12_000, 18_000], 5_000, TOL),
        Ok(6)
    );
    assert_eq!(average_value_replicas(5, &[0], 5_000, TOL), Ok(0));
}

#[test]
fn external_value_target_multiplies_ready_pods_by_the_ratio() {
    // 150 against a target of 100: ratio 1.5.
    let values = [100_000, 50_000];
    assert_eq!(value_replicas(3, 3, &values, 100_000, TOL), Ok(5));
    assert_eq!(value_replicas(3, 2, &values, 100_000, TOL), Ok(3));
    assert_eq!(value_replicas(0, 0, &values, 100_000, TOL), Ok(2));
    assert_eq!(value_replicas(0, 0, &[0], 100_000, TOL), Ok(0));
    assert_eq!(
        value_replicas(3, 3, &values, 0, TOL),
        Err(MetricError::NonPositiveTarget)
    );
}

#[test]
fn walkthrough_cpu_at_305_percent_of_a_50_percent_target_scales_one_pod_to_7() {
    assert_eq!(
        utilization_replicas(1, &ready(&[(610, 200)]), 50, TOL),
        Ok(7)
    );
    // Under the default behavior it takes two syncs: 1 + 4 pods, then the rest.
    let mut state = HpaState::new();
    assert_eq!(
        state.normalize(at(0), 1, 7, 1, 10, None).desired_replicas,
        5
    );
    assert_eq!(
        state.normalize(at(15), 5, 7, 1, 10, None).desired_replicas,
        7
    );
}

#[test]
fn utilization_is_a_ratio_of_sums_truncated_to_whole_percent() {
    // 100m of 300m is 33%, not 33.3%: 33 / 50 = 0.66 and ceil(0.66 * 3) = 2.
    let pods = ready(&[(100, 100), (0, 100), (0, 100)]);
    assert_eq!(utilization_replicas(3, &pods, 50, TOL), Ok(2));
    let no_requests = ready(&[(100, 0)]);
    assert_eq!(
        utilization_replicas(1, &no_requests, 50, TOL),
        Err(MetricError::NoRequests)
    );
}

#[test]
fn missing_pods_count_as_full_request_on_scale_down() {
    let mut pods = ready(&[(100, 1000), (100, 1000), (100, 1000)]);
    // Ready pods alone: 10% against 50% gives ceil(0.2 * 3) = 1.
    assert_eq!(utilization_replicas(4, &pods, 50, TOL), Ok(1));
    // The missing pod at 100%: (300 + 1000) / 4000 = 32%, ceil(0.64 * 4) = 3.
    pods.missing_requests_milli = vec![1000];
    assert_eq!(utilization_replicas(4, &pods, 50, TOL), Ok(3));
}

#[test]
fn missing_pods_never_turn_a_scale_up_into_a_scale_down() {
    // One ready pod at 150% of a 100% target would alone propose ceil(1.5) = 2 of 4.
    let mut pods = ready(&[(1500, 1000)]);
    pods.missing_requests_milli = vec![1000; 3];
    assert_eq!(utilization_replicas(4, &pods, 100, TOL), Ok(4));
}

#[test]
fn unready_pods_count_as_idle_on_scale_up() {
    let mut pods = ready(&[(800, 1000), (800, 1000)]);
    // Ready pods alone: 80% against 50% gives ceil(1.6 * 2) = 4.
    assert_eq!(utilization_replicas(3, &pods, 50, TOL), Ok(4));
    // The unready pod at 0%: 1600 / 3000 = 53%, ratio 1.06, within tolerance.
    pods.unready_requests_milli = vec![1000];
    assert_eq!(utilization_replicas(3, &pods, 50, TOL), Ok(3));
}

#[test]
fn missing_pods_sit_at_the_target_for_average_value_scale_down() {
    let mut pods = ready(&[(10, 0), (10, 0), (10, 0)]);
    pods.missing_requests_milli = vec![0];
    // (30 + 100) / 4 = 32, ratio 0.32, ceil(1.28) = 2; ready pods alone would say 1.
    assert_eq!(pods_average_value_replicas(4, &pods, 100, TOL), Ok(2));
    let none = PodMetrics::default();
    assert_eq!(
        pods_average_value_replicas(4, &none, 100, TOL),
        Err(MetricError::NoPodMetrics)
    );
}

#[test]
fn combined_metrics_take_the_maximum_and_refuse_to_shrink_on_partial_data() {
    let bad = Err(MetricError::NoPodMetrics);
    let invalid = |invalid, total| Err(MetricError::InvalidMetrics { invalid, total });
    assert_eq!(combine_proposals(5, &[Ok(3), Ok(7)]), Ok(7));
    assert_eq!(combine_proposals(5, &[Ok(3), Ok(7), bad]), Ok(7));
    assert_eq!(combine_proposals(5, &[Ok(5), bad]), Ok(5));
    assert_eq!(combine_proposals(5, &[Ok(3), bad]), invalid(1, 2));
    assert_eq!(combine_proposals(5, &[bad, bad]), invalid(2, 2));
    assert_eq!(combine_proposals(5, &[]), invalid(0, 0));
}

fn scale_up_policies(select: &str) -> HorizontalPodAutoscalerBehavior {
    behavior(json!({ "scaleUp": { "selectPolicy": select, "policies": [
        { "type": "Pods", "value": 4, "periodSeconds": 60 },
        { "type": "Percent", "value": 100, "periodSeconds": 60 }
    ]}}))
}

#[test]
fn scale_up_policies_pods_4_and_percent_100_allow_10_with_max_and_9_with_min() {
    let max = scale_up_policies("Max");
    let out = HpaState::new().normalize(at(0), 5, 20, 1, 100, Some(&max));
    assert_eq!(
        (out.desired_replicas, out.limit),
        (10, ScalingLimitReason::ScaleUpLimit)
    );
    assert!(out.scaling_limited);
    assert_eq!(out.limit.to_string(), "ScaleUpLimit");
    let min = scale_up_policies("Min");
    assert_eq!(sync(&mut HpaState::new(), 0, 5, 20, &min), 9);
}

#[test]
fn scale_up_budget_is_spent_until_the_policy_period_passes() {
    let spec = scale_up_policies("Max");
    let mut state = HpaState::new();
    assert_eq!(sync(&mut state, 0, 5, 20, &spec), 10);
    // 30 s later the period still began at 5 replicas, so the ceiling is still 10.
    let out = state.normalize(at(30), 10, 20, 1, 100, Some(&spec));
    assert_eq!(
        (out.desired_replicas, out.limit),
        (10, ScalingLimitReason::ScaleUpLimit)
    );
    // Once the event is 60 s old the period begins at 10: max(14, 20) = 20.
    let out = state.normalize(at(60), 10, 20, 1, 100, Some(&spec));
    assert_eq!(
        (out.desired_replicas, out.limit),
        (20, ScalingLimitReason::DesiredWithinRange)
    );
}

#[test]
fn default_behavior_adds_four_pods_or_doubles_every_15_seconds() {
    let mut state = HpaState::new();
    assert_eq!(
        state.normalize(at(0), 1, 10, 1, 100, None).desired_replicas,
        5
    );
    assert_eq!(
        state
            .normalize(at(10), 5, 10, 1, 100, None)
            .desired_replicas,
        5
    );
    assert_eq!(
        state
            .normalize(at(15), 5, 10, 1, 100, None)
            .desired_replicas,
        10
    );
}

#[test]
fn scale_down_stabilization_keeps_the_highest_recommendation_of_the_last_300_seconds() {
    let spec = behavior(json!({ "scaleDown": { "stabilizationWindowSeconds": 300 } }));
    let mut state = HpaState::new();
    assert_eq!(sync(&mut state, 0, 10, 10, &spec), 10);
    let out = state.normalize(at(60), 10, 8, 1, 100, Some(&spec));
    assert_eq!(out.desired_replicas, 10);
    assert_eq!(out.stabilization, StabilizationReason::ScaleDownStabilized);
    assert_eq!(sync(&mut state, 120, 10, 5, &spec), 10);
    assert_eq!(sync(&mut state, 299, 10, 5, &spec), 10);
    // The 10 from t0 has left the window; the 8 from t0+60 is now the highest.
    assert_eq!(sync(&mut state, 300, 10, 5, &spec), 8);
    assert_eq!(sync(&mut state, 360, 8, 5, &spec), 5);
}

#[test]
fn scale_up_stabilization_keeps_the_lowest_recent_recommendation() {
    let spec = behavior(json!({ "scaleUp": { "stabilizationWindowSeconds": 60 } }));
    let mut state = HpaState::new();
    assert_eq!(sync(&mut state, 0, 2, 2, &spec), 2);
    let out = state.normalize(at(30), 2, 6, 1, 100, Some(&spec));
    let expected = (2, StabilizationReason::ScaleUpStabilized);
    assert_eq!((out.desired_replicas, out.stabilization), expected);
    assert_eq!(sync(&mut state, 60, 2, 6, &spec), 6);
}

#[test]
fn docs_scale_down_policies_remove_8_of_80_then_8_of_72_then_4_below_40() {
    let spec = behavior(json!({ "scaleDown": { "policies": [
        { "type": "Pods", "value": 4, "periodSeconds": 60 },
        { "type": "Percent", "value": 10, "periodSeconds": 60 }
    ]}}));
    let mut state = HpaState::new();
    let out = state.normalize(at(0), 80, 10, 1, 100, Some(&spec));
    assert_eq!(
        (out.desired_replicas, out.limit),
        (72, ScalingLimitReason::ScaleDownLimit)
    );
    // Within the same minute the 8 already removed use up the budget.
    assert_eq!(sync(&mut state, 15, 72, 10, &spec), 72);
    // Next minute: 10% of 72 is 7.2, rounded up to 8 removed.
    assert_eq!(sync(&mut state, 60, 72, 10, &spec), 64);
    // Below 40 replicas the Pods policy allows the larger change.
    assert_eq!(sync(&mut HpaState::new(), 0, 30, 10, &spec), 26);
}

#[test]
fn docs_limit_scale_down_rate_to_10_percent_and_to_5_pods_with_select_min() {
    let percent = behavior(json!({ "scaleDown": { "policies": [
        { "type": "Percent", "value": 10, "periodSeconds": 60 }
    ]}}));
    assert_eq!(sync(&mut HpaState::new(), 0, 10, 1, &percent), 9);
    let with_min = behavior(json!({ "scaleDown": { "selectPolicy": "Min", "policies": [
        { "type": "Percent", "value": 10, "periodSeconds": 60 },
        { "type": "Pods", "value": 5, "periodSeconds": 60 }
    ]}}));
    assert_eq!(sync(&mut HpaState::new(), 0, 100, 1, &with_min), 95);
    assert_eq!(sync(&mut HpaState::new(), 0, 30, 1, &with_min), 27);
}

#[test]
fn disabled_scale_down_keeps_replicas_even_when_the_proposal_is_lower() {
    let spec = behavior(json!({ "scaleDown": { "selectPolicy": "Disabled" } }));
    let mut state = HpaState::new();
    for t in [0, 600, 1200] {
        let out = state.normalize(at(t), 10, 2, 1, 100, Some(&spec));
        let expected = (10, ScalingLimitReason::ScaleDownLimit, true);
        assert_eq!(
            (out.desired_replicas, out.limit, out.scaling_limited),
            expected
        );
    }
    assert!(state.scale_down_events.is_empty());
    assert_eq!(
        sync(&mut state, 1800, 10, 12, &spec),
        12,
        "scale-up is unaffected"
    );
}

#[test]
fn bounds_clamp_with_too_many_and_too_few_replicas() {
    let out = HpaState::new().normalize(at(0), 5, 20, 1, 8, None);
    assert_eq!(
        (out.desired_replicas, out.limit),
        (8, ScalingLimitReason::TooManyReplicas)
    );
    let out = HpaState::new().normalize(at(0), 5, 1, 3, 8, None);
    assert_eq!(
        (out.desired_replicas, out.limit),
        (3, ScalingLimitReason::TooFewReplicas)
    );
    let out = HpaState::new().normalize(at(0), 5, 6, 3, 8, None);
    let expected = (6, ScalingLimitReason::DesiredWithinRange, false);
    assert_eq!(
        (out.desired_replicas, out.limit, out.scaling_limited),
        expected
    );
}

#[test]
fn reconcile_settles_bounds_and_pause_without_metrics_then_combines_proposals() {
    let mut state = HpaState::new();
    let out = state.reconcile(at(0), 12, 1, 10, None, &[]).unwrap();
    assert_eq!(
        (out.desired_replicas, out.limit),
        (10, ScalingLimitReason::TooManyReplicas)
    );
    let out = state.reconcile(at(0), 0, 1, 10, None, &[]).unwrap();
    assert_eq!(
        (out.desired_replicas, out.limit),
        (0, ScalingLimitReason::ScalingDisabled)
    );
    let metrics = [average_value_replicas(2, &[30_000], 5_000, TOL), Ok(3)];
    assert_eq!(
        state
            .reconcile(at(0), 2, 1, 10, None, &metrics)
            .unwrap()
            .desired_replicas,
        6
    );
    let failed = [Err(MetricError::NoPodMetrics)];
    assert!(state.reconcile(at(15), 6, 1, 10, None, &failed).is_err());
}

#[test]
fn history_is_pruned_to_the_longest_window_and_period() {
    let mut state = HpaState::new();
    let mut current = 1;
    for step in 0..200 {
        let proposal = if step % 2 == 0 { 20 } else { 1 };
        current = state
            .normalize(at(step * 15), current, proposal, 1, 20, None)
            .desired_replicas;
    }
    // A 300 s window at one sync per 15 s; 15 s policy periods.
    assert!(
        state.recommendations.len() <= 20,
        "{}",
        state.recommendations.len()
    );
    assert!(state.scale_up_events.len() <= 1 && state.scale_down_events.len() <= 1);
}
