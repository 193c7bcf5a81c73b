//! Client connections to external scalers: one gRPC channel per distinct (address, TLS
//! settings), shared by every trigger that uses it and closed when the last one is dropped.
//!
//! The pool holds weak references only. Each scaler (and each of its push streams) holds a
//! strong [`Connection`]; when the last one goes, the tonic `Channel` is dropped, its
//! connection task ends and the TCP connection is closed.
//!
//! TLS is done here rather than by tonic, because tonic has no way to skip server certificate
//! verification (`unsafeSsl`): the channel connects through [`TlsConnect`], which opens the TCP
//! connection and runs a rustls handshake (ring provider, ALPN `h2`) with a client config built
//! from the trigger's settings. Requests then carry `:scheme https`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::params::ParamError;
use crate::scalers::ScalerError;
use crate::scalers::tls::{self, ClientTls, Names};

/// The parameters TLS errors of external scalers name.
const NAMES: Names = Names {
    tls: "enableTLS",
    ca: "caCert",
    cert: "tlsClientCert",
    key: "tlsClientKey",
};

/// HTTP/2 pings on connections with open streams, so a peer that vanished without closing is
/// noticed. Not more often than every 5 minutes: gRPC servers (grpc-go's default keepalive
/// policy) close connections that ping more often.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(300);
/// How long a ping may go unanswered before the connection counts as dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What makes two triggers share a connection.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    /// `host:port` as the trigger's `scalerAddress` gives it.
    pub(super) authority: String,
    /// `None` for plain text.
    pub(super) tls: Option<Tls>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("authority", &self.authority)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The TLS settings of a connection; PEM content as given by the TriggerAuthentication.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Tls {
    /// Accept any server certificate.
    pub(super) unsafe_ssl: bool,
    /// Trusted in addition to the system's roots.
    pub(super) ca: Option<String>,
    /// Client certificate chain and private key (mutual TLS).
    pub(super) client: Option<(String, String)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("unsafe_ssl", &self.unsafe_ssl)
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

/// How a push stream (`external-push`) retries: the first wait, doubled after each failure
/// up to the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushBackoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for PushBackoff {
    /// KEDA's: 2 s doubling to 60 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(60),
        }
    }
}

type Entries = Mutex<HashMap<Key, Weak<Connection>>>;

/// The shared connections of external scalers (one per process, in
/// [`Services`](crate::scalers::Services)).
#[derive(Default)]
pub struct ExternalPool {
    entries: Arc<Entries>,
    backoff: PushBackoff,
}

impl std::fmt::Debug for ExternalPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalPool")
            .field("connections", &self.connections())
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl ExternalPool {
    /// A pool whose push streams retry on another schedule (tests).
    pub fn with_push_backoff(backoff: PushBackoff) -> Self {
        Self {
            entries: Arc::default(),
            backoff,
        }
    }

    /// How push streams of triggers built on this pool retry.
    pub fn push_backoff(&self) -> PushBackoff {
        self.backoff
    }

    /// Connections some trigger still uses.
    pub fn connections(&self) -> usize {
        self.entries
            .lock()
            .map_or(0, |e| e.values().filter(|w| w.strong_count() > 0).count())
    }

    /// The connection for `key`: the existing one, or a new one that connects on first use.
    /// `timeout` bounds each connection attempt.
    pub(super) fn connection(
        &self,
        key: &Key,
        timeout: Duration,
    ) -> Result<Arc<Connection>, ScalerError> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| ScalerError::Source("external scaler pool lock poisoned".into()))?;
        if let Some(existing) = entries.get(key).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        let channel = channel(key, timeout)?;
        let connection = Arc::new(Connection {
            channel,
            key: key.clone(),
            entries: Arc::downgrade(&self.entries),
        });
        entries.insert(key.clone(), Arc::downgrade(&connection));
        Ok(connection)
    }
}

