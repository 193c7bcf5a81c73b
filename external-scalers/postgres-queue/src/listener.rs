//! `LISTEN` on one dedicated PostgreSQL connection, for every push stream of the scaler.
//!
//! A background task owns the connection: it `LISTEN`s on every channel any stream asked for,
//! forwards each notification to the streams (a broadcast channel), and when the connection
//! breaks it reconnects with backoff, `LISTEN`s again and tells the streams to re-check (they may
//! have missed notifications meanwhile).

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::query::quote_identifier;

/// What the streams hear from the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A notification arrived on this channel.
    Notify(String),
    /// The listening connection was (re)established: notifications may have been missed.
    Resync,
}

/// How long a new stream waits for its `LISTEN` to be in place before it goes on without (the
/// [`Event::Resync`] after the reconnection covers the gap).
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// How often the listening connection is checked with a query, so that a connection that died
/// silently is noticed.
const PING_INTERVAL: Duration = Duration::from_secs(15);

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

struct ListenRequest {
    channel: String,
    done: oneshot::Sender<()>,
}

/// Handle to the listening task; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Listener {
    requests: mpsc::UnboundedSender<ListenRequest>,
    events: broadcast::Sender<Event>,
}

impl Listener {
    /// Starts the listening task (it connects on the first request).
    pub fn start(config: Config) -> Self {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        tokio::spawn(run(config, requests_rx, events.clone()));
        Self { requests, events }
    }

    /// Subscribes to events and makes sure `channel` is listened on. Returns once the `LISTEN` is
    /// in place (or after a few seconds if the database is unreachable: the stream then hears an
    /// [`Event::Resync`] when the connection is back).
    pub async fn subscribe(&self, channel: &str) -> broadcast::Receiver<Event> {
        let events = self.events.subscribe();
        let (done, listening) = oneshot::channel();
        let request = ListenRequest {
            channel: channel.to_owned(),
            done,
        };
        if self.requests.send(request).is_ok()
            && tokio::time::timeout(LISTEN_WAIT, listening).await.is_err()
        {
            tracing::warn!(channel, "LISTEN not confirmed yet; going on without it");
        }
        events
    }
}

/// The listening task: one connection at a time, reconnecting with backoff.
async fn run(
    config: Config,
    mut requests: mpsc::UnboundedReceiver<ListenRequest>,
    events: broadcast::Sender<Event>,
) {
    let mut channels = BTreeSet::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    // Connect only once someone wants to listen.
    match requests.recv().await {
        Some(request) => {
            channels.insert(request.channel);
            waiting.push(request.done);
        }
        None => return,
    }
    let mut backoff = BACKOFF_START;
    loop {
        match session(&config, &mut channels, &mut waiting, &mut requests, &events).await {
            Ok(Ended::NoMoreRequests) => return,
            Ok(Ended::ConnectionLost) => backoff = BACKOFF_START,
            Err(error) => tracing::warn!(%error, ?backoff, "LISTEN connection failed"),
        }
        // While waiting to reconnect, keep collecting requests.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                request = requests.recv() => match request {
                    Some(request) => {
                        channels.insert(request.channel);
                        waiting.push(request.done);
                    }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum Ended {
    NoMoreRequests,
    ConnectionLost,
}

/// One connection's life: LISTEN on everything wanted, then serve requests and forward
/// notifications until the connection ends.
async fn session(
    config: &Config,
    channels: &mut BTreeSet<String>,
    waiting: &mut Vec<oneshot::Sender<()>>,
    requests: &mut mpsc::UnboundedReceiver<ListenRequest>,
    events: &broadcast::Sender<Event>,
) -> Result<Ended, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (closed_tx, mut closed) = oneshot::channel::<()>();
    let forward = events.clone();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    tracing::debug!(channel = n.channel(), "notification");
                    let _ = forward.send(Event::Notify(n.channel().to_owned()));
                }
                Ok(AsyncMessage::Notice(notice)) => {
                    tracing::debug!(notice = %notice.message(), "notice on the LISTEN connection");
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "LISTEN connection broke");
                    break;
                }
            }
        }
        let _ = closed_tx.send(());
    });
    for channel in channels.iter() {
        listen(&client, channel).await?;
    }
    tracing::info!(channels = ?channels, "listening for notifications");
    for done in waiting.drain(..) {
        let _ = done.send(());
    }
    let _ = events.send(Event::Resync);

    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = &mut closed => return Ok(Ended::ConnectionLost),
            _ = ping.tick() => {
                client.simple_query("SELECT 1").await?;
            }
            request = requests.recv() => {
                let Some(request) = request else {
                    return Ok(Ended::NoMoreRequests);
                };
                if !channels.contains(&request.channel) {
                    if let Err(error) = listen(&client, &request.channel).await {
                        channels.insert(request.channel);
                        waiting.push(request.done);
                        return Err(error);
                    }
                    tracing::info!(channel = %request.channel, "listening");
                    channels.insert(request.channel);
                }
                let _ = request.done.send(());
            }
        }
    }
}

async fn listen(client: &Client, channel: &str) -> Result<(), tokio_postgres::Error> {
    // Channels were validated as identifiers by the scaler before they got here.
    let quoted = quote_identifier(channel).unwrap_or_else(|_| "\"\"".to_owned());
    client.batch_execute(&format!("LISTEN {quoted}")).await
}
