//! `redis`: the length of a list.

use serde_json::json;

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
