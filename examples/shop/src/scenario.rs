//! The whole application in one process under a bounded load, with a
//! crash, a drain and a scale-out on the way.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::BodyExt;
use switchyard::{Body, server::DrainTimes};
use switchyard_registry::{RegistryServer, store::embedded::EmbeddedStore};
use tokio::{
    sync::{Semaphore, oneshot},
    time::Instant,
};

use crate::{
    gateway::{BUDGET, ProductView},
    instance::{Instance, Role, Settings},
};

/// How the scenario runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How long the load runs; the events happen at fixed shares of it.
    pub duration: Duration,
    /// Requests per second sent to the gateways.
    pub rate: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(20),
            rate: 200,
        }
    }
}

/// Requests at most in flight from the load generator: the load is
/// bounded in concurrency as well as in count and time.
const MAX_IN_FLIGHT: usize = 256;

/// What the scenario saw.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub requests: u64,
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// Requests each instance served, by id.
    pub served: BTreeMap<String, u64>,
    /// When each instance last served a request (from the start of the
    /// load).
    pub last_served: BTreeMap<String, Duration>,
    /// The least and most of the gateway's deadline left at pricing, in ms.
    pub pricing_deadline_ms: Option<(i64, i64)>,
    /// What happened, when (from the start of the load).
    pub events: Vec<(Duration, String)>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, event) in &self.events {
            writeln!(f, "{:>6.2}s  {event}", at.as_secs_f64())?;
        }
        writeln!(f, "served:")?;
        for (id, n) in &self.served {
            let last = self.last_served.get(id).map_or(0.0, Duration::as_secs_f64);
            writeln!(f, "  {id:<10} {n:>6}  (last at {last:.2}s)")?;
        }
        if let Some((least, most)) = self.pricing_deadline_ms {
            writeln!(
                f,
                "deadline: the gateway set {} ms; pricing saw {least}..{most} ms of it left",
                BUDGET.as_millis()
            )?;
        }
        for (reason, n) in &self.failures {
            writeln!(f, "failed: {n} × {reason}")?;
        }
        write!(f, "requests={} failed={}", self.requests, self.failed)
    }
}

/// Starts the registry and the instances (3 pricing, 3 catalog, 2
/// gateways), sends `options.rate` requests per second for
/// `options.duration`, and on the way: kills `catalog-1` at 25% of it,
/// drains `pricing-1` at 45%, starts `gateway-3` at 60%. Then it drains
/// everything and returns what it saw.
pub async fn run(options: Options) -> anyhow::Result<Summary> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(dir.path()).await?);
    let registry = RegistryServer::bind_with_store(loopback(), store, None).await?;
    let url = format!("http://{}", registry.local_addr());
    let (stop_registry, registry_stopped) = oneshot::channel::<()>();
    let registry = tokio::spawn(registry.run(async {
        let _ = registry_stopped.await;
    }));

    // A crashed instance leaves the registry within 3 s; in the meantime
    // connections to it are refused and retried elsewhere.
    let settings = Settings {
        ttl: Duration::from_secs(3),
        drain: DrainTimes {
            notice: Duration::from_secs(2),
            quiet: Duration::from_millis(300),
            grace: Duration::from_secs(5),
        },
    };
    let mut instances = Vec::new();
    // Each hop starts after the one it calls, so that it finds it.
    for (role, n) in [(Role::Pricing, 3), (Role::Catalog, 3), (Role::Gateway, 2)] {
        for i in 1..=n {
            let id = format!("{role}-{i}");
            instances.push(Instance::start(role, &id, &url, loopback(), settings).await?);
        }
    }
    let load_client = crate::client(&url, "gateway").await?;

    let summary = Arc::new(Mutex::new(Summary::default()));
    let start = Instant::now();
    let event = |what: String| {
        lock(&summary).events.push((start.elapsed(), what));
    };
    event(format!(
        "load: {} req/s for {:?} through {} gateways",
        options.rate,
        options.duration,
        instances.iter().filter(|i| i.role == Role::Gateway).count()
    ));
    let load = load(load_client, options, summary.clone(), start);
    let events = async {
        let at = |share: f64| start + options.duration.mul_f64(share);
        tokio::time::sleep_until(at(0.25)).await;
        let victim = take(&mut instances, "catalog-1");
        victim.kill();
        event("killed catalog-1 (no drain, still registered until its TTL)".to_owned());

        tokio::time::sleep_until(at(0.45)).await;
        let drained = take(&mut instances, "pricing-1");
        event("draining pricing-1".to_owned());
        let draining = tokio::spawn(drained.drain());

        tokio::time::sleep_until(at(0.60)).await;
        let added = Instance::start(Role::Gateway, "gateway-3", &url, loopback(), settings).await;
        match added {
            Ok(added) => {
                event("scaled out: gateway-3".to_owned());
                instances.push(added);
            }
            Err(e) => event(format!("could not start gateway-3: {e}")),
        }
        match draining.await {
            Ok(Ok(())) => event("pricing-1 drained and deregistered".to_owned()),
            Ok(Err(e)) => event(format!("pricing-1 drain failed: {e}")),
            Err(e) => event(format!("pricing-1 drain panicked: {e}")),
        }
    };
    let ((), ()) = tokio::join!(load, events);
    event("load over; draining every instance".to_owned());

    // Callers first: a gateway drains before the catalogs it calls.
    instances.sort_by_key(|i| i.role);
    for instance in instances {
        let id = instance.id.clone();
        if let Err(e) = instance.drain().await {
            event(format!("{id}: drain failed: {e}"));
        }
    }
    let _ = stop_registry.send(());
    let _ = registry.await;
    event("done".to_owned());
    let summary = lock(&summary).clone();
    Ok(summary)
}

/// Sends the load and records what comes back.
async fn load(
    client: switchyard::Client,
    options: Options,
    summary: Arc<Mutex<Summary>>,
    start: Instant,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let period = Duration::from_secs(1) / options.rate.max(1);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + options.duration;
    let mut n: u64 = 0;
    while Instant::now() < end {
        ticks.tick().await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (client, summary) = (client.clone(), summary.clone());
        let sku = format!("sku-{}", n % 100);
        n += 1;
        tokio::spawn(async move {
            let outcome = one(&client, &sku).await;
            record(&summary, outcome, start.elapsed());
            drop(slot);
        });
    }
    // Every request sent is answered (or failed) before the load is over.
    let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
}

async fn one(client: &switchyard::Client, sku: &str) -> Result<ProductView, String> {
    let req = http::Request::get(format!("/products/{sku}"))
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = client.send(req).await.map_err(|e| e.kind().to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("invalid answer: {e}"))
}

fn record(summary: &Mutex<Summary>, outcome: Result<ProductView, String>, at: Duration) {
    let mut s = lock(summary);
    s.requests += 1;
    match outcome {
        Ok(view) => {
            for id in [view.gateway, view.catalog, view.pricing] {
                *s.served.entry(id.clone()).or_default() += 1;
                s.last_served.insert(id, at);
            }
            let d = view.pricing_deadline_ms;
            s.pricing_deadline_ms = Some(match s.pricing_deadline_ms {
                None => (d, d),
                Some((least, most)) => (least.min(d), most.max(d)),
            });
        }
        Err(reason) => {
            s.failed += 1;
            *s.failures.entry(reason).or_default() += 1;
        }
    }
}

fn take(instances: &mut Vec<Instance>, id: &str) -> Instance {
    let at = instances
        .iter()
        .position(|i| i.id == id)
        .unwrap_or_else(|| panic!("{id} is running"));
    instances.remove(at)
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
