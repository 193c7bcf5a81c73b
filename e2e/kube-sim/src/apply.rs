//! Server-side apply and field ownership (`metadata.managedFields`, `FieldsV1` trees).
//!
//! Each manager owns a set of fields. Applying a configuration takes ownership of the fields it
//! names, fails with a conflict when another manager owns one of them with a different value
//! (unless forced), and removes fields the same manager applied before but no longer names.
//! Other writes (create, update, patch) give their manager the fields they changed.

use serde_json::{Map, Value, json};

use crate::patch::{ListMerge, list_merge};

/// A `FieldsV1` tree: keys `f:<field>`, `k:<json key>` for keyed list items, `v:<json>` for set
/// members; an empty map is a leaf.
pub type FieldSet = Map<String, Value>;

const IDENTITY: [&str; 2] = ["apiVersion", "kind"];
const META_OWNED: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

/// The fields a configuration sets, leaving out identity and server-managed metadata. `part`
/// is `Some("status")` for the status subresource, whose writes own only status fields.
pub fn fields_of(object: &Value, status_part: bool, has_status: bool) -> FieldSet {
    let mut set = FieldSet::new();
    let Some(map) = object.as_object() else {
        return set;
    };
    for (key, value) in map {
        if IDENTITY.contains(&key.as_str()) {
            continue;
        }
        let is_status = key == "status";
        if has_status && is_status != status_part {
            continue;
        }
        if key == "metadata" {
            let mut meta = FieldSet::new();
            for owned in META_OWNED {
                if let Some(v) = value.get(owned) {
                    meta.insert(format!("f:{owned}"), Value::Object(child_fields(owned, v)));
                }
            }
            if !meta.is_empty() && !status_part {
                set.insert("f:metadata".into(), Value::Object(meta));
            }
            continue;
        }
        set.insert(format!("f:{key}"), Value::Object(child_fields(key, value)));
    }
    set
}

fn child_fields(name: &str, value: &Value) -> FieldSet {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (format!("f:{k}"), Value::Object(child_fields(k, v))))
            .collect(),
        Value::Array(items) => match list_merge(name, items) {
            ListMerge::Keyed(keys) => items
                .iter()
                .map(|item| (item_key(item, &keys), Value::Object(child_fields("", item))))
                .collect(),
            ListMerge::Set => items
                .iter()
                .map(|item| (format!("v:{item}"), Value::Object(FieldSet::new())))
                .collect(),
            ListMerge::Atomic => FieldSet::new(),
        },
        _ => FieldSet::new(),
    }
}

fn item_key(item: &Value, keys: &[&str]) -> String {
    let id: Map<String, Value> = keys
        .iter()
        .filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    format!("k:{}", Value::Object(id))
}

/// Every leaf path of a field set.
fn leaves(set: &FieldSet, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for (key, child) in set {
        prefix.push(key.clone());
        match child.as_object() {
            Some(c) if !c.is_empty() => leaves(c, prefix, out),
            _ => out.push(prefix.clone()),
        }
        prefix.pop();
    }
}

/// Whether `set` owns `path` or something under or above it.
fn overlaps(set: &FieldSet, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    match set.get(first).and_then(Value::as_object) {
        None => false,
        Some(child) if child.is_empty() || rest.is_empty() => true,
        Some(child) => overlaps(child, rest),
    }
}

/// The value a path of a field set points at in an object.
fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(object);
    };
    let next = if let Some(field) = first.strip_prefix("f:") {
        object.get(field)?
    } else if let Some(key) = first.strip_prefix("k:") {
        let id: Map<String, Value> = serde_json::from_str(key).ok()?;
        object
            .as_array()?
            .iter()
            .find(|item| id.iter().all(|(k, v)| item.get(k) == Some(v)))?
    } else if let Some(member) = first.strip_prefix("v:") {
        let member: Value = serde_json::from_str(member).ok()?;
        object.as_array()?.iter().find(|v| **v == member)?
    } else {
        return None;
    };
    value_at(next, rest)
}

