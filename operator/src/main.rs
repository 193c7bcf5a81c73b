//! `keda-operator`: the keda-rs operator binary, with KEDA's flag names.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use keda_operator::probes::bind_address;
use keda_operator::{Config, LeaderConfig, Settings};

/// keda-rs operator: ScaledObjects, the scale loop and the metric service.
#[derive(Debug, Parser)]
#[command(name = "keda-operator", version)]
struct Args {
    /// Address of the Prometheus `/metrics` endpoint ("0" disables it).
    #[arg(long, default_value = ":8080")]
    metrics_bind_address: String,
    /// Address of `/healthz` and `/readyz`.
    #[arg(long, default_value = ":8081")]
    health_probe_bind_address: String,
    /// Address of the gRPC metric service the metrics server calls.
    #[arg(long, default_value = ":9666")]
    metrics_service_bind_address: String,
    /// Elect a leader through a Lease so only one replica acts.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "operator.keda.sh")]
    leader_election_id: String,
    /// Requests per second to the Kubernetes API.
    #[arg(long, default_value_t = 20.0)]
    kube_api_qps: f32,
    /// Burst above the QPS.
    #[arg(long, default_value_t = 30)]
    kube_api_burst: u32,
    /// Directory with `tls.crt`, `tls.key` and `ca.crt` for the metric service (mutual TLS).
    #[arg(long, default_value = "/certs")]
    cert_dir: PathBuf,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true)]
    zap_log_level: Option<String>,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true)]
    zap_encoder: Option<String>,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true)]
    zap_time_encoding: Option<String>,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    enable_cert_rotation: Option<String>,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true)]
    cert_secret_name: Option<String>,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true)]
    operator_service_name: Option<String>,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true)]
    metrics_server_service_name: Option<String>,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true)]
    webhooks_service_name: Option<String>,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true)]
    k8s_cluster_name: Option<String>,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true)]
    k8s_cluster_domain: Option<String>,
    /// Accepted for compatibility with KEDA's manifests.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    enable_webhook_patching: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A Go duration (`15s`, `1m30s`, `500ms`), as KEDA's environment variables take them.
fn go_duration(text: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    anyhow::ensure!(!rest.is_empty(), "empty duration");
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = number
            .parse()
            .context("a duration needs numbers with units, like 15s")?;
        let seconds = match unit {
            "h" => value * 3600.0,
            "m" => value * 60.0,
            "s" => value,
            "ms" => value / 1e3,
            "us" | "µs" => value / 1e6,
            "ns" => value / 1e9,
            other => anyhow::bail!("unknown duration unit {other:?}"),
        };
        total += Duration::from_secs_f64(seconds);
        rest = tail;
    }
    Ok(total)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = args.zap_log_level.as_deref().unwrap_or("info");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();

    let mut kube_config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    // The operator retries on its own schedule (reconcile backoff, polling interval); the
    // client's own minutes-long retries on 503/429 would only hide an overloaded apiserver.
    kube_config.default_retry = false;
    kube_config.read_timeout = Some(Duration::from_secs(295));
    let client = kube::Client::try_from(kube_config)?;
    tracing::info!(
        qps = args.kube_api_qps,
        burst = args.kube_api_burst,
        "Kubernetes API client ready"
    );

    let pod_namespace = env("POD_NAMESPACE").unwrap_or_else(|| "keda".to_owned());
    let identity = format!(
        "{}_{}",
        env("POD_NAME")
            .or_else(|| env("HOSTNAME"))
            .unwrap_or_else(|| "keda-operator".to_owned()),
        std::process::id()
    );
    let http_timeout = env("KEDA_HTTP_DEFAULT_TIMEOUT")
        .map(|ms| {
            ms.parse::<u64>()
                .context("KEDA_HTTP_DEFAULT_TIMEOUT must be milliseconds")
        })
        .transpose()?
        .map_or(Duration::from_secs(3), |ms| {
            Duration::from_millis(if ms == 0 { 300 } else { ms })
        });
    let config = Config {
        metrics_addr: bind_address(&args.metrics_bind_address).map_err(anyhow::Error::msg)?,
        probe_addr: bind_address(&args.health_probe_bind_address).map_err(anyhow::Error::msg)?,
        metric_service_addr: bind_address(&args.metrics_service_bind_address)
            .map_err(anyhow::Error::msg)?,
        cert_dir: Some(args.cert_dir),
        leader: if args.leader_elect {
            let mut leader = LeaderConfig::new(&pod_namespace, &args.leader_election_id, &identity);
            for (name, field) in [
                (
                    "KEDA_OPERATOR_LEADER_ELECTION_LEASE_DURATION",
                    &mut leader.lease_duration,
                ),
                (
                    "KEDA_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE",
                    &mut leader.renew_deadline,
                ),
                (
                    "KEDA_OPERATOR_LEADER_ELECTION_RETRY_PERIOD",
                    &mut leader.retry_period,
                ),
            ] {
                if let Some(text) = env(name) {
                    *field = go_duration(&text).with_context(|| format!("{name}={text:?}"))?;
                }
            }
            Some(leader)
        } else {
            None
        },
        watch_namespaces: env("WATCH_NAMESPACE")
            .map(|v| {
                v.split(',')
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        max_reconciles: env("KEDA_SCALEDOBJECT_CTRL_MAX_RECONCILES")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
        settings: Settings {
            http_timeout,
            cluster_object_namespace: env("KEDA_CLUSTER_OBJECT_NAMESPACE").unwrap_or(pod_namespace),
            ..Settings::default()
        },
    };
    let operator = keda_operator::start(client, config).await?;
    if let Some(addr) = operator.metric_service_addr {
        tracing::info!(%addr, "metric service listening");
    }
    tokio::select! {
        result = operator.done => result?,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::go_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(go_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(go_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(go_duration("15").is_err());
        assert!(go_duration("").is_err());
        assert!(go_duration("3d").is_err());
    }
}
