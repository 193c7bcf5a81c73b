"""Checks that the official Python `kubernetes` client works, unmodified, against a cluster.

Usage: client_check.py KUBECONFIG

Run by tests/python_client.rs against an in-process kube-sim, which installs the ScaledObject
CRD (keda.sh/v1alpha1) first; it works the same against a real cluster with that CRD. Works in
namespace `default` and deletes what it creates there as it goes.

Prints `ok <check>` per passing check; on the first failure prints `FAIL <check>: ...` with the
request made, what was expected and what came back, and exits 1.
"""

import contextlib
import faulthandler
import json
import sys
import threading
import time
import traceback

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

NAMESPACE = "default"
# Bounded waits: the deployment controller, and the whole script (in case a watch hangs).
WAIT_SECONDS = 10
SCRIPT_DEADLINE_SECONDS = 120

KEDA_GROUP = "keda.sh"
KEDA_VERSION = "v1alpha1"
SCALED_OBJECTS = "scaledobjects"


@contextlib.contextmanager
def check(name):
    """Runs one check: prints `ok <name>`, or `FAIL <name>` with details and exits 1."""
    try:
        yield
    except AssertionError as e:
        fail(name, str(e) or "assertion failed", traceback.format_exc())
    except ApiException as e:
        fail(name, f"unexpected API error {describe(e)}", traceback.format_exc())
    except Exception as e:  # noqa: BLE001 - any error fails the check, with its traceback
        fail(name, f"{type(e).__name__}: {e}", traceback.format_exc())
    print(f"ok {name}", flush=True)


def fail(name, message, trace):
    print(f"FAIL {name}: {message}", flush=True)
    print(f"FAIL {name}: {message}\n{trace}", file=sys.stderr, flush=True)
    sys.exit(1)


def describe(e):
    return f"HTTP {e.status} {e.reason}: {e.body}"


def expect_api_error(request, status, call):
    """Runs `call`, which must raise ApiException with `status`; returns the parsed Status."""
    try:
        got = call()
    except ApiException as e:
        assert e.status == status, (
            f"{request}: expected HTTP {status}, got {describe(e)}"
        )
        try:
            return json.loads(e.body)
        except (TypeError, ValueError):
            raise AssertionError(
                f"{request}: expected a JSON Status body with HTTP {status}, got {e.body!r}"
            ) from None
    raise AssertionError(f"{request}: expected HTTP {status}, got success: {got}")


def expect_status_body(request, body, code, reason):
    assert body.get("kind") == "Status" and body.get("status") == "Failure", (
        f"{request}: expected a Status of Failure, got {body}"
    )
    assert body.get("code") == code and body.get("reason") == reason, (
        f"{request}: expected Status code {code} reason {reason}, got {body}"
    )


def config_map(name, data, labels=None):
    return client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        data=data,
    )


