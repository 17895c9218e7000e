//! `ramcoord::chaos::history::read`, `chaos::tables::check_tables` and
//! `chaos::kv::check_keys`: a chaos history (JSON lines) as `ramcoord
//! lincheck --format tables` reads it from a file.
//!
//! Checks: no panic; a history that reads is checked to a verdict (the
//! input is small, so the search never needs its budget); a history that
//! reads pairs every completion with an earlier invocation of the same
//! process, operation and key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord::chaos::{history, kv, tables};

fuzz_target!(|data: &[u8]| {
    let Ok(ops) = history::read(data) else {
        return;
    };
    for op in &ops {
        if let Some((c, line)) = &op.complete {
            assert!(*line > op.invoke.1);
            assert_eq!(c.process, op.invoke.0.process);
            assert_eq!((c.f, &c.key), (op.invoke.0.f, &op.invoke.0.key));
        }
    }
    let _ = tables::check_tables(&ops);
    let _ = kv::check_keys(&ops, |_| true);
});
