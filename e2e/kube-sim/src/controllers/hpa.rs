//! The HorizontalPodAutoscaler controller: every sync period, each HPA reads its target's
//! `/scale`, fetches its metrics (External metrics through the aggregation layer, Resource
//! metrics from the workload's `kube-sim.keda.sh/pod-usage` annotation, e.g. `cpu=250m`), runs
//! the Kubernetes replica algorithm with its behavior, scales the target and writes status,
//! conditions and Events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use serde_json::{Value, json};

use super::workloads::pod_is_ready;
use super::{events, options, resource};
use crate::Sim;
use crate::aggregator;
use crate::cluster::{Part, now};
use crate::hpa_algorithm::{
    self as algo, HpaState, MetricError, PodMetrics, PodSample, Tolerances,
};
use crate::http::objects::scale_of;
use crate::quantity::{from_milli, to_milli};
use crate::selectors::LabelSelector;

/// Workload annotation giving each pod's resource usage, e.g. `cpu=250m,memory=64Mi`.
pub const POD_USAGE_ANNOTATION: &str = "kube-sim.keda.sh/pod-usage";
const COMPONENT: &str = "horizontal-pod-autoscaler";

pub fn spawn(sim: &Arc<Sim>) {
    let sim = sim.clone();
    tokio::spawn(async move {
        let mut states: HashMap<String, HpaState> = HashMap::new();
        loop {
            if let Some(rt) = resource(&sim.cluster, "autoscaling", "horizontalpodautoscalers") {
                let (hpas, _) = sim.cluster.store.list(&rt.key(), None);
                let uids: Vec<String> = hpas
                    .iter()
                    .filter_map(|h| h["metadata"]["uid"].as_str().map(str::to_owned))
                    .collect();
                states.retain(|uid, _| uids.contains(uid));
                for hpa in hpas {
                    let uid = hpa["metadata"]["uid"].as_str().unwrap_or("").to_owned();
                    let state = states.entry(uid).or_default();
                    sync(&sim, &hpa, state).await;
                }
            }
            tokio::time::sleep(sim.config.hpa_sync_period).await;
        }
    });
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": if status { "True" } else { "False" }, "reason": reason,
           "message": message, "lastTransitionTime": now()})
}

/// One metric's proposal and its `currentMetrics` entry.
struct Reading {
    proposal: Result<i32, MetricError>,
    current: Option<Value>,
    error: Option<(String, String)>,
    description: String,
}

fn i32_of(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(if n < 0 { i32::MIN } else { i32::MAX })
}

async fn external(
    sim: &Sim,
    namespace: &str,
    metric: &Value,
    current: i32,
    status_replicas: i32,
    ready: i32,
    tol: Tolerances,
) -> Reading {
    let spec = &metric["external"];
    let name = spec["metric"]["name"].as_str().unwrap_or("");
    let selector = LabelSelector::from_object(&spec["metric"]["selector"])
        .map(|s| s.to_string_form())
        .unwrap_or_default();
    let description = format!("external metric {name}({selector})");
    let encoded: String = selector
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{name}?labelSelector={encoded}"
    );
    let fail = |message: String| Reading {
        proposal: Err(MetricError::NoPodMetrics),
        current: None,
        error: Some(("FailedGetExternalMetric".into(), message)),
        description: description.clone(),
    };
    let list = match aggregator::get_json(sim, "external.metrics.k8s.io", "v1beta1", &path).await {
        Ok(list) => list,
        Err(e) => {
            return fail(format!(
                "unable to get external metric {namespace}/{name}/&LabelSelector{{{selector}}}: unable to fetch metrics from external metrics API: {}",
                e.message
            ));
        }
    };
    let values: Vec<i64> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["value"].as_str().and_then(to_milli))
        .collect();
    if values.is_empty() {
        return fail(format!(
            "unable to get external metric {namespace}/{name}/&LabelSelector{{{selector}}}: no metrics returned from external metrics API"
        ));
    }
    let target = &spec["target"];
    let total: i64 = values.iter().sum();
    let metric_id = json!({"name": name, "selector": spec["metric"]["selector"]});
    if target["type"] == json!("Value") {
        let target_milli = target["value"].as_str().and_then(to_milli).unwrap_or(0);
        Reading {
            proposal: algo::value_replicas(current, ready, &values, target_milli, tol),
            current: Some(
                json!({"type": "External", "external": {"metric": metric_id, "current": {"value": from_milli(total)}}}),
            ),
            error: None,
            description,
        }
    } else {
        let target_milli = target["averageValue"]
            .as_str()
            .and_then(to_milli)
            .unwrap_or(0);
        let average = total / i64::from(status_replicas.max(1));
        Reading {
            proposal: algo::average_value_replicas(status_replicas, &values, target_milli, tol),
            current: Some(
                json!({"type": "External", "external": {"metric": metric_id, "current": {"averageValue": from_milli(average)}}}),
            ),
            error: None,
            description,
        }
    }
}

