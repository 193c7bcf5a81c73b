//! Trigger authentication: TriggerAuthentication / ClusterTriggerAuthentication parameters and
//! the target container's environment.
//!
//! A [`Resolver`] serves one scale target: it reads the environment of the target's container
//! ([`Resolver::container_env`], KEDA's `resolvedEnv`) and the parameters of a trigger's
//! `authenticationRef` ([`Resolver::auth_params`], KEDA's `authParams`).
//!
//! Where KEDA logs a missing TriggerAuthentication, Secret or key and carries on with empty
//! values, the resolver returns an [`AuthError`] and the caller decides (typically: the trigger
//! fails to build, with the error in the ScaledObject's conditions and events).
//!
//! Values read here are secrets. They never appear in `Debug` output, logs or errors: errors
//! name the object and key, never the value.

mod env;
mod trigger_auth;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keda_operator_crd::AuthPodIdentity;
use kube::Api;

/// Why a trigger's environment or authentication could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The referenced TriggerAuthentication, ClusterTriggerAuthentication, Secret or ConfigMap
    /// does not exist.
    #[error("{object} not found")]
    NotFound { object: String },
    /// The object exists but has no such key.
    #[error("{object} has no key \"{key}\"")]
    MissingKey { object: String, key: String },
    /// A Secret's value is not UTF-8 text.
    #[error("key \"{key}\" of {object} is not UTF-8 text")]
    NotText { object: String, key: String },
    /// The API server refused or failed a read.
    #[error("reading {object}: {source}")]
    Api {
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// A source keda-rs does not implement yet; refused rather than silently ignored.
    #[error("{object}: {field} is not supported yet")]
    Unsupported { object: String, field: String },
    /// The authentication reads the target's environment, but the target has no pod template.
    #[error("{object} reads the container environment, but the scale target has no pod template")]
    NoPodTemplate { object: String },
    /// The pod template has no containers at all.
    #[error("the scale target's pod template has no containers")]
    NoContainers,
    /// No container of the pod template has the requested name.
    #[error("container \"{name}\" not found in the scale target's pod template")]
    ContainerNotFound { name: String },
    /// A TriggerAuthentication `env` entry names a variable the container does not set.
    #[error("{object}: environment variable \"{name}\" is not set in container \"{container}\"")]
    MissingEnv {
        object: String,
        name: String,
        container: String,
    },
    /// The authentication is misconfigured (e.g. pod identity settings that contradict).
    #[error("{object}: {message}")]
    Invalid { object: String, message: String },
}

/// What a trigger's `authenticationRef` resolved to.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedAuth {
    /// Parameter → value (KEDA's `authParams`). Secret values; never printed.
    pub params: BTreeMap<String, String>,
    /// The platform identity the scaler authenticates with, when one other than `none` is set.
    pub pod_identity: Option<AuthPodIdentity>,
}

impl fmt::Debug for ResolvedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedAuth")
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .field("pod_identity", &self.pod_identity)
            .finish()
    }
}

/// Resolves what one scale target's triggers can read.
#[derive(Clone)]
pub struct Resolver {
    client: kube::Client,
    /// Namespace of the ScaledObject or ScaledJob: its TriggerAuthentications, the Secrets and
    /// ConfigMaps they and the container environment reference.
    namespace: String,
    /// Where the Secrets and ConfigMaps of ClusterTriggerAuthentications live
    /// (`KEDA_CLUSTER_OBJECT_NAMESPACE`, else the operator's namespace).
    cluster_object_namespace: String,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("namespace", &self.namespace)
            .field("cluster_object_namespace", &self.cluster_object_namespace)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver for objects in `namespace`; `cluster_object_namespace` is where
    /// ClusterTriggerAuthentications read their Secrets and ConfigMaps (the caller applies
    /// `KEDA_CLUSTER_OBJECT_NAMESPACE`, else `POD_NAMESPACE`, else `keda`).
    pub fn new(client: kube::Client, namespace: &str, cluster_object_namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            cluster_object_namespace: cluster_object_namespace.to_owned(),
        }
    }

    /// The namespace of the scaled object.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Where ClusterTriggerAuthentications read their Secrets and ConfigMaps.
    pub fn cluster_object_namespace(&self) -> &str {
        &self.cluster_object_namespace
    }
}

