//! Dedicated connections through the cluster: TCP connections of `tcp`
//! listeners, UDP sessions of `udp` listeners and the upstream side of
//! HTTP/1.1 upgrades (WebSocket). Like HTTP requests they pass the cluster's
//! admission limits, count in the endpoint's load and requests, and feed
//! their outcome into outlier detection; unlike requests, a failed connect
//! is tried on another endpoint whatever the route's retry policy, because
//! nothing was sent.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{Response, StatusCode};
use hyper::{body::Incoming, client::conn::http1};
use switchyard_balance::{InFlight, Target};
use switchyard_policy::{Permit, outlier::Outcome};
use switchyard_telemetry::Decision;
use tokio::time::Instant;

use super::{Cluster, Endpoint, FAILURE_PENALTY, is_failure};
use crate::{
    body::Body,
    error::{ErrorKind, ProxyError},
    server::proxy_protocol,
    upstream::{ClientAddrs, ConnectionLease, UpstreamIo, open},
};

/// Endpoints tried per connection.
pub const CONNECT_ATTEMPTS: usize = 3;

/// A TCP connection to an endpoint, admitted by its cluster. It holds a
/// place under the cluster's `max_connections` and counts as in flight on
/// the endpoint (least-request balances open connections) until dropped.
#[derive(Debug)]
pub struct TcpUpstream {
    pub endpoint: Arc<Endpoint>,
    pub stream: UpstreamIo,
    _permit: Permit,
    _in_flight: InFlight,
}

/// A UDP session (one client's datagram flow) pinned to an endpoint,
/// admitted by its cluster: a place under `max_connections` and one unit
/// of the endpoint's in-flight count while it lives.
#[derive(Debug)]
pub struct UdpSession {
    pub endpoint: Arc<Endpoint>,
    _permit: Permit,
    _in_flight: InFlight,
}

/// An upstream connection ready to carry an upgrade request.
#[derive(Debug)]
pub struct UpgradeUpstream {
    pub endpoint: Arc<Endpoint>,
    pub sender: http1::SendRequest<Body>,
    /// Held for the tunnel's life: a request slot, the connection's place
    /// and the endpoint's in-flight count.
    pub hold: UpgradeHold,
    started: Instant,
}

/// What an upgrade tunnel holds while it lives.
#[derive(Debug)]
pub struct UpgradeHold {
    _request: Permit,
    _lease: ConnectionLease,
    _in_flight: InFlight,
}

