//! TLS termination on listeners: `switchyard-tls`'s listener side, which the
//! registry's HTTPS shares.

pub use switchyard_tls::server::*;
