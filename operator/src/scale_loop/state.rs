//! The state a ScaledObject's loop shares with the metric service.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use keda_operator_crd::{HealthStatus, ScaledObject};
use kube::runtime::reflector::ObjectRef;

use crate::fallback;
use crate::scaler_set::ScalerSet;
use crate::scalers::{Reading, ScalerError};
use crate::target::Target;

/// Where a served value came from (mirrors the metric service's `Source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Live,
    Cache,
    Fallback,
    Formula,
}

/// A value served for one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Served {
    pub metric: String,
    pub value: f64,
    pub source: Source,
    pub read_at: jiff::Timestamp,
}

/// The last read of one metric.
#[derive(Clone, Debug)]
pub struct Cached {
    pub result: Result<Reading, ScalerError>,
    pub at: Instant,
    pub wall: jiff::Timestamp,
}

type InFlight = Shared<BoxFuture<'static, Result<Reading, ScalerError>>>;

/// One ScaledObject's loop state.
pub struct LoopState {
    pub key: ObjectRef<ScaledObject>,
    /// The ScaledObject generation the loop was started for.
    pub started_generation: i64,
    target: Target,
    scalers: RwLock<Arc<ScalerSet>>,
    rebuild: AtomicBool,
    readings: Arc<Mutex<HashMap<String, Cached>>>,
    health: Arc<Mutex<BTreeMap<String, HealthStatus>>>,
    in_flight: Arc<Mutex<HashMap<String, InFlight>>>,
    /// Wakes the loop for an immediate cycle (a push, or a change to the object).
    pub poke: tokio::sync::Notify,
    /// A push said a trigger became active since the last cycle.
    pushed: AtomicBool,
    /// The Prometheus series this loop wrote, removed when it stops.
    series: Mutex<std::collections::HashSet<crate::telemetry::ScalerLabels>>,
}

impl std::fmt::Debug for LoopState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopState")
            .field("key", &self.key)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// How long a read of the source can take before it counts as failed.
const READ_BUDGET: Duration = Duration::from_secs(10);

impl LoopState {
    pub fn new(
        key: ObjectRef<ScaledObject>,
        so: &ScaledObject,
        target: Target,
        scalers: Arc<ScalerSet>,
    ) -> Self {
        // Failure counts survive a restart through status.health.
        let health = so
            .status
            .as_ref()
            .and_then(|s| s.health.clone())
            .unwrap_or_default();
        Self {
            key,
            started_generation: so.metadata.generation.unwrap_or_default(),
            target,
            scalers: RwLock::new(scalers),
            rebuild: AtomicBool::new(false),
            readings: Arc::default(),
            health: Arc::new(Mutex::new(health)),
            in_flight: Arc::default(),
            poke: tokio::sync::Notify::new(),
            pushed: AtomicBool::new(false),
            series: Mutex::default(),
        }
    }

    /// Remembers a series written for this loop.
    pub fn wrote_series(&self, labels: &crate::telemetry::ScalerLabels) {
        if let Ok(mut series) = self.series.lock()
            && !series.contains(labels)
        {
            series.insert(labels.clone());
        }
    }

    /// Removes this loop's series (the ScaledObject is gone, paused or invalid).
    pub fn remove_series(&self, telemetry: &crate::telemetry::Telemetry) {
        let Ok(series) = self.series.lock() else {
            return;
        };
        for labels in series.iter() {
            telemetry.scaler_value.remove(labels);
            telemetry.scaler_latency.remove(labels);
            telemetry.scaler_active.remove(labels);
            telemetry.scaler_errors.remove(labels);
        }
    }

    /// A source pushed "active": the next cycle counts the object as active, and runs now.
    pub fn push_active(&self) {
        self.pushed.store(true, Ordering::Relaxed);
        self.poke.notify_one();
    }

    /// A source asked for a read now: the next cycle runs at once and its reads decide.
    pub fn wake(&self) {
        self.poke.notify_one();
    }

