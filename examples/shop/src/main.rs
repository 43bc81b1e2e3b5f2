//! `shop`: the example distributed application. `shop run` runs all of it
//! in one process; `shop gateway|catalog|pricing` runs one instance.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use shop::{
    instance::{Instance, Role, Settings},
    scenario::{Options, run},
};

#[derive(Parser, Debug)]
#[command(
    name = "shop",
    about = "An example distributed application on the Switchyard library"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The registry, 3 pricing, 3 catalog and 2 gateway instances and a
    /// bounded load: kills a catalog, drains a pricing instance, scales the
    /// gateway out; exits 0 iff no request failed.
    Run {
        /// How long the load runs (e.g. 20s).
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// Requests per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
    /// One gateway instance (HTTP: GET /products/{sku}).
    Gateway(Alone),
    /// One catalog instance (gRPC shop.v1.Catalog).
    Catalog(Alone),
    /// One pricing instance (gRPC shop.v1.Pricing).
    Pricing(Alone),
}

#[derive(clap::Args, Debug)]
struct Alone {
    /// The registry's base URL, e.g. http://127.0.0.1:7400.
    #[arg(long)]
    registry: String,
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// The instance id (default: role-port).
    #[arg(long)]
    id: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    switchyard::config::parse_duration(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { duration, rate } => run(Options { duration, rate }).await.map(|summary| {
            println!("{summary}");
            summary.failed == 0
        }),
        Command::Gateway(a) => alone(Role::Gateway, a).await.map(|()| true),
        Command::Catalog(a) => alone(Role::Catalog, a).await.map(|()| true),
        Command::Pricing(a) => alone(Role::Pricing, a).await.map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shop: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs one instance until SIGTERM or Ctrl-C, then drains it.
async fn alone(role: Role, a: Alone) -> anyhow::Result<()> {
    let id =
        a.id.unwrap_or_else(|| format!("{role}-{}", a.listen.port()));
    let instance = Instance::start(role, &id, &a.registry, a.listen, Settings::default()).await?;
    println!("{id} serving on {} (registered as {role})", instance.addr);
    switchyard::server::shutdown_signal().await;
    println!("{id} draining");
    instance.drain().await?;
    println!("{id} drained");
    Ok(())
}
