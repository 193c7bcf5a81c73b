//! The `external` and `external-push` triggers against gRPC external scalers started here:
//! metric specs, metrics and activity, the metadata servers receive, one connection shared by
//! many triggers, TLS, mutual TLS, `unsafeSsl`, and push streams that break and come back.
//!
//! Every server listens on a loopback port picked by the OS. Nothing asserts how long anything
//! took; waits only bound how long a test may hang.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use keda_operator::params::Params;
use keda_operator::scalers::external::{ExternalPool, PushBackoff};
use keda_operator::scalers::{
    self, MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput,
};
use keda_operator_crd::MetricTargetType;
use keda_proto::externalscaler::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use keda_proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricValue,
    ScaledObjectRef,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(15);

type Pushes = mpsc::UnboundedSender<Result<IsActiveResponse, Status>>;

/// What the test server answers.
#[derive(Clone, Default)]
struct Answers {
    specs: Vec<keda_proto::externalscaler::MetricSpec>,
    values: Vec<MetricValue>,
    active: bool,
    /// Answer unary calls only after this long.
    delay: Option<Duration>,
    /// Fail unary calls with this.
    error: Option<Status>,
}

/// What the test server saw.
#[derive(Default)]
struct Seen {
    /// TCP connections handed to the gRPC server.
    accepted: AtomicUsize,
    /// Of those, the ones that have ended.
    closed: AtomicUsize,
    /// When connections were turned away while the server was down.
    refused: Mutex<Vec<Instant>>,
    /// Every call: the RPC, its `ScaledObjectRef` and, for `GetMetrics`, the metric name.
    calls: Mutex<Vec<(&'static str, ScaledObjectRef, String)>>,
    /// The `grpc-timeout` of every unary call.
    deadlines: Mutex<Vec<Option<String>>>,
    /// A second handle on each live connection's socket, to break it from outside.
    sockets: Mutex<HashMap<usize, std::net::TcpStream>>,
}

impl Seen {
    fn calls(&self, rpc: &str) -> Vec<(ScaledObjectRef, String)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _, _)| *name == rpc)
            .map(|(_, reference, metric)| (reference.clone(), metric.clone()))
            .collect()
    }
}

/// An accepted connection that tells [`Seen`] when the server is done with it.
struct Counted {
    inner: TcpStream,
    id: usize,
    seen: Arc<Seen>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.seen.sockets.lock().unwrap().remove(&self.id);
        self.seen.closed.fetch_add(1, Ordering::SeqCst);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

struct Handler {
    seen: Arc<Seen>,
    answers: Arc<Mutex<Answers>>,
    streams: mpsc::UnboundedSender<Pushes>,
}

impl Handler {
    /// Records a call and returns the answers, after the configured delay.
    async fn answer(
        &self,
        rpc: &'static str,
        deadline: Option<String>,
        reference: ScaledObjectRef,
        metric: String,
    ) -> Result<Answers, Status> {
        self.seen.deadlines.lock().unwrap().push(deadline);
        self.seen
            .calls
            .lock()
            .unwrap()
            .push((rpc, reference, metric));
        let answers = self.answers.lock().unwrap().clone();
        if let Some(delay) = answers.delay {
            tokio::time::sleep(delay).await;
        }
        match answers.error.clone() {
            Some(status) => Err(status),
            None => Ok(answers),
        }
    }
}

/// The `grpc-timeout` header of a request.
fn deadline<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tonic::async_trait]
impl ExternalScaler for Handler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let answers = self
            .answer(
                "IsActive",
                deadline(&request),
                request.into_inner(),
                String::new(),
            )
            .await?;
        Ok(Response::new(IsActiveResponse {
            result: answers.active,
        }))
    }

    type StreamIsActiveStream = BoxStream<'static, Result<IsActiveResponse, Status>>;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        self.seen.calls.lock().unwrap().push((
            "StreamIsActive",
            request.into_inner(),
            String::new(),
        ));
        let (pushes, received) = mpsc::unbounded_channel();
        let _ = self.streams.send(pushes);
        Ok(Response::new(
            futures::stream::unfold(received, |mut received| async move {
                received.recv().await.map(|message| (message, received))
            })
            .boxed(),
        ))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let answers = self
            .answer(
                "GetMetricSpec",
                deadline(&request),
                request.into_inner(),
                String::new(),
            )
            .await?;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: answers.specs,
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let deadline = deadline(&request);
        let request = request.into_inner();
        let answers = self
            .answer(
                "GetMetrics",
                deadline,
                request.scaled_object_ref.unwrap_or_default(),
                request.metric_name,
            )
            .await?;
        Ok(Response::new(GetMetricsResponse {
            metric_values: answers.values,
        }))
    }
}

