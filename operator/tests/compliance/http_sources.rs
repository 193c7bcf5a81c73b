//! Fixtures of the triggers that poll an event source's HTTP API: `nats-jetstream` and
//! `prometheus`.
//!
//! The checks set the source's value at will, so the sources here are stand-ins: small HTTP
//! servers on loopback answering in the real format (`/jsz` of the NATS monitoring endpoint,
//! `/api/v1/query` of Prometheus). The real servers are covered by `tests/nats_jetstream.rs`
//! and `tests/prometheus.rs`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;
use serde_json::json;
use tokio::net::TcpListener;

use crate::fixtures::{Activation, Fixture, Invalid, Metadata, SecretCase};
use crate::sources::Source;

/// The stream and consumer the `nats-jetstream` fixture reads.
const STREAM: &str = "ORDERS";
const CONSUMER: &str = "workers";

#[derive(Clone, Copy)]
enum Format {
    /// The NATS monitoring endpoint's `/jsz`.
    Jsz,
    /// The Prometheus HTTP API's `/api/v1/query`.
    PromQuery,
}

#[derive(Default)]
struct StandInState {
    value: f64,
    refusing: bool,
    seen: String,
}

/// A stand-in for a real server's HTTP API that answers the value a check sets.
struct StandIn {
    addr: SocketAddr,
    state: Arc<Mutex<StandInState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    async fn start(format: Format) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<StandInState>> = Arc::default();
        let app = axum::Router::new()
            .fallback(move |state, request| async move { answer(format, state, &request) })
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }
}

fn answer(
    format: Format,
    State(state): State<Arc<Mutex<StandInState>>>,
    request: &axum::extract::Request,
) -> Response {
    let mut state = state.lock().unwrap();
    let _ = write!(state.seen, "{} ", request.uri());
    for value in request.headers().values() {
        let _ = write!(state.seen, "{} ", String::from_utf8_lossy(value.as_bytes()));
    }
    if state.refusing {
        return (StatusCode::FORBIDDEN, "refused").into_response();
    }
    let value = state.value;
    match format {
        Format::Jsz => {
            if request.uri().path() != "/jsz" {
                return StatusCode::NOT_FOUND.into_response();
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "the checks set small whole backlogs"
            )]
            let pending = value.max(0.0) as u64;
            axum::Json(json!({
                "server_id": "NSTANDIN",
                "meta_cluster": {"cluster_size": 1},
                "account_details": [{"name": "$G", "id": "$G", "stream_detail": [{
                    "name": STREAM,
                    "state": {"messages": pending, "last_seq": pending},
                    "consumer_detail": [{
                        "stream_name": STREAM,
                        "name": CONSUMER,
                        "num_pending": pending,
                        "num_ack_pending": 0,
                        "num_redelivered": 0,
                        "num_waiting": 0
                    }]
                }]}]
            }))
            .into_response()
        }
        Format::PromQuery => {
            if !request.uri().path().ends_with("/api/v1/query") {
                return StatusCode::NOT_FOUND.into_response();
            }
            axum::Json(
                json!({"status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {"job": "standin"}, "value": [1_700_000_000.25, value.to_string()]}
                ]}}),
            )
            .into_response()
        }
    }
}

impl Source for StandIn {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn set(&self, value: f64) -> BoxFuture<'_, ()> {
        self.state.lock().unwrap().value = value;
        Box::pin(async {})
    }

    fn refuse(&self) -> bool {
        self.state.lock().unwrap().refusing = true;
        true
    }

    fn seen(&self) -> String {
        self.state.lock().unwrap().seen.clone()
    }
}

