//! etcd records: one key per instance under `/switchyard/services/`, whose
//! value is a JSON `Instance`. Two readers: the registry's etcd store
//! (`switchyard_registry::store::etcd::decode_record`, its reload and
//! watch) and the etcd discovery source, which parses each value as an
//! `Instance` (`serde_json::from_slice`, exactly what its private `parse`
//! does) and turns it into an endpoint.
//!
//! The input is the key, a newline, then the value. Checks:
//! - neither reader panics, on any key and value;
//! - a record the registry decodes has its id from the key's last part and
//!   its service from the part before, and a value under a key of that shape
//!   is a record for both readers or for neither (a proxy watching etcd and a
//!   registry in front of it see the same instances);
//! - a decoded record written back the way the store writes it
//!   (`serde_json::to_vec`) reads back equal, under the same key;
//! - the endpoint the source makes of it has a weight of at least 1 and the
//!   record's address.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_discovery::wire::Instance;
use switchyard_etcd::KeyValue;
use switchyard_registry::store::etcd::{ROOT, decode_record};

fn kv(key: &[u8], value: Vec<u8>) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value,
        ..KeyValue::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"/switchyard/services/api/api-1"[..], data),
    };
    let source = serde_json::from_slice::<Instance>(value);
    if let Ok(inst) = &source {
        let d = inst.to_discovered();
        assert!(d.weight >= 1, "weight 0 endpoint");
        assert_eq!(d.addr, inst.address);
    }
    let registry = decode_record(&kv(key, value.to_vec()));
    let key_shape = std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix(ROOT))
        .and_then(|rest| rest.split_once('/'));
    match (&registry, key_shape) {
        (Ok((service, inst)), Some((s, id))) => {
            assert_eq!(service, s);
            assert_eq!(inst.id, id, "id not taken from the key");
            assert!(
                source.is_ok(),
                "the registry reads a record the etcd source skips"
            );
            let mut from_source = source.as_ref().unwrap().clone();
            from_source.id = id.to_owned();
            assert_eq!(&from_source, inst, "the two readers disagree");
            let stored = serde_json::to_vec(inst).expect("an instance serializes");
            let (service2, again) =
                decode_record(&kv(key, stored)).expect("a written record reads back");
            assert_eq!(
                (&service2, &again),
                (service, inst),
                "record changed by a write and read"
            );
        }
        (Ok(_), None) => panic!("a record decoded from a key outside {ROOT}service/id"),
        (Err(_), Some(_)) => assert!(
            source.is_err(),
            "the etcd source reads a record the registry skips"
        ),
        (Err(_), None) => {}
    }
});
