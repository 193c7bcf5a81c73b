//! The gRPC server: a [`Scaler`] behind `externalscaler.ExternalScaler` and `grpc.health.v1`,
//! with optional TLS or mTLS and graceful shutdown.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keda_proto::externalscaler::external_scaler_server::ExternalScalerServer;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::scaler::Scaler;
use crate::service::ScalerService;

/// Default interval of the polling fallback of `StreamIsActive`.
pub const DEFAULT_STREAM_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Default time given to open calls after the shutdown signal before connections are closed.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped with an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    Bind(std::io::Error),
    /// A client CA was given without a server certificate: mTLS needs TLS.
    ClientCaWithoutTls,
    /// The TLS material was rejected, or serving failed.
    Transport(tonic::transport::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind(e) => write!(f, "cannot bind the gRPC address: {e}"),
            Self::ClientCaWithoutTls => {
                f.write_str("a client CA (mTLS) needs a server certificate and key (TLS)")
            }
            Self::Transport(e) => write!(f, "gRPC server: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind(e) => Some(e),
            Self::ClientCaWithoutTls => None,
            Self::Transport(e) => Some(e),
        }
    }
}

/// Builds and runs the gRPC server of a [`Scaler`].
///
/// It serves `externalscaler.ExternalScaler` and the standard health service
/// `grpc.health.v1.Health` (status `SERVING` for `""` and for `externalscaler.ExternalScaler`
/// until shutdown begins, then `NOT_SERVING`), so Kubernetes' `grpc` probes work unchanged.
///
/// ```no_run
/// # use keda_external_scaler::{Scaler, Server};
/// # async fn run<S: Scaler>(scaler: S, cert: Vec<u8>, key: Vec<u8>, ca: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
/// Server::new(scaler)
///     .tls(cert, key) // PEM; omit for plaintext
///     .client_ca(ca) // PEM; require client certificates signed by it (mTLS)
///     .serve("0.0.0.0:9090".parse()?, keda_external_scaler::shutdown_signal())
///     .await?;
/// # Ok(()) }
/// ```
pub struct Server<S> {
    scaler: Arc<S>,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    client_ca: Option<Vec<u8>>,
    stream_poll_interval: Duration,
    shutdown_grace: Duration,
}

impl<S> fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("tls", &self.tls.is_some())
            .field("client_ca", &self.client_ca.is_some())
            .field("stream_poll_interval", &self.stream_poll_interval)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish_non_exhaustive()
    }
}

impl<S: Scaler> Server<S> {
    /// A plaintext server for `scaler`.
    pub fn new(scaler: S) -> Self {
        Self::from_arc(Arc::new(scaler))
    }

    /// A plaintext server for a shared `scaler`.
    pub fn from_arc(scaler: Arc<S>) -> Self {
        Self {
            scaler,
            tls: None,
            client_ca: None,
            stream_poll_interval: DEFAULT_STREAM_POLL_INTERVAL,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// Serve TLS with this certificate chain and private key (both PEM).
    #[must_use]
    pub fn tls(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.tls = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Require client certificates signed by this CA (PEM): mutual TLS. Needs [`tls`](Self::tls).
    #[must_use]
    pub fn client_ca(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.client_ca = Some(ca_pem.into());
        self
    }

    /// How often `StreamIsActive` polls `is_active` when the scaler has no
    /// [`activity_stream`](Scaler::activity_stream). Default: 5 s.
    #[must_use]
    pub fn stream_poll_interval(mut self, interval: Duration) -> Self {
        self.stream_poll_interval = interval;
        self
    }

    /// How long open calls may go on after the shutdown signal before the remaining connections
    /// are closed. `StreamIsActive` streams end at the signal; this bounds other long calls (such
    /// as a health `Watch`). Default: 10 s.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Binds `addr` and serves until `shutdown` resolves (see [`shutdown_signal`]).
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let listener = TcpListener::bind(addr).await.map_err(ServeError::Bind)?;
        self.serve_on(listener, shutdown).await
    }

    /// Serves on an already bound `listener` until `shutdown` resolves.
    ///
    /// At the signal the health status turns `NOT_SERVING`, open `StreamIsActive` streams end
    /// (clients see the stream close cleanly), no new connection is accepted, and the call returns
    /// once the open calls are done or the [grace](Self::shutdown_grace) has passed.
    pub async fn serve_on(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let service_name =
            <ExternalScalerServer<ScalerService<S>> as tonic::server::NamedService>::NAME;

        let mut builder = tonic::transport::Server::builder();
        match (self.tls, self.client_ca) {
            (None, Some(_)) => return Err(ServeError::ClientCaWithoutTls),
            (None, None) => {}
            (Some((cert, key)), client_ca) => {
                let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
                if let Some(ca) = client_ca {
                    config = config.client_ca_root(Certificate::from_pem(ca));
                }
                builder = builder.tls_config(config).map_err(ServeError::Transport)?;
            }
        }

        let (stop_streams, streams_stopped) = watch::channel(false);
        let service = ScalerService::new(self.scaler, self.stream_poll_interval, streams_stopped);
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(service_name, ServingStatus::Serving)
            .await;

        let (signalled_tx, signalled_rx) = oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutdown signalled: ending streams and draining calls");
            health
                .set_service_status(service_name, ServingStatus::NotServing)
                .await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            let _ = stop_streams.send(true);
            let _ = signalled_tx.send(());
        };
        let grace = self.shutdown_grace;
        let grace_expired = async move {
            if signalled_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };

        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving externalscaler.ExternalScaler and grpc.health.v1");
        }
        let server = builder
            .add_service(health_service)
            .add_service(ExternalScalerServer::new(service))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), signal);
        tokio::select! {
            result = server => result.map_err(ServeError::Transport),
            () = grace_expired => {
                tracing::warn!(?grace, "calls still open after the shutdown grace; closing them");
                Ok(())
            }
        }
    }
}

/// Resolves at the first `SIGTERM` (what Kubernetes sends) or `SIGINT` / Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
