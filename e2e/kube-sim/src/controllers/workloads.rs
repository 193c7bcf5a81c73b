//! Deployments, StatefulSets and ReplicaSets: pods follow `spec.replicas`, carrying the
//! template's labels, and the workload's status follows its pods.
//!
//! Differences from the real controllers, on purpose: a Deployment owns its pods directly (no
//! ReplicaSet in between), and a template change replaces all its pods at once; pods run no
//! containers.
//! The annotation `kube-sim.keda.sh/ready-after` (e.g. `5s`) on a workload delays its pods'
//! readiness, to model slow starts.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{options, owned_by, owner_reference, resource};
use crate::Sim;
use crate::cluster::{Part, Propagation, now};
use crate::resources::ResourceType;

/// Workload annotation delaying pod readiness.
pub const READY_AFTER_ANNOTATION: &str = "kube-sim.keda.sh/ready-after";

/// Parses `500ms`, `5s`, `5` (seconds) or `2m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let value: f64 = text[..split].parse().ok()?;
    let seconds = match &text[split..] {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(ts))
}

pub fn reconcile_all(sim: &Sim) {
    for plural in ["deployments", "statefulsets", "replicasets"] {
        let Some(rt) = resource(&sim.cluster, "apps", plural) else {
            continue;
        };
        let (workloads, _) = sim.cluster.store.list(&rt.key(), None);
        for workload in workloads {
            reconcile(sim, &rt, &workload);
        }
    }
}

/// Whether a pod's `Ready` condition is true.
pub fn pod_is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == json!("Ready") && c["status"] == json!("True"))
}

fn running_status(ready: bool) -> Value {
    let status = if ready { "True" } else { "False" };
    let conditions: Vec<Value> = ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .map(|t| {
            let s = if matches!(*t, "Initialized" | "PodScheduled") {
                "True"
            } else {
                status
            };
            json!({"type": t, "status": s, "lastTransitionTime": now()})
        })
        .collect();
    json!({"phase": "Running", "conditions": conditions, "podIP": "10.0.0.1", "hostIP": "10.0.0.1", "startTime": now()})
}

