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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keda_external_scaler::Server;
use keda_external_scaler::proto::ScaledObjectRef;
use keda_external_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_postgres_queue_scaler::{PostgresQueueScaler, Settings};
use tokio::sync::oneshot;
use tokio_postgres::{Client, Config, NoTls};
use tonic::transport::Channel;

/// The longest any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(20);

/// Where the tests find PostgreSQL: `KEDA_TEST_POSTGRES_URL`, else the machine's server.
pub fn database_url() -> (String, bool) {
    match std::env::var("KEDA_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => (url, true),
        _ => (
            "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned(),
            false,
        ),
    }
}

pub fn config() -> Config {
    database_url().0.parse().unwrap()
}

/// A connection for the test's own statements. When the default server is down, starts it with
/// `external-scalers/scripts/ensure-test-services` and tries again.
pub async fn admin() -> Client {
    let (url, overridden) = database_url();
    match try_connect(&url).await {
        Ok(client) => client,
        Err(first) if !overridden => {
            eprintln!("PostgreSQL at {url} is not reachable ({first}); starting it");
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-test-services");
            let status = std::process::Command::new(&script)
                .arg("postgres")
                .status()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                status.success(),
                "PostgreSQL is down and {} could not start it (see above)",
                script.display()
            );
            try_connect(&url)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {url} still unreachable: {e}"))
        }
        Err(error) => panic!("PostgreSQL at KEDA_TEST_POSTGRES_URL={url} is unreachable: {error}"),
    }
}

async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio::time::timeout(STEP, tokio_postgres::connect(url, NoTls))
        .await
        .expect("connecting to PostgreSQL timed out")?;
    tokio::spawn(connection);
    Ok(client)
}

/// A name no other test (or run) uses: `<prefix>_<pid>_<n>_<nanos>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A scaler served on a fresh loopback port, and the trigger of its shutdown.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), keda_external_scaler::ServeError>>,
}

impl Running {
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("the server did not stop")
            .unwrap()
            .unwrap();
    }
}

pub async fn serve(config: Config, settings: Settings) -> Running {
    let scaler = PostgresQueueScaler::new(config, settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(Server::new(scaler).serve_on(listener, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

pub async fn client(addr: SocketAddr) -> ExternalScalerClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ExternalScalerClient::new(channel)
}

pub fn scaled_object(metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "worker".to_owned(),
        namespace: "jobs".to_owned(),
        scaler_metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
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
