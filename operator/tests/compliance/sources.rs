//! The sources the compliance checks stand up on loopback: an HTTP API (`metrics-api`), a gRPC
//! external scaler (`external`, `external-push`), kube-sim (`kubernetes-workload`), and a
//! listener that only counts the connections made to it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use keda_operator::scalers::Services;
use keda_proto::externalscaler::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use keda_proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::net::TcpListener;

/// A source whose answers a check sets.
pub(crate) trait Source: Send + Sync {
    /// Where it listens; the fixture points its trigger here.
    fn addr(&self) -> SocketAddr;

    /// From now on the trigger's metric is `value`.
    fn set(&self, value: f64) -> BoxFuture<'_, ()>;

    /// From now on every request is refused as a wrong credential would be. False where the
    /// source cannot do that (kube-sim).
    fn refuse(&self) -> bool;

    /// Everything the source was sent that could carry a credential: request targets and
    /// header values, or the `scalerMetadata` of gRPC calls.
    fn seen(&self) -> String;
}

/// An address nothing listens on: the port of a listener that was closed.
pub(crate) fn closed_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Services whose Kubernetes client talks to `addr`, without retries, and a pool of external
/// scaler connections of their own.
pub(crate) fn services(addr: SocketAddr) -> Services {
    let mut config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    config.default_retry = false;
    Services::new(kube::Client::try_from(config).unwrap())
}

/// What the HTTP API answers.
#[derive(Default)]
struct HttpState {
    value: f64,
    refusing: bool,
    seen: String,
}

/// An HTTP API serving `{"stats":{"queue":{"depth":<value>}}}` on every path.
pub(crate) struct HttpApi {
    addr: SocketAddr,
    state: Arc<Mutex<HttpState>>,
}

impl HttpApi {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(HttpState::default()));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }
}

async fn answer(
    State(state): State<Arc<Mutex<HttpState>>>,
    request: axum::extract::Request,
) -> Response {
    let mut state = state.lock().unwrap();
    let _ = write!(state.seen, "{} ", request.uri());
    for value in request.headers().values() {
        let _ = write!(state.seen, "{} ", String::from_utf8_lossy(value.as_bytes()));
    }
    if state.refusing {
        return (StatusCode::UNAUTHORIZED, "credentials refused").into_response();
    }
    axum::Json(json!({"stats": {"queue": {"depth": state.value}}})).into_response()
}

impl Source for HttpApi {
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

/// The `scalerMetadata` key naming the metric the gRPC scaler serves.
pub(crate) const METRIC_NAME_KEY: &str = "metricName";
/// The `scalerMetadata` key of the gRPC scaler's activation threshold.
pub(crate) const ACTIVATION_KEY: &str = "activationThreshold";

/// What the gRPC external scaler answers.
#[derive(Default)]
struct GrpcState {
    value: f64,
    refusing: bool,
    seen: String,
}

/// An external scaler as the SDK's users write one: one metric, named by the trigger's
/// `metricName`, active while its value is above the trigger's `activationThreshold`.
pub(crate) struct GrpcScaler {
    addr: SocketAddr,
    state: Arc<Mutex<GrpcState>>,
}

impl GrpcScaler {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(GrpcState::default()));
        let server = tonic::transport::Server::builder()
            .add_service(ExternalScalerServer::new(Handler(state.clone())))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        Self { addr, state }
    }
}

impl Source for GrpcScaler {
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

struct Handler(Arc<Mutex<GrpcState>>);

/// What one call is answered from.
struct Answer {
    value: f64,
    threshold: f64,
    metric: String,
}

impl Handler {
    /// Records the call's metadata; the answer, or the refusal.
    fn answer(&self, reference: &ScaledObjectRef) -> Result<Answer, tonic::Status> {
        let mut state = self.0.lock().unwrap();
        let metadata = &reference.scaler_metadata;
        let _ = write!(
            state.seen,
            "{:?} ",
            metadata.iter().collect::<BTreeMap<_, _>>()
        );
        if state.refusing {
            return Err(tonic::Status::unauthenticated("credentials refused"));
        }
        Ok(Answer {
            value: state.value,
            threshold: metadata
                .get(ACTIVATION_KEY)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0.0),
            metric: metadata
                .get(METRIC_NAME_KEY)
                .cloned()
                .unwrap_or_else(|| "queue-depth".to_owned()),
        })
    }
}

