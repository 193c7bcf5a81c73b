//! Conformance of kube-sim with a real client: the `kube` crate (client and runtime), as
//! keda-rs uses it. Each test starts its own simulator and checks the semantics a real
//! apiserver has: lists and pagination, optimistic concurrency, the four patch types, the
//! status and scale subresources, generation, finalizers, watches (list-then-watch and
//! streaming lists), controllers, and custom resources with schema defaulting and validation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use keda_operator_crd::{FallbackBehavior, ScaledObject};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

/// The longest any bounded wait in these tests lasts.
const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (kube_sim::KubeSim, Client) {
    let sim = kube_sim::start(kube_sim::Config::default()).await.unwrap();
    let config = kube::Config::new(sim.url().parse().unwrap());
    let client = Client::try_from(config).unwrap();
    (sim, client)
}

/// The `Status` of a request that must have failed with an API error.
#[track_caller]
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `condition` until it holds, for at most [`WAIT`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn deployment(name: &str, app: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}
            }
        }
    }))
    .unwrap()
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": data,
    }))
    .unwrap()
}

fn names<K: ResourceExt>(items: &[K]) -> Vec<String> {
    items.iter().map(ResourceExt::name_any).collect()
}

fn container_names(d: &Deployment) -> Vec<(String, String)> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

fn status_replicas(d: &Deployment) -> Option<i32> {
    d.status.as_ref().and_then(|s| s.replicas)
}

// ---------------------------------------------------------------------------------------------
// lists

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_label_selector_returns_only_matching_objects() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let pp = PostParams::default();
    for (name, app) in [
        ("a1", "a"),
        ("b1", "b"),
        ("a2", "a"),
        ("c1", "c"),
        ("a3", "a"),
    ] {
        api.create(&pp, &deployment(name, app, 1)).await.unwrap();
    }
    let list = api
        .list(&ListParams::default().labels("app=a"))
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["a1", "a2", "a3"]);
    let list = api
        .list(&ListParams::default().labels("app notin (a,b)"))
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["c1"]);
    let list = api
        .list(&ListParams::default().labels("app!=a"))
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["b1", "c1"]);
    let list = api
        .list(&ListParams::default().fields("metadata.name=b1"))
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["b1"]);
    let list = api
        .list(&ListParams::default().labels("missing"))
        .await
        .unwrap();
    assert!(list.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_every_object_with_continue_tokens() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let pp = PostParams::default();
    for name in ["e", "b", "d", "a", "c"] {
        api.create(&pp, &deployment(name, name, 1)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(2);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages.push((page.items.len(), page.metadata.remaining_item_count));
        seen.extend(names(&page.items));
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, [(2, Some(3)), (2, Some(1)), (1, None)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn paginated_list_is_a_consistent_snapshot() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PostParams::default();
    for name in ["a", "b", "c"] {
        api.create(&pp, &config_map(name, &[])).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(&first.items), ["a", "b"]);
    api.create(&pp, &config_map("d", &[])).await.unwrap();
    api.delete("c", &DeleteParams::default()).await.unwrap();
    let token = first.metadata.continue_.unwrap();
    let rest = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&rest.items), ["c"]);
    assert_eq!(
        rest.metadata.resource_version, first.metadata.resource_version,
        "every page carries the snapshot's resourceVersion"
    );
}

// ---------------------------------------------------------------------------------------------
// optimistic concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_with_a_stale_resource_version_is_a_conflict() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let created = api
        .create(
            &PostParams::default(),
            &config_map("settings", &[("mode", "a")]),
        )
        .await
        .unwrap();
    api.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"mode": "b"}})),
    )
    .await
    .unwrap();

    let mut stale = created.clone();
    stale.data = Some([("mode".to_owned(), "c".to_owned())].into());
    let status = api_error(
        api.replace("settings", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.message,
        "Operation cannot be fulfilled on configmaps \"settings\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let details = status.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("settings", "configmaps")
    );
    let live = api.get("settings").await.unwrap();
    assert_eq!(live.data.unwrap()["mode"], "b");

    // The same replace with the current resourceVersion succeeds and bumps it.
    let current = api.get("settings").await.unwrap();
    let mut fresh = current.clone();
    fresh.data = Some([("mode".to_owned(), "c".to_owned())].into());
    let replaced = api
        .replace("settings", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(replaced.data.unwrap()["mode"], "c");
    assert_ne!(
        replaced.metadata.resource_version,
        current.metadata.resource_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_deployment_with_a_stale_resource_version_is_a_conflict() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let created = api
        .create(&PostParams::default(), &deployment("web", "web", 1))
        .await
        .unwrap();
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let mut stale = created;
    stale.spec.as_mut().unwrap().replicas = Some(5);
    let status = api_error(api.replace("web", &PostParams::default(), &stale).await);
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            409,
            "Conflict",
            "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
        )
    );
    let details = status.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("web", "apps", "deployments")
    );
    assert_eq!(replicas(&api.get("web").await.unwrap()), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_twice_is_already_exists_and_getting_a_missing_object_is_not_found() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &deployment("web", "web", 1))
        .await
        .unwrap();
    let status = api_error(
        api.create(&PostParams::default(), &deployment("web", "web", 1))
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            409,
            "AlreadyExists",
            "deployments.apps \"web\" already exists"
        )
    );
    let status = api_error(api.get("nope").await);
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (404, "NotFound", "deployments.apps \"nope\" not found")
    );
    assert!(api.get_opt("nope").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_patch_keeps_the_resource_version() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let created = api
        .create(
            &PostParams::default(),
            &config_map("settings", &[("mode", "a")]),
        )
        .await
        .unwrap();
    let patched = api
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"mode": "a"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.resource_version,
        created.metadata.resource_version
    );
}