impl Cluster {
    /// Connects to an endpoint for a `tcp` listener's connection from
    /// `client` to `local`, trying up to [`CONNECT_ATTEMPTS`] endpoints;
    /// with the cluster's `proxy_protocol`, the connection starts with a
    /// header naming `client`.
    pub async fn connect_tcp(
        &self,
        hash: Option<u64>,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<TcpUpstream, ProxyError> {
        let Some(permit) = self.settings.connections.try_acquire() else {
            self.decisions.count(Decision::Overloaded);
            return Err(ProxyError::new(ErrorKind::Overloaded));
        };
        let preface = self
            .proxy_protocol
            .map(|version| proxy_protocol::header(version, client, local));
        let mut tried = Vec::with_capacity(CONNECT_ATTEMPTS);
        loop {
            let endpoint = self.pick(hash, &tried)?;
            let started = Instant::now();
            let tls = self.settings.tls.as_ref();
            let opened = open(
                endpoint.addr(),
                self.connect_timeout(),
                tls,
                preface.as_deref(),
            );
            match opened.await {
                Ok(stream) => {
                    self.record(&endpoint, Outcome::Success);
                    endpoint.count_connection();
                    return Ok(TcpUpstream {
                        _in_flight: endpoint.load().start(),
                        endpoint,
                        stream,
                        _permit: permit,
                    });
                }
                Err(e) => {
                    self.connect_failed(&endpoint, started.elapsed(), false);
                    if tried.len() + 1 >= CONNECT_ATTEMPTS {
                        return Err(e);
                    }
                    tried.push(endpoint.addr());
                }
            }
        }
    }

    /// Admits a new UDP session and picks its endpoint.
    pub fn open_udp_session(&self) -> Result<UdpSession, ProxyError> {
        let Some(permit) = self.settings.connections.try_acquire() else {
            self.decisions.count(Decision::Overloaded);
            return Err(ProxyError::new(ErrorKind::Overloaded));
        };
        let endpoint = self.pick(None, &[])?;
        endpoint.count_session();
        Ok(UdpSession {
            _in_flight: endpoint.load().start(),
            endpoint,
            _permit: permit,
        })
    }

    /// What a UDP session learned about its endpoint: a reply (`true`), or
    /// an ICMP port unreachable (`false`: nothing listens there).
    pub fn udp_outcome(&self, endpoint: &Endpoint, answered: bool) {
        if answered {
            self.record(endpoint, Outcome::Success);
        } else {
            endpoint.load().observe(FAILURE_PENALTY);
            self.record(endpoint, Outcome::Failure);
        }
    }

    /// Opens a dedicated upstream connection for an upgrade request, under
    /// the cluster's request limit, trying up to [`CONNECT_ATTEMPTS`]
    /// endpoints; `client` names the downstream client in the PROXY header
    /// of a cluster that sends one.
    pub async fn connect_upgrade(
        &self,
        hash: Option<u64>,
        client: Option<&ClientAddrs>,
    ) -> Result<UpgradeUpstream, ProxyError> {
        let Some(request) = self.requests.try_acquire() else {
            self.decisions.count(Decision::Overloaded);
            return Err(ProxyError::new(ErrorKind::Overloaded));
        };
        let mut tried: Vec<SocketAddr> = Vec::with_capacity(CONNECT_ATTEMPTS);
        loop {
            let endpoint = self.pick(hash, &tried)?;
            let in_flight = endpoint.load().start();
            endpoint.count_request();
            let started = Instant::now();
            match endpoint.pool().connect_upgrade(client).await {
                Ok((sender, lease)) => {
                    return Ok(UpgradeUpstream {
                        endpoint,
                        sender,
                        hold: UpgradeHold {
                            _request: request,
                            _lease: lease,
                            _in_flight: in_flight,
                        },
                        started,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Overloaded => {
                    self.decisions.count(Decision::Overloaded);
                    return Err(e);
                }
                Err(e) => {
                    self.connect_failed(&endpoint, started.elapsed(), true);
                    if !e.kind().not_sent() || tried.len() + 1 >= CONNECT_ATTEMPTS {
                        return Err(e.at(endpoint.addr()));
                    }
                    tried.push(endpoint.addr());
                }
            }
        }
    }

    /// Records how the upstream answered an upgrade request (a 101 or any
    /// other response, or a failure) like the answer to any request.
    pub fn upgrade_answered(
        &self,
        up: &UpgradeUpstream,
        answer: &Result<Response<Incoming>, ProxyError>,
    ) {
        let elapsed = up.started.elapsed();
        let endpoint = &up.endpoint;
        match answer {
            Ok(resp) => {
                endpoint.load().observe(elapsed);
                let failed = is_failure(resp);
                let status = resp.status();
                endpoint.stats().record(status.as_u16(), elapsed);
                if status == StatusCode::SWITCHING_PROTOCOLS || !failed {
                    self.record(endpoint, Outcome::Success);
                } else {
                    self.record(endpoint, Outcome::Failure);
                }
            }
            Err(e) if e.kind().blames_endpoint() => self.connect_failed(endpoint, elapsed, true),
            Err(_) => {}
        }
    }

    /// A connection to `endpoint` failed: a strong signal, recorded as a
    /// slow answer so that peak-EWMA steers away at once.
    fn connect_failed(&self, endpoint: &Endpoint, elapsed: Duration, http: bool) {
        endpoint.load().observe(elapsed.max(FAILURE_PENALTY));
        if http {
            endpoint.stats().record(502, elapsed);
        }
        self.record(endpoint, Outcome::Failure);
    }
}
