//! Conformance of kube-sim with a real client: the official Python `kubernetes` package, run
//! unmodified against an in-process simulator. `e2e/scripts/python-venv` provides a virtualenv
//! with the version pinned in `e2e/python-requirements.txt`; `tests/python/client_check.py`
//! drives the client (core and apps objects, the scale and status subresources, a watch, custom
//! objects and API errors) and prints `ok <check>` per check that passed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The longest creating the virtualenv (downloading and installing packages) may take.
const VENV_LIMIT: Duration = Duration::from_secs(600);

/// The longest the Python checks may take; the script stops itself after 120 s.
const CHECKS_LIMIT: Duration = Duration::from_secs(180);

/// What `client_check.py` prints when every check passed, in order.
const CHECKS: &[&str] = &[
    "load_kube_config",
    "configmap_create",
    "configmap_read",
    "configmap_list_label_selector",
    "configmap_patch",
    "configmap_create_twice_409",
    "configmap_delete",
    "configmap_missing_404",
    "watch_configmaps",
    "watch_timeout_seconds",
    "deployment_create",
    "deployment_read_scale",
    "deployment_patch_scale",
    "deployment_status_ready",
    "deployment_delete",
    "scaledobject_create",
    "scaledobject_get",
    "scaledobject_list",
    "scaledobject_patch",
    "scaledobject_invalid_422",
    "scaledobject_create_twice_409",
    "scaledobject_missing_404",
    "scaledobject_delete",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What one process run printed.
#[derive(Debug)]
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `command` to completion without blocking the runtime (the simulator keeps serving on
/// it), killing it after `limit`. Its output goes to files in `dir`, so no pipe can fill up.
async fn run(mut command: Command, name: &str, dir: &Path, limit: Duration) -> Output {
    let stdout_path = dir.join(format!("{name}.stdout"));
    let stderr_path = dir.join(format!("{name}.stderr"));
    command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{name} does not start ({command:?}): {e}"));
    let deadline = tokio::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = Output {
        success: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(&stdout_path).unwrap(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
    };
    assert!(
        status.is_some(),
        "{name} did not finish within {limit:?}: {output:#?}"
    );
    output
}

/// The python of the e2e virtualenv, created or updated as needed.
async fn venv_python(dir: &Path) -> PathBuf {
    let script = repo_root().join("e2e/scripts/python-venv");
    let output = run(Command::new(&script), "python-venv", dir, VENV_LIMIT).await;
    assert!(output.success, "{} failed: {output:#?}", script.display());
    let python = output
        .stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{} printed no python path", script.display()));
    PathBuf::from(python)
}

/// Installs the chart's ScaledObject CRD and waits until it is Established.
async fn install_scaled_object_crd(sim: &kube_sim::KubeSim) {
    let mut config = kube::Config::new(sim.url().parse().unwrap());
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let path = repo_root().join("charts/keda-rs/crds/keda.sh_scaledobjects.yaml");
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    support::crds::install(&client, &crd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_kubernetes_client_works_unmodified() {
    let dir = std::env::temp_dir().join(format!("kube-sim-python-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let python = venv_python(&dir).await;

    let sim = kube_sim::start(kube_sim::Config::default()).await.unwrap();
    install_scaled_object_crd(&sim).await;
    let kubeconfig = dir.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();

    let mut command = Command::new(&python);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_check.py"))
        .arg(&kubeconfig)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = run(command, "client_check", &dir, CHECKS_LIMIT).await;
    let passed: Vec<&str> = output
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("ok "))
        .collect();
    assert!(
        output.success,
        "client_check.py failed after passing {passed:?}:\n--- stdout\n{}\n--- stderr\n{}",
        output.stdout, output.stderr
    );
    let missing: Vec<&str> = CHECKS
        .iter()
        .copied()
        .filter(|check| !passed.contains(check))
        .collect();
    assert!(
        missing.is_empty(),
        "client_check.py succeeded without passing {missing:?}:\n--- stdout\n{}\n--- stderr\n{}",
        output.stdout,
        output.stderr
    );
    drop(sim);
    std::fs::remove_dir_all(&dir).unwrap();
}
