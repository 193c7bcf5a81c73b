//! The simulated controller-manager loops, seen through the API with kube-rs as a client of a
//! real cluster would see them: Deployments and StatefulSets keep their pods and status, pods
//! can be made slow to become ready, Jobs run pods to completion or failure, the garbage
//! collector follows owner references and namespaces, and the HorizontalPodAutoscaler scales
//! on CPU utilization.
//!
//! Each test starts its own simulator. Waits are bounded polls (or watches) of at most [`WAIT`];
//! no test asserts how long anything took, only what was observed and in which order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The longest any bounded wait in these tests lasts.
const WAIT: Duration = Duration::from_secs(10);

async fn start_with(config: kube_sim::Config) -> (kube_sim::KubeSim, Client) {
    let sim = kube_sim::start(config).await.unwrap();
    // kube-rs retries 503s for minutes by default; a test should fail instead.
    let mut client_config = kube::Config::new(sim.url().parse().unwrap());
    client_config.default_retry = false;
    let client = Client::try_from(client_config).unwrap();
    (sim, client)
}

async fn start() -> (kube_sim::KubeSim, Client) {
    start_with(kube_sim::Config::default()).await
}

/// Polls `probe` until it returns a value, for at most [`WAIT`].
async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    deployment_with(name, replicas, &json!({}), &json!({}))
}

/// A Deployment selecting `app=<name>`, with `annotations` on the Deployment and `resources`
/// on its one container.
fn deployment_with(
    name: &str,
    replicas: i32,
    annotations: &Value,
    resources: &Value,
) -> Deployment {
    from_json(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "tier": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.25", "resources": resources}]}
            }
        }
    }))
}

fn stateful_set(name: &str, replicas: i32) -> StatefulSet {
    from_json(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}
            }
        }
    }))
}

fn job(name: &str, annotations: &Value, completions: i32, backoff_limit: i32) -> Job {
    from_json(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "completions": completions,
            "parallelism": 1,
            "backoffLimit": backoff_limit,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "work", "image": "busybox:1.36"}]
                }
            }
        }
    }))
}

/// Pods matching `selector` that are not being deleted, by name.
async fn live_pods(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    let mut list: Vec<Pod> = pods
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    list.sort_by_key(ResourceExt::name_any);
    list
}

fn names<K: ResourceExt>(items: &[K]) -> Vec<String> {
    items.iter().map(ResourceExt::name_any).collect()
}

fn label<'a, K: ResourceExt>(object: &'a K, key: &str) -> Option<&'a str> {
    object.labels().get(key).map(String::as_str)
}

fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// `(replicas, readyReplicas, availableReplicas)`; the apiserver omits zeros.
fn deployment_counts(d: &Deployment) -> (i32, i32, i32) {
    let status = d.status.clone().unwrap_or_default();
    (
        status.replicas.unwrap_or(0),
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    )
}

/// Waits until the Deployment's status reports `counts` for its current generation.
async fn wait_for_deployment_status(api: &Api<Deployment>, name: &str, counts: (i32, i32, i32)) {
    wait_for(
        &format!("{name} to report (replicas, ready, available) = {counts:?}"),
        async || {
            let d = api.get(name).await.unwrap();
            let observed = d.status.as_ref().and_then(|s| s.observed_generation);
            (deployment_counts(&d) == counts && observed == d.metadata.generation).then_some(())
        },
    )
    .await;
}

/// The controller owner reference of `object`, as `(kind, name, uid)`.
fn controller_of<K: ResourceExt>(object: &K) -> Option<(String, String, String)> {
    object
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| (r.kind.clone(), r.name.clone(), r.uid.clone()))
}

/// What a watch reported, in order.
#[derive(Clone, Debug)]
enum Seen<K> {
    Applied(K),
    Deleted(K),
}

