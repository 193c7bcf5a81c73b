//! The CRDs committed to the chart must be exactly what the Rust types generate.
//!
//! `KEDA_RS_REGENERATE=1 cargo test -p keda-operator-crd --test crds_are_current` rewrites them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::path::PathBuf;

use keda_operator_crd::{CRD_FILES, crds, render_crd_yaml};

#[test]
fn chart_crds_match_the_rust_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/keda-rs/crds");
    let regenerate = std::env::var_os("KEDA_RS_REGENERATE").is_some();
    let mut stale = Vec::new();
    for (file, crd) in CRD_FILES.iter().zip(crds()) {
        let fresh = render_crd_yaml(&crd).unwrap();
        let path = dir.join(file);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if fresh != current {
            if regenerate {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, fresh).unwrap();
            } else {
                stale.push(*file);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale CRDs in charts/keda-rs/crds: {stale:?}; run \
         `KEDA_RS_REGENERATE=1 cargo test -p keda-operator-crd --test crds_are_current`"
    );
}
