//! `ramcoord::lincheck::jepsen::parse`: a Jepsen register history file as
//! `ramcoord lincheck` reads it from disk (UTF-8 text).
//!
//! Checks: no panic; an error names a line of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord::lincheck::jepsen::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(h) => assert_eq!(h.lines.len(), text.lines().count()),
        Err(e) => assert!(
            e.line >= 1 && e.line as usize <= text.lines().count(),
            "error on line {} of {}",
            e.line,
            text.lines().count()
        ),
    }
});
