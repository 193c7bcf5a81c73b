//! The ScaledObject controller: resolve → validate → build → apply → status.
//!
//! It owns the HPA, starts and stops the scale loop, handles the pause annotations and, on
//! deletion, restores the target's original replica count when asked to.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use keda_operator_crd::{
    ConditionStatus, ConditionType, FINALIZER, PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION,
    PAUSED_SCALE_IN_ANNOTATION, PAUSED_SCALE_OUT_ANNOTATION, SCALED_OBJECT_NAME_LABEL,
    ScaledObject, TRANSFER_HPA_OWNERSHIP_ANNOTATION, bool_annotation, reason,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::context::Context;
use crate::fallback;
use crate::hpa;
use crate::scaler_set::ScalerSet;
use crate::status;
use crate::target::{self, Target};
use crate::telemetry::ObjectLabels;

/// What stops a reconcile (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kubernetes",
            Self::Finalizer(_) => "finalizer",
        }
    }
}

/// How often a healthy ScaledObject is re-checked (drift of the HPA, the target, secrets).
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a ScaledObject that failed its checks is tried again.
const RETRY_INVALID: Duration = Duration::from_secs(30);

/// The controller's reconcile function.
pub async fn reconcile(so: Arc<ScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<ScaledObject> =
        Api::namespaced(ctx.client.clone(), &so.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, so, |event| async {
        match event {
            Finalizer::Apply(so) => apply(&so, &ctx).await,
            Finalizer::Cleanup(so) => cleanup(&so, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Retry policy for failed reconciles.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature kube-runtime's controller calls"
)]
pub fn error_policy(so: Arc<ScaledObject>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(k8s.namespace = %so.namespace().unwrap_or_default(), k8s.name = %so.name_any(), error = %error, category = error.category(), "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn apply(so: &ScaledObject, ctx: &Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(so);
    let mut patch = status::Update::initializing();
    if let Some(action) = pause(so, ctx, &mut patch).await? {
        return Ok(action);
    }
    ensure_name_label(so, ctx).await?;

    // Resolve the target.
    let (target, scale) = match Target::resolve(&ctx.client, &ctx.discovery, so).await {
        Ok(found) => found,
        Err(e) => {
            ctx.stop_loop(so).await;
            return check_failed(
                ctx,
                so,
                patch,
                &format!("ScaledObject doesn't have correct scaleTargetRef specification: {e}"),
            )
            .await;
        }
    };
    let gvkr = target.gvkr();
    let api_version = if gvkr.group.is_empty() {
        gvkr.version.clone()
    } else {
        format!("{}/{}", gvkr.group, gvkr.version)
    };
    patch.field(
        so,
        "scaleTargetKind",
        json!(format!("{api_version}.{}", gvkr.kind)),
    );
    patch.field(
        so,
        "scaleTargetGVKR",
        serde_json::to_value(&gvkr).unwrap_or(Value::Null),
    );
    if so
        .status
        .as_ref()
        .and_then(|s| s.original_replica_count)
        .is_none()
    {
        patch.field(
            so,
            "originalReplicaCount",
            json!(target::replicas_of(&scale)),
        );
    }

    // Validate and build.
    let built = match validate_and_build(so, ctx, &target).await {
        Ok(built) => built,
        Err(message) => {
            ctx.stop_loop(so).await;
            return check_failed(ctx, so, patch, &message).await;
        }
    };
    let (set, desired) = built;

    // Apply the HPA.
    let name = hpa::hpa_name(so);
    if let Err(message) = ensure_hpa(ctx, so, &name, &desired).await? {
        ctx.stop_loop(so).await;
        return check_failed(ctx, so, patch, &message).await;
    }
    if let Some(old) = so.status.as_ref().and_then(|s| s.hpa_name.as_deref())
        && old != name
    {
        delete_hpa(ctx, so, old).await?;
    }

    // (Re)start the loop when the object changed.
    let generation = so.metadata.generation.unwrap_or_default();
    if ctx.loops.generation(&key) != Some(generation) {
        ctx.loops.start(ctx, so, target, set.clone());
    }
    ready(so, ctx, patch, &set, &name).await?;
    Ok(Action::requeue(RESYNC))
}

/// The pause annotations. `Some` when the object is fully paused (nothing else to do).
async fn pause(
    so: &ScaledObject,
    ctx: &Context,
    patch: &mut status::Update,
) -> Result<Option<Action>, Error> {
    let annotations = so.annotations();
    let labels = ObjectLabels {
        namespace: so.namespace().unwrap_or_default(),
        scaledObject: so.name_any(),
    };
    let flag = |key: &str| bool_annotation(annotations.get(key).map(String::as_str));
    let paused_replicas = annotations.get(PAUSED_REPLICAS_ANNOTATION);
    if paused_replicas.is_none() && !flag(PAUSED_ANNOTATION) {
        ctx.telemetry.object_paused.get_or_create(&labels).set(0);
        if flag(PAUSED_SCALE_IN_ANNOTATION) || flag(PAUSED_SCALE_OUT_ANNOTATION) {
            patch.condition(
                ConditionType::Paused,
                ConditionStatus::True,
                reason::SCALED_OBJECT_PAUSED,
                "ScaledObject is paused",
            );
        } else if status::is_true(so.status.as_ref(), ConditionType::Paused) {
            patch.condition(
                ConditionType::Paused,
                ConditionStatus::False,
                reason::SCALED_OBJECT_UNPAUSED,
                "pause annotation removed for ScaledObject",
            );
            patch.field(so, "pausedReplicaCount", Value::Null);
            ctx.event(
                so,
                false,
                "ScaledObjectUnpaused",
                "ScaledObject was unpaused".into(),
            )
            .await;
        }
        return Ok(None);
    }
    // Paused: the loop stops, the HPA goes, replicas stay (or go to paused-replicas).
    ctx.stop_loop(so).await;
    ctx.telemetry.object_paused.get_or_create(&labels).set(1);
    delete_hpa(ctx, so, &hpa::hpa_name(so)).await?;
    if let Some(previous) = so.status.as_ref().and_then(|s| s.hpa_name.as_deref())
        && previous != hpa::hpa_name(so)
    {
        delete_hpa(ctx, so, previous).await?;
    }
    if paused_replicas.is_none() {
        patch.field(so, "pausedReplicaCount", Value::Null);
    }
    if let Some(text) = paused_replicas {
        let Ok(replicas) = text.trim().parse::<i32>() else {
            let message =
                format!("annotation {PAUSED_REPLICAS_ANNOTATION} must be an integer, not {text:?}");
            return check_failed(ctx, so, std::mem::take(patch), &message)
                .await
                .map(Some);
        };
        match Target::resolve(&ctx.client, &ctx.discovery, so).await {
            Ok((target, scale)) => {
                if target::replicas_of(&scale) != replicas {
                    target.set_replicas(replicas).await?;
                }
            }
            Err(e) => {
                let message =
                    format!("ScaledObject doesn't have correct scaleTargetRef specification: {e}");
                return check_failed(ctx, so, std::mem::take(patch), &message)
                    .await
                    .map(Some);
            }
        }
        patch.field(so, "pausedReplicaCount", json!(replicas));
    }
    let was_paused = status::is_true(so.status.as_ref(), ConditionType::Paused);
    patch.condition(
        ConditionType::Paused,
        ConditionStatus::True,
        reason::SCALED_OBJECT_PAUSED,
        "ScaledObject is paused",
    );
    std::mem::take(patch).write(&ctx.client, so).await?;
    if !was_paused {
        ctx.event(
            so,
            false,
            "ScaledObjectPaused",
            "ScaledObject was paused".into(),
        )
        .await;
    }
    Ok(Some(Action::requeue(RESYNC)))
}

/// The label the metrics server's selector relies on.
async fn ensure_name_label(so: &ScaledObject, ctx: &Context) -> Result<(), kube::Error> {
    if so.labels().get(SCALED_OBJECT_NAME_LABEL) == Some(&so.name_any()) {
        return Ok(());
    }
    let api: Api<ScaledObject> =
        Api::namespaced(ctx.client.clone(), &so.namespace().unwrap_or_default());
    api.patch(
        &so.name_any(),
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "metadata": { "labels": { SCALED_OBJECT_NAME_LABEL: so.name_any() } } }),
        ),
    )
    .await
    .map(|_| ())
}

/// Replica bounds, fallback, triggers, HPA: the built triggers and the HPA to apply, or the
/// message for `ScaledObjectCheckFailed`.
async fn validate_and_build(
    so: &ScaledObject,
    ctx: &Context,
    target: &Target,
) -> Result<(Arc<ScalerSet>, HorizontalPodAutoscaler), String> {
    validate_bounds(so)?;
    fallback::validate(so).map_err(|e| e.to_string())?;
    // The running loop's triggers, when they were built from this generation and are healthy:
    // a resync need not reconnect to every source.
    let running = ctx.loops.get(&ObjectRef::from_obj(so));
    let generation = so.metadata.generation.unwrap_or_default();
    let set = match running {
        Some(state) if state.started_generation == generation && !state.needs_rebuild() => {
            state.scalers()
        }
        running => {
            let previous = running.map(|state| state.scalers());
            ScalerSet::build(ctx, so, target, previous.as_deref())
                .await
                .map_err(|e| e.to_string())?
        }
    };
    for trigger in &set.triggers {
        if let Err(e) = &trigger.scaler {
            let note = format!("trigger {} ({}): {e}", trigger.index, trigger.trigger_type);
            ctx.event(so, true, "KEDAScalerFailed", note).await;
        }
    }
    let desired = hpa::build(so, &set.specs(), &ctx.settings.version).map_err(|e| e.to_string())?;
    Ok((set, desired))
}

/// Ready, the metric names and the trigger summary in status; `ScaledObjectReady` on the
/// transition. A Ready=False the scale loop set for failing triggers is left to the loop.
async fn ready(
    so: &ScaledObject,
    ctx: &Context,
    mut patch: status::Update,
    set: &ScalerSet,
    hpa_name: &str,
) -> Result<(), kube::Error> {
    let specs = set.specs();
    let external: Vec<String> = specs
        .iter()
        .filter_map(|s| s.external_name().map(str::to_owned))
        .collect();
    let resource: Vec<String> = specs
        .iter()
        .filter_map(|s| match s {
            crate::scalers::MetricSpec::Resource { resource, .. } => Some(resource.clone()),
            crate::scalers::MetricSpec::External { .. } => None,
        })
        .collect();
    let list = |items: Vec<String>| {
        if items.is_empty() {
            Value::Null
        } else {
            json!(items)
        }
    };
    patch.field(so, "hpaName", json!(hpa_name));
    patch.field(so, "externalMetricNames", list(external));
    patch.field(so, "resourceMetricNames", list(resource));
    let composite = set.formula.as_ref().map(|_| hpa::COMPOSITE_METRIC);
    patch.field(so, "compositeScalerName", json!(composite));
    let joined = |items: Vec<&str>| {
        let mut unique: Vec<&str> = Vec::new();
        for item in items {
            if !unique.contains(&item) {
                unique.push(item);
            }
        }
        if unique.is_empty() {
            Value::Null
        } else {
            json!(unique.join(","))
        }
    };
    let triggers = &so.spec.triggers;
    patch.field(
        so,
        "triggersTypes",
        joined(triggers.iter().map(|t| t.type_.as_str()).collect()),
    );
    let auths = triggers
        .iter()
        .filter_map(|t| t.authentication_ref.as_ref().map(|a| a.name.as_str()))
        .collect();
    patch.field(so, "authenticationsTypes", joined(auths));
    let current = status::get(so.status.as_ref(), ConditionType::Ready);
    let trigger_failing = current.is_some_and(|c| {
        c.status != ConditionStatus::True
            && matches!(
                c.reason.as_deref(),
                Some(
                    reason::TRIGGER_ERROR
                        | reason::PARTIAL_TRIGGER_ERROR
                        | reason::ERROR_GETTING_CURRENT_REPLICAS
                )
            )
    });
    let was_ready = current.is_some_and(|c| c.status == ConditionStatus::True);
    if !trigger_failing {
        patch.condition(
            ConditionType::Ready,
            ConditionStatus::True,
            reason::SCALED_OBJECT_READY,
            "ScaledObject is defined correctly and is ready for scaling",
        );
    }
    if so.spec.fallback.is_none() {
        patch.condition(
            ConditionType::Fallback,
            ConditionStatus::False,
            reason::NO_FALLBACK_FOUND,
            "No fallbacks are active on this scaled object",
        );
    }
    patch.write(&ctx.client, so).await?;
    if !was_ready && !trigger_failing {
        ctx.event(
            so,
            false,
            "ScaledObjectReady",
            "ScaledObject is ready for scaling".into(),
        )
        .await;
    }
    Ok(())
}

/// min ≤ max, and idle < min (KEDA counts an explicit `minReplicaCount: 0` as 1 here).
fn validate_bounds(so: &ScaledObject) -> Result<(), String> {
    let spec = &so.spec;
    let min = spec.min_replica_count.unwrap_or(0);
    let max = spec.max_replica_count();
    if min > max {
        return Err(format!(
            "MinReplicaCount={min} must be less than MaxReplicaCount={max}"
        ));
    }
    if let Some(idle) = spec.idle_replica_count {
        let floor = match spec.min_replica_count {
            Some(0) => 1,
            Some(m) => m,
            None => 0,
        };
        if idle >= floor {
            return Err(format!(
                "IdleReplicaCount={idle} must be less than MinReplicaCount={min}"
            ));
        }
    }
    Ok(())
}

/// Ready=False `ScaledObjectCheckFailed` with an Event; nothing is scaled until it is fixed.
async fn check_failed(
    ctx: &Context,
    so: &ScaledObject,
    mut patch: status::Update,
    message: &str,
) -> Result<Action, Error> {
    tracing::warn!(k8s.namespace = %so.namespace().unwrap_or_default(), k8s.name = %so.name_any(), %message, "ScaledObject check failed");
    let was_failed = status::get(so.status.as_ref(), ConditionType::Ready).is_some_and(|c| {
        c.reason.as_deref() == Some(reason::SCALED_OBJECT_CHECK_FAILED)
            && c.message.as_deref() == Some(message)
    });
    patch.condition(
        ConditionType::Ready,
        ConditionStatus::False,
        reason::SCALED_OBJECT_CHECK_FAILED,
        message,
    );
    patch.condition(
        ConditionType::Active,
        ConditionStatus::Unknown,
        reason::UNKNOWN_STATE,
        "ScaledObject check failed",
    );
    patch.write(&ctx.client, so).await?;
    if !was_failed {
        ctx.event(so, true, "ScaledObjectCheckFailed", message.to_owned())
            .await;
    }
    Ok(Action::requeue(RETRY_INVALID))
}

/// Creates or updates the HPA by server-side apply. Refuses (with the message for the status)
/// an HPA of that name owned by something else, unless the ScaledObject asks to take it over.
async fn ensure_hpa(
    ctx: &Context,
    so: &ScaledObject,
    name: &str,
    desired: &HorizontalPodAutoscaler,
) -> Result<Result<(), String>, Error> {
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(ctx.client.clone(), &so.namespace().unwrap_or_default());
    let key = (so.namespace().unwrap_or_default(), name.to_owned());
    let fingerprint = hpa::fingerprint(desired);
    if let Some(existing) = api.get_opt(name).await? {
        let ours = existing
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == so.meta().uid.as_ref());
        if !ours {
            let transfer = so
                .annotations()
                .get(TRANSFER_HPA_OWNERSHIP_ANNOTATION)
                .is_some_and(|v| v == "true");
            let named = so.spec.hpa_config().and_then(|c| c.name.as_deref()) == Some(name);
            if !(transfer && named) {
                return Ok(Err(format!(
                    "the HorizontalPodAutoscaler {name} already exists and is not owned by this ScaledObject (set the {TRANSFER_HPA_OWNERSHIP_ANNOTATION} annotation and advanced.horizontalPodAutoscalerConfig.name to take it over)"
                )));
            }
            tracing::info!(hpa = name, "taking over an existing HPA");
        } else if ctx
            .applied_hpas
            .lock()
            .ok()
            .and_then(|applied| applied.get(&key).cloned())
            == Some((
                fingerprint,
                existing.metadata.uid.clone(),
                existing.metadata.generation,
            ))
            && existing.metadata.labels == desired.metadata.labels
            && existing.metadata.annotations == desired.metadata.annotations
        {
            return Ok(Ok(()));
        }
    }
    let applied = api
        .patch(
            name,
            &PatchParams::apply("keda-operator").force(),
            &Patch::Apply(desired),
        )
        .await?;
    if let Ok(mut remembered) = ctx.applied_hpas.lock() {
        remembered.insert(
            key,
            (
                fingerprint,
                applied.metadata.uid,
                applied.metadata.generation,
            ),
        );
    }
    Ok(Ok(()))
}

