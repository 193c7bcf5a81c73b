//! keda-rs operator: reconciles ScaledObjects into HPAs, runs the scale loop that moves
//! workloads between zero and their minimum, and serves metric values to the metrics server.

pub mod auth;
pub mod formula;
pub mod metric_name;
pub mod params;
pub mod scalers;
