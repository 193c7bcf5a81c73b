//! Test helpers shared by kube-sim's integration tests; each test binary uses some of them.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

pub(crate) mod crds;
pub(crate) mod tls_backend;
