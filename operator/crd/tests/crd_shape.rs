//! The generated CRDs have the names, scope, subresources and columns KEDA users rely on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keda_operator_crd::crds;
use serde_json::{Value, json};

fn by_kind(kind: &str) -> CustomResourceDefinition {
    crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap()
}

fn schema(kind: &str) -> Value {
    let crd = by_kind(kind);
    let version = &crd.spec.versions[0];
    serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap()
}

fn columns(kind: &str) -> Vec<(String, String)> {
    by_kind(kind).spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.json_path))
        .collect()
}

#[test]
fn names_scope_and_short_names_match_keda() {
    let cases = [
        ("ScaledObject", "scaledobjects", "Namespaced", vec!["so"]),
        ("ScaledJob", "scaledjobs", "Namespaced", vec!["sj"]),
        (
            "TriggerAuthentication",
            "triggerauthentications",
            "Namespaced",
            vec!["ta", "triggerauth"],
        ),
        (
            "ClusterTriggerAuthentication",
            "clustertriggerauthentications",
            "Cluster",
            vec!["cta", "clustertriggerauth"],
        ),
    ];
    for (kind, plural, scope, short) in cases {
        let crd = by_kind(kind);
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(&*format!("{plural}.keda.sh"))
        );
        assert_eq!(crd.spec.group, "keda.sh");
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.scope, scope, "{kind}");
        assert_eq!(crd.spec.names.short_names.clone().unwrap(), short, "{kind}");
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(
            (version.name.as_str(), version.served, version.storage),
            ("v1alpha1", true, true)
        );
        let subresources = version.subresources.as_ref().unwrap();
        assert!(
            subresources.status.is_some(),
            "{kind} has a status subresource"
        );
        assert!(
            subresources.scale.is_none(),
            "{kind} has no scale subresource"
        );
    }
}

