//! `postgresql`: the result of a query, with the password from a TriggerAuthentication.

use serde_json::json;

use crate::{Scenario, ensure, source_host, zero_to_n_to_zero};

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
