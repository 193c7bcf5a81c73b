//! The metrics server's own Prometheus metrics: requests by code, and their latency.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `external_metric`, `discovery`, `openapi` or `health`.
    pub endpoint: &'static str,
    pub code: u16,
}

/// Metric names live here, in one place.
#[derive(Debug)]
pub struct Telemetry {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RequestLabels, Histogram>,
    pub upstream_calls: Counter,
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keda_metrics_server");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        let upstream_calls = Counter::default();
        registry.register(
            "requests",
            "Requests served, by endpoint and HTTP code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by endpoint and HTTP code",
            latency.clone(),
        );
        registry.register(
            "operator_calls",
            "Calls made to the operator (coalesced requests count once)",
            upstream_calls.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            upstream_calls,
        }
    }
}

impl Telemetry {
    pub fn observe(&self, endpoint: &'static str, code: u16, elapsed: Duration) {
        let labels = RequestLabels { endpoint, code };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `/metrics` on its own port.
pub async fn serve(addr: std::net::SocketAddr, telemetry: Arc<Telemetry>) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let telemetry = telemetry.clone();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    telemetry.render(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
