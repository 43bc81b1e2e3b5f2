//! The Switchyard request path, shared by the proxy and by Rust services.
//!
//! # Layout
//! The modules follow a request from the listener to the upstream:
//! - [`server`]: accepting downstream connections and serving HTTP/1.1 and
//!   h2c on one port, with limits, timeouts and graceful shutdown.
//! - [`proxy`]: the per-request service — routing, header handling
//!   ([`proxy::headers`]), protocol upgrades, fault injection.
//! - [`call`]: one call to a cluster under a call policy (deadlines, the
//!   head timeout, retries, hedging), shared by the proxy's routes and the
//!   library's clients.
//! - [`route`]: compiled routes and request matching.
//! - [`cluster`]: a balancer over a live set of endpoints; feeds latency and
//!   in-flight counts back into the balancer.
//! - [`upstream`]: connecting and pooling upstream connections (HTTP/1.1
//!   keep-alive, shared HTTP/2).
//! - [`tcp`] and [`udp`]: the L4 proxies, reusing clusters and balancing.
//! - [`error`]: classified errors, and the one mapping from errors to
//!   responses.
//! - [`body`]: the single body type of the request path.
//! - [`drain`]: graceful-shutdown signalling.

pub mod body;
pub mod call;
pub mod cluster;
pub mod drain;
pub mod error;
pub mod proxy;
pub mod route;
pub mod server;
pub mod tcp;
pub mod udp;
pub mod upstream;

pub use body::Body;
pub use error::{ErrorKind, ProxyError};
