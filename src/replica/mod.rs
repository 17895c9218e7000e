//! A coordinator replica as a sans-IO state machine: everything a replica
//! decides, nothing it does.
//!
//! A [`Replica`] holds the Raft core ([`RawNode`]) over some [`Storage`],
//! the applied [`ClusterState`], the active [`Coordinator`], and the
//! bookkeeping of the client protocol (clients waiting for a commit point
//! or a completion, linearizable lookups, masters' heartbeats and their
//! leases, pushes in flight). It never reads a clock, never touches a
//! socket and never waits for a disk:
//!
//! - **events in** ([`Input`]): a transport message (a Raft message or a
//!   client request, still encoded: decoding and authorization happen
//!   here, at the edge), a tick, a disk write made durable, a push landed
//!   or refused; each with the time it happened ([`Replica::input`]);
//! - **actions out** ([`Output`]): send these bytes, persist this,
//!   learn this peer's address, write this configuration region into a
//!   master. The driver takes them with [`Replica::poll_output`] and
//!   reports back what completes.
//!
//! Two drivers run this same code: the process (`crate::node`, real
//! sockets and a real disk) and the simulator (`crate::sim`, simulated
//! time, network and disks that complete when the seed says so). A driver
//! bug therefore has one place to live, and the simulator's invariants
//! watch it.
//!
//! # The ready loop ([`Replica::drive`])
//!
//! After a batch of inputs the driver calls `drive`, which empties the Raft
//! core's readies:
//!
//! 1. committed entries are applied to the cluster state, and the clients
//!    waiting for them answered first (an entry is committed once a
//!    majority holds it durably, this replica not necessarily among them:
//!    the commit point does not wait for the leader's own flush);
//! 2. the messages that may leave now are sent (the leader's appends go
//!    out in parallel with its own write, thesis §10.2.1);
//! 3. what must become durable (snapshot, entries, hard state) is handed
//!    to the driver as one [`PersistJob`]; the ready waits in
//!    `persisting` until [`Input::Persisted`] says the job and every job
//!    before it is durable; only then are its `persisted_messages` (votes,
//!    acknowledgements) sent and the core advanced. Jobs may be pipelined:
//!    several in flight, completed in order.
//!
//! Then the coordinator acts: it proposes records (run through the loop
//! again) and pushes configuration to masters.
//!
//! # Snapshots
//!
//! Every `snapshot_entries` applied entries the replica compacts its log
//! in two halves, so that the Raft thread never encodes or writes a
//! snapshot (tens of milliseconds and a file's `fsync` at a million
//! tablets, longer than a commit):
//!
//! 1. it takes a frozen copy of the state ([`ClusterState::frozen`],
//!    O(tables)) once every entry up to the applied index is durable here,
//!    and hands it out as [`Output::WriteSnapshot`]; the driver encodes it
//!    and writes the snapshot durably off this thread;
//! 2. [`Input::SnapshotWritten`] brings the encoded snapshot back, and
//!    once no persist job is out the storage drops the entries it covers
//!    ([`Storage::compact_written`]); followers that fall behind are sent
//!    it from then on.
//!
//! One snapshot job is out at a time. A crash between the halves leaves a
//! snapshot newer than the log's start, which opening the log handles (the
//! entries it covers are ignored); a snapshot installed from the leader
//! meanwhile overtakes the job's, whose result is then dropped. The
//! driver must not write an installed snapshot while a job's write is
//! under way (the process waits for the job first).
//!
//! # Time
//!
//! Every input carries `now` (a monotonic instant). The replica measures
//! commit-point latencies, lease and read timeouts and held pushes against
//! it, and against nothing else: under the simulator `now` is simulated,
//! so a seed replays exactly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ramcoord_log::{
    EntryKind, HardState, Message, NodeId, RawNode, Ready, Role, Snapshot, Storage, StorageError,
};
use ramcoord_net::{PeerId, WriteStatus};

use crate::cluster::{ClusterState, ServerId};
use crate::coordinator::{Action, Coordinator, CoordinatorBugs, CoordinatorConfig};
use crate::metrics::Metrics;
use crate::protocol::{self, ClientReply, OpRecord};

mod applied;
mod reads;
mod report;
mod requests;
mod watch;

#[cfg(test)]
mod tests;

use reads::{HeartbeatWaiter, Lookup};
use requests::Waiter;
use watch::Watcher;
pub use watch::{CHANGES_KEPT, WATCHERS_MAX};

/// How many applied operations a replica remembers for `ctl ops`.
pub const RECENT_OPS: usize = 256;

/// Pushes whose completion a replica waits for at most; past it the oldest
/// is forgotten (the coordinator pushes that master again).
pub const PUSHES_TRACKED_MAX: usize = 65_536;

/// Pushes to one master that may go unacknowledged in a row (each for half
/// a retry period) before it is marked slow: no pushes to it until it
/// heartbeats again.
pub const PUSH_STALLS_SLOW: u32 = 3;

/// One master's pushes ([`Replica::push`]).
#[derive(Debug, Default)]
struct PushLane {
    /// The term of the leadership these pushes belong to.
    term: u64,
    /// The write in flight, and when it was sent.
    in_flight: Option<(u64, Instant)>,
    /// The newest push waiting for it.
    waiting: Option<Action>,
    /// Pushes in a row that went unacknowledged.
    stalls: u32,
    /// Marked slow: nothing is pushed until it heartbeats.
    slow: bool,
}

/// What a replica needs to know to decide (the process's other settings,
/// such as where its log lives, belong to its driver).
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This replica's id.
    pub id: NodeId,
    /// Whether its connections are mutual TLS (reported in `status`).
    pub tls: bool,
    /// One Raft tick (the lease granted to masters is counted in ticks).
    pub tick: Duration,
    /// The coordinator's timing (pushes, proposals, failure detection), in
    /// ticks.
    pub coordinator: CoordinatorConfig,
    /// Compact the log after this many entries applied since the last
    /// snapshot.
    pub snapshot_entries: u64,
    /// Hold every push this long before sending it (a fault-injection knob
    /// for demos and tests: it widens the window between an operation's
    /// commit point and its completion).
    pub push_delay: Duration,
    /// The replicas' client addresses (`HOST:PORT`, as configured; this
    /// one's included): followers name the leader's in `NotLeader`, and
    /// the leader checks `add-voter` against them. A replica added with an
    /// address is added here by the leader that adds it.
    pub peer_addrs: BTreeMap<NodeId, String>,
    /// Planted bugs in the replica (only chaos tests and the simulator set
    /// them).
    pub bugs: NodeBugs,
    /// Planted bugs in the coordinator logic (only the simulator sets them).
    pub coordinator_bugs: CoordinatorBugs,
}

