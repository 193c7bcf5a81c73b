//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), which is how
//! `kubectl get` shows columns: KEDA's printer columns for custom resources, and the familiar
//! columns of the built-in types.

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// Whether the client asked for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// `5s`, `3m2s`, `4h`, `2d` — the apiserver's human durations.
pub fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let seconds = (jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `[N]`, `[*]` and
/// `[?(@.key=="value")]`. Several results are joined with commas.
pub fn json_path(object: &Value, path: &str) -> Vec<Value> {
    let mut current = vec![object.clone()];
    let mut rest = path.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let field = &after[..end];
            current = current
                .iter()
                .filter_map(|v| v.get(field).cloned())
                .collect();
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                return Vec::new();
            };
            let selector = &after[..end];
            rest = &after[end + 1..];
            current = current
                .iter()
                .flat_map(|v| {
                    v.as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .enumerate()
                })
                .filter(|(i, item)| match selector {
                    "*" => true,
                    s if s.starts_with("?(@.") => {
                        let inner = s.trim_start_matches("?(@.").trim_end_matches(')');
                        inner.split_once("==").is_some_and(|(k, v)| {
                            item.get(k.trim()).and_then(Value::as_str)
                                == Some(v.trim().trim_matches('"').trim_matches('\''))
                        })
                    }
                    s => s.parse::<usize>().is_ok_and(|n| n == *i),
                })
                .map(|(_, item)| item)
                .collect();
        } else {
            return Vec::new();
        }
    }
    current
}

fn cell(values: &[Value]) -> Value {
    match values {
        [] => json!(""),
        [single] => single.clone(),
        many => json!(
            many.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn s(value: &Value) -> String {
    value.as_str().map_or_else(
        || {
            if value.is_null() {
                "0".into()
            } else {
                value.to_string()
            }
        },
        str::to_owned,
    )
}

/// Column names and cells for a built-in type (besides NAME and AGE).
#[allow(clippy::too_many_lines, reason = "one arm per kind, as a table")]
fn builtin_columns(rt: &ResourceType, o: &Value) -> (Vec<&'static str>, Vec<Value>) {
    let st = &o["status"];
    let sp = &o["spec"];
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment") => (
            vec!["Ready", "Up-to-date", "Available"],
            vec![
                json!(format!(
                    "{}/{}",
                    s(&st["readyReplicas"]),
                    s(&sp["replicas"])
                )),
                json!(s(&st["updatedReplicas"])),
                json!(s(&st["availableReplicas"])),
            ],
        ),
        ("apps", "StatefulSet" | "ReplicaSet") => (
            vec!["Ready"],
            vec![json!(format!(
                "{}/{}",
                s(&st["readyReplicas"]),
                s(&sp["replicas"])
            ))],
        ),
        ("", "Pod") => {
            let ready = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == json!("Ready") && c["status"] == json!("True"));
            let containers = sp["containers"].as_array().map_or(0, Vec::len);
            let ready_count = if ready { containers } else { 0 };
            (
                vec!["Ready", "Status", "Restarts"],
                vec![
                    json!(format!("{ready_count}/{containers}")),
                    st["phase"].clone(),
                    json!(0),
                ],
            )
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let reference = format!(
                "{}/{}",
                sp["scaleTargetRef"]["kind"].as_str().unwrap_or(""),
                sp["scaleTargetRef"]["name"].as_str().unwrap_or("")
            );
            let targets: Vec<String> = sp["metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, m)| {
                    let current = &st["currentMetrics"][i];
                    let key = match m["type"].as_str() {
                        Some("External") => "external",
                        Some("ContainerResource") => "containerResource",
                        _ => "resource",
                    };
                    let target = &m[key]["target"];
                    let (cur, tgt) = match target["type"].as_str() {
                        Some("Utilization") => (
                            current[key]["current"]["averageUtilization"]
                                .as_i64()
                                .map(|v| format!("{v}%")),
                            format!("{}%", s(&target["averageUtilization"])),
                        ),
                        Some("Value") => (
                            current[key]["current"]["value"].as_str().map(str::to_owned),
                            s(&target["value"]),
                        ),
                        _ => (
                            current[key]["current"]["averageValue"]
                                .as_str()
                                .map(str::to_owned),
                            format!("{} (avg)", s(&target["averageValue"])),
                        ),
                    };
                    format!("{}/{tgt}", cur.unwrap_or_else(|| "<unknown>".into()))
                })
                .collect();
            (
                vec!["Reference", "Targets", "MinPods", "MaxPods", "Replicas"],
                vec![
                    json!(reference),
                    json!(targets.join(", ")),
                    json!(s(&sp["minReplicas"])),
                    json!(s(&sp["maxReplicas"])),
                    json!(s(&st["currentReplicas"])),
                ],
            )
        }
        ("batch", "Job") => {
            let complete = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == json!("Complete") && c["status"] == json!("True"));
            let failed = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == json!("Failed") && c["status"] == json!("True"));
            let status = if complete {
                "Complete"
            } else if failed {
                "Failed"
            } else {
                "Running"
            };
            (
                vec!["Status", "Completions"],
                vec![
                    json!(status),
                    json!(format!("{}/{}", s(&st["succeeded"]), s(&sp["completions"]))),
                ],
            )
        }
        ("", "Namespace") => (vec!["Status"], vec![st["phase"].clone()]),
        ("", "Event") => (
            vec!["Type", "Reason", "Object", "Message"],
            vec![
                o["type"].clone(),
                o["reason"].clone(),
                json!(format!(
                    "{}/{}",
                    o["involvedObject"]["kind"]
                        .as_str()
                        .unwrap_or("")
                        .to_lowercase(),
                    o["involvedObject"]["name"].as_str().unwrap_or("")
                )),
                o["message"].clone(),
            ],
        ),
        ("", "ConfigMap") => (
            vec!["Data"],
            vec![json!(o["data"].as_object().map_or(0, serde_json::Map::len))],
        ),
        ("", "Secret") => (
            vec!["Type", "Data"],
            vec![
                o["type"].clone(),
                json!(o["data"].as_object().map_or(0, serde_json::Map::len)),
            ],
        ),
        ("", "Service") => (
            vec!["Type", "Cluster-IP"],
            vec![
                sp["type"].clone(),
                json!(sp["clusterIP"].as_str().unwrap_or("<none>")),
            ],
        ),
        ("apiregistration.k8s.io", "APIService") => {
            let available = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == json!("Available"));
            let service = sp["service"].as_object().map_or_else(
                || "Local".to_owned(),
                |svc| {
                    format!(
                        "{}/{}",
                        svc["namespace"].as_str().unwrap_or(""),
                        svc["name"].as_str().unwrap_or("")
                    )
                },
            );
            let status = available.map_or_else(
                || "Unknown".to_owned(),
                |c| {
                    if c["status"] == json!("True") {
                        "True".into()
                    } else {
                        format!("False ({})", c["reason"].as_str().unwrap_or(""))
                    }
                },
            );
            (
                vec!["Service", "Available"],
                vec![json!(service), json!(status)],
            )
        }
        _ => (Vec::new(), Vec::new()),
    }
}

