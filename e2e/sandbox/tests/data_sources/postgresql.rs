//! `postgresql`: the result of a query, with the password from a TriggerAuthentication; and a
//! NOTIFY on the `activationChannel` that scales at once.

use std::time::Duration;

use serde_json::json;

use crate::support::{Cluster, deployment, scaled_object};
use crate::{Scenario, WAIT, ensure, source_host, zero_to_n_to_zero};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_query_scales_zero_to_n_and_back_to_zero() {
    ensure("postgres", 5432);
    let (client, connection) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let table = format!("keda_rs_e2e_{}", std::process::id());
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id serial PRIMARY KEY, state text)"
        ))
        .await
        .unwrap();
    let scenario = Scenario {
        name: "postgresql",
        trigger: json!({"type": "postgresql", "metadata": {
            "host": source_host(),
            "port": "5432",
            "userName": "postgres",
            "dbName": "test",
            "sslmode": "disable",
            "query": format!("SELECT count(*) FROM {table} WHERE state = 'ready'"),
            "targetQueryValue": "4",
        }, "authenticationRef": {"name": "postgresql"}}),
        objects: vec![
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "postgresql"},
                   "stringData": {"password": "unused-with-trust-auth"}}),
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
                   "metadata": {"name": "postgresql"},
                   "spec": {"secretTargetRef": [
                       {"parameter": "password", "name": "postgresql", "key": "password"}]}}),
        ],
        high: 10,
        replicas: 3,
    };
    zero_to_n_to_zero(scenario, |rows| {
        let client = &client;
        let table = table.clone();
        async move {
            client
                .batch_execute(&format!("DELETE FROM {table}"))
                .await
                .unwrap();
            for _ in 0..rows {
                client
                    .execute(
                        &format!("INSERT INTO {table} (state) VALUES ('ready')"),
                        &[],
                    )
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

/// `activationChannel`: with a polling interval of five minutes, a NOTIFY scales the workload
/// from 0 to 1 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_on_the_activation_channel_scales_from_zero_without_waiting_for_the_poll() {
    ensure("postgres", 5432);
    let (client, connection) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let table = format!("keda_rs_e2e_notify_{}", std::process::id());
    let channel = format!("keda_rs_e2e_{}", std::process::id());
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id serial PRIMARY KEY); DELETE FROM {table}"
        ))
        .await
        .unwrap();
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("pg-notify").await;
    let name = "pg-notify";
    cluster.apply(&ns, deployment(name, 0)).await;
    let trigger = json!({"type": "postgresql", "metadata": {
        "host": source_host(),
        "port": "5432",
        "userName": "postgres",
        "dbName": "test",
        "sslmode": "disable",
        "query": format!("SELECT count(*) FROM {table}"),
        "targetQueryValue": "4",
        "activationChannel": channel,
    }});
    cluster
        .apply(
            &ns,
            scaled_object(name, json!([trigger]), json!({"pollingInterval": 300})),
        )
        .await;
    cluster
        .wait_condition(&ns, name, "Ready", "True", Some("ScaledObjectReady"))
        .await;
    // A row alone is not seen before the next poll, five minutes away.
    client
        .batch_execute(&format!("INSERT INTO {table} DEFAULT VALUES"))
        .await
        .unwrap();
    cluster
        .hold_replicas(&ns, name, 0, Duration::from_secs(3))
        .await;
    // The operator LISTENs (its last statement on that connection).
    let listen = format!("LISTEN \"{channel}\"");
    let mut listening = false;
    for _ in 0..300 {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
                &[&listen],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) > 0 {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listening, "the operator does not LISTEN on {channel}");
    let notified = tokio::time::Instant::now();
    client
        .execute("SELECT pg_notify($1, 'new job')", &[&channel])
        .await
        .unwrap();
    let took = cluster.wait_replicas(&ns, name, 1, WAIT).await;
    println!(
        "postgresql activationChannel: NOTIFY → 1 replica in {:?} (pollingInterval 300 s)",
        notified.elapsed().min(took)
    );
    cluster
        .wait_condition(&ns, name, "Active", "True", Some("ScalerActive"))
        .await;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
