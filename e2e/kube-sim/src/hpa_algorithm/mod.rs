//! Kubernetes HPA (`autoscaling/v2`) replica arithmetic.
//!
//! kube-sim runs its own HPA loop instead of kube-controller-manager, so KEDA-driven scaling
//! only looks like a real cluster if the numbers come out the same. This module reproduces the
//! two pure halves of the upstream controller: the per-metric proposals of
//! `replica_calculator.go` and the behavior normalization of `horizontal.go` (stabilization
//! windows, rate-limiting policies, min/max bounds). The caller fetches metrics and classifies
//! pods; time is passed in, so neither tests nor the simulated clock ever sleep.
//!
//! Metric quantities are integer milli-units (`Quantity::MilliValue()` upstream): upstream
//! truncates utilizations and averages with integer division, and the truncation is visible in
//! the resulting replica counts.

mod behavior;
mod numbers;
mod proposals;

pub use behavior::*;
pub use proposals::*;

#[cfg(test)]
mod tests;
