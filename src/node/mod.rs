//! A coordinator replica as a running thing: the Raft core over a durable
//! [`DiskStorage`], talking to its peers through a [`Transport`], applying
//! committed records to its [`ClusterState`] and, when it is the
//! established leader, letting its [`Coordinator`] act.
//!
//! This is the driver the simulator stands in for: the same `RawNode`,
//! `ClusterState` and `Coordinator`, with real disk and network. One thread
//! runs it ([`CoordinatorNode::run_for`] / [`CoordinatorNode::step`]):
//! wait for a message or the next tick, hand it to Raft, then drive the
//! ready loop:
//!
//! 1. send the messages that may leave now (the leader's appends go out in
//!    parallel with its own write, thesis §10.2.1);
//! 2. write entries, hard state and snapshot, and make them durable;
//! 3. send the messages that needed that (votes, acknowledgements);
//! 4. apply committed entries to the cluster state;
//! 5. `advance`, then let the coordinator act.
//!
//! Besides Raft, the replica serves the client protocol ([`client`]):
//! status and views from any replica; operations, completion queries and
//! masters' heartbeats at the active coordinator (others answer
//! `NotLeader` with the leader's id and address). An operation is answered
//! when its commit record applies (its commit point), at most once per
//! client id and sequence number (see [`client`]: a retry is answered with
//! the original outcome). The active coordinator's pushes go
//! to masters as one-sided writes into their configuration region
//! ([`CONFIG_REGION`]); a write that lands is the master's
//! acknowledgement.
//!
//! Every `snapshot_entries` applied entries the log is compacted: the
//! cluster state becomes the snapshot, older segments are deleted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use ramcoord_log::disk::{DiskStorage, Durability, OpenError};
use ramcoord_log::wire::{decode_message, encode_message};
use ramcoord_log::{
    ConfChange, ConfState, Config, EntryKind, Message, NodeId, ProposeError, RawNode, Role,
    Storage, StorageError,
};
use ramcoord_net::tls::PeerClass;
use ramcoord_net::{Event, PeerId, RegionId, Transport, WriteStatus};

/// A client class in words, for refusals.
fn describe(class: PeerClass) -> &'static str {
    match class {
        PeerClass::Replica(_) => "you are a replica",
        PeerClass::Master => "you are a master",
        PeerClass::Admin => "you are an admin",
        PeerClass::Reader => "you are a reader",
    }
}

use crate::cluster::{ClusterState, Effect, Outcome, Record, RpcId, RpcStatus, ServerId};
use crate::coordinator::{Action, Coordinator, CoordinatorBugs, CoordinatorConfig};
use client::{ClientReply, ClientRequest, OpRecord, OpResult};

/// The first byte of a transport message: what follows.
pub mod tag {
    /// A Raft message (`ramcoord_log::wire`).
    pub const RAFT: u8 = 1;
    /// A client request ([`super::client`]).
    pub const CLIENT: u8 = 2;
    /// A replica's answer to a client ([`super::client`]).
    pub const CLIENT_REPLY: u8 = 3;
    /// A client's request to a master ([`super::client::MasterRequest`]).
    pub const MASTER: u8 = 4;
    /// A master's answer ([`super::client::MasterReply`]).
    pub const MASTER_REPLY: u8 = 5;
}

/// The id of a master's configuration region.
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

/// How many applied operations a replica remembers for `ctl ops`.
pub const RECENT_OPS: usize = 256;

pub mod client;

/// How a coordinator replica runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This replica's id.
    pub id: NodeId,
    /// Whether its connections are mutual TLS (else `--insecure`).
    pub tls: bool,
    /// Every founding replica's id (this one included).
    pub replicas: Vec<NodeId>,
    /// Where its log lives.
    pub data_dir: PathBuf,
    /// When an appended entry counts as durable.
    pub durability: Durability,
    /// One Raft tick.
    pub tick: Duration,
    /// Election timeout, in ticks.
    pub election_ticks: u64,
    /// Heartbeat interval, in ticks.
    pub heartbeat_ticks: u64,
    /// Segment size of the log.
    pub segment_bytes: u64,
    /// The coordinator's timing (pushes, proposals, failure detection), in
    /// ticks.
    pub coordinator: CoordinatorConfig,
    /// Compact the log after this many entries applied since the last
    /// snapshot.
    pub snapshot_entries: u64,
    /// Join an existing group instead of founding one: start with an empty
    /// log and no configuration (never campaigning), and wait for the
    /// leader to add this replica (as a learner, then a voter) and send it
    /// the log. For a replica whose data directory was lost.
    pub join: bool,
    /// Spin on the event queue this long after activity before blocking
    /// (zero: always block).
    pub spin: Duration,
    /// Hold every push this long before sending it (a fault-injection knob
    /// for demos and tests: it widens the window between an operation's
    /// commit point and its completion).
    pub push_delay: Duration,
    /// The replicas' client addresses (`HOST:PORT`, as configured; this
    /// one's included): followers name the leader's in `NotLeader`, and
    /// the leader checks `add-voter` against them. A replica added with an
    /// address is added here by the leader that adds it.
    pub peer_addrs: BTreeMap<NodeId, String>,
    /// Planted bugs (only chaos tests set them).
    pub bugs: NodeBugs,
}

/// Bugs planted in the replica's driver so that `ramcoord chaos` can show
/// it catches them. Never set in production (a hidden flag).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeBugs {
    /// Answer a client's operation as committed as soon as it is proposed,
    /// before its commit point: a leader cut off from its quorum
    /// acknowledges operations that are then lost.
    pub ack_before_commit: bool,
}

impl NodeConfig {
    /// Defaults: 10 ms ticks, elections after 10–20 ticks, heartbeats
    /// every tick, fsync durability.
    pub fn new(id: NodeId, replicas: Vec<NodeId>, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            id,
            tls: false,
            replicas,
            data_dir,
            durability: Durability::Fsync,
            tick: Duration::from_millis(10),
            election_ticks: 10,
            heartbeat_ticks: 1,
            segment_bytes: ramcoord_log::disk::segment_log::SEGMENT_BYTES_DEFAULT,
            coordinator: CoordinatorConfig::default(),
            push_delay: Duration::ZERO,
            spin: Duration::ZERO,
            join: false,
            snapshot_entries: 10_000,
            peer_addrs: BTreeMap::new(),
            bugs: NodeBugs::default(),
        }
    }
}

