//! `ramcoord::snapshot_file::Backup::decode`: a backup file as `ramcoord
//! restore` and `ctl snapshot status` read it (an operator's disk, or a
//! file from anywhere).
//!
//! Checks: no panic; what decodes re-encodes to the same bytes (nothing in
//! a backup is ignored), and its state restores.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord::snapshot_file::Backup;

fuzz_target!(|data: &[u8]| {
    let Ok(b) = Backup::decode(data) else {
        return;
    };
    assert_eq!(b.encode(), data, "a backup re-encodes to its bytes");
    b.cluster_state().expect("decode checked the state");
});
