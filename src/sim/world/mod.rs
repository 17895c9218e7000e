//! One simulated run: replicas, disks, a network and clients, driven by a
//! single event queue and a single seeded random source.
//!
//! Time is simulated microseconds. Every source of nondeterminism (message
//! delays, loss, faults, client choices, the Raft nodes' election timeouts)
//! derives from the run's seed, and events at equal times run in the order
//! they were scheduled, so a seed replays exactly.
//!
//! A run has two phases. In the **fault phase** the nemesis partitions the
//! network (symmetric and asymmetric), the network loses, duplicates, delays
//! and reorders messages, nodes crash (losing unpersisted writes, sometimes
//! with a torn last write) and restart, disks stall, clocks tick at skewed
//! rates, and an administrator changes membership and transfers leadership.
//! Then every fault heals and the **liveness phase** checks that a leader is
//! elected and a client write commits within a bounded time. Safety
//! invariants are checked after every event; linearizability of the client
//! history and the survival of acknowledged writes at the end.
//!
//! This module holds the run loop, the nodes' ready loop and the invariant
//! checks after each step; `network`, `disk`, `faults` and `clients` hold
//! the simulated world around them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use ramcoord_log::{
    ConfChange, ConfState, Config, EntryKind, MemStorage, Message, NodeId, ProposeError, RawNode,
    ReadMode, Ready, Role, Storage,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xxhash_rust::xxh3::Xxh3;

use super::checkers::{entry_digest, Checker, Violation};
use super::kv::{Command, Kv, KvOp};
use super::PlantedBugs;
use crate::cluster::ClusterState;
use crate::lincheck::register::{Register, RegisterInput, RegisterOutput};
use crate::lincheck::{self, Operation, Verdict};
use crate::replica::{Input, PersistJob, Replica};

mod clients;
mod coordinator;
mod disk;
mod faults;
mod network;

/// How hard the simulator pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultLevel {
    /// A healthy cluster: only ordinary delays.
    None,
    /// Every fault kind, at rates a real deployment might see on a bad day.
    Standard,
    /// Every fault kind, often.
    Heavy,
}

/// What the replicas run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A key-value register map; clients read, write and compare-and-set.
    Raft,
    /// The coordinator: cluster state, operations with commit points,
    /// masters taking configuration pushes.
    Coordinator,
}

/// What one run simulates.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The seed everything derives from.
    pub seed: u64,
    /// Replicas in the group (3 or 5).
    pub replicas: usize,
    /// Fault intensity.
    pub faults: FaultLevel,
    /// Planted bugs.
    pub bugs: PlantedBugs,
    /// What runs on the replicas.
    pub workload: Workload,
    /// Keep the event trace.
    pub trace: bool,
    /// The coordinator workload's masters (default: 3 to 6, from the
    /// seed): thousands for the scaled workload.
    pub masters: Option<usize>,
}

/// Counts for the summary line.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    /// Events processed.
    pub events: u64,
    /// Distinct (term, leader) pairs.
    pub leaders: u64,
    /// Highest index applied anywhere.
    pub applied_max: u64,
    /// Client operations acknowledged.
    pub ops_ok: u64,
    /// Client operations with unknown outcome.
    pub ops_unknown: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Crashes that left a torn write behind.
    pub torn_writes: u64,
    /// Restarts that lost acknowledged entries of the log tail.
    pub tails_lost: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Snapshots a coordinator replica encoded and wrote off its Raft
    /// thread (then compacted its log under, unless overtaken).
    pub snapshots_written: u64,
    /// Removed replicas whose disk was lost, replaced by a new replica
    /// (a new id, an empty log) that joined through membership changes.
    pub wipes: u64,
    /// Membership changes committed and applied.
    pub conf_changes: u64,
    /// Leadership transfers started.
    pub transfers: u64,
    /// Linearizable reads served.
    pub reads: u64,
    /// Leader disks stalled for ten election timeouts after the heal.
    pub disk_stalls: u64,
    /// Simulated microseconds.
    pub sim_us: u64,
    /// Coordinator operations completed (completion record applied).
    pub coord_ops_completed: u64,
    /// ... of which by a later leader than the one that committed them.
    pub roll_forwards: u64,
    /// Configuration pushes sent.
    pub pushes: u64,
    /// Pushes a master applied.
    pub pushes_applied: u64,
    /// Pushes a master refused for an older term.
    pub stale_pushes_refused: u64,
    /// Pushes a master refused because their writer was not granted
    /// access (grant fencing, as over RDMA).
    pub ungranted_pushes_refused: u64,
    /// Write access granted by masters to a newer leader.
    pub write_grants: u64,
    /// Master processes crashed.
    pub master_crashes: u64,
    /// Master processes asked to stop gracefully (a drain).
    pub master_leaves: u64,
    /// Drains that ended with the master told it is gone (the others
    /// stopped at their limit).
    pub master_drains_done: u64,
    /// Masters told they were declared crashed while running and not
    /// leaving (a partition or lost heartbeats; with no faults injected,
    /// a false suspicion, which the final checks refuse).
    pub masters_declared_crashed_alive: u64,
    /// Forged Raft messages stepped into replicas (each must be refused).
    pub forged: u64,
    /// Invalid records (breaking a limit, or not records at all) proposed
    /// past the edge's validation, as a bug or forged proposal would.
    pub invalid_injected: u64,
    /// ... applied as deterministic rejections (counted per replica).
    pub invalid_applied: u64,
    /// Client operations sent again (same client id and seq) after an
    /// attempt got no answer.
    pub op_retries: u64,
    /// Retries answered from the exactly-once table (applied already).
    pub retries_answered_applied: u64,
    /// Second commit records of one operation, applied as duplicates.
    pub duplicate_records: u64,
    /// Operations answered "outcome unknown" (client evicted or
    /// superseded).
    pub unknown_outcomes: u64,
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct SimOutcome {
    /// The seed.
    pub seed: u64,
    /// The first invariant broken, if any.
    pub violation: Option<Violation>,
    /// The event trace (empty unless asked for).
    pub trace: Vec<String>,
    /// Hash of the event trace (0 unless the trace was kept).
    pub trace_hash: u64,
    /// Counts.
    pub stats: SimStats,
}

