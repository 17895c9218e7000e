//! Raft messages on the wire: the body of a transport `Message` frame
//! (the frame carries the length and the CRC32C; this is what is inside).
//!
//! # Layout (all integers little-endian)
//!
//! ```text
//! u8   wire version (WIRE_VERSION)
//! u8   kind (0 PreVote … 12 ReadIndexResp, the order of MessageBody)
//! u64  from, u64 to, u64 term
//! …    the body's fields in declaration order; bools as u8 0/1;
//!      Append:   prev_index, prev_term, commit, u32 count, then per entry
//!                u64 term, u64 index, u8 kind, u32 length, payload
//!      Snapshot: index, term, u32 voters + ids, u32 learners + ids,
//!                total_len, offset, u32 length, data
//! ```
//!
//! Decoding is zero-copy for payloads (entry data and snapshot chunks are
//! slices of the received buffer) and defensive: besides lengths it checks
//! what the Raft core takes for granted of a message, so no peer can make
//! it trip an assertion: entries of an append are consecutive from
//! `prev_index + 1`, a snapshot chunk lies within the snapshot, node ids
//! are non-zero, counts stay within limits, and every index and term is at
//! most [`WIRE_INDEX_TERM_MAX`] (so the core's `index + 1` and `term + 1`
//! cannot overflow).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::constants::{ENTRY_BYTES_MAX, SNAPSHOT_BYTES_MAX};
use crate::message::{Message, MessageBody};
use crate::types::{ConfState, Entry, EntryKind, SnapshotMeta};

/// The wire format version written (and the only one read).
pub const WIRE_VERSION: u8 = 1;
/// Most entries in one append on the wire.
pub const WIRE_ENTRIES_MAX: usize = 1 << 16;
/// Most members (voters plus learners) in a configuration on the wire.
pub const WIRE_MEMBERS_MAX: usize = 1024;
/// Largest log index or term on the wire: half the `u64` range, far past
/// any real log, and leaving the core room for `index + 1`, `term + 1` and
/// `prev_index + count` without overflow.
pub const WIRE_INDEX_TERM_MAX: u64 = u64::MAX >> 1;

/// Why bytes are not a Raft message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end before the message does.
    #[error("message truncated: {0}")]
    Truncated(&'static str),
    /// A wire version this build does not speak.
    #[error("unknown wire version {0}")]
    UnknownVersion(u8),
    /// Not a message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// Bytes left after the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// Structurally valid, but not something Raft would send.
    #[error("invalid message: {0}")]
    Invalid(String),
}

const KINDS: [&str; 13] = [
    "PreVote",
    "PreVoteResp",
    "Vote",
    "VoteResp",
    "Append",
    "AppendResp",
    "Heartbeat",
    "HeartbeatResp",
    "Snapshot",
    "SnapshotResp",
    "TimeoutNow",
    "ReadIndex",
    "ReadIndexResp",
];

fn kind_of(b: &MessageBody) -> u8 {
    KINDS
        .iter()
        .position(|k| *k == b.name())
        .expect("every body has a kind") as u8
}

fn put_conf(out: &mut BytesMut, c: &ConfState) {
    out.put_u32_le(c.voters.len() as u32);
    for v in &c.voters {
        out.put_u64_le(*v);
    }
    out.put_u32_le(c.learners.len() as u32);
    for l in &c.learners {
        out.put_u64_le(*l);
    }
}

/// Appends the encoding of `m` to `out`.
pub fn encode_message(m: &Message, out: &mut BytesMut) {
    out.put_u8(WIRE_VERSION);
    out.put_u8(kind_of(&m.body));
    out.put_u64_le(m.from);
    out.put_u64_le(m.to);
    out.put_u64_le(m.term);
    match &m.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => {
            out.put_u64_le(*last_index);
            out.put_u64_le(*last_term);
        }
        MessageBody::PreVoteResp { reject } | MessageBody::VoteResp { reject } => {
            out.put_u8(*reject as u8)
        }
        MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            out.put_u64_le(*last_index);
            out.put_u64_le(*last_term);
            out.put_u8(*transfer as u8);
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            out.put_u64_le(*prev_index);
            out.put_u64_le(*prev_term);
            out.put_u64_le(*commit);
            out.put_u32_le(entries.len() as u32);
            for e in entries {
                out.put_u64_le(e.term);
                out.put_u64_le(e.index);
                out.put_u8(e.kind as u8);
                out.put_u32_le(e.data.len() as u32);
                out.put_slice(&e.data);
            }
        }
        MessageBody::AppendResp {
            reject,
            index,
            hint_index,
            hint_term,
        } => {
            out.put_u8(*reject as u8);
            out.put_u64_le(*index);
            out.put_u64_le(*hint_index);
            out.put_u64_le(*hint_term);
        }
        MessageBody::Heartbeat {
            commit,
            seq,
            sent_tick,
        } => {
            out.put_u64_le(*commit);
            out.put_u64_le(*seq);
            out.put_u64_le(*sent_tick);
        }
        MessageBody::HeartbeatResp { seq, sent_tick } => {
            out.put_u64_le(*seq);
            out.put_u64_le(*sent_tick);
        }
        MessageBody::Snapshot {
            meta,
            total_len,
            offset,
            data,
        } => {
            out.put_u64_le(meta.index);
            out.put_u64_le(meta.term);
            put_conf(out, &meta.conf);
            out.put_u64_le(*total_len);
            out.put_u64_le(*offset);
            out.put_u32_le(data.len() as u32);
            out.put_slice(data);
        }
        MessageBody::SnapshotResp {
            index,
            next_offset,
            reject,
        } => {
            out.put_u64_le(*index);
            out.put_u64_le(*next_offset);
            out.put_u8(*reject as u8);
        }
        MessageBody::TimeoutNow => {}
        MessageBody::ReadIndex { ctx } => out.put_u64_le(*ctx),
        MessageBody::ReadIndexResp { ctx, index } => {
            out.put_u64_le(*ctx);
            out.put_u64_le(*index);
        }
    }
}

