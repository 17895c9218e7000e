//! The client protocol of a coordinator replica (what `ramcoord ctl` and
//! masters speak), and of a master (what `ctl put` / `ctl get` speak).
//!
//! A request is a transport message tagged [`tag::CLIENT`] (to a
//! coordinator replica) or [`tag::MASTER`] (to a master), carrying a
//! postcard-encoded [`Envelope`]: a request id chosen by the client and the
//! request. The answer is tagged [`tag::CLIENT_REPLY`] /
//! [`tag::MASTER_REPLY`] and carries the same id, so a client that
//! timed out and asked again can tell a late answer from the one it waits
//! for. Anything that does not decode is counted and dropped, like any bad
//! message; the connection it came on is not trusted more for it.
//!
//! Operations are answered at their **commit point**: the reply says the
//! operation's commit record is committed (it will complete even if the
//! leader crashes now: the next one rolls it forward), with the index it
//! got (its sequence number) and how long the leader took from receiving
//! the request to knowing it committed. Completion is asked for separately
//! ([`ClientRequest::OpState`]).
//!
//! # Exactly once
//!
//! Every operation carries an [`RpcId`]: the client's random id, its
//! sequence number for the operation, and a committed index it had seen
//! before sending it. The id goes into the commit record, and the cluster
//! state keeps, per client, its last applied operation and the outcome
//! ([`crate::cluster::Sessions`], at most
//! [`crate::cluster::limits::SESSIONS_MAX`] clients). So a client whose
//! leader vanished (no answer, connection lost, a change of leader) sends
//! the same operation, same id, to the next leader: if it was applied, the
//! answer is the original outcome (its seq and result) and nothing is
//! proposed; if this leader proposed it and it has not committed yet, the
//! retry waits for that proposal; if the state cannot tell (the client was
//! evicted, or has had a later operation applied), the answer is
//! [`ClientReply::Unknown`]; otherwise it is proposed, and should an
//! earlier copy commit first, the later one applies as a duplicate that
//! changes nothing.
//!
//! Followers answer [`ClientReply::NotLeader`] with the leader's id and,
//! when they know it (from `--peers`, or an `add-replica --address`), its
//! address: a client given any one replica finds the leader.

use bytes::{BufMut, Bytes, BytesMut};
use ramcoord_log::wire::encode_message;
use ramcoord_log::Message;
use ramcoord_net::{PeerId, RegionId};
use serde::{Deserialize, Serialize};

use crate::cluster::{Effect, Rejection, Server, ServerId, Table, TableId};
use crate::coordinator::Request;

pub use crate::cluster::RpcId;

/// The first byte of a transport message: what follows.
pub mod tag {
    /// A Raft message (`ramcoord_log::wire`).
    pub const RAFT: u8 = 1;
    /// A client request to a coordinator replica ([`super::ClientRequest`]).
    pub const CLIENT: u8 = 2;
    /// A replica's answer to a client ([`super::ClientReply`]).
    pub const CLIENT_REPLY: u8 = 3;
    /// A client's request to a master ([`super::MasterRequest`]).
    pub const MASTER: u8 = 4;
    /// A master's answer ([`super::MasterReply`]).
    pub const MASTER_REPLY: u8 = 5;
}

/// The id of a master's configuration region (the one-sided writes of
/// configuration pushes land there).
pub const CONFIG_REGION: RegionId = 1;

/// The transport id of the master process with this enlistment nonce:
/// the nonce with bit 63 set (replicas use small ids, clients bit 62).
pub fn master_peer_id(nonce: u64) -> PeerId {
    nonce | (1 << 63)
}

/// The id a master process's client of the coordinators (enlist,
/// heartbeats) speaks under: a master id (bit 63), distinct from its
/// transport id, whose messages go to the master's own transport (the
/// coordinator pushes there; answers to the client must not).
pub fn master_client_id(nonce: u64) -> PeerId {
    master_peer_id(nonce) ^ (1 << 62)
}

/// Encodes a Raft message as a transport payload.
pub fn raft_payload(m: &Message) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u8(tag::RAFT);
    encode_message(m, &mut b);
    b.freeze()
}

