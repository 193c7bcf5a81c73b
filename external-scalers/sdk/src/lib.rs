//! Write [KEDA] external scalers in Rust.
//!
//! Implement [`Scaler`] (whether the workload should run, which metrics it scales on and their
//! current values, and optionally a push stream of activity), hand it to [`Server`], and you get
//! a gRPC server that speaks KEDA's `externalscaler.ExternalScaler` byte for byte (the contract
//! of `keda-proto`), with TLS or mTLS, the standard `grpc.health.v1` health service, graceful
//! shutdown, and a tracing span per call carrying the ScaledObject's name and namespace.
//!
//! It works with KEDA's `external` trigger (KEDA polls `IsActive`, `GetMetricSpec` and
//! `GetMetrics`) and with `external-push` (KEDA also keeps `StreamIsActive` open and activates
//! the workload as soon as the stream says `true`).
//!
//! Compatibility with older KEDA versions: each metric target and value is sent in the float
//! field (`targetSizeFloat` / `metricValueFloat`, read by KEDA 2.17 and later) and, rounded, in
//! the deprecated integer field (`targetSize` / `metricValue`) that older versions read.
//! A positive target below 0.5 is sent as integer 1, since a target of 0 is invalid.
//!
//! Errors carry an [`ErrorKind`] that picks the gRPC status: invalid metadata →
//! `INVALID_ARGUMENT`, source down → `UNAVAILABLE`, unknown metric → `NOT_FOUND`, anything else
//! → `INTERNAL`.
//!
//! Optional modules: `cli` (feature `cli`) for a scaler's command line, `testing` (feature
//! `testing`) for its integration tests.
//!
//! See the crate's `README.md` for a complete example.
//!
//! [KEDA]: https://keda.sh

#[cfg(feature = "cli")]
pub mod cli;
mod error;
mod scaler;
mod server;
mod service;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, ErrorKind, Result};
pub use scaler::{
    BoxStream, MetricSpec, MetricValue, Scaler, ScalerRequest, activity_changes,
    normalize_metric_name,
};
pub use server::{
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_STREAM_POLL_INTERVAL, ServeError, Server, shutdown_signal,
};
pub use service::ScalerService;

/// The protobuf types and generated tonic code of the external scaler contract, for tests and
/// for mounting [`ScalerService`] by hand.
pub use keda_proto::externalscaler as proto;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
