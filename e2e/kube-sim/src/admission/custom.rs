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

fn field_path(pointer: &str) -> String {
    pointer
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
        })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A bound as the apiserver prints it (`0`, not `0.0`).
fn bound(limit: &Value) -> String {
    match limit.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
        _ => limit.to_string(),
    }
}

/// Validates against the schema, with the apiserver's field paths and messages.
pub fn validate(validator: &jsonschema::Validator, object: &Value) -> Vec<FieldError> {
    use jsonschema::error::{TypeKind, ValidationErrorKind as Kind};
    let mut errors: Vec<FieldError> = validator
        .iter_errors(object)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let field = field_path(&pointer);
            let value = object.pointer(&pointer).cloned().unwrap_or(Value::Null);
            let shown = value.to_string();
            match e.kind() {
                Kind::Required { property } => {
                    let name = property.as_str().unwrap_or("");
                    let full = if field.is_empty() { name.to_owned() } else { format!("{field}.{name}") };
                    (full, "Required value".to_owned())
                }
                Kind::Minimum { limit } => (field.clone(), format!("Invalid value: {shown}: {field} in body should be greater than or equal to {}", bound(limit))),
                Kind::Maximum { limit } => (field.clone(), format!("Invalid value: {shown}: {field} in body should be less than or equal to {}", bound(limit))),
                Kind::MinLength { limit } => (field.clone(), format!("Invalid value: {shown}: {field} in body should be at least {limit} chars long")),
                Kind::MaxLength { limit } => (field.clone(), format!("Invalid value: {shown}: {field} in body may not be longer than {limit}")),
                Kind::MinItems { limit } => {
                    let len = value.as_array().map_or(0, Vec::len);
                    (field.clone(), format!("Invalid value: {len}: {field} in body should have at least {limit} items"))
                }
                Kind::Enum { options } => {
                    let supported: Vec<String> = options.as_array().into_iter().flatten().map(Value::to_string).collect();
                    (field, format!("Unsupported value: {shown}: supported values: {}", supported.join(", ")))
                }
                Kind::Type { kind } => {
                    let wanted = match kind {
                        TypeKind::Single(t) => t.to_string(),
                        TypeKind::Multiple(_) => "integer or string".to_owned(),
                    };
                    let actual = json_type(&value);
                    (field.clone(), format!("Invalid value: \"{actual}\": {field} in body must be of type {wanted}: \"{actual}\""))
                }
                _ => (field, format!("Invalid value: {shown}: {e}")),
            }
        })
        .collect();
    errors.sort();
    errors
}

/// Evaluates the schema's `x-kubernetes-validations` (CEL) rules, each with `self` bound to its
/// node. Transition rules (those using `oldSelf`) are checked only on updates.
pub fn validate_rules(
    schema: &Value,
    object: &Value,
    old: Option<&Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(source) = rule["rule"].as_str() else {
            continue;
        };
        let transition = source.contains("oldSelf");
        if transition && old.is_none() {
            continue;
        }
        let outcome = cel::Program::compile(source)
            .map_err(|e| e.to_string())
            .and_then(|program| {
                let mut context = cel::Context::default();
                context.add_variable_from_value(
                    "self",
                    cel::to_value(object).map_err(|e| e.to_string())?,
                );
                if let Some(old) = old {
                    context.add_variable_from_value(
                        "oldSelf",
                        cel::to_value(old).map_err(|e| e.to_string())?,
                    );
                }
                program.execute(&context).map_err(|e| e.to_string())
            });
        let field = if path.is_empty() {
            "<root>".to_owned()
        } else {
            path.to_owned()
        };
        match outcome {
            Ok(cel::Value::Bool(true)) => {}
            Ok(_) => {
                let message = rule["message"]
                    .as_str()
                    .map_or_else(|| format!("failed rule: {source}"), str::to_owned);
                errors.push((
                    field,
                    format!("Invalid value: \"{}\": {message}", json_type(object)),
                ));
            }
            Err(e) => errors.push((
                field,
                format!(
                    "Invalid value: \"{}\": rule {source:?} could not be evaluated: {e}",
                    json_type(object)
                ),
            )),
        }
    }
    match object {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                let Some(child_schema) = properties.and_then(|p| p.get(key)).or(additional) else {
                    continue;
                };
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let child_old = old.and_then(|o| o.get(key));
                validate_rules(child_schema, child, child_old, &child_path, errors);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_rules(item_schema, item, None, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
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
    fn cel_rules_are_enforced_with_their_messages() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "!has(self.min) || self.min <= (has(self.max) ? self.max : 100)",
                                          "message": "min must not exceed max"}],
            "properties": {"min": {"type": "integer"}, "max": {"type": "integer"},
                           "name": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}}}});
        let mut errors = Vec::new();
        validate_rules(
            &schema,
            &json!({"spec": {"min": 5, "max": 2}}),
            None,
            "",
            &mut errors,
        );
        assert_eq!(
            errors,
            [(
                "spec".to_owned(),
                "Invalid value: \"object\": min must not exceed max".to_owned()
            )]
        );
        errors.clear();
        validate_rules(&schema, &json!({"spec": {"min": 5}}), None, "", &mut errors);
        validate_rules(&schema, &json!({"spec": {"max": 7}}), None, "", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let old = json!({"spec": {"name": "a"}});
        validate_rules(
            &schema,
            &json!({"spec": {"name": "b"}}),
            Some(&old),
            "",
            &mut errors,
        );
        assert_eq!(
            errors,
            [(
                "spec.name".to_owned(),
                "Invalid value: \"string\": failed rule: self == oldSelf".to_owned()
            )]
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