/// Why a replica stopped (or could not start).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The log on disk cannot be opened.
    #[error("opening the log: {0}")]
    Open(#[from] OpenError),
    /// The disk failed: fatal.
    #[error("the log failed: {0}")]
    Storage(#[from] StorageError),
    /// The configuration is unusable.
    #[error("bad configuration: {0}")]
    Config(String),
}

/// A running coordinator replica (see the module docs).
pub struct CoordinatorNode<T: Transport> {
    cfg: NodeConfig,
    raft: RawNode<DiskStorage>,
    transport: T,
    cluster: ClusterState,
    coord: Coordinator,
    next_tick: Instant,
    /// Transport messages that were not well-formed Raft messages.
    rejected_messages: u64,
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
    /// When the last event arrived (adaptive polling).
    last_activity: Instant,
    /// One-sided writes in flight: write id -> (server, term, version).
    pushes_in_flight: HashMap<u64, (ServerId, u64, u64, PeerId)>,
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
    /// Linearizable lookups waiting for their read index, by its tag.
    lookups: HashMap<u64, Lookup>,
    /// Read indexes confirmed by the Raft core, waiting for the apply:
    /// (index, tag).
    reads_confirmed: Vec<(u64, u64)>,
    /// The tag of the last read index asked for.
    last_read_tag: u64,
    /// The lease granted to masters with each heartbeat acknowledgement.
    lease: Duration,
    /// Heartbeats that arrived since the heartbeats' read under way began
    /// (they wait for the next one: one read at a time serves them all).
    heartbeats_queued: Vec<HeartbeatWaiter>,
    /// The heartbeats' read under way: its tag, how many it answers, and
    /// when it began.
    heartbeats_read: Option<(u64, usize, Instant)>,
}

/// What waits for a read index: a client's linearizable lookup
/// ([`ClientRequest::Lookup`]), or a batch of masters' heartbeats,
/// acknowledged (and their leases granted) only once the leader has
/// confirmed it still leads.
struct Lookup {
    what: Awaiting,
    /// Answered only once the state has applied this index too: for
    /// heartbeats, the leader's last log index when their read began, so
    /// that a crash of one of those masters already in the log (proposed,
    /// not yet applied) is seen, and no lease is granted past it.
    after: u64,
    /// The term it was asked in: the Raft core forgets pending reads when
    /// the term moves, so a lookup of an older term is never confirmed.
    term: u64,
}

/// What a read index is waited for.
enum Awaiting {
    /// Whether this table exists.
    Table {
        from: PeerId,
        request: u64,
        table: String,
    },
    /// Heartbeats that arrived before this read began.
    Heartbeats(Vec<HeartbeatWaiter>),
}

/// A master waiting for its heartbeat's acknowledgement.
struct HeartbeatWaiter {
    from: PeerId,
    request: u64,
    server: ServerId,
}

/// Lookups one replica keeps waiting for their read index; past it a
/// lookup is answered `Retry`. Below the Raft core's own bound
/// (`PENDING_READS_MAX`, 4096), leaving room for the heartbeats' read.
const LOOKUPS_WAITING_MAX: usize = 4000;

/// Masters' heartbeats one replica keeps waiting (queued, or in the read
/// under way); past it a heartbeat is answered `Retry`. Apart from
/// lookups: a burst of lookups must not cost every master its lease.
const HEARTBEATS_WAITING_MAX: usize = 16_384;

/// A heartbeats' read not confirmed by then is given up (the Raft core may
/// drop a read it cannot hold): its masters are told to retry and the
/// queued ones get a new read. Longer than a heartbeat round on any
/// healthy network, short against a lease.
const HEARTBEATS_READ_TIMEOUT: Duration = Duration::from_millis(250);

/// A client waiting for an entry's commit point.
struct Waiter {
    from: PeerId,
    request: u64,
    data: Bytes,
    received: Instant,
    /// Answer again when the operation completes.
    until_complete: bool,
    /// The client operation proposed, if it is one.
    rpc: Option<RpcId>,
}

impl<T: Transport> CoordinatorNode<T> {
    /// Opens (or, for an empty data directory, bootstraps) the replica's
    /// log and starts it on `transport`.
    pub fn open(cfg: NodeConfig, transport: T) -> Result<CoordinatorNode<T>, NodeError> {
        if !cfg.replicas.contains(&cfg.id) {
            return Err(NodeError::Config(format!(
                "replica {} is not among {:?}",
                cfg.id, cfg.replicas
            )));
        }
        // New, or a bootstrap that never finished (it is redone).
        let fresh = !DiskStorage::holds_state(&cfg.data_dir)?;
        if cfg.join && !fresh {
            return Err(NodeError::Config(format!(
                "--join needs an empty data directory; {} holds a log (start without --join)",
                cfg.data_dir.display()
            )));
        }
        let mut storage = if cfg.join {
            tracing::info!(dir = %cfg.data_dir.display(), "joining: empty log, no configuration until the leader sends it");
            DiskStorage::open(&cfg.data_dir, cfg.segment_bytes)?.0
        } else if fresh {
            let conf = ConfState::with_voters(cfg.replicas.iter().copied());
            DiskStorage::bootstrap(&cfg.data_dir, &conf, cfg.segment_bytes)?
        } else {
            let (s, recovery) = DiskStorage::open(&cfg.data_dir, cfg.segment_bytes)?;
            if let Some((path, offset, why)) = &recovery.torn_tail {
                tracing::warn!(path = %path.display(), offset, why, "truncated a torn record");
            }
            s
        };
        storage.set_durability(cfg.durability)?;
        let snapshot = storage.snapshot();
        let cluster = if snapshot.data.is_empty() {
            ClusterState::default()
        } else {
            ClusterState::restore(&snapshot.data).map_err(NodeError::Config)?
        };
        let mut rcfg = Config::new(cfg.id);
        rcfg.election_timeout_ticks = cfg.election_ticks;
        rcfg.heartbeat_interval_ticks = cfg.heartbeat_ticks;
        rcfg.pre_vote = true;
        rcfg.check_quorum = true;
        rcfg.seed = cfg.id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ std::process::id() as u64;
        let raft = RawNode::new(rcfg, storage).map_err(NodeError::Config)?;
        tracing::info!(id = cfg.id, term = raft.term(), fresh, "replica started");
        Ok(CoordinatorNode {
            next_tick: Instant::now() + cfg.tick,
            raft,
            transport,
            cluster,
            coord: Coordinator::new(cfg.coordinator, CoordinatorBugs::default()),
            lease: crate::master::lease_for_timeout(cfg.coordinator.master_timeout_ticks, cfg.tick),
            cfg,
            rejected_messages: 0,
            waiters: BTreeMap::new(),
            rpc_inflight: HashMap::new(),
            completion_waiters: BTreeMap::new(),
            proposed_at: BTreeMap::new(),
            committed_at: BTreeMap::new(),
            commit_latencies_us: VecDeque::new(),
            commits_measured: 0,
            recent: VecDeque::new(),
            last_activity: Instant::now(),
            pushes_in_flight: HashMap::new(),
            delayed_pushes: VecDeque::new(),
            refusals_logged: (0, None),
            refused_by_role: 0,
            role_refusal_logged: None,
            lookups: HashMap::new(),
            heartbeats_queued: Vec::new(),
            heartbeats_read: None,
            reads_confirmed: Vec::new(),
            last_read_tag: 0,
            lost_matches_logged: (0, None),
        })
    }

    /// The applied cluster state.
    pub fn cluster(&self) -> &ClusterState {
        &self.cluster
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

    /// Messages refused as malformed.
    pub fn rejected_messages(&self) -> u64 {
        self.rejected_messages
    }

    /// Proposes a record (this replica must lead); returns its index.
    pub fn propose(&mut self, record: &Record) -> Result<u64, NodeError> {
        let data = record
            .encode()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        let r = self.raft.propose(data);
        self.drive()?;
        r.map_err(|e: ProposeError| NodeError::Config(e.to_string()))
    }

    /// Runs for `d` (handling messages and ticks as they come).
    pub fn run_for(&mut self, d: Duration) -> Result<(), NodeError> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.step(end)?;
        }
        Ok(())
    }

    /// Waits for one message or the next tick (no later than `deadline`)
    /// and handles it.
    pub fn step(&mut self, deadline: Instant) -> Result<(), NodeError> {
        let mut wake = self.next_tick.min(deadline);
        if let Some((due, _)) = self.delayed_pushes.front() {
            wake = wake.min(*due);
        }
        let timeout = wake.saturating_duration_since(Instant::now());
        if let Some(ev) = self.next_event(timeout) {
            self.handle(ev);
            // Take whatever else has arrived before writing to disk: one
            // write for the lot.
            while let Some(ev) = self.transport.next_event(Duration::ZERO) {
                self.handle(ev);
            }
        }
        let now = Instant::now();
        while self
            .delayed_pushes
            .front()
            .is_some_and(|(due, _)| *due <= now)
        {
            let (_, push) = self.delayed_pushes.pop_front().expect("just looked");
            self.push(push);
        }
        if now >= self.next_tick {
            self.next_tick += self.cfg.tick;
            if self.next_tick < now {
                // A stall (a slow disk, a descheduled process): do not
                // fire a burst of ticks to catch up.
                self.next_tick = now + self.cfg.tick;
            }
            self.raft.tick();
            self.drive()?;
            let actions = self.coord.tick(&self.cluster);
            self.act(actions)?;
        }
        self.drive()
    }

    /// The next event, within `timeout`. Adaptive: right after activity
    /// (an answer is likely on its way: an acknowledgement, the next
    /// request) it spins on the queue for up to `spin` before blocking,
    /// because being woken from a blocked wait costs a cross-core wake-up
    /// (tens of µs on a small VM); once idle it blocks at once.
    fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        if !self.cfg.spin.is_zero() && self.last_activity.elapsed() < self.cfg.spin {
            let until = (Instant::now() + self.cfg.spin).min(Instant::now() + timeout);
            loop {
                if let Some(ev) = self.transport.next_event(Duration::ZERO) {
                    self.last_activity = Instant::now();
                    return Some(ev);
                }
                if Instant::now() >= until {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let left = timeout.saturating_sub(self.cfg.spin.min(timeout));
        let ev = self.transport.next_event(left);
        if ev.is_some() {
            self.last_activity = Instant::now();
        }
        ev
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Message { from, payload } => {
                if payload.first() == Some(&tag::CLIENT) {
                    match client::decode::<ClientRequest>(&payload[1..]) {
                        Ok(env) => {
                            if let Err(why) = self.authorize(from, &env.body) {
                                self.refused_by_role += 1;
                                self.log_role_refusal(from, &why);
                                self.reply(from, env.id, &ClientReply::Refused(why));
                                return;
                            }
                            self.answer(from, env.id, env.body)
                        }
                        Err(e) => {
                            self.rejected_messages += 1;
                            tracing::warn!(from, error = %e, "malformed client request dropped");
                        }
                    }
                    return;
                }
                if payload.first() != Some(&tag::RAFT) {
                    self.rejected_messages += 1;
                    tracing::warn!(from, "message with an unknown tag dropped");
                    return;
                }
                if !matches!(PeerClass::of(from), PeerClass::Replica(_)) {
                    // Only a replica speaks Raft (with TLS, `from` is
                    // proven by its certificate).
                    self.refused_by_role += 1;
                    self.log_role_refusal(from, "a Raft message from a client or a master");
                    return;
                }
                match decode_message(payload.slice(1..)) {
                    Ok(m) if m.from == from && m.to == self.cfg.id => {
                        self.raft.step(m);
                        self.log_refusals();
                    }
                    Ok(m) => {
                        self.rejected_messages += 1;
                        tracing::warn!(from, claimed = m.from, to = m.to, "misaddressed message");
                    }
                    Err(e) => {
                        self.rejected_messages += 1;
                        tracing::warn!(from, error = %e, "malformed Raft message dropped");
                    }
                }
            }
            Event::WriteDone { to, id, status } => {
                // Only the master the push went to can complete it.
                if self.pushes_in_flight.get(&id).is_none_or(|p| p.3 != to) {
                    return;
                }
                let Some((server, term, version, _)) = self.pushes_in_flight.remove(&id) else {
                    return;
                };
                match status {
                    WriteStatus::Landed => {
                        tracing::debug!(%server, version, term, "push landed");
                        self.coord.on_push_acked(server, term, version);
                    }
                    other => tracing::warn!(
                        %server,
                        peer = to,
                        version,
                        ?other,
                        "push refused by the master; retrying later"
                    ),
                }
            }
        }
    }

    /// Logs the Raft core's refusals (a message from a non-member, a term
    /// out of bounds), at most once a second, with how many since.
    fn log_refusals(&mut self) {
        let (lost, latest) = self.raft.lost_matches();
        let now = Instant::now();
        let quiet = |at: Option<Instant>| {
            at.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        };
        if lost != self.lost_matches_logged.0 && !quiet(self.lost_matches_logged.1) {
            if let Some((follower, matched, holds)) = latest {
                tracing::warn!(
                    follower,
                    acknowledged = matched,
                    holds,
                    findings = lost - self.lost_matches_logged.0,
                    "follower holds less than it acknowledged (its log lost entries); \
                     replicating to it again from what it holds"
                );
            }
            self.lost_matches_logged = (lost, Some(now));
        }
        let (count, last) = self.raft.refusals();
        if count == self.refusals_logged.0 {
            return;
        }
        let now = Instant::now();
        if self
            .refusals_logged
            .1
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        if let Some((from, why)) = last {
            tracing::warn!(
                from,
                reason = %why,
                refused = count - self.refusals_logged.0,
                "Raft messages refused (changed nothing)"
            );
        }
        self.rejected_messages += count - self.refusals_logged.0;
        self.refusals_logged = (count, Some(now));
    }

    /// Whether `from` (its class proven by its certificate under TLS) may
    /// make `req`: readers look, admins also change the cluster, masters
    /// enlist and heartbeat for themselves. The error names the role that
    /// is missing.
    fn authorize(&self, from: PeerId, req: &ClientRequest) -> Result<(), String> {
        let class = PeerClass::of(from);
        let admin = matches!(class, PeerClass::Admin);
        let master = matches!(class, PeerClass::Master);
        let need = |role: &str| Err(format!("this needs the {role} role ({})", describe(class)));
        match req {
            ClientRequest::Status
            | ClientRequest::View
            | ClientRequest::Lookup { .. }
            | ClientRequest::OpState { .. } => Ok(()),
            ClientRequest::Noop | ClientRequest::ChangeReplicas(_) if admin => Ok(()),
            ClientRequest::Noop | ClientRequest::ChangeReplicas(_) => need("admin"),
            ClientRequest::Operate(op) | ClientRequest::OperateUntilComplete(op) => match &op.op {
                crate::coordinator::Request::Enlist { nonce, .. } if master => {
                    if master_client_id(*nonce) == from {
                        Ok(())
                    } else {
                        Err("a master enlists under its own connection's id".into())
                    }
                }
                crate::coordinator::Request::Enlist { .. } => need("master"),
                _ if admin => Ok(()),
                _ => need("admin"),
            },
            ClientRequest::Heartbeat { from: server } if master => {
                // Only the process that enlisted the server keeps it up;
                // a server never enlisted has nothing to keep up (and
                // must not grow the leader's tables).
                match self.cluster.server(*server) {
                    Some(s) if master_client_id(s.nonce) != from => Err(format!(
                        "server {server} was enlisted by another master process"
                    )),
                    Some(_) => Ok(()),
                    None => Err(format!("server {server} is not in the server list")),
                }
            }
            ClientRequest::Heartbeat { .. } => need("master"),
        }
    }

    /// Logs a refusal for a missing role, at most once a second.
    fn log_role_refusal(&mut self, from: PeerId, why: &str) {
        let now = Instant::now();
        if self
            .role_refusal_logged
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        self.role_refusal_logged = Some(now);
        tracing::warn!(
            from,
            refused = self.refused_by_role,
            reason = why,
            "request refused by role"
        );
    }

    /// This replica's view (see [`client::Status`]).
    pub fn status_report(&self) -> client::Status {
        let (role, term, commit) = self.status();
        let role = match role {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
        };
        let match_index = if self.raft.role() == Role::Leader {
            self.raft
                .conf()
                .members()
                .filter(|id| *id != self.cfg.id)
                .filter_map(|id| self.raft.progress(id).map(|p| (id, p.match_index)))
                .collect()
        } else {
            Vec::new()
        };
        let (p50, p99) = self.recent_commit_percentiles();
        client::Status {
            id: self.cfg.id,
            role: role.to_string(),
            term,
            commit,
            last_index: self.raft.log().last_index(),
            applied: self.cluster.applied_index(),
            leader: self.raft.leader_id(),
            active: self.coord.is_active(),
            servers_up: self.cluster.up_masters().len() as u64,
            tables: self.cluster.tables().count() as u64,
            incomplete: self.cluster.incomplete().len() as u64,
            match_index,
            voters: self.raft.conf().voters.iter().copied().collect(),
            learners: self.raft.conf().learners.iter().copied().collect(),
            addresses: self
                .cfg
                .peer_addrs
                .iter()
                .map(|(id, a)| (*id, a.clone()))
                .collect(),
            commits_measured: self.commits_measured,
            commit_p50_us: p50,
            commit_p99_us: p99,
            insecure: !self.cfg.tls,
        }
    }

    fn recent_commit_percentiles(&self) -> (u64, u64) {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 100_000_000, 3)
            .expect("valid bounds");
        for &us in &self.commit_latencies_us {
            h.saturating_record(us);
        }
        if h.is_empty() {
            return (0, 0);
        }
        (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
    }

    /// This replica's cluster state (see [`client::View`]).
    pub fn view(&self) -> client::View {
        client::View {
            id: self.cfg.id,
            term: self.raft.term(),
            active: self.coord.is_active(),
            applied: self.cluster.applied_index(),
            servers: self.cluster.servers().cloned().collect(),
            tables: self.cluster.tables().cloned().collect(),
            incomplete: self
                .cluster
                .incomplete()
                .iter()
                .map(|(seq, p)| (*seq, p.op.summary(), p.targets.iter().copied().collect()))
                .collect(),
            recent: self.recent.iter().cloned().collect(),
        }
    }

    fn reply(&self, to: PeerId, request: u64, reply: &ClientReply) {
        self.transport
            .send(to, client::encode(tag::CLIENT_REPLY, request, reply));
    }

    /// `NotLeader`, with the leader's id and address as far as known.
    fn not_leader(&self, leader: Option<NodeId>) -> ClientReply {
        ClientReply::NotLeader {
            leader,
            addr: leader.and_then(|l| self.cfg.peer_addrs.get(&l).cloned()),
        }
    }

    /// Why a membership change cannot be proposed, checked against the
    /// leader's configuration (the Raft core checks the rest).
    fn check_replica_change(&self, change: &client::ReplicaChange) -> Result<(), String> {
        let conf = self.raft.conf();
        let members = || {
            format!(
                "the configuration has voters {:?} and learners {:?}",
                conf.voters, conf.learners
            )
        };
        match change {
            client::ReplicaChange::Remove(id)
                if !conf.voters.contains(id) && !conf.learners.contains(id) =>
            {
                Err(format!("replica {id} is not in the group: {}", members()))
            }
            client::ReplicaChange::AddVoter(id) if conf.voters.contains(id) => {
                Err(format!("replica {id} is a voter already: {}", members()))
            }
            client::ReplicaChange::AddVoter(id)
                if !conf.learners.contains(id) && !self.cfg.peer_addrs.contains_key(id) =>
            {
                Err(format!(
                    "replica {id} is neither a learner nor a replica whose address is known ({}): add it with `ctl add-replica {id} --address HOST:PORT`",
                    members()
                ))
            }
            client::ReplicaChange::AddLearner { id, .. } if conf.voters.contains(id) => {
                Err(format!("replica {id} is a voter already: {}", members()))
            }
            client::ReplicaChange::AddLearner { id, addr: None }
                if !conf.learners.contains(id) && !self.cfg.peer_addrs.contains_key(id) =>
            {
                Err(format!(
                    "no address is known for replica {id} (it is not in this leader's --peers): give it with `ctl add-replica {id} --address HOST:PORT`"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The answer to a client operation already applied: its original
    /// seq and result (and, for `until_complete`, its completion, now or
    /// when it comes).
    fn answer_applied(
        &mut self,
        from: PeerId,
        request: u64,
        seq: u64,
        result: &Result<Effect, crate::cluster::Rejection>,
        until_complete: bool,
        received: Instant,
    ) {
        let term = self.raft.log().term(seq).unwrap_or(self.raft.term());
        let reply = ClientReply::Committed {
            seq,
            term,
            result: OpResult::of(result),
            commit_us: received.elapsed().as_micros() as u64,
        };
        self.reply(from, request, &reply);
        let completes = result.is_ok();
        if !(until_complete && completes) {
            return;
        }
        if self.cluster.incomplete().contains_key(&seq) {
            self.completion_waiters.insert(
                seq,
                Waiter {
                    from,
                    request,
                    data: Bytes::new(),
                    received,
                    until_complete: true,
                    rpc: None,
                },
            );
        } else {
            let reply = ClientReply::Completed {
                seq,
                complete_us: received.elapsed().as_micros() as u64,
            };
            self.reply(from, request, &reply);
        }
    }

    fn answer(&mut self, from: PeerId, request: u64, req: ClientRequest) {
        let not_leader = self.not_leader(self.raft.leader_id());
        let reply = match req {
            ClientRequest::Status => ClientReply::Status(self.status_report()),
            ClientRequest::OpState { seq } => ClientReply::OpState {
                seq,
                incomplete: self.cluster.incomplete().contains_key(&seq),
                applied: self.cluster.applied_index(),
            },
            ClientRequest::View
            | ClientRequest::Lookup { .. }
            | ClientRequest::Heartbeat { .. }
            | ClientRequest::Operate(_)
            | ClientRequest::OperateUntilComplete(_)
            | ClientRequest::Noop
            | ClientRequest::ChangeReplicas(_)
                if !self.coord.is_active() =>
            {
                not_leader
            }
            ClientRequest::View => {
                let mut view = self.view();
                // A master's nonce is its transport id: whoever holds the
                // shared master credential could claim it. Only replicas
                // see them.
                if !matches!(PeerClass::of(from), PeerClass::Replica(_)) {
                    for s in &mut view.servers {
                        s.nonce = 0;
                    }
                }
                ClientReply::View(view)
            }
            ClientRequest::Lookup { table } => {
                if let Err(e) = crate::cluster::limits::check_table_name(&table) {
                    ClientReply::Refused(e.to_string())
                } else {
                    // Answered once the leader has confirmed it still leads
                    // (a heartbeat round) and applied up to the commit index
                    // of that moment: never from a deposed leader's state.
                    let what = Awaiting::Table {
                        from,
                        request,
                        table,
                    };
                    match self.await_read_index(what) {
                        None => return,
                        Some(reply) => reply,
                    }
                }
            }
            ClientRequest::Heartbeat { from: server } => {
                self.coord.on_heartbeat(server);
                if self.cluster.is_gone(server) {
                    tracing::info!(%server, "heartbeat from a server declared crashed: told to stop");
                    self.heartbeat_ack(server)
                } else {
                    // The lease it grants is safe only if this replica
                    // still leads after the heartbeat arrived, and knows
                    // of every crash of that master already in its log
                    // (see `master`): acknowledged after the next read
                    // index that begins, and after applying the log as of
                    // then ([`Self::start_heartbeats_read`]).
                    let in_read = self.heartbeats_read.map_or(0, |r| r.1);
                    if self.heartbeats_queued.len() + in_read >= HEARTBEATS_WAITING_MAX {
                        ClientReply::Retry(format!(
                            "{HEARTBEATS_WAITING_MAX} heartbeats are waiting here; try again"
                        ))
                    } else {
                        self.heartbeats_queued.push(HeartbeatWaiter {
                            from,
                            request,
                            server,
                        });
                        self.start_heartbeats_read();
                        return;
                    }
                }
            }
            ClientRequest::ChangeReplicas(change) => {
                if let Err(why) = self.check_replica_change(&change) {
                    tracing::info!(?change, why, "membership change refused");
                    self.reply(from, request, &ClientReply::Refused(why));
                    return;
                }
                let cc = match change {
                    client::ReplicaChange::Remove(id) => ConfChange::Remove(id),
                    client::ReplicaChange::AddLearner { id, addr } => {
                        // ctl resolves host names before sending: the
                        // replica's thread does no DNS lookups.
                        match addr
                            .as_deref()
                            .map(|a| (a, a.parse::<std::net::SocketAddr>()))
                        {
                            Some((_, Ok(a))) => {
                                self.transport.add_peer(id, a);
                                self.cfg.peer_addrs.insert(id, a.to_string());
                            }
                            Some((a, Err(e))) => {
                                let why = format!(
                                    "replica {id}'s address {a:?} is not IP:PORT ({e}); resolve host names before sending"
                                );
                                self.reply(from, request, &ClientReply::Refused(why));
                                return;
                            }
                            None => {}
                        }
                        ConfChange::AddLearner(id)
                    }
                    client::ReplicaChange::AddVoter(id) => ConfChange::AddVoter(id),
                };
                match self.raft.propose_conf_change(cc) {
                    Ok(index) => {
                        tracing::info!(?cc, index, "membership change proposed");
                        self.add_waiter(
                            index,
                            Waiter {
                                from,
                                request,
                                data: cc.encode(),
                                received: Instant::now(),
                                until_complete: false,
                                rpc: None,
                            },
                        );
                        return;
                    }
                    Err(e) => self.propose_error(e),
                }
            }
            ClientRequest::Noop => {
                self.propose_for(from, request, Record::Noop, false, None);
                return;
            }
            ClientRequest::Operate(ref cop) | ClientRequest::OperateUntilComplete(ref cop) => {
                let until_complete = matches!(req, ClientRequest::OperateUntilComplete(_));
                let rpc = cop.rpc;
                match self.cluster.rpc_status(&rpc) {
                    RpcStatus::Applied(s) => {
                        let (seq, result) = (s.index, s.result.clone());
                        tracing::info!(%rpc, seq, "a retried operation was applied already: answered with its outcome");
                        let received = Instant::now();
                        self.answer_applied(from, request, seq, &result, until_complete, received);
                        return;
                    }
                    RpcStatus::Unknown(why) => {
                        tracing::info!(%rpc, %why, "a retried operation's outcome is unknown");
                        ClientReply::Unknown(format!("operation {rpc}: {why}"))
                    }
                    RpcStatus::New => {
                        // Proposed here and not applied yet: the retry
                        // waits for that proposal.
                        let pending = self.rpc_inflight.get(&rpc.key()).copied();
                        if let Some(w) = pending
                            .and_then(|i| self.waiters.get_mut(&i))
                            .filter(|w| w.rpc.map(|r| r.key()) == Some(rpc.key()))
                        {
                            tracing::info!(%rpc, index = ?pending, "a retried operation waits for its proposal");
                            w.from = from;
                            w.request = request;
                            w.until_complete |= until_complete;
                            return;
                        }
                        match self.coord.prepare_client(&self.cluster, &cop.op, rpc) {
                            Err(e) => ClientReply::Refused(e.to_string()),
                            Ok(record) => {
                                self.propose_for(from, request, record, until_complete, Some(rpc));
                                return;
                            }
                        }
                    }
                }
            }
        };
        self.reply(from, request, &reply);
    }

    /// What a refused proposal tells the client.
    fn propose_error(&self, e: ProposeError) -> ClientReply {
        match e {
            ProposeError::NotLeader { leader } => self.not_leader(leader),
            ProposeError::TransferInProgress
            | ProposeError::Backpressure
            | ProposeError::ConfChangePending => ClientReply::Retry(e.to_string()),
            e => ClientReply::Refused(e.to_string()),
        }
    }

    /// Registers a client waiting for the entry at `index`; one still
    /// registered there (its proposal was lost) is told to retry.
    fn add_waiter(&mut self, index: u64, w: Waiter) {
        if let Some(rpc) = w.rpc {
            self.rpc_inflight.insert(rpc.key(), index);
        }
        if let Some(old) = self.waiters.insert(index, w) {
            self.lost_waiter(old);
        }
    }

    /// Tells a waiter whose proposal was lost to retry.
    fn lost_waiter(&mut self, w: Waiter) {
        if let Some(rpc) = w.rpc {
            self.rpc_inflight.remove(&rpc.key());
        }
        self.reply(
            w.from,
            w.request,
            &ClientReply::Retry(
                "the proposal was lost in a change of leader: not committed; send it again".into(),
            ),
        );
    }

    /// Proposes `record` for a client, who is answered at its commit point
    /// (and at its completion too, if `until_complete`).
    fn propose_for(
        &mut self,
        from: PeerId,
        request: u64,
        record: Record,
        until_complete: bool,
        rpc: Option<RpcId>,
    ) {
        let received = Instant::now();
        let data = match record.encode() {
            Ok(data) => data,
            Err(e) => {
                let reply = ClientReply::Refused(format!("cannot propose: {e}"));
                self.reply(from, request, &reply);
                return;
            }
        };
        let reply = match self.raft.propose(data.clone()) {
            Ok(index)
                if self.cfg.bugs.ack_before_commit
                    && matches!(PeerClass::of(from), PeerClass::Admin) =>
            {
                // The planted bug: an admin's operation "committed" before
                // its commit point (masters' enlistments are left alone).
                ClientReply::Committed {
                    seq: index,
                    term: self.raft.term(),
                    result: OpResult::of(&Ok(Effect::Changed)),
                    commit_us: received.elapsed().as_micros() as u64,
                }
            }
            Ok(index) => {
                self.proposed_at.insert(index, received);
                self.add_waiter(
                    index,
                    Waiter {
                        from,
                        request,
                        data,
                        received,
                        until_complete,
                        rpc,
                    },
                );
                return;
            }
            Err(e) => self.propose_error(e),
        };
        self.reply(from, request, &reply);
    }

    fn send(&self, m: &Message) {
        let mut b = BytesMut::with_capacity(64);
        b.put_u8(tag::RAFT);
        encode_message(m, &mut b);
        self.transport.send(m.to, b.freeze());
    }

    /// Answers the lookups whose read index this replica has applied.
    fn answer_lookups(&mut self) {
        let applied = self.cluster.applied_index();
        let mut i = 0;
        while i < self.reads_confirmed.len() {
            let (index, tag) = self.reads_confirmed[i];
            let after = self.lookups.get(&tag).map_or(0, |l| l.after);
            if index.max(after) > applied {
                i += 1;
                continue;
            }
            self.reads_confirmed.swap_remove(i);
            let Some(l) = self.lookups.remove(&tag) else {
                continue;
            };
            match l.what {
                Awaiting::Table {
                    from,
                    request,
                    table,
                } => {
                    let reply = ClientReply::Lookup {
                        exists: self.cluster.table(&table).is_some(),
                        index: applied,
                    };
                    self.reply(from, request, &reply);
                }
                Awaiting::Heartbeats(waiters) => {
                    if self.heartbeats_read.is_some_and(|r| r.0 == tag) {
                        self.heartbeats_read = None;
                    }
                    for w in waiters {
                        let reply = self.heartbeat_ack(w.server);
                        self.reply(w.from, w.request, &reply);
                    }
                }
            }
        }
    }

    /// Starts a read index for the queued heartbeats, unless one is under
    /// way (they wait for it to end: one read at a time, however many
    /// masters). Their acknowledgements wait for the read and for the
    /// state to apply the log as it is now.
    fn start_heartbeats_read(&mut self) {
        if let Some((tag, _, began)) = self.heartbeats_read {
            if began.elapsed() < HEARTBEATS_READ_TIMEOUT {
                return;
            }
            self.heartbeats_read = None;
            if let Some(Lookup {
                what: Awaiting::Heartbeats(waiters),
                ..
            }) = self.lookups.remove(&tag)
            {
                tracing::warn!(
                    masters = waiters.len(),
                    "a heartbeats' read was not confirmed in time; they retry"
                );
                let reply = ClientReply::Retry("no read index in time".into());
                for w in waiters {
                    self.reply(w.from, w.request, &reply);
                }
            }
        }
        if self.heartbeats_queued.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut self.heartbeats_queued);
        let n = waiters.len();
        let after = self.raft.log().last_index();
        match self.await_read_index_after(Awaiting::Heartbeats(waiters), after) {
            Ok(tag) => self.heartbeats_read = Some((tag, n, Instant::now())),
            Err((Awaiting::Heartbeats(waiters), why)) => {
                let reply = ClientReply::Retry(why);
                for w in waiters {
                    self.reply(w.from, w.request, &reply);
                }
            }
            Err(_) => {}
        }
    }

    /// Asks the Raft core for a read index and keeps a client's lookup
    /// waiting for it (answered by [`Self::answer_lookups`]); the reply to
    /// send now if it cannot wait (`None`: it waits).
    fn await_read_index(&mut self, what: Awaiting) -> Option<ClientReply> {
        let lookups = self.lookups.len() - usize::from(self.heartbeats_read.is_some());
        if lookups >= LOOKUPS_WAITING_MAX {
            return Some(ClientReply::Retry(format!(
                "{LOOKUPS_WAITING_MAX} lookups are waiting here; try again"
            )));
        }
        self.await_read_index_after(what, 0)
            .err()
            .map(|(_, why)| ClientReply::Retry(why))
    }

    /// Asks the Raft core for a read index for `what`, answered once it is
    /// confirmed and the state has applied `after`; its tag, or `what`
    /// back with the reply for its waiters.
    fn await_read_index_after(
        &mut self,
        what: Awaiting,
        after: u64,
    ) -> Result<u64, (Awaiting, String)> {
        self.last_read_tag += 1;
        let tag = self.last_read_tag;
        match self.raft.read_index(tag) {
            Ok(()) => {
                let term = self.raft.term();
                self.lookups.insert(tag, Lookup { what, after, term });
                Ok(tag)
            }
            Err(e) => Err((what, format!("no read index: {e}"))),
        }
    }

    /// The answer to `server`'s heartbeat, with its lease (none if the
    /// server was declared crashed).
    fn heartbeat_ack(&self, server: ServerId) -> ClientReply {
        let gone = self.cluster.is_gone(server);
        ClientReply::HeartbeatAck {
            gone,
            leader: Some(self.cfg.id),
            term: self.coord.term(),
            lease_us: if gone {
                0
            } else {
                self.lease.as_micros() as u64
            },
        }
    }

    /// The ready loop (see the module docs).
    fn drive(&mut self) -> Result<(), NodeError> {
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            for m in std::mem::take(&mut rd.messages) {
                self.send(&m);
            }
            let storage = self.raft.storage_mut();
            if let Some(snap) = &rd.snapshot {
                storage.apply_snapshot(snap.clone())?;
                self.cluster = ClusterState::restore(&snap.data).map_err(NodeError::Config)?;
                tracing::info!(
                    index = snap.meta.index,
                    term = snap.meta.term,
                    bytes = snap.data.len(),
                    "installed a snapshot from the leader"
                );
            }
            storage.append(&rd.entries)?;
            if let Some(hs) = rd.hard_state {
                storage.set_hard_state(hs)?;
            }
            if !rd.entries.is_empty() {
                storage.sync()?;
            }
            for m in std::mem::take(&mut rd.persisted_messages) {
                self.send(&m);
            }
            for e in std::mem::take(&mut rd.committed_entries) {
                if e.index <= self.cluster.applied_index() {
                    continue; // covered by the snapshot restored at start
                }
                let data: &[u8] = if e.kind == EntryKind::Normal {
                    &e.data
                } else {
                    &[]
                };
                let outcome = self.cluster.apply(e.index, data);
                if e.kind == EntryKind::ConfChange {
                    tracing::info!(index = e.index, conf = ?self.raft.conf(), "membership change applied");
                }
                self.applied(e.index, e.term, &e.data, &outcome, e.kind);
            }
            self.reads_confirmed
                .extend(rd.read_states.iter().map(|r| (r.index, r.ctx)));
            self.raft.advance(rd);
        }
        self.answer_lookups();
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
            tracing::info!(
                id = self.cfg.id,
                term = self.raft.term(),
                "coordinator inactive"
            );
        }
        let term = self.raft.term();
        if self
            .lookups
            .values()
            .any(|l| !established || l.term != term)
        {
            // A deposed leader's reads, or reads of an earlier term, are
            // never confirmed: tell their clients where to go now.
            let not_leader = self.not_leader(self.raft.leader_id());
            let stale: Vec<u64> = self
                .lookups
                .iter()
                .filter(|(_, l)| !established || l.term != term)
                .map(|(tag, _)| *tag)
                .collect();
            for tag in stale {
                let Some(l) = self.lookups.remove(&tag) else {
                    continue;
                };
                match l.what {
                    Awaiting::Table { from, request, .. } => self.reply(from, request, &not_leader),
                    Awaiting::Heartbeats(waiters) => {
                        if self.heartbeats_read.is_some_and(|r| r.0 == tag) {
                            self.heartbeats_read = None;
                        }
                        for w in waiters {
                            self.reply(w.from, w.request, &not_leader);
                        }
                    }
                }
            }
            if self.lookups.is_empty() {
                self.reads_confirmed.clear();
            }
        }
        // Heartbeats that came in while a read was under way get the next.
        self.start_heartbeats_read();
        let actions = self.coord.on_applied(&self.cluster);
        self.act(actions)
    }

    /// Compacts the log once `snapshot_entries` entries have been applied
    /// since the last snapshot: the cluster state at the applied index
    /// becomes the snapshot, the segments below it are deleted (a replica
    /// that needs older entries is sent the snapshot).
    fn maybe_compact(&mut self) -> Result<(), NodeError> {
        let point = self.raft.snapshot_point();
        let held = self.raft.log().storage().snapshot().meta.index;
        if point.index < held + self.cfg.snapshot_entries
            || point.index > self.raft.log().storage().last_index()
            || point.index != self.cluster.applied_index()
        {
            return Ok(());
        }
        let data = self.cluster.snapshot();
        let bytes = data.len();
        let index = point.index;
        self.raft
            .storage_mut()
            .compact(ramcoord_log::Snapshot { meta: point, data })?;
        tracing::info!(index, bytes, "log compacted: snapshot of the cluster state");
        Ok(())
    }

    /// Bookkeeping after applying the entry at `index`: the op log, the
    /// commit-point latency, and the client waiting for it.
    fn applied(&mut self, index: u64, term: u64, data: &Bytes, outcome: &Outcome, kind: EntryKind) {
        let now = Instant::now();
        let active = self.coord.is_active();
        let proposed = self.proposed_at.remove(&index);
        // Proposals at indexes the log has applied past without them are
        // gone (overwritten by another leader's entries).
        while let Some((&i, _)) = self.proposed_at.first_key_value() {
            if i > index {
                break;
            }
            self.proposed_at.pop_first();
        }
        let commit_us = proposed.map(|t| now.duration_since(t).as_micros() as u64);
        // What the client waiting for this entry is told: (seq, term,
        // result) of the operation, or that its outcome is unknown.
        let result: Option<Result<(u64, u64, OpResult), String>> = match outcome {
            Outcome::Committed(_) | Outcome::Rejected(_) => {
                let Some(op) = Record::decode(data).ok().and_then(|r| r.op().cloned()) else {
                    // Only a commit record has a commit outcome.
                    tracing::error!(index, "a commit outcome without a commit record");
                    return;
                };
                let rejected = match outcome {
                    Outcome::Rejected(r) => Some(r.to_string()),
                    _ => None,
                };
                if rejected.is_none() {
                    self.committed_at.insert(index, now);
                }
                if let Some(us) = commit_us {
                    self.commits_measured += 1;
                    if self.commit_latencies_us.len() == client::RECENT_LATENCIES {
                        self.commit_latencies_us.pop_front();
                    }
                    self.commit_latencies_us.push_back(us);
                }
                if active {
                    match &rejected {
                        None => tracing::info!(
                            seq = index,
                            term,
                            op = %op.summary(),
                            commit_us,
                            "commit point"
                        ),
                        Some(why) => {
                            tracing::info!(seq = index, op = %op.kind(), why, "rejected at apply")
                        }
                    }
                }
                if self.recent.len() == RECENT_OPS {
                    self.recent.pop_front();
                }
                self.recent.push_back(OpRecord {
                    seq: index,
                    term,
                    summary: op.summary(),
                    kind: op.kind().to_string(),
                    rejected: rejected.clone(),
                    completed: None,
                    commit_us,
                    complete_after_us: None,
                });
                let r = match outcome {
                    Outcome::Committed(e) => Ok(e.clone()),
                    Outcome::Rejected(r) => Err(r.clone()),
                    _ => Ok(Effect::Changed),
                };
                Some(Ok((index, term, OpResult::of(&r))))
            }
            Outcome::Duplicate {
                rpc,
                index: seq,
                result,
            } => {
                if active {
                    tracing::info!(%rpc, index, seq, "a second commit record of an operation applied as a duplicate (nothing changed)");
                }
                let t = self.raft.log().term(*seq).unwrap_or(term);
                Some(Ok((*seq, t, OpResult::of(result))))
            }
            Outcome::Unknown { rpc, reason } => {
                if active {
                    tracing::info!(%rpc, index, %reason, "a client operation with an unknown outcome applied as nothing");
                }
                Some(Err(format!("operation {rpc}: {reason}")))
            }
            Outcome::Completed(seq) => {
                let after = self
                    .committed_at
                    .remove(seq)
                    .map(|t| now.duration_since(t).as_micros() as u64);
                let mut commit_term = None;
                if let Some(r) = self.recent.iter_mut().rev().find(|r| r.seq == *seq) {
                    r.completed = Some((index, term));
                    r.complete_after_us = after;
                    commit_term = Some(r.term);
                }
                if active {
                    let rolled_forward = commit_term.is_some_and(|t| t < term);
                    tracing::info!(
                        seq,
                        index,
                        rolled_forward,
                        complete_after_us = after,
                        "operation complete"
                    );
                }
                if let Some(w) = self.completion_waiters.remove(seq) {
                    let reply = ClientReply::Completed {
                        seq: *seq,
                        complete_us: now.duration_since(w.received).as_micros() as u64,
                    };
                    self.reply(w.from, w.request, &reply);
                }
                None
            }
            Outcome::Malformed(e) => {
                tracing::warn!(index, term, error = %e, "a committed entry is not a coordinator record: applied as a rejection (nothing changed)");
                Some(Ok((
                    index,
                    term,
                    OpResult::Rejected(format!("malformed record: {e}")),
                )))
            }
            Outcome::NotARecord if kind == EntryKind::ConfChange => {
                Some(Ok((index, term, OpResult::Changed)))
            }
            Outcome::Noop => Some(Ok((index, term, OpResult::Changed))),
            Outcome::AlreadyComplete(_) | Outcome::NotARecord => None,
        };
        // Waiters before this index can no longer be answered by their entry.
        while let Some((&i, _)) = self.waiters.first_key_value() {
            if i >= index {
                break;
            }
            let (_, w) = self.waiters.pop_first().expect("just looked");
            self.lost_waiter(w);
        }
        let Some(w) = self.waiters.remove(&index) else {
            return;
        };
        if let Some(rpc) = w.rpc {
            self.rpc_inflight.remove(&rpc.key());
        }
        let received = w.received;
        match result {
            Some(Ok((seq, t, result))) if w.data == *data => {
                let completes = match outcome {
                    Outcome::Committed(_) => true,
                    Outcome::Duplicate { result, .. } => result.is_ok(),
                    _ => false,
                };
                if seq != index {
                    // A duplicate: answered as the original (and its
                    // completion, now or when it comes).
                    let r = match outcome {
                        Outcome::Duplicate { result, .. } => result.clone(),
                        _ => Ok(Effect::Changed),
                    };
                    self.answer_applied(w.from, w.request, seq, &r, w.until_complete, received);
                    return;
                }
                let reply = ClientReply::Committed {
                    seq,
                    term: t,
                    result,
                    commit_us: now.duration_since(received).as_micros() as u64,
                };
                self.reply(w.from, w.request, &reply);
                if w.until_complete && completes {
                    self.completion_waiters.insert(index, w);
                }
            }
            Some(Err(why)) if w.data == *data => {
                self.reply(w.from, w.request, &ClientReply::Unknown(why));
            }
            _ => self.lost_waiter(w),
        }
    }

    fn act(&mut self, actions: Vec<Action>) -> Result<(), NodeError> {
        let mut proposed = false;
        for a in actions {
            match a {
                Action::Propose(rec) => {
                    let data = match rec.encode() {
                        Ok(data) => data,
                        Err(e) => {
                            tracing::error!(error = %e, record = ?rec, "cannot encode the coordinator's own record; not proposed");
                            continue;
                        }
                    };
                    if let Ok(index) = self.raft.propose(data) {
                        self.proposed_at.insert(index, Instant::now());
                        proposed = true;
                    }
                }
                push @ Action::Push { .. } => {
                    if self.cfg.push_delay.is_zero() {
                        self.push(push);
                    } else {
                        let due = Instant::now() + self.cfg.push_delay;
                        self.delayed_pushes.push_back((due, push));
                    }
                }
            }
        }
        if proposed {
            self.drive()?;
        }
        Ok(())
    }

    /// Writes a configuration region into a master (one-sided).
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
        let Ok(sock) = addr.parse::<std::net::SocketAddr>() else {
            tracing::warn!(%to, addr, "server address is not HOST:PORT; cannot push");
            return;
        };
        let peer = master_peer_id(server.nonce);
        self.transport.add_peer(peer, sock);
        let id = self.transport.write(peer, CONFIG_REGION, 0, region);
        self.pushes_in_flight
            .insert(id, (to, self.coord.term(), version, peer));
        tracing::debug!(%to, version, "push sent");
    }
}

/// Encodes a Raft message as a transport payload (for tests and tools).
pub fn raft_payload(m: &Message) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(tag::RAFT);
    encode_message(m, &mut b);
    b.freeze()
}
