//! Helpers for a scaler's integration tests (feature `testing`; enable it in
//! `[dev-dependencies]`): serve the scaler on a loopback port, call it with a tonic client, and
//! reach the event source the tests read.
//!
//! They fail the test the way tests fail: by panicking, with a message saying what did not
//! happen.
//!
//! ```no_run
//! use keda_external_scaler::testing::{self, TestServer};
//! use keda_external_scaler::{ScalerRequest, Server};
//! # use keda_external_scaler::{MetricSpec, MetricValue, Result, Scaler};
//! # struct MyScaler;
//! # impl Scaler for MyScaler {
//! #     async fn is_active(&self, _: &ScalerRequest) -> Result<bool> { Ok(true) }
//! #     async fn metric_specs(&self, _: &ScalerRequest) -> Result<Vec<MetricSpec>> { Ok(vec![]) }
//! #     async fn metric_values(&self, _: &ScalerRequest, _: &str) -> Result<Vec<MetricValue>> {
//! #         Ok(vec![])
//! #     }
//! # }
//!
//! #[tokio::test]
//! async fn a_full_queue_is_active() {
//!     let server = TestServer::start(Server::new(MyScaler)).await;
//!     let mut client = server.client().await;
//!     let so = ScalerRequest::from_pairs("worker", "jobs", &[("queue", "mail")]);
//!     let answer = testing::within("IsActive", client.is_active(so.into())).await;
//!     assert!(answer.unwrap().into_inner().result);
//!     server.shutdown().await.unwrap();
//! }
//! # fn main() {}
//! ```

#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "test helpers fail the test by panicking, as the module's documentation says"
)]

use std::ffi::OsString;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keda_proto::externalscaler::external_scaler_client::ExternalScalerClient;
use keda_proto::externalscaler::{GetMetricsRequest, IsActiveResponse, ScaledObjectRef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::scaler::Scaler;
use crate::server::{ServeError, Server};

/// The longest one step of a test (connecting, a call, the next stream message) may take before
/// the helpers fail the test.
pub const STEP: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test when it takes longer than [`STEP`]; `what` names the step
/// in the message.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP:?}"))
}

/// A [`Server`] serving on a fresh loopback port until [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and serves `server` there on a task of its own.
    pub async fn start<S: Scaler>(server: Server<S>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("the bound port has no address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve_on(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A plaintext client of it.
    pub async fn client(&self) -> ExternalScalerClient<Channel> {
        client(self.addr).await
    }

    /// Signals shutdown without waiting for the server to return: what happens while it drains
    /// can be observed before [`shutdown`](Self::shutdown).
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown (unless [begun](Self::begin_shutdown) already) and returns what the
    /// server returned.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.begin_shutdown();
        within("the server's shutdown", self.task)
            .await
            .expect("the server task panicked")
    }
}

/// A plaintext client of the scaler at `addr`.
pub async fn client(addr: SocketAddr) -> ExternalScalerClient<Channel> {
    let endpoint =
        Channel::from_shared(format!("http://{addr}")).expect("a socket address is a valid URI");
    let channel = within(&format!("connecting to {addr}"), endpoint.connect())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    ExternalScalerClient::new(channel)
}

/// `IsActive` for `so`: the answer. Fails the test on an error status.
pub async fn is_active(client: &mut ExternalScalerClient<Channel>, so: &ScaledObjectRef) -> bool {
    within("IsActive", client.is_active(so.clone()))
        .await
        .unwrap_or_else(|status| panic!("IsActive failed: {status:?}"))
        .into_inner()
        .result
}

/// `GetMetricSpec` for `so`: each metric's name with its target as sent in the integer
/// (`targetSize`) and the float (`targetSizeFloat`) field. Fails the test on an error status.
pub async fn metric_specs(
    client: &mut ExternalScalerClient<Channel>,
    so: &ScaledObjectRef,
) -> Vec<(String, i64, f64)> {
    within("GetMetricSpec", client.get_metric_spec(so.clone()))
        .await
        .unwrap_or_else(|status| panic!("GetMetricSpec failed: {status:?}"))
        .into_inner()
        .metric_specs
        .into_iter()
        .map(|spec| (spec.metric_name, spec.target_size, spec.target_size_float))
        .collect()
}