/// An operation with its exactly-once id (see the module docs).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClientOp {
    /// Who asks, and which of its operations this is (a retry reuses it).
    pub rpc: RpcId,
    /// The operation.
    pub op: Request,
}

/// A request or reply with the client's request id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Envelope<T> {
    /// Chosen by the client; echoed in the reply.
    pub id: u64,
    /// The request or reply.
    pub body: T,
}

/// What a client asks a coordinator replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// This replica's view of the group and the cluster.
    Status,
    /// The active coordinator's cluster state: servers, tables, incomplete
    /// and recent operations (others answer [`ClientReply::NotLeader`]: a
    /// follower's state may lag).
    View,
    /// An operation (leader only; a follower answers
    /// [`ClientReply::NotLeader`]). Answered at the commit point, at most
    /// once per [`RpcId`] (see the module docs).
    Operate(ClientOp),
    /// An operation, answered twice: at its commit point
    /// ([`ClientReply::Committed`]) and at its completion
    /// ([`ClientReply::Completed`]), on the same request id.
    OperateUntilComplete(ClientOp),
    /// A no-op record through the log, answered when it commits: the
    /// log's own cost (benchmarks).
    Noop,
    /// Whether operation `seq` has completed.
    OpState {
        /// The operation (its commit record's index).
        seq: u64,
    },
    /// A membership change of the coordinator group (leader only),
    /// answered when it applies.
    ChangeReplicas(ReplicaChange),
    /// A master's heartbeat.
    Heartbeat {
        /// The server.
        from: ServerId,
    },
    /// Whether a table exists, read linearizably (leader only): answered
    /// once the leader has confirmed it still leads and applied the log up
    /// to the commit index of that moment (Raft's read index).
    Lookup {
        /// The table's name.
        table: String,
    },
    /// The configuration changes committed after version `after`, oldest
    /// first (`ctl watch`). Any replica answers, from the state it has
    /// applied: the changes are committed ones, so a watcher that moves to
    /// another replica after a crash resumes from the last version it saw
    /// with no gap and no repeat. If there is none yet, the answer waits
    /// up to `wait_ms` (capped at [`WATCH_WAIT_MS_MAX`]) for one.
    Watch {
        /// The last version the watcher has seen.
        after: u64,
        /// How long to wait for a change before answering with none.
        wait_ms: u32,
    },
    /// The active coordinator's applied cluster state, whole (`ctl
    /// snapshot save`; admins only: it holds the masters' nonces).
    Backup,
    /// A master being stopped asks for its tablets to go to the others
    /// now (a drain). It must have stopped serving first. Answered
    /// [`ClientReply::Leaving`]; the master then heartbeats until told it
    /// is gone (the crash of its server committed).
    Leave {
        /// The server.
        server: ServerId,
    },
}

/// The longest a [`ClientRequest::Watch`] waits before answering.
pub const WATCH_WAIT_MS_MAX: u32 = 10_000;

/// Changes one [`ClientReply::Changes`] carries at most (the watcher asks
/// again for the rest).
pub const WATCH_CHANGES_MAX: usize = 64;

/// One committed change of the server list or the tablet map: an
/// operation's commit record, which made configuration version `version`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The configuration version it made (one more than the last).
    pub version: u64,
    /// Its commit record's log index (the operation's seq).
    pub index: u64,
    /// The term of that record.
    pub term: u64,
    /// Its kind (`enlist`, `create-table`, `server-crashed`, ...).
    pub kind: String,
    /// What it did, in one line.
    pub summary: String,
    /// The servers it names, as they are after it.
    pub servers: Vec<Server>,
    /// The tables whose tablets it changed, as they are after it.
    pub tables: Vec<Table>,
    /// The table it dropped.
    pub dropped_table: Option<String>,
}

/// A single-replica membership change (one at a time; the leader refuses
/// another while one is pending).
///
/// A replica id is never reused: a replica whose data directory was lost
/// comes back under a new id (started with `--join`), because an empty log
/// under an old id could still be asked to vote by a lagging replica that
/// counts it in an older configuration, having forgotten what it had
/// acknowledged (the simulator finds this).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ReplicaChange {
    /// Remove a voter or learner.
    Remove(u64),
    /// Add a learner: it receives the log but does not vote.
    AddLearner {
        /// Its id (new).
        id: u64,
        /// Where it listens, if the group was not started knowing it.
        addr: Option<String>,
    },
    /// Make a learner (or a new replica) a voter.
    AddVoter(u64),
}

