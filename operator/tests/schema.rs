//! The generated parameter reference and JSON Schema are current, and every trigger type
//! declares its parameters.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::path::Path;

use keda_operator::scalers::{known_types, parameters, schema};

/// Compares `generated` with the committed file, or rewrites it when `KEDA_RS_REGENERATE` is set.
fn current(file: &str, generated: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    if std::env::var_os("KEDA_RS_REGENERATE").is_some() {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "operator/{file} is out of date: run `KEDA_RS_REGENERATE=1 cargo test -p keda-operator \
         --test schema` and commit the result"
    );
}

#[test]
fn the_committed_reference_and_schema_are_current() {
    current("scaler-parameters.md", &schema::markdown());
    let json = serde_json::to_string_pretty(&schema::json_schema()).unwrap() + "\n";
    current("scaler-parameters.schema.json", &json);
}

#[test]
fn every_trigger_type_declares_documented_parameters() {
    for trigger_type in known_types() {
        let declared = parameters(trigger_type).unwrap();
        assert!(
            !declared.is_empty(),
            "{trigger_type} declares no parameters"
        );
        let mut names = std::collections::BTreeSet::new();
        for parameter in declared {
            assert!(
                names.insert(parameter.name),
                "{trigger_type} declares {} twice",
                parameter.name
            );
            assert!(
                parameter.description().len() > 10,
                "{trigger_type}: {} has no description",
                parameter.name
            );
            assert!(
                !parameter.sources.is_empty(),
                "{trigger_type}: {} has no source",
                parameter.name
            );
            assert!(
                !(parameter.required && parameter.default.is_some()),
                "{trigger_type}: {} is required and has a default",
                parameter.name
            );
        }
    }
}

#[test]
fn the_schema_accepts_valid_metadata_and_rejects_bad_values() {
    let mut schema = schema::json_schema();
    // The definition of one trigger type, with the rest of the document to resolve against.
    schema["$ref"] = serde_json::json!("#/$defs/redis");
    let validator = jsonschema::validator_for(&schema).unwrap();
    let valid =
        serde_json::json!({"address": "redis:6379", "listName": "jobs", "listLength": "10"});
    assert!(validator.is_valid(&valid));
    for invalid in [
        serde_json::json!({"address": "redis:6379"}),
        serde_json::json!({"address": "redis:6379", "listName": "jobs", "listLength": "ten"}),
        serde_json::json!({"address": "redis:6379", "listName": "jobs", "enableTLS": "yes"}),
        serde_json::json!({"address": "redis:6379", "listName": "jobs", "databaseIndex": 1}),
    ] {
        assert!(!validator.is_valid(&invalid), "{invalid} was accepted");
    }
}
