//! The PROXY protocol (HAProxy's, versions 1 and 2) on accepted
//! connections: a load balancer in front tells who the client is.
//!
//! Only connections from the listener's trusted sources are read for a
//! header, and from them one is required (as HAProxy's `accept-proxy`
//! requires it): an untrusted peer could otherwise claim any address, and a
//! trusted one that sends none is misconfigured. The header is parsed with
//! the `ppp` crate from bytes *peeked* off the socket, then exactly its
//! length is consumed, so the first byte of the client's own data (a TLS
//! ClientHello, an HTTP request) is never read here. The address it gives
//! replaces the peer's for everything downstream: `X-Forwarded-For`, logs,
//! source-IP hashing and the per-client limit. A `LOCAL` header (the
//! balancer's own health check) keeps the peer's address.
//!
//! [`header`] writes one, for clusters that send it to their endpoints.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult, v1, v2};
use switchyard_config::ProxyProtocolVersion;
use tokio::{io::AsyncReadExt, net::TcpStream};

/// Longest header read: HAProxy's recommended 536-byte buffer holds every
/// v1 header (at most 107 bytes) and v2 headers with ordinary TLVs.
const MAX_HEADER: usize = 536;

/// Why a connection from a trusted source was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before a complete PROXY protocol header")]
    Closed,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// The sources whose PROXY protocol headers are believed.
#[derive(Clone, Debug)]
pub struct Trusted(Vec<IpNet>);

impl Trusted {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// For a connection from `peer`: the client's address from its PROXY
/// header when `peer` is trusted (or `peer` itself for a `LOCAL` header or
/// an untrusted peer), reading the header within `timeout`.
pub async fn client_address(
    stream: &mut TcpStream,
    peer: SocketAddr,
    trusted: Option<&Trusted>,
    timeout: Duration,
) -> Result<SocketAddr, ProxyHeaderError> {
    match trusted {
        Some(t) if t.contains(peer.ip()) => tokio::time::timeout(timeout, read(stream, peer))
            .await
            .map_err(|_| ProxyHeaderError::Timeout(timeout))?,
        _ => Ok(peer),
    }
}

async fn read(stream: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    let mut buf = [0u8; MAX_HEADER];
    let mut seen = 0;
    // A header normally arrives in one segment; a peer that sends it in
    // pieces is polled with a growing pause (bounded by the caller's
    // timeout) rather than read from, so no byte after it is consumed.
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        match parse(&buf[..n], peer) {
            Parsed::Done { len, client } => {
                let mut header = vec![0u8; len];
                stream.read_exact(&mut header).await?;
                return Ok(client);
            }
            Parsed::Invalid(why) => return Err(ProxyHeaderError::Invalid(why)),
            Parsed::Incomplete if n == MAX_HEADER => return Err(ProxyHeaderError::TooLong),
            Parsed::Incomplete => {
                if n == seen {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                seen = n;
            }
        }
    }
}

/// The header announcing `client`, which connected to `local`, in
/// `version`'s format. Mixed address families are written as IPv6 (IPv4
/// as `::ffff:a.b.c.d`), since a header holds one family.
pub fn header(version: ProxyProtocolVersion, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V6(_)) | (SocketAddr::V6(_), SocketAddr::V4(_)) => {
            (as_v6(client), as_v6(local))
        }
        same => same,
    };
    match version {
        ProxyProtocolVersion::V1 => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            )
            .into_bytes()
        }
        ProxyProtocolVersion::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, local),
        )
        .build()
        // Writing two addresses into a Vec cannot fail.
        .unwrap_or_default(),
    }
}

/// The header of a connection the proxy opens on its own behalf (a health
/// check, or a request with no downstream client): v1 `PROXY UNKNOWN`, v2
/// the LOCAL command, which upstreams accept and take the connection's own
/// addresses from.
pub fn local_header(version: ProxyProtocolVersion) -> Vec<u8> {
    match version {
        ProxyProtocolVersion::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        ProxyProtocolVersion::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        // A header without addresses cannot fail to build.
        .unwrap_or_default(),
    }
}

fn as_v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::from((a.ip().to_ipv6_mapped(), a.port())),
        v6 => v6,
    }
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Done { len: usize, client: SocketAddr },
    Incomplete,
    Invalid(String),
}

