//! Switchyard's resilience policies, as plain state machines.
//!
//! Nothing here performs I/O: the request path (`switchyard-stack`) asks these
//! types what to do and tells them what happened. All time comes from
//! `tokio::time::Instant`, so tests drive them with paused time.
//!
//! # Layout
//! - [`budget`]: the retry (and hedge) budget — retries may add at most a
//!   ratio of recent requests plus a floor per second (Finagle, Linkerd).
//! - [`backoff`]: exponential backoff with full jitter.
//! - [`deadline`]: parsing and formatting `grpc-timeout` and Switchyard's
//!   HTTP deadline header, so a chain of hops shares one deadline.
//! - [`outlier`]: per-endpoint passive ejection and active health state,
//!   combined into one availability answer for the balancer.
//! - [`limits`]: per-cluster concurrency limits with RAII permits.
//! - [`latency`]: a lock-free recent-latency histogram for hedging delays.

pub mod backoff;
pub mod budget;
pub mod deadline;
pub mod latency;
pub mod limits;
pub mod outlier;

pub use backoff::Backoff;
pub use budget::Budget;
pub use deadline::Deadline;
pub use latency::LatencyWindow;
pub use limits::{Limit, Permit};
pub use outlier::{EndpointHealth, HealthState, Outcome, OutlierSettings};