/// Knobs drawn from the seed (swarm testing: each seed gets its own mix).
#[derive(Clone, Debug)]
struct Params {
    loss: f64,
    dup: f64,
    delay_us: (u64, u64),
    reorder: f64,
    reorder_us: u64,
    partitions: bool,
    crashes: bool,
    crash_every_us: (u64, u64),
    down_us: (u64, u64),
    torn: f64,
    disk_us: (u64, u64),
    slow_disk: f64,
    slow_disk_us: (u64, u64),
    skew: f64,
    admin: bool,
    /// Chance that a node is cut off right after it wins an election
    /// (leaving a higher-term entry that nobody else has).
    isolate_new_leader: f64,
    /// Chance that a leader crashes right after its commit index advances
    /// (before it can tell anyone).
    crash_on_commit: f64,
    /// Chance that a leader crashes right after the first commit of its
    /// term: the moment its term becomes established.
    crash_on_first_commit: f64,
    /// Chance that a node crashes while a disk write is in flight.
    crash_mid_write: f64,
    compact_threshold: u64,
    append_entries_max: usize,
    inflight_max: usize,
    chunk_bytes: usize,
    read_mode: ReadMode,
    /// Pre-vote and check-quorum on (off covers plain Raft's rules).
    pre_vote_check_quorum: bool,
    fault_phase_us: u64,
    liveness_us: u64,
    /// Step forged messages into replicas: from a non-member with a newer
    /// term, from a member with a term at the ceiling or far ahead.
    forge: bool,
    /// Chance that a crashed replica comes back without part of the log
    /// tail it acknowledged (disk damage past its acknowledged watermark,
    /// cut on open as a torn tail). Only entries every other replica holds
    /// durably are lost, so no committed entry can go; the leader must
    /// notice and replicate them again.
    lose_tail: f64,
}

const TICK_US: u64 = 1_000;
/// A follower that restarted without acknowledged entries is caught up
/// within this many ticks of its restart (a few heartbeats and round trips,
/// with room for an election).
const AMNESIA_CATCH_UP_TICKS: u64 = 100;
const ELECTION_TICKS: u64 = 10;
const HEARTBEAT_TICKS: u64 = 2;
const CLIENTS: usize = 3;
const KEYS: u64 = 3;
const CLIENT_TIMEOUT_US: u64 = 120_000;
/// Search budget per key: the histories here take far fewer steps; running
/// out is reported, never taken as a pass.
const LINCHECK_STEPS_MAX: u64 = 5_000_000;
/// A healthy run processes well under a million events; many more means
/// messages multiply (a protocol bug), and the run stops with a violation.
const EVENTS_MAX: u64 = 5_000_000;
/// ... and with `--masters N`, at least this many per master: each ticks
/// every 10 ms through a quiet period that grows with N.
const EVENTS_PER_MASTER_MAX: u64 = 10_000;

