//! The library's gRPC client and server against bare tonic, in one run on
//! one machine, so that only the ratios mean something.
//!
//! - **Client**: the same tonic Echo server, called through a bare tonic
//!   `Channel` and through `switchyard::Client::grpc()` with registry
//!   discovery, P2C peak-EWMA, the default retry policy and tracing at the
//!   default sampling (exported over OTLP/HTTP to a local sink).
//! - **Server**: the same bare tonic client calling the Echo service served
//!   by tonic's own server and by `switchyard::Server`.
//!
//! Each round runs every variant for the same time with the same number of
//! concurrent callers, in alternating order; the table gives the median
//! over rounds of throughput and p99 latency, and each ratio to its
//! baseline.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use hdrhistogram::Histogram;
use switchyard::registry::{Registration, RegistrationOptions};
use switchyard_registry::{RegistryServer, store::embedded::EmbeddedStore};
use switchyard_test_support::grpc::{EchoClient, EchoRequest, EchoService};
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(about = "switchyard's gRPC client and server against bare tonic")]
struct Args {
    /// Seconds each variant runs per round.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds (each runs every variant once, in alternating order).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Run only this variant (0: bare tonic, 1: the library's client, 2:
    /// the library's server), e.g. under a profiler.
    #[arg(long)]
    only: Option<usize>,
    /// The library's client without its retry policy (to see its cost).
    #[arg(long)]
    no_retry: bool,
    /// The library's client without tracing (to see its cost).
    #[arg(long)]
    no_tracing: bool,
    /// The tracer's sampling ratio (default: the configuration's default).
    #[arg(long)]
    sample_ratio: Option<f64>,
}

/// One variant's result in one round.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rps: f64,
    p99_us: u64,
    errors: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;

    // The registry, and a sink for the spans the library exports.
    let store = Arc::new(EmbeddedStore::open(dir.path()).await?);
    let registry = RegistryServer::bind_with_store(loopback(), store, None).await?;
    let registry_url = format!("http://{}", registry.local_addr());
    tokio::spawn(registry.run(std::future::pending()));
    let sink = TcpListener::bind(loopback()).await?;
    let sink_addr = sink.local_addr()?;
    let spans = axum::Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
    tokio::spawn(async move { axum::serve(sink, spans).await });

    // The Echo service behind tonic's server (registered in the registry)
    // and behind switchyard::Server.
    let tonic_addr = tonic_server().await?;
    let _registration = Registration::register(RegistrationOptions::new(
        &registry_url,
        "echo",
        "echo-tonic",
        tonic_addr,
    ))
    .await?;
    let switchyard_addr = switchyard_server().await?;

    let config = switchyard::config::parse(
        &format!(
            "[tracing]\notlp_endpoint = \"http://{sink_addr}/v1/traces\"\nprotocol = \"http\"\n\n\
             [[clusters]]\nname = \"echo\"\nprotocol = \"http2\"\n\
             discovery = {{ registry = {{ url = \"{registry_url}\", service = \"echo\" }} }}\n"
        ),
        "bench.toml",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tracing = config.tracing.clone().expect("[tracing] is set");
    if let Some(ratio) = args.sample_ratio {
        tracing.sample_ratio = ratio;
    }
    let tracer = switchyard_telemetry::trace::Tracer::start(&tracing, None)?;
    let mut builder = switchyard::Client::builder(&config.clusters[0]);
    if !args.no_retry {
        builder = builder.retry(switchyard::config::RetryPolicy::default());
    }
    if !args.no_tracing {
        builder = builder.tracer(tracer);
    }
    let library = builder.build()?;
    anyhow::ensure!(
        library.discovered(Duration::from_secs(5)).await,
        "the registry did not answer"
    );

    let bare_to_tonic = EchoClient::new(channel(tonic_addr).await?);
    let library_to_tonic = EchoClient::new(library.grpc());
    let bare_to_switchyard = EchoClient::new(channel(switchyard_addr).await?);

    let run_for = Duration::from_secs(args.seconds);
    let mut results: [Vec<Sample>; 3] = Default::default();
    // Warm every connection and allocator path once.
    let warm = Duration::from_secs(1);
    for variant in 0..3 {
        if args.only.is_some_and(|only| only != variant) {
            continue;
        }
        let _ = match variant {
            0 => load(bare_to_tonic.clone(), args.concurrency, warm).await,
            1 => load(library_to_tonic.clone(), args.concurrency, warm).await,
            _ => load(bare_to_switchyard.clone(), args.concurrency, warm).await,
        };
    }
    for round in 0..args.rounds {
        let mut order = [0, 1, 2];
        if round % 2 == 1 {
            order.reverse();
        }
        for variant in order {
            if args.only.is_some_and(|only| only != variant) {
                continue;
            }
            let sample = match variant {
                0 => load(bare_to_tonic.clone(), args.concurrency, run_for).await,
                1 => load(library_to_tonic.clone(), args.concurrency, run_for).await,
                _ => load(bare_to_switchyard.clone(), args.concurrency, run_for).await,
            };
            eprintln!("round {round} variant {variant}: {sample:?}");
            results[variant].push(sample);
        }
    }
    if args.only.is_some() {
        return Ok(());
    }
    let [bare, lib, server] = results.map(|s| median(&s));
    println!("| variant | req/s (median) | p99 µs (median) | errors | ratio to bare tonic |");
    println!("|---|---|---|---|---|");
    println!(
        "| bare tonic Channel → tonic server | {:.0} | {} | {} | 1 |",
        bare.rps, bare.p99_us, bare.errors
    );
    println!(
        "| switchyard Client (registry, P2C, retries, tracing) → tonic server | {:.0} | {} | {} | throughput {:.3}, p99 {:.3} |",
        lib.rps,
        lib.p99_us,
        lib.errors,
        lib.rps / bare.rps,
        lib.p99_us as f64 / bare.p99_us as f64
    );
    println!(
        "| bare tonic Channel → switchyard::Server | {:.0} | {} | {} | throughput {:.3}, p99 {:.3} |",
        server.rps,
        server.p99_us,
        server.errors,
        server.rps / bare.rps,
        server.p99_us as f64 / bare.p99_us as f64
    );
    println!(
        "\n{} rounds × {} s per variant, {} concurrent callers, unary Echo calls",
        args.rounds, args.seconds, args.concurrency
    );
    Ok(())
}

