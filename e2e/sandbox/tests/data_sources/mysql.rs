//! `mysql`: the result of a query, with a Go driver DSN (`connectionString`) from a
//! TriggerAuthentication.

use mysql_async::prelude::Queryable;
use serde_json::json;

use crate::{Scenario, ensure, source_host, zero_to_n_to_zero};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_query_scales_zero_to_n_and_back_to_zero() {
    ensure("mariadb", 3306);
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .user(Some("root"))
        .db_name(Some("test"))
        .prefer_socket(false);
    let db = tokio::sync::Mutex::new(mysql_async::Conn::new(opts).await.unwrap());
    let table = format!("keda_rs_e2e_{}", std::process::id());
    db.lock()
        .await
        .query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {table} (id int AUTO_INCREMENT PRIMARY KEY, state text)"
        ))
        .await
        .unwrap();
    let scenario = Scenario {
        name: "mysql",
        trigger: json!({"type": "mysql", "metadata": {
            "query": format!("SELECT count(*) FROM {table} WHERE state = 'ready'"),
            "queryValue": "4",
        }, "authenticationRef": {"name": "mysql"}}),
        objects: vec![
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mysql"},
                   "stringData": {"dsn": format!("root@tcp({}:3306)/test", source_host())}}),
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
                   "metadata": {"name": "mysql"},
                   "spec": {"secretTargetRef": [
                       {"parameter": "connectionString", "name": "mysql", "key": "dsn"}]}}),
        ],
        high: 10,
        replicas: 3,
    };
    zero_to_n_to_zero(scenario, |rows| {
        let db = &db;
        let table = table.clone();
        async move {
            let mut db = db.lock().await;
            db.query_drop(format!("DELETE FROM {table}")).await.unwrap();
            for _ in 0..rows {
                db.query_drop(format!("INSERT INTO {table} (state) VALUES ('ready')"))
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    let mut db = db.into_inner();
    db.query_drop(format!("DROP TABLE {table}")).await.unwrap();
    db.disconnect().await.unwrap();
}
