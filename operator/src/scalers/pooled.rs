//! Clients shared by every trigger that reads the same source, and reads shared by every
//! trigger that asks the same thing at the same time.
//!
//! A [`Pool`] holds weak references only: each scaler holds a strong [`Pooled`] client, and
//! when the last scaler of a key is dropped the client (and its connection) goes with it and
//! the key is forgotten. [`Pooled::coalesce`] runs one read per (client, question) at a time:
//! callers that arrive while a read is running wait for its result instead of issuing their
//! own. The read runs in its own task, so it completes even when its first caller gives up.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::ScalerError;

type Read<T> = Shared<BoxFuture<'static, Result<T, ScalerError>>>;
type Entries<K, C, T> = Mutex<HashMap<K, Weak<Pooled<K, C, T>>>>;

/// Shared clients by key (endpoint, credentials, database), whose reads answer a `T` (a
/// value, or a whole response that each trigger takes its value from).
pub struct Pool<K: Eq + Hash, C, T = f64> {
    entries: Arc<Entries<K, C, T>>,
}

impl<K: Eq + Hash, C, T> Default for Pool<K, C, T> {
    fn default() -> Self {
        Self {
            entries: Arc::default(),
        }
    }
}

impl<K, C, T> std::fmt::Debug for Pool<K, C, T>
where
    K: Eq + Hash,
{
    /// Keys carry credentials: only the number of clients is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("clients", &self.clients())
            .finish()
    }
}

impl<K, C, T> Pool<K, C, T>
where
    K: Eq + Hash,
{
    /// Clients some trigger still uses.
    pub fn clients(&self) -> usize {
        self.entries
            .lock()
            .map_or(0, |e| e.values().filter(|w| w.strong_count() > 0).count())
    }
}

impl<K, C, T> Pool<K, C, T>
where
    K: Clone + Eq + Hash,
{
    /// The client for `key`: the one in use, or a new one made by `make` (which must not do
    /// I/O: clients connect on first use).
    pub(crate) fn get(&self, key: &K, make: impl FnOnce() -> C) -> Arc<Pooled<K, C, T>> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = entries.get(key).and_then(Weak::upgrade) {
            return existing;
        }
        let pooled = Arc::new(Pooled {
            client: make(),
            key: key.clone(),
            entries: Arc::downgrade(&self.entries),
            reads: Mutex::default(),
            ticks: Mutex::default(),
        });
        entries.insert(key.clone(), Arc::downgrade(&pooled));
        pooled
    }
}

/// One shared client; dropping the last reference drops it and forgets it in the pool.
pub struct Pooled<K: Eq + Hash, C, T = f64> {
    client: C,
    key: K,
    entries: Weak<Entries<K, C, T>>,
    /// Reads in flight, by what they ask.
    reads: Mutex<HashMap<String, Read<T>>>,
    /// The last read of each question made for a polling tick, and the tick: scale loops that
    /// read for the same tick share it even when they come after it finished.
    ticks: Mutex<HashMap<String, (u64, Read<T>)>>,
}

tokio::task_local! {
    /// The polling tick (milliseconds since the epoch) a scale loop reads for. Reads made for
    /// the same tick are one read of the source; reads made outside a tick (the HPA's queries,
    /// a push, a loop's first cycle) share only a read in flight.
    pub static TICK: u64;
}

impl<K: Eq + Hash, C: std::fmt::Debug, T> std::fmt::Debug for Pooled<K, C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash, C, T> Pooled<K, C, T> {
    pub(crate) fn client(&self) -> &C {
        &self.client
    }
}

impl<K, C, T> Pooled<K, C, T>
where
    K: Eq + Hash + Send + Sync + 'static,
    C: Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// The result of `read` for `question`: joins the read of the same question already
    /// running on this client, or starts one in its own task.
    pub(crate) fn coalesce<F>(
        self: &Arc<Self>,
        question: &str,
        read: F,
    ) -> impl Future<Output = Result<T, ScalerError>> + Send + 'static
    where
        F: FnOnce(Arc<Self>) -> BoxFuture<'static, Result<T, ScalerError>>,
    {
        let tick = TICK.try_with(|tick| *tick).ok();
        let mut ticks = self
            .ticks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tick) = tick
            && let Some((read_for, read)) = ticks.get(question)
            && *read_for == tick
        {
            return read.clone();
        }
        let mut reads = self
            .reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = reads.get(question) {
            let running = running.clone();
            if let Some(tick) = tick {
                ticks.insert(question.to_owned(), (tick, running.clone()));
            }
            return running;
        }
        let this = self.clone();
        let owned = question.to_owned();
        let work = read(self.clone());
        let task = tokio::spawn(async move {
            let result = work.await;
            // Only this task removes its own entry, and no other is inserted while it is there.
            this.reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&owned);
            result
        });
        let shared = async move {
            task.await
                .unwrap_or_else(|e| Err(ScalerError::Source(format!("read failed: {e}"))))
        }
        .boxed()
        .shared();
        reads.insert(question.to_owned(), shared.clone());
        if let Some(tick) = tick {
            ticks.insert(question.to_owned(), (tick, shared.clone()));
        }
        shared
    }
}

impl<K: Eq + Hash, C, T> Drop for Pooled<K, C, T> {
    fn drop(&mut self) {
        let Some(entries) = self.entries.upgrade() else {
            return;
        };
        if let Ok(mut entries) = entries.lock() {
            // A new client for the same key may already have replaced this one.
            if entries
                .get(&self.key)
                .is_some_and(|w| w.strong_count() == 0)
            {
                entries.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_client_per_key_and_one_read_per_question() {
        let pool: Pool<String, AtomicUsize> = Pool::default();
        let a = pool.get(&"a".to_owned(), AtomicUsize::default);
        let b = pool.get(&"a".to_owned(), || unreachable!("shared"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = pool.get(&"c".to_owned(), AtomicUsize::default);
        assert_eq!(pool.clients(), 2);

        let reads: Vec<_> = (0..10)
            .map(|_| {
                a.coalesce("q", |client| {
                    async move {
                        client.client().fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(7.0)
                    }
                    .boxed()
                })
            })
            .collect();
        for value in futures::future::join_all(reads).await {
            assert_eq!(value, Ok(7.0));
        }
        assert_eq!(a.client().load(Ordering::SeqCst), 1);
        // Finished reads are forgotten: the next one reads again.
        let again = a
            .coalesce("q", |client| {
                async move {
                    client.client().fetch_add(1, Ordering::SeqCst);
                    Err(ScalerError::Source("down".into()))
                }
                .boxed()
            })
            .await;
        assert_eq!(again, Err(ScalerError::Source("down".into())));
        assert_eq!(a.client().load(Ordering::SeqCst), 2);

        drop((a, b));
        assert_eq!(pool.clients(), 1);
        drop(c);
        assert_eq!(pool.entries.lock().unwrap().len(), 0);
    }
}