fn reconcile(sim: &Sim, rt: &ResourceType, workload: &Value) {
    let cluster = &sim.cluster;
    let Some(pods_rt) = resource(cluster, "", "pods") else {
        return;
    };
    let meta = &workload["metadata"];
    let (Some(namespace), Some(name), Some(uid)) = (
        meta["namespace"].as_str(),
        meta["name"].as_str(),
        meta["uid"].as_str(),
    ) else {
        return;
    };
    let deleting = !meta["deletionTimestamp"].is_null();
    let desired = if deleting {
        0
    } else {
        workload["spec"]["replicas"].as_i64().unwrap_or(1)
    };
    let ready_after = meta["annotations"][READY_AFTER_ANNOTATION]
        .as_str()
        .and_then(parse_duration)
        .unwrap_or_default();
    let (all_pods, _) = cluster.store.list(&pods_rt.key(), Some(namespace));
    let mut pods: Vec<_> = all_pods
        .into_iter()
        .filter(|p| owned_by(p, uid) && p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    let stateful = rt.kind == "StatefulSet";
    // Newest last, so scale-down removes the newest pods (highest ordinals for StatefulSets).
    pods.sort_by_key(|p| {
        let created = p["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let ordinal = p["metadata"]["name"]
            .as_str()
            .and_then(|n| n.rsplit('-').next())
            .and_then(|o| o.parse::<i64>().ok())
            .unwrap_or(0);
        if stateful {
            (String::new(), ordinal)
        } else {
            (created, ordinal)
        }
    });
    // A changed template replaces the pods (like a Recreate rollout, without waiting).
    if !stateful {
        let hash = template_hash(workload);
        let (stale, current): (Vec<_>, Vec<_>) = pods.into_iter().partition(|p| {
            p["metadata"]["labels"]["pod-template-hash"].as_str() != Some(hash.as_str())
        });
        for pod in &stale {
            let (ns, pod_name) = crate::store::name_of(pod);
            let _ = cluster.delete(
                &pods_rt,
                &ns,
                &pod_name,
                Propagation::Background,
                None,
                false,
            );
        }
        pods = current;
    }
    let count = i64::try_from(pods.len()).unwrap_or(i64::MAX);
    if count > desired {
        for pod in pods
            .iter()
            .rev()
            .take(usize::try_from(count - desired).unwrap_or(0))
        {
            let (ns, pod_name) = crate::store::name_of(pod);
            let _ = cluster.delete(
                &pods_rt,
                &ns,
                &pod_name,
                Propagation::Background,
                None,
                false,
            );
        }
        pods.truncate(usize::try_from(desired).unwrap_or(0));
    } else if count < desired {
        for i in count..desired {
            let pod = new_pod(workload, stateful, name, i, ready_after.is_zero());
            if let Ok(created) = cluster.create(&pods_rt, namespace, pod, &options()) {
                pods.push(created);
            }
        }
    }
    mark_ready(sim, &pods_rt, &pods, ready_after);
    let (pods_now, _) = cluster.store.list(&pods_rt.key(), Some(namespace));
    let pods_now: Vec<_> = pods_now
        .into_iter()
        .filter(|p| owned_by(p, uid) && p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    let replicas = pods_now.len();
    let ready = pods_now.iter().filter(|p| pod_is_ready(p)).count();
    update_status(sim, rt, workload, replicas, ready);
}

/// A short hash of the pod template (FNV-1a), like the `pod-template-hash` label.
fn template_hash(workload: &Value) -> String {
    let text = workload["spec"]["template"].to_string();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:x}", hash & 0xff_ffff_ffff)
}

/// Makes pods ready once `ready_after` has passed since their creation.
fn mark_ready(
    sim: &Sim,
    pods_rt: &ResourceType,
    pods: &[std::sync::Arc<Value>],
    ready_after: Duration,
) {
    let cluster = &sim.cluster;
    for pod in pods {
        if pod_is_ready(pod) {
            continue;
        }
        let created = pod["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(parse_time);
        let due = created.is_none_or(|c| SystemTime::now() >= c + ready_after);
        if due {
            let mut ready = (**pod).clone();
            ready["status"] = running_status(true);
            let (ns, pod_name) = crate::store::name_of(pod);
            let _ = cluster.update(pods_rt, &ns, &pod_name, ready, Part::Status, &options());
        }
    }
}

fn new_pod(workload: &Value, stateful: bool, name: &str, ordinal: i64, ready: bool) -> Value {
    let template = &workload["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    let mut meta = json!({"labels": labels, "ownerReferences": [owner_reference(workload, true)]});
    if let Some(annotations) = template["metadata"]["annotations"].as_object() {
        meta["annotations"] = Value::Object(annotations.clone());
    }
    if stateful {
        meta["name"] = json!(format!("{name}-{ordinal}"));
        meta["labels"]["statefulset.kubernetes.io/pod-name"] = json!(format!("{name}-{ordinal}"));
    } else {
        let hash = template_hash(workload);
        meta["labels"]["pod-template-hash"] = json!(hash);
        meta["generateName"] = json!(format!("{name}-{hash}-"));
    }
    let mut spec = template["spec"].clone();
    spec["nodeName"] = json!("kube-sim");
    let status = if ready {
        running_status(true)
    } else {
        json!({"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]})
    };
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status})
}

fn update_status(sim: &Sim, rt: &ResourceType, workload: &Value, replicas: usize, ready: usize) {
    let generation = workload["metadata"]["generation"].clone();
    let desired = workload["spec"]["replicas"].as_i64().unwrap_or(1);
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "updatedReplicas": replicas,
    });
    if rt.kind == "Deployment" {
        let available = i64::try_from(ready).unwrap_or(0) >= desired;
        let previous = workload["status"]["conditions"].clone();
        let transition = previous
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                c["type"] == json!("Available")
                    && c["status"] == json!(if available { "True" } else { "False" })
            })
            .map_or_else(|| json!(now()), |c| c["lastTransitionTime"].clone());
        status["conditions"] = json!([{
            "type": "Available",
            "status": if available { "True" } else { "False" },
            "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
            "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
            "lastTransitionTime": transition,
            "lastUpdateTime": transition,
        }]);
    }
    if rt.kind == "StatefulSet" {
        status["currentReplicas"] = json!(replicas);
    }
    if workload["status"] == status {
        return;
    }
    let mut updated = workload.clone();
    updated["status"] = status;
    let (ns, name) = crate::store::name_of(workload);
    let _ = sim
        .cluster
        .update(rt, &ns, &name, updated, Part::Status, &options());
}
