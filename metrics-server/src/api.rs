//! The HTTP API: discovery, OpenAPI, health, and the external metric values the HPA asks for.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router, routing::get};
use keda_proto::metrics::GetMetricResponse;
use serde_json::{Value, json};

use crate::App;
use crate::auth::User;
use crate::operator::CallError;

pub const GROUP: &str = "external.metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// The label that names the ScaledObject in the HPA's metric selector.
pub const SCALED_OBJECT_LABEL: &str = "scaledobject.keda.sh/name";

/// Who is on the other end of a connection, as established by TLS.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// Common name of a client certificate verified against the request-header CA.
    pub proxy_cn: Option<String>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    (code, Json(body)).into_response()
}

/// A refused request, rendered as a Kubernetes `Status`.
#[derive(Debug)]
pub struct Rejection {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl Rejection {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        status(self.code, self.reason, &self.message)
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/apis", get(groups))
        .route("/apis/external.metrics.k8s.io", get(group))
        .route("/apis/external.metrics.k8s.io/v1beta1", get(resources))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_index))
        .route(
            "/openapi/v3/apis/external.metrics.k8s.io/v1beta1",
            get(openapi_v3),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",
            get(external_metric),
        )
        .fallback(|| async {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
        .with_state(app)
}

async fn health() -> &'static str {
    "ok"
}

/// Who sent the request: the user the front proxy names, or the owner of the bearer token.
async fn authenticate(app: &App, peer: &Peer, headers: &HeaderMap) -> Result<User, Rejection> {
    const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;
    if app.auth.insecure_skip_auth {
        return Ok(User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        });
    }
    if let Some(cn) = &peer.proxy_cn {
        if !app.auth.allowed_names.is_empty() && !app.auth.allowed_names.contains(cn) {
            return Err(Rejection::new(
                UNAUTHORIZED,
                "Unauthorized",
                format!("client certificate {cn:?} is not an allowed front proxy"),
            ));
        }
        let name = app
            .auth
            .username_headers
            .iter()
            .find_map(|h| headers.get(h.as_str()).and_then(|v| v.to_str().ok()))
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                Rejection::new(
                    UNAUTHORIZED,
                    "Unauthorized",
                    "the front proxy did not name a user",
                )
            })?;
        let groups = headers
            .get_all("x-remote-group")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        return Ok(User {
            name: name.to_owned(),
            groups,
        });
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Rejection::new(UNAUTHORIZED, "Unauthorized", "authentication required: come through the aggregation layer or present a bearer token"))?;
    match app.delegate.token(token).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(Rejection::new(
            UNAUTHORIZED,
            "Unauthorized",
            "the bearer token was not accepted by the apiserver (TokenReview)",
        )),
        Err(e) => Err(Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e,
        )),
    }
}

/// Whether the user may read the metric (a SubjectAccessReview, cached).
async fn authorize(app: &App, user: &User, namespace: &str, metric: &str) -> Result<(), Rejection> {
    if app.auth.insecure_skip_auth {
        return Ok(());
    }
    match app.delegate.may_read(user, namespace, metric).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{GROUP}/{metric} is forbidden: User \"{}\" cannot get resource \"{metric}\" in API group \"{GROUP}\" in the namespace \"{namespace}\"",
                user.name
            ),
        )),
        Err(e) => Err(Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e,
        )),
    }
}

/// Serves a discovery document to an authenticated caller.
async fn discovery(app: &App, peer: &Peer, headers: &HeaderMap, document: Value) -> Response {
    let started = Instant::now();
    let response = match authenticate(app, peer, headers).await {
        Ok(_) => Json(document).into_response(),
        Err(r) => r.into_response(),
    };
    app.telemetry
        .observe("discovery", response.status().as_u16(), started.elapsed());
    response
}

fn group_body() -> Value {
    let version = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [version], "preferredVersion": version})
}

async fn groups(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let document = json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_body()]});
    discovery(&app, &peer, &headers, document).await
}

async fn group(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let mut document = group_body();
    document["kind"] = json!("APIGroup");
    document["apiVersion"] = json!("v1");
    discovery(&app, &peer, &headers, document).await
}

async fn resources(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let document = json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [{"name": "externalmetrics", "singularName": "", "namespaced": true,
                       "kind": "ExternalMetricValueList", "verbs": ["get"]}]
    });
    discovery(&app, &peer, &headers, document).await
}

fn value_list_schema() -> Value {
    json!({"type": "object", "required": ["items"], "properties": {
        "kind": {"type": "string"}, "apiVersion": {"type": "string"}, "metadata": {"type": "object"},
        "items": {"type": "array", "items": {"type": "object", "required": ["metricName", "timestamp", "value"], "properties": {
            "metricName": {"type": "string"}, "metricLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "timestamp": {"type": "string", "format": "date-time"}, "window": {"type": "integer", "format": "int64"},
            "value": {"type": "string"}}}}}})
}