#[test]
fn scaled_object_printer_columns_match_keda() {
    let expected = [
        ("ScaleTargetKind", ".status.scaleTargetKind"),
        ("ScaleTargetName", ".spec.scaleTargetRef.name"),
        ("Min", ".spec.minReplicaCount"),
        ("Max", ".spec.maxReplicaCount"),
        ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
        ("Active", ".status.conditions[?(@.type==\"Active\")].status"),
        (
            "Fallback",
            ".status.conditions[?(@.type==\"Fallback\")].status",
        ),
        ("Paused", ".status.conditions[?(@.type==\"Paused\")].status"),
        ("Triggers", ".status.triggersTypes"),
        ("Authentications", ".status.authenticationsTypes"),
        ("Age", ".metadata.creationTimestamp"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(columns("ScaledObject"), expected);
}

#[test]
fn other_printer_columns_match_keda() {
    let names = |kind| {
        columns(kind)
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names("ScaledJob"),
        [
            "Min",
            "Max",
            "Ready",
            "Active",
            "Paused",
            "Triggers",
            "Authentications",
            "Age"
        ]
    );
    assert_eq!(
        names("TriggerAuthentication"),
        [
            "PodIdentity",
            "Secret",
            "Env",
            "VaultAddress",
            "ScaledObjects",
            "ScaledJobs"
        ]
    );
    assert_eq!(
        names("ClusterTriggerAuthentication"),
        [
            "PodIdentity",
            "Secret",
            "Env",
            "FilePath",
            "VaultAddress",
            "ScaledObjects",
            "ScaledJobs"
        ]
    );
}

#[test]
fn scaled_object_spec_carries_keda_validations() {
    let s = schema("ScaledObject");
    let spec = &s["properties"]["spec"];
    assert_eq!(spec["required"], json!(["scaleTargetRef", "triggers"]));
    assert_eq!(spec["properties"]["triggers"]["minItems"], json!(1));
    let minimum = |field: &str| spec["properties"][field]["minimum"].as_f64();
    assert_eq!(minimum("pollingInterval"), Some(1.0));
    assert_eq!(minimum("initialCooldownPeriod"), Some(0.0));
    assert_eq!(minimum("cooldownPeriod"), Some(0.0));
    assert_eq!(minimum("idleReplicaCount"), Some(0.0));
    assert_eq!(minimum("minReplicaCount"), Some(0.0));
    assert_eq!(minimum("maxReplicaCount"), Some(1.0));
    assert_eq!(
        spec["properties"]["scaleTargetRef"]["properties"]["name"]["minLength"],
        json!(1)
    );
    let rule = spec["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .unwrap();
    assert!(rule.contains("self.minReplicaCount <= "), "{rule}");
    let fallback = &spec["properties"]["fallback"];
    assert_eq!(
        fallback["required"],
        json!(["failureThreshold", "replicas"])
    );
    assert_eq!(
        fallback["properties"]["failureThreshold"]["minimum"].as_f64(),
        Some(0.0)
    );
    assert_eq!(
        fallback["properties"]["behavior"]["default"],
        json!("static")
    );
    assert_eq!(
        fallback["properties"]["behavior"]["enum"],
        json!([
            "static",
            "currentReplicas",
            "currentReplicasIfHigher",
            "currentReplicasIfLower",
            "scalingModifiers"
        ])
    );
    let trigger = &spec["properties"]["triggers"]["items"];
    assert_eq!(trigger["required"], json!(["metadata", "type"]));
    assert_eq!(
        trigger["properties"]["metadata"]["additionalProperties"]["type"],
        json!("string")
    );
    assert_eq!(
        trigger["properties"]["authenticationRef"]["properties"]["kind"]["enum"],
        json!(["TriggerAuthentication", "ClusterTriggerAuthentication"])
    );
    let behavior = &spec["properties"]["advanced"]["properties"]["horizontalPodAutoscalerConfig"]["properties"]
        ["behavior"];
    for direction in ["scaleUp", "scaleDown"] {
        let window = &behavior["properties"][direction]["properties"]["stabilizationWindowSeconds"];
        assert_eq!(
            (window["minimum"].as_f64(), window["maximum"].as_f64()),
            (Some(0.0), Some(3600.0))
        );
    }
}

#[test]
fn scaled_job_embeds_the_job_spec_like_keda() {
    let s = schema("ScaledJob");
    let job = &s["properties"]["spec"]["properties"]["jobTargetRef"];
    assert_eq!(job["required"], json!(["template"]));
    let template = &job["properties"]["template"]["properties"];
    assert_eq!(
        template["metadata"]["x-kubernetes-preserve-unknown-fields"],
        json!(true)
    );
    let port =
        &template["spec"]["properties"]["containers"]["items"]["properties"]["ports"]["items"];
    let required = port["required"].as_array().unwrap();
    assert!(required.contains(&json!("containerPort")) && required.contains(&json!("protocol")));
    let strategy = &s["properties"]["spec"]["properties"]["scalingStrategy"]["properties"];
    assert_eq!(
        strategy["strategy"]["enum"],
        json!(["default", "custom", "accurate", "eager"])
    );
    assert_eq!(
        strategy["multipleScalersCalculation"]["enum"],
        json!(["min", "avg", "sum", "max"])
    );
}

#[test]
fn trigger_authentication_enums_match_keda() {
    let s = schema("ClusterTriggerAuthentication");
    let spec = &s["properties"]["spec"]["properties"];
    assert_eq!(
        spec["podIdentity"]["properties"]["provider"]["enum"],
        json!(["azure-workload", "gcp", "aws", "aws-eks", "none"])
    );
    assert_eq!(spec["podIdentity"]["required"], json!(["provider"]));
    assert_eq!(
        spec["hashiCorpVault"]["properties"]["authentication"]["enum"],
        json!(["token", "kubernetes"])
    );
    assert_eq!(
        spec["hashiCorpVault"]["properties"]["secrets"]["items"]["properties"]["type"]["enum"],
        json!(["", "secretV2", "secret", "pki"])
    );
    assert_eq!(
        spec["secretTargetRef"]["items"]["required"],
        json!(["key", "name", "parameter"])
    );
}
