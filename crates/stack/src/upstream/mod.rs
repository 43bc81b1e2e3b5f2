//! Upstream connections: connecting, pooling and sending requests.
//!
//! One [`Pool`] per endpoint, over plaintext TCP or TLS ([`tls`]). HTTP/1.1 keeps a stack of idle keep-alive
//! connections; HTTP/2 multiplexes every request over one shared connection.
//! A request that fails on a reused connection before any byte of it was
//! written is sent again on another connection, which removes the classic
//! keep-alive race (the upstream closes an idle connection just as the proxy
//! reuses it).

mod connect;
mod io;
mod pool;
pub mod tls;

pub use connect::connect;
pub use io::{UpstreamIo, open};
pub use pool::{ClientAddrs, ConnectionLease, Pool, PoolSettings, ResponseGuard};
pub use tls::UpstreamTls;