/// `GetMetrics` for `metric` of `so`: the value as sent in the integer (`metricValue`) and the
/// float (`metricValueFloat`) field. Fails the test on an error status, or unless exactly one
/// value named `metric` came back.
pub async fn metric_value(
    client: &mut ExternalScalerClient<Channel>,
    so: &ScaledObjectRef,
    metric: &str,
) -> (i64, f64) {
    let request = GetMetricsRequest {
        scaled_object_ref: Some(so.clone()),
        metric_name: metric.to_owned(),
    };
    let values = within("GetMetrics", client.get_metrics(request))
        .await
        .unwrap_or_else(|status| panic!("GetMetrics failed: {status:?}"))
        .into_inner()
        .metric_values;
    match values.as_slice() {
        [value] if value.metric_name == metric => (value.metric_value, value.metric_value_float),
        _ => panic!("expected one value of {metric:?}, got {values:?}"),
    }
}

/// The next message of a `StreamIsActive` stream: `Some(answer)`, or `None` when the stream
/// ended cleanly. Fails the test on an error status or when nothing comes within [`STEP`];
/// `what` names the message awaited.
pub async fn next_activity(stream: &mut Streaming<IsActiveResponse>, what: &str) -> Option<bool> {
    within(what, stream.message())
        .await
        .unwrap_or_else(|status| panic!("{what}: the stream failed: {status:?}"))
        .map(|message| message.result)
}

/// A name no other test (or test run) uses, for the tables, keys or queues a test creates:
/// `<prefix><sep><process id><sep><counter><sep><nanoseconds>`.
pub fn unique_name(prefix: &str, separator: char) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("{prefix}{separator}{pid}{separator}{n}{separator}{nanos}")
}

/// An event source (a database, a broker) that integration tests read: at the URL of an
/// environment variable when it is set, else at a default URL on this machine, which a command
/// may start when it is down.
#[derive(Debug, Clone)]
pub struct TestService {
    name: String,
    env: String,
    url: String,
    from_env: bool,
    start: Option<(OsString, Vec<OsString>)>,
}

impl TestService {
    /// `name` (for messages) at the URL in the environment variable `env` when it is set and not
    /// empty, else at `default_url`.
    pub fn new(name: impl Into<String>, env: impl Into<String>, default_url: &str) -> Self {
        let env = env.into();
        let (url, from_env) = match std::env::var(&env) {
            Ok(url) if !url.is_empty() => (url, true),
            _ => (default_url.to_owned(), false),
        };
        Self {
            name: name.into(),
            env,
            url,
            from_env,
            start: None,
        }
    }

    /// When the default URL does not answer, [`connect`](Self::connect) runs `program` with
    /// `args` (which should start the service and exit 0 once it is up) and tries again. A URL
    /// from the environment is never started.
    #[must_use]
    pub fn start_with<I, A>(mut self, program: impl Into<OsString>, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.start = Some((program.into(), args.into_iter().map(Into::into).collect()));
        self
    }

    /// The URL the tests use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connects with `connect` (given the URL), starting the service first when it is down and
    /// [startable](Self::start_with). Fails the test when it stays unreachable.
    pub async fn connect<T, E: Display>(&self, connect: impl AsyncFn(&str) -> Result<T, E>) -> T {
        let (name, url) = (&self.name, &self.url);
        let first = match within(&format!("connecting to {name}"), connect(url)).await {
            Ok(connection) => return connection,
            Err(first) => first,
        };
        assert!(
            !self.from_env,
            "{name} at {}={url} is unreachable: {first}",
            self.env
        );
        let Some((program, args)) = &self.start else {
            panic!("{name} at {url} is unreachable: {first}");
        };
        let shown = std::path::Path::new(program).display();
        eprintln!("{name} at {url} is not reachable ({first}); starting it");
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
        assert!(
            status.success(),
            "{name} is down and {shown} could not start it (see above)"
        );
        within(&format!("connecting to {name}"), connect(url))
            .await
            .unwrap_or_else(|e| panic!("{name} at {url} still unreachable: {e}"))
    }
}
