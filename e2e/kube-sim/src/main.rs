//! The `kube-sim` binary: a Kubernetes API simulator on a local port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

/// A Kubernetes API simulator for running keda-rs without a cluster.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig for this simulator here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// How often the HPA controller syncs (e.g. 15s, 1s, 500ms).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    hpa_sync_period: Duration,
    /// Map a Service to a local address: `<namespace>/<name>=<host:port>` (repeatable).
    #[arg(long = "service")]
    services: Vec<String>,
    /// Namespaces to create at start (repeatable).
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    kube_sim::controllers::workloads::parse_duration(text)
        .ok_or_else(|| format!("invalid duration {text:?} (use e.g. 500ms, 15s or 1m)"))
}

fn parse_service(text: &str) -> anyhow::Result<(String, String, SocketAddr)> {
    let (service, addr) = text
        .split_once('=')
        .context("--service wants <namespace>/<name>=<host:port>")?;
    let Some((namespace, name)) = service.split_once('/') else {
        bail!("--service wants <namespace>/<name>=<host:port>, got {text:?}");
    };
    let addr = addr
        .parse()
        .with_context(|| format!("invalid address in --service {text:?}"))?;
    Ok((namespace.to_owned(), name.to_owned(), addr))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = kube_sim::Config {
        listen: args.listen,
        hpa_sync_period: args.hpa_sync_period,
        services: args
            .services
            .iter()
            .map(|s| parse_service(s))
            .collect::<anyhow::Result<_>>()?,
        namespaces: args.namespaces,
    };
    let sim = kube_sim::start(config).await.context("starting kube-sim")?;
    if let Some(path) = &args.kubeconfig_out {
        sim.write_kubeconfig(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("kube-sim listening on {}", sim.url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