/// Removes what a path names from an object (a field, a keyed item or a set member).
fn remove_at(object: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if let Some(field) = first.strip_prefix("f:") {
        if rest.is_empty() {
            if let Some(map) = object.as_object_mut() {
                map.remove(field);
            }
        } else if let Some(child) = object.get_mut(field) {
            remove_at(child, rest);
        }
    } else if let Some(items) = object.as_array_mut() {
        let matches = |item: &Value| match (first.strip_prefix("k:"), first.strip_prefix("v:")) {
            (Some(key), _) => serde_json::from_str::<Map<String, Value>>(key)
                .is_ok_and(|id| id.iter().all(|(k, v)| item.get(k) == Some(v))),
            (_, Some(member)) => serde_json::from_str::<Value>(member).is_ok_and(|m| *item == m),
            _ => false,
        };
        if rest.is_empty() {
            items.retain(|item| !matches(item));
        } else if let Some(item) = items.iter_mut().find(|item| matches(item)) {
            remove_at(item, rest);
        }
    }
}

/// Subtracts `other` from `set`, dropping emptied branches.
fn subtract(set: &mut FieldSet, other: &FieldSet) {
    for (key, theirs) in other {
        let theirs = theirs.as_object().cloned().unwrap_or_default();
        let remove = match set.get_mut(key).and_then(Value::as_object_mut) {
            None => false,
            Some(_) if theirs.is_empty() => true,
            Some(mine) if mine.is_empty() => false,
            Some(mine) => {
                subtract(mine, &theirs);
                mine.is_empty()
            }
        };
        if remove {
            set.remove(key);
        }
    }
}

/// Merges `other` into `set`.
fn union(set: &mut FieldSet, other: &FieldSet) {
    for (key, theirs) in other {
        let theirs = theirs.as_object().cloned().unwrap_or_default();
        match set.get_mut(key).and_then(Value::as_object_mut) {
            Some(mine) => union(mine, &theirs),
            None => {
                set.insert(key.clone(), Value::Object(theirs));
            }
        }
    }
}

/// Merges an applied configuration into the live object, list by list.
fn merge_config(live: &Value, config: &Value, field: &str) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (key, value) in c {
                let merged = match out.get(key) {
                    Some(existing) => merge_config(existing, value, key),
                    None => value.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => {
            let all: Vec<Value> = l.iter().chain(c).cloned().collect();
            match list_merge(field, &all) {
                ListMerge::Atomic => config.clone(),
                ListMerge::Set => {
                    let mut out = l.clone();
                    out.extend(c.iter().filter(|v| !l.contains(v)).cloned());
                    Value::Array(out)
                }
                ListMerge::Keyed(keys) => {
                    let mut out = l.clone();
                    for item in c {
                        let id = item_key(item, &keys);
                        match out.iter().position(|o| item_key(o, &keys) == id) {
                            Some(i) => out[i] = merge_config(&out[i], item, ""),
                            None => out.push(item.clone()),
                        }
                    }
                    Value::Array(out)
                }
            }
        }
        _ => config.clone(),
    }
}

/// One `managedFields` entry.
fn entry(
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
    fields: &FieldSet,
) -> Value {
    let mut e = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": crate::cluster::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if let Some(sub) = subresource {
        e["subresource"] = json!(sub);
    }
    e
}

fn entries(object: &Value) -> Vec<Value> {
    object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn set_of(entry: &Value) -> FieldSet {
    entry["fieldsV1"].as_object().cloned().unwrap_or_default()
}

fn same_owner(e: &Value, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
    e["manager"] == json!(manager)
        && e["operation"] == json!(operation)
        && e["subresource"].as_str() == subresource
}

/// A failed apply: the fields another manager owns with a different value.
#[derive(Debug, PartialEq, Eq)]
pub struct Conflicts(pub Vec<(String, String)>);

impl Conflicts {
    /// The message the apiserver gives.
    pub fn message(&self) -> String {
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|(manager, field)| format!("conflict with \"{manager}\": {field}"))
            .collect();
        let n = self.0.len();
        let plural = if n == 1 { "" } else { "s" };
        format!(
            "Apply failed with {n} conflict{plural}: {}",
            lines.join("\n")
        )
    }
}

