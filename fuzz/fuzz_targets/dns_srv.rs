//! DNS discovery (`switchyard_discovery::source::dns`): `DnsQuery::name`
//! (the config's `dns = { name = "host:port" }`) and the SRV handling that
//! turns an answer into endpoints (RFC 2782: lowest priority only, each
//! record's weight for every address of its target, weight 0 as 1).
//!
//! The SRV handling is not a pure function: `DnsSource` asks a resolver. So
//! the target runs the real source against a name server inside the target
//! (UDP on 127.0.0.1, nothing else is contacted) that answers from a zone
//! the input describes, one record per line:
//!
//! ```text
//! srv PRIORITY WEIGHT PORT TARGET     records of _http._tcp.svc.test.
//! a NAME IPV4                         address records
//! aaaa NAME IPV6
//! name HOST:PORT                      a DnsQuery::name input
//! ```
//!
//! Checks: nothing panics; `DnsQuery::name` accepts exactly a non-empty host,
//! a colon and a port 1–65535; and for zones whose names are plain host
//! names the endpoint set is exactly what RFC 2782 and the module's rules
//! give: the lowest-priority records, each target's IPv4 addresses (its IPv6
//! ones only when it has none: the resolver's default strategy), the
//! record's port and weight (0 → 1); an answer without SRV records or with a
//! lowest-priority target without addresses is an error, never an empty
//! set. Names that are not plain host names are only checked for panics.

#![no_main]

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use hickory_resolver::proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, SRV},
    },
};
use libfuzzer_sys::fuzz_target;
use switchyard_discovery::{Discovered, DnsOptions, DnsQuery, DnsSource, Source, SourceError};
use tokio::{net::UdpSocket, runtime::Runtime};

const SERVICE: &str = "_http._tcp.svc.test.";
const MAX_SRV: usize = 16;
const MAX_ADDRS: usize = 16;

#[derive(Debug, Default)]
struct Zone {
    srv: Vec<(u16, u16, u16, Name)>,
    a: BTreeMap<String, Vec<Ipv4Addr>>,
    aaaa: BTreeMap<String, Vec<Ipv6Addr>>,
}

fn key(name: &Name) -> String {
    name.to_ascii().to_ascii_lowercase()
}

fn answer(zone: &Zone, request: &Message) -> Message {
    let mut resp = Message::new();
    resp.set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    let Some(q) = request.queries().first() else {
        resp.set_response_code(ResponseCode::FormErr);
        return resp;
    };
    resp.add_query(q.clone());
    let name = q.name().clone();
    let k = key(&name);
    let exists = k == SERVICE || zone.a.contains_key(&k) || zone.aaaa.contains_key(&k);
    match q.query_type() {
        RecordType::SRV if k == SERVICE => {
            for (priority, weight, port, target) in &zone.srv {
                let rdata = RData::SRV(SRV::new(*priority, *weight, *port, target.clone()));
                resp.add_answer(Record::from_rdata(name.clone(), 30, rdata));
            }
        }
        RecordType::A => {
            for ip in zone.a.get(&k).into_iter().flatten() {
                resp.add_answer(Record::from_rdata(name.clone(), 30, RData::A(A(*ip))));
            }
        }
        RecordType::AAAA => {
            for ip in zone.aaaa.get(&k).into_iter().flatten() {
                resp.add_answer(Record::from_rdata(name.clone(), 30, RData::AAAA(AAAA(*ip))));
            }
        }
        _ => {}
    }
    if !exists {
        resp.set_response_code(ResponseCode::NXDomain);
    }
    resp
}

async fn serve(socket: UdpSocket, zone: Arc<Mutex<Zone>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(request) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let resp = answer(&zone.lock().unwrap(), &request);
        let bytes = resp.to_vec().expect("harness: the answer encodes");
        assert!(
            bytes.len() <= 4096,
            "harness: answer of {} bytes",
            bytes.len()
        );
        let _ = socket.send_to(&bytes, peer).await;
    }
}

struct Harness {
    rt: Runtime,
    zone: Arc<Mutex<Zone>>,
    source: Mutex<DnsSource>,
    /// Names the resolver answers itself (the hosts file), not the server.
    hosts: HashSet<String>,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let (source, addr) = rt.block_on(async {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            tokio::spawn(serve(socket, zone.clone()));
            let opts = DnsOptions {
                servers: Some(vec![addr]),
                min_ttl: Duration::ZERO,
                max_ttl: Duration::ZERO,
                timeout: Duration::from_secs(2),
            };
            (
                DnsSource::new(DnsQuery::Srv(SERVICE.into()), opts).unwrap(),
                addr,
            )
        });
        let _ = addr;
        let hosts = std::fs::read_to_string("/etc/hosts")
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map(|n| format!("{}.", n.to_ascii_lowercase()))
            })
            .collect();
        Harness {
            rt,
            zone,
            source: Mutex::new(source),
            hosts,
        }
    })
}

