//! The record format of log segments.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "RCLR" (little endian u32 0x524c4352)
//!      4     1  format version (1)
//!      5     1  entry kind (0 normal, 1 conf change, 2 empty)
//!      6     2  reserved, zero
//!      8     4  payload length
//!     12     4  CRC32C of the header (with this field zero) and the payload
//!     16     8  term
//!     24     8  index
//!     32     …  payload
//! ```
//!
//! Records follow each other without padding. A segment is preallocated
//! with zeros, so the end of the written part is an all-zero header.
//!
//! # Crash cases, and how a scan tells them apart
//!
//! - **Clean end**: an all-zero header, and only zeros after it.
//! - **Torn write**: a record that does not check out (short, bad CRC,
//!   garbage header) with only zeros after the extent it claims (or after
//!   its header, if the claimed length is impossible). The write that
//!   produced it never completed, so it was never acknowledged: the caller
//!   truncates it, *if* it is at the end of the last segment. The scan
//!   cannot tell a torn last record from a media error in the last record;
//!   both are reported as torn, with their offset, and logged loudly.
//! - **Corruption**: anything else — a bad record with data after it, a
//!   zero header followed by data, an index that does not continue the
//!   previous one, a term that goes backwards. Never skipped: the caller
//!   refuses to start and names the file, offset and index.

use bytes::Bytes;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::types::{Entry, EntryKind, Index, Term};

/// "RCLR" as a little-endian u32.
pub const RECORD_MAGIC: u32 = 0x524c_4352;
/// The format version this code writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Bytes in a record header.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Largest payload a record may carry (the entry limit of the core).
pub const RECORD_PAYLOAD_BYTES_MAX: usize = crate::constants::ENTRY_BYTES_MAX;

/// The fixed header before every payload.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecordHeader {
    magic: U32,
    version: u8,
    kind: u8,
    reserved: [u8; 2],
    payload_len: U32,
    crc: U32,
    term: U64,
    index: U64,
}

const _: () = assert!(std::mem::size_of::<RecordHeader>() == RECORD_HEADER_BYTES);

fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
        EntryKind::Empty => 2,
    }
}

fn kind_from_code(code: u8) -> Option<EntryKind> {
    Some(match code {
        0 => EntryKind::Normal,
        1 => EntryKind::ConfChange,
        2 => EntryKind::Empty,
        _ => return None,
    })
}

fn checksum(header: &RecordHeader, payload: &[u8]) -> u32 {
    let mut h = *header;
    h.crc = U32::new(0);
    crc32c::crc32c_append(crc32c::crc32c(h.as_bytes()), payload)
}

/// Appends the record for `entry` to `out`.
pub fn encode(entry: &Entry, out: &mut Vec<u8>) {
    assert!(
        entry.data.len() <= RECORD_PAYLOAD_BYTES_MAX,
        "entry larger than a record may be"
    );
    assert!(entry.index > 0, "index 0 is not an entry");
    let mut h = RecordHeader {
        magic: U32::new(RECORD_MAGIC),
        version: RECORD_VERSION,
        kind: kind_code(entry.kind),
        reserved: [0; 2],
        payload_len: U32::new(entry.data.len() as u32),
        crc: U32::new(0),
        term: U64::new(entry.term),
        index: U64::new(entry.index),
    };
    h.crc = U32::new(checksum(&h, &entry.data));
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&entry.data);
}

/// Bytes the record for `entry` takes.
pub fn encoded_len(entry: &Entry) -> usize {
    RECORD_HEADER_BYTES + entry.data.len()
}

/// How a scanned buffer ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Zeros from `end` on.
    Clean,
    /// A record that never finished writing starts at `end`.
    Torn {
        /// Why the record does not check out.
        reason: String,
    },
    /// Damage that is not a torn write, at `end`.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

/// One record found by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Where its header starts.
    pub offset: usize,
    /// The entry it holds.
    pub entry: Entry,
}

