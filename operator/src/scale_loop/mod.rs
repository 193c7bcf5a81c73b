//! The scale loop: one task per ScaledObject that polls its triggers every `pollingInterval`
//! (or at once when poked) and moves the target between zero (or idle) and its minimum.
//!
//! The loop's state is shared with the metric service, so a value the loop has just read
//! serves the HPA too, and concurrent reads of one metric become one read of the source.

mod cycle;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keda_operator_crd::ScaledObject;
use kube::runtime::reflector::ObjectRef;

use crate::context::Context;
use crate::scaler_set::ScalerSet;
use crate::target::Target;

pub use state::{LoopState, Served, Source};

/// The running loops, by ScaledObject.
#[derive(Debug, Default)]
pub struct Loops {
    running: Mutex<HashMap<ObjectRef<ScaledObject>, Running>>,
}

#[derive(Debug)]
struct Running {
    state: Arc<LoopState>,
    task: tokio::task::JoinHandle<()>,
}

impl Loops {
    /// The loop of a ScaledObject, if one runs. A loop that ended on its own is forgotten
    /// here, so the controller starts a new one.
    pub fn get(&self, key: &ObjectRef<ScaledObject>) -> Option<Arc<LoopState>> {
        let mut running = self.running.lock().ok()?;
        if running.get(key).is_some_and(|r| r.task.is_finished()) {
            running.remove(key);
        }
        running.get(key).map(|r| r.state.clone())
    }

    /// The generation a running loop was started for (not the one its triggers were last
    /// rebuilt from: a change the loop noticed first must still restart it).
    pub fn generation(&self, key: &ObjectRef<ScaledObject>) -> Option<i64> {
        self.get(key).map(|s| s.started_generation)
    }

    /// Starts (or restarts) the loop of a ScaledObject with freshly built triggers.
    pub fn start(
        &self,
        ctx: &Arc<Context>,
        so: &ScaledObject,
        target: Target,
        scalers: Arc<ScalerSet>,
    ) {
        let key = ObjectRef::from_obj(so);
        let state = Arc::new(LoopState::new(key.clone(), so, target, scalers));
        let task = tokio::spawn(cycle::run(ctx.clone(), state.clone()));
        let previous = self
            .running
            .lock()
            .ok()
            .and_then(|mut r| r.insert(key, Running { state, task }));
        if let Some(previous) = previous {
            previous.task.abort();
        }
    }

    /// Stops the loop of a ScaledObject; returns its state if one was running.
    pub fn stop(&self, key: &ObjectRef<ScaledObject>) -> Option<Arc<LoopState>> {
        let stopped = self.running.lock().ok().and_then(|mut r| r.remove(key))?;
        stopped.task.abort();
        Some(stopped.state)
    }

    /// How many loops run.
    pub fn len(&self) -> usize {
        self.running.lock().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