impl ReplicaConfig {
    /// Defaults: 10 ms ticks, the default coordinator timing.
    pub fn new(id: NodeId) -> ReplicaConfig {
        ReplicaConfig {
            id,
            tls: false,
            tick: Duration::from_millis(10),
            coordinator: CoordinatorConfig::default(),
            snapshot_entries: 10_000,
            push_delay: Duration::ZERO,
            peer_addrs: BTreeMap::new(),
            bugs: NodeBugs::default(),
            coordinator_bugs: CoordinatorBugs::default(),
        }
    }
}

/// Bugs planted in the replica so that `ramcoord chaos` and the simulator
/// can show they catch them. Never set in production (a hidden flag).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeBugs {
    /// Answer a client's operation as committed as soon as it is proposed,
    /// before its commit point: a leader cut off from its quorum
    /// acknowledges operations that are then lost.
    pub ack_before_commit: bool,
    /// Send a ready's acknowledgements and votes as soon as its persist job
    /// is handed to the disk, not once it is durable: a replica that
    /// crashes then has promised what it lost.
    pub ack_before_flush: bool,
    /// Push to a master whatever is still in flight to it: every retry
    /// queues another whole region behind a master that reads slowly.
    pub push_past_the_lane: bool,
}

/// Why a replica must stop. Every variant is fatal: the replica cannot
/// tell what is durable any more, or its state is not what its log says.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The log's storage failed.
    #[error("the log failed: {0}")]
    Storage(#[from] StorageError),
    /// A snapshot (from the disk or the leader) does not decode.
    #[error("unreadable snapshot at index {index}: {why}")]
    Snapshot {
        /// The snapshot's index.
        index: u64,
        /// What is wrong with it.
        why: crate::cluster::SnapshotError,
    },
}

/// Something that happened, for [`Replica::input`].
#[derive(Clone, Debug)]
pub enum Input {
    /// A transport message from a peer (a Raft message or a client
    /// request, tagged: [`protocol::tag`]). `from` is the transport's
    /// word for who sent it (under TLS, proven by its certificate).
    Message {
        /// The sender.
        from: PeerId,
        /// The tagged payload.
        payload: Bytes,
    },
    /// A Raft tick elapsed.
    Tick,
    /// The [`PersistJob`] numbered `number`, and every one before it, is
    /// durable.
    Persisted {
        /// The job's number.
        number: u64,
    },
    /// The snapshot of an [`Output::WriteSnapshot`] is durable where the
    /// storage keeps its snapshot ([`SnapshotJob::encode`] made it).
    SnapshotWritten {
        /// The snapshot, encoded.
        snapshot: Snapshot,
    },
    /// The write of an [`Output::Push`] finished.
    PushDone {
        /// The push's `write` id.
        write: u64,
        /// The peer the transport wrote to.
        to: PeerId,
        /// Landed, or why not.
        status: WriteStatus,
    },
}

/// What the driver must do, in the order given.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send `payload` (tagged, see [`protocol::tag`]) to `to`. Best effort:
    /// a message lost on the way is a message the protocol retries.
    Send {
        /// The peer.
        to: PeerId,
        /// The tagged payload.
        payload: Bytes,
    },
    /// Make this durable, then report [`Input::Persisted`] with its
    /// number. Jobs complete in order.
    Persist(PersistJob),
    /// Encode this snapshot and write it durably where the storage keeps
    /// its snapshot, off the thread that drives the replica, then report
    /// [`Input::SnapshotWritten`]. At most one is out. A `Persist` that
    /// carries a snapshot (one installed from the leader) must not be
    /// written while this one's write is under way.
    WriteSnapshot(SnapshotJob),
    /// From now on, `peer` is reached at `addr` (a replica added with an
    /// address).
    AddPeer {
        /// The replica.
        peer: NodeId,
        /// Where it listens.
        addr: SocketAddr,
    },
    /// Write `region` into the configuration region
    /// ([`protocol::CONFIG_REGION`]) of the master at `addr`, whose
    /// transport id is `peer`, then report [`Input::PushDone`] with
    /// `write` (a push that cannot be sent at all may go unreported: the
    /// coordinator pushes again).
    Push {
        /// This push's id, for [`Input::PushDone`].
        write: u64,
        /// The master's server id.
        server: ServerId,
        /// Its address, as it enlisted with it.
        addr: String,
        /// Its transport id ([`protocol::master_peer_id`]).
        peer: PeerId,
        /// The configuration version in `region`.
        version: u64,
        /// The encoded region.
        region: Bytes,
    },
}

/// A snapshot to encode and write off the Raft thread
/// ([`Output::WriteSnapshot`]).
#[derive(Clone)]
pub struct SnapshotJob {
    /// What it covers: the applied index, its term and configuration.
    pub meta: ramcoord_log::SnapshotMeta,
    /// The cluster state at `meta.index`, frozen ([`ClusterState::frozen`]).
    pub state: ClusterState,
}

impl SnapshotJob {
    /// The snapshot, encoded: the slow half (tens of milliseconds at a
    /// million tablets), for the driver's worker.
    pub fn encode(&self) -> Snapshot {
        Snapshot {
            meta: self.meta.clone(),
            data: self.state.snapshot(),
        }
    }
}

impl std::fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the state: a million tablets in a log line helps nobody.
        f.debug_struct("SnapshotJob")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// What one ready needs made durable, in this order: the snapshot, the
/// entries (overwriting any stored suffix from the first one's index), the
/// hard state. The driver writes it to the replica's storage
/// ([`Replica::storage_mut`]) and syncs it as `must_sync` says.
#[derive(Clone, Debug, Default)]
pub struct PersistJob {
    /// Its number (increasing by one; [`Input::Persisted`] names it).
    pub number: u64,
    /// A snapshot from the leader.
    pub snapshot: Option<Snapshot>,
    /// Entries to append.
    pub entries: Vec<ramcoord_log::Entry>,
    /// The hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// Something must reach the disk (entries, a snapshot, a term or a
    /// vote); a commit index alone may stay in the page cache.
    pub must_sync: bool,
}

