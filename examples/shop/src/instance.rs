//! One instance of a role, served by `switchyard::Server` and registered
//! in the registry.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use switchyard::{
    Server,
    server::{DrainTimes, ServeError},
};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{catalog::CatalogService, gateway, pricing::PricingService};

/// What an instance does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Gateway,
    Catalog,
    Pricing,
}

impl Role {
    /// Its service name in the registry.
    pub fn service(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Catalog => "catalog",
            Self::Pricing => "pricing",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.service())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gateway" => Ok(Self::Gateway),
            "catalog" => Ok(Self::Catalog),
            "pricing" => Ok(Self::Pricing),
            other => Err(format!(
                "unknown role {other:?}: gateway, catalog or pricing"
            )),
        }
    }
}

/// How an instance registers and drains.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The registration's TTL: how long a crashed instance stays listed.
    pub ttl: Duration,
    pub drain: DrainTimes,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            drain: DrainTimes::default(),
        }
    }
}

/// A running instance.
#[derive(Debug)]
pub struct Instance {
    pub role: Role,
    pub id: String,
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Instance {
    /// Starts an instance of `role` named `id` on `listen`: its client for
    /// the next hop has found that hop's instances, and it is registered,
    /// when this returns.
    pub async fn start(
        role: Role,
        id: &str,
        registry: &str,
        listen: SocketAddr,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let ttl = settings.ttl;
        let builder = Server::builder(role.service())
            .registry(registry)
            .instance_id(id)
            .registration(move |opts| opts.ttl = ttl)
            .drain(settings.drain);
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let (addr, task) = match role {
            Role::Pricing => {
                let routes = tonic::service::Routes::new(PricingService::new(id).into_server());
                let builder = builder.health_service("shop.v1.Pricing");
                spawn(builder, listen, routes, stopped).await?
            }
            Role::Catalog => {
                let pricing = crate::client(registry, "pricing").await?;
                let routes =
                    tonic::service::Routes::new(CatalogService::new(id, pricing).into_server());
                let builder = builder.health_service("shop.v1.Catalog");
                spawn(builder, listen, routes, stopped).await?
            }
            Role::Gateway => {
                let catalog = crate::client(registry, "catalog").await?;
                spawn(builder, listen, gateway::router(id, catalog), stopped).await?
            }
        };
        Ok(Self {
            role,
            id: id.to_owned(),
            addr,
            stop,
            task,
        })
    }

    /// Drains (registry, health, GOAWAY, grace, deregister) and waits until
    /// it is done.
    pub async fn drain(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }

    /// Ends the instance as a crash would: connections cut, no drain, no
    /// deregistration (the registry drops it when its TTL runs out).
    pub fn kill(self) {
        self.task.abort();
    }
}

async fn spawn<S, B>(
    builder: switchyard::server::ServerBuilder,
    listen: SocketAddr,
    service: S,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, JoinHandle<Result<(), ServeError>>)>
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut server = builder.bind(listen).await?;
    server.register().await?;
    let addr = server.local_addr();
    Ok((addr, tokio::spawn(server.serve(service, stopped))))
}
