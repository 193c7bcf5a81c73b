//! keda-rs operator: reconciles ScaledObjects into HPAs, runs the scale loop that moves
//! workloads between zero and their minimum, and serves metric values to the metrics server.

pub mod auth;
pub mod context;
pub mod decision;
pub mod fallback;
pub mod formula;
pub mod hpa;
pub mod leader;
pub mod metric_name;
pub mod metric_service;
pub mod params;
pub mod probes;
pub mod quantity;
pub mod scale_loop;
pub mod scaled_object;
pub mod scaler_set;
pub mod scalers;
pub mod status;
pub mod target;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use keda_operator_crd::ScaledObject;
use kube::api::Api;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};

pub use context::{Context, Settings};
pub use leader::LeaderConfig;

/// How the operator runs.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `--metrics-bind-address` (Prometheus); `None` disables it.
    pub metrics_addr: Option<SocketAddr>,
    /// `--health-probe-bind-address`; `None` disables it.
    pub probe_addr: Option<SocketAddr>,
    /// `--metrics-service-bind-address`, the gRPC service the metrics server calls.
    pub metric_service_addr: Option<SocketAddr>,
    /// `--cert-dir`: with `tls.crt`, `tls.key` and `ca.crt` there, the metric service requires
    /// client certificates signed by that CA (mutual TLS).
    pub cert_dir: Option<PathBuf>,
    /// `--leader-elect`.
    pub leader: Option<LeaderConfig>,
    /// `WATCH_NAMESPACE`: empty watches every namespace.
    pub watch_namespaces: Vec<String>,
    /// `KEDA_SCALEDOBJECT_CTRL_MAX_RECONCILES`.
    pub max_reconciles: u16,
    pub settings: Settings,
}

/// A started operator.
#[derive(Debug)]
pub struct Operator {
    /// Where the metric service listens (useful with port 0).
    pub metric_service_addr: Option<SocketAddr>,
    pub probe_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// True once the caches have synced.
    pub ready: Arc<AtomicBool>,
    /// Ends with an error when leadership is lost or a server fails.
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Binds the listeners and starts everything; the returned handle's `done` ends only on error.
pub async fn start(client: kube::Client, config: Config) -> anyhow::Result<Operator> {
    let telemetry = Arc::new(telemetry::Telemetry::default());
    let ready = Arc::new(AtomicBool::new(false));
    let probe = bind(config.probe_addr).await?;
    let metrics = bind(config.metrics_addr).await?;
    let metric_service = bind(config.metric_service_addr).await?;
    let operator = Operator {
        metric_service_addr: metric_service.as_ref().and_then(|l| l.local_addr().ok()),
        probe_addr: probe.as_ref().and_then(|l| l.local_addr().ok()),
        metrics_addr: metrics.as_ref().and_then(|l| l.local_addr().ok()),
        ready: ready.clone(),
        done: tokio::spawn(run(
            client,
            config,
            telemetry,
            ready,
            probe,
            metrics,
            metric_service,
        )),
    };
    Ok(operator)
}

async fn bind(addr: Option<SocketAddr>) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match addr {
        Some(addr) => {
            Ok(Some(tokio::net::TcpListener::bind(addr).await.map_err(
                |e| anyhow::anyhow!("cannot listen on {addr}: {e}"),
            )?))
        }
        None => Ok(None),
    }
}

async fn run(
    client: kube::Client,
    config: Config,
    telemetry: Arc<telemetry::Telemetry>,
    ready: Arc<AtomicBool>,
    probe: Option<tokio::net::TcpListener>,
    metrics: Option<tokio::net::TcpListener>,
    metric_service: Option<tokio::net::TcpListener>,
) -> anyhow::Result<()> {
    if let Some(listener) = probe {
        tokio::spawn(probes::serve_probes(listener, ready.clone()));
    }
    if let Some(listener) = metrics {
        tokio::spawn(probes::serve_metrics(listener, telemetry.clone()));
    }
    let leading = Arc::new(tokio::sync::OnceCell::new());
    let service = match metric_service {
        Some(listener) => tokio::spawn(serve_metric_service(
            listener,
            leading.clone(),
            config.cert_dir.clone(),
        )),
        None => tokio::spawn(futures::future::pending()),
    };
    let lost = match &config.leader {
        Some(leader) => {
            leader::acquire(&client, leader).await;
            let keep = tokio::spawn(leader::keep(client.clone(), leader.clone()));
            Some(keep)
        }
        None => None,
    };

    let (reader, writer) = reflector::store::<ScaledObject>();
    let (reconcile, reconcile_requests) = futures::channel::mpsc::unbounded();
    let ctx = Context::new(
        client.clone(),
        config.settings.clone(),
        reader.clone(),
        telemetry,
        reconcile,
    );
    let scaled_objects = watch_scaled_objects(&client, &config.watch_namespaces);
    let stream = scaled_objects
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(relevant_change, PredicateConfig::default());
    let hpa_changes = watch_owned_hpas(&client);
    let controller = Controller::for_stream(stream, reader.clone())
        .owns_stream(hpa_changes)
        .reconcile_on(reconcile_requests)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(config.max_reconciles.max(1)),
        )
        .run(
            scaled_object::reconcile,
            scaled_object::error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error");
            }
        });
    // The metric service answers (rather than UNAVAILABLE) once the cache has synced, so a
    // restart does not answer NOT_FOUND for objects it has simply not read yet.
    tokio::spawn(mark_ready_when_synced(
        reader.clone(),
        ready.clone(),
        leading.clone(),
        ctx.clone(),
    ));
    let service = async {
        match service.await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("the metric service task ended: {e}")),
        }
    };
    let lost = async {
        match lost {
            Some(handle) => match handle.await {
                Ok(lost) => anyhow::Error::new(lost),
                Err(e) => anyhow::anyhow!("leader election task ended: {e}"),
            },
            None => futures::future::pending().await,
        }
    };
    tokio::select! {
        () = controller => Err(anyhow::anyhow!("the ScaledObject controller stopped")),
        result = service => result.and(Err(anyhow::anyhow!("the metric service stopped"))),
        error = lost => Err(error),
    }
}