impl PersistJob {
    /// Writes the job into `storage` (without syncing): what a driver's
    /// disk does, in the order the storage rules require.
    pub fn write_to<S: Storage>(&self, storage: &mut S) -> Result<(), StorageError> {
        if let Some(snap) = &self.snapshot {
            storage.apply_snapshot(snap.clone())?;
        }
        storage.append(&self.entries)?;
        if let Some(hs) = self.hard_state {
            storage.set_hard_state(hs)?;
        }
        Ok(())
    }
}

/// What a replica applied, for an observer that checks every apply (the
/// simulator): kept only when [`Replica::observe_applies`] is on.
#[derive(Clone, Debug)]
pub enum AppliedNote {
    /// The state was replaced by a snapshot from the leader, at `index`.
    Snapshot {
        /// The snapshot's index.
        index: u64,
    },
    /// One entry applied.
    Entry(Box<EntryApplied>),
}

/// One entry as a replica applied it (see [`AppliedNote`]).
#[derive(Clone, Debug)]
pub struct EntryApplied {
    /// The entry.
    pub entry: ramcoord_log::Entry,
    /// What applying it did.
    pub outcome: crate::cluster::Outcome,
    /// For a completion record: the operation it completes, as it stood
    /// just before (`None` if it was not incomplete here).
    pub completing: Option<crate::cluster::Pending>,
    /// The cluster state's own invariants, checked right after; `None`
    /// where the observer asked for checks at every k-th index only
    /// ([`Replica::observe_applies`]) and this is not one.
    pub state_check: Option<Result<(), crate::cluster::InvariantViolation>>,
    /// Whether this replica was the active coordinator when it applied.
    pub active: bool,
}

