//! Scalers against real sources: `metrics-api` against HTTP and HTTPS servers started here, for
//! each body format and each authentication mode, and `kubernetes-workload` against kube-sim.
//!
//! Every test starts its own servers on loopback ports picked by the OS. Nothing asserts how
//! long anything took.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use k8s_openapi::api::core::v1::Pod;
use keda_operator::params::Params;
use keda_operator::scalers::{self, Reading, Scaler, ScalerError, Services, TriggerInput};
use kube::Api;
use kube::api::PostParams;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

const API_KEY: &str = "k3y-s3cret";
/// `user:pw` in base64.
const BASIC: &str = "Basic dXNlcjpwdw==";
const TOKEN: &str = "t0k3n-s3cret";

const JSON: &str = r#"{"components":[{"id":"a1","tasks":32,"mem":"2Ki"}],"count":2.43}"#;
const YAML: &str = "components:\n  - id: a1\n    tasks: 32\n    cpu: 250m\ncount: 2.43\n";
const XML: &str =
    "<stats><queue><depth>7</depth></queue><queue><depth>1.5k</depth></queue></stats>";
const PROMETHEUS: &str = "# HELP queue_depth Items waiting\n# TYPE queue_depth gauge\n\
    queue_depth{queue=\"orders\"} 12\nqueue_depth{queue=\"mail\"} 3\n";

/// A path, extra metadata, the right credentials and wrong ones.
type AuthCase = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<(&'static str, &'static str)>,
    Vec<(&'static str, &'static str)>,
);

/// The requests a test server saw, as `path?query`.
#[derive(Debug, Default)]
struct Seen(Mutex<Vec<String>>);

impl Seen {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn respond(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Serves the fixture bodies; the `/auth/...` paths answer 401 unless the request carries the
/// expected credential.
async fn handle(
    seen: Arc<Seen>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    seen.0.lock().unwrap().push(format!("{path}?{query}"));
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let query_has = |pair: &str| query.split('&').any(|p| p == pair);
    let allowed = |ok: bool| {
        if ok {
            respond(200, JSON)
        } else {
            respond(401, "no")
        }
    };
    let response = match path.as_str() {
        "/json" => respond(200, JSON),
        "/yaml" => respond(200, YAML),
        "/xml" => respond(200, XML),
        "/prometheus" => respond(200, PROMETHEUS),
        "/auth/header" => allowed(header("x-api-key") == API_KEY),
        "/auth/custom-header" => allowed(header("x-token") == API_KEY),
        "/auth/query" => {
            allowed(query_has(&format!("api_key={API_KEY}")) && query_has("region=eu"))
        }
        "/auth/custom-query" => allowed(query_has(&format!("key={API_KEY}"))),
        "/auth/basic" => allowed(header("authorization") == BASIC),
        "/auth/bearer" => allowed(header("authorization") == format!("Bearer {TOKEN}")),
        "/fail" => respond(500, "broken"),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            respond(200, JSON)
        }
        _ => respond(404, "not found"),
    };
    Ok(response)
}

/// Starts a server on a free loopback port, with TLS when `tls` is given.
async fn serve(tls: Option<rustls::ServerConfig>) -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    let acceptor = tls.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config)));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = shared.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(seen.clone(), req));
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                            .await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A client for an address nothing listens on: the metrics-api scaler never uses it.
fn no_kube() -> Services {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    Services::new(kube::Client::try_from(config).unwrap())
}

fn metrics_api(metadata: &[(&str, &str)], auth: &[(&str, &str)]) -> Box<dyn Scaler> {
    let params = Params::from_metadata(metadata.iter().copied()).with_auth(auth.iter().copied());
    scalers::build(&TriggerInput::new(0, "metrics-api", params), &no_kube()).unwrap()
}

/// Reads the trigger's one metric.
async fn read(scaler: &dyn Scaler) -> Result<Reading, ScalerError> {
    let name = scaler.metric_specs()[0].external_name().unwrap().to_owned();
    scaler.read(&name).await
}

fn source_error(result: Result<Reading, ScalerError>) -> String {
    match result {
        Err(ScalerError::Source(message)) => message,
        other => panic!("expected a source error, got {other:?}"),
    }
}

