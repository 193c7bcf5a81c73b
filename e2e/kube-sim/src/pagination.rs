//! Paginated lists: the items after the first page are kept, so every page of a list comes from
//! one consistent snapshot, as etcd-backed lists do. Snapshots expire after five minutes, after
//! which their continue token gets `410 Gone`, like a compacted one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const TTL: Duration = Duration::from_secs(300);
const MAX_SNAPSHOTS: usize = 1024;

/// When a snapshot was taken, at which resourceVersion, and the items not yet returned.
type Snapshot = (Instant, u64, Vec<Arc<Value>>);

#[derive(Debug, Default)]
pub struct Snapshots {
    inner: Mutex<HashMap<String, Snapshot>>,
}

impl Snapshots {
    /// Keeps `rest` (taken at `resource_version`) and returns its continue token.
    pub fn keep(&self, resource_version: u64, rest: Vec<Arc<Value>>) -> String {
        let token = format!("{resource_version}-{}", uuid::Uuid::new_v4().simple());
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.retain(|_, (at, _, _)| at.elapsed() < TTL);
        if inner.len() >= MAX_SNAPSHOTS
            && let Some(oldest) = inner
                .iter()
                .min_by_key(|(_, (at, _, _))| *at)
                .map(|(k, _)| k.clone())
        {
            inner.remove(&oldest);
        }
        inner.insert(token.clone(), (Instant::now(), resource_version, rest));
        token
    }

    /// The rest of a snapshot and its resourceVersion; `None` when unknown or expired.
    pub fn take(&self, token: &str) -> Option<(Vec<Arc<Value>>, u64)> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (at, rv, items) = inner.remove(token)?;
        (at.elapsed() < TTL).then_some((items, rv))
    }
}