/// Why [`Replica::propose`] did not propose a record.
#[derive(Debug, thiserror::Error)]
pub enum ProposeRecordError {
    /// The record cannot be encoded (it breaks a limit).
    #[error(transparent)]
    Record(#[from] crate::cluster::RecordError),
    /// Raft refused it (this replica does not lead, or is stepping down).
    #[error(transparent)]
    Propose(#[from] ramcoord_log::ProposeError),
}

/// A coordinator replica (see the module docs).
pub struct Replica<S: Storage> {
    cfg: ReplicaConfig,
    raft: RawNode<S>,
    cluster: ClusterState,
    coord: Coordinator,
    /// The time of the input being handled.
    now: Instant,
    /// Actions for the driver, oldest first.
    out: VecDeque<Output>,
    /// Readies whose persist job is with the driver, oldest first.
    persisting: VecDeque<Ready>,
    /// Transport messages that were not well-formed or were refused.
    rejected_messages: u64,
    /// When each member of the group last sent this replica a Raft
    /// message (`ctl members`' last contact). Members only: bounded by the
    /// configuration.
    heard_from: BTreeMap<u64, Instant>,
    /// Clients waiting for the commit point of the entry at an index.
    waiters: BTreeMap<u64, Waiter>,
    /// Client operations this replica proposed and has not seen apply:
    /// where (a retry waits for that proposal instead of proposing again).
    /// By (client, seq).
    rpc_inflight: HashMap<(u64, u64), u64>,
    /// Clients waiting for an operation's completion, by its seq.
    completion_waiters: BTreeMap<u64, Waiter>,
    /// When this replica proposed the entry at an index.
    proposed_at: BTreeMap<u64, Instant>,
    /// When each incomplete operation's commit record applied here.
    committed_at: BTreeMap<u64, Instant>,
    /// Recent commit-point latencies (µs), newest last.
    commit_latencies_us: VecDeque<u64>,
    commits_measured: u64,
    /// Recent operations, oldest first.
    recent: VecDeque<OpRecord>,
    /// Pushes in flight: write id -> (server, term, version, peer). Ids
    /// grow, so the oldest go first when there are more than
    /// [`PUSHES_TRACKED_MAX`] (a push whose completion never comes, lost
    /// with its connection, is forgotten that way; every write that lands
    /// while tracked counts, older versions included).
    pushes_in_flight: BTreeMap<u64, (ServerId, u64, u64, PeerId)>,
    /// Each master's lane of pushes: at most one write in flight, the
    /// newest push waiting behind it, and whether it is marked slow.
    push_lanes: BTreeMap<ServerId, PushLane>,
    /// The last push's write id.
    last_write: u64,
    /// Pushes held back by `push_delay`: (when due, action).
    delayed_pushes: VecDeque<(Instant, Action)>,
    /// Raft refusals counted into `rejected_messages` and logged so far,
    /// and when last logged.
    refusals_logged: (u64, Option<Instant>),
    /// Requests refused for a missing role, and when one was last logged.
    refused_by_role: u64,
    role_refusal_logged: Option<Instant>,
    /// How many lost-match findings were logged, and when last.
    lost_matches_logged: (u64, Option<Instant>),
    /// Linearizable lookups and heartbeat batches waiting for their read
    /// index, by its tag. (Ordered: the replica's outputs must not depend
    /// on a hash seed, or the simulator could not replay a seed.)
    lookups: BTreeMap<u64, Lookup>,
    /// Read indexes confirmed by the Raft core, waiting for the apply:
    /// (index, tag).
    reads_confirmed: Vec<(u64, u64)>,
    /// The tag of the last read index asked for.
    last_read_tag: u64,
    /// Heartbeats that arrived since the heartbeats' read under way began
    /// (they wait for the next one: one read at a time serves them all).
    heartbeats_queued: Vec<HeartbeatWaiter>,
    /// The last index at which this replica proposed a record that may
    /// declare a master crashed ([`Record::may_declare_crashed`]), or a
    /// record it could not read. A heartbeats' read waits for the state
    /// to apply it, not the whole log (see [`Self::start_heartbeats_read`]).
    crash_proposed_index: u64,
    /// The heartbeats' read under way: its tag, how many it answers, and
    /// when it began.
    heartbeats_read: Option<(u64, usize, Instant)>,
    /// Ticks taken so far, and the tick at which the last heartbeats' read
    /// began: one read a tick at most (see [`Self::start_heartbeats_read`]).
    ticks: u64,
    heartbeats_read_tick: Option<u64>,
    /// A tick came in: the coordinator acts on the passage of time at the
    /// next [`Replica::drive`].
    tick_pending: bool,
    /// Retried operations answered from the exactly-once table.
    retries_answered_applied: u64,
    /// The index of the snapshot the driver is encoding and writing
    /// ([`Output::WriteSnapshot`]), if one is out.
    snapshot_job: Option<u64>,
    /// A snapshot the driver wrote, waiting to compact the log until no
    /// persist job is out (the storage must hold what it covers, and
    /// nothing in flight may rewrite the log under it).
    pending_compaction: Option<Snapshot>,
    /// Applied entries kept for an observer, if one asked.
    applied_notes: Option<Vec<AppliedNote>>,
    /// Check the state after every this-many-th index (see
    /// [`Replica::observe_applies`]).
    state_check_every: u64,
    /// The last configuration changes applied, consecutive versions
    /// ending at the state's (see `watch`), with their encoded sizes.
    changes: VecDeque<(protocol::Change, usize)>,
    /// The sum of those sizes.
    changes_bytes: usize,
    /// Watches waiting for a change.
    watchers: VecDeque<Watcher>,
    /// What it measures (`/metrics`).
    metrics: Arc<Metrics>,
    /// Elections the Raft core started, already counted in the metrics.
    campaigns_counted: u64,
    /// The role and leader last logged: a change is logged once, so an
    /// operator reading one replica's log sees every election it took
    /// part in and why it started.
    role_logged: (Role, Option<NodeId>, u64),
    /// Masters up, counted at this server-list version (`/metrics`).
    servers_up_counted: (Option<u64>, u64),
    /// Raft refusals already counted into the metrics.
    raft_refusals_counted: u64,
    /// Masters with a push-failure count in the metrics.
    failed_masters: std::collections::BTreeSet<ServerId>,
}

impl<S: Storage> Replica<S> {
    /// A replica over `raft`, whose storage holds its log; its cluster
    /// state is the storage's snapshot, or `fresh` if it has none. `now`
    /// is the time it starts.
    pub fn new(
        cfg: ReplicaConfig,
        raft: RawNode<S>,
        fresh: ClusterState,
        now: Instant,
    ) -> Result<Replica<S>, ReplicaError> {
        let snapshot = raft.log().storage().snapshot();
        let cluster = if snapshot.data.is_empty() {
            fresh
        } else {
            ClusterState::restore(&snapshot.data).map_err(|why| ReplicaError::Snapshot {
                index: snapshot.meta.index,
                why,
            })?
        };
        Ok(Replica {
            raft,
            cluster,
            coord: Coordinator::new(cfg.coordinator, cfg.coordinator_bugs),
            cfg,
            now,
            out: VecDeque::new(),
            persisting: VecDeque::new(),
            rejected_messages: 0,
            heard_from: BTreeMap::new(),
            waiters: BTreeMap::new(),
            rpc_inflight: HashMap::new(),
            completion_waiters: BTreeMap::new(),
            proposed_at: BTreeMap::new(),
            committed_at: BTreeMap::new(),
            commit_latencies_us: VecDeque::new(),
            commits_measured: 0,
            recent: VecDeque::new(),
            pushes_in_flight: BTreeMap::new(),
            push_lanes: BTreeMap::new(),
            last_write: 0,
            delayed_pushes: VecDeque::new(),
            refusals_logged: (0, None),
            refused_by_role: 0,
            role_refusal_logged: None,
            lookups: BTreeMap::new(),
            heartbeats_queued: Vec::new(),
            crash_proposed_index: 0,
            heartbeats_read: None,
            ticks: 0,
            heartbeats_read_tick: None,
            reads_confirmed: Vec::new(),
            last_read_tag: 0,
            lost_matches_logged: (0, None),
            tick_pending: false,
            applied_notes: None,
            state_check_every: 1,
            changes: VecDeque::new(),
            changes_bytes: 0,
            watchers: VecDeque::new(),
            metrics: Arc::new(Metrics::new()),
            campaigns_counted: 0,
            role_logged: (Role::Follower, None, 0),
            servers_up_counted: (None, 0),
            raft_refusals_counted: 0,
            failed_masters: std::collections::BTreeSet::new(),
            snapshot_job: None,
            pending_compaction: None,
            retries_answered_applied: 0,
        })
    }

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// The applied cluster state.
    pub fn cluster(&self) -> &ClusterState {
        &self.cluster
    }

    /// The Raft core (read only: for status and the simulator's checks).
    pub fn raft(&self) -> &RawNode<S> {
        &self.raft
    }

    /// The coordinator logic (read only).
    pub fn coordinator(&self) -> &Coordinator {
        &self.coord
    }

    /// The log's storage (read only: what the driver's disk is doing).
    pub fn storage(&self) -> &S {
        self.raft.storage()
    }

    /// The log's storage, for the driver to carry out [`PersistJob`]s.
    pub fn storage_mut(&mut self) -> &mut S {
        self.raft.storage_mut()
    }

    /// Takes the replica apart: its storage (what a crash leaves behind is
    /// the driver's business).
    pub fn into_storage(self) -> S {
        self.raft.into_storage()
    }

    /// Raft role, term and commit index.
    pub fn status(&self) -> (Role, u64, u64) {
        (
            self.raft.role(),
            self.raft.term(),
            self.raft.log().committed,
        )
    }

    /// The replica believed to lead.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader_id()
    }

    /// Messages refused: at the edge (malformed, misaddressed, from the
    /// wrong role) or by the Raft core (a non-member, a term out of
    /// bounds).
    pub fn rejected_messages(&self) -> u64 {
        self.rejected_messages + self.raft.refusals().0
    }

    /// Retried client operations answered with the outcome the
    /// exactly-once table kept (nothing proposed), since it started.
    pub fn retries_answered_applied(&self) -> u64 {
        self.retries_answered_applied
    }

    /// Persist jobs handed out and not yet reported durable.
    pub fn persisting(&self) -> usize {
        self.persisting.len()
    }

    /// The next action for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the replica next wants to be called even if nothing happens
    /// (a held push falls due); ticks are the driver's own timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.delayed_pushes.front().map(|(due, _)| *due)
    }

