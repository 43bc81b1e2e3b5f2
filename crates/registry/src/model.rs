//! What a registration may contain, checked before anything is stored.
//!
//! Every check names the field, the value and what would have been
//! accepted, because the caller is usually a deployment script whose
//! author reads the message once, in a CI log.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use switchyard_config::{format_duration, parse_duration};
use switchyard_discovery::wire::{Instance, Registration};

use crate::error::ApiError;

/// Longest service name, instance id or zone.
pub const MAX_NAME_LEN: usize = 128;
/// Shortest TTL: a heartbeat more often than every few hundred
/// milliseconds would cost more than it tells.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest TTL: past a day, a crashed instance would linger for too long;
/// register without a TTL for an instance that never heartbeats.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_WEIGHT: u32 = 10_000;
pub const MAX_METADATA_ENTRIES: usize = 64;
pub const MAX_METADATA_VALUE_LEN: usize = 512;

/// Checks a service name: 1–128 of `[A-Za-z0-9._-]`, starting with a
/// letter or digit. These are safe in URLs, etcd keys and metric labels.
pub fn service_name(name: &str) -> Result<(), ApiError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_service",
            format!("service name {name:?} is invalid: {NAME_RULE}"),
        ))
    }
}

/// Checks an instance id; the same rule as service names.
pub fn instance_id(id: &str) -> Result<(), ApiError> {
    if is_name(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_id",
            format!("instance id {id:?} is invalid: {NAME_RULE}"),
        ))
    }
}

const NAME_RULE: &str =
    "use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit";

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A validated registration, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub instance: Instance,
    /// `None`: permanent until deregistered.
    pub ttl: Option<Duration>,
}

impl Record {
    /// Rebuilds a record from its stored form (the wire [`Instance`]).
    pub fn from_instance(instance: Instance) -> Self {
        let ttl = instance.ttl.as_deref().and_then(|t| parse_duration(t).ok());
        Self { instance, ttl }
    }
}

/// Checks a registration body for `service`/`id`.
pub fn registration(id: &str, reg: Registration) -> Result<Record, ApiError> {
    let address = address(&reg.address)?;
    let ttl = reg.ttl.as_deref().map(ttl).transpose()?;
    let weight = match reg.weight {
        None => 1,
        Some(w) if (1..=MAX_WEIGHT).contains(&w) => w,
        Some(w) => {
            return Err(ApiError::bad_request(
                "invalid_weight",
                format!("weight {w} is invalid: use 1 to {MAX_WEIGHT}"),
            ));
        }
    };
    if let Some(zone) = &reg.zone {
        if !is_name(zone) {
            return Err(ApiError::bad_request(
                "invalid_zone",
                format!("zone {zone:?} is invalid: {NAME_RULE}"),
            ));
        }
    }
    let metadata = reg.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    Ok(Record {
        instance: Instance {
            id: id.to_owned(),
            address,
            weight,
            zone: reg.zone,
            metadata,
            draining: false,
            ttl: ttl.map(format_duration),
        },
        ttl,
    })
}

fn address(s: &str) -> Result<SocketAddr, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(
            "invalid_address",
            format!("address {s:?} is invalid: {why}"),
        )
    };
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| bad("expected ip:port such as 10.0.0.7:8080 or [fd00::7]:8080"))?;
    if addr.port() == 0 {
        return Err(bad("port 0 cannot receive traffic"));
    }
    let ip = addr.ip();
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(bad(
            "an unspecified or multicast IP cannot receive traffic; give the instance's own IP",
        ));
    }
    if let std::net::IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Err(bad("a broadcast IP cannot receive traffic"));
        }
    }
    Ok(addr)
}

fn ttl(s: &str) -> Result<Duration, ApiError> {
    let bad =
        |why: String| ApiError::bad_request("invalid_ttl", format!("ttl {s:?} is invalid: {why}"));
    let d = parse_duration(s).map_err(|e| bad(e.to_string()))?;
    if d < MIN_TTL || d > MAX_TTL {
        return Err(bad(format!(
            "use {} to {} (or no ttl for a permanent registration)",
            format_duration(MIN_TTL),
            format_duration(MAX_TTL)
        )));
    }
    Ok(d)
}

fn check_metadata(m: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let bad = |why: String| ApiError::bad_request("invalid_metadata", why);
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(bad(format!(
            "metadata has {} entries; at most {MAX_METADATA_ENTRIES} are allowed",
            m.len()
        )));
    }
    for (k, v) in m {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_NAME_LEN
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if !key_ok {
            return Err(bad(format!(
                "metadata key {k:?} is invalid: use 1 to 128 letters, digits, '.', '_', '-' or '/'"
            )));
        }
        if v.len() > MAX_METADATA_VALUE_LEN {
            return Err(bad(format!(
                "metadata value of {k:?} is {} bytes; at most {MAX_METADATA_VALUE_LEN} are allowed",
                v.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["api", "a", "API-v2.internal_1", &"x".repeat(128)] {
            assert!(service_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-api", ".a", "a/b", "a b", "ä", &"x".repeat(129)] {
            assert_eq!(
                service_name(bad).unwrap_err().code,
                "invalid_service",
                "{bad}"
            );
        }
    }

    #[test]
    fn registrations() {
        let reg = |address: &str| Registration {
            address: address.into(),
            ..Default::default()
        };
        let r = registration("i1", reg("127.0.0.1:80")).unwrap();
        assert_eq!((r.instance.weight, r.ttl), (1, None));
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "0.0.0.0:80",
            "host:80",
            "[::]:80",
            "224.0.0.1:5",
        ] {
            assert_eq!(
                registration("i1", reg(bad)).unwrap_err().code,
                "invalid_address",
                "{bad}"
            );
        }
        let mut r = reg("[::1]:9000");
        r.ttl = Some("500ms".into());
        assert_eq!(
            registration("i", r.clone()).unwrap_err().code,
            "invalid_ttl"
        );
        r.ttl = Some("10s".into());
        assert_eq!(
            registration("i", r.clone()).unwrap().ttl,
            Some(Duration::from_secs(10))
        );
        r.weight = Some(0);
        assert_eq!(registration("i", r).unwrap_err().code, "invalid_weight");
    }
}
