//! Validating admission webhooks: requests matching a `ValidatingWebhookConfiguration` are sent
//! to its webhook as an `AdmissionReview` (v1) before they are stored, honouring
//! `failurePolicy`, `timeoutSeconds`, rules, and namespace and object selectors.
//!
//! Only requests made through the API are reviewed (as in a cluster, where controllers write
//! through the API too, but kube-sim's own simulated controllers write directly). Mutating
//! webhooks are stored but not called: a request they would change proceeds unchanged.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::Method;
use base64::Engine;
use serde_json::{Value, json};

use crate::Sim;
use crate::aggregator::{PROXY_USER, resolve_service};
use crate::api_error::ApiError;
use crate::http::objects::{self, Request};
use crate::resources::ResourceKey;
use crate::selectors::LabelSelector;
use crate::upstream::Trust;

/// The admission operation of a request, if it has one.
pub fn operation(method: &Method, named: bool) -> Option<&'static str> {
    match (method.as_str(), named) {
        ("POST", false) => Some("CREATE"),
        ("PUT" | "PATCH", true) => Some("UPDATE"),
        ("DELETE", true) => Some("DELETE"),
        _ => None,
    }
}

fn matches_list(list: &Value, value: &str) -> bool {
    list.as_array()
        .is_some_and(|items| items.iter().any(|i| i == "*" || i.as_str() == Some(value)))
}

fn rule_matches(
    rule: &Value,
    op: &str,
    group: &str,
    version: &str,
    resource: &str,
    namespaced: bool,
) -> bool {
    let scope_ok = match rule["scope"].as_str() {
        Some("Cluster") => !namespaced,
        Some("Namespaced") => namespaced,
        _ => true,
    };
    scope_ok
        && matches_list(&rule["operations"], op)
        && matches_list(&rule["apiGroups"], group)
        && matches_list(&rule["apiVersions"], version)
        && (matches_list(&rule["resources"], resource)
            || rule["resources"].as_array().is_some_and(|r| {
                r.iter().any(|x| {
                    x.as_str().is_some_and(|x| {
                        x.strip_suffix("/*")
                            .is_some_and(|p| resource.starts_with(&format!("{p}/")))
                    })
                })
            }))
}

fn selector_matches(selector: &Value, labels_of: &Value) -> bool {
    if !selector.is_object() {
        return true;
    }
    LabelSelector::from_object(selector)
        .is_ok_and(|s| s.matches_object(&json!({"metadata": labels_of})))
}

/// Reviews a write with every matching validating webhook; `Err` when one denies it or fails
/// under `failurePolicy: Fail`.
pub async fn admit(
    sim: &Sim,
    req: &Request<'_>,
    method: &Method,
    op: &str,
) -> Result<(), ApiError> {
    let key = ResourceKey {
        group: "admissionregistration.k8s.io".into(),
        plural: "validatingwebhookconfigurations".into(),
    };
    let configurations = sim.cluster.store.list(&key, None).0;
    if configurations.is_empty() {
        return Ok(());
    }
    let resource = match &req.subresource {
        Some(sub) => format!("{}/{sub}", req.rt.plural),
        None => req.rt.plural.clone(),
    };
    let namespace_labels = sim
        .cluster
        .store
        .get(
            &ResourceKey {
                group: String::new(),
                plural: "namespaces".into(),
            },
            "",
            &req.namespace,
        )
        .map(|ns| ns["metadata"].clone())
        .unwrap_or_default();
    let old = req
        .name
        .as_ref()
        .and_then(|name| sim.cluster.store.get(&req.rt.key(), &req.namespace, name));
    let mut candidate: Option<Value> = None;
    for configuration in configurations {
        for webhook in configuration["webhooks"].as_array().into_iter().flatten() {
            let matched = webhook["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| {
                    rule_matches(
                        rule,
                        op,
                        &req.rt.group,
                        &req.rt.version,
                        &resource,
                        req.rt.namespaced,
                    )
                });
            if !matched
                || (req.rt.namespaced
                    && !selector_matches(&webhook["namespaceSelector"], &namespace_labels))
            {
                continue;
            }
            // The object as it would be stored: the request run as a dry run.
            if candidate.is_none() && op != "DELETE" {
                let mut dry = req.clone();
                dry.query.raw.insert("dryRun".into(), "All".into());
                candidate = Some(objects::handle(&dry, method)?.1);
            }
            let object = candidate.clone().unwrap_or(Value::Null);
            let labels_source = if object.is_null() {
                old.as_ref()
                    .map(|o| o["metadata"].clone())
                    .unwrap_or_default()
            } else {
                object["metadata"].clone()
            };
            if !selector_matches(&webhook["objectSelector"], &labels_source) {
                continue;
            }
            let review = review(req, op, &resource, &object, old.as_deref());
            call(sim, webhook, &review).await?;
        }
    }
    Ok(())
}