fn parse(bytes: &[u8], peer: SocketAddr) -> Parsed {
    let header = HeaderResult::parse(bytes);
    if header.is_incomplete() {
        return Parsed::Incomplete;
    }
    match header {
        HeaderResult::V1(Ok(h)) => Parsed::Done {
            len: h.header.len(),
            client: match h.addresses {
                v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
                v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
                // UNKNOWN: the balancer could not tell; the peer is what
                // is known.
                v1::Addresses::Unknown => peer,
            },
        },
        HeaderResult::V2(Ok(h)) => Parsed::Done {
            len: h.len(),
            client: match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    SocketAddr::from((a.source_address, a.source_port))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    SocketAddr::from((a.source_address, a.source_port))
                }
                // LOCAL (the balancer's own connection), a Unix socket or
                // an unspecified family: the peer's address stands.
                _ => peer,
            },
        },
        HeaderResult::V1(Err(e)) => Parsed::Invalid(e.to_string()),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    #[test]
    fn v1_headers_give_the_client_and_their_exact_length() {
        let bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let header_len = bytes.len() - b"GET / HTTP/1.1\r\n".len();
        assert_eq!(
            parse(bytes, peer()),
            Parsed::Done {
                len: header_len,
                client: "192.0.2.7:56324".parse().unwrap()
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n\x16\x03\x01";
        assert_eq!(
            parse(v6, peer()),
            Parsed::Done {
                len: v6.len() - 3,
                client: "[2001:db8::1]:4000".parse().unwrap()
            }
        );
        let unknown = b"PROXY UNKNOWN\r\nx";
        assert_eq!(
            parse(unknown, peer()),
            Parsed::Done {
                len: unknown.len() - 1,
                client: peer()
            }
        );
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn v2_headers_give_the_client_unless_local() {
        // TCP over IPv4: 192.0.2.7:56324 → 198.51.100.1:443.
        let addrs = [192, 0, 2, 7, 198, 51, 100, 1, 0xDC, 0x04, 0x01, 0xBB];
        let mut bytes = v2(1, 0x11, &addrs);
        let len = bytes.len();
        bytes.extend_from_slice(b"PRI * HTTP/2.0");
        assert_eq!(
            parse(&bytes, peer()),
            Parsed::Done {
                len,
                client: "192.0.2.7:56324".parse().unwrap()
            }
        );
        let local = v2(0, 0x00, &[]);
        assert_eq!(
            parse(&local, peer()),
            Parsed::Done {
                len: local.len(),
                client: peer()
            }
        );
    }

    #[test]
    fn partial_and_garbage_headers() {
        assert_eq!(parse(b"PROXY TCP4 192.0", peer()), Parsed::Incomplete);
        let whole = v2(1, 0x11, &[192, 0, 2, 7, 198, 51, 100, 1, 0, 1, 0, 2]);
        assert_eq!(parse(&whole[..20], peer()), Parsed::Incomplete);
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", peer()),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 not-an-ip 198.51.100.1 1 2\r\n", peer()),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn written_headers_parse_back() {
        let client: SocketAddr = "192.0.2.7:56324".parse().unwrap();
        let local: SocketAddr = "198.51.100.1:443".parse().unwrap();
        let v1 = header(ProxyProtocolVersion::V1, client, local);
        assert_eq!(v1, b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n");
        for version in [ProxyProtocolVersion::V1, ProxyProtocolVersion::V2] {
            let bytes = header(version, client, local);
            assert_eq!(
                parse(&bytes, peer()),
                Parsed::Done {
                    len: bytes.len(),
                    client
                },
                "{version:?}"
            );
            // A v4 client on a v6 socket is written as a mapped address.
            let v6_local: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
            let mixed = header(version, client, v6_local);
            let Parsed::Done { client: seen, .. } = parse(&mixed, peer()) else {
                panic!("{version:?}: {mixed:?}");
            };
            assert_eq!(seen, as_v6(client), "{version:?}");
        }
    }

    #[test]
    fn trust_is_by_network() {
        let t = Trusted::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        // An IPv4 peer seen on a dual-stack socket.
        assert!(t.contains("::ffff:10.0.0.9".parse().unwrap()));
        assert!(!t.contains("192.0.2.1".parse().unwrap()));
    }
}
