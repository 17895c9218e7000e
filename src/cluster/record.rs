//! The records the coordinator writes to its replicated log.
//!
//! # Format
//!
//! ```text
//! byte 0      magic 0xC0 (a coordinator record)
//! byte 1      format version (RECORD_FORMAT_VERSION)
//! bytes 2..   the record, postcard-encoded (serde; varints, no padding)
//! ```
//!
//! Version 2 added [`Record::ClientCommit`] (a client's operation with its
//! exactly-once identity, [`RpcId`]) as a new last variant; everything else
//! encodes as in version 1. Version 1 records (written by older builds)
//! still decode; a version-1 header in front of a `ClientCommit` is
//! malformed.
//!
//! The Raft entry around it is checksummed on disk and on the wire; this
//! layer adds the version byte so a later format can be told apart, and
//! decodes defensively: a short, unknown, oversized or trailing-garbage
//! record is a [`RecordError`], never a panic.
//!
//! Decoding checks the structure only; [`Record::check`] checks the rules
//! (names, addresses, counts: [`super::limits`]). Both failures are
//! *applied*, not fatal: a committed entry that does not decode, or breaks
//! a rule, changes nothing and is recorded as rejected, the same way on
//! every replica (see [`super::ClusterState::apply`]). Leaders never
//! propose such records (requests are validated first); they reach a log
//! only through an older version, a bug, or a forged proposal, and the
//! simulator injects them to keep it that way.
//!
//! # Kinds
//!
//! A [`Record::Commit`] is an operation's **commit point**: once committed,
//! the operation happens, and its sequence number is the record's log
//! index. It carries the whole decided state (every tablet with its owner,
//! every reassignment of a recovery plan), so a new leader can finish it
//! without recomputing anything. [`Record::Complete`] marks its external
//! actions done.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::limits::{self, LimitError, RECORD_BYTES_MAX};
use super::types::{ServerId, TableId};

/// The first byte of every coordinator record.
pub const RECORD_MAGIC: u8 = 0xC0;
/// The format version written. Version 1 (before [`Record::ClientCommit`])
/// is read too.
pub const RECORD_FORMAT_VERSION: u8 = 2;
/// The oldest format version read.
pub const RECORD_FORMAT_VERSION_MIN: u8 = 1;

/// An operation's sequence number: the log index of its commit record.
pub type Seq = u64;

/// One tablet of a new table, with the owner the leader chose.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TabletSpec {
    /// First key hash (inclusive).
    pub start_hash: u64,
    /// Last key hash (inclusive).
    pub end_hash: u64,
    /// Its owner.
    pub owner: ServerId,
}

/// One step of a recovery plan: a crashed server's tablet and its new owner.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    /// The table.
    pub table: TableId,
    /// The tablet, by its first hash.
    pub start_hash: u64,
    /// The new owner (up when the plan was made, checked again at apply).
    pub to: ServerId,
}

/// A coordinator operation as decided at its commit point. Each carries
/// its precondition, checked when the record is applied (on every replica,
/// deterministically): two leaders' racing proposals cannot both apply.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A server joins; it gets the lowest free slot (see `ServerId`).
    EnlistServer {
        /// Where it listens.
        addr: String,
        /// Its services (bit set).
        services: u8,
        /// The enlisting process's nonce (a retry is recognised).
        nonce: u64,
    },
    /// A new table with these tablets (covering the hash space) and owners.
    CreateTable {
        /// The unique name.
        name: String,
        /// Every tablet with its owner.
        tablets: Vec<TabletSpec>,
    },
    /// The table goes away; its owners drop its tablets.
    DropTable {
        /// The table's name.
        name: String,
    },
    /// The tablet holding `split_hash` becomes two: `[start, split_hash)`
    /// and `[split_hash, end]`, same owner.
    SplitTablet {
        /// The table's name.
        table: String,
        /// The first hash of the new upper tablet.
        split_hash: u64,
    },
    /// The tablet holding `hash` moves to `to`.
    MigrateTablet {
        /// The table's name.
        table: String,
        /// Any hash in the tablet.
        hash: u64,
        /// The new owner.
        to: ServerId,
    },
    /// A server is declared crashed; its tablets go to live servers.
    ServerCrashed {
        /// The server.
        id: ServerId,
        /// Every tablet it owned, with its new owner.
        plan: Vec<Reassignment>,
    },
    /// A crashed server whose recovery finished leaves the list.
    ServerRemoved {
        /// The server.
        id: ServerId,
    },
}

