//! API aggregation: requests under a group version claimed by an `APIService` with a backing
//! Service are proxied over TLS to that Service, with the front-proxy client certificate and the
//! `X-Remote-User` / `X-Remote-Group` headers, as kube-aggregator does.
//!
//! A Service resolves to a local address through `--service <ns>/<name>=<addr>` or, failing
//! that, through its Endpoints object. kube-sim has no authentication: every request is proxied
//! as user `kube-sim-admin` in groups `system:masters` and `system:authenticated`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::Sim;
use crate::api_error::ApiError;
use crate::cluster::{Cluster, Part};
use crate::http::route::Route;
use crate::resources::ResourceKey;
use crate::upstream::Trust;

/// The user aggregated servers see for every proxied request.
pub const PROXY_USER: &str = "kube-sim-admin";
const PROXY_GROUPS: [&str; 2] = ["system:masters", "system:authenticated"];
const TIMEOUT: Duration = Duration::from_secs(30);

fn api_services(cluster: &Cluster) -> Vec<Arc<Value>> {
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

/// The local address standing in for a Service.
pub fn resolve_service(
    sim: &Sim,
    namespace: &str,
    name: &str,
    port: Option<i64>,
) -> Option<SocketAddr> {
    if let Some((_, _, addr)) = sim
        .config
        .services
        .iter()
        .find(|(ns, n, _)| ns == namespace && n == name)
    {
        return Some(*addr);
    }
    let key = ResourceKey {
        group: String::new(),
        plural: "endpoints".into(),
    };
    let endpoints = sim.cluster.store.get(&key, namespace, name)?;
    let subset = endpoints["subsets"].get(0)?;
    let ip = subset["addresses"].get(0)?["ip"].as_str()?;
    let port = subset["ports"]
        .as_array()?
        .iter()
        .find(|p| port.is_none() || p["port"].as_i64() == port)
        .or_else(|| subset["ports"].get(0))?["port"]
        .as_i64()?;
    format!("{ip}:{port}").parse().ok()
}

/// Where and how to reach the server behind an APIService.
fn backend(sim: &Sim, service: &Value) -> Result<(SocketAddr, Trust), ApiError> {
    let spec = &service["spec"];
    let ns = spec["service"]["namespace"].as_str().unwrap_or("");
    let name = spec["service"]["name"].as_str().unwrap_or("");
    let addr = resolve_service(sim, ns, name, None).ok_or_else(|| {
        ApiError::service_unavailable(format!(
            "service {ns}/{name} has no endpoints (map it with --service {ns}/{name}=<host:port>)"
        ))
    })?;
    let trust = if spec["insecureSkipTLSVerify"] == json!(true) {
        Trust::Insecure
    } else {
        let bundle = spec["caBundle"].as_str().unwrap_or("");
        let pem = base64::engine::general_purpose::STANDARD
            .decode(bundle)
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                ApiError::service_unavailable(format!(
                    "APIService {} has neither caBundle nor insecureSkipTLSVerify",
                    service["metadata"]["name"]
                ))
            })?;
        Trust::CaBundle {
            pem,
            server_name: format!("{name}.{ns}.svc"),
        }
    };
    Ok((addr, trust))
}

fn claiming(cluster: &Cluster, group: &str, version: &str) -> Option<Arc<Value>> {
    api_services(cluster).into_iter().find(|s| {
        s["spec"]["service"].is_object()
            && s["spec"]["group"] == json!(group)
            && s["spec"]["version"] == json!(version)
    })
}

