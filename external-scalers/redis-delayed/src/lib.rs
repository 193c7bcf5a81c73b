//! A KEDA external scaler for delayed jobs kept in a Redis sorted set.
//!
//! Many job libraries keep scheduled jobs in a sorted set whose score is the time the job is due
//! (Sidekiq's `schedule` and `retry` sets in seconds since the epoch, for example). The metric is
//! the number of members whose score is at most "now" (the jobs that are due); "now" is the Redis
//! server's clock, so the scaler's clock does not matter. The count and the next due time are read
//! in one server-side script.
//!
//! Push (`StreamIsActive`): the stream re-checks when the earliest not-yet-due job becomes due
//! (so a delayed job activates its workload on time, not up to a poll interval late) and at least
//! every poll interval (for jobs added already due). See `README.md`.

use std::sync::Arc;
use std::time::Duration;

use keda_external_scaler::{
    BoxStream, Error, MetricSpec, MetricValue, Result, Scaler, ScalerRequest, activity_changes,
    normalize_metric_name,
};
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

/// Counts the due members of `KEYS[1]` and finds the score of the next one, with the server's
/// clock. `ARGV[1]` is the number of score units per second (1 or 1000). Returns
/// `{due, next score or nil, now}`; scores and "now" as strings, so no precision is lost to
/// Lua's integer conversion of replies.
const DUE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = (tonumber(t[1]) + tonumber(t[2]) / 1000000) * tonumber(ARGV[1])
local bound = string.format('%.6f', now)
local due = redis.call('ZCOUNT', KEYS[1], '-inf', bound)
local nxt = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. bound, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {due, nxt[2] or false, bound}
";

/// The scaler's own settings (from its flags and environment, never from trigger metadata).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Keys a trigger may name must start with this (empty: any key).
    pub allowed_key_prefix: String,
    /// The longest a push stream waits between checks.
    pub poll_interval: Duration,
    /// Connect and response timeout of Redis commands.
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allowed_key_prefix: String::new(),
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Score units of the sorted set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScoreUnit {
    Seconds,
    Milliseconds,
}

impl ScoreUnit {
    fn per_second(self) -> u32 {
        match self {
            Self::Seconds => 1,
            Self::Milliseconds => 1000,
        }
    }
}

/// One trigger's settings.
#[derive(Debug, Clone, PartialEq)]
struct Trigger {
    key: String,
    unit: ScoreUnit,
    target: f64,
    activation: f64,
    metric_name: String,
}

impl Trigger {
    fn from_request(request: &ScalerRequest, settings: &Settings) -> Result<Self> {
        let key = request.required("key")?.to_owned();
        if !key.starts_with(&settings.allowed_key_prefix) {
            return Err(Error::invalid_metadata(format!(
                "key {key:?} is outside the prefix {:?} this scaler may read",
                settings.allowed_key_prefix
            )));
        }
        let unit = match request.get("scoreUnit").unwrap_or("seconds") {
            "" | "s" | "seconds" => ScoreUnit::Seconds,
            "ms" | "milliseconds" => ScoreUnit::Milliseconds,
            other => {
                return Err(Error::invalid_metadata(format!(
                    "`scoreUnit` must be `seconds` or `milliseconds`, not {other:?}"
                )));
            }
        };
        let target = request.target("targetDueJobs", 5.0)?;
        let activation = request.activation("activationDueJobs", 0.0)?;
        let metric_name = match request.get("metricName") {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => normalize_metric_name(&format!("due-jobs-{key}")),
        };
        Ok(Self {
            key,
            unit,
            target,
            activation,
            metric_name,
        })
    }

    #[allow(clippy::cast_precision_loss, reason = "set sizes are far below 2^52")]
    fn is_active(&self, due: i64) -> bool {
        due as f64 > self.activation
    }
}

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Due {
    /// Members with score ≤ now.
    pub due: i64,
    /// How long until the next member becomes due, if there is one.
    pub next_in: Option<Duration>,
}

