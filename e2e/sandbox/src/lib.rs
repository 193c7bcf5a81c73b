//! keda-rs on a simulated cluster, in one process: `kube-sim` (with its HPA controller syncing
//! every second), the keda-rs CRDs, the operator, and the metrics server registered as the
//! `v1beta1.external.metrics.k8s.io` APIService as the chart registers it.

pub mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

/// Namespace of keda-rs's own components, as the chart installs them.
pub const KEDA_NAMESPACE: &str = "keda";
/// The metrics server's Service, which the APIService points at.
pub const METRICS_SERVICE: &str = "keda-metrics-apiserver";

/// How to start the sandbox.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where kube-sim listens.
    pub listen: SocketAddr,
    /// Where the kubeconfig for the user's tools is written.
    pub kubeconfig_out: PathBuf,
    /// The simulated HPA controller's sync period.
    pub hpa_sync_period: Duration,
}

/// A running sandbox.
pub struct Sandbox {
    pub sim: kube_sim::KubeSim,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    pub operator: keda_operator::Operator,
    pub metrics_server: SocketAddr,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("sim", &self.sim.url())
            .field("kubeconfig", &self.kubeconfig)
            .field("metrics_server", &self.metrics_server)
            .finish_non_exhaustive()
    }
}

/// Starts everything and returns once the external metrics API answers through kube-sim.
pub async fn start(options: Options) -> anyhow::Result<Sandbox> {
    // The metrics server's port is reserved first: kube-sim must know where the Service points.
    let metrics_server_addr = free_port()?;
    let sim = kube_sim::start(kube_sim::Config {
        listen: options.listen,
        hpa_sync_period: options.hpa_sync_period,
        services: vec![(
            KEDA_NAMESPACE.to_owned(),
            METRICS_SERVICE.to_owned(),
            metrics_server_addr,
        )],
        namespaces: vec![KEDA_NAMESPACE.to_owned()],
    })
    .await
    .context("starting kube-sim")?;
    sim.write_kubeconfig(&options.kubeconfig_out)
        .with_context(|| format!("writing {}", options.kubeconfig_out.display()))?;
    let client = client_for(&sim.kubeconfig()).await?;
    install_crds(&client).await?;

    let operator = keda_operator::start(
        client.clone(),
        keda_operator::Config {
            metric_service_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            max_reconciles: 5,
            settings: keda_operator::Settings {
                cluster_object_namespace: KEDA_NAMESPACE.to_owned(),
                ..keda_operator::Settings::default()
            },
            ..keda_operator::Config::default()
        },
    )
    .await?;
    let operator_addr = operator
        .metric_service_addr
        .context("the operator's metric service has no address")?;

    let published = keda_metrics_server::auth::published_front_proxy(&client)
        .await
        .map_err(anyhow::Error::msg)
        .context("reading the front-proxy CA kube-sim publishes")?;
    let metrics_server = keda_metrics_server::start(keda_metrics_server::Config {
        secure_addr: metrics_server_addr,
        serving: keda_metrics_server::ServingCert::SelfSigned,
        auth: keda_metrics_server::AuthConfig {
            insecure_skip_auth: false,
            requestheader_ca: Some(published.ca),
            allowed_names: published.allowed_names,
            username_headers: published.username_headers,
        },
        operator: keda_metrics_server::OperatorConfig {
            address: operator_addr.to_string(),
            authority: None,
            tls: None,
            timeout: Duration::from_secs(3),
        },
        metrics_addr: None,
        kube: Some(keda_metrics_server::auth::KubeClient(client.clone())),
        auth_cache_ttl: Duration::from_secs(10),
    })
    .await
    .context("starting the metrics server")?;
    register_api_service(&client).await?;
    wait_for_external_metrics(&client).await?;
    // The operator is ready once its caches have synced.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !operator.ready.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the operator did not sync its caches within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Sandbox {
        sim,
        kubeconfig: options.kubeconfig_out,
        client,
        operator,
        metrics_server: metrics_server.addr,
    })
}

/// A kube client for a kubeconfig, without the client's own long retries.
pub async fn client_for(kubeconfig: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?)
}

/// Creates the keda.sh CRDs and waits until they are Established.
pub async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    for crd in keda_operator_crd::crds() {
        kube_sim::client::install_crd(client, &crd)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Registers the metrics server as `v1beta1.external.metrics.k8s.io`, as the chart does.
async fn register_api_service(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<APIService> = Api::all(client.clone());
    let service: APIService = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {
            "name": "v1beta1.external.metrics.k8s.io",
            "labels": {"app.kubernetes.io/name": "v1beta1.external.metrics.k8s.io", "app.kubernetes.io/part-of": "keda-operator"}
        },
        "spec": {
            "service": {"name": METRICS_SERVICE, "namespace": KEDA_NAMESPACE, "port": 443},
            "group": "external.metrics.k8s.io",
            "version": "v1beta1",
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
            "insecureSkipTLSVerify": true
        }
    }))?;
    api.patch(
        "v1beta1.external.metrics.k8s.io",
        &PatchParams::apply("keda-sandbox").force(),
        &Patch::Apply(&service),
    )
    .await
    .context("registering the external metrics APIService")?;
    Ok(())
}

/// Waits until discovery of the external metrics API answers through kube-sim's aggregation.
async fn wait_for_external_metrics(client: &kube::Client) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let request = http_get("/apis/external.metrics.k8s.io/v1beta1")?;
        match client.request_text(request).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(anyhow::anyhow!(
                    "the external metrics API does not answer through kube-sim: {e}"
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn http_get(path: &str) -> anyhow::Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(path).body(Vec::new())?)
}

/// Creates a namespace if it does not exist.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_none() {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &namespace).await?;
    }
    Ok(())
}