async fn openapi_v2() -> Json<Value> {
    Json(json!({
        "swagger": "2.0",
        "info": {"title": "keda-metrics-apiserver", "version": env!("CARGO_PKG_VERSION")},
        "paths": {"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}": {"get": {
            "operationId": "getExternalMetricValueList", "produces": ["application/json"],
            "parameters": [{"name": "namespace", "in": "path", "required": true, "type": "string"},
                           {"name": "metric", "in": "path", "required": true, "type": "string"},
                           {"name": "labelSelector", "in": "query", "type": "string"}],
            "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValueList"}}}}}},
        "definitions": {"io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValueList": value_list_schema()}
    }))
}

async fn openapi_v3_index() -> Json<Value> {
    Json(
        json!({"paths": {"apis/external.metrics.k8s.io/v1beta1": {"serverRelativeURL": "/openapi/v3/apis/external.metrics.k8s.io/v1beta1"}}}),
    )
}

async fn openapi_v3() -> Json<Value> {
    Json(json!({
        "openapi": "3.0.0",
        "info": {"title": "keda-metrics-apiserver", "version": env!("CARGO_PKG_VERSION")},
        "paths": {"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}": {"get": {
            "operationId": "getExternalMetricValueList",
            "parameters": [{"name": "labelSelector", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExternalMetricValueList"}}}}}}}},
        "components": {"schemas": {"ExternalMetricValueList": value_list_schema()}}
    }))
}

/// The ScaledObject named by the metric selector (`scaledobject.keda.sh/name=<name>`).
pub fn scaled_object_of(query: Option<&str>) -> Option<String> {
    let selector = query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "labelSelector")
        .map(|(_, v)| percent_decode(v))?;
    selector.split(',').find_map(|requirement| {
        let (key, value) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))?;
        (key.trim() == SCALED_OBJECT_LABEL)
            .then(|| value.trim().to_owned())
            .filter(|v| !v.is_empty())
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let decoded = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = decoded {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A quantity from milli-units, canonical like the apiserver's (`15`, `1500m`).
pub fn quantity(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn value_list(reply: &GetMetricResponse) -> Value {
    let items: Vec<Value> = reply
        .samples
        .iter()
        .map(|s| {
            let timestamp = jiff::Timestamp::from_millisecond(s.timestamp_unix_millis)
                .unwrap_or_else(|_| jiff::Timestamp::now())
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            json!({"metricName": s.metric_name, "metricLabels": null, "timestamp": timestamp, "value": quantity(s.milli_value)})
        })
        .collect();
    json!({"kind": "ExternalMetricValueList", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

fn call_error(namespace: &str, metric: &str, e: &CallError) -> Response {
    use tonic::Code;
    let (code, reason) = match e.code {
        _ if e.unreachable() => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "BadRequest"),
        Code::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    };

    status(
        code,
        reason,
        &format!(
            "unable to get external metric {namespace}/{metric}: {}",
            e.message
        ),
    )
}

async fn external_metric(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    Path((namespace, metric)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let response = async {
        let user = authenticate(&app, &peer, &headers).await.map_err(IntoResponse::into_response)?;
        authorize(&app, &user, &namespace, &metric).await.map_err(IntoResponse::into_response)?;
        let Some(scaled_object) = scaled_object_of(query.as_deref()) else {
            return Err(status(StatusCode::BAD_REQUEST, "BadRequest", &format!("scaledObject name is not specified: the labelSelector must include {SCALED_OBJECT_LABEL}=<name>")));
        };
        let reply = app.operator.get_metric(&namespace, &scaled_object, &metric).await.map_err(|e| call_error(&namespace, &metric, &e))?;
        Ok(Json(value_list(&reply)).into_response())
    }
    .await
    .unwrap_or_else(|r| r);
    app.telemetry.observe(
        "external_metric",
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaled_object_comes_from_the_selector() {
        assert_eq!(
            scaled_object_of(Some("labelSelector=scaledobject.keda.sh%2Fname%3Dorders")),
            Some("orders".into())
        );
        assert_eq!(
            scaled_object_of(Some(
                "labelSelector=app%3Dx%2Cscaledobject.keda.sh%2Fname%3D%3Dorders"
            )),
            Some("orders".into())
        );
        assert_eq!(scaled_object_of(Some("labelSelector=app%3Dx")), None);
        assert_eq!(scaled_object_of(None), None);
    }

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(quantity(15_000), "15");
        assert_eq!(quantity(1_500), "1500m");
        assert_eq!(quantity(0), "0");
    }
}
