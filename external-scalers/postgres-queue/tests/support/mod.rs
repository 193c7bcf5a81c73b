//! The real PostgreSQL of the machine for tests and the benchmark: connection, unique tables, and
//! the scaler served on a loopback port.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a test fails by panicking; each binary uses part of it"
)]

use std::path::Path;
use std::time::Duration;

use keda_external_scaler::proto::ScaledObjectRef;
use keda_external_scaler::testing::{TestServer, TestService, unique_name};
use keda_external_scaler::{ScalerRequest, Server};
use keda_postgres_queue_scaler::{PostgresQueueScaler, Settings};
use tokio_postgres::{Client, Config, NoTls};

/// Where the tests find PostgreSQL: `KEDA_TEST_POSTGRES_URL`, else the machine's server, which
/// `external-scalers/scripts/ensure-test-services` starts when it is down.
pub fn postgres() -> TestService {
    TestService::new(
        "PostgreSQL",
        "KEDA_TEST_POSTGRES_URL",
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
    )
    .start_with(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-test-services"),
        ["postgres"],
    )
}

pub fn config() -> Config {
    postgres().url().parse().unwrap()
}

/// A connection for the test's own statements.
pub async fn admin() -> Client {
    postgres().connect(try_connect).await
}

async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A name no other test (or run) uses: `<prefix>_<pid>_<n>_<nanos>`.
pub fn unique(prefix: &str) -> String {
    unique_name(prefix, '_')
}

/// The scaler with `settings`, served on a fresh loopback port.
pub async fn serve(config: Config, settings: Settings) -> TestServer {
    TestServer::start(Server::new(PostgresQueueScaler::new(config, settings))).await
}

pub fn scaled_object(metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScalerRequest::from_pairs("worker", "jobs", metadata).into()
}

/// The trigger of the push tests: the `pending` rows of a table made by [`create_queue`],
/// pushed on `channel`.
pub fn pending_jobs(table: &str, channel: &str) -> ScaledObjectRef {
    scaled_object(&[
        ("table", table),
        ("statusColumn", "status"),
        ("pendingValue", "pending"),
        ("channel", channel),
    ])
}

/// Settings whose streams re-count only on notifications: every change a push test sees was
/// pushed by a NOTIFY (or a reconnection), not found by a periodic re-check.
pub fn notify_only() -> Settings {
    Settings {
        stream_recheck_interval: Duration::from_secs(24 * 3600),
        ..Settings::default()
    }
}

/// Creates `table` (id, status text) with the documented NOTIFY trigger on `channel`.
pub async fn create_queue(admin: &Client, table: &str, channel: &str) {
    admin
        .batch_execute(&format!(
            r#"
            CREATE TABLE "{table}" (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
            CREATE INDEX ON "{table}" (status);
            CREATE FUNCTION "{table}_notify"() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('{channel}', TG_TABLE_NAME);
                RETURN NULL;
            END $$;
            CREATE TRIGGER "{table}_keda" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "{table}"
                FOR EACH STATEMENT EXECUTE FUNCTION "{table}_notify"();
            "#
        ))
        .await
        .unwrap();
}

/// Drops what [`create_queue`] made.
pub async fn drop_queue(admin: &Client, table: &str) {
    admin
        .batch_execute(&format!(
            r#"DROP TABLE IF EXISTS "{table}"; DROP FUNCTION IF EXISTS "{table}_notify"();"#
        ))
        .await
        .unwrap();
}