/// A replica's view, for `ctl status`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The replica.
    pub id: u64,
    /// "leader", "follower", "candidate" or "pre-candidate".
    pub role: String,
    /// Its Raft term.
    pub term: u64,
    /// Its commit index.
    pub commit: u64,
    /// Its last log index.
    pub last_index: u64,
    /// Its log is durable through here. On a leader this may trail the
    /// commit index: the commit point waits for a majority's disks, not
    /// necessarily its own.
    pub durable_index: u64,
    /// The index its cluster state has applied.
    pub applied: u64,
    /// Who it believes leads.
    pub leader: Option<u64>,
    /// Whether it is the active coordinator (leader with its term's entry
    /// applied).
    pub active: bool,
    /// Servers up in its cluster state.
    pub servers_up: u64,
    /// Tables in its cluster state.
    pub tables: u64,
    /// Operations past their commit point, not complete.
    pub incomplete: u64,
    /// Per follower (leader only): (replica, match index).
    pub match_index: Vec<(u64, u64)>,
    /// Voting replicas, as this replica's configuration says.
    pub voters: Vec<u64>,
    /// Learners (receive the log, do not vote).
    pub learners: Vec<u64>,
    /// The replicas' client addresses this replica knows (its own
    /// included), as configured (`--peers`, `add-replica --address`).
    pub addresses: Vec<(u64, String)>,
    /// Commit points this replica proposed and saw commit, since it
    /// started.
    pub commits_measured: u64,
    /// Median commit-point latency of the last
    /// [`RECENT_LATENCIES`] of them, in microseconds.
    pub commit_p50_us: u64,
    /// 99th percentile of the same, in microseconds.
    pub commit_p99_us: u64,
    /// Whether this replica runs without TLS (`--insecure`): ids and
    /// roles are then taken on trust.
    pub insecure: bool,
    /// Per other member: milliseconds since its last Raft message reached
    /// this replica (members never heard from are absent).
    pub last_contact_ms: Vec<(u64, u64)>,
}

/// How many recent commit-point latencies `ctl status` summarises.
pub const RECENT_LATENCIES: usize = 1024;

/// One operation as this replica saw it in the log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// Its sequence number (the commit record's index).
    pub seq: u64,
    /// The term of the commit record.
    pub term: u64,
    /// What it does ([`crate::cluster::Op::summary`]).
    pub summary: String,
    /// Its kind ([`crate::cluster::Op::kind`]).
    pub kind: String,
    /// Refused at apply (its precondition failed): the reason.
    pub rejected: Option<String>,
    /// The completion record's index and term, once applied.
    pub completed: Option<(u64, u64)>,
    /// Commit-point latency, if this replica proposed it and saw it commit.
    pub commit_us: Option<u64>,
    /// Time from applying the commit record to applying the completion,
    /// on this replica.
    pub complete_after_us: Option<u64>,
}

/// A replica's cluster state, for `ctl servers`, `ctl tables`, `ctl ops`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The replica.
    pub id: u64,
    /// Its term.
    pub term: u64,
    /// Whether it is the active coordinator.
    pub active: bool,
    /// The index its state has applied.
    pub applied: u64,
    /// Every server the list holds.
    pub servers: Vec<Server>,
    /// Every table.
    pub tables: Vec<Table>,
    /// Operations past their commit point, not complete: (seq, summary,
    /// targets still to acknowledge).
    pub incomplete: Vec<(u64, String, Vec<ServerId>)>,
    /// The most recent operations this replica applied (oldest first).
    pub recent: Vec<OpRecord>,
}

/// The outcome of an operation at its commit point.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// A server enlisted (or had already: a retried enlistment).
    Enlisted(ServerId),
    /// A table was created.
    TableCreated(TableId),
    /// The change was made.
    Changed,
    /// The commit record's precondition failed when it applied: nothing
    /// changed.
    Rejected(String),
}