// ---------------------------------------------------------------------------------------------
// patches

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_patch_replaces_lists_and_deletes_nulls() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &deployment("web", "web", 1))
        .await
        .unwrap();
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"labels": {"tier": "front"}},
                "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox:1"}]}}}
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        container_names(&patched),
        [("sidecar".to_owned(), "busybox:1".to_owned())]
    );
    assert_eq!(patched.labels()["tier"], "front");
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": null}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.labels().keys().collect::<Vec<_>>(),
        ["app"],
        "null deletes the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_applies_operations_and_a_failed_test_is_invalid() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &deployment("web", "web", 1))
        .await
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/annotations", "value": {"owner": "team-a"}}
    ]))
    .unwrap();
    let patched = api
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .unwrap();
    assert_eq!(replicas(&patched), Some(4));
    assert_eq!(patched.annotations()["owner"], "team-a");

    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 9},
        {"op": "replace", "path": "/spec/replicas", "value": 1}
    ]))
    .unwrap();
    let status = api_error(
        api.patch("web", &PatchParams::default(), &Patch::Json::<()>(failing))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(replicas(&api.get("web").await.unwrap()), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patch_merges_containers_by_name() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &deployment("web", "web", 1))
        .await
        .unwrap();
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox:1"}]}}}
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        container_names(&patched),
        [
            ("app".to_owned(), "nginx:1.25".to_owned()),
            ("sidecar".to_owned(), "busybox:1".to_owned())
        ]
    );
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        container_names(&patched),
        [("app".to_owned(), "nginx:1.25".to_owned())]
    );
}