def check_config_maps(v1):
    name = "py-cm"
    with check("configmap_create"):
        created = v1.create_namespaced_config_map(
            NAMESPACE, config_map(name, {"a": "1"}, {"app": "py-check", "tier": "x"})
        )
        assert created.metadata.name == name, f"create returned {created.metadata}"
        assert created.metadata.namespace == NAMESPACE, f"create returned {created.metadata}"
        assert created.metadata.uid, f"create returned no uid: {created.metadata}"
        assert created.metadata.resource_version, (
            f"create returned no resourceVersion: {created.metadata}"
        )
        assert created.data == {"a": "1"}, f"create returned data {created.data}"

    with check("configmap_read"):
        read = v1.read_namespaced_config_map(name, NAMESPACE)
        assert read.data == {"a": "1"}, f"GET configmaps/{name}: data {read.data}"
        assert read.metadata.uid == created.metadata.uid, (
            f"GET configmaps/{name}: uid {read.metadata.uid}, created {created.metadata.uid}"
        )
        assert read.metadata.labels == {"app": "py-check", "tier": "x"}, (
            f"GET configmaps/{name}: labels {read.metadata.labels}"
        )

    with check("configmap_list_label_selector"):
        v1.create_namespaced_config_map(
            NAMESPACE, config_map("py-cm-other", {"b": "2"}, {"app": "py-other"})
        )
        listed = v1.list_namespaced_config_map(NAMESPACE, label_selector="app=py-check")
        names = sorted(cm.metadata.name for cm in listed.items)
        assert names == [name], (
            f"GET configmaps?labelSelector=app=py-check: expected [{name!r}], got {names}"
        )
        assert listed.metadata.resource_version, (
            f"list returned no resourceVersion: {listed.metadata}"
        )
        listed = v1.list_namespaced_config_map(
            NAMESPACE, label_selector="app in (py-check,py-other),tier!=x"
        )
        names = sorted(cm.metadata.name for cm in listed.items)
        assert names == ["py-cm-other"], (
            "GET configmaps?labelSelector=app in (py-check,py-other),tier!=x: "
            f"expected ['py-cm-other'], got {names}"
        )

    with check("configmap_patch"):
        # A dict body is sent as a strategic merge patch.
        patched = v1.patch_namespaced_config_map(
            name, NAMESPACE, {"metadata": {"labels": {"patched": "yes"}}, "data": {"b": "2"}}
        )
        assert patched.data == {"a": "1", "b": "2"}, (
            f"PATCH (strategic merge) data.b=2: expected data {{'a': '1', 'b': '2'}}, "
            f"got {patched.data}"
        )
        assert patched.metadata.labels.get("patched") == "yes", (
            f"PATCH added label: got labels {patched.metadata.labels}"
        )
        assert patched.metadata.resource_version != created.metadata.resource_version, (
            "PATCH did not change resourceVersion"
        )
        read = v1.read_namespaced_config_map(name, NAMESPACE)
        assert read.data == {"a": "1", "b": "2"}, f"GET after PATCH: data {read.data}"

    with check("configmap_create_twice_409"):
        body = expect_api_error(
            f"POST configmaps {name} (already exists)",
            409,
            lambda: v1.create_namespaced_config_map(NAMESPACE, config_map(name, {"a": "1"})),
        )
        expect_status_body("POST existing configmap", body, 409, "AlreadyExists")

    with check("configmap_delete"):
        v1.delete_namespaced_config_map(name, NAMESPACE)
        v1.delete_namespaced_config_map("py-cm-other", NAMESPACE)
        listed = v1.list_namespaced_config_map(NAMESPACE, label_selector="app in (py-check,py-other)")
        assert listed.items == [], (
            f"list after DELETE: expected no items, got {[cm.metadata.name for cm in listed.items]}"
        )

    with check("configmap_missing_404"):
        body = expect_api_error(
            f"GET configmaps/{name} (deleted)",
            404,
            lambda: v1.read_namespaced_config_map(name, NAMESPACE),
        )
        expect_status_body("GET missing configmap", body, 404, "NotFound")
        expect_api_error(
            f"DELETE configmaps/{name} (deleted)",
            404,
            lambda: v1.delete_namespaced_config_map(name, NAMESPACE),
        )


def check_watch(v1):
    name = "py-watch-cm"
    errors = []

    def make_changes():
        try:
            # Give the watch request time to be established.
            time.sleep(1)
            v1.create_namespaced_config_map(NAMESPACE, config_map(name, {"step": "1"}))
            time.sleep(0.2)
            v1.patch_namespaced_config_map(name, NAMESPACE, {"data": {"step": "2"}})
        except Exception as e:  # noqa: BLE001 - reported by the watching thread
            errors.append(e)

    with check("watch_configmaps"):
        seen = []
        w = watch.Watch()
        changer = threading.Thread(target=make_changes, daemon=True)
        started = time.monotonic()
        changer.start()
        for event in w.stream(v1.list_namespaced_config_map, NAMESPACE, timeout_seconds=5):
            raw = event["raw_object"]
            if raw.get("metadata", {}).get("name") != name:
                continue
            seen.append((event["type"], raw.get("data")))
            assert event["object"].metadata.name == name, (
                f"event object not deserialised as a V1ConfigMap: {event['object']!r}"
            )
            if [t for t, _ in seen] == ["ADDED", "MODIFIED"]:
                w.stop()
                break
        elapsed = time.monotonic() - started
        changer.join(timeout=WAIT_SECONDS)
        assert not errors, f"changes during the watch failed: {errors}"
        assert seen == [("ADDED", {"step": "1"}), ("MODIFIED", {"step": "2"})], (
            "GET configmaps?watch=true&timeoutSeconds=5 while creating then patching "
            f"{name}: expected [ADDED step=1, MODIFIED step=2], got {seen} "
            f"(stream ended after {elapsed:.1f}s)"
        )
        v1.delete_namespaced_config_map(name, NAMESPACE)

    with check("watch_timeout_seconds"):
        # With nothing happening, the server ends the watch after timeoutSeconds.
        started = time.monotonic()
        events = [
            e["type"]
            for e in watch.Watch().stream(
                v1.list_namespaced_config_map,
                NAMESPACE,
                label_selector="app=py-nothing",
                timeout_seconds=2,
            )
        ]
        elapsed = time.monotonic() - started
        assert events == [], f"watch of no objects: expected no events, got {events}"
        assert 1.5 <= elapsed <= 2 + WAIT_SECONDS, (
            f"GET configmaps?watch=true&timeoutSeconds=2: expected the stream to end after ~2s, "
            f"it ended after {elapsed:.1f}s"
        )