/// Deletes the ScaledObject's HPA if it exists and is ours.
async fn delete_hpa(ctx: &Context, so: &ScaledObject, name: &str) -> Result<(), kube::Error> {
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(ctx.client.clone(), &so.namespace().unwrap_or_default());
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(());
    };
    if existing
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == so.meta().uid.as_ref())
    {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn cleanup(so: &ScaledObject, ctx: &Arc<Context>) -> Result<Action, Error> {
    ctx.stop_loop(so).await;
    if so.spec.restore_to_original_replica_count()
        && let Some(original) = so.status.as_ref().and_then(|s| s.original_replica_count)
    {
        match Target::resolve(&ctx.client, &ctx.discovery, so).await {
            Ok((target, _)) => {
                // The HPA is still there until garbage collection; remove it first so it
                // does not scale the restored target again.
                delete_hpa(ctx, so, &hpa::hpa_name(so)).await?;
                target.set_replicas(original).await?;
                tracing::info!(target = ?target, replicas = original, "restored the original replica count");
            }
            Err(e) => tracing::warn!(error = %e, "cannot restore the original replica count"),
        }
    }
    ctx.event(
        so,
        true,
        "ScaledObjectDeleted",
        "ScaledObject was deleted".into(),
    )
    .await;
    Ok(Action::await_change())
}
