//! The `nats-jetstream` trigger against a real nats-server with JetStream and its monitoring
//! endpoint (started on free ports by `test-server nats-monitoring`): the backlog of a
//! consumer as messages are published, fetched and acknowledged, activation, one request for
//! a burst of reads of every consumer of one account, and errors when the server is gone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]
#![allow(
    clippy::float_cmp,
    reason = "the values compared are exact: small integers"
)]

#[path = "support/counting_proxy.rs"]
mod counting_proxy;
#[path = "support/nats_text.rs"]
mod nats_text;
#[path = "support/test_server.rs"]
mod test_server;

use std::net::SocketAddr;
use std::time::Duration;

use counting_proxy::CountingProxy;
use keda_operator::params::Params;
use keda_operator::scalers::{self, Reading, Scaler, ScalerError, Services, TriggerInput};
use nats_text::NatsText;
use test_server::TestServer;

fn services() -> Services {
    Services::new(
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap(),
    )
}

/// The server's client and monitoring addresses.
fn addrs(server: &TestServer) -> (SocketAddr, String) {
    let client = server.get("client").parse().unwrap();
    let monitoring = server
        .get("monitoring")
        .trim_start_matches("http://")
        .to_owned();
    (client, monitoring)
}

fn trigger(
    index: usize,
    monitoring: &str,
    stream: &str,
    consumer: &str,
    extra: &[(&str, &str)],
) -> TriggerInput {
    TriggerInput::new(
        index,
        "nats-jetstream",
        Params::from_metadata(
            [
                ("natsServerMonitoringEndpoint", monitoring),
                ("account", "$G"),
                ("stream", stream),
                ("consumer", consumer),
            ]
            .into_iter()
            .chain(extra.iter().copied()),
        ),
    )
}

fn name(scaler: &dyn Scaler) -> String {
    scaler.metric_specs()[0].external_name().unwrap().to_owned()
}