def check_deployments(apps):
    name = "py-deploy"
    labels = {"app": name}
    deployment = client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="app", image="nginx:1.25")]
                ),
            ),
        ),
    )

    with check("deployment_create"):
        created = apps.create_namespaced_deployment(NAMESPACE, deployment)
        assert created.metadata.name == name, f"create returned {created.metadata}"
        assert created.spec.replicas == 1, f"create returned spec.replicas {created.spec.replicas}"
        assert created.metadata.generation == 1, (
            f"create returned metadata.generation {created.metadata.generation}"
        )

    with check("deployment_read_scale"):
        scale = apps.read_namespaced_deployment_scale(name, NAMESPACE)
        assert isinstance(scale, client.V1Scale), f"scale is a {type(scale)}"
        assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1", (
            f"GET deployments/{name}/scale: expected autoscaling/v1 Scale, "
            f"got {scale.api_version} {scale.kind}"
        )
        assert scale.metadata.name == name, f"scale metadata {scale.metadata}"
        assert scale.spec.replicas == 1, f"GET deployments/{name}/scale: spec {scale.spec}"

    with check("deployment_patch_scale"):
        patched = apps.patch_namespaced_deployment_scale(
            name, NAMESPACE, {"spec": {"replicas": 3}}
        )
        assert patched.spec.replicas == 3, (
            f"PATCH deployments/{name}/scale spec.replicas=3: returned spec {patched.spec}"
        )
        scale = apps.read_namespaced_deployment_scale(name, NAMESPACE)
        assert scale.spec.replicas == 3, (
            f"GET deployments/{name}/scale after PATCH: expected spec.replicas 3, "
            f"got {scale.spec}"
        )
        read = apps.read_namespaced_deployment(name, NAMESPACE)
        assert read.spec.replicas == 3, (
            f"GET deployments/{name} after scale PATCH: spec.replicas {read.spec.replicas}"
        )

    with check("deployment_status_ready"):
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            current = apps.read_namespaced_deployment_status(name, NAMESPACE)
            status = current.status
            if status is not None and status.ready_replicas == 3:
                break
            assert time.monotonic() < deadline, (
                f"GET deployments/{name}/status: expected status.readyReplicas 3 within "
                f"{WAIT_SECONDS}s, last status {status}"
            )
            time.sleep(0.2)
        assert status.replicas == 3, f"status.replicas {status.replicas}, status {status}"
        scale = apps.read_namespaced_deployment_scale(name, NAMESPACE)
        assert scale.status is not None and scale.status.replicas == 3, (
            f"GET deployments/{name}/scale: expected status.replicas 3, got {scale.status}"
        )
        assert scale.status.selector == f"app={name}", (
            f"GET deployments/{name}/scale: expected status.selector app={name}, "
            f"got {scale.status.selector}"
        )

    with check("deployment_delete"):
        apps.delete_namespaced_deployment(name, NAMESPACE)
        expect_api_error(
            f"GET deployments/{name} (deleted)",
            404,
            lambda: apps.read_namespaced_deployment(name, NAMESPACE),
        )


def scaled_object(name, **spec):
    return {
        "apiVersion": f"{KEDA_GROUP}/{KEDA_VERSION}",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": {"app": "py-check"}},
        "spec": {
            "scaleTargetRef": {"name": "py-deploy"},
            "triggers": [
                {
                    "type": "cron",
                    "metadata": {
                        "timezone": "UTC",
                        "start": "0 * * * *",
                        "end": "30 * * * *",
                        "desiredReplicas": "2",
                    },
                }
            ],
            **spec,
        },
    }


