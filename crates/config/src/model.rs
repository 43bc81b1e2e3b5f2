//! The typed configuration model.
//!
//! Every type here is what the rest of Switchyard consumes: it is already
//! validated (see `validate.rs`), durations are `Duration`s and addresses are
//! `SocketAddr`s. Each default sits next to its field with the reason for its
//! value; `docs/configuration.md` repeats them for operators.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Serialize;

/// The whole configuration of one proxy process.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Config {
    pub admin: AdminConfig,
    pub runtime: RuntimeConfig,
    pub log: LogConfig,
    /// `[tracing]`: absent means no traces are exported (context is still
    /// propagated so that traces stay connected across this hop).
    pub tracing: Option<TracingConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
}

/// `[admin]`: the operator's endpoint (`/ready`, `/live`, `/metrics`, `/clusters`, `/config`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdminConfig {
    /// Default `127.0.0.1:9901`: loopback so that nothing outside the host can
    /// read the configuration or metrics unless the operator opts in; 9901 is
    /// the port operators already know from Envoy.
    pub listen: SocketAddr,
    /// Default `None`: a file holding the bearer token that every admin
    /// endpoint except `/live` and `/ready` then requires. Without it the
    /// token comes from `SWITCHYARD_ADMIN_TOKEN`; the proxy refuses to start
    /// with `listen` beyond loopback and neither. A file rather than a value
    /// in the config, so that the config can be shown (`/config`) and
    /// committed without the secret.
    pub token_file: Option<PathBuf>,
    /// Default 256: connections the admin listener serves at once; at the
    /// limit it stops accepting and new clients wait in the kernel backlog
    /// until one closes. Its own limit, so that clients of the admin port
    /// cannot take the descriptors the data plane needs (nor the other way
    /// round). A handful of scrapers, probes and dashboards need far fewer.
    pub max_connections: usize,
    /// Default 10s: a connection must send its first request, and an
    /// HTTP/1.1 client each request head, within this; one that sends
    /// nothing is closed then. The data plane's default too.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub header_read_timeout: Duration,
    /// Default 60s: a connection with no request in flight is closed after
    /// this (an open `/events` feed is in flight). Longer than the usual
    /// Prometheus scrape interval, so that a scraper's connection is reused.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub idle_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token_file: None,
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// `[runtime]`: threads and lifecycle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuntimeConfig {
    /// Worker threads. Default: `None`, meaning one per available core (the
    /// process's CPU affinity and cgroup quota), since a proxy is CPU-bound
    /// on the data path; `1`, and the default when one core is available,
    /// runs a single-threaded runtime, the cheapest choice for a sidecar
    /// pinned to one core.
    pub workers: Option<usize>,
    /// Default 20s: time in-flight requests get to finish after SIGTERM. It
    /// stays below Kubernetes' default termination grace period (30s) so that
    /// the proxy exits on its own before it is killed.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub shutdown_grace: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            workers: None,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// `[log]`: process logs and access logs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogConfig {
    /// Default `"info"`: an `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
    /// Default `None`: human-readable on a terminal, JSON otherwise unless the
    /// command line says `--log-format`.
    pub format: Option<LogFormat>,
    /// Default `false`: one line per request costs CPU on every hop; operators
    /// turn it on where they need it.
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: None,
            access_log: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[tracing]`: OpenTelemetry traces exported over OTLP.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TracingConfig {
    /// Required: the collector, e.g. `http://127.0.0.1:4317` (gRPC) or
    /// `http://127.0.0.1:4318/v1/traces` (HTTP).
    pub otlp_endpoint: String,
    /// Default `grpc`: OTLP/gRPC is what every collector (Jaeger, Tempo, the
    /// OpenTelemetry Collector) accepts on 4317.
    pub protocol: OtlpProtocol,
    /// Default `"switchyard"`: the `service.name` resource attribute.
    pub service_name: String,
    /// Default 0.1: fraction of new traces (without a sampled parent) that
    /// are recorded. A proxy sees every request of a system, so recording all
    /// of them costs more than most backends want; callers' sampling
    /// decisions are always honoured (parent-based).
    pub sample_ratio: f64,
    /// Default 4096: spans waiting for export; when the collector is slow or
    /// down, further spans are dropped and counted instead of blocking or
    /// growing memory.
    pub queue_size: usize,
    /// Default 512: spans per export request (the OpenTelemetry SDK default).
    pub batch_size: usize,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            protocol: OtlpProtocol::Grpc,
            service_name: "switchyard".to_owned(),
            sample_ratio: 0.1,
            queue_size: 4096,
            batch_size: 512,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OtlpProtocol {
    /// OTLP over gRPC.
    Grpc,
    /// OTLP over HTTP with protobuf bodies.
    Http,
}

