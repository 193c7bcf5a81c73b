//! The `redis-streams` trigger against the machine's Redis (7.x, started when it is down):
//! stream length, pending entries and consumer-group lag as KEDA reads them, activation,
//! one shared command for a burst of reads, pushes after `XADD`, and errors when the server
//! goes away. Each test works on streams of its own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]
#![allow(clippy::float_cmp, reason = "the values compared are exact integers")]

#[path = "support/counting_proxy.rs"]
mod counting_proxy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use counting_proxy::CountingProxy;
use futures::StreamExt;
use keda_operator::params::Params;
use keda_operator::scalers::{
    self, MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput,
};
use keda_operator_crd::MetricTargetType;

const SERVER: &str = "127.0.0.1:6379";

fn server() -> SocketAddr {
    if std::net::TcpStream::connect(SERVER).is_err() {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../external-scalers/scripts/ensure-test-services"
        );
        let status = std::process::Command::new(script)
            .arg("redis")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "Redis is not running and could not be started"
        );
    }
    SERVER.parse().unwrap()
}

async fn redis(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn run(db: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(db).await.unwrap()
}

fn unique(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "keda-rs-test:{name}:{}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn services() -> Services {
    Services::new(
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap(),
    )
}

fn trigger(index: usize, addr: SocketAddr, stream: &str, extra: &[(&str, &str)]) -> TriggerInput {
    let address = addr.to_string();
    TriggerInput::new(
        index,
        "redis-streams",
        Params::from_metadata(
            [("address", address.as_str()), ("stream", stream)]
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

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn length_pending_entries_and_lag_are_read_as_keda_reads_them() {
    let addr = server();
    let mut db = redis(addr).await;
    let stream = unique("orders");
    let services = services();
    let build = |index, extra: &[(&str, &str)]| {
        scalers::build(&trigger(index, addr, &stream, extra), &services).unwrap()
    };
    let length = build(0, &[("streamLength", "4"), ("activationLagCount", "2")]);
    assert_eq!(
        length.metric_specs(),
        vec![MetricSpec::External {
            name: format!("s0-redis-streams-{}", stream.replace(':', "-")),
            target_type: MetricTargetType::AverageValue,
            target: 4.0,
        }]
    );
    let lag = build(1, &[("consumerGroup", "workers"), ("lagCount", "2")]);
    let pending = build(
        2,
        &[("consumerGroup", "workers"), ("pendingEntriesCount", "3")],
    );
    let other_group_lag = build(3, &[("consumerGroup", "nobody"), ("lagCount", "2")]);

    // No stream yet: length 0, lag 0; pending entries of a group that does not exist are an
    // error (as in KEDA), never 0.
    assert_eq!(
        read(&*length).await.unwrap(),
        Reading {
            value: 0.0,
            active: false
        }
    );
    assert_eq!(
        read(&*lag).await.unwrap(),
        Reading {
            value: 0.0,
            active: false
        }
    );
    let error = read(&*pending).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");

    for i in 0..3 {
        run(&mut db, &["XADD", &stream, "*", "n", &i.to_string()]).await;
    }
    run(&mut db, &["XGROUP", "CREATE", &stream, "workers", "0"]).await;
    assert_eq!(
        read(&*length).await.unwrap(),
        Reading {
            value: 3.0,
            active: true
        }
    );
    assert_eq!(
        read(&*lag).await.unwrap(),
        Reading {
            value: 3.0,
            active: true
        }
    );
    assert_eq!(
        read(&*pending).await.unwrap(),
        Reading {
            value: 0.0,
            active: false
        }
    );
    // A group that does not exist yet counts the whole stream.
    assert_eq!(read(&*other_group_lag).await.unwrap().value, 3.0);

    // A consumer takes two entries: they are pending, and the lag drops.
    run(
        &mut db,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "c1",
            "COUNT",
            "2",
            "STREAMS",
            &stream,
            ">",
        ],
    )
    .await;
    assert_eq!(
        read(&*pending).await.unwrap(),
        Reading {
            value: 2.0,
            active: true
        }
    );
    assert_eq!(
        read(&*lag).await.unwrap(),
        Reading {
            value: 1.0,
            active: true
        }
    );
    assert_eq!(read(&*length).await.unwrap().value, 3.0);
    // Acknowledged entries are no longer pending.
    let Ok(redis::Value::Array(taken)) = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async::<redis::Value>(&mut db)
        .await
    else {
        panic!("XRANGE")
    };
    let redis::Value::Array(first) = &taken[0] else {
        panic!("entry")
    };
    let redis::Value::BulkString(id) = &first[0] else {
        panic!("id")
    };
    let id = String::from_utf8(id.clone()).unwrap();
    run(&mut db, &["XACK", &stream, "workers", &id]).await;
    assert_eq!(read(&*pending).await.unwrap().value, 1.0);

    // A key of another type is an error.
    let string = unique("string");
    run(&mut db, &["SET", &string, "v"]).await;
    let wrong = scalers::build(&trigger(4, addr, &string, &[]), &services).unwrap();
    assert_eq!(read(&*wrong).await.unwrap_err().category(), "source");
    // All of it over one shared connection.
    assert_eq!(services.redis.clients(), 1);
    run(&mut db, &["DEL", &stream, &string]).await;
}

#[tokio::test]
async fn a_burst_of_reads_of_many_triggers_is_one_command_on_one_connection() {
    let addr = server();
    let proxy = CountingProxy::start(addr, b"\r\nXLEN\r\n").await;
    let stream = unique("burst");
    let mut db = redis(addr).await;
    for _ in 0..6 {
        run(&mut db, &["XADD", &stream, "*", "k", "v"]).await;
    }
    let services = services();
    let scalers: Vec<Box<dyn Scaler>> = (0..50)
        .map(|i| scalers::build(&trigger(i % 4, proxy.addr, &stream, &[]), &services).unwrap())
        .collect();
    assert_eq!(
        proxy.connections(),
        0,
        "nothing connects when triggers are built"
    );
    let readings = futures::future::join_all(scalers.iter().map(|s| read(&**s))).await;
    for reading in readings {
        assert_eq!(
            reading.unwrap(),
            Reading {
                value: 6.0,
                active: true
            }
        );
    }
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.hits(), 1);
    drop(scalers);
    assert_eq!(services.redis.clients(), 0);
    run(&mut db, &["DEL", &stream]).await;
}

#[tokio::test]
async fn a_push_arrives_after_xadd_without_a_poll() {
    let addr = server();
    let mut db = redis(addr).await;
    let stream = unique("pushed");
    let services = services();
    let scaler = scalers::build(
        &trigger(
            0,
            addr,
            &stream,
            &[("activationPush", "true"), ("activationLagCount", "1")],
        ),
        &services,
    )
    .unwrap();
    let mut pushes = scaler
        .activity_pushes()
        .expect("activationPush gives pushes");
    // One entry does not make the trigger active; the second does.
    run(&mut db, &["XADD", &stream, "*", "n", "1"]).await;
    let writer = tokio::spawn({
        let stream = stream.clone();
        async move {
            let mut db = redis(addr).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            run(&mut db, &["XADD", &stream, "*", "n", "2"]).await;
        }
    });
    // Nothing reads the trigger here: only its push connection can tell.
    tokio::time::timeout(Duration::from_secs(20), pushes.next())
        .await
        .expect("a push within 20 s")
        .expect("the push stream is open");
    writer.await.unwrap();
    let len: i64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut db)
        .await
        .unwrap();
    assert_eq!(len, 2, "the push came once the stream was longer than 1");
    // Without activationPush there are no pushes.
    let polled = scalers::build(&trigger(1, addr, &stream, &[]), &services).unwrap();
    assert!(polled.activity_pushes().is_none());
    // Dropping the scaler ends the pushes.
    drop(scaler);
    assert!(
        tokio::time::timeout(Duration::from_secs(20), pushes.next())
            .await
            .expect("the stream ends")
            .is_none()
    );
    run(&mut db, &["DEL", &stream]).await;
}

#[tokio::test]
async fn a_server_that_is_down_is_an_error_never_zero() {
    let addr = server();
    let services = services();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let scaler = scalers::build(&trigger(0, closed, "s", &[]), &services).unwrap();
    let error = read(&*scaler).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("Redis at {closed}: ")),
        "{error}"
    );

    let proxy = CountingProxy::start(addr, b"XLEN").await;
    let stream = unique("down");
    let scaler = scalers::build(&trigger(1, proxy.addr, &stream, &[]), &services).unwrap();
    assert_eq!(read(&*scaler).await.unwrap().value, 0.0);
    proxy.stop();
    let error = read(&*scaler).await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
}