    /// Handles one input at `now` (no earlier than the last one's). Call
    /// [`Replica::drive`] after a batch of inputs: taking several before
    /// driving lets one disk write carry them all.
    pub fn input(&mut self, now: Instant, input: Input) {
        self.now = self.now.max(now);
        match input {
            Input::Message { from, payload } => self.on_message(from, payload),
            Input::Tick => {
                self.ticks += 1;
                self.raft.tick();
                self.answer_watchers();
                // A tick also lets the coordinator act on the passage of
                // time (retries, failure detection); after the ready loop
                // has run, so it sees the state as of this tick.
                self.tick_pending = true;
            }
            Input::Persisted { number } => self.on_persisted(number),
            Input::SnapshotWritten { snapshot } => {
                if self.snapshot_job == Some(snapshot.meta.index) {
                    self.snapshot_job = None;
                    tracing::debug!(
                        index = snapshot.meta.index,
                        bytes = snapshot.data.len(),
                        "snapshot written"
                    );
                    self.pending_compaction = Some(snapshot);
                }
            }
            Input::PushDone { write, to, status } => self.on_push_done(write, to, status),
        }
    }

    /// Keeps a note of every entry applied from now on (see
    /// [`AppliedNote`]), until taken with [`Replica::take_applied`]; the
    /// state's invariants are checked after the entries whose index is a
    /// multiple of `check_every` (1: every entry). A full check walks the
    /// whole state, so checking every entry costs the square of the
    /// cluster's size: the simulator at thousands of masters checks every
    /// k-th.
    pub fn observe_applies(&mut self, check_every: u64) {
        self.applied_notes.get_or_insert_with(Vec::new);
        self.state_check_every = check_every.max(1);
    }

    /// The notes of the entries applied since the last call.
    pub fn take_applied(&mut self) -> Vec<AppliedNote> {
        self.applied_notes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Starts handing leadership to `to` (this replica must lead).
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ramcoord_log::ProposeError> {
        self.raft.transfer_leader(to)
    }

    /// Proposes `data` as it is, past every check of the edge: what a bug
    /// or a forged proposal would do. Only for the simulator, which shows
    /// that applying anything committed never stops a replica.
    #[doc(hidden)]
    pub fn propose_unchecked(
        &mut self,
        now: Instant,
        data: Bytes,
    ) -> Result<u64, ramcoord_log::ProposeError> {
        self.now = self.now.max(now);
        let index = self.raft.propose(data)?;
        // Anything at all: it may declare a master crashed.
        self.crash_proposed_index = index;
        Ok(index)
    }

    /// Proposes a record (this replica must lead); returns its index. For
    /// tests and tools: clients propose through the client protocol.
    pub fn propose(
        &mut self,
        now: Instant,
        record: &crate::cluster::Record,
    ) -> Result<u64, ProposeRecordError> {
        self.now = self.now.max(now);
        let data = record.encode()?;
        let index = self.raft.propose(data)?;
        self.proposed_at.insert(index, self.now);
        self.note_proposed(index, record);
        Ok(index)
    }
}

impl<S: Storage> Replica<S> {
    /// Notes a record proposed at `index` (see `crash_proposed_index`).
    fn note_proposed(&mut self, index: u64, record: &crate::cluster::Record) {
        if record.may_declare_crashed() {
            self.crash_proposed_index = self.crash_proposed_index.max(index);
        }
    }

    fn send_raft(&mut self, m: &Message) {
        self.out.push_back(Output::Send {
            to: m.to,
            payload: protocol::raft_payload(m),
        });
    }

    fn reply(&mut self, to: PeerId, request: u64, reply: &ClientReply) {
        let mut payload = protocol::encode(protocol::tag::CLIENT_REPLY, request, reply);
        // No answer may be larger than a frame (the transport would refuse
        // to encode it): say so instead.
        if payload.len() > ramcoord_net::frame::FRAME_BODY_BYTES_MAX {
            tracing::warn!(
                to,
                kind = reply.kind(),
                bytes = payload.len(),
                "an answer larger than a frame: refused instead"
            );
            let why = format!(
                "the {} answer is {} bytes, more than a frame carries ({})",
                reply.kind(),
                payload.len(),
                ramcoord_net::frame::FRAME_BODY_BYTES_MAX
            );
            payload = protocol::encode(
                protocol::tag::CLIENT_REPLY,
                request,
                &ClientReply::Refused(why),
            );
        }
        self.out.push_back(Output::Send { to, payload });
    }

    /// A transport message: a client request or a Raft message. Anything
    /// else, anything malformed, and anything from a peer whose role does
    /// not allow it is counted, logged (rate-limited) and dropped.
    fn on_message(&mut self, from: PeerId, payload: Bytes) {
        match payload.first() {
            Some(&protocol::tag::CLIENT) => {
                match protocol::decode::<protocol::ClientRequest>(&payload[1..]) {
                    Ok(env) => {
                        if let Err(why) = self.authorize(from, &env.body) {
                            self.refused_by_role += 1;
                            self.metrics.refuse("role");
                            self.log_role_refusal(from, &why);
                            self.reply(from, env.id, &ClientReply::Refused(why));
                            return;
                        }
                        self.answer(from, env.id, env.body)
                    }
                    Err(e) => {
                        self.rejected_messages += 1;
                        self.metrics.refuse("malformed");
                        tracing::warn!(from, error = %e, "malformed client request dropped");
                    }
                }
            }
            Some(&protocol::tag::RAFT) => {
                if !matches!(
                    ramcoord_net::tls::PeerClass::of(from),
                    ramcoord_net::tls::PeerClass::Replica(_)
                ) {
                    // Only a replica speaks Raft (with TLS, `from` is
                    // proven by its certificate).
                    self.refused_by_role += 1;
                    self.metrics.refuse("role");
                    self.log_role_refusal(from, "a Raft message from a client or a master");
                    return;
                }
                match ramcoord_log::wire::decode_message(payload.slice(1..)) {
                    Ok(m) if m.from == from && m.to == self.cfg.id => {
                        if self.raft.conf().members().any(|id| id == from) {
                            self.heard_from.insert(from, self.now);
                            if self.heard_from.len() > self.raft.conf().members().count() {
                                // Members that left.
                                let conf = self.raft.conf();
                                self.heard_from
                                    .retain(|id, _| conf.members().any(|m| m == *id));
                            }
                        }
                        self.raft.step(m);
                        self.log_refusals();
                    }
                    Ok(m) => {
                        self.rejected_messages += 1;
                        self.metrics.refuse("malformed");
                        tracing::warn!(from, claimed = m.from, to = m.to, "misaddressed message");
                    }
                    Err(e) => {
                        self.rejected_messages += 1;
                        self.metrics.refuse("malformed");
                        tracing::warn!(from, error = %e, "malformed Raft message dropped");
                    }
                }
            }
            _ => {
                self.rejected_messages += 1;
                self.metrics.refuse("malformed");
                tracing::warn!(from, "message with an unknown tag dropped");
            }
        }
    }