impl Op {
    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::EnlistServer { .. } => "enlist",
            Op::CreateTable { .. } => "create-table",
            Op::DropTable { .. } => "drop-table",
            Op::SplitTablet { .. } => "split-tablet",
            Op::MigrateTablet { .. } => "migrate-tablet",
            Op::ServerCrashed { .. } => "server-crashed",
            Op::ServerRemoved { .. } => "server-removed",
        }
    }

    /// One line saying what the operation does, for logs and `ctl ops`.
    pub fn summary(&self) -> String {
        match self {
            Op::EnlistServer { addr, .. } => format!("enlist {addr}"),
            Op::CreateTable { name, tablets } => {
                let owners: std::collections::BTreeSet<String> =
                    tablets.iter().map(|t| t.owner.to_string()).collect();
                format!(
                    "create-table {name:?}: {} tablets on {}",
                    tablets.len(),
                    owners.into_iter().collect::<Vec<_>>().join(",")
                )
            }
            Op::DropTable { name } => format!("drop-table {name:?}"),
            Op::SplitTablet { table, split_hash } => {
                format!("split-tablet {table:?} at {split_hash:#x}")
            }
            Op::MigrateTablet { table, hash, to } => {
                format!("migrate-tablet {table:?} hash {hash:#x} to {to}")
            }
            Op::ServerCrashed { id, plan } => {
                let moves: Vec<String> = plan
                    .iter()
                    .map(|r| format!("t{}@{:#x}->{}", r.table, r.start_hash, r.to))
                    .collect();
                if moves.is_empty() {
                    format!("server-crashed {id}: no tablets")
                } else {
                    format!("server-crashed {id}: recovery plan {}", moves.join(" "))
                }
            }
            Op::ServerRemoved { id } => format!("server-removed {id}"),
        }
    }
}

/// A client operation's exactly-once identity (RIFL: Lee et al.,
/// "Implementing linearizability at large scale and low latency", SOSP
/// 2015): a client id chosen at random by the client process, and its
/// sequence number for the operation (1, 2, ...; a retry reuses it). It
/// goes into the commit record, so every replica, and every later leader,
/// knows whether the operation was applied and what it did (see
/// [`super::state::ClusterState::rpc_status`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RpcId {
    /// The client (random per process).
    pub client: u64,
    /// The operation's number at that client (increasing; one operation
    /// at a time per client).
    pub seq: u64,
    /// A committed log index the client had seen before it first sent
    /// this operation (0 if none): any commit record of the operation is
    /// at a later index. It is what tells a retry from a client whose
    /// entry was evicted (see [`super::limits::SESSIONS_MAX`]).
    pub after: u64,
}

impl RpcId {
    /// What identifies the operation: (client, seq). (`after` is the
    /// client's note, not part of the identity.)
    pub fn key(&self) -> (u64, u64) {
        (self.client, self.seq)
    }
}

impl std::fmt::Display for RpcId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}#{}", self.client, self.seq)
    }
}

/// A coordinator log record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An operation's commit point.
    Commit(Op),
    /// The operation with this sequence number finished its external
    /// actions.
    Complete {
        /// The operation.
        seq: Seq,
    },
    /// Changes nothing: the log's own cost, for benchmarks
    /// (`ClientRequest::Noop`).
    Noop,
    /// A client's operation: its commit point, like [`Record::Commit`],
    /// applied at most once per `rpc` (a second record with the same id
    /// changes nothing and answers with the first one's outcome). Format
    /// version 2.
    ClientCommit {
        /// Who asked, and which of its operations this is.
        rpc: RpcId,
        /// The operation.
        op: Op,
    },
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Record::Commit(op) => write!(f, "{}", op.summary()),
            Record::ClientCommit { rpc, op } => write!(f, "{rpc} {}", op.summary()),
            Record::Complete { seq } => write!(f, "complete {seq}"),
            Record::Noop => write!(f, "noop"),
        }
    }
}