impl Params {
    fn draw(level: FaultLevel, rng: &mut ChaCha8Rng) -> Params {
        let mut p = Params {
            loss: 0.0,
            dup: 0.0,
            delay_us: (50, 400),
            reorder: 0.0,
            reorder_us: 0,
            partitions: false,
            crashes: false,
            crash_every_us: (0, 0),
            down_us: (0, 0),
            torn: 0.0,
            disk_us: (30, 300),
            slow_disk: 0.0,
            slow_disk_us: (0, 0),
            skew: 0.0,
            admin: false,
            isolate_new_leader: 0.0,
            crash_on_commit: 0.0,
            crash_on_first_commit: 0.0,
            crash_mid_write: 0.0,
            compact_threshold: rng.random_range(8..200),
            append_entries_max: [1, 1, 2, 4, 64][rng.random_range(0..5)],
            inflight_max: [1, 4, 64][rng.random_range(0..3)],
            chunk_bytes: [16, 64, 4096][rng.random_range(0..3)],
            read_mode: ReadMode::Safe,
            pre_vote_check_quorum: rng.random_bool(0.7),
            fault_phase_us: 1_500_000,
            liveness_us: 3_000_000,
            forge: false,
            lose_tail: 0.0,
        };
        let heavy = level == FaultLevel::Heavy;
        if level != FaultLevel::None {
            let scale = if heavy { 3.0 } else { 1.0 };
            p.loss = rng.random_range(0.0..0.05) * scale;
            p.dup = rng.random_range(0.0..0.03) * scale;
            p.delay_us = (50, rng.random_range(400..3_000));
            p.reorder = rng.random_range(0.0..0.05) * scale;
            p.reorder_us = rng.random_range(5_000..40_000);
            p.partitions = rng.random_bool(0.8);
            p.crashes = rng.random_bool(0.8);
            p.crash_every_us = if heavy {
                (30_000, 250_000)
            } else {
                (80_000, 500_000)
            };
            p.down_us = (5_000, rng.random_range(20_000..400_000));
            p.torn = rng.random_range(0.0..1.0);
            p.disk_us = (30, rng.random_range(300..3_000));
            p.slow_disk = rng.random_range(0.0..0.1) * scale;
            p.slow_disk_us = (5_000, rng.random_range(10_000..60_000));
            p.skew = rng.random_range(0.0..if heavy { 0.3 } else { 0.1 });
            p.admin = rng.random_bool(0.6);
            // Faults at the protocol's most delicate moments (figure 8 of
            // the Raft paper needs both).
            if rng.random_bool(0.8) {
                p.isolate_new_leader = rng.random_range(0.0..0.5);
                p.crash_on_commit = rng.random_range(0.0..0.05) * scale;
                p.crash_on_first_commit = rng.random_range(0.0..0.8);
                p.crash_mid_write = rng.random_range(0.0..0.01) * scale;
            }
            p.fault_phase_us = if heavy { 3_000_000 } else { 2_000_000 };
            p.liveness_us = 4_000_000;
        }
        if p.pre_vote_check_quorum && rng.random_bool(0.3) {
            // Followers may tick up to `skew` slower or faster than the
            // leader; the lease gives up enough ticks to cover it, plus one
            // for the heartbeat's own flight.
            let margin = ((ELECTION_TICKS as f64) * 2.0 * p.skew).ceil() as u64 + 1;
            p.read_mode = ReadMode::Lease {
                drift_margin_ticks: margin.min(ELECTION_TICKS - 1),
            };
        }
        // Drawn last: earlier draws (and the seeds replaying them) keep
        // their values.
        p.forge = level != FaultLevel::None && rng.random_bool(0.5);
        if p.crashes && rng.random_bool(0.5) {
            p.lose_tail = rng.random_range(0.3..1.0);
        }
        p
    }
}

#[derive(Clone, Copy, Debug)]
enum Req {
    Read { key: u64 },
    Write { key: u64, value: u64 },
    Cas { key: u64, from: u64, to: u64 },
}

#[derive(Clone, Copy, Debug)]
enum Reply {
    Read(Option<u64>),
    Done,
    /// Certainly had no effect.
    Failed(Option<NodeId>),
}

#[derive(Debug)]
enum Ev {
    Tick(NodeId, u64),
    Deliver(Message),
    /// A replica's transport message to another (the coordinator workload:
    /// encoded as on the wire, decoded by the receiving replica).
    DeliverBytes {
        from: NodeId,
        to: NodeId,
        payload: bytes::Bytes,
    },
    DiskDone(NodeId, u64),
    ClientNext(usize),
    Request {
        node: NodeId,
        client: usize,
        op_id: u64,
        req: Req,
    },
    Response {
        client: usize,
        op_id: u64,
        reply: Reply,
    },
    Timeout {
        client: usize,
        op_id: u64,
    },
    Nemesis,
    Crash,
    Restart(NodeId),
    /// Crash this node if it is still in the given incarnation.
    CrashNode(NodeId, u64),
    Admin,
    Heal,
    /// After healing: bring removed replicas back until all are voters.
    RestoreMembership,
    /// The coordinator workload's own events.
    Coord(coordinator::CoordEv),
    /// Step a forged Raft message into a replica.
    Forge,
    /// A follower restarts without part of its acknowledged tail (tries
    /// left to find one with a tail to lose).
    Amnesia(u32),
    /// Note the commit index every member must reach by the end.
    MarkCommit,
    /// After the heal: the leader's disk stalls for ten election timeouts
    /// while the network is healthy.
    StallLeaderDisk,
    /// The stall is over: the leader must still lead, in the same term,
    /// and its commit index must have moved if it had entries to commit.
    CheckStall {
        id: NodeId,
        term: u64,
        commit: u64,
        last: u64,
    },
    /// A follower that lost acknowledged entries has caught up.
    CheckCaughtUp {
        id: NodeId,
        target: u64,
        /// Checks already put off because the leader knew the node was
        /// behind and was still sending it what it lacks.
        put_off: u32,
    },
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Node {
    id: NodeId,
    incarnation: u64,
    /// The Raft workload: the bare Raft core, driven by this module.
    raft: Option<RawNode<MemStorage>>,
    /// The coordinator workload: the replica as the process runs it
    /// (`crate::replica`), driven by `coordinator`.
    replica: Option<Replica<MemStorage>>,
    /// The coordinator workload's persist jobs handed to the disk, oldest
    /// first.
    jobs: VecDeque<PersistJob>,
    /// The durable storage while the node is down.
    down_storage: Option<MemStorage>,
    disk_queue: VecDeque<Ready>,
    /// Readies in the write in flight (group commit).
    disk_inflight: usize,
    tick_us: u64,
    /// Its disk's writes finish no earlier than this (a stalled disk).
    disk_stalled_until: u64,
    kv: Kv,
    applied: u64,
    commit_checked: u64,
    pending_writes: BTreeMap<u64, (usize, u64)>,
    pending_reads: HashMap<u64, (usize, u64)>,
    read_points: Vec<(u64, u64)>,
    was_leader_term: Option<u64>,
    /// The term in which this node, as leader, last advanced its commit.
    committed_as_leader_term: Option<u64>,
    /// Term and commit index after the previous step (delta checks).
    last_seen: (u64, u64),
}

/// The Raft core of a node, whichever workload runs it (`None`: down); by
/// field, so the node's other fields stay free to change.
fn core<'a>(
    raft: &'a Option<RawNode<MemStorage>>,
    replica: &'a Option<Replica<MemStorage>>,
) -> Option<&'a RawNode<MemStorage>> {
    raft.as_ref().or_else(|| replica.as_ref().map(|r| r.raft()))
}