/// Maps a Redis error to what KEDA should see, and whether the connection must be replaced.
fn redis_error(error: &redis::RedisError, key: &str) -> (Error, bool) {
    let text = error.to_string();
    if error.code() == Some("WRONGTYPE") || text.contains("WRONGTYPE") {
        return (
            Error::invalid_metadata(format!("key {key:?} is not a sorted set: {text}")),
            false,
        );
    }
    if error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
    {
        return (Error::unavailable(format!("Redis: {text}")), true);
    }
    (Error::internal(format!("Redis: {text}")), false)
}

struct Inner {
    client: redis::Client,
    settings: Settings,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl Inner {
    async fn connection(&self) -> Result<MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.timeout))
            .set_response_timeout(Some(self.settings.timeout));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| redis_error(&e, "").0)?;
        tracing::debug!("connected to Redis");
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn forget_connection(&self) {
        *self.connection.lock().await = None;
    }

    /// Reads the due count and the next due time, retrying once on a new connection when the
    /// shared one broke.
    async fn check(&self, trigger: &Trigger) -> Result<Due> {
        let mut retried = false;
        loop {
            let mut connection = self.connection().await?;
            let reply: redis::RedisResult<(i64, Option<String>, String)> = redis::cmd("EVAL")
                .arg(DUE_SCRIPT)
                .arg(1)
                .arg(&trigger.key)
                .arg(trigger.unit.per_second())
                .query_async(&mut connection)
                .await;
            match reply {
                Ok((due, next, now)) => {
                    return Ok(Due {
                        due,
                        next_in: next_in(next.as_deref(), &now, trigger.unit),
                    });
                }
                Err(error) => {
                    let (mapped, reconnect) = redis_error(&error, &trigger.key);
                    if reconnect {
                        self.forget_connection().await;
                        if !retried {
                            retried = true;
                            tracing::debug!(%error, "Redis connection broke; retrying");
                            continue;
                        }
                    }
                    return Err(mapped);
                }
            }
        }
    }
}

/// Time from `now` to the `next` score, both in `unit`s.
fn next_in(next: Option<&str>, now: &str, unit: ScoreUnit) -> Option<Duration> {
    let next: f64 = next?.parse().ok()?;
    let now: f64 = now.parse().ok()?;
    let seconds = (next - now) / f64::from(unit.per_second());
    Duration::try_from_secs_f64(seconds.max(0.0)).ok()
}

/// The scaler: cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct RedisDelayedScaler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisDelayedScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDelayedScaler")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl RedisDelayedScaler {
    /// A scaler reading the Redis of `url` (`redis://[user:password@]host:port[/db]`). Nothing
    /// connects until the first call.
    pub fn new(url: &str, settings: Settings) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::internal(format!("invalid Redis URL: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                settings,
                connection: Mutex::new(None),
            }),
        })
    }

    /// The due count and next due time for the trigger of `request`.
    pub async fn due(&self, request: &ScalerRequest) -> Result<Due> {
        let trigger = Trigger::from_request(request, &self.inner.settings)?;
        self.inner.check(&trigger).await
    }
}

impl Scaler for RedisDelayedScaler {
    async fn is_active(&self, request: &ScalerRequest) -> Result<bool> {
        let trigger = Trigger::from_request(request, &self.inner.settings)?;
        let due = self.inner.check(&trigger).await?;
        Ok(trigger.is_active(due.due))
    }

    async fn metric_specs(&self, request: &ScalerRequest) -> Result<Vec<MetricSpec>> {
        let trigger = Trigger::from_request(request, &self.inner.settings)?;
        Ok(vec![MetricSpec::new(trigger.metric_name, trigger.target)])
    }

