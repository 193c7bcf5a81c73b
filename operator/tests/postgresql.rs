//! The `postgresql` trigger against the machine's real PostgreSQL (or
//! `KEDA_TEST_POSTGRES_URL`): query results of each numeric type and activation, one shared
//! connection and one query for a burst of reads, and errors when the server goes away or the
//! query gives no number; every `sslmode` against a private server that requires TLS; and the
//! `activationChannel` push on NOTIFY. Each test works on a table of its own.
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
#[path = "support/test_server.rs"]
mod test_server;

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use counting_proxy::CountingProxy;
use keda_operator::params::Params;
use keda_operator::scalers::{
    self, MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput,
};
use std::time::Duration;

use futures::StreamExt;
use keda_operator_crd::MetricTargetType;
use test_server::TestServer;
use tokio_postgres::config::Host;

/// Where the test server is.
struct Server {
    url: String,
    addr: SocketAddr,
    user: String,
    password: Option<String>,
    dbname: String,
}

fn server() -> Server {
    let url = std::env::var("KEDA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        if std::net::TcpStream::connect("127.0.0.1:5432").is_err() {
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../external-scalers/scripts/ensure-test-services"
            );
            let status = std::process::Command::new(script)
                .arg("postgres")
                .status()
                .unwrap();
            assert!(
                status.success(),
                "PostgreSQL is not running and could not be started"
            );
        }
        "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned()
    });
    let config = tokio_postgres::Config::from_str(&url).unwrap();
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        other => panic!("KEDA_TEST_POSTGRES_URL must name a TCP host, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap().to_owned();
    Server {
        addr: (host.as_str(), port)
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap(),
        password: config
            .get_password()
            .map(|p| String::from_utf8(p.to_vec()).unwrap()),
        dbname: config.get_dbname().unwrap_or(&user).to_owned(),
        user,
        url,
    }
}

async fn db(server: &Server) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn unique_table() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "keda_rs_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn services() -> Services {
    Services::new(
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap(),
    )
}

/// A trigger reading `query` through `addr`, connection given part by part.
fn trigger(
    index: usize,
    server: &Server,
    addr: SocketAddr,
    query: &str,
    extra: &[(&str, &str)],
) -> TriggerInput {
    let host = addr.ip().to_string();
    let port = addr.port().to_string();
    let mut params = Params::from_metadata(
        [
            ("query", query),
            ("targetQueryValue", "5"),
            ("host", host.as_str()),
            ("port", port.as_str()),
            ("userName", server.user.as_str()),
            ("dbName", server.dbname.as_str()),
            ("sslmode", "disable"),
        ]
        .into_iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .chain(extra.iter().copied()),
    );
    if let Some(password) = &server.password {
        params = params.with_auth([("password", password.as_str())]);
    }
    TriggerInput::new(index, "postgresql", params)
}

async fn value(scaler: &dyn Scaler) -> Result<Reading, ScalerError> {
    let name = scaler.metric_specs()[0].external_name().unwrap().to_owned();
    scaler.read(&name).await
}

