//! The load generator: a bounded, open-loop mix of HTTP/1.1, HTTP/2 (h2c)
//! and gRPC requests sent through the proxy.
//!
//! Open loop means requests are sent on a schedule (`rate` per second from
//! the start), not when earlier ones finish, so a slow system sees the load a
//! real client population would keep sending instead of a politely slowing
//! benchmark. The number in flight is still capped: past the cap a request is
//! counted as *shed* rather than queued, so the demo's memory stays bounded
//! and the shortfall is visible in the report.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tonic::transport::{Channel, Endpoint};

use crate::DemoError;
use crate::pb::GetItemRequest;
use crate::pb::inventory_client::InventoryClient;
use crate::resilience::ProxyView;
use crate::stats::{Recorder, RequestKind, Second};

/// How the generator behaves.
#[derive(Debug, Clone)]
pub(crate) struct LoadConfig {
    /// Requests per second across all kinds.
    pub rate: u32,
    /// The generator stops by itself after this long, whoever forgets to
    /// stop it.
    pub max_duration: Duration,
    /// Requests in flight at most. 64 is far above what a healthy system
    /// needs at demo rates (400 req/s × a few ms ≈ 2 in flight) and low
    /// enough to keep a hung system from piling up work.
    pub concurrency: usize,
    /// Each request fails after this long; it bounds how long stopping the
    /// load can take.
    pub request_timeout: Duration,
    /// Print a progress line per second.
    pub live: bool,
}

impl LoadConfig {
    pub(crate) fn new(rate: u32, max_duration: Duration, live: bool) -> LoadConfig {
        LoadConfig {
            rate,
            max_duration,
            concurrency: 64,
            request_timeout: Duration::from_secs(5),
            live,
        }
    }
}

/// The pacing tick. Each tick sends every request due since the last one, so
/// the rate is exact on average whatever the timer's resolution.
const TICK: Duration = Duration::from_millis(5);

/// A running load generator.
#[derive(Debug)]
pub(crate) struct LoadRun {
    stop: watch::Sender<bool>,
    generator: JoinHandle<Duration>,
    /// Stopped apart from the generator, after it, so that the last partial
    /// second includes the requests that were still in flight.
    stop_ticker: watch::Sender<bool>,
    ticker: JoinHandle<()>,
}

impl LoadRun {
    /// Starts sending to the proxy's HTTP listener at `proxy`. Live lines
    /// label time since `clock` (the scenario's start), so they line up with
    /// the scenario's events, and show the decisions `view` counts.
    pub(crate) fn start(
        config: LoadConfig,
        proxy: SocketAddr,
        recorder: Arc<Recorder>,
        view: ProxyView,
        clock: Instant,
    ) -> Result<LoadRun, DemoError> {
        let clients = Clients::new(proxy)?;
        let (stop, stopped) = watch::channel(false);
        let (stop_ticker, ticker_stopped) = watch::channel(false);
        let ticker = tokio::spawn(ticker(
            recorder.clone(),
            view,
            clock,
            config.live,
            ticker_stopped,
        ));
        let generator = tokio::spawn(generate(config, clients, recorder, Instant::now(), stopped));
        Ok(LoadRun {
            stop,
            generator,
            stop_ticker,
            ticker,
        })
    }

    /// Stops sending, waits for the requests in flight and returns how long
    /// load was sent.
    pub(crate) async fn stop(self) -> Duration {
        self.stop.send_replace(true);
        let sent_for = match self.generator.await {
            Ok(d) => d,
            // Only a panic in this file could get here; report no duration
            // rather than take the whole demo down.
            Err(err) => {
                tracing::warn!(%err, "load generator ended abnormally");
                Duration::ZERO
            }
        };
        self.stop_ticker.send_replace(true);
        let _ = self.ticker.await;
        sent_for
    }
}

/// One client per protocol, each pooling its connections to the proxy.
#[derive(Debug, Clone)]
struct Clients {
    base: String,
    http1: Client<HttpConnector, Empty<Bytes>>,
    http2: Client<HttpConnector, Empty<Bytes>>,
    grpc: InventoryClient<Channel>,
}

