//! Garbage collection by owner references, foreground deletion, and namespace cleanup.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::options;
use crate::Sim;
use crate::cluster::{Part, Propagation};
use crate::store::name_of;

pub fn collect(sim: &Sim) {
    let cluster = &sim.cluster;
    let types = cluster.registry.all();
    let mut live_uids = HashSet::new();
    let mut objects = Vec::new();
    let mut namespaces = HashSet::new();
    for rt in &types {
        let (items, _) = cluster.store.list(&rt.key(), None);
        for item in items {
            if let Some(uid) = item["metadata"]["uid"].as_str() {
                live_uids.insert(uid.to_owned());
            }
            if rt.plural == "namespaces"
                && rt.group.is_empty()
                && item["metadata"]["deletionTimestamp"].is_null()
            {
                namespaces.insert(item["metadata"]["name"].as_str().unwrap_or("").to_owned());
            }
            objects.push((rt.clone(), item));
        }
    }
    for (rt, object) in &objects {
        let meta = &object["metadata"];
        let (ns, name) = name_of(object);
        // Objects in a namespace that is gone (or going) are deleted.
        if rt.namespaced && !namespaces.contains(&ns) {
            let _ = cluster.delete(rt, &ns, &name, Propagation::Background, None, false);
            continue;
        }
        // Dependents whose owners are all gone are deleted (background propagation).
        if let Some(owners) = meta["ownerReferences"].as_array()
            && !owners.is_empty()
            && owners
                .iter()
                .all(|o| o["uid"].as_str().is_none_or(|uid| !live_uids.contains(uid)))
        {
            let _ = cluster.delete(rt, &ns, &name, Propagation::Background, None, false);
            continue;
        }
        // Foreground deletion: delete dependents first, then release the owner.
        let foreground = !meta["deletionTimestamp"].is_null()
            && meta["finalizers"]
                .as_array()
                .is_some_and(|f| f.contains(&json!("foregroundDeletion")));
        if foreground {
            let uid = meta["uid"].as_str().unwrap_or("");
            let dependents: Vec<&(
                std::sync::Arc<crate::resources::ResourceType>,
                std::sync::Arc<Value>,
            )> = objects
                .iter()
                .filter(|(_, o)| super::owned_by(o, uid))
                .collect();
            for (drt, dependent) in &dependents {
                let (dns, dname) = name_of(dependent);
                let _ = cluster.delete(drt, &dns, &dname, Propagation::Foreground, None, false);
            }
            if dependents.is_empty() {
                let mut released = (**object).clone();
                let kept: Vec<Value> = meta["finalizers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|f| *f != &json!("foregroundDeletion"))
                    .cloned()
                    .collect();
                released["metadata"]["finalizers"] = Value::Array(kept);
                let _ = cluster.update(rt, &ns, &name, released, Part::Main, &options());
            }
        }
    }
}