impl OpResult {
    /// The answer for what an operation's commit record did.
    pub fn of(result: &Result<Effect, Rejection>) -> OpResult {
        match result {
            // A retried enlistment of a server that is up: the server.
            Err(Rejection::AlreadyEnlisted(s)) => OpResult::Enlisted(*s),
            Err(r) => OpResult::Rejected(r.to_string()),
            Ok(Effect::Enlisted(s)) => OpResult::Enlisted(*s),
            Ok(Effect::TableCreated(t)) => OpResult::TableCreated(*t),
            Ok(Effect::Changed) => OpResult::Changed,
        }
    }
}

/// What a coordinator replica answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    /// The answer to [`ClientRequest::Status`].
    Status(Status),
    /// The answer to [`ClientRequest::View`].
    View(View),
    /// The operation's commit record is committed (and applied here).
    /// For a retry of an operation applied already: its original seq and
    /// result.
    Committed {
        /// Its sequence number.
        seq: u64,
        /// The term its commit record was written in (the leader's term,
        /// if the log no longer holds it).
        term: u64,
        /// What it did.
        result: OpResult,
        /// From receiving the request to knowing its record committed.
        commit_us: u64,
    },
    /// The operation completed (second answer to
    /// [`ClientRequest::OperateUntilComplete`]).
    Completed {
        /// Its sequence number.
        seq: u64,
        /// From receiving the request to applying the completion record.
        complete_us: u64,
    },
    /// The request cannot be proposed (checked against the leader's state):
    /// it had no effect, and the same request would be refused again.
    Refused(String),
    /// This attempt had no effect (the proposal was lost in a change of
    /// leader, or the leader is busy): send the same request again.
    Retry(String),
    /// The operation's outcome is unknown: it may or may not have been
    /// applied (its client was evicted from the exactly-once table, or has
    /// had a later operation applied). Nothing was proposed.
    Unknown(String),
    /// Not the active coordinator: ask `leader` (if known), at `addr` (if
    /// this replica knows it).
    NotLeader {
        /// Who this replica believes leads.
        leader: Option<u64>,
        /// The leader's client address (`HOST:PORT`), if known here.
        addr: Option<String>,
    },
    /// The answer to [`ClientRequest::OpState`].
    OpState {
        /// The operation.
        seq: u64,
        /// Applied here and not complete.
        incomplete: bool,
        /// This replica's applied index (the answer is as of it).
        applied: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatAck {
        /// The coordinator counts this server as gone: it must stop.
        gone: bool,
        /// Who leads, as this replica believes.
        leader: Option<u64>,
        /// The answering replica's term (a master grants configuration
        /// write access to the leader of the newest term it hears of).
        term: u64,
        /// The lease granted, in microseconds, counted from when the
        /// master sent the heartbeat (0 when `gone`): it may serve until
        /// then (see `master` on why this is safe).
        lease_us: u64,
        /// Heartbeat again after this long, in microseconds (the leader
        /// slows heartbeats as the cluster grows; see `coordinator`'s
        /// "Failure detection").
        interval_us: u64,
    },
    /// The answer to [`ClientRequest::Lookup`].
    Lookup {
        /// The table exists.
        exists: bool,
        /// The applied index the answer was read at.
        index: u64,
    },
    /// The answer to [`ClientRequest::Watch`]: changes after the version
    /// asked for (none if the wait ended first).
    Changes {
        /// This replica's configuration version.
        version: u64,
        /// The changes, oldest first, consecutive versions.
        changes: Vec<Change>,
    },
    /// The answer to [`ClientRequest::Leave`].
    Leaving {
        /// Its tablets are being handed over (else: `why` not).
        accepted: bool,
        /// Why not.
        why: Option<String>,
    },
    /// The answer to [`ClientRequest::Backup`].
    Backup {
        /// The log index the state is as of (applied, so committed).
        index: u64,
        /// The term of the entry at `index`.
        term: u64,
        /// The leader's current term.
        current_term: u64,
        /// The state's configuration version.
        version: u64,
        /// The state ([`crate::cluster::ClusterState::snapshot`]).
        state: Bytes,
    },
    /// The answer to [`ClientRequest::Watch`] when this replica no longer
    /// holds the change after the version asked for (it keeps the last
    /// [`crate::replica::CHANGES_KEPT`] since it started, and none from
    /// before its snapshot). The watcher must start again from the
    /// current state.
    ChangesCompacted {
        /// The oldest version this replica can give.
        oldest: u64,
        /// This replica's configuration version.
        version: u64,
    },
}

