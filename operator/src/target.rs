//! The scale target: any kind with a `/scale` subresource (Deployment, StatefulSet, or a custom
//! resource that declares one), reached through discovery.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use keda_operator_crd::{GroupVersionKindResource, ScaledObject};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};

/// Why the target cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("scaleTargetRef.name is empty")]
    NoName,
    #[error("invalid scaleTargetRef.apiVersion {0:?}")]
    ApiVersion(String),
    #[error("kind {kind} in {api_version} is not served by the cluster: {source}")]
    UnknownKind {
        kind: String,
        api_version: String,
        source: kube::Error,
    },
    #[error("{kind} {name} has no /scale subresource or cannot be read: {source}")]
    Scale {
        kind: String,
        name: String,
        source: kube::Error,
    },
}

/// Discovery answers, kept for the life of the process as KEDA does (per group/version/kind).
#[derive(Debug, Default)]
pub struct Discovery {
    cache: Mutex<HashMap<GroupVersionKind, ApiResource>>,
}

impl Discovery {
    async fn resource(
        &self,
        client: &kube::Client,
        gvk: &GroupVersionKind,
    ) -> Result<ApiResource, kube::Error> {
        if let Some(found) = self.cache.lock().ok().and_then(|c| c.get(gvk).cloned()) {
            return Ok(found);
        }
        let (resource, _) = kube::discovery::pinned_kind(client, gvk).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(gvk.clone(), resource.clone());
        }
        Ok(resource)
    }
}

/// A resolved scale target.
#[derive(Clone)]
pub struct Target {
    client: kube::Client,
    pub resource: ApiResource,
    pub namespace: String,
    pub name: String,
}

impl Target {
    /// Resolves a ScaledObject's `scaleTargetRef` and checks that its `/scale` answers.
    pub async fn resolve(
        client: &kube::Client,
        discovery: &Discovery,
        so: &ScaledObject,
    ) -> Result<(Self, Scale), TargetError> {
        let target = &so.spec.scale_target_ref;
        if target.name.is_empty() {
            return Err(TargetError::NoName);
        }
        let api_version = target.api_version();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) if !g.is_empty() && !v.is_empty() => (g, v),
            Some(_) => return Err(TargetError::ApiVersion(api_version.to_owned())),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, target.kind());
        let resource =
            discovery
                .resource(client, &gvk)
                .await
                .map_err(|source| TargetError::UnknownKind {
                    kind: target.kind().to_owned(),
                    api_version: api_version.to_owned(),
                    source,
                })?;
        let resolved = Self {
            client: client.clone(),
            resource,
            namespace: so.namespace().unwrap_or_default(),
            name: target.name.clone(),
        };
        let scale = resolved
            .api()
            .get_scale(&resolved.name)
            .await
            .map_err(|source| TargetError::Scale {
                kind: target.kind().to_owned(),
                name: target.name.clone(),
                source,
            })?;
        Ok((resolved, scale))
    }

    fn api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &self.resource)
    }

    /// `status.scaleTargetGVKR`.
    pub fn gvkr(&self) -> GroupVersionKindResource {
        GroupVersionKindResource {
            group: self.resource.group.clone(),
            version: self.resource.version.clone(),
            kind: self.resource.kind.clone(),
            resource: self.resource.plural.clone(),
        }
    }

    /// `<kind> <namespace>/<name>`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.resource.kind, self.namespace, self.name)
    }

    /// The target's `/scale`.
    pub async fn scale(&self) -> Result<Scale, kube::Error> {
        self.api().get_scale(&self.name).await
    }

    /// The desired replica count (`/scale` `spec.replicas`).
    pub async fn replicas(&self) -> Result<i32, kube::Error> {
        Ok(replicas_of(&self.scale().await?))
    }

    /// Sets the replica count through `/scale`.
    pub async fn set_replicas(&self, replicas: i32) -> Result<(), kube::Error> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.api()
            .patch_scale(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// The pod template's spec (`spec.template.spec`), for environment resolution.
    pub async fn pod_spec(&self) -> Result<Option<PodSpec>, kube::Error> {
        let object = self.api().get(&self.name).await?;
        Ok(object
            .data
            .pointer("/spec/template/spec")
            .and_then(|spec| serde_json::from_value(spec.clone()).ok()))
    }

    /// Running and Ready pods matching the `/scale` selector (fallback with Value targets).
    pub async fn ready_pods(&self) -> Result<i32, kube::Error> {
        let scale = self.scale().await?;
        let Some(selector) = scale.status.and_then(|s| s.selector) else {
            return Ok(0);
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let ready = list
            .items
            .iter()
            .filter(|pod| {
                let status = pod.status.as_ref();
                status.and_then(|s| s.phase.as_deref()) == Some("Running")
                    && status
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        Ok(i32::try_from(ready).unwrap_or(i32::MAX))
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `spec.replicas` of a `/scale`. The apiserver always fills it in (a Deployment's unset count
/// is defaulted to 1 before `/scale` reports it); a missing one reads as 0.
pub fn replicas_of(scale: &Scale) -> i32 {
    scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}
