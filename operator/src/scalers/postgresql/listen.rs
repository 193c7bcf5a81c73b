//! `activationChannel` (not in KEDA): the push side of `postgresql` triggers. A `Listener` keeps
//! a dedicated connection that LISTENs on the channel and, after each NOTIFY, reads the query to
//! tell the operator at once when the trigger became active.

use std::sync::Arc;
use std::time::Duration;

use super::{Client, Key, PostgresqlScaler, connect_with, tls};
use crate::scalers::error_chain;
use crate::scalers::pooled::Pooled;

/// `activationChannel`: a dedicated connection that LISTENs on the channel. Each NOTIFY (a burst
/// counts once) reads the query; when the trigger is active, the stream yields. The connection
/// is made again after it breaks (waits from 1 s doubling to 30 s, each failure logged), and
/// the query is read once after each reconnection, for notifications sent in between.
pub(super) struct Listener {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: Option<tls::Settings>,
    pub(super) shown: String,
    pub(super) channel: String,
    pub(super) query: String,
    pub(super) activation: f64,
    pub(super) timeout: Duration,
    pub(super) pooled: Arc<Pooled<Key, Client>>,
    pub(super) alive: tokio::sync::watch::Receiver<()>,
    /// The listening connection and its notifications.
    pub(super) listening: Option<(
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    )>,
    /// The wait before the next connection attempt.
    pub(super) wait: Duration,
    /// Whether a connection was made before (so a notification may have been missed).
    pub(super) reconnecting: bool,
}

pub(super) const LISTEN_FIRST_WAIT: Duration = Duration::from_secs(1);
const LISTEN_MAX_WAIT: Duration = Duration::from_secs(30);

/// Completes when the scaler is dropped.
async fn dropped(alive: &mut tokio::sync::watch::Receiver<()>) {
    while alive.changed().await.is_ok() {}
}

/// A quoted identifier: the channel name exactly as written.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Listener {
    /// The next time the trigger was found active after a notification; `None` once the scaler
    /// is gone.
    pub(super) async fn next(&mut self) -> Option<()> {
        loop {
            let Some((_, notices)) = self.listening.as_mut() else {
                if self.listen().await? && self.active().await {
                    return Some(());
                }
                continue;
            };
            let notice = tokio::select! {
                () = dropped(&mut self.alive) => return None,
                notice = notices.recv() => notice,
            };
            if notice.is_none() {
                tracing::warn!(server = %self.shown, channel = %self.channel, "PostgreSQL LISTEN connection ended; listening again");
                self.listening = None;
                continue;
            }
            // A burst of notifications is one read.
            while notices.try_recv().is_ok() {}
            if self.active().await {
                return Some(());
            }
        }
    }

    async fn active(&self) -> bool {
        match PostgresqlScaler::reading(&self.pooled, &self.query, self.activation, self.timeout)
            .await
        {
            Ok(reading) => reading.active,
            // The next polling cycle reads again and reports the error.
            Err(error) => {
                tracing::debug!(server = %self.shown, %error, "read after a NOTIFY failed");
                false
            }
        }
    }

    /// Waits if a previous attempt failed, then connects and LISTENs once: `Some(true)` when
    /// listening again after a reconnection, `None` once the scaler is gone.
    async fn listen(&mut self) -> Option<bool> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let listen = format!("LISTEN {}", quote_identifier(&self.channel));
        let attempt = async {
            let client = connect_with(
                &self.config,
                self.tls.as_ref(),
                &self.shown,
                self.timeout,
                Some(tx),
            )
            .await?;
            tokio::time::timeout(self.timeout, client.batch_execute(&listen))
                .await
                .map_err(|_| "LISTEN timed out".to_owned())?
                .map_err(|e| error_chain(&e))?;
            Ok::<_, String>(client)
        };
        let result = tokio::select! {
            () = dropped(&mut self.alive) => return None,
            result = attempt => result,
        };
        match result {
            Ok(client) => {
                self.listening = Some((client, rx));
                self.wait = LISTEN_FIRST_WAIT;
                let missed = self.reconnecting;
                self.reconnecting = true;
                Some(missed)
            }
            Err(error) => {
                let wait = self.wait;
                tracing::warn!(server = %self.shown, channel = %self.channel, %error, ?wait, "could not LISTEN on PostgreSQL; trying again");
                self.wait = (wait * 2).min(LISTEN_MAX_WAIT);
                self.reconnecting = true;
                tokio::select! {
                    () = dropped(&mut self.alive) => return None,
                    () = tokio::time::sleep(wait) => {}
                }
                Some(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_quoted_as_written() {
        assert_eq!(quote_identifier("jobs"), "\"jobs\"");
        assert_eq!(quote_identifier("Eu \"Jobs\""), "\"Eu \"\"Jobs\"\"\"");
    }
}
