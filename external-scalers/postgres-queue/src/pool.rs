//! A small pool of PostgreSQL connections shared by every call.
//!
//! A `tokio_postgres::Client` pipelines concurrent queries over its one connection, so callers
//! share clients instead of checking them out: the pool is a fixed set of slots, each holding a
//! client that is connected on first use and replaced when its connection has closed. Callers are
//! spread over the slots round robin.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, Config, NoTls};

/// Settings every pooled session starts with: the scaler only reads, and no count may run for
/// long.
pub(crate) fn session_setup(statement_timeout: Duration) -> String {
    format!(
        "SET default_transaction_read_only = on; SET statement_timeout = {}",
        statement_timeout.as_millis().max(1)
    )
}

/// Shared PostgreSQL clients; see the module documentation.
pub struct Pool {
    config: Config,
    setup: String,
    slots: Vec<Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of `size` (at least 1) connections made with `config`. Nothing connects until the
    /// first query.
    pub fn new(config: Config, size: usize, statement_timeout: Duration) -> Self {
        Self {
            config,
            setup: session_setup(statement_timeout),
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The number of slots.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// A connected client: the next slot's, connecting it if it has none or its connection has
    /// closed.
    pub async fn client(&self) -> Result<Arc<Client>, tokio_postgres::Error> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some(client) = slot.as_ref()
            && !client.is_closed()
        {
            return Ok(Arc::clone(client));
        }
        *slot = None;
        let client = Arc::new(connect(&self.config, &self.setup).await?);
        tracing::debug!(slot = index, "connected to PostgreSQL");
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }
}

/// Connects, drives the connection on a task of its own, and runs `setup` on the session.
pub(crate) async fn connect(config: &Config, setup: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL connection closed");
        }
    });
    if !setup.is_empty() {
        client.batch_execute(setup).await?;
    }
    Ok(client)
}
