//! Talking to the simulator (or any apiserver) with kube-rs: a client, and CRD installation
//! that waits for `Established` as a client must against a real cluster.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

/// A kube-rs client for a simulator at `url`. The client's own retries of 503/429 (which go on
/// for minutes) are off: tests and tools here want the answer, not a wait.
pub fn client(url: &str) -> Result<kube::Client, kube::Error> {
    let uri = url.parse().map_err(|e| kube::Error::Service(Box::new(e)))?;
    let mut config = kube::Config::new(uri);
    config.default_retry = false;
    kube::Client::try_from(config)
}

/// Applies `crd` (server-side, so it also updates an existing one) and waits up to 10 s for
/// its `Established` condition.
pub async fn install_crd(
    client: &kube::Client,
    crd: &CustomResourceDefinition,
) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply("kube-sim").force(),
        &Patch::Apply(crd),
    )
    .await
    .map_err(|e| format!("installing the CRD {name}: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let established = api
            .get(&name)
            .await
            .map_err(|e| format!("reading the CRD {name}: {e}"))?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the CRD {name} did not become Established within 10 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
