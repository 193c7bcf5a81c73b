//! Handlers for object requests: list, get, create, update, patch, delete, and the `status`
//! and `scale` subresources.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use super::query::Query;
use crate::api_error::ApiError;
use crate::apply;
use crate::cluster::{Cluster, Part, WriteOptions};
use crate::patch::{self, PatchKind};
use crate::resources::ResourceType;
use crate::selectors::LabelSelector;
use crate::store::resource_version_of;

/// Everything a handler needs to know about the request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub cluster: &'a Cluster,
    pub rt: Arc<ResourceType>,
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub query: Query,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn json_response(code: StatusCode, value: &Value) -> (StatusCode, Value) {
    (code, value.clone())
}

impl Request<'_> {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    fn write_options(&self) -> Result<WriteOptions, ApiError> {
        let agent = self
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .unwrap_or("unknown");
        Ok(WriteOptions {
            dry_run: self.query.dry_run(),
            field_validation: self.query.field_validation()?,
            field_manager: self.query.get("fieldManager").unwrap_or(agent).to_owned(),
        })
    }

    fn body_json(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(self.body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }

    fn accept(&self) -> &str {
        self.headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }

    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }
}

/// Dispatches a request on a resource path.
pub fn handle(req: &Request<'_>, method: &Method) -> Result<(StatusCode, Value), ApiError> {
    let sub = req.subresource.as_deref();
    match (method.as_str(), req.name.is_some(), sub) {
        ("GET", false, None) => {
            let list = list(req)?;
            if super::table::wanted(req.accept()) {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("");
                let mut table = super::table::render(&req.rt, &items, rv);
                table["metadata"]["continue"] = list["metadata"]["continue"].clone();
                return Ok(json_response(StatusCode::OK, &table));
            }
            Ok(json_response(StatusCode::OK, &list))
        }
        ("POST", false, None) => create(req),
        ("DELETE", false, None) => delete_collection(req),
        ("GET", true, None | Some("status")) => {
            let object = req.cluster.get(&req.rt, &req.namespace, req.name())?;
            if super::table::wanted(req.accept()) {
                let rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                let table = super::table::render(&req.rt, &[(*object).clone()], &rv);
                return Ok(json_response(StatusCode::OK, &table));
            }
            Ok(json_response(StatusCode::OK, &object))
        }
        ("PUT", true, None | Some("status")) => replace(req),
        ("PATCH", true, None | Some("status")) => patch(req),
        ("DELETE", true, None) => delete(req),
        ("GET", true, Some("scale")) if req.rt.scale.is_some() => {
            let object = req.cluster.get(&req.rt, &req.namespace, req.name())?;
            Ok(json_response(StatusCode::OK, &scale_of(&req.rt, &object)))
        }
        ("PUT" | "PATCH", true, Some("scale")) if req.rt.scale.is_some() => {
            update_scale(req, method)
        }
        (_, true, Some(other)) if other != "status" && other != "scale" => {
            Err(ApiError::not_supported(&format!("the {other} subresource")))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            method, req.rt.plural
        ))),
    }
}

fn namespace_filter<'r>(req: &'r Request<'_>) -> Option<&'r str> {
    (req.rt.namespaced && !req.namespace.is_empty()).then_some(req.namespace.as_str())
}

/// Objects matching the request's selectors, in (namespace, name) order.
pub fn matching(req: &Request<'_>) -> Result<(Vec<Arc<Value>>, u64), ApiError> {
    let labels = req.query.label_selector()?;
    let fields = req.query.field_selector()?;
    fields
        .check_supported(&req.rt.kind)
        .map_err(ApiError::bad_request)?;
    let (items, rv) = req.cluster.store.list(&req.rt.key(), namespace_filter(req));
    let items = items
        .into_iter()
        .filter(|o| labels.matches_object(o) && fields.matches(o))
        .collect();
    Ok((items, rv))
}