/// Sends a request to the aggregated server claiming `group/version`.
pub async fn forward(
    sim: &Sim,
    service: &Value,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<hyper::Response<Bytes>, ApiError> {
    let (addr, trust) = backend(sim, service)?;
    let mut request = hyper::Request::builder()
        .method(method.clone())
        .uri(path_and_query)
        .header("host", addr.to_string())
        .header("x-remote-user", PROXY_USER);
    for group in PROXY_GROUPS {
        request = request.header("x-remote-group", group);
    }
    for name in ["accept", "content-type", "user-agent"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let request = request
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    sim.upstream
        .send(addr, &trust, &sim.front_proxy, request, TIMEOUT)
        .await
        .map_err(|e| ApiError::service_unavailable(format!("error trying to reach service: {e}")))
}

/// Proxies the request when its group version is claimed by an APIService; `None` otherwise.
pub async fn proxy(
    sim: &Sim,
    route: &Route,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Response>, ApiError> {
    let (group, version) = match route {
        Route::GroupVersion(g, v) => (g.as_str(), v.as_str()),
        Route::Resource(p) => (p.group.as_str(), p.version.as_str()),
        _ => return Ok(None),
    };
    if group.is_empty() {
        return Ok(None);
    }
    let Some(service) = claiming(&sim.cluster, group, version) else {
        return Ok(None);
    };
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), ToString::to_string);
    let response = forward(
        sim,
        &service,
        method,
        &path,
        headers,
        Bytes::copy_from_slice(body),
    )
    .await?;
    let (parts, bytes) = response.into_parts();
    let mut out = (parts.status, bytes).into_response();
    if let Some(ct) = parts.headers.get("content-type") {
        out.headers_mut().insert("content-type", ct.clone());
    }
    Ok(Some(out))
}

/// GETs a path of an aggregated API and decodes the JSON answer (for the HPA controller).
pub async fn get_json(
    sim: &Sim,
    group: &str,
    version: &str,
    path_and_query: &str,
) -> Result<Value, ApiError> {
    let service = claiming(&sim.cluster, group, version)
        .ok_or_else(|| ApiError::not_found(group, "apiservices", version))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        "accept",
        axum::http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "user-agent",
        axum::http::HeaderValue::from_static(
            "kube-controller-manager/v1.34.0 (kube-sim) horizontal-pod-autoscaler",
        ),
    );
    let response = forward(
        sim,
        &service,
        &Method::GET,
        path_and_query,
        &headers,
        Bytes::new(),
    )
    .await?;
    let value: Value = serde_json::from_slice(response.body())
        .map_err(|e| ApiError::internal(format!("invalid JSON from {group}/{version}: {e}")))?;
    if !response.status().is_success() {
        let message = value["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_owned();
        return Err(ApiError {
            code: response.status().as_u16(),
            reason: "Upstream",
            message,
            details: None,
        });
    }
    Ok(value)
}

/// Keeps each APIService's `Available` condition current by probing its discovery document.
pub fn spawn_availability(sim: &Arc<Sim>) {
    let sim = sim.clone();
    tokio::spawn(async move {
        loop {
            for service in api_services(&sim.cluster) {
                let group = service["spec"]["group"].as_str().unwrap_or("").to_owned();
                let version = service["spec"]["version"].as_str().unwrap_or("").to_owned();
                let (status, reason, message) = if service["spec"]["service"].is_object() {
                    let path = format!("/apis/{group}/{version}");
                    match forward(
                        &sim,
                        &service,
                        &Method::GET,
                        &path,
                        &HeaderMap::new(),
                        Bytes::new(),
                    )
                    .await
                    {
                        Ok(r) if r.status().is_success() => {
                            ("True", "Passed", "all checks passed".to_owned())
                        }
                        Ok(r) => (
                            "False",
                            "FailedDiscoveryCheck",
                            format!("failing or missing response from {path}: {}", r.status()),
                        ),
                        Err(e) => (
                            "False",
                            if e.code == 503 && e.message.contains("no endpoints") {
                                "MissingEndpoints"
                            } else {
                                "FailedDiscoveryCheck"
                            },
                            e.message,
                        ),
                    }
                } else {
                    (
                        "True",
                        "Local",
                        "Local APIServices are always available".to_owned(),
                    )
                };
                set_available(&sim, &service, status, reason, &message);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

fn set_available(sim: &Sim, service: &Value, status: &str, reason: &str, message: &str) {
    let current = service["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == json!("Available")).cloned());
    if current
        .as_ref()
        .is_some_and(|c| c["status"] == json!(status) && c["reason"] == json!(reason))
    {
        return;
    }
    let Some(rt) =
        crate::controllers::resource(&sim.cluster, "apiregistration.k8s.io", "apiservices")
    else {
        return;
    };
    let mut updated = service.clone();
    updated["status"] = json!({"conditions": [{"type": "Available", "status": status, "reason": reason,
        "message": message, "lastTransitionTime": crate::cluster::now()}]});
    let name = service["metadata"]["name"].as_str().unwrap_or("");
    let _ = sim.cluster.update(
        &rt,
        "",
        name,
        updated,
        Part::Status,
        &crate::controllers::options(),
    );
}