/// An external scaler on a loopback port, which can be taken down and brought back.
struct TestServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
    answers: Arc<Mutex<Answers>>,
    streams: mpsc::UnboundedReceiver<Pushes>,
    up: Arc<AtomicBool>,
}

impl TestServer {
    async fn start(tls: Option<ServerTlsConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let answers = Arc::new(Mutex::new(Answers::default()));
        let up = Arc::new(AtomicBool::new(true));
        let (connections, incoming) = mpsc::unbounded_channel::<Counted>();
        {
            let (seen, up) = (seen.clone(), up.clone());
            tokio::spawn(async move {
                let mut next_id = 0;
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        seen.refused.lock().unwrap().push(Instant::now());
                        drop(tcp);
                        continue;
                    }
                    let std = tcp.into_std().unwrap();
                    next_id += 1;
                    seen.sockets
                        .lock()
                        .unwrap()
                        .insert(next_id, std.try_clone().unwrap());
                    seen.accepted.fetch_add(1, Ordering::SeqCst);
                    let counted = Counted {
                        inner: TcpStream::from_std(std).unwrap(),
                        id: next_id,
                        seen: seen.clone(),
                    };
                    let _ = connections.send(counted);
                }
            });
        }
        let incoming = futures::stream::unfold(incoming, |mut incoming| async move {
            incoming
                .recv()
                .await
                .map(|io| (Ok::<_, std::io::Error>(io), incoming))
        });
        let (streams_sender, streams) = mpsc::unbounded_channel();
        let handler = Handler {
            seen: seen.clone(),
            answers: answers.clone(),
            streams: streams_sender,
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        tokio::spawn(
            builder
                .add_service(ExternalScalerServer::new(handler))
                .serve_with_incoming(incoming),
        );
        Self {
            addr,
            seen,
            answers,
            streams,
            up,
        }
    }

    fn answer(&self, change: impl FnOnce(&mut Answers)) {
        change(&mut self.answers.lock().unwrap());
    }

    /// Down: new connections are closed at once and open ones are broken. Up: served again.
    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for socket in self.seen.sockets.lock().unwrap().values() {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// The next `StreamIsActive` stream a client opens.
    async fn next_stream(&mut self) -> Pushes {
        tokio::time::timeout(PATIENCE, self.streams.recv())
            .await
            .expect("no StreamIsActive stream was opened")
            .unwrap()
    }

    /// Waits until `check` holds.
    async fn wait_for(&self, what: &str, check: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check(&self.seen) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn spec(name: &str, size: i64, float: f64) -> keda_proto::externalscaler::MetricSpec {
    keda_proto::externalscaler::MetricSpec {
        metric_name: name.into(),
        target_size: size,
        target_size_float: float,
    }
}

fn value(name: &str, int: i64, float: f64) -> MetricValue {
    MetricValue {
        metric_name: name.into(),
        metric_value: int,
        metric_value_float: float,
    }
}

/// Services whose Kubernetes client is never used; push streams retry quickly.
fn services() -> Services {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let mut services = Services::new(kube::Client::try_from(config).unwrap());
    services.external = Arc::new(ExternalPool::with_push_backoff(PushBackoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    }));
    services
}

/// A trigger of the ScaledObject `shop/orders`.
fn trigger(
    trigger_type: &str,
    index: usize,
    metadata: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> TriggerInput {
    let mut input = TriggerInput::new(
        index,
        trigger_type,
        Params::from_metadata(metadata.iter().copied()).with_auth(auth.iter().copied()),
    );
    input.scaled_object = "orders".into();
    input.namespace = "shop".into();
    input
}

fn source_error<T: std::fmt::Debug>(result: Result<T, ScalerError>) -> String {
    match result {
        Err(ScalerError::Source(message)) => message,
        other => panic!("expected a source error, got {other:?}"),
    }
}

#[tokio::test]
async fn specs_metrics_and_activity_round_trip_with_the_trigger_metadata() {
    let server = TestServer::start(None).await;
    server.answer(|a| {
        a.specs = vec![spec("Queue.Depth", 10, 0.0), spec("lag", 3, 2.5)];
        a.values = vec![value("x", 2, 0.0), value("y", 9, 1.25), value("z", -4, 0.0)];
        a.active = true;
    });
    let address = server.addr.to_string();
    let mut input = trigger(
        "external",
        1,
        &[
            ("scalerAddress", address.as_str()),
            ("queue", "orders"),
            ("passwordFromEnv", "PASSWORD"),
            ("userFromEnv", "MISSING"),
        ],
        &[],
    );
    input.params = input.params.with_env([("PASSWORD", "s3cret")]);
    input.metric_type = MetricTargetType::Value;
    let services = services();
    let scaler = scalers::build(&input, &services).unwrap();
    assert!(scaler.metric_specs().is_empty());
    assert!(scaler.activity_pushes().is_none());
    scaler.prepare().await.unwrap();
    assert_eq!(
        scaler.metric_specs(),
        [
            MetricSpec::External {
                name: "s1-Queue.Depth".into(),
                target_type: MetricTargetType::Value,
                target: 10.0,
            },
            MetricSpec::External {
                name: "s1-lag".into(),
                target_type: MetricTargetType::Value,
                target: 2.5,
            },
        ]
    );
    assert_eq!(
        scaler.read("s1-lag").await,
        Ok(Reading {
            value: 3.25,
            active: true
        })
    );
    server.answer(|a| a.active = false);
    assert!(!scaler.read("s1-Queue.Depth").await.unwrap().active);
    assert_eq!(
        scaler.read("s1-other").await,
        Err(ScalerError::NoSuchMetric("s1-other".into()))
    );

    let expected = ScaledObjectRef {
        name: "orders".into(),
        namespace: "shop".into(),
        scaler_metadata: BTreeMap::from([
            ("passwordFromEnv".to_owned(), "s3cret".to_owned()),
            ("queue".to_owned(), "orders".to_owned()),
            ("scalerAddress".to_owned(), address.clone()),
        ]),
    };
    let seen = &server.seen;
    assert_eq!(
        seen.calls("GetMetricSpec"),
        [(expected.clone(), String::new())]
    );
    assert_eq!(
        seen.calls("GetMetrics"),
        [
            (expected.clone(), "lag".to_owned()),
            (expected.clone(), "Queue.Depth".to_owned())
        ]
    );
    assert_eq!(seen.calls("IsActive").len(), 2);
    assert!(seen.calls("IsActive").iter().all(|(r, _)| *r == expected));

    // Each call carried its deadline.
    assert!(
        seen.deadlines
            .lock()
            .unwrap()
            .iter()
            .all(|deadline| deadline.as_deref() == Some("3000000u")),
        "{:?}",
        seen.deadlines.lock().unwrap()
    );
}

#[tokio::test]
async fn server_errors_deadlines_and_empty_specs_fail_the_trigger() {
    let server = TestServer::start(None).await;
    server.answer(|a| a.specs = vec![spec("lag", 3, 0.0)]);
    let address = server.addr.to_string();
    let services = services();
    let mut input = trigger("external", 1, &[("scalerAddress", address.as_str())], &[]);
    input.http_timeout = Duration::from_millis(300);
    let scaler = scalers::build(&input, &services).unwrap();
    scaler.prepare().await.unwrap();

    server.answer(|a| a.error = Some(Status::internal("queue backend down")));
    assert_eq!(
        source_error(scaler.read("s1-lag").await),
        format!("external scaler {address}: GetMetrics: Internal: queue backend down")
    );

    // Answers later than the deadline.
    server.answer(|a| {
        a.error = None;
        a.delay = Some(Duration::from_secs(5));
    });
    let message = source_error(scaler.read("s1-lag").await);
    assert!(
        message.starts_with(&format!("external scaler {address}: GetMetrics: ")),
        "{message}"
    );
    let message = source_error(scaler.prepare().await);
    assert!(
        message.starts_with(&format!("external scaler {address}: GetMetricSpec: ")),
        "{message}"
    );

    // No specs at all.
    server.answer(|a| {
        a.delay = None;
        a.specs.clear();
    });
    let empty = scalers::build(&input, &services).unwrap();
    assert_eq!(
        empty.prepare().await,
        Err(ScalerError::Source("got empty metric spec".into()))
    );
    // All of these shared one connection.
    assert_eq!(server.seen.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unreachable_server_fails_every_stage() {
    let mut server = TestServer::start(None).await;
    server.answer(|a| {
        a.specs = vec![spec("queue", 5, 0.0)];
        a.active = true;
    });
    let address = server.addr.to_string();
    let services = services();
    let input = trigger(
        "external-push",
        0,
        &[("scalerAddress", address.as_str())],
        &[],
    );
    let scaler = scalers::build(&input, &services).unwrap();
    scaler.prepare().await.unwrap();
    assert!(scaler.read("s0-queue").await.unwrap().active);
    let mut pushes = scaler.activity_pushes().unwrap();
    // Streams are opened by polling.
    assert!(!pushed_soon(&mut pushes).await);
    let stream = server.next_stream().await;

    server.set_up(false);
    let message = source_error(scaler.read("s0-queue").await);
    assert!(
        message.starts_with(&format!("external scaler {address}: ")),
        "{message}"
    );
    let message = source_error(scaler.prepare().await);
    assert!(
        message.starts_with(&format!("external scaler {address}: GetMetricSpec: ")),
        "{message}"
    );
    let again = scalers::build(&input, &services).unwrap();
    source_error(again.prepare().await);
    // The push stream broke with the connection and yields nothing while the server is down.
    let _ = stream.send(Ok(IsActiveResponse { result: true }));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), pushes.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn two_hundred_triggers_share_one_connection_closed_with_the_last() {
    let server = TestServer::start(None).await;
    server.answer(|a| a.specs = vec![spec("queue", 5, 0.0)]);
    let address = server.addr.to_string();
    let services = services();
    let built: Vec<Box<dyn Scaler>> = (0..200)
        .map(|i| {
            let mut input = trigger(
                "external",
                i % 3,
                &[("scalerAddress", address.as_str())],
                &[],
            );
            input.scaled_object = format!("orders-{i}");
            scalers::build(&input, &services).unwrap()
        })
        .collect();
    let prepared = futures::future::join_all(built.iter().map(|s| s.prepare())).await;
    assert!(prepared.iter().all(Result::is_ok));
    assert_eq!(server.seen.calls("GetMetricSpec").len(), 200);
    assert_eq!(server.seen.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(services.external.connections(), 1);
    assert_eq!(server.seen.closed.load(Ordering::SeqCst), 0);

    let (half, rest): (Vec<_>, Vec<_>) =
        built.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    drop(half);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.seen.closed.load(Ordering::SeqCst), 0);
    assert_eq!(services.external.connections(), 1);
    drop(rest);
    assert_eq!(services.external.connections(), 0);
    server
        .wait_for("the connection to close", |seen| {
            seen.closed.load(Ordering::SeqCst) == 1
        })
        .await;
    assert_eq!(server.seen.accepted.load(Ordering::SeqCst), 1);
}

/// A certificate for `names` and its key, in PEM, signed by `issuer` or self-signed.
fn certificate(
    names: &[&str],
    issuer: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), key.serialize_pem())
}

/// A CA named `name`: its certificate in PEM and what signs with it.
fn authority(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

/// Builds an external trigger at `address` and asks for its specs.
async fn prepare(
    services: &Services,
    address: &str,
    metadata: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> Result<Box<dyn Scaler>, ScalerError> {
    let mut all = vec![("scalerAddress", address)];
    all.extend_from_slice(metadata);
    let scaler = scalers::build(&trigger("external", 0, &all, auth), services)?;
    scaler.prepare().await?;
    Ok(scaler)
}

#[tokio::test]
async fn tls_trusts_the_given_ca_and_nothing_else() {
    let (ca, issuer) = authority("CA 1");
    let (other_ca, _) = authority("CA 2");
    let (cert, key) = certificate(&["localhost"], Some(&issuer));
    let server = TestServer::start(Some(
        ServerTlsConfig::new().identity(Identity::from_pem(&cert, &key)),
    ))
    .await;
    server.answer(|a| a.specs = vec![spec("queue", 5, 0.0)]);
    let address = format!("localhost:{}", server.addr.port());
    let services = services();

    let scaler = prepare(&services, &address, &[], &[("caCert", ca.as_str())])
        .await
        .unwrap();
    assert_eq!(scaler.metric_specs().len(), 1);
    // enableTLS adds nothing when a CA already turns TLS on: the same connection.
    prepare(
        &services,
        &address,
        &[("enableTLS", "true")],
        &[("caCert", ca.as_str())],
    )
    .await
    .unwrap();
    assert_eq!(services.external.connections(), 1);

    let message =
        source_error(prepare(&services, &address, &[], &[("caCert", other_ca.as_str())]).await);
    assert!(message.contains("invalid peer certificate"), "{message}");
    assert!(message.starts_with(&format!("external scaler {address}: GetMetricSpec: ")));
    // Not among the system's roots either.
    let message = source_error(prepare(&services, &address, &[("enableTLS", "true")], &[]).await);
    assert!(message.contains("invalid peer certificate"), "{message}");
    // Plain text to a TLS server.
    source_error(prepare(&services, &address, &[], &[]).await);
    // A CA in plain metadata is refused before anything is sent.
    assert!(matches!(
        prepare(&services, &address, &[("caCert", ca.as_str())], &[]).await,
        Err(ScalerError::Param(_))
    ));
    assert_eq!(server.seen.calls("GetMetricSpec").len(), 2);
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let (ca, issuer) = authority("CA 1");
    let (other_ca, other_issuer) = authority("CA 2");
    let (server_cert, server_key) = certificate(&["localhost"], Some(&issuer));
    let (client_cert, client_key) = certificate(&["keda-operator"], Some(&issuer));
    let (stranger_cert, stranger_key) = certificate(&["keda-operator"], Some(&other_issuer));
    let server = TestServer::start(Some(
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&server_cert, &server_key))
            .client_ca_root(Certificate::from_pem(&ca)),
    ))
    .await;
    server.answer(|a| a.specs = vec![spec("queue", 5, 0.0)]);
    let address = format!("localhost:{}", server.addr.port());
    let services = services();

    prepare(
        &services,
        &address,
        &[],
        &[
            ("caCert", ca.as_str()),
            ("tlsClientCert", client_cert.as_str()),
            ("tlsClientKey", client_key.as_str()),
        ],
    )
    .await
    .unwrap();
    // Without a client certificate, or with one the server does not trust.
    source_error(prepare(&services, &address, &[], &[("caCert", ca.as_str())]).await);
    source_error(
        prepare(
            &services,
            &address,
            &[],
            &[
                ("caCert", ca.as_str()),
                ("tlsClientCert", stranger_cert.as_str()),
                ("tlsClientKey", stranger_key.as_str()),
            ],
        )
        .await,
    );
    // A server certificate from another CA than the one given.
    source_error(
        prepare(
            &services,
            &address,
            &[],
            &[
                ("caCert", other_ca.as_str()),
                ("tlsClientCert", client_cert.as_str()),
                ("tlsClientKey", client_key.as_str()),
            ],
        )
        .await,
    );
    // A key that is not the certificate's.
    assert_eq!(
        prepare(
            &services,
            &address,
            &[],
            &[
                ("caCert", ca.as_str()),
                ("tlsClientCert", client_cert.as_str()),
                ("tlsClientKey", stranger_key.as_str()),
            ],
        )
        .await
        .map(|_| ())
        .unwrap_err()
        .category(),
        "config"
    );
    assert_eq!(server.seen.calls("GetMetricSpec").len(), 1);
}

#[tokio::test]
async fn unsafe_ssl_accepts_a_self_signed_server_under_any_name() {
    let (cert, key) = certificate(&["scaler.example"], None);
    let server = TestServer::start(Some(
        ServerTlsConfig::new().identity(Identity::from_pem(&cert, &key)),
    ))
    .await;
    server.answer(|a| a.specs = vec![spec("queue", 5, 0.0)]);
    let address = server.addr.to_string();
    let services = services();

    source_error(prepare(&services, &address, &[("enableTLS", "true")], &[]).await);
    prepare(
        &services,
        &address,
        &[("enableTLS", "true"), ("unsafeSsl", "true")],
        &[],
    )
    .await
    .unwrap();
    // unsafeSsl alone does not turn TLS on.
    source_error(prepare(&services, &address, &[("unsafeSsl", "true")], &[]).await);
    assert_eq!(server.seen.calls("GetMetricSpec").len(), 1);
}

/// The next push, or `None` if the stream ended; panics if nothing comes.
async fn next_push(pushes: &mut BoxStream<'static, ()>) -> Option<()> {
    tokio::time::timeout(PATIENCE, pushes.next())
        .await
        .expect("no push arrived")
}

/// Whether a push arrives within a short while.
async fn pushed_soon(pushes: &mut BoxStream<'static, ()>) -> bool {
    tokio::time::timeout(Duration::from_millis(300), pushes.next())
        .await
        .is_ok()
}

#[tokio::test]
async fn push_streams_yield_on_true_and_come_back_after_breaking() {
    let mut server = TestServer::start(None).await;
    server.answer(|a| a.specs = vec![spec("queue", 5, 0.0)]);
    let address = server.addr.to_string();
    let services = services();
    let scaler = scalers::build(
        &trigger(
            "external-push",
            0,
            &[("scalerAddress", address.as_str())],
            &[],
        ),
        &services,
    )
    .unwrap();
    scaler.prepare().await.unwrap();
    let mut pushes = scaler.activity_pushes().unwrap();
    let active = || Ok(IsActiveResponse { result: true });
    let inactive = || Ok(IsActiveResponse { result: false });

    // Streams are opened by polling.
    assert!(!pushed_soon(&mut pushes).await);
    let first = server.next_stream().await;
    first.send(inactive()).unwrap();
    first.send(inactive()).unwrap();
    assert!(!pushed_soon(&mut pushes).await);
    first.send(active()).unwrap();
    assert_eq!(next_push(&mut pushes).await, Some(()));
    first.send(inactive()).unwrap();
    first.send(active()).unwrap();
    first.send(active()).unwrap();
    assert_eq!(next_push(&mut pushes).await, Some(()));
    assert_eq!(next_push(&mut pushes).await, Some(()));
    assert!(!pushed_soon(&mut pushes).await);

    // The server ends the stream cleanly: a new one is opened.
    drop(first);
    assert!(!pushed_soon(&mut pushes).await);
    let second = server.next_stream().await;
    second.send(active()).unwrap();
    assert_eq!(next_push(&mut pushes).await, Some(()));
    // The server fails the stream: a new one is opened.
    second.send(Err(Status::unavailable("restarting"))).unwrap();
    assert!(!pushed_soon(&mut pushes).await);
    let third = server.next_stream().await;
    third.send(active()).unwrap();
    assert_eq!(next_push(&mut pushes).await, Some(()));
    let streams = server.seen.calls("StreamIsActive");
    assert_eq!(streams.len(), 3);
    assert_eq!(streams[0].0.name, "orders");

    // The server goes away: attempts back off instead of spinning.
    server.set_up(false);
    let consumer = tokio::spawn(async move {
        let arrived = next_push(&mut pushes).await;
        (arrived, pushes)
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let attempts = server.seen.refused.lock().unwrap().clone();
    assert!(attempts.len() >= 3, "{} attempts", attempts.len());
    // 50 ms doubling to 400 ms gives about 8 in 2.5 s; a loop without waits gives thousands.
    assert!(attempts.len() <= 20, "{} attempts", attempts.len());
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.last() > gaps.first(), "{gaps:?}");

    // Back up: the stream is re-opened and pushes flow again.
    server.set_up(true);
    let fourth = server.next_stream().await;
    fourth.send(active()).unwrap();
    let (arrived, mut pushes) = tokio::time::timeout(PATIENCE, consumer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(arrived, Some(()));

    // Dropping the scaler ends the stream and lets the connection go.
    drop(scaler);
    assert_eq!(next_push(&mut pushes).await, None);
    drop(pushes);
    assert_eq!(services.external.connections(), 0);
    server
        .wait_for("every connection to close", |seen| {
            seen.closed.load(Ordering::SeqCst) == seen.accepted.load(Ordering::SeqCst)
        })
        .await;
}
