//! The gRPC service: KEDA's `ExternalScaler` on top of a [`Scaler`].

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use keda_proto::externalscaler as pb;
use keda_proto::externalscaler::external_scaler_server::ExternalScaler;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::scaler::{BoxStream, Scaler, ScalerRequest, activity_changes};

/// Serves a [`Scaler`] as KEDA's `externalscaler.ExternalScaler`.
///
/// Built by [`Server`](crate::Server); public so that a scaler can also be mounted on a tonic
/// router of one's own (see [`ScalerService::new`]).
#[derive(Debug)]
pub struct ScalerService<S> {
    scaler: Arc<S>,
    poll_interval: Duration,
    shutdown: watch::Receiver<bool>,
}

impl<S: Scaler> ScalerService<S> {
    /// A service for `scaler`. `StreamIsActive` falls back to polling `is_active` every
    /// `poll_interval`; streams end when `shutdown` turns `true` (or its sender is dropped).
    pub fn new(scaler: Arc<S>, poll_interval: Duration, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            scaler,
            poll_interval,
            shutdown,
        }
    }
}

/// The span of one RPC, carrying the ScaledObject's name and namespace.
fn rpc_span(rpc: &'static str, request: &ScalerRequest) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        rpc,
        scaledobject = %request.name,
        namespace = %request.namespace,
    )
}

/// Logs a failed call at the level its kind deserves and turns it into a status.
fn fail(error: Error) -> Status {
    match error.kind() {
        crate::ErrorKind::Internal | crate::ErrorKind::Unavailable => {
            tracing::warn!(error = %error, "call failed");
        }
        _ => tracing::info!(error = %error, "call rejected"),
    }
    Status::from(error)
}

/// Resolves when `shutdown` turns true or its sender goes away.
async fn shutdown_signalled(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

/// `is_active` polled every `interval`; yields the first answer and every change. An error ends
/// the stream.
fn polling_stream<S: Scaler>(
    scaler: Arc<S>,
    request: ScalerRequest,
    interval: Duration,
) -> BoxStream<Result<bool>> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    activity_changes(
        (scaler, request, ticker),
        |(scaler, request, mut ticker)| async move {
            ticker.tick().await;
            let answer = scaler.is_active(&request).await;
            Some((answer, (scaler, request, ticker)))
        },
    )
}

#[tonic::async_trait]
impl<S: Scaler> ExternalScaler for ScalerService<S> {
    async fn is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        let request = ScalerRequest::from(request.into_inner());
        let span = rpc_span("IsActive", &request);
        async {
            let result = self.scaler.is_active(&request).await.map_err(fail)?;
            tracing::debug!(active = result, "answered");
            Ok(Response::new(pb::IsActiveResponse { result }))
        }
        .instrument(span)
        .await
    }

    type StreamIsActiveStream = BoxStream<Result<pb::IsActiveResponse, Status>>;

    async fn stream_is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let request = ScalerRequest::from(request.into_inner());
        let span = rpc_span("StreamIsActive", &request);
        let stream = async {
            let pushed = self.scaler.activity_stream(&request).await.map_err(fail)?;
            let stream = if let Some(stream) = pushed {
                tracing::info!("stream opened (pushed by the scaler)");
                stream
            } else {
                tracing::info!(
                    interval_ms = self.poll_interval.as_millis(),
                    "stream opened (polling is_active)"
                );
                polling_stream(Arc::clone(&self.scaler), request, self.poll_interval)
            };
            Ok::<_, Status>(stream)
        }
        .instrument(span.clone())
        .await?;
        let shutdown = shutdown_signalled(self.shutdown.clone());
        let messages = stream.take_until(shutdown).map(move |item| {
            let _entered = span.enter();
            match item {
                Ok(result) => {
                    tracing::debug!(active = result, "stream message");
                    Ok(pb::IsActiveResponse { result })
                }
                Err(error) => Err(fail(error)),
            }
        });
        Ok(Response::new(messages.boxed()))
    }

    async fn get_metric_spec(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        let request = ScalerRequest::from(request.into_inner());
        let span = rpc_span("GetMetricSpec", &request);
        async {
            let specs = self.scaler.metric_specs(&request).await.map_err(fail)?;
            tracing::debug!(count = specs.len(), "answered");
            Ok(Response::new(pb::GetMetricSpecResponse {
                metric_specs: specs.into_iter().map(pb::MetricSpec::from).collect(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let pb::GetMetricsRequest {
            scaled_object_ref,
            metric_name,
        } = request.into_inner();
        let Some(scaled_object_ref) = scaled_object_ref else {
            return Err(Status::invalid_argument(
                "GetMetricsRequest.scaledObjectRef is missing",
            ));
        };
        let request = ScalerRequest::from(scaled_object_ref);
        let span = rpc_span("GetMetrics", &request);
        async {
            let values = self
                .scaler
                .metric_values(&request, &metric_name)
                .await
                .map_err(fail)?;
            tracing::debug!(metric = %metric_name, count = values.len(), "answered");
            Ok(Response::new(pb::GetMetricsResponse {
                metric_values: values.into_iter().map(pb::MetricValue::from).collect(),
            }))
        }
        .instrument(span)
        .await
    }
}
