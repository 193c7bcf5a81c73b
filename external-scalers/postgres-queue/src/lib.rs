//! A KEDA external scaler for job-queue tables in PostgreSQL.
//!
//! The metric is the number of pending rows of a table (all rows, rows whose status column has a
//! given value, or rows matching a `where` clause when the operator allowed those). Activation is
//! pushed over `StreamIsActive` as soon as PostgreSQL delivers a `NOTIFY` on the trigger's
//! channel, so a workload scaled to zero starts in well under a second after a job is inserted.
//! See `README.md` for the metadata, the table trigger to add and the security model.

mod listener;
mod pool;
mod query;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keda_external_scaler::{
    BoxStream, Error, MetricSpec, MetricValue, Result, Scaler, ScalerRequest, activity_changes,
    normalize_metric_name,
};
use tokio::sync::broadcast;

pub use listener::{Event, Listener};
pub use pool::Pool;
pub use query::{Filter, QuerySpec, quote_identifier};

/// The scaler's own settings (from its flags and environment, never from trigger metadata).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Number of pooled connections for counts.
    pub pool_size: usize,
    /// Channel listened on when the trigger metadata names none.
    pub default_channel: String,
    /// Whether trigger metadata may give a raw SQL `where` clause.
    pub allow_where_clause: bool,
    /// Statement timeout of each count.
    pub statement_timeout: Duration,
    /// How often a push stream re-counts even without notifications (a safety net for
    /// notifications that never come, for example from writers that bypass the trigger).
    pub stream_recheck_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            pool_size: 4,
            default_channel: "keda_jobs".to_owned(),
            allow_where_clause: false,
            statement_timeout: Duration::from_secs(5),
            stream_recheck_interval: Duration::from_secs(30),
        }
    }
}

/// Thresholds and names of one trigger.
#[derive(Debug, Clone, PartialEq)]
struct Trigger {
    query: QuerySpec,
    target: f64,
    activation: f64,
    metric_name: String,
}

impl Trigger {
    fn from_request(request: &ScalerRequest, settings: &Settings) -> Result<Self> {
        let query = QuerySpec::from_request(request, settings.allow_where_clause)?;
        let target = request.target("targetPendingJobs", 5.0)?;
        let activation = request.activation("activationPendingJobs", 0.0)?;
        let metric_name = match request.get("metricName") {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => normalize_metric_name(&format!("pending-jobs-{}", query.display_name())),
        };
        Ok(Self {
            query,
            target,
            activation,
            metric_name,
        })
    }

    #[allow(clippy::cast_precision_loss, reason = "row counts are far below 2^52")]
    fn is_active(&self, pending: i64) -> bool {
        pending as f64 > self.activation
    }
}

/// The channel of a trigger: metadata `channel`, else the scaler's default.
fn channel(request: &ScalerRequest, settings: &Settings) -> Result<String> {
    let channel = match request.get("channel") {
        Some(channel) if !channel.is_empty() => channel,
        _ => settings.default_channel.as_str(),
    };
    quote_identifier(channel)?;
    Ok(channel.to_owned())
}

/// Turns a database error into the scaler error KEDA should see.
fn db_error(error: &tokio_postgres::Error, what: &str) -> Error {
    let Some(db) = error.as_db_error() else {
        // I/O, closed connection, timeouts of the client: the source is unavailable.
        return Error::unavailable(format!("{what}: {error}"));
    };
    let code = db.code().code();
    let message = format!("{what}: {} ({code})", db.message());
    match &code[..2] {
        // Syntax/access (undefined table or column, no privilege), data exceptions (a
        // `pendingValue` that is not a value of the column's type) and writes refused by the
        // read-only session (a `where` clause calling a writing function): the metadata is wrong.
        "42" | "22" => Error::invalid_metadata(message),
        _ if code == "25006" => Error::invalid_metadata(message),
        // Connection exceptions, insufficient resources, operator intervention (including the
        // statement timeout), invalid authorization: the source cannot serve right now.
        "08" | "53" | "57" | "28" => Error::unavailable(message),
        _ => Error::internal(message),
    }
}

/// A failed count: worth one retry on a fresh connection, or final.
enum Retry {
    Closed(Error),
    Final(Error),
}

/// `57P01 admin_shutdown`: the backend was terminated (server shutdown, `pg_terminate_backend`).
fn is_admin_shutdown(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| db.code() == &tokio_postgres::error::SqlState::ADMIN_SHUTDOWN)
}

