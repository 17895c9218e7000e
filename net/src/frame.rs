//! The wire format shared by every stream transport.
//!
//! # Layout
//!
//! ```text
//! offset  size  field
//!      0     4  magic "RCNF" (little-endian u32 0x464e_4352)
//!      4     1  protocol version (PROTOCOL_VERSION)
//!      5     1  kind (FrameKind)
//!      6     2  reserved, zero
//!      8     4  body length in bytes (at most FRAME_BODY_BYTES_MAX)
//!     12     4  CRC32C of bytes 0..12 and the body
//!     16     …  body
//! ```
//!
//! Bodies by kind (all integers little-endian):
//!
//! ```text
//! Hello      sender peer id u64, cluster id u64
//! Message    payload (opaque to the transport)
//! Write      write id u64, region u32, offset u64, then the bytes
//! WriteAck   write id u64, status u8 (0 landed, 1 refused, 2 no such
//!            region, 3 out of bounds), then a UTF-8 reason
//! PassRequest  sender peer id u64, cluster id u64 (instead of a hello:
//!            the connection exists to fetch an RDMA pass)
//! Pass       the pass (crate::rdma_pass: expiry u64, MAC 16 bytes)
//! ```
//!
//! A reader that meets a bad magic, an unknown version or kind, a length
//! over the limit, a bad checksum or a malformed body reports a
//! [`FrameError`]; the connection is then closed with that reason logged.
//! Nothing in a frame is trusted before its checksum is.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The first four bytes of every frame.
pub const FRAME_MAGIC: u32 = 0x464e_4352;
/// The protocol version written (and the only one read).
pub const PROTOCOL_VERSION: u8 = 1;
/// Header size.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Largest body accepted: a snapshot chunk or a configuration region with
/// room to spare.
pub const FRAME_BODY_BYTES_MAX: usize = 16 << 20;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct FrameHeader {
    magic: U32,
    version: u8,
    kind: u8,
    reserved: U16,
    body_len: U32,
    crc: U32,
}

const _: () = assert!(std::mem::size_of::<FrameHeader>() == FRAME_HEADER_BYTES);

/// What a frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The first frame on a connection: who is speaking.
    Hello {
        /// The sender's peer id.
        peer: u64,
        /// The cluster it belongs to (a mismatch closes the connection).
        cluster: u64,
    },
    /// A two-sided message.
    Message(Bytes),
    /// A one-sided write into the receiver's registered region.
    Write {
        /// Echoed in the acknowledgement.
        id: u64,
        /// The region.
        region: u32,
        /// Where in it.
        offset: u64,
        /// What.
        bytes: Bytes,
    },
    /// What became of a write.
    WriteAck {
        /// The write.
        id: u64,
        /// Landed, or why not.
        status: WriteStatus,
    },
    /// The first frame on a connection opened only to fetch a pass for
    /// RDMA ([`crate::rdma_pass`]); answered with [`Frame::Pass`], then
    /// the connection is closed.
    PassRequest {
        /// The sender's peer id.
        peer: u64,
        /// The cluster it belongs to.
        cluster: u64,
    },
    /// A pass for the requester's RDMA connections to us.
    Pass(crate::rdma_pass::Pass),
}

/// What became of a one-sided write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteStatus {
    /// The bytes are in the region.
    Landed,
    /// The region refused them (a fence: a deposed writer).
    Refused(String),
    /// No region with that id.
    NoSuchRegion,
    /// Past the region's end.
    OutOfBounds,
}

impl std::fmt::Display for WriteStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteStatus::Landed => write!(f, "landed"),
            WriteStatus::Refused(why) => write!(f, "refused: {why}"),
            WriteStatus::NoSuchRegion => write!(f, "no such region"),
            WriteStatus::OutOfBounds => write!(f, "out of bounds"),
        }
    }
}

/// Why bytes are not a frame. Each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not our protocol.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// A protocol version this build does not speak.
    #[error("unknown protocol version {0}")]
    UnknownVersion(u8),
    /// A frame kind this build does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A body over [`FRAME_BODY_BYTES_MAX`].
    #[error("frame body of {0} bytes exceeds the limit")]
    TooLarge(u32),
    /// The checksum does not match.
    #[error("frame checksum mismatch")]
    Checksum,
    /// The body does not fit its kind.
    #[error("malformed {kind} body: {why}")]
    Malformed {
        /// The frame kind.
        kind: &'static str,
        /// What is wrong.
        why: String,
    },
}

