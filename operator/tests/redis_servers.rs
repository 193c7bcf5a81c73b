//! The Redis triggers against servers of their own (`external-scalers/scripts/test-server`):
//! a Redis Cluster of three masters, a master with a sentinel, a server that speaks TLS only
//! (with a CA made here), and a server whose keyspace notifications a test turns on. Values,
//! activation, sharing, pushes, and errors when the servers go away.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]
#![allow(clippy::float_cmp, reason = "the values compared are exact integers")]

#[path = "support/test_server.rs"]
mod test_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use keda_operator::params::Params;
use keda_operator::scalers::{self, Reading, Scaler, ScalerError, Services, TriggerInput};
use test_server::TestServer;

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

fn input(trigger_type: &str, metadata: &[(&str, &str)], auth: &[(&str, &str)]) -> TriggerInput {
    TriggerInput::new(
        0,
        trigger_type,
        Params::from_metadata(metadata.iter().copied()).with_auth(auth.iter().copied()),
    )
}

async fn read(scaler: &dyn Scaler) -> Result<Reading, ScalerError> {
    let name = scaler.metric_specs()[0].external_name().unwrap().to_owned();
    scaler.read(&name).await
}

async fn connection(address: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{address}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn command(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

/// Takes the trigger's pushes, runs `write` a moment later, and waits for a push (nothing
/// reads the trigger meanwhile).
async fn push_after(scaler: &dyn Scaler, write: impl Future<Output = ()> + Send + 'static) {
    let mut pushes = scaler
        .activity_pushes()
        .expect("activationPush gives pushes");
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        write.await;
    });
    tokio::time::timeout(Duration::from_secs(20), pushes.next())
        .await
        .expect("a push within 20 s")
        .expect("the push stream is open");
    writer.await.unwrap();
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one server, one scenario step by step"
)]
async fn a_cluster_is_read_on_the_node_that_holds_each_key() {
    let server = TestServer::start("redis-cluster");
    let addresses = server.get("addresses").to_owned();
    let nodes: Vec<String> = addresses
        .split(',')
        .map(|a| format!("redis://{a}/"))
        .collect();
    let mut cluster = redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let services = services();
    // Keys spread over the three masters; each read goes to the node that holds the key.
    let mut scalers = Vec::new();
    for i in 0..6 {
        let list = unique(&format!("list{i}"));
        for _ in 0..=i {
            let _: i64 = command(&["RPUSH", &list, "x"])
                .query_async(&mut cluster)
                .await
                .unwrap();
        }
        let scaler = scalers::build(
            &input(
                "redis-cluster",
                &[
                    ("addresses", &addresses),
                    ("listName", &list),
                    ("activationListLength", "3"),
                ],
                &[],
            ),
            &services,
        )
        .unwrap();
        let expected = f64::from(i + 1);
        assert_eq!(
            read(&*scaler).await.unwrap(),
            Reading {
                value: expected,
                active: expected > 3.0
            },
            "{list}"
        );
        scalers.push(scaler);
    }
    // Streams on the same cluster share its client.
    let stream = unique("stream");
    for _ in 0..4 {
        let _: String = command(&["XADD", &stream, "*", "k", "v"])
            .query_async(&mut cluster)
            .await
            .unwrap();
    }
    let _: String = command(&["XGROUP", "CREATE", &stream, "g", "0"])
        .query_async(&mut cluster)
        .await
        .unwrap();
    let length = scalers::build(
        &input(
            "redis-cluster-streams",
            &[("addresses", &addresses), ("stream", &stream)],
            &[],
        ),
        &services,
    )
    .unwrap();
    assert_eq!(read(&*length).await.unwrap().value, 4.0);
    let lag = scalers::build(
        &input(
            "redis-cluster-streams",
            &[
                ("addresses", &addresses),
                ("stream", &stream),
                ("consumerGroup", "g"),
                ("lagCount", "1"),
                ("activationLagCount", "4"),
            ],
            &[],
        ),
        &services,
    )
    .unwrap();
    assert_eq!(
        read(&*lag).await.unwrap(),
        Reading {
            value: 4.0,
            active: false
        }
    );
    assert_eq!(services.redis.clients(), 1);

    // A push from the node that holds a new stream, on a cluster connection of its own.
    let watched_key = unique("pushed-stream");
    let push_trigger = scalers::build(
        &input(
            "redis-cluster-streams",
            &[
                ("addresses", &addresses),
                ("stream", &watched_key),
                ("activationPush", "true"),
            ],
            &[],
        ),
        &services,
    )
    .unwrap();
    let mut cluster_writer = cluster.clone();
    let key = watched_key.clone();
    push_after(&*push_trigger, async move {
        let _: String = command(&["XADD", &key, "*", "k", "v"])
            .query_async(&mut cluster_writer)
            .await
            .unwrap();
    })
    .await;
    drop(push_trigger);

    // The cluster goes away: errors, never 0.
    drop(server);
    let error = read(&*length).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
    assert!(
        error.to_string().starts_with("Redis cluster at "),
        "{error}"
    );
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one server, one scenario step by step"
)]
async fn a_sentinel_names_the_master_that_is_read() {
    let server = TestServer::start("redis-sentinel");
    let master = server.get("master").to_owned();
    let sentinel = server.get("sentinel").to_owned();
    let mut db = connection(&master).await;
    let list = unique("sentinel-list");
    let _: i64 = command(&["RPUSH", &list, "a", "b", "c"])
        .query_async(&mut db)
        .await
        .unwrap();
    let services = services();
    let scaler = scalers::build(
        &input(
            "redis-sentinel",
            &[
                ("addresses", &sentinel),
                ("sentinelMaster", "mymaster"),
                ("listName", &list),
                ("activationListLength", "2"),
            ],
            &[],
        ),
        &services,
    )
    .unwrap();
    assert_eq!(
        read(&*scaler).await.unwrap(),
        Reading {
            value: 3.0,
            active: true
        }
    );
    let stream = unique("sentinel-stream");
    let _: String = command(&["XADD", &stream, "*", "k", "v"])
        .query_async(&mut db)
        .await
        .unwrap();
    let streams = scalers::build(
        &input(
            "redis-sentinel-streams",
            &[
                ("hosts", sentinel.split(':').next().unwrap()),
                ("ports", sentinel.split(':').nth(1).unwrap()),
                ("sentinelMaster", "mymaster"),
                ("stream", &stream),
            ],
            &[],
        ),
        &services,
    )
    .unwrap();
    assert_eq!(read(&*streams).await.unwrap().value, 1.0);

    // Pushes from the keyspace notifications of the master the sentinel names.
    let () = command(&["CONFIG", "SET", "notify-keyspace-events", "Kl"])
        .query_async(&mut db)
        .await
        .unwrap();
    let watched_key = unique("sentinel-pushed");
    let push_trigger = scalers::build(
        &input(
            "redis-sentinel",
            &[
                ("addresses", &sentinel),
                ("sentinelMaster", "mymaster"),
                ("listName", &watched_key),
                ("activationPush", "true"),
            ],
            &[],
        ),
        &services,
    )
    .unwrap();
    let mut writer = db.clone();
    let key = watched_key.clone();
    push_after(&*push_trigger, async move {
        let _: i64 = command(&["LPUSH", &key, "x"])
            .query_async(&mut writer)
            .await
            .unwrap();
    })
    .await;
    drop(push_trigger);

    // A sentinel that is down is skipped: the next one names the master.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let second = scalers::build(
        &input(
            "redis-sentinel",
            &[
                ("addresses", &format!("{closed},{sentinel}")),
                ("sentinelMaster", "mymaster"),
                ("listName", &list),
            ],
            &[],
        ),
        &services,
    )
    .unwrap();
    assert_eq!(read(&*second).await.unwrap().value, 3.0);

    // A master the sentinel does not know is an error naming it.
    let unknown = scalers::build(
        &input(
            "redis-sentinel",
            &[
                ("addresses", &sentinel),
                ("sentinelMaster", "othermaster"),
                ("listName", &list),
            ],
            &[],
        ),
        &services,
    )
    .unwrap();
    let error = read(&*unknown).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("does not know the master \"othermaster\""),
        "{error}"
    );

    drop(server);
    let error = read(&*scaler).await.unwrap_err();
    assert_eq!(error.category(), "source", "{error}");
}

