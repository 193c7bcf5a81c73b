//! API aggregation: group versions claimed by an `APIService` with a backing Service are proxied
//! to that Service's address.

use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::Value;

use crate::Sim;
use crate::api_error::ApiError;
use crate::cluster::Cluster;
use crate::http::route::Route;
use crate::resources::ResourceKey;

fn api_services(cluster: &Cluster) -> Vec<std::sync::Arc<Value>> {
    let key = ResourceKey {
        group: "apiregistration.k8s.io".into(),
        plural: "apiservices".into(),
    };
    cluster.store.list(&key, None).0
}

/// (group, version) pairs served by aggregated API servers.
pub fn claimed_group_versions(cluster: &Cluster) -> Vec<(String, String)> {
    api_services(cluster)
        .iter()
        .filter(|s| s["spec"]["service"].is_object())
        .filter_map(|s| {
            Some((
                s["spec"]["group"].as_str()?.to_owned(),
                s["spec"]["version"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Proxies the request when its group version is claimed by an APIService; `None` otherwise.
#[allow(
    clippy::unused_async,
    reason = "the proxy awaits its backend once TLS proxying lands"
)]
pub async fn proxy(
    sim: &Sim,
    route: &Route,
    _method: &Method,
    _uri: &Uri,
    _headers: &HeaderMap,
    _body: &[u8],
) -> Result<Option<Response>, ApiError> {
    let (group, version) = match route {
        Route::GroupVersion(g, v) => (g.as_str(), v.as_str()),
        Route::Resource(p) => (p.group.as_str(), p.version.as_str()),
        _ => return Ok(None),
    };
    if group.is_empty() {
        return Ok(None);
    }
    let claimed = claimed_group_versions(&sim.cluster)
        .iter()
        .any(|(g, v)| g == group && v == version);
    if claimed {
        return Err(ApiError::not_supported(
            "proxying to aggregated API servers yet",
        ));
    }
    Ok(None)
}
