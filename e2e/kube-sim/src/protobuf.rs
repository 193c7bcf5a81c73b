//! The few protobuf request bodies kube-sim understands: typed kubectl commands (`kubectl create
//! namespace/configmap/secret`) send their object as protobuf, and these kinds are decoded into
//! JSON. Other protobuf bodies are refused with 415, naming what is supported.

use std::collections::BTreeMap;

use base64::Engine;
use prost::Message;
use serde_json::{Value, json};

/// The envelope's magic prefix.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

/// `runtime.Unknown`: the object's type and its encoded bytes.
#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

/// The metadata fields a create from kubectl carries.
#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    type_: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

fn metadata(meta: Option<ObjectMeta>) -> Value {
    let meta = meta.unwrap_or_default();
    let mut out = json!({});
    let mut set = |key: &str, value: Value| {
        out[key] = value;
    };
    if let Some(name) = meta.name {
        set("name", json!(name));
    }
    if let Some(prefix) = meta.generate_name {
        set("generateName", json!(prefix));
    }
    if let Some(ns) = meta.namespace {
        set("namespace", json!(ns));
    }
    if !meta.labels.is_empty() {
        set("labels", json!(meta.labels));
    }
    if !meta.annotations.is_empty() {
        set("annotations", json!(meta.annotations));
    }
    if !meta.finalizers.is_empty() {
        set("finalizers", json!(meta.finalizers));
    }
    out
}

fn b64(bytes: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    bytes
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect()
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf envelope")?;
    let unknown = Unknown::decode(envelope).map_err(|e| e.to_string())?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let raw = raw.as_slice();
    let mut object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            let ns = Namespace::decode(raw).map_err(|e| e.to_string())?;
            json!({"metadata": metadata(ns.metadata)})
        }
        ("v1", "ConfigMap") => {
            let cm = ConfigMap::decode(raw).map_err(|e| e.to_string())?;
            let mut object = json!({"metadata": metadata(cm.metadata)});
            if !cm.data.is_empty() {
                object["data"] = json!(cm.data);
            }
            if !cm.binary_data.is_empty() {
                object["binaryData"] = json!(b64(&cm.binary_data));
            }
            if let Some(immutable) = cm.immutable {
                object["immutable"] = json!(immutable);
            }
            object
        }
        ("v1", "Secret") => {
            let secret = Secret::decode(raw).map_err(|e| e.to_string())?;
            let mut object = json!({"metadata": metadata(secret.metadata)});
            if !secret.data.is_empty() {
                object["data"] = json!(b64(&secret.data));
            }
            if !secret.string_data.is_empty() {
                object["stringData"] = json!(secret.string_data);
            }
            if let Some(type_) = secret.type_ {
                object["type"] = json!(type_);
            }
            if let Some(immutable) = secret.immutable {
                object["immutable"] = json!(immutable);
            }
            object
        }
        _ => {
            return Err(format!(
                "kube-sim decodes protobuf only for v1 Namespaces, ConfigMaps and Secrets, not {api_version} {kind}"
            ));
        }
    };
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
        };
        [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
    }

    #[test]
    fn decodes_config_maps_and_secrets() {
        let meta = ObjectMeta {
            name: Some("settings".into()),
            ..ObjectMeta::default()
        };
        let cm = ConfigMap {
            metadata: Some(meta.clone()),
            data: BTreeMap::from([("a".to_owned(), "b".to_owned())]),
            ..ConfigMap::default()
        };
        assert_eq!(
            to_json(&envelope("ConfigMap", cm.encode_to_vec())).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}})
        );
        let secret = Secret {
            metadata: Some(meta),
            data: BTreeMap::from([("k".to_owned(), b"v".to_vec())]),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        assert_eq!(
            to_json(&envelope("Secret", secret.encode_to_vec())).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "settings"}, "data": {"k": "dg=="}, "type": "Opaque"})
        );
        assert!(
            to_json(&envelope("Pod", Vec::new()))
                .unwrap_err()
                .contains("not v1 Pod")
        );
        assert!(to_json(b"{}").is_err());
    }
}