/// The encoding of `m`.
pub fn message_to_bytes(m: &Message) -> Bytes {
    let mut b = BytesMut::new();
    encode_message(m, &mut b);
    b.freeze()
}

/// A cursor that never reads past the end.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), WireError> {
        if self.0.remaining() < n {
            return Err(WireError::Truncated(what));
        }
        Ok(())
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        self.need(1, what)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.need(4, what)?;
        Ok(self.0.get_u32_le())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.need(8, what)?;
        Ok(self.0.get_u64_le())
    }
    /// A log index or term (at most [`WIRE_INDEX_TERM_MAX`]).
    fn index(&mut self, what: &'static str) -> Result<u64, WireError> {
        let v = self.u64(what)?;
        if v > WIRE_INDEX_TERM_MAX {
            return Err(WireError::Invalid(format!("{what} {v} is out of range")));
        }
        Ok(v)
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(WireError::Invalid(format!("{what}: {b} is not a bool"))),
        }
    }
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, WireError> {
        self.need(n, what)?;
        Ok(self.0.split_to(n))
    }
    fn ids(&mut self, what: &'static str) -> Result<Vec<u64>, WireError> {
        let n = self.u32(what)? as usize;
        if n > WIRE_MEMBERS_MAX {
            return Err(WireError::Invalid(format!("{n} {what}")));
        }
        (0..n).map(|_| self.u64(what)).collect()
    }
}

fn invalid(why: impl Into<String>) -> WireError {
    WireError::Invalid(why.into())
}

