//! The command line of a scaler's binary (feature `cli`): the server's flags as a clap
//! [`Args`](clap::Args) struct to flatten into your own, a duration parser for flags, and the
//! usual logging set-up.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use clap::Parser;
//! use keda_external_scaler::cli::{self, ServerArgs};
//! use keda_external_scaler::Server;
//! # use keda_external_scaler::{MetricSpec, MetricValue, Result, Scaler, ScalerRequest};
//! # struct MyScaler { poll_interval: Duration }
//! # impl Scaler for MyScaler {
//! #     async fn is_active(&self, _: &ScalerRequest) -> Result<bool> { Ok(false) }
//! #     async fn metric_specs(&self, _: &ScalerRequest) -> Result<Vec<MetricSpec>> { Ok(vec![]) }
//! #     async fn metric_values(&self, _: &ScalerRequest, _: &str) -> Result<Vec<MetricValue>> {
//! #         Ok(vec![])
//! #     }
//! # }
//!
//! /// My scaler.
//! #[derive(Debug, Parser)]
//! #[command(version)]
//! struct Args {
//!     /// `--address`, `--tls-cert-file`, `--tls-key-file`, `--tls-client-ca-file`.
//!     #[command(flatten)]
//!     server: ServerArgs,
//!     /// How often to look at the source, e.g. `1s` or `500ms`.
//!     #[arg(long, env = "POLL_INTERVAL", default_value = "1s", value_parser = cli::parse_duration)]
//!     poll_interval: Duration,
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//!     cli::init_tracing();
//!     let args = Args::parse();
//!     let scaler = MyScaler { poll_interval: args.poll_interval };
//!     args.server.serve(Server::new(scaler)).await?;
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::scaler::Scaler;
use crate::server::{ServeError, Server, shutdown_signal};

/// The flags of the gRPC server, each with an environment variable: `--address`
/// (`SCALER_ADDRESS`, default `0.0.0.0:9090`), `--tls-cert-file` and `--tls-key-file`
/// (`TLS_CERT_FILE`, `TLS_KEY_FILE`: serve TLS; one needs the other) and `--tls-client-ca-file`
/// (`TLS_CLIENT_CA_FILE`: require client certificates, mTLS; needs TLS).
///
/// Flatten it into the scaler's own flags with `#[command(flatten)]`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[non_exhaustive]
pub struct ServerArgs {
    /// Address of the gRPC server.
    #[arg(long, env = "SCALER_ADDRESS", default_value = "0.0.0.0:9090")]
    pub address: SocketAddr,
    /// Server certificate (PEM) for TLS.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Server private key (PEM) for TLS.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// CA (PEM) whose client certificates are required (mTLS). Needs TLS.
    #[arg(long, env = "TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
}

impl ServerArgs {
    /// `server` with the TLS material of the flags read in (see [`Server::tls`] and
    /// [`Server::client_ca`]); unchanged when no TLS flag is given.
    pub fn apply<S: Scaler>(&self, mut server: Server<S>) -> Result<Server<S>, RunError> {
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            server = server.tls(read(cert)?, read(key)?);
        }
        if let Some(ca) = &self.tls_client_ca_file {
            server = server.client_ca(read(ca)?);
        }
        Ok(server)
    }

    /// [Applies](Self::apply) the flags to `server` and serves on `--address` until
    /// [`shutdown_signal`] (SIGTERM or Ctrl-C).
    pub async fn serve<S: Scaler>(&self, server: Server<S>) -> Result<(), RunError> {
        self.apply(server)?
            .serve(self.address, shutdown_signal())
            .await
            .map_err(RunError::Serve)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, RunError> {
    std::fs::read(path).map_err(|source| RunError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Why [`ServerArgs::serve`] (or [`apply`](ServerArgs::apply)) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// A TLS file of the flags could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server could not start, or failed.
    Serve(ServeError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, .. } => write!(f, "reading {}", path.display()),
            Self::Serve(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            // Transparent: the server's error speaks for itself.
            Self::Serve(e) => e.source(),
        }
    }
}

/// Parses a duration flag: `300ms`, `5s`, `2m` or a bare number of seconds (fractions allowed).
/// Use it as `#[arg(value_parser = cli::parse_duration)]`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
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

/// Logs to stderr through `tracing-subscriber`, at the levels of `RUST_LOG` (default `info`).
///
/// # Panics
///
/// When a global `tracing` subscriber is already set: call it once, first thing in `main`.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration(" 1s ").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn the_server_flags_are_consistent_and_tls_files_go_in_pairs() {
        Command::command().debug_assert();
        let plain = Command::try_parse_from(["scaler", "--address", "127.0.0.1:7000"]).unwrap();
        assert_eq!(plain.server.address, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(plain.server.tls_cert_file, None);
        for incomplete in [
            &["scaler", "--tls-cert-file", "c.pem"][..],
            &["scaler", "--tls-key-file", "k.pem"][..],
            &["scaler", "--tls-client-ca-file", "ca.pem"][..],
        ] {
            assert!(
                Command::try_parse_from(incomplete).is_err(),
                "{incomplete:?}"
            );
        }
        let mtls = Command::try_parse_from([
            "scaler",
            "--tls-cert-file",
            "c.pem",
            "--tls-key-file",
            "k.pem",
            "--tls-client-ca-file",
            "ca.pem",
        ])
        .unwrap();
        assert_eq!(
            mtls.server.tls_client_ca_file,
            Some(PathBuf::from("ca.pem"))
        );
    }

    #[test]
    fn an_unreadable_tls_file_is_named() {
        struct Idle;
        impl Scaler for Idle {
            async fn is_active(&self, _: &crate::ScalerRequest) -> crate::Result<bool> {
                Ok(false)
            }
            async fn metric_specs(
                &self,
                _: &crate::ScalerRequest,
            ) -> crate::Result<Vec<crate::MetricSpec>> {
                Ok(vec![])
            }
            async fn metric_values(
                &self,
                _: &crate::ScalerRequest,
                _: &str,
            ) -> crate::Result<Vec<crate::MetricValue>> {
                Ok(vec![])
            }
        }
        let args = Command::try_parse_from([
            "scaler",
            "--tls-cert-file",
            "/nonexistent/cert.pem",
            "--tls-key-file",
            "/nonexistent/key.pem",
        ])
        .unwrap()
        .server;
        let error = args.apply(Server::new(Idle)).unwrap_err();
        assert_eq!(error.to_string(), "reading /nonexistent/cert.pem");
        assert!(std::error::Error::source(&error).is_some());
        let plain = Command::try_parse_from(["scaler"]).unwrap().server;
        assert!(plain.apply(Server::new(Idle)).is_ok());
    }
}
