//! Delegated authentication and authorization, as aggregated API servers do it: requests come
//! through the front proxy (client certificate + `X-Remote-User`/`X-Remote-Group`) or carry a
//! bearer token checked with a TokenReview; access is checked with a SubjectAccessReview.
//! Decisions are cached briefly so the HPA's steady polling costs the apiserver little.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

const MAX_ENTRIES: usize = 10_000;

/// (user, namespace, metric): one authorization question.
type Access = (User, String, String);

/// The apiserver client (a newtype so configurations can be printed).
#[derive(Clone)]
pub struct KubeClient(pub kube::Client);

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeClient")
    }
}

/// Asks the apiserver who a token is and what a user may do, with a short cache.
#[derive(Debug)]
pub struct Delegate {
    client: Option<KubeClient>,
    ttl: Duration,
    tokens: Mutex<HashMap<String, (Instant, Option<User>)>>,
    decisions: Mutex<HashMap<Access, (Instant, bool)>>,
}

fn cached<K: std::hash::Hash + Eq, V: Clone>(
    map: &Mutex<HashMap<K, (Instant, V)>>,
    key: &K,
    ttl: Duration,
) -> Option<V> {
    let map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.get(key)
        .filter(|(at, _)| at.elapsed() < ttl)
        .map(|(_, v)| v.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, (Instant, V)>>, key: K, value: V) {
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, (Instant::now(), value));
}

impl Delegate {
    /// `client` is `None` when no apiserver is configured (then only `--insecure-skip-auth`
    /// works).
    pub fn new(client: Option<KubeClient>, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            tokens: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// The user a bearer token belongs to; `Ok(None)` when the apiserver does not know it.
    pub async fn token(&self, token: &str) -> Result<Option<User>, String> {
        if let Some(user) = cached(&self.tokens, &token.to_owned(), self.ttl) {
            return Ok(user);
        }
        let client = self
            .client
            .clone()
            .ok_or("no apiserver is configured to review tokens")?
            .0;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(client)
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        let status = answer.status.unwrap_or_default();
        let user = if status.authenticated == Some(true) {
            let info = status.user.unwrap_or_default();
            Some(User {
                name: info.username.unwrap_or_default(),
                groups: info.groups.unwrap_or_default(),
            })
        } else {
            None
        };
        remember(&self.tokens, token.to_owned(), user.clone());
        Ok(user)
    }

    /// Whether `user` may read external metric `metric` in `namespace`.
    pub async fn may_read(
        &self,
        user: &User,
        namespace: &str,
        metric: &str,
    ) -> Result<bool, String> {
        let key = (user.clone(), namespace.to_owned(), metric.to_owned());
        if let Some(allowed) = cached(&self.decisions, &key, self.ttl) {
            return Ok(allowed);
        }
        let client = self
            .client
            .clone()
            .ok_or("no apiserver is configured to authorize requests")?
            .0;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_owned()),
                    verb: Some("get".into()),
                    group: Some(crate::api::GROUP.into()),
                    version: Some(crate::api::VERSION.into()),
                    resource: Some(metric.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(client)
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("SubjectAccessReview failed: {e}"))?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        remember(&self.decisions, key, allowed);
        Ok(allowed)
    }
}

/// What the cluster publishes about its front proxy in
/// `kube-system/extension-apiserver-authentication`.
#[derive(Clone, Debug)]
pub struct PublishedFrontProxy {
    pub ca: String,
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
}

/// Reads the front-proxy settings every aggregated API server is meant to trust.
pub async fn published_front_proxy(client: &kube::Client) -> Result<PublishedFrontProxy, String> {
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get("extension-apiserver-authentication")
        .await
        .map_err(|e| e.to_string())?;
    let data = config_map.data.unwrap_or_default();
    let list = |key: &str| -> Vec<String> {
        data.get(key)
            .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
            .unwrap_or_default()
    };
    let ca = data
        .get("requestheader-client-ca-file")
        .cloned()
        .ok_or("the ConfigMap has no requestheader-client-ca-file")?;
    Ok(PublishedFrontProxy {
        ca,
        allowed_names: list("requestheader-allowed-names"),
        username_headers: list("requestheader-username-headers"),
    })
}