fn render_path(path: &[String]) -> String {
    path.iter()
        .map(|p| {
            p.strip_prefix("f:")
                .map_or_else(|| format!("[{}]", &p[2..]), |f| format!(".{f}"))
        })
        .collect()
}

/// Applies `config` for `manager`. `live` is `None` when the object does not exist yet.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    status_part: bool,
    has_status: bool,
) -> Result<Value, Conflicts> {
    let subresource = status_part.then_some("status");
    let applied = fields_of(config, status_part, has_status);
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let mut owners = entries(&base);
    let mut applied_leaves = Vec::new();
    leaves(&applied, &mut Vec::new(), &mut applied_leaves);

    let mut conflicts = Vec::new();
    for e in &mut owners {
        if same_owner(e, manager, "Apply", subresource) {
            continue;
        }
        let mut theirs = set_of(e);
        let mut lost = FieldSet::new();
        // Equal values are shared ownership; only differing ones conflict, and only those are
        // taken away by a forced apply.
        for path in &applied_leaves {
            if overlaps(&theirs, path) && value_at(&base, path) != value_at(config, path) {
                conflicts.push((
                    e["manager"].as_str().unwrap_or("").to_owned(),
                    render_path(path),
                ));
                let mut single = FieldSet::new();
                insert_path(&mut single, path);
                union(&mut lost, &single);
            }
        }
        if force {
            subtract(&mut theirs, &lost);
            e["fieldsV1"] = Value::Object(theirs);
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Conflicts(conflicts));
    }

    // Fields this manager applied before and no longer names go away, unless someone else
    // still owns them.
    let mut object = base.clone();
    if let Some(previous) = owners
        .iter()
        .find(|e| same_owner(e, manager, "Apply", subresource))
    {
        let mut dropped = set_of(previous);
        subtract(&mut dropped, &applied);
        let mut dropped_leaves = Vec::new();
        leaves(&dropped, &mut Vec::new(), &mut dropped_leaves);
        for path in dropped_leaves {
            let owned_elsewhere = owners
                .iter()
                .filter(|e| !same_owner(e, manager, "Apply", subresource))
                .any(|e| overlaps(&set_of(e), &path));
            if !owned_elsewhere {
                remove_at(&mut object, &path);
            }
        }
    }
    let mut config_body = config.clone();
    if let Some(meta) = config_body
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
    {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    let mut object = merge_config(&object, &config_body, "");
    owners.retain(|e| !same_owner(e, manager, "Apply", subresource) && !set_of(e).is_empty());
    owners.push(entry(manager, "Apply", api_version, subresource, &applied));
    object["metadata"]["managedFields"] = Value::Array(owners);
    Ok(object)
}

fn insert_path(set: &mut FieldSet, path: &[String]) {
    if let Some((first, rest)) = path.split_first() {
        let child = set
            .entry(first.clone())
            .or_insert_with(|| Value::Object(FieldSet::new()));
        if let Some(child) = child.as_object_mut() {
            insert_path(child, rest);
        }
    }
}

/// Records a non-apply write by `manager`: it takes the fields whose values changed, and fields
/// that no longer exist leave every manager's set.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    status_part: bool,
    has_status: bool,
) {
    let subresource = status_part.then_some("status");
    let current = fields_of(new, status_part, has_status);
    let mut current_leaves = Vec::new();
    leaves(&current, &mut Vec::new(), &mut current_leaves);
    let mut changed = FieldSet::new();
    for path in &current_leaves {
        if old.and_then(|o| value_at(o, path)) != value_at(new, path) {
            insert_path(&mut changed, path);
        }
    }
    let mut owners = old.map(entries).unwrap_or_default();
    for e in &mut owners {
        let mut set = set_of(e);
        if !same_owner(e, manager, "Update", subresource) {
            subtract(&mut set, &changed);
        }
        // Forget what no longer exists.
        let mut owned = Vec::new();
        leaves(&set, &mut Vec::new(), &mut owned);
        for path in owned {
            if value_at(new, &path).is_none() {
                let mut single = FieldSet::new();
                insert_path(&mut single, &path);
                subtract(&mut set, &single);
            }
        }
        e["fieldsV1"] = Value::Object(set);
    }
    if !changed.is_empty() {
        match owners
            .iter_mut()
            .find(|e| same_owner(e, manager, "Update", subresource))
        {
            Some(e) => {
                let mut set = set_of(e);
                union(&mut set, &changed);
                e["fieldsV1"] = Value::Object(set);
                e["time"] = json!(crate::cluster::now());
            }
            None => owners.push(entry(manager, "Update", api_version, subresource, &changed)),
        }
    }
    owners.retain(|e| !set_of(e).is_empty());
    if owners.is_empty() {
        if let Some(meta) = new["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
    } else {
        new["metadata"]["managedFields"] = Value::Array(owners);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})
    }

    #[test]
    fn apply_creates_and_records_ownership() {
        let out = apply(
            None,
            &deployment(2, "a:1"),
            "ops",
            false,
            "apps/v1",
            false,
            true,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], json!(2));
        let fields = &out["metadata"]["managedFields"][0];
        assert_eq!(
            (fields["manager"].as_str(), fields["operation"].as_str()),
            (Some("ops"), Some("Apply"))
        );
        assert!(fields["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:image"].is_object());
    }

    #[test]
    fn a_different_value_owned_by_another_manager_conflicts_unless_forced() {
        let live = apply(
            None,
            &deployment(2, "a:1"),
            "ops",
            false,
            "apps/v1",
            false,
            true,
        )
        .unwrap();
        let err = apply(
            Some(&live),
            &deployment(5, "a:1"),
            "keda",
            false,
            "apps/v1",
            false,
            true,
        )
        .unwrap_err();
        assert_eq!(err.0, vec![("ops".to_owned(), ".spec.replicas".to_owned())]);
        assert!(
            err.message()
                .starts_with("Apply failed with 1 conflict: conflict with \"ops\": .spec.replicas")
        );
        // The same value is shared ownership, not a conflict.
        apply(
            Some(&live),
            &deployment(2, "a:1"),
            "keda",
            false,
            "apps/v1",
            false,
            true,
        )
        .unwrap();
        let forced = apply(
            Some(&live),
            &deployment(5, "a:1"),
            "keda",
            true,
            "apps/v1",
            false,
            true,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], json!(5));
        let ops = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == json!("ops"))
            .unwrap();
        assert!(
            ops["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
            "forced apply takes the field away"
        );
    }

    #[test]
    fn fields_no_longer_applied_are_removed() {
        let mut config = deployment(2, "a:1");
        config["metadata"]["labels"]["tier"] = json!("web");
        let live = apply(None, &config, "ops", false, "apps/v1", false, true).unwrap();
        let out = apply(
            Some(&live),
            &deployment(2, "a:1"),
            "ops",
            false,
            "apps/v1",
            false,
            true,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn updates_take_changed_fields_from_appliers() {
        let live = apply(
            None,
            &deployment(2, "a:1"),
            "ops",
            false,
            "apps/v1",
            false,
            true,
        )
        .unwrap();
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(7);
        record_update(Some(&live), &mut scaled, "hpa", "apps/v1", false, true);
        let managed = scaled["metadata"]["managedFields"].as_array().unwrap();
        let hpa = managed
            .iter()
            .find(|e| e["manager"] == json!("hpa"))
            .unwrap();
        assert_eq!(hpa["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        // Now applying replicas again conflicts with the updater.
        let err = apply(
            Some(&scaled),
            &deployment(2, "a:1"),
            "ops",
            false,
            "apps/v1",
            false,
            true,
        )
        .unwrap_err();
        assert_eq!(err.0[0].0, "hpa");
    }
}
