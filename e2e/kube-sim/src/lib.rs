//! kube-sim: a Kubernetes API server simulator, with the controller-manager loops autoscaling
//! depends on, for running keda-rs end to end without a cluster.
//!
//! Start it in-process with [`start`], or run the `kube-sim` binary. Where it differs from a
//! real apiserver it says so with a `501 NotImplemented` Status rather than pretending.

pub mod admission;
pub mod aggregator;
pub mod api_error;
pub mod apply;
pub mod client;
pub mod cluster;
pub mod controllers;
pub mod crds;
pub mod hpa_algorithm;
pub mod http;
pub mod pagination;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod resources;
pub mod reviews;
pub mod selectors;
pub mod store;
pub mod upstream;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

pub use cluster::Cluster;

/// Settings of a simulated cluster.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How often the HPA controller syncs each HPA.
    pub hpa_sync_period: Duration,
    /// Local addresses standing in for Services (`namespace/name` → `host:port`), for
    /// APIService and webhook backends.
    pub services: Vec<(String, String, SocketAddr)>,
    /// Namespaces created at start (besides `default`, `kube-system`, `kube-public`).
    pub namespaces: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hpa_sync_period: Duration::from_secs(15),
            services: Vec::new(),
            namespaces: Vec::new(),
        }
    }
}

/// The shared state of a running simulator.
#[derive(Debug)]
pub struct Sim {
    pub cluster: Arc<Cluster>,
    pub config: Config,
    /// Certificates kube-sim presents to aggregated API servers and webhooks.
    pub front_proxy: upstream::FrontProxy,
    /// Connections to aggregated API servers and webhooks, kept alive and reused.
    pub upstream: upstream::Pool,
}

/// A running simulator; dropping it stops the server.
#[derive(Debug)]
pub struct KubeSim {
    pub addr: SocketAddr,
    pub sim: Arc<Sim>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl KubeSim {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube-rs client for this simulator (see [`client::client`]).
    pub fn client(&self) -> Result<kube::Client, kube::Error> {
        client::client(&self.url())
    }

    /// A kubeconfig pointing at this simulator, accepted by kubectl and kube-rs.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A kubeconfig for a server URL, with a context named `kube-sim`.
pub fn kubeconfig(server: &str) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-sim", "cluster": {"server": server}}],
        "users": [{"name": "kube-sim", "user": {"token": reviews::TOKEN}}],
        "contexts": [{"name": "kube-sim", "context": {"cluster": "kube-sim", "user": "kube-sim", "namespace": "default"}}],
        "current-context": "kube-sim",
        "preferences": {}
    });
    serde_yaml::to_string(&config).unwrap_or_default()
}

/// What a fresh cluster has: the standard namespaces and the ConfigMap from which aggregated
/// API servers learn to trust the front proxy.
fn seed(cluster: &Cluster, namespaces: &[String], front_proxy: &upstream::FrontProxy) {
    let opts = controllers::options();
    if let Some(rt) = cluster.registry.lookup("", "v1", "namespaces") {
        let defaults = ["default", "kube-system", "kube-public"].map(str::to_owned);
        for ns in defaults.iter().chain(namespaces) {
            let _ = cluster.create(&rt, "", json!({"metadata": {"name": ns}}), &opts);
        }
    }
    if let Some(rt) = cluster.registry.lookup("", "v1", "configmaps") {
        let config_map = json!({
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
            "data": {
                "client-ca-file": front_proxy.ca_pem,
                "requestheader-client-ca-file": front_proxy.ca_pem,
                "requestheader-allowed-names": format!("[\"{}\"]", upstream::FRONT_PROXY_CLIENT),
                "requestheader-username-headers": "[\"X-Remote-User\"]",
                "requestheader-group-headers": "[\"X-Remote-Group\"]",
                "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
            }
        });
        let _ = cluster.create(&rt, "kube-system", config_map, &opts);
    }
}

/// Starts a simulator on the configured address, with its controller loops.
///
/// # Errors
/// When the address cannot be bound.
pub async fn start(config: Config) -> std::io::Result<KubeSim> {
    let cluster = Arc::new(Cluster::default());
    let front_proxy = upstream::FrontProxy::generate().map_err(std::io::Error::other)?;
    seed(&cluster, &config.namespaces, &front_proxy);
    let sim = Arc::new(Sim {
        cluster,
        config,
        front_proxy,
        upstream: upstream::Pool::default(),
    });
    controllers::spawn_all(&sim);
    aggregator::spawn_availability(&sim);
    let listener = tokio::net::TcpListener::bind(sim.config.listen).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .fallback(http::serve)
        .with_state(sim.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "kube-sim server stopped");
        }
    });
    Ok(KubeSim {
        addr,
        sim,
        shutdown: Some(tx),
    })
}
