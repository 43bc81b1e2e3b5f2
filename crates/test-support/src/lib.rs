//! Test support for Switchyard: real servers and clients that the proxy's
//! integration tests (and `switchyard demo`) run against.
//!
//! Everything here talks over real loopback sockets; nothing is mocked at the
//! HTTP layer, so what a test observes is what a real peer would.
//!
//! # Layout
//! - [`ports`]: free loopback ports and addresses.
//! - [`client`]: minimal one-shot HTTP/1.1 and h2c clients for assertions.
//! - [`eventually`](mod@eventually): polling waits ([`eventually()`], [`wait_for`],
//!   [`assert_eventually!`]) so tests never sleep a fixed time.
//! - [`backend`]: an HTTP/1.1 + h2c backend whose behaviour (status, delay,
//!   failure ratio, garbage, dropped connections, hangs, stop/restart) is
//!   switched at runtime, recording every request it receives.
//! - [`grpc`]: the `switchyard.test.v1.Echo` tonic service (unary, client-,
//!   server- and bidi-streaming), a server launcher and a client helper.
//! - [`python`]: the same Echo service and a conformance client in Python
//!   `grpcio`, a third-party gRPC implementation, run from a private venv.
//! - [`process`]: [`ChildGuard`], which kills a spawned child on drop.
//! - [`etcd`]: [`Etcd`], a real etcd member or cluster (Debian's
//!   `etcd-server`) on free loopback ports, with member kill and restart.
//! - [`dnsmasq`]: [`Dnsmasq`], a real DNS server answering only the
//!   records a test gives it.

pub mod backend;
pub mod client;
pub mod dnsmasq;
pub mod etcd;
pub mod eventually;
pub mod grpc;
pub mod phoenix;
pub mod ports;
pub mod process;
pub mod python;
pub mod tcp;
pub mod tls;

pub use backend::{Backend, BackendConfig, BackendHandle, Mode, RecordedRequest};
pub use dnsmasq::{DnsRecord, Dnsmasq};
pub use etcd::Etcd;
pub use eventually::{eventually, wait_for};
pub use grpc::GrpcBackend;
pub use ports::{RefusedAddr, free_addr, free_port};
pub use process::ChildGuard;
pub use python::{PyGrpcServer, python_venv, run_py_grpc_client, run_py_grpc_client_with};
pub use tcp::tcp_echo;
