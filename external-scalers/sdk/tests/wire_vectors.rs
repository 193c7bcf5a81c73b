//! The SDK against the shared wire vectors (encodings made by the reference protobuf runtime),
//! read from the same copy `keda-proto`'s tests use.
//!
//! - Requests: every `ScaledObjectRef` and `GetMetricsRequest` vector, decoded and turned into the
//!   SDK's `ScalerRequest`, gives the vector's fields.
//! - Responses: what the SDK's server sends for the vector's values (through a real server and
//!   client, re-encoded) is byte for byte the vector wherever the vector has the shape the SDK
//!   writes (the float and the rounded integer both filled). Items the SDK never writes as such
//!   (an integer alone, or a float with an integer of 0 for a value that rounds otherwise) are
//!   checked for meaning instead: read as KEDA reads them (the float if > 0, else the integer),
//!   the SDK's item and the vector's item give the same number.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::float_cmp,
    clippy::cast_precision_loss,
    reason = "a test fails by panicking; the floats compared are exact"
)]

mod support;

use keda_external_scaler::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, ScaledObjectRef,
};
use keda_external_scaler::testing::client;
use keda_external_scaler::{MetricSpec, MetricValue, Result, Scaler, ScalerRequest, Server};
use prost::Message;
use serde_json::Value;
use support::{scaled_object, start};

const VECTORS: &str = include_str!("../../../proto/tests/vectors/external-scaler-vectors.json");

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        write!(out, "{b:02x}").unwrap();
        out
    })
}

