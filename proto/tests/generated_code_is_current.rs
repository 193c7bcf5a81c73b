//! Guards the checked-in protobuf code: compiles the `.proto` files with `protox` (a pure-Rust
//! protobuf compiler, so no `protoc` is needed) and compares the result with `src/generated/`.
//!
//! `KEDA_RS_REGENERATE=1 cargo test -p keda-proto --test generated_code_is_current` rewrites the
//! checked-in files instead of failing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::path::{Path, PathBuf};

const PROTOS: [&str; 2] = ["externalscaler.proto", "metrics.proto"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate(out_dir: &Path) {
    let dir = crate_dir();
    let fds = protox::compile(PROTOS, [&dir]).expect("the .proto files compile");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        // Ordered maps make encodings deterministic (entries in key order, as the reference
        // runtime writes them), which the wire-vector test relies on.
        .btree_map(".")
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_fds(fds)
        .expect("code generation succeeds");
}

#[test]
fn generated_code_is_current() {
    let scratch = std::env::temp_dir().join(format!("keda-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    generate(&scratch);

    let checked_in = crate_dir().join("src/generated");
    let regenerate = std::env::var_os("KEDA_RS_REGENERATE").is_some();
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(&scratch).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let fresh = std::fs::read_to_string(&path).unwrap();
        let target = checked_in.join(&name);
        let current = std::fs::read_to_string(&target).unwrap_or_default();
        if fresh != current {
            if regenerate {
                std::fs::write(&target, fresh).unwrap();
            } else {
                stale.push(name.to_string_lossy().into_owned());
            }
        }
    }
    std::fs::remove_dir_all(&scratch).unwrap();
    assert!(
        stale.is_empty(),
        "checked-in generated code is stale: {stale:?}; run \
         `KEDA_RS_REGENERATE=1 cargo test -p keda-proto --test generated_code_is_current`"
    );
}
