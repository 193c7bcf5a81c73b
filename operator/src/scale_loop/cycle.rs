//! One polling cycle: read every trigger, decide, act, write status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keda_operator_crd::{
    ConditionStatus, ConditionType, FORCE_ACTIVATION_ANNOTATION, PAUSED_ANNOTATION,
    PAUSED_REPLICAS_ANNOTATION, PAUSED_SCALE_IN_ANNOTATION, PAUSED_SCALE_OUT_ANNOTATION,
    ScaledObject, bool_annotation, reason,
};
use kube::ResourceExt;
use serde_json::{Value, json};
use tracing::Instrument;

use super::LoopState;
use crate::context::Context;
use crate::decision::{self, Activity, Observation, ReadyChange, Settings};
use crate::fallback;
use crate::scaler_set::{ScalerSet, Trigger};
use crate::scalers::pooled::TICK;
use crate::scalers::{Reading, ScalerError};
use crate::status;
use crate::telemetry::{LoopLabels, ObjectLabels, ScalerLabels, scaler_label};

/// Runs cycles until the ScaledObject is gone or the task is aborted.
pub(super) async fn run(ctx: Arc<Context>, state: Arc<LoopState>) {
    if let Some(so) = ctx.scaled_objects.get(&state.key) {
        ctx.event(
            &so,
            false,
            "KEDAScalersStarted",
            "Started scalers watch".into(),
        )
        .await;
    }
    let mut expected = Instant::now();
    // The polling tick this cycle reads for; none for the first cycle and after a push.
    let mut tick = None;
    // Push subscriptions of the current triggers; replaced (and the old ones aborted) when the
    // triggers are rebuilt.
    let mut pushes: Option<(usize, tokio::task::JoinSet<()>)> = None;
    loop {
        let Some(so) = ctx.scaled_objects.get(&state.key) else {
            return;
        };
        let set = state.scalers();
        if pushes.as_ref().map(|(id, _)| *id) != Some(Arc::as_ptr(&set).addr()) {
            pushes = Some((Arc::as_ptr(&set).addr(), subscribe(&set, &state)));
        }
        drop(set);
        let started = Instant::now();
        ctx.telemetry
            .loop_latency
            .get_or_create(&LoopLabels {
                namespace: so.namespace().unwrap_or_default(),
                r#type: "scaledobject",
                resource: so.name_any(),
            })
            .set(started.saturating_duration_since(expected).as_secs_f64());
        let interval = Duration::from_secs(
            u64::try_from(so.spec.polling_interval())
                .unwrap_or(30)
                .max(1),
        );
        let (next, next_tick_ms) = next_tick(started, interval);
        let span = tracing::info_span!(
            "scale_cycle",
            k8s.namespace = %so.namespace().unwrap_or_default(),
            k8s.name = %so.name_any(),
        );
        let result = match tick {
            Some(tick) => {
                TICK.scope(tick, cycle(&ctx, &state, &so).instrument(span))
                    .await
            }
            None => cycle(&ctx, &state, &so).instrument(span).await,
        };
        if let Err(e) = result {
            tracing::warn!(namespace = %so.namespace().unwrap_or_default(), name = %so.name_any(), error = %e, "polling cycle failed");
        }
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {
                expected = next;
                tick = Some(next_tick_ms);
            }
            () = state.poke.notified() => {
                expected = Instant::now();
                tick = None;
            }
        }
    }
}

/// The first multiple of `interval` on the wall clock after `now`, and that multiple in
/// milliseconds since the epoch. Loops with the same polling interval read at the same moments
/// (see [`TICK`]), so triggers of different ScaledObjects that ask a shared client the same
/// question are answered by one read of the source per tick.
fn next_tick(now: Instant, interval: Duration) -> (Instant, u64) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let period = interval.as_millis().max(1);
    let wait = period - since_epoch % period;
    let at = u64::try_from(since_epoch + wait).unwrap_or(u64::MAX);
    (
        now + Duration::from_millis(u64::try_from(wait).unwrap_or(0)),
        at,
    )
}

/// The result of reading one external metric.
struct Read<'a> {
    trigger: &'a Trigger,
    metric: String,
    result: Result<Reading, ScalerError>,
    fallback: bool,
}

