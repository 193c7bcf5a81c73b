//! The `rabbitmq` trigger against a real RabbitMQ with the management plugin, started for
//! this test binary by `external-scalers/scripts/test-server rabbitmq-management`: queue
//! lengths over AMQP and HTTP, activation, regular expressions with each operation, ready
//! messages only, the publish rate, one shared AMQP connection and one declare for a burst of
//! reads, and errors (never 0) when the queue or the broker is missing. Each test works on
//! queues of its own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]
#![allow(
    clippy::float_cmp,
    reason = "the values compared are exact: message counts"
)]

#[path = "support/counting_proxy.rs"]
mod counting_proxy;
#[path = "support/test_server.rs"]
mod test_server;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use amqprs::BasicProperties;
use amqprs::channel::{BasicGetArguments, BasicPublishArguments, Channel, QueueDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use counting_proxy::CountingProxy;
use keda_operator::params::Params;
use keda_operator::scalers::{
    self, MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput,
};
use keda_operator_crd::MetricTargetType;
use test_server::TestServer;

/// The broker of this test binary (it stops when the binary exits and its stdin closes).
fn broker() -> &'static TestServer {
    static BROKER: OnceLock<TestServer> = OnceLock::new();
    BROKER.get_or_init(|| TestServer::start("rabbitmq-management"))
}

fn amqp_addr() -> SocketAddr {
    broker().get("amqp").parse().unwrap()
}

fn management() -> String {
    broker().get("management").to_owned()
}

fn unique(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "keda-rs-test.{name}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn services() -> Services {
    Services::new(
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap(),
    )
}

/// A trigger whose host (with its password) comes from a TriggerAuthentication.
fn trigger(index: usize, host: &str, extra: &[(&str, &str)]) -> TriggerInput {
    let params = Params::from_metadata(extra.iter().copied()).with_auth([("host", host)]);
    TriggerInput::new(index, "rabbitmq", params)
}

fn amqp_host(addr: SocketAddr) -> String {
    format!("amqp://guest:guest@{addr}/")
}

fn name(scaler: &dyn Scaler) -> String {
    scaler.metric_specs()[0].external_name().unwrap().to_owned()
}

/// A channel on a connection of the test's own.
async fn channel() -> (Connection, Channel) {
    let addr = amqp_addr();
    let connection = Connection::open(&OpenConnectionArguments::new(
        &addr.ip().to_string(),
        addr.port(),
        "guest",
        "guest",
    ))
    .await
    .unwrap();
    let channel = connection.open_channel(None).await.unwrap();
    (connection, channel)
}

async fn declare(channel: &Channel, queue: &str) {
    channel
        .queue_declare(QueueDeclareArguments::new(queue).auto_delete(true).finish())
        .await
        .unwrap();
}

async fn publish(channel: &Channel, queue: &str, count: usize) {
    for i in 0..count {
        channel
            .basic_publish(
                BasicProperties::default(),
                format!("message {i}").into_bytes(),
                BasicPublishArguments::new("", queue),
            )
            .await
            .unwrap();
    }
}