/// Secrets and ConfigMaps of one namespace, each read at most once per resolution.
struct Objects<'a> {
    client: &'a kube::Client,
    namespace: &'a str,
    secrets: BTreeMap<String, Option<Secret>>,
    config_maps: BTreeMap<String, Option<ConfigMap>>,
}

impl<'a> Objects<'a> {
    fn new(client: &'a kube::Client, namespace: &'a str) -> Self {
        Self {
            client,
            namespace,
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
        }
    }

    fn secret_name(&self, name: &str) -> String {
        format!("Secret {}/{name}", self.namespace)
    }

    fn config_map_name(&self, name: &str) -> String {
        format!("ConfigMap {}/{name}", self.namespace)
    }

    /// The Secret `name`, `None` when it does not exist.
    async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, AuthError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), self.namespace);
            let secret = api.get_opt(name).await.map_err(|e| AuthError::Api {
                object: self.secret_name(name),
                source: Box::new(e),
            })?;
            self.secrets.insert(name.to_owned(), secret);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }

    /// The ConfigMap `name`, `None` when it does not exist.
    async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, AuthError> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.namespace);
            let config_map = api.get_opt(name).await.map_err(|e| AuthError::Api {
                object: self.config_map_name(name),
                source: Box::new(e),
            })?;
            self.config_maps.insert(name.to_owned(), config_map);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    /// Every key of the Secret `name` as text, `None` when the Secret does not exist.
    async fn secret_data(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        let object = self.secret_name(name);
        let Some(secret) = self.secret(name).await? else {
            return Ok(None);
        };
        let mut data = BTreeMap::new();
        for (key, value) in secret.string_data.iter().flatten() {
            data.insert(key.clone(), value.clone());
        }
        for (key, value) in secret.data.iter().flatten() {
            let text = String::from_utf8(value.0.clone()).map_err(|_| AuthError::NotText {
                object: object.clone(),
                key: key.clone(),
            })?;
            data.insert(key.clone(), text);
        }
        Ok(Some(data))
    }

    /// Every key of the ConfigMap `name`, `None` when it does not exist.
    async fn config_map_data(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        Ok(self
            .config_map(name)
            .await?
            .map(|c| c.data.clone().unwrap_or_default()))
    }

    /// One key of a Secret, or which of the Secret and the key is missing.
    async fn secret_key(&mut self, name: &str, key: &str) -> Result<Lookup, AuthError> {
        let object = self.secret_name(name);
        let Some(secret) = self.secret(name).await? else {
            return Ok(Lookup::NoObject(object));
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8(v.0.clone()))
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|v| Ok(v.clone()))
            });
        match value {
            Some(Ok(text)) => Ok(Lookup::Found(text)),
            Some(Err(_)) => Err(AuthError::NotText {
                object,
                key: key.to_owned(),
            }),
            None => Ok(Lookup::NoKey(object)),
        }
    }

    /// One key of a ConfigMap, or which of the ConfigMap and the key is missing.
    async fn config_map_key(&mut self, name: &str, key: &str) -> Result<Lookup, AuthError> {
        let object = self.config_map_name(name);
        let Some(config_map) = self.config_map(name).await? else {
            return Ok(Lookup::NoObject(object));
        };
        Ok(
            match config_map.data.as_ref().and_then(|d| d.get(key)).cloned() {
                Some(value) => Lookup::Found(value),
                None => Lookup::NoKey(object),
            },
        )
    }
}

/// The result of looking one key up.
enum Lookup {
    Found(String),
    /// The object (named) does not exist.
    NoObject(String),
    /// The object (named) has no such key.
    NoKey(String),
}

impl Lookup {
    /// The value, or the error for what was missing.
    fn required(self, key: &str) -> Result<String, AuthError> {
        match self {
            Self::Found(value) => Ok(value),
            Self::NoObject(object) => Err(AuthError::NotFound { object }),
            Self::NoKey(object) => Err(AuthError::MissingKey {
                object,
                key: key.to_owned(),
            }),
        }
    }
}
