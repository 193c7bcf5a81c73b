//! The PostgreSQL queue scaler against the machine's real PostgreSQL (or
//! `KEDA_TEST_POSTGRES_URL`), through its gRPC API. Each test works on tables of its own.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

mod support;

use keda_external_scaler::proto::GetMetricsRequest;
use keda_external_scaler::testing::{is_active, metric_specs, metric_value, next_activity};
use keda_postgres_queue_scaler::Settings;
use support::{
    admin, config, create_queue, drop_queue, notify_only, pending_jobs, scaled_object, serve,
    unique,
};
use tonic::Code;

#[tokio::test]
async fn counts_pending_rows_and_crosses_the_activation_threshold() {
    let admin = admin().await;
    let table = unique("jobs");
    create_queue(&admin, &table, "unused").await;
    admin
        .batch_execute(&format!(
            r#"INSERT INTO "{table}" (status) VALUES ('pending'), ('pending'), ('pending'), ('done'), ('done')"#
        ))
        .await
        .unwrap();
    let server = serve(config(), Settings::default()).await;
    let mut client = server.client().await;
    let so = scaled_object(&[
        ("scalerAddress", "ignored:9090"),
        ("table", &table),
        ("statusColumn", "status"),
        ("pendingValue", "pending"),
        ("targetPendingJobs", "2"),
        ("activationPendingJobs", "3"),
    ]);

    let metric = format!("pending-jobs-{}", table.replace('_', "-"));
    assert_eq!(
        metric_specs(&mut client, &so).await,
        [(metric.clone(), 2, 2.0)]
    );

    assert_eq!(metric_value(&mut client, &so, &metric).await, (3, 3.0));
    assert!(
        !is_active(&mut client, &so).await,
        "3 pending is not above the activation of 3"
    );

    admin
        .batch_execute(&format!(
            r#"INSERT INTO "{table}" (status) VALUES ('pending')"#
        ))
        .await
        .unwrap();
    assert_eq!(metric_value(&mut client, &so, &metric).await, (4, 4.0));
    assert!(
        is_active(&mut client, &so).await,
        "4 pending is above the activation of 3"
    );

    // Without a filter every row counts; with the default activation (0) any row activates.
    let all = scaled_object(&[("table", &table), ("metricName", "all-jobs")]);
    assert_eq!(metric_value(&mut client, &all, "all-jobs").await, (6, 6.0));
    assert!(is_active(&mut client, &all).await);
    admin
        .batch_execute(&format!(r#"DELETE FROM "{table}""#))
        .await
        .unwrap();
    assert_eq!(metric_value(&mut client, &all, "all-jobs").await, (0, 0.0));
    assert!(!is_active(&mut client, &all).await);

    server.shutdown().await.unwrap();
    drop_queue(&admin, &table).await;
}

#[tokio::test]
async fn status_columns_of_other_types_compare_through_a_cast() {
    let admin = admin().await;
    let table = unique("typed");
    let state = unique("state");
    admin
        .batch_execute(&format!(
            r#"
            CREATE TYPE "{state}" AS ENUM ('queued', 'running', 'finished');
            CREATE TABLE "{table}" (id serial, state "{state}", priority int, due date);
            CREATE INDEX ON "{table}" (state);
            INSERT INTO "{table}" (state, priority, due) VALUES
                ('queued', 1, '2026-01-01'), ('queued', 2, '2026-01-02'), ('running', 2, '2026-01-02');
            "#
        ))
        .await
        .unwrap();
    let server = serve(config(), Settings::default()).await;
    let mut client = server.client().await;
    for (column, pending, expected) in [
        ("state", "queued", 2),
        ("priority", "2", 2),
        ("due", "2026-01-01", 1),
    ] {
        let so = scaled_object(&[
            ("table", &table),
            ("statusColumn", column),
            ("pendingValue", pending),
            ("metricName", "m"),
        ]);
        assert_eq!(
            metric_value(&mut client, &so, "m").await,
            (expected, f64::from(u32::try_from(expected).unwrap())),
            "{column} = {pending}"
        );
    }
    // A value that is not of the column's type is the metadata's fault.
    let so = scaled_object(&[
        ("table", &table),
        ("statusColumn", "state"),
        ("pendingValue", "lost"),
    ]);
    let status = client.is_active(so).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    server.shutdown().await.unwrap();
    admin
        .batch_execute(&format!(r#"DROP TABLE "{table}"; DROP TYPE "{state}";"#))
        .await
        .unwrap();
}

#[tokio::test]
async fn names_and_values_from_metadata_are_never_sql() {
    let admin = admin().await;
    let victim = unique("victim");
    let odd = format!("{} \"quoted\" name", unique("odd"));
    let schema = unique("Schema");
    admin
        .batch_execute(&format!(
            r#"
            CREATE TABLE "{victim}" (id int, status text);
            INSERT INTO "{victim}" VALUES (1, 'pending'), (2, 'done');
            CREATE SCHEMA "{schema}";
            CREATE TABLE "{schema}"."{}" (id int, "the status" text);
            INSERT INTO "{schema}"."{}" VALUES (1, 'it''s pending'), (2, 'x');
            "#,
            odd.replace('"', "\"\""),
            odd.replace('"', "\"\""),
        ))
        .await
        .unwrap();
    let server = serve(config(), Settings::default()).await;
    let mut client = server.client().await;

    // A table name that tries to end the statement names a table that does not exist.
    let injected = scaled_object(&[("table", &format!("x\"; DROP TABLE \"{victim}\"; --"))]);
    let status = client.is_active(injected).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("does not exist"), "{status:?}");
    // A value that tries to widen the filter matches no row.
    let widened = scaled_object(&[
        ("table", &victim),
        ("statusColumn", "status"),
        ("pendingValue", "x' OR '1'='1"),
        ("metricName", "m"),
    ]);
    assert_eq!(metric_value(&mut client, &widened, "m").await, (0, 0.0));
    let count: i64 = admin
        .query_one(&format!(r#"SELECT count(*) FROM "{victim}""#), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2, "the victim table is intact");

    // Names with quotes, spaces and capitals work as written, and so do values with quotes.
    let odd_so = scaled_object(&[
        ("schema", &schema),
        ("table", &odd),
        ("statusColumn", "the status"),
        ("pendingValue", "it's pending"),
        ("metricName", "m"),
    ]);
    assert_eq!(metric_value(&mut client, &odd_so, "m").await, (1, 1.0));

    server.shutdown().await.unwrap();
    admin
        .batch_execute(&format!(
            r#"DROP TABLE "{victim}"; DROP SCHEMA "{schema}" CASCADE;"#
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn where_clauses_need_the_flag_and_run_read_only() {
    let admin = admin().await;
    let table = unique("due");
    let sequence = unique("seq");
    admin
        .batch_execute(&format!(
            r#"
            CREATE TABLE "{table}" (id int, run_at timestamptz, attempts int);
            INSERT INTO "{table}" VALUES
                (1, now() - interval '1 hour', 0), (2, now() - interval '1 minute', 5),
                (3, now() + interval '1 hour', 0);
            CREATE SEQUENCE "{sequence}";
            "#
        ))
        .await
        .unwrap();
    let so = scaled_object(&[
        ("table", &table),
        ("where", "run_at <= now() AND attempts < 3"),
        ("metricName", "m"),
    ]);

    let strict = serve(config(), Settings::default()).await;
    let status = strict
        .client()
        .await
        .get_metric_spec(so.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("--allow-where-clause"),
        "{status:?}"
    );
    strict.shutdown().await.unwrap();

    let settings = Settings {
        allow_where_clause: true,
        ..Settings::default()
    };
    let lenient = serve(config(), settings).await;
    let mut client = lenient.client().await;
    assert_eq!(metric_value(&mut client, &so, "m").await, (1, 1.0));
    // The session is read-only: a clause that writes fails, and nothing was written.
    let writing = scaled_object(&[
        ("table", &table),
        ("where", &format!("nextval('\"{sequence}\"') > 0")),
    ]);
    let status = client.is_active(writing).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("read-only"), "{status:?}");
    let (called,): (bool,) = {
        let row = admin
            .query_one(&format!(r#"SELECT is_called FROM "{sequence}""#), &[])
            .await
            .unwrap();
        (row.get(0),)
    };
    assert!(!called, "the sequence was advanced");
    lenient.shutdown().await.unwrap();
    admin
        .batch_execute(&format!(
            r#"DROP TABLE "{table}"; DROP SEQUENCE "{sequence}";"#
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn errors_are_invalid_argument_for_metadata_and_unavailable_for_a_down_database() {
    let admin = admin().await;
    let server = serve(config(), Settings::default()).await;
    let mut client = server.client().await;
    let missing = scaled_object(&[("table", &unique("missing"))]);
    let status = client.is_active(missing).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let no_table = scaled_object(&[]);
    let status = client.get_metric_spec(no_table).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    server.shutdown().await.unwrap();
    drop(admin);

    // A port nothing listens on (bound, then released).
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let down: tokio_postgres::Config =
        format!("host=127.0.0.1 port={port} user=postgres dbname=test connect_timeout=2")
            .parse()
            .unwrap();
    let server = serve(down, Settings::default()).await;
    let mut client = server.client().await;
    let so = scaled_object(&[("table", "jobs")]);
    let status = client.is_active(so.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so),
            metric_name: "pending-jobs-jobs".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_insert_pushes_activation_through_notify() {
    let admin = admin().await;
    let table = unique("pushed");
    let channel = unique("chan");
    create_queue(&admin, &table, &channel).await;
    let server = serve(config(), notify_only()).await;
    let mut client = server.client().await;
    let mut stream = client
        .stream_is_active(pending_jobs(&table, &channel))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_activity(&mut stream, "the first message").await,
        Some(false)
    );

    admin
        .batch_execute(&format!(r#"INSERT INTO "{table}" DEFAULT VALUES"#))
        .await
        .unwrap();
    assert_eq!(
        next_activity(&mut stream, "the pushed activation").await,
        Some(true)
    );

    // Rows that are not pending change nothing; the last pending one finishing deactivates.
    admin
        .batch_execute(&format!(
            r#"INSERT INTO "{table}" (status) VALUES ('done'); UPDATE "{table}" SET status = 'done'"#
        ))
        .await
        .unwrap();
    assert_eq!(
        next_activity(&mut stream, "the pushed deactivation").await,
        Some(false)
    );

    admin
        .batch_execute(&format!(r#"INSERT INTO "{table}" DEFAULT VALUES"#))
        .await
        .unwrap();
    assert_eq!(
        next_activity(&mut stream, "the second activation").await,
        Some(true)
    );

    // Graceful shutdown ends the stream cleanly.
    server.shutdown().await.unwrap();
    assert_eq!(
        next_activity(&mut stream, "the end of the stream").await,
        None
    );
    drop_queue(&admin, &table).await;
}

#[tokio::test]
async fn streams_recover_when_the_scalers_connections_are_terminated() {
    let admin = admin().await;
    let table = unique("resilient");
    let channel = unique("chan");
    let application = unique("scaler");
    create_queue(&admin, &table, &channel).await;
    let mut scaler_config = config();
    scaler_config.application_name(&application);
    let server = serve(scaler_config, notify_only()).await;
    let mut client = server.client().await;
    let so = scaled_object(&[("table", &table), ("channel", &channel)]);
    let mut stream = client
        .stream_is_active(so.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_activity(&mut stream, "the first message").await,
        Some(false)
    );

    // Kill every backend of this scaler (its LISTEN connection and its pooled ones).
    let terminated: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1) AS t",
            &[&application],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        terminated >= 2,
        "expected the LISTEN and a pooled backend, got {terminated}"
    );

    // A job inserted while the scaler reconnects is seen: by its NOTIFY if LISTEN is back in
    // time, else by the re-count after reconnecting.
    admin
        .batch_execute(&format!(r#"INSERT INTO "{table}" DEFAULT VALUES"#))
        .await
        .unwrap();
    assert_eq!(
        next_activity(&mut stream, "activation after the reconnection").await,
        Some(true)
    );
    // Polling calls work again too.
    assert!(is_active(&mut client, &so).await);

    server.shutdown().await.unwrap();
    drop_queue(&admin, &table).await;
}