fn resource_metric(
    metric: &Value,
    target_object: &Value,
    pods: &[Arc<Value>],
    current: i32,
    tol: Tolerances,
) -> Reading {
    let spec = if metric["type"] == json!("ContainerResource") {
        &metric["containerResource"]
    } else {
        &metric["resource"]
    };
    let name = spec["name"].as_str().unwrap_or("cpu");
    let description = if spec["target"]["type"] == json!("Utilization") {
        format!("{name} resource utilization (percentage of request)")
    } else {
        format!("{name} resource")
    };
    let usage = target_object["metadata"]["annotations"][POD_USAGE_ANNOTATION]
        .as_str()
        .unwrap_or("");
    let per_pod = usage
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .and_then(|(_, v)| to_milli(v));
    let Some(per_pod) = per_pod else {
        return Reading {
            proposal: Err(MetricError::NoPodMetrics),
            current: None,
            error: Some((
                "FailedGetResourceMetric".into(),
                format!(
                    "failed to get {name} usage: no {POD_USAGE_ANNOTATION} annotation with {name}= on the target"
                ),
            )),
            description,
        };
    };
    let request = |pod: &Value| -> i64 {
        pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["resources"]["requests"][name].as_str().and_then(to_milli))
            .sum()
    };
    let mut metrics = PodMetrics::default();
    for pod in pods {
        if pod_is_ready(pod) {
            metrics.ready.push(PodSample::new(per_pod, request(pod)));
        } else {
            metrics.unready_requests_milli.push(request(pod));
        }
    }
    let target = &spec["target"];
    let pod_count = i64::try_from(metrics.ready.len().max(1)).unwrap_or(1);
    let mut current_value = json!({"averageValue": from_milli(per_pod)});
    let proposal = if target["type"] == json!("Utilization") {
        let requested: i64 = metrics.ready.iter().map(|s| s.request_milli).sum();
        if requested > 0 {
            current_value["averageUtilization"] = json!(per_pod * 100 * pod_count / requested);
        }
        algo::utilization_replicas(
            current,
            &metrics,
            i32_of(target["averageUtilization"].as_i64().unwrap_or(80)),
            tol,
        )
    } else {
        algo::pods_average_value_replicas(
            current,
            &metrics,
            target["averageValue"]
                .as_str()
                .and_then(to_milli)
                .unwrap_or(0),
            tol,
        )
    };
    let kind = if metric["type"] == json!("ContainerResource") {
        "containerResource"
    } else {
        "resource"
    };
    let mut entry = json!({"type": metric["type"], kind: {"name": name, "current": current_value}});
    if kind == "containerResource" {
        entry[kind]["container"] = spec["container"].clone();
    }
    Reading {
        proposal,
        current: Some(entry),
        error: None,
        description,
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one sync, in the order the real controller does it"
)]
async fn sync(sim: &Sim, hpa: &Value, state: &mut HpaState) {
    let cluster = &sim.cluster;
    let Some(hpa_rt) = resource(cluster, "autoscaling", "horizontalpodautoscalers") else {
        return;
    };
    let (namespace, _) = crate::store::name_of(hpa);
    let spec = &hpa["spec"];
    let target_ref = &spec["scaleTargetRef"];
    let api_version = target_ref["apiVersion"].as_str().unwrap_or("apps/v1");
    let kind = target_ref["kind"].as_str().unwrap_or("");
    let target_name = target_ref["name"].as_str().unwrap_or("");
    let mut status = json!({"observedGeneration": hpa["metadata"]["generation"], "currentReplicas": 0, "desiredReplicas": 0});
    if let Some(t) = hpa["status"].get("lastScaleTime") {
        status["lastScaleTime"] = t.clone();
    }
    let target_rt = cluster
        .registry
        .by_kind(api_version, kind)
        .filter(|t| t.scale.is_some());
    let target = target_rt
        .as_ref()
        .and_then(|rt| cluster.store.get(&rt.key(), &namespace, target_name));
    let (Some(target_rt), Some(target)) = (target_rt.clone(), target) else {
        let (group, _) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let reason = match &target_rt {
            Some(rt) if rt.group.is_empty() => format!("{} \"{target_name}\" not found", rt.plural),
            Some(rt) => format!("{}.{} \"{target_name}\" not found", rt.plural, rt.group),
            None => format!("no matches for kind \"{kind}\" in group \"{group}\""),
        };
        let message =
            format!("the HPA controller was unable to get the target's current scale: {reason}");
        events::record(
            cluster,
            hpa,
            "Warning",
            "FailedGetScale",
            &reason,
            COMPONENT,
        );
        status["conditions"] = json!([condition("AbleToScale", false, "FailedGetScale", &message)]);
        write_status(sim, &hpa_rt, hpa, status);
        return;
    };
    let scale = scale_of(&target_rt, &target);
    let current = i32_of(scale["spec"]["replicas"].as_i64().unwrap_or(0));
    let status_replicas = i32_of(scale["status"]["replicas"].as_i64().unwrap_or(0));
    let min = i32_of(spec["minReplicas"].as_i64().unwrap_or(1));
    let max = i32_of(spec["maxReplicas"].as_i64().unwrap_or(1));
    status["currentReplicas"] = json!(status_replicas);
    let able = condition(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    );
    if current == 0 && min != 0 {
        status["desiredReplicas"] = json!(0);
        status["conditions"] = json!([
            able,
            condition(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero"
            )
        ]);
        write_status(sim, &hpa_rt, hpa, status);
        return;
    }
    let behavior: Option<HorizontalPodAutoscalerBehavior> =
        serde_json::from_value(spec["behavior"].clone()).ok();
    let tol = Tolerances::from_behavior(behavior.as_ref(), algo::DEFAULT_TOLERANCE);
    let pods: Vec<Arc<Value>> = match (
        resource(cluster, "", "pods"),
        scale["status"]["selector"]
            .as_str()
            .map(LabelSelector::parse),
    ) {
        (Some(pods_rt), Some(Ok(selector))) => cluster
            .store
            .list(&pods_rt.key(), Some(&namespace))
            .0
            .into_iter()
            .filter(|p| {
                selector.matches_object(p)
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && !matches!(p["status"]["phase"].as_str(), Some("Failed" | "Succeeded"))
            })
            .collect(),
        _ => Vec::new(),
    };
    let ready = i32::try_from(pods.iter().filter(|p| pod_is_ready(p)).count()).unwrap_or(0);
    let mut readings = Vec::new();
    for metric in spec["metrics"].as_array().into_iter().flatten() {
        let reading = match metric["type"].as_str() {
            Some("External") => {
                external(
                    sim,
                    &namespace,
                    metric,
                    current,
                    status_replicas,
                    ready,
                    tol,
                )
                .await
            }
            Some("Resource" | "ContainerResource") => {
                resource_metric(metric, &target, &pods, current, tol)
            }
            other => Reading {
                proposal: Err(MetricError::NoPodMetrics),
                current: None,
                error: Some((
                    "FailedGetObjectMetric".into(),
                    format!(
                        "kube-sim does not support {} metrics",
                        other.unwrap_or("untyped")
                    ),
                )),
                description: String::new(),
            },
        };
        readings.push(reading);
    }
    for reading in &mut readings {
        if let (Err(e), None) = (&reading.proposal, &reading.error) {
            reading.error = Some((
                "FailedGetResourceMetric".into(),
                format!("failed to compute {}: {e}", reading.description),
            ));
        }
    }
    for reading in &readings {
        if let Some((reason, message)) = &reading.error {
            events::record(cluster, hpa, "Warning", reason, message, COMPONENT);
        }
    }
    status["currentMetrics"] =
        Value::Array(readings.iter().filter_map(|r| r.current.clone()).collect());
    let proposals: Vec<Result<i32, MetricError>> = readings.iter().map(|r| r.proposal).collect();
    let outcome = state.reconcile(
        SystemTime::now(),
        current,
        min,
        max,
        behavior.as_ref(),
        &proposals,
    );
    let normalized = match outcome {
        Ok(n) => n,
        Err(e) => {
            let (reason, detail) = readings
                .iter()
                .find_map(|r| r.error.clone())
                .unwrap_or_else(|| ("FailedComputeMetricsReplicas".into(), e.to_string()));
            status["desiredReplicas"] = json!(current);
            status["conditions"] = json!([
                able,
                condition(
                    "ScalingActive",
                    false,
                    &reason,
                    &format!("the HPA was unable to compute the replica count: {detail}")
                )
            ]);
            write_status(sim, &hpa_rt, hpa, status);
            return;
        }
    };
    let desired = normalized.desired_replicas;
    // The metric that asked for the most replicas is the one the controller names.
    let deciding = readings
        .iter()
        .filter_map(|r| {
            r.proposal
                .as_ref()
                .ok()
                .map(|p| (*p, r.description.as_str()))
        })
        .max_by_key(|(p, _)| *p)
        .map_or("", |(_, d)| d)
        .to_owned();
    if desired != current {
        let mut scaled = (*target).clone();
        scaled["spec"]["replicas"] = json!(desired);
        let direction = if desired > current { "above" } else { "below" };
        let reason = readings
            .iter()
            .find(|r| r.proposal.as_ref().is_ok_and(|p| *p == desired))
            .map_or_else(
                || "All metrics below target".to_owned(),
                |r| format!("{} {direction} target", r.description),
            );
        let mut opts = options();
        opts.field_manager = "kube-controller-manager".into();
        match cluster.update(
            &target_rt,
            &namespace,
            target_name,
            scaled,
            Part::Main,
            &opts,
        ) {
            Ok(_) => {
                events::record(
                    cluster,
                    hpa,
                    "Normal",
                    "SuccessfulRescale",
                    &format!("New size: {desired}; reason: {reason}"),
                    COMPONENT,
                );
                status["lastScaleTime"] = json!(now());
            }
            Err(e) => {
                events::record(
                    cluster,
                    hpa,
                    "Warning",
                    "FailedRescale",
                    &format!(
                        "New size: {desired}; reason: {reason}; error: {}",
                        e.message
                    ),
                    COMPONENT,
                );
            }
        }
    }
    status["desiredReplicas"] = json!(desired);
    status["conditions"] = json!([
        condition(
            "AbleToScale",
            true,
            &normalized.stabilization.to_string(),
            normalized.stabilization.message()
        ),
        condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            &format!("the HPA was able to successfully calculate a replica count from {deciding}")
        ),
        condition(
            "ScalingLimited",
            normalized.scaling_limited,
            &normalized.limit.to_string(),
            normalized.limit.message()
        ),
    ]);
    write_status(sim, &hpa_rt, hpa, status);
}

/// Writes status, keeping a condition's transition time while its status does not change.
fn write_status(sim: &Sim, rt: &crate::resources::ResourceType, hpa: &Value, mut status: Value) {
    let previous = hpa["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        if let Some(p) = previous
            .iter()
            .find(|p| p["type"] == c["type"] && p["status"] == c["status"])
        {
            c["lastTransitionTime"] = p["lastTransitionTime"].clone();
        }
    }
    if hpa["status"] == status {
        return;
    }
    let (ns, name) = crate::store::name_of(hpa);
    let mut updated = hpa.clone();
    updated["status"] = status;
    let _ = sim
        .cluster
        .update(rt, &ns, &name, updated, Part::Status, &options());
}
