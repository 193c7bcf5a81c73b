//! `keda-postgres-queue-scaler`: a KEDA external scaler counting pending jobs in a PostgreSQL
//! table, with push activation through LISTEN/NOTIFY.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use keda_external_scaler::{Server, shutdown_signal};
use keda_postgres_queue_scaler::{PostgresQueueScaler, Settings, quote_identifier};

/// KEDA external scaler for PostgreSQL job-queue tables.
#[derive(Debug, Parser)]
#[command(name = "keda-postgres-queue-scaler", version)]
struct Args {
    /// Address of the gRPC server.
    #[arg(long, env = "SCALER_ADDRESS", default_value = "0.0.0.0:9090")]
    address: SocketAddr,
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
    #[arg(long, env = "STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    statement_timeout: Duration,
    /// How often push streams re-count without a notification.
    #[arg(long, env = "STREAM_RECHECK_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    stream_recheck_interval: Duration,
    /// Server certificate (PEM) for TLS.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Server private key (PEM) for TLS.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// CA (PEM) whose client certificates are required (mTLS). Needs TLS.
    #[arg(long, env = "TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    tls_client_ca_file: Option<PathBuf>,
}

/// `300ms`, `5s`, `2m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((text, "s"), |i| text.split_at(i));
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a duration: {e}"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
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
    let mut server = Server::new(PostgresQueueScaler::new(config, settings));
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
        let cert = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
        server = server.tls(cert, key);
    }
    if let Some(ca) = &args.tls_client_ca_file {
        let ca = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        server = server.client_ca(ca);
    }
    server.serve(args.address, shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