async fn cycle(ctx: &Context, state: &LoopState, so: &ScaledObject) -> Result<(), kube::Error> {
    let annotations = so.annotations();
    if annotations.contains_key(PAUSED_REPLICAS_ANNOTATION) || flag(so, PAUSED_ANNOTATION) {
        return Ok(());
    }
    if so.metadata.generation.unwrap_or_default() != state.started_generation {
        // The spec changed: the controller restarts the loop with the new target and triggers.
        return Ok(());
    }
    if state.needs_rebuild() {
        let previous = state.scalers();
        match ScalerSet::build(ctx, so, state.target(), Some(&previous)).await {
            Ok(set) => {
                if set.specs() != previous.specs() {
                    // New metric names or targets: the HPA must follow.
                    let _ = ctx.reconcile.unbounded_send(state.key.clone());
                }
                state.replace_scalers(set);
            }
            Err(e) => {
                tracing::warn!(name = %so.name_any(), error = %e, "could not rebuild the triggers");
            }
        }
    }
    let set = state.scalers();
    let fallback = fallback::validate(so).ok().flatten();
    let reads = read_all(ctx, state, so, &set, fallback).await;
    let mut verdict = judge(ctx, so, &set, &reads).await;
    if state.take_pushed() {
        verdict.active = true;
    }

    let mut update = status::Update::default();
    let current = match state.target().replicas().await {
        Ok(current) => current,
        Err(e) => {
            update.condition(
                ConditionType::Ready,
                ConditionStatus::False,
                reason::ERROR_GETTING_CURRENT_REPLICAS,
                &format!(
                    "Error getting the replicas of {}: {e}",
                    state.target().describe()
                ),
            );
            return update.write(&ctx.client, so).await;
        }
    };
    let now = Timestamp::now();
    let decision = decision::decide(
        &Observation {
            active: verdict.active,
            error: !verdict.errors.is_empty(),
            current,
            now,
        },
        &settings(so, fallback),
    );
    tracing::debug!(name = %so.name_any(), active = verdict.active, errors = ?verdict.errors, current, ?decision, "scale decision");
    if let Some(replicas) = decision.scale_to.filter(|r| *r != current) {
        scale(ctx, state, so, current, replicas, &verdict.active_metrics).await;
    }

    activity_conditions(&mut update, so, &decision, &verdict);
    if fallback.is_some() {
        fallback_status(ctx, &mut update, state, so, verdict.fallback_engaged).await;
    }
    if decision.mark_active {
        update.field(
            so,
            "lastActiveTime",
            serde_json::to_value(Time(now)).unwrap_or(Value::Null),
        );
    }
    if !reads.is_empty() {
        let activity: BTreeMap<String, Value> = reads
            .iter()
            .map(|r| {
                let active = r.result.as_ref().is_ok_and(|v| v.active) || r.fallback;
                (r.metric.clone(), json!({ "isActive": active }))
            })
            .collect();
        update.field(
            so,
            "triggersActivity",
            serde_json::to_value(&activity).unwrap_or(Value::Null),
        );
    }
    update.write(&ctx.client, so).await
}

/// Starts a task per push-capable trigger that pokes the loop on each activation.
fn subscribe(set: &ScalerSet, state: &Arc<LoopState>) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for trigger in &set.triggers {
        let Ok(scaler) = &trigger.scaler else {
            continue;
        };
        if let Some(mut pushes) = scaler.activity_pushes() {
            let state = state.clone();
            let wake_only = scaler.pushes_wake_only();
            tasks.spawn(async move {
                while futures::StreamExt::next(&mut pushes).await.is_some() {
                    if wake_only {
                        state.wake();
                    } else {
                        state.push_active();
                    }
                }
            });
        }
    }
    tasks
}

/// A bool-ish annotation of the ScaledObject.
fn flag(so: &ScaledObject, annotation: &str) -> bool {
    bool_annotation(so.annotations().get(annotation).map(String::as_str))
}

/// What one cycle's reads add up to.
struct Verdict {
    active: bool,
    /// Failures fallback does not cover.
    errors: Vec<String>,
    fallback_engaged: bool,
    active_metrics: Vec<String>,
}