/// A watcher recording everything it sees until dropped.
struct Recording<K> {
    seen: Arc<Mutex<Vec<Seen<K>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K: Clone> Recording<K> {
    fn snapshot(&self) -> Vec<Seen<K>> {
        self.seen.lock().unwrap().clone()
    }

    fn applied(&self) -> Vec<K> {
        self.snapshot()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Applied(o) => Some(o),
                Seen::Deleted(_) => None,
            })
            .collect()
    }

    fn deleted(&self) -> Vec<K> {
        self.snapshot()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Deleted(o) => Some(o),
                Seen::Applied(_) => None,
            })
            .collect()
    }
}

impl<K> Drop for Recording<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts recording what a watch on `api` (narrowed by `config`) sees, and returns once the
/// watch's initial list is done, so no later change is missed.
async fn record<K>(api: Api<K>, config: watcher::Config) -> Recording<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut stream = watcher(api, config).boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                    sink.lock().unwrap().push(Seen::Applied(o));
                }
                Ok(watcher::Event::Delete(o)) => sink.lock().unwrap().push(Seen::Deleted(o)),
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(watcher::Event::Init) => {}
                Err(e) => panic!("watch failed: {e}"),
            }
        }
    });
    tokio::time::timeout(WAIT, ready_rx)
        .await
        .expect("the watch did not finish its initial list")
        .expect("the watch ended before its initial list");
    Recording { seen, task }
}

fn labels_config(selector: &str) -> watcher::Config {
    watcher::Config::default().labels(selector)
}

