//! `ramcoord::cluster::ClusterState::restore`: a snapshot of the cluster
//! state, as installed from a leader's snapshot (network) or read back at
//! start (disk).
//!
//! Checks: no panic; a restored state snapshots to bytes that restore to
//! the same state; the restored state then takes a completion of each of
//! its incomplete operations and a split, migration, crash, removal, drop
//! of its tables and servers (`ramcoord_fuzz::seeds::probe_records`)
//! without panicking and with its invariants holding after each: what
//! `restore` accepts, the state machine must be able to go on from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord::cluster::ClusterState;
use ramcoord_fuzz::seeds::probe_records;

fuzz_target!(|data: &[u8]| {
    let Ok(mut s) = ClusterState::restore(data) else {
        return;
    };
    let again = ClusterState::restore(&s.snapshot()).expect("a restored state snapshots");
    assert_eq!(again, s, "snapshot round trip");
    for r in probe_records(&s) {
        let Some(index) = s.applied_index().checked_add(1) else {
            return;
        };
        let outcome = s.apply(index, &r.encode().expect("probe records encode"));
        if let Err(e) = s.check() {
            panic!("invariant broken after applying {r:?} ({outcome:?}) to a restored state: {e}");
        }
    }
});