/// `[[listeners]]`: a socket the proxy accepts on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// Default `http`: the common case for a service mesh sidecar.
    pub protocol: ListenerProtocol,
    /// HTTP listeners: ordered routes, first match wins.
    pub routes: Vec<RouteConfig>,
    /// TCP and UDP listeners: the one cluster all traffic goes to.
    pub cluster: Option<String>,
    /// HTTP listeners: server-side protocol limits and timeouts.
    pub http: HttpServerConfig,
    /// HTTP and TCP listeners: TLS termination when set (default:
    /// plaintext; HTTP listeners then serve HTTP/1.1 and h2c on one port).
    pub tls: Option<ListenerTls>,
    /// HTTP and TCP listeners: read a PROXY protocol header (v1 or v2) from
    /// these sources (default: none), whose address for the client then
    /// replaces theirs.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// TCP listeners: idle timeout of a proxied connection.
    /// Default 1h: long-lived connections (databases, caches) are the norm for
    /// TCP; the limit only reclaims connections whose peers vanished silently.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub tcp_idle_timeout: Duration,
    /// UDP listeners: how long a client's flow stays mapped without traffic.
    /// Default 60s: longer than common DNS/QUIC retry intervals, short enough
    /// to bound the flow table.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub udp_session_timeout: Duration,
}

/// `tls = { cert = "server.pem", key = "server.key" }`, or several
/// certificates chosen by the client's SNI: `tls = { certificates = [{
/// server_names = ["api.example"], cert, key }, ...] }`. PEM files read at
/// start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerTls {
    /// At least one. A handshake gets the first whose `server_names` match
    /// its SNI (exactly, or `*.example` for one label), else the first.
    pub certificates: Vec<TlsCertificate>,
    /// Default `None`. When set, every client must present a certificate
    /// that chains to this CA bundle (mutual TLS); its identity (a
    /// `spiffe://` URI SAN, else the first DNS SAN, else the subject CN)
    /// is logged, put in spans and checked by routes' `identities`.
    pub client_ca: Option<std::path::PathBuf>,
    /// Default `None`. The request header the client's identity is sent
    /// upstream in; a client's own header of that name is always removed.
    pub identity_header: Option<String>,
}

/// One certificate of a listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsCertificate {
    /// The SNI names it serves, lowercase; empty for the `{ cert, key }`
    /// form.
    pub server_names: Vec<String>,
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// `proxy_protocol = { trusted = ["10.0.0.0/8"] }`: the load balancers in
/// front of a listener that announce each client with HAProxy's PROXY
/// protocol. A connection from a trusted source must start with a header;
/// connections from anywhere else are served as they come.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyProtocol {
    /// Networks (`10.0.0.0/8`) or single addresses (`127.0.0.1`).
    pub trusted: Vec<ipnet::IpNet>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerProtocol {
    /// HTTP/1.1, h2c (prior knowledge) and gRPC on one port.
    Http,
    Tcp,
    Udp,
}