#[tokio::test]
async fn metrics_api_reads_each_format() {
    let (addr, _) = serve(None).await;
    let url = |path: &str| format!("http://{addr}{path}");
    let cases = [
        ("/json", "json", "components.0.tasks", 32.0),
        ("/json", "json", "components.0.mem", 2048.0),
        ("/yaml", "yaml", "count", 2.43),
        ("/yaml", "yaml", "components.0.cpu", 0.25),
        ("/xml", "xml", "stats.queue.0.depth", 7.0),
        ("/xml", "xml", "stats.queue.1.depth", 1500.0),
        (
            "/prometheus",
            "prometheus",
            "queue_depth{queue=\"orders\"}",
            12.0,
        ),
        (
            "/prometheus",
            "prometheus",
            "queue_depth{queue=\"mail\"}",
            3.0,
        ),
    ];
    for (path, format, location, expected) in cases {
        let scaler = metrics_api(
            &[
                ("url", &url(path)),
                ("format", format),
                ("valueLocation", location),
                ("targetValue", "5"),
            ],
            &[],
        );
        assert_eq!(
            read(scaler.as_ref()).await,
            Ok(Reading {
                value: expected,
                active: true
            }),
            "{format} {location}"
        );
    }
}

#[tokio::test]
async fn metrics_api_activation_is_strictly_greater() {
    let (addr, _) = serve(None).await;
    for (activation, active) in [("31.9", true), ("32", false), ("40", false)] {
        let scaler = metrics_api(
            &[
                ("url", &format!("http://{addr}/json")),
                ("valueLocation", "components.0.tasks"),
                ("targetValue", "10"),
                ("activationTargetValue", activation),
            ],
            &[],
        );
        assert_eq!(
            read(scaler.as_ref()).await,
            Ok(Reading {
                value: 32.0,
                active
            }),
            "activation {activation}"
        );
    }
}

#[tokio::test]
async fn metrics_api_sends_each_credential() {
    let (addr, seen) = serve(None).await;
    let base = |path: &str| {
        vec![
            ("url".to_owned(), format!("http://{addr}{path}")),
            ("valueLocation".to_owned(), "components.0.tasks".to_owned()),
            ("targetValue".to_owned(), "5".to_owned()),
        ]
    };
    let cases: Vec<AuthCase> = vec![
        (
            "/auth/header",
            vec![("authModes", "apiKey")],
            vec![("apiKey", API_KEY)],
            vec![("apiKey", "wrong-key")],
        ),
        (
            "/auth/custom-header",
            vec![("authModes", "apiKey"), ("keyParamName", "X-Token")],
            vec![("apiKey", API_KEY)],
            vec![("apiKey", "wrong-key")],
        ),
        (
            "/auth/query?region=eu&api_key=stale",
            vec![("authModes", "apiKey"), ("method", "query")],
            vec![("apiKey", API_KEY)],
            vec![("apiKey", "wrong-key")],
        ),
        (
            "/auth/custom-query",
            vec![("authMode", "apiKey")],
            vec![
                ("apiKey", API_KEY),
                ("method", "query"),
                ("keyParamName", "key"),
            ],
            vec![
                ("apiKey", "wrong-key"),
                ("method", "query"),
                ("keyParamName", "key"),
            ],
        ),
        (
            "/auth/basic",
            vec![("authModes", "basic")],
            vec![("username", "user"), ("password", "pw")],
            vec![("username", "user"), ("password", "wrong-pw")],
        ),
        (
            "/auth/bearer",
            vec![("authModes", "bearer")],
            vec![("token", TOKEN)],
            vec![("bearerToken", "wrong-token")],
        ),
    ];
    for (path, extra, right, wrong) in cases {
        let mut metadata = base(path);
        metadata.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let metadata: Vec<(&str, &str)> = metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();

        let scaler = metrics_api(&metadata, &right);
        assert_eq!(
            read(scaler.as_ref()).await.map(|r| r.value),
            Ok(32.0),
            "{path} with the right credential"
        );

        let scaler = metrics_api(&metadata, &wrong);
        let message = source_error(read(scaler.as_ref()).await);
        let shown_path = path.split('?').next().unwrap();
        assert_eq!(
            message,
            format!("GET http://{addr}{shown_path}: api returned 401"),
            "{path} with a wrong credential"
        );
        for secret in ["wrong-key", "wrong-pw", "wrong-token"] {
            assert!(!message.contains(secret), "{message}");
        }
    }
    // The key replaced the stale one and the other query parameters stayed.
    assert!(
        seen.all()
            .contains(&format!("/auth/query?region=eu&api_key={API_KEY}")),
        "{:?}",
        seen.all()
    );
}

