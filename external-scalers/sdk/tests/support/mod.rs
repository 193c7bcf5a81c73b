//! A scaler for the SDK's tests and helpers to serve it on a loopback port.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of the support"
)]

use keda_external_scaler::proto::ScaledObjectRef;
use keda_external_scaler::testing::TestServer;
use keda_external_scaler::{
    BoxStream, Error, MetricSpec, MetricValue, Result, Scaler, ScalerRequest, Server,
    activity_changes,
};
use tokio::sync::watch;

/// The metric served by [`TestScaler`].
pub const METRIC: &str = "test-queue";

/// A scaler whose queue length the test sets. Metadata:
/// - `target` (f64, default 5): the target of [`METRIC`];
/// - `fail`: `unavailable` or `internal` makes every call fail that way;
/// - `second`: when present, a second metric `<second>` with target 0.25 is served;
/// - `set` (f64): `is_active` first sets the length to it (lets a client drive the stream).
#[derive(Debug)]
pub struct TestScaler {
    pub length: watch::Sender<f64>,
    /// Whether `activity_stream` pushes (true) or leaves it to the SDK's polling (false).
    pub push: bool,
}

impl TestScaler {
    pub fn new(push: bool) -> (Self, watch::Sender<f64>) {
        let (length, _) = watch::channel(0.0);
        (
            Self {
                length: length.clone(),
                push,
            },
            length,
        )
    }

    fn check(request: &ScalerRequest) -> Result<()> {
        match request.get("fail") {
            Some("unavailable") => Err(Error::unavailable("the test source is down")),
            Some("internal") => Err(Error::internal("the test source broke")),
            _ => Ok(()),
        }
    }
}

impl Scaler for TestScaler {
    async fn is_active(&self, request: &ScalerRequest) -> Result<bool> {
        Self::check(request)?;
        if request.get("set").is_some() {
            self.length.send_replace(request.parse_or("set", 0.0)?);
        }
        Ok(*self.length.borrow() > 0.0)
    }

    async fn metric_specs(&self, request: &ScalerRequest) -> Result<Vec<MetricSpec>> {
        Self::check(request)?;
        let mut specs = vec![MetricSpec::new(METRIC, request.parse_or("target", 5.0)?)];
        if let Some(second) = request.get("second") {
            specs.push(MetricSpec::new(second, 0.25));
        }
        Ok(specs)
    }

    async fn metric_values(
        &self,
        request: &ScalerRequest,
        metric_name: &str,
    ) -> Result<Vec<MetricValue>> {
        Self::check(request)?;
        if metric_name != METRIC {
            return Err(Error::not_found(format!("no metric {metric_name}")));
        }
        Ok(vec![MetricValue::new(METRIC, *self.length.borrow())])
    }

    async fn activity_stream(
        &self,
        request: &ScalerRequest,
    ) -> Result<Option<BoxStream<Result<bool>>>> {
        Self::check(request)?;
        if !self.push {
            return Ok(None);
        }
        let mut changes = self.length.subscribe();
        changes.mark_changed();
        Ok(Some(activity_changes(changes, |mut changes| async move {
            changes.changed().await.ok()?;
            let active = *changes.borrow_and_update() > 0.0;
            Some((Ok(active), changes))
        })))
    }
}

/// Serves `server` on a fresh loopback port.
pub async fn start<S: Scaler>(server: Server<S>) -> TestServer {
    TestServer::start(server).await
}

/// A `ScaledObjectRef` for `so` in `ns` with `metadata`.
pub fn scaled_object(so: &str, ns: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScalerRequest::from_pairs(so, ns, metadata).into()
}
