//! The `redis` trigger against the machine's real Redis (or `KEDA_TEST_REDIS_URL`): list
//! lengths and activation, one shared connection and one command for a burst of reads, and
//! errors when the server goes away. Each test works on keys of its own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]
#![allow(
    clippy::float_cmp,
    reason = "the values compared are exact: integers, or decoded from the same decimal text"
)]

#[path = "support/counting_proxy.rs"]
mod counting_proxy;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};

use counting_proxy::CountingProxy;
use keda_operator::params::Params;
use keda_operator::scalers::{
    self, MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput,
};
use keda_operator_crd::MetricTargetType;

/// Where the test server is: address, password, database.
struct Server {
    addr: SocketAddr,
    password: Option<String>,
    db: i64,
    url: String,
}

fn server() -> Server {
    let url = std::env::var("KEDA_TEST_REDIS_URL").unwrap_or_else(|_| {
        let up = std::net::TcpStream::connect("127.0.0.1:6379").is_ok();
        if !up {
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
        "redis://127.0.0.1:6379/".to_owned()
    });
    let client = redis::Client::open(url.as_str()).unwrap();
    let info = client.get_connection_info();
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        other => panic!("KEDA_TEST_REDIS_URL must be redis://host:port, not {other:?}"),
    };
    Server {
        addr: (host.as_str(), port)
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap(),
        password: info.redis_settings().password().map(str::to_owned),
        db: info.redis_settings().db(),
        url,
    }
}

async fn redis_connection(server: &Server) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
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

fn trigger(
    index: usize,
    server: &Server,
    addr: SocketAddr,
    list: &str,
    extra: &[(&str, &str)],
) -> TriggerInput {
    let db = server.db.to_string();
    let address = addr.to_string();
    let mut params = Params::from_metadata(
        [
            ("address", address.as_str()),
            ("listName", list),
            ("databaseIndex", db.as_str()),
        ]
        .into_iter()
        .chain(extra.iter().copied()),
    );
    if let Some(password) = &server.password {
        params = params.with_auth([("password", password.as_str())]);
    }
    TriggerInput::new(index, "redis", params)
}

fn name(scaler: &dyn Scaler) -> String {
    scaler.metric_specs()[0].external_name().unwrap().to_owned()
}

#[tokio::test]
async fn the_list_length_is_the_value_and_activation_is_strictly_above_the_threshold() {
    let server = server();
    let list = unique("jobs");
    let services = services();
    let scaler = scalers::build(
        &trigger(
            0,
            &server,
            server.addr,
            &list,
            &[("listLength", "4"), ("activationListLength", "2")],
        ),
        &services,
    )
    .unwrap();
    let expected_name = format!("s0-redis-{}", list.replace(':', "-"));
    assert_eq!(
        scaler.metric_specs(),
        vec![MetricSpec::External {
            name: expected_name.clone(),
            target_type: MetricTargetType::AverageValue,
            target: 4.0,
        }]
    );
    let read = || scaler.read(&expected_name);
    assert_eq!(
        read().await.unwrap(),
        Reading {
            value: 0.0,
            active: false
        }
    );
    let mut db = redis_connection(&server).await;
    let _: i64 = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["a", "b"][..])
        .query_async(&mut db)
        .await
        .unwrap();
    assert_eq!(
        read().await.unwrap(),
        Reading {
            value: 2.0,
            active: false
        }
    );
    let _: i64 = redis::cmd("RPUSH")
        .arg(&list)
        .arg("c")
        .query_async(&mut db)
        .await
        .unwrap();
    assert_eq!(
        read().await.unwrap(),
        Reading {
            value: 3.0,
            active: true
        }
    );
    // A set counts its members, as KEDA counts it; a string is an error.
    let set = unique("set");
    let _: i64 = redis::cmd("SADD")
        .arg(&set)
        .arg(&["x", "y", "z", "w"][..])
        .query_async(&mut db)
        .await
        .unwrap();
    let set_scaler =
        scalers::build(&trigger(1, &server, server.addr, &set, &[]), &services).unwrap();
    assert_eq!(
        set_scaler.read(&name(&*set_scaler)).await.unwrap().value,
        4.0
    );
    let string = unique("string");
    let () = redis::cmd("SET")
        .arg(&string)
        .arg("v")
        .query_async(&mut db)
        .await
        .unwrap();
    let string_scaler =
        scalers::build(&trigger(2, &server, server.addr, &string, &[]), &services).unwrap();
    let error = string_scaler
        .read(&name(&*string_scaler))
        .await
        .unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
    // The three triggers read one server: one connection.
    assert_eq!(services.redis.clients(), 1);
    let _: i64 = redis::cmd("DEL")
        .arg(&list)
        .arg(&set)
        .arg(&string)
        .query_async(&mut db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_hundred_triggers_share_one_connection_and_a_burst_of_reads_is_one_command() {
    let server = server();
    let proxy = CountingProxy::start(server.addr, b"\r\nEVAL\r\n").await;
    let list = unique("burst");
    let mut db = redis_connection(&server).await;
    let _: i64 = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["1", "2", "3", "4", "5", "6", "7"][..])
        .query_async(&mut db)
        .await
        .unwrap();
    let services = services();
    let scalers: Vec<Box<dyn Scaler>> = (0..100)
        .map(|i| {
            let mut input = trigger(i % 3, &server, proxy.addr, &list, &[]);
            input.scaled_object = format!("so-{i}");
            scalers::build(&input, &services).unwrap()
        })
        .collect();
    let names: Vec<String> = scalers.iter().map(|s| name(&**s)).collect();
    // Nothing connects when triggers are built.
    assert_eq!(proxy.connections(), 0);
    assert_eq!(services.redis.clients(), 1);

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
        assert_eq!(proxy.hits(), burst, "one command per burst");
    }

    // The connection is released with the last trigger.
    drop(scalers);
    assert_eq!(services.redis.clients(), 0);
    let _: i64 = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_server_that_is_down_is_an_error_never_zero() {
    let server = server();
    let services = services();

    // Nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let scaler = scalers::build(&trigger(0, &server, closed, "jobs", &[]), &services).unwrap();
    let error = scaler.read(&name(&*scaler)).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("Redis at {closed}: ")),
        "{error}"
    );

    // A server that goes away after it answered.
    let proxy = CountingProxy::start(server.addr, b"EVAL").await;
    let list = unique("down");
    let scaler = scalers::build(&trigger(1, &server, proxy.addr, &list, &[]), &services).unwrap();
    assert_eq!(scaler.read(&name(&*scaler)).await.unwrap().value, 0.0);
    proxy.stop();
    let error = scaler.read(&name(&*scaler)).await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
    if let Some(password) = &server.password {
        assert!(!error.to_string().contains(password.as_str()));
    }
}
