//! Installing CRDs the way a client does against any apiserver: create, then wait for the
//! `Established` condition (kube-sim sets it at once; a real cluster takes a moment).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Creates `crd` and waits (up to 10 s) until it is Established.
pub(crate) async fn install(client: &kube::Client, crd: &CustomResourceDefinition) {
    kube_sim::client::install_crd(client, crd).await.unwrap();
}