impl Node {
    /// The Raft core, whichever workload runs it (`None`: down).
    fn raft(&self) -> Option<&RawNode<MemStorage>> {
        core(&self.raft, &self.replica)
    }

    /// Messages it refused (the replica's edge included): 0 if down.
    fn refused(&self) -> u64 {
        match (&self.raft, &self.replica) {
            (Some(raft), _) => raft.refusals().0,
            (None, Some(r)) => r.rejected_messages(),
            (None, None) => 0,
        }
    }

    /// Whether it is up.
    fn is_up(&self) -> bool {
        self.raft.is_some() || self.replica.is_some()
    }
}

#[derive(Default)]
struct Client {
    in_flight: Option<(u64, usize)>,
    leader_hint: Option<NodeId>,
}

struct HistOp {
    key: u64,
    op: Operation<RegisterInput, RegisterOutput>,
    write_index: Option<u64>,
    write_digest: Option<u64>,
    /// Certainly had no effect (or a read that saw nothing): not checked.
    dropped: bool,
}

struct World {
    opts: SimOptions,
    /// Simulated time zero, as the instant the replicas are told (they only
    /// ever measure differences, so a run replays exactly).
    epoch: std::time::Instant,
    p: Params,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: BTreeMap<NodeId, Node>,
    /// The id a replacement replica gets (ids are never reused: a replica
    /// whose disk was lost comes back under a new one).
    next_node_id: NodeId,
    blocked: HashSet<(NodeId, NodeId)>,
    healed: bool,
    heal_at: u64,
    clients: Vec<Client>,
    history: Vec<HistOp>,
    hist_clock: u64,
    next_op: u64,
    next_value: u64,
    checker: Checker,
    trace: Vec<String>,
    stats: SimStats,
    live_commit_after_heal: bool,
    /// The highest commit index any replica knew well before the end (at
    /// three quarters of the liveness phase): every member must reach it.
    commit_to_reach: u64,
    /// The next crash loses the tail (the heal's final fault).
    lose_tail_next_crash: bool,
    /// op id -> (history clock at its first apply anywhere, took effect).
    first_applied: HashMap<u64, (u64, bool)>,
    /// The coordinator workload's masters, clients and history.
    cw: coordinator::CoordWorld,
}

/// Runs one seed to completion. An assertion inside the Raft core or the
/// simulator (an invariant checked at the point it would break) fails the
/// seed like any other violation instead of ending the sweep.
pub fn run(opts: SimOptions) -> SimOutcome {
    let seed = opts.seed;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_unguarded(opts))) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            SimOutcome {
                seed,
                violation: Some(Violation::new("assertion", msg)),
                trace: Vec::new(),
                trace_hash: 0,
                stats: SimStats::default(),
            }
        }
    }
}

