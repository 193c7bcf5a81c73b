//! The `prometheus` trigger against a real Prometheus (started on a free port by
//! `test-server prometheus`): constant queries answered at once, a scraped metric the test
//! controls crossing the activation threshold, empty and multi-element results, one request
//! for a burst of reads, and errors when the server is gone. Headers and credentials, which
//! Prometheus itself does not check, are tested against a small HTTP server of the test that
//! records what it was sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]
#![allow(
    clippy::float_cmp,
    reason = "the values compared are exact: decoded from short decimal texts"
)]

#[path = "support/counting_proxy.rs"]
mod counting_proxy;
#[path = "support/test_server.rs"]
mod test_server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use counting_proxy::CountingProxy;
use keda_operator::params::Params;
use keda_operator::scalers::{self, Reading, Scaler, ScalerError, Services, TriggerInput};
use test_server::TestServer;

fn services() -> Services {
    Services::new(
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap(),
    )
}

fn trigger(index: usize, server: &str, query: &str, extra: &[(&str, &str)]) -> TriggerInput {
    TriggerInput::new(
        index,
        "prometheus",
        Params::from_metadata(
            [
                ("serverAddress", server),
                ("query", query),
                ("threshold", "5"),
            ]
            .into_iter()
            .chain(extra.iter().copied()),
        ),
    )
}

fn name(scaler: &dyn Scaler) -> String {
    scaler.metric_specs()[0].external_name().unwrap().to_owned()
}

async fn read(scaler: &dyn Scaler) -> Result<Reading, ScalerError> {
    scaler.read(&name(scaler)).await
}

/// Reads until the reading is `expected` (scrapes happen every second); fails with the last
/// reading after 30 s.
async fn reads(scaler: &dyn Scaler, expected: Reading) {
    let mut last = None;
    for _ in 0..300 {
        let reading = read(scaler).await;
        if reading == Ok(expected) {
            return;
        }
        last = Some(reading);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {expected:?}, last read {last:?}");
}

#[tokio::test]
async fn constant_queries_and_what_keda_makes_of_empty_and_multiple_results() {
    let server = TestServer::start("prometheus");
    let address = server.get("address");
    let services = services();
    let scaler = scalers::build(&trigger(2, address, "vector(3)", &[]), &services).unwrap();
    assert_eq!(name(&*scaler), "s2-prometheus");
    assert_eq!(
        read(&*scaler).await,
        Ok(Reading {
            value: 3.0,
            active: true
        })
    );
    // Active only strictly above the activation threshold.
    let at = scalers::build(
        &trigger(0, address, "vector(3)", &[("activationThreshold", "3")]),
        &services,
    )
    .unwrap();
    assert_eq!(
        read(&*at).await,
        Ok(Reading {
            value: 3.0,
            active: false
        })
    );
    let above = scalers::build(
        &trigger(0, address, "vector(3.25)", &[("activationThreshold", "3")]),
        &services,
    )
    .unwrap();
    assert_eq!(
        read(&*above).await,
        Ok(Reading {
            value: 3.25,
            active: true
        })
    );
    // A scalar result is read as well.
    let one_scalar =
        scalers::build(&trigger(0, address, "scalar(vector(4))", &[]), &services).unwrap();
    assert_eq!(read(&*one_scalar).await.unwrap().value, 4.0);
    // namespace and queryParameters travel with the query (Prometheus ignores them).
    let extras = scalers::build(
        &trigger(
            0,
            address,
            "vector(6)",
            &[("namespace", "team-a"), ("queryParameters", "dedup=true")],
        ),
        &services,
    )
    .unwrap();
    assert_eq!(read(&*extras).await.unwrap().value, 6.0);

    // An empty result is 0 by default, an error with ignoreNullValues false.
    let absent = "keda_rs_no_such_metric";
    let lenient = scalers::build(&trigger(0, address, absent, &[]), &services).unwrap();
    assert_eq!(
        read(&*lenient).await,
        Ok(Reading {
            value: 0.0,
            active: false
        })
    );
    let strict = scalers::build(
        &trigger(0, address, absent, &[("ignoreNullValues", "false")]),
        &services,
    )
    .unwrap();
    let error = read(&*strict).await.unwrap_err();
    assert_eq!(
        error,
        ScalerError::Source(format!(
            "GET {address}/api/v1/query: prometheus metrics 'prometheus' target may be lost, the \
             result is empty"
        ))
    );
    // Read at the same moment, each trigger still reads the answer its own way.
    let (lenient_reading, strict_reading) = futures::join!(read(&*lenient), read(&*strict));
    assert_eq!(lenient_reading.unwrap().value, 0.0);
    assert_eq!(strict_reading.unwrap_err().category(), "source");
    // NaN likewise.
    let nan = scalers::build(
        &trigger(0, address, "vector(0/0)", &[("ignoreNullValues", "false")]),
        &services,
    )
    .unwrap();
    assert_eq!(
        read(&*nan).await.unwrap_err().to_string(),
        format!("GET {address}/api/v1/query: prometheus query returns NaN")
    );

    // Two elements are an error.
    let two = r#"vector(1) or label_replace(vector(2), "a", "b", "", "")"#;
    let multiple = scalers::build(&trigger(0, address, two, &[]), &services).unwrap();
    assert_eq!(
        read(&*multiple).await.unwrap_err().to_string(),
        format!("GET {address}/api/v1/query: prometheus query {two} returned multiple elements")
    );
    // A query Prometheus refuses: its reason is in the error.
    let bad = scalers::build(&trigger(0, address, "sum(", &[]), &services).unwrap();
    let error = read(&*bad).await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "GET {address}/api/v1/query: prometheus query api returned error. status: 400: "
        )),
        "{error}"
    );
}