/// `[listeners.http]`: downstream HTTP settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpServerConfig {
    /// Default 64 KiB: the total size of a request head. Envoy's default is
    /// 60 KiB; real browsers stay far below; larger heads are refused with 431.
    pub max_header_bytes: usize,
    /// Default 100 (hyper's limit, also HAProxy's `tune.http.maxhdr` order
    /// of magnitude): header fields in an HTTP/1.1 request head; more get
    /// 431. Each field costs parsing work before any routing happens.
    pub max_headers: usize,
    /// Default 10s: a client must send its whole request head within this time
    /// (slowloris defence). Generous for mobile clients, short enough that a
    /// trickling client cannot hold a connection for long.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub header_read_timeout: Duration,
    /// Default 60s: a keep-alive connection with no request in flight is closed
    /// after this. Longer than typical client pools keep idle connections
    /// (Go: 90s idle in the pool but clients retry), short enough to bound fds.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub idle_timeout: Duration,
    /// Default `None`: when set, connections older than this are asked to go
    /// away (HTTP/2 GOAWAY, `Connection: close` on HTTP/1.1) so that clients
    /// reconnect and rebalance after a scale-out.
    #[serde(serialize_with = "crate::duration::serialize_opt")]
    pub max_connection_age: Option<Duration>,
    /// Default 100: concurrent HTTP/2 streams per downstream connection, the
    /// value the HTTP/2 RFC recommends as a minimum and most servers use.
    pub max_concurrent_streams: u32,
    /// Default 10,000: connections accepted at once on this listener; beyond it
    /// the proxy stops accepting until one closes, protecting its memory.
    pub max_connections: usize,
    /// Default 30s: a response whose next bytes are ready while the client
    /// takes none of them for this long (an HTTP/2 window held at zero, a
    /// slow reader) is ended: the stream is reset, an HTTP/1.1 connection
    /// closed. A healthy client that stops reading for half a minute is gone
    /// or hostile, and every such stream holds an upstream request slot.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub send_timeout: Duration,
    /// Default 5m (Envoy's `stream_idle_timeout`): a stream on which no body
    /// frame moved in either direction for this long is ended, before or
    /// after the response head. Long-lived quiet streams (gRPC watches) need
    /// messages more often than this, or a larger value.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub stream_idle_timeout: Duration,
    /// Default 256: requests one client address may have in flight on this
    /// listener at once, counted from the request head to the end of the
    /// response body; more are answered 429 (gRPC `RESOURCE_EXHAUSTED`).
    /// A quarter of a cluster's default `max_requests`, so that one client
    /// cannot take a cluster's slots from the others.
    pub max_requests_per_client: u32,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connection_age: None,
            max_concurrent_streams: 100,
            max_connections: 10_000,
            send_timeout: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_secs(300),
            max_requests_per_client: 256,
        }
    }
}

/// The default route `timeout`; the reason is on [`RouteConfig::timeout`].
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// `[[listeners.routes]]`: where matching requests go and with what policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteConfig {
    /// Default: `"<listener>/<index>"`, so metrics and logs can name the route.
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub destination: Destination,
    /// Default 15s (Envoy's route default): bounds the time from the request
    /// to the upstream's response head, all attempts included. Bodies then
    /// stream without a total limit so long gRPC streams keep working.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub timeout: Duration,
    /// Default `None`: a stream (request and response bodies) may last as
    /// long as both peers keep it going; long-lived gRPC streams are normal.
    /// When set, the proxy ends the exchange at this age (gRPC calls with
    /// `DEADLINE_EXCEEDED` trailers) and sends the remaining time upstream
    /// as the call's deadline.
    #[serde(serialize_with = "crate::duration::serialize_opt")]
    pub max_stream_duration: Option<Duration>,
    /// Default `["websocket"]`: the HTTP/1.1 upgrades tunnelled to the
    /// upstream; any other `Upgrade` is dropped like a hop-by-hop header
    /// and the request proxied as a plain one. Never `h2c`.
    pub upgrades: Vec<String>,
    /// Default `None`: no retries unless the route asks for them.
    pub retry: Option<Box<RetryPolicy>>,
    /// Default `None`: no hedging.
    pub hedge: Option<Box<HedgePolicy>>,
    /// Default `None`: no faults. Injected faults (Envoy's fault filter) for
    /// testing how callers cope with a slow or failing service.
    pub fault: Option<Box<FaultPolicy>>,
    /// Default empty: any client. Otherwise only clients whose verified
    /// certificate identity (see [`ListenerTls::client_ca`]) is listed;
    /// others get 403 (gRPC: PERMISSION_DENIED).
    pub identities: Vec<String>,
}