/// A certificate for `names` signed by `issuer`, and its key, in PEM.
fn certificate(names: &[&str], issuer: &rcgen::Issuer<'_, rcgen::KeyPair>) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    (
        params.signed_by(&key, issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

fn authority() -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "keda-rs test CA");
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

/// A CA, a server certificate for 127.0.0.1 in a folder as `test-server` takes it, and a
/// client certificate; the folder goes with the value.
struct Certificates {
    dir: std::path::PathBuf,
    ca: String,
    client_cert: String,
    client_key: String,
}

impl Certificates {
    fn new() -> Self {
        let (ca, issuer) = authority();
        let (server_cert, server_key) = certificate(&["127.0.0.1", "localhost"], &issuer);
        let (client_cert, client_key) = certificate(&["client"], &issuer);
        let dir = std::env::temp_dir().join(unique("tls").replace(':', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), &ca).unwrap();
        std::fs::write(dir.join("server.crt"), &server_cert).unwrap();
        std::fs::write(dir.join("server.key"), &server_key).unwrap();
        Self {
            dir,
            ca,
            client_cert,
            client_key,
        }
    }

    fn dir(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn tls_with_a_ca_a_client_certificate_or_no_verification() {
    let certificates = Certificates::new();
    let (ca, client_cert, client_key) = (
        &certificates.ca,
        &certificates.client_cert,
        &certificates.client_key,
    );
    let server = TestServer::start_with("redis-tls", &[certificates.dir()]);
    let address = server.get("address").to_owned();
    let services = services();
    let list = unique("tls-list");
    let with = |metadata: &[(&str, &str)], auth: &[(&str, &str)]| {
        let mut all = vec![("address", address.as_str()), ("listName", list.as_str())];
        all.extend_from_slice(metadata);
        scalers::build(&input("redis", &all, auth), &services).unwrap()
    };

    // enableTLS with the CA: verified, and the list can be filled through the trigger's server.
    let verified = with(&[("enableTLS", "true")], &[("ca", ca)]);
    assert_eq!(read(&*verified).await.unwrap().value, 0.0);
    // tls: enable in the TriggerAuthentication, with a client certificate.
    let mutual = with(
        &[],
        &[
            ("tls", "enable"),
            ("ca", ca),
            ("cert", client_cert),
            ("key", client_key),
        ],
    );
    assert_eq!(read(&*mutual).await.unwrap().value, 0.0);
    // unsafeSsl: no verification at all.
    let unverified = with(&[("enableTLS", "true"), ("unsafeSsl", "true")], &[]);
    assert_eq!(read(&*unverified).await.unwrap().value, 0.0);
    // Streams over TLS too.
    let streams = scalers::build(
        &input(
            "redis-streams",
            &[
                ("address", &address),
                ("stream", &list),
                ("enableTLS", "true"),
            ],
            &[("ca", ca)],
        ),
        &services,
    )
    .unwrap();
    assert_eq!(read(&*streams).await.unwrap().value, 0.0);

    // The system's trust store does not know this CA: an error, never 0.
    let untrusted = with(&[("enableTLS", "true")], &[]);
    let error = read(&*untrusted).await.unwrap_err();
    assert!(matches!(error, ScalerError::Source(_)), "{error:?}");
    // Plain text to a TLS port is an error too.
    let plain = with(&[], &[]);
    assert_eq!(read(&*plain).await.unwrap_err().category(), "source");
    // Differently configured TLS is a client of its own; the same settings share one (the
    // streams trigger and this one share the first): five clients.
    let again = with(&[("enableTLS", "true")], &[("ca", ca)]);
    assert_eq!(read(&*again).await.unwrap().value, 0.0);
    assert_eq!(services.redis.clients(), 5);

    drop(server);
    assert_eq!(read(&*verified).await.unwrap_err().category(), "source");
}

#[tokio::test]
async fn a_cluster_over_tls() {
    let certificates = Certificates::new();
    let server = TestServer::start_with("redis-cluster", &[certificates.dir()]);
    let addresses = server.get("addresses").to_owned();
    let services = services();
    let list = unique("tls-cluster-list");
    let build = |metadata: &[(&str, &str)], auth: &[(&str, &str)]| {
        let mut all = vec![
            ("addresses", addresses.as_str()),
            ("listName", list.as_str()),
        ];
        all.extend_from_slice(metadata);
        scalers::build(&input("redis-cluster", &all, auth), &services).unwrap()
    };
    let verified = build(&[("enableTLS", "true")], &[("ca", &certificates.ca)]);
    assert_eq!(read(&*verified).await.unwrap().value, 0.0);
    let mutual = build(
        &[],
        &[
            ("tls", "enable"),
            ("ca", &certificates.ca),
            ("cert", &certificates.client_cert),
            ("key", &certificates.client_key),
        ],
    );
    assert_eq!(read(&*mutual).await.unwrap().value, 0.0);
    let unverified = build(&[("enableTLS", "true"), ("unsafeSsl", "true")], &[]);
    assert_eq!(read(&*unverified).await.unwrap().value, 0.0);
    let untrusted = build(&[("enableTLS", "true")], &[]);
    assert_eq!(read(&*untrusted).await.unwrap_err().category(), "source");
}

#[tokio::test]
async fn keyspace_notifications_push_an_activation_without_a_poll() {
    let server = TestServer::start("redis");
    let address = server.get("address").to_owned();
    let mut db = connection(&address).await;
    let () = command(&["CONFIG", "SET", "notify-keyspace-events", "Kl"])
        .query_async(&mut db)
        .await
        .unwrap();
    let list = unique("watched_key-list");
    let services = services();
    let scaler = scalers::build(
        &input(
            "redis",
            &[
                ("address", &address),
                ("listName", &list),
                ("activationListLength", "1"),
                ("activationPush", "true"),
            ],
            &[],
        ),
        &services,
    )
    .unwrap();
    let mut pushes = scaler
        .activity_pushes()
        .expect("activationPush gives pushes");
    let _: i64 = command(&["RPUSH", &list, "1"])
        .query_async(&mut db)
        .await
        .unwrap();
    let writer = tokio::spawn({
        let address = address.clone();
        let list = list.clone();
        async move {
            let mut db = connection(&address).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _: i64 = command(&["RPUSH", &list, "2"])
                .query_async(&mut db)
                .await
                .unwrap();
        }
    });
    tokio::time::timeout(Duration::from_secs(20), pushes.next())
        .await
        .expect("a push within 20 s")
        .expect("the push stream is open");
    writer.await.unwrap();
    let length: i64 = command(&["LLEN", &list])
        .query_async(&mut db)
        .await
        .unwrap();
    assert_eq!(length, 2, "the push came once the list was longer than 1");
    drop(scaler);
    assert!(
        tokio::time::timeout(Duration::from_secs(20), pushes.next())
            .await
            .expect("the stream ends with the scaler")
            .is_none()
    );
}
