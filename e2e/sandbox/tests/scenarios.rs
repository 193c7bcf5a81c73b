//! End-to-end scenarios: the real `keda-sandbox` binary (kube-sim, operator, metrics server),
//! or a real cluster with keda-rs installed when `KEDA_E2E_KUBECONFIG` is set. Sources are
//! HTTP endpoints the test controls, read by `metrics-api` triggers; replicas come from the
//! HPA's arithmetic on the values the metrics server serves.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Cluster, Source, deployment, metrics_api_trigger, scaled_object};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_api_scales_zero_to_n_and_back_to_zero() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("zero-n-zero").await;
    let source = Source::start(&cluster).await;
    cluster.apply(&ns, deployment("worker", 0)).await;
    cluster
        .apply(
            &ns,
            scaled_object(
                "worker",
                json!([metrics_api_trigger(&source, 5)]),
                json!({}),
            ),
        )
        .await;
    cluster
        .wait_condition(&ns, "worker", "Ready", "True", Some("ScaledObjectReady"))
        .await;
    let hpa = cluster.hpas(&ns).get("keda-hpa-worker").await.unwrap();
    let metric = &hpa.spec.as_ref().unwrap().metrics.as_ref().unwrap()[0];
    assert_eq!(
        metric.external.as_ref().unwrap().metric.name,
        "s0-metric-api-value"
    );
    cluster
        .hold_replicas(&ns, "worker", 0, Duration::from_secs(3))
        .await;

    // 23 messages at 5 per replica: the HPA computes ceil(23 / 5) = 5.
    source.set(23);
    cluster.wait_replicas(&ns, "worker", 5, WAIT).await;
    cluster
        .wait_condition(&ns, "worker", "Active", "True", Some("ScalerActive"))
        .await;
    source.set(7);
    cluster.wait_replicas(&ns, "worker", 2, WAIT).await;
    source.set(0);
    cluster.wait_replicas(&ns, "worker", 0, WAIT).await;
    cluster
        .wait_condition(&ns, "worker", "Active", "False", Some("ScalerNotActive"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_window_scales_to_desired_replicas_and_outside_it_stays_at_zero() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("cron").await;
    cluster.apply(&ns, deployment("inside", 0)).await;
    cluster.apply(&ns, deployment("outside", 0)).await;
    // From January 1st to December 31st 23:59: always inside the window (but at New Year).
    let inside = json!([{"type": "cron", "metadata": {"timezone": "Etc/UTC", "start": "0 0 1 1 *", "end": "59 23 31 12 *", "desiredReplicas": "3"}}]);
    // One minute on January 1st: outside it.
    let outside = json!([{"type": "cron", "metadata": {"timezone": "Europe/Berlin", "start": "0 0 1 1 *", "end": "1 0 1 1 *", "desiredReplicas": "3"}}]);
    cluster
        .apply(&ns, scaled_object("inside", inside, json!({})))
        .await;
    cluster
        .apply(&ns, scaled_object("outside", outside, json!({})))
        .await;
    cluster.wait_replicas(&ns, "inside", 3, WAIT).await;
    cluster
        .wait_condition(&ns, "outside", "Active", "False", None)
        .await;
    cluster
        .hold_replicas(&ns, "outside", 0, Duration::from_secs(3))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_at_replicas_then_unpause() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("pause").await;
    let source = Source::start(&cluster).await;
    source.set(10);
    cluster.apply(&ns, deployment("worker", 0)).await;
    cluster
        .apply(
            &ns,
            scaled_object(
                "worker",
                json!([metrics_api_trigger(&source, 5)]),
                json!({}),
            ),
        )
        .await;
    cluster.wait_replicas(&ns, "worker", 2, WAIT).await;

    cluster
        .annotate(
            &ns,
            "worker",
            json!({"autoscaling.keda.sh/paused-replicas": "4"}),
        )
        .await;
    cluster.wait_replicas(&ns, "worker", 4, WAIT).await;
    cluster
        .wait_condition(&ns, "worker", "Paused", "True", Some("ScaledObjectPaused"))
        .await;
    let so = cluster.scaled_objects(&ns).get("worker").await.unwrap();
    assert_eq!(so.status.unwrap().paused_replica_count, Some(4));
    assert!(
        cluster
            .hpas(&ns)
            .get_opt("keda-hpa-worker")
            .await
            .unwrap()
            .is_none(),
        "the HPA is removed while paused"
    );
    // The Events of the story so far (published right after the status writes they follow).
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(cluster.client.clone(), &ns);
    let wanted = [
        "KEDAScalersStarted",
        "KEDAScaleTargetActivated",
        "ScaledObjectPaused",
        "KEDAScalersStopped",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reasons: Vec<String> = events
            .list(&kube::api::ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        if wanted.iter().all(|w| reasons.iter().any(|r| r == w)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wanted Events {wanted:?}, got {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // While paused, the source no longer matters.
    source.set(40);
    cluster
        .hold_replicas(&ns, "worker", 4, Duration::from_secs(3))
        .await;

    cluster
        .annotate(
            &ns,
            "worker",
            json!({"autoscaling.keda.sh/paused-replicas": null}),
        )
        .await;
    cluster
        .wait_condition(
            &ns,
            "worker",
            "Paused",
            "False",
            Some("ScaledObjectUnpaused"),
        )
        .await;
    cluster.wait_replicas(&ns, "worker", 8, WAIT).await;

    // `paused: true` keeps whatever replicas there are.
    cluster
        .annotate(&ns, "worker", json!({"autoscaling.keda.sh/paused": "true"}))
        .await;
    cluster
        .wait_condition(&ns, "worker", "Paused", "True", None)
        .await;
    source.set(0);
    cluster
        .hold_replicas(&ns, "worker", 8, Duration::from_secs(4))
        .await;
    cluster
        .annotate(&ns, "worker", json!({"autoscaling.keda.sh/paused": null}))
        .await;
    cluster.wait_replicas(&ns, "worker", 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_replicas_when_the_source_fails_never_zero() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("fallback").await;
    let source = Source::start(&cluster).await;
    source.set(10);
    let fallback = json!({"fallback": {"failureThreshold": 3, "replicas": 6}});
    cluster.apply(&ns, deployment("running", 0)).await;
    cluster
        .apply(
            &ns,
            scaled_object(
                "running",
                json!([metrics_api_trigger(&source, 5)]),
                fallback.clone(),
            ),
        )
        .await;
    cluster.wait_replicas(&ns, "running", 2, WAIT).await;

    source.fail(true);
    // failureThreshold × pollingInterval = 3 s, then the HPA's next sync.
    let took = cluster
        .wait_replicas(&ns, "running", 6, Duration::from_secs(15))
        .await;
    println!("fallback replicas reached {took:?} after the source started failing");
    cluster
        .wait_condition(&ns, "running", "Fallback", "True", Some("FallbackExists"))
        .await;
    cluster
        .hold_replicas(&ns, "running", 6, Duration::from_secs(3))
        .await;

    // A workload at zero whose source fails is brought up to the fallback count too.
    cluster.apply(&ns, deployment("idle", 0)).await;
    cluster
        .apply(
            &ns,
            scaled_object("idle", json!([metrics_api_trigger(&source, 5)]), fallback),
        )
        .await;
    cluster
        .wait_replicas(&ns, "idle", 6, Duration::from_secs(20))
        .await;

    source.fail(false);
    source.set(5);
    cluster.wait_replicas(&ns, "running", 1, WAIT).await;
    cluster
        .wait_condition(&ns, "running", "Fallback", "False", Some("NoFallbackFound"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_without_fallback_never_scales_to_zero() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("no-fallback").await;
    let source = Source::start(&cluster).await;
    source.set(10);
    cluster.apply(&ns, deployment("worker", 0)).await;
    cluster
        .apply(
            &ns,
            scaled_object(
                "worker",
                json!([metrics_api_trigger(&source, 5)]),
                json!({}),
            ),
        )
        .await;
    cluster.wait_replicas(&ns, "worker", 2, WAIT).await;
    source.fail(true);
    // Well past the 2 s cooldown: the replicas stay where they were.
    cluster
        .hold_replicas(&ns, "worker", 2, Duration::from_secs(6))
        .await;
    cluster
        .wait_condition(&ns, "worker", "Ready", "False", Some("TriggerError"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_restores_the_original_replica_count() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("restore").await;
    let source = Source::start(&cluster).await;
    cluster.apply(&ns, deployment("worker", 3)).await;
    cluster
        .apply(
            &ns,
            scaled_object(
                "worker",
                json!([metrics_api_trigger(&source, 5)]),
                json!({"advanced": {"restoreToOriginalReplicaCount": true}}),
            ),
        )
        .await;
    cluster.wait_replicas(&ns, "worker", 0, WAIT).await;
    let so = cluster.scaled_objects(&ns).get("worker").await.unwrap();
    assert_eq!(so.status.unwrap().original_replica_count, Some(3));
    cluster.delete_scaled_object(&ns, "worker").await;
    cluster.wait_replicas(&ns, "worker", 3, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster
        .scaled_objects(&ns)
        .get_opt("worker")
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ScaledObject was not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
        .hold_replicas(&ns, "worker", 3, Duration::from_secs(2))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_triggers_scale_to_the_larger_demand() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("two-triggers").await;
    let small = Source::start(&cluster).await;
    let large = Source::start(&cluster).await;
    small.set(10);
    large.set(30);
    cluster.apply(&ns, deployment("worker", 0)).await;
    cluster
        .apply(
            &ns,
            scaled_object(
                "worker",
                json!([
                    metrics_api_trigger(&small, 5),
                    metrics_api_trigger(&large, 5)
                ]),
                json!({}),
            ),
        )
        .await;
    // max(ceil(10 / 5), ceil(30 / 5)) = 6
    cluster.wait_replicas(&ns, "worker", 6, WAIT).await;
    large.set(0);
    cluster.wait_replicas(&ns, "worker", 2, WAIT).await;
    let so = cluster.scaled_objects(&ns).get("worker").await.unwrap();
    assert_eq!(
        so.status.unwrap().external_metric_names,
        Some(vec![
            "s0-metric-api-value".to_owned(),
            "s1-metric-api-value".to_owned()
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_scaled_object_is_not_ready_and_nothing_is_scaled() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("bad").await;
    cluster.apply(&ns, deployment("unknown-type", 2)).await;
    cluster.apply(&ns, deployment("missing-url", 2)).await;
    cluster.apply(&ns, deployment("bounds", 2)).await;
    // (minReplicaCount > maxReplicaCount never gets this far: the CRD's validation refuses it.)
    cluster
        .apply(
            &ns,
            scaled_object(
                "unknown-type",
                json!([{"type": "no-such-scaler", "metadata": {}}]),
                json!({}),
            ),
        )
        .await;
    cluster
        .apply(&ns, scaled_object("missing-url", json!([{"type": "metrics-api", "metadata": {"valueLocation": "value", "targetValue": "5"}}]), json!({})))
        .await;
    cluster
        .apply(&ns, scaled_object("bounds", json!([{"type": "cron", "metadata": {"timezone": "Etc/UTC", "start": "0 0 1 1 *", "end": "59 23 31 12 *", "desiredReplicas": "3"}}]), json!({"minReplicaCount": 2, "idleReplicaCount": 3})))
        .await;
    let ready = cluster
        .wait_condition(
            &ns,
            "unknown-type",
            "Ready",
            "False",
            Some("ScaledObjectCheckFailed"),
        )
        .await;
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("no scaler found for type: no-such-scaler"),
        "{ready}"
    );
    let ready = cluster
        .wait_condition(
            &ns,
            "missing-url",
            "Ready",
            "False",
            Some("ScaledObjectCheckFailed"),
        )
        .await;
    assert!(
        ready["message"].as_str().unwrap().contains("url"),
        "{ready}"
    );
    let ready = cluster
        .wait_condition(
            &ns,
            "bounds",
            "Ready",
            "False",
            Some("ScaledObjectCheckFailed"),
        )
        .await;
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("IdleReplicaCount=3 must be less than MinReplicaCount=2"),
        "{ready}"
    );
    for name in ["unknown-type", "missing-url", "bounds"] {
        cluster
            .hold_replicas(&ns, name, 2, Duration::from_secs(1))
            .await;
        assert!(
            cluster
                .hpas(&ns)
                .get_opt(&format!("keda-hpa-{name}"))
                .await
                .unwrap()
                .is_none(),
            "{name} got an HPA"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_modifiers_combine_triggers_by_formula() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("formula").await;
    let a = Source::start(&cluster).await;
    let b = Source::start(&cluster).await;
    a.set(6);
    b.set(8);
    cluster.apply(&ns, deployment("worker", 0)).await;
    let mut first = metrics_api_trigger(&a, 5);
    first["name"] = json!("a");
    let mut second = metrics_api_trigger(&b, 5);
    second["name"] = json!("b");
    let mut so = scaled_object("worker", json!([first, second]), json!({}));
    so["spec"]["advanced"]["scalingModifiers"] =
        json!({"formula": "a > 7 ? a + b : (a + b) / 2", "target": "2", "activationTarget": "1"});
    cluster.apply(&ns, so).await;
    // (6 + 8) / 2 = 7 against a target of 2 per replica: ceil(7 / 2) = 4.
    cluster.wait_replicas(&ns, "worker", 4, WAIT).await;
    let hpa = cluster.hpas(&ns).get("keda-hpa-worker").await.unwrap();
    let metrics = hpa.spec.unwrap().metrics.unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(
        metrics[0].external.as_ref().unwrap().metric.name,
        "composite-metric"
    );
    let so = cluster.scaled_objects(&ns).get("worker").await.unwrap();
    assert_eq!(
        so.status.unwrap().composite_scaler_name.as_deref(),
        Some("composite-metric")
    );
    // a = 8 takes the other branch: 8 + 8 = 16, ceil(16 / 2) = 8.
    a.set(8);
    cluster.wait_replicas(&ns, "worker", 8, WAIT).await;
    // (0 + 1) / 2 = 0.5 is not above the activation target of 1: back to zero.
    a.set(0);
    b.set(1);
    cluster.wait_replicas(&ns, "worker", 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_covers_a_trigger_that_cannot_be_built_and_a_healthy_trigger_keeps_working() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("unbuildable").await;
    let source = Source::start(&cluster).await;
    source.set(10);
    cluster.apply(&ns, deployment("worker", 0)).await;
    // The second trigger's TriggerAuthentication does not exist: the trigger cannot be built.
    let mut broken = metrics_api_trigger(&source, 5);
    broken["authenticationRef"] = json!({"name": "does-not-exist"});
    cluster
        .apply(
            &ns,
            scaled_object(
                "worker",
                json!([metrics_api_trigger(&source, 5), broken]),
                json!({"fallback": {"failureThreshold": 2, "replicas": 7}}),
            ),
        )
        .await;
    // The healthy trigger alone would ask for 2; the broken one's fallback asks for 7.
    cluster.wait_replicas(&ns, "worker", 7, WAIT).await;
    cluster
        .wait_condition(&ns, "worker", "Fallback", "True", Some("FallbackExists"))
        .await;
    let so = cluster.scaled_objects(&ns).get("worker").await.unwrap();
    let status = so.status.unwrap();
    assert_eq!(
        status.external_metric_names,
        Some(vec![
            "s0-metric-api-value".to_owned(),
            "s1-metrics-api".to_owned()
        ])
    );
    assert!(
        status.health.unwrap()["s1-metrics-api"]
            .number_of_failures
            .unwrap()
            > 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_is_scaled_through_its_scale_subresource() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("statefulset").await;
    let source = Source::start(&cluster).await;
    source.set(12);
    let mut statefulset = deployment("db", 0);
    statefulset["kind"] = json!("StatefulSet");
    statefulset["spec"]["serviceName"] = json!("db");
    cluster.apply(&ns, statefulset).await;
    let mut so = scaled_object("db", json!([metrics_api_trigger(&source, 5)]), json!({}));
    so["spec"]["scaleTargetRef"]["kind"] = json!("StatefulSet");
    cluster.apply(&ns, so).await;
    cluster.wait_statefulset_replicas(&ns, "db", 3, WAIT).await;
    let so = cluster.scaled_objects(&ns).get("db").await.unwrap();
    assert_eq!(
        so.status.unwrap().scale_target_kind.as_deref(),
        Some("apps/v1.StatefulSet")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_hpa_is_taken_over_only_when_asked() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("transfer").await;
    let source = Source::start(&cluster).await;
    source.set(10);
    cluster.apply(&ns, deployment("worker", 1)).await;
    cluster
        .apply(
            &ns,
            json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "legacy"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
                         "minReplicas": 1, "maxReplicas": 3,
                         "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}
            }),
        )
        .await;
    let mut so = scaled_object(
        "worker",
        json!([metrics_api_trigger(&source, 5)]),
        json!({}),
    );
    so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] = json!("legacy");
    cluster.apply(&ns, so.clone()).await;
    let ready = cluster
        .wait_condition(
            &ns,
            "worker",
            "Ready",
            "False",
            Some("ScaledObjectCheckFailed"),
        )
        .await;
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("legacy already exists"),
        "{ready}"
    );
    cluster
        .annotate(
            &ns,
            "worker",
            json!({"scaledobject.keda.sh/transfer-hpa-ownership": "true"}),
        )
        .await;
    cluster
        .wait_condition(&ns, "worker", "Ready", "True", Some("ScaledObjectReady"))
        .await;
    let hpa = cluster.hpas(&ns).get("legacy").await.unwrap();
    assert!(
        hpa.metadata
            .owner_references
            .unwrap()
            .iter()
            .any(|o| o.kind == "ScaledObject" && o.name == "worker")
    );
    assert_eq!(hpa.spec.unwrap().metrics.unwrap()[0].type_, "External");
    cluster.wait_replicas(&ns, "worker", 2, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hpa_is_put_back_when_edited_or_deleted() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("hpa-drift").await;
    let source = Source::start(&cluster).await;
    cluster.apply(&ns, deployment("worker", 0)).await;
    cluster
        .apply(
            &ns,
            scaled_object(
                "worker",
                json!([metrics_api_trigger(&source, 5)]),
                json!({}),
            ),
        )
        .await;
    cluster
        .wait_condition(&ns, "worker", "Ready", "True", Some("ScaledObjectReady"))
        .await;
    let hpas = cluster.hpas(&ns);
    let max = || async {
        hpas.get_opt("keda-hpa-worker")
            .await
            .unwrap()
            .and_then(|h| h.spec)
            .map(|s| s.max_replicas)
    };
    assert_eq!(max().await, Some(10));
    // Someone edits the HPA: the operator puts its spec back (well before its 5-minute resync).
    hpas.patch(
        "keda-hpa-worker",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"maxReplicas": 3}})),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while max().await != Some(10) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edited HPA was not put back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Someone deletes it: it is recreated.
    hpas.delete("keda-hpa-worker", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(hpa) = hpas.get_opt("keda-hpa-worker").await.unwrap()
            && hpa.metadata.deletion_timestamp.is_none()
            && hpa.spec.map(|s| s.max_replicas) == Some(10)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deleted HPA was not recreated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