/// Combines the reads: any active trigger (or fallback) makes the object active; with
/// scalingModifiers the formula's value against `activationTarget` decides instead.
async fn judge(ctx: &Context, so: &ScaledObject, set: &ScalerSet, reads: &[Read<'_>]) -> Verdict {
    let mut verdict = Verdict {
        active: false,
        errors: Vec::new(),
        fallback_engaged: false,
        active_metrics: Vec::new(),
    };
    let mut values: BTreeMap<String, Option<f64>> = BTreeMap::new();
    for read in reads {
        let value = match &read.result {
            Ok(reading) => {
                if reading.active {
                    verdict.active_metrics.push(read.metric.clone());
                }
                Some(reading.value)
            }
            Err(_) if read.fallback => {
                verdict.fallback_engaged = true;
                verdict.active_metrics.push(read.metric.clone());
                None
            }
            Err(e) => {
                verdict.errors.push(format!("{}: {e}", read.metric));
                None
            }
        };
        if let Some(name) = &read.trigger.name {
            values.insert(name.clone(), value);
        }
    }
    verdict.active = match &set.formula {
        Some(formula) if verdict.errors.is_empty() => {
            let activation = so
                .spec
                .scaling_modifiers()
                .and_then(|m| m.activation_target.as_deref())
                .and_then(|t| t.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            match formula.evaluate(&values) {
                Ok(Some(value)) => value > activation || verdict.fallback_engaged,
                Ok(None) => verdict.fallback_engaged,
                Err(e) => {
                    verdict
                        .errors
                        .push(format!("scalingModifiers.formula: {e}"));
                    ctx.event(so, true, "KEDAMetricSourceFailed", e.to_string())
                        .await;
                    false
                }
            }
        }
        Some(_) => false,
        None => !verdict.active_metrics.is_empty(),
    };
    if verdict.errors.is_empty() && set.triggers.iter().all(Trigger::is_resource) {
        verdict.active = true;
    }
    if flag(so, FORCE_ACTIVATION_ANNOTATION) {
        verdict.active = true;
    }
    verdict
}

/// The ScaledObject settings the decision reads.
fn settings(so: &ScaledObject, fallback: Option<&keda_operator_crd::Fallback>) -> Settings {
    let spec = &so.spec;
    Settings {
        min: spec.min_replica_count.unwrap_or(0),
        idle: spec.idle_replica_count,
        fallback_set: fallback.is_some_and(|f| f.replicas != 0),
        paused_scale_in: flag(so, PAUSED_SCALE_IN_ANNOTATION),
        paused_scale_out: flag(so, PAUSED_SCALE_OUT_ANNOTATION),
        cooldown: SignedDuration::from_secs(i64::from(spec.cooldown_period())),
        initial_cooldown: SignedDuration::from_secs(i64::from(spec.initial_cooldown_period())),
        created: so.metadata.creation_timestamp.as_ref().map(|t| t.0),
        last_active: so
            .status
            .as_ref()
            .and_then(|s| s.last_active_time.as_ref())
            .map(|t| t.0),
    }
}

/// The Active condition, and Ready when triggers fail or recover.
fn activity_conditions(
    update: &mut status::Update,
    so: &ScaledObject,
    decision: &decision::Decision,
    verdict: &Verdict,
) {
    let (active_status, active_reason, active_message) = match decision.activity {
        Activity::Active => (
            ConditionStatus::True,
            reason::SCALER_ACTIVE,
            "Scaling is performed because triggers are active",
        ),
        Activity::NotActive => (
            ConditionStatus::False,
            reason::SCALER_NOT_ACTIVE,
            "Scaling is not performed because triggers are not active",
        ),
        Activity::Cooldown => (
            ConditionStatus::False,
            reason::SCALER_COOLDOWN,
            "Scaler cooling down because triggers are not active",
        ),
    };
    update.condition(
        ConditionType::Active,
        active_status,
        active_reason,
        active_message,
    );
    let errors = verdict.errors.join("; ");
    match decision.ready {
        Some(ReadyChange::PartialTriggerError) => update.condition(
            ConditionType::Ready,
            ConditionStatus::Unknown,
            reason::PARTIAL_TRIGGER_ERROR,
            &format!("Some triggers are active, but some are failing: {errors}"),
        ),
        Some(ReadyChange::TriggerError) => update.condition(
            ConditionType::Ready,
            ConditionStatus::False,
            reason::TRIGGER_ERROR,
            &format!("Triggers defined in ScaledObject are not working correctly: {errors}"),
        ),
        None if verdict.errors.is_empty() => {
            let failing = status::get(so.status.as_ref(), ConditionType::Ready).is_some_and(|c| {
                matches!(
                    c.reason.as_deref(),
                    Some(
                        reason::TRIGGER_ERROR
                            | reason::PARTIAL_TRIGGER_ERROR
                            | reason::ERROR_GETTING_CURRENT_REPLICAS
                    )
                )
            });
            if failing {
                update.condition(
                    ConditionType::Ready,
                    ConditionStatus::True,
                    reason::SCALED_OBJECT_READY,
                    "ScaledObject is defined correctly and is ready for scaling",
                );
            }
        }
        None => {}
    }
}

/// The Fallback condition, its Events on transitions, and the metrics' health.
async fn fallback_status(
    ctx: &Context,
    update: &mut status::Update,
    state: &LoopState,
    so: &ScaledObject,
    engaged: bool,
) {
    let was = status::is_true(so.status.as_ref(), ConditionType::Fallback);
    if engaged {
        update.condition(
            ConditionType::Fallback,
            ConditionStatus::True,
            reason::FALLBACK_EXISTS,
            "At least one trigger is falling back on this scaled object",
        );
    } else {
        update.condition(
            ConditionType::Fallback,
            ConditionStatus::False,
            reason::NO_FALLBACK_FOUND,
            "No fallbacks are active on this scaled object",
        );
    }
    if was != engaged {
        let (reason, note) = if engaged {
            (
                "ScaledObjectFallbackActivated",
                "Fallback activated: triggers are failing past fallback.failureThreshold",
            )
        } else {
            (
                "ScaledObjectFallbackDeactivated",
                "Fallback deactivated: triggers are healthy again",
            )
        };
        ctx.event(so, engaged, reason, note.into()).await;
    }
    update.field(
        so,
        "health",
        serde_json::to_value(state.health()).unwrap_or(Value::Null),
    );
}

/// Reads every external metric of every trigger in parallel, records health and telemetry.
async fn read_all<'a>(
    ctx: &Context,
    state: &LoopState,
    so: &ScaledObject,
    set: &'a Arc<ScalerSet>,
    fallback: Option<&keda_operator_crd::Fallback>,
) -> Vec<Read<'a>> {
    let mut wanted = Vec::new();
    for (position, trigger) in set.triggers.iter().enumerate() {
        for spec in &trigger.specs {
            if let Some(name) = spec.external_name() {
                wanted.push((position, trigger, name.to_owned()));
            }
        }
    }
    let results =
        futures::future::join_all(wanted.iter().map(|(position, _, metric)| async move {
            let started = Instant::now();
            let result = state.read_live(set, *position, metric).await;
            (result, started.elapsed())
        }))
        .await;
    let namespace = so.namespace().unwrap_or_default();
    let mut reads = Vec::with_capacity(wanted.len());
    for ((_, trigger, metric), (result, elapsed)) in wanted.into_iter().zip(results) {
        let health = state.health_of(&metric);
        let labels = ScalerLabels {
            namespace: namespace.clone(),
            metric: metric.clone(),
            scaledObject: so.name_any(),
            scaler: scaler_label(trigger.name.as_deref(), &trigger.trigger_type),
            triggerIndex: trigger.index.to_string(),
            r#type: "scaledobject",
        };
        state.wrote_series(&labels);
        let telemetry = &ctx.telemetry;
        let engaged = match &result {
            Ok(reading) => {
                telemetry
                    .scaler_value
                    .get_or_create(&labels)
                    .set(reading.value);
                telemetry
                    .scaler_active
                    .get_or_create(&labels)
                    .set(i64::from(reading.active));
                telemetry
                    .scaler_latency
                    .get_or_create(&labels)
                    .set(elapsed.as_secs_f64());
                false
            }
            Err(e) => {
                state.request_rebuild();
                telemetry.scaler_errors.get_or_create(&labels).inc();
                telemetry
                    .object_errors
                    .get_or_create(&ObjectLabels {
                        namespace: namespace.clone(),
                        scaledObject: so.name_any(),
                    })
                    .inc();
                tracing::warn!(
                    k8s.namespace = %namespace, k8s.name = %so.name_any(),
                    trigger.index = trigger.index, trigger.type = %trigger.trigger_type,
                    metric = %metric, error = %e, category = e.category(),
                    "trigger failed"
                );
                ctx.event(so, true, "KEDAScalerFailed", format!("{metric}: {e}"))
                    .await;
                fallback.is_some_and(|f| fallback::engaged(f, &health))
            }
        };
        reads.push(Read {
            trigger,
            metric,
            result,
            fallback: engaged,
        });
    }
    reads
}

