//! TLS for every part of Switchyard that speaks it (rustls, ring provider,
//! TLS 1.2 and 1.3 with rustls' safe defaults):
//!
//! - [`server`]: listener certificates — chosen by SNI, re-read when their
//!   files rotate, client certificates verified against a CA and read for
//!   the client's identity, expiry warnings. The proxy's listeners and the
//!   registry's HTTPS use it.
//! - [`client`]: client settings — a CA bundle or the system's roots, an
//!   optional client certificate, ALPN. Upstream clusters, the registry
//!   clients (discovery, registration) and the etcd client use it.

pub mod client;
pub mod server;

pub use server::TlsError;