const KIND_HELLO: u8 = 1;
const KIND_MESSAGE: u8 = 2;
const KIND_WRITE: u8 = 3;
const KIND_WRITE_ACK: u8 = 4;
const KIND_PASS_REQUEST: u8 = 5;
const KIND_PASS: u8 = 6;

fn checksum(header: &FrameHeader, body: &[u8]) -> u32 {
    let mut h = *header;
    h.crc = U32::new(0);
    crc32c::crc32c_append(crc32c::crc32c(&h.as_bytes()[..12]), body)
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let (kind, mut body) = match self {
            Frame::Hello { peer, cluster } => {
                let mut b = BytesMut::with_capacity(16);
                b.put_u64_le(*peer);
                b.put_u64_le(*cluster);
                (KIND_HELLO, b)
            }
            Frame::Message(p) => (KIND_MESSAGE, BytesMut::from(&p[..])),
            Frame::Write {
                id,
                region,
                offset,
                bytes,
            } => {
                let mut b = BytesMut::with_capacity(20 + bytes.len());
                b.put_u64_le(*id);
                b.put_u32_le(*region);
                b.put_u64_le(*offset);
                b.put_slice(bytes);
                (KIND_WRITE, b)
            }
            Frame::WriteAck { id, status } => {
                let mut b = BytesMut::with_capacity(16);
                b.put_u64_le(*id);
                let (code, reason) = match status {
                    WriteStatus::Landed => (0, ""),
                    WriteStatus::Refused(r) => (1, r.as_str()),
                    WriteStatus::NoSuchRegion => (2, ""),
                    WriteStatus::OutOfBounds => (3, ""),
                };
                b.put_u8(code);
                b.put_slice(reason.as_bytes());
                (KIND_WRITE_ACK, b)
            }
            Frame::PassRequest { peer, cluster } => {
                let mut b = BytesMut::with_capacity(16);
                b.put_u64_le(*peer);
                b.put_u64_le(*cluster);
                (KIND_PASS_REQUEST, b)
            }
            Frame::Pass(p) => (KIND_PASS, BytesMut::from(&p.encode()[..])),
        };
        assert!(
            body.len() <= FRAME_BODY_BYTES_MAX,
            "frame body over the limit"
        );
        let mut h = FrameHeader {
            magic: U32::new(FRAME_MAGIC),
            version: PROTOCOL_VERSION,
            kind,
            reserved: U16::new(0),
            body_len: U32::new(body.len() as u32),
            crc: U32::new(0),
        };
        h.crc = U32::new(checksum(&h, &body));
        out.reserve(FRAME_HEADER_BYTES + body.len());
        out.put_slice(h.as_bytes());
        out.put(&mut body);
    }

    /// What kind of frame this is, for logs (a frame's `Debug` may be as
    /// long as its payload).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Message(_) => "message",
            Frame::Write { .. } => "write",
            Frame::WriteAck { .. } => "write-ack",
            Frame::PassRequest { .. } => "pass request",
            Frame::Pass(_) => "pass",
        }
    }

    /// The encoded frame.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    fn decode_body(kind: u8, mut body: Bytes) -> Result<Frame, FrameError> {
        let malformed = |kind: &'static str, why: &str| FrameError::Malformed {
            kind,
            why: why.to_string(),
        };
        match kind {
            KIND_HELLO => {
                if body.len() != 16 {
                    return Err(malformed("hello", "not 16 bytes"));
                }
                Ok(Frame::Hello {
                    peer: body.get_u64_le(),
                    cluster: body.get_u64_le(),
                })
            }
            KIND_MESSAGE => Ok(Frame::Message(body)),
            KIND_WRITE => {
                if body.len() < 20 {
                    return Err(malformed("write", "shorter than its fields"));
                }
                let id = body.get_u64_le();
                let region = body.get_u32_le();
                let offset = body.get_u64_le();
                Ok(Frame::Write {
                    id,
                    region,
                    offset,
                    bytes: body,
                })
            }
            KIND_WRITE_ACK => {
                if body.len() < 9 {
                    return Err(malformed("write-ack", "shorter than its fields"));
                }
                let id = body.get_u64_le();
                let code = body.get_u8();
                let reason = std::str::from_utf8(&body)
                    .map_err(|_| malformed("write-ack", "reason is not UTF-8"))?
                    .to_string();
                let status = match code {
                    0 => WriteStatus::Landed,
                    1 => WriteStatus::Refused(reason),
                    2 => WriteStatus::NoSuchRegion,
                    3 => WriteStatus::OutOfBounds,
                    _ => return Err(malformed("write-ack", "unknown status")),
                };
                Ok(Frame::WriteAck { id, status })
            }
            KIND_PASS_REQUEST => {
                if body.len() != 16 {
                    return Err(malformed("pass request", "not 16 bytes"));
                }
                Ok(Frame::PassRequest {
                    peer: body.get_u64_le(),
                    cluster: body.get_u64_le(),
                })
            }
            KIND_PASS => crate::rdma_pass::Pass::decode(&body)
                .map(Frame::Pass)
                .map_err(|e| malformed("pass", &e.to_string())),
            k => Err(FrameError::UnknownKind(k)),
        }
    }
}

