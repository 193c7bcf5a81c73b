//! `TokenReview` and `SubjectAccessReview`: what aggregated API servers ask the apiserver.
//!
//! kube-sim has no real identities: the token of the kubeconfig it writes (`kube-sim`) is user
//! `kube-sim-admin` in `system:masters`; other tokens are not authenticated. RBAC objects are
//! stored but not enforced, so every access review is allowed, and says why.

use serde_json::{Value, json};

use crate::aggregator::PROXY_USER;

/// The bearer token in the kubeconfig kube-sim writes.
pub const TOKEN: &str = "kube-sim";

/// Answers a review in place (fills `status`).
pub fn answer(plural: &str, mut review: Value) -> Value {
    let status = match plural {
        "tokenreviews" => {
            if review["spec"]["token"].as_str() == Some(TOKEN) {
                json!({"authenticated": true, "user": {"username": PROXY_USER, "uid": "kube-sim-admin",
                       "groups": ["system:masters", "system:authenticated"]}, "audiences": review["spec"]["audiences"]})
            } else {
                json!({"authenticated": false, "error": "token not recognized by kube-sim (its kubeconfig's token is `kube-sim`)"})
            }
        }
        _ => json!({"allowed": true, "reason": "kube-sim does not enforce RBAC"}),
    };
    review["status"] = status;
    review
}
