//! Admission for custom resources from their CRD's `openAPIV3Schema`: pruning of unknown
//! fields, defaulting, and validation, in the apiserver's order.

use serde_json::{Map, Value};

use super::builtin::FieldError;

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// Removes the fields the schema does not specify (unless it preserves unknown fields), and
/// `null` values of fields that are not `nullable`. Returns the paths of what was removed, for
/// `fieldValidation=Strict`.
pub fn prune(value: &mut Value, schema: &Value, path: &str, removed: &mut Vec<String>) {
    match value {
        Value::Object(map) => prune_object(map, schema, path, removed),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, item_schema, &format!("{path}[{i}]"), removed);
                }
            }
        }
        _ => {}
    }
}

fn prune_object(
    map: &mut Map<String, Value>,
    schema: &Value,
    path: &str,
    removed: &mut Vec<String>,
) {
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let child_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let child_schema = properties.and_then(|p| p.get(&key)).or(additional);
        match child_schema {
            Some(child_schema) => {
                if map.get(&key).is_some_and(Value::is_null) && !flag(child_schema, "nullable") {
                    map.remove(&key);
                    continue;
                }
                if let Some(child) = map.get_mut(&key) {
                    prune(child, child_schema, &child_path, removed);
                }
            }
            None if preserve => {}
            None if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") => {}
            None => {
                map.remove(&key);
                removed.push(child_path);
            }
        }
    }
}

/// Prunes a whole custom object: `apiVersion`, `kind` and `metadata` are always kept.
pub fn prune_root(object: &mut Value, schema: &Value, removed: &mut Vec<String>) {
    let mut root = schema.clone();
    root["x-kubernetes-embedded-resource"] = Value::Bool(true);
    prune(object, &root, "", removed);
}

/// Fills in `default`s of the schema for absent fields, recursively.
pub fn default(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, child_schema) in properties {
                    if !map.contains_key(key)
                        && let Some(d) = child_schema.get("default")
                    {
                        map.insert(key.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(key) {
                        default(child, child_schema);
                    }
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for child in map.values_mut() {
                    default(child, additional);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items.iter_mut() {
                    default(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

/// Validates against the schema; field paths are rendered the way the apiserver writes them.
pub fn validate(validator: &jsonschema::Validator, object: &Value) -> Vec<FieldError> {
    let mut errors: Vec<FieldError> = validator
        .iter_errors(object)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let field = pointer
                .trim_start_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .fold(String::new(), |acc, seg| {
                    if seg.chars().all(|c| c.is_ascii_digit()) {
                        format!("{acc}[{seg}]")
                    } else if acc.is_empty() {
                        seg.to_owned()
                    } else {
                        format!("{acc}.{seg}")
                    }
                });
            let value = object
                .pointer(&pointer)
                .map(Value::to_string)
                .unwrap_or_default();
            (field, format!("Invalid value: {value}: {e}"))
        })
        .collect();
    errors.sort();
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer", "minimum": 0, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "items": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "weight": {"type": "integer", "default": 5}}}}
            }}
        }})
    }

    #[test]
    fn prunes_unknown_fields_but_keeps_preserved_and_map_entries() {
        let mut object = json!({"spec": {"replicas": 2, "bogus": 1, "labels": {"a": "b"},
            "free": {"anything": [1]}, "items": [{"name": "x", "extra": true}], "mode": null}});
        let mut removed = Vec::new();
        prune(&mut object, &schema(), "", &mut removed);
        assert_eq!(removed, ["spec.bogus", "spec.items[0].extra"]);
        assert_eq!(
            object,
            json!({"spec": {"replicas": 2, "labels": {"a": "b"},
            "free": {"anything": [1]}, "items": [{"name": "x"}]}})
        );
    }

    #[test]
    fn defaults_absent_fields_recursively() {
        let mut object = json!({"spec": {"items": [{"name": "x"}, {"name": "y", "weight": 1}]}});
        default(&mut object, &schema());
        assert_eq!(
            object,
            json!({"spec": {"replicas": 1, "mode": "a",
            "items": [{"name": "x", "weight": 5}, {"name": "y", "weight": 1}]}})
        );
    }

    #[test]
    fn validation_errors_name_the_field() {
        let validator = jsonschema::validator_for(&schema()).unwrap();
        let errors = validate(
            &validator,
            &json!({"spec": {"replicas": -1, "items": [{"name": 3}]}}),
        );
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["spec.items[0].name", "spec.replicas"]);
        assert!(
            errors[1].1.starts_with("Invalid value: -1: "),
            "{}",
            errors[1].1
        );
    }
}