/// One shared channel; dropping the last reference closes it and forgets it in the pool.
pub(super) struct Connection {
    channel: Channel,
    key: Key,
    entries: Weak<Entries>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A handle for one call (cheap: channels are handles to one connection task).
    pub(super) fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(entries) = self.entries.upgrade() else {
            return;
        };
        if let Ok(mut entries) = entries.lock() {
            // A new connection for the same key may already have replaced this one.
            if entries
                .get(&self.key)
                .is_some_and(|w| w.strong_count() == 0)
            {
                entries.remove(&self.key);
            }
        }
    }
}

/// A lazily connecting channel for `key`.
fn channel(key: &Key, timeout: Duration) -> Result<Channel, ScalerError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ScalerError::Source(
            "external scaler channels need a Tokio runtime".into(),
        ));
    }
    let endpoint = Endpoint::from_shared(format!("http://{}", key.authority))
        .map_err(|_| ParamError::invalid("scalerAddress", "is not host:port"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let Some(tls) = &key.tls else {
        return Ok(endpoint.connect_lazy());
    };
    let origin: Uri = format!("https://{}", key.authority)
        .parse()
        .map_err(|_| ParamError::invalid("scalerAddress", "is not host:port"))?;
    let connector = TlsConnect {
        config: Arc::new(client_config(tls)?),
    };
    Ok(endpoint
        .origin(origin)
        .connect_with_connector_lazy(connector))
}

/// The rustls client configuration of `tls`: the system's roots plus the CA (or no
/// verification at all with `unsafeSsl`), the client certificate if any, ALPN `h2`.
fn client_config(tls: &Tls) -> Result<ClientConfig, ParamError> {
    let client = ClientTls {
        ca: tls.ca.as_deref(),
        cert: tls.client.as_ref().map(|(cert, _)| cert.as_str()),
        key: tls.client.as_ref().map(|(_, key)| key.as_str()),
        unsafe_ssl: tls.unsafe_ssl,
    };
    let mut config = tls::client_config(&client, NAMES)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Opens TCP connections and runs the TLS handshake on them, for tonic.
#[derive(Clone)]
struct TlsConnect {
    config: Arc<ClientConfig>,
}

impl tonic::codegen::Service<Uri> for TlsConnect {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{host:?} is not a TLS server name"),
                )
            })?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(authority: &str, tls: Option<Tls>) -> Key {
        Key {
            authority: authority.to_owned(),
            tls,
        }
    }

    #[tokio::test]
    async fn one_connection_per_key_forgotten_with_its_last_user() {
        let pool = ExternalPool::default();
        let timeout = Duration::from_secs(1);
        let plain = key("127.0.0.1:9", None);
        let tls = key(
            "127.0.0.1:9",
            Some(Tls {
                unsafe_ssl: true,
                ca: None,
                client: None,
            }),
        );
        let a = pool.connection(&plain, timeout).unwrap();
        let b = pool.connection(&plain, timeout).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = pool.connection(&tls, timeout).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(pool.connections(), 2);
        drop(a);
        assert_eq!(pool.connections(), 2);
        drop(b);
        assert_eq!(pool.connections(), 1);
        assert_eq!(pool.entries.lock().unwrap().len(), 1);
        drop(c);
        assert_eq!(pool.entries.lock().unwrap().len(), 0);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let tls = Tls {
            unsafe_ssl: false,
            ca: Some("CA-PEM".into()),
            client: Some(("CERT-PEM".into(), "KEY-PEM".into())),
        };
        let text = format!("{:?}", key("scaler:6000", Some(tls)));
        assert!(text.contains("scaler:6000"));
        assert!(!text.contains("PEM"));
    }

    #[test]
    fn a_channel_needs_a_runtime() {
        assert!(matches!(
            ExternalPool::default().connection(&key("127.0.0.1:9", None), Duration::from_secs(1)),
            Err(ScalerError::Source(_))
        ));
    }
}