/// Writes the target's replicas, with KEDA's Events.
async fn scale(
    ctx: &Context,
    state: &LoopState,
    so: &ScaledObject,
    from: i32,
    to: i32,
    active_metrics: &[String],
) {
    let target = state.target();
    let up = to > from;
    let result = target.set_replicas(to).await;
    let (reason, note) = match (&result, up) {
        (Ok(()), true) => (
            "KEDAScaleTargetActivated",
            format!(
                "Scaled {} from {from} to {to}, triggered by {}",
                target.describe(),
                active_metrics.join(";")
            ),
        ),
        (Ok(()), false) => (
            "KEDAScaleTargetDeactivated",
            format!("Deactivated {} from {from} to {to}", target.describe()),
        ),
        (Err(e), true) => (
            "KEDAScaleTargetActivationFailed",
            format!(
                "Failed to scale {} from {from} to {to}: {e}",
                target.describe()
            ),
        ),
        (Err(e), false) => (
            "KEDAScaleTargetDeactivationFailed",
            format!(
                "Failed to deactivate {} from {from} to {to}: {e}",
                target.describe()
            ),
        ),
    };
    tracing::info!(k8s.namespace = %target.namespace, k8s.name = %so.name_any(), from, to, reason, "scaled the target");
    ctx.event(so, result.is_err(), reason, note).await;
}
