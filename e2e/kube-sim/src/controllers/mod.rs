//! The controller-manager loops autoscaling depends on: workloads and their pods, Jobs,
//! garbage collection, and the HorizontalPodAutoscaler.

pub mod events;
pub mod gc;
pub mod hpa;
pub mod jobs;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::Sim;
use crate::cluster::{Cluster, WriteOptions};
use crate::resources::{ResourceKey, ResourceType};

/// The field manager of writes made by the simulated controller manager.
pub const MANAGER: &str = "kube-controller-manager";

pub fn options() -> WriteOptions {
    WriteOptions {
        field_manager: MANAGER.to_owned(),
        ..WriteOptions::default()
    }
}

pub fn key(group: &str, plural: &str) -> ResourceKey {
    ResourceKey {
        group: group.to_owned(),
        plural: plural.to_owned(),
    }
}

pub fn resource(cluster: &Cluster, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
    cluster.registry.get(&key(group, plural))
}

/// Whether `object` lists `owner` (by uid) among its owners.
pub fn owned_by(object: &Value, owner_uid: &str) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(owner_uid)))
}

/// A controller owner reference to `owner`.
pub fn owner_reference(owner: &Value, block: bool) -> Value {
    serde_json::json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": block,
    })
}

/// Runs `tick` whenever something changes in the store (coalescing bursts) and at least every
/// `resync`.
fn spawn_loop(sim: &Arc<Sim>, resync: Duration, mut tick: impl FnMut(&Sim) + Send + 'static) {
    let sim = sim.clone();
    let mut events = sim.cluster.store.subscribe();
    tokio::spawn(async move {
        loop {
            tick(&sim);
            tokio::select! {
                _ = events.recv() => {
                    // Let a burst of writes land, then catch up on all of them at once.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    events = events.resubscribe();
                }
                () = tokio::time::sleep(resync) => {}
            }
        }
    });
}

/// Starts every controller loop.
pub fn spawn_all(sim: &Arc<Sim>) {
    spawn_loop(sim, Duration::from_millis(500), workloads::reconcile_all);
    spawn_loop(sim, Duration::from_millis(500), jobs::reconcile_all);
    spawn_loop(sim, Duration::from_secs(1), gc::collect);
    hpa::spawn(sim);
}
