//! The metric service the metrics server calls (`kedars.metrics.v1.MetricService`): one metric
//! of one ScaledObject per call, answered from the scale loop's last read when it is fresh (or
//! the trigger sets `useCachedMetrics`), otherwise by one coalesced read of the source; fallback
//! and scalingModifiers apply as in the loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keda_operator_crd::ScaledObject;
use keda_proto::metrics::metric_sample::Source as WireSource;
use keda_proto::metrics::metric_service_server::{MetricService, MetricServiceServer};
use keda_proto::metrics::{GetMetricRequest, GetMetricResponse, MetricSample};
use kube::runtime::reflector::ObjectRef;
use tonic::{Request, Response, Status};

use crate::context::Context;
use crate::fallback;
use crate::hpa::{self, COMPOSITE_METRIC};
use crate::quantity;
use crate::scale_loop::{LoopState, Served, Source};
use crate::scaler_set::ScalerSet;
use crate::scalers::MetricSpec;

/// A loop value younger than this answers the HPA without reading the source again.
const FRESH: Duration = Duration::from_secs(2);

/// The gRPC service. It answers from the moment the port is bound; until this replica leads
/// (and has its caches), every call is UNAVAILABLE, which the metrics server retries.
#[derive(Debug, Clone)]
pub struct Service {
    ctx: Arc<tokio::sync::OnceCell<Arc<Context>>>,
}

impl Service {
    pub fn new(ctx: Arc<tokio::sync::OnceCell<Arc<Context>>>) -> MetricServiceServer<Self> {
        MetricServiceServer::new(Self { ctx })
    }
}

#[tonic::async_trait]
impl MetricService for Service {
    async fn get_metric(
        &self,
        request: Request<GetMetricRequest>,
    ) -> Result<Response<GetMetricResponse>, Status> {
        let Some(ctx) = self.ctx.get() else {
            return Err(Status::unavailable(
                "this operator replica is not the leader (or not started yet)",
            ));
        };
        let request = request.into_inner();
        if request.namespace.is_empty()
            || request.scaled_object.is_empty()
            || request.metric_name.is_empty()
        {
            return Err(Status::invalid_argument(
                "namespace, scaled_object and metric_name are required",
            ));
        }
        let key = ObjectRef::<ScaledObject>::new(&request.scaled_object).within(&request.namespace);
        let Some(so) = ctx.scaled_objects.get(&key) else {
            return Err(Status::not_found(format!(
                "ScaledObject {}/{} not found",
                request.namespace, request.scaled_object
            )));
        };
        let Some(state) = ctx.loops.get(&key) else {
            return Err(Status::not_found(format!(
                "ScaledObject {}/{} is not being scaled (paused, or not ready)",
                request.namespace, request.scaled_object
            )));
        };
        let served = serve(&state, &so, &request.metric_name).await?;
        Ok(Response::new(GetMetricResponse {
            samples: served
                .into_iter()
                .map(|s| MetricSample {
                    metric_name: request.metric_name.clone(),
                    milli_value: quantity::milli(s.value),
                    timestamp_unix_millis: s.read_at.as_millisecond(),
                    source: match s.source {
                        Source::Live => WireSource::Live,
                        Source::Cache => WireSource::Cache,
                        Source::Fallback => WireSource::Fallback,
                        Source::Formula => WireSource::Formula,
                    }
                    .into(),
                })
                .collect(),
        }))
    }
}

/// Answers one metric of one ScaledObject.
pub async fn serve(
    state: &LoopState,
    so: &ScaledObject,
    metric: &str,
) -> Result<Vec<Served>, Status> {
    let set = state.scalers();
    if metric.eq_ignore_ascii_case(COMPOSITE_METRIC)
        && let Some(formula) = &set.formula
    {
        return composite(state, so, &set, formula).await.map(|s| vec![s]);
    }
    serve_trigger_metric(state, so, &set, metric).await
}