/// What the metrics endpoint of the test serves.
#[derive(Clone, Default)]
struct Exposed(Arc<Mutex<f64>>);

async fn metrics(State(value): State<Exposed>) -> String {
    format!(
        "# TYPE keda_rs_queue_depth gauge\nkeda_rs_queue_depth{{queue=\"orders\"}} {}\n",
        value.0.lock().unwrap()
    )
}

#[tokio::test]
async fn a_scraped_metric_the_test_controls_crosses_the_activation_threshold() {
    let server = TestServer::start("prometheus");
    let exposed = Exposed::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(exposed.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    std::fs::write(
        server.get("targets"),
        format!("[{{\"targets\": [\"{target}\"]}}]"),
    )
    .unwrap();

    let services = services();
    let query = r#"sum(keda_rs_queue_depth{queue="orders"})"#;
    let scaler = scalers::build(
        &trigger(
            0,
            server.get("address"),
            query,
            &[("activationThreshold", "2")],
        ),
        &services,
    )
    .unwrap();
    *exposed.0.lock().unwrap() = 2.0;
    reads(
        &*scaler,
        Reading {
            value: 2.0,
            active: false,
        },
    )
    .await;
    *exposed.0.lock().unwrap() = 9.0;
    reads(
        &*scaler,
        Reading {
            value: 9.0,
            active: true,
        },
    )
    .await;
    *exposed.0.lock().unwrap() = 0.0;
    reads(
        &*scaler,
        Reading {
            value: 0.0,
            active: false,
        },
    )
    .await;
}

#[tokio::test]
async fn a_burst_of_reads_of_one_query_is_one_request() {
    let server = TestServer::start("prometheus");
    let address = server.get("address");
    let upstream = address.trim_start_matches("http://").parse().unwrap();
    let proxy = CountingProxy::start(upstream, b"GET /api/v1/query").await;
    let proxied = format!("http://{}", proxy.addr);
    let services = services();
    let scalers: Vec<Box<dyn Scaler>> = (0..50)
        .map(|i| {
            let query = if i % 2 == 0 { "vector(7)" } else { "vector(8)" };
            scalers::build(&trigger(i % 3, &proxied, query, &[]), &services).unwrap()
        })
        .collect();
    assert_eq!(proxy.connections(), 0, "building does no I/O");
    assert_eq!(services.prometheus.clients(), 1);
    for burst in 1..=2 {
        let readings = futures::future::join_all(scalers.iter().map(|s| read(&**s))).await;
        for (i, reading) in readings.into_iter().enumerate() {
            assert_eq!(reading.unwrap().value, if i % 2 == 0 { 7.0 } else { 8.0 });
        }
        assert_eq!(proxy.hits(), 2 * burst, "one request per query and burst");
    }
    drop(scalers);
    assert_eq!(services.prometheus.clients(), 0);
}

#[tokio::test]
async fn a_server_that_is_down_is_an_error_never_zero() {
    let services = services();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let address = format!("http://{closed}");
    let scaler = scalers::build(&trigger(0, &address, "vector(1)", &[]), &services).unwrap();
    let error = read(&*scaler).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("GET {address}/api/v1/query: ")),
        "{error}"
    );

    let server = TestServer::start("prometheus");
    let scaler = scalers::build(
        &trigger(0, server.get("address"), "vector(1)", &[]),
        &services,
    )
    .unwrap();
    assert_eq!(read(&*scaler).await.unwrap().value, 1.0);
    drop(server);
    assert_eq!(read(&*scaler).await.unwrap_err().category(), "source");
}

