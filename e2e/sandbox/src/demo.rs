//! The demo: a small local queue the user pushes messages to, a Deployment that works it off,
//! and a ScaledObject with a `metrics-api` trigger that reads the queue's length.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use k8s_openapi::api::apps::v1::Deployment;
use keda_operator_crd::ScaledObject;
use kube::api::{Api, Patch, PatchParams};

/// Namespace of the demo objects.
pub const NAMESPACE: &str = "demo";
/// Name of the demo Deployment and its ScaledObject.
pub const NAME: &str = "queue-worker";
/// Messages one replica is expected to handle (`targetValue`).
pub const MESSAGES_PER_REPLICA: u64 = 5;

/// The queue: just a length.
#[derive(Debug, Default)]
pub struct Queue {
    messages: AtomicU64,
}

impl Queue {
    pub fn len(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set(&self, messages: u64) {
        self.messages.store(messages, Ordering::Relaxed);
    }
}

#[derive(Debug, serde::Deserialize)]
struct Count {
    count: Option<u64>,
}

/// Serves the queue: `GET /queue` → `{"messages": N}`; `POST /queue/push?count=N`,
/// `POST /queue/pop?count=N`, `POST /queue/drain`.
pub async fn serve_queue(listen: SocketAddr) -> anyhow::Result<(SocketAddr, Arc<Queue>)> {
    let queue = Arc::new(Queue::default());
    let router = Router::new()
        .route("/queue", get(length))
        .route("/queue/push", post(push))
        .route("/queue/pop", post(pop))
        .route("/queue/drain", post(drain))
        .with_state(queue.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the demo queue on {listen}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the demo queue stopped");
        }
    });
    Ok((addr, queue))
}

async fn length(State(queue): State<Arc<Queue>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "messages": queue.len() }))
}

async fn push(
    State(queue): State<Arc<Queue>>,
    Query(count): Query<Count>,
) -> axum::Json<serde_json::Value> {
    let added = count.count.unwrap_or(1);
    let now = queue
        .messages
        .fetch_add(added, Ordering::Relaxed)
        .saturating_add(added);
    axum::Json(serde_json::json!({ "messages": now }))
}

async fn pop(
    State(queue): State<Arc<Queue>>,
    Query(count): Query<Count>,
) -> axum::Json<serde_json::Value> {
    let taken = count.count.unwrap_or(1);
    let now = queue
        .messages
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(taken))
        })
        .map_or(0, |before| before.saturating_sub(taken));
    axum::Json(serde_json::json!({ "messages": now }))
}

async fn drain(State(queue): State<Arc<Queue>>) -> axum::Json<serde_json::Value> {
    queue.set(0);
    axum::Json(serde_json::json!({ "messages": 0 }))
}

/// The demo's manifests, for a queue at `queue_url`.
pub fn manifests(queue_url: &str) -> anyhow::Result<(Deployment, ScaledObject)> {
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {"containers": [{"name": "worker", "image": "registry.example/queue-worker:1"}]}
            }
        }
    }))?;
    let scaled_object: ScaledObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"name": NAME},
            "pollingInterval": 2,
            "cooldownPeriod": 20,
            "minReplicaCount": 0,
            "maxReplicaCount": 10,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 10}
            }}},
            "triggers": [{
                "type": "metrics-api",
                "metadata": {
                    "url": queue_url,
                    "valueLocation": "messages",
                    "targetValue": MESSAGES_PER_REPLICA.to_string()
                }
            }]
        }
    }))?;
    Ok((deployment, scaled_object))
}

/// Applies the demo objects.
pub async fn apply(client: &kube::Client, queue_url: &str) -> anyhow::Result<()> {
    crate::ensure_namespace(client, NAMESPACE).await?;
    let (deployment, scaled_object) = manifests(queue_url)?;
    let params = PatchParams::apply("keda-sandbox").force();
    Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .patch(NAME, &params, &Patch::Apply(&deployment))
        .await
        .context("applying the demo Deployment")?;
    Api::<ScaledObject>::namespaced(client.clone(), NAMESPACE)
        .patch(NAME, &params, &Patch::Apply(&scaled_object))
        .await
        .context("applying the demo ScaledObject")?;
    Ok(())
}