/// `fault = { ... }`: faults injected into a share of a route's requests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultPolicy {
    /// Answer this share of requests without sending them upstream.
    pub abort: Option<FaultAbort>,
    /// Hold this share of requests before sending them upstream.
    pub delay: Option<FaultDelay>,
}

/// An injected answer: an HTTP status, or for gRPC calls a gRPC status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultAbort {
    /// Share of requests, 0.0..=1.0.
    pub ratio: f64,
    /// Default 503: the status of aborted HTTP requests.
    pub status: u16,
    /// Default 14 (UNAVAILABLE): the `grpc-status` of aborted gRPC calls.
    pub grpc_status: u8,
}

/// An injected delay before the request goes upstream; it counts against
/// the route timeout and the caller's deadline, as a slow upstream would.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultDelay {
    /// Share of requests, 0.0..=1.0.
    pub ratio: f64,
    #[serde(serialize_with = "crate::duration::serialize")]
    pub duration: Duration,
}

/// The request properties a route matches on; all given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteMatch {
    /// Exact host (`api.example.com`) or a wildcard suffix (`*.example.com`),
    /// compared case-insensitively without the port.
    pub host: Option<String>,
    pub path: Option<PathMatch>,
    /// Any of these methods; empty means any method.
    pub methods: Vec<String>,
    /// Every listed header must be present with exactly this value.
    pub headers: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact(String),
    /// Segment-agnostic byte prefix, like Envoy's `prefix`.
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    Cluster(String),
    /// Weighted split across clusters (canary, blue/green).
    Split(Vec<WeightedCluster>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
}

/// `retry = { ... }` on a route.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Total attempts including the first. Default 3, the gRPC and Envoy norm:
    /// two retries mask one bad endpoint without multiplying load much.
    pub attempts: u32,
    /// Default `None`: each attempt may use what is left of the route timeout.
    #[serde(serialize_with = "crate::duration::serialize_opt")]
    pub per_try_timeout: Option<Duration>,
    /// Default `[connect-failure, refused-stream, reset, unavailable]`.
    pub on: Vec<RetryOn>,
    /// Additional HTTP status codes that are retried.
    pub status_codes: Vec<u16>,
    /// Default 25ms base / 250ms cap, full jitter (gRPC and Envoy use 25ms base).
    #[serde(serialize_with = "crate::duration::serialize")]
    pub backoff_base: Duration,
    #[serde(serialize_with = "crate::duration::serialize")]
    pub backoff_max: Duration,
    /// Default `false`: only idempotent methods (RFC 9110) are retried on
    /// failures that may have reached the upstream.
    pub non_idempotent: bool,
    /// Default 64 KiB (Linkerd's bound): request bodies up to this size are
    /// buffered so that they can be replayed; larger bodies are not retried.
    pub max_replay_bytes: usize,
    /// Default `false`: a request that is already a retry at a previous hop is
    /// not retried again here, so retries never multiply along a chain.
    pub retry_retried: bool,
}

