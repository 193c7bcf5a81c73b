//! The registry of served resource types: the built-in ones and those CRDs add.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// Where `/scale` reads and writes replicas in an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// JSON path like `.spec.replicas`.
    pub spec_replicas: String,
    pub status_replicas: String,
    /// Path to the label selector string (CRDs) or `None` for built-ins, whose selector is
    /// rendered from `spec.selector`.
    pub label_selector: Option<String>,
}

/// One served resource type.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    /// Verbs advertised in discovery.
    pub verbs: Vec<&'static str>,
    /// For custom resources: the CRD's version schema (`openAPIV3Schema`) and printer columns.
    pub custom: Option<Arc<CustomResource>>,
}

/// What a CRD adds to a resource type.
#[derive(Debug)]
pub struct CustomResource {
    pub crd_name: String,
    pub schema: Option<Value>,
    /// The schema compiled once, for validating every write.
    pub validator: Option<jsonschema::Validator>,
    pub printer_columns: Vec<Value>,
}

impl ResourceType {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL prefix of this type's group version (`/api/v1` or `/apis/<g>/<v>`).
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }

    pub fn is_custom(&self) -> bool {
        self.custom.is_some()
    }
}

/// Identifies a resource type independently of version (one version is served per type).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub group: String,
    pub plural: String,
}

const ALL_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
    scale: bool,
}

