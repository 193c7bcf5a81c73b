//! Conformance of kube-sim with a real client: the `kubectl` binary (v1.32) run against an
//! in-process simulator. Each test starts its own simulator and checks what kubectl prints, or
//! what the server stored, against what a real apiserver gives.
//!
//! kubectl's typed commands send protobuf; kube-sim decodes it for Namespaces, ConfigMaps and
//! Secrets and refuses it otherwise, so other objects are written from manifests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The longest any bounded wait in these tests lasts.
const WAIT: Duration = Duration::from_secs(10);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    repo_root().join("e2e/fixtures/manifests").join(name)
}

fn chart_crd(name: &str) -> PathBuf {
    repo_root().join("charts/keda-rs/crds").join(name)
}

/// What one kubectl run printed.
#[derive(Debug)]
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Output {
    /// The standard output of a run that must have succeeded.
    #[track_caller]
    fn ok(&self) -> &str {
        assert!(self.success, "kubectl failed: {self:#?}");
        &self.stdout
    }

    /// The standard error of a run that must have failed.
    #[track_caller]
    fn err(&self) -> &str {
        assert!(!self.success, "kubectl succeeded unexpectedly: {self:#?}");
        &self.stderr
    }
}

/// A simulator and a kubeconfig (and discovery cache) for kubectl in a private directory.
struct Kubectl {
    _sim: kube_sim::KubeSim,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    async fn start() -> Self {
        let sim = kube_sim::start(kube_sim::Config::default()).await.unwrap();
        let dir = std::env::temp_dir().join(format!("kube-sim-kubectl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, sim.kubeconfig()).unwrap();
        Self {
            _sim: sim,
            dir,
            kubeconfig,
        }
    }

    /// `kubectl` with this simulator's kubeconfig and a private discovery cache.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs kubectl to completion (bounded by `--request-timeout`), feeding `stdin` if given.
    async fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = self.command(args);
        command.arg("--request-timeout=30s");
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let stdin = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("kubectl runs");
            if let Some(input) = stdin {
                let mut pipe = child.stdin.take().unwrap();
                pipe.write_all(input.as_bytes()).unwrap();
            }
            let out = child.wait_with_output().unwrap();
            Output {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .await
        .unwrap()
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, None).await
    }

    /// `kubectl <args> -f -` with `manifest` on standard input.
    async fn stdin(&self, args: &[&str], manifest: &str) -> Output {
        let mut all = args.to_vec();
        all.extend(["-f", "-"]);
        self.run_with(&all, Some(manifest)).await
    }

    /// `kubectl get <args> -o json`, parsed.
    async fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", "json"]);
        serde_json::from_str(self.run(&all).await.ok()).unwrap()
    }

    /// `kubectl get <args> -o jsonpath=<path>`.
    async fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let path = format!("jsonpath={path}");
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", path.as_str()]);
        self.run(&all).await.ok().to_owned()
    }

    async fn create_namespace(&self, name: &str) {
        let out = self.stdin(&["apply"], &namespace(name)).await;
        assert_eq!(out.ok(), format!("namespace/{name} created\n"));
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A background kubectl, killed (it is ours) when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a long-running kubectl whose output lines arrive on the returned channel.
fn spawn_lines(mut command: Command) -> (Background, tokio::sync::mpsc::UnboundedReceiver<String>) {
    command.stderr(Stdio::null());
    let mut child = command.spawn().expect("kubectl runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Background(child), rx)
}

/// The next output line, waiting at most [`WAIT`].
async fn next_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no output line within the wait")
        .expect("kubectl exited")
}

/// Reads lines until one equals `expected`, for at most [`WAIT`] in all. Other lines (such as
/// the simulated controllers' status updates) are skipped.
async fn wait_for_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, expected: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut skipped = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) if line == expected => return,
            Ok(Some(line)) => skipped.push(line),
            Ok(None) => panic!("kubectl exited before printing {expected:?}; printed {skipped:?}"),
            Err(elapsed) => {
                panic!("no line {expected:?} within the wait ({elapsed}); printed {skipped:?}")
            }
        }
    }
}

