//! The protobuf contracts of keda-rs, compiled into Rust.
//!
//! The generated code is checked in (`src/generated/`) so that building needs nothing but the
//! Rust toolchain: no `protoc`, no build script. The test `generated_code_is_current` compiles
//! the `.proto` files with a pure-Rust compiler and fails when the checked-in code has drifted;
//! run it with `KEDA_RS_REGENERATE=1` to rewrite the files.

/// KEDA's external scaler contract (`package externalscaler`), byte-for-byte compatible with
/// KEDA's `externalscaler.proto`.
#[allow(
    clippy::pedantic,
    clippy::all,
    missing_debug_implementations,
    unreachable_pub,
    reason = "generated code"
)]
pub mod externalscaler {
    include!("generated/externalscaler.rs");
}

/// The operator <-> metrics server contract of keda-rs (`package kedars.metrics.v1`).
#[allow(
    clippy::pedantic,
    clippy::all,
    missing_debug_implementations,
    unreachable_pub,
    reason = "generated code"
)]
pub mod metrics {
    include!("generated/kedars.metrics.v1.rs");
}

/// Paths of the `.proto` sources, for tools that need the contract itself (for example, to
/// generate a client in another language).
pub mod sources {
    /// `externalscaler.proto`, exactly as KEDA defines it.
    pub const EXTERNAL_SCALER: &str = include_str!("../externalscaler.proto");
    /// `metrics.proto`, the keda-rs operator <-> metrics server contract.
    pub const METRICS: &str = include_str!("../metrics.proto");
}
