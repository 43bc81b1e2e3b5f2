//! The example application end to end: the scenario in one process, the
//! `shop run` command, and one role run alone as its own process.

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use shop::{
    gateway::BUDGET,
    pb::{GetPriceRequest, pricing_client::PricingClient},
    scenario::{Options, run},
};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_draining_under_load_loses_no_request() {
    let options = Options {
        duration: Duration::from_secs(8),
        rate: 150,
    };
    let summary = run(options).await.unwrap();
    println!("{summary}");
    assert_eq!(summary.failed, 0, "{summary}");
    // The load ran at its rate (intervals delay, never burst).
    assert!(summary.requests >= 1000, "{summary}");
    let served = |id: &str| summary.served.get(id).copied().unwrap_or(0);
    let last = |id: &str| summary.last_served[id];
    // The killed catalog served until the kill (at 2 s), not after: what
    // it had in flight was retried elsewhere.
    assert!(served("catalog-1") > 0, "{summary}");
    assert!(last("catalog-1") < Duration::from_millis(3000), "{summary}");
    // The drained pricing instance got nothing new once its drain was
    // done (it started at 3.6 s and takes at most notice + grace).
    assert!(served("pricing-1") > 0, "{summary}");
    assert!(
        last("pricing-1") < Duration::from_millis(3600 + 2000),
        "{summary}"
    );
    // The added gateway took traffic, and every instance left served.
    for id in [
        "gateway-1",
        "gateway-2",
        "gateway-3",
        "catalog-2",
        "catalog-3",
        "pricing-2",
        "pricing-3",
    ] {
        assert!(served(id) > 0, "{id} served nothing: {summary}");
        assert!(
            last(id) > Duration::from_secs(6),
            "{id} stopped early: {summary}"
        );
    }
    // The gateway's deadline reached pricing, two hops on, shortened by
    // the time spent on the way.
    let (least, most) = summary.pricing_deadline_ms.unwrap();
    let budget = i64::try_from(BUDGET.as_millis()).unwrap();
    assert!(least > 0 && most < budget, "{least}..{most} of {budget} ms");
    for event in [
        "killed catalog-1",
        "pricing-1 drained and deregistered",
        "scaled out: gateway-3",
    ] {
        assert!(
            summary.events.iter().any(|(_, e)| e.starts_with(event)),
            "{event}: {summary}"
        );
    }
}

#[tokio::test]
async fn shop_run_exits_zero_and_reports_the_count() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["run", "--duration", "5s", "--rate", "100"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap();
    let (requests, failed) = last
        .strip_prefix("requests=")
        .and_then(|rest| rest.split_once(" failed="))
        .unwrap_or_else(|| panic!("last line {last:?}"));
    assert!(requests.parse::<u64>().unwrap() >= 400, "{stdout}");
    assert_eq!(failed, "0", "{stdout}");
}

/// A registry (embedded store) serving on an ephemeral loopback port until
/// the returned sender is dropped; its base URL.
async fn registry(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    use switchyard_registry::{RegistryServer, store::embedded::EmbeddedStore};
    let store = Arc::new(EmbeddedStore::open(dir).await.unwrap());
    let server = RegistryServer::bind_with_store("127.0.0.1:0".parse().unwrap(), store, None)
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_runs_alone_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _registry) = registry(dir.path()).await;
    let listen = switchyard_test_support::free_addr();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args([
            "pricing",
            "--registry",
            &url,
            "--listen",
            &listen.to_string(),
            "--id",
            "pricing-a",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.starts_with("pricing-a serving on"), "{first}");

    // Found through the registry by a library client, no proxy between.
    let pricing = shop::client(&url, "pricing").await.unwrap();
    let price = PricingClient::new(pricing.grpc())
        .get_price(GetPriceRequest {
            sku: "sku-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(price.served_by, "pricing-a");
    assert_eq!(price.cents, shop::pricing::price_of("sku-1"));

    // SIGTERM: drains, deregisters and exits 0.
    let pid = child.id().unwrap().to_string();
    let started = Instant::now();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(line);
    }
    assert_eq!(rest, ["pricing-a draining", "pricing-a drained"]);
    assert!(started.elapsed() < Duration::from_secs(8));
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let listed = switchyard_test_support::client::get(addr, "/v1/services/pricing").await;
    let body = String::from_utf8_lossy(listed.body());
    assert!(!body.contains("pricing-a"), "still registered: {body}");
}
