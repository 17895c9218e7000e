//! `ramcoord_net::ring::RingReader`: the reader of the RDMA message ring,
//! which reads frames a peer wrote one-sidedly into its memory, up to a
//! tail word the peer also wrote. Two views of one input:
//!
//! 1. **Raw:** the input is the ring region as the peer left it: the tail
//!    word (u64 LE at 0), 56 reserved bytes, then the data area (its
//!    length rounded down to a multiple of 8, at least 64). The reader
//!    reads up to that tail, then up to tails a little further.
//! 2. **Scripted:** the input is a script for an honest writer
//!    (`RingWriter`, `encode_frame`, pad headers) and the reader on a
//!    ring of 64 to 512 bytes: write a frame, read up to the writer's
//!    tail, overwrite a byte of the ring, or read up to a forged tail.
//!
//! Checks: no panic; while the script has forged nothing, the reader
//! gets exactly the payloads written, in order, and its credits are
//! accepted by the writer; after a forgery, the reader returns errors or
//! frames that check out, never panics.
#![no_main]

use std::collections::VecDeque;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ramcoord_net::ring::{
    encode_frame, pad_header, RingReader, RingWriter, FRAME_HEADER_BYTES, RING_HEADER_BYTES,
};

fn raw(data: &[u8]) {
    let Some((tail, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let rest = rest.get(RING_HEADER_BYTES - 8..).unwrap_or_default();
    let cap = rest.len() / 8 * 8;
    if cap < 64 {
        return;
    }
    let area = &rest[..cap];
    let mut r = RingReader::new(cap);
    let mut out = Vec::new();
    let tail = u64::from_le_bytes(*tail);
    for t in [tail, tail.wrapping_add(8), tail.wrapping_add(cap as u64)] {
        let res = r.read(
            t,
            |at, buf| buf.copy_from_slice(&area[at..at + buf.len()]),
            &mut out,
        );
        let _ = r.credit_due();
        if res.is_err() {
            break;
        }
    }
}

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

fn scripted(data: &[u8]) {
    let mut s = Script(data);
    let Some(c) = s.byte() else {
        return;
    };
    let cap = 64 * (1 + (c as usize % 8));
    let mut mem = vec![0u8; cap];
    let mut w = RingWriter::new(cap);
    let mut r = RingReader::new(cap);
    let mut expected: VecDeque<Bytes> = VecDeque::new();
    let mut forged = false;
    while let Some(op) = s.byte() {
        match op % 4 {
            0 => {
                let Some(len) = s.byte() else { break };
                let payload = s.take(len as usize).to_vec();
                let Ok(p) = w.place(payload.len()) else {
                    continue;
                };
                if let Some(at) = p.pad_at {
                    mem[at..at + FRAME_HEADER_BYTES].copy_from_slice(&pad_header());
                }
                let n = encode_frame(&payload, &mut mem[p.offset..p.offset + p.bytes]);
                assert_eq!(n, p.bytes);
                expected.push_back(Bytes::from(payload));
            }
            1 | 3 => {
                let tail = if op % 4 == 1 {
                    w.tail()
                } else {
                    let Some(delta) = s.u16() else { break };
                    forged = true;
                    r.head().wrapping_add(delta as u64).wrapping_sub(0x100)
                };
                let mut out = Vec::new();
                let res = r.read(
                    tail,
                    |at, buf| buf.copy_from_slice(&mem[at..at + buf.len()]),
                    &mut out,
                );
                if !forged {
                    assert_eq!(res, Ok(()), "an honest ring reads");
                    let want: Vec<Bytes> = expected.drain(..).collect();
                    assert_eq!(out, want, "the payloads written, in order");
                }
                if let Some(head) = r.credit_due() {
                    let credited = w.on_credit(head);
                    if !forged {
                        assert_eq!(credited, Ok(()), "an honest credit");
                    }
                }
                if res.is_err() {
                    return; // the connection is closed
                }
            }
            _ => {
                let (Some(at), Some(v)) = (s.u16(), s.byte()) else {
                    break;
                };
                let at = at as usize % cap;
                forged |= mem[at] != v;
                mem[at] = v;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    raw(data);
    scripted(data);
});
