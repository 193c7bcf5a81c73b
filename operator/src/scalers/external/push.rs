//! `external-push`: a `StreamIsActive` stream kept open for the life of the scaler.
//!
//! Each `result=true` message is passed on at once (`false` is ignored: deactivation is left
//! to polling and the cooldown). When the stream cannot be opened or breaks, it is re-opened
//! after a wait that starts at 2 s and doubles up to 60 s; the wait starts over at 2 s after a
//! stream that ended cleanly or was healthy (it delivered a message or stayed open for more
//! than a minute).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use keda_proto::externalscaler::external_scaler_client::ExternalScalerClient;
use keda_proto::externalscaler::{IsActiveResponse, ScaledObjectRef};
use tokio::sync::watch;
use tonic::Streaming;

use super::pool::{Connection, PushBackoff};

/// A stream open this long was healthy even if it delivered nothing.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The waits between attempts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Schedule {
    backoff: PushBackoff,
    next: Duration,
}

impl Schedule {
    pub(super) fn new(backoff: PushBackoff) -> Self {
        Self {
            backoff,
            next: backoff.initial,
        }
    }

    /// The wait before the next attempt, after one that was `healthy` or not.
    pub(super) fn after(&mut self, healthy: bool) -> Duration {
        if healthy {
            self.next = self.backoff.initial;
        }
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.backoff.max);
        wait
    }
}

/// What a push stream needs from its scaler.
pub(super) struct Subscription {
    pub(super) connection: Arc<Connection>,
    pub(super) reference: ScaledObjectRef,
    /// `scalerAddress`, for logs.
    pub(super) address: String,
    /// Ends (its sender is dropped) when the scaler is dropped.
    pub(super) alive: watch::Receiver<()>,
    pub(super) backoff: PushBackoff,
}

/// Yields `()` for every `result=true`; ends when the scaler is dropped.
pub(super) fn activations(subscription: Subscription) -> BoxStream<'static, ()> {
    let state = Push {
        schedule: Schedule::new(subscription.backoff),
        subscription,
        stream: None,
        opened: Instant::now(),
        received: false,
        wait: None,
    };
    futures::stream::unfold(state, |mut state| async move {
        state.next().await.map(|()| ((), state))
    })
    .boxed()
}

struct Push {
    subscription: Subscription,
    schedule: Schedule,
    stream: Option<Streaming<IsActiveResponse>>,
    /// When the current stream was asked for.
    opened: Instant,
    /// Whether the current stream delivered a message.
    received: bool,
    /// The wait before the next attempt to open a stream.
    wait: Option<Duration>,
}

/// Completes when the scaler is dropped.
async fn dropped(alive: &mut watch::Receiver<()>) {
    while alive.changed().await.is_ok() {}
}

impl Push {
    /// The next activation, or `None` once the scaler is gone.
    async fn next(&mut self) -> Option<()> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                self.open().await?;
                continue;
            };
            let message = tokio::select! {
                () = dropped(&mut self.subscription.alive) => return None,
                message = stream.message() => message,
            };
            match message {
                Ok(Some(IsActiveResponse { result })) => {
                    self.received = true;
                    if result {
                        return Some(());
                    }
                }
                Ok(None) => {
                    self.stream = None;
                    let wait = self.schedule.after(true);
                    tracing::debug!(address = %self.subscription.address, ?wait, "external scaler ended the StreamIsActive stream; re-opening");
                    self.wait = Some(wait);
                }
                Err(status) => {
                    self.stream = None;
                    let healthy = self.received || self.opened.elapsed() > HEALTHY_AFTER;
                    let wait = self.schedule.after(healthy);
                    tracing::warn!(address = %self.subscription.address, error = %super::describe(&status), ?wait, "external scaler StreamIsActive stream broke; re-opening");
                    self.wait = Some(wait);
                }
            }
        }
    }

    /// Waits as scheduled, then tries to open the stream once; `None` once the scaler is gone.
    async fn open(&mut self) -> Option<()> {
        if let Some(wait) = self.wait.take() {
            tokio::select! {
                () = dropped(&mut self.subscription.alive) => return None,
                () = tokio::time::sleep(wait) => {}
            }
        }
        let mut client = ExternalScalerClient::new(self.subscription.connection.channel());
        self.opened = Instant::now();
        self.received = false;
        let opened = tokio::select! {
            () = dropped(&mut self.subscription.alive) => return None,
            opened = client.stream_is_active(self.subscription.reference.clone()) => opened,
        };
        match opened {
            Ok(response) => self.stream = Some(response.into_inner()),
            Err(status) => {
                let wait = self.schedule.after(false);
                tracing::warn!(address = %self.subscription.address, error = %super::describe(&status), ?wait, "could not open a StreamIsActive stream to the external scaler");
                self.wait = Some(wait);
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_after_a_healthy_stream() {
        let mut schedule = Schedule::new(PushBackoff::default());
        let waits: Vec<u64> = (0..7).map(|_| schedule.after(false).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(schedule.after(true).as_secs(), 2);
        assert_eq!(schedule.after(false).as_secs(), 4);
        assert_eq!(schedule.after(true).as_secs(), 2);
        assert_eq!(schedule.after(true).as_secs(), 2);
    }
}