fn named_config(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

// ---------------------------------------------------------------------------------------------
// Deployments and StatefulSets

/// Pods carry the template's labels, a `pod-template-hash` and a controller reference to their
/// workload (kube-sim: the Deployment itself; a real cluster puts a ReplicaSet in between).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_follow_replicas_and_status_follows_the_pods() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let created = deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .unwrap();
    let uid = created.uid().unwrap();

    let running = wait_for("3 pods of web", async || {
        let p = live_pods(&pods, "app=web").await;
        (p.len() == 3).then_some(p)
    })
    .await;
    let hashes: BTreeSet<_> = running
        .iter()
        .map(|p| label(p, "pod-template-hash").unwrap_or("").to_owned())
        .collect();
    assert_eq!(hashes.len(), 1, "one template, one hash: {hashes:?}");
    assert!(!hashes.iter().next().unwrap().is_empty());
    for pod in &running {
        assert_eq!(label(pod, "app"), Some("web"));
        assert_eq!(label(pod, "tier"), Some("web"));
        assert_eq!(
            controller_of(pod),
            Some(("Deployment".to_owned(), "web".to_owned(), uid.clone()))
        );
    }
    wait_for_deployment_status(&deployments, "web", (3, 3, 3)).await;

    // Scale down through /scale: the surplus pods go, the rest stay.
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    let left = wait_for("web scaled down to 1 pod", async || {
        let p = live_pods(&pods, "app=web").await;
        (p.len() == 1).then_some(p)
    })
    .await;
    assert!(names(&running).contains(&left[0].name_any()));
    wait_for_deployment_status(&deployments, "web", (1, 1, 1)).await;

    // Scale to zero: no pods, and a status that says so.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    wait_for("web scaled to 0 pods", async || {
        let all = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        all.items.is_empty().then_some(())
    })
    .await;
    wait_for_deployment_status(&deployments, "web", (0, 0, 0)).await;
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.metadata.generation, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_deployment_template_replaces_its_pods() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    let before = wait_for("2 pods of web", async || {
        let p = live_pods(&pods, "app=web").await;
        (p.len() == 2).then_some(p)
    })
    .await;
    let old_hash = label(&before[0], "pod-template-hash").unwrap().to_owned();

    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1.26"}
            ]}}}})),
        )
        .await
        .unwrap();
    let after = wait_for("web's pods replaced", async || {
        let p = live_pods(&pods, "app=web").await;
        let replaced = p.len() == 2
            && p.iter()
                .all(|pod| label(pod, "pod-template-hash") != Some(old_hash.as_str()));
        replaced.then_some(p)
    })
    .await;
    let new_hash = label(&after[0], "pod-template-hash").unwrap();
    assert_ne!(new_hash, old_hash);
    assert_eq!(label(&after[1], "pod-template-hash"), Some(new_hash));
    for pod in &after {
        assert!(!names(&before).contains(&pod.name_any()));
        let image = pod.spec.as_ref().unwrap().containers[0].image.as_deref();
        assert_eq!(image, Some("nginx:1.26"));
    }
    wait_for_deployment_status(&deployments, "web", (2, 2, 2)).await;
    assert_eq!(
        deployments.get("web").await.unwrap().metadata.generation,
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_set_pods_have_ordinal_names_and_scale_down_from_the_highest() {
    let (_sim, client) = start().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let created = sets
        .create(&PostParams::default(), &stateful_set("db", 3))
        .await
        .unwrap();
    let running = wait_for("3 pods of db", async || {
        let p = live_pods(&pods, "app=db").await;
        (p.len() == 3).then_some(p)
    })
    .await;
    assert_eq!(names(&running), ["db-0", "db-1", "db-2"]);
    for pod in &running {
        assert_eq!(
            controller_of(pod),
            Some((
                "StatefulSet".to_owned(),
                "db".to_owned(),
                created.uid().unwrap()
            ))
        );
    }
    wait_for("db to report 3 ready replicas", async || {
        let status = sets.get("db").await.unwrap().status.unwrap_or_default();
        (status.replicas == 3 && status.ready_replicas == Some(3)).then_some(())
    })
    .await;

    let recording = record(pods.clone(), labels_config("app=db")).await;
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    wait_for("db scaled down to db-0", async || {
        (names(&live_pods(&pods, "app=db").await) == ["db-0"]).then_some(())
    })
    .await;
    let deleted = wait_for("both deletions to be watched", async || {
        let deleted = names(&recording.deleted());
        (deleted.len() == 2).then_some(deleted)
    })
    .await;
    assert_eq!(deleted, ["db-2", "db-1"], "the highest ordinal goes first");
    wait_for("db to report 1 replica", async || {
        let status = sets.get("db").await.unwrap().status.unwrap_or_default();
        (status.replicas == 1 && status.ready_replicas == Some(1)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_annotation_delays_pod_readiness() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let pod_history = record(pods.clone(), labels_config("app=slow")).await;
    let deployment_history = record(deployments.clone(), named_config("slow")).await;
    let annotations = json!({"kube-sim.keda.sh/ready-after": "2s"});
    deployments
        .create(
            &PostParams::default(),
            &deployment_with("slow", 2, &annotations, &json!({})),
        )
        .await
        .unwrap();
    wait_for_deployment_status(&deployments, "slow", (2, 2, 2)).await;
    let pods_ready = wait_for("the watch to see both pods ready", async || {
        let seen = pod_history.applied();
        let ready: BTreeSet<String> = seen
            .iter()
            .filter(|p| pod_is_ready(p))
            .map(ResourceExt::name_any)
            .collect();
        (ready.len() == 2).then_some(seen)
    })
    .await;

    // Every pod was first seen not ready, and ready only later.
    let mut readiness: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for pod in &pods_ready {
        readiness
            .entry(pod.name_any())
            .or_default()
            .push(pod_is_ready(pod));
    }
    assert_eq!(readiness.len(), 2, "{readiness:?}");
    for (name, seen) in &readiness {
        assert_eq!(seen.first(), Some(&false), "{name} first seen: {seen:?}");
        assert_eq!(seen.last(), Some(&true), "{name} last seen: {seen:?}");
    }

    // The Deployment reported its pods unready before it reported them ready.
    let statuses: Vec<_> = deployment_history
        .applied()
        .iter()
        .map(deployment_counts)
        .collect();
    let unready = statuses
        .iter()
        .position(|&(r, ready, _)| r > 0 && ready == 0);
    let ready = statuses.iter().position(|&(_, ready, _)| ready == 2);
    assert!(
        matches!((unready, ready), (Some(u), Some(r)) if u < r),
        "statuses seen: {statuses:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Jobs

fn job_condition(job: &Job, type_: &str) -> Option<(String, Option<String>)> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_its_pods_one_at_a_time_until_its_completions_succeed() {
    let (_sim, client) = start().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let history = record(pods.clone(), labels_config("job-name=batch")).await;
    let annotations = json!({"kube-sim.keda.sh/duration": "1s"});
    let created = jobs
        .create(&PostParams::default(), &job("batch", &annotations, 2, 6))
        .await
        .unwrap();

    let done = wait_for("batch to complete", async || {
        let j = jobs.get("batch").await.unwrap();
        (job_condition(&j, "Complete").is_some_and(|(s, _)| s == "True")).then_some(j)
    })
    .await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.succeeded, Some(2));
    assert_eq!(status.failed.unwrap_or(0), 0);
    assert_eq!(status.active.unwrap_or(0), 0);
    assert!(status.completion_time.is_some());
    assert!(status.start_time.is_some());
    assert!(job_condition(&done, "Failed").is_none_or(|(s, _)| s != "True"));

    // Finished pods stay, as history.
    let finished = live_pods(&pods, "job-name=batch").await;
    assert_eq!(finished.len(), 2);
    for pod in &finished {
        assert_eq!(pod_phase(pod), "Succeeded");
        assert_eq!(
            controller_of(pod),
            Some(("Job".to_owned(), "batch".to_owned(), created.uid().unwrap()))
        );
    }

    // Replaying the watch: never more than one pod active at a time (parallelism 1).
    let seen = wait_for("the watch to see both pods succeed", async || {
        let seen = history.snapshot();
        let succeeded = seen
            .iter()
            .filter(|s| matches!(s, Seen::Applied(p) if pod_phase(p) == "Succeeded"))
            .count();
        (succeeded >= 2).then_some(seen)
    })
    .await;
    let mut phases: BTreeMap<String, String> = BTreeMap::new();
    let mut most_active = 0;
    for event in &seen {
        match event {
            Seen::Applied(p) => phases.insert(p.name_any(), pod_phase(p).to_owned()),
            Seen::Deleted(p) => phases.remove(&p.name_any()),
        };
        let active = phases
            .values()
            .filter(|phase| !matches!(phase.as_str(), "Succeeded" | "Failed"))
            .count();
        most_active = most_active.max(active);
    }
    assert_eq!(
        most_active, 1,
        "pods active at once; phases seen: {phases:?}"
    );
    assert_eq!(phases.len(), 2, "{phases:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_whose_pods_fail_stops_at_its_backoff_limit() {
    let (_sim, client) = start().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let annotations =
        json!({"kube-sim.keda.sh/duration": "500ms", "kube-sim.keda.sh/fail": "true"});
    jobs.create(&PostParams::default(), &job("doomed", &annotations, 1, 1))
        .await
        .unwrap();
    let failed = wait_for("doomed to fail", async || {
        let j = jobs.get("doomed").await.unwrap();
        (job_condition(&j, "Failed").is_some_and(|(s, _)| s == "True")).then_some(j)
    })
    .await;
    assert_eq!(
        job_condition(&failed, "Failed"),
        Some(("True".to_owned(), Some("BackoffLimitExceeded".to_owned())))
    );
    assert!(job_condition(&failed, "Complete").is_none_or(|(s, _)| s != "True"));
    let status = failed.status.clone().unwrap();
    assert_eq!(status.failed, Some(2), "backoffLimit 1 allows one retry");
    assert_eq!(status.succeeded.unwrap_or(0), 0);
    assert_eq!(status.active.unwrap_or(0), 0);
    assert!(status.completion_time.is_none());
    let left = live_pods(&pods, "job-name=doomed").await;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|p| pod_phase(p) == "Failed"));
}

// ---------------------------------------------------------------------------------------------
// garbage collection

async fn deployment_with_pods(client: &Client, namespace: &str, name: &str, n: usize) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    deployments
        .create(
            &PostParams::default(),
            &deployment(name, i32::try_from(n).unwrap()),
        )
        .await
        .unwrap();
    wait_for(&format!("{n} pods of {name}"), async || {
        (live_pods(&pods, &format!("app={name}")).await.len() == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_deletes_its_pods() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    deployment_with_pods(&client, "default", "web", 3).await;
    deployment_with_pods(&client, "default", "other", 1).await;

    deployments
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("web and its pods to be gone", async || {
        let gone = deployments.get_opt("web").await.unwrap().is_none();
        let all = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        (gone && all.items.is_empty()).then_some(())
    })
    .await;
    assert_eq!(live_pods(&pods, "app=other").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_keeps_the_deployment_until_its_pods_are_gone() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    deployment_with_pods(&client, "default", "web", 3).await;

    let response = deployments
        .delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    let marked = response
        .left()
        .expect("a foreground delete returns the object being deleted");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        marked
            .finalizers()
            .contains(&"foregroundDeletion".to_owned())
    );

    // While the Deployment is still there, it is marked; once it is gone, so are its pods.
    wait_for("web to be gone", async || {
        match deployments.get_opt("web").await.unwrap() {
            Some(d) => {
                assert!(d.metadata.deletion_timestamp.is_some());
                assert!(d.finalizers().contains(&"foregroundDeletion".to_owned()));
                None
            }
            None => Some(()),
        }
    })
    .await;
    let left = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "pods outlived their foreground-deleted owner: {:?}",
        names(&left.items)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_leaves_the_pods_without_owner_references() {
    let (_sim, client) = start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    deployment_with_pods(&client, "default", "web", 2).await;
    let before = names(&live_pods(&pods, "app=web").await);

    deployments
        .delete("web", &DeleteParams::orphan())
        .await
        .unwrap();
    wait_for("web to be gone", async || {
        deployments
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // A dependent of an owner that never existed: once the garbage collector has removed it,
    // it has had its chance at the orphans too.
    let sentinel: ConfigMap = from_json(json!({
        "metadata": {"name": "sentinel", "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "ghost",
            "uid": "00000000-0000-0000-0000-000000000000"
        }]}
    }));
    config_maps
        .create(&PostParams::default(), &sentinel)
        .await
        .unwrap();
    wait_for("the garbage collector to remove the sentinel", async || {
        config_maps
            .get_opt("sentinel")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    let orphans = live_pods(&pods, "app=web").await;
    assert_eq!(names(&orphans), before);
    for pod in &orphans {
        assert!(
            pod.owner_references().is_empty(),
            "{}: {:?}",
            pod.name_any(),
            pod.owner_references()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_the_objects_in_it() {
    let (_sim, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "scratch"}})),
        )
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "scratch");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "scratch");
    config_maps
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "settings"}, "data": {"k": "v"}})),
        )
        .await
        .unwrap();
    deployment_with_pods(&client, "scratch", "web", 2).await;
    // Something elsewhere, which must stay.
    let kept: Api<ConfigMap> = Api::default_namespaced(client.clone());
    kept.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "settings"}})),
    )
    .await
    .unwrap();

    namespaces
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    let lp = ListParams::default();
    wait_for("scratch and everything in it to be gone", async || {
        let gone = namespaces.get_opt("scratch").await.unwrap().is_none()
            && config_maps.list(&lp).await.unwrap().items.is_empty()
            && deployments.list(&lp).await.unwrap().items.is_empty()
            && pods.list(&lp).await.unwrap().items.is_empty();
        gone.then_some(())
    })
    .await;
    assert!(kept.get_opt("settings").await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// HorizontalPodAutoscaler

fn hpa(name: &str, target: &str) -> HorizontalPodAutoscaler {
    from_json(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": 1,
            "maxReplicas": 10,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 100}
            }}],
            "behavior": {"scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 100, "periodSeconds": 1}]
            }}
        }
    }))
}