    /// A push's write finished: landed is the master's acknowledgement.
    fn on_push_done(&mut self, write: u64, to: PeerId, status: WriteStatus) {
        // Only the master the push went to can complete it.
        if self.pushes_in_flight.get(&write).is_none_or(|p| p.3 != to) {
            return;
        }
        let Some((server, term, version, _)) = self.pushes_in_flight.remove(&write) else {
            return;
        };
        let mut next = None;
        if let Some(lane) = self.push_lanes.get_mut(&server) {
            if lane.in_flight.is_some_and(|(w, _)| w == write) {
                lane.in_flight = None;
                next = lane.waiting.take();
                // A retry of what just landed (or older) need not go.
                if status == WriteStatus::Landed
                    && matches!(next, Some(Action::Push { version: v, .. }) if v <= version)
                {
                    next = None;
                }
            }
            if status == WriteStatus::Landed {
                lane.stalls = 0;
            }
        }
        if status != WriteStatus::Landed {
            self.failed_masters.insert(server);
            self.metrics
                .push_failures
                .get_or_create(&crate::metrics::MasterLabel {
                    master: server.to_string(),
                })
                .inc();
        }
        match status {
            WriteStatus::Landed => {
                tracing::debug!(%server, version, term, "push landed");
                self.coord.on_push_acked(server, term, version);
            }
            other => tracing::warn!(
                %server,
                peer = to,
                version,
                why = %other,
                "push refused by the master; retrying later"
            ),
        }
        // The newest push that waited behind this one goes now.
        if let Some(push) = next {
            self.push(push);
        }
    }

    /// A master heartbeated: it is alive and reading, so a slow mark on
    /// its pushes is lifted.
    pub(crate) fn on_master_heartbeat(&mut self, server: ServerId) {
        if let Some(lane) = self.push_lanes.get_mut(&server) {
            if lane.slow {
                tracing::info!(%server, "slow master heartbeated: pushing to it again");
            }
            lane.slow = false;
            lane.stalls = 0;
        }
    }

    /// The jobs up to `number` are durable: their readies' acknowledgements
    /// and votes may leave, and the Raft core learns it.
    fn on_persisted(&mut self, number: u64) {
        while self
            .persisting
            .front()
            .is_some_and(|rd| rd.number <= number)
        {
            let mut rd = self.persisting.pop_front().expect("just looked");
            for m in std::mem::take(&mut rd.persisted_messages) {
                self.send_raft(&m);
            }
            self.raft.advance(rd);
        }
    }

    /// The ready loop (see the module docs), then the coordinator's turn.
    /// An error is fatal: the replica must stop.
    pub fn drive(&mut self, now: Instant) -> Result<(), ReplicaError> {
        self.now = self.now.max(now);
        self.release_due_pushes();
        // Every job may just have become durable: the moment to compact.
        self.try_compact()?;
        loop {
            self.run_readies()?;
            self.after_readies()?;
            let mut actions = self.coord.on_applied(&self.cluster);
            if std::mem::take(&mut self.tick_pending) {
                actions.extend(self.coord.tick(&self.cluster));
            }
            let proposed = self.act(actions);
            // A read begun after the readies (the queued heartbeats') has
            // messages for the followers now: they leave in this drive,
            // not at the next event or tick.
            if !proposed && !self.raft.has_ready() {
                return Ok(());
            }
            // It proposed: run the loop again for its records.
        }
    }

    /// Empties the Raft core's readies.
    fn run_readies(&mut self) -> Result<(), ReplicaError> {
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            if let Some(snap) = &rd.snapshot {
                self.cluster =
                    ClusterState::restore(&snap.data).map_err(|why| ReplicaError::Snapshot {
                        index: snap.meta.index,
                        why,
                    })?;
                // The state jumped: the changes in between were never seen
                // here, and watchers from before it must start again.
                self.changes.clear();
                self.changes_bytes = 0;
                tracing::info!(
                    index = snap.meta.index,
                    term = snap.meta.term,
                    bytes = snap.data.len(),
                    "installed a snapshot from the leader"
                );
                if let Some(notes) = self.applied_notes.as_mut() {
                    notes.push(AppliedNote::Snapshot {
                        index: snap.meta.index,
                    });
                }
                // Operations the snapshot shows complete completed while
                // this replica was not applying them one by one.
                let incomplete = self.cluster.incomplete();
                self.committed_at
                    .retain(|seq, _| incomplete.contains_key(seq));
                let done: Vec<u64> = self
                    .completion_waiters
                    .keys()
                    .copied()
                    .filter(|seq| !incomplete.contains_key(seq))
                    .collect();
                for seq in done {
                    if let Some(w) = self.completion_waiters.remove(&seq) {
                        let reply = ClientReply::Completed {
                            seq,
                            complete_us: self.now.duration_since(w.received).as_micros() as u64,
                        };
                        self.reply(w.from, w.request, &reply);
                    }
                }
            }
            // Committed entries first: the clients waiting for them are
            // answered before anything else in this ready leaves.
            for e in std::mem::take(&mut rd.committed_entries) {
                if e.index <= self.cluster.applied_index() {
                    continue; // covered by the snapshot restored at start
                }
                self.apply_entry(&e);
            }
            for m in std::mem::take(&mut rd.messages) {
                self.send_raft(&m);
            }
            self.reads_confirmed
                .extend(rd.read_states.iter().map(|r| (r.index, r.ctx)));
            if rd.is_persist_empty() && self.persisting.is_empty() {
                // Nothing to wait for: its messages may leave now.
                for m in std::mem::take(&mut rd.persisted_messages) {
                    self.send_raft(&m);
                }
                self.raft.advance(rd);
                continue;
            }
            if self.cfg.bugs.ack_before_flush {
                // The planted bug: acknowledgements leave before the write.
                for m in std::mem::take(&mut rd.persisted_messages) {
                    self.send_raft(&m);
                }
            }
            let job = PersistJob {
                number: rd.number,
                snapshot: rd.snapshot.take(),
                entries: std::mem::take(&mut rd.entries),
                hard_state: rd.hard_state.take(),
                must_sync: rd.must_sync,
            };
            self.persisting.push_back(rd);
            self.out.push_back(Output::Persist(job));
        }
        Ok(())
    }

