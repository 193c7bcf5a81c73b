//! A small HTTPS server standing in for an aggregated API server and an admission webhook:
//! it serves one external metric, reviews admission requests, and records who called it.
//! It requires a client certificate signed by kube-sim's front-proxy CA, as a real aggregated
//! server configured from `extension-apiserver-authentication` would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// What the backend saw and serves.
#[derive(Debug, Default)]
pub(crate) struct BackendState {
    /// Value of the external metric `queue`, in milli-units.
    pub(crate) queue_milli: AtomicI64,
    pub(crate) metric_requests: AtomicUsize,
    pub(crate) reviews: AtomicUsize,
    /// TLS connections accepted.
    pub(crate) connections: AtomicUsize,
    pub(crate) remote_users: Mutex<Vec<String>>,
    pub(crate) selectors: Mutex<Vec<String>>,
}

pub(crate) struct Backend {
    pub(crate) ca_pem: String,
    pub(crate) state: Arc<BackendState>,
}

fn server_config(front_proxy_ca: &str, names: &[&str]) -> (rustls::ServerConfig, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(front_proxy_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    (config, ca_cert.pem())
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    state: Arc<BackendState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let user = req
        .headers()
        .get("x-remote-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    state.remote_users.lock().unwrap().push(user);
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let response = match path.as_str() {
        "/apis/external.metrics.k8s.io/v1beta1" => json_response(
            200,
            &json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "external.metrics.k8s.io/v1beta1",
                "resources": [{"name": "externalmetrics", "singularName": "", "namespaced": true, "kind": "ExternalMetricValueList", "verbs": ["get"]}]
            }),
        ),
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/queue" => {
            state.metric_requests.fetch_add(1, Ordering::SeqCst);
            state.selectors.lock().unwrap().push(query);
            let milli = state.queue_milli.load(Ordering::SeqCst);
            json_response(
                200,
                &json!({
                    "kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1", "metadata": {},
                    "items": [{"metricName": "queue", "metricLabels": null, "timestamp": "2026-01-01T00:00:00Z", "value": format!("{milli}m")}]
                }),
            )
        }
        "/validate" => {
            state.reviews.fetch_add(1, Ordering::SeqCst);
            let review: Value = serde_json::from_slice(&body).unwrap_or_default();
            let request = &review["request"];
            let denied = request["object"]["metadata"]["labels"]["deny"] == json!("true");
            let mut response = json!({"uid": request["uid"], "allowed": !denied});
            if denied {
                response["status"] =
                    json!({"code": 403, "message": "label deny=true is not allowed"});
            }
            json_response(
                200,
                &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
            )
        }
        _ => json_response(
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": format!("{path} not found")}),
        ),
    };
    Ok(response)
}

/// Starts the backend on `addr`, trusting `front_proxy_ca` for client certificates and
/// presenting a certificate for `names`.
pub(crate) async fn start_on(addr: SocketAddr, front_proxy_ca: &str, names: &[&str]) -> Backend {
    let (config, ca_pem) = server_config(front_proxy_ca, names);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let state = Arc::new(BackendState::default());
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let state = shared.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Backend { ca_pem, state }
}
