//! The message ring: how one peer's messages reach another by one-sided
//! writes (RDMA WRITE) into memory the receiver registered, with no
//! receive buffer posted per message. Sans-IO: the bookkeeping of both
//! ends, over any memory; the RDMA transport moves the bytes.
//!
//! Raft's appends (the log entries) travel this way: the leader writes
//! them into each follower's ring; the follower's transport reads them
//! out, checks them and hands them to the replica, which persists them
//! per its durability mode. Acknowledgements and votes travel the same
//! ring in the other direction (each direction is its own connection and
//! ring).
//!
//! # Layout (one ring per connection, owned by the receiver)
//!
//! ```text
//! offset  size  field
//!      0     8  tail: the writer's logical position after its last frame (u64 LE)
//!      8    56  reserved (zero)
//!     64   cap  data: frames at logical position p live at 64 + p % cap
//! ```
//!
//! A frame is `len: u32 LE | crc: u32 LE | payload | zero padding to 8
//! bytes`, where `crc` is CRC32C over the length's four bytes and the
//! payload. A frame never wraps: when one does not fit before the end of
//! the data area, the writer puts a *pad* header there (`len = u32::MAX`,
//! `crc` = [`PAD_CRC`]) and the frame goes at the start of the next lap.
//! Frames and the data area are multiples of 8 bytes, so a pad header
//! always fits.
//!
//! # Who owns which bytes, and when a slot can be reused
//!
//! - Logical positions `[head, tail)` hold frames the writer has written
//!   and the reader has not yet consumed: the writer never touches them.
//! - The reader owns `[head, tail)` until it has copied each frame out;
//!   then it advances `head` and, once it has consumed a quarter of the
//!   ring since it last did so, tells the writer `head` (a *credit*, a
//!   two-sided message on the same connection).
//! - The writer may write at `[tail, acked_head + cap)`: bytes below the
//!   last credit were consumed. It blocks (waits for a credit) when a frame
//!   does not fit. A frame is at most a quarter of the ring, so a blocked
//!   writer has more than a quarter outstanding and a credit is coming.
//! - The tail word is written after the frames, by a write that carries an
//!   immediate value (RDMA WRITE WITH IMMEDIATE): the immediate wakes the
//!   reader, and the queue pair's ordering means every frame below the new
//!   tail has landed when the reader sees it. The reader still checks every
//!   frame's length and checksum: a frame that does not check out is bad
//!   input and the connection is closed.
//!
//! Durability: none here. A frame in the ring is in the receiver's memory
//! only; the replica makes its entries durable per its durability mode
//! before acknowledging them.

use bytes::Bytes;

/// Bytes before the data area (the tail word and reserved space).
pub const RING_HEADER_BYTES: usize = 64;
/// Bytes of a frame's header (length, checksum).
pub const FRAME_HEADER_BYTES: usize = 8;
/// The length field of a pad header.
pub const PAD_LEN: u32 = u32::MAX;
/// The checksum field of a pad header (a fixed pattern, so a zeroed or
/// garbage header is not taken for one).
pub const PAD_CRC: u32 = 0x5041_4452; // "PADR"

/// The bytes a frame of `payload` bytes occupies in the ring.
pub fn frame_bytes(payload: usize) -> usize {
    (FRAME_HEADER_BYTES + payload).div_ceil(8) * 8
}

fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload)
}

/// Writes the frame of `payload` at the start of `out` (which must hold
/// [`frame_bytes`]`(payload.len())` bytes); returns its length.
pub fn encode_frame(payload: &[u8], out: &mut [u8]) -> usize {
    let n = frame_bytes(payload.len());
    let len = payload.len() as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&frame_crc(len, payload).to_le_bytes());
    out[8..8 + payload.len()].copy_from_slice(payload);
    out[8 + payload.len()..n].fill(0);
    n
}

/// A pad header.
pub fn pad_header() -> [u8; FRAME_HEADER_BYTES] {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h[..4].copy_from_slice(&PAD_LEN.to_le_bytes());
    h[4..].copy_from_slice(&PAD_CRC.to_le_bytes());
    h
}

/// Where the writer puts its next frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// A pad header goes at this data offset first (the frame wraps).
    pub pad_at: Option<usize>,
    /// The frame's data offset.
    pub offset: usize,
    /// The frame's length in the ring.
    pub bytes: usize,
    /// The tail after the frame.
    pub tail: u64,
}

