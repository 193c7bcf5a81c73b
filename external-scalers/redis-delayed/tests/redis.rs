//! The Redis delayed-jobs scaler against the machine's real Redis (or `KEDA_TEST_REDIS_URL`),
//! through its gRPC API. Each test works on keys of its own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::float_cmp,
    reason = "a test fails by panicking; the floats compared are exact"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keda_external_scaler::Server;
use keda_external_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_external_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use keda_redis_delayed_scaler::{RedisDelayedScaler, Settings};
use redis::aio::MultiplexedConnection;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;

/// The longest any single step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

fn redis_url() -> (String, bool) {
    match std::env::var("KEDA_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => (url, true),
        _ => ("redis://127.0.0.1:6379/".to_owned(), false),
    }
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

/// A connection for the test's own commands. When the default server is down, starts it with
/// `external-scalers/scripts/ensure-test-services` and tries again.
async fn admin() -> MultiplexedConnection {
    let (url, overridden) = redis_url();
    match try_connect(&url).await {
        Ok(connection) => connection,
        Err(first) if !overridden => {
            eprintln!("Redis at {url} is not reachable ({first}); starting it");
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-test-services");
            let status = std::process::Command::new(&script)
                .arg("redis")
                .status()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                status.success(),
                "Redis is down and {} could not start it (see above)",
                script.display()
            );
            try_connect(&url)
                .await
                .unwrap_or_else(|e| panic!("Redis at {url} still unreachable: {e}"))
        }
        Err(error) => panic!("Redis at KEDA_TEST_REDIS_URL={url} is unreachable: {error}"),
    }
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "keda-rs-test:{prefix}:{}:{}:{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
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

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), keda_external_scaler::ServeError>>,
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("the server did not stop")
            .unwrap()
            .unwrap();
    }
}

async fn serve(url: &str, settings: Settings) -> (Running, ExternalScalerClient<Channel>) {
    let scaler = RedisDelayedScaler::new(url, settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(Server::new(scaler).serve_on(listener, async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (Running { stop, task }, ExternalScalerClient::new(channel))
}

fn scaled_object(metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "mailer".to_owned(),
        namespace: "jobs".to_owned(),
        scaler_metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

async fn value(
    client: &mut ExternalScalerClient<Channel>,
    so: &ScaledObjectRef,
    metric: &str,
) -> (i64, f64) {
    let answer = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so.clone()),
            metric_name: metric.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.metric_values.len(), 1);
    let v = &answer.metric_values[0];
    (v.metric_value, v.metric_value_float)
}

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP:?}"))
}

#[tokio::test]
async fn counts_members_due_by_the_servers_clock_and_crosses_the_activation_threshold() {
    let mut admin = admin().await;
    let key = unique("schedule");
    let now = server_now(&mut admin).await;
    zadd(&mut admin, &key, now - 3600.0, "old").await;
    zadd(&mut admin, &key, now - 1.0, "recent").await;
    zadd(&mut admin, &key, now + 3600.0, "later").await;
    let (server, mut client) = serve(&redis_url().0, Settings::default()).await;
    let so = scaled_object(&[
        ("scalerAddress", "ignored:9090"),
        ("key", &key),
        ("targetDueJobs", "4"),
        ("activationDueJobs", "2"),
        ("metricName", "due"),
    ]);

    let specs = client
        .get_metric_spec(so.clone())
        .await
        .unwrap()
        .into_inner();
    let specs: Vec<_> = specs
        .metric_specs
        .iter()
        .map(|s| (s.metric_name.as_str(), s.target_size, s.target_size_float))
        .collect();
    assert_eq!(specs, [("due", 4, 4.0)]);
    assert_eq!(value(&mut client, &so, "due").await, (2, 2.0));
    assert!(
        !client
            .is_active(so.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );

    zadd(&mut admin, &key, now - 5.0, "another").await;
    assert_eq!(value(&mut client, &so, "due").await, (3, 3.0));
    assert!(
        client
            .is_active(so.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );

    // Scores in milliseconds.
    let ms_key = unique("schedule-ms");
    zadd(&mut admin, &ms_key, (now - 10.0) * 1000.0, "a").await;
    zadd(&mut admin, &ms_key, (now + 3600.0) * 1000.0, "b").await;
    let ms = scaled_object(&[("key", &ms_key), ("scoreUnit", "milliseconds")]);
    let metric = format!("due-jobs-{}", ms_key.replace(':', "-"));
    assert_eq!(value(&mut client, &ms, &metric).await, (1, 1.0));

    // A missing key is an empty set.
    let missing = scaled_object(&[("key", &unique("missing")), ("metricName", "m")]);
    assert_eq!(value(&mut client, &missing, "m").await, (0, 0.0));
    assert!(!client.is_active(missing).await.unwrap().into_inner().result);

    server.shutdown().await;
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
    let (server, mut client) = serve(&redis_url().0, fenced).await;
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
    server.shutdown().await;
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
    server.shutdown().await;
}

#[tokio::test]
async fn a_delayed_job_pushes_activation_when_it_falls_due() {
    let mut admin = admin().await;
    // Polling is off (one hour): only the wake-up at the next due time can deliver `true`.
    let settings = Settings {
        poll_interval: Duration::from_secs(3600),
        ..Settings::default()
    };
    let (server, mut client) = serve(&redis_url().0, settings).await;
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
        let first = within("the first message", stream.message())
            .await
            .unwrap()
            .unwrap();
        if first.result {
            del(&mut admin, &key).await;
            continue;
        }
        let pushed = within("the activation when the job fell due", stream.message())
            .await
            .unwrap();
        assert_eq!(pushed.map(|m| m.result), Some(true));
        assert!(
            server_now(&mut admin).await >= now + delay,
            "activated before the job was due"
        );
        del(&mut admin, &key).await;
        break;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn jobs_added_already_due_are_pushed_by_polling_and_shutdown_ends_the_stream() {
    let mut admin = admin().await;
    let settings = Settings {
        poll_interval: Duration::from_millis(50),
        ..Settings::default()
    };
    let (server, mut client) = serve(&redis_url().0, settings).await;
    let key = unique("immediate");
    let mut stream = client
        .stream_is_active(scaled_object(&[("key", &key)]))
        .await
        .unwrap()
        .into_inner();
    let first = within("the first message", stream.message()).await.unwrap();
    assert_eq!(first.map(|m| m.result), Some(false));
    let now = server_now(&mut admin).await;
    zadd(&mut admin, &key, now - 1.0, "due-now").await;
    let pushed = within("the activation", stream.message()).await.unwrap();
    assert_eq!(pushed.map(|m| m.result), Some(true));
    let _: i64 = redis::cmd("ZREM")
        .arg(&key)
        .arg("due-now")
        .query_async(&mut admin)
        .await
        .unwrap();
    let pushed = within("the deactivation", stream.message()).await.unwrap();
    assert_eq!(pushed.map(|m| m.result), Some(false));

    server.shutdown().await;
    let end = within("the end of the stream", stream.message())
        .await
        .unwrap();
    assert!(end.is_none(), "{end:?}");
    del(&mut admin, &key).await;
}
