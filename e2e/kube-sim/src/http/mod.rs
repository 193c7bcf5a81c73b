//! The HTTP front of kube-sim: routing of Kubernetes API paths.

pub mod discovery;
pub mod objects;
pub mod query;
pub mod route;
pub mod table;
pub mod watch;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::Sim;
use crate::api_error::ApiError;
use query::Query;
use route::Route;

/// What the apiserver answers for a path it does not serve: a plain-text 404, not a Status.
fn page_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [("content-type", "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

fn ok(value: &Value) -> Response {
    (StatusCode::OK, axum::Json(value.clone())).into_response()
}

/// The single entry point: every request goes through here.
pub async fn serve(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let path = uri.path().to_owned();
    let response = match dispatch(&sim, &method, &uri, &headers, &body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros(), "request");
    response
}

async fn dispatch(
    sim: &Arc<Sim>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let cluster = &sim.cluster;
    let registry = &cluster.registry;
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Typed kubectl commands send protobuf; the kinds they create most are decoded.
    let decoded;
    let body = if content_type.contains("protobuf") {
        decoded = crate::protobuf::to_json(body)
            .map_err(|e| ApiError::unsupported_media_type_body(&format!("{content_type} ({e})")))?
            .to_string()
            .into_bytes();
        decoded.as_slice()
    } else if content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type_body(content_type));
    } else {
        body
    };
    let Some(route) = route::parse(uri.path(), |g, v, plural| {
        registry.lookup(g, v, plural).is_some_and(|t| t.namespaced)
    }) else {
        return Ok(page_not_found());
    };
    if let Some(response) =
        crate::aggregator::proxy(sim, &route, method, uri, headers, body).await?
    {
        return Ok(response);
    }
    // Only the group listings need the aggregated group versions (a list of APIServices).
    let aggregated = || crate::aggregator::claimed_group_versions(cluster);
    match route {
        Route::Version => Ok(ok(&discovery::version())),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::CoreVersions => Ok(ok(&discovery::core_versions())),
        Route::Groups => Ok(ok(&discovery::groups(registry, &aggregated()))),
        Route::Group(g) => Ok(ok(&discovery::group(registry, &aggregated(), &g)?)),
        Route::GroupVersion(g, v) => Ok(discovery::resource_list(registry, &g, &v)
            .map_or_else(|_| page_not_found(), |list| ok(&list))),
        Route::OpenApiV2 => Err(ApiError::not_supported("OpenAPI v2 (use /openapi/v3)")),
        Route::OpenApiV3Index => Ok(ok(&discovery::openapi_v3_index(registry))),
        Route::OpenApiV3(gv) => Ok(ok(&discovery::openapi_v3(registry, &gv)?)),
        Route::Resource(path) => {
            let Some(rt) = cluster.resource(&path.group, &path.version, &path.plural) else {
                return Ok(page_not_found());
            };
            let query = Query::parse(uri.query());
            if rt.namespaced && path.namespace.is_none() && path.name.is_some() {
                return Err(ApiError::not_found(
                    &rt.group,
                    &rt.plural,
                    path.name.as_deref().unwrap_or(""),
                ));
            }
            if *method == Method::GET && query.flag("watch") {
                if path.name.is_some() {
                    return Err(ApiError::not_supported(
                        "watching a single object by path (use a fieldSelector on metadata.name)",
                    ));
                }
                let table = headers
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(table::wanted);
                return watch::watch(&sim.cluster, rt, path.namespace, &query, table);
            }
            let req = objects::Request {
                cluster,
                rt,
                namespace: path.namespace.unwrap_or_default(),
                name: path.name,
                subresource: path.subresource,
                query,
                headers,
                body,
            };
            if let Some(operation) = crate::webhooks::operation(method, req.name.is_some()) {
                crate::webhooks::admit(sim, &req, method, operation).await?;
            }
            let (code, value) = objects::handle(&req, method)?;
            Ok((code, axum::Json(value)).into_response())
        }
    }
}
