//! Every generated CRD schema must be *structural*, as the apiserver requires of
//! `apiextensions.k8s.io/v1` CRDs, and use defaults and validations only where allowed.
//!
//! The rules checked are those of the Kubernetes documentation ("Specifying a structural schema",
//! "Defaulting" and "Validation"): every node typed (or int-or-string / preserve-unknown-fields),
//! nothing forbidden inside logical junctors, no `$ref`, no `properties` beside
//! `additionalProperties`, no `uniqueItems: true` or `additionalProperties: false`, nothing
//! restricted inside `metadata` but `name`/`generateName`, and every default valid for its node.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use keda_operator_crd::crds;
use serde_json::{Map, Value, json};

const JUNCTORS: [&str; 4] = ["allOf", "anyOf", "oneOf", "not"];
const KNOWN_TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];

/// Walks a schema and collects every violation as `path: problem`.
struct Checker {
    problems: Vec<String>,
}

impl Checker {
    fn node(&mut self, path: &str, node: &Value, must_be_typed: bool) {
        let Some(map) = node.as_object() else {
            self.problems
                .push(format!("{path}: schema node is not an object"));
            return;
        };
        let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&json!(true));
        let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        match map.get("type").and_then(Value::as_str) {
            Some(t) if KNOWN_TYPES.contains(&t) => {}
            Some(t) => self.problems.push(format!("{path}: unknown type {t:?}")),
            None if must_be_typed && !int_or_string && !preserve => {
                self.problems.push(format!("{path}: no type"));
            }
            None => {}
        }
        if map.contains_key("$ref") {
            self.problems.push(format!("{path}: $ref is not allowed"));
        }
        if map.contains_key("properties") && map.contains_key("additionalProperties") {
            self.problems.push(format!(
                "{path}: properties and additionalProperties are exclusive"
            ));
        }
        if map.get("additionalProperties") == Some(&json!(false)) {
            self.problems.push(format!(
                "{path}: additionalProperties: false is not allowed"
            ));
        }
        if map.get("uniqueItems") == Some(&json!(true)) {
            self.problems
                .push(format!("{path}: uniqueItems: true is not allowed"));
        }
        if map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(false)) {
            self.problems.push(format!(
                "{path}: x-kubernetes-preserve-unknown-fields must be true if set"
            ));
        }
        if let Some(default) = map.get("default") {
            self.default_is_valid(path, node, default);
        }
        for junctor in JUNCTORS {
            if let Some(inner) = map.get(junctor) {
                let branches = inner
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| vec![inner.clone()]);
                for (i, branch) in branches.iter().enumerate() {
                    self.junctor_branch(
                        &format!("{path}.{junctor}[{i}]"),
                        branch,
                        map,
                        int_or_string,
                    );
                }
            }
        }
        if let Some(props) = map.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                self.node(&format!("{path}.{name}"), child, true);
            }
        }
        if let Some(child) = map.get("additionalProperties").filter(|v| v.is_object()) {
            self.node(&format!("{path}[*]"), child, true);
        }
        if let Some(items) = map.get("items") {
            self.node(&format!("{path}[]"), items, true);
        }
    }

    /// Inside allOf/anyOf/oneOf/not: no description, type, default, additionalProperties or
    /// nullable (except int-or-string's own pattern), and every field or item named there must
    /// also be specified outside.
    fn junctor_branch(
        &mut self,
        path: &str,
        branch: &Value,
        outer: &Map<String, Value>,
        ios: bool,
    ) {
        let Some(map) = branch.as_object() else {
            return;
        };
        for forbidden in ["description", "default", "additionalProperties", "nullable"] {
            if map.contains_key(forbidden) {
                self.problems
                    .push(format!("{path}: {forbidden} inside a logical junctor"));
            }
        }
        if map.contains_key("type") && !ios {
            self.problems
                .push(format!("{path}: type inside a logical junctor"));
        }
        if let Some(props) = map.get("properties").and_then(Value::as_object) {
            for name in props.keys() {
                let outside = outer
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|p| p.contains_key(name));
                if !outside {
                    self.problems.push(format!(
                        "{path}.{name}: field only specified inside a junctor"
                    ));
                }
            }
        }
        if map.contains_key("items") && !outer.contains_key("items") {
            self.problems
                .push(format!("{path}: items only specified inside a junctor"));
        }
    }

    fn default_is_valid(&mut self, path: &str, node: &Value, default: &Value) {
        let mut schema = node.clone();
        if let Some(map) = schema.as_object_mut() {
            map.remove("default");
        }
        match jsonschema::validator_for(&schema) {
            Ok(validator) if validator.is_valid(default) => {}
            Ok(_) => self
                .problems
                .push(format!("{path}: default {default} is invalid")),
            Err(e) => self
                .problems
                .push(format!("{path}: schema does not compile: {e}")),
        }
    }
}

fn root_schemas() -> Vec<(String, Value)> {
    crds()
        .into_iter()
        .flat_map(|crd| {
            let kind = crd.spec.names.kind.clone();
            crd.spec.versions.into_iter().map(move |v| {
                let schema = v.schema.and_then(|s| s.open_api_v3_schema).unwrap();
                (kind.clone(), serde_json::to_value(schema).unwrap())
            })
        })
        .collect()
}

#[test]
fn every_crd_schema_is_structural() {
    for (kind, schema) in root_schemas() {
        let mut checker = Checker {
            problems: Vec::new(),
        };
        checker.node(&kind, &schema, true);
        assert_eq!(
            schema["type"],
            json!("object"),
            "{kind}: root must be an object"
        );
        if let Some(metadata) = schema["properties"].get("metadata") {
            let props = metadata["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for key in props.keys() {
                assert!(
                    key == "name" || key == "generateName",
                    "{kind}: metadata.{key} may not be restricted"
                );
            }
        }
        assert!(
            checker.problems.is_empty(),
            "{kind} is not structural:\n{}",
            checker.problems.join("\n")
        );
    }
}

#[test]
fn the_checker_catches_non_structural_schemas() {
    // The checker itself must be able to fail: each of these breaks one rule.
    let bad = [
        json!({"type": "object", "properties": {"a": {"description": "untyped"}}}),
        json!({"type": "object", "properties": {"a": {"type": "string"}},
               "anyOf": [{"properties": {"b": {"type": "string"}}}]}),
        json!({"type": "object", "anyOf": [{"type": "object"}]}),
        json!({"type": "object", "properties": {"a": {"$ref": "#/x", "type": "string"}}}),
        json!({"type": "object", "properties": {"a": {"type": "string"}},
               "additionalProperties": {"type": "string"}}),
        json!({"type": "object", "properties": {"a": {"type": "integer", "minimum": 1, "default": 0}}}),
        json!({"type": "array", "uniqueItems": true, "items": {"type": "string"}}),
    ];
    for schema in bad {
        let mut checker = Checker {
            problems: Vec::new(),
        };
        checker.node("t", &schema, true);
        assert!(!checker.problems.is_empty(), "not caught: {schema}");
    }
    let good = json!({"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": true,
                 "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"}}});
    let mut checker = Checker {
        problems: Vec::new(),
    };
    checker.node("t", &good, true);
    assert!(checker.problems.is_empty(), "{:?}", checker.problems);
}