fn cases(message: &str) -> Vec<Value> {
    let vectors: Value = serde_json::from_str(VECTORS).unwrap();
    vectors["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["message"] == message)
        .cloned()
        .collect()
}

fn expected_request(fields: &Value) -> ScalerRequest {
    ScalerRequest {
        name: fields["name"].as_str().unwrap().to_owned(),
        namespace: fields["namespace"].as_str().unwrap().to_owned(),
        metadata: fields["scalerMetadata"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect(),
    }
}

#[test]
fn request_vectors_become_the_scaler_requests_they_describe() {
    let refs = cases("externalscaler.ScaledObjectRef");
    assert!(refs.len() >= 3, "expected the ScaledObjectRef vectors");
    for case in refs {
        let decoded = ScaledObjectRef::decode(unhex(case["hex"].as_str().unwrap()).as_slice());
        let request = ScalerRequest::from(decoded.unwrap());
        assert_eq!(
            request,
            expected_request(&case["fields"]),
            "{}",
            case["name"]
        );
    }
    let metrics = cases("externalscaler.GetMetricsRequest");
    assert!(!metrics.is_empty(), "expected a GetMetricsRequest vector");
    for case in metrics {
        let decoded =
            GetMetricsRequest::decode(unhex(case["hex"].as_str().unwrap()).as_slice()).unwrap();
        assert_eq!(decoded.metric_name, case["fields"]["metricName"]);
        let request = ScalerRequest::from(decoded.scaled_object_ref.unwrap());
        assert_eq!(
            request,
            expected_request(&case["fields"]["scaledObjectRef"])
        );
    }
}

/// How KEDA reads a (integer, float) pair: the float if > 0, else the integer.
fn keda_reading(int: i64, float: f64) -> f64 {
    if float > 0.0 { float } else { int as f64 }
}

/// Splits an encoded message made only of field 1 (`repeated` messages) into the bytes of each
/// element, each re-framed as a one-element message.
fn elements(encoded: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = encoded;
    while !rest.is_empty() {
        assert_eq!(rest[0], 0x0a, "expected field 1, length-delimited");
        // Lengths in the vectors are below 128: one varint byte.
        let len = usize::from(rest[1]);
        assert!(len < 128);
        out.push(rest[..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    out
}

/// A scaler answering the values of one response vector.
struct VectorScaler {
    active: bool,
    specs: Vec<MetricSpec>,
    values: Vec<MetricValue>,
}

impl Scaler for VectorScaler {
    async fn is_active(&self, _request: &ScalerRequest) -> Result<bool> {
        Ok(self.active)
    }
    async fn metric_specs(&self, _request: &ScalerRequest) -> Result<Vec<MetricSpec>> {
        Ok(self.specs.clone())
    }
    async fn metric_values(
        &self,
        _request: &ScalerRequest,
        _metric_name: &str,
    ) -> Result<Vec<MetricValue>> {
        Ok(self.values.clone())
    }
}

/// The vectors compared byte for byte must include `expected`, so that a change in the vectors or
/// in the SDK cannot quietly turn every check into a semantic one.
fn assert_compared(byte_exact: &[String], expected: &[&str]) {
    for expected in expected {
        assert!(
            byte_exact.iter().any(|name| name == expected),
            "{expected} was not compared byte for byte; compared: {byte_exact:?}"
        );
    }
}

#[tokio::test]
async fn is_active_answers_encode_to_the_vectors() {
    let mut byte_exact = Vec::new();
    for case in cases("externalscaler.IsActiveResponse") {
        let active = case["fields"]["result"].as_bool().unwrap();
        let server = start(Server::new(VectorScaler {
            active,
            specs: vec![],
            values: vec![],
        }))
        .await;
        let answer: IsActiveResponse = client(server.addr())
            .await
            .is_active(scaled_object("w", "ns", &[]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            hex(&answer.encode_to_vec()),
            case["hex"],
            "{}",
            case["name"]
        );
        byte_exact.push(case["name"].as_str().unwrap().to_owned());
        server.shutdown().await.unwrap();
    }
    assert_compared(&byte_exact, &["is_active_true", "is_active_false"]);
}

#[tokio::test]
async fn metric_specs_encode_to_the_vectors_where_the_sdk_writes_their_shape() {
    let mut byte_exact = Vec::new();
    for case in cases("externalscaler.GetMetricSpecResponse") {
        let items = case["fields"]["metricSpecs"].as_array().unwrap();
        let specs: Vec<MetricSpec> = items
            .iter()
            .map(|s| {
                MetricSpec::new(
                    s["metricName"].as_str().unwrap(),
                    keda_reading(
                        s["targetSize"].as_i64().unwrap(),
                        s["targetSizeFloat"].as_f64().unwrap(),
                    ),
                )
            })
            .collect();
        let server = start(Server::new(VectorScaler {
            active: false,
            specs,
            values: vec![],
        }))
        .await;
        let answer: GetMetricSpecResponse = client(server.addr())
            .await
            .get_metric_spec(scaled_object("w", "ns", &[]))
            .await
            .unwrap()
            .into_inner();
        server.shutdown().await.unwrap();
        let ours = elements(&answer.encode_to_vec());
        let reference = elements(&unhex(case["hex"].as_str().unwrap()));
        assert_eq!(ours.len(), reference.len(), "{}", case["name"]);
        for (i, item) in items.iter().enumerate() {
            let sent = &answer.metric_specs[i];
            assert_eq!(sent.metric_name, vector_name(item, "metricName"));
            let same_shape = sent.target_size == item["targetSize"].as_i64().unwrap()
                && sent.target_size_float == item["targetSizeFloat"].as_f64().unwrap();
            if same_shape {
                assert_eq!(hex(&ours[i]), hex(&reference[i]), "{}[{i}]", case["name"]);
                byte_exact.push(format!("{}[{i}]", case["name"].as_str().unwrap()));
            } else {
                assert_eq!(
                    keda_reading(sent.target_size, sent.target_size_float),
                    keda_reading(
                        item["targetSize"].as_i64().unwrap(),
                        item["targetSizeFloat"].as_f64().unwrap()
                    ),
                    "{}[{i}]",
                    case["name"]
                );
            }
        }
    }

    assert_compared(&byte_exact, &["metric_spec_float[1]"]);
}

#[tokio::test]
async fn metric_values_read_as_the_vectors_do() {
    let mut checked = 0;
    for case in cases("externalscaler.GetMetricsResponse") {
        let items = case["fields"]["metricValues"].as_array().unwrap();
        let values: Vec<MetricValue> = items
            .iter()
            .map(|v| {
                MetricValue::new(
                    v["metricName"].as_str().unwrap(),
                    keda_reading(
                        v["metricValue"].as_i64().unwrap(),
                        v["metricValueFloat"].as_f64().unwrap(),
                    ),
                )
            })
            .collect();
        let server = start(Server::new(VectorScaler {
            active: false,
            specs: vec![],
            values,
        }))
        .await;
        let answer: GetMetricsResponse = client(server.addr())
            .await
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(scaled_object("w", "ns", &[])),
                metric_name: "queueLength".to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        server.shutdown().await.unwrap();
        let ours = elements(&answer.encode_to_vec());
        let reference = elements(&unhex(case["hex"].as_str().unwrap()));
        assert_eq!(ours.len(), reference.len(), "{}", case["name"]);
        for (i, item) in items.iter().enumerate() {
            let sent = &answer.metric_values[i];
            assert_eq!(sent.metric_name, vector_name(item, "metricName"));
            let same_shape = sent.metric_value == item["metricValue"].as_i64().unwrap()
                && sent.metric_value_float == item["metricValueFloat"].as_f64().unwrap();
            if same_shape {
                assert_eq!(hex(&ours[i]), hex(&reference[i]), "{}[{i}]", case["name"]);
            } else {
                assert_eq!(
                    keda_reading(sent.metric_value, sent.metric_value_float),
                    keda_reading(
                        item["metricValue"].as_i64().unwrap(),
                        item["metricValueFloat"].as_f64().unwrap()
                    ),
                    "{}[{i}]",
                    case["name"]
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected the GetMetricsResponse vector's items"
    );
}

fn vector_name<'a>(item: &'a Value, key: &str) -> &'a str {
    item[key].as_str().unwrap()
}

#[test]
fn the_sdks_own_encoding_of_a_whole_float_matches_the_reference_bytes() {
    // `rate` of `metric_spec_float`: target 3.0 is sent as targetSize 3 and targetSizeFloat 3.0.
    let case = cases("externalscaler.GetMetricSpecResponse")
        .into_iter()
        .find(|c| c["name"] == "metric_spec_float")
        .unwrap();
    let reference = elements(&unhex(case["hex"].as_str().unwrap()));
    let ours = GetMetricSpecResponse {
        metric_specs: vec![MetricSpec::new("rate", 3.0).into()],
    };
    assert_eq!(hex(&ours.encode_to_vec()), hex(&reference[1]));
}
