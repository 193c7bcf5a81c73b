//! Schema adjustments KEDA makes to the Kubernetes types it embeds.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::batch::v1::JobSpec;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Value, json};

/// `HorizontalPodAutoscalerBehavior` with KEDA's bounds on the stabilization windows (0..=3600 s,
/// as the HPA itself enforces), so a bad value is refused when the object is written rather than
/// when the HPA is.
pub(crate) fn hpa_behavior(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<HorizontalPodAutoscalerBehavior>();
    for direction in ["scaleUp", "scaleDown"] {
        if let Some(window) = schema
            .pointer_mut(&format!(
                "/properties/{direction}/properties/stabilizationWindowSeconds"
            ))
            .and_then(Value::as_object_mut)
        {
            window.insert("minimum".into(), json!(0));
            window.insert("maximum".into(), json!(3600));
        }
    }
    schema
}

/// `JobSpec` as KEDA's CRD has it: the pod template's `metadata` keeps unknown fields (users put
/// labels and annotations there freely), and container ports require `protocol` because it is a
/// key of the ports list-map.
pub(crate) fn job_spec(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<JobSpec>();
    if let Some(metadata) = schema
        .pointer_mut("/properties/template/properties/metadata")
        .and_then(Value::as_object_mut)
    {
        metadata.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    }
    let pod_spec = "/properties/template/properties/spec/properties";
    for containers in ["containers", "initContainers", "ephemeralContainers"] {
        let ports = format!("{pod_spec}/{containers}/items/properties/ports/items");
        if let Some(port) = schema.pointer_mut(&ports).and_then(Value::as_object_mut) {
            let required = port.entry("required").or_insert_with(|| json!([]));
            if let Some(list) = required.as_array_mut()
                && !list.contains(&json!("protocol"))
            {
                list.push(json!("protocol"));
            }
        }
    }
    schema
}