/// Cuts frames out of a byte stream, however it was split into reads.
#[derive(Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet part of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or why
    /// the stream is not ours (then the connection must be closed: the
    /// decoder's state is no longer meaningful).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Ok((h, _)) = FrameHeader::read_from_prefix(&self.buf[..]) else {
            return Ok(None);
        };
        // Check what can be checked before waiting for the body, so a
        // garbage length never makes us buffer 4 GiB.
        if h.magic.get() != FRAME_MAGIC {
            return Err(FrameError::BadMagic(h.magic.get()));
        }
        if h.version != PROTOCOL_VERSION {
            return Err(FrameError::UnknownVersion(h.version));
        }
        if !(KIND_HELLO..=KIND_PASS).contains(&h.kind) {
            return Err(FrameError::UnknownKind(h.kind));
        }
        let len = h.body_len.get();
        if len as usize > FRAME_BODY_BYTES_MAX {
            return Err(FrameError::TooLarge(len));
        }
        let total = FRAME_HEADER_BYTES + len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let mut frame = self.buf.split_to(total);
        let body = frame.split_off(FRAME_HEADER_BYTES).freeze();
        if checksum(&h, &body) != h.crc.get() {
            return Err(FrameError::Checksum);
        }
        Frame::decode_body(h.kind, body).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello {
                peer: 3,
                cluster: 77,
            },
            Frame::Message(Bytes::from_static(b"raft message")),
            Frame::Message(Bytes::new()),
            Frame::Write {
                id: 9,
                region: 1,
                offset: 64,
                bytes: Bytes::from_static(b"config"),
            },
            Frame::WriteAck {
                id: 9,
                status: WriteStatus::Refused("term 3 < 5".into()),
            },
            Frame::WriteAck {
                id: 10,
                status: WriteStatus::Landed,
            },
            Frame::PassRequest {
                peer: 2,
                cluster: 77,
            },
            Frame::Pass(crate::rdma_pass::Pass {
                expires_unix_s: 1_800_000_000,
                mac: [7; 16],
            }),
        ]
    }

    #[test]
    fn frames_round_trip_through_any_split() {
        let mut stream = BytesMut::new();
        for f in samples() {
            f.encode(&mut stream);
        }
        for chunk in [1, 3, 7, 16, 1000] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, samples(), "split into {chunk}-byte reads");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        let good = samples()[1].to_bytes();
        let mut d = FrameDecoder::new();
        d.push(b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(d.next_frame(), Err(FrameError::BadMagic(_))));

        let mut v = good.to_vec();
        v[4] = 9;
        let mut d = FrameDecoder::new();
        d.push(&v);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownVersion(9)));

        let mut v = good.to_vec();
        v[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut d = FrameDecoder::new();
        d.push(&v);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(u32::MAX)));

        for i in FRAME_HEADER_BYTES..good.len() {
            let mut v = good.to_vec();
            v[i] ^= 1;
            let mut d = FrameDecoder::new();
            d.push(&v);
            assert_eq!(d.next_frame(), Err(FrameError::Checksum), "flip at {i}");
        }
        // A truncated frame is not an error, just incomplete.
        let mut d = FrameDecoder::new();
        d.push(&good[..good.len() - 1]);
        assert_eq!(d.next_frame(), Ok(None));
    }
}
