//! Manifest decoding: arbitrary bytes (read as UTF-8, invalid sequences replaced) through
//! `decode::decode` (multi-document YAML, JSON streams, `List`s), then each decoded object
//! through the API server's create path: `Object::from_value`, defaulting and validation.
//! Errors are fine; panics, stack overflows, hangs and runaway memory are not.

#![no_main]

use berth_api::{decode, defaults, validation, Object};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let Ok(manifests) = decode::decode(&input) else {
        return;
    };
    for manifest in manifests {
        let _ = (manifest.name(), manifest.namespace());
        if !manifest.object.is_object() {
            continue;
        }
        let Ok(mut obj) = Object::from_value(manifest.object) else {
            continue;
        };
        let _ = obj.store_key();
        defaults::apply(&mut obj);
        let _ = validation::validate(&obj);
        let _ = validation::validate_create(&obj);
        let _ = obj.to_value();
    }
});