/// The result of scanning a segment's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Every valid record, in order.
    pub records: Vec<Found>,
    /// Where valid data ends (the next write goes here after recovery).
    pub end: usize,
    /// What follows `end`.
    pub tail: Tail,
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Scans `buf` (a whole segment) for records. `prev` is the (index, term) of
/// the record just before this segment, if any: indexes must continue it by
/// one and terms never go back.
pub fn scan(buf: &[u8], mut prev: Option<(Index, Term)>) -> Scan {
    let mut records = Vec::new();
    let mut p = 0usize;
    let stop = |records, end, tail| Scan { records, end, tail };
    loop {
        let rest = &buf[p..];
        if rest.len() < RECORD_HEADER_BYTES {
            let tail = if all_zero(rest) {
                Tail::Clean
            } else {
                Tail::Torn {
                    reason: format!("{} bytes of a header at the end", rest.len()),
                }
            };
            return stop(records, p, tail);
        }
        let (header, after) = RecordHeader::read_from_prefix(rest).expect("length checked");
        if all_zero(header.as_bytes()) {
            let tail = if all_zero(after) {
                Tail::Clean
            } else {
                Tail::Corrupt {
                    reason: "an all-zero header followed by data".into(),
                }
            };
            return stop(records, p, tail);
        }
        let len = header.payload_len.get() as usize;
        let bad = if header.magic.get() != RECORD_MAGIC {
            Some("bad magic".to_string())
        } else if header.version != RECORD_VERSION {
            Some(format!("unknown format version {}", header.version))
        } else if len > RECORD_PAYLOAD_BYTES_MAX {
            Some(format!("payload length {len} exceeds the limit"))
        } else if len > after.len() {
            Some(format!("payload of {len} bytes, {} present", after.len()))
        } else if checksum(&header, &after[..len]) != header.crc.get() {
            Some("checksum mismatch".to_string())
        } else if kind_from_code(header.kind).is_none() {
            Some(format!("unknown entry kind {}", header.kind))
        } else {
            None
        };
        if let Some(reason) = bad {
            // Torn iff nothing but zeros follows what this record claims.
            let claimed_end = if len <= after.len() { len } else { 0 };
            let tail = if all_zero(&after[claimed_end..]) {
                Tail::Torn { reason }
            } else {
                Tail::Corrupt { reason }
            };
            return stop(records, p, tail);
        }
        let (index, term) = (header.index.get(), header.term.get());
        if index == 0 {
            let reason = "a record for index 0, which is not an entry".to_string();
            return stop(records, p, Tail::Corrupt { reason });
        }
        if let Some((pi, pt)) = prev {
            if pi.checked_add(1) != Some(index) || term < pt {
                let reason = format!("record {index}@{term} does not follow {pi}@{pt}");
                return stop(records, p, Tail::Corrupt { reason });
            }
        }
        let kind = kind_from_code(header.kind).expect("checked above");
        let data = Bytes::copy_from_slice(&after[..len]);
        records.push(Found {
            offset: p,
            entry: Entry {
                term,
                index,
                kind,
                data,
            },
        });
        prev = Some((index, term));
        p += RECORD_HEADER_BYTES + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term, len: usize) -> Entry {
        let data: Vec<u8> = (0..len)
            .map(|i| (i * 7 + index as usize) as u8 | 1)
            .collect();
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(data),
        }
    }

    /// A segment image: `n` records of `len` bytes, then `zeros` of padding.
    fn image(n: u64, len: usize, zeros: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for i in 1..=n {
            encode(&entry(i, 1 + i / 3, len), &mut buf);
            ends.push(buf.len());
        }
        buf.extend(std::iter::repeat_n(0, zeros));
        (buf, ends)
    }

    #[test]
    fn round_trip_with_clean_end() {
        let (buf, ends) = image(5, 100, 4096);
        let s = scan(&buf, None);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(s.records.len(), 5);
        assert_eq!(s.end, *ends.last().unwrap());
        assert_eq!(s.records[4].entry, entry(5, 2, 100));
    }

    #[test]
    fn torn_tail_at_every_byte_offset_keeps_exactly_the_complete_records() {
        for len in [0, 1, 31, 32, 33, 200] {
            let (full, ends) = image(4, len, 0);
            let last_start = ends[2];
            // Cut the last record at every offset; the rest of the
            // preallocated segment is zeros.
            for cut in last_start..full.len() {
                let mut buf = full[..cut].to_vec();
                buf.extend(std::iter::repeat_n(0, 512));
                let s = scan(&buf, None);
                // Trailing zero bytes of a record may already be "written":
                // the record is complete when the image says so.
                if buf[..full.len()] == full[..] {
                    assert_eq!(s.records.len(), 4, "len {len} cut {cut}");
                    assert_eq!(s.tail, Tail::Clean);
                    continue;
                }
                assert_eq!(s.records.len(), 3, "len {len} cut {cut}");
                assert_eq!(s.end, last_start, "len {len} cut {cut}");
                match (&s.tail, cut == last_start) {
                    (Tail::Clean, true) => {}
                    (Tail::Torn { .. }, false) => {}
                    other => panic!("len {len} cut {cut}: {other:?}"),
                }
            }
            // And the complete record is found whole.
            let mut buf = full.clone();
            buf.extend(std::iter::repeat_n(0, 512));
            assert_eq!(scan(&buf, None).records.len(), 4);
        }
    }

    #[test]
    fn a_flipped_bit_before_the_tail_is_corruption() {
        let (buf, ends) = image(6, 64, 256);
        for byte in [ends[1] + 3, ends[1] + 20, ends[1] + 40, ends[2] - 1] {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                let s = scan(&b, None);
                assert!(
                    matches!(s.tail, Tail::Corrupt { .. }),
                    "byte {byte} bit {bit}: {:?}",
                    s.tail
                );
                assert_eq!(s.end, ends[1], "the damaged record is the third");
                assert_eq!(s.records.len(), 2);
            }
        }
    }

    #[test]
    fn records_must_continue_the_previous_index_and_never_lower_the_term() {
        let mut buf = Vec::new();
        encode(&entry(1, 2, 8), &mut buf);
        encode(&entry(3, 2, 8), &mut buf);
        assert!(matches!(scan(&buf, None).tail, Tail::Corrupt { .. }));
        let mut buf = Vec::new();
        encode(&entry(5, 3, 8), &mut buf);
        assert!(matches!(
            scan(&buf, Some((4, 4))).tail,
            Tail::Corrupt { .. }
        ));
        assert_eq!(scan(&buf, Some((4, 3))).records.len(), 1);
    }

    #[test]
    fn a_zero_header_followed_by_data_is_corruption() {
        let (mut buf, ends) = image(3, 16, 64);
        buf[ends[0]..ends[0] + RECORD_HEADER_BYTES].fill(0);
        assert!(matches!(scan(&buf, None).tail, Tail::Corrupt { .. }));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/log_segment.rs): a record for
    /// index 0 (which `encode` refuses to write) was taken for an entry,
    /// and a record after one for index u64::MAX overflowed `pi + 1`.
    #[test]
    fn index_zero_and_an_index_after_u64_max_are_corruption() {
        let raw = |index: Index, term: Term| {
            let mut h = RecordHeader {
                magic: U32::new(RECORD_MAGIC),
                version: RECORD_VERSION,
                kind: 0,
                reserved: [0; 2],
                payload_len: U32::new(0),
                crc: U32::new(0),
                term: U64::new(term),
                index: U64::new(index),
            };
            h.crc = U32::new(checksum(&h, &[]));
            h.as_bytes().to_vec()
        };
        let s = scan(&raw(0, 1), None);
        assert!(matches!(s.tail, Tail::Corrupt { .. }), "{:?}", s.tail);
        assert!(s.records.is_empty());
        let mut buf = raw(u64::MAX, 1);
        buf.extend(raw(1, 1));
        let s = scan(&buf, None);
        assert_eq!(s.records.len(), 1);
        assert!(matches!(s.tail, Tail::Corrupt { .. }), "{:?}", s.tail);
        let s = scan(&raw(1, 1), Some((u64::MAX, 1)));
        assert!(matches!(s.tail, Tail::Corrupt { .. }), "{:?}", s.tail);
    }
}
