//! The `mysql` trigger against the machine's real MariaDB (or `KEDA_TEST_MYSQL_URL`, a
//! `mysql://user:password@host:port/db` URL): a count that grows past the activation
//! threshold, column types, one shared connection and one query for a burst of reads, and
//! errors when the server goes away or the query gives no number; TLS from the DSN against a
//! private server that requires it. Each test works on a table of its own.
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
use std::sync::atomic::{AtomicUsize, Ordering};

use counting_proxy::CountingProxy;
use keda_operator::params::Params;
use keda_operator::scalers::{
    self, MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput,
};
use keda_operator_crd::MetricTargetType;
use mysql_async::prelude::Queryable;
use test_server::TestServer;

/// Where the test server is.
struct Server {
    url: String,
    addr: SocketAddr,
    user: String,
    password: Option<String>,
    dbname: String,
}

fn server() -> Server {
    let url = std::env::var("KEDA_TEST_MYSQL_URL").unwrap_or_else(|_| {
        if std::net::TcpStream::connect("127.0.0.1:3306").is_err() {
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../external-scalers/scripts/ensure-test-services"
            );
            let status = std::process::Command::new(script)
                .arg("mariadb")
                .status()
                .unwrap();
            assert!(
                status.success(),
                "MariaDB is not running and could not be started"
            );
        }
        "mysql://root@127.0.0.1:3306/test".to_owned()
    });
    let opts = mysql_async::Opts::from_url(&url).unwrap();
    Server {
        addr: (opts.ip_or_hostname(), opts.tcp_port())
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap(),
        user: opts.user().unwrap_or("root").to_owned(),
        password: opts.pass().map(str::to_owned),
        dbname: opts.db_name().unwrap_or("test").to_owned(),
        url,
    }
}

async fn db(server: &Server) -> mysql_async::Conn {
    let opts =
        mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&server.url).unwrap())
            .prefer_socket(false);
    mysql_async::Conn::new(opts).await.unwrap()
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
            ("queryValue", "5"),
            ("host", host.as_str()),
            ("port", port.as_str()),
            ("username", server.user.as_str()),
            ("dbName", server.dbname.as_str()),
        ]
        .into_iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .chain(extra.iter().copied()),
    );
    if let Some(password) = &server.password {
        params = params.with_auth([("password", password.as_str())]);
    }
    TriggerInput::new(index, "mysql", params)
}

async fn value(scaler: &dyn Scaler) -> Result<Reading, ScalerError> {
    let name = scaler.metric_specs()[0].external_name().unwrap().to_owned();
    scaler.read(&name).await
}