    /// Applies one committed entry and does the bookkeeping around it.
    fn apply_entry(&mut self, e: &ramcoord_log::Entry) {
        let data: &[u8] = if e.kind == EntryKind::Normal {
            &e.data
        } else {
            &[]
        };
        // Planted bug (simulator): a client's commit record applied as a
        // plain one, so the exactly-once table never hears of it.
        let stripped;
        let data: &[u8] = match crate::cluster::Record::decode(data) {
            Ok(crate::cluster::Record::ClientCommit { op, .. })
                if self.cfg.coordinator_bugs.forget_clients =>
            {
                stripped = crate::cluster::Record::Commit(op)
                    .encode()
                    .unwrap_or_default();
                &stripped
            }
            _ => data,
        };
        let completing = match (&self.applied_notes, crate::cluster::Record::decode(data)) {
            (Some(_), Ok(crate::cluster::Record::Complete { seq })) => {
                self.cluster.incomplete().get(&seq).cloned()
            }
            _ => None,
        };
        let outcome = self.cluster.apply(e.index, data);
        if self.applied_notes.is_some() {
            let note = AppliedNote::Entry(Box::new(EntryApplied {
                entry: e.clone(),
                outcome: outcome.clone(),
                completing,
                state_check: (e.index % self.state_check_every == 0).then(|| self.cluster.check()),
                active: self.coord.is_active(),
            }));
            if let Some(notes) = self.applied_notes.as_mut() {
                notes.push(note);
            }
        }
        if e.kind == EntryKind::ConfChange {
            let conf = self.raft.conf();
            tracing::info!(
                index = e.index,
                voters = %ramcoord_log::ids_text(&conf.voters),
                learners = %ramcoord_log::ids_text(&conf.learners),
                "membership change applied"
            );
        }
        self.applied(e.index, e.term, &e.data, &outcome, e.kind);
    }

    /// Logs the Raft role, leader and term when any changed, with the
    /// likely reason: a follower that campaigns heard nothing from its
    /// leader for an election timeout; a leader that follows in the same
    /// term lost touch with a quorum (check-quorum).
    fn log_role_change(&mut self) {
        let (role, leader, term) = (self.raft.role(), self.raft.leader_id(), self.raft.term());
        let (was_role, was_leader, was_term) = self.role_logged;
        if (role, leader, term) == self.role_logged {
            return;
        }
        self.role_logged = (role, leader, term);
        let why = match (was_role, role) {
            (Role::Follower, Role::PreCandidate | Role::Candidate) => {
                "no word from the leader within the election timeout (or asked to take over)"
            }
            (Role::PreCandidate, Role::Candidate) => "won the pre-vote",
            (Role::PreCandidate | Role::Candidate, Role::PreCandidate | Role::Candidate) => {
                "no quorum within the election timeout: campaigning again"
            }
            (Role::Leader, Role::Follower) if leader.is_none() && term == was_term => {
                "stepped down: no word from a quorum within the election timeout"
            }
            (_, Role::Leader) => "won the election",
            (_, Role::Follower) if leader.is_some() => "heard from the leader",
            _ if term > was_term => "saw a higher term",
            _ => "lost the election",
        };
        tracing::info!(
            id = self.cfg.id,
            term,
            role = ?role,
            leader = ?leader,
            was = ?was_role,
            was_leader = ?was_leader,
            was_term,
            why,
            "raft role changed"
        );
    }

    /// What follows a round of readies: lookups, compaction, leadership.
    fn after_readies(&mut self) -> Result<(), ReplicaError> {
        let campaigns = self.raft.campaigns();
        if campaigns > self.campaigns_counted {
            self.metrics
                .elections_started
                .inc_by(campaigns - self.campaigns_counted);
            self.campaigns_counted = campaigns;
        }
        self.log_role_change();
        self.answer_lookups();
        self.answer_watchers();
        self.maybe_compact()?;
        let established = self.raft.role() == Role::Leader
            && self.raft.log().term(self.cluster.applied_index()).ok() == Some(self.raft.term())
            && self.cluster.applied_index() >= self.raft.log().committed;
        self.coord.set_log_last_index(self.raft.log().last_index());
        let was = self.coord.is_active();
        self.coord
            .set_leadership(established, self.raft.term(), &self.cluster);
        if established && !was {
            tracing::info!(
                id = self.cfg.id,
                term = self.raft.term(),
                incomplete = self.cluster.incomplete().len(),
                "coordinator active: rolling forward incomplete operations"
            );
            for (seq, p) in self.cluster.incomplete() {
                tracing::info!(seq, op = %p.op.summary(), targets = p.targets.len(), "roll-forward");
            }
        } else if was && !established {
            // Pushes of the term that ended are no one's business now.
            // A lane keeps its write in flight (a leader may come back in
            // the same term, and that write may still land); what waited
            // is dropped. Lanes start over in a new term ([`Self::push`]).
            self.pushes_in_flight.clear();
            for lane in self.push_lanes.values_mut() {
                lane.waiting = None;
            }
            tracing::info!(
                id = self.cfg.id,
                term = self.raft.term(),
                "coordinator inactive"
            );
        }
        self.drop_stale_reads(established);
        // Heartbeats that came in while a read was under way get the next.
        self.start_heartbeats_read();
        Ok(())
    }