#[tokio::test]
async fn metrics_api_refuses_credentials_in_metadata() {
    let params = Params::from_metadata([
        ("url", "http://127.0.0.1:9/json"),
        ("valueLocation", "count"),
        ("targetValue", "1"),
        ("authModes", "bearer"),
        ("token", TOKEN),
    ]);
    let err = scalers::build(&TriggerInput::new(0, "metrics-api", params), &no_kube()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter \"token\" is a secret and must come from a TriggerAuthentication or the \
         container environment, not from metadata"
    );
    assert!(!err.to_string().contains(TOKEN));
}

/// A CA and a certificate it signed for `names`; the certificate's key as PEM.
struct Issued {
    /// PEM of the CA.
    ca: String,
    /// PEM of the certificate.
    cert: String,
    /// PEM of the certificate's key.
    key: String,
}

fn issue(names: &[&str]) -> Issued {
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
    Issued {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A TLS server config presenting `server` and requiring a client certificate signed by
/// `client_ca_pem`.
fn tls_server(server: &Issued, client_ca_pem: &str) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            CertificateDer::pem_slice_iter(server.cert.as_bytes())
                .map(Result::unwrap)
                .collect(),
            PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap(),
        )
        .unwrap()
}

#[tokio::test]
async fn metrics_api_presents_client_certificates() {
    let server = issue(&["127.0.0.1"]);
    let client = issue(&["metrics-api-client"]);
    let stranger = issue(&["127.0.0.1"]);
    let (addr, _) = serve(Some(tls_server(&server, &client.ca))).await;
    let metadata = |unsafe_ssl: &'static str, auth_modes: &'static str| {
        vec![
            ("url".to_owned(), format!("https://{addr}/json")),
            ("valueLocation".to_owned(), "count".to_owned()),
            ("targetValue".to_owned(), "1".to_owned()),
            ("unsafeSsl".to_owned(), unsafe_ssl.to_owned()),
            ("authModes".to_owned(), auth_modes.to_owned()),
        ]
    };
    let scaler_with = |metadata: &[(String, String)], ca: &str, identity: &Issued| {
        let metadata: Vec<(&str, &str)> = metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        metrics_api(
            &metadata,
            &[
                ("ca", ca),
                ("cert", identity.cert.as_str()),
                ("key", identity.key.as_str()),
            ],
        )
    };

    // The server's CA trusted, the client's certificate presented.
    let scaler = scaler_with(&metadata("false", "tls"), &server.ca, &client);
    assert_eq!(read(scaler.as_ref()).await.map(|r| r.value), Ok(2.43));
    // Reads reuse the trigger's client.
    assert_eq!(read(scaler.as_ref()).await.map(|r| r.value), Ok(2.43));

    // A CA that did not sign the server's certificate: refused, unless unsafeSsl.
    let scaler = scaler_with(&metadata("false", "tls"), &stranger.ca, &client);
    let message = source_error(read(scaler.as_ref()).await);
    assert!(
        message.starts_with(&format!("GET https://{addr}/json: ")),
        "{message}"
    );
    let scaler = scaler_with(&metadata("true", "tls"), &stranger.ca, &client);
    assert_eq!(read(scaler.as_ref()).await.map(|r| r.value), Ok(2.43));

    // A client certificate the server does not trust, and none at all: refused.
    let scaler = scaler_with(&metadata("false", "tls"), &server.ca, &stranger);
    source_error(read(scaler.as_ref()).await);
    let scaler = metrics_api(
        &[
            ("url", &format!("https://{addr}/json")),
            ("valueLocation", "count"),
            ("targetValue", "1"),
            ("unsafeSsl", "true"),
        ],
        &[],
    );
    source_error(read(scaler.as_ref()).await);
}

