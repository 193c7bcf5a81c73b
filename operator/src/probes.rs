//! The health-probe endpoints (`/healthz`, `/readyz`) and Prometheus `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::telemetry::Telemetry;

/// Serves `/healthz` (always OK while the process runs) and `/readyz` (OK once the caches
/// have synced).
pub async fn serve_probes(
    listener: tokio::net::TcpListener,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        );
    axum::serve(listener, router).await
}

/// Serves `/metrics`.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    telemetry: Arc<Telemetry>,
) -> std::io::Result<()> {
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let body = telemetry.render();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, router).await
}

/// Parses Go-style bind addresses: `:8080`, `0.0.0.0:8080`, `127.0.0.1:0`; `0` or empty disables.
pub fn bind_address(text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "0" | "" => Ok(None),
        t if t.starts_with(':') => format!("0.0.0.0{t}")
            .parse()
            .map(Some)
            .map_err(|e| format!("{t:?}: {e}")),
        t => t.parse().map(Some).map_err(|e| format!("{t:?}: {e}")),
    }
}