/// Why a frame cannot be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// Larger than a quarter of the ring: never fits.
    #[error("a message of {len} bytes exceeds the ring's limit of {max}")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload.
        max: usize,
    },
    /// No room until the reader's next credit.
    #[error("the ring is full until the reader returns credit")]
    Full,
}

/// The tail a post's immediate names: the sender puts the new tail's low
/// 32 bits in the immediate of the post that moves it there, and tails
/// only grow, by at most one ring (far less than 2³²) per post. So the
/// full tail is the value at or after `seen` (the last tail known) whose
/// low 32 bits are `imm`.
pub fn tail_from_imm(seen: u64, imm: u32) -> u64 {
    let t = (seen & !0xffff_ffff) | imm as u64;
    if t < seen {
        t.wrapping_add(1 << 32)
    } else {
        t
    }
}

/// The writer's side of a ring (see the module docs).
#[derive(Clone, Debug)]
pub struct RingWriter {
    cap: u64,
    tail: u64,
    acked_head: u64,
}

/// The largest payload a ring of `cap` data bytes carries.
pub fn payload_max(cap: usize) -> usize {
    cap / 4 - FRAME_HEADER_BYTES
}

impl RingWriter {
    /// A writer for an empty ring of `cap` data bytes (a multiple of 8).
    pub fn new(cap: usize) -> RingWriter {
        assert!(
            cap >= 64 && cap % 8 == 0,
            "ring capacity {cap} must be a multiple of 8, at least 64"
        );
        RingWriter {
            cap: cap as u64,
            tail: 0,
            acked_head: 0,
        }
    }

    /// The logical position after the last frame placed.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Bytes written and not yet credited.
    pub fn outstanding(&self) -> u64 {
        self.tail - self.acked_head
    }

    /// Places a frame of `len` payload bytes, advancing the tail, or says
    /// why not (nothing changes then).
    pub fn place(&mut self, len: usize) -> Result<Placement, PlaceError> {
        let max = payload_max(self.cap as usize);
        if len > max {
            return Err(PlaceError::TooLarge { len, max });
        }
        let bytes = frame_bytes(len);
        let at = (self.tail % self.cap) as usize;
        let left = self.cap as usize - at;
        let (pad_at, offset, need) = if bytes <= left {
            (None, at, bytes)
        } else {
            (Some(at), 0, left + bytes)
        };
        if self.outstanding() + need as u64 > self.cap {
            return Err(PlaceError::Full);
        }
        self.tail += need as u64;
        Ok(Placement {
            pad_at,
            offset,
            bytes,
            tail: self.tail,
        })
    }

    /// The reader consumed everything below `head`. A credit that goes
    /// back, or past what was written, is bad input.
    pub fn on_credit(&mut self, head: u64) -> Result<(), RingError> {
        if head < self.acked_head || head > self.tail {
            return Err(RingError::BadCredit {
                head,
                acked: self.acked_head,
                tail: self.tail,
            });
        }
        self.acked_head = head;
        Ok(())
    }
}

/// Why one side refused what the other did to the ring (the connection is
/// closed: a peer that breaks the protocol is not trusted further).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The reader's credit went back, or past what was written.
    #[error("credit {head} outside [{acked}, {tail}]")]
    BadCredit {
        /// The head the credit names.
        head: u64,
        /// The head credited before.
        acked: u64,
        /// What the writer has written.
        tail: u64,
    },
    /// The tail went back or ran more than a ring ahead.
    #[error("tail {tail} is not within a ring ahead of head {head}")]
    BadTail {
        /// The tail read.
        tail: u64,
        /// The reader's head.
        head: u64,
    },
    /// A frame header, length or checksum does not check out.
    #[error("bad frame at {at}: {why}")]
    BadFrame {
        /// Its logical position.
        at: u64,
        /// What is wrong.
        why: &'static str,
    },
}

/// The reader's side of a ring (see the module docs).
#[derive(Clone, Debug)]
pub struct RingReader {
    cap: u64,
    head: u64,
    credited: u64,
}

