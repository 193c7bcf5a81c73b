//! The Redis family: `redis`, `redis-cluster` and `redis-sentinel` (the length of a list),
//! `redis-streams`, `redis-cluster-streams` and `redis-sentinel-streams` (the length of a
//! stream). Cluster and sentinel run on servers of their own
//! (`external-scalers/scripts/test-server`); their nodes announce themselves and the sentinel
//! names the master at 127.0.0.1 on kube-sim, at `KEDA_E2E_SOURCE_HOST` on a real cluster
//! (which this machine must reach too: the nodes talk to each other over it).

use std::time::Duration;

use serde_json::json;

use crate::support::{Cluster, deployment, scaled_object};
use crate::test_server::TestServer;
use crate::{Scenario, ensure, source_host, zero_to_n_to_zero};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_list_scales_zero_to_n_and_back_to_zero() {
    ensure("redis", 6379);
    let key = format!("keda-rs-e2e:{}:jobs", std::process::id());
    let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let scenario = Scenario {
        name: "redis",
        trigger: json!({"type": "redis", "metadata": {
            "address": format!("{}:6379", source_host()),
            "listName": key,
            "listLength": "5",
        }}),
        objects: Vec::new(),
        high: 18,
        replicas: 4,
    };
    zero_to_n_to_zero(scenario, |length| {
        let mut connection = connection.clone();
        let key = key.clone();
        async move {
            let _: i64 = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap();
            if length > 0 {
                let items = vec!["job"; usize::try_from(length).unwrap()];
                let _: i64 = redis::cmd("RPUSH")
                    .arg(&key)
                    .arg(&items[..])
                    .query_async(&mut connection)
                    .await
                    .unwrap();
            }
        }
    })
    .await;
}

/// Replaces the stream `key` by one of `length` entries.
async fn fill_stream(connection: &mut impl redis::aio::ConnectionLike, key: &str, length: u64) {
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(connection)
        .await
        .unwrap();
    for i in 0..length {
        let _: String = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("job")
            .arg(i)
            .query_async(connection)
            .await
            .unwrap();
    }
}

