//! Switchyard telemetry: the metrics registry and structured logging.
//!
//! # Layout
//! - [`metrics`]: every metric family Switchyard exports, pre-resolved handles
//!   for the hot path, and rendering in the Prometheus text format.
//! - [`live`]: cumulative request counts and latency buckets per route and
//!   endpoint, from which the admin feed computes rates and percentiles.
//! - [`process`]: process-level gauges (memory, file descriptors, CPU) read
//!   from `/proc` at scrape time.
//! - [`logging`]: `tracing` subscriber setup, human or JSON, written off
//!   the data path.
//! - [`trace`]: OpenTelemetry spans per request and attempt, W3C and B3
//!   propagation, OTLP export through a bounded queue.

pub mod live;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod trace;

pub use metrics::{ClusterMetrics, Decision, ListenerMetrics, Metrics, RouteMetrics, StatusClass};