    async fn metric_values(
        &self,
        request: &ScalerRequest,
        metric_name: &str,
    ) -> Result<Vec<MetricValue>> {
        let trigger = Trigger::from_request(request, &self.inner.settings)?;
        if metric_name != trigger.metric_name {
            return Err(Error::not_found(format!(
                "this trigger serves {:?}, not {metric_name:?}",
                trigger.metric_name
            )));
        }
        let due = self.inner.check(&trigger).await?;
        #[allow(clippy::cast_precision_loss, reason = "set sizes are far below 2^52")]
        let value = due.due as f64;
        Ok(vec![MetricValue::new(trigger.metric_name, value)])
    }

    /// Sends the current activity at once, then checks again when the next delayed job becomes
    /// due or after the poll interval, whichever comes first, and sends every change. A failed
    /// check ends the stream with its status.
    async fn activity_stream(
        &self,
        request: &ScalerRequest,
    ) -> Result<Option<BoxStream<Result<bool>>>> {
        let trigger = Trigger::from_request(request, &self.inner.settings)?;
        let state = StreamState {
            inner: Arc::clone(&self.inner),
            trigger,
            wait: None,
        };
        Ok(Some(activity_changes(state, StreamState::next)))
    }
}

struct StreamState {
    inner: Arc<Inner>,
    trigger: Trigger,
    /// How long to wait before the next check (`None` before the first).
    wait: Option<Duration>,
}

/// Margin added to the wait for the next due job, so the check lands after it is due.
const DUE_MARGIN: Duration = Duration::from_millis(2);

impl StreamState {
    /// The trigger's activity, checked at once the first time, then when the next delayed job
    /// falls due or after the poll interval, whichever comes first.
    async fn next(mut self) -> Option<(Result<bool>, Self)> {
        if let Some(wait) = self.wait {
            tokio::time::sleep(wait).await;
        }
        let active = self.inner.check(&self.trigger).await.map(|due| {
            let poll = self.inner.settings.poll_interval;
            self.wait = Some(
                due.next_in
                    .map_or(poll, |next| (next + DUE_MARGIN).min(poll)),
            );
            self.trigger.is_active(due.due)
        });
        Some((active, self))
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp, reason = "the floats compared are exact")]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> ScalerRequest {
        ScalerRequest::from_pairs("w", "ns", pairs)
    }

    #[test]
    fn metadata_defaults_and_validation() {
        let settings = Settings::default();
        let t = Trigger::from_request(&request(&[("key", "queue:Schedule")]), &settings).unwrap();
        assert_eq!(t.unit, ScoreUnit::Seconds);
        assert_eq!((t.target, t.activation), (5.0, 0.0));
        assert_eq!(t.metric_name, "due-jobs-queue-schedule");
        let ms = Trigger::from_request(
            &request(&[("key", "k"), ("scoreUnit", "milliseconds")]),
            &settings,
        )
        .unwrap();
        assert_eq!(ms.unit, ScoreUnit::Milliseconds);
        for bad in [
            &[][..],
            &[("key", "k"), ("scoreUnit", "hours")][..],
            &[("key", "k"), ("targetDueJobs", "0")][..],
            &[("key", "k"), ("activationDueJobs", "-2")][..],
        ] {
            assert!(
                Trigger::from_request(&request(bad), &settings).is_err(),
                "{bad:?}"
            );
        }
        let fenced = Settings {
            allowed_key_prefix: "jobs:".into(),
            ..Settings::default()
        };
        assert!(Trigger::from_request(&request(&[("key", "jobs:a")]), &fenced).is_ok());
        let outside = Trigger::from_request(&request(&[("key", "sessions")]), &fenced);
        assert_eq!(
            outside.unwrap_err().kind(),
            keda_external_scaler::ErrorKind::InvalidMetadata
        );
    }

    #[test]
    fn the_wait_until_the_next_job_is_read_in_score_units() {
        assert_eq!(
            next_in(
                Some("1700000010.5"),
                "1700000010.000000",
                ScoreUnit::Seconds
            ),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            next_in(
                Some("1700000010500"),
                "1700000010000.000000",
                ScoreUnit::Milliseconds
            ),
            Some(Duration::from_millis(500))
        );
        assert_eq!(next_in(None, "1", ScoreUnit::Seconds), None);
    }
}
