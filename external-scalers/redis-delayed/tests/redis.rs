//! The Redis delayed-jobs scaler against the machine's real Redis (or `KEDA_TEST_REDIS_URL`),
//! through its gRPC API. Each test works on keys of its own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::path::Path;
use std::time::Duration;

use keda_external_scaler::proto::ScaledObjectRef;
use keda_external_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_external_scaler::testing::{
    STEP, TestServer, TestService, is_active, metric_specs, metric_value, next_activity,
    unique_name, within,
};
use keda_external_scaler::{ScalerRequest, Server};
use keda_redis_delayed_scaler::{RedisDelayedScaler, Settings};
use redis::aio::MultiplexedConnection;
use tonic::Code;
use tonic::transport::Channel;

/// Where the tests find Redis: `KEDA_TEST_REDIS_URL`, else the machine's server, which
/// `external-scalers/scripts/ensure-test-services` starts when it is down.
fn redis_service() -> TestService {
    TestService::new("Redis", "KEDA_TEST_REDIS_URL", "redis://127.0.0.1:6379/").start_with(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-test-services"),
        ["redis"],
    )
}

async fn try_connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(STEP));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await?;
    Ok(connection)
}

/// A connection for the test's own commands.
async fn admin() -> MultiplexedConnection {
    redis_service().connect(try_connect).await
}

fn unique(prefix: &str) -> String {
    unique_name(&format!("keda-rs-test:{prefix}"), ':')
}

/// The Redis server's clock, in seconds since the epoch.
async fn server_now(admin: &mut MultiplexedConnection) -> f64 {
    let (seconds, micros): (String, String) = redis::cmd("TIME").query_async(admin).await.unwrap();
    seconds.parse::<f64>().unwrap() + micros.parse::<f64>().unwrap() / 1e6
}

async fn zadd(admin: &mut MultiplexedConnection, key: &str, score: f64, member: &str) {
    let _: i64 = redis::cmd("ZADD")
        .arg(key)
        .arg(format!("{score:.6}"))
        .arg(member)
        .query_async(admin)
        .await
        .unwrap();
}

async fn del(admin: &mut MultiplexedConnection, key: &str) {
    let _: i64 = redis::cmd("DEL").arg(key).query_async(admin).await.unwrap();
}

async fn serve(url: &str, settings: Settings) -> (TestServer, ExternalScalerClient<Channel>) {
    let server =
        TestServer::start(Server::new(RedisDelayedScaler::new(url, settings).unwrap())).await;
    let client = server.client().await;
    (server, client)
}

fn scaled_object(metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScalerRequest::from_pairs("mailer", "jobs", metadata).into()
}

#[tokio::test]
async fn counts_members_due_by_the_servers_clock_and_crosses_the_activation_threshold() {
    let mut admin = admin().await;
    let key = unique("schedule");
    let now = server_now(&mut admin).await;
    zadd(&mut admin, &key, now - 3600.0, "old").await;
    zadd(&mut admin, &key, now - 1.0, "recent").await;
    zadd(&mut admin, &key, now + 3600.0, "later").await;
    let (server, mut client) = serve(redis_service().url(), Settings::default()).await;
    let so = scaled_object(&[
        ("scalerAddress", "ignored:9090"),
        ("key", &key),
        ("targetDueJobs", "4"),
        ("activationDueJobs", "2"),
        ("metricName", "due"),
    ]);

    assert_eq!(
        metric_specs(&mut client, &so).await,
        [("due".to_owned(), 4, 4.0)]
    );
    assert_eq!(metric_value(&mut client, &so, "due").await, (2, 2.0));
    assert!(!is_active(&mut client, &so).await);

    zadd(&mut admin, &key, now - 5.0, "another").await;
    assert_eq!(metric_value(&mut client, &so, "due").await, (3, 3.0));
    assert!(is_active(&mut client, &so).await);

    // Scores in milliseconds.
    let ms_key = unique("schedule-ms");
    zadd(&mut admin, &ms_key, (now - 10.0) * 1000.0, "a").await;
    zadd(&mut admin, &ms_key, (now + 3600.0) * 1000.0, "b").await;
    let ms = scaled_object(&[("key", &ms_key), ("scoreUnit", "milliseconds")]);
    let metric = format!("due-jobs-{}", ms_key.replace(':', "-"));
    assert_eq!(metric_value(&mut client, &ms, &metric).await, (1, 1.0));

    // A missing key is an empty set.
    let missing = scaled_object(&[("key", &unique("missing")), ("metricName", "m")]);
    assert_eq!(metric_value(&mut client, &missing, "m").await, (0, 0.0));
    assert!(!is_active(&mut client, &missing).await);

    server.shutdown().await.unwrap();
    del(&mut admin, &key).await;
    del(&mut admin, &ms_key).await;
}

