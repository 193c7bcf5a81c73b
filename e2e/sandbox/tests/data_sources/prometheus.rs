//! `prometheus`: the value of a query over a metric the test exposes. A real Prometheus
//! (started on a free port by `test-server prometheus`) scrapes the test's own `/metrics`
//! endpoint every second; the test changes the value it serves there.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::test_server::TestServer;
use crate::{Scenario, source_host, zero_to_n_to_zero};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_query_scales_zero_to_n_and_back_to_zero() {
    let prometheus = TestServer::start("prometheus");
    let depth = Arc::new(Mutex::new(0_u64));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let served = depth.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let value = *served.lock().unwrap();
            async move {
                format!("# TYPE keda_rs_e2e_queue_depth gauge\nkeda_rs_e2e_queue_depth {value}\n")
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    std::fs::write(
        prometheus.get("targets"),
        format!("[{{\"targets\": [\"{target}\"]}}]"),
    )
    .unwrap();
    let port = prometheus
        .get("address")
        .rsplit_once(':')
        .map(|(_, port)| port.to_owned())
        .unwrap();
    let scenario = Scenario {
        name: "prometheus",
        trigger: json!({"type": "prometheus", "metadata": {
            "serverAddress": format!("http://{}:{port}", source_host()),
            "query": "sum(keda_rs_e2e_queue_depth)",
            "threshold": "5",
            "activationThreshold": "1",
        }}),
        objects: Vec::new(),
        high: 23,
        replicas: 5,
    };
    zero_to_n_to_zero(scenario, |value| {
        *depth.lock().unwrap() = value;
        async {}
    })
    .await;
    drop(prometheus);
}