impl std::fmt::Display for ReplicaChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaChange::Remove(id) => write!(f, "remove replica {id}"),
            ReplicaChange::AddLearner { id, addr } => write!(
                f,
                "add replica {id} as a learner at {}",
                addr.as_deref().unwrap_or("its known address")
            ),
            ReplicaChange::AddVoter(id) => write!(f, "make replica {id} a voter"),
        }
    }
}

impl ClientReply {
    /// Its kind, in words (`heartbeat-ack`, `not-leader`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientReply::Status(_) => "status",
            ClientReply::View(_) => "view",
            ClientReply::Committed { .. } => "committed",
            ClientReply::Completed { .. } => "completed",
            ClientReply::Refused(_) => "refused",
            ClientReply::Retry(_) => "retry",
            ClientReply::Unknown(_) => "unknown-outcome",
            ClientReply::NotLeader { .. } => "not-leader",
            ClientReply::OpState { .. } => "op-state",
            ClientReply::HeartbeatAck { .. } => "heartbeat-ack",
            ClientReply::Lookup { .. } => "lookup",
            ClientReply::Changes { .. } => "changes",
            ClientReply::ChangesCompacted { .. } => "changes-compacted",
            ClientReply::Backup { .. } => "backup",
            ClientReply::Leaving { .. } => "leaving",
        }
    }

    /// What it says, in one line for a log or an error.
    pub fn describe(&self) -> String {
        match self {
            ClientReply::Refused(w) => format!("refused: {w}"),
            ClientReply::Retry(w) => format!("retry: {w}"),
            ClientReply::Unknown(w) => format!("outcome unknown: {w}"),
            ClientReply::NotLeader { leader, addr } => format!(
                "not the active coordinator (leader: {} at {})",
                leader.map_or("unknown".to_string(), |l| format!("replica {l}")),
                addr.as_deref().unwrap_or("an unknown address")
            ),
            ClientReply::Committed { seq, result, .. } => {
                format!("committed (seq {seq}): {}", crate::ctl::result_text(result))
            }
            other => other.kind().to_string(),
        }
    }
}

/// What a client asks a master.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MasterRequest {
    /// Read a key.
    Get {
        /// The table.
        table: TableId,
        /// The key.
        key: Bytes,
    },
    /// Write a key.
    Put {
        /// The table.
        table: TableId,
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
}

/// What a master answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MasterReply {
    /// The value, if any.
    Value(Option<Bytes>),
    /// Written.
    Stored,
    /// This master does not own the key's tablet (now): look it up again.
    NotOwner(String),
    /// The client's role may not do this (a reader putting).
    Refused(String),
}

/// Largest client message accepted (a view of a big cluster is large).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = ramcoord_net::frame::FRAME_BODY_BYTES_MAX;

/// Why bytes are not a client or master message ([`decode`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Over [`CLIENT_MESSAGE_BYTES_MAX`].
    #[error("client message of {0} bytes")]
    TooLarge(usize),
    /// The body does not decode as the expected message.
    #[error("{0}")]
    Malformed(String),
    /// Bytes after the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Decodes an enveloped message body (after the tag).
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<Envelope<T>, DecodeError> {
    if b.len() > CLIENT_MESSAGE_BYTES_MAX {
        return Err(DecodeError::TooLarge(b.len()));
    }
    let (v, rest): (Envelope<T>, &[u8]) =
        postcard::take_from_bytes(b).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(v)
}

/// Encodes a tagged, enveloped message.
pub fn encode<T: Serialize>(tag: u8, id: u64, body: &T) -> Bytes {
    let mut out = vec![tag];
    let env = Envelope { id, body };
    out.extend(postcard::to_stdvec(&env).expect("client messages always serialise"));
    Bytes::from(out)
}