struct Inner {
    settings: Settings,
    pool: Pool,
    listener: Listener,
    /// Counting statements of status filters, keyed by the query; built once per query because
    /// they embed the status column's type.
    statements: Mutex<HashMap<QuerySpec, String>>,
}

/// The scaler: cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct PostgresQueueScaler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresQueueScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresQueueScaler")
            .field("settings", &self.inner.settings)
            .field("pool", &self.inner.pool)
            .finish_non_exhaustive()
    }
}

impl PostgresQueueScaler {
    /// A scaler reading the database of `config`. Starts the `LISTEN` task (it connects on the
    /// first push stream); pooled connections are made on first use.
    pub fn new(config: tokio_postgres::Config, settings: Settings) -> Self {
        let pool = Pool::new(
            config.clone(),
            settings.pool_size,
            settings.statement_timeout,
        );
        let listener = Listener::start(config);
        Self {
            inner: Arc::new(Inner {
                settings,
                pool,
                listener,
                statements: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The number of pending rows for the trigger of `request`.
    pub async fn pending(&self, request: &ScalerRequest) -> Result<i64> {
        let trigger = Trigger::from_request(request, &self.inner.settings)?;
        self.inner.count(&trigger.query).await
    }
}

impl Inner {
    /// Counts, retrying on another connection when the pooled one turns out to be closed (a
    /// server restart or a terminated backend is noticed only at the next use).
    async fn count(&self, query: &QuerySpec) -> Result<i64> {
        // Each attempt takes the next slot; after a restart every slot may hold a closed client.
        let mut attempts = self.pool.size() + 1;
        loop {
            attempts -= 1;
            match self.count_once(query).await {
                Ok(count) => return Ok(count),
                Err(Retry::Closed(error)) if attempts == 0 => return Err(error),
                Err(Retry::Closed(error)) => {
                    tracing::debug!(%error, "pooled connection was closed; retrying");
                }
                Err(Retry::Final(error)) => return Err(error),
            }
        }
    }

    async fn count_once(&self, query: &QuerySpec) -> Result<i64, Retry> {
        let client = self
            .pool
            .client()
            .await
            .map_err(|e| Retry::Final(db_error(&e, "connecting to PostgreSQL")))?;
        let sql = self.statement(&client, query).await.map_err(|e| {
            if client.is_closed() {
                Retry::Closed(e)
            } else {
                Retry::Final(e)
            }
        })?;
        let row = match query.parameter() {
            Some(value) => client.query_one(sql.as_str(), &[&value]).await,
            None => client.query_one(sql.as_str(), &[]).await,
        };
        match row {
            Ok(row) => row
                .try_get::<_, i64>(0)
                .map_err(|e| Retry::Final(Error::internal(format!("reading the count: {e}")))),
            Err(error) => {
                // The table may have changed (for example, the status column's type): build the
                // statement again next time.
                self.forget(query);
                let mapped = db_error(
                    &error,
                    &format!("counting rows of {}", query.display_name()),
                );
                if error.is_closed() || client.is_closed() || is_admin_shutdown(&error) {
                    Err(Retry::Closed(mapped))
                } else {
                    Err(Retry::Final(mapped))
                }
            }
        }
    }

    /// The counting statement for `query`, from the cache or built now.
    async fn statement(
        &self,
        client: &tokio_postgres::Client,
        query: &QuerySpec,
    ) -> Result<String> {
        let Some(probe) = query.probe_sql() else {
            return query.count_sql(None);
        };
        if let Some(sql) = self.cached(query) {
            return Ok(sql);
        }
        let what = format!("reading the status column of {}", query.display_name());
        let statement = client
            .prepare(&probe)
            .await
            .map_err(|e| db_error(&e, &what))?;
        let sql = match statement.params().first() {
            Some(ty) => query.count_sql(Some((ty.schema(), ty.name())))?,
            None => query.count_sql(None)?,
        };
        if let Ok(mut statements) = self.statements.lock() {
            statements.insert(query.clone(), sql.clone());
        }
        Ok(sql)
    }

    fn cached(&self, query: &QuerySpec) -> Option<String> {
        self.statements.lock().ok()?.get(query).cloned()
    }

    fn forget(&self, query: &QuerySpec) {
        if let Ok(mut statements) = self.statements.lock() {
            statements.remove(query);
        }
    }
}

impl Scaler for PostgresQueueScaler {
    async fn is_active(&self, request: &ScalerRequest) -> Result<bool> {
        let trigger = Trigger::from_request(request, &self.inner.settings)?;
        let pending = self.inner.count(&trigger.query).await?;
        Ok(trigger.is_active(pending))
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
        let pending = self.inner.count(&trigger.query).await?;
        #[allow(clippy::cast_precision_loss, reason = "row counts are far below 2^52")]
        let value = pending as f64;
        Ok(vec![MetricValue::new(trigger.metric_name, value)])
    }

    /// Sends the current activity at once, then re-counts at each notification on the trigger's
    /// channel (bursts are coalesced into one count) and at each re-check interval, and sends the
    /// activity whenever it changed. A failed count ends the stream with its status.
    async fn activity_stream(
        &self,
        request: &ScalerRequest,
    ) -> Result<Option<BoxStream<Result<bool>>>> {
        let trigger = Trigger::from_request(request, &self.inner.settings)?;
        let channel = channel(request, &self.inner.settings)?;
        let events = self.inner.listener.subscribe(&channel).await;
        let mut recheck = tokio::time::interval(self.inner.settings.stream_recheck_interval);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.reset();
        let state = StreamState {
            inner: Arc::clone(&self.inner),
            trigger,
            channel,
            events,
            recheck,
            counted: false,
        };
        Ok(Some(activity_changes(state, StreamState::next)))
    }
}

struct StreamState {
    inner: Arc<Inner>,
    trigger: Trigger,
    channel: String,
    events: broadcast::Receiver<Event>,
    recheck: tokio::time::Interval,
    /// Whether the first count was made: each later one waits for a reason to count.
    counted: bool,
}

impl StreamState {
    /// The trigger's activity, counted at once the first time and then after [`wait`](Self::wait).
    /// `None` when the listener is gone.
    async fn next(mut self) -> Option<(Result<bool>, Self)> {
        if self.counted {
            self.wait().await?;
        }
        self.counted = true;
        let pending = self.inner.count(&self.trigger.query).await;
        Some((pending.map(|pending| self.trigger.is_active(pending)), self))
    }

    /// Waits for a reason to count again. `None` when the listener is gone.
    async fn wait(&mut self) -> Option<()> {
        loop {
            let event = tokio::select! {
                event = self.events.recv() => event,
                _ = self.recheck.tick() => return Some(()),
            };
            match event {
                Ok(Event::Notify(channel)) if channel != self.channel => {}
                Ok(Event::Notify(_) | Event::Resync)
                | Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Coalesce a burst of notifications into one count.
                    while self.events.try_recv().is_ok() {}
                    return Some(());
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
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
    fn defaults_and_validation_of_thresholds() {
        let settings = Settings::default();
        let trigger =
            Trigger::from_request(&request(&[("table", "Job Queue")]), &settings).unwrap();
        assert_eq!(trigger.target, 5.0);
        assert_eq!(trigger.activation, 0.0);
        assert_eq!(trigger.metric_name, "pending-jobs-job-queue");
        for bad in [
            &[("table", "j"), ("targetPendingJobs", "0")][..],
            &[("table", "j"), ("targetPendingJobs", "-1")][..],
            &[("table", "j"), ("targetPendingJobs", "NaN")][..],
            &[("table", "j"), ("activationPendingJobs", "-1")][..],
            &[("table", "j"), ("activationPendingJobs", "x")][..],
        ] {
            assert!(
                Trigger::from_request(&request(bad), &settings).is_err(),
                "{bad:?}"
            );
        }
        let named = Trigger::from_request(
            &request(&[
                ("table", "j"),
                ("metricName", "jobs"),
                ("targetPendingJobs", "2.5"),
            ]),
            &settings,
        )
        .unwrap();
        assert_eq!((named.metric_name.as_str(), named.target), ("jobs", 2.5));
    }

    #[test]
    fn the_channel_comes_from_metadata_or_the_default() {
        let settings = Settings::default();
        assert_eq!(channel(&request(&[]), &settings).unwrap(), "keda_jobs");
        assert_eq!(
            channel(&request(&[("channel", "Orders")]), &settings).unwrap(),
            "Orders"
        );
        assert!(channel(&request(&[("channel", &"c".repeat(64))]), &settings).is_err());
    }
}