/// Sets `ready`, and hands the metric service its context, once the ScaledObject cache has
/// synced.
async fn mark_ready_when_synced(
    reader: reflector::Store<ScaledObject>,
    ready: Arc<AtomicBool>,
    leading: Arc<tokio::sync::OnceCell<Arc<Context>>>,
    ctx: Arc<Context>,
) {
    // The store's readiness signal wakes only its most recent waiter (the controller waits on
    // it too), so wait in short rounds rather than once.
    loop {
        match tokio::time::timeout(Duration::from_millis(100), reader.wait_until_ready()).await {
            Ok(Ok(())) => {
                let _ = leading.set(ctx);
                ready.store(true, Ordering::Relaxed);
                tracing::info!("caches synced; ready");
                return;
            }
            Ok(Err(_)) => return,
            Err(_) => {}
        }
    }
}

/// Watches ScaledObjects in every namespace, or in the listed ones.
fn watch_scaled_objects(
    client: &kube::Client,
    namespaces: &[String],
) -> futures::stream::BoxStream<'static, Result<watcher::Event<ScaledObject>, watcher::Error>> {
    let config = watcher::Config::default();
    match namespaces {
        [] => watcher(Api::<ScaledObject>::all(client.clone()), config).boxed(),
        [namespace] => watcher(
            Api::<ScaledObject>::namespaced(client.clone(), namespace),
            config,
        )
        .boxed(),
        // One watch over all namespaces, filtered: a reflector fed by several watches would be
        // reset to one namespace's objects by each watch's initial list.
        several => {
            let wanted: std::collections::HashSet<String> = several.iter().cloned().collect();
            watcher(Api::<ScaledObject>::all(client.clone()), config)
                .filter_map(move |event| {
                    let keep = |so: &ScaledObject| {
                        so.metadata
                            .namespace
                            .as_ref()
                            .is_some_and(|ns| wanted.contains(ns))
                    };
                    let event = match event {
                        Ok(
                            watcher::Event::Apply(so)
                            | watcher::Event::InitApply(so)
                            | watcher::Event::Delete(so),
                        ) if !keep(&so) => None,
                        other => Some(other),
                    };
                    futures::future::ready(event)
                })
                .boxed()
        }
    }
}

/// The HPA changes that matter, with deletions always passing the predicate (a deleted HPA is
/// recreated at once).
fn watch_owned_hpas(
    client: &kube::Client,
) -> impl futures::Stream<Item = Result<HorizontalPodAutoscaler, watcher::Error>> + Send + 'static {
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
    watcher(hpas, watcher::Config::default())
        .default_backoff()
        .map_ok(|event| match event {
            watcher::Event::Delete(mut hpa) => {
                hpa.metadata.deletion_timestamp.get_or_insert_with(|| {
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now())
                });
                watcher::Event::Delete(hpa)
            }
            other => other,
        })
        .touched_objects()
        .predicate_filter(hpa_change, PredicateConfig::default())
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "kube-runtime's predicate signature"
)]
/// Changes worth a reconcile: spec (generation), labels and annotations (copied to the HPA,
/// and the pause switches), finalizers and deletion. Status writes are not.
fn relevant_change(so: &ScaledObject) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    so.metadata.generation.hash(&mut hasher);
    so.metadata.labels.hash(&mut hasher);
    so.metadata.annotations.hash(&mut hasher);
    so.metadata.finalizers.hash(&mut hasher);
    so.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "kube-runtime's predicate signature"
)]
/// HPA changes worth a reconcile: spec, labels, annotations (not the status the HPA controller
/// rewrites on every sync).
fn hpa_change(hpa: &HorizontalPodAutoscaler) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hpa.metadata.generation.hash(&mut hasher);
    hpa.metadata.labels.hash(&mut hasher);
    hpa.metadata.annotations.hash(&mut hasher);
    hpa.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

async fn serve_metric_service(
    listener: tokio::net::TcpListener,
    ctx: Arc<tokio::sync::OnceCell<Arc<Context>>>,
    cert_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(dir) = cert_dir {
        let (cert, key, ca) = (dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca.crt"));
        if cert.exists() && key.exists() && ca.exists() {
            let tls = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(
                    std::fs::read(cert)?,
                    std::fs::read(key)?,
                ))
                .client_ca_root(tonic::transport::Certificate::from_pem(std::fs::read(ca)?));
            builder = builder.tls_config(tls)?;
            tracing::info!("metric service requires client certificates (mutual TLS)");
        } else {
            tracing::warn!(dir = %dir.display(), "no tls.crt/tls.key/ca.crt in --cert-dir: the metric service runs WITHOUT TLS");
        }
    }
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    builder
        .add_service(metric_service::Service::new(ctx))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
