//! The registry's JSON records: the bodies of its HTTP API and the values
//! its etcd store writes (so the etcd source reads what the registry wrote,
//! and an operator can write the same records with `etcdctl`).
//!
//! Readers are lenient (unknown fields ignored, defaults for the optional
//! ones) so that an older proxy keeps reading a newer registry's records.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::Discovered;

/// Header carrying the index of a service answer, as in the body.
pub const INDEX_HEADER: &str = "x-switchyard-index";

/// One registered instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique within its service. In etcd it is also the last key segment,
    /// which wins when a hand-written record omits it.
    #[serde(default)]
    pub id: String,
    pub address: SocketAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub draining: bool,
    /// Time-to-live between heartbeats (e.g. "10s"); absent for a permanent
    /// registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

fn default_weight() -> u32 {
    1
}

impl Instance {
    pub fn to_discovered(&self) -> Discovered {
        Discovered {
            addr: self.address,
            weight: self.weight.max(1),
            zone: self.zone.clone(),
            metadata: self.metadata.clone(),
            draining: self.draining,
        }
    }
}

/// `GET /v1/services/{service}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstances {
    pub service: String,
    /// The registry's index when this answer was read; pass it back as
    /// `?index=` to wait for the next change.
    pub index: u64,
    pub instances: Vec<Instance>,
}

/// `GET /v1/services/{service}?index=N&delta=true`, when the registry still
/// holds its answer at N: only what changed since. A 10,000-instance service
/// whose one instance changed answers one instance, not 10,000.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChanges {
    pub service: String,
    /// As in [`ServiceInstances`]: pass it back to wait for the next change.
    pub index: u64,
    /// The index these changes apply to: the `index` the query passed.
    pub since: u64,
    /// Instances added or changed since then, whole.
    pub changed: Vec<Instance>,
    /// Ids of the instances gone since then.
    pub removed: Vec<String>,
}

/// Either answer of `GET /v1/services/{service}`, as a client reads it: a
/// query asking for a delta gets the whole list when the registry no longer
/// has (or never had) the answer it would apply to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ServiceAnswer {
    Full(ServiceInstances),
    Changes(ServiceChanges),
}

/// `GET /v1/services`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceList {
    pub index: u64,
    pub services: Vec<ServiceSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    pub instances: usize,
    pub draining: usize,
}

/// The body of `PUT /v1/services/{service}/instances/{id}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// `ip:port` where the instance accepts traffic.
    pub address: String,
    /// Heartbeat deadline, e.g. "10s"; absent for a permanent registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Every error answer of the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `invalid_address`.
    pub error: String,
    /// What was wrong, for a person.
    pub message: String,
}
