//! Test helpers shared by kube-sim's integration tests.

pub(crate) mod tls_backend;
