//! `ramcoord::cluster::ClusterState::apply` over a sequence of entries:
//! the coordinator state machine driven by whatever a log may hold. The
//! input is a list of entry payloads (`ramcoord_fuzz::chunks`), applied at
//! indexes 1, 2, ...
//!
//! Checks: no panic; the invariants (`ClusterState::check`) hold after
//! every entry; at the end, the state survives a snapshot and restore
//! unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord::cluster::ClusterState;
use ramcoord_fuzz::chunks;

fuzz_target!(|data: &[u8]| {
    let mut s = ClusterState::default();
    for (i, entry) in chunks(data).into_iter().enumerate() {
        let outcome = s.apply(i as u64 + 1, entry);
        if let Err(e) = s.check() {
            panic!("invariant broken after entry {} ({outcome:?}): {e}", i + 1);
        }
    }
    let restored = ClusterState::restore(&s.snapshot()).expect("a state's own snapshot restores");
    assert_eq!(restored, s, "snapshot round trip");
});
