//! The manifest corpus (`e2e/fixtures/manifests`): realistic KEDA objects that must deserialize
//! into our types, serialize back with no field lost or added, and validate against the
//! generated CRD schemas.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::LazyLock;

use keda_operator_crd::{
    ClusterTriggerAuthentication, ScaledJob, ScaledObject, TriggerAuthentication, crds,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn corpus() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../e2e/fixtures/manifests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            )
        })
        .collect()
}

fn round_trip<T: DeserializeOwned + Serialize>(name: &str, value: &Value) -> Value {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{name}: does not deserialize: {e}"));
    serde_json::to_value(&typed).unwrap()
}

/// One compiled validator per kind, built once: generating the ScaledJob schema (which embeds
/// the whole `JobSpec`) is the slow part of these tests.
static VALIDATORS: LazyLock<BTreeMap<String, jsonschema::Validator>> = LazyLock::new(|| {
    crds()
        .into_iter()
        .map(|crd| {
            let schema = crd.spec.versions[0]
                .schema
                .clone()
                .unwrap()
                .open_api_v3_schema
                .unwrap();
            let validator =
                jsonschema::validator_for(&serde_json::to_value(schema).unwrap()).unwrap();
            (crd.spec.names.kind, validator)
        })
        .collect()
});

fn schema_errors(kind: &str, object: &Value) -> Vec<String> {
    VALIDATORS[kind]
        .iter_errors(object)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_manifest_round_trips_without_losing_a_field() {
    let corpus = corpus();
    assert!(
        corpus.len() >= 25,
        "the corpus has only {} manifests",
        corpus.len()
    );
    for (name, value) in &corpus {
        assert_eq!(value["apiVersion"], json!("keda.sh/v1alpha1"), "{name}");
        let back = match value["kind"].as_str().unwrap() {
            "ScaledObject" => round_trip::<ScaledObject>(name, value),
            "ScaledJob" => round_trip::<ScaledJob>(name, value),
            "TriggerAuthentication" => round_trip::<TriggerAuthentication>(name, value),
            "ClusterTriggerAuthentication" => {
                round_trip::<ClusterTriggerAuthentication>(name, value)
            }
            other => panic!("{name}: unexpected kind {other}"),
        };
        assert_eq!(&back, value, "{name}: the round trip changed the object");
    }
}

#[test]
fn every_manifest_validates_against_the_generated_schema() {
    for (name, value) in corpus() {
        let kind = value["kind"].as_str().unwrap();
        let errors = schema_errors(kind, &value);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
}

#[test]
fn the_corpus_covers_the_common_trigger_types_and_features() {
    let corpus = corpus();
    let triggers: BTreeSet<&str> = corpus
        .iter()
        .filter_map(|(_, v)| v["spec"]["triggers"].as_array())
        .flatten()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    for wanted in [
        "cpu",
        "memory",
        "cron",
        "prometheus",
        "kafka",
        "rabbitmq",
        "redis",
        "redis-streams",
        "postgresql",
        "mysql",
        "aws-sqs-queue",
        "azure-queue",
        "nats-jetstream",
        "metrics-api",
        "external",
        "external-push",
    ] {
        assert!(
            triggers.contains(wanted),
            "no manifest uses the {wanted} trigger"
        );
    }
    let text: String = corpus.iter().map(|(_, v)| v.to_string()).collect();
    for feature in [
        "\"advanced\"",
        "\"fallback\"",
        "\"scalingModifiers\"",
        "\"idleReplicaCount\"",
        "autoscaling.keda.sh/paused",
        "autoscaling.keda.sh/paused-replicas",
        "\"authenticationRef\"",
        "\"secretTargetRef\"",
        "\"configMapTargetRef\"",
        "\"env\"",
        "\"podIdentity\"",
    ] {
        assert!(text.contains(feature), "no manifest uses {feature}");
    }
    let kinds: BTreeSet<&str> = corpus
        .iter()
        .map(|(_, v)| v["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
}

/// Takes a valid manifest of `kind` from the corpus (for ScaledObjects, one with a fallback, so
/// fallback edits have something to break), then sets the field at `pointer` to `value`, or
/// removes it when `value` is `None`.
fn broken(kind: &str, pointer: &str, value: Option<Value>) -> Value {
    let (name, mut object) = corpus()
        .into_iter()
        .find(|(_, v)| {
            v["kind"] == json!(kind)
                && (kind != "ScaledObject" || v["spec"]["fallback"].is_object())
        })
        .unwrap();
    assert!(
        schema_errors(kind, &object).is_empty(),
        "{name} must be valid before the edit"
    );
    let (parent, field) = pointer.rsplit_once('/').unwrap();
    let parent = object.pointer_mut(parent).unwrap();
    match (value, parent) {
        (Some(v), Value::Array(items)) => items[field.parse::<usize>().unwrap()] = v,
        (Some(v), parent) => parent[field] = v,
        (None, parent) => {
            parent.as_object_mut().unwrap().remove(field);
        }
    }
    object
}

#[test]
#[allow(clippy::too_many_lines, reason = "one table of cases")]
fn the_schema_refuses_what_keda_refuses() {
    let so = "ScaledObject";
    let sj = "ScaledJob";
    let ta = "TriggerAuthentication";
    let cases = [
        (
            "negative minReplicaCount",
            so,
            "/spec/minReplicaCount",
            Some(json!(-1)),
        ),
        (
            "zero maxReplicaCount",
            so,
            "/spec/maxReplicaCount",
            Some(json!(0)),
        ),
        (
            "zero pollingInterval",
            so,
            "/spec/pollingInterval",
            Some(json!(0)),
        ),
        (
            "string replica count",
            so,
            "/spec/maxReplicaCount",
            Some(json!("10")),
        ),
        ("no triggers", so, "/spec/triggers", Some(json!([]))),
        ("no scaleTargetRef", so, "/spec/scaleTargetRef", None),
        (
            "empty target name",
            so,
            "/spec/scaleTargetRef/name",
            Some(json!("")),
        ),
        (
            "empty trigger type",
            so,
            "/spec/triggers/0/type",
            Some(json!("")),
        ),
        (
            "trigger without metadata",
            so,
            "/spec/triggers/0/metadata",
            None,
        ),
        (
            "numeric metadata value",
            so,
            "/spec/triggers/0/metadata/x",
            Some(json!(5)),
        ),
        (
            "unknown fallback behavior",
            so,
            "/spec/fallback/behavior",
            Some(json!("sometimes")),
        ),
        (
            "negative fallback replicas",
            so,
            "/spec/fallback/replicas",
            Some(json!(-2)),
        ),
        (
            "unknown authentication kind",
            so,
            "/spec/triggers/0/authenticationRef",
            Some(json!({"name": "a", "kind": "Secret"})),
        ),
        (
            "stabilization window over an hour",
            so,
            "/spec/advanced",
            Some(json!({"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 3601}}}})),
        ),
        (
            "unknown scaling strategy",
            sj,
            "/spec/scalingStrategy",
            Some(json!({"strategy": "x"})),
        ),
        ("no jobTargetRef", sj, "/spec/jobTargetRef", None),
        (
            "negative history limit",
            sj,
            "/spec/successfulJobsHistoryLimit",
            Some(json!(-1)),
        ),
        (
            "unknown identity provider",
            ta,
            "/spec/podIdentity",
            Some(json!({"provider": "az"})),
        ),
        (
            "secretTargetRef without key",
            ta,
            "/spec/secretTargetRef",
            Some(json!([{"parameter": "p", "name": "n"}])),
        ),
        (
            "vault without secrets",
            "ClusterTriggerAuthentication",
            "/spec/hashiCorpVault",
            Some(json!({"address": "https://v", "authentication": "token"})),
        ),
    ];
    for (what, kind, pointer, value) in cases {
        let object = broken(kind, pointer, value);
        assert!(
            !schema_errors(kind, &object).is_empty(),
            "the schema accepted: {what}"
        );
    }
}
