//! Discovery documents (`/api`, `/apis`, group versions), `/version`, and minimal OpenAPI
//! documents that tell clients which types exist and that server-side field validation works.

use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::resources::{Registry, ResourceType};

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-kube-sim",
        "gitCommit": "kube-sim",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "n/a",
        "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]
    })
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

/// `/apis`: every non-core group, including those served by aggregated APIs.
pub fn groups(registry: &Registry, aggregated: &[(String, String)]) -> Value {
    let mut by_group: Vec<(String, Vec<String>)> = Vec::new();
    let gvs = registry
        .group_versions()
        .into_iter()
        .chain(aggregated.iter().cloned());
    for (group, version) in gvs {
        if group.is_empty() {
            continue;
        }
        match by_group.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) if !versions.contains(&version) => versions.push(version),
            Some(_) => {}
            None => by_group.push((group, vec![version])),
        }
    }
    let groups: Vec<Value> = by_group.iter().map(|(g, v)| group_entry(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(
    registry: &Registry,
    aggregated: &[(String, String)],
    name: &str,
) -> Result<Value, ApiError> {
    let all = groups(registry, aggregated);
    all["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == json!(name))
        .map(|g| {
            let mut g = g.clone();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        })
        .ok_or_else(|| ApiError::not_found("", "groups", name))
}

fn resource_entries(rt: &ResourceType) -> Vec<Value> {
    let mut entries = vec![json!({
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": rt.verbs,
        "shortNames": rt.short_names,
        "categories": rt.categories,
        "storageVersionHash": "",
    })];
    if rt.status {
        entries.push(
            json!({"name": format!("{}/status", rt.plural), "singularName": "",
            "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]}),
        );
    }
    if rt.scale.is_some() {
        entries.push(
            json!({"name": format!("{}/scale", rt.plural), "singularName": "",
            "namespaced": rt.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale",
            "verbs": ["get", "patch", "update"]}),
        );
    }
    entries
}

/// `APIResourceList` of one group version.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Result<Value, ApiError> {
    let resources: Vec<Value> = registry
        .all()
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .flat_map(|t| resource_entries(t))
        .collect();
    if resources.is_empty() {
        return Err(ApiError::not_found(group, "groupversions", version));
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Ok(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of per-group-version documents.
pub fn openapi_v3_index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (group, version) in registry.group_versions() {
        let path = gv_path(&group, &version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=kube-sim")}),
        );
    }
    json!({"paths": paths})
}

/// One group version's OpenAPI v3 document: the operations of its resources, each accepting
/// `fieldValidation` (which is how kubectl learns that the server validates fields), and each
/// custom resource's schema.
pub fn openapi_v3(registry: &Registry, gv: &str) -> Result<Value, ApiError> {
    let types: Vec<_> = registry
        .all()
        .into_iter()
        .filter(|t| gv_path(&t.group, &t.version) == gv)
        .collect();
    if types.is_empty() {
        return Err(ApiError::not_found("", "openapi", gv));
    }
    let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for rt in &types {
        let base = if rt.namespaced {
            format!("{}/namespaces/{{namespace}}/{}", rt.prefix(), rt.plural)
        } else {
            format!("{}/{}", rt.prefix(), rt.plural)
        };
        let gvk = json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]);
        let op = |verb: &str| {
            json!({"operationId": format!("{verb}{}", rt.kind), "parameters": [field_validation.clone()],
            "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk[0].clone(), "responses": {}})
        };
        paths.insert(base.clone(), json!({"post": op("post"), "get": op("list")}));
        paths.insert(format!("{base}/{{name}}"), json!({"put": op("put"), "patch": op("patch"), "get": op("get"), "delete": op("delete")}));
        let schema_name = format!(
            "{}.{}.{}",
            if rt.group.is_empty() {
                "io.k8s.api.core"
            } else {
                &rt.group
            },
            rt.version,
            rt.kind
        );
        let mut schema = rt
            .custom
            .as_ref()
            .and_then(|c| c.schema.clone())
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        schema["x-kubernetes-group-version-kind"] = gvk;
        schemas.insert(schema_name, schema);
    }
    Ok(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.0-kube-sim"},
        "paths": paths,
        "components": {"schemas": schemas}
    }))
}