#[tokio::test]
async fn errors_are_invalid_argument_for_metadata_and_unavailable_for_a_down_server() {
    let mut admin = admin().await;
    let key = unique("string");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("not a set")
        .query_async(&mut admin)
        .await
        .unwrap();
    let fenced = Settings {
        allowed_key_prefix: "keda-rs-test:".to_owned(),
        ..Settings::default()
    };
    let (server, mut client) = serve(redis_service().url(), fenced).await;
    let status = client
        .is_active(scaled_object(&[("key", &key)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("not a sorted set"), "{status:?}");
    let status = client
        .is_active(scaled_object(&[("key", "sessions:1")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = client
        .get_metric_spec(scaled_object(&[("key", &key), ("scoreUnit", "days")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    server.shutdown().await.unwrap();
    del(&mut admin, &key).await;

    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let (server, mut client) = serve(
        &format!("redis://127.0.0.1:{port}/"),
        Settings {
            timeout: Duration::from_secs(2),
            ..Settings::default()
        },
    )
    .await;
    let status = client
        .is_active(scaled_object(&[("key", "k")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = client
        .stream_is_active(scaled_object(&[("key", "k")]))
        .await;
    // The stream opens, then its first check fails with the status.
    let status = match status {
        Ok(stream) => within("the stream's error", stream.into_inner().message())
            .await
            .unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_delayed_job_pushes_activation_when_it_falls_due() {
    let mut admin = admin().await;
    // Polling is off (one hour): only the wake-up at the next due time can deliver `true`.
    let settings = Settings {
        poll_interval: Duration::from_secs(3600),
        ..Settings::default()
    };
    let (server, mut client) = serve(redis_service().url(), settings).await;
    // The job must still be in the future when the stream first checks; if this machine was too
    // slow for that, try again with a longer delay.
    let mut delays = [1.0, 4.0, 10.0].into_iter();
    loop {
        let delay = delays
            .next()
            .expect("the first check never came before the job was due");
        let key = unique("delayed");
        let now = server_now(&mut admin).await;
        zadd(&mut admin, &key, now + delay, "job").await;
        let mut stream = client
            .stream_is_active(scaled_object(&[("key", &key)]))
            .await
            .unwrap()
            .into_inner();
        let first = next_activity(&mut stream, "the first message").await;
        if first.expect("the stream ended") {
            del(&mut admin, &key).await;
            continue;
        }
        assert_eq!(
            next_activity(&mut stream, "the activation when the job fell due").await,
            Some(true)
        );
        assert!(
            server_now(&mut admin).await >= now + delay,
            "activated before the job was due"
        );
        del(&mut admin, &key).await;
        break;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn jobs_added_already_due_are_pushed_by_polling_and_shutdown_ends_the_stream() {
    let mut admin = admin().await;
    let settings = Settings {
        poll_interval: Duration::from_millis(50),
        ..Settings::default()
    };
    let (server, mut client) = serve(redis_service().url(), settings).await;
    let key = unique("immediate");
    let mut stream = client
        .stream_is_active(scaled_object(&[("key", &key)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_activity(&mut stream, "the first message").await,
        Some(false)
    );
    let now = server_now(&mut admin).await;
    zadd(&mut admin, &key, now - 1.0, "due-now").await;
    assert_eq!(
        next_activity(&mut stream, "the activation").await,
        Some(true)
    );
    let _: i64 = redis::cmd("ZREM")
        .arg(&key)
        .arg("due-now")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        next_activity(&mut stream, "the deactivation").await,
        Some(false)
    );

    server.shutdown().await.unwrap();
    assert_eq!(
        next_activity(&mut stream, "the end of the stream").await,
        None
    );
    del(&mut admin, &key).await;
}
