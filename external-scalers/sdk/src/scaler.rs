//! The trait a scaler implements and the plain types it works with.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use futures::Stream;
use keda_proto::externalscaler as pb;

use crate::error::{Error, Result};

/// A boxed stream of activity changes, as returned by [`Scaler::activity_stream`].
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send + 'static>>;

/// Who is asking and with which trigger metadata: the content of KEDA's `ScaledObjectRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalerRequest {
    /// Name of the ScaledObject (or ScaledJob).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The trigger's `metadata` map. It includes `scalerAddress`; keys ending in `FromEnv` carry
    /// the resolved value of the scale target container's environment variable.
    pub metadata: BTreeMap<String, String>,
}

impl ScalerRequest {
    /// The metadata value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The metadata value of `key`, or an [`invalid_metadata`](Error::invalid_metadata) error
    /// naming the key when it is missing or empty.
    pub fn required(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(Error::invalid_metadata(format!(
                "metadata key `{key}` is required"
            ))),
        }
    }

    /// The metadata value of `key` parsed as `T`, or `default` when the key is missing or empty.
    /// A value that does not parse is an [`invalid_metadata`](Error::invalid_metadata) error.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(value) => value.trim().parse().map_err(|e| {
                Error::invalid_metadata(format!("metadata `{key}`: cannot parse {value:?}: {e}"))
            }),
        }
    }
}

impl From<pb::ScaledObjectRef> for ScalerRequest {
    fn from(r: pb::ScaledObjectRef) -> Self {
        Self {
            name: r.name,
            namespace: r.namespace,
            metadata: r.scaler_metadata,
        }
    }
}

/// One metric the scaler serves and its target (the value per replica the HPA aims for).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// The metric name. KEDA names the HPA metric `s<triggerIndex>-<name>`.
    pub name: String,
    /// The target value (`AverageValue` per replica unless the trigger says otherwise).
    pub target: f64,
}

impl MetricSpec {
    /// A metric `name` with `target`.
    pub fn new(name: impl Into<String>, target: f64) -> Self {
        Self {
            name: name.into(),
            target,
        }
    }
}

/// The current value of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    /// The metric name (KEDA renames every value to the metric it asked for).
    pub name: String,
    /// The value.
    pub value: f64,
}

impl MetricValue {
    /// `value` for the metric `name`.
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }
}

/// An external scaler: implement this, hand it to [`Server`](crate::Server).
///
/// The methods are `async fn`s in the implementation; the trait spells them as functions
/// returning `impl Future + Send` so that the futures can run on a multi-threaded server (write
/// `async fn` in your `impl` block all the same). No macro is needed.
///
/// Every method gets the [`ScalerRequest`] of the call: KEDA does not keep per-ScaledObject
/// state on the scaler's side, so each call carries the trigger metadata again.
pub trait Scaler: Send + Sync + 'static {
    /// Whether the workload should run at all (KEDA's activation: 0 ↔ 1 replicas).
    /// `IsActive`.
    fn is_active(&self, request: &ScalerRequest) -> impl Future<Output = Result<bool>> + Send;

    /// The metrics (and their targets) the HPA scales on. `GetMetricSpec`.
    fn metric_specs(
        &self,
        request: &ScalerRequest,
    ) -> impl Future<Output = Result<Vec<MetricSpec>>> + Send;

    /// The current values of `metric_name`, one of the names returned by
    /// [`metric_specs`](Self::metric_specs). `GetMetrics`.
    fn metric_values(
        &self,
        request: &ScalerRequest,
        metric_name: &str,
    ) -> impl Future<Output = Result<Vec<MetricValue>>> + Send;

    /// A push stream of activity for `external-push` triggers (`StreamIsActive`).
    ///
    /// Each `Ok(true)` makes KEDA activate the workload at once; `Ok(false)` is ignored by KEDA
    /// (deactivation goes through polling and the cooldown). An `Err` ends the stream with that
    /// error's status; KEDA then re-opens it with backoff. An error returned before the stream
    /// (for example, invalid metadata) is answered as the call's status.
    ///
    /// The default returns `Ok(None)`: the server then polls [`is_active`](Self::is_active) every
    /// [`Server::stream_poll_interval`](crate::Server::stream_poll_interval) and sends the
    /// first answer and every change. `StreamIsActive` is therefore never `UNIMPLEMENTED`.
    fn activity_stream(
        &self,
        request: &ScalerRequest,
    ) -> impl Future<Output = Result<Option<BoxStream<Result<bool>>>>> + Send {
        let _ = request;
        async { Ok(None) }
    }
}

