//! The object store: every object as JSON, one global resourceVersion counter, and a bounded
//! history of changes from which watches resume.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::resources::ResourceKey;

/// How many past changes a watch can resume from before it gets `410 Gone`. Bounded so a
/// long-running sandbox stays small (each change keeps a whole object).
pub const HISTORY: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct Event {
    pub resource_version: u64,
    pub resource: ResourceKey,
    pub type_: EventType,
    pub object: Arc<Value>,
    /// The object before a modification, so watches with selectors can tell an object that
    /// leaves their selector.
    pub previous: Option<Arc<Value>>,
}

impl Event {
    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"].as_str().unwrap_or("")
    }
}

/// Why a store operation failed; the API layer turns these into `Status` errors.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    NotFound,
    AlreadyExists,
    /// The caller's resourceVersion precondition does not hold.
    Conflict,
}

type Objects = BTreeMap<(String, String), Arc<Value>>;

/// Changes to replay, then a receiver of the live ones.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

#[derive(Debug, Default)]
struct Inner {
    resource_version: u64,
    objects: BTreeMap<ResourceKey, Objects>,
    history: VecDeque<Arc<Event>>,
}

/// Thread-safe object storage shared by the API server and the controller loops.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
}

impl Default for Store {
    fn default() -> Self {
        let (events, _) = broadcast::channel(16_384);
        Self {
            inner: Mutex::new(Inner::default()),
            events,
        }
    }
}

pub fn name_of(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or("").to_owned(),
        meta["name"].as_str().unwrap_or("").to_owned(),
    )
}

/// Parses an object's `metadata.resourceVersion`.
pub fn resource_version_of(object: &Value) -> Option<u64> {
    object["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn current_resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    pub fn get(&self, key: &ResourceKey, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock()
            .objects
            .get(key)?
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// All objects of a type (in one namespace when given), in name order, with the
    /// resourceVersion the list is consistent with.
    pub fn list(&self, key: &ResourceKey, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(key)
            .map(|objects| {
                objects
                    .iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.resource_version)
    }

    /// Stores a new object, stamping its resourceVersion.
    pub fn create(&self, key: &ResourceKey, mut object: Value) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let id = name_of(&object);
        if inner.objects.get(key).is_some_and(|o| o.contains_key(&id)) {
            return Err(StoreError::AlreadyExists);
        }
        inner.resource_version += 1;
        let rv = inner.resource_version;
        object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let object = Arc::new(object);
        inner
            .objects
            .entry(key.clone())
            .or_default()
            .insert(id, object.clone());
        self.record(&mut inner, key, EventType::Added, object.clone(), None);
        Ok(object)
    }

    /// Replaces an object. With `expected`, fails with `Conflict` unless the stored object still
    /// has that resourceVersion.
    pub fn update(
        &self,
        key: &ResourceKey,
        mut object: Value,
        expected: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let id = name_of(&object);
        let current = inner
            .objects
            .get(key)
            .and_then(|o| o.get(&id))
            .ok_or(StoreError::NotFound)?;
        if expected.is_some_and(|rv| Some(rv) != resource_version_of(current)) {
            return Err(StoreError::Conflict);
        }
        if **current == object {
            return Ok(current.clone());
        }
        let previous = current.clone();
        inner.resource_version += 1;
        let rv = inner.resource_version;
        object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let object = Arc::new(object);
        inner
            .objects
            .entry(key.clone())
            .or_default()
            .insert(id, object.clone());
        self.record(
            &mut inner,
            key,
            EventType::Modified,
            object.clone(),
            Some(previous),
        );
        Ok(object)
    }

    /// Removes an object; the DELETED event carries a fresh resourceVersion.
    pub fn delete(
        &self,
        key: &ResourceKey,
        namespace: &str,
        name: &str,
        expected: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let id = (namespace.to_owned(), name.to_owned());
        let current = inner
            .objects
            .get(key)
            .and_then(|o| o.get(&id))
            .ok_or(StoreError::NotFound)?;
        if expected.is_some_and(|rv| Some(rv) != resource_version_of(current)) {
            return Err(StoreError::Conflict);
        }
        let mut last = (**current).clone();
        inner.resource_version += 1;
        let rv = inner.resource_version;
        if let Some(objects) = inner.objects.get_mut(key) {
            objects.remove(&id);
        }
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let last = Arc::new(last);
        self.record(&mut inner, key, EventType::Deleted, last.clone(), None);
        Ok(last)
    }

    /// Removes every object of a type (used when its CRD goes away).
    pub fn drop_type(&self, key: &ResourceKey) {
        let names: Vec<(String, String)> = self
            .lock()
            .objects
            .get(key)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for (ns, name) in names {
            let _ = self.delete(key, &ns, &name, None);
        }
    }

    /// Subscribes to changes after the returned resourceVersion, and returns the recorded
    /// changes of `key` after `since` (which the caller replays first). `Err` when `since` is
    /// older than the history kept.
    pub fn watch_from(&self, key: &ResourceKey, since: u64) -> Result<WatchStart, u64> {
        let inner = self.lock();
        let receiver = self.events.subscribe();
        let oldest = inner.history.front().map_or(inner.resource_version, |e| {
            e.resource_version.saturating_sub(1)
        });
        if since < oldest {
            return Err(oldest);
        }
        let replay = inner
            .history
            .iter()
            .filter(|e| e.resource_version > since && &e.resource == key)
            .cloned()
            .collect();
        Ok((replay, receiver))
    }

    /// A receiver of every change from now on (for controller loops).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    fn record(
        &self,
        inner: &mut Inner,
        key: &ResourceKey,
        type_: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let event = Arc::new(Event {
            resource_version: inner.resource_version,
            resource: key.clone(),
            type_,
            object,
            previous,
        });
        inner.history.push_back(event.clone());
        if inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }
}