#[tokio::test]
async fn the_query_result_is_the_value_and_activation_is_strictly_above_the_threshold() {
    let server = server();
    let mut db = db(&server).await;
    let table = unique_table();
    db.query_drop(format!(
        "CREATE TABLE {table} (id int AUTO_INCREMENT PRIMARY KEY, state varchar(16) NOT NULL)"
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
            &[("queryValue", "2.5"), ("activationQueryValue", "2")],
        ),
        &services,
    )
    .unwrap();
    assert_eq!(
        scaler.metric_specs(),
        vec![MetricSpec::External {
            name: format!("s3-mysql-{}", server.dbname),
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
    db.query_drop(format!(
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
    db.query_drop(format!("INSERT INTO {table} (state) VALUES ('ready')"))
        .await
        .unwrap();
    assert_eq!(
        value(&*scaler).await.unwrap(),
        Reading {
            value: 3.0,
            active: true
        }
    );

    // The same through a Go driver DSN from the environment; the metric is named after what
    // follows its last '/'.
    let credentials = match &server.password {
        Some(password) => format!("{}:{password}", server.user),
        None => server.user.clone(),
    };
    let dsn = format!("{credentials}@tcp({})/{}", server.addr, server.dbname);
    let params = Params::from_metadata([
        ("query", query.as_str()),
        ("queryValue", "1"),
        ("connectionStringFromEnv", "MYSQL_DSN"),
    ])
    .with_env([("MYSQL_DSN", dsn.as_str())]);
    let scaler = scalers::build(&TriggerInput::new(0, "mysql", params), &services).unwrap();
    assert_eq!(
        scaler.metric_specs()[0].external_name(),
        Some(format!("s0-mysql-{}", server.dbname).as_str())
    );
    assert_eq!(value(&*scaler).await.unwrap().value, 3.0);

    // Session variables from the DSN are set on the connection.
    let dsn = format!("{dsn}?sql_mode=%27ANSI_QUOTES%27");
    let params = Params::from_metadata([
        ("query", "SELECT @@SESSION.sql_mode = 'ANSI_QUOTES'"),
        ("queryValue", "1"),
    ])
    .with_auth([("connectionString", dsn.as_str())]);
    let scaler = scalers::build(&TriggerInput::new(0, "mysql", params), &services).unwrap();
    assert_eq!(value(&*scaler).await.unwrap().value, 1.0);

    db.query_drop(format!("DROP TABLE {table}")).await.unwrap();
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn every_numeric_type_is_read_and_anything_else_is_an_error() {
    let server = server();
    let services = services();
    let read = |query: &'static str| {
        let scaler = scalers::build(&trigger(0, &server, server.addr, query, &[]), &services);
        async move { value(&*scaler.unwrap()).await.map(|r| r.value) }
    };
    assert_eq!(read("SELECT 7").await, Ok(7.0));
    assert_eq!(read("SELECT 5000000000").await, Ok(5_000_000_000.0));
    assert_eq!(read("SELECT CAST(-2.25 AS DOUBLE)").await, Ok(-2.25));
    assert_eq!(read("SELECT 123456.789").await, Ok(123_456.789));
    assert_eq!(read("SELECT CEIL(7 / 2)").await, Ok(4.0));
    assert_eq!(
        read("SELECT AVG(x) FROM (SELECT 1 AS x UNION ALL SELECT 2) v").await,
        Ok(1.5)
    );
    assert_eq!(read("SELECT '42'").await, Ok(42.0));
    // The first row counts.
    assert_eq!(read("SELECT 3 UNION ALL SELECT 4").await, Ok(3.0));

    for (query, message) in [
        ("SELECT NULL", "the query returned NULL"),
        (
            "SELECT 1 FROM DUAL WHERE false",
            "the query returned no row",
        ),
        (
            "SELECT 1, 2",
            "the query returned 2 columns; it must return one",
        ),
        ("SELECT 'many'", "the query returned \"many\", not a number"),
        ("DO 1", "the query returned no row"),
    ] {
        let error = read(query).await.unwrap_err();
        assert_eq!(error.category(), "source", "{query}: {error}");
        assert!(error.to_string().ends_with(message), "{query}: {error}");
    }
    let error = read("SELECT count(*) FROM keda_rs_no_such_table")
        .await
        .unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
    assert!(
        error
            .to_string()
            .contains("keda_rs_no_such_table' doesn't exist"),
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
    assert_eq!(services.mysql.clients(), 1);

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
    // A different query on the same server uses the same connection.
    let other = scalers::build(
        &trigger(0, &server, proxy.addr, "SELECT 12", &[]),
        &services,
    )
    .unwrap();
    assert_eq!(value(&*other).await.unwrap().value, 12.0);
    assert_eq!(proxy.connections(), 1);
    drop((scalers, other));
    assert_eq!(services.mysql.clients(), 0);
}

#[tokio::test]
async fn a_server_that_is_down_is_an_error_never_zero_and_a_new_connection_follows() {
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
            .starts_with(&format!("MySQL at {closed}/{}: ", server.dbname)),
        "{error}"
    );

    let proxy = CountingProxy::start(server.addr, b"SELECT 2").await;
    let scaler =
        scalers::build(&trigger(1, &server, proxy.addr, "SELECT 2", &[]), &services).unwrap();
    assert_eq!(value(&*scaler).await.unwrap().value, 2.0);
    proxy.stop();
    let error = value(&*scaler).await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
    if let Some(password) = &server.password {
        assert!(!error.to_string().contains(password.as_str()));
    }

    // A connection the server closed is replaced on the next read.
    let proxy = CountingProxy::start(server.addr, b"CONNECTION_ID").await;
    let scaler = scalers::build(
        &trigger(2, &server, proxy.addr, "SELECT CONNECTION_ID()", &[]),
        &services,
    )
    .unwrap();
    let first = value(&*scaler).await.unwrap().value;
    let mut db = db(&server).await;
    db.query_drop(format!("KILL CONNECTION {first}"))
        .await
        .unwrap();
    let second = value(&*scaler).await.unwrap().value;
    assert_ne!(first, second);
    assert_eq!(
        proxy.connections(),
        2,
        "a new connection after the old one was closed"
    );
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn tls_from_the_connection_string_against_a_server_that_requires_it() {
    let server = TestServer::start("mariadb-tls");
    let port = server.get("port");
    let services = services();
    let read = |params: &str| {
        let dsn = format!("root@tcp(127.0.0.1:{port})/test{params}");
        let params = Params::from_metadata([
            (
                "query",
                "SELECT VARIABLE_VALUE <> '' FROM information_schema.SESSION_STATUS \
                 WHERE VARIABLE_NAME = 'Ssl_cipher'",
            ),
            ("queryValue", "1"),
        ])
        .with_auth([("connectionString", dsn.as_str())]);
        let scaler = scalers::build(&TriggerInput::new(0, "mysql", params), &services).unwrap();
        async move { value(&*scaler).await.map(|r| r.value) }
    };
    // Encrypted, the certificate not checked.
    assert_eq!(read("?tls=skip-verify").await, Ok(1.0));
    // Without TLS the server refuses.
    for params in ["", "?tls=false"] {
        let error = read(params).await.unwrap_err();
        assert_eq!(error.category(), "source", "{params}: {error}");
    }
    // Verified: the test CA is not a trusted root.
    let error = read("?tls=true").await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
}
