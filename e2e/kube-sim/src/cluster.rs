//! The simulated cluster's write semantics, shared by the HTTP API and the controller loops:
//! admission, metadata bookkeeping (uid, timestamps, generation), subresources, finalizers and
//! deletion.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::admission::{builtin, custom};
use crate::api_error::ApiError;
use crate::resources::{Registry, ResourceType};
use crate::store::{Store, StoreError, resource_version_of};

/// The RFC 3339 timestamp (second precision) Kubernetes writes in metadata.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `fieldValidation` of a write request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Options every write carries.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub field_manager: String,
}

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// How dependents are treated on delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

/// The cluster: types, objects and the rules for changing them.
#[derive(Debug, Default)]
pub struct Cluster {
    pub registry: Registry,
    pub store: Store,
    /// The rest of paginated lists, so every page comes from the first page's snapshot.
    pub list_snapshots: crate::pagination::Snapshots,
}

fn store_error(rt: &ResourceType, name: &str, e: &StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(&rt.group, &rt.plural, name),
        StoreError::AlreadyExists => ApiError::already_exists(&rt.group, &rt.plural, name),
        StoreError::Conflict => ApiError::stale(&rt.group, &rt.plural, name),
    }
}

/// Generated names use the apiserver's alphabet (no vowels, no confusable digits).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[..5]
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// DNS-1123 subdomain, the rule for most object names.
fn name_error(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    })
}

/// Everything except `metadata` and (with a status subresource) `status`: what bumps generation.
fn spec_part(rt: &ResourceType, object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        if rt.status {
            map.remove("status");
        }
    }
    copy
}

fn tracks_generation(rt: &ResourceType) -> bool {
    rt.status || rt.is_custom()
}