/// `(status, reason)` of an HPA condition.
fn hpa_condition(hpa: &HorizontalPodAutoscaler, type_: &str) -> Option<(String, String)> {
    hpa.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

fn condition_is(hpa: &HorizontalPodAutoscaler, type_: &str, status: &str, reason: &str) -> bool {
    hpa_condition(hpa, type_) == Some((status.to_owned(), reason.to_owned()))
}

/// Events about the object named `name` with `reason`, as `(type, message)`.
async fn events_about(client: &Client, name: &str, reason: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::default_namespaced(client.clone());
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason)
        })
        .map(|e| (e.type_.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// A simulator with a fast HPA sync, and a Deployment `cpu` of 2 ready pods, each requesting
/// 100m cpu and using 300m.
async fn start_with_busy_deployment() -> (kube_sim::KubeSim, Client) {
    let (sim, client) = start_with(kube_sim::Config {
        hpa_sync_period: Duration::from_millis(200),
        ..kube_sim::Config::default()
    })
    .await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let annotations = json!({"kube-sim.keda.sh/pod-usage": "cpu=300m"});
    let resources = json!({"requests": {"cpu": "100m"}});
    deployments
        .create(
            &PostParams::default(),
            &deployment_with("cpu", 2, &annotations, &resources),
        )
        .await
        .unwrap();
    wait_for_deployment_status(&deployments, "cpu", (2, 2, 2)).await;
    (sim, client)
}

/// At 300% of a 100% target, 2 replicas become ceil(2 × 3) = 6; at 6 the pods still run at
/// 300%, so the next step, ceil(6 × 3) = 18, is capped at maxReplicas 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_scales_a_deployment_on_cpu_utilization() {
    let (_sim, client) = start_with_busy_deployment().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let hpas: Api<HorizontalPodAutoscaler> = Api::default_namespaced(client.clone());
    let history = record(deployments.clone(), named_config("cpu")).await;
    hpas.create(&PostParams::default(), &hpa("cpu", "cpu"))
        .await
        .unwrap();

    let limited = wait_for("the HPA to reach maxReplicas with all pods", async || {
        let h = hpas.get("cpu").await.unwrap();
        let status = h.status.clone()?;
        let at_max = status.desired_replicas == 10 && status.current_replicas == Some(10);
        (at_max && condition_is(&h, "ScalingLimited", "True", "TooManyReplicas")).then_some(h)
    })
    .await;
    wait_for_deployment_status(&deployments, "cpu", (10, 10, 10)).await;

    let status = limited.status.clone().unwrap();
    let metrics = status.current_metrics.unwrap_or_default();
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    assert_eq!(metrics[0].type_, "Resource");
    let resource = metrics[0].resource.as_ref().unwrap();
    assert_eq!(resource.name, "cpu");
    assert_eq!(resource.current.average_utilization, Some(300));
    assert!(status.last_scale_time.is_some());
    assert_eq!(
        hpa_condition(&limited, "AbleToScale").map(|(s, _)| s),
        Some("True".to_owned())
    );
    assert!(condition_is(
        &limited,
        "ScalingActive",
        "True",
        "ValidMetricFound"
    ));

    // The replica counts the Deployment went through: 2, then 6, then up to 10.
    let mut steps: Vec<i32> = history
        .applied()
        .iter()
        .filter_map(|d| d.spec.as_ref().and_then(|s| s.replicas))
        .collect();
    steps.dedup();
    assert_eq!(
        steps.get(..2),
        Some(&[2, 6][..]),
        "replicas seen: {steps:?}"
    );
    assert_eq!(steps.last(), Some(&10), "replicas seen: {steps:?}");
    assert!(steps.is_sorted(), "replicas seen: {steps:?}");

    let rescales = events_about(&client, "cpu", "SuccessfulRescale").await;
    assert!(
        rescales
            .iter()
            .any(|(t, m)| t == "Normal" && m.starts_with("New size: 6; reason: ")),
        "{rescales:?}"
    );
    assert!(
        rescales
            .iter()
            .any(|(_, m)| m.starts_with("New size: 10; reason: ")),
        "{rescales:?}"
    );
}

/// The controller manager names a Utilization target's metric
/// `cpu resource utilization (percentage of request)` in its rescale reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_rescale_event_names_the_metric_like_the_controller_manager() {
    let (_sim, client) = start_with_busy_deployment().await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::default_namespaced(client.clone());
    hpas.create(&PostParams::default(), &hpa("cpu", "cpu"))
        .await
        .unwrap();
    let rescales = wait_for("a SuccessfulRescale event", async || {
        let found = events_about(&client, "cpu", "SuccessfulRescale").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(
        rescales[0].1,
        "New size: 6; reason: cpu resource utilization (percentage of request) above target"
    );
    let active = wait_for("ScalingActive=True", async || {
        let h = hpas.get("cpu").await.unwrap();
        let conditions = h.status?.conditions?;
        conditions
            .into_iter()
            .find(|c| c.type_ == "ScalingActive" && c.status == "True")
    })
    .await;
    assert_eq!(
        active.message.as_deref(),
        Some(
            "the HPA was able to successfully calculate a replica count from cpu resource \
             utilization (percentage of request)"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_does_nothing_while_its_target_has_zero_replicas() {
    let (_sim, client) = start_with(kube_sim::Config {
        hpa_sync_period: Duration::from_millis(200),
        ..kube_sim::Config::default()
    })
    .await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let hpas: Api<HorizontalPodAutoscaler> = Api::default_namespaced(client.clone());
    let annotations = json!({"kube-sim.keda.sh/pod-usage": "cpu=300m"});
    let resources = json!({"requests": {"cpu": "100m"}});
    deployments
        .create(
            &PostParams::default(),
            &deployment_with("idle", 0, &annotations, &resources),
        )
        .await
        .unwrap();
    hpas.create(&PostParams::default(), &hpa("idle", "idle"))
        .await
        .unwrap();

    let disabled = wait_for("ScalingActive=False/ScalingDisabled", async || {
        let h = hpas.get("idle").await.unwrap();
        condition_is(&h, "ScalingActive", "False", "ScalingDisabled").then_some(h)
    })
    .await;
    assert_eq!(
        hpa_condition(&disabled, "AbleToScale").map(|(s, _)| s),
        Some("True".to_owned())
    );
    let status = disabled.status.clone().unwrap();
    assert_eq!(status.desired_replicas, 0);
    assert_eq!(status.current_replicas.unwrap_or(0), 0);
    assert!(status.last_scale_time.is_none());

    let idle = deployments.get("idle").await.unwrap();
    assert_eq!(idle.spec.and_then(|s| s.replicas), Some(0));
    assert!(live_pods(&pods, "app=idle").await.is_empty());
    assert!(
        events_about(&client, "idle", "SuccessfulRescale")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_without_its_target_reports_failed_get_scale() {
    let (_sim, client) = start_with(kube_sim::Config {
        hpa_sync_period: Duration::from_millis(200),
        ..kube_sim::Config::default()
    })
    .await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::default_namespaced(client.clone());
    hpas.create(&PostParams::default(), &hpa("lost", "missing"))
        .await
        .unwrap();
    wait_for("AbleToScale=False/FailedGetScale", async || {
        let h = hpas.get("lost").await.unwrap();
        condition_is(&h, "AbleToScale", "False", "FailedGetScale").then_some(())
    })
    .await;
    let warnings = wait_for("a FailedGetScale event", async || {
        let found = events_about(&client, "lost", "FailedGetScale").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert!(warnings.iter().all(|(t, _)| t == "Warning"), "{warnings:?}");
    assert!(warnings[0].1.contains("missing"), "{warnings:?}");
}

/// The controller manager reports the target's not-found error as the API gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_failed_get_scale_reports_the_not_found_error_like_the_controller_manager() {
    let (_sim, client) = start_with(kube_sim::Config {
        hpa_sync_period: Duration::from_millis(200),
        ..kube_sim::Config::default()
    })
    .await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::default_namespaced(client.clone());
    hpas.create(&PostParams::default(), &hpa("lost", "missing"))
        .await
        .unwrap();
    let able = wait_for("AbleToScale=False", async || {
        let h = hpas.get("lost").await.unwrap();
        let conditions = h.status?.conditions?;
        conditions
            .into_iter()
            .find(|c| c.type_ == "AbleToScale" && c.status == "False")
    })
    .await;
    assert_eq!(
        able.message.as_deref(),
        Some(
            "the HPA controller was unable to get the target's current scale: \
             deployments.apps \"missing\" not found"
        )
    );
    let warnings = wait_for("a FailedGetScale event", async || {
        let found = events_about(&client, "lost", "FailedGetScale").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(warnings[0].1, "deployments.apps \"missing\" not found");
}
