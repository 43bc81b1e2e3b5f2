//! The Switchyard registry: where the instances of each service are.
//!
//! An HTTP+JSON API under `/v1` (register, heartbeat, drain, deregister,
//! list, and a blocking-query watch by index), on one of two stores: an
//! embedded durable store for one machine, or etcd for any number of
//! stateless registry processes. A registration client lets a Rust
//! service register itself, heartbeat and drain on shutdown.
//!
//! # Layout
//! - [`server`]: [`RegistryServer`] — the token rule, binding, graceful
//!   shutdown.
//! - `api`: the router, handlers and bearer-token check; the OpenAPI
//!   document (`openapi.json`, served at `/v1/openapi.json`) and
//!   [`ROUTES`], which a test keeps equal.
//! - [`model`]: validation of names, addresses and registrations.
//! - [`store`]: the [`Store`](store::Store) trait, the change hub that wakes
//!   blocking queries, the [`embedded`](store::embedded) (redb) and
//!   [`etcd`](store::etcd) stores.
//! - [`client`]: the registration client (re-exported as
//!   `switchyard::registry`).
//! - [`error`]: store errors and the one mapping of errors to answers.
//!
//! The wire records themselves live in `switchyard_discovery::wire`, shared
//! with the discovery sources that read them.

mod api;
/// The registration client (it lives beside the registry's discovery
/// source, so that a service that registers need not build the server).
pub use switchyard_discovery::registration as client;
pub mod error;
pub mod model;
pub mod server;
pub mod store;

pub use api::{BODY_LIMIT, OPENAPI, ROUTES};
pub use client::{Registration, RegistrationOptions};
pub use error::{ApiError, StoreError};
pub use server::{RegistryServer, ServerOptions, StartError};
pub use store::StoreSpec;
pub use switchyard_discovery::wire;