#[tonic::async_trait]
impl ExternalScaler for Handler {
    async fn is_active(
        &self,
        request: tonic::Request<ScaledObjectRef>,
    ) -> Result<tonic::Response<IsActiveResponse>, tonic::Status> {
        let answer = self.answer(request.get_ref())?;
        Ok(tonic::Response::new(IsActiveResponse {
            result: answer.value > answer.threshold,
        }))
    }

    type StreamIsActiveStream = BoxStream<'static, Result<IsActiveResponse, tonic::Status>>;

    async fn stream_is_active(
        &self,
        request: tonic::Request<ScaledObjectRef>,
    ) -> Result<tonic::Response<Self::StreamIsActiveStream>, tonic::Status> {
        self.answer(request.get_ref())?;
        Ok(tonic::Response::new(Box::pin(futures::stream::pending())))
    }

    async fn get_metric_spec(
        &self,
        request: tonic::Request<ScaledObjectRef>,
    ) -> Result<tonic::Response<GetMetricSpecResponse>, tonic::Status> {
        let answer = self.answer(request.get_ref())?;
        Ok(tonic::Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: answer.metric,
                target_size: 10,
                target_size_float: 10.0,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: tonic::Request<GetMetricsRequest>,
    ) -> Result<tonic::Response<GetMetricsResponse>, tonic::Status> {
        let request = request.into_inner();
        let answer = self.answer(&request.scaled_object_ref.unwrap_or_default())?;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the deprecated integer value is only a fallback"
        )]
        let whole = answer.value as i64;
        Ok(tonic::Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: request.metric_name,
                metric_value: whole,
                metric_value_float: answer.value,
            }],
        }))
    }
}

/// The label selector of the pods the kube-sim source counts.
pub(crate) const POD_SELECTOR: &str = "app=compliance";

/// kube-sim, with as many running pods matching [`POD_SELECTOR`] in `default` as the value.
pub(crate) struct Kube {
    sim: kube_sim::KubeSim,
    pods: Api<Pod>,
    /// The pods that match, in creation order; the next pod's number.
    matching: tokio::sync::Mutex<(Vec<String>, usize)>,
}

impl Kube {
    pub(crate) async fn start() -> Self {
        let sim = kube_sim::start(kube_sim::Config::default()).await.unwrap();
        let pods = Api::namespaced(sim.client().unwrap(), "default");
        Self {
            sim,
            pods,
            matching: tokio::sync::Mutex::default(),
        }
    }
}

impl Source for Kube {
    fn addr(&self) -> SocketAddr {
        self.sim.addr
    }

    /// Creates matching pods, or takes the label off surplus ones, until `value` match.
    fn set(&self, value: f64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "pod counts are small whole numbers"
            )]
            let wanted = value as usize;
            let mut matching = self.matching.lock().await;
            let (names, next) = &mut *matching;
            while names.len() < wanted {
                let name = format!("p{next}");
                *next += 1;
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"app": "compliance"}},
                    "spec": {"containers": [{"name": "app", "image": "busybox"}]},
                    "status": {"phase": "Running"},
                }))
                .unwrap();
                self.pods
                    .create(&PostParams::default(), &pod)
                    .await
                    .unwrap();
                names.push(name);
            }
            while names.len() > wanted {
                let name = names.pop().unwrap();
                let relabel = json!({"metadata": {"labels": {"app": "retired"}}});
                self.pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(relabel))
                    .await
                    .unwrap();
            }
        })
    }

    fn refuse(&self) -> bool {
        false
    }

    fn seen(&self) -> String {
        String::new()
    }
}

/// A listener that accepts connections, counts them and closes them at once.
pub(crate) struct Tripwire {
    pub(crate) addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Tripwire {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Self { addr, accepted }
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