/// Why bytes are not a coordinator record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than the two header bytes.
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    /// Not a coordinator record.
    #[error("bad magic byte {0:#04x}")]
    BadMagic(u8),
    /// Written by a format this build does not know.
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// Larger than [`RECORD_BYTES_MAX`].
    #[error("record of {0} bytes exceeds the limit of {RECORD_BYTES_MAX} bytes")]
    TooLarge(usize),
    /// The body does not decode.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// Decoded, but bytes are left over.
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
}

impl Record {
    /// Whether applying this record can make an up server gone (declare
    /// it crashed). Only `ServerCrashed` can: a removal needs a crash
    /// first, and an enlistment reuses only a removed server's slot. A
    /// leader answers a heartbeat only once it has applied every such
    /// record it proposed before the heartbeat came (see `replica`).
    pub fn may_declare_crashed(&self) -> bool {
        matches!(
            self,
            Record::Commit(Op::ServerCrashed { .. })
                | Record::ClientCommit {
                    op: Op::ServerCrashed { .. },
                    ..
                }
        )
    }

    /// The record as log-entry bytes, or [`RecordError::TooLarge`] past
    /// [`RECORD_BYTES_MAX`]. The rules of [`Record::check`] are not
    /// enforced here (the simulator writes records that break them).
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        let mut out = vec![RECORD_MAGIC, RECORD_FORMAT_VERSION];
        let body = postcard::to_stdvec(self)
            .map_err(|e| RecordError::Malformed(format!("cannot encode: {e}")))?;
        out.extend_from_slice(&body);
        if out.len() > RECORD_BYTES_MAX {
            return Err(RecordError::TooLarge(out.len()));
        }
        Ok(Bytes::from(out))
    }

    /// Decodes a record's structure (see the module docs); the rules are
    /// [`Record::check`]'s.
    pub fn decode(buf: &[u8]) -> Result<Record, RecordError> {
        if buf.len() < 2 {
            return Err(RecordError::Short(buf.len()));
        }
        if buf.len() > RECORD_BYTES_MAX {
            return Err(RecordError::TooLarge(buf.len()));
        }
        if buf[0] != RECORD_MAGIC {
            return Err(RecordError::BadMagic(buf[0]));
        }
        if !(RECORD_FORMAT_VERSION_MIN..=RECORD_FORMAT_VERSION).contains(&buf[1]) {
            return Err(RecordError::UnknownVersion(buf[1]));
        }
        let (rec, rest): (Record, &[u8]) = postcard::take_from_bytes(&buf[2..])
            .map_err(|e| RecordError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(RecordError::Trailing(rest.len()));
        }
        if buf[1] == 1 && matches!(rec, Record::ClientCommit { .. }) {
            return Err(RecordError::Malformed(
                "a version-1 record cannot hold a client commit".into(),
            ));
        }
        Ok(rec)
    }

    /// The operation of a commit record (with or without a client id).
    pub fn op(&self) -> Option<&Op> {
        match self {
            Record::Commit(op) | Record::ClientCommit { op, .. } => Some(op),
            Record::Complete { .. } | Record::Noop => None,
        }
    }

    /// The client operation's id, for a [`Record::ClientCommit`].
    pub fn rpc(&self) -> Option<RpcId> {
        match self {
            Record::ClientCommit { rpc, .. } => Some(*rpc),
            _ => None,
        }
    }

    /// Checks the record against the limits a leader validates requests
    /// with ([`super::limits`]).
    pub fn check(&self) -> Result<(), LimitError> {
        let Some(op) = self.op() else {
            return Ok(());
        };
        match op {
            Op::EnlistServer { addr, .. } => limits::check_addr(addr),
            Op::CreateTable { name, tablets } => {
                limits::check_table_name(name)?;
                limits::check_tablet_count(tablets.len())
            }
            Op::DropTable { name }
            | Op::SplitTablet { table: name, .. }
            | Op::MigrateTablet { table: name, .. } => limits::check_table_name(name),
            Op::ServerCrashed { .. } | Op::ServerRemoved { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let s = ServerId {
            index: 2,
            generation: 1,
        };
        vec![
            Record::Commit(Op::EnlistServer {
                addr: "10.0.0.1:7000".into(),
                services: 3,
                nonce: 99,
            }),
            Record::Commit(Op::CreateTable {
                name: "users".into(),
                tablets: vec![TabletSpec {
                    start_hash: 0,
                    end_hash: u64::MAX,
                    owner: s,
                }],
            }),
            Record::Commit(Op::ServerCrashed {
                id: s,
                plan: vec![Reassignment {
                    table: 1,
                    start_hash: 0,
                    to: ServerId {
                        index: 3,
                        generation: 1,
                    },
                }],
            }),
            Record::Complete { seq: 17 },
            Record::ClientCommit {
                rpc: RpcId {
                    client: u64::MAX,
                    seq: 3,
                    after: 40,
                },
                op: Op::DropTable {
                    name: "users".into(),
                },
            },
        ]
    }

    #[test]
    fn version_1_records_still_decode_and_cannot_hold_a_client_commit() {
        // A version-1 encoding is the same bytes under header version 1.
        for r in samples() {
            let mut b = r.encode().unwrap().to_vec();
            assert_eq!(b[1], RECORD_FORMAT_VERSION);
            b[1] = 1;
            match r {
                Record::ClientCommit { .. } => {
                    assert!(matches!(Record::decode(&b), Err(RecordError::Malformed(_))))
                }
                _ => assert_eq!(Record::decode(&b), Ok(r)),
            }
        }
        // A record written by the version-1 build (bytes fixed here).
        let v1 = [RECORD_MAGIC, 1, 2];
        assert_eq!(Record::decode(&v1), Ok(Record::Noop));
        assert_eq!(
            Record::decode(&[RECORD_MAGIC, 0, 3]),
            Err(RecordError::UnknownVersion(0))
        );
    }

    #[test]
    fn records_round_trip() {
        for r in samples() {
            assert_eq!(Record::decode(&r.encode().unwrap()), Ok(r));
        }
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let good = samples()[1].encode().unwrap();
        assert_eq!(Record::decode(&[]), Err(RecordError::Short(0)));
        assert_eq!(Record::decode(&[7, 1, 0]), Err(RecordError::BadMagic(7)));
        assert_eq!(
            Record::decode(&[RECORD_MAGIC, 9, 0]),
            Err(RecordError::UnknownVersion(9))
        );
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert_eq!(Record::decode(&trailing), Err(RecordError::Trailing(1)));
        // Every truncation and every single-byte corruption decodes to an
        // error or to some record: never a panic.
        for cut in 0..good.len() {
            assert!(Record::decode(&good[..cut]).is_err());
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.to_vec();
                b[i] ^= 1 << bit;
                let _ = Record::decode(&b);
            }
        }
        // A record that breaks a rule decodes (it is applied as a
        // rejection) and its check names the rule.
        let empty_name = Record::Commit(Op::DropTable {
            name: String::new(),
        });
        let raw = empty_name.encode().unwrap();
        assert_eq!(Record::decode(&raw).as_ref(), Ok(&empty_name));
        assert_eq!(empty_name.check(), Err(LimitError::EmptyName));
        for r in samples() {
            assert_eq!(r.check(), Ok(()), "{r:?}");
        }
    }

    #[test]
    fn an_oversized_record_is_an_error_not_a_panic() {
        let huge = Record::Commit(Op::DropTable {
            name: "x".repeat(2 << 20),
        });
        assert!(matches!(huge.encode(), Err(RecordError::TooLarge(_))));
    }
}