fn list(req: &Request<'_>) -> Result<Value, ApiError> {
    let (mut items, rv) = match req.query.get("continue") {
        Some(token) => req.cluster.list_snapshots.take(token).ok_or_else(|| {
            ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
        })?,
        None => matching(req)?,
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = req.query.limit()
        && items.len() > limit
    {
        let rest = items.split_off(limit);
        metadata["remainingItemCount"] = json!(rest.len());
        metadata["continue"] = json!(req.cluster.list_snapshots.keep(rv, rest));
    }
    Ok(json!({
        "kind": format!("{}List", req.rt.kind),
        "apiVersion": req.rt.api_version(),
        "metadata": metadata,
        "items": items.iter().map(|o| (**o).clone()).collect::<Vec<_>>(),
    }))
}

fn create(req: &Request<'_>) -> Result<(StatusCode, Value), ApiError> {
    let opts = req.write_options()?;
    let mut object = req.body_json()?;
    if crate::resources::is_review(&req.rt.group, &req.rt.plural) {
        object["apiVersion"] = json!(req.rt.api_version());
        object["kind"] = json!(req.rt.kind);
        return Ok((
            StatusCode::CREATED,
            crate::reviews::answer(req.cluster, &req.rt.plural, object),
        ));
    }
    apply::record_update(
        None,
        &mut object,
        &opts.field_manager,
        &req.rt.api_version(),
        false,
        req.rt.status,
    );
    let created = req.cluster.create(&req.rt, &req.namespace, object, &opts)?;
    Ok(json_response(StatusCode::CREATED, &created))
}

fn part_of(req: &Request<'_>) -> Part {
    if req.subresource.as_deref() == Some("status") {
        Part::Status
    } else {
        Part::Main
    }
}

fn replace(req: &Request<'_>) -> Result<(StatusCode, Value), ApiError> {
    let opts = req.write_options()?;
    let mut object = req.body_json()?;
    let part = part_of(req);
    let current = req.cluster.get(&req.rt, &req.namespace, req.name())?;
    apply::record_update(
        Some(&current),
        &mut object,
        &opts.field_manager,
        &req.rt.api_version(),
        part == Part::Status,
        req.rt.status,
    );
    let updated = req
        .cluster
        .update(&req.rt, &req.namespace, req.name(), object, part, &opts)?;
    Ok(json_response(StatusCode::OK, &updated))
}

fn parse_patch_body(req: &Request<'_>, kind: PatchKind) -> Result<Value, ApiError> {
    if kind == PatchKind::Apply {
        serde_yaml::from_slice(req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        req.body_json()
    }
}

fn patched(
    req: &Request<'_>,
    kind: PatchKind,
    current: &Value,
    body: &Value,
) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Json => patch::json_patch(current, body).map_err(|e| {
            ApiError::invalid(
                &req.rt.group,
                &req.rt.kind,
                req.name(),
                &[(String::new(), e)],
            )
        }),
        PatchKind::Merge => Ok(patch::merge_patch(current, body)),
        PatchKind::Strategic => {
            patch::strategic_merge(current, body).map_err(ApiError::bad_request)
        }
        PatchKind::Apply => Err(ApiError::internal("apply is handled separately")),
    }
}

