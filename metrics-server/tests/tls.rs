//! TLS of the real binary: the serving certificate is reloaded when its files change, and the
//! connection to the operator uses mTLS when `--cert-dir` holds `ca.crt`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use keda_proto::metrics::metric_service_server::{MetricService, MetricServiceServer};
use keda_proto::metrics::{GetMetricRequest, GetMetricResponse, MetricSample};
use rustls::pki_types::ServerName;
use tokio::io::AsyncBufReadExt;

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("keda-rs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A certificate for `names` usable by servers and clients, self-signed or signed by `issuer`:
/// (cert PEM, key PEM, cert DER).
fn certificate(
    names: &[&str],
    issuer: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

async fn spawn_server(args: &[&str]) -> (SocketAddr, tokio::process::Child) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keda-metrics-apiserver"))
        .args([
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            "0",
            "--insecure-skip-auth",
            "--metrics-bind-address",
            "0",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (
        line.rsplit("https://").next().unwrap().parse().unwrap(),
        child,
    )
}

/// The certificate the server presents right now.
async fn served_certificate(addr: SocketAddr) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(kube_sim::upstream::AcceptAny::default()))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    // Replace both files, as a Secret volume update does.
    std::fs::write(dir.join("tls.key.new"), key).unwrap();
    std::fs::write(dir.join("tls.crt.new"), cert).unwrap();
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_certificate_is_reloaded_when_its_files_change() {
    let dir = scratch("reload");
    let (cert_a, key_a, der_a) = certificate(&["localhost"], None);
    write_pair(&dir, &cert_a, &key_a);
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    let (addr, _child) = spawn_server(&[
        "--tls-cert-file",
        cert_path.to_str().unwrap(),
        "--tls-private-key-file",
        key_path.to_str().unwrap(),
        "--metrics-service-address",
        "127.0.0.1:1",
    ])
    .await;
    assert_eq!(served_certificate(addr).await, der_a);
    // File times have one-second granularity on some filesystems: make the change visible.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (cert_b, key_b, der_b) = certificate(&["localhost"], None);
    write_pair(&dir, &cert_b, &key_b);
    let mut served = Vec::new();
    for _ in 0..100 {
        served = served_certificate(addr).await;
        if served == der_b {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served, der_b,
        "the new certificate is served without a restart"
    );
}

struct Answering;

#[tonic::async_trait]
impl MetricService for Answering {
    async fn get_metric(
        &self,
        request: tonic::Request<GetMetricRequest>,
    ) -> Result<tonic::Response<GetMetricResponse>, tonic::Status> {
        let r = request.into_inner();
        Ok(tonic::Response::new(GetMetricResponse {
            samples: vec![MetricSample {
                metric_name: r.metric_name,
                milli_value: 7000,
                timestamp_unix_millis: 0,
                source: 1,
            }],
        }))
    }
}

async fn kubectl_raw(addr: SocketAddr, path: &str) -> (bool, String, String) {
    support::kubectl_raw_with_token(addr, "unused", path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_is_reached_over_mtls_when_the_cert_dir_has_a_ca() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let (server_cert, server_key, _) = certificate(&["keda-operator.keda.svc"], Some(&issuer));
    let (client_cert, client_key, _) =
        certificate(&["keda-metrics-apiserver.keda.svc"], Some(&issuer));

    // An operator stand-in that demands a client certificate from the same CA.
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &server_cert,
            &server_key,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca_cert.pem()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(MetricServiceServer::new(Answering));
    tokio::spawn(server.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));

    let dir = scratch("mtls");
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    write_pair(&dir, &client_cert, &client_key);
    let path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-queue?labelSelector=scaledobject.keda.sh%2Fname%3Dorders";
    let (addr, _child) = spawn_server(&[
        "--cert-dir",
        dir.to_str().unwrap(),
        "--metrics-service-address",
        &operator.to_string(),
        "--metrics-service-grpc-authority",
        "keda-operator.keda.svc",
    ])
    .await;
    let (ok, out, err) = kubectl_raw(addr, path).await;
    assert!(ok, "{err}");
    assert!(out.contains("\"value\":\"7\""), "{out}");

    // Without the certificates, the operator refuses the connection and the HPA gets a 503.
    let (plain, _plain_child) =
        spawn_server(&["--metrics-service-address", &operator.to_string()]).await;
    let (ok, _, err) = kubectl_raw(plain, path).await;
    assert!(!ok && err.contains("ServiceUnavailable"), "{err}");
}
