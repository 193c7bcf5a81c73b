//! The AMQP side of `rabbitmq` triggers: the connection settings of a broker (`AmqpKey`, with
//! its TLS settings), the shared connections (`AmqpPool`, `AmqpClient`) and the passive
//! `queue.declare` that counts a queue's ready messages.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{Channel, QueueDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::tls::TlsAdaptor;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use tokio_rustls::TlsConnector;

use super::{Metadata, Tls, percent_decode};
use crate::params::ParamError;
use crate::scalers::pooled::Pool;
use crate::scalers::{ScalerError, error_chain, tls};

/// The parameters TLS errors of AMQP connections name.
const TLS_NAMES: tls::Names = tls::Names {
    tls: "tls",
    ca: "ca",
    cert: "cert",
    key: "key",
};

/// TLS settings of an AMQP connection (`amqps://` or `tls: enable`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AmqpTls {
    material: Tls,
    unsafe_ssl: bool,
}

/// What makes two AMQP triggers share a connection.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AmqpKey {
    /// As in the URL (an IPv6 address in brackets).
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) vhost: String,
    pub(super) username: String,
    pub(super) password: String,
    pub(super) tls: Option<AmqpTls>,
}

impl fmt::Debug for AmqpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpKey")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("vhost", &self.vhost)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl AmqpKey {
    pub(super) fn new(metadata: &Metadata) -> Result<Self, ParamError> {
        let url = reqwest::Url::parse(&metadata.host)
            .map_err(|e| ParamError::invalid("host", format!("is not a URL ({e})")))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ParamError::invalid("host", "names no server"))?
            .to_owned();
        let amqps = url.scheme().eq_ignore_ascii_case("amqps");
        let port = url.port().unwrap_or(if amqps { 5671 } else { 5672 });
        let tls = (amqps || metadata.tls.is_some()).then(|| AmqpTls {
            material: metadata.tls.clone().unwrap_or_default(),
            unsafe_ssl: metadata.unsafe_ssl,
        });
        let (username, password) = match &metadata.credentials {
            Some((user, password)) => (user.clone(), password.clone()),
            None if url.username().is_empty() => ("guest".to_owned(), "guest".to_owned()),
            None => (
                percent_decode(url.username()),
                percent_decode(url.password().unwrap_or_default()),
            ),
        };
        let vhost = match &metadata.vhost_name {
            Some(vhost) => vhost.clone(),
            None => percent_decode(url.path().strip_prefix('/').unwrap_or(url.path())),
        };
        let vhost = if vhost.is_empty() {
            "/".to_owned()
        } else {
            vhost
        };
        Ok(Self {
            host,
            port,
            vhost,
            username,
            password,
            tls,
        })
    }

    pub(super) fn shown(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The TLS side of the connection, when it has one; no I/O but reading the system's trust
    /// store once. The rustls configuration has the system's roots and `ca` (or no
    /// verification with `unsafeSsl`), and the client certificate if any.
    pub(super) fn tls_adaptor(&self) -> Result<Option<TlsAdaptor>, ParamError> {
        let Some(AmqpTls {
            material,
            unsafe_ssl,
        }) = &self.tls
        else {
            return Ok(None);
        };
        let client = tls::ClientTls {
            ca: material.ca.as_deref(),
            cert: material.cert.as_deref(),
            key: material.key.as_deref(),
            unsafe_ssl: *unsafe_ssl,
        };
        let config = tls::client_config(&client, TLS_NAMES)?;
        let domain = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Some(TlsAdaptor::new(
            TlsConnector::from(Arc::new(config)),
            domain,
        )))
    }
}

/// Keeps the broker's reason when it closes a channel (a passive declare of a queue that does
/// not exist closes the channel with 404).
#[derive(Clone, Default)]
pub(super) struct CloseReason(Arc<std::sync::Mutex<Option<(u16, String)>>>);

impl CloseReason {
    fn take(&self) -> Option<(u16, String)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

#[async_trait::async_trait]
impl ChannelCallback for CloseReason {
    async fn close(
        &mut self,
        _: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((close.reply_code(), close.reply_text().clone()));
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _: &Channel, _: Ack) {}