fn patch(req: &Request<'_>) -> Result<(StatusCode, Value), ApiError> {
    let content_type = req.content_type();
    let kind = PatchKind::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
    if kind == PatchKind::Strategic && req.rt.is_custom() {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let opts = req.write_options()?;
    let body = parse_patch_body(req, kind)?;
    let part = part_of(req);
    let status_part = part == Part::Status;
    // Patches are retried on a concurrent write, as the apiserver does.
    for _ in 0..5 {
        let current = match req
            .cluster
            .store
            .get(&req.rt.key(), &req.namespace, req.name())
        {
            Some(c) => c,
            None if kind == PatchKind::Apply && !status_part => {
                let mut object = apply::apply(
                    None,
                    &body,
                    &opts.field_manager,
                    true,
                    &req.rt.api_version(),
                    false,
                    req.rt.status,
                )
                .map_err(|c| ApiError::apply_conflict(c.message(), &c.0))?;
                object["metadata"]["name"] = json!(req.name());
                let created = req.cluster.create(&req.rt, &req.namespace, object, &opts)?;
                return Ok(json_response(StatusCode::CREATED, &created));
            }
            None => {
                return Err(ApiError::not_found(
                    &req.rt.group,
                    &req.rt.plural,
                    req.name(),
                ));
            }
        };
        let mut object = if kind == PatchKind::Apply {
            let force = req.query.flag("force");
            apply::apply(
                Some(&current),
                &body,
                &opts.field_manager,
                force,
                &req.rt.api_version(),
                status_part,
                req.rt.status,
            )
            .map_err(|c| ApiError::apply_conflict(c.message(), &c.0))?
        } else {
            let mut object = patched(req, kind, &current, &body)?;
            apply::record_update(
                Some(&current),
                &mut object,
                &opts.field_manager,
                &req.rt.api_version(),
                status_part,
                req.rt.status,
            );
            object
        };
        let precondition = resource_version_of(&object);
        if precondition.is_none() || precondition == resource_version_of(&current) {
            object["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        }
        match req
            .cluster
            .update(&req.rt, &req.namespace, req.name(), object, part, &opts)
        {
            Ok(updated) => return Ok(json_response(StatusCode::OK, &updated)),
            Err(e)
                if e.code == 409
                    && e.reason == "Conflict"
                    && precondition == resource_version_of(&current) => {}
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        &req.rt.group,
        &req.rt.plural,
        req.name(),
        "too many concurrent writes",
    ))
}

fn delete(req: &Request<'_>) -> Result<(StatusCode, Value), ApiError> {
    let body: Option<Value> = serde_json::from_slice(req.body).ok();
    let propagation = req.query.propagation(body.as_ref())?;
    let expected = body
        .as_ref()
        .and_then(|b| b["preconditions"]["resourceVersion"].as_str())
        .and_then(|rv| rv.parse().ok());
    let dry_run =
        req.query.dry_run() || body.as_ref().is_some_and(|b| b["dryRun"] == json!(["All"]));
    let deleted = req.cluster.delete(
        &req.rt,
        &req.namespace,
        req.name(),
        propagation,
        expected,
        dry_run,
    )?;
    Ok(json_response(StatusCode::OK, &deleted))
}

fn delete_collection(req: &Request<'_>) -> Result<(StatusCode, Value), ApiError> {
    let body: Option<Value> = serde_json::from_slice(req.body).ok();
    let propagation = req.query.propagation(body.as_ref())?;
    let (items, _) = matching(req)?;
    let mut deleted = Vec::new();
    for item in items {
        let (ns, name) = crate::store::name_of(&item);
        if let Ok(d) =
            req.cluster
                .delete(&req.rt, &ns, &name, propagation, None, req.query.dry_run())
        {
            deleted.push((*d).clone());
        }
    }
    let list = json!({"kind": format!("{}List", req.rt.kind), "apiVersion": req.rt.api_version(),
        "metadata": {}, "items": deleted});
    Ok(json_response(StatusCode::OK, &list))
}

fn pointer(json_path: &str) -> String {
    json_path
        .trim_start_matches('.')
        .split('.')
        .fold(String::new(), |acc, s| format!("{acc}/{s}"))
}

/// The `autoscaling/v1` Scale view of an object.
pub fn scale_of(rt: &ResourceType, object: &Value) -> Value {
    let Some(paths) = &rt.scale else {
        return Value::Null;
    };
    let selector = match &paths.label_selector {
        Some(path) => object
            .pointer(&pointer(path))
            .cloned()
            .unwrap_or(Value::Null),
        None => LabelSelector::from_object(&object["spec"]["selector"])
            .map_or(Value::Null, |s| json!(s.to_string_form())),
    };
    let meta = &object["metadata"];
    let mut status = json!({"replicas": object.pointer(&pointer(&paths.status_replicas)).cloned().unwrap_or(json!(0))});
    if !selector.is_null() {
        status["selector"] = selector;
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": object.pointer(&pointer(&paths.spec_replicas)).cloned().unwrap_or(json!(0))},
        "status": status,
    })
}

fn update_scale(req: &Request<'_>, method: &Method) -> Result<(StatusCode, Value), ApiError> {
    let opts = req.write_options()?;
    let current = req.cluster.get(&req.rt, &req.namespace, req.name())?;
    let scale = scale_of(&req.rt, &current);
    let body = parse_patch_body(req, PatchKind::Merge)?;
    let new_scale = if method == Method::PUT {
        body
    } else {
        let content_type = req.content_type();
        match PatchKind::from_content_type(content_type) {
            Some(PatchKind::Apply) => {
                return Err(ApiError::not_supported(
                    "server-side apply on the scale subresource",
                ));
            }
            Some(kind) => patched(req, kind, &scale, &body)?,
            None => return Err(ApiError::unsupported_media_type(content_type)),
        }
    };
    let replicas = new_scale["spec"]["replicas"].as_i64().ok_or_else(|| {
        ApiError::invalid(
            "autoscaling",
            "Scale",
            req.name(),
            &[("spec.replicas".into(), "Required value".into())],
        )
    })?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            req.name(),
            &[(
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    let paths = req
        .rt
        .scale
        .clone()
        .ok_or_else(|| ApiError::not_supported("scale"))?;
    let mut object = (*current).clone();
    let replicas_pointer = pointer(&paths.spec_replicas);
    if let Some(slot) = object.pointer_mut(&replicas_pointer) {
        *slot = json!(replicas);
    } else {
        let (parent, field) = replicas_pointer.rsplit_once('/').unwrap_or(("", ""));
        if let Some(Value::Object(map)) = object.pointer_mut(parent) {
            map.insert(field.to_owned(), json!(replicas));
        }
    }
    if let Some(rv) = new_scale["metadata"]["resourceVersion"].as_str() {
        object["metadata"]["resourceVersion"] = json!(rv);
    }
    apply::record_update(
        Some(&current),
        &mut object,
        &opts.field_manager,
        &req.rt.api_version(),
        false,
        req.rt.status,
    );
    let updated = req.cluster.update(
        &req.rt,
        &req.namespace,
        req.name(),
        object,
        Part::Main,
        &opts,
    )?;
    Ok(json_response(StatusCode::OK, &scale_of(&req.rt, &updated)))
}
