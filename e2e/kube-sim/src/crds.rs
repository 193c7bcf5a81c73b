//! Serving the resources CRDs declare, as soon as the CRD is stored (the real apiserver takes
//! a moment to establish a CRD; kube-sim does it synchronously, which only removes a race).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::resources::{CustomResource, ResourceKey, ResourceType, ScalePaths};
use crate::store::resource_version_of;

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Registers (or re-registers) the resource of a stored CRD and marks the CRD established.
pub fn serve(cluster: &Cluster, crd: &Arc<Value>) {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let Some(version) = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == json!(true))
        .or_else(|| spec["versions"].get(0))
    else {
        return;
    };
    let schema = version["schema"]["openAPIV3Schema"].clone();
    let validator = schema
        .is_object()
        .then(|| jsonschema::validator_for(&schema).ok())
        .flatten();
    let scale = &version["subresources"]["scale"];
    let kind = names["kind"].as_str().unwrap_or("").to_owned();
    let rt = ResourceType {
        group: spec["group"].as_str().unwrap_or("").to_owned(),
        version: version["name"].as_str().unwrap_or("").to_owned(),
        singular: names["singular"]
            .as_str()
            .map_or_else(|| kind.to_lowercase(), str::to_owned),
        kind,
        plural: names["plural"].as_str().unwrap_or("").to_owned(),
        namespaced: spec["scope"] != json!("Cluster"),
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        status: version["subresources"]["status"].is_object(),
        scale: scale.is_object().then(|| ScalePaths {
            spec_replicas: scale["specReplicasPath"]
                .as_str()
                .unwrap_or(".spec.replicas")
                .to_owned(),
            status_replicas: scale["statusReplicasPath"]
                .as_str()
                .unwrap_or(".status.replicas")
                .to_owned(),
            label_selector: scale["labelSelectorPath"].as_str().map(str::to_owned),
        }),
        verbs: vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        custom: Some(Arc::new(CustomResource {
            crd_name: crd["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            schema: schema.is_object().then_some(schema),
            validator,
            printer_columns: version["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        })),
    };
    let key = rt.key();
    cluster.registry.insert(rt);
    establish(cluster, &key, crd);
}

/// Writes the `NamesAccepted` and `Established` conditions and `acceptedNames`.
fn establish(cluster: &Cluster, key: &ResourceKey, crd: &Arc<Value>) {
    let established = crd["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == json!("Established") && c["status"] == json!("True"));
    if established && crd["status"]["acceptedNames"] == crd["spec"]["names"] {
        return;
    }
    let now = crate::cluster::now();
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
               "lastTransitionTime": now})
    };
    let mut updated = (**crd).clone();
    updated["status"] = json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": [cluster.registry.get(key).map(|t| t.version.clone()).unwrap_or_default()],
    });
    let crds = ResourceKey {
        group: "apiextensions.k8s.io".into(),
        plural: "customresourcedefinitions".into(),
    };
    let _ = cluster
        .store
        .update(&crds, updated, resource_version_of(crd));
}

/// Stops serving a deleted CRD's resource and drops its objects.
pub fn unserve(cluster: &Cluster, crd: &Value) {
    let key = ResourceKey {
        group: crd["spec"]["group"].as_str().unwrap_or("").to_owned(),
        plural: crd["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    };
    cluster.registry.remove(&key);
    cluster.store.drop_type(&key);
}
