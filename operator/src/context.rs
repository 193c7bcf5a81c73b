//! What every part of the operator shares: clients, caches, settings and running loops.

use std::sync::Arc;
use std::time::Duration;

use keda_operator_crd::ScaledObject;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::scale_loop::Loops;
use crate::scalers::Services;
use crate::target::Discovery;
use crate::telemetry::Telemetry;

/// Operator settings that are not flags of a single component.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `app.kubernetes.io/version` on HPAs.
    pub version: String,
    /// Deadline of scaler HTTP requests (`KEDA_HTTP_DEFAULT_TIMEOUT`).
    pub http_timeout: Duration,
    /// Where ClusterTriggerAuthentications read their Secrets (`KEDA_CLUSTER_OBJECT_NAMESPACE`).
    pub cluster_object_namespace: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            http_timeout: Duration::from_secs(3),
            cluster_object_namespace: "keda".to_owned(),
        }
    }
}

/// (namespace, name) of an HPA → (fingerprint applied, the HPA's uid and generation after it).
pub type AppliedHpas =
    std::collections::HashMap<(String, String), (u64, Option<String>, Option<i64>)>;

/// Shared state of the controllers, the scale loops and the metric service.
pub struct Context {
    pub client: kube::Client,
    pub services: Services,
    pub recorder: Recorder,
    pub settings: Settings,
    pub discovery: Discovery,
    pub loops: Loops,
    /// The ScaledObjects the controller watches; loops read the latest version here.
    pub scaled_objects: Store<ScaledObject>,
    pub telemetry: Arc<Telemetry>,
    /// Asks the controller to reconcile a ScaledObject now (the loop's triggers changed their
    /// metric names, so the HPA must follow).
    pub reconcile: futures::channel::mpsc::UnboundedSender<ObjectRef<ScaledObject>>,
    /// Per HPA (namespace, name): the fingerprint last applied and the HPA's generation after
    /// it. The apiserver fills in defaults, so comparing specs would re-apply on every
    /// reconcile; an unchanged fingerprint and generation mean nothing to do.
    pub applied_hpas: std::sync::Mutex<AppliedHpas>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: kube::Client,
        settings: Settings,
        scaled_objects: Store<ScaledObject>,
        telemetry: Arc<Telemetry>,
        reconcile: futures::channel::mpsc::UnboundedSender<ObjectRef<ScaledObject>>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "keda-operator".to_owned(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Arc::new(Self {
            services: Services::new(client.clone()),
            client,
            recorder,
            settings,
            discovery: Discovery::default(),
            loops: Loops::default(),
            scaled_objects,
            telemetry,
            reconcile,
            applied_hpas: std::sync::Mutex::default(),
        })
    }

    /// Stops a ScaledObject's loop and removes the Prometheus series it wrote.
    /// Emits `KEDAScalersStopped` when a loop was running, as KEDA does.
    pub async fn stop_loop(&self, so: &ScaledObject) {
        if let Some(state) = self.loops.stop(&ObjectRef::from_obj(so)) {
            state.remove_series(&self.telemetry);
            self.event(
                so,
                false,
                "KEDAScalersStopped",
                "Stopped scalers watch".into(),
            )
            .await;
        }
    }

    /// Publishes a Kubernetes Event about a ScaledObject; a failure to publish is only logged.
    pub async fn event(&self, so: &ScaledObject, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &so.object_ref(&())).await {
            tracing::debug!(error = %e, name = %so.name_any(), reason, "could not publish an Event");
        }
    }
}