impl RingReader {
    /// A reader for an empty ring of `cap` data bytes.
    pub fn new(cap: usize) -> RingReader {
        RingReader {
            cap: cap as u64,
            head: 0,
            credited: 0,
        }
    }

    /// The logical position of the next frame to read.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Reads every frame in `[head, tail)` through `read(data_offset,
    /// buf)` (which fills `buf` from the data area), appending the payloads
    /// to `out`. Stops at the first frame that does not check out.
    pub fn read(
        &mut self,
        tail: u64,
        mut read: impl FnMut(usize, &mut [u8]),
        out: &mut Vec<Bytes>,
    ) -> Result<(), RingError> {
        if tail < self.head || tail - self.head > self.cap {
            return Err(RingError::BadTail {
                tail,
                head: self.head,
            });
        }
        let max = payload_max(self.cap as usize);
        while self.head < tail {
            let at = (self.head % self.cap) as usize;
            let left = self.cap as usize - at;
            let mut h = [0u8; FRAME_HEADER_BYTES];
            if left < FRAME_HEADER_BYTES || self.head + FRAME_HEADER_BYTES as u64 > tail {
                return Err(self.bad("truncated header"));
            }
            read(at, &mut h);
            let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(h[4..].try_into().expect("4 bytes"));
            if len == PAD_LEN {
                if crc != PAD_CRC {
                    return Err(self.bad("bad pad header"));
                }
                if self.head + left as u64 > tail {
                    return Err(self.bad("pad past the tail"));
                }
                self.head += left as u64;
                continue;
            }
            if len as usize > max {
                return Err(self.bad("length over the limit"));
            }
            let bytes = frame_bytes(len as usize);
            if bytes > left || self.head + bytes as u64 > tail {
                return Err(self.bad("frame past the tail or the ring's end"));
            }
            let mut payload = vec![0u8; len as usize];
            read(at + FRAME_HEADER_BYTES, &mut payload);
            if frame_crc(len, &payload) != crc {
                return Err(self.bad("checksum mismatch"));
            }
            out.push(Bytes::from(payload));
            self.head += bytes as u64;
        }
        Ok(())
    }

    fn bad(&self, why: &'static str) -> RingError {
        RingError::BadFrame { at: self.head, why }
    }

