//! The messages Raft replicas exchange. The transport frames and checksums
//! them; the core only ever sees whole, well-formed messages.

use bytes::Bytes;

use crate::types::{Entry, Index, NodeId, SnapshotMeta, Term};

/// A message between two replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The sender's term (for a granted pre-vote: the term it would vote in).
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

/// The kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me in `term`?" (thesis §9.6); changes no state.
    PreVote {
        /// The candidate's last log index.
        last_index: Index,
        /// The candidate's last log term.
        last_term: Term,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResp {
        /// True if not granted.
        reject: bool,
    },
    /// A vote request.
    Vote {
        /// The candidate's last log index.
        last_index: Index,
        /// The candidate's last log term.
        last_term: Term,
        /// The leader asked for this election (TimeoutNow): voters ignore
        /// their leader lease.
        transfer: bool,
    },
    /// Answer to [`MessageBody::Vote`]; a grant is sent only after the vote
    /// is durable.
    VoteResp {
        /// True if not granted.
        reject: bool,
    },
    /// Log replication (and, with no entries, a probe).
    Append {
        /// Index of the entry just before `entries`.
        prev_index: Index,
        /// Its term.
        prev_term: Term,
        /// The entries, contiguous from `prev_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// Answer to [`MessageBody::Append`]. A success is sent only after the
    /// entries are durable.
    AppendResp {
        /// True if the follower's log did not match at `prev_index`.
        reject: bool,
        /// On success, the last index known to match; on rejection, the
        /// rejected `prev_index`.
        index: Index,
        /// On rejection, where the leader should look next: the follower's
        /// last index at or below `prev_index` with a term `<= hint_term`.
        hint_index: Index,
        /// The term at `hint_index`.
        hint_term: Term,
    },
    /// Leader liveness, commit propagation and read-index confirmation.
    Heartbeat {
        /// `min(leader commit, follower match)`.
        commit: Index,
        /// Read-index round this heartbeat confirms.
        seq: u64,
        /// The leader's tick count when it sent this (for its lease).
        sent_tick: u64,
    },
    /// Answer to [`MessageBody::Heartbeat`], echoing its fields.
    HeartbeatResp {
        /// Echoed.
        seq: u64,
        /// Echoed.
        sent_tick: u64,
    },
    /// One chunk of an InstallSnapshot transfer.
    Snapshot {
        /// What the whole snapshot covers.
        meta: SnapshotMeta,
        /// Total size of the snapshot data.
        total_len: u64,
        /// Where this chunk starts.
        offset: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Answer to a snapshot chunk.
    SnapshotResp {
        /// Index of the snapshot being transferred.
        index: Index,
        /// The offset the follower expects next; `total_len` when the whole
        /// snapshot is installed and durable.
        next_offset: u64,
        /// The follower cannot take this snapshot (too large).
        reject: bool,
    },
    /// "Campaign now" from a leader handing over leadership.
    TimeoutNow,
    /// A follower asks the leader for a read index.
    ReadIndex {
        /// The follower's tag.
        ctx: u64,
    },
    /// The leader's answer to [`MessageBody::ReadIndex`].
    ReadIndexResp {
        /// Echoed tag.
        ctx: u64,
        /// The confirmed read index.
        index: Index,
    },
}

impl MessageBody {
    /// A short name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResp { .. } => "PreVoteResp",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResp { .. } => "VoteResp",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResp { .. } => "AppendResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResp { .. } => "HeartbeatResp",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::SnapshotResp { .. } => "SnapshotResp",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResp { .. } => "ReadIndexResp",
        }
    }
}
