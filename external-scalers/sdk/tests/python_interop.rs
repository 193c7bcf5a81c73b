//! Interoperability with an independent gRPC implementation: Python `grpcio`, with stubs that
//! grpcio-tools generates from `proto/externalscaler.proto`, calls a server built with the SDK.
//! `e2e/scripts/python-venv` provides the virtualenv with the versions pinned in
//! `e2e/python-requirements.txt`; `external-scalers/interop/client_check.py` makes the calls and
//! prints `ok <check>` per check that passed. The other way round, a tonic client checks
//! `external-scalers/interop/python_scaler.py`, the independent scaler the operator's tests use.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::float_cmp,
    reason = "a test fails by panicking; the floats compared are exact"
)]

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use keda_external_scaler::Server;
use keda_external_scaler::proto::GetMetricsRequest;
use keda_external_scaler::testing::{
    STEP, client, is_active, metric_specs, metric_value, next_activity,
};
use support::{TestScaler, scaled_object, start};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The longest creating the virtualenv (downloading and installing packages) may take.
const VENV_LIMIT: Duration = Duration::from_secs(600);

/// The longest the Python checks may take; the script stops itself after 120 s.
const CHECKS_LIMIT: Duration = Duration::from_secs(180);

/// What `client_check.py` prints when every check passed, in order.
const CHECKS: &[&str] = &[
    "is_active",
    "get_metric_spec",
    "get_metrics",
    "stream_is_active",
    "status_unavailable",
    "status_invalid_argument",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What one process run printed.
#[derive(Debug)]
struct Output {
    success: bool,
    stdout: String,
    #[allow(dead_code, reason = "shown in failure messages through Debug")]
    stderr: String,
}

/// Runs `command` to completion (killing it after `limit`), its output going to files in `dir`.
async fn run(mut command: Command, name: &str, dir: &Path, limit: Duration) -> Output {
    let stdout_path = dir.join(format!("{name}.stdout"));
    let stderr_path = dir.join(format!("{name}.stderr"));
    command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{name} does not start ({command:?}): {e}"));
    let status = tokio::time::timeout(limit, child.wait()).await;
    let output = |success| Output {
        success,
        stdout: std::fs::read_to_string(&stdout_path).unwrap(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
    };
    if let Ok(status) = status {
        output(status.unwrap().success())
    } else {
        let _ = child.kill().await;
        panic!(
            "{name} did not finish within {limit:?}: {:#?}",
            output(false)
        );
    }
}

/// The python of the e2e virtualenv, created or updated as needed.
async fn venv_python(dir: &Path) -> PathBuf {
    let script = repo_root().join("e2e/scripts/python-venv");
    let venv = run(Command::new(&script), "python-venv", dir, VENV_LIMIT).await;
    assert!(venv.success, "{} failed: {venv:#?}", script.display());
    PathBuf::from(venv.stdout.lines().last().expect("no python path printed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_reads_the_sdk_server() {
    let dir = std::env::temp_dir().join(format!("keda-sdk-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let python = venv_python(&dir).await;

    let (scaler, length) = TestScaler::new(true);
    length.send_replace(7.5);
    let server = start(Server::new(scaler)).await;

    let interop = repo_root().join("external-scalers/interop");
    let mut command = Command::new(&python);
    command
        .arg(interop.join("client_check.py"))
        .arg(server.addr().to_string())
        .current_dir(&interop)
        .env("PYTHONPATH", &interop)
        .env("PYTHONUNBUFFERED", "1");
    let output = run(command, "client_check", &dir, CHECKS_LIMIT).await;

    let passed: Vec<&str> = output
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("ok "))
        .collect();
    assert!(
        output.success && passed == CHECKS,
        "the Python client's checks failed.\npassed: {passed:?}\nexpected: {CHECKS:?}\n{output:#?}"
    );
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `interop/python_scaler.py`, the independent Python scaler other tests drive the operator with,
/// answers a tonic client as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_scaler_answers_a_tonic_client() {
    let dir = std::env::temp_dir().join(format!("keda-sdk-pyscaler-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let python = venv_python(&dir).await;
    let value_file = dir.join("value");
    std::fs::write(&value_file, "3\n").unwrap();

    let interop = repo_root().join("external-scalers/interop");
    let mut child = Command::new(&python)
        .arg(interop.join("python_scaler.py"))
        .args(["--address", "127.0.0.1:0", "--value-file"])
        .arg(&value_file)
        .current_dir(&interop)
        .env("PYTHONPATH", &interop)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(dir.join("python_scaler.stderr")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(CHECKS_LIMIT, lines.next_line())
        .await
        .expect("python_scaler.py printed nothing")
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "python_scaler.py exited: {}",
                std::fs::read_to_string(dir.join("python_scaler.stderr")).unwrap()
            )
        });
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();

    let mut client = client(addr.parse().unwrap()).await;
    let so = scaled_object("w", "ns", &[("scalerAddress", &addr)]);
    assert!(is_active(&mut client, &so).await);
    assert_eq!(
        metric_specs(&mut client, &so).await,
        [("py-queue".to_owned(), 5, 5.0)]
    );
    assert_eq!(metric_value(&mut client, &so, "py-queue").await, (3, 3.0));
    let mut stream = client
        .stream_is_active(so.clone())
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        assert_eq!(
            next_activity(&mut stream, "a stream message").await,
            Some(true)
        );
    }
    drop(stream);

    std::fs::write(&value_file, "0").unwrap();
    assert!(!is_active(&mut client, &so).await);
    let unknown = GetMetricsRequest {
        scaled_object_ref: Some(so),
        metric_name: "other".to_owned(),
    };
    let status = client.get_metrics(unknown).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    child.start_kill().unwrap();
    let _ = tokio::time::timeout(STEP, child.wait()).await;
    let _ = std::fs::remove_dir_all(&dir);
}