/// The deprecated integer field that goes with a float, for KEDA versions before 2.17, which
/// read only the integer: the float rounded half away from zero, saturating at the `i64` range
/// (NaN gives 0).
#[allow(
    clippy::cast_possible_truncation,
    reason = "`as` saturates at the i64 range and maps NaN to 0, which is what is wanted"
)]
pub(crate) fn legacy_int(value: f64) -> i64 {
    value.round() as i64
}

/// The integer target for older KEDA versions: like [`legacy_int`], but a positive target never
/// becomes 0 (an HPA target of 0 is invalid), so targets in (0, 0.5) give 1.
pub(crate) fn legacy_target(target: f64) -> i64 {
    let rounded = legacy_int(target);
    if target > 0.0 && rounded == 0 {
        1
    } else {
        rounded
    }
}

impl From<MetricSpec> for pb::MetricSpec {
    fn from(spec: MetricSpec) -> Self {
        Self {
            target_size: legacy_target(spec.target),
            target_size_float: spec.target,
            metric_name: spec.name,
        }
    }
}

impl From<MetricValue> for pb::MetricValue {
    fn from(value: MetricValue) -> Self {
        Self {
            metric_value: legacy_int(value.value),
            metric_value_float: value.value,
            metric_name: value.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> ScalerRequest {
        ScalerRequest {
            name: "so".into(),
            namespace: "ns".into(),
            metadata: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn metadata_helpers_report_the_key_that_is_wrong() {
        let r = request(&[("target", "7"), ("bad", "x"), ("empty", "")]);
        assert_eq!(r.required("target").unwrap(), "7");
        let missing = r.required("queue").unwrap_err();
        assert_eq!(missing.kind(), crate::ErrorKind::InvalidMetadata);
        assert!(missing.message().contains("`queue`"), "{missing}");
        assert!(r.required("empty").is_err());
        assert_eq!(r.parse_or("target", 5_u32).unwrap(), 7);
        assert_eq!(r.parse_or("absent", 5_u32).unwrap(), 5);
        assert_eq!(r.parse_or("empty", 5_u32).unwrap(), 5);
        let bad = r.parse_or("bad", 5_u32).unwrap_err();
        assert_eq!(bad.kind(), crate::ErrorKind::InvalidMetadata);
        assert!(bad.message().contains("`bad`"), "{bad}");
    }

    #[test]
    fn both_the_float_and_the_rounded_integer_are_filled() {
        let spec = pb::MetricSpec::from(MetricSpec::new("q", 2.5));
        assert_eq!((spec.target_size, spec.target_size_float), (3, 2.5));
        let spec = pb::MetricSpec::from(MetricSpec::new("q", 0.2));
        assert_eq!(spec.target_size, 1, "a positive target never becomes 0");
        let spec = pb::MetricSpec::from(MetricSpec::new("q", 10.0));
        assert_eq!((spec.target_size, spec.target_size_float), (10, 10.0));
        let value = pb::MetricValue::from(MetricValue::new("q", 0.4));
        assert_eq!((value.metric_value, value.metric_value_float), (0, 0.4));
        let value = pb::MetricValue::from(MetricValue::new("q", 41.5));
        assert_eq!(value.metric_value, 42);
        let value = pb::MetricValue::from(MetricValue::new("q", -1.5));
        assert_eq!(value.metric_value, -2);
        assert_eq!(legacy_int(f64::NAN), 0);
        assert_eq!(legacy_int(1e300), i64::MAX);
    }
}
