//! Installing CRDs the way a client does against any apiserver: create, then wait for the
//! `Established` condition (kube-sim sets it at once; a real cluster takes a moment).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;

/// Creates `crd` and waits (up to 10 s) until it is Established.
pub(crate) async fn install(client: &kube::Client, crd: &CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), crd).await.unwrap();
    let name = crd.metadata.name.clone().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let established = crds
            .get(&name)
            .await
            .unwrap()
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CRD {name} is not Established"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