    /// Whether a push arrived since the last call.
    pub fn take_pushed(&self) -> bool {
        self.pushed.swap(false, Ordering::Relaxed)
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The current triggers.
    pub fn scalers(&self) -> Arc<ScalerSet> {
        match self.scalers.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The generation the triggers were built from.
    pub fn generation(&self) -> i64 {
        self.scalers().generation
    }

    /// Swaps in rebuilt triggers.
    pub fn replace_scalers(&self, scalers: Arc<ScalerSet>) {
        if let Ok(mut s) = self.scalers.write() {
            *s = scalers;
        }
        self.rebuild.store(false, Ordering::Relaxed);
    }

    /// Asks the loop to rebuild the triggers before its next read (after a failure).
    pub fn request_rebuild(&self) {
        self.rebuild.store(true, Ordering::Relaxed);
    }

    pub fn needs_rebuild(&self) -> bool {
        self.rebuild.load(Ordering::Relaxed)
    }

    /// Reads a metric from its source; concurrent reads of the same metric share one read.
    ///
    /// The read runs in its own task, so it completes (and is recorded once in the cache and
    /// in the metric's health) even when every caller has given up waiting — an HPA query
    /// cancelled by its deadline leaves no stale read behind.
    pub async fn read_live(
        &self,
        set: &Arc<ScalerSet>,
        trigger: usize,
        metric: &str,
    ) -> Result<Reading, ScalerError> {
        let key = metric.to_ascii_lowercase();
        let shared = {
            let Ok(mut in_flight) = self.in_flight.lock() else {
                return Err(ScalerError::Source("internal lock poisoned".into()));
            };
            if let Some(existing) = in_flight.get(&key) {
                existing.clone()
            } else {
                let set = set.clone();
                let name = metric.to_owned();
                let (readings, health, pending) = (
                    self.readings.clone(),
                    self.health.clone(),
                    self.in_flight.clone(),
                );
                let entry = key.clone();
                let tick = crate::scalers::pooled::TICK.try_with(|tick| *tick).ok();
                // The task removes its entry after this lock is released (it takes the lock).
                let task = tokio::spawn(async move {
                    let result = match set.triggers.get(trigger).map(|t| &t.scaler) {
                        Some(Ok(scaler)) => {
                            let read = tokio::time::timeout(READ_BUDGET, scaler.read(&name));
                            let read = match tick {
                                Some(tick) => crate::scalers::pooled::TICK.scope(tick, read).await,
                                None => read.await,
                            };
                            read.unwrap_or_else(|_| {
                                Err(ScalerError::Source(format!(
                                    "no answer within {}s",
                                    READ_BUDGET.as_secs()
                                )))
                            })
                        }
                        Some(Err(e)) => Err(e.clone()),
                        None => Err(ScalerError::NoSuchMetric(name.clone())),
                    };
                    if let Ok(mut health) = health.lock() {
                        fallback::record(health.entry(name).or_default(), result.is_ok());
                    }
                    if let Ok(mut readings) = readings.lock() {
                        readings.insert(
                            entry.clone(),
                            Cached {
                                result: result.clone(),
                                at: Instant::now(),
                                wall: jiff::Timestamp::now(),
                            },
                        );
                    }
                    if let Ok(mut pending) = pending.lock() {
                        pending.remove(&entry);
                    }
                    result
                });
                let read = async move {
                    task.await.unwrap_or_else(|e| {
                        Err(ScalerError::Source(format!("the read task failed: {e}")))
                    })
                }
                .boxed()
                .shared();
                in_flight.insert(key, read.clone());
                read
            }
        };
        shared.await
    }

    /// The last read of a metric.
    pub fn cached(&self, metric: &str) -> Option<Cached> {
        self.readings
            .lock()
            .ok()
            .and_then(|r| r.get(&metric.to_ascii_lowercase()).cloned())
    }

    /// A copy of every metric's health, limited to the metrics the triggers have now.
    pub fn health(&self) -> BTreeMap<String, HealthStatus> {
        let names: Vec<String> = self
            .scalers()
            .specs()
            .iter()
            .filter_map(|s| s.external_name().map(str::to_owned))
            .collect();
        let Ok(mut health) = self.health.lock() else {
            return BTreeMap::new();
        };
        health.retain(|k, _| names.contains(k));
        health.clone()
    }

    /// The health of one metric.
    pub fn health_of(&self, metric: &str) -> HealthStatus {
        self.health
            .lock()
            .ok()
            .and_then(|h| h.get(metric).cloned())
            .unwrap_or_default()
    }
}