impl Cluster {
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.registry.lookup(group, version, plural)
    }

    pub fn get(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.store
            .get(&rt.key(), namespace, name)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// Decoding, pruning, defaulting and validation of a whole object.
    fn admit(
        rt: &ResourceType,
        mut object: Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let api_version = rt.api_version();
        match object["apiVersion"].as_str() {
            None => object["apiVersion"] = json!(api_version),
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
        }
        match object["kind"].as_str() {
            None => object["kind"] = json!(rt.kind),
            Some(k) if k == rt.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
        }
        let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let mut unknown = Vec::new();
        let mut errors = Vec::new();
        if let Some(custom_rt) = &rt.custom {
            if let Some(schema) = &custom_rt.schema {
                custom::prune_root(&mut object, schema, &mut unknown);
                custom::default(&mut object, schema);
                if let Some(validator) = &custom_rt.validator {
                    errors.extend(custom::validate(validator, &object));
                }
                custom::validate_rules(schema, &object, old, "", &mut errors);
            }
        } else {
            let decoded = builtin::decode(rt, &object).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    rt.kind, rt.version, rt.kind
                ))
            })?;
            collect_removed(&object, &decoded, "", &mut unknown);
            object = decoded;
            builtin::apply_defaults(rt, &mut object);
            errors.extend(builtin::validate(rt, &object));
        }
        if opts.field_validation == FieldValidation::Strict && !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            let prefix = if rt.is_custom() {
                String::new()
            } else {
                format!(
                    "{} in version \"{}\" cannot be handled as a {}: ",
                    rt.kind, rt.version, rt.kind
                )
            };
            return Err(ApiError::bad_request(format!(
                "{prefix}strict decoding error: {}",
                list.join(", ")
            )));
        }
        if !name.is_empty()
            && let Some(e) = name_error(&name)
        {
            errors.push(("metadata.name".into(), e));
        }
        if errors.is_empty() {
            Ok(object)
        } else {
            Err(ApiError::invalid(&rt.group, &rt.kind, &name, &errors))
        }
    }

    /// Creates an object in `namespace` (ignored for cluster-scoped types).
    pub fn create(
        &self,
        rt: &ResourceType,
        namespace: &str,
        mut object: Value,
        opts: &WriteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the request body must be an object"));
        }
        let meta = object
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
        let Some(Value::Object(meta)) = meta else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        if rt.namespaced {
            // An empty namespace in the body counts as unset, as in the apiserver (Helm sends
            // its release Secrets that way).
            match meta
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty())
            {
                Some(ns) if !namespace.is_empty() && ns != namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                Some(ns) if namespace.is_empty() => {
                    let ns = ns.to_owned();
                    meta.insert("namespace".into(), json!(ns));
                }
                _ => {
                    meta.insert("namespace".into(), json!(namespace));
                }
            }
        } else {
            meta.remove("namespace");
        }
        let namespace = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let name = format!("{prefix}{}", random_suffix());
                    meta.insert("name".into(), json!(name));
                }
                _ => {
                    return Err(ApiError::invalid(
                        &rt.group,
                        &rt.kind,
                        "",
                        &[(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            }
        }
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ] {
            meta.remove(field);
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        let name = meta["name"].as_str().unwrap_or("").to_owned();
        if rt.namespaced
            && rt.plural != "namespaces"
            && self.store.get(&namespaces_key(), "", &namespace).is_none()
        {
            return Err(ApiError::not_found("", "namespaces", &namespace));
        }
        if rt.status
            && let Some(map) = object.as_object_mut()
            && rt.plural != "pods"
            && rt.plural != "namespaces"
        {
            map.remove("status");
        }
        let mut object = Self::admit(rt, object, None, opts)?;
        if tracks_generation(rt) {
            object["metadata"]["generation"] = json!(1);
        }
        if opts.dry_run {
            return Ok(Arc::new(object));
        }
        let stored = self
            .store
            .create(&rt.key(), object)
            .map_err(|e| store_error(rt, &name, &e))?;
        self.after_write(rt, &stored);
        Ok(stored)
    }

    /// Replaces an object (PUT) or its status (`Part::Status`). The object's resourceVersion,
    /// when set, must match the stored one.
    pub fn update(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let current = self.get(rt, namespace, name)?;
        let body_name = object["metadata"]["name"].as_str().unwrap_or(name);
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let expected = resource_version_of(&object);
        if object["metadata"]["resourceVersion"].is_string() && expected.is_none() {
            return Err(ApiError::bad_request("invalid resourceVersion"));
        }
        // What the caller may not change.
        let meta = &current["metadata"];
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match meta.get(field) {
                Some(v) => object["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = object["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        object["metadata"]["name"] = json!(name);
        if rt.namespaced {
            object["metadata"]["namespace"] = json!(namespace);
        }
        match part {
            Part::Main if rt.status => {
                if let Some(status) = current.get("status") {
                    object["status"] = status.clone();
                } else if let Some(map) = object.as_object_mut() {
                    map.remove("status");
                }
            }
            Part::Status => {
                let status = object.get("status").cloned();
                let mut merged = (*current).clone();
                match status {
                    Some(s) => merged["status"] = s,
                    None => {
                        if let Some(map) = merged.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                // Metadata changes are ignored on the status subresource, except that the
                // precondition still applies.
                object = merged;
            }
            Part::Main => {}
        }
        if !current["metadata"]["deletionTimestamp"].is_null() {
            let before = current["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let added = object["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|after| after.iter().any(|f| !before.contains(f)));
            if added {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    name,
                    &[(
                        "metadata.finalizers".into(),
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                    )],
                ));
            }
        }
        let mut object = Self::admit(rt, object, Some(&current), opts)?;
        if tracks_generation(rt) {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            let changed = spec_part(rt, &object) != spec_part(rt, &current);
            object["metadata"]["generation"] =
                json!(if changed { generation + 1 } else { generation });
        }
        object["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if opts.dry_run {
            return Ok(Arc::new(object));
        }
        let stored = self
            .store
            .update(&rt.key(), object, expected)
            .map_err(|e| store_error(rt, name, &e))?;
        self.after_write(rt, &stored);
        Ok(stored)
    }

    /// Deletes an object: at once when nothing holds it, otherwise by setting
    /// `deletionTimestamp` and waiting for its finalizers.
    pub fn delete(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        propagation: Propagation,
        expected: Option<u64>,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let current = self.get(rt, namespace, name)?;
        if expected.is_some_and(|rv| Some(rv) != resource_version_of(&current)) {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                "the ResourceVersion in the precondition does not match the ResourceVersion in record",
            ));
        }
        if dry_run {
            return Ok(current);
        }
        let mut finalizers: Vec<Value> = current["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if propagation == Propagation::Foreground
            && !finalizers.contains(&json!("foregroundDeletion"))
        {
            finalizers.push(json!("foregroundDeletion"));
        }
        if propagation == Propagation::Orphan {
            self.orphan_dependents(&current);
        }
        if finalizers.is_empty() {
            let deleted = self
                .store
                .delete(&rt.key(), namespace, name, None)
                .map_err(|e| store_error(rt, name, &e))?;
            self.after_delete(rt, &deleted);
            return Ok(deleted);
        }
        let mut marked = (*current).clone();
        if marked["metadata"]["deletionTimestamp"].is_null() {
            marked["metadata"]["deletionTimestamp"] = json!(now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        marked["metadata"]["finalizers"] = Value::Array(finalizers);
        self.store
            .update(&rt.key(), marked, None)
            .map_err(|e| store_error(rt, name, &e))
    }

    /// After every stored write: finish deletions whose finalizers are gone, and keep CRDs
    /// served.
    fn after_write(&self, rt: &ResourceType, object: &Arc<Value>) {
        let meta = &object["metadata"];
        let finalizers_done = meta["finalizers"].as_array().is_none_or(Vec::is_empty);
        if !meta["deletionTimestamp"].is_null() && finalizers_done {
            let (ns, name) = crate::store::name_of(object);
            if let Ok(deleted) = self.store.delete(&rt.key(), &ns, &name, None) {
                self.after_delete(rt, &deleted);
            }
            return;
        }
        if rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition" {
            crate::crds::serve(self, object);
        }
    }

    fn after_delete(&self, rt: &ResourceType, object: &Value) {
        if rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition" {
            crate::crds::unserve(self, object);
        }
    }

    /// Removes owner references to `owner` from every object (orphan propagation).
    fn orphan_dependents(&self, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str() else {
            return;
        };
        for rt in self.registry.all() {
            let (objects, _) = self.store.list(&rt.key(), None);
            for object in objects {
                let Some(refs) = object["metadata"]["ownerReferences"].as_array() else {
                    continue;
                };
                if !refs.iter().any(|r| r["uid"] == json!(uid)) {
                    continue;
                }
                let mut updated = (*object).clone();
                let kept: Vec<Value> = refs
                    .iter()
                    .filter(|r| r["uid"] != json!(uid))
                    .cloned()
                    .collect();
                updated["metadata"]["ownerReferences"] = Value::Array(kept);
                let _ = self
                    .store
                    .update(&rt.key(), updated, resource_version_of(&object));
            }
        }
    }
}

pub fn namespaces_key() -> crate::resources::ResourceKey {
    crate::resources::ResourceKey {
        group: String::new(),
        plural: "namespaces".into(),
    }
}

/// Records the paths present in `before` but absent from `after` (fields the decoder dropped).
fn collect_removed(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (key, value) in b {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match a.get(key) {
                    Some(av) => collect_removed(value, av, &child, out),
                    None if !value.is_null() => out.push(child),
                    None => {}
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                collect_removed(bv, av, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