#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    Builtin { group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false, short_names: &["ns"], status: true, scale: false },
    Builtin { group: "", version: "v1", kind: "Pod", plural: "pods", namespaced: true, short_names: &["po"], status: true, scale: false },
    Builtin { group: "", version: "v1", kind: "Service", plural: "services", namespaced: true, short_names: &["svc"], status: true, scale: false },
    Builtin { group: "", version: "v1", kind: "Endpoints", plural: "endpoints", namespaced: true, short_names: &["ep"], status: false, scale: false },
    Builtin { group: "", version: "v1", kind: "Secret", plural: "secrets", namespaced: true, short_names: &[], status: false, scale: false },
    Builtin { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", namespaced: true, short_names: &["cm"], status: false, scale: false },
    Builtin { group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", namespaced: true, short_names: &["sa"], status: false, scale: false },
    Builtin { group: "", version: "v1", kind: "Event", plural: "events", namespaced: true, short_names: &["ev"], status: false, scale: false },
    Builtin { group: "events.k8s.io", version: "v1", kind: "Event", plural: "events", namespaced: true, short_names: &["ev"], status: false, scale: false },
    Builtin { group: "apps", version: "v1", kind: "Deployment", plural: "deployments", namespaced: true, short_names: &["deploy"], status: true, scale: true },
    Builtin { group: "apps", version: "v1", kind: "StatefulSet", plural: "statefulsets", namespaced: true, short_names: &["sts"], status: true, scale: true },
    Builtin { group: "apps", version: "v1", kind: "ReplicaSet", plural: "replicasets", namespaced: true, short_names: &["rs"], status: true, scale: true },
    Builtin { group: "autoscaling", version: "v2", kind: "HorizontalPodAutoscaler", plural: "horizontalpodautoscalers", namespaced: true, short_names: &["hpa"], status: true, scale: false },
    Builtin { group: "batch", version: "v1", kind: "Job", plural: "jobs", namespaced: true, short_names: &[], status: true, scale: false },
    Builtin { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", namespaced: true, short_names: &[], status: false, scale: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "Role", plural: "roles", namespaced: true, short_names: &[], status: false, scale: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "RoleBinding", plural: "rolebindings", namespaced: true, short_names: &[], status: false, scale: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRole", plural: "clusterroles", namespaced: false, short_names: &[], status: false, scale: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRoleBinding", plural: "clusterrolebindings", namespaced: false, short_names: &[], status: false, scale: false },
    Builtin { group: "apiextensions.k8s.io", version: "v1", kind: "CustomResourceDefinition", plural: "customresourcedefinitions", namespaced: false, short_names: &["crd", "crds"], status: true, scale: false },
    Builtin { group: "apiregistration.k8s.io", version: "v1", kind: "APIService", plural: "apiservices", namespaced: false, short_names: &[], status: true, scale: false },
    Builtin { group: "admissionregistration.k8s.io", version: "v1", kind: "ValidatingWebhookConfiguration", plural: "validatingwebhookconfigurations", namespaced: false, short_names: &[], status: false, scale: false },
    Builtin { group: "admissionregistration.k8s.io", version: "v1", kind: "MutatingWebhookConfiguration", plural: "mutatingwebhookconfigurations", namespaced: false, short_names: &[], status: false, scale: false },
    Builtin { group: "authentication.k8s.io", version: "v1", kind: "TokenReview", plural: "tokenreviews", namespaced: false, short_names: &[], status: false, scale: false },
    Builtin { group: "authorization.k8s.io", version: "v1", kind: "SubjectAccessReview", plural: "subjectaccessreviews", namespaced: false, short_names: &[], status: false, scale: false },
];

/// Review resources: created to ask a question, answered at once, never stored.
pub fn is_review(group: &str, plural: &str) -> bool {
    matches!(
        (group, plural),
        ("authentication.k8s.io", "tokenreviews")
            | ("authorization.k8s.io", "subjectaccessreviews")
    )
}

/// All served types, shared by the API server and the controller loops.
#[derive(Debug)]
pub struct Registry {
    types: RwLock<BTreeMap<ResourceKey, Arc<ResourceType>>>,
}

impl Default for Registry {
    fn default() -> Self {
        let types = BUILTINS
            .iter()
            .map(|b| {
                let rt = ResourceType {
                    group: b.group.into(),
                    version: b.version.into(),
                    kind: b.kind.into(),
                    plural: b.plural.into(),
                    singular: b.kind.to_lowercase(),
                    namespaced: b.namespaced,
                    short_names: b.short_names.iter().map(|s| (*s).to_owned()).collect(),
                    categories: if matches!(
                        b.plural,
                        "pods"
                            | "services"
                            | "deployments"
                            | "statefulsets"
                            | "replicasets"
                            | "jobs"
                            | "horizontalpodautoscalers"
                    ) {
                        vec!["all".to_owned()]
                    } else {
                        Vec::new()
                    },
                    status: b.status,
                    scale: b.scale.then(|| ScalePaths {
                        spec_replicas: ".spec.replicas".into(),
                        status_replicas: ".status.replicas".into(),
                        label_selector: None,
                    }),
                    verbs: if is_review(b.group, b.plural) {
                        vec!["create"]
                    } else {
                        ALL_VERBS.to_vec()
                    },
                    custom: None,
                };
                (rt.key(), Arc::new(rt))
            })
            .collect();
        Self {
            types: RwLock::new(types),
        }
    }
}

impl Registry {
    pub fn get(&self, key: &ResourceKey) -> Option<Arc<ResourceType>> {
        self.read().get(key).cloned()
    }

    /// Finds a type by group, version and plural, as a request path names it.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.read()
            .get(&ResourceKey {
                group: group.into(),
                plural: plural.into(),
            })
            .filter(|t| t.version == version)
            .cloned()
    }

    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.read()
            .values()
            .find(|t| t.kind == kind && t.api_version() == api_version)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        self.read().values().cloned().collect()
    }

    pub fn insert(&self, rt: ResourceType) {
        self.types
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(rt.key(), Arc::new(rt));
    }

    pub fn remove(&self, key: &ResourceKey) {
        self.types
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// Group versions in discovery order: the core group first, then groups by name.
    pub fn group_versions(&self) -> Vec<(String, String)> {
        let mut gvs: Vec<(String, String)> = self
            .read()
            .values()
            .map(|t| (t.group.clone(), t.version.clone()))
            .collect();
        gvs.sort();
        gvs.dedup();
        gvs
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ResourceKey, Arc<ResourceType>>> {
        self.types
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