/// The `-o wide` columns (priority 1) of a built-in type, after AGE.
fn wide_columns(rt: &ResourceType, o: &Value) -> (Vec<&'static str>, Vec<Value>) {
    let containers = |spec: &Value, field: &str| -> Value {
        json!(
            spec["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c[field].as_str())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet") => {
            let pod_spec = &o["spec"]["template"]["spec"];
            let selector = crate::selectors::LabelSelector::from_object(&o["spec"]["selector"])
                .map(|s| s.to_string_form())
                .unwrap_or_default();
            (
                vec!["Containers", "Images", "Selector"],
                vec![
                    containers(pod_spec, "name"),
                    containers(pod_spec, "image"),
                    json!(selector),
                ],
            )
        }
        ("", "Pod") => (
            vec!["IP", "Node", "Nominated Node", "Readiness Gates"],
            vec![
                json!(o["status"]["podIP"].as_str().unwrap_or("<none>")),
                json!(o["spec"]["nodeName"].as_str().unwrap_or("<none>")),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        _ => (Vec::new(), Vec::new()),
    }
}

/// Renders objects as a `meta.k8s.io/v1` Table.
pub fn render(rt: &ResourceType, objects: &[Value], resource_version: &str) -> Value {
    let custom = rt.custom.as_ref();
    let mut names: Vec<(String, String, i64)> = vec![("Name".into(), "string".into(), 0)];
    let custom_columns: Vec<Value> = custom
        .map(|c| c.printer_columns.clone())
        .unwrap_or_default();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            if custom.is_some() {
                for column in &custom_columns {
                    let path = column["jsonPath"].as_str().unwrap_or("");
                    let value = cell(&json_path(o, path));
                    if column["type"] == json!("date") {
                        cells.push(json!(value.as_str().map_or_else(|| "<none>".into(), age)));
                    } else {
                        cells.push(value);
                    }
                }
            } else {
                cells.extend(builtin_columns(rt, o).1);
                cells.push(json!(age(o["metadata"]["creationTimestamp"].as_str().unwrap_or(""))));
                cells.extend(wide_columns(rt, o).1);
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    if custom.is_some() {
        for column in &custom_columns {
            let type_ = if column["type"] == json!("date") {
                "string"
            } else {
                column["type"].as_str().unwrap_or("string")
            };
            names.push((
                column["name"].as_str().unwrap_or("").to_owned(),
                type_.to_owned(),
                column["priority"].as_i64().unwrap_or(0),
            ));
        }
        if custom_columns.is_empty() {
            names.push(("Age".into(), "string".into(), 0));
        }
    } else {
        let sample = objects.first().cloned().unwrap_or_else(|| json!({}));
        names.extend(
            builtin_columns(rt, &sample)
                .0
                .into_iter()
                .map(|n| (n.to_owned(), "string".to_owned(), 0)),
        );
        names.push(("Age".into(), "string".into(), 0));
        names.extend(
            wide_columns(rt, &sample)
                .0
                .into_iter()
                .map(|n| (n.to_owned(), "string".to_owned(), 1)),
        );
    }
    let rows: Vec<Value> = if custom.is_some() && custom_columns.is_empty() {
        rows.into_iter()
            .zip(objects)
            .map(|(mut r, o)| {
                if let Some(cells) = r["cells"].as_array_mut() {
                    cells.push(json!(age(o["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or(""))));
                }
                r
            })
            .collect()
    } else {
        rows
    };
    let definitions: Vec<Value> = names
        .iter()
        .map(|(name, type_, priority)| {
            let mut d = json!({"name": name, "type": type_, "format": "", "description": "", "priority": priority});
            if name == "Name" {
                d["format"] = json!("name");
            }
            d
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
           "columnDefinitions": definitions, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Active", "status": "False"}]},
                       "spec": {"refs": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Active\")].status"),
            vec![json!("False")]
        );
        assert_eq!(cell(&json_path(&o, ".spec.refs[*].name")), json!("a,b"));
        assert_eq!(json_path(&o, ".spec.refs[1].name"), vec![json!("b")]);
        assert_eq!(cell(&json_path(&o, ".spec.missing")), json!(""));
    }
}