    /// Starts a compaction once `snapshot_entries` entries have been
    /// applied since the last snapshot (see the module docs): the cluster
    /// state at the applied index, frozen, goes to the driver to be
    /// encoded and written ([`Output::WriteSnapshot`]); the log is
    /// compacted when it comes back ([`Replica::try_compact`]).
    ///
    /// Only once every entry it covers is durable here: a snapshot file
    /// whose own entry the log lost in a crash would read, on the next
    /// open, as a log the snapshot replaced.
    fn maybe_compact(&mut self) -> Result<(), ReplicaError> {
        if self.pending_compaction.is_none() && self.snapshot_job.is_none() {
            let point = self.raft.snapshot_point();
            let held = self.raft.log().storage().snapshot().meta.index;
            // (Not from `persisting`: its readies' entries and snapshot
            // moved into their jobs.) A snapshot installed from the leader
            // and not yet written is not durable either, so no job
            // re-encodes what the leader just sent.
            let durable = self.raft.log().storage().durable_index() >= point.index;
            if point.index >= held + self.cfg.snapshot_entries
                && point.index == self.cluster.applied_index()
                && durable
            {
                self.snapshot_job = Some(point.index);
                self.out.push_back(Output::WriteSnapshot(SnapshotJob {
                    meta: point,
                    state: self.cluster.frozen(),
                }));
            }
        }
        self.try_compact()
    }

    /// Compacts the log under the written snapshot if the storage can take
    /// it: no job out (committed entries may be applied before they are
    /// durable here, and a job may still rewrite the log's tail), and the
    /// storage holds the snapshot's entry with its term.
    fn try_compact(&mut self) -> Result<(), ReplicaError> {
        if !self.persisting.is_empty() {
            return Ok(());
        }
        let Some(snap) = &self.pending_compaction else {
            return Ok(());
        };
        let storage = self.raft.log().storage();
        let index = snap.meta.index;
        if index <= storage.snapshot().meta.index {
            self.pending_compaction = None; // overtaken
            return Ok(());
        }
        if index > storage.last_index() || storage.term(index) != Ok(snap.meta.term) {
            return Ok(());
        }
        let snap = self.pending_compaction.take().expect("just looked");
        let bytes = snap.data.len();
        self.raft.storage_mut().compact_written(snap)?;
        tracing::info!(index, bytes, "log compacted: snapshot of the cluster state");
        Ok(())
    }

    /// Carries out the coordinator's actions; whether it proposed.
    fn act(&mut self, actions: Vec<Action>) -> bool {
        let mut proposed = false;
        for a in actions {
            match a {
                Action::Propose(rec) => {
                    let data = match rec.encode() {
                        Ok(data) => data,
                        Err(e) => {
                            tracing::error!(error = %e, record = %rec, "cannot encode the coordinator's own record; not proposed");
                            continue;
                        }
                    };
                    if let Ok(index) = self.raft.propose(data) {
                        self.proposed_at.insert(index, self.now);
                        self.note_proposed(index, &rec);
                        proposed = true;
                    }
                }
                push @ Action::Push { .. } => {
                    if self.cfg.push_delay.is_zero() {
                        self.push(push);
                    } else {
                        let due = self.now + self.cfg.push_delay;
                        self.delayed_pushes.push_back((due, push));
                    }
                }
            }
        }
        proposed
    }

    /// Sends the held pushes that fell due.
    fn release_due_pushes(&mut self) {
        while self
            .delayed_pushes
            .front()
            .is_some_and(|(due, _)| *due <= self.now)
        {
            let (_, push) = self.delayed_pushes.pop_front().expect("just looked");
            self.push(push);
        }
    }

    /// Asks the driver to write a configuration region into a master
    /// (one-sided).
    fn push(&mut self, push: Action) {
        let Action::Push {
            to,
            addr,
            version,
            region,
        } = push
        else {
            return;
        };
        if !self.coord.is_active() {
            return; // a held push outlived its leadership
        }
        let Some(server) = self.cluster.server(to) else {
            return;
        };
        let peer = protocol::master_peer_id(server.nonce);
        // One write in flight per master: a push behind it waits (the
        // newest replaces an older one), so a master that reads slowly is
        // sent each region once, not once per retry.
        let stall = self.cfg.tick * (self.cfg.coordinator.push_retry_ticks / 2).max(1) as u32;
        let now = self.now;
        let term = self.coord.term();
        if self.push_lanes.len() > 2 * self.cluster.server_slots() + 16 {
            // Lanes of servers gone for good.
            let cluster = &self.cluster;
            self.push_lanes.retain(|s, _| cluster.server(*s).is_some());
        }
        let lane = self.push_lanes.entry(to).or_default();
        if lane.term != term {
            *lane = PushLane {
                term,
                ..PushLane::default()
            };
        }
        if lane.slow {
            return; // until it heartbeats
        }
        if let Some((_, sent)) = lane.in_flight {
            if now.saturating_duration_since(sent) < stall && !self.cfg.bugs.push_past_the_lane {
                lane.waiting = Some(Action::Push {
                    to,
                    addr,
                    version,
                    region,
                });
                return;
            }
            // Unacknowledged for half a retry period: lost with its
            // connection, or the master is not reading. Its slot goes to
            // this newer push; too many such in a row mark the master
            // slow (no pushes until it heartbeats).
            lane.in_flight = None;
            lane.waiting = None; // this push is newer
            lane.stalls += 1;
            self.failed_masters.insert(to);
            self.metrics
                .push_failures
                .get_or_create(&crate::metrics::MasterLabel {
                    master: to.to_string(),
                })
                .inc();
            if lane.stalls >= PUSH_STALLS_SLOW {
                lane.slow = true;
                lane.waiting = None;
                tracing::warn!(
                    server = %to,
                    stalls = lane.stalls,
                    "master declared slow: its pushes go unacknowledged; none until it heartbeats"
                );
                return;
            }
        }
        self.last_write += 1;
        let write = self.last_write;
        lane.in_flight = Some((write, now));
        self.pushes_in_flight
            .insert(write, (to, self.coord.term(), version, peer));
        while self.pushes_in_flight.len() > PUSHES_TRACKED_MAX {
            self.pushes_in_flight.pop_first();
        }
        tracing::debug!(%to, version, "push sent");
        self.out.push_back(Output::Push {
            write,
            server: to,
            addr,
            peer,
            version,
            region,
        });
    }
}
