//! Every case of the external scaler wire vectors (encodings made by the reference protobuf
//! runtime) must encode to exactly the same bytes and decode back to the same field values.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::collections::BTreeMap;

use keda_proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use prost::Message;
use serde_json::{Value, json};

const VECTORS: &str = include_str!("vectors/external-scaler-vectors.json");

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        write!(out, "{b:02x}").unwrap();
        out
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn scaled_object_ref(v: &Value) -> ScaledObjectRef {
    ScaledObjectRef {
        name: v["name"].as_str().unwrap().to_owned(),
        namespace: v["namespace"].as_str().unwrap().to_owned(),
        scaler_metadata: v["scalerMetadata"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect(),
    }
}

fn scaled_object_ref_json(r: &ScaledObjectRef) -> Value {
    let metadata: BTreeMap<_, _> = r.scaler_metadata.iter().collect();
    json!({"name": r.name, "namespace": r.namespace, "scalerMetadata": metadata})
}

/// Builds the message named by a case from its field values, encodes it, decodes the reference
/// bytes, and returns (our encoding, the decoded message's fields as JSON).
fn round_trip(message: &str, fields: &Value, reference: &[u8]) -> (Vec<u8>, Value) {
    match message {
        "externalscaler.ScaledObjectRef" => {
            let ours = scaled_object_ref(fields).encode_to_vec();
            let decoded = ScaledObjectRef::decode(reference).unwrap();
            (ours, scaled_object_ref_json(&decoded))
        }
        "externalscaler.IsActiveResponse" => {
            let msg = IsActiveResponse {
                result: fields["result"].as_bool().unwrap(),
            };
            let decoded = IsActiveResponse::decode(reference).unwrap();
            (msg.encode_to_vec(), json!({"result": decoded.result}))
        }
        "externalscaler.GetMetricSpecResponse" => {
            let msg = GetMetricSpecResponse {
                metric_specs: fields["metricSpecs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| MetricSpec {
                        metric_name: s["metricName"].as_str().unwrap().to_owned(),
                        target_size: s["targetSize"].as_i64().unwrap(),
                        target_size_float: s["targetSizeFloat"].as_f64().unwrap(),
                    })
                    .collect(),
            };
            let decoded = GetMetricSpecResponse::decode(reference).unwrap();
            let specs: Vec<Value> = decoded
                .metric_specs
                .iter()
                .map(|s| {
                    json!({"metricName": s.metric_name, "targetSize": s.target_size,
                           "targetSizeFloat": s.target_size_float})
                })
                .collect();
            (msg.encode_to_vec(), json!({"metricSpecs": specs}))
        }
        "externalscaler.GetMetricsRequest" => {
            let msg = GetMetricsRequest {
                scaled_object_ref: Some(scaled_object_ref(&fields["scaledObjectRef"])),
                metric_name: fields["metricName"].as_str().unwrap().to_owned(),
            };
            let decoded = GetMetricsRequest::decode(reference).unwrap();
            let fields = json!({
                "scaledObjectRef": scaled_object_ref_json(decoded.scaled_object_ref.as_ref().unwrap()),
                "metricName": decoded.metric_name,
            });
            (msg.encode_to_vec(), fields)
        }
        "externalscaler.GetMetricsResponse" => {
            let msg = GetMetricsResponse {
                metric_values: fields["metricValues"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| MetricValue {
                        metric_name: v["metricName"].as_str().unwrap().to_owned(),
                        metric_value: v["metricValue"].as_i64().unwrap(),
                        metric_value_float: v["metricValueFloat"].as_f64().unwrap(),
                    })
                    .collect(),
            };
            let decoded = GetMetricsResponse::decode(reference).unwrap();
            let values: Vec<Value> = decoded
                .metric_values
                .iter()
                .map(|v| {
                    json!({"metricName": v.metric_name, "metricValue": v.metric_value,
                           "metricValueFloat": v.metric_value_float})
                })
                .collect();
            (msg.encode_to_vec(), json!({"metricValues": values}))
        }
        other => panic!("the vectors name a message this test does not know: {other}"),
    }
}

#[test]
fn every_vector_encodes_to_the_reference_bytes_and_decodes_to_its_fields() {
    let vectors: Value = serde_json::from_str(VECTORS).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 9,
        "expected the full vector set, got {}",
        cases.len()
    );
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let reference = unhex(case["hex"].as_str().unwrap());
        let (ours, decoded) = round_trip(
            case["message"].as_str().unwrap(),
            &case["fields"],
            &reference,
        );
        assert_eq!(
            hex(&ours),
            case["hex"].as_str().unwrap(),
            "{name}: encoding differs"
        );
        assert_eq!(decoded, case["fields"], "{name}: decoded fields differ");
    }
}

#[test]
fn map_entries_are_accepted_in_any_order() {
    // The reference sorts map entries by key; a decoder must also accept them reversed.
    let entry = |k: &str, v: &str| {
        let inner = [
            vec![0x0a, u8::try_from(k.len()).unwrap()],
            k.as_bytes().to_vec(),
            vec![0x12, u8::try_from(v.len()).unwrap()],
            v.as_bytes().to_vec(),
        ]
        .concat();
        [vec![0x1a, u8::try_from(inner.len()).unwrap()], inner].concat()
    };
    let bytes = [entry("target", "5"), entry("queue", "jobs")].concat();
    let decoded = ScaledObjectRef::decode(bytes.as_slice()).unwrap();
    let keys: Vec<_> = decoded.scaler_metadata.keys().cloned().collect();
    assert_eq!(keys, ["queue", "target"]);
    assert_eq!(decoded.scaler_metadata["target"], "5");
    // Re-encoding writes them in key order, as the reference runtime does.
    assert_eq!(
        hex(&decoded.encode_to_vec()),
        hex(&[entry("queue", "jobs"), entry("target", "5")].concat())
    );
}

#[test]
fn vectors_match_the_shared_contract_when_it_is_beside_the_repository() {
    // The vectors are copied into the crate so the test runs from any clone; when the shared
    // contract folder sits beside the repository, the copy must not have drifted from it.
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/contracts/external-scaler-vectors.json"
    );
    if let Ok(original) = std::fs::read_to_string(shared) {
        assert_eq!(
            original, VECTORS,
            "tests/vectors is out of date with {shared}"
        );
    }
}