/// The cells of a `kubectl get` table row, by column, cut at the header's column starts.
fn table_cells<'a>(header: &'a str, row: &'a str) -> Vec<(&'a str, &'a str)> {
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(usize::MAX);
            let name = header[start..end.min(header.len())].trim();
            let cell = row
                .get(start.min(row.len())..end.min(row.len()))
                .unwrap_or("")
                .trim();
            (name, cell)
        })
        .collect()
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: {image}
"
    )
}

/// Paths of every `null` in a JSON document.
fn null_paths(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Null => out.push(path.to_owned()),
        Value::Object(map) => {
            for (k, v) in map {
                null_paths(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                null_paths(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// apply

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_apply_creates_then_configures_then_leaves_unchanged() {
    let k = Kubectl::start().await;
    let out = k
        .stdin(&["apply"], &deployment("web", 2, "nginx:1.25"))
        .await;
    assert_eq!(out.ok(), "deployment.apps/web created\n");

    let out = k
        .stdin(&["apply"], &deployment("web", 2, "nginx:1.27"))
        .await;
    assert_eq!(out.ok(), "deployment.apps/web configured\n");
    let image = k
        .jsonpath(
            &["deploy", "web"],
            "{.spec.template.spec.containers[0].image}",
        )
        .await;
    assert_eq!(image, "nginx:1.27");

    let out = k
        .stdin(&["apply"], &deployment("web", 2, "nginx:1.27"))
        .await;
    assert_eq!(out.ok(), "deployment.apps/web unchanged\n");

    let live = k.get_json(&["deploy", "web"]).await;
    let last_applied: Value = serde_json::from_str(
        live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .expect("client-side apply records the last applied configuration"),
    )
    .unwrap();
    assert_eq!(
        last_applied["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert_eq!(
        live["metadata"]["generation"], 2,
        "one spec change after create"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_apply_removes_fields_dropped_from_the_manifest() {
    let k = Kubectl::start().await;
    let with_label = deployment("web", 2, "nginx:1.25").replace(
        "  labels:\n    app: web\n",
        "  labels:\n    app: web\n    tier: front\n",
    );
    k.stdin(&["apply"], &with_label).await.ok();
    assert_eq!(
        k.jsonpath(&["deploy", "web"], "{.metadata.labels.tier}")
            .await,
        "front"
    );
    k.stdin(&["apply"], &deployment("web", 2, "nginx:1.25"))
        .await
        .ok();
    let labels = k.get_json(&["deploy", "web"]).await["metadata"]["labels"].clone();
    assert_eq!(labels, serde_json::json!({"app": "web"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_from_another_manager_conflicts_unless_forced() {
    let k = Kubectl::start().await;
    let out = k
        .stdin(
            &["apply", "--server-side"],
            &deployment("web", 2, "nginx:1.25"),
        )
        .await;
    assert_eq!(out.ok(), "deployment.apps/web serverside-applied\n");

    let scaled = deployment("web", 5, "nginx:1.25");
    let out = k
        .stdin(
            &["apply", "--server-side", "--field-manager=other"],
            &scaled,
        )
        .await;
    let err = out.err();
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#),
        "{err}"
    );
    assert_eq!(
        k.jsonpath(&["deploy", "web"], "{.spec.replicas}").await,
        "2"
    );

    let out = k
        .stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
            ],
            &scaled,
        )
        .await;
    assert_eq!(out.ok(), "deployment.apps/web serverside-applied\n");
    let live = k
        .get_json(&["deploy", "web", "--show-managed-fields"])
        .await;
    assert_eq!(live["spec"]["replicas"], 5);
    let managed = live["metadata"]["managedFields"].as_array().unwrap();
    let owner_of_replicas: Vec<&str> = managed
        .iter()
        .filter(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_some())
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(owner_of_replicas, ["other"], "{managed:#?}");
    let kubectl = managed
        .iter()
        .find(|e| e["manager"] == "kubectl")
        .expect("kubectl keeps the fields it still agrees on");
    assert_eq!(kubectl["operation"], "Apply");
    assert!(
        kubectl["fieldsV1"]["f:spec"]["f:template"].is_object(),
        "{kubectl:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflict_message_is_the_apiservers() {
    let k = Kubectl::start().await;
    k.stdin(
        &["apply", "--server-side"],
        &deployment("web", 2, "nginx:1.25"),
    )
    .await
    .ok();
    let out = k
        .stdin(
            &["apply", "--server-side", "--field-manager=other"],
            &deployment("web", 5, "nginx:1.25"),
        )
        .await;
    let first_line = out.err().lines().next().unwrap_or("");
    assert_eq!(
        first_line,
        r#"error: Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_dry_run_changes_nothing() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 2, "nginx:1.25"))
        .await
        .ok();
    let before = k
        .jsonpath(&["deploy", "web"], "{.metadata.resourceVersion}")
        .await;
    let out = k
        .stdin(
            &["apply", "--dry-run=server"],
            &deployment("web", 2, "nginx:1.26"),
        )
        .await;
    assert_eq!(
        out.ok(),
        "deployment.apps/web configured (server dry run)\n"
    );
    let image = k
        .jsonpath(
            &["deploy", "web"],
            "{.spec.template.spec.containers[0].image}",
        )
        .await;
    assert_eq!(image, "nginx:1.25");
    assert_eq!(
        k.jsonpath(&["deploy", "web"], "{.metadata.resourceVersion}")
            .await,
        before
    );
}

// ---------------------------------------------------------------------------------------------
// get

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_json_yaml_jsonpath_and_name() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 3, "nginx:1.25"))
        .await
        .ok();

    let json = k.get_json(&["deploy", "web"]).await;
    assert_eq!(json["apiVersion"], "apps/v1");
    assert_eq!(json["kind"], "Deployment");
    assert_eq!(json["metadata"]["name"], "web");
    assert_eq!(json["metadata"]["namespace"], "default");
    assert_eq!(json["spec"]["replicas"], 3);
    assert!(
        json["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );

    let yaml = k.run(&["get", "deploy", "web", "-o", "yaml"]).await;
    let yaml: Value = serde_yaml::from_str(yaml.ok()).unwrap();
    assert_eq!(yaml["metadata"]["uid"], json["metadata"]["uid"]);
    assert_eq!(yaml["spec"], json["spec"]);

    assert_eq!(
        k.jsonpath(
            &["deploy", "web"],
            "{.spec.replicas} {.spec.selector.matchLabels.app}"
        )
        .await,
        "3 web"
    );
    let out = k.run(&["get", "deploy", "-o", "name"]).await;
    assert_eq!(out.ok(), "deployment.apps/web\n");

    let list = k.get_json(&["deploy"]).await;
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_label_selector_filters() {
    let k = Kubectl::start().await;
    for name in ["web", "api", "worker"] {
        k.stdin(&["apply"], &deployment(name, 1, "nginx:1.25"))
            .await
            .ok();
    }
    let out = k
        .run(&["get", "deploy", "-l", "app in (api,worker)", "-o", "name"])
        .await;
    assert_eq!(out.ok(), "deployment.apps/api\ndeployment.apps/worker\n");
    let out = k
        .run(&["get", "deploy", "-l", "app!=web", "-o", "name"])
        .await;
    assert_eq!(out.ok(), "deployment.apps/api\ndeployment.apps/worker\n");
    let out = k
        .run(&[
            "get",
            "deploy",
            "--field-selector",
            "metadata.name=web",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(out.ok(), "deployment.apps/web\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_the_server_side_table_columns() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 1, "nginx:1.25"))
        .await
        .ok();
    let out = k.run(&["get", "deploy"]).await;
    let header: Vec<&str> = out
        .ok()
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn get_wide_prints_containers_images_and_selector() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 1, "nginx:1.25"))
        .await
        .ok();
    let out = k.run(&["get", "deploy", "-o", "wide"]).await;
    let mut lines = out.ok().lines();
    let header = lines.next().unwrap_or("");
    let cells = table_cells(header, lines.next().unwrap_or(""));
    let names: Vec<&str> = cells.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(cells[0], ("NAME", "web"));
    assert!(cells[1].1.ends_with("/1"), "{cells:?}");
    assert_eq!(
        cells[5..],
        [
            ("CONTAINERS", "app"),
            ("IMAGES", "nginx:1.25"),
            ("SELECTOR", "app=web")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_objects_carry_no_null_fields() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 1, "nginx:1.25"))
        .await
        .ok();
    let raw = k
        .run(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web",
        ])
        .await;
    let live: Value = serde_json::from_str(raw.ok()).unwrap();
    let mut nulls = Vec::new();
    null_paths(&live, "", &mut nulls);
    assert_eq!(nulls, Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// patch, scale, delete

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_patch_replaces_the_containers_list() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 2, "nginx:1.25"))
        .await
        .ok();
    let out = k
        .run(&[
            "patch",
            "deploy",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"tier":"front"}},"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1"}]}}}}"#,
        ])
        .await;
    assert_eq!(out.ok(), "deployment.apps/web patched\n");
    let live = k.get_json(&["deploy", "web"]).await;
    assert_eq!(
        live["metadata"]["labels"],
        serde_json::json!({"app": "web", "tier": "front"})
    );
    let containers: Vec<&str> = live["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(containers, ["sidecar"]);

    let out = k
        .run(&[
            "patch",
            "deploy",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"tier":null}}}"#,
        ])
        .await;
    out.ok();
    assert_eq!(
        k.get_json(&["deploy", "web"]).await["metadata"]["labels"],
        serde_json::json!({"app": "web"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_applies_operations_and_a_failed_test_changes_nothing() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 2, "nginx:1.25"))
        .await
        .ok();
    let out = k
        .run(&[
            "patch",
            "deploy",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":4},{"op":"add","path":"/metadata/annotations","value":{"owner":"team-a"}}]"#,
        ])
        .await;
    assert_eq!(out.ok(), "deployment.apps/web patched\n");
    assert_eq!(
        k.jsonpath(
            &["deploy", "web"],
            "{.spec.replicas} {.metadata.annotations.owner}"
        )
        .await,
        "4 team-a"
    );

    let out = k
        .run(&[
            "patch",
            "deploy",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":9},{"op":"replace","path":"/spec/replicas","value":1}]"#,
        ])
        .await;
    out.err();
    assert_eq!(
        k.jsonpath(&["deploy", "web"], "{.spec.replicas}").await,
        "4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patch_merges_containers_by_name() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 2, "nginx:1.25"))
        .await
        .ok();
    let out = k
        .run(&[
            "patch",
            "deploy",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1"}]}}}}"#,
        ])
        .await;
    assert_eq!(out.ok(), "deployment.apps/web patched\n");
    let out = k
        .run(&[
            "patch",
            "deploy",
            "web",
            "--type",
            "strategic",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:1.28"}]}}}}"#,
        ])
        .await;
    assert_eq!(out.ok(), "deployment.apps/web patched\n");
    let live = k.get_json(&["deploy", "web"]).await;
    let containers: Vec<(&str, &str)> = live["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["image"].as_str().unwrap()))
        .collect();
    assert_eq!(
        containers,
        [("app", "nginx:1.28"), ("sidecar", "busybox:1")],
        "new keyed items are appended, existing ones merged in place"
    );

    let out = k
        .run(&[
            "patch",
            "deploy",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:1.28"}]}}}}"#,
        ])
        .await;
    assert_eq!(out.ok(), "deployment.apps/web patched (no change)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_is_visible_through_the_scale_subresource() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 2, "nginx:1.25"))
        .await
        .ok();
    let out = k.run(&["scale", "deploy", "web", "--replicas=5"]).await;
    assert_eq!(out.ok(), "deployment.apps/web scaled\n");

    let out = k
        .run(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ])
        .await;
    let scale: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["metadata"]["name"], "web");
    assert_eq!(scale["metadata"]["namespace"], "default");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    assert_eq!(
        k.jsonpath(&["deploy", "web"], "{.spec.replicas}").await,
        "5"
    );

    let out = k
        .run(&[
            "scale",
            "deploy",
            "web",
            "--replicas=3",
            "--current-replicas=4",
        ])
        .await;
    assert_eq!(out.err(), "error: Expected replicas to be 4, was 5\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_object() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 2, "nginx:1.25"))
        .await
        .ok();
    let out = k.run(&["delete", "deploy", "web"]).await;
    assert_eq!(out.ok(), "deployment.apps \"web\" deleted\n");
    let out = k.run(&["get", "deploy", "web"]).await;
    assert_eq!(
        out.err(),
        "Error from server (NotFound): deployments.apps \"web\" not found\n"
    );
    let out = k.run(&["delete", "deploy", "web"]).await;
    assert_eq!(
        out.err(),
        "Error from server (NotFound): deployments.apps \"web\" not found\n"
    );
    let out = k
        .run(&["delete", "deploy", "web", "--ignore-not-found"])
        .await;
    assert_eq!(out.ok(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_annotate_patch_metadata() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 2, "nginx:1.25"))
        .await
        .ok();
    let out = k.run(&["label", "deploy", "web", "team=a"]).await;
    assert_eq!(out.ok(), "deployment.apps/web labeled\n");
    let out = k.run(&["annotate", "deploy", "web", "note=x"]).await;
    assert_eq!(out.ok(), "deployment.apps/web annotated\n");
    let out = k.run(&["label", "deploy", "web", "team=b"]).await;
    let err = out.err();
    assert!(
        err.contains("'team' already has a value (a), and --overwrite is false"),
        "{err}"
    );
    assert_eq!(
        k.jsonpath(
            &["deploy", "web"],
            "{.metadata.labels.team} {.metadata.annotations.note}"
        )
        .await,
        "a x"
    );
    assert_eq!(
        k.jsonpath(&["deploy", "web"], "{.metadata.generation}")
            .await,
        "1",
        "metadata changes do not bump generation"
    );
}

// ---------------------------------------------------------------------------------------------
// watch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_streams_names_of_changed_objects() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 1, "nginx:1.25"))
        .await
        .ok();
    let (_watch, mut lines) = spawn_lines(k.command(&["get", "deploy", "-w", "-o", "name"]));
    // The initial list comes first; changes follow (interleaved with the status updates of
    // the simulated deployment controller, which print the same names).
    assert_eq!(next_line(&mut lines).await, "deployment.apps/web");
    k.stdin(&["apply"], &deployment("api", 1, "nginx:1.25"))
        .await
        .ok();
    wait_for_line(&mut lines, "deployment.apps/api").await;
    k.run(&["scale", "deploy", "web", "--replicas=3"])
        .await
        .ok();
    wait_for_line(&mut lines, "deployment.apps/web").await;
    k.run(&["delete", "deploy", "api"]).await.ok();
    wait_for_line(&mut lines, "deployment.apps/api").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_reports_event_types() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 1, "nginx:1.25"))
        .await
        .ok();
    let (_watch, mut lines) = spawn_lines(k.command(&[
        "get",
        "deploy",
        "-w",
        "--output-watch-events",
        "-o",
        r#"jsonpath={.type} {.object.metadata.name} {.object.spec.replicas}{"\n"}"#,
    ]));
    assert_eq!(next_line(&mut lines).await, "ADDED web 1");
    k.stdin(&["apply"], &deployment("api", 2, "nginx:1.25"))
        .await
        .ok();
    wait_for_line(&mut lines, "ADDED api 2").await;
    k.run(&["scale", "deploy", "api", "--replicas=4"])
        .await
        .ok();
    wait_for_line(&mut lines, "MODIFIED api 4").await;
    k.run(&["delete", "deploy", "api"]).await.ok();
    wait_for_line(&mut lines, "DELETED api 4").await;
}

