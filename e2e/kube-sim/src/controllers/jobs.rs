//! Jobs: pods are created up to `parallelism` until `completions` succeed. A pod succeeds after
//! the duration in the Job's `kube-sim.keda.sh/duration` annotation (default 5s), or fails when
//! the annotation `kube-sim.keda.sh/fail` is `"true"`. Finished pods stay, as history.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::workloads::parse_duration;
use super::{options, owned_by, owner_reference, resource};
use crate::Sim;
use crate::cluster::{Part, now};
use crate::resources::ResourceType;

pub const DURATION_ANNOTATION: &str = "kube-sim.keda.sh/duration";
pub const FAIL_ANNOTATION: &str = "kube-sim.keda.sh/fail";
const DEFAULT_DURATION: Duration = Duration::from_secs(5);

pub fn reconcile_all(sim: &Sim) {
    let Some(rt) = resource(&sim.cluster, "batch", "jobs") else {
        return;
    };
    let (jobs, _) = sim.cluster.store.list(&rt.key(), None);
    for job in jobs {
        reconcile(sim, &rt, &job);
    }
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("Pending")
}

fn started(pod: &Value) -> Option<SystemTime> {
    let text = pod["status"]["startTime"]
        .as_str()
        .or(pod["metadata"]["creationTimestamp"].as_str())?;
    text.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

fn reconcile(sim: &Sim, rt: &ResourceType, job: &Value) {
    let cluster = &sim.cluster;
    let Some(pods_rt) = resource(cluster, "", "pods") else {
        return;
    };
    let meta = &job["metadata"];
    let (Some(namespace), Some(name), Some(uid)) = (
        meta["namespace"].as_str(),
        meta["name"].as_str(),
        meta["uid"].as_str(),
    ) else {
        return;
    };
    if job["status"]["completionTime"].is_string() || !meta["deletionTimestamp"].is_null() {
        return;
    }
    let annotations = &meta["annotations"];
    let duration = annotations[DURATION_ANNOTATION]
        .as_str()
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_DURATION);
    let fail = annotations[FAIL_ANNOTATION] == json!("true");
    let completions = job["spec"]["completions"].as_i64().unwrap_or(1);
    let parallelism = job["spec"]["parallelism"].as_i64().unwrap_or(1);
    let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    let suspended = job["spec"]["suspend"] == json!(true);

    let (pods, _) = cluster.store.list(&pods_rt.key(), Some(namespace));
    let pods: Vec<_> = pods.into_iter().filter(|p| owned_by(p, uid)).collect();
    // Finish running pods whose time is up.
    for pod in pods.iter().filter(|p| phase(p) == "Running") {
        if started(pod).is_some_and(|s| SystemTime::now() >= s + duration) {
            let mut done = (**pod).clone();
            done["status"]["phase"] = json!(if fail { "Failed" } else { "Succeeded" });
            done["status"]["conditions"] =
                json!([{"type": "Ready", "status": "False", "reason": "PodCompleted"}]);
            let (ns, pod_name) = crate::store::name_of(pod);
            let _ = cluster.update(&pods_rt, &ns, &pod_name, done, Part::Status, &options());
        }
    }
    let (pods, _) = cluster.store.list(&pods_rt.key(), Some(namespace));
    let pods: Vec<_> = pods.into_iter().filter(|p| owned_by(p, uid)).collect();
    let count = |wanted: &str| {
        i64::try_from(pods.iter().filter(|p| phase(p) == wanted).count()).unwrap_or(0)
    };
    let (succeeded, failed) = (count("Succeeded"), count("Failed"));
    let mut active = count("Running") + count("Pending");
    let finished_ok = succeeded >= completions;
    let finished_failed = failed > backoff_limit;
    if !finished_ok && !finished_failed && !suspended {
        let wanted = parallelism.min(completions - succeeded) - active;
        for _ in 0..wanted.max(0) {
            let template = &job["spec"]["template"];
            let mut labels = template["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels["job-name"] = json!(name);
            labels["batch.kubernetes.io/job-name"] = json!(name);
            labels["controller-uid"] = json!(uid);
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": format!("{name}-"), "labels": labels,
                             "ownerReferences": [owner_reference(job, true)]},
                "spec": template["spec"],
                "status": {"phase": "Running", "startTime": now(),
                           "conditions": [{"type": "Ready", "status": "True"}]},
            });
            if cluster.create(&pods_rt, namespace, pod, &options()).is_ok() {
                active += 1;
            }
        }
    }
    let mut status = json!({"active": active, "succeeded": succeeded, "failed": failed,
        "startTime": job["status"]["startTime"].as_str().map_or_else(now, str::to_owned)});
    if finished_ok || finished_failed {
        let (type_, reason) = if finished_ok {
            ("Complete", "Completed")
        } else {
            ("Failed", "BackoffLimitExceeded")
        };
        status["active"] = json!(0);
        if finished_ok {
            status["completionTime"] = json!(now());
        }
        status["conditions"] = json!([{"type": type_, "status": "True", "reason": reason, "lastTransitionTime": now(), "lastProbeTime": now()}]);
    }
    if job["status"] == status {
        return;
    }
    let mut updated = job.clone();
    updated["status"] = status;
    let _ = cluster.update(rt, namespace, name, updated, Part::Status, &options());
}
