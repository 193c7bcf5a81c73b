//! `activationPush: "true"`: a NATS connection that tells the scale loop at once when a
//! message is published to the stream's subjects while the trigger is inactive, instead of at
//! the next polling interval. The loop then reads the backlog as usual; a push only wakes it.
//!
//! The client port comes from the monitoring endpoint's `/varz` (on the endpoint's host), the
//! subjects from the JetStream API (`$JS.API.STREAM.INFO.<stream>`). Each subject is
//! subscribed for one message only (`UNSUB <sid> 1`), so a busy stream costs one message per
//! arming; the subscriptions are armed again only while the last read found the trigger
//! inactive. Servers that require client authentication or TLS cannot be subscribed to (the
//! push stream ends with a warning and polling goes on). A connection that fails is made again
//! after a wait that starts at 2 s and doubles up to 60 s.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

/// How long after a push (or a check) the subscriptions are armed again, if inactive.
const REARM: Duration = Duration::from_secs(5);
/// The first and the longest wait before connecting again.
const FIRST_WAIT: Duration = Duration::from_secs(2);
const LONGEST_WAIT: Duration = Duration::from_secs(60);
/// The largest protocol line or message accepted.
const MAX_FRAME: usize = 8 * 1024 * 1024;

/// What the push stream needs from its scaler.
pub(super) struct Subscription {
    /// `/varz` of the configured monitoring endpoint.
    pub(super) varz: reqwest::Url,
    pub(super) stream: String,
    pub(super) timeout: Duration,
    /// What the last read found (`true` while active).
    pub(super) active: Arc<AtomicBool>,
}

/// Why a connection ended.
enum Failure {
    /// Worth trying again later.
    Retry(String),
    /// Will not work with this server; stop.
    Never(String),
}

#[derive(Deserialize)]
struct Varz {
    #[serde(default)]
    port: u16,
}

#[derive(Deserialize)]
struct Info {
    #[serde(default)]
    auth_required: bool,
    #[serde(default)]
    tls_required: bool,
}

#[derive(Deserialize)]
struct StreamInfo {
    #[serde(default)]
    config: Option<StreamConfig>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamConfig {
    #[serde(default)]
    subjects: Vec<String>,
}

/// One connection with its subscriptions.
struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    subjects: Vec<String>,
    /// The next subscription id.
    next_sid: u64,
    /// The ids of the subscriptions armed last.
    armed: Vec<u64>,
}

/// One protocol frame that matters here.
enum Frame {
    /// A message on subscription `sid`.
    Message {
        sid: u64,
        payload: Vec<u8>,
    },
    Other,
}