fn owned(pairs: &[(&'static str, &str)]) -> Metadata {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

pub(crate) struct NatsJetStream;

impl Fixture for NatsJetStream {
    fn types(&self) -> &'static [&'static str] {
        &["nats-jetstream"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            ("natsServerMonitoringEndpoint", source.to_string()),
            ("account", "$G".to_owned()),
            ("stream", STREAM.to_owned()),
            ("consumer", CONSUMER.to_owned()),
            ("lagThreshold", "10".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &[
            "natsServerMonitoringEndpoint",
            "account",
            "stream",
            "consumer",
        ]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("lagThreshold", "ten")]),
            Invalid::Values(&[("lagThreshold", "0")]),
            Invalid::Values(&[("lagThreshold", "2.5")]),
            Invalid::Values(&[("activationLagThreshold", "few")]),
            Invalid::Values(&[("useHttps", "maybe")]),
            Invalid::Values(&[("activationPush", "maybe")]),
            Invalid::Values(&[("natsServerMonitoringEndpoint", "http://nats:8222")]),
            Invalid::Values(&[("natsServerMonitoringEndpoint", "nats:8222/jsz")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    fn hostile_name(&self) -> &'static [(&'static str, &'static str)] {
        &[("stream", "orders/eu%2F(1):x.y")]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationLagThreshold",
            threshold: 5.0,
            step: 1.0,
        }
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        Box::pin(async { Some(Box::new(StandIn::start(Format::Jsz).await) as Box<dyn Source>) })
    }
}

pub(crate) struct Prometheus;

impl Fixture for Prometheus {
    fn types(&self) -> &'static [&'static str] {
        &["prometheus"]
    }

    fn metadata(&self, source: SocketAddr) -> Metadata {
        vec![
            ("serverAddress", format!("http://{source}")),
            ("query", "sum(rate(http_requests_total[1m]))".to_owned()),
            ("threshold", "10".to_owned()),
        ]
    }

    fn required(&self) -> &'static [&'static str] {
        &["serverAddress", "query", "threshold"]
    }

    fn invalid(&self) -> Vec<Invalid> {
        vec![
            Invalid::Values(&[("serverAddress", "prometheus:9090")]),
            Invalid::Values(&[("serverAddress", "not a url")]),
            Invalid::Values(&[("threshold", "0")]),
            Invalid::Values(&[("threshold", "ten")]),
            Invalid::Values(&[("activationThreshold", "ten")]),
            Invalid::Values(&[("activationThreshold", "NaN")]),
            Invalid::Values(&[("ignoreNullValues", "maybe")]),
            Invalid::Values(&[("unsafeSsl", "maybe")]),
            Invalid::Values(&[("timeout", "-2s")]),
            Invalid::Values(&[("customHeaders", "X-A")]),
            Invalid::Values(&[("queryParameters", "=x")]),
            Invalid::Values(&[("awsRegion", "eu-west-1")]),
            Invalid::Values(&[("authModes", "digest")]),
            Invalid::Values(&[("authModes", "apiKey")]),
            Invalid::MetricType(Some(MetricTargetType::Utilization)),
        ]
    }

    fn activation(&self) -> Activation {
        Activation::Threshold {
            key: "activationThreshold",
            threshold: 5.0,
            step: 0.001,
        }
    }

    fn secrets(&self, source: SocketAddr) -> Vec<SecretCase> {
        let case =
            |name, metadata: &[(&'static str, &str)], auth: &[(&'static str, &str)]| SecretCase {
                name,
                metadata: owned(metadata),
                auth: owned(auth),
                env: Vec::new(),
                metadata_allowed: false,
                tells: auth
                    .iter()
                    .filter(|(k, _)| *k != "customAuthHeader")
                    .map(|(_, v)| (*v).to_owned())
                    .collect(),
                reaches_source: true,
            };
        let basic = [("username", "user-6be1f0a2"), ("password", "pw-3a9c7e14")];
        let custom = [
            ("customAuthHeader", "X-Scope-Token"),
            ("customAuthValue", "custom-0d4e8b72"),
        ];
        let mut cases = vec![
            // Basic credentials travel base64-encoded.
            SecretCase {
                reaches_source: false,
                ..case("username", &[("authModes", "basic")], &basic)
            },
            SecretCase {
                reaches_source: false,
                ..case("password", &[("authModes", "basic")], &basic)
            },
            case(
                "bearerToken",
                &[("authModes", "bearer")],
                &[("bearerToken", "token-9f1c2d33")],
            ),
            case(
                "token",
                &[("authModes", "bearer")],
                &[("token", "token-47ab0e95")],
            ),
            case("customAuthValue", &[("authModes", "custom")], &custom),
        ];
        let (ca, _) = crate::fixtures::pem_pair();
        let (cert, key) = crate::fixtures::pem_pair();
        let https = format!("https://{source}");
        for name in ["cert", "key", "ca"] {
            cases.push(SecretCase {
                name,
                metadata: vec![
                    ("authModes", "tls".to_owned()),
                    ("serverAddress", https.clone()),
                ],
                auth: vec![
                    ("cert", cert.clone()),
                    ("key", key.clone()),
                    ("ca", ca.clone()),
                ],
                env: Vec::new(),
                metadata_allowed: false,
                tells: vec![
                    crate::fixtures::pem_tell(&cert),
                    crate::fixtures::pem_tell(&key),
                    crate::fixtures::pem_tell(&ca),
                ],
                reaches_source: false,
            });
        }
        cases
    }

    fn reads_source(&self) -> bool {
        true
    }

    fn start(&self) -> BoxFuture<'static, Option<Box<dyn Source>>> {
        Box::pin(async {
            Some(Box::new(StandIn::start(Format::PromQuery).await) as Box<dyn Source>)
        })
    }
}