/// `concurrency` callers sending unary calls back to back for `time`.
async fn load<T>(client: EchoClient<T>, concurrency: usize, time: Duration) -> Sample
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Future: Send,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let start = Instant::now();
    let end = start + time;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                let mut errors = 0u64;
                while Instant::now() < end {
                    let sent = Instant::now();
                    let req = EchoRequest {
                        message: "hello".to_owned(),
                        ..EchoRequest::default()
                    };
                    match client.unary(req).await {
                        Ok(_) => {
                            let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                            let _ = hist.record(us.max(1));
                        }
                        Err(_) => errors += 1,
                    }
                }
                (hist, errors)
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut errors = 0;
    for task in tasks {
        let (hist, e) = task.await.expect("load task");
        all.add(&hist).expect("same bounds");
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    Sample {
        rps: all.len() as f64 / secs,
        p99_us: all.value_at_quantile(0.99),
        errors,
    }
}

fn median(samples: &[Sample]) -> Sample {
    let mut rps: Vec<f64> = samples.iter().map(|s| s.rps).collect();
    let mut p99: Vec<u64> = samples.iter().map(|s| s.p99_us).collect();
    rps.sort_by(f64::total_cmp);
    p99.sort_unstable();
    Sample {
        rps: rps[rps.len() / 2],
        p99_us: p99[p99.len() / 2],
        errors: samples.iter().map(|s| s.errors).sum(),
    }
}

async fn tonic_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(loopback()).await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoService::new("tonic").into_server())
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}

async fn switchyard_server() -> anyhow::Result<SocketAddr> {
    let server = switchyard::Server::builder("echo-switchyard")
        .bind(loopback())
        .await?;
    let addr = server.local_addr();
    let routes = tonic::service::Routes::new(EchoService::new("switchyard").into_server());
    tokio::spawn(server.serve(routes, std::future::pending()));
    Ok(addr)
}

async fn channel(addr: SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?,
    )
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