fn run_unguarded(opts: SimOptions) -> SimOutcome {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut p = Params::draw(opts.faults, &mut rng);
    if opts.workload == Workload::Coordinator {
        // The coordinator runs as deployed: with pre-vote and check-quorum.
        // Without them a removed replica that keeps campaigning deposes
        // every leader (Raft thesis §4.2.3), and operations stall; plain
        // Raft's rules are covered by the Raft workload.
        p.pre_vote_check_quorum = true;
    }
    let mut w = World {
        epoch: std::time::Instant::now(),
        heal_at: p.fault_phase_us,
        p,
        rng,
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        nodes: BTreeMap::new(),
        next_node_id: 1,
        blocked: HashSet::new(),
        healed: false,
        clients: (0..CLIENTS).map(|_| Client::default()).collect(),
        history: Vec::new(),
        hist_clock: 0,
        next_op: 1,
        next_value: 1,
        checker: Checker::default(),
        trace: Vec::new(),
        stats: SimStats::default(),
        live_commit_after_heal: false,
        commit_to_reach: 0,
        lose_tail_next_crash: false,
        first_applied: HashMap::new(),
        cw: Default::default(),
        opts,
    };
    let violation = w.run_all().err();
    w.stats.applied_max = w.checker.applied_max();
    w.stats.sim_us = w.now;
    let trace_hash = if w.opts.trace {
        let mut h = Xxh3::new();
        for line in &w.trace {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        h.digest()
    } else {
        0
    };
    SimOutcome {
        seed: w.opts.seed,
        violation,
        trace: std::mem::take(&mut w.trace),
        trace_hash,
        stats: w.stats.clone(),
    }
}

impl World {
    fn trace(&mut self, f: impl FnOnce() -> String) {
        if self.opts.trace {
            let line = format!("{:>9} {}", self.now, f());
            self.trace.push(line);
        }
    }

    fn at(&mut self, delay_us: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at: self.now + delay_us,
            seq: self.seq,
            ev,
        }));
    }

    /// The simulated now, as an instant.
    fn instant(&self) -> std::time::Instant {
        self.epoch + std::time::Duration::from_micros(self.now)
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Nodes that are up or may come back (not retired).
    fn live_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_up() || n.down_storage.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn raft_config(&self, id: NodeId, seed: u64) -> Config {
        let mut cfg = Config::new(id);
        cfg.election_timeout_ticks = ELECTION_TICKS;
        cfg.heartbeat_interval_ticks = HEARTBEAT_TICKS;
        cfg.append_entries_max = self.p.append_entries_max;
        cfg.inflight_appends_max = self.p.inflight_max;
        cfg.snapshot_chunk_bytes = self.p.chunk_bytes;
        cfg.read_mode = self.p.read_mode;
        cfg.pre_vote = self.p.pre_vote_check_quorum;
        cfg.check_quorum = self.p.pre_vote_check_quorum;
        cfg.seed = seed;
        cfg.bugs = self.opts.bugs.raft;
        cfg
    }

    fn run_all(&mut self) -> Result<(), Violation> {
        let n = self.opts.replicas as u64;
        let conf = ConfState::with_voters(1..=n);
        for id in 1..=n {
            let skew = if self.p.skew > 0.0 {
                self.rng.random_range(-self.p.skew..self.p.skew)
            } else {
                0.0
            };
            let tick_us = ((TICK_US as f64) * (1.0 + skew)) as u64;
            let seed = self.rng.random();
            let raft = RawNode::new(self.raft_config(id, seed), MemStorage::bootstrap(&conf))
                .expect("valid simulator config");
            let first = self.rng.random_range(0..tick_us);
            if self.is_coordinator() {
                // Its replica starts (and ticks) once the workload has
                // drawn its knobs: as a restart of its bootstrapped log.
                self.insert_node(id, tick_us, None, Some(raft.into_storage()));
                self.at(first, Ev::Restart(id));
            } else {
                self.insert_node(id, tick_us, Some(raft), None);
                self.at(first, Ev::Tick(id, 0));
            }
        }
        self.next_node_id = n + 1;
        self.run_from_start()
    }

    /// Adds a node to the world: up with `raft`, or down with
    /// `down_storage` (to be started by a `Restart`).
    fn insert_node(
        &mut self,
        id: NodeId,
        tick_us: u64,
        raft: Option<RawNode<MemStorage>>,
        down_storage: Option<MemStorage>,
    ) {
        self.nodes.insert(
            id,
            Node {
                id,
                incarnation: 0,
                raft,
                replica: None,
                jobs: VecDeque::new(),
                down_storage,
                disk_queue: VecDeque::new(),
                disk_inflight: 0,
                tick_us,
                disk_stalled_until: 0,
                kv: Kv::default(),
                applied: 0,
                commit_checked: 0,
                pending_writes: BTreeMap::new(),
                pending_reads: HashMap::new(),
                read_points: Vec::new(),
                was_leader_term: None,
                committed_as_leader_term: None,
                last_seen: (0, 0),
            },
        );
    }

    fn run_from_start(&mut self) -> Result<(), Violation> {
        if self.is_coordinator() {
            self.coordinator_start();
        } else {
            for c in 0..CLIENTS {
                let d = self.rng.random_range(0..20_000);
                self.at(d, Ev::ClientNext(c));
            }
        }
        if self.opts.faults != FaultLevel::None {
            if self.p.partitions {
                let d = self.rng.random_range(50_000..300_000);
                self.at(d, Ev::Nemesis);
            }
            if self.p.crashes {
                let d = self
                    .rng
                    .random_range(self.p.crash_every_us.0..self.p.crash_every_us.1);
                self.at(d, Ev::Crash);
            }
            if self.p.admin {
                let d = self.rng.random_range(100_000..400_000);
                self.at(d, Ev::Admin);
            }
            if self.p.forge {
                let d = self.rng.random_range(10_000..100_000);
                self.at(d, Ev::Forge);
            }
        }
        self.at(self.heal_at, Ev::Heal);
        if self.p.lose_tail > 0.0 {
            self.at(self.heal_at + self.p.liveness_us / 4, Ev::Amnesia(200));
        }
        self.at(
            self.heal_at + self.p.liveness_us * 3 / 8,
            Ev::StallLeaderDisk,
        );
        self.at(self.heal_at + self.p.liveness_us * 3 / 4, Ev::MarkCommit);
        let end = self.heal_at + self.p.liveness_us;

        while let Some(Reverse(q)) = self.queue.pop() {
            if q.at > end {
                break;
            }
            self.now = q.at;
            self.stats.events += 1;
            let budget =
                EVENTS_MAX.max(self.opts.masters.unwrap_or(0) as u64 * EVENTS_PER_MASTER_MAX);
            if self.stats.events > budget {
                return Err(Violation::new(
                    "event budget",
                    format!(
                        "more than {budget} events by t={}us: a message storm or livelock",
                        self.now
                    ),
                ));
            }
            self.handle(q.ev)?;
        }
        self.now = end;
        self.check_caught_up()?;
        if !self.live_commit_after_heal {
            return Err(Violation::new(
                "liveness",
                format!(
                    "no client write committed within {} ticks after all faults healed",
                    self.p.liveness_us / TICK_US
                ),
            ));
        }
        if self.is_coordinator() {
            return self.coordinator_final_checks();
        }
        self.check_acked_writes_survive()?;
        self.check_linearizable()
    }

    fn handle(&mut self, ev: Ev) -> Result<(), Violation> {
        match ev {
            Ev::Tick(id, inc) => {
                let now = self.instant();
                let node = self.nodes.get_mut(&id).unwrap();
                if node.incarnation != inc || !node.is_up() {
                    return Ok(());
                }
                let tick_us = node.tick_us;
                if let Some(raft) = node.raft.as_mut() {
                    raft.tick();
                } else if let Some(r) = node.replica.as_mut() {
                    r.input(now, Input::Tick);
                }
                self.at(tick_us, Ev::Tick(id, inc));
                self.after_input(id)
            }
            Ev::Deliver(m) => {
                let to = m.to;
                if self.blocked.contains(&(m.from, to)) {
                    self.trace(|| format!("drop(partition) {}->{} {}", m.from, to, m.body.name()));
                    return Ok(());
                }
                let Some(raft) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) else {
                    return Ok(());
                };
                if self.opts.trace {
                    let line = format!(
                        "{:>9} deliver {}->{} t{} {:?}",
                        self.now, m.from, m.to, m.term, m.body
                    );
                    self.trace.push(line);
                }
                raft.step(m);
                self.after_input(to)
            }
            Ev::DeliverBytes { from, to, payload } => {
                if self.blocked.contains(&(from, to)) {
                    self.trace(|| format!("drop(partition) {from}->{to}"));
                    return Ok(());
                }
                if self.opts.trace {
                    let what = match ramcoord_log::wire::decode_message(payload.slice(1..)) {
                        Ok(m) => format!("t{} {:?}", m.term, m.body),
                        Err(e) => format!("undecodable: {e}"),
                    };
                    let line = format!("{:>9} deliver {from}->{to} {what}", self.now);
                    self.trace.push(line);
                }
                let now = self.instant();
                let Some(r) = self.nodes.get_mut(&to).and_then(|n| n.replica.as_mut()) else {
                    return Ok(());
                };
                r.input(now, Input::Message { from, payload });
                self.after_input(to)
            }
            Ev::DiskDone(id, inc) => self.disk_done(id, inc),
            Ev::ClientNext(c) => {
                self.client_next(c);
                Ok(())
            }
            Ev::Request {
                node,
                client,
                op_id,
                req,
            } => self.request(node, client, op_id, req),
            Ev::Response {
                client,
                op_id,
                reply,
            } => {
                self.response(client, op_id, reply);
                Ok(())
            }
            Ev::Timeout { client, op_id } => {
                self.timeout(client, op_id);
                Ok(())
            }
            Ev::Nemesis => {
                self.nemesis();
                Ok(())
            }
            Ev::Forge => self.forge(),
            Ev::MarkCommit => {
                self.commit_to_reach = self
                    .nodes
                    .values()
                    .filter_map(|n| n.raft().map(|r| r.log().committed))
                    .max()
                    .unwrap_or(0);
                Ok(())
            }
            Ev::CheckCaughtUp {
                id,
                target,
                put_off,
            } => self.check_amnesia_caught_up(id, target, put_off),
            Ev::StallLeaderDisk => {
                self.stall_leader_disk();
                Ok(())
            }
            Ev::CheckStall {
                id,
                term,
                commit,
                last,
            } => self.check_stall(id, term, commit, last),
            Ev::Amnesia(tries_left) => {
                self.amnesia(tries_left);
                Ok(())
            }
            Ev::Crash => {
                self.crash_some();
                Ok(())
            }
            Ev::Restart(id) => self.restart(id),
            Ev::CrashNode(id, inc) => {
                if self.nodes[&id].incarnation == inc && self.nodes[&id].is_up() && !self.healed {
                    self.crash(id);
                    let down = self.rng.random_range(self.p.down_us.0..self.p.down_us.1);
                    self.at(down, Ev::Restart(id));
                }
                Ok(())
            }
            Ev::Admin => {
                self.admin();
                Ok(())
            }
            Ev::Heal => {
                self.heal();
                if self.is_coordinator() {
                    self.coordinator_heal();
                }
                Ok(())
            }
            Ev::RestoreMembership => {
                self.restore_membership();
                Ok(())
            }
            Ev::Coord(ev) => self.coordinator_event(ev),
        }
    }

    /// After a node took an input: run its ready loop and check invariants.
    fn after_input(&mut self, id: NodeId) -> Result<(), Violation> {
        if self.is_coordinator() {
            self.drive_replica(id)?;
        } else {
            self.drive(id)?;
        }
        self.check_node(id)
    }

    fn check_node(&mut self, id: NodeId) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = core(&node.raft, &node.replica) else {
            return Ok(());
        };
        // Delta checks: within one incarnation, neither the term nor the
        // commit index ever goes back.
        let now_seen = (raft.term(), raft.log().committed);
        if now_seen.0 < node.last_seen.0 || now_seen.1 < node.last_seen.1 {
            return Err(Violation::new(
                "monotonic state",
                format!(
                    "node {id} went from (term, commit) {:?} to {now_seen:?}",
                    node.last_seen
                ),
            ));
        }
        node.last_seen = now_seen;
        if raft.role() == Role::Leader && node.was_leader_term != Some(raft.term()) {
            node.was_leader_term = Some(raft.term());
            let (term, last) = (raft.term(), raft.log().last_index());
            if self.checker.on_leader(id, term)? {
                self.stats.leaders += 1;
            }
            let log = raft.log();
            self.checker
                .check_leader_completeness(id, term, last, |i| match log.term(i) {
                    Ok(t) => Some(Ok(t)),
                    Err(ramcoord_log::StorageError::Compacted(_)) => None,
                    Err(_) => Some(Err(())),
                })?;
            self.trace(|| format!("n{id} leader term {term}"));
            if !self.healed && self.rng.random_bool(self.p.isolate_new_leader) {
                for other in self.node_ids() {
                    if other != id {
                        self.blocked.insert((id, other));
                        self.blocked.insert((other, id));
                    }
                }
                self.trace(|| format!("nemesis isolate new leader {id}"));
            }
        }
        let node = self.nodes.get_mut(&id).unwrap();
        let raft = core(&node.raft, &node.replica).unwrap();
        let committed = raft.log().committed;
        let now_term = raft.term();
        if committed > node.commit_checked {
            let lo = (node.commit_checked + 1).max(raft.log().first_index());
            if lo <= committed {
                let ents = raft
                    .log()
                    .entries(lo, committed + 1, u64::MAX)
                    .expect("committed entries are in the log");
                for e in &ents {
                    self.checker
                        .on_committed(id, now_term, e.index, e.term, entry_digest(e))?;
                }
            }
            node.commit_checked = committed;
            let leads = raft.role() == Role::Leader;
            let first_in_term = leads && node.committed_as_leader_term != Some(raft.term());
            if leads {
                node.committed_as_leader_term = Some(raft.term());
            }
            let p = if first_in_term {
                self.p.crash_on_first_commit
            } else {
                self.p.crash_on_commit
            };
            if leads && !self.healed && self.rng.random_bool(p) {
                self.crash(id);
                let down = self.rng.random_range(self.p.down_us.0..self.p.down_us.1);
                self.at(down, Ev::Restart(id));
            }
        }
        Ok(())
    }

    fn drive(&mut self, id: NodeId) -> Result<(), Violation> {
        loop {
            let node = self.nodes.get_mut(&id).unwrap();
            let Some(raft) = node.raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                break;
            }
            let mut rd = raft.ready();
            self.checker.on_entries(id, &rd.entries)?;
            for m in std::mem::take(&mut rd.messages) {
                self.send(m);
            }
            if let Some(snap) = &rd.snapshot {
                let node = self.nodes.get_mut(&id).unwrap();
                match Kv::restore(&snap.data) {
                    Some(kv) => node.kv = kv,
                    None => {
                        return Err(Violation::new(
                            "snapshot",
                            format!("node {id} got an unreadable snapshot"),
                        ))
                    }
                }
                node.applied = snap.meta.index;
                let idx = snap.meta.index;
                self.stats.snapshots_installed += 1;
                self.trace(|| format!("n{id} restore snapshot at {idx}"));
            }
            let committed = std::mem::take(&mut rd.committed_entries);
            self.apply(id, &committed)?;
            let node = self.nodes.get_mut(&id).unwrap();
            node.read_points
                .extend(rd.read_states.iter().map(|r| (r.index, r.ctx)));
            self.serve_reads(id);
            let node = self.nodes.get_mut(&id).unwrap();
            if rd.is_persist_empty() && node.disk_queue.is_empty() {
                let msgs = std::mem::take(&mut rd.persisted_messages);
                node.raft.as_mut().unwrap().advance(rd);
                for m in msgs {
                    self.send(m);
                }
                continue;
            }
            node.disk_queue.push_back(rd);
            if node.disk_inflight == 0 {
                self.start_disk_write(id);
            }
        }
        self.maybe_compact(id);
        Ok(())
    }

    /// Once faults stop, every member of the group learns every entry
    /// committed well before the end: none is left behind for ever (as a
    /// follower whose leader believes it holds entries it lost would be).
    fn check_caught_up(&self) -> Result<(), Violation> {
        let Some(leader) = self.some_leader() else {
            return Ok(()); // liveness reports a group without a leader
        };
        let conf = self.nodes[&leader].raft().expect("up").conf();
        for id in conf.members() {
            let Some(raft) = self.nodes.get(&id).and_then(|n| n.raft()) else {
                continue;
            };
            let committed = raft.log().committed;
            if committed < self.commit_to_reach {
                let pr = self.nodes[&leader]
                    .raft
                    .as_ref()
                    .and_then(|r| r.progress(id).map(|p| p.match_index));
                return Err(Violation::new(
                    "catch up",
                    format!(
                        "{}us after faults stopped, node {id} has committed {committed} \
                         (its log ends at {}), below the {} committed {}us earlier; \
                         leader {leader} has match index {} for it",
                        self.p.liveness_us,
                        raft.log().last_index(),
                        self.commit_to_reach,
                        self.p.liveness_us / 4,
                        pr.map_or("unknown".to_string(), |m| m.to_string())
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What every workload does first for each committed entry a node
    /// applies: entries come in order, each once, and every node applies
    /// the same entry at an index (state machine safety). Returns the
    /// entry's digest.
    fn check_apply(&mut self, id: NodeId, e: &ramcoord_log::Entry) -> Result<u64, Violation> {
        let node = self.nodes.get_mut(&id).unwrap();
        if e.index != node.applied + 1 {
            return Err(Violation::new(
                "state machine safety",
                format!("node {id} applies index {} after {}", e.index, node.applied),
            ));
        }
        node.applied = e.index;
        let digest = entry_digest(e);
        if e.kind == EntryKind::ConfChange
            && e.term > 1
            && self.checker.applied_at(e.index).is_none()
        {
            self.stats.conf_changes += 1;
        }
        self.checker.on_applied(id, e.index, digest)?;
        Ok(digest)
    }

    fn apply(&mut self, id: NodeId, entries: &[ramcoord_log::Entry]) -> Result<(), Violation> {
        for e in entries {
            let digest = self.check_apply(id, e)?;
            let node = self.nodes.get_mut(&id).unwrap();
            let pending = node.pending_writes.remove(&e.index);
            let cmd = if e.kind == EntryKind::Normal {
                Command::decode(&e.data)
            } else {
                None
            };
            let effect = cmd.map(|c| node.kv.apply(&c));
            if let (Some(c), Some(took)) = (cmd, effect) {
                if !self.first_applied.contains_key(&c.op_id) {
                    self.hist_clock += 1;
                    self.first_applied.insert(c.op_id, (self.hist_clock, took));
                }
            }
            if let Some((client, op_id)) = pending {
                let reply = match (cmd, effect) {
                    (Some(c), Some(true)) if c.op_id == op_id => {
                        if let Some(h) =
                            self.history.iter_mut().rev().find(|h| h.op.origin == op_id)
                        {
                            h.write_index = Some(e.index);
                            h.write_digest = Some(digest);
                        }
                        Reply::Done
                    }
                    _ => Reply::Failed(None), // another entry took the index, or a cas failed
                };
                self.reply(client, op_id, reply);
            }
        }
        Ok(())
    }

    /// The read contexts whose read index node `id` has applied (taken
    /// off its list), with the applied index they are served at.
    fn take_ready_reads(&mut self, id: NodeId) -> (u64, Vec<u64>) {
        let node = self.nodes.get_mut(&id).unwrap();
        let applied = node.applied;
        let mut ready = Vec::new();
        node.read_points.retain(|&(index, ctx)| {
            if index <= applied {
                ready.push(ctx);
                false
            } else {
                true
            }
        });
        (applied, ready)
    }

    fn serve_reads(&mut self, id: NodeId) {
        let (_, ready) = self.take_ready_reads(id);
        for ctx in ready {
            let node = self.nodes.get_mut(&id).unwrap();
            if let Some((client, key)) = node.pending_reads.remove(&ctx) {
                let v = node.kv.get(key);
                self.reply(client, ctx, Reply::Read(v));
            }
        }
    }
}

/// The cluster state in a snapshot (none yet, empty data: `fresh`).
fn restore_cluster(data: &[u8], fresh: ClusterState) -> Option<ClusterState> {
    if data.is_empty() {
        return Some(fresh);
    }
    ClusterState::restore(data).ok()
}
