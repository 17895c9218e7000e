//! `ramcoord_log::disk::DiskStorage::open`: a whole data directory as a
//! replica finds it at start: the hard-state file, the snapshot file (its
//! decoder is private to `open`), and log segments, with every repair open
//! makes (torn tails, empty last segments, records the snapshot replaced).
//!
//! The input is a list of chunks (`ramcoord_fuzz::chunks`): the hard-state
//! file; the snapshot file (a first byte 0 means no file, else the file is
//! the rest); then one chunk per segment: its first index (u64 LE, the
//! file's name) and its contents.
//!
//! Checks: no panic; if the directory opens, its entries can be read
//! back, a second open finds nothing more to repair and the same log,
//! and an entry appended after the repair is there after a third open.
//! Run on the input as given and with every checksum recomputed.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ramcoord_fuzz::{
    chunks, fix_hard_state_crcs, fix_log_record_crcs, fix_snapshot_file_crc, fresh_dir, scratch_dir,
};
use ramcoord_log::disk::{BackendChoice, DiskStorage};
use ramcoord_log::{Entry, EntryKind, Storage};

const SEGMENT_BYTES: u64 = 4096;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir("disk-open"))
}

fn open() -> Result<(DiskStorage, ramcoord_log::disk::Recovery), ramcoord_log::disk::OpenError> {
    DiskStorage::open_with(dir(), SEGMENT_BYTES, BackendChoice::Std)
}

fn log_of(s: &DiskStorage) -> Vec<Entry> {
    let (first, last) = (s.first_index(), s.last_index());
    assert!(
        first <= last.saturating_add(1),
        "first {first}, last {last}"
    );
    if first > last {
        return Vec::new();
    }
    let hi = last.checked_add(1).expect("an index below u64::MAX");
    let entries = s.entries(first, hi, u64::MAX).expect("entries in range");
    assert_eq!(entries.len() as u64, last - first + 1, "every entry read");
    for (e, i) in entries.iter().zip(first..) {
        assert_eq!(e.index, i, "entries in order");
        assert_eq!(s.term(i), Ok(e.term), "term of {i}");
    }
    entries
}

fn check(parts: &[Vec<u8>]) {
    let dir = dir();
    fresh_dir(dir);
    std::fs::create_dir_all(dir.join("log")).expect("log dir");
    let mut it = parts.iter();
    if let Some(hs) = it.next() {
        std::fs::write(dir.join("hardstate"), hs).expect("write hardstate");
    }
    if let Some(snap) = it.next() {
        if let Some((&present, file)) = snap.split_first() {
            if present != 0 {
                std::fs::write(dir.join("snapshot"), file).expect("write snapshot");
            }
        }
    }
    for seg in it.take(4) {
        let Some((first, body)) = seg.split_first_chunk::<8>() else {
            continue;
        };
        let name = format!("{:020}.seg", u64::from_le_bytes(*first));
        std::fs::write(dir.join("log").join(name), body).expect("write segment");
    }

    let Ok((s, _recovery)) = open() else {
        return;
    };
    let log = log_of(&s);
    let state = s.initial_state();
    let snapshot = s.snapshot();
    drop(s);

    let (mut s, recovery) = open().expect("a repaired directory opens again");
    assert_eq!(recovery, Default::default(), "nothing left to repair");
    assert_eq!(log_of(&s), log, "the same log after a reopen");
    assert_eq!(s.initial_state(), state, "the same state after a reopen");
    assert_eq!(s.snapshot(), snapshot, "the same snapshot after a reopen");

    let last = s.last_index();
    let Some(next) = last.checked_add(1).filter(|n| *n < u64::MAX) else {
        return;
    };
    let term = s.term(last).expect("the last entry's term");
    let e = Entry {
        term,
        index: next,
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"appended after recovery"),
    };
    if s.append(std::slice::from_ref(&e)).is_err() || s.sync().is_err() {
        return;
    }
    drop(s);
    let (s, _) = open().expect("opens after an append");
    assert_eq!(s.last_index(), next, "the appended entry is there");
    assert_eq!(s.entries(next, next + 1, u64::MAX), Ok(vec![e]));
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<Vec<u8>> = chunks(data).into_iter().map(<[u8]>::to_vec).collect();
    check(&parts);
    let fixed: Vec<Vec<u8>> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| match i {
            0 => fix_hard_state_crcs(p),
            1 if p.len() > 1 => {
                let mut f = vec![p[0]];
                f.extend(fix_snapshot_file_crc(&p[1..]));
                f
            }
            1 => p.clone(),
            _ if p.len() > 8 => {
                let mut f = p[..8].to_vec();
                f.extend(fix_log_record_crcs(&p[8..]));
                f
            }
            _ => p.clone(),
        })
        .collect();
    if fixed != parts {
        check(&fixed);
    }
});
