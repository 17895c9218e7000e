//! `ramcoord::cluster::Record::decode`: a coordinator record as read from
//! a committed log entry (which came from a peer or from disk), and
//! `ClusterState::apply` of the entry, which must be total.
//!
//! Checks: no panic; a decoded record re-encodes to a record that decodes
//! to the same value; applying the bytes to an empty state and to a small
//! populated one (servers, tables, an incomplete operation) leaves the
//! state's invariants (`ClusterState::check`) holding.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ramcoord::cluster::{ClusterState, Record};
use ramcoord_fuzz::seeds;

fn populated() -> &'static ClusterState {
    static STATE: OnceLock<ClusterState> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut s = ClusterState::default();
        for (i, r) in seeds::cluster_history().iter().enumerate() {
            s.apply(i as u64 + 1, &r.encode().expect("seed records encode"));
        }
        s.check().expect("the seed history keeps the invariants");
        s
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::decode(data) {
        let _ = r.check();
        let _ = (r.clone(), format!("{r:?}"));
        if let Some(op) = r.op() {
            let _ = (op.kind(), op.summary(), r.rpc());
        }
        if let Ok(again) = r.encode() {
            assert_eq!(Record::decode(&again), Ok(r), "re-encoded record");
        }
    }
    for base in [&ClusterState::default(), populated()] {
        let mut s = base.clone();
        let index = s.applied_index() + 1;
        let outcome = s.apply(index, data);
        if let Err(e) = s.check() {
            panic!("invariant broken after applying {outcome:?}: {e}");
        }
    }
});