def check_custom_objects(custom):
    args = (KEDA_GROUP, KEDA_VERSION, NAMESPACE, SCALED_OBJECTS)
    name = "py-so"

    with check("scaledobject_create"):
        created = custom.create_namespaced_custom_object(
            *args, scaled_object(name, maxReplicaCount=5)
        )
        assert isinstance(created, dict), f"create returned a {type(created)}"
        assert created["metadata"]["name"] == name, f"create returned {created['metadata']}"
        assert created["metadata"].get("uid"), f"create returned no uid: {created['metadata']}"
        assert created["spec"]["maxReplicaCount"] == 5, f"create returned spec {created['spec']}"

    with check("scaledobject_get"):
        got = custom.get_namespaced_custom_object(*args, name)
        assert got["kind"] == "ScaledObject" and got["apiVersion"] == "keda.sh/v1alpha1", (
            f"GET scaledobjects/{name}: {got.get('apiVersion')} {got.get('kind')}"
        )
        assert got["spec"]["scaleTargetRef"] == {"name": "py-deploy"}, (
            f"GET scaledobjects/{name}: spec.scaleTargetRef {got['spec']['scaleTargetRef']}"
        )

    with check("scaledobject_list"):
        listed = custom.list_namespaced_custom_object(*args)
        names = [item["metadata"]["name"] for item in listed["items"]]
        assert names == [name], f"GET scaledobjects: expected [{name!r}], got {names}"
        assert listed.get("kind") == "ScaledObjectList", (
            f"GET scaledobjects: expected kind ScaledObjectList, got {listed.get('kind')}"
        )
        listed = custom.list_namespaced_custom_object(*args, label_selector="app=nothing")
        assert listed["items"] == [], (
            f"GET scaledobjects?labelSelector=app=nothing: expected none, got {listed['items']}"
        )

    with check("scaledobject_patch"):
        patched = custom.patch_namespaced_custom_object(
            *args, name, {"spec": {"maxReplicaCount": 7}}
        )
        assert patched["spec"]["maxReplicaCount"] == 7, (
            f"PATCH (merge) scaledobjects/{name} maxReplicaCount=7: spec {patched['spec']}"
        )
        assert patched["spec"]["triggers"][0]["type"] == "cron", (
            f"PATCH (merge) lost the triggers: spec {patched['spec']}"
        )

    with check("scaledobject_invalid_422"):
        request = "POST scaledobjects with spec.minReplicaCount -1"
        body = expect_api_error(
            request,
            422,
            lambda: custom.create_namespaced_custom_object(
                *args, scaled_object("py-so-invalid", minReplicaCount=-1)
            ),
        )
        expect_status_body(request, body, 422, "Invalid")
        causes = (body.get("details") or {}).get("causes") or []
        fields = [c.get("field") for c in causes]
        assert "spec.minReplicaCount" in fields, (
            f"{request}: expected a cause for field spec.minReplicaCount, got {body}"
        )
        expect_api_error(
            "GET scaledobjects/py-so-invalid (rejected)",
            404,
            lambda: custom.get_namespaced_custom_object(*args, "py-so-invalid"),
        )

    with check("scaledobject_create_twice_409"):
        body = expect_api_error(
            f"POST scaledobjects {name} (already exists)",
            409,
            lambda: custom.create_namespaced_custom_object(*args, scaled_object(name)),
        )
        expect_status_body("POST existing scaledobject", body, 409, "AlreadyExists")

    with check("scaledobject_missing_404"):
        body = expect_api_error(
            "GET scaledobjects/py-so-missing",
            404,
            lambda: custom.get_namespaced_custom_object(*args, "py-so-missing"),
        )
        expect_status_body("GET missing scaledobject", body, 404, "NotFound")

    with check("scaledobject_delete"):
        custom.delete_namespaced_custom_object(*args, name)
        expect_api_error(
            f"GET scaledobjects/{name} (deleted)",
            404,
            lambda: custom.get_namespaced_custom_object(*args, name),
        )


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} KUBECONFIG", file=sys.stderr)
        sys.exit(2)
    # Should anything hang (a watch that never ends), dump where and exit rather than block.
    faulthandler.dump_traceback_later(SCRIPT_DEADLINE_SECONDS, exit=True)

    with check("load_kube_config"):
        config.load_kube_config(config_file=sys.argv[1])
        v1 = client.CoreV1Api()
        apps = client.AppsV1Api()
        custom = client.CustomObjectsApi()

    check_config_maps(v1)
    check_watch(v1)
    check_deployments(apps)
    check_custom_objects(custom)


if __name__ == "__main__":
    main()