impl Default for RetryPolicy {
    /// The defaults documented on each field; used for `retry = {}`.
    fn default() -> Self {
        Self {
            attempts: 3,
            per_try_timeout: None,
            on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Reset,
                RetryOn::Unavailable,
            ],
            status_codes: Vec::new(),
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            non_idempotent: false,
            max_replay_bytes: 64 * 1024,
            retry_retried: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    ConnectFailure,
    RefusedStream,
    Reset,
    /// Any 5xx from the upstream.
    #[serde(rename = "5xx")]
    Status5xx,
    /// 502, 503 and 504.
    GatewayError,
    /// gRPC `UNAVAILABLE`.
    Unavailable,
    /// gRPC `RESOURCE_EXHAUSTED`.
    ResourceExhausted,
    /// gRPC `DEADLINE_EXCEEDED` of one attempt.
    DeadlineExceeded,
    /// gRPC `CANCELLED`.
    Cancelled,
}

/// `hedge = { ... }` on a route.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HedgePolicy {
    pub delay: HedgeDelay,
    /// Default 2: the original plus one hedge.
    pub max_attempts: u32,
    /// Default 0.1: hedges may add at most 10% load over recent requests.
    pub max_extra_load: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgeDelay {
    Fixed(#[serde(serialize_with = "crate::duration::serialize")] Duration),
    /// A percentile (e.g. 95.0) of the cluster's recent latency.
    Percentile(f64),
}

/// `[[clusters]]`: a set of interchangeable upstream endpoints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterConfig {
    pub name: String,
    pub discovery: Discovery,
    /// Default `p2c-peak-ewma`: latency-aware and self-correcting, the choice
    /// of Finagle, Linkerd and tower; it steers away from slow endpoints
    /// without any tuning.
    pub balance: BalanceStrategy,
    /// Required for `ring-hash` and `maglev`: what request property is hashed.
    pub hash: Option<HashOn>,
    /// Default `http1`: every HTTP server speaks it; gRPC needs `http2`.
    pub protocol: UpstreamProtocol,
    /// Default 1s: within a data centre a connect that takes longer means the
    /// host is gone; failing fast lets a retry pick another endpoint.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub connect_timeout: Duration,
    /// Default 4s: idle pooled connections are closed before common upstream
    /// keep-alive timeouts (Node.js: 5s), so the proxy never reuses a
    /// connection the upstream is closing (Envoy's intermittent-503 problem).
    #[serde(serialize_with = "crate::duration::serialize")]
    pub idle_timeout: Duration,
    /// Default 1024: idle connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    pub retry_budget: RetryBudget,
    pub limits: Limits,
    pub outlier: Option<OutlierPolicy>,
    pub health: Option<HealthCheck>,
    /// Default 0.5 (Envoy's panic threshold): when fewer than this fraction
    /// of endpoints are available (healthy, not ejected), balance over all of
    /// them: sending some traffic to doubtful endpoints beats failing it all.
    pub panic_threshold: f64,
    /// Default `None`: plaintext. When set, every connection to the
    /// cluster's endpoints (requests, tunnels, TCP, health checks) is TLS,
    /// verified, never downgraded.
    pub tls: Option<UpstreamTls>,
    /// Default `None`. `v1` or `v2`: each connection a tcp listener opens to
    /// an endpoint starts with a PROXY protocol header naming the client,
    /// for upstreams behind the proxy that want the real client address.
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

/// The PROXY protocol version a cluster sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolVersion {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// `tls = { ca = "ca.pem", server_name = "api.internal" }` on a cluster:
/// TLS origination to its endpoints (rustls, TLS 1.2 and 1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// PEM bundle the endpoints' certificates must chain to. Default: the
    /// system's roots (Debian: the ca-certificates package).
    pub ca: Option<std::path::PathBuf>,
    /// The name sent as SNI and that every endpoint's certificate must
    /// carry; hostname verification is always on. Default: the cluster's
    /// name.
    pub server_name: String,
    /// A client certificate chain and key, for upstreams that require
    /// mutual TLS; both or neither.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    Static(Vec<StaticEndpoint>),
    Registry {
        url: String,
        service: String,
        /// Default `None`: an `https://` registry's certificate must chain
        /// to the system's roots; set, to this PEM bundle instead.
        ca: Option<std::path::PathBuf>,
    },
    Dns(DnsDiscovery),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        /// Default `None`: `https://` members' certificates must chain to
        /// the system's roots; set, to this PEM bundle instead.
        ca: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaticEndpoint {
    pub address: SocketAddr,
    /// Default 1.
    pub weight: u32,
}

/// `dns = { name | srv, servers, min_ttl, max_ttl, timeout }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DnsDiscovery {
    #[serde(flatten)]
    pub lookup: DnsLookup,
    /// Name servers to ask, `ip:port`. Empty (the default): the system's,
    /// from `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// Default 1s: the fastest re-resolution, whatever the TTL says (a TTL
    /// of 0 would otherwise become a query loop).
    #[serde(serialize_with = "crate::duration::serialize")]
    pub min_ttl: Duration,
    /// Default 60s: the slowest re-resolution, so a long TTL cannot hide a
    /// change for long.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub max_ttl: Duration,
    /// Default 2s: per query attempt.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub timeout: Duration,
}

impl DnsDiscovery {
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(60);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// A lookup with the system's name servers and the default bounds.
    pub fn new(lookup: DnsLookup) -> Self {
        Self {
            lookup,
            servers: Vec::new(),
            min_ttl: Self::DEFAULT_MIN_TTL,
            max_ttl: Self::DEFAULT_MAX_TTL,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// What a DNS discovery looks up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsLookup {
    /// `name:port`, resolved to A/AAAA records.
    Name(String),
    /// An SRV name; ports and weights come from the records.
    Srv(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceStrategy {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    Maglev,
    P2cPeakEwma,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// A request header's value (e.g. `x-user-id`).
    Header(String),
    /// The downstream client's IP address.
    SourceIp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

/// `retry_budget = { ... }` on a cluster (the Finagle/Linkerd model).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryBudget {
    /// Default 0.2: retries may add at most 20% load over recent requests.
    pub ratio: f64,
    /// Default 10: retries per second always allowed, so that low-traffic
    /// clusters can still retry.
    pub min_per_second: u32,
    /// Default 10s: the window over which requests are counted.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub ttl: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// `limits = { ... }` on a cluster; Envoy's circuit-breaker defaults except
/// for `max_retries`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Default 1024: upstream connections across all endpoints.
    pub max_connections: usize,
    /// Default 1024: requests waiting for a connection.
    pub max_pending: usize,
    /// Default 1024: requests in flight to the cluster.
    pub max_requests: usize,
    /// Default 256: retries in flight to the cluster at once. The retry
    /// budget bounds the *rate* of retries; this bounds their concurrency.
    /// (Envoy's default of 3 starves retries under any real concurrency:
    /// a brief burst of failures then reaches clients unretried.)
    pub max_retries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending: 1024,
            max_requests: 1024,
            max_retries: 256,
        }
    }
}

/// `outlier = { ... }` on a cluster: passive ejection of failing endpoints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutlierPolicy {
    /// Default 5 (Envoy): consecutive failures that eject an endpoint.
    pub consecutive_failures: u32,
    /// Default `None`: when set, a failure ratio over `window` that ejects.
    pub failure_rate: Option<f64>,
    /// Default 10s: the window for `failure_rate`.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub window: Duration,
    /// Default 10s: first ejection; doubles with each ejection in a row.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub base_ejection: Duration,
    /// Default 5m: the longest ejection.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub max_ejection: Duration,
    /// Default 50: never eject more than this percentage of the cluster.
    pub max_ejection_percent: u32,
}

impl Default for OutlierPolicy {
    /// The defaults documented on each field; used for `outlier = {}`.
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: None,
            window: Duration::from_secs(10),
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// `health = { ... }` on a cluster: active health checks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    /// Default 2s, HAProxy's `inter`.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub interval: Duration,
    /// Default 500ms.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub timeout: Duration,
    /// Default 2 (HAProxy `rise`).
    pub healthy: u32,
    /// Default 3 (HAProxy `fall`).
    pub unhealthy: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// `http = "/healthz"`; `expected_statuses` default 200..=299.
    Http {
        path: String,
        expected_statuses: Vec<u16>,
    },
    /// `grpc = "service.name"` (empty string: the whole server).
    Grpc { service: String },
    /// `tcp = true`: a successful connect is healthy.
    Tcp,
}