/// Answers one trigger's metric: cache, or a live read, or fallback.
async fn serve_trigger_metric(
    state: &LoopState,
    so: &ScaledObject,
    set: &Arc<ScalerSet>,
    metric: &str,
) -> Result<Vec<Served>, Status> {
    let Some((trigger, spec)) = set.find(metric) else {
        return Err(Status::not_found(format!(
            "no metric {metric} in ScaledObject {}",
            state.key
        )));
    };
    let position = set
        .triggers
        .iter()
        .position(|t| std::ptr::eq(t, trigger))
        .unwrap_or(0);
    let name = spec.external_name().unwrap_or(metric).to_owned();
    let cached = state
        .cached(&name)
        .filter(|c| (trigger.use_cached_metrics && c.result.is_ok()) || c.at.elapsed() < FRESH);
    let (result, source, read_at) = match cached {
        Some(c) => (c.result, Source::Cache, c.wall),
        None => (
            state.read_live(set, position, &name).await,
            Source::Live,
            jiff::Timestamp::now(),
        ),
    };
    // Health was recorded by the source read itself (once per read, not per answer).
    let health = state.health_of(&name);
    match result {
        Ok(reading) => Ok(vec![Served {
            metric: name,
            value: reading.value,
            source,
            read_at,
        }]),
        Err(error) => {
            state.request_rebuild();
            let Some(fallback) = fallback::validate(so).ok().flatten() else {
                return Err(failed(&name, &error));
            };
            if !fallback::engaged(fallback, &health) {
                return Err(failed(&name, &error));
            }
            let (target, value_target) = match spec {
                MetricSpec::External {
                    target,
                    target_type,
                    ..
                } => (
                    *target,
                    *target_type == keda_operator_crd::MetricTargetType::Value,
                ),
                MetricSpec::Resource { .. } => return Err(failed(&name, &error)),
            };
            let value = fallback_value(state, fallback, target, value_target).await?;
            Ok(vec![Served {
                metric: name,
                value,
                source: Source::Fallback,
                read_at: jiff::Timestamp::now(),
            }])
        }
    }
}

async fn fallback_value(
    state: &LoopState,
    fallback: &keda_operator_crd::Fallback,
    target: f64,
    value_target: bool,
) -> Result<f64, Status> {
    let current =
        state.target().replicas().await.map_err(|e| {
            Status::internal(format!("fallback: cannot read current replicas: {e}"))
        })?;
    let replicas = fallback::replicas(fallback, current);
    let ready = if value_target {
        state
            .target()
            .ready_pods()
            .await
            .map_err(|e| Status::internal(format!("fallback: cannot count ready pods: {e}")))?
    } else {
        0
    };
    fallback::synthetic_value(replicas, target, value_target, ready)
        .ok_or_else(|| Status::internal("fallback: no ready pods to spread a Value target over"))
}

fn failed(metric: &str, error: &crate::scalers::ScalerError) -> Status {
    Status::internal(format!("metric:{metric} encountered error: {error}"))
}

/// `composite-metric`: every named trigger's value, combined by the formula.
async fn composite(
    state: &LoopState,
    so: &ScaledObject,
    set: &Arc<ScalerSet>,
    formula: &crate::formula::Formula,
) -> Result<Served, Status> {
    let mut values: BTreeMap<String, Option<f64>> = BTreeMap::new();
    let mut first_error = None;
    for trigger in &set.triggers {
        let Some(name) = &trigger.name else { continue };
        for spec in &trigger.specs {
            let Some(metric) = spec.external_name() else {
                continue;
            };
            match serve_trigger_metric(state, so, set, metric).await {
                Ok(served) if served.iter().all(|s| s.source != Source::Fallback) => {
                    values.insert(name.clone(), served.first().map(|s| s.value));
                }
                Ok(_) => {
                    values.insert(name.clone(), None);
                }
                Err(status) => {
                    values.insert(name.clone(), None);
                    first_error.get_or_insert(status);
                }
            }
        }
    }
    let fallback = fallback::validate(so).ok().flatten();
    let target = hpa::composite_target(so).ok().flatten().unwrap_or(0.0);
    // A failing trigger whose fallback has not engaged yet is an error, never a value computed
    // without it (which could scale the workload down because of the failure).
    if let Some(error) = first_error {
        return Err(error);
    }
    let result = formula
        .evaluate(&values)
        .map_err(|e| Status::internal(format!("scalingModifiers.formula: {e}")))?;
    match (result, fallback) {
        (Some(value), _) => Ok(Served {
            metric: COMPOSITE_METRIC.to_owned(),
            value,
            source: Source::Formula,
            read_at: jiff::Timestamp::now(),
        }),
        (None, Some(fallback)) => Ok(Served {
            metric: COMPOSITE_METRIC.to_owned(),
            value: f64::from(fallback.replicas) * target,
            source: Source::Fallback,
            read_at: jiff::Timestamp::now(),
        }),
        (None, None) => Err(Status::internal(
            "scalingModifiers.formula returned nil and no fallback is set",
        )),
    }
}
