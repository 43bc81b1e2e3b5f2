//! DNS discovery against a real DNS server (dnsmasq) on a loopback port;
//! the resolver asks that server only.

use std::time::Duration;

use switchyard_discovery::{Backoff, Discovery, DnsOptions, DnsQuery, DnsSource, spawn};
use switchyard_test_support::{DnsRecord, Dnsmasq, assert_eventually};

fn source(dns: &Dnsmasq, query: DnsQuery) -> Discovery {
    let opts = DnsOptions {
        servers: Some(vec![dns.addr()]),
        min_ttl: Duration::from_millis(200),
        max_ttl: Duration::from_secs(2),
        timeout: Duration::from_millis(500),
    };
    spawn(
        DnsSource::new(query, opts).unwrap(),
        Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
    )
}

fn addrs(d: &Discovery) -> Vec<String> {
    d.current().iter().map(|e| e.addr.to_string()).collect()
}

#[tokio::test]
async fn a_records_are_re_resolved_when_their_ttl_runs_out() {
    let mut dns = Dnsmasq::start(
        &[
            DnsRecord::host("api.test", "127.0.0.2".parse().unwrap()),
            DnsRecord::host("api.test", "127.0.0.3".parse().unwrap()),
        ],
        1,
    )
    .await;
    let d = source(&dns, DnsQuery::name("api.test:8080").unwrap());
    assert!(d.wait_synced(Duration::from_secs(5)).await);
    assert_eq!(addrs(&d), ["127.0.0.2:8080", "127.0.0.3:8080"]);
    assert!(d.current().iter().all(|e| e.weight == 1));

    // The record changes; with a 1s TTL the next resolution sees it.
    dns.replace(&[DnsRecord::host("api.test", "127.0.0.4".parse().unwrap())])
        .await;
    assert_eventually!(addrs(&d) == ["127.0.0.4:8080"], Duration::from_secs(5));

    // The server goes away: the last known set stays.
    dns.stop();
    assert_eventually!(!d.is_healthy(), Duration::from_secs(10));
    assert_eq!(addrs(&d), ["127.0.0.4:8080"]);
}

#[tokio::test]
async fn srv_records_give_ports_and_weights_of_the_best_priority() {
    let mut dns = Dnsmasq::start(
        &[
            DnsRecord::srv("_http._tcp.api.test", "a.api.test", 9001, 10, 5),
            DnsRecord::srv("_http._tcp.api.test", "b.api.test", 9002, 10, 0),
            DnsRecord::srv("_http._tcp.api.test", "backup.api.test", 9003, 20, 50),
            DnsRecord::host("a.api.test", "127.0.0.1".parse().unwrap()),
            DnsRecord::host("b.api.test", "127.0.0.2".parse().unwrap()),
            DnsRecord::host("backup.api.test", "127.0.0.3".parse().unwrap()),
        ],
        1,
    )
    .await;
    let d = source(&dns, DnsQuery::Srv("_http._tcp.api.test".into()));
    assert!(d.wait_synced(Duration::from_secs(5)).await);
    let got: Vec<(String, u32)> = d
        .current()
        .iter()
        .map(|e| (e.addr.to_string(), e.weight))
        .collect();
    assert_eq!(
        got,
        [
            ("127.0.0.1:9001".to_owned(), 5),
            ("127.0.0.2:9002".to_owned(), 1)
        ],
        "lowest priority only; weight 0 counts as 1"
    );

    // Only the backup is left: it is used.
    dns.replace(&[
        DnsRecord::srv("_http._tcp.api.test", "backup.api.test", 9003, 20, 50),
        DnsRecord::host("backup.api.test", "127.0.0.3".parse().unwrap()),
    ])
    .await;
    assert_eventually!(addrs(&d) == ["127.0.0.3:9003"], Duration::from_secs(5));

    // A name that stops existing is a failure, not an empty cluster.
    dns.replace(&[DnsRecord::host("other.test", "127.0.0.9".parse().unwrap())])
        .await;
    assert_eventually!(!d.is_healthy(), Duration::from_secs(10));
    assert_eq!(addrs(&d), ["127.0.0.3:9003"]);
}

#[test]
fn bad_settings_are_refused() {
    assert!(DnsQuery::name("api.test").is_err());
    assert!(DnsQuery::name("api.test:0").is_err());
    assert!(DnsQuery::name(":80").is_err());
    let opts = DnsOptions {
        servers: Some(vec![]),
        min_ttl: Duration::from_secs(5),
        max_ttl: Duration::from_secs(1),
        ..DnsOptions::default()
    };
    assert!(DnsSource::new(DnsQuery::Srv("_x._tcp.a".into()), opts).is_err());
}
