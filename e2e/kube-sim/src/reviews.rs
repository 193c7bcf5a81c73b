//! `TokenReview` and `SubjectAccessReview`: what aggregated API servers ask the apiserver.
//!
//! kube-sim has no real identities: the token of the kubeconfig it writes (`kube-sim`) is user
//! `kube-sim-admin` in `system:masters`; other tokens are not authenticated. Access reviews are
//! answered from the stored RBAC objects (roles, bindings and `system:masters`), though kube-sim
//! does not enforce RBAC on requests made to itself.

use serde_json::{Value, json};

use crate::aggregator::PROXY_USER;
use crate::cluster::Cluster;
use crate::resources::ResourceKey;

/// The bearer token in the kubeconfig kube-sim writes.
pub const TOKEN: &str = "kube-sim";

/// Answers a review in place (fills `status`).
pub fn answer(cluster: &Cluster, plural: &str, mut review: Value) -> Value {
    let status = match plural {
        "tokenreviews" => {
            if review["spec"]["token"].as_str() == Some(TOKEN) {
                json!({"authenticated": true, "user": {"username": PROXY_USER, "uid": "kube-sim-admin",
                       "groups": ["system:masters", "system:authenticated"]}, "audiences": review["spec"]["audiences"]})
            } else {
                json!({"authenticated": false, "error": "token not recognized by kube-sim (its kubeconfig's token is `kube-sim`)"})
            }
        }
        _ => match authorize(cluster, &review["spec"]) {
            Some(reason) => json!({"allowed": true, "reason": reason}),
            None => json!({"allowed": false}),
        },
    };
    review["status"] = status;
    review
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn listed(list: &Value, wanted: &str) -> bool {
    strings(list).iter().any(|v| *v == "*" || *v == wanted)
}

fn subject_matches(subject: &Value, user: &str, groups: &[&str]) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str() {
        Some("User") => name == user,
        Some("Group") => groups.contains(&name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"].as_str().unwrap_or("");
            user == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, attrs: &Value) -> bool {
    if let Some(path) = attrs["path"].as_str() {
        let verb = attrs["verb"].as_str().unwrap_or("");
        return listed(&rule["verbs"], verb)
            && strings(&rule["nonResourceURLs"]).iter().any(|u| {
                *u == "*" || *u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            });
    }
    let resource = match attrs["subresource"].as_str().filter(|s| !s.is_empty()) {
        Some(sub) => format!("{}/{sub}", attrs["resource"].as_str().unwrap_or("")),
        None => attrs["resource"].as_str().unwrap_or("").to_owned(),
    };
    let names = strings(&rule["resourceNames"]);
    listed(&rule["verbs"], attrs["verb"].as_str().unwrap_or(""))
        && listed(&rule["apiGroups"], attrs["group"].as_str().unwrap_or(""))
        && listed(&rule["resources"], &resource)
        && (names.is_empty() || names.contains(&attrs["name"].as_str().unwrap_or("")))
}

/// RBAC evaluation of a SubjectAccessReview spec: the reason it is allowed, or `None`.
fn authorize(cluster: &Cluster, spec: &Value) -> Option<String> {
    let user = spec["user"].as_str().unwrap_or("");
    let groups = strings(&spec["groups"]);
    if groups.contains(&"system:masters") {
        return Some("RBAC: allowed by the system:masters group".into());
    }
    let attrs = if spec["resourceAttributes"].is_object() {
        &spec["resourceAttributes"]
    } else {
        &spec["nonResourceAttributes"]
    };
    let namespace = attrs["namespace"].as_str().unwrap_or("");
    let key = |plural: &str| ResourceKey {
        group: "rbac.authorization.k8s.io".into(),
        plural: plural.into(),
    };
    let rules_of = |kind: &str, name: &str, ns: &str| -> Vec<Value> {
        let (plural, ns) = if kind == "ClusterRole" {
            ("clusterroles", "")
        } else {
            ("roles", ns)
        };
        cluster
            .store
            .get(&key(plural), ns, name)
            .map(|r| r["rules"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    };
    let cluster_bindings = cluster.store.list(&key("clusterrolebindings"), None).0;
    let bindings = if namespace.is_empty() {
        Vec::new()
    } else {
        cluster.store.list(&key("rolebindings"), Some(namespace)).0
    };
    for (binding, binding_kind) in cluster_bindings
        .iter()
        .map(|b| (b, "ClusterRoleBinding"))
        .chain(bindings.iter().map(|b| (b, "RoleBinding")))
    {
        if !binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| subject_matches(s, user, &groups))
        {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or("");
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or("");
        let ns = binding["metadata"]["namespace"].as_str().unwrap_or("");
        if rules_of(role_kind, role_name, ns)
            .iter()
            .any(|rule| rule_allows(rule, attrs))
        {
            return Some(format!(
                "RBAC: allowed by {binding_kind} \"{}\" of {role_kind} \"{role_name}\"",
                binding["metadata"]["name"].as_str().unwrap_or("")
            ));
        }
    }
    None
}
