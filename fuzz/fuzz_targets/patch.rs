//! Patching: JSON patch, JSON merge patch, strategic merge patch, server-side apply and the
//! managed-fields bookkeeping every write does.
//!
//! Input: one flags byte, then a JSON document, a NUL byte, and a JSON patch (raw NUL cannot
//! occur in JSON text, so the split is unambiguous). Inputs without the NUL, or whose halves
//! are not JSON, are skipped. Flags: bits 0-2 choose the kind for the strategic merge patch,
//! bit 3 is server-side apply's `force`.
//! Errors are fine; panics, stack overflows, hangs and runaway memory are not.

#![no_main]

use berth_api::patch::{self, Operation};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const KINDS: [&str; 8] = [
    "Pod",
    "Deployment",
    "Service",
    "ConfigMap",
    "StatefulSet",
    "DaemonSet",
    "Node",
    "Widget", // not served: merges like a JSON merge patch
];
const NOW: &str = "2026-01-01T00:00:00Z";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some(split) = rest.iter().position(|&b| b == 0) else {
        return;
    };
    let (doc, patch) = (&rest[..split], &rest[split + 1..]);
    let Ok(doc) = serde_json::from_slice::<Value>(doc) else {
        return;
    };
    let Ok(patch) = serde_json::from_slice::<Value>(patch) else {
        return;
    };
    let kind = KINDS[usize::from(flags & 7)];
    let force = flags & 8 != 0;

    // Every successful patch is recorded as the ordinary write it would be in the API server.
    let record = |new: &Value| {
        let _ = patch::update_managed_fields(Some(&doc), new, "fuzz", Operation::Update, NOW);
    };

    if let Ok(new) = patch::json_patch(&doc, &patch) {
        record(&new);
    }
    record(&patch::merge_patch(&doc, &patch));
    if let Ok(new) = patch::strategic_merge_patch(&doc, &patch, kind) {
        record(&new);
    }

    // Server-side apply of the patch as a configuration: on create, on the document, then again
    // by a second manager on the result (which now carries managed fields).
    let _ = patch::apply(None, &patch, "fuzz", force, NOW);
    if let Ok(applied) = patch::apply(Some(&doc), &patch, "fuzz", force, NOW) {
        let _ = patch::apply(Some(&applied), &patch, "other", force, NOW);
        let _ = patch::update_managed_fields(Some(&applied), &doc, "fuzz", Operation::Update, NOW);
    }
    // Creates: the document as a new object, with whatever managed fields it claims to have.
    let _ = patch::update_managed_fields(None, &doc, "fuzz", Operation::Update, NOW);
});
