//! Admission for built-in types: decoding through the real Kubernetes types (which checks
//! field types and drops unknown fields, as the apiserver's decoder does), the defaults clients
//! rely on, and the validations autoscaling depends on.

use k8s_openapi::api::admissionregistration::v1 as admissionregistration;
use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, events, rbac};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::resources::ResourceType;
use crate::selectors::LabelSelector;

/// A field error: (path, message).
pub type FieldError = (String, String);

fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Decodes `object` as the Kubernetes type of `rt`, returning it with unknown fields dropped.
pub fn decode(rt: &ResourceType, object: &Value) -> Result<Value, String> {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => round_trip::<core::v1::Namespace>(object),
        ("", "Pod") => round_trip::<core::v1::Pod>(object),
        ("", "Service") => round_trip::<core::v1::Service>(object),
        ("", "Endpoints") => round_trip::<core::v1::Endpoints>(object),
        ("", "Secret") => round_trip::<core::v1::Secret>(object),
        ("", "ConfigMap") => round_trip::<core::v1::ConfigMap>(object),
        ("", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(object),
        ("", "Event") => round_trip::<core::v1::Event>(object),
        ("events.k8s.io", "Event") => round_trip::<events::v1::Event>(object),
        ("apps", "Deployment") => round_trip::<apps::v1::Deployment>(object),
        ("apps", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(object),
        ("apps", "ReplicaSet") => round_trip::<apps::v1::ReplicaSet>(object),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            round_trip::<autoscaling::v2::HorizontalPodAutoscaler>(object)
        }
        ("batch", "Job") => round_trip::<batch::v1::Job>(object),
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::v1::Lease>(object),
        ("rbac.authorization.k8s.io", "Role") => round_trip::<rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io", "RoleBinding") => round_trip::<rbac::v1::RoleBinding>(object),
        ("rbac.authorization.k8s.io", "ClusterRole") => round_trip::<rbac::v1::ClusterRole>(object),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            round_trip::<rbac::v1::ClusterRoleBinding>(object)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            round_trip::<apiextensions::CustomResourceDefinition>(object)
        }
        ("apiregistration.k8s.io", "APIService") => {
            round_trip::<apiregistration::APIService>(object)
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            round_trip::<admissionregistration::ValidatingWebhookConfiguration>(object)
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            round_trip::<admissionregistration::MutatingWebhookConfiguration>(object)
        }
        _ => Ok(object.clone()),
    }
}

fn default_field(object: &mut Value, pointer: &str, value: Value) {
    let (parent, field) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if let Some(Value::Object(map)) = object.pointer_mut(parent) {
        map.entry(field.to_owned()).or_insert(value);
    }
}

fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default_field(spec, "/restartPolicy", json!("Always"));
    default_field(spec, "/terminationGracePeriodSeconds", json!(30));
    default_field(spec, "/dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "/schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            default_field(c, "/imagePullPolicy", json!("IfNotPresent"));
            default_field(c, "/terminationMessagePath", json!("/dev/termination-log"));
            default_field(c, "/terminationMessagePolicy", json!("File"));
            let ports = c.get_mut("ports").and_then(Value::as_array_mut);
            for port in ports.into_iter().flatten() {
                default_field(port, "/protocol", json!("TCP"));
            }
        }
    }
}

