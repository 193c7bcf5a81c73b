//! `keda-postgres-queue-scaler`: a KEDA external scaler counting pending jobs in a PostgreSQL
//! table, with push activation through LISTEN/NOTIFY.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use keda_external_scaler::Server;
use keda_external_scaler::cli::{self, ServerArgs};
use keda_postgres_queue_scaler::{PostgresQueueScaler, Settings, quote_identifier};

/// KEDA external scaler for PostgreSQL job-queue tables.
#[derive(Debug, Parser)]
#[command(name = "keda-postgres-queue-scaler", version)]
struct Args {
    // --address, --tls-cert-file, --tls-key-file, --tls-client-ca-file
    #[command(flatten)]
    server: ServerArgs,
    /// PostgreSQL connection string, as a URL (`postgresql://user@host:5432/db`) or in key=value
    /// form (`host=... user=... dbname=...`). Trigger metadata can never change it.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Pooled connections for counts (one more is used for LISTEN).
    #[arg(long, env = "POOL_SIZE", default_value_t = 4)]
    pool_size: usize,
    /// Channel listened on when a trigger's metadata has no `channel`.
    #[arg(long, env = "NOTIFY_CHANNEL", default_value = "keda_jobs")]
    notify_channel: String,
    /// Let trigger metadata give a raw SQL `where` clause (see the README before enabling).
    #[arg(long, env = "ALLOW_WHERE_CLAUSE")]
    allow_where_clause: bool,
    /// Statement timeout of each count, e.g. `5s` or `500ms`.
    #[arg(long, env = "STATEMENT_TIMEOUT", default_value = "5s", value_parser = cli::parse_duration)]
    statement_timeout: Duration,
    /// How often push streams re-count without a notification.
    #[arg(long, env = "STREAM_RECHECK_INTERVAL", default_value = "30s", value_parser = cli::parse_duration)]
    stream_recheck_interval: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_tracing();
    let args = Args::parse();
    let mut config: tokio_postgres::Config = args
        .database_url
        .parse()
        .context("--database-url is not a PostgreSQL connection string")?;
    if config.get_application_name().is_none() {
        config.application_name("keda-postgres-queue-scaler");
    }
    config.keepalives_idle(Duration::from_secs(30));
    quote_identifier(&args.notify_channel)
        .map_err(|e| anyhow::anyhow!("--notify-channel: {}", e.message()))?;
    let settings = Settings {
        pool_size: args.pool_size,
        default_channel: args.notify_channel,
        allow_where_clause: args.allow_where_clause,
        statement_timeout: args.statement_timeout,
        stream_recheck_interval: args.stream_recheck_interval,
    };
    if settings.allow_where_clause {
        tracing::warn!(
            "trigger metadata may give raw SQL `where` clauses; connect as a role that can only \
             read the queue tables"
        );
    }
    let scaler = PostgresQueueScaler::new(config, settings);
    args.server.serve(Server::new(scaler)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_flags_default_to_the_documented_values() {
        // Parsing also runs clap's consistency checks of the flags (in debug builds).
        let args = Args::try_parse_from(["scaler", "--database-url", "host=db"]).unwrap();
        assert_eq!(args.server.tls_cert_file, None);
        assert_eq!(
            (args.pool_size, args.notify_channel.as_str()),
            (4, "keda_jobs")
        );
        assert!(!args.allow_where_clause);
        assert_eq!(args.statement_timeout, Duration::from_secs(5));
        assert_eq!(args.stream_recheck_interval, Duration::from_secs(30));
    }
}
