//! keda-rs's metrics server: an aggregated API server for `external.metrics.k8s.io/v1beta1`
//! that answers the HPA's queries by asking the operator over one shared gRPC channel.

pub mod api;
pub mod auth;
pub mod operator;
pub mod telemetry;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;

pub use operator::{OperatorClient, OperatorConfig};
pub use tls::ServingCert;

/// How requests are authenticated.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Serve every request without checking who sent it. For local sandboxes only.
    pub insecure_skip_auth: bool,
    /// PEM CA of the front proxy's client certificates (`requestheader-client-ca-file`).
    pub requestheader_ca: Option<String>,
    /// Allowed common names of the front proxy's certificate; empty allows any.
    pub allowed_names: Vec<String>,
    /// Headers naming the user (`X-Remote-User`).
    pub username_headers: Vec<String>,
}

/// Everything the server needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub secure_addr: SocketAddr,
    pub serving: ServingCert,
    pub auth: AuthConfig,
    pub operator: OperatorConfig,
    /// Where `/metrics` is served; `None` disables it.
    pub metrics_addr: Option<SocketAddr>,
    /// The apiserver client for TokenReviews and SubjectAccessReviews.
    pub kube: Option<auth::KubeClient>,
    /// How long authentication and authorization decisions are cached.
    pub auth_cache_ttl: std::time::Duration,
}

/// State shared by the handlers.
#[derive(Debug)]
pub struct App {
    pub operator: OperatorClient,
    pub telemetry: Arc<telemetry::Telemetry>,
    pub auth: AuthConfig,
    pub delegate: auth::Delegate,
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
}

/// Binds the secure port and serves until the process ends.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let telemetry = Arc::new(telemetry::Telemetry::default());
    let operator = OperatorClient::new(&config.operator, telemetry.upstream_calls.clone())
        .map_err(anyhow::Error::msg)?;
    if config.auth.insecure_skip_auth {
        tracing::warn!(
            "--insecure-skip-auth is set: EVERY request is served without authentication. Use this only for a local sandbox, never in a cluster."
        );
    }
    let delegate = auth::Delegate::new(config.kube.clone(), config.auth_cache_ttl);
    let app = Arc::new(App {
        operator,
        telemetry: telemetry.clone(),
        auth: config.auth.clone(),
        delegate,
    });
    let resolver = tls::Reloading::start(&config.serving).map_err(anyhow::Error::msg)?;
    let tls_config = tls::server_config(resolver, config.auth.requestheader_ca.as_deref())
        .map_err(anyhow::Error::msg)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
    let listener = tokio::net::TcpListener::bind(config.secure_addr).await?;
    let addr = listener.local_addr()?;
    if let Some(metrics_addr) = config.metrics_addr {
        tokio::spawn(async move {
            if let Err(e) = telemetry::serve(metrics_addr, telemetry).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    let router = api::router(app.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let peer = api::Peer {
                    proxy_cn: tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(tls::common_name),
                };
                let service = TowerToHyperService::new(router.layer(axum::Extension(peer)));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
    });
    Ok(Running { addr, app })
}
