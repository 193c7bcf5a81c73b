//! Kubernetes Events written by the simulated controllers.

use serde_json::{Value, json};

use crate::cluster::{Cluster, now};

/// Records an Event about `object`, or bumps the count of an identical recent one.
pub fn record(
    cluster: &Cluster,
    object: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let Some(rt) = super::resource(cluster, "", "events") else {
        return;
    };
    let meta = &object["metadata"];
    let namespace = meta["namespace"].as_str().unwrap_or("default");
    let uid = meta["uid"].as_str().unwrap_or("");
    let (existing, _) = cluster.store.list(&rt.key(), Some(namespace));
    if let Some(same) = existing.iter().find(|e| {
        e["involvedObject"]["uid"].as_str() == Some(uid)
            && e["reason"] == json!(reason)
            && e["message"] == json!(message)
    }) {
        let mut bumped = (**same).clone();
        bumped["count"] = json!(same["count"].as_i64().unwrap_or(1) + 1);
        bumped["lastTimestamp"] = json!(now());
        let (ns, name) = crate::store::name_of(same);
        let _ = cluster.update(
            &rt,
            &ns,
            &name,
            bumped,
            crate::cluster::Part::Main,
            &super::options(),
        );
        return;
    }
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{}.", meta["name"].as_str().unwrap_or("object")), "namespace": namespace},
        "involvedObject": {"apiVersion": object["apiVersion"], "kind": object["kind"], "name": meta["name"],
                           "namespace": namespace, "uid": uid, "resourceVersion": meta["resourceVersion"]},
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": component},
        "firstTimestamp": now(),
        "lastTimestamp": now(),
        "count": 1,
        "reportingComponent": component,
    });
    let _ = cluster.create(&rt, namespace, event, &super::options());
}