/// The defaults of the real apiserver that clients and controllers observe.
pub fn apply_defaults(rt: &ResourceType, object: &mut Value) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment") => {
            default_field(object, "/spec/replicas", json!(1));
            default_field(object, "/spec/revisionHistoryLimit", json!(10));
            default_field(object, "/spec/progressDeadlineSeconds", json!(600));
            default_field(
                object,
                "/spec/strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
            if let Some(pod_spec) = object.pointer_mut("/spec/template/spec") {
                default_pod_spec(pod_spec);
            }
        }
        ("apps", "StatefulSet") => {
            default_field(object, "/spec/replicas", json!(1));
            default_field(object, "/spec/podManagementPolicy", json!("OrderedReady"));
            default_field(object, "/spec/revisionHistoryLimit", json!(10));
            default_field(
                object,
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            if let Some(pod_spec) = object.pointer_mut("/spec/template/spec") {
                default_pod_spec(pod_spec);
            }
        }
        ("apps", "ReplicaSet") => {
            default_field(object, "/spec/replicas", json!(1));
            if let Some(pod_spec) = object.pointer_mut("/spec/template/spec") {
                default_pod_spec(pod_spec);
            }
        }
        ("batch", "Job") => {
            default_field(object, "/spec/parallelism", json!(1));
            default_field(object, "/spec/completions", json!(1));
            default_field(object, "/spec/backoffLimit", json!(6));
            default_field(object, "/spec/completionMode", json!("NonIndexed"));
            default_field(object, "/spec/suspend", json!(false));
            if let Some(pod_spec) = object.pointer_mut("/spec/template/spec") {
                default_pod_spec(pod_spec);
            }
            default_field(object, "/spec/template/spec/restartPolicy", json!("Never"));
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            default_field(object, "/spec/minReplicas", json!(1));
        }
        ("", "Pod") => {
            if let Some(pod_spec) = object.get_mut("spec") {
                default_pod_spec(pod_spec);
            }
            default_field(object, "/status", json!({"phase": "Pending"}));
        }
        ("", "Service") => {
            default_field(object, "/spec/type", json!("ClusterIP"));
            default_field(object, "/spec/sessionAffinity", json!("None"));
            let ports = object
                .pointer_mut("/spec/ports")
                .and_then(Value::as_array_mut);
            for port in ports.into_iter().flatten() {
                default_field(port, "/protocol", json!("TCP"));
            }
        }
        ("", "Namespace") => {
            default_field(object, "/spec", json!({"finalizers": ["kubernetes"]}));
            default_field(object, "/status", json!({"phase": "Active"}));
        }
        ("", "Secret") => {
            // An empty type is defaulted too, as the apiserver's defaulting does.
            if object["type"].as_str().is_some_and(str::is_empty)
                && let Some(map) = object.as_object_mut()
            {
                map.remove("type");
            }
            default_field(object, "/type", json!("Opaque"));
            merge_string_data(object);
        }
        _ => {}
    }
}

/// `stringData` is write-only: the apiserver merges it into `data`.
fn merge_string_data(object: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(plain)) = object.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    let data = object
        .as_object_mut()
        .map(|o| o.entry("data").or_insert_with(|| json!({})));
    if let Some(Value::Object(data)) = data {
        for (k, v) in plain {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""));
            data.insert(k, Value::String(encoded));
        }
    }
}

fn min_check(errors: &mut Vec<FieldError>, object: &Value, pointer: &str, min: i64) {
    if let Some(n) = object.pointer(pointer).and_then(Value::as_i64)
        && n < min
    {
        errors.push((
            pointer.trim_start_matches('/').replace('/', "."),
            format!("Invalid value: {n}: must be greater than or equal to {min}"),
        ));
    }
}

/// Semantic validations of the types autoscaling depends on.
pub fn validate(rt: &ResourceType, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet") => {
            min_check(&mut errors, object, "/spec/replicas", 0);
            match LabelSelector::from_object(&object["spec"]["selector"]) {
                Ok(selector) if object["spec"]["selector"].is_object() => {
                    let labels = &object["spec"]["template"]["metadata"];
                    if !selector.matches_object(&json!({ "metadata": labels })) {
                        errors.push((
                            "spec.template.metadata.labels".into(),
                            "Invalid value: `selector` does not match template `labels`".into(),
                        ));
                    }
                }
                Ok(_) => errors.push(("spec.selector".into(), "Required value".into())),
                Err(e) => errors.push(("spec.selector".into(), e)),
            }
            if object["spec"]["template"]["spec"]["containers"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                errors.push((
                    "spec.template.spec.containers".into(),
                    "Required value".into(),
                ));
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            min_check(&mut errors, object, "/spec/minReplicas", 1);
            min_check(&mut errors, object, "/spec/maxReplicas", 1);
            let min = object["spec"]["minReplicas"].as_i64().unwrap_or(1);
            if let Some(max) = object["spec"]["maxReplicas"].as_i64()
                && max < min
            {
                errors.push((
                    "spec.maxReplicas".into(),
                    format!("Invalid value: {max}: must be greater than or equal to `minReplicas`"),
                ));
            }
            if object["spec"]["scaleTargetRef"]["name"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                errors.push(("spec.scaleTargetRef.name".into(), "Required value".into()));
            }
        }
        ("", "Pod")
            if object["spec"]["containers"]
                .as_array()
                .is_none_or(Vec::is_empty) =>
        {
            errors.push(("spec.containers".into(), "Required value".into()));
        }
        _ => {}
    }
    errors
}