    /// The head to credit back to the writer, if a quarter of the ring has
    /// been consumed since the last credit.
    pub fn credit_due(&mut self) -> Option<u64> {
        if self.head - self.credited >= self.cap / 4 {
            self.credited = self.head;
            Some(self.head)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// However far a tail moves per post (up to a ring), the immediate's
        /// 32 bits recover it, across the 2³² wrap too.
        #[test]
        fn a_tail_is_recovered_from_its_immediate(start in 0u64..(1 << 40), steps in proptest::collection::vec(0u64..(16 << 20), 1..64)) {
            let mut seen = start;
            for step in steps {
                let tail = seen + step;
                prop_assert_eq!(tail_from_imm(seen, tail as u32), tail);
                seen = tail;
            }
        }
    }

    #[test]
    fn a_tail_across_the_wrap_is_recovered() {
        let seen = (1u64 << 32) - 8;
        assert_eq!(tail_from_imm(seen, 16), (1 << 32) + 16);
        assert_eq!(tail_from_imm(seen, (seen as u32) + 4), seen + 4);
        assert_eq!(tail_from_imm(seen, seen as u32), seen);
    }

    /// Memory standing in for the receiver's registered data area.
    struct Mem(Vec<u8>);

    impl Mem {
        fn put(&mut self, w: &mut RingWriter, payload: &[u8]) -> Result<Placement, PlaceError> {
            let p = w.place(payload.len())?;
            if let Some(at) = p.pad_at {
                self.0[at..at + FRAME_HEADER_BYTES].copy_from_slice(&pad_header());
            }
            encode_frame(payload, &mut self.0[p.offset..p.offset + p.bytes]);
            Ok(p)
        }
        fn take(&self, r: &mut RingReader, tail: u64) -> Result<Vec<Bytes>, RingError> {
            let mut out = Vec::new();
            r.read(
                tail,
                |at, buf| buf.copy_from_slice(&self.0[at..at + buf.len()]),
                &mut out,
            )?;
            Ok(out)
        }
    }

    #[test]
    fn frames_wrap_with_a_pad_and_arrive_whole() {
        let cap = 256;
        let mut m = Mem(vec![0; cap]);
        let (mut w, mut r) = (RingWriter::new(cap), RingReader::new(cap));
        let a = vec![1u8; 40]; // 48 bytes
        for _ in 0..4 {
            m.put(&mut w, &a).unwrap();
        }
        assert_eq!(m.take(&mut r, w.tail()).unwrap().len(), 4);
        w.on_credit(r.head()).unwrap();
        // 192 used; 64 left; a 56-byte frame fits, the next wraps.
        let b = vec![2u8; 48];
        m.put(&mut w, &b).unwrap();
        let p = m.put(&mut w, &b).unwrap();
        assert_eq!(p.pad_at, Some(248));
        assert_eq!(p.offset, 0);
        let got = m.take(&mut r, w.tail()).unwrap();
        assert_eq!(got, vec![Bytes::from(b.clone()), Bytes::from(b)]);
    }

    #[test]
    fn a_full_ring_waits_for_credit_and_oversized_messages_are_refused() {
        let cap = 256;
        let mut m = Mem(vec![0; cap]);
        let (mut w, mut r) = (RingWriter::new(cap), RingReader::new(cap));
        assert!(matches!(
            w.place(payload_max(cap) + 1),
            Err(PlaceError::TooLarge { .. })
        ));
        let x = vec![7u8; payload_max(cap)]; // 64 bytes a frame
        for _ in 0..4 {
            m.put(&mut w, &x).unwrap();
        }
        assert_eq!(w.place(1), Err(PlaceError::Full));
        m.take(&mut r, w.tail()).unwrap();
        let c = r.credit_due().expect("a whole ring consumed");
        w.on_credit(c).unwrap();
        assert!(w.place(1).is_ok());
        assert!(w.on_credit(c - 8).is_err(), "a credit may not go back");
        assert!(w.on_credit(w.tail() + 8).is_err(), "nor run past the tail");
    }

    #[test]
    fn corrupt_frames_and_tails_are_refused() {
        let cap = 256;
        let mut m = Mem(vec![0; cap]);
        let (mut w, r) = (RingWriter::new(cap), RingReader::new(cap));
        m.put(&mut w, b"hello").unwrap();
        let mut bad = Mem(m.0.clone());
        bad.0[9] ^= 1;
        assert!(matches!(
            bad.take(&mut r.clone(), w.tail()),
            Err(RingError::BadFrame {
                why: "checksum mismatch",
                ..
            })
        ));
        let mut zero = Mem(vec![0; cap]);
        zero.0[0] = 200; // a length pointing past the tail
        assert!(zero.take(&mut r.clone(), 16).is_err());
        assert!(matches!(
            m.take(&mut r.clone(), cap as u64 + 8),
            Err(RingError::BadTail { .. })
        ));
        // A tail inside a frame: the frame is not complete yet, refused.
        assert!(m.take(&mut r.clone(), 8).is_err());
    }

    proptest! {
        /// Any sequence of messages, credits taken at any points: the
        /// reader gets exactly the messages, in order, and the writer never
        /// overwrites a frame the reader has not consumed.
        #[test]
        fn the_reader_gets_every_message_in_order(
            sizes in proptest::collection::vec(0usize..=120, 1..200),
            read_every in 1usize..8,
        ) {
            let cap = 512;
            let mut m = Mem(vec![0xEE; cap]);
            let (mut w, mut r) = (RingWriter::new(cap), RingReader::new(cap));
            let mut sent = Vec::new();
            let mut got = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let payload: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
                loop {
                    match m.put(&mut w, &payload) {
                        Ok(_) => break,
                        Err(PlaceError::Full) => {
                            got.extend(m.take(&mut r, w.tail()).unwrap());
                            let c = r.credit_due().expect("a blocked writer is owed credit");
                            w.on_credit(c).unwrap();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                sent.push(Bytes::from(payload));
                if i % read_every == 0 {
                    got.extend(m.take(&mut r, w.tail()).unwrap());
                    if let Some(c) = r.credit_due() {
                        w.on_credit(c).unwrap();
                    }
                }
            }
            got.extend(m.take(&mut r, w.tail()).unwrap());
            prop_assert_eq!(got, sent);
        }
    }
}