/// Reads until `done` holds (the management API's statistics lag), at most 30 s.
async fn read_until(
    scaler: &dyn Scaler,
    done: impl Fn(&Reading) -> bool,
) -> Result<Reading, ScalerError> {
    let metric = name(scaler);
    let mut last = scaler.read(&metric).await;
    for _ in 0..150 {
        if last.as_ref().is_ok_and(&done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = scaler.read(&metric).await;
    }
    last
}

#[tokio::test]
async fn amqp_reads_the_queue_length_and_activation_is_strictly_above_the_threshold() {
    let queue = unique("amqp");
    let (_connection, channel) = channel().await;
    declare(&channel, &queue).await;
    let services = services();
    let scaler = scalers::build(
        &trigger(
            3,
            &amqp_host(amqp_addr()),
            &[
                ("queueName", queue.as_str()),
                ("mode", "QueueLength"),
                ("value", "4"),
                ("activationValue", "2"),
            ],
        ),
        &services,
    )
    .unwrap();
    let expected = format!("s3-rabbitmq-{}", queue.replace('.', "-"));
    assert_eq!(
        scaler.metric_specs(),
        vec![MetricSpec::External {
            name: expected.clone(),
            target_type: MetricTargetType::AverageValue,
            target: 4.0,
        }]
    );
    let read = || scaler.read(&expected);
    assert_eq!(
        read().await.unwrap(),
        Reading {
            value: 0.0,
            active: false
        }
    );
    publish(&channel, &queue, 2).await;
    assert_eq!(
        read_until(&*scaler, |r| r.value == 2.0).await.unwrap(),
        Reading {
            value: 2.0,
            active: false
        }
    );
    publish(&channel, &queue, 1).await;
    assert_eq!(
        read_until(&*scaler, |r| r.value == 3.0).await.unwrap(),
        Reading {
            value: 3.0,
            active: true
        }
    );

    // A queue that does not exist is an error naming it, and the connection stays usable.
    let missing = scalers::build(
        &trigger(
            0,
            &amqp_host(amqp_addr()),
            &[("queueName", "keda-rs-test.no-such-queue")],
        ),
        &services,
    )
    .unwrap();
    let error = missing.read(&name(&*missing)).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("queue \"keda-rs-test.no-such-queue\" does not exist"),
        "{error}"
    );
    assert_eq!(read().await.unwrap().value, 3.0);
    assert_eq!(services.rabbitmq.amqp.clients(), 1);

    // Wrong credentials and a missing virtual host are errors that show no password.
    for (host, extra) in [
        (format!("amqp://guest:wrong-s3cret@{}/", amqp_addr()), None),
        (
            amqp_host(amqp_addr()),
            Some(("vhostName", "keda-rs-no-such-vhost")),
        ),
    ] {
        let mut params = vec![("queueName", queue.as_str())];
        params.extend(extra);
        let scaler = scalers::build(&trigger(0, &host, &params), &services).unwrap();
        let error = scaler.read(&name(&*scaler)).await.unwrap_err();
        assert_eq!(error.category(), "source", "{error}");
        assert!(!error.to_string().contains("wrong-s3cret"), "{error}");
    }
}

#[tokio::test]
async fn http_reads_lengths_ready_messages_and_regex_operations() {
    let prefix = unique("http");
    let (a, b) = (format!("{prefix}.a"), format!("{prefix}.b"));
    let (_connection, channel) = channel().await;
    declare(&channel, &a).await;
    declare(&channel, &b).await;
    publish(&channel, &a, 3).await;
    publish(&channel, &b, 1).await;
    let host = format!(
        "http://guest:guest@{}/",
        management().trim_start_matches("http://")
    );
    let services = services();
    let build =
        |extra: &[(&str, &str)]| scalers::build(&trigger(0, &host, extra), &services).unwrap();

    let single = build(&[("queueName", a.as_str()), ("activationValue", "2")]);
    assert_eq!(
        read_until(&*single, |r| r.value == 3.0).await.unwrap(),
        Reading {
            value: 3.0,
            active: true
        }
    );
    let pattern = format!("^{}\\.[ab]$", prefix.replace('.', "\\."));
    for (operation, expected) in [("sum", 4.0), ("max", 3.0), ("avg", 2.0)] {
        let scaler = build(&[
            ("queueName", pattern.as_str()),
            ("useRegex", "true"),
            ("operation", operation),
        ]);
        let reading = read_until(&*scaler, |r| r.value == expected).await.unwrap();
        assert_eq!(reading.value, expected, "{operation}");
    }
    // More matching queues than pageSize is an error, not a partial sum.
    let paged = build(&[
        ("queueName", pattern.as_str()),
        ("useRegex", "true"),
        ("pageSize", "1"),
    ]);
    let error = paged.read(&name(&*paged)).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("matches more queues than pageSize (1)"),
        "{error}"
    );

    // A message fetched but not acknowledged counts unless excludeUnacknowledged.
    let got = channel.basic_get(BasicGetArguments::new(&a)).await.unwrap();
    assert!(got.is_some());
    let ready = build(&[("queueName", a.as_str()), ("excludeUnacknowledged", "true")]);
    assert_eq!(
        read_until(&*ready, |r| r.value == 2.0).await.unwrap().value,
        2.0
    );
    assert_eq!(
        read_until(&*single, |r| r.value == 3.0)
            .await
            .unwrap()
            .value,
        3.0
    );

    // A queue that does not exist is an error.
    let missing = build(&[("queueName", "keda-rs-test.no-such-queue")]);
    let error = missing.read(&name(&*missing)).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
    assert!(error.to_string().contains("answered 404"), "{error}");
    // Wrong credentials too, without showing them.
    let wrong = scalers::build(
        &trigger(
            0,
            &host.replace("guest:guest", "guest:wrong-s3cret"),
            &[("queueName", a.as_str())],
        ),
        &services,
    )
    .unwrap();
    let error = wrong.read(&name(&*wrong)).await.unwrap_err();
    assert!(error.to_string().contains("answered 401"), "{error}");
    assert!(!error.to_string().contains("wrong-s3cret"), "{error}");
}

