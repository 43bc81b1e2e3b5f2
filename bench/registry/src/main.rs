//! Registry benchmarks (run them with `bench/registry/run.sh`).
//!
//! - `propagation --store embedded|etcd [--samples N]`: from a registration
//!   (the `PUT` leaving the client) to the proxy routing to that instance.
//!   One service has one instance whose address flips between two backends
//!   with every sample; a persistent client sends requests through a real
//!   proxy (registry discovery, blocking queries) until the answer comes
//!   from the new backend. Registry, proxy and backends run in this process.
//! - `scale --bin PATH [--instances N] [--services S] [--watchers W]
//!   [--updates U] [--interval-ms I] [--delta]`: the real `switchyard registry` process (embedded store)
//!   holding N instances over S services, W watchers in blocking queries
//!   spread evenly over the services, then U updates; reports the
//!   registry's resident memory and CPU time per update (from /proc), and
//!   how long watchers took to see an update. `--delta` makes the watchers
//!   ask for delta answers (`delta=true`), as the proxy's registry source
//!   does; without it every answer is the whole list.
//!
//! Both print one summary line per figure; BENCHMARKS.md records them.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Method;
use switchyard_discovery::http::HttpClient;
use switchyard_registry::{
    RegistryServer,
    store::{self, StoreSpec},
};
use switchyard_test_support::{Backend, BackendConfig, ChildGuard, Etcd, client, free_addr};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("propagation") => rt.block_on(propagation(
            &arg(&args, "--store", "embedded"),
            arg(&args, "--samples", "500").parse()?,
        )),
        Some("scale") => rt.block_on(scale(
            Path::new(&arg(&args, "--bin", "target/release/switchyard")),
            arg(&args, "--instances", "10000").parse()?,
            arg(&args, "--services", "100").parse()?,
            arg(&args, "--watchers", "1000").parse()?,
            arg(&args, "--updates", "500").parse()?,
            Duration::from_millis(arg(&args, "--interval-ms", "20").parse()?),
            args.iter().any(|a| a == "--delta"),
        )),
        _ => bail!(
            "usage: switchyard-bench-registry propagation|scale [options] (see the source header)"
        ),
    }
}

fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    )
}

