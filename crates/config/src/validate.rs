//! Cross-reference checks that need the whole file: names that must be
//! unique, clusters that routes refer to, sockets that must not overlap.
//!
//! The model carries no spans, so while parsing, `parse` records every name,
//! reference and listen address with its location in [`Refs`]; the checks here
//! work on that record only.

use std::net::SocketAddr;
use std::ops::Range;

use crate::error::ErrorKind;
use crate::reader::{Ctx, Field};

/// A location in the file: the span of a value and its key path.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub(crate) span: Range<usize>,
    pub(crate) path: String,
}

impl Site {
    pub(crate) fn of(field: &Field<'_, '_>) -> Self {
        Self {
            span: field.span.clone(),
            path: field.path.clone(),
        }
    }
}

/// A socket a listener binds.
#[derive(Debug, Clone)]
pub(crate) struct Listen {
    pub(crate) address: SocketAddr,
    pub(crate) udp: bool,
    /// The listener's name, for "already used by listener ..." messages.
    pub(crate) owner: String,
    pub(crate) site: Site,
}

/// Everything the cross-reference checks need, with locations.
#[derive(Debug, Default)]
pub(crate) struct Refs {
    pub(crate) listener_names: Vec<(String, Site)>,
    pub(crate) cluster_names: Vec<(String, Site)>,
    /// Cluster names used by routes, splits and tcp/udp listeners.
    pub(crate) cluster_refs: Vec<(String, Site)>,
    /// Clusters named by udp listeners, and clusters with `tls`.
    pub(crate) udp_clusters: Vec<(String, Site)>,
    pub(crate) tls_clusters: Vec<String>,
    /// Clusters named by routes (and splits), and clusters that send the
    /// PROXY protocol.
    pub(crate) route_clusters: Vec<(String, Site)>,
    pub(crate) proxy_protocol_clusters: Vec<String>,
    pub(crate) listens: Vec<Listen>,
    /// Every route: its listener's name, its index there, and where it is.
    pub(crate) routes: Vec<(String, usize, Site)>,
}

/// Runs every cross-reference check, recording errors in `ctx`.
pub(crate) fn check(ctx: &mut Ctx<'_>, refs: &Refs, admin: SocketAddr) {
    unique_names(ctx, "listener", &refs.listener_names);
    unique_names(ctx, "cluster", &refs.cluster_names);
    known_clusters(ctx, refs);
    listen_conflicts(ctx, refs, admin);
    // What a udp listener's cluster cannot have: both are for connections.
    for (name, site) in &refs.udp_clusters {
        let refused = [
            (
                refs.proxy_protocol_clusters.contains(name),
                "sends the PROXY protocol, which a udp listener cannot (it is for connections)",
            ),
            (
                refs.tls_clusters.contains(name),
                "has `tls`, which a udp listener cannot use (DTLS is not supported)",
            ),
        ];
        for (_, why) in refused.into_iter().filter(|(applies, _)| *applies) {
            ctx.report(
                &site.span,
                &site.path,
                ErrorKind::Conflict(format!("cluster {name} {why}")),
            );
        }
    }
}

/// Every name after the first use is an error pointing at the duplicate.
pub(crate) fn unique_names(ctx: &mut Ctx<'_>, what: &'static str, names: &[(String, Site)]) {
    // Hashed: a listener may carry 100,000 routes.
    let mut firsts: std::collections::HashMap<&str, &Site> =
        std::collections::HashMap::with_capacity(names.len());
    for (name, site) in names {
        let first = *firsts.entry(name.as_str()).or_insert(site);
        if !std::ptr::eq(first, site) {
            let (first_line, _) = ctx.location(first.span.start);
            ctx.report(
                &site.span,
                &site.path,
                ErrorKind::DuplicateName {
                    what,
                    name: name.clone(),
                    first_line,
                },
            );
        }
    }
}

fn known_clusters(ctx: &mut Ctx<'_>, refs: &Refs) {
    let mut defined: Vec<String> = refs
        .cluster_names
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    // Sorted and deduplicated so the hint reads like a list, whatever the
    // file order.
    defined.sort();
    defined.dedup();
    for (name, site) in &refs.cluster_refs {
        if !defined.contains(name) {
            ctx.report(
                &site.span,
                &site.path,
                ErrorKind::UnknownCluster {
                    name: name.clone(),
                    defined: defined.clone(),
                },
            );
        }
    }
}

/// Two sockets conflict when they use the same transport and port and their
/// IPs overlap: equal, or one is a wildcard covering the other. `[::]` also
/// covers IPv4, because the OS default is a dual-stack socket.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    // Port 0 asks the kernel for a fresh ephemeral port, so two such
    // listeners never collide (tests and embedded uses rely on it).
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers = |wild: SocketAddr, other: SocketAddr| {
        wild.ip().is_unspecified() && (wild.is_ipv6() || wild.is_ipv4() == other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

fn listen_conflicts(ctx: &mut Ctx<'_>, refs: &Refs, admin: SocketAddr) {
    for (i, listen) in refs.listens.iter().enumerate() {
        let earlier = refs.listens[..i]
            .iter()
            .find(|other| other.udp == listen.udp && overlaps(other.address, listen.address));
        let conflict = match earlier {
            Some(other) => Some((format!("listener \"{}\"", other.owner), other.address)),
            // The admin endpoint is HTTP, so only TCP listeners collide.
            None if !listen.udp && overlaps(admin, listen.address) => {
                Some(("the admin endpoint".to_owned(), admin))
            }
            None => None,
        };
        if let Some((used_by, used_by_address)) = conflict {
            ctx.report(
                &listen.site.span,
                &listen.site.path,
                ErrorKind::DuplicateListen {
                    address: listen.address,
                    used_by,
                    used_by_address,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test addresses are valid")
    }

    #[test]
    fn overlapping_addresses() {
        assert!(overlaps(addr("127.0.0.1:80"), addr("127.0.0.1:80")));
        assert!(overlaps(addr("0.0.0.0:80"), addr("127.0.0.1:80")));
        assert!(overlaps(addr("127.0.0.1:80"), addr("0.0.0.0:80")));
        assert!(overlaps(addr("[::]:80"), addr("10.0.0.1:80")));
        assert!(!overlaps(addr("0.0.0.0:80"), addr("[::1]:80")));
        assert!(!overlaps(addr("127.0.0.1:80"), addr("127.0.0.2:80")));
        assert!(!overlaps(addr("0.0.0.0:80"), addr("0.0.0.0:81")));
    }
}