/// Reads until the reading is `expected` (the monitoring data follows acknowledgements a
/// moment later); fails with the last reading after 20 s.
async fn reads(scaler: &dyn Scaler, expected: Reading) {
    let metric = name(scaler);
    let mut last = None;
    for _ in 0..200 {
        let reading = scaler.read(&metric).await;
        if reading == Ok(expected) {
            return;
        }
        last = Some(reading);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {expected:?}, last read {last:?}");
}

#[tokio::test]
async fn the_backlog_counts_pending_and_unacknowledged_messages_and_activation_is_strictly_above() {
    let server = TestServer::start("nats-monitoring");
    let (client, monitoring) = addrs(&server);
    let mut nats = NatsText::connect(client).await;
    nats.stream_and_consumer("ORDERS", &["orders.>"], "workers")
        .await;
    let services = services();
    let scaler = scalers::build(
        &trigger(
            0,
            &monitoring,
            "ORDERS",
            "workers",
            &[("activationLagThreshold", "3")],
        ),
        &services,
    )
    .unwrap();
    assert_eq!(name(&*scaler), "s0-nats-jetstream-ORDERS");
    reads(
        &*scaler,
        Reading {
            value: 0.0,
            active: false,
        },
    )
    .await;

    nats.publish("orders.eu", 3).await;
    // 3 is not above the activation threshold of 3.
    reads(
        &*scaler,
        Reading {
            value: 3.0,
            active: false,
        },
    )
    .await;
    nats.publish("orders.us", 2).await;
    reads(
        &*scaler,
        Reading {
            value: 5.0,
            active: true,
        },
    )
    .await;

    // Fetched but not acknowledged: still counted (num_pending 3 + num_ack_pending 2).
    let acks = nats.fetch("ORDERS", "workers", 2).await;
    reads(
        &*scaler,
        Reading {
            value: 5.0,
            active: true,
        },
    )
    .await;
    nats.ack(&acks).await;
    reads(
        &*scaler,
        Reading {
            value: 3.0,
            active: false,
        },
    )
    .await;
    let acks = nats.fetch("ORDERS", "workers", 3).await;
    nats.ack(&acks).await;
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
async fn a_missing_consumer_counts_the_stream_and_a_missing_stream_is_an_error() {
    let server = TestServer::start("nats-monitoring");
    let (client, monitoring) = addrs(&server);
    let mut nats = NatsText::connect(client).await;
    nats.stream_and_consumer("ORDERS", &["orders.>"], "workers")
        .await;
    nats.publish("orders.eu", 5).await;
    let services = services();
    // A consumer that does not exist: the stream's last sequence, as KEDA counts it.
    let missing =
        scalers::build(&trigger(1, &monitoring, "ORDERS", "nobody", &[]), &services).unwrap();
    reads(
        &*missing,
        Reading {
            value: 5.0,
            active: true,
        },
    )
    .await;

    // A stream that does not exist is an error, not 0.
    let unknown =
        scalers::build(&trigger(2, &monitoring, "NOPE", "workers", &[]), &services).unwrap();
    let error = unknown.read(&name(&*unknown)).await.unwrap_err();
    assert_eq!(
        error,
        ScalerError::Source(format!(
            "GET http://{monitoring}/jsz: stream \"NOPE\" not found in account \"$G\""
        ))
    );
    // So is an account the server does not have.
    let other = scalers::build(
        &TriggerInput::new(
            3,
            "nats-jetstream",
            Params::from_metadata([
                ("natsServerMonitoringEndpoint", monitoring.as_str()),
                ("stream", "ORDERS"),
                ("consumer", "workers"),
            ])
            .with_auth([("account", "OTHER")]),
        ),
        &services,
    )
    .unwrap();
    assert_eq!(
        other.read(&name(&*other)).await.unwrap_err().category(),
        "source"
    );
}

#[tokio::test]
async fn a_burst_of_reads_of_one_account_is_one_request() {
    let server = TestServer::start("nats-monitoring");
    let (client, monitoring) = addrs(&server);
    let mut nats = NatsText::connect(client).await;
    nats.stream_and_consumer("A", &["a.>"], "one").await;
    nats.stream_and_consumer("B", &["b.>"], "two").await;
    nats.publish("a.x", 4).await;
    nats.publish("b.x", 6).await;
    let proxy = CountingProxy::start(monitoring.parse().unwrap(), b"GET /jsz").await;
    let proxied = proxy.addr.to_string();
    let services = services();
    let scalers: Vec<Box<dyn Scaler>> = (0..60)
        .map(|i| {
            let (stream, consumer) = if i % 2 == 0 {
                ("A", "one")
            } else {
                ("B", "two")
            };
            scalers::build(&trigger(i % 4, &proxied, stream, consumer, &[]), &services).unwrap()
        })
        .collect();
    assert_eq!(proxy.connections(), 0, "building does no I/O");
    assert_eq!(services.nats.clients(), 1, "one shared URL");
    // Wait until the server shows every message, then count requests.
    reads(
        &*scalers[1],
        Reading {
            value: 6.0,
            active: true,
        },
    )
    .await;
    let before = proxy.hits();
    let readings = futures::future::join_all(scalers.iter().map(|s| async {
        let metric = name(&**s);
        s.read(&metric).await
    }))
    .await;
    for (i, reading) in readings.into_iter().enumerate() {
        let expected = if i % 2 == 0 { 4.0 } else { 6.0 };
        assert_eq!(reading.unwrap().value, expected);
    }
    assert_eq!(proxy.hits() - before, 1, "one request for the burst");
    drop(scalers);
    assert_eq!(services.nats.clients(), 0);
}

#[tokio::test]
async fn a_server_that_is_down_is_an_error_never_zero() {
    let services = services();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let scaler = scalers::build(&trigger(0, &closed, "ORDERS", "workers", &[]), &services).unwrap();
    let error = scaler.read(&name(&*scaler)).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("GET http://{closed}/jsz: ")),
        "{error}"
    );

    // A server that answered, then went away.
    let server = TestServer::start("nats-monitoring");
    let (client, monitoring) = addrs(&server);
    let mut nats = NatsText::connect(client).await;
    nats.stream_and_consumer("GONE", &["gone"], "workers").await;
    nats.publish("gone", 2).await;
    let scaler =
        scalers::build(&trigger(1, &monitoring, "GONE", "workers", &[]), &services).unwrap();
    reads(
        &*scaler,
        Reading {
            value: 2.0,
            active: true,
        },
    )
    .await;
    drop(nats);
    drop(server);
    let error = scaler.read(&name(&*scaler)).await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");

    // Something that is not a monitoring endpoint.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().fallback(|| async { "<html>not nats</html>" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let scaler = scalers::build(&trigger(2, &addr, "ORDERS", "workers", &[]), &services).unwrap();
    let error = scaler.read(&name(&*scaler)).await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "GET http://{addr}/jsz: the answer is not the monitoring JSON"
        )),
        "{error}"
    );
}