fn check_name(s: &str) {
    let result = DnsQuery::name(s);
    let expected = s.rsplit_once(':').and_then(|(host, port)| {
        let port: u16 = port.parse().ok()?;
        (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
    });
    match (result, expected) {
        (Ok(DnsQuery::Name { host, port }), Some(e)) => assert_eq!((host, port), e),
        (Err(_), None) => {}
        (r, e) => panic!("DnsQuery::name({s:?}) = {r:?}, expected {e:?}"),
    }
}

/// A name the resolver sends to the server as it is written: letters,
/// digits, `-` and `_` labels, not a special-use or hosts-file name.
fn plain(name: &Name, hosts: &HashSet<String>) -> bool {
    let k = key(name);
    let labels_ok = name.iter().all(|l| {
        !l.is_empty()
            && l.iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    });
    labels_ok
        && name.num_labels() > 0
        && !hosts.contains(&k)
        && !k.ends_with(".localhost.")
        && k != "localhost."
        && !k.ends_with(".invalid.")
        && k != "invalid."
        && !k.ends_with(".local.")
        && !k.ends_with(".onion.")
}

/// RFC 2782 and the module's rules; `None` when the source must fail.
fn expected(zone: &Zone) -> Option<Vec<(SocketAddr, u32)>> {
    let best = zone.srv.iter().map(|r| r.0).min()?;
    let mut eps = Vec::new();
    for (_, weight, port, target) in zone.srv.iter().filter(|r| r.0 == best) {
        let k = key(target);
        let v4: Vec<IpAddr> = zone
            .a
            .get(&k)
            .into_iter()
            .flatten()
            .map(|ip| IpAddr::V4(*ip))
            .collect();
        let ips = if v4.is_empty() {
            zone.aaaa
                .get(&k)
                .into_iter()
                .flatten()
                .map(|ip| IpAddr::V6(*ip))
                .collect()
        } else {
            v4
        };
        if ips.is_empty() {
            return None;
        }
        for ip in ips {
            eps.push((SocketAddr::new(ip, *port), u32::from(*weight).max(1)));
        }
    }
    eps.sort();
    (!eps.is_empty()).then_some(eps)
}

fn parse_zone(text: &str, hosts: &HashSet<String>) -> (Zone, bool) {
    let mut zone = Zone::default();
    let mut all_plain = true;
    let name_of = |s: &str| -> Option<Name> {
        if s.len() > 63 {
            return None;
        }
        let mut n = Name::from_ascii(s).ok()?;
        n.set_fqdn(true);
        Some(n)
    };
    for line in text.lines() {
        let mut w = line.split_ascii_whitespace();
        match (w.next(), w.next(), w.next(), w.next(), w.next()) {
            (Some("name"), Some(s), None, None, None) => check_name(s),
            (Some("srv"), Some(p), Some(wt), Some(port), Some(target))
                if zone.srv.len() < MAX_SRV =>
            {
                let (Ok(p), Ok(wt), Ok(port), Some(t)) =
                    (p.parse(), wt.parse(), port.parse(), name_of(target))
                else {
                    continue;
                };
                all_plain &= plain(&t, hosts);
                zone.srv.push((p, wt, port, t));
            }
            (Some("a"), Some(n), Some(ip), None, None) => {
                if let (Some(n), Ok(ip)) = (name_of(n), Ipv4Addr::from_str(ip)) {
                    let list = zone.a.entry(key(&n)).or_default();
                    if list.len() < MAX_ADDRS {
                        list.push(ip);
                    }
                }
            }
            (Some("aaaa"), Some(n), Some(ip), None, None) => {
                if let (Some(n), Ok(ip)) = (name_of(n), Ipv6Addr::from_str(ip)) {
                    let list = zone.aaaa.entry(key(&n)).or_default();
                    if list.len() < MAX_ADDRS {
                        list.push(ip);
                    }
                }
            }
            _ => {}
        }
    }
    (zone, all_plain)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let h = harness();
    let (zone, all_plain) = parse_zone(text, &h.hosts);
    if zone.srv.is_empty() && !text.contains("srv") {
        // Nothing to resolve (a `name` input): skip the round trips.
        return;
    }
    let want = expected(&zone);
    *h.zone.lock().unwrap() = zone;
    let mut source = h.source.lock().unwrap();
    let got = h.rt.block_on(source.next());
    let got: Result<Vec<(SocketAddr, u32)>, SourceError> = got.map(|eps: Vec<Discovered>| {
        assert!(eps.iter().all(|e| e.weight >= 1), "weight 0 endpoint");
        let mut v: Vec<_> = eps.iter().map(|e| (e.addr, e.weight)).collect();
        v.sort();
        v
    });
    if !all_plain {
        return;
    }
    match (got, want) {
        (Ok(g), Some(w)) => assert_eq!(g, w, "endpoints differ from RFC 2782's"),
        (Err(SourceError::Dns { .. } | SourceError::NoRecords(_)), None) => {}
        (g, w) => panic!("source gave {g:?}, expected {w:?}"),
    }
});