#[tokio::test]
async fn http_message_rate_follows_publishing() {
    let queue = unique("rate");
    let (_connection, channel) = channel().await;
    declare(&channel, &queue).await;
    let host = format!(
        "http://guest:guest@{}/",
        management().trim_start_matches("http://")
    );
    let services = services();
    let scaler = scalers::build(
        &trigger(
            0,
            &host,
            &[
                ("queueName", queue.as_str()),
                ("mode", "MessageRate"),
                ("value", "5"),
                ("activationValue", "1000"),
            ],
        ),
        &services,
    )
    .unwrap();
    let before = read_until(&*scaler, |_| true).await.unwrap();
    assert_eq!(before.value, 0.0);
    assert!(!before.active);
    let publisher = {
        let queue = queue.clone();
        tokio::spawn(async move {
            loop {
                publish(&channel, &queue, 5).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let reading = read_until(&*scaler, |r| r.value > 10.0).await.unwrap();
    publisher.abort();
    assert!(reading.value > 10.0, "{reading:?}");
}

#[tokio::test]
async fn a_hundred_triggers_share_one_connection_and_a_burst_of_reads_is_one_declare() {
    // queue.declare: class 50, method 10.
    let proxy = CountingProxy::start(amqp_addr(), &[0, 50, 0, 10]).await;
    let queue = unique("burst");
    let (_connection, channel) = channel().await;
    declare(&channel, &queue).await;
    publish(&channel, &queue, 7).await;
    let services = services();
    let host = amqp_host(proxy.addr);
    let scalers: Vec<Box<dyn Scaler>> = (0..100)
        .map(|i| {
            let mut input = trigger(i % 3, &host, &[("queueName", queue.as_str())]);
            input.scaled_object = format!("so-{i}");
            scalers::build(&input, &services).unwrap()
        })
        .collect();
    let names: Vec<String> = scalers.iter().map(|s| name(&**s)).collect();
    assert_eq!(
        proxy.connections(),
        0,
        "nothing connects when triggers are built"
    );
    assert_eq!(services.rabbitmq.amqp.clients(), 1);
    // Wait until the 7 messages are in the queue.
    assert_eq!(
        read_until(&*scalers[0], |r| r.value == 7.0)
            .await
            .unwrap()
            .value,
        7.0
    );
    let before = proxy.hits();
    for burst in 1..=2 {
        let readings = futures::future::join_all(
            scalers
                .iter()
                .zip(&names)
                .map(|(scaler, name)| scaler.read(name)),
        )
        .await;
        for reading in readings {
            assert_eq!(
                reading.unwrap(),
                Reading {
                    value: 7.0,
                    active: true
                }
            );
        }
        assert_eq!(proxy.connections(), 1, "one shared connection");
        assert_eq!(proxy.hits() - before, burst, "one declare per burst");
    }
    drop(scalers);
    assert_eq!(services.rabbitmq.amqp.clients(), 0);
}

#[tokio::test]
async fn a_broker_that_is_down_is_an_error_never_zero() {
    let services = services();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for host in [
        format!("amqp://guest:s3cret@{closed}/"),
        format!("http://guest:s3cret@{closed}/"),
    ] {
        let scaler =
            scalers::build(&trigger(0, &host, &[("queueName", "jobs")]), &services).unwrap();
        let error = scaler.read(&name(&*scaler)).await.unwrap_err();
        assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
        assert!(error.to_string().contains(&closed.to_string()), "{error}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    // A broker that goes away after it answered.
    let proxy = CountingProxy::start(amqp_addr(), &[0, 50, 0, 10]).await;
    let queue = unique("down");
    let (_connection, channel) = channel().await;
    declare(&channel, &queue).await;
    let scaler = scalers::build(
        &trigger(0, &amqp_host(proxy.addr), &[("queueName", queue.as_str())]),
        &services,
    )
    .unwrap();
    assert_eq!(scaler.read(&name(&*scaler)).await.unwrap().value, 0.0);
    proxy.stop();
    let error = scaler.read(&name(&*scaler)).await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
}

#[tokio::test]
async fn http_triggers_share_a_client_and_a_burst_of_reads_is_one_request() {
    let management: SocketAddr = management().trim_start_matches("http://").parse().unwrap();
    let proxy = CountingProxy::start(management, b"GET /api/queues/").await;
    let queue = unique("http-burst");
    let (_connection, channel) = channel().await;
    declare(&channel, &queue).await;
    publish(&channel, &queue, 5).await;
    let services = services();
    let host = format!("http://guest:guest@{}/", proxy.addr);
    let scalers: Vec<Box<dyn Scaler>> = (0..50)
        .map(|i| {
            scalers::build(
                &trigger(i % 2, &host, &[("queueName", queue.as_str())]),
                &services,
            )
            .unwrap()
        })
        .collect();
    let names: Vec<String> = scalers.iter().map(|s| name(&**s)).collect();
    assert_eq!(
        proxy.connections(),
        0,
        "nothing connects when triggers are built"
    );
    assert_eq!(services.rabbitmq.http.clients(), 1);
    assert_eq!(
        read_until(&*scalers[0], |r| r.value == 5.0)
            .await
            .unwrap()
            .value,
        5.0
    );
    for _ in 0..2 {
        let before = proxy.hits();
        let readings = futures::future::join_all(
            scalers
                .iter()
                .zip(&names)
                .map(|(scaler, name)| scaler.read(name)),
        )
        .await;
        for reading in readings {
            assert_eq!(reading.unwrap().value, 5.0);
        }
        assert_eq!(proxy.hits() - before, 1, "one request per burst");
    }
    drop(scalers);
    assert_eq!(services.rabbitmq.http.clients(), 0);
}

#[tokio::test]
async fn amqp_over_tls_checks_the_broker_certificate() {
    let amqps: SocketAddr = broker().get("amqps").parse().unwrap();
    let ca = std::fs::read_to_string(broker().get("ca")).unwrap();
    let queue = unique("tls");
    let (_connection, channel) = channel().await;
    declare(&channel, &queue).await;
    publish(&channel, &queue, 2).await;
    let services = services();
    // The certificate names localhost and 127.0.0.1.
    let host = format!("amqps://guest:guest@localhost:{}/", amqps.port());
    let build = |metadata: &[(&str, &str)], auth: &[(&str, &str)]| {
        let params = Params::from_metadata(
            [("queueName", queue.as_str())]
                .into_iter()
                .chain(metadata.iter().copied()),
        )
        .with_auth(
            [("host", host.as_str())]
                .into_iter()
                .chain(auth.iter().copied()),
        );
        scalers::build(&TriggerInput::new(0, "rabbitmq", params), &services).unwrap()
    };

    let with_ca = build(&[], &[("tls", "enable"), ("ca", ca.as_str())]);
    assert_eq!(
        read_until(&*with_ca, |r| r.value == 2.0)
            .await
            .unwrap()
            .value,
        2.0
    );
    // Without the broker's CA the certificate is refused.
    let without_ca = build(&[], &[]);
    let error = without_ca.read(&name(&*without_ca)).await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");
    // unsafeSsl takes any certificate.
    let unsafe_ssl = build(&[("unsafeSsl", "true")], &[]);
    assert_eq!(
        read_until(&*unsafe_ssl, |r| r.value == 2.0)
            .await
            .unwrap()
            .value,
        2.0
    );
    // Three TLS settings, three connections.
    assert_eq!(services.rabbitmq.amqp.clients(), 3);
}

#[test]
fn a_trigger_dropped_after_its_runtime_is_gone_does_not_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The Kubernetes client needs a runtime to be made.
    let services = runtime.block_on(async { services() });
    let scaler = runtime.block_on(async {
        let queue = unique("drop");
        let (_connection, channel) = channel().await;
        declare(&channel, &queue).await;
        let scaler = scalers::build(
            &trigger(0, &amqp_host(amqp_addr()), &[("queueName", queue.as_str())]),
            &services,
        )
        .unwrap();
        // The shared connection is open.
        assert_eq!(scaler.read(&name(&*scaler)).await.unwrap().value, 0.0);
        scaler
    });
    drop(runtime);
    drop(scaler);
    assert_eq!(services.rabbitmq.amqp.clients(), 0);
}

#[tokio::test]
async fn the_management_api_over_https_checks_the_broker_certificate() {
    let https: SocketAddr = broker()
        .get("management-tls")
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let ca = std::fs::read_to_string(broker().get("ca")).unwrap();
    let queue = unique("https");
    let (_connection, channel) = channel().await;
    declare(&channel, &queue).await;
    publish(&channel, &queue, 2).await;
    let services = services();
    let host = format!("https://guest:guest@localhost:{}/", https.port());
    let build = |metadata: &[(&str, &str)], auth: &[(&str, &str)]| {
        let params = Params::from_metadata(
            [("queueName", queue.as_str())]
                .into_iter()
                .chain(metadata.iter().copied()),
        )
        .with_auth(
            [("host", host.as_str())]
                .into_iter()
                .chain(auth.iter().copied()),
        );
        scalers::build(&TriggerInput::new(0, "rabbitmq", params), &services).unwrap()
    };

    let with_ca = build(&[], &[("tls", "enable"), ("ca", ca.as_str())]);
    assert_eq!(
        read_until(&*with_ca, |r| r.value == 2.0)
            .await
            .unwrap()
            .value,
        2.0
    );
    let without_ca = build(&[], &[]);
    let error = without_ca.read(&name(&*without_ca)).await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
    assert!(!error.to_string().contains("guest:guest"), "{error}");
    let unsafe_ssl = build(&[("unsafeSsl", "true")], &[]);
    assert_eq!(
        read_until(&*unsafe_ssl, |r| r.value == 2.0)
            .await
            .unwrap()
            .value,
        2.0
    );
}

#[tokio::test]
async fn reads_one_after_another_reuse_a_channel_and_a_missing_queue_costs_only_its_own() {
    // channel.open: class 20, method 10.
    let proxy = CountingProxy::start(amqp_addr(), &[0, 20, 0, 10]).await;
    let queue = unique("channels");
    let (_connection, channel) = channel().await;
    declare(&channel, &queue).await;
    publish(&channel, &queue, 3).await;
    let services = services();
    let host = amqp_host(proxy.addr);
    let scaler = scalers::build(
        &trigger(0, &host, &[("queueName", queue.as_str())]),
        &services,
    )
    .unwrap();
    let metric = name(&*scaler);
    read_until(&*scaler, |r| r.value == 3.0).await.unwrap();
    let opened = proxy.hits();
    for _ in 0..5 {
        assert_eq!(scaler.read(&metric).await.unwrap().value, 3.0);
    }
    assert_eq!(proxy.hits(), opened, "sequential reads open no channel");
    // The broker closes the channel of a declare of a missing queue: the next read opens one.
    let missing = scalers::build(
        &trigger(0, &host, &[("queueName", unique("missing").as_str())]),
        &services,
    )
    .unwrap();
    let error = missing.read(&name(&*missing)).await.unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert_eq!(scaler.read(&metric).await.unwrap().value, 3.0);
    assert_eq!(proxy.connections(), 1, "one shared connection");
}