#[tokio::test]
async fn metrics_api_failures_are_errors_not_zero() {
    let (addr, _) = serve(None).await;
    let scaler_for = |url: String, extra: &[(&'static str, &'static str)]| {
        let mut metadata = vec![
            ("url", url),
            ("valueLocation", "components.0.tasks".to_owned()),
            ("targetValue", "5".to_owned()),
        ];
        metadata.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let metadata: Vec<(&str, &str)> = metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metrics_api(&metadata, &[("apiKey", API_KEY)])
    };

    // Nobody listens: the port of a listener that was closed.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let scaler = scaler_for(
        format!("http://{closed}/json?tenant=a"),
        &[("authModes", "apiKey"), ("method", "query")],
    );
    let message = source_error(read(scaler.as_ref()).await);
    assert!(
        message.starts_with(&format!("GET http://{closed}/json: ")),
        "{message}"
    );
    assert!(
        !message.contains(API_KEY) && !message.contains("tenant"),
        "{message}"
    );

    let scaler = scaler_for(format!("http://{addr}/fail"), &[]);
    assert_eq!(
        source_error(read(scaler.as_ref()).await),
        format!("GET http://{addr}/fail: api returned 500")
    );

    let scaler = scaler_for(format!("http://{addr}/missing"), &[]);
    assert_eq!(
        source_error(read(scaler.as_ref()).await),
        format!("GET http://{addr}/missing: api returned 404")
    );

    // A body in another format than announced, and a location that holds no number.
    let scaler = scaler_for(format!("http://{addr}/xml"), &[]);
    assert_eq!(
        source_error(read(scaler.as_ref()).await),
        format!("GET http://{addr}/xml: the response is not valid JSON")
    );
    let scaler = scaler_for(
        format!("http://{addr}/json"),
        &[("valueLocation", "components.0.id")],
    );
    assert_eq!(
        source_error(read(scaler.as_ref()).await),
        format!(
            "GET http://{addr}/json: valueLocation must point to a number or a quantity string, \
             found \"a1\""
        )
    );

    let scaler = scaler_for(format!("http://{addr}/slow"), &[("timeout", "200")]);
    assert_eq!(
        source_error(read(scaler.as_ref()).await),
        format!("GET http://{addr}/slow: no answer within 200ms")
    );
}

