//! `keda-redis-delayed-scaler`: a KEDA external scaler counting the due members of a Redis sorted
//! set of delayed jobs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use keda_external_scaler::{Server, shutdown_signal};
use keda_redis_delayed_scaler::{RedisDelayedScaler, Settings};

/// KEDA external scaler for Redis sorted sets of delayed jobs.
#[derive(Debug, Parser)]
#[command(name = "keda-redis-delayed-scaler", version)]
struct Args {
    /// Address of the gRPC server.
    #[arg(long, env = "SCALER_ADDRESS", default_value = "0.0.0.0:9090")]
    address: SocketAddr,
    /// Redis URL: `redis://[user:password@]host:port[/db]`. Trigger metadata can never change it.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: String,
    /// Keys a trigger may name must start with this (empty: any key).
    #[arg(long, env = "ALLOWED_KEY_PREFIX", default_value = "")]
    allowed_key_prefix: String,
    /// The longest a push stream waits between checks, e.g. `1s` or `500ms`.
    #[arg(long, env = "POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Connect and response timeout of Redis commands.
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    redis_timeout: Duration,
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
    let settings = Settings {
        allowed_key_prefix: args.allowed_key_prefix,
        poll_interval: args.poll_interval,
        timeout: args.redis_timeout,
    };
    let scaler = RedisDelayedScaler::new(&args.redis_url, settings)
        .map_err(|e| anyhow::anyhow!("--redis-url: {}", e.message()))?;
    let mut server = Server::new(scaler);
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
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
