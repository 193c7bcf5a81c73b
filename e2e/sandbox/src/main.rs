//! `keda-sandbox`: keda-rs on a simulated cluster, with a demo to watch it scale.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use keda_sandbox::{Options, demo};

/// keda-rs on kube-sim: the operator, the metrics server and (unless --no-demo) a queue-driven
/// Deployment that scales 0 → N → 0 as you push messages.
#[derive(Debug, Parser)]
#[command(name = "keda-sandbox", version)]
struct Args {
    /// Where the simulated Kubernetes API listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write a kubeconfig for kubectl (default: a file in the temp directory).
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Start keda-rs on an empty cluster, without the demo.
    #[arg(long)]
    no_demo: bool,
    /// Where the demo queue listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    demo_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,keda_operator=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let kubeconfig_out = args.kubeconfig_out.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("keda-sandbox-{}.kubeconfig", std::process::id()))
    });
    let sandbox = keda_sandbox::start(Options {
        listen: args.listen,
        kubeconfig_out,
        hpa_sync_period: Duration::from_secs(1),
    })
    .await?;
    let kubeconfig = sandbox.kubeconfig.display().to_string();
    println!(
        "keda-sandbox: Kubernetes API (kube-sim) at {}",
        sandbox.sim.url()
    );
    println!("keda-sandbox: kubeconfig written to {kubeconfig}");
    let _queue = if args.no_demo {
        None
    } else {
        let (addr, queue) = demo::serve_queue(args.demo_listen).await?;
        let url = format!("http://{addr}/queue");
        demo::apply(&sandbox.client, &url).await?;
        println!("keda-sandbox: demo queue at {url} (0 messages)");
        println!();
        println!("Watch the demo Deployment scale (0 replicas now):");
        println!(
            "  kubectl --kubeconfig {kubeconfig} -n {} get deployment,hpa,scaledobject -w",
            demo::NAMESPACE
        );
        println!(
            "Push 20 messages; with {} per replica it scales to 4 (and back to 0 after the queue drains):",
            demo::MESSAGES_PER_REPLICA
        );
        println!("  curl -X POST 'http://{addr}/queue/push?count=20'");
        println!("  curl -X POST 'http://{addr}/queue/drain'");
        println!("The value the HPA sees:");
        println!(
            "  kubectl --kubeconfig {kubeconfig} get --raw '/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/s0-metric-api-messages?labelSelector=scaledobject.keda.sh%2Fname%3D{}'",
            demo::NAMESPACE,
            demo::NAME
        );
        println!();
        Some(queue)
    };
    println!("keda-sandbox ready (Ctrl-C stops it)");
    tokio::select! {
        result = sandbox.operator.done => {
            result??;
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
