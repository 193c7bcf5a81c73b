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

/// Builds an activity stream (what [`Scaler::activity_stream`] returns) from successive checks:
/// it sends the first answer, then each answer that differs from the last one sent; an `Err` is
/// sent and ends the stream.
///
/// `check` works like the closure of [`futures::stream::unfold`]: it gets the state, waits for
/// whatever should prompt the next check (a timer, a notification; usually nothing before the
/// first), checks, and returns the answer with the state, or `None` to end the stream.
///
/// ```
/// # use std::time::Duration;
/// # use keda_external_scaler::{BoxStream, Result, activity_changes};
/// # async fn queue_length() -> Result<u64> { Ok(0) }
/// /// Checks the queue every second; sends `true` as soon as it is not empty.
/// fn stream() -> BoxStream<Result<bool>> {
///     activity_changes(None, |last: Option<tokio::time::Instant>| async move {
///         if let Some(last) = last {
///             tokio::time::sleep_until(last + Duration::from_secs(1)).await;
///         }
///         let active = queue_length().await.map(|length| length > 0);
///         Some((active, Some(tokio::time::Instant::now())))
///     })
/// }
/// ```
pub fn activity_changes<T, F, Fut>(state: T, check: F) -> BoxStream<Result<bool>>
where
    T: Send + 'static,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = Option<(Result<bool>, T)>> + Send + 'static,
{
    struct Changes<T, F> {
        /// `None` once the stream has ended.
        state: Option<T>,
        check: F,
        last: Option<bool>,
    }
    let changes = Changes {
        state: Some(state),
        check,
        last: None,
    };
    Box::pin(futures::stream::unfold(changes, |mut changes| async move {
        loop {
            let state = changes.state.take()?;
            let (answer, state) = (changes.check)(state).await?;
            match answer {
                Ok(active) if changes.last == Some(active) => changes.state = Some(state),
                Ok(active) => {
                    changes.last = Some(active);
                    changes.state = Some(state);
                    return Some((Ok(active), changes));
                }
                Err(error) => return Some((Err(error), changes)),
            }
        }
    }))
}

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
    /// A request for the ScaledObject `name` in `namespace` with the trigger metadata `pairs`,
    /// as KEDA would send it. Handy in tests of a scaler: call its methods directly with it, or
    /// turn it into the [`ScaledObjectRef`](crate::proto::ScaledObjectRef) of a gRPC call with
    /// `.into()`.
    ///
    /// ```
    /// # use keda_external_scaler::ScalerRequest;
    /// let request = ScalerRequest::from_pairs("worker", "jobs", &[("queue", "mail")]);
    /// assert_eq!(request.required("queue").unwrap(), "mail");
    /// ```
    pub fn from_pairs(
        name: impl Into<String>,
        namespace: impl Into<String>,
        pairs: &[(&str, &str)],
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            metadata: pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

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

    /// A metric target (the value per replica the HPA aims for) from the metadata value of
    /// `key`, or `default` when the key is missing or empty. It must be a number greater than 0;
    /// anything else is an [`invalid_metadata`](Error::invalid_metadata) error naming the key.
    pub fn target(&self, key: &str, default: f64) -> Result<f64> {
        let target: f64 = self.parse_or(key, default)?;
        if target.is_nan() || target <= 0.0 {
            return Err(Error::invalid_metadata(format!("`{key}` must be > 0")));
        }
        Ok(target)
    }

    /// An activation threshold (the workload is active when the metric is above it) from the
    /// metadata value of `key`, or `default` when the key is missing or empty. It must be a
    /// number of at least 0; anything else is an [`invalid_metadata`](Error::invalid_metadata)
    /// error naming the key.
    pub fn activation(&self, key: &str, default: f64) -> Result<f64> {
        let activation: f64 = self.parse_or(key, default)?;
        if activation.is_nan() || activation < 0.0 {
            return Err(Error::invalid_metadata(format!("`{key}` must be >= 0")));
        }
        Ok(activation)
    }
}

/// `text` made fit for a metric name: lowercased, with every character but ASCII letters,
/// digits, `.` and `-` turned into `-`. For metric names made from what the trigger names (a
/// queue, a table, a key), which may hold characters a metric name cannot.
///
/// ```
/// # use keda_external_scaler::normalize_metric_name;
/// assert_eq!(normalize_metric_name("queue-Orders:EU_1"), "queue-orders-eu-1");
/// ```
pub fn normalize_metric_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
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

impl From<ScalerRequest> for pb::ScaledObjectRef {
    fn from(r: ScalerRequest) -> Self {
        Self {
            name: r.name,
            namespace: r.namespace,
            scaler_metadata: r.metadata,
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

    #[test]
    fn metadata_helpers_report_the_key_that_is_wrong() {
        let r =
            ScalerRequest::from_pairs("so", "ns", &[("target", "7"), ("bad", "x"), ("empty", "")]);
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
    #[allow(clippy::float_cmp, reason = "the floats compared are exact")]
    fn targets_are_above_0_and_activations_at_least_0() {
        let r = ScalerRequest::from_pairs(
            "so",
            "ns",
            &[
                ("zero", "0"),
                ("negative", "-1"),
                ("nan", "NaN"),
                ("half", "0.5"),
            ],
        );
        assert_eq!(r.target("half", 5.0).unwrap(), 0.5);
        assert_eq!(r.target("absent", 5.0).unwrap(), 5.0);
        for key in ["zero", "negative", "nan"] {
            let error = r.target(key, 5.0).unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::InvalidMetadata);
            assert_eq!(error.message(), format!("`{key}` must be > 0"));
        }
        assert_eq!(r.activation("zero", 1.0).unwrap(), 0.0);
        assert_eq!(r.activation("absent", 0.0).unwrap(), 0.0);
        for key in ["negative", "nan"] {
            let error = r.activation(key, 0.0).unwrap_err();
            assert_eq!(error.message(), format!("`{key}` must be >= 0"));
        }
    }

    #[test]
    fn metric_names_keep_only_lowercase_letters_digits_dots_and_dashes() {
        assert_eq!(
            normalize_metric_name("due-jobs-queue:Schedule"),
            "due-jobs-queue-schedule"
        );
        assert_eq!(
            normalize_metric_name("pending-jobs-Job Queue"),
            "pending-jobs-job-queue"
        );
        assert_eq!(normalize_metric_name("a.b_c/d%é"), "a.b-c-d--");
    }

    #[test]
    fn activity_changes_sends_the_first_answer_and_each_change_and_ends_at_an_error() {
        use futures::StreamExt;
        let answers = vec![
            Ok(false),
            Ok(false),
            Ok(true),
            Ok(true),
            Ok(false),
            Err(Error::unavailable("down")),
            Ok(true),
        ];
        let stream = activity_changes(answers.into_iter(), |mut answers| async move {
            let answer = answers.next()?;
            Some((answer, answers))
        });
        let sent: Vec<_> = futures::executor::block_on(stream.collect::<Vec<_>>())
            .into_iter()
            .map(|answer| answer.map_err(|e| e.kind()))
            .collect();
        assert_eq!(
            sent,
            [
                Ok(false),
                Ok(true),
                Ok(false),
                Err(crate::ErrorKind::Unavailable)
            ]
        );

        let ended = activity_changes(0, |n| async move { (n < 3).then_some((Ok(true), n + 1)) });
        let sent = futures::executor::block_on(ended.collect::<Vec<_>>());
        assert_eq!(sent.len(), 1, "`None` from the check ends the stream");
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