/// Decodes and checks a message (see the module docs). Payloads share
/// `buf`'s memory.
pub fn decode_message(buf: Bytes) -> Result<Message, WireError> {
    let mut r = Reader(buf);
    let version = r.u8("version")?;
    if version != WIRE_VERSION {
        return Err(WireError::UnknownVersion(version));
    }
    let kind = r.u8("kind")?;
    let from = r.u64("from")?;
    let to = r.u64("to")?;
    let term = r.index("term")?;
    let msg_term = term;
    if from == 0 || to == 0 {
        return Err(invalid("node id 0"));
    }
    let body = match kind {
        0 => MessageBody::PreVote {
            last_index: r.index("last_index")?,
            last_term: r.index("last_term")?,
        },
        1 => MessageBody::PreVoteResp {
            reject: r.bool("reject")?,
        },
        2 => MessageBody::Vote {
            last_index: r.index("last_index")?,
            last_term: r.index("last_term")?,
            transfer: r.bool("transfer")?,
        },
        3 => MessageBody::VoteResp {
            reject: r.bool("reject")?,
        },
        4 => {
            let prev_index = r.index("prev_index")?;
            let prev_term = r.index("prev_term")?;
            if prev_term > msg_term {
                return Err(invalid("append after an entry from a later term"));
            }
            let commit = r.index("commit")?;
            let n = r.u32("entry count")? as usize;
            if n > WIRE_ENTRIES_MAX {
                return Err(invalid(format!("{n} entries in one append")));
            }
            let mut entries = Vec::with_capacity(n.min(1024));
            for i in 0..n as u64 {
                let term = r.index("entry term")?;
                let index = r.index("entry index")?;
                let kind = match r.u8("entry kind")? {
                    0 => EntryKind::Normal,
                    1 => EntryKind::ConfChange,
                    2 => EntryKind::Empty,
                    k => return Err(invalid(format!("entry kind {k}"))),
                };
                let len = r.u32("entry length")? as usize;
                if len > ENTRY_BYTES_MAX {
                    return Err(invalid(format!("entry of {len} bytes")));
                }
                let data = r.bytes(len, "entry data")?;
                if Some(index) != prev_index.checked_add(1 + i) {
                    return Err(invalid(format!(
                        "entry {index} does not follow {prev_index} + {i}"
                    )));
                }
                // Terms never decrease along a log, and a leader sends no
                // entry from a term after its own.
                let floor = entries.last().map_or(prev_term, |p: &Entry| p.term);
                if term < floor || term > msg_term {
                    return Err(invalid(format!(
                        "entry {index} has term {term} (after {floor}, sent in term {msg_term})"
                    )));
                }
                entries.push(Entry {
                    term,
                    index,
                    kind,
                    data,
                });
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            }
        }
        5 => MessageBody::AppendResp {
            reject: r.bool("reject")?,
            index: r.index("index")?,
            hint_index: r.index("hint_index")?,
            hint_term: r.index("hint_term")?,
        },
        6 => MessageBody::Heartbeat {
            commit: r.index("commit")?,
            seq: r.u64("seq")?,
            sent_tick: r.u64("sent_tick")?,
        },
        7 => MessageBody::HeartbeatResp {
            seq: r.u64("seq")?,
            sent_tick: r.u64("sent_tick")?,
        },
        8 => {
            let index = r.index("snapshot index")?;
            let sterm = r.index("snapshot term")?;
            let voters = r.ids("voters")?;
            let learners = r.ids("learners")?;
            let total_len = r.u64("total_len")?;
            let offset = r.u64("offset")?;
            let len = r.u32("chunk length")? as usize;
            let data = r.bytes(len, "chunk")?;
            if total_len > SNAPSHOT_BYTES_MAX as u64 {
                return Err(invalid(format!("snapshot of {total_len} bytes")));
            }
            if offset
                .checked_add(len as u64)
                .is_none_or(|end| end > total_len)
            {
                return Err(invalid("snapshot chunk past the snapshot's end"));
            }
            if voters.is_empty() {
                return Err(invalid("snapshot configuration without voters"));
            }
            MessageBody::Snapshot {
                meta: SnapshotMeta {
                    index,
                    term: sterm,
                    conf: ConfState {
                        voters: voters.into_iter().collect(),
                        learners: learners.into_iter().collect(),
                    },
                },
                total_len,
                offset,
                data,
            }
        }
        9 => MessageBody::SnapshotResp {
            index: r.index("index")?,
            next_offset: r.u64("next_offset")?,
            reject: r.bool("reject")?,
        },
        10 => MessageBody::TimeoutNow,
        11 => MessageBody::ReadIndex { ctx: r.u64("ctx")? },
        12 => MessageBody::ReadIndexResp {
            ctx: r.u64("ctx")?,
            index: r.index("index")?,
        },
        k => return Err(WireError::UnknownKind(k)),
    };
    if r.0.has_remaining() {
        return Err(WireError::Trailing(r.0.remaining()));
    }
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/fuzz_targets/raft_step.rs): a snapshot chunk
    /// for index u64::MAX decoded, and installing it overflowed the core's
    /// `index + 1` (raft_log.rs, `RaftLog::restore`). No index or term
    /// past half the range gets through now.
    #[test]
    fn indexes_and_terms_past_the_limit_are_refused() {
        let snapshot = |index: u64, term: u64| Message {
            from: 2,
            to: 1,
            term,
            body: MessageBody::Snapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    conf: ConfState::with_voters([1, 2, 3]),
                },
                total_len: 1,
                offset: 0,
                data: Bytes::from_static(b"x"),
            },
        };
        let ok = snapshot(WIRE_INDEX_TERM_MAX, WIRE_INDEX_TERM_MAX);
        assert_eq!(decode_message(message_to_bytes(&ok)), Ok(ok));
        for (index, term) in [(u64::MAX, 2), (WIRE_INDEX_TERM_MAX + 1, 2), (5, u64::MAX)] {
            let m = snapshot(index, term);
            assert!(
                matches!(
                    decode_message(message_to_bytes(&m)),
                    Err(WireError::Invalid(_))
                ),
                "snapshot {index}@{term}"
            );
        }
        let append = Message {
            from: 2,
            to: 1,
            term: 3,
            body: MessageBody::Append {
                prev_index: u64::MAX - 1,
                prev_term: 3,
                entries: vec![Entry {
                    term: 3,
                    index: u64::MAX,
                    kind: EntryKind::Normal,
                    data: Bytes::new(),
                }],
                commit: 0,
            },
        };
        assert!(decode_message(message_to_bytes(&append)).is_err());
        let resp = Message {
            from: 2,
            to: 1,
            term: 3,
            body: MessageBody::AppendResp {
                reject: false,
                index: u64::MAX,
                hint_index: 0,
                hint_term: 0,
            },
        };
        assert!(decode_message(message_to_bytes(&resp)).is_err());
    }
}