impl Clients {
    fn new(proxy: SocketAddr) -> Result<Clients, DemoError> {
        let base = format!("http://{proxy}");
        let mut connector = HttpConnector::new();
        // Small requests: Nagle's algorithm would add delayed-ACK stalls.
        connector.set_nodelay(true);
        let http1 = Client::builder(TokioExecutor::new()).build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        // Lazy: the proxy is already bound, and a connect failure then shows
        // up as failed requests in the report rather than aborting the demo.
        let channel = Endpoint::from_shared(base.clone())
            .map_err(DemoError::Client)?
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Clients {
            base,
            http1,
            http2,
            grpc: InventoryClient::new(channel),
        })
    }

    async fn send(&self, kind: RequestKind, seq: u64) -> Result<(), String> {
        match kind {
            RequestKind::Http1 => self.get(&self.http1, seq).await,
            RequestKind::Http2 => self.get(&self.http2, seq).await,
            RequestKind::Grpc => {
                let request = GetItemRequest {
                    sku: format!("sku-{}", seq % 1000),
                };
                match self.grpc.clone().get_item(request).await {
                    Ok(_) => Ok(()),
                    Err(status) => Err(format!(
                        "status {}: {}",
                        grpc_code_name(status.code()),
                        status.message()
                    )),
                }
            }
        }
    }

    async fn get(
        &self,
        client: &Client<HttpConnector, Empty<Bytes>>,
        seq: u64,
    ) -> Result<(), String> {
        // A few resource families, so access logs and metrics look varied.
        let path = match seq % 3 {
            0 => format!("/api/items/{}", seq % 1000),
            1 => format!("/api/users/{}", seq % 100),
            _ => "/api/health-summary".to_owned(),
        };
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| format!("bad uri: {e}"))?;
        let request = Request::get(uri)
            .body(Empty::new())
            .map_err(|e| format!("bad request: {e}"))?;
        let response = client.request(request).await.map_err(|e| chain(&e))?;
        let status = response.status();
        // Read the whole body: latency is until the client has the answer.
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading body: {}", chain(&e)))?
            .to_bytes();
        if status.is_success() {
            Ok(())
        } else {
            // The body tells who answered: a backend's injected failure or
            // the proxy's own error (no endpoint, overload, timeout...).
            let text = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
            Err(format!("status {status}: {}", text.trim()))
        }
    }
}

/// The request mix, by sequence number: 40% HTTP/1.1, 30% HTTP/2, 30% gRPC.
/// Deterministic so that every kind gets traffic even in a very short run.
fn kind_of(seq: u64) -> RequestKind {
    match seq % 10 {
        0..=3 => RequestKind::Http1,
        4..=6 => RequestKind::Http2,
        _ => RequestKind::Grpc,
    }
}

/// The mix, for the banner.
pub(crate) const MIX: &str = "HTTP/1.1 40%, HTTP/2 30%, gRPC 30%";

/// Sends on schedule until stopped or `max_duration`, then waits for the
/// requests in flight. Returns how long it sent for.
async fn generate(
    config: LoadConfig,
    clients: Clients,
    recorder: Arc<Recorder>,
    started: Instant,
    mut stopped: watch::Receiver<bool>,
) -> Duration {
    let permits = Arc::new(Semaphore::new(config.concurrency));
    let mut in_flight = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    // Catch-up happens through the `due` computation, not through bursts of
    // ticks.
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let rate = f64::from(config.rate);
    let mut sent: u64 = 0;
    loop {
        let scheduled = tokio::select! {
            biased;
            // A dropped sender also means stop.
            _ = stopped.wait_for(|stop| *stop) => break,
            scheduled = tick.tick() => scheduled,
        };
        // How late this task woke: the host's scheduling delay, which every
        // request of the demo (backend, proxy, client) suffers too.
        recorder.lag(scheduled.elapsed());
        let elapsed = started.elapsed().min(config.max_duration);
        // Truncation is intended: a request is due once its whole slot began.
        let due = (elapsed.as_secs_f64() * rate) as u64;
        while sent < due {
            let kind = kind_of(sent);
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let clients = clients.clone();
                    let recorder = recorder.clone();
                    let timeout = config.request_timeout;
                    let seq = sent;
                    in_flight.spawn(async move {
                        let begin = Instant::now();
                        let outcome =
                            match tokio::time::timeout(timeout, clients.send(kind, seq)).await {
                                Ok(outcome) => outcome,
                                Err(_) => {
                                    Err(format!("no answer within {:.1}s", timeout.as_secs_f64()))
                                }
                            };
                        recorder.record(kind, begin.elapsed(), outcome);
                        drop(permit);
                    });
                }
                Err(_) => recorder.shed(kind),
            }
            sent += 1;
        }
        // Reap finished requests so the set stays as small as what is in flight.
        while in_flight.try_join_next().is_some() {}
        if elapsed >= config.max_duration {
            break;
        }
    }
    let sent_for = started.elapsed().min(config.max_duration);
    // Every request has its own timeout, so this ends.
    while in_flight.join_next().await.is_some() {}
    sent_for
}

/// Closes a one-second window every second and prints it when `live`; on
/// stop, closes the last partial window if it is long enough to mean
/// something.
async fn ticker(
    recorder: Arc<Recorder>,
    view: ProxyView,
    clock: Instant,
    live: bool,
    mut stopped: watch::Receiver<bool>,
) {
    let report = |second: Second| {
        if live {
            crate::say(&second.line());
        }
    };
    let mut decided = view.totals();
    // The decisions since the previous window.
    let mut decisions = || {
        let now = view.totals();
        let delta = now.since(&decided);
        decided = now;
        delta
    };
    let mut last = Instant::now();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(last) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        tokio::select! {
            biased;
            _ = stopped.wait_for(|stop| *stop) => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        report(recorder.tick(now - clock, now - last, decisions()));
        last = now;
    }
    let now = Instant::now();
    if now - last >= Duration::from_millis(300) {
        report(recorder.tick(now - clock, now - last, decisions()));
    }
}

/// A gRPC status code as the gRPC specification spells it (`UNAVAILABLE`),
/// the name the scenario's lines and gRPC tooling use, rather than tonic's
/// Rust variant name.
fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An error with its sources: hyper's top-level messages ("client error
/// (Connect)") need their causes to be useful.
fn chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