fn review(
    req: &Request<'_>,
    op: &str,
    resource: &str,
    object: &Value,
    old: Option<&Value>,
) -> Value {
    let (plural, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let kind = json!({"group": req.rt.group, "version": req.rt.version, "kind": req.rt.kind});
    let gvr = json!({"group": req.rt.group, "version": req.rt.version, "resource": plural});
    let mut request = json!({
        "uid": uuid::Uuid::new_v4().to_string(),
        "kind": kind, "resource": gvr, "requestKind": kind, "requestResource": gvr,
        "name": req.name.clone().unwrap_or_else(|| object["metadata"]["name"].as_str().unwrap_or("").to_owned()),
        "namespace": req.namespace,
        "operation": op,
        "userInfo": {"username": PROXY_USER, "groups": ["system:masters", "system:authenticated"]},
        "object": if op == "DELETE" { Value::Null } else { object.clone() },
        "oldObject": if op == "CREATE" { Value::Null } else { old.cloned().unwrap_or(Value::Null) },
        "dryRun": req.query.dry_run(),
        "options": {"kind": match op { "CREATE" => "CreateOptions", "DELETE" => "DeleteOptions", _ => "UpdateOptions" }, "apiVersion": "meta.k8s.io/v1"},
    });
    if !sub.is_empty() {
        request["subResource"] = json!(sub);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

async fn call(sim: &Sim, webhook: &Value, review: &Value) -> Result<(), ApiError> {
    let name = webhook["name"].as_str().unwrap_or("");
    let fail_closed = webhook["failurePolicy"].as_str() != Some("Ignore");
    let timeout = Duration::from_secs(webhook["timeoutSeconds"].as_u64().unwrap_or(10));
    match send(sim, webhook, review, timeout).await {
        Ok(response) => {
            let verdict = &response["response"];
            if verdict["allowed"] == json!(true) {
                return Ok(());
            }
            let status = &verdict["status"];
            let code = status["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(403);
            let message = status["message"].as_str().unwrap_or("");
            Err(ApiError {
                code,
                reason: "Forbidden",
                message: format!("admission webhook \"{name}\" denied the request: {message}"),
                details: None,
            })
        }
        Err(e) if fail_closed => Err(ApiError::internal(format!(
            "Internal error occurred: failed calling webhook \"{name}\": {e}"
        ))),
        Err(e) => {
            tracing::warn!(webhook = name, error = %e, "failed calling webhook, ignoring (failurePolicy: Ignore)");
            Ok(())
        }
    }
}

async fn send(
    sim: &Sim,
    webhook: &Value,
    review: &Value,
    timeout: Duration,
) -> Result<Value, String> {
    let config = &webhook["clientConfig"];
    let ca = config["caBundle"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let (addr, server_name, path) = if let Some(service) = config["service"].as_object() {
        let ns = service
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let svc = service.get("name").and_then(Value::as_str).unwrap_or("");
        let addr = resolve_service(sim, ns, svc, service.get("port").and_then(Value::as_i64))
            .ok_or_else(|| format!("service {ns}/{svc} has no endpoints"))?;
        let path = service
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("/")
            .to_owned();
        (addr, format!("{svc}.{ns}.svc"), path)
    } else {
        let url = config["url"]
            .as_str()
            .ok_or("webhook has neither service nor url")?;
        let rest = url
            .strip_prefix("https://")
            .ok_or("webhook url must be https")?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let addr = tokio::net::lookup_host(host)
            .await
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("unresolvable webhook host")?;
        (addr, host.split(':').next().unwrap_or("").to_owned(), path)
    };
    let trust = match ca {
        Some(pem) if !pem.is_empty() => Trust::CaBundle { pem, server_name },
        _ => return Err("webhook clientConfig has no caBundle".into()),
    };
    let request = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Bytes::from(review.to_string()))
        .map_err(|e| e.to_string())?;
    let response = sim
        .upstream
        .send(addr, &trust, &sim.front_proxy, request, timeout)
        .await?;
    if !response.status().is_success() {
        return Err(format!("webhook returned HTTP {}", response.status()));
    }
    serde_json::from_slice(response.body())
        .map_err(|e| format!("invalid AdmissionReview response: {e}"))
}