#[tokio::test]
async fn in_a_cluster_the_consumer_leader_is_found_and_read() {
    let server = TestServer::start("nats-cluster");
    let (client, monitoring) = addrs(&server);
    let port = monitoring.rsplit_once(':').unwrap().1.to_owned();
    let mut nats = NatsText::connect(client).await;
    // One replica: the stream and its consumer live on one node of the three.
    nats.stream_and_consumer("SPREAD", &["spread.>"], "workers")
        .await;
    nats.publish("spread.x", 3).await;
    let mut without = Vec::new();
    for host in server.get("hosts").split(',') {
        let jsz = reqwest::get(format!(
            "http://{host}:{port}/jsz?acc=$G&consumers=true&config=true"
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        if !jsz.contains("\"SPREAD\"") {
            without.push(host.to_owned());
        }
    }
    assert_eq!(without.len(), 2, "one node holds the stream");

    // Pointed at a node that does not hold the stream, the trigger reads the leader.
    let services = services();
    let endpoint = format!("{}:{port}", without[0]);
    let scaler =
        scalers::build(&trigger(0, &endpoint, "SPREAD", "workers", &[]), &services).unwrap();
    reads(
        &*scaler,
        Reading {
            value: 3.0,
            active: true,
        },
    )
    .await;
    assert_eq!(
        services.nats.clients(),
        2,
        "the configured node and the leader"
    );
    let acks = nats.fetch("SPREAD", "workers", 1).await;
    nats.ack(&acks).await;
    reads(
        &*scaler,
        Reading {
            value: 2.0,
            active: true,
        },
    )
    .await;

    // A stream no node holds is still an error.
    let unknown =
        scalers::build(&trigger(1, &endpoint, "NONE", "workers", &[]), &services).unwrap();
    assert_eq!(
        unknown.read(&name(&*unknown)).await.unwrap_err(),
        ScalerError::Source(format!(
            "GET http://{endpoint}/jsz: no node of the cluster leads consumer \"workers\" of \
             stream \"NONE\" in account \"$G\""
        ))
    );
}

#[tokio::test]
async fn activation_push_wakes_the_loop_when_a_message_arrives_while_inactive() {
    let server = TestServer::start("nats-monitoring");
    let (client, monitoring) = addrs(&server);
    let mut nats = NatsText::connect(client).await;
    nats.stream_and_consumer("PUSHED", &["pushed.>"], "workers")
        .await;
    let services = services();
    let polled = scalers::build(
        &trigger(0, &monitoring, "PUSHED", "workers", &[]),
        &services,
    )
    .unwrap();
    assert!(polled.activity_pushes().is_none(), "push is opt-in");
    let scaler = scalers::build(
        &trigger(
            1,
            &monitoring,
            "PUSHED",
            "workers",
            &[("activationPush", "true")],
        ),
        &services,
    )
    .unwrap();
    reads(
        &*scaler,
        Reading {
            value: 0.0,
            active: false,
        },
    )
    .await;
    let mut pushes = scaler.activity_pushes().unwrap();
    // The subscription is made in the background: publish until a push comes.
    let mut published = 0;
    let first_push = loop {
        nats.publish("pushed.eu", 1).await;
        published += 1;
        tokio::select! {
            push = futures::StreamExt::next(&mut pushes) => break push,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        assert!(published < 100, "no push after {published} messages");
    };
    assert_eq!(first_push, Some(()));
    reads(
        &*scaler,
        Reading {
            value: f64::from(published),
            active: true,
        },
    )
    .await;

    // The stream ends with its scaler.
    drop(scaler);
    let end = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut pushes),
    )
    .await
    .unwrap();
    assert_eq!(end, None);
}

#[tokio::test]
async fn activation_push_gives_up_on_servers_that_require_authentication() {
    // A server that greets as NATS with authentication required, and its monitoring endpoint.
    let nats = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = nats.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = nats.accept().await {
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut socket,
                b"INFO {\"server_id\":\"X\",\"auth_required\":true}\r\n",
            )
            .await;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(socket);
            });
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let monitoring = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route(
        "/varz",
        axum::routing::get(move || async move { axum::Json(serde_json::json!({"port": port})) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let services = services();
    let scaler = scalers::build(
        &trigger(0, &monitoring, "S", "c", &[("activationPush", "true")]),
        &services,
    )
    .unwrap();
    let mut pushes = scaler.activity_pushes().unwrap();
    let end = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut pushes),
    )
    .await
    .unwrap();
    assert_eq!(end, None, "the push stream ends; polling goes on");
}