impl Connection {
    async fn open(sub: &Subscription) -> Result<Self, Failure> {
        let retry = |what: &str, e: &dyn std::fmt::Display| Failure::Retry(format!("{what}: {e}"));
        let client = super::super::http_auth::shared_client(false)
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let response = client
            .get(sub.varz.clone())
            .timeout(sub.timeout)
            .send()
            .await
            .map_err(|e| retry("GET /varz", &super::super::error_chain(&e)))?;
        let varz: Varz = json_of(response).await?;
        let host = sub.varz.host_str().unwrap_or_default().to_owned();
        let address = (
            host.trim_start_matches('[').trim_end_matches(']'),
            varz.port,
        );
        let stream = tokio::time::timeout(sub.timeout, TcpStream::connect(address))
            .await
            .map_err(|_| Failure::Retry(format!("connecting to {host}:{}: timed out", varz.port)))?
            .map_err(|e| retry(&format!("connecting to {host}:{}", varz.port), &e))?;
        let (read, writer) = stream.into_split();
        let mut connection = Self {
            reader: BufReader::new(read),
            writer,
            subjects: Vec::new(),
            next_sid: 2,
            armed: Vec::new(),
        };
        let info = connection.line(sub.timeout).await?;
        let info: Info = info
            .strip_prefix("INFO ")
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| Failure::Retry("the server did not greet as NATS".to_owned()))?;
        if info.auth_required || info.tls_required {
            return Err(Failure::Never(
                "the server requires client authentication or TLS, which activationPush does \
                 not support"
                    .to_owned(),
            ));
        }
        let inbox = format!("_INBOX.keda-rs.{:016x}", rand_id());
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"lang\":\"rust\",\"name\":\"keda-rs activationPush\",\"protocol\":1}}\r\n\
             SUB {inbox} 1\r\nPUB $JS.API.STREAM.INFO.{} {inbox} 0\r\n\r\n",
            sub.stream
        );
        connection.send(hello.as_bytes()).await?;
        let answer = loop {
            match tokio::time::timeout(sub.timeout, connection.frame()).await {
                Err(_) => {
                    return Err(Failure::Retry(
                        "the JetStream API did not answer (is JetStream enabled?)".to_owned(),
                    ));
                }
                Ok(Ok(Frame::Message { sid: 1, payload })) => break payload,
                Ok(Ok(_)) => {}
                Ok(Err(failure)) => return Err(failure),
            }
        };
        let info: StreamInfo = serde_json::from_slice(&answer)
            .map_err(|e| retry("the stream info is not JSON", &e))?;
        if let Some(error) = info.error {
            return Err(Failure::Retry(format!(
                "stream {:?}: the JetStream API answered {error}",
                sub.stream
            )));
        }
        connection.subjects = info.config.map(|c| c.subjects).unwrap_or_default();
        if connection.subjects.is_empty() {
            return Err(Failure::Retry(format!(
                "stream {:?} has no subjects to subscribe to",
                sub.stream
            )));
        }
        connection.send(b"UNSUB 1\r\n").await?;
        Ok(connection)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.writer
            .write_all(bytes)
            .await
            .map_err(|e| Failure::Retry(format!("writing: {e}")))
    }

    async fn line(&mut self, timeout: Duration) -> Result<String, Failure> {
        tokio::time::timeout(timeout, self.read_line())
            .await
            .map_err(|_| Failure::Retry("the server sent nothing".to_owned()))?
    }

    async fn read_line(&mut self) -> Result<String, Failure> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_FRAME as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| Failure::Retry(format!("reading: {e}")))?;
        if read == 0 {
            return Err(Failure::Retry(
                "the server closed the connection".to_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
    }

    /// The next frame; answers pings.
    async fn frame(&mut self) -> Result<Frame, Failure> {
        let line = self.read_line().await?;
        if line == "PING" {
            self.send(b"PONG\r\n").await?;
            return Ok(Frame::Other);
        }
        if let Some(error) = line.strip_prefix("-ERR") {
            return Err(Failure::Retry(format!(
                "the server refused: {}",
                error.trim()
            )));
        }
        let Some(rest) = line.strip_prefix("MSG ") else {
            return Ok(Frame::Other);
        };
        // MSG <subject> <sid> [reply] <size>
        let words: Vec<&str> = rest.split_whitespace().collect();
        let malformed = || Failure::Retry(format!("a malformed message line: {line:?}"));
        let (Some(sid), Some(size)) = (words.get(1), words.last()) else {
            return Err(malformed());
        };
        let sid: u64 = sid.parse().map_err(|_| malformed())?;
        let size: usize = size.parse().map_err(|_| malformed())?;
        if size > MAX_FRAME {
            return Err(malformed());
        }
        let mut payload = vec![0; size + 2];
        self.reader
            .read_exact(&mut payload)
            .await
            .map_err(|e| Failure::Retry(format!("reading: {e}")))?;
        payload.truncate(size);
        Ok(Frame::Message { sid, payload })
    }

    /// Subscribes to each subject for one message, dropping what was armed before.
    async fn arm(&mut self) -> Result<(), Failure> {
        let mut commands = String::new();
        for sid in self.armed.drain(..) {
            let _ = write!(commands, "UNSUB {sid}\r\n");
        }
        for subject in &self.subjects {
            let sid = self.next_sid;
            self.next_sid += 1;
            let _ = write!(commands, "SUB {subject} {sid}\r\nUNSUB {sid} 1\r\n");
            self.armed.push(sid);
        }
        self.send(commands.as_bytes()).await
    }
}

/// The JSON body of a 200 answer.
async fn json_of<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, Failure> {
    let shown = response.url().path().to_owned();
    if response.status() != reqwest::StatusCode::OK {
        return Err(Failure::Retry(format!(
            "GET {shown}: the monitoring endpoint returned {}",
            response.status().as_u16()
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| Failure::Retry(format!("GET {shown}: {}", super::super::error_chain(&e))))?;
    serde_json::from_slice(&body)
        .map_err(|e| Failure::Retry(format!("GET {shown}: not the monitoring JSON: {e}")))
}

/// A value that differs between connections (inbox names).
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// Completes when the scaler is dropped.
async fn dropped(alive: &mut watch::Receiver<()>) {
    while alive.changed().await.is_ok() {}
}

struct Push {
    sub: Subscription,
    /// Ends (its sender is dropped) when the scaler is dropped.
    alive: watch::Receiver<()>,
    connection: Option<Connection>,
    /// The wait before the next connection attempt.
    wait: Duration,
    /// Whether the subscriptions are armed now.
    armed: bool,
}

/// Yields `()` when a message reaches the stream's subjects while the trigger is inactive;
/// ends when the scaler is dropped or the server cannot be subscribed to.
pub(super) fn activations(sub: Subscription, alive: watch::Receiver<()>) -> BoxStream<'static, ()> {
    let state = Push {
        sub,
        alive,
        connection: None,
        wait: Duration::ZERO,
        armed: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        state.next().await.map(|()| ((), state))
    })
    .boxed()
}

impl Push {
    async fn next(&mut self) -> Option<()> {
        loop {
            let Some(connection) = self.connection.as_mut() else {
                if !self.wait.is_zero() {
                    tokio::select! {
                        () = dropped(&mut self.alive) => return None,
                        () = tokio::time::sleep(self.wait) => {}
                    }
                }
                let opened = tokio::select! {
                    () = dropped(&mut self.alive) => return None,
                    opened = Connection::open(&self.sub) => opened,
                };
                match opened {
                    Ok(connection) => {
                        self.connection = Some(connection);
                        self.armed = false;
                    }
                    Err(Failure::Never(why)) => {
                        tracing::warn!(stream = %self.sub.stream, "activationPush stops: {why}");
                        return None;
                    }
                    Err(Failure::Retry(why)) => {
                        self.wait = (self.wait * 2).clamp(FIRST_WAIT, LONGEST_WAIT);
                        tracing::warn!(stream = %self.sub.stream, wait = ?self.wait, "activationPush could not subscribe: {why}");
                    }
                }
                continue;
            };
            if !self.armed && !self.sub.active.load(Ordering::Relaxed) {
                if let Err(Failure::Retry(why) | Failure::Never(why)) = connection.arm().await {
                    tracing::warn!(stream = %self.sub.stream, "activationPush connection broke: {why}");
                    self.connection = None;
                    self.wait = FIRST_WAIT;
                    continue;
                }
                self.armed = true;
            }
            let frame = tokio::select! {
                () = dropped(&mut self.alive) => return None,
                frame = connection.frame() => Some(frame),
                () = tokio::time::sleep(REARM), if !self.armed => None,
            };
            match frame {
                // Time to look again whether to arm.
                None | Some(Ok(Frame::Other)) => {}
                Some(Ok(Frame::Message { sid, .. })) => {
                    if connection.armed.contains(&sid) {
                        self.armed = false;
                        self.wait = Duration::ZERO;
                        // Not again before the loop has read, and not while active.
                        self.sub.active.store(true, Ordering::Relaxed);
                        return Some(());
                    }
                }
                Some(Err(Failure::Retry(why) | Failure::Never(why))) => {
                    tracing::warn!(stream = %self.sub.stream, "activationPush connection broke: {why}");
                    self.connection = None;
                    self.wait = FIRST_WAIT;
                }
            }
        }
    }
}