#[tokio::test]
async fn the_query_result_is_the_value_and_activation_is_strictly_above_the_threshold() {
    let server = server();
    let db = db(&server).await;
    let table = unique_table();
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id serial PRIMARY KEY, state text NOT NULL)"
    ))
    .await
    .unwrap();
    let services = services();
    let query = format!("SELECT count(*) FROM {table} WHERE state = 'ready'");
    let scaler = scalers::build(
        &trigger(
            3,
            &server,
            server.addr,
            &query,
            &[
                ("targetQueryValue", "2.5"),
                ("activationTargetQueryValue", "2"),
            ],
        ),
        &services,
    )
    .unwrap();
    assert_eq!(
        scaler.metric_specs(),
        vec![MetricSpec::External {
            name: "s3-postgresql".into(),
            target_type: MetricTargetType::AverageValue,
            target: 2.5,
        }]
    );
    assert_eq!(
        value(&*scaler).await.unwrap(),
        Reading {
            value: 0.0,
            active: false
        }
    );
    db.batch_execute(&format!(
        "INSERT INTO {table} (state) VALUES ('ready'), ('ready'), ('done')"
    ))
    .await
    .unwrap();
    assert_eq!(
        value(&*scaler).await.unwrap(),
        Reading {
            value: 2.0,
            active: false
        }
    );
    db.batch_execute(&format!("INSERT INTO {table} (state) VALUES ('ready')"))
        .await
        .unwrap();
    assert_eq!(
        value(&*scaler).await.unwrap(),
        Reading {
            value: 3.0,
            active: true
        }
    );

    // The same through a connection string from the environment.
    let params = Params::from_metadata([
        ("query", query.as_str()),
        ("targetQueryValue", "1"),
        ("connectionFromEnv", "PG_CONNECTION"),
    ])
    .with_env([("PG_CONNECTION", server.url.as_str())]);
    let scaler = scalers::build(&TriggerInput::new(0, "postgresql", params), &services).unwrap();
    assert_eq!(value(&*scaler).await.unwrap().value, 3.0);

    db.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_numeric_type_is_read_and_anything_else_is_an_error() {
    let server = server();
    let services = services();
    let read = |query: &'static str| {
        let scaler = scalers::build(&trigger(0, &server, server.addr, query, &[]), &services);
        async move { value(&*scaler.unwrap()).await.map(|r| r.value) }
    };
    assert_eq!(read("SELECT 7::int2").await, Ok(7.0));
    assert_eq!(read("SELECT 70000::int4").await, Ok(70000.0));
    assert_eq!(read("SELECT 5000000000::int8").await, Ok(5_000_000_000.0));
    assert_eq!(read("SELECT 1.5::float4").await, Ok(1.5));
    assert_eq!(read("SELECT -2.25::float8").await, Ok(-2.25));
    assert_eq!(
        read("SELECT avg(x) FROM (VALUES (1), (2)) v(x)").await,
        Ok(1.5)
    );
    assert_eq!(read("SELECT 123456.789::numeric").await, Ok(123_456.789));
    assert_eq!(read("SELECT -0.0001::numeric").await, Ok(-0.0001));
    assert_eq!(read("SELECT '42'::text").await, Ok(42.0));
    // The first row counts.
    assert_eq!(read("SELECT * FROM (VALUES (3), (4)) v(x)").await, Ok(3.0));

    for (query, message) in [
        ("SELECT NULL::int", "the query returned NULL"),
        ("SELECT 1 WHERE false", "the query returned no row"),
        (
            "SELECT 1, 2",
            "the query returned 2 columns; it must return one",
        ),
        (
            "SELECT 'many'::text",
            "error deserializing column 0: the query returned \"many\", not a number",
        ),
    ] {
        let error = read(query).await.unwrap_err();
        assert_eq!(error.category(), "source", "{query}: {error}");
        assert!(error.to_string().ends_with(message), "{query}: {error}");
    }
    let error = read("SELECT * FROM keda_rs_no_such_table")
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("keda_rs_no_such_table\" does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn a_hundred_triggers_share_one_connection_and_a_burst_of_reads_is_one_query() {
    let server = server();
    let proxy = CountingProxy::start(server.addr, b"burst-marker").await;
    let services = services();
    let query = "SELECT 11 /* burst-marker */";
    let scalers: Vec<Box<dyn Scaler>> = (0..100)
        .map(|i| {
            let mut input = trigger(i % 4, &server, proxy.addr, query, &[]);
            input.scaled_object = format!("so-{i}");
            scalers::build(&input, &services).unwrap()
        })
        .collect();
    assert_eq!(
        proxy.connections(),
        0,
        "nothing connects when triggers are built"
    );
    assert_eq!(services.postgres.clients(), 1);

    for burst in 1..=2 {
        let readings =
            futures::future::join_all(scalers.iter().map(|scaler| value(&**scaler))).await;
        for reading in readings {
            assert_eq!(
                reading.unwrap(),
                Reading {
                    value: 11.0,
                    active: true
                }
            );
        }
        assert_eq!(proxy.connections(), 1, "one shared connection");
        assert_eq!(proxy.hits(), burst, "one query per burst");
    }
    drop(scalers);
    assert_eq!(services.postgres.clients(), 0);
}

