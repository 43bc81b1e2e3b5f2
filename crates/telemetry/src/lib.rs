//! Switchyard telemetry: the metrics registry and structured logging.
//!
//! # Layout
//! - [`metrics`]: every metric family Switchyard exports, pre-resolved handles
//!   for the hot path, and rendering in the Prometheus text format.
//! - [`process`]: process-level gauges (memory, file descriptors, CPU) read
//!   from `/proc` at scrape time.
//! - [`logging`]: `tracing` subscriber setup, human or JSON.

pub mod logging;
pub mod metrics;
pub mod process;

pub use metrics::{ClusterMetrics, Decision, ListenerMetrics, Metrics, RouteMetrics, StatusClass};