/// A request's target and headers.
type Request = (String, Vec<(String, String)>);

/// A stand-in query API that records each request's target and headers, and answers a
/// one-sample vector (or 401 once told to refuse).
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Request>>>,
    refusing: Arc<Mutex<bool>>,
}

async fn record(State(recorder): State<Recorder>, request: axum::extract::Request) -> Response {
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    recorder
        .seen
        .lock()
        .unwrap()
        .push((request.uri().to_string(), headers));
    if *recorder.refusing.lock().unwrap() {
        return (StatusCode::UNAUTHORIZED, "no").into_response();
    }
    axum::Json(
        serde_json::json!({"status": "success", "data": {"resultType": "vector",
        "result": [{"metric": {}, "value": [1_700_000_000.5, "12.5"]}]}}),
    )
    .into_response()
}

#[tokio::test]
async fn headers_query_parameters_and_credentials_reach_the_server() {
    let recorder = Recorder::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(record)
        .with_state(recorder.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let services = services();
    let base = format!("http://{addr}/prefix/");
    let with_auth = |modes: &str, auth: &[(&str, &str)]| {
        let mut input = trigger(
            0,
            &base,
            "sum(up)",
            &[
                ("authModes", modes),
                ("customHeaders", "X-Scope-OrgID=tenant-7,X-Other=o"),
                ("namespace", "team-a"),
                ("queryParameters", "dedup=true"),
            ],
        );
        input.params = input.params.with_auth(auth.iter().copied());
        scalers::build(&input, &services).unwrap()
    };
    let last = || recorder.seen.lock().unwrap().last().cloned().unwrap();
    let header = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };

    let bearer = with_auth("bearer", &[("bearerToken", "tok-2c9d")]);
    assert_eq!(read(&*bearer).await.unwrap().value, 12.5);
    let (target, headers) = last();
    assert!(
        target.starts_with("/prefix/api/v1/query?query=sum%28up%29&time=20"),
        "{target}"
    );
    assert!(target.ends_with("&namespace=team-a&dedup=true"), "{target}");
    assert_eq!(
        header(&headers, "authorization").as_deref(),
        Some("Bearer tok-2c9d")
    );
    assert_eq!(
        header(&headers, "x-scope-orgid").as_deref(),
        Some("tenant-7")
    );
    assert_eq!(header(&headers, "x-other").as_deref(), Some("o"));

    let basic = with_auth("basic", &[("username", "u"), ("password", "p")]);
    read(&*basic).await.unwrap();
    assert_eq!(
        header(&last().1, "authorization").as_deref(),
        Some("Basic dTpw")
    );

    let custom = with_auth(
        "custom",
        &[
            ("customAuthHeader", "X-Api-Token"),
            ("customAuthValue", "cv-91a0"),
        ],
    );
    read(&*custom).await.unwrap();
    assert_eq!(header(&last().1, "x-api-token").as_deref(), Some("cv-91a0"));

    // A refused credential is a source error that shows neither the token nor the query.
    *recorder.refusing.lock().unwrap() = true;
    let error = read(&*bearer).await.unwrap_err();
    assert_eq!(
        error,
        ScalerError::Source(format!(
            "GET http://{addr}/prefix/api/v1/query: prometheus query api returned error. status: 401"
        ))
    );
}