async fn kube_sim() -> (kube_sim::KubeSim, kube::Client) {
    let sim = kube_sim::start(kube_sim::Config {
        namespaces: vec!["shop".into()],
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let mut config = kube::Config::new(sim.url().parse().unwrap());
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    (sim, client)
}

/// Creates a pod in `shop` with `labels`, scheduled on `node` (if any), in `phase`.
async fn create_pod(
    pods: &Api<Pod>,
    name: &str,
    labels: serde_json::Value,
    node: Option<&str>,
    phase: &str,
) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox"}], "nodeName": node},
        "status": {"phase": phase},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

fn workload(namespace: &str, metadata: &[(&str, &str)]) -> TriggerInput {
    let mut input = TriggerInput::new(
        1,
        "kubernetes-workload",
        Params::from_metadata(metadata.iter().copied()),
    );
    namespace.clone_into(&mut input.namespace);
    input
}

#[tokio::test]
async fn kubernetes_workload_counts_pods_that_have_not_terminated() {
    let (_sim, client) = kube_sim().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let backend = json!({"app": "backend"});
    create_pod(&pods, "b1", backend.clone(), Some("node-1"), "Running").await;
    create_pod(&pods, "b2", backend.clone(), Some("node-1"), "Running").await;
    create_pod(&pods, "b3", backend.clone(), Some("node-2"), "Pending").await;
    create_pod(&pods, "b4", backend.clone(), None, "Pending").await;
    create_pod(&pods, "b5", backend.clone(), Some("node-3"), "Succeeded").await;
    create_pod(&pods, "b6", backend.clone(), Some("node-4"), "Failed").await;
    create_pod(
        &pods,
        "c1",
        json!({"app": "backend", "track": "canary"}),
        Some("node-5"),
        "Running",
    )
    .await;
    create_pod(
        &pods,
        "f1",
        json!({"app": "frontend"}),
        Some("node-6"),
        "Running",
    )
    .await;
    // The same labels in another namespace do not count.
    let default_pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_pod(&default_pods, "b1", backend, Some("node-7"), "Running").await;

    let services = Services::new(client);
    let cases = [
        // Running and pending pods count; succeeded and failed ones do not.
        ("app=backend", "false", "4", 5.0, true),
        ("app=backend, track notin (canary)", "false", "3", 4.0, true),
        (
            "app in (backend, frontend), !track",
            "false",
            "5",
            5.0,
            false,
        ),
        // Distinct nodes of such pods; the unscheduled pod has none.
        ("app=backend", "true", "3", 3.0, false),
        ("app=backend", "true", "2.9", 3.0, true),
        ("app=nothing", "false", "0", 0.0, false),
    ];
    for (selector, group_by_node, activation, value, active) in cases {
        let scaler = scalers::build(
            &workload(
                "shop",
                &[
                    ("podSelector", selector),
                    ("value", "1"),
                    ("groupByNode", group_by_node),
                    ("activationValue", activation),
                ],
            ),
            &services,
        )
        .unwrap();
        assert_eq!(
            scaler.metric_specs()[0].external_name(),
            Some("s1-workload-shop")
        );
        assert_eq!(
            scaler.read("s1-workload-shop").await,
            Ok(Reading { value, active }),
            "{selector} groupByNode={group_by_node}"
        );
    }
}

#[tokio::test]
async fn kubernetes_workload_reads_every_page() {
    let (_sim, client) = kube_sim().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    // More than one page of 200.
    for i in 0..230 {
        let phase = if i % 10 == 0 { "Succeeded" } else { "Running" };
        create_pod(
            &pods,
            &format!("w{i}"),
            json!({"app": "worker"}),
            Some("node-1"),
            phase,
        )
        .await;
    }
    let scaler = scalers::build(
        &workload("shop", &[("podSelector", "app=worker"), ("value", "10")]),
        &Services::new(client),
    )
    .unwrap();
    assert_eq!(
        scaler.read("s1-workload-shop").await.map(|r| r.value),
        Ok(207.0)
    );
}

#[tokio::test]
async fn kubernetes_workload_without_an_api_server_is_an_error() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut config = kube::Config::new(format!("http://{closed}").parse().unwrap());
    config.default_retry = false;
    let scaler = scalers::build(
        &workload("shop", &[("podSelector", "app=worker"), ("value", "10")]),
        &Services::new(kube::Client::try_from(config).unwrap()),
    )
    .unwrap();
    let message = source_error(scaler.read("s1-workload-shop").await);
    assert!(
        message.starts_with("listing pods in namespace shop matching \"app=worker\": "),
        "{message}"
    );
}

#[tokio::test]
async fn metrics_api_triggers_on_one_url_share_their_gets() {
    let (addr, seen) = serve(None).await;
    let services = no_kube();
    let url = format!("http://{addr}/json");
    let build = |location: &str| {
        let params = Params::from_metadata([
            ("url", url.as_str()),
            ("valueLocation", location),
            ("targetValue", "10"),
        ]);
        scalers::build(&TriggerInput::new(0, "metrics-api", params), &services).unwrap()
    };
    // Fifty triggers reading two values of one document.
    let triggers: Vec<_> = (0..50)
        .map(|i| {
            build(if i % 2 == 0 {
                "components.0.tasks"
            } else {
                "count"
            })
        })
        .collect();
    let reads = futures::future::join_all(triggers.iter().map(|t| read(t.as_ref()))).await;
    let values: std::collections::BTreeSet<String> = reads
        .iter()
        .map(|r| r.as_ref().unwrap().value.to_string())
        .collect();
    assert_eq!(
        values.len(),
        2,
        "each trigger takes its own value: {values:?}"
    );
    let gets = seen.all().len();
    println!("50 metrics-api triggers on one URL, read at once: {gets} GET");
    assert_eq!(gets, 1, "the reads of a burst share one GET");
    // Reads one after the other are GETs of their own: nothing is served from an old answer.
    read(triggers[0].as_ref()).await.unwrap();
    read(triggers[1].as_ref()).await.unwrap();
    assert_eq!(seen.all().len(), 3);
}
