//! PATCH bodies: JSON patch, JSON merge patch and strategic merge patch (built-in types only,
//! as in Kubernetes). Server-side apply lives in `apply.rs`.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

pub fn json_patch(object: &Value, body: &Value) -> Result<Value, String> {
    let mut patch: json_patch::Patch =
        serde_json::from_value(body.clone()).map_err(|e| e.to_string())?;
    // Like the apiserver's JSON patch library, `test` of a missing path against `null` passes
    // (controllers use it to add the first finalizer safely).
    patch.0.retain(|op| match op {
        json_patch::PatchOperation::Test(test) => {
            !(test.value.is_null() && object.pointer(test.path.as_str()).is_none())
        }
        _ => true,
    });
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| e.to_string())?;
    Ok(out)
}

pub fn merge_patch(object: &Value, body: &Value) -> Value {
    let mut out = object.clone();
    json_patch::merge(&mut out, body);
    out
}

/// How a list field merges in a strategic merge patch (and in server-side apply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListMerge {
    /// Items are objects identified by these keys.
    Keyed(Vec<&'static str>),
    /// Items are primitives forming a set.
    Set,
    /// The list is replaced whole.
    Atomic,
}

/// The merge strategy of a list field, from its name and (for `ports`) its items: the patch
/// strategies of the Kubernetes types served here.
pub fn list_merge(field: &str, items: &[Value]) -> ListMerge {
    let has = |key: &str| items.iter().any(|i| i.get(key).is_some());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => ListMerge::Keyed(vec!["name"]),
        "volumeMounts" | "volumeDevices" => ListMerge::Keyed(vec!["mountPath"]),
        "ports" if has("containerPort") => ListMerge::Keyed(vec!["containerPort", "protocol"]),
        "ports" if has("port") => ListMerge::Keyed(vec!["port", "protocol"]),
        "conditions" => ListMerge::Keyed(vec!["type"]),
        "ownerReferences" => ListMerge::Keyed(vec!["uid"]),
        "hostAliases" => ListMerge::Keyed(vec!["ip"]),
        "topologySpreadConstraints" => ListMerge::Keyed(vec!["topologyKey", "whenUnsatisfiable"]),
        "finalizers" => ListMerge::Set,
        _ => ListMerge::Atomic,
    }
}

fn key_of(item: &Value, keys: &[&str]) -> Vec<Value> {
    keys.iter()
        .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
        .collect()
}

/// Applies a strategic merge patch: maps merge, `null` deletes, keyed lists merge item by item,
/// sets union, other lists are replaced; `$patch` / `$deleteFromPrimitiveList` directives are
/// honoured and `$setElementOrder` / `$retainKeys` hints are accepted.
pub fn strategic_merge(object: &Value, patch: &Value) -> Result<Value, String> {
    match (object, patch) {
        (Value::Object(original), Value::Object(patch)) => {
            merge_maps(original, patch).map(Value::Object)
        }
        (_, patch) => Ok(strip_directives(patch)),
    }
}

fn merge_maps(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            return Ok(strip_map(&replaced));
        }
        Some("delete") => return Ok(Map::new()),
        Some(other) if other != "merge" => {
            return Err(format!("unknown patch directive {other:?}"));
        }
        _ => {}
    }
    let mut out = original.clone();
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (out.get_mut(field), value.as_array())
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if value.is_null() {
            out.remove(key);
            continue;
        }
        let merged = match (out.get(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => Value::Object(merge_maps(o, p)?),
            (Some(Value::Array(o)), Value::Array(p)) => merge_lists(key, o, p)?,
            (_, v) => strip_directives(v),
        };
        out.insert(key.clone(), merged);
    }
    Ok(out)
}

fn merge_lists(field: &str, original: &[Value], patch: &[Value]) -> Result<Value, String> {
    let all: Vec<Value> = original.iter().chain(patch).cloned().collect();
    match list_merge(field, &all) {
        ListMerge::Atomic => Ok(Value::Array(patch.iter().map(strip_directives).collect())),
        ListMerge::Set => {
            let mut out = original.to_vec();
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListMerge::Keyed(keys) => {
            if patch
                .iter()
                .any(|p| p.get("$patch") == Some(&Value::String("replace".into())))
            {
                let kept: Vec<Value> = patch
                    .iter()
                    .filter(|p| p.get("$patch").is_none())
                    .map(strip_directives)
                    .collect();
                return Ok(Value::Array(kept));
            }
            let mut out = original.to_vec();
            for item in patch {
                let id = key_of(item, &keys);
                let position = out.iter().position(|o| key_of(o, &keys) == id);
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => out[i] = strategic_merge(&out[i], item)?,
                    (None, false) => out.push(strip_directives(item)),
                }
            }
            Ok(Value::Array(out))
        }
    }
}

fn strip_map(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_directives(v)))
        .collect()
}

/// Removes directive keys from a value inserted as-is.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip_map(map)),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name_and_replaces_other_lists() {
        let deployment = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}], "args": ["x"]},
            {"name": "sidecar", "image": "s:1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"name": "app", "image": "a:2", "env": [{"name": "B", "value": "2"}], "args": ["y"]}]
        }}}});
        let out = strategic_merge(&deployment, &patch).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "args": ["y"]},
                {"name": "sidecar", "image": "s:1"}
            ]}}}})
        );
    }

    #[test]
    fn strategic_merge_directives() {
        let object = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "app"}, {"name": "old"}]}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"x": null}},
            "spec": {"containers": [{"name": "old", "$patch": "delete"}]}});
        let out = strategic_merge(&object, &patch).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["b"], "labels": {"y": "2"}},
            "spec": {"containers": [{"name": "app"}]}})
        );
        let replace = json!({"metadata": {"labels": {"$patch": "replace", "z": "3"}}});
        let out = strategic_merge(&object, &replace).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"z": "3"}));
    }

    #[test]
    fn merge_and_json_patches() {
        let object = json!({"spec": {"replicas": 1, "paused": true}});
        assert_eq!(
            merge_patch(&object, &json!({"spec": {"replicas": 3, "paused": null}})),
            json!({"spec": {"replicas": 3}})
        );
        let patched = json_patch(
            &object,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 5}]),
        )
        .unwrap();
        assert_eq!(patched["spec"]["replicas"], json!(5));
        assert!(
            json_patch(
                &object,
                &json!([{"op": "test", "path": "/spec/replicas", "value": 9}])
            )
            .is_err()
        );
        // A missing path tests equal to null, as in the apiserver.
        let finalized = json_patch(
            &object,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata", "value": {"finalizers": ["f"]}}
            ]),
        )
        .unwrap();
        assert_eq!(finalized["metadata"]["finalizers"], json!(["f"]));
        assert!(
            json_patch(
                &finalized,
                &json!([{"op": "test", "path": "/metadata/finalizers", "value": null}])
            )
            .is_err()
        );
    }
}
