//! `ramcoord_log::disk::record::scan`: a log segment's bytes as read back
//! from disk (record headers, checksums, the torn-or-corrupt verdict), and
//! `ConfChange::decode` on each configuration entry found.
//!
//! Checks: no panic; the records found re-encode to exactly the bytes they
//! were read from, follow each other and continue `prev`; `end` is where
//! the last one ends; and recovery's repair (zeroing a torn tail) yields a
//! segment that scans to the same records with a clean end. Run on the
//! input as given and with every record's checksum recomputed. The input
//! is 16 bytes of `prev` (a previous segment's last record: index, term,
//! little-endian; an index of zero means none), then the segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord_fuzz::fix_log_record_crcs;
use ramcoord_log::disk::record::{encode, scan, Tail};
use ramcoord_log::{ConfChange, EntryKind};

fn check(buf: &[u8], prev: Option<(u64, u64)>) {
    let s = scan(buf, prev);
    assert!(s.end <= buf.len());
    let mut p = 0;
    let mut last = prev;
    for r in &s.records {
        assert_eq!(r.offset, p, "records follow each other");
        let mut again = Vec::new();
        encode(&r.entry, &mut again);
        // The reader does not insist on the reserved bytes (6..8) being
        // zero, and the checksum covers them: compare the rest.
        let mut read = buf[p..p + again.len()].to_vec();
        read[6..8].fill(0);
        read[12..16].copy_from_slice(&again[12..16]);
        assert_eq!(read, again, "record at {p} re-encodes");
        if let Some((i, t)) = last {
            assert_eq!(Some(r.entry.index), i.checked_add(1), "indexes continue");
            assert!(r.entry.term >= t, "terms never go back");
        }
        if r.entry.kind == EntryKind::ConfChange {
            let _ = ConfChange::decode(&r.entry.data);
        }
        last = Some((r.entry.index, r.entry.term));
        p += again.len();
    }
    assert_eq!(s.end, p, "end is after the last record");
    if matches!(s.tail, Tail::Torn { .. } | Tail::Clean) {
        // What open does with a torn tail of the last segment.
        let mut repaired = buf.to_vec();
        repaired[s.end..].fill(0);
        let again = scan(&repaired, prev);
        assert_eq!(again.records, s.records, "records after the repair");
        assert_eq!(again.tail, Tail::Clean, "tail after the repair");
    }
}

fuzz_target!(|data: &[u8]| {
    let (prev, seg) = match data.split_first_chunk::<16>() {
        Some((p, rest)) if p[..8] != [0; 8] => {
            let index = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
            let term = u64::from_le_bytes(p[8..].try_into().expect("8 bytes"));
            (Some((index, term)), rest)
        }
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    check(seg, prev);
    let fixed = fix_log_record_crcs(seg);
    if fixed != seg {
        check(&fixed, prev);
    }
});
