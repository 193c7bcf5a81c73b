//! The Redis family: `redis` and `redis-cluster` (the length of a list), `redis-streams` and
//! `redis-sentinel-streams` (the length of a stream). Cluster and sentinel run on servers of
//! their own (`external-scalers/scripts/test-server`); their nodes announce themselves and the
//! sentinel names the master at 127.0.0.1, so those two scenarios need the operator on this
//! machine (kube-sim), not in a real cluster.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_scales_zero_to_n_and_back_to_zero() {
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
    let key = format!("keda-rs-e2e:{}:cluster-jobs", std::process::id());
    let host = source_host();
    let shown: Vec<String> = addresses
        .split(',')
        .map(|a| format!("{host}:{}", a.rsplit(':').next().unwrap()))
        .collect();
    let scenario = Scenario {
        name: "redis-cluster",
        trigger: json!({"type": "redis-cluster", "metadata": {
            "addresses": shown.join(","),
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
        async move { fill_list(&mut connection, &key, length).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_streams_scales_zero_to_n_and_back_to_zero() {
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
    let key = format!("keda-rs-e2e:{}:sentinel-stream", std::process::id());
    let scenario = Scenario {
        name: "redis-sentinel-streams",
        trigger: json!({"type": "redis-sentinel-streams", "metadata": {
            "addresses": format!("{}:{sentinel_port}", source_host()),
            "sentinelMaster": server.get("master_name"),
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