async fn put(http: &mut HttpClient, path: &str, body: String) -> anyhow::Result<()> {
    let r = http
        .send(
            Method::PUT,
            path,
            Some(body.into_bytes()),
            Duration::from_secs(60),
        )
        .await?;
    if !r.status.is_success() {
        bail!(
            "PUT {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(())
}

async fn propagation(store: &str, samples: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let _etcd;
    let spec = match store {
        "embedded" => StoreSpec::Embedded(dir.path().to_path_buf()),
        "etcd" => {
            let etcd = Etcd::start().await;
            let spec = StoreSpec::Etcd(etcd.client_urls());
            _etcd = etcd;
            spec
        }
        other => bail!("unknown store {other}"),
    };
    let server =
        RegistryServer::bind_with_store("127.0.0.1:0".parse()?, store::open(&spec).await?, None)
            .await?;
    let registry = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));

    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    let mut http = HttpClient::new(&format!("http://{registry}"))?;
    let path = "/v1/services/api/instances/cur";
    put(&mut http, path, format!(r#"{{"address":"{}"}}"#, a.addr())).await?;

    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n\n  [[listeners.routes]]\n  cluster = \"api\"\n\n\
         [[clusters]]\nname = \"api\"\ndiscovery = {{ registry = {{ url = \"http://{registry}\", service = \"api\" }} }}\n"
    );
    let config =
        switchyard_config::parse(&toml, "bench.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
    let proxy = switchyard_proxy::Proxy::bind(config).await?;
    let listen = proxy.listener_addr("web").context("listener")?;
    tokio::spawn(proxy.run(std::future::pending()));

    let mut conn = client::http1_connect::<http_body_util_full::Full>(listen)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let backends = [&a, &b];
    for i in 0..=samples {
        let target = backends[(i + 1) % 2];
        let t0 = Instant::now();
        put(
            &mut http,
            path,
            format!(r#"{{"address":"{}"}}"#, target.addr()),
        )
        .await?;
        loop {
            conn.ready().await?;
            let resp = conn
                .send_request(client::request(Method::GET, "/", Bytes::new()))
                .await?;
            let who = resp.headers().get("x-backend").cloned();
            // Drain the body so the connection can be reused.
            http_body_util_full::drain(resp.into_body()).await;
            if who.as_ref().and_then(|v| v.to_str().ok()) == Some(target.name()) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("sample {i}: not routed to {} within 10s", target.name());
            }
        }
        // The first sample warms connections and pools; not counted.
        if i > 0 {
            hist.record(t0.elapsed().as_micros().max(1) as u64)?;
        }
    }
    println!("propagation store={store}: {}", percentiles(&hist));
    Ok(())
}

/// Tiny helpers over the test-support client's body type.
mod http_body_util_full {
    pub type Full = http_body_util::Full<bytes::Bytes>;

    pub async fn drain(body: hyper::body::Incoming) {
        use http_body_util::BodyExt;
        let _ = body.collect().await;
    }
}

/// Resident memory (KiB) and CPU time (clock ticks) of a process.
fn proc_stats(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) .
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 here.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok((rss, ticks))
}

fn ticks_per_second() -> f64 {
    // Linux's USER_HZ is 100 on every common architecture.
    100.0
}

async fn scale(
    bin: &Path,
    instances: usize,
    services: usize,
    watchers: usize,
    updates: usize,
    interval: Duration,
    delta: bool,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let addr: SocketAddr = free_addr();
    let child = Command::new(bin)
        .args([
            "registry",
            "--listen",
            &addr.to_string(),
            "--log-level",
            "warn",
        ])
        .arg(format!("--store=embedded:{}", dir.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let guard = ChildGuard::from_std("registry", child);
    let pid = guard.pid().context("pid")?;
    let url = format!("http://{addr}");
    let started = Instant::now();
    loop {
        if HttpClient::new(&url)?
            .send(Method::GET, "/v1/services", None, Duration::from_secs(1))
            .await
            .is_ok()
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("the registry did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (rss0, _) = proc_stats(pid)?;

    // Register every instance, 64 clients at a time.
    let t = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (next, url) = (next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut http = HttpClient::new(&url)?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= instances {
                    return anyhow::Ok(());
                }
                let body = format!(
                    r#"{{"address":"10.{}.{}.{}:8080","zone":"z{}","metadata":{{"version":"1.0.{i}"}}}}"#,
                    i / 65536 % 256, i / 256 % 256, i % 256, i % 3
                );
                put(&mut http, &format!("/v1/services/svc{}/instances/i{i}", i % services), body).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let reg_secs = t.elapsed().as_secs_f64();
    let (rss1, _) = proc_stats(pid)?;

    // Watchers: each follows one service with blocking queries and records
    // how long after the update's PUT it saw the change.
    let update_started = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let lat = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let armed = Arc::new(AtomicU64::new(0));
    for w in 0..watchers {
        let (url, armed, lat, update_started) = (
            url.clone(),
            armed.clone(),
            lat.clone(),
            update_started.clone(),
        );
        tokio::spawn(async move {
            let mut http = HttpClient::new(&url).expect("url");
            let path = format!("/v1/services/svc{}", w % services);
            let mut index = 0u64;
            loop {
                let q = if index == 0 {
                    path.clone()
                } else {
                    let delta = if delta { "&delta=true" } else { "" };
                    format!("{path}?index={index}&wait=60s{delta}")
                };
                let Ok(r) = http
                    .send(Method::GET, &q, None, Duration::from_secs(90))
                    .await
                else {
                    return;
                };
                let v: serde_json_lite::Index = serde_json_lite::index(&r.body);
                if index == 0 {
                    armed.fetch_add(1, Ordering::Relaxed);
                } else if v.0 != index {
                    // Updates are spaced well apart, so a change seen now
                    // is the newest update's.
                    if let Some(t0) = update_started.lock().unwrap().last() {
                        lat.lock()
                            .unwrap()
                            .record(t0.elapsed().as_micros().max(1) as u64)
                            .ok();
                    }
                }
                index = v.0;
            }
        });
    }
    while (armed.load(Ordering::Relaxed) as usize) < watchers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the watchers' second (blocking) queries arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss2, cpu2) = proc_stats(pid)?;

    // Updates: one instance of a service changes weight, one every
    // `interval`, so each update's wake-ups finish before the next.
    let mut http = HttpClient::new(&url)?;
    for u in 0..updates {
        let i = (u * 7919) % instances;
        update_started.lock().unwrap().push(Instant::now());
        let body = format!(
            r#"{{"address":"10.{}.{}.{}:8080","weight":{}}}"#,
            i / 65536 % 256,
            i / 256 % 256,
            i % 256,
            2 + u % 5
        );
        put(
            &mut http,
            &format!("/v1/services/svc{}/instances/i{i}", i % services),
            body,
        )
        .await?;
        tokio::time::sleep(interval).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss3, cpu3) = proc_stats(pid)?;
    let cpu_per_update_ms = (cpu3 - cpu2) as f64 / ticks_per_second() * 1000.0 / updates as f64;
    let per_service = watchers / services.max(1);
    println!(
        "scale: {instances} instances in {services} services, {watchers} watchers ({per_service} per service, {}), {updates} updates every {interval:?}",
        if delta {
            "delta answers"
        } else {
            "whole lists"
        }
    );
    println!(
        "  registration: {:.0}/s ({instances} in {reg_secs:.1}s, 64 concurrent clients, fsync per commit group)",
        instances as f64 / reg_secs
    );
    println!(
        "  RSS: empty {:.1} MiB, with {instances} instances {:.1} MiB, with {watchers} watchers {:.1} MiB, after updates {:.1} MiB",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        rss2 as f64 / 1024.0,
        rss3 as f64 / 1024.0
    );
    println!(
        "  registry CPU per update (incl. waking and answering {per_service} watchers): {cpu_per_update_ms:.2} ms"
    );
    println!(
        "  update -> watcher answer: {}",
        percentiles(&lat.lock().unwrap())
    );
    drop(guard);
    Ok(())
}

/// Reads the `index` of an answer without a full JSON parse.
mod serde_json_lite {
    pub struct Index(pub u64);

    pub fn index(body: &[u8]) -> Index {
        let s = std::str::from_utf8(body).unwrap_or_default();
        let n = s
            .find("\"index\":")
            .map(|i| &s[i + 8..])
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<String>()
            })
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        Index(n)
    }
}