#[tokio::test]
async fn a_server_that_is_down_is_an_error_never_zero() {
    let server = server();
    let services = services();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let scaler = scalers::build(&trigger(0, &server, closed, "SELECT 1", &[]), &services).unwrap();
    let error = value(&*scaler).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("PostgreSQL at {closed}/{}: ", server.dbname)),
        "{error}"
    );

    let proxy = CountingProxy::start(server.addr, b"SELECT").await;
    let scaler =
        scalers::build(&trigger(1, &server, proxy.addr, "SELECT 2", &[]), &services).unwrap();
    assert_eq!(value(&*scaler).await.unwrap().value, 2.0);
    proxy.stop();
    let error = value(&*scaler).await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
    if let Some(password) = &server.password {
        assert!(!error.to_string().contains(password.as_str()));
    }
}

/// Reads `SELECT ssl FROM pg_stat_ssl` of its own connection (1 over TLS) through `connection`.
async fn tls_read(services: &Services, connection: &str) -> Result<f64, ScalerError> {
    let params = Params::from_metadata([
        (
            "query",
            "SELECT ssl::int FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ),
        ("targetQueryValue", "1"),
    ])
    .with_auth([("connection", connection)]);
    let scaler = scalers::build(&TriggerInput::new(0, "postgresql", params), services)?;
    value(&*scaler).await.map(|r| r.value)
}

#[tokio::test]
async fn every_sslmode_against_a_server_that_requires_tls() {
    let server = TestServer::start("postgres-tls");
    let port = server.get("port");
    let ca = server.get("ca");
    let services = services();
    let at = |host: &str, mode: &str, root: Option<&str>| {
        let root = root.map_or(String::new(), |ca| format!(" sslrootcert={ca}"));
        format!("host={host} port={port} user=postgres dbname=postgres sslmode={mode}{root}")
    };

    // Without TLS the server refuses.
    for mode in ["disable", "allow"] {
        let error = tls_read(&services, &at("127.0.0.1", mode, None))
            .await
            .unwrap_err();
        assert_eq!(error.category(), "source", "{error}");
        assert!(error.to_string().contains("no encryption"), "{error}");
    }
    // Encryption without checks; with a root certificate, require checks the chain.
    assert_eq!(
        tls_read(&services, &at("127.0.0.1", "prefer", None)).await,
        Ok(1.0)
    );
    assert_eq!(
        tls_read(&services, &at("127.0.0.1", "require", None)).await,
        Ok(1.0)
    );
    assert_eq!(
        tls_read(&services, &at("127.0.0.1", "require", Some(ca))).await,
        Ok(1.0)
    );
    // verify-ca checks the chain only: the certificate is for localhost, not 127.0.0.1.
    assert_eq!(
        tls_read(&services, &at("127.0.0.1", "verify-ca", Some(ca))).await,
        Ok(1.0)
    );
    assert_eq!(
        tls_read(&services, &at("localhost", "verify-full", Some(ca))).await,
        Ok(1.0)
    );
    let error = tls_read(&services, &at("127.0.0.1", "verify-full", Some(ca)))
        .await
        .unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");
    // The test CA is not in the system's trust store.
    for mode in ["verify-ca", "verify-full"] {
        let error = tls_read(&services, &at("localhost", mode, None))
            .await
            .unwrap_err();
        assert_eq!(error.category(), "source", "{mode}: {error}");
        assert!(
            error.to_string().contains("UnknownIssuer"),
            "{mode}: {error}"
        );
    }
    // certuser logs in with its client certificate only.
    let as_certuser = |client: &str| {
        format!(
            "host=localhost port={port} user=certuser dbname=postgres sslmode=verify-full \
             sslrootcert={ca}{client}"
        )
    };
    let with_certificate = format!(
        " sslcert={} sslkey={}",
        server.get("client_cert"),
        server.get("client_key")
    );
    assert_eq!(
        tls_read(&services, &as_certuser(&with_certificate)).await,
        Ok(1.0)
    );
    let error = tls_read(&services, &as_certuser("")).await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");

    // The same by parts (no sslrootcert there: the system's trust store).
    let params = Params::from_metadata([
        (
            "query",
            "SELECT ssl::int FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ),
        ("targetQueryValue", "1"),
        ("host", "127.0.0.1"),
        ("port", port),
        ("userName", "postgres"),
        ("dbName", "postgres"),
        ("sslmode", "require"),
    ]);
    let scaler = scalers::build(&TriggerInput::new(0, "postgresql", params), &services).unwrap();
    assert_eq!(value(&*scaler).await.unwrap().value, 1.0);
}

/// The process id of the session that LISTENs on `channel`, once there is one.
async fn listener_pid(db: &tokio_postgres::Client, channel: &str) -> i32 {
    let listen = format!("LISTEN \"{channel}\"");
    for _ in 0..600 {
        let rows = db
            .query(
                "SELECT pid FROM pg_stat_activity WHERE query = $1",
                &[&listen],
            )
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing LISTENs on {channel}");
}

/// Waits (a failure guard, not a timing check) for the next push.
async fn pushed(pushes: &mut futures::stream::BoxStream<'static, ()>) {
    let next = tokio::time::timeout(Duration::from_secs(60), pushes.next()).await;
    assert_eq!(next, Ok(Some(())), "no push");
}

#[tokio::test]
async fn a_notify_on_the_activation_channel_pushes_when_the_trigger_is_active() {
    let server = server();
    let db = db(&server).await;
    let table = unique_table();
    let reads = format!("{table}_reads");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id serial PRIMARY KEY); CREATE SEQUENCE {reads}"
    ))
    .await
    .unwrap();
    let services = services();
    // Each read of the trigger advances the sequence.
    let query = format!("SELECT (SELECT count(*) FROM {table}) + 0 * nextval('{reads}')");
    let channel = format!("Keda Jobs {}", std::process::id());
    let input = trigger(
        0,
        &server,
        server.addr,
        &query,
        &[("activationChannel", &channel)],
    );
    let scaler = scalers::build(&input, &services).unwrap();
    let without =
        scalers::build(&trigger(1, &server, server.addr, &query, &[]), &services).unwrap();
    assert!(without.activity_pushes().is_none());
    let mut pushes = scaler.activity_pushes().unwrap();
    let read_count = async || -> i64 {
        db.query_one(
            &format!("SELECT last_value * is_called::int FROM {reads}"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
    };

    // Listening starts when the stream is polled.
    let mut next = pushes.next();
    tokio::select! {
        item = &mut next => panic!("pushed before any NOTIFY: {item:?}"),
        pid = listener_pid(&db, &channel) => assert!(pid > 0),
    }
    // Inactive (0 rows): a NOTIFY reads the query but pushes nothing.
    db.execute("SELECT pg_notify($1, 'one')", &[&channel])
        .await
        .unwrap();
    let until_read = async {
        while read_count().await < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        item = &mut next => panic!("pushed while inactive: {item:?}"),
        () = until_read => {}
    }
    // Active: the next NOTIFY pushes.
    db.batch_execute(&format!("INSERT INTO {table} DEFAULT VALUES"))
        .await
        .unwrap();
    db.execute("SELECT pg_notify($1, 'two')", &[&channel])
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), next).await,
        Ok(Some(())),
        "no push"
    );
    assert_eq!(read_count().await, 2);

    // The listening connection is killed: it comes back, reads once for what it missed (the
    // trigger is active, so that pushes), and NOTIFY pushes again.
    let pid = listener_pid(&db, &channel).await;
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    pushed(&mut pushes).await;
    let again = listener_pid(&db, &channel).await;
    assert_ne!(again, pid);
    db.execute("SELECT pg_notify($1, 'three')", &[&channel])
        .await
        .unwrap();
    pushed(&mut pushes).await;
    assert_eq!(read_count().await, 4);

    // Dropping the scaler ends the stream.
    drop(scaler);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), pushes.next()).await,
        Ok(None)
    );
    db.batch_execute(&format!("DROP TABLE {table}; DROP SEQUENCE {reads}"))
        .await
        .unwrap();
}
