//! `keda-redis-delayed-scaler`: a KEDA external scaler counting the due members of a Redis sorted
//! set of delayed jobs.

use std::time::Duration;

use clap::Parser;
use keda_external_scaler::Server;
use keda_external_scaler::cli::{self, ServerArgs};
use keda_redis_delayed_scaler::{RedisDelayedScaler, Settings};

/// KEDA external scaler for Redis sorted sets of delayed jobs.
#[derive(Debug, Parser)]
#[command(name = "keda-redis-delayed-scaler", version)]
struct Args {
    // --address, --tls-cert-file, --tls-key-file, --tls-client-ca-file
    #[command(flatten)]
    server: ServerArgs,
    /// Redis URL: `redis://[user:password@]host:port[/db]`. Trigger metadata can never change it.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: String,
    /// Keys a trigger may name must start with this (empty: any key).
    #[arg(long, env = "ALLOWED_KEY_PREFIX", default_value = "")]
    allowed_key_prefix: String,
    /// The longest a push stream waits between checks, e.g. `1s` or `500ms`.
    #[arg(long, env = "POLL_INTERVAL", default_value = "1s", value_parser = cli::parse_duration)]
    poll_interval: Duration,
    /// Connect and response timeout of Redis commands.
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "5s", value_parser = cli::parse_duration)]
    redis_timeout: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_tracing();
    let args = Args::parse();
    let settings = Settings {
        allowed_key_prefix: args.allowed_key_prefix,
        poll_interval: args.poll_interval,
        timeout: args.redis_timeout,
    };
    let scaler = RedisDelayedScaler::new(&args.redis_url, settings)
        .map_err(|e| anyhow::anyhow!("--redis-url: {}", e.message()))?;
    args.server.serve(Server::new(scaler)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_flags_default_to_the_documented_values() {
        // Parsing also runs clap's consistency checks of the flags (in debug builds).
        let args = Args::try_parse_from(["scaler", "--redis-url", "redis://r:6379/"]).unwrap();
        assert_eq!(args.server.tls_client_ca_file, None);
        assert_eq!(args.allowed_key_prefix, "");
        assert_eq!(args.poll_interval, Duration::from_secs(1));
        assert_eq!(args.redis_timeout, Duration::from_secs(5));
    }
}
