//! `ramcoord::master::serve_log::read` and `chaos::serve::check_serving`:
//! masters' serve logs (JSON lines) as `ramcoord chaos` reads them from
//! the masters' files.
//!
//! Checks: no panic; every request a log that reads says was served is
//! counted, and each violation kept is one of the two kinds counted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord::chaos::serve;
use ramcoord::master::serve_log::{self, ServeWhat};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(events) = serve_log::read(text) else {
        return;
    };
    let served = events
        .iter()
        .filter(|e| matches!(e.what, ServeWhat::Served { .. }))
        .count() as u64;
    let c = serve::check_serving(&events);
    assert_eq!(c.served, served);
    assert!(c.evidence.len() as u64 <= c.violations());
});
