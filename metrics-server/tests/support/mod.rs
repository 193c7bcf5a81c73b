//! Helpers shared by the metrics server's integration tests.

use std::net::SocketAddr;

/// `kubectl get --raw <path>` straight at a server with a self-signed certificate, with a bearer
/// token (`token`) the server may or may not accept: (succeeded, stdout, stderr).
pub(crate) async fn kubectl_raw_with_token(
    addr: SocketAddr,
    token: &str,
    path: &str,
) -> (bool, String, String) {
    let out = tokio::process::Command::new("kubectl")
        .args([
            "--server",
            &format!("https://{addr}"),
            "--insecure-skip-tls-verify",
            "--token",
            token,
        ])
        .args(["get", "--raw", path])
        .output()
        .await
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