// ---------------------------------------------------------------------------------------------
// custom resources

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_object_crd_serves_scaled_objects_by_short_and_full_name() {
    let k = Kubectl::start().await;
    let crd = chart_crd("keda.sh_scaledobjects.yaml");
    let out = k.run(&["create", "-f", crd.to_str().unwrap()]).await;
    assert_eq!(
        out.ok(),
        "customresourcedefinition.apiextensions.k8s.io/scaledobjects.keda.sh created\n"
    );
    let established = k
        .jsonpath(
            &["crd", "scaledobjects.keda.sh"],
            r#"{.status.conditions[?(@.type=="Established")].status}"#,
        )
        .await;
    assert_eq!(established, "True");
    let out = k
        .run(&["api-resources", "--api-group=keda.sh", "-o", "name"])
        .await;
    assert_eq!(out.ok(), "scaledobjects.keda.sh\n");

    k.create_namespace("web").await;
    let so = fixture("so-cpu-utilization.yaml");
    let out = k.run(&["apply", "-f", so.to_str().unwrap()]).await;
    assert_eq!(out.ok(), "scaledobject.keda.sh/web-api-cpu created\n");

    let out = k.run(&["get", "so", "-n", "web", "-o", "name"]).await;
    assert_eq!(out.ok(), "scaledobject.keda.sh/web-api-cpu\n");
    let names = k
        .jsonpath(
            &["scaledobjects.keda.sh", "-n", "web"],
            "{.items[*].metadata.name}",
        )
        .await;
    assert_eq!(names, "web-api-cpu");
    let live = k
        .get_json(&["scaledobject", "web-api-cpu", "-n", "web"])
        .await;
    assert_eq!(live["spec"]["minReplicaCount"], 3);
    assert_eq!(live["spec"]["triggers"][0]["metadata"]["value"], "65");
    assert_eq!(live["metadata"]["generation"], 1);
    assert!(
        live.get("status").is_none(),
        "status is a subresource: create ignores it"
    );
    let out = k.run(&["get", "so", "-A", "-o", "name"]).await;
    assert_eq!(out.ok(), "scaledobject.keda.sh/web-api-cpu\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scaled_object_and_scaled_job_fixture_is_accepted() {
    let k = Kubectl::start().await;
    let scaled_object_crd = chart_crd("keda.sh_scaledobjects.yaml");
    k.run(&["create", "-f", scaled_object_crd.to_str().unwrap()])
        .await
        .ok();
    // Too big for the last-applied annotation of client-side apply.
    let scaled_job_crd = chart_crd("keda.sh_scaledjobs.yaml");
    let out = k
        .run(&[
            "apply",
            "--server-side",
            "-f",
            scaled_job_crd.to_str().unwrap(),
        ])
        .await;
    assert_eq!(
        out.ok(),
        "customresourcedefinition.apiextensions.k8s.io/scaledjobs.keda.sh serverside-applied\n"
    );

    let dir = k.dir.join("fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let mut expected = Vec::new();
    let mut namespaces = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(repo_root().join("e2e/fixtures/manifests")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !(file.starts_with("so-") || file.starts_with("sj-")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let object: Value = serde_yaml::from_str(&text).unwrap();
        namespaces.insert(object["metadata"]["namespace"].as_str().unwrap().to_owned());
        let resource = if file.starts_with("so-") {
            "scaledobject"
        } else {
            "scaledjob"
        };
        expected.push(format!(
            "{resource}.keda.sh/{} created",
            object["metadata"]["name"].as_str().unwrap()
        ));
        std::fs::copy(&path, dir.join(&file)).unwrap();
    }
    for ns in &namespaces {
        k.create_namespace(ns).await;
    }
    let out = k.run(&["apply", "-f", dir.to_str().unwrap()]).await;
    let mut printed: Vec<&str> = out.ok().lines().collect();
    printed.sort_unstable();
    expected.sort();
    assert_eq!(printed, expected);
    let out = k
        .run(&["get", "scaledjobs.keda.sh", "-A", "-o", "name"])
        .await;
    assert_eq!(
        out.ok().lines().count(),
        expected
            .iter()
            .filter(|l| l.starts_with("scaledjob."))
            .count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn get_scaled_objects_prints_the_crd_printer_columns() {
    let k = Kubectl::start().await;
    let crd = chart_crd("keda.sh_scaledobjects.yaml");
    k.run(&["create", "-f", crd.to_str().unwrap()]).await.ok();
    k.create_namespace("web").await;
    let so = fixture("so-cpu-utilization.yaml");
    k.run(&["apply", "-f", so.to_str().unwrap()]).await.ok();
    let out = k.run(&["get", "so", "-n", "web"]).await;
    let mut rows = out.ok().lines();
    let header_line = rows.next().unwrap_or("");
    let header: Vec<&str> = header_line.split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SCALETARGETKIND",
            "SCALETARGETNAME",
            "MIN",
            "MAX",
            "READY",
            "ACTIVE",
            "FALLBACK",
            "PAUSED",
            "TRIGGERS",
            "AUTHENTICATIONS",
            "AGE"
        ]
    );
    let cells = table_cells(header_line, rows.next().unwrap_or(""));
    assert_eq!(
        cells[..10],
        [
            ("NAME", "web-api-cpu"),
            ("SCALETARGETKIND", ""),
            ("SCALETARGETNAME", "web-api"),
            ("MIN", "3"),
            ("MAX", "40"),
            ("READY", ""),
            ("ACTIVE", ""),
            ("FALLBACK", ""),
            ("PAUSED", ""),
            ("TRIGGERS", ""),
        ],
        "columns without a value (no status yet) are blank"
    );
}

// ---------------------------------------------------------------------------------------------
// error shapes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getting_a_missing_object_is_not_found() {
    let k = Kubectl::start().await;
    let out = k.run(&["get", "deploy", "nope"]).await;
    assert_eq!(
        out.err(),
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
    let out = k
        .run(&["get", "configmap", "nope", "-n", "kube-system"])
        .await;
    assert_eq!(
        out.err(),
        "Error from server (NotFound): configmaps \"nope\" not found\n"
    );
    let out = k
        .run(&["get", "deploy", "-n", "nowhere", "-o", "name"])
        .await;
    assert_eq!(
        out.ok(),
        "",
        "listing an absent namespace is empty, not an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_in_a_missing_namespace_is_not_found() {
    let k = Kubectl::start().await;
    let out = k
        .stdin(
            &["create", "-n", "nowhere"],
            &deployment("web", 1, "nginx:1.25"),
        )
        .await;
    assert_eq!(
        out.err(),
        "Error from server (NotFound): error when creating \"STDIN\": namespaces \"nowhere\" not found\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_existing_object_is_already_exists() {
    let k = Kubectl::start().await;
    let manifest = deployment("web", 1, "nginx:1.25");
    let out = k.stdin(&["create"], &manifest).await;
    assert_eq!(out.ok(), "deployment.apps/web created\n");
    let out = k.stdin(&["create"], &manifest).await;
    assert_eq!(
        out.err(),
        "Error from server (AlreadyExists): error when creating \"STDIN\": deployments.apps \"web\" already exists\n"
    );
}

fn invalid_scaled_object() -> &'static str {
    "apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: bad
spec:
  scaleTargetRef:
    name: web
  minReplicaCount: -1
  triggers:
  - type: cpu
    metricType: Utilization
    metadata:
      value: \"50\"
"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_an_invalid_scaled_object_is_invalid() {
    let k = Kubectl::start().await;
    let crd = chart_crd("keda.sh_scaledobjects.yaml");
    k.run(&["create", "-f", crd.to_str().unwrap()]).await.ok();
    let out = k.stdin(&["apply"], invalid_scaled_object()).await;
    let err = out.err();
    assert!(
        err.starts_with(
            "The ScaledObject \"bad\" is invalid: spec.minReplicaCount: Invalid value: -1: "
        ),
        "{err}"
    );
    let out = k.run(&["get", "so", "bad"]).await;
    assert_eq!(
        out.err(),
        "Error from server (NotFound): scaledobjects.keda.sh \"bad\" not found\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn invalid_field_message_is_the_apiservers() {
    let k = Kubectl::start().await;
    let crd = chart_crd("keda.sh_scaledobjects.yaml");
    k.run(&["create", "-f", crd.to_str().unwrap()]).await.ok();
    let out = k.stdin(&["apply"], invalid_scaled_object()).await;
    assert_eq!(
        out.err(),
        "The ScaledObject \"bad\" is invalid: spec.minReplicaCount: Invalid value: -1: spec.minReplicaCount in body should be greater than or equal to 0\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_with_a_stale_resource_version_is_a_conflict() {
    let k = Kubectl::start().await;
    k.stdin(&["apply"], &deployment("web", 2, "nginx:1.25"))
        .await
        .ok();
    let stale = k.run(&["get", "deploy", "web", "-o", "json"]).await;
    let stale = stale.ok().to_owned();
    k.run(&["scale", "deploy", "web", "--replicas=3"])
        .await
        .ok();

    let out = k.stdin(&["replace"], &stale).await;
    assert_eq!(
        out.err(),
        "Error from server (Conflict): error when replacing \"STDIN\": Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again\n"
    );
    assert_eq!(
        k.jsonpath(&["deploy", "web"], "{.spec.replicas}").await,
        "3"
    );

    // With the current resourceVersion the same replace goes through.
    let mut fresh: Value = serde_json::from_str(&stale).unwrap();
    fresh["metadata"]["resourceVersion"] = k
        .jsonpath(&["deploy", "web"], "{.metadata.resourceVersion}")
        .await
        .into();
    let out = k.stdin(&["replace"], &fresh.to_string()).await;
    assert_eq!(out.ok(), "deployment.apps/web replaced\n");
    assert_eq!(
        k.jsonpath(&["deploy", "web"], "{.spec.replicas}").await,
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_fail_strict_validation() {
    let k = Kubectl::start().await;
    let bogus = deployment("web", 1, "nginx:1.25")
        .replace("  replicas: 1\n", "  replicas: 1\n  bogus: 1\n");
    let out = k.stdin(&["apply"], &bogus).await;
    let err = out.err();
    assert!(err.starts_with("Error from server (BadRequest): "), "{err}");
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{err}"
    );
    k.run(&["get", "deploy", "web"]).await.err();

    // `--validate=false` drops the field instead.
    let out = k.stdin(&["apply", "--validate=false"], &bogus).await;
    assert_eq!(out.ok(), "deployment.apps/web created\n");
    let spec = k.get_json(&["deploy", "web"]).await["spec"].clone();
    assert!(spec.get("bogus").is_none(), "{spec:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_field_message_is_the_apiservers() {
    let k = Kubectl::start().await;
    let bogus = deployment("web", 1, "nginx:1.25")
        .replace("  replicas: 1\n", "  replicas: 1\n  bogus: 1\n");
    let out = k.stdin(&["apply"], &bogus).await;
    assert_eq!(
        out.err(),
        "Error from server (BadRequest): error when creating \"STDIN\": Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.bogus\"\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_commands_sending_protobuf_are_refused_with_415() {
    let k = Kubectl::start().await;
    let out = k
        .run(&["create", "deployment", "web", "--image=nginx"])
        .await;
    assert_eq!(
        out.err(),
        "error: failed to create deployment: kube-sim does not support request bodies of type application/vnd.kubernetes.protobuf (kube-sim decodes protobuf only for v1 Namespaces, ConfigMaps and Secrets, not apps/v1 Deployment); send application/json (clients built on typed client-go clientsets default to protobuf)\n"
    );
    k.run(&["get", "deploy", "web"]).await.err();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_create_of_namespaces_config_maps_and_secrets_works() {
    let k = Kubectl::start().await;
    assert_eq!(
        k.run(&["create", "namespace", "shop"]).await.ok(),
        "namespace/shop created\n"
    );
    assert_eq!(
        k.run(&[
            "create",
            "configmap",
            "settings",
            "-n",
            "shop",
            "--from-literal=mode=fast"
        ])
        .await
        .ok(),
        "configmap/settings created\n"
    );
    assert_eq!(
        k.run(&[
            "create",
            "secret",
            "generic",
            "creds",
            "-n",
            "shop",
            "--from-literal=password=hunter2"
        ])
        .await
        .ok(),
        "secret/creds created\n"
    );
    assert_eq!(
        k.jsonpath(&["cm", "settings", "-n", "shop"], "{.data.mode}")
            .await,
        "fast"
    );
    // aHVudGVyMg== is base64 for hunter2.
    assert_eq!(
        k.jsonpath(&["secret", "creds", "-n", "shop"], "{.data.password}")
            .await,
        "aHVudGVyMg=="
    );
    assert_eq!(
        k.jsonpath(&["secret", "creds", "-n", "shop"], "{.type}")
            .await,
        "Opaque"
    );
}
