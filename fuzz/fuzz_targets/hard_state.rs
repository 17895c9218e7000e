//! `ramcoord_log::disk::hard_state::HardStateFile::open`: the two-slot
//! hard-state file (term, vote, commit) as read back from disk at start.
//! The input is the file's contents; it goes through a real file (in
//! `/dev/shm` where there is one, so no disk I/O) because the decoder is
//! reached through `open`.
//!
//! Checks: no panic; if the file opens, a durable save of a new state and
//! a reopen return that state (what the Raft core relies on for its vote),
//! and so does an unsynced commit-index hint after it. Run on the input as
//! given and with both slots' checksums recomputed.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ramcoord_fuzz::{fix_hard_state_crcs, fresh_dir, scratch_dir};
use ramcoord_log::disk::hard_state::{HardStateError, HardStateFile};
use ramcoord_log::HardState;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = scratch_dir("hard-state");
        fresh_dir(&dir);
        dir.join("hardstate")
    })
}

fn check(image: &[u8]) {
    let path = path();
    std::fs::write(path, image).expect("write the image");
    let Ok((mut f, hs)) = HardStateFile::open(path) else {
        return;
    };
    let next = HardState {
        term: hs.term.saturating_add(1),
        vote: Some(3),
        commit: hs.commit,
    };
    match f.save(next) {
        Ok(()) => {}
        // The file's sequence number is one short of u64::MAX: refused.
        Err(HardStateError::SeqExhausted { .. }) => return,
        Err(e) => panic!("save on a file that opened: {e}"),
    }
    drop(f);
    let (mut f, got) = HardStateFile::open(path).expect("reopen after a save");
    assert_eq!(got, next, "the state saved last (opened {hs:?})");
    let hint = HardState {
        commit: next.commit.saturating_add(5),
        ..next
    };
    match f.save_unsynced(hint) {
        Ok(()) => {}
        // The save above took the last sequence number.
        Err(HardStateError::SeqExhausted { .. }) => return,
        Err(e) => panic!("unsynced save: {e}"),
    }
    drop(f);
    let (_, got) = HardStateFile::open(path).expect("reopen after a hint");
    assert_eq!(got, hint, "the hint written last (opened {hs:?})");
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = fix_hard_state_crcs(data);
    if fixed != data {
        check(&fixed);
    }
});
