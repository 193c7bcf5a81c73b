//! `keda-operator`.
fn main() {}