/// Replaces the list `key` by one of `length` items.
async fn fill_list(connection: &mut impl redis::aio::ConnectionLike, key: &str, length: u64) {
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(connection)
        .await
        .unwrap();
    if length > 0 {
        let items = vec!["job"; usize::try_from(length).unwrap()];
        let _: i64 = redis::cmd("RPUSH")
            .arg(key)
            .arg(&items[..])
            .query_async(connection)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_scales_zero_to_n_and_back_to_zero() {
    ensure("redis", 6379);
    let key = format!("keda-rs-e2e:{}:stream", std::process::id());
    let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let scenario = Scenario {
        name: "redis-streams",
        trigger: json!({"type": "redis-streams", "metadata": {
            "address": format!("{}:6379", source_host()),
            "stream": key,
            "streamLength": "5",
        }}),
        objects: Vec::new(),
        high: 18,
        replicas: 4,
    };
    zero_to_n_to_zero(scenario, |length| {
        let mut connection = connection.clone();
        let key = key.clone();
        async move { fill_stream(&mut connection, &key, length).await }
    })
    .await;
}

/// What a trigger of the Redis family reads: a list or a stream.
#[derive(Clone, Copy)]
enum Data {
    List,
    Stream,
}

impl Data {
    /// The trigger metadata naming `key` with a target of 5 per replica.
    fn metadata(self, key: &str) -> serde_json::Value {
        match self {
            Self::List => json!({"listName": key, "listLength": "5"}),
            Self::Stream => json!({"stream": key, "streamLength": "5"}),
        }
    }

    async fn fill(self, connection: &mut impl redis::aio::ConnectionLike, key: &str, length: u64) {
        match self {
            Self::List => fill_list(connection, key, length).await,
            Self::Stream => fill_stream(connection, key, length).await,
        }
    }
}

/// `trigger_type` (`redis-cluster` or `redis-cluster-streams`) on a cluster of three masters.
async fn on_a_cluster(trigger_type: &'static str, data: Data) {
    let server = TestServer::start("redis-cluster");
    let addresses = server.get("addresses").to_owned();
    let nodes: Vec<String> = addresses
        .split(',')
        .map(|a| format!("redis://{a}/"))
        .collect();
    let connection = redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let key = format!("keda-rs-e2e:{}:{trigger_type}", std::process::id());
    let host = source_host();
    let shown: Vec<String> = addresses
        .split(',')
        .map(|a| format!("{host}:{}", a.rsplit(':').next().unwrap()))
        .collect();
    let mut metadata = data.metadata(&key);
    metadata["addresses"] = json!(shown.join(","));
    let scenario = Scenario {
        name: trigger_type,
        trigger: json!({"type": trigger_type, "metadata": metadata}),
        objects: Vec::new(),
        high: 18,
        replicas: 4,
    };
    zero_to_n_to_zero(scenario, |length| {
        let mut connection = connection.clone();
        let key = key.clone();
        async move { data.fill(&mut connection, &key, length).await }
    })
    .await;
}

/// `trigger_type` (`redis-sentinel` or `redis-sentinel-streams`) on the master a sentinel names.
async fn behind_a_sentinel(trigger_type: &'static str, data: Data) {
    let server = TestServer::start("redis-sentinel");
    let master = server.get("master").to_owned();
    let sentinel_port = server
        .get("sentinel")
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let client = redis::Client::open(format!("redis://{master}/")).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("keda-rs-e2e:{}:{trigger_type}", std::process::id());
    let mut metadata = data.metadata(&key);
    metadata["addresses"] = json!(format!("{}:{sentinel_port}", source_host()));
    metadata["sentinelMaster"] = json!(server.get("master_name"));
    let scenario = Scenario {
        name: trigger_type,
        trigger: json!({"type": trigger_type, "metadata": metadata}),
        objects: Vec::new(),
        high: 18,
        replicas: 4,
    };
    zero_to_n_to_zero(scenario, |length| {
        let mut connection = connection.clone();
        let key = key.clone();
        async move { data.fill(&mut connection, &key, length).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_scales_zero_to_n_and_back_to_zero() {
    on_a_cluster("redis-cluster", Data::List).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_streams_scales_zero_to_n_and_back_to_zero() {
    on_a_cluster("redis-cluster-streams", Data::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_scales_zero_to_n_and_back_to_zero() {
    behind_a_sentinel("redis-sentinel", Data::List).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_streams_scales_zero_to_n_and_back_to_zero() {
    behind_a_sentinel("redis-sentinel-streams", Data::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_push_activates_without_waiting_for_the_polling_interval() {
    ensure("redis", 6379);
    let key = format!("keda-rs-e2e:{}:pushed-stream", std::process::id());
    let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    fill_stream(&mut connection, &key, 0).await;
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("redis-push").await;
    cluster.apply(&ns, deployment("worker", 0)).await;
    let trigger = json!({"type": "redis-streams", "metadata": {
        "address": format!("{}:6379", source_host()),
        "stream": key,
        "streamLength": "5",
        "activationPush": "true",
    }});
    let mut so = scaled_object("worker", json!([trigger]), json!({}));
    // Far longer than the test: only the push can activate the workload in time.
    so["spec"]["pollingInterval"] = json!(600);
    cluster.apply(&ns, so).await;
    cluster
        .wait_condition(&ns, "worker", "Ready", "True", Some("ScaledObjectReady"))
        .await;
    cluster
        .hold_replicas(&ns, "worker", 0, Duration::from_secs(2))
        .await;

    let added = tokio::time::Instant::now();
    fill_stream(&mut connection, &key, 3).await;
    let took = cluster
        .wait_replicas(&ns, "worker", 1, Duration::from_secs(20))
        .await;
    println!(
        "redis-streams push activation: XADD → 1 replica in {:?} (pollingInterval 600 s)",
        added.elapsed().min(took)
    );
    fill_stream(&mut connection, &key, 0).await;
}

/// A field of `INFO` (`name:value` lines), as a number.
async fn info_field(
    connection: &mut impl redis::aio::ConnectionLike,
    section: &str,
    name: &str,
) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// The `calls=` of a command in `INFO commandstats` (0 before its first call).
async fn command_calls(connection: &mut impl redis::aio::ConnectionLike, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_scaled_objects_on_one_list_share_one_connection_and_one_llen_per_interval() {
    const OBJECTS: usize = 100;
    const INTERVAL: u64 = 2;
    // A server of its own: its command statistics count only the operator's reads.
    let server = TestServer::start("redis");
    let address = server.get("address").to_owned();
    let port = address.rsplit_once(':').unwrap().1.to_owned();
    let client = redis::Client::open(format!("redis://{address}/")).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    fill_list(&mut connection, "jobs", 3).await;
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("redis-shared").await;
    for i in 0..OBJECTS {
        let name = format!("worker-{i}");
        cluster.apply(&ns, deployment(&name, 0)).await;
        let mut so = scaled_object(
            &name,
            // The HPA's queries are answered from the loops' reads (KEDA's `useCachedMetrics`),
            // so the source sees the loops only.
            json!([{"type": "redis", "useCachedMetrics": true, "metadata": {
                "address": format!("{}:{port}", source_host()),
                "listName": "jobs",
                "listLength": "5",
                // Three items keep every workload idle: only the reads are counted.
                "activationListLength": "5",
            }}]),
            json!({}),
        );
        so["spec"]["pollingInterval"] = json!(INTERVAL);
        cluster.apply(&ns, so).await;
    }
    for i in 0..OBJECTS {
        cluster
            .wait_condition(&ns, &format!("worker-{i}"), "Ready", "True", None)
            .await;
    }
    // Every loop has started: count the reads of the next intervals.
    tokio::time::sleep(Duration::from_secs(INTERVAL)).await;
    let llen_before = command_calls(&mut connection, "llen").await;
    let started = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_secs(5 * INTERVAL)).await;
    let llen = command_calls(&mut connection, "llen").await - llen_before;
    let elapsed = started.elapsed().unwrap();
    // Our own connection and the operator's.
    let clients = info_field(&mut connection, "clients", "connected_clients").await;
    let epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "seconds since the epoch, whole ticks"
    )]
    let ticks = {
        let (from, to) = (epoch(started), epoch(started) + elapsed.as_secs_f64());
        ((to / INTERVAL as f64).floor() - (from / INTERVAL as f64).floor()) as u64
    };
    println!(
        "{OBJECTS} ScaledObjects on one list: {} connection(s) of the operator, {llen} LLEN in \
         {elapsed:.1?} ({ticks} polling ticks of {INTERVAL} s)",
        clients - 1
    );
    assert_eq!(clients - 1, 1, "the operator's connections to the server");
    assert!(
        llen <= ticks,
        "{llen} LLEN for {ticks} polling ticks: reads of one tick were not shared"
    );
    assert!(llen > 0, "no read at all");
    drop(server);
}