fn managers_of(object: &impl serde::Serialize, field: &str) -> Vec<String> {
    let value = serde_json::to_value(object).unwrap();
    value["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["fieldsV1"]["f:spec"].get(field).is_some())
        .map(|e| e["manager"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_creates_conflicts_and_forces() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let mut desired = serde_json::to_value(deployment("web", "web", 2)).unwrap();
    let created = api
        .patch("web", &PatchParams::apply("mgr-a"), &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_eq!(replicas(&created), Some(2));
    assert_eq!(managers_of(&created, "f:replicas"), ["mgr-a"]);

    desired["spec"]["replicas"] = json!(5);
    let status = api_error(
        api.patch("web", &PatchParams::apply("mgr-b"), &Patch::Apply(&desired))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status
            .message
            .contains(r#"Apply failed with 1 conflict: conflict with "mgr-a": .spec.replicas"#),
        "{}",
        status.message
    );
    assert_eq!(replicas(&api.get("web").await.unwrap()), Some(2));

    let forced = api
        .patch(
            "web",
            &PatchParams::apply("mgr-b").force(),
            &Patch::Apply(&desired),
        )
        .await
        .unwrap();
    assert_eq!(replicas(&forced), Some(5));
    assert_eq!(managers_of(&forced, "f:replicas"), ["mgr-b"]);
    let mut shared = managers_of(&forced, "f:template");
    shared.sort();
    assert_eq!(shared, ["mgr-a", "mgr-b"], "equal values are co-owned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflict_is_reported_like_the_apiserver() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let mut desired = serde_json::to_value(deployment("web", "web", 2)).unwrap();
    api.patch("web", &PatchParams::apply("mgr-a"), &Patch::Apply(&desired))
        .await
        .unwrap();
    desired["spec"]["replicas"] = json!(5);
    let status = api_error(
        api.patch("web", &PatchParams::apply("mgr-b"), &Patch::Apply(&desired))
            .await,
    );
    assert_eq!(
        status.message,
        r#"Apply failed with 1 conflict: conflict with "mgr-a": .spec.replicas"#
    );
    let causes: Vec<(String, String, String)> = status
        .details
        .map(|d| d.causes)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.reason, c.message, c.field))
        .collect();
    assert_eq!(
        causes,
        [(
            "FieldManagerConflict".to_owned(),
            r#"conflict with "mgr-a""#.to_owned(),
            ".spec.replicas".to_owned()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_removes_fields_the_manager_stopped_applying() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PatchParams::apply("mgr-a");
    let both = config_map("settings", &[("a", "1"), ("b", "2")]);
    api.patch("settings", &pp, &Patch::Apply(&both))
        .await
        .unwrap();
    // Another manager's field survives mgr-a's applies.
    api.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"c": "3"}})),
    )
    .await
    .unwrap();
    let only_a = config_map("settings", &[("a", "1")]);
    let applied = api
        .patch("settings", &pp, &Patch::Apply(&only_a))
        .await
        .unwrap();
    let data = applied.data.unwrap();
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a", "c"]);
}

// ---------------------------------------------------------------------------------------------
// status, scale, generation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_patch_ignores_spec_and_main_patch_ignores_status() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &deployment("web", "web", 2))
        .await
        .unwrap();

    let patched = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"replicas": 99}})),
        )
        .await
        .unwrap();
    assert_eq!(
        replicas(&patched),
        Some(2),
        "the status subresource ignores spec"
    );
    assert_eq!(status_replicas(&patched), Some(99));
    assert_eq!(patched.metadata.generation, Some(1));

    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}, "status": {"replicas": 77}})),
        )
        .await
        .unwrap();
    assert_eq!(replicas(&patched), Some(3));
    assert_ne!(
        status_replicas(&patched),
        Some(77),
        "the main resource ignores status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_bumps_on_spec_changes_only() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let pp = PatchParams::default();
    let created = api
        .create(&PostParams::default(), &deployment("web", "web", 1))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let after_label = api
        .patch(
            "web",
            &pp,
            &Patch::Merge(
                json!({"metadata": {"labels": {"tier": "front"}, "annotations": {"a": "b"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(after_label.metadata.generation, Some(1));
    let after_status = api
        .patch_status(
            "web",
            &pp,
            &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(after_status.metadata.generation, Some(1));
    let after_spec = api
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .unwrap();
    assert_eq!(after_spec.metadata.generation, Some(2));
    let same_spec = api
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .unwrap();
    assert_eq!(same_spec.metadata.generation, Some(2));

    let cm: Api<ConfigMap> = Api::default_namespaced(api.clone().into_client());
    let created = cm
        .create(&PostParams::default(), &config_map("plain", &[("k", "v")]))
        .await
        .unwrap();
    assert_eq!(
        created.metadata.generation, None,
        "ConfigMaps have no generation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_subresource_reads_and_writes_replicas() {
    let (_sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &deployment("web", "web", 2))
        .await
        .unwrap();
    let scale = api.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(
        scale.status.as_ref().and_then(|s| s.selector.as_deref()),
        Some("app=web")
    );
    assert_eq!(scale.metadata.name.as_deref(), Some("web"));

    let scaled = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 6}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(6));
    let live = api.get("web").await.unwrap();
    assert_eq!(replicas(&live), Some(6));
    assert_eq!(live.metadata.generation, Some(2));

    let status = api_error(
        api.patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            422,
            "Invalid",
            "Scale.autoscaling \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        )
    );
    let status = api_error(api.get_scale("nope").await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "deployments.apps \"nope\" not found")
    );
}

// ---------------------------------------------------------------------------------------------
// deletion

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_a_finalizer_waits_until_the_finalizer_is_removed() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut held = config_map("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".to_owned()]);
    api.create(&PostParams::default(), &held).await.unwrap();

    let deleted = api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = deleted
        .left()
        .expect("a held object is returned, not a Status");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let live = api.get("held").await.unwrap();
    assert!(live.metadata.deletion_timestamp.is_some());
    assert_eq!(
        live.metadata.finalizers.as_deref(),
        Some(&["example.com/hold".to_owned()][..])
    );
    // Deleting again changes nothing.
    api.delete("held", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        api.get("held").await.unwrap().metadata.deletion_timestamp,
        live.metadata.deletion_timestamp
    );

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let status = api_error(api.get("held").await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "configmaps \"held\" not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_a_stale_precondition_is_a_conflict() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let created = api
        .create(
            &PostParams::default(),
            &config_map("settings", &[("a", "1")]),
        )
        .await
        .unwrap();
    api.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: created.metadata.resource_version.clone(),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    let status = api_error(api.delete("settings", &dp).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(api.get("settings").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn no_finalizer_can_be_added_to_an_object_being_deleted() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut held = config_map("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/a".to_owned()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let status = api_error(
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/a", "example.com/b"]}})),
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        status.message
    );
}

// ---------------------------------------------------------------------------------------------
// watches

fn describe(event: &watcher::Event<ConfigMap>) -> String {
    match event {
        watcher::Event::Init => "Init".to_owned(),
        watcher::Event::InitApply(o) => format!("InitApply({})", o.name_any()),
        watcher::Event::InitDone => "InitDone".to_owned(),
        watcher::Event::Apply(o) => format!(
            "Apply({}:{})",
            o.name_any(),
            o.data
                .as_ref()
                .and_then(|d| d.get("v"))
                .map_or("", String::as_str)
        ),
        watcher::Event::Delete(o) => format!("Delete({})", o.name_any()),
    }
}

/// Reads as many events as `expected` has, each within [`WAIT`], and compares.
async fn expect_events<S>(stream: &mut S, expected: &[&str])
where
    S: Stream<Item = watcher::Result<watcher::Event<ConfigMap>>> + Unpin,
{
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let Ok(next) = tokio::time::timeout(WAIT, stream.next()).await else {
            panic!("expected {expected:?}, got only {seen:?} within the wait");
        };
        let event = next
            .expect("the watcher stream ended")
            .expect("watcher error");
        seen.push(describe(&event));
    }
    assert_eq!(seen, expected);
}

/// Runs the same script through a watcher with `config`: an initial list of two objects, then
/// a create, an update and a delete.
async fn watcher_sees_initial_objects_then_changes(config: watcher::Config) {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PostParams::default();
    api.create(&pp, &config_map("a", &[("v", "1")]))
        .await
        .unwrap();
    api.create(&pp, &config_map("b", &[("v", "1")]))
        .await
        .unwrap();

    let mut stream = watcher(api.clone(), config).boxed();
    expect_events(
        &mut stream,
        &["Init", "InitApply(a)", "InitApply(b)", "InitDone"],
    )
    .await;

    api.create(&pp, &config_map("c", &[("v", "1")]))
        .await
        .unwrap();
    expect_events(&mut stream, &["Apply(c:1)"]).await;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    expect_events(&mut stream, &["Apply(a:2)"]).await;
    api.delete("b", &DeleteParams::default()).await.unwrap();
    expect_events(&mut stream, &["Delete(b)"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_then_watch_watcher_sees_initial_objects_then_changes() {
    watcher_sees_initial_objects_then_changes(watcher::Config::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_sees_initial_events_then_changes() {
    watcher_sees_initial_objects_then_changes(watcher::Config::default().streaming_lists()).await;
}

/// Objects leaving a watch's label selector are reported as deleted, entering it as added.
async fn label_selector_watch_reports_objects_leaving_it_as_deletes(config: watcher::Config) {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut tagged = config_map("a", &[("v", "1")]);
    tagged.metadata.labels = Some([("watched".to_owned(), "yes".to_owned())].into());
    api.create(&PostParams::default(), &tagged).await.unwrap();
    api.create(&PostParams::default(), &config_map("other", &[]))
        .await
        .unwrap();

    let mut stream = watcher(api.clone(), config.labels("watched=yes")).boxed();
    expect_events(&mut stream, &["Init", "InitApply(a)", "InitDone"]).await;

    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watched": "no"}}})),
    )
    .await
    .unwrap();
    expect_events(&mut stream, &["Delete(a)"]).await;
    api.patch(
        "other",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watched": "yes"}}, "data": {"v": "3"}})),
    )
    .await
    .unwrap();
    expect_events(&mut stream, &["Apply(other:3)"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn list_then_watch_with_a_label_selector_reports_objects_leaving_it_as_deletes() {
    label_selector_watch_reports_objects_leaving_it_as_deletes(watcher::Config::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_with_a_label_selector_reports_objects_leaving_it_as_deletes() {
    label_selector_watch_reports_objects_leaving_it_as_deletes(
        watcher::Config::default().streaming_lists(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumed_from_a_list_resource_version_replays_later_changes() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &config_map("before", &[]))
        .await
        .unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &config_map("after", &[]))
        .await
        .unwrap();
    api.delete("before", &DeleteParams::default())
        .await
        .unwrap();

    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("no watch event within the wait")
            .expect("the watch ended")
            .unwrap();
        match event {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.name_any())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.name_any())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.name_any())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED after", "DELETED before"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_resource_version_older_than_the_history_is_gone() {
    let (sim, client) = start().await;
    // Fill the change history past its bound (`kube_sim::store::HISTORY` changes) directly in
    // the store: through HTTP this would take minutes.
    let key = kube_sim::resources::ResourceKey {
        group: String::new(),
        plural: "configmaps".to_owned(),
    };
    let store = &sim.sim.cluster.store;
    let object = |n: usize| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "churn", "namespace": "default"},
               "data": {"n": n.to_string()}})
    };
    store.create(&key, object(0)).unwrap();
    for n in 1..=kube_sim::store::HISTORY + 1 {
        store.update(&key, object(n), None).unwrap();
    }

    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let status = match api.watch(&WatchParams::default().timeout(30), "1").await {
        Err(kube::Error::Api(status)) => *status,
        Ok(stream) => {
            let mut stream = stream.boxed();
            let first = tokio::time::timeout(WAIT, stream.next())
                .await
                .expect("no watch event within the wait")
                .expect("the watch ended")
                .unwrap();
            match first {
                WatchEvent::Error(status) => *status,
                other => panic!("expected a 410 ERROR event, got {other:?}"),
            }
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(
        status.message.starts_with("too old resource version: 1"),
        "{}",
        status.message
    );
}

/// A raw GET through the client, returning the body or the API error.
async fn raw_get(client: &Client, path: &str) -> kube::Result<String> {
    let request = axum::http::Request::get(path).body(Vec::new()).unwrap();
    client.request_text(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resource_versions_far_back_are_replayed_and_non_numeric_ones_are_refused() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &config_map("early", &[]))
        .await
        .unwrap();

    let status = api_error(
        raw_get(
            &client,
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=abc",
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));

    // From the very first version, the whole (short) history is replayed.
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), "1")
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no watch event within the wait")
        .expect("the watch ended")
        .unwrap();
    match first {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "early"),
        other => panic!("expected ADDED early, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_initial_events_requires_bookmarks() {
    let (_sim, client) = start().await;
    let status = api_error(
        raw_get(
            &client,
            "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .contains("allowWatchBookmarks must be set to true when sendInitialEvents is set"),
        "{}",
        status.message
    );
}

// ---------------------------------------------------------------------------------------------
// controllers

type Counts = Mutex<HashMap<String, usize>>;

#[allow(
    clippy::unused_async,
    reason = "the controller takes a reconciler returning a future"
)]
async fn count_reconcile(
    object: Arc<ConfigMap>,
    counts: Arc<Counts>,
) -> Result<Action, Infallible> {
    *counts.lock().unwrap().entry(object.name_any()).or_default() += 1;
    Ok(Action::await_change())
}

fn count(counts: &Counts, name: &str) -> usize {
    counts.lock().unwrap().get(name).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_reconciles_config_maps_when_they_change() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PostParams::default();
    api.create(&pp, &config_map("steady", &[("v", "1")]))
        .await
        .unwrap();

    let counts = Arc::new(Counts::default());
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(
            count_reconcile,
            |_, error: &Infallible, _| match *error {},
            counts.clone(),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    eventually("the initial reconcile of steady", || {
        count(&counts, "steady") >= 1
    })
    .await;
    api.create(&pp, &config_map("alpha", &[("v", "1")]))
        .await
        .unwrap();
    eventually("alpha reconciled after its creation", || {
        count(&counts, "alpha") >= 1
    })
    .await;
    let after_create = count(&counts, "alpha");
    api.patch(
        "alpha",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    eventually("alpha reconciled after its update", || {
        count(&counts, "alpha") > after_create
    })
    .await;
    assert_eq!(
        count(&counts, "steady"),
        1,
        "an object that did not change is reconciled once"
    );
    task.abort();
}

// ---------------------------------------------------------------------------------------------
// custom resources

async fn install_scaled_object_crd(client: &Client) -> Api<ScaledObject> {
    support::crds::install(client, &ScaledObject::crd()).await;
    Api::default_namespaced(client.clone())
}

fn scaled_object(name: &str, spec: &Value) -> ScaledObject {
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn cpu_spec() -> Value {
    json!({
        "scaleTargetRef": {"name": "web"},
        "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_objects_are_served_with_schema_defaults() {
    let (_sim, client) = start().await;
    let api = install_scaled_object_crd(&client).await;
    let pp = PostParams::default();

    let mut spec = cpu_spec();
    spec["fallback"] = json!({"failureThreshold": 3, "replicas": 5});
    let created = api
        .create(&pp, &scaled_object("with-fallback", &spec))
        .await
        .unwrap();
    let fallback = created.spec.fallback.as_ref().unwrap();
    assert_eq!(fallback.behavior, Some(FallbackBehavior::Static));
    assert_eq!((fallback.failure_threshold, fallback.replicas), (3, 5));
    assert_eq!(created.metadata.generation, Some(1));

    api.create(&pp, &scaled_object("plain", &cpu_spec()))
        .await
        .unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list.items), ["plain", "with-fallback"]);
    assert!(
        list.items[0].spec.fallback.is_none(),
        "no default for an absent parent"
    );
    let stored = api.get("with-fallback").await.unwrap();
    assert_eq!(
        stored.spec.fallback.unwrap().behavior,
        Some(FallbackBehavior::Static)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_scaled_objects_are_refused_with_422() {
    let (_sim, client) = start().await;
    let api = install_scaled_object_crd(&client).await;
    let mut spec = cpu_spec();
    spec["minReplicaCount"] = json!(-1);
    let status = api_error(
        api.create(&PostParams::default(), &scaled_object("bad", &spec))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.starts_with(
            "ScaledObject.keda.sh \"bad\" is invalid: spec.minReplicaCount: Invalid value: -1: "
        ),
        "{}",
        status.message
    );
    let details = status.details.unwrap();
    assert_eq!(
        (
            details.kind.as_str(),
            details.group.as_str(),
            details.name.as_str()
        ),
        ("ScaledObject", "keda.sh", "bad")
    );
    let fields: Vec<&str> = details.causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["spec.minReplicaCount"]);

    // A value outside the enum cannot be held by the typed ScaledObject: send it dynamically.
    let dynamic: Api<DynamicObject> =
        Api::default_namespaced_with(client.clone(), &ApiResource::erase::<ScaledObject>(&()));
    let mut spec = cpu_spec();
    spec["fallback"] = json!({"failureThreshold": 3, "replicas": 5, "behavior": "sometimes"});
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "bad"},
        "spec": spec,
    }))
    .unwrap();
    let status = api_error(dynamic.create(&PostParams::default(), &object).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .contains("spec.fallback.behavior: Unsupported value: \"sometimes\"")
            || status
                .message
                .contains("spec.fallback.behavior: Invalid value: \"sometimes\""),
        "{}",
        status.message
    );
    assert!(api.get_opt("bad").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn cel_rule_refuses_min_replica_count_above_max() {
    let (_sim, client) = start().await;
    let api = install_scaled_object_crd(&client).await;
    let mut spec = cpu_spec();
    spec["minReplicaCount"] = json!(5);
    spec["maxReplicaCount"] = json!(2);
    let status = api_error(
        api.create(&PostParams::default(), &scaled_object("inverted", &spec))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .contains("minReplicaCount must be less than or equal to maxReplicaCount"),
        "{}",
        status.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patch_of_a_custom_resource_is_unsupported_media_type() {
    let (_sim, client) = start().await;
    let api = install_scaled_object_crd(&client).await;
    api.create(&PostParams::default(), &scaled_object("so", &cpu_spec()))
        .await
        .unwrap();
    let status = api_error(
        api.patch(
            "so",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"maxReplicaCount": 7}})),
        )
        .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    let patched = api
        .patch(
            "so",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxReplicaCount": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.max_replica_count, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_object_status_is_a_subresource_and_only_spec_bumps_generation() {
    let (_sim, client) = start().await;
    let api = install_scaled_object_crd(&client).await;
    let mut so = scaled_object("so", &cpu_spec());
    so.status = serde_json::from_value(json!({"hpaName": "ignored-on-create"})).unwrap();
    let created = api.create(&PostParams::default(), &so).await.unwrap();
    assert!(created.status.is_none(), "create ignores status");

    let pp = PatchParams::default();
    let patched = api
        .patch_status(
            "so",
            &pp,
            &Patch::Merge(
                json!({"status": {"hpaName": "keda-hpa-so"}, "spec": {"maxReplicaCount": 9}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.hpa_name.as_deref()),
        Some("keda-hpa-so")
    );
    assert_eq!(patched.spec.max_replica_count, None);
    assert_eq!(patched.metadata.generation, Some(1));

    let patched = api
        .patch(
            "so",
            &pp,
            &Patch::Merge(json!({"status": {"hpaName": "other"}, "spec": {"maxReplicaCount": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.max_replica_count, Some(9));
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.hpa_name.as_deref()),
        Some("keda-hpa-so")
    );
    assert_eq!(patched.metadata.generation, Some(2));

    let patched = api
        .patch(
            "so",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
}

/// An empty `metadata.namespace` in a body counts as unset, as in the apiserver (Helm sends
/// its release Secrets that way); a different namespace is still refused.
#[tokio::test]
async fn an_empty_namespace_in_the_body_takes_the_requests_namespace() {
    let (_sim, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let object: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "release", "namespace": ""}, "data": {"k": "v"}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &object).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    let mut other = object.clone();
    other.metadata.name = Some("elsewhere".into());
    other.metadata.namespace = Some("kube-system".into());
    assert_eq!(
        api_error(api.create(&PostParams::default(), &other).await).code,
        400
    );
}
