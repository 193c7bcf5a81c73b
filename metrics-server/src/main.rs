//! `keda-metrics-apiserver`: serves `external.metrics.k8s.io` for the HPA.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use keda_metrics_server::{AuthConfig, Config, OperatorConfig, ServingCert};

/// keda-rs metrics server (external.metrics.k8s.io/v1beta1).
#[derive(Debug, Parser)]
#[command(name = "keda-metrics-apiserver", version)]
struct Args {
    /// HTTPS port of the API.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Address to bind the HTTPS port on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: std::net::IpAddr,
    /// Directory with `tls.crt` and `tls.key` (served), and `ca.crt` (mTLS to the operator).
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Serving certificate (overrides `--cert-dir`).
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    tls_private_key_file: Option<PathBuf>,
    /// The operator's metric service.
    #[arg(
        long,
        env = "KEDA_METRICS_SERVICE_ADDRESS",
        default_value = "keda-operator.keda.svc.cluster.local:9666"
    )]
    metrics_service_address: String,
    /// `:authority` (and TLS server name) for the operator connection.
    #[arg(long)]
    metrics_service_grpc_authority: Option<String>,
    /// Deadline of each call to the operator.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    metrics_service_timeout: Duration,
    /// Address of the Prometheus `/metrics` endpoint ("0" disables it).
    #[arg(long, default_value = ":8080")]
    metrics_bind_address: String,
    /// CA of the aggregation layer's front-proxy client certificate.
    #[arg(long)]
    requestheader_client_ca_file: Option<PathBuf>,
    /// Allowed common names of the front-proxy certificate (comma-separated; empty allows any).
    #[arg(long, value_delimiter = ',')]
    requestheader_allowed_names: Vec<String>,
    /// Headers naming the user on front-proxied requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User")]
    requestheader_username_headers: Vec<String>,
    /// Serve every request without authentication. LOCAL SANDBOX ONLY.
    #[arg(long)]
    insecure_skip_auth: bool,
    /// Threads serving requests (default: one per CPU); 1 runs everything on one thread.
    #[arg(long)]
    worker_threads: Option<usize>,
    /// How long TokenReview and SubjectAccessReview answers are reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    authorization_cache_ttl: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_secs_f64(value / 1000.0)),
        "s" | "" => Ok(Duration::from_secs_f64(value)),
        _ => Err(format!("invalid duration unit in {text:?} (use ms or s)")),
    }
}

fn bind_address(text: &str) -> anyhow::Result<Option<SocketAddr>> {
    match text {
        "0" | "" => Ok(None),
        t if t.starts_with(':') => Ok(Some(format!("0.0.0.0{t}").parse()?)),
        t => Ok(Some(t.parse()?)),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = match args.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let serving = match (
        &args.tls_cert_file,
        &args.tls_private_key_file,
        &args.cert_dir,
    ) {
        (Some(cert), Some(key), _) => ServingCert::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None, Some(dir)) if dir.join("tls.crt").exists() => ServingCert::Files {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
        (None, None, _) => ServingCert::SelfSigned,
        _ => anyhow::bail!("--tls-cert-file and --tls-private-key-file go together"),
    };
    let requestheader_ca = args
        .requestheader_client_ca_file
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    // The apiserver for TokenReviews and SubjectAccessReviews: in-cluster, or KUBECONFIG.
    let kube = if args.insecure_skip_auth {
        None
    } else {
        let config = kube::Config::infer().await.context(
            "finding the Kubernetes API (in-cluster or KUBECONFIG) for delegated authentication",
        )?;
        Some(kube::Client::try_from(config).context("building the Kubernetes client")?)
    };
    // Without flags, trust the front proxy the cluster publishes, as aggregated servers do.
    let mut allowed_names: Vec<String> = args
        .requestheader_allowed_names
        .into_iter()
        .filter(|n| !n.is_empty())
        .collect();
    let mut username_headers = args.requestheader_username_headers;
    let requestheader_ca = match (requestheader_ca, &kube) {
        (Some(ca), _) => Some(ca),
        (None, Some(client)) => {
            let published = keda_metrics_server::auth::published_front_proxy(client)
                .await
                .map_err(anyhow::Error::msg)
                .context("reading kube-system/extension-apiserver-authentication (or pass --requestheader-client-ca-file)")?;
            if allowed_names.is_empty() {
                allowed_names = published.allowed_names;
            }
            if !published.username_headers.is_empty() {
                username_headers = published.username_headers;
            }
            Some(published.ca)
        }
        (None, None) => None,
    };
    let operator_tls = match &args.cert_dir {
        Some(dir) if dir.join("ca.crt").exists() => Some((
            std::fs::read(dir.join("ca.crt"))?,
            std::fs::read(dir.join("tls.crt"))?,
            std::fs::read(dir.join("tls.key"))?,
        )),
        _ => None,
    };
    let config = Config {
        secure_addr: SocketAddr::new(args.bind_address, args.secure_port),
        serving,
        auth: AuthConfig {
            insecure_skip_auth: args.insecure_skip_auth,
            requestheader_ca,
            allowed_names,
            username_headers,
        },
        operator: OperatorConfig {
            address: args.metrics_service_address,
            authority: args.metrics_service_grpc_authority,
            tls: operator_tls,
            timeout: args.metrics_service_timeout,
        },
        metrics_addr: bind_address(&args.metrics_bind_address)?,
        kube: kube.map(keda_metrics_server::auth::KubeClient),
        auth_cache_ttl: args.authorization_cache_ttl,
    };
    let running = keda_metrics_server::start(config).await?;
    println!("keda-metrics-apiserver serving on https://{}", running.addr);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