    async fn publish_nack(&mut self, _: &Channel, _: Nack) {}

    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// The shared AMQP connections of `rabbitmq` triggers.
pub type AmqpPool = Pool<AmqpKey, AmqpClient>;

/// Open channels kept for the next reads of a broker (more concurrent reads open more).
const MAX_IDLE_CHANNELS: usize = 8;

/// One broker, virtual host and user as AMQP triggers read it: a connection made on first use
/// and made again after it broke. Each read takes an idle channel or opens one, and gives it back
/// while it is open (a passive declare of a missing queue closes its channel).
pub struct AmqpClient {
    pub(super) key: AmqpKey,
    pub(super) tls: Option<TlsAdaptor>,
    pub(super) shown: String,
    pub(super) connection: tokio::sync::Mutex<Option<Connection>>,
    pub(super) idle: std::sync::Mutex<Vec<(Channel, CloseReason)>>,
}

impl fmt::Debug for AmqpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpClient")
            .field("server", &self.shown)
            .field("vhost", &self.key.vhost)
            .finish_non_exhaustive()
    }
}

impl Drop for AmqpClient {
    /// A connection closes itself on a task of the runtime; without one (a process shutting
    /// down) it is left to the operating system instead of panicking.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            // Channels and connections close themselves on a task of the runtime.
            let idle = self
                .idle
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::forget(std::mem::take(idle));
            if let Some(connection) = self.connection.get_mut().take() {
                std::mem::forget(connection);
            }
        }
    }
}

impl AmqpClient {
    fn error(&self, what: &str) -> ScalerError {
        ScalerError::Source(format!("RabbitMQ at {}: {what}", self.shown))
    }

    async fn connection(&self, timeout: Duration) -> Result<Connection, ScalerError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(connection.clone());
        }
        let key = &self.key;
        let mut arguments =
            OpenConnectionArguments::new(&key.host, key.port, &key.username, &key.password);
        arguments
            .virtual_host(&key.vhost)
            .connection_name("keda-rs");
        if let Some(tls) = &self.tls {
            arguments.tls_adaptor(tls.clone());
        }
        let connection = tokio::time::timeout(timeout, Connection::open(&arguments))
            .await
            .map_err(|_| self.error(&format!("no connection within {timeout:?}")))?
            .map_err(|e| self.error(&format!("cannot connect: {}", error_chain(&e))))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// An idle open channel of `connection`, or a new one.
    async fn channel(
        &self,
        connection: &Connection,
    ) -> Result<(Channel, CloseReason), amqprs::error::Error> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            match idle {
                Some((channel, reason)) if channel.is_open() && connection.is_open() => {
                    return Ok((channel, reason));
                }
                Some(_) => {}
                None => break,
            }
        }
        let channel = connection.open_channel(None).await?;
        let reason = CloseReason::default();
        channel.register_callback(reason.clone()).await?;
        Ok((channel, reason))
    }

    /// Keeps an open channel for the next read.
    fn give_back(&self, channel: Channel, reason: CloseReason) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if channel.is_open() && idle.len() < MAX_IDLE_CHANNELS {
            idle.push((channel, reason));
        }
    }

    /// The message count of `queue` (a passive declare on an idle or new channel), on a new
    /// connection once more if the shared one broke.
    pub(super) async fn message_count(
        &self,
        queue: &str,
        timeout: Duration,
    ) -> Result<f64, ScalerError> {
        let mut retried = false;
        loop {
            let connection = self.connection(timeout).await?;
            let declare = async {
                let (channel, reason) = match self.channel(&connection).await {
                    Ok(opened) => opened,
                    Err(error) => return (Err(error), None),
                };
                let declared = channel
                    .queue_declare(QueueDeclareArguments::new(queue).passive(true).finish())
                    .await;
                if declared.is_ok() {
                    self.give_back(channel, reason.clone());
                }
                (declared, Some(reason))
            };
            match tokio::time::timeout(timeout, declare).await {
                Ok((Ok(Some((_, count, _))), _)) => return Ok(f64::from(count)),
                Ok((Ok(None), _)) => return Err(self.error("no answer to queue.declare")),
                Ok((Err(error), reason)) => {
                    if !connection.is_open() {
                        *self.connection.lock().await = None;
                        if !retried {
                            retried = true;
                            continue;
                        }
                    }
                    return Err(match reason.and_then(|r| r.take()) {
                        Some((404, _)) => self.error(&format!(
                            "queue {queue:?} does not exist in virtual host {:?}",
                            self.key.vhost
                        )),
                        Some((code, text)) => {
                            self.error(&format!("queue {queue:?}: the broker said {code} {text}"))
                        }
                        None => self.error(&format!("queue {queue:?}: {}", error_chain(&error))),
                    });
                }
                Err(_) => {
                    *self.connection.lock().await = None;
                    return Err(self.error(&format!(
                        "no answer about queue {queue:?} within {timeout:?}"
                    )));
                }
            }
        }
    }
}
