//! The registry's JSON payloads (`switchyard_discovery::wire`) and the
//! checks the registry server runs on them (`switchyard_registry::model`).
//!
//! Every input is read as each payload type, as the server reads a
//! registration body (`PUT /v1/services/{service}/instances/{id}`) and a
//! proxy reads the answers (`GET /v1/services[/{service}]`, errors).
//! Checks:
//! - no decoder and no validation panics;
//! - a registration the server accepts is within the documented limits,
//!   and the record it stores survives the store's round trip: the
//!   `Instance` JSON written reads back equal, and `Record::from_instance`
//!   (the embedded store's reload) restores the same TTL;
//! - what a proxy reads of that record (`to_discovered`) has a weight of at
//!   least 1, and a service answer holding it decodes as a full list;
//! - any `Instance` or answer a proxy decodes re-encodes to the same value,
//!   and `normalize` of its endpoints is sorted with one entry per address;
//! - service names and instance ids the server accepts are 1–128 bytes of
//!   `[A-Za-z0-9._-]`, starting with a letter or digit.

#![no_main]

use std::{net::IpAddr, time::Duration};

use libfuzzer_sys::fuzz_target;
use switchyard_config::format_duration;
use switchyard_discovery::{
    normalize,
    wire::{
        ErrorBody, Instance, Registration, ServiceAnswer, ServiceChanges, ServiceInstances,
        ServiceList,
    },
};
use switchyard_registry::model::{self, MAX_TTL, MAX_WEIGHT, MIN_TTL, Record};

fn check_endpoints(instances: &[Instance]) {
    let discovered: Vec<_> = instances.iter().map(Instance::to_discovered).collect();
    assert!(
        discovered.iter().all(|d| d.weight >= 1),
        "weight 0 discovered"
    );
    let set = normalize(discovered);
    assert!(
        set.windows(2).all(|w| w[0].addr < w[1].addr),
        "normalize left duplicates or disorder"
    );
}

fn check_name(s: &str, ok: bool) {
    let expected = !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    assert_eq!(ok, expected, "name {s:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if s.len() <= 256 {
            check_name(s, model::service_name(s).is_ok());
            check_name(s, model::instance_id(s).is_ok());
        }
    }

    if let Ok(reg) = serde_json::from_slice::<Registration>(data) {
        if let Ok(record) = model::registration("api-1", reg.clone()) {
            let inst = &record.instance;
            assert_eq!(inst.id, "api-1");
            assert_eq!(inst.address.to_string().parse().ok(), Some(inst.address));
            assert_ne!(inst.address.port(), 0);
            let ip = inst.address.ip();
            assert!(!ip.is_unspecified() && !ip.is_multicast());
            if let IpAddr::V4(v4) = ip {
                assert!(!v4.is_broadcast());
            }
            assert!((1..=MAX_WEIGHT).contains(&inst.weight));
            assert!(!inst.draining);
            match record.ttl {
                Some(ttl) => {
                    assert!((MIN_TTL..=MAX_TTL).contains(&ttl), "ttl {ttl:?} accepted");
                    assert_eq!(inst.ttl.as_deref(), Some(format_duration(ttl).as_str()));
                }
                None => assert!(inst.ttl.is_none() && reg.ttl.is_none()),
            }
            // The store writes the instance as JSON and reads it back.
            let stored = serde_json::to_vec(inst).expect("an instance serializes");
            let read: Instance =
                serde_json::from_slice(&stored).expect("a stored instance reads back");
            assert_eq!(&read, inst, "stored instance changed");
            assert_eq!(
                Record::from_instance(read),
                record,
                "reloaded record changed"
            );
            check_endpoints(std::slice::from_ref(inst));
            let answer = ServiceInstances {
                service: "api".into(),
                index: 7,
                instances: vec![inst.clone()],
            };
            let body = serde_json::to_vec(&answer).unwrap();
            match serde_json::from_slice::<ServiceAnswer>(&body) {
                Ok(ServiceAnswer::Full(full)) => assert_eq!(full, answer),
                other => panic!("a full answer read as {other:?}"),
            }
        }
    }

    if let Ok(inst) = serde_json::from_slice::<Instance>(data) {
        let again: Instance = serde_json::from_slice(&serde_json::to_vec(&inst).unwrap()).unwrap();
        assert_eq!(again, inst, "instance re-encoding changed it");
        let record = Record::from_instance(inst.clone());
        if let Some(ttl) = record.ttl {
            assert!(ttl <= Duration::MAX);
        }
        check_endpoints(&[inst]);
    }

    if let Ok(answer) = serde_json::from_slice::<ServiceAnswer>(data) {
        match answer {
            ServiceAnswer::Full(full) => {
                let again: ServiceInstances =
                    serde_json::from_slice(&serde_json::to_vec(&full).unwrap()).unwrap();
                assert_eq!(again, full);
                check_endpoints(&full.instances);
            }
            ServiceAnswer::Changes(changes) => {
                let again: ServiceChanges =
                    serde_json::from_slice(&serde_json::to_vec(&changes).unwrap()).unwrap();
                assert_eq!(again, changes);
                check_endpoints(&changes.changed);
            }
        }
    }

    if let Ok(list) = serde_json::from_slice::<ServiceList>(data) {
        let again: ServiceList =
            serde_json::from_slice(&serde_json::to_vec(&list).unwrap()).unwrap();
        assert_eq!(again, list);
    }
    if let Ok(err) = serde_json::from_slice::<ErrorBody>(data) {
        let again: ErrorBody = serde_json::from_slice(&serde_json::to_vec(&err).unwrap()).unwrap();
        assert_eq!(again, err);
    }
});
