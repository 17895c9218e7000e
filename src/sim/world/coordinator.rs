//! The coordinator workload: the replicas are [`crate::replica::Replica`]s,
//! the state machine the process runs (cluster state, the active
//! coordinator, the client protocol), driven here as `crate::node` drives
//! it: its messages travel encoded over the simulated network, its persist
//! jobs go to the simulated disk and are reported durable when it
//! completes them, its pushes land in the masters' regions and are
//! reported back. Masters enlist and heartbeat through the client
//! protocol, and take configuration pushes; clients issue operations and
//! lookups through it too.
//!
//! Faults beyond the Raft workload's: the coordinator leader crashes at the
//! interesting points of an operation (right after proposing its commit
//! record, right after the commit point, between two pushes, just before
//! the completion record), masters crash (a restarted master is a new
//! process and enlists again) and lose links to some coordinators, a
//! deposed leader cut off from its peers keeps pushing to the masters it
//! still reaches, and invalid records (names over the limit or with
//! control characters, tablet counts out of range, bytes that are not a
//! record at all) are proposed straight into the leader's log, as a bug or
//! a forged proposal would: every replica must apply each as a rejection
//! that changes nothing, and keep running.
//!
//! Checked on every applied entry: an injected record is applied as
//! [`Outcome::Malformed`] or [`Rejection::Invalid`], and nothing else is
//! (a leader must never propose what the edge validates away).
//!
//! Clients' operations are exactly-once: each carries the client's id and
//! a sequence number ([`RpcId`]); a client whose attempt timed out sends
//! the same operation, same id, to another replica (to the leader it is
//! told of), until it is answered or the clients stop. Some seeds keep a
//! tiny exactly-once table (1 to 3 clients), so clients are evicted and
//! answered "unknown". Checked ("exactly once"): each (client, seq) takes
//! effect (applies as committed or rejected) at one log index at most;
//! a second commit record of it applies as a duplicate naming that index;
//! and every answer a client gets for it names that index.
//!
//! Checked continuously: the cluster state's own invariants after every
//! applied record on every replica; a master never applies a configuration
//! from a term older than one it has seen, nor an older version after a
//! newer one. Checked at the end, after healing and a quiet period:
//! every committed operation completed, every live master holds exactly
//! the configuration the leader's state gives it, every tablet is owned by
//! a live master, and clients' operations and lookups are linearizable in
//! log order.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use rand::Rng;

use super::*;
use crate::cluster::{services, Outcome, Record, Rejection, RpcId, ServerId};
use crate::coordinator::{CoordinatorConfig, Request};
use crate::master::{MasterAction, MasterAgent, MasterConfig, RegionOutcome};
use crate::protocol::{self, ClientOp, ClientReply, ClientRequest, OpResult};
use crate::replica::{AppliedNote, Output, ReplicaConfig};
use ramcoord_net::tls::{ADMIN_BIT, CLIENT_BIT};
use ramcoord_net::PeerId;

/// The transport id the simulated administrator speaks under (an admin
/// client's id; its answers go nowhere).
pub(super) const ADMIN_PEER: PeerId = CLIENT_BIT | ADMIN_BIT | 0xad_0000;

/// The transport id of client `c` (an admin: clients change the cluster).
fn client_peer(c: usize) -> PeerId {
    CLIENT_BIT | ADMIN_BIT | c as u64
}

/// A master's request ids say what they ask: enlistment (even) or a
/// heartbeat (odd), so that a `NotLeader` answer finds its question.
fn master_request_id(seq: u64, heartbeat: bool) -> u64 {
    seq << 1 | u64::from(heartbeat)
}

/// A master's tick (it heartbeats every tick, asks to enlist every two).
const MASTER_TICK_US: u64 = 10_000;

/// Master processes' nonces start past this (clients' ids are small).
const MASTER_NONCE_BASE: u64 = 1 << 40;

/// How long a leaving master waits to be told it is gone before it stops
/// anyway (the process's `DRAIN_LIMIT`, scaled to the simulated timing).
const LEAVE_LIMIT_US: u64 = 500_000;

/// Table names the clients pick from (few, so operations collide).
const TABLE_NAMES: [&str; 4] = ["t0", "t1", "t2", "t3"];
/// The coordinator's timing, in replica ticks (1 ms, up to 30% fast with
/// skew). A master is declared crashed after about ten missed heartbeats:
/// a heartbeat can go to a replica that does not know the leader, and a
/// live master declared crashed is a correct but needless recovery.
///
/// Heartbeats: every master tick (10 ms) up to 100 server slots; past
/// that the leader slows them to keep under 10 a tick (10,000 a second;
/// the process's default is 5,000), and the timeout grows to four
/// intervals.
const COORD_CONFIG: CoordinatorConfig = CoordinatorConfig {
    push_retry_ticks: 10,
    propose_retry_ticks: 30,
    master_timeout_ticks: 150,
    heartbeat_interval_ticks: 10,
    heartbeats_per_tick_max: 10,
    region_parts: true,
};

/// Knobs of the coordinator workload, drawn from the seed.
#[derive(Clone, Debug, Default)]
pub(super) struct CoordParams {
    masters: usize,
    master_crash_every_us: Option<(u64, u64)>,
    master_down_us: (u64, u64),
    master_partitions: bool,
    crash_after_propose: f64,
    crash_after_commit: f64,
    crash_between_pushes: f64,
    crash_before_complete: f64,
    /// Chance that a push is held up in the network for 5–60 ms.
    push_spike: f64,
    /// Propose an invalid record into the leader's log this often.
    invalid_every_us: Option<(u64, u64)>,
    /// Masters fence as over RDMA: one writer at a time, granted to the
    /// leader of the newest term a heartbeat reply came from; pushes from
    /// anyone else are refused (the queue pair revoked), whatever their
    /// term. Otherwise they fence by the term in the region (as over TCP).
    grant_fencing: bool,
    /// Clients the replicas' exactly-once tables keep (tiny in some seeds,
    /// so that clients are evicted).
    session_limit: usize,
    /// Pushes are parts of configurations (as over TCP) in most seeds,
    /// whole configurations (as over RDMA) in the others.
    region_parts: bool,
}

impl CoordParams {
    fn draw(level: FaultLevel, rng: &mut ChaCha8Rng) -> CoordParams {
        let mut p = CoordParams {
            masters: rng.random_range(3..=6),
            master_down_us: (5_000, 200_000),
            ..CoordParams::default()
        };
        if level != FaultLevel::None {
            let heavy = level == FaultLevel::Heavy;
            if rng.random_bool(0.7) {
                p.master_crash_every_us = Some(if heavy {
                    (60_000, 300_000)
                } else {
                    (150_000, 700_000)
                });
            }
            p.master_partitions = rng.random_bool(0.6);
            p.push_spike = rng.random_range(0.0..if heavy { 0.2 } else { 0.1 });
            if rng.random_bool(0.8) {
                let scale = if heavy { 2.0 } else { 1.0 };
                p.crash_after_propose = rng.random_range(0.0..0.05) * scale;
                p.crash_after_commit = rng.random_range(0.0..0.15) * scale;
                p.crash_between_pushes = rng.random_range(0.0..0.05) * scale;
                p.crash_before_complete = rng.random_range(0.0..0.15) * scale;
            }
        }
        p.grant_fencing = rng.random_bool(0.5);
        // Drawn last, so the draws above (and the seeds that replay them)
        // are what they were before this fault existed.
        if level != FaultLevel::None && rng.random_bool(0.5) {
            p.invalid_every_us = Some((20_000, 200_000));
        }
        p.session_limit = if rng.random_bool(0.3) {
            rng.random_range(1..=3)
        } else {
            crate::cluster::limits::SESSIONS_MAX
        };
        // Drawn last, as above.
        p.region_parts = rng.random_bool(0.75);
        p
    }
}

/// One master slot: a process at address `m<slot>`, restarted as a new
/// process (new nonce, new server id) after a crash.
pub(super) struct SimMaster {
    inc: u64,
    up: bool,
    agent: MasterAgent,
    /// Newest term among the valid regions written into it.
    term_seen: u64,
    /// (term, version) of the last region it applied.
    last_applied: Option<(u64, u64)>,
    /// With grant fencing: the replica allowed to write, and the term it
    /// led when granted.
    granted: Option<(u64, NodeId)>,
    /// Its enlistment as an exactly-once operation: sent again, same id,
    /// until answered; the next attempt after an answer is a new one.
    enlist_rpc: Option<RpcId>,
    /// Its last enlistment operation's sequence number.
    enlist_seq: u64,
    /// The highest commit index an answer came with.
    observed: u64,
    /// Requests sent (ids, see `master_request_id`).
    requests: u64,
    /// Being stopped gracefully (a drain): it gave up its lease and asks
    /// the coordinator to move its tablets, until told it is gone.
    leaving: bool,
    /// Heartbeats sent again at once this tick, to the leader a follower
    /// named (as the process's client follows a redirect within one
    /// attempt); at most two a tick.
    redirects: u8,
    /// Ticks given to the agent, when the last was, and the tick number
    /// of the wake scheduled (an earlier wake supersedes a later one).
    ticks: u64,
    last_tick_us: u64,
    wake_at: u64,
}

/// A client's request to a replica.
#[derive(Clone, Debug)]
pub(super) enum CReq {
    Op(RpcId, Request),
    Lookup(String),
}

/// A replica's answer.
#[derive(Clone, Debug)]
pub(super) enum CReply {
    /// The commit record applied at `index` (its precondition passed or
    /// not: either way it is ordered there). For a retry of an operation
    /// applied already: the original index and outcome.
    Applied { index: u64, outcome: String },
    /// Served from the state at `index`.
    Lookup { index: u64, found: bool },
    /// This attempt had no effect (not the leader, or a leader not yet
    /// established refused it; an earlier attempt may still apply).
    Failed(Option<NodeId>),
    /// The established leader refused it before proposing: the operation
    /// has not applied and will not (its state is definitive).
    Refused,
    /// The operation's outcome is unknown: nothing was proposed.
    Unknown(String),
}

/// Masters up to which every applied entry's state is checked in full
/// (`state_check_every`).
const STATE_CHECK_MASTERS: u64 = 1_000;

#[derive(Debug)]
pub(super) enum CoordEv {
    ClientNext(usize),
    Request {
        node: NodeId,
        client: usize,
        op_id: u64,
        req: CReq,
    },
    Response {
        client: usize,
        op_id: u64,
        reply: CReply,
        /// The answering replica's commit index.
        seen: u64,
    },
    Timeout {
        client: usize,
        op_id: u64,
        attempt: u32,
    },
    /// Client `client` sends its operation `op_id` again, to `node`.
    Resend {
        client: usize,
        op_id: u64,
        node: NodeId,
    },
    /// A coordinator's write lands in the region of whatever process is at
    /// the slot's address now.
    PushArrive {
        slot: usize,
        from: NodeId,
        region: Bytes,
        /// The replica's id for the write, and the peer it was sent to.
        write: u64,
        peer: PeerId,
        /// The writer's incarnation (its write ids start over after a
        /// restart: an old write's ack must not credit a new one).
        inc: u64,
    },
    /// A replica's snapshot, frozen when it asked, is encoded and written
    /// (the process does this on a worker thread, so it completes while
    /// the replica goes on applying).
    SnapshotWritten {
        node: NodeId,
        inc: u64,
        job: crate::replica::SnapshotJob,
    },
    /// The writer learns its write landed.
    PushAck {
        node: NodeId,
        write: u64,
        peer: PeerId,
        inc: u64,
    },
    /// Master `slot`'s agent is due at its tick number `at` (idle ticks
    /// in between are not events: a master paced to a heartbeat a second
    /// would otherwise be 100 events a second, most of a 10,000-master
    /// run).
    MasterTick {
        slot: usize,
        inc: u64,
        at: u64,
    },
    HeartbeatArrive {
        node: NodeId,
        slot: usize,
        inc: u64,
        from: ServerId,
    },
    HeartbeatReply {
        slot: usize,
        inc: u64,
        dead: bool,
        hint: Option<NodeId>,
        /// The answering replica's term, if it is the active coordinator.
        leader_term: Option<u64>,
        /// The interval the leader asks for, in microseconds (0: none).
        interval_us: u64,
    },
    EnlistArrive {
        node: NodeId,
        slot: usize,
        inc: u64,
        nonce: u64,
    },
    EnlistReply {
        slot: usize,
        inc: u64,
        id: Option<ServerId>,
        hint: Option<NodeId>,
        /// The operation is over (answered): the next attempt is a new one.
        answered: bool,
        /// The answering replica's commit index.
        seen: u64,
    },
    MasterCrash,
    /// A leaving master asks replica `node` to move its tablets.
    LeaveArrive {
        node: NodeId,
        slot: usize,
        inc: u64,
        from: ServerId,
    },
    /// A leaving master's drain limit: still up, it stops anyway.
    LeaveTimeout {
        slot: usize,
        inc: u64,
    },
    MasterRestart(usize),
    MasterNemesis,
    /// Propose an invalid record at whichever replica leads.
    InjectInvalid,
}

struct CHist {
    call: u64,
    ret: Option<u64>,
    index: Option<u64>,
    what: String,
}

/// A client's operation or lookup in flight.
struct CInFlight {
    op_id: u64,
    /// Its history entry.
    idx: usize,
    req: CReq,
    /// Attempts so far (the first is 1).
    attempt: u32,
    /// The replica the last attempt went to.
    node: NodeId,
    /// An attempt went unanswered: it may have been proposed, so a
    /// `Failed` answer to a later one does not settle the operation.
    maybe_proposed: bool,
}

#[derive(Default)]
struct CClient {
    in_flight: Option<CInFlight>,
    leader_hint: Option<NodeId>,
    /// Its exactly-once id, and its last operation's sequence number.
    id: u64,
    seq: u64,
    /// The highest commit index an answer came with.
    observed: u64,
}

/// The coordinator workload's part of the world.
#[derive(Default)]
pub(super) struct CoordWorld {
    p: CoordParams,
    masters: Vec<SimMaster>,
    /// Cut links between replicas and master slots (both directions).
    blocked: HashSet<(NodeId, usize)>,
    clients: Vec<CClient>,
    history: Vec<CHist>,
    clock: u64,
    next_op: u64,
    next_nonce: u64,
    clients_stop_at: u64,
    /// The term each operation's commit record was written in.
    commit_terms: HashMap<u64, u64>,
    completed: HashSet<u64>,
    established_after_heal: bool,
    /// When the last push on each (writer, incarnation, master) connection
    /// lands: later ones land after it.
    push_fifo: HashMap<(NodeId, u64, usize), u64>,
    /// Pushes each replica incarnation has in flight to each master, in
    /// each term: write id -> when sent (µs). Landed ones leave when the
    /// replica hears so; lost ones stay (they age).
    push_lanes: HashMap<(NodeId, u64, PeerId, u64), BTreeMap<u64, u64>>,
    /// The payloads of the invalid records injected.
    injected: HashSet<Bytes>,
    /// Where each client operation took effect, and what it did.
    /// By (client, seq).
    rpc_effect: HashMap<(u64, u64), (u64, String)>,
    /// Log indexes counted as duplicate records.
    duplicates_seen: HashSet<u64>,
    /// Recent clients' commit records (to propose again as replays).
    replayable: VecDeque<Bytes>,
    /// Servers whose crash was committed (applied by some replica).
    declared_crashed: HashSet<ServerId>,
    /// Each configuration version's change as the first replica to hold
    /// it described it (index, term, summary): `ctl watch` must get the
    /// same from every replica.
    changes: HashMap<u64, (u64, u64, String)>,
}

impl CoordWorld {
    /// How replica `id` runs: the process's replica with the simulator's
    /// timing (1 ms ticks) and this seed's planted bugs.
    pub(super) fn replica_config(
        &self,
        id: NodeId,
        snapshot_entries: u64,
        bugs: crate::sim::PlantedBugs,
    ) -> ReplicaConfig {
        let mut cfg = ReplicaConfig::new(id);
        cfg.tick = std::time::Duration::from_micros(TICK_US);
        cfg.coordinator = CoordinatorConfig {
            region_parts: self.p.region_parts,
            ..COORD_CONFIG
        };
        cfg.snapshot_entries = snapshot_entries;
        cfg.coordinator_bugs = bugs.coordinator;
        cfg.bugs = bugs.replica;
        cfg
    }
}

fn master_addr(slot: usize) -> String {
    format!("m{slot}")
}

impl World {
    pub(super) fn is_coordinator(&self) -> bool {
        self.opts.workload == Workload::Coordinator
    }

    /// An empty cluster state, with this seed's exactly-once table size.
    pub(super) fn fresh_cluster(&self) -> ClusterState {
        if self.is_coordinator() {
            ClusterState::with_session_limit(self.cw.p.session_limit)
        } else {
            ClusterState::default()
        }
    }

    /// A replica's commit index (0 if it is down).
    fn commit_of(&self, id: NodeId) -> u64 {
        self.nodes
            .get(&id)
            .and_then(|n| n.raft())
            .map_or(0, |r| r.log().committed)
    }

    fn new_master_agent(&mut self, slot: usize) -> MasterAgent {
        self.cw.next_nonce += 1;
        MasterAgent::new(
            MasterConfig::default(),
            master_addr(slot),
            services::MASTER,
            // A nonce is the enlistment's exactly-once client id: kept
            // apart from the clients' ids (1000 and up), whatever the
            // number of master processes.
            MASTER_NONCE_BASE + self.cw.next_nonce,
            self.opts.bugs.master,
        )
    }

    fn cev(&mut self, delay_us: u64, ev: CoordEv) {
        self.at(delay_us, Ev::Coord(ev));
    }

    fn net_delay(&mut self) -> u64 {
        self.rng.random_range(self.p.delay_us.0..=self.p.delay_us.1)
    }

    fn lost(&mut self) -> bool {
        !self.healed && self.rng.random_bool(self.p.loss)
    }

    /// Every how many indexes a replica's state is checked in full (see
    /// `Replica::observe_applies`): every one up to 1,000 masters, then
    /// one in masters ÷ 1,000, so that a full check (a walk of every
    /// server and tablet) costs about the same per entry at any size. A
    /// state broken for good is still found, within that many entries
    /// (and by the final checks); a break that a later entry mends within
    /// the stride is not. Entries at the same index are checked on every
    /// replica.
    pub(super) fn state_check_every(&self) -> u64 {
        (self.cw.p.masters as u64)
            .div_ceil(STATE_CHECK_MASTERS)
            .max(1)
    }

    /// Starts the workload: masters and clients.
    pub(super) fn coordinator_start(&mut self) {
        let mut p = CoordParams::draw(self.opts.faults, &mut self.rng);
        if let Some(m) = self.opts.masters {
            p.masters = m.max(1);
            // Every master the faults took down enlists again after the
            // heal, one commit each: the quiet period before the liveness
            // checks grows with them (10 ms a master past the default six).
            self.p.liveness_us += (p.masters as u64).saturating_sub(6) * 10_000;
            // A master enlists through the exactly-once table like a
            // client. With a table of 1 to 3 (drawn for 30 % of seeds, to
            // stress eviction) and hundreds of masters, every answer is
            // evicted before it is read and enlistment never ends: a
            // deployment's table must hold its masters and clients, so
            // the scaled workload keeps at least that.
            if p.masters > 6 {
                p.session_limit = crate::cluster::limits::SESSIONS_MAX.max(2 * p.masters);
            }
        }
        self.cw.p = p;
        self.cw.clients_stop_at = self.heal_at + self.p.liveness_us / 2;
        for slot in 0..self.cw.p.masters {
            let agent = self.new_master_agent(slot);
            self.cw.masters.push(SimMaster {
                inc: 0,
                up: true,
                agent,
                term_seen: 0,
                last_applied: None,
                granted: None,
                enlist_rpc: None,
                enlist_seq: 0,
                observed: 0,
                requests: 0,
                leaving: false,
                redirects: 0,
                ticks: 0,
                last_tick_us: 0,
                wake_at: 1,
            });
            let d = self.rng.random_range(0..20_000);
            self.cev(
                d,
                CoordEv::MasterTick {
                    slot,
                    inc: 0,
                    at: 1,
                },
            );
        }
        for c in 0..CLIENTS {
            self.cw.clients.push(CClient {
                id: 1000 + c as u64,
                ..CClient::default()
            });
            let d = self.rng.random_range(20_000..60_000);
            self.cev(d, CoordEv::ClientNext(c));
        }
        if self.opts.faults != FaultLevel::None {
            if let Some((lo, hi)) = self.cw.p.master_crash_every_us {
                let d = self.rng.random_range(lo..hi);
                self.cev(d, CoordEv::MasterCrash);
            }
            if self.cw.p.master_partitions {
                let d = self.rng.random_range(50_000..300_000);
                self.cev(d, CoordEv::MasterNemesis);
            }
            if let Some((lo, hi)) = self.cw.p.invalid_every_us {
                let d = self.rng.random_range(lo..hi);
                self.cev(d, CoordEv::InjectInvalid);
            }
        }
    }

    pub(super) fn coordinator_event(&mut self, ev: CoordEv) -> Result<(), Violation> {
        match ev {
            CoordEv::ClientNext(c) => self.coord_client_next(c),
            CoordEv::Request {
                node,
                client,
                op_id,
                req,
            } => return self.coord_request(node, client, op_id, req),
            CoordEv::Response {
                client,
                op_id,
                reply,
                seen,
            } => return self.coord_response(client, op_id, reply, seen),
            CoordEv::Timeout {
                client,
                op_id,
                attempt,
            } => self.coord_timeout(client, op_id, attempt),
            CoordEv::Resend {
                client,
                op_id,
                node,
            } => {
                if self.cw.clients[client]
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.op_id == op_id)
                {
                    self.send_attempt(client, node);
                }
            }
            CoordEv::PushArrive {
                slot,
                from,
                region,
                write,
                peer,
                inc,
            } => return self.push_arrive(slot, from, region, (write, peer, inc)),
            CoordEv::SnapshotWritten { node, inc, job } => {
                let now = self.instant();
                let n = self.nodes.get_mut(&node).unwrap();
                if n.incarnation != inc || !n.is_up() {
                    return Ok(()); // the worker died with the process
                }
                let index = job.meta.index;
                if let Some(r) = n.replica.as_mut() {
                    let snapshot = job.encode();
                    r.input(now, crate::replica::Input::SnapshotWritten { snapshot });
                    self.stats.snapshots_written += 1;
                    self.trace(|| format!("n{node} snapshot at {index} written"));
                    return self.after_input(node);
                }
            }
            CoordEv::PushAck {
                node,
                write,
                peer,
                inc,
            } => {
                self.trace(|| format!("n{node} learns write {write} landed"));
                let now = self.instant();
                let n = self.nodes.get_mut(&node).unwrap();
                if n.incarnation != inc {
                    return Ok(()); // its connection died with the process
                }
                for ((n_id, n_inc, n_peer, _), lane) in self.cw.push_lanes.iter_mut() {
                    if (*n_id, *n_inc, *n_peer) == (node, inc, peer) {
                        lane.remove(&write);
                    }
                }
                if let Some(r) = n.replica.as_mut() {
                    r.input(
                        now,
                        crate::replica::Input::PushDone {
                            write,
                            to: peer,
                            status: ramcoord_net::WriteStatus::Landed,
                        },
                    );
                    return self.after_input(node);
                }
            }
            CoordEv::MasterTick { slot, inc, at } => self.master_tick(slot, inc, at),
            CoordEv::HeartbeatArrive {
                node,
                slot,
                inc,
                from,
            } => return self.heartbeat_arrive(node, slot, inc, from),
            CoordEv::HeartbeatReply {
                slot,
                inc,
                dead,
                hint,
                leader_term,
                interval_us,
            } => {
                let grant_fencing = self.cw.p.grant_fencing;
                let m = &mut self.cw.masters[slot];
                if m.inc != inc || !m.up {
                    return Ok(());
                }
                if let (true, Some(term), Some(leader)) = (grant_fencing, leader_term, hint) {
                    if m.granted.is_none_or(|(t, _)| term > t) {
                        m.granted = Some((term, leader));
                        self.stats.write_grants += 1;
                        self.trace(|| {
                            format!("m{slot} grants write access to n{leader} (term {term})")
                        });
                    }
                }
                // A follower named the leader: ask it now rather than at
                // the next tick (the process's client does the same).
                let m = &mut self.cw.masters[slot];
                if let (None, Some(leader), false, Some(from)) =
                    (leader_term, hint, dead, m.agent.id())
                {
                    if m.redirects < 2 && !m.leaving {
                        m.redirects += 1;
                        self.over_link(
                            leader,
                            slot,
                            CoordEv::HeartbeatArrive {
                                node: leader,
                                slot,
                                inc,
                                from,
                            },
                        );
                    }
                }
                let m = &mut self.cw.masters[slot];
                if interval_us > 0 {
                    m.agent
                        .set_heartbeat_ticks(interval_us.div_ceil(MASTER_TICK_US));
                }
                if let Some(MasterAction::Shutdown) = m.agent.on_heartbeat_reply(dead, hint) {
                    // Declared crashed: this process stops serving and a
                    // new one (a new server) takes the slot.
                    let id = m.agent.id();
                    if m.leaving {
                        self.stats.master_drains_done += 1;
                    } else {
                        self.stats.masters_declared_crashed_alive += 1;
                    }
                    self.trace(|| {
                        format!(
                            "m{slot} learns it was declared crashed ({})",
                            id.map_or("never enlisted".to_string(), |i| i.to_string())
                        )
                    });
                    self.master_down(slot);
                    self.cev(0, CoordEv::MasterRestart(slot));
                }
            }
            CoordEv::EnlistArrive {
                node,
                slot,
                inc,
                nonce,
            } => return self.enlist_arrive(node, slot, inc, nonce),
            CoordEv::EnlistReply {
                slot,
                inc,
                id,
                hint,
                answered,
                seen,
            } => {
                let m = &mut self.cw.masters[slot];
                if m.inc != inc || !m.up {
                    return Ok(());
                }
                m.observed = m.observed.max(seen);
                if answered {
                    m.enlist_rpc = None;
                }
                if m.agent.id().is_some() {
                    return Ok(());
                }
                m.agent.on_enlist_reply(id, hint);
                if let Some(id) = id {
                    // Its first heartbeat goes at its next tick.
                    let next = m.ticks + 1;
                    if next < m.wake_at {
                        m.wake_at = next;
                        let d = (m.last_tick_us + MASTER_TICK_US).saturating_sub(self.now);
                        self.cev(
                            d,
                            CoordEv::MasterTick {
                                slot,
                                inc,
                                at: next,
                            },
                        );
                    }
                    self.trace(|| format!("m{slot} enlisted as {id}"));
                }
            }
            CoordEv::MasterCrash => self.master_crash(),
            CoordEv::LeaveArrive {
                node,
                slot,
                inc,
                from,
            } => {
                let m = &mut self.cw.masters[slot];
                if m.inc != inc || !m.up {
                    return Ok(());
                }
                m.requests += 1;
                let id = master_request_id(m.requests, true);
                let nonce = m.agent.nonce();
                return self.master_request(
                    node,
                    slot,
                    nonce,
                    id,
                    &ClientRequest::Leave { server: from },
                );
            }
            CoordEv::LeaveTimeout { slot, inc } => {
                let m = &self.cw.masters[slot];
                if m.inc == inc && m.up && m.leaving {
                    self.trace(|| format!("m{slot} drain not finished in time: stops anyway"));
                    self.master_down(slot);
                    let (lo, hi) = self.cw.p.master_down_us;
                    let d = self.rng.random_range(lo..hi);
                    self.cev(d, CoordEv::MasterRestart(slot));
                }
            }
            CoordEv::MasterRestart(slot) => self.master_restart(slot),
            CoordEv::MasterNemesis => self.master_nemesis(),
            CoordEv::InjectInvalid => return self.inject_invalid(),
        }
        Ok(())
    }

    // ----- masters --------------------------------------------------------

    /// Proposes an invalid record at the leader (if any), bypassing the
    /// edge's validation, and schedules the next one until the heal.
    fn inject_invalid(&mut self) -> Result<(), Violation> {
        if self.healed {
            return Ok(());
        }
        if let Some((lo, hi)) = self.cw.p.invalid_every_us {
            let d = self.rng.random_range(lo..hi);
            self.cev(d, CoordEv::InjectInvalid);
        }
        let leader = self.nodes.iter().find_map(|(&id, n)| {
            n.raft()
                .is_some_and(|r| r.role() == Role::Leader)
                .then_some(id)
        });
        let Some(id) = leader else {
            return Ok(());
        };
        // Half the time, a client's commit record that applied already,
        // proposed again as a replay (a bug, or an old leader's copy
        // surfacing): it must apply as a duplicate naming the first, or as
        // unknown, and change nothing. (The replica proposes a retry only
        // when established, with every earlier copy applied, so the
        // duplicate path is otherwise rare.)
        let replay = !self.cw.replayable.is_empty() && self.rng.random_bool(0.5);
        let bytes = if replay {
            let i = self.rng.random_range(0..self.cw.replayable.len());
            self.cw.replayable[i].clone()
        } else {
            let bytes = invalid_record(&mut self.rng);
            self.cw.injected.insert(bytes.clone());
            bytes
        };
        let now = self.instant();
        let n = self.nodes.get_mut(&id).unwrap();
        let r = n
            .replica
            .as_mut()
            .map(|r| r.propose_unchecked(now, bytes.clone()));
        if matches!(r, Some(Ok(_))) && !replay {
            self.stats.invalid_injected += 1;
        }
        self.trace(|| {
            format!(
                "n{id} is handed {} of {} bytes: {r:?}",
                if replay {
                    "a client's commit record again"
                } else {
                    "an invalid record"
                },
                bytes.len()
            )
        });
        self.after_input(id)
    }

    fn master_down(&mut self, slot: usize) {
        let m = &mut self.cw.masters[slot];
        m.up = false;
        m.inc += 1;
    }

    fn master_restart(&mut self, slot: usize) {
        if self.cw.masters[slot].up {
            return;
        }
        let agent = self.new_master_agent(slot);
        let m = &mut self.cw.masters[slot];
        m.up = true;
        m.agent = agent;
        m.term_seen = 0;
        m.last_applied = None;
        m.granted = None;
        m.enlist_rpc = None;
        m.enlist_seq = 0;
        m.observed = 0;
        m.leaving = false;
        m.ticks = 0;
        m.wake_at = 1;
        let inc = m.inc;
        self.trace(|| format!("m{slot} RESTART as a new process"));
        self.cev(0, CoordEv::MasterTick { slot, inc, at: 1 });
    }

    fn master_crash(&mut self) {
        if self.healed {
            return;
        }
        let up: Vec<usize> = (0..self.cw.masters.len())
            .filter(|&s| self.cw.masters[s].up)
            .collect();
        // Keep at least one master: a cluster with none cannot recover
        // tablets, which is a statement about capacity, not correctness.
        if up.len() > 1 && self.rng.random_bool(0.3) {
            // A graceful stop (SIGTERM): the master stops serving, asks to
            // leave, and goes when told it is gone; if that does not come
            // in time, it stops anyway (the process's drain limit).
            let slot = up[self.rng.random_range(0..up.len())];
            let m = &mut self.cw.masters[slot];
            if !m.leaving && m.agent.id().is_some() {
                m.agent.revoke_lease();
                m.leaving = true;
                let inc = m.inc;
                self.stats.master_leaves += 1;
                self.trace(|| format!("m{slot} LEAVE (drain)"));
                self.cev(LEAVE_LIMIT_US, CoordEv::LeaveTimeout { slot, inc });
            }
        } else if up.len() > 1 {
            let slot = up[self.rng.random_range(0..up.len())];
            self.master_down(slot);
            self.stats.master_crashes += 1;
            self.trace(|| format!("m{slot} CRASH"));
            let (lo, hi) = self.cw.p.master_down_us;
            let d = self.rng.random_range(lo..hi);
            self.cev(d, CoordEv::MasterRestart(slot));
        }
        if let Some((lo, hi)) = self.cw.p.master_crash_every_us {
            let d = self.rng.random_range(lo..hi);
            self.cev(d, CoordEv::MasterCrash);
        }
    }

    fn master_nemesis(&mut self) {
        if self.healed {
            return;
        }
        self.cw.blocked.clear();
        let ids = self.node_ids();
        let slots = self.cw.masters.len();
        let what = self.rng.random_range(0..100);
        let desc = if what < 40 {
            "heal".to_string()
        } else if what < 70 {
            // One master loses every coordinator: it will be declared
            // crashed while alive, and must learn it.
            let slot = self.rng.random_range(0..slots);
            for &n in &ids {
                self.cw.blocked.insert((n, slot));
            }
            format!("isolate m{slot}")
        } else {
            // The leader (current or soon deposed) loses some masters.
            let victim = self
                .some_leader()
                .unwrap_or(ids[self.rng.random_range(0..ids.len())]);
            for slot in 0..slots {
                if self.rng.random_bool(0.5) {
                    self.cw.blocked.insert((victim, slot));
                }
            }
            format!("n{victim} loses {} masters", self.cw.blocked.len())
        };
        self.trace(|| format!("master nemesis {desc}"));
        let d = self.rng.random_range(50_000..400_000);
        self.cev(d, CoordEv::MasterNemesis);
    }

    /// Heals the coordinator workload's faults: links, dead masters.
    pub(super) fn coordinator_heal(&mut self) {
        self.cw.blocked.clear();
        for slot in 0..self.cw.masters.len() {
            if !self.cw.masters[slot].up {
                self.cev(0, CoordEv::MasterRestart(slot));
            }
        }
    }

    fn pick_node(&mut self, hint: Option<NodeId>) -> NodeId {
        let ids = self.node_ids();
        match hint {
            Some(l) if self.rng.random_bool(0.9) => l,
            _ => ids[self.rng.random_range(0..ids.len())],
        }
    }

    /// A master's tick: it asks to enlist, or heartbeats.
    fn master_tick(&mut self, slot: usize, inc: u64, at: u64) {
        let now_us = self.now;
        let m = &mut self.cw.masters[slot];
        if m.inc != inc || !m.up || at != m.wake_at {
            return; // an older process's, or superseded by an earlier wake
        }
        // The idle ticks since the last wake, then this one.
        let mut actions = Vec::new();
        while m.ticks < at {
            actions = m.agent.tick();
            m.ticks += 1;
        }
        m.last_tick_us = now_us;
        m.redirects = 0;
        let idle = m.agent.ticks_until_due();
        m.wake_at = m.ticks + idle;
        let at = m.wake_at;
        self.cev(idle * MASTER_TICK_US, CoordEv::MasterTick { slot, inc, at });
        for a in actions {
            let (to, ev) = match a {
                MasterAction::Enlist { to, nonce, .. } => {
                    let node = self.pick_node(to);
                    (
                        node,
                        CoordEv::EnlistArrive {
                            node,
                            slot,
                            inc,
                            nonce,
                        },
                    )
                }
                MasterAction::Heartbeat { to, from } if self.cw.masters[slot].leaving => {
                    // Asks to leave, and heartbeats to learn it is gone.
                    let node = self.pick_node(to);
                    self.over_link(
                        node,
                        slot,
                        CoordEv::LeaveArrive {
                            node,
                            slot,
                            inc,
                            from,
                        },
                    );
                    (
                        node,
                        CoordEv::HeartbeatArrive {
                            node,
                            slot,
                            inc,
                            from,
                        },
                    )
                }
                MasterAction::Heartbeat { to, from } => {
                    let node = self.pick_node(to);
                    (
                        node,
                        CoordEv::HeartbeatArrive {
                            node,
                            slot,
                            inc,
                            from,
                        },
                    )
                }
                MasterAction::Shutdown => continue,
            };
            self.over_link(to, slot, ev);
        }
    }

    /// Delivers `ev` over the link between replica `node` and master `slot`
    /// (either way), unless the link is cut or the message is lost.
    fn over_link(&mut self, node: NodeId, slot: usize, ev: CoordEv) {
        if self.cw.blocked.contains(&(node, slot)) || self.lost() {
            return;
        }
        let d = self.net_delay();
        self.cev(d, ev);
    }

    /// A master's request arrives at replica `node`, from the master's
    /// client id, as it would off the wire.
    fn master_request(
        &mut self,
        node: NodeId,
        slot: usize,
        nonce: u64,
        id: u64,
        req: &ClientRequest,
    ) -> Result<(), Violation> {
        let now = self.instant();
        self.trace(|| format!("n{node} <- m{slot}: {req:?}"));
        let Some(r) = self.nodes.get_mut(&node).and_then(|n| n.replica.as_mut()) else {
            return Ok(());
        };
        let payload = protocol::encode(protocol::tag::CLIENT, id, req);
        let from = protocol::master_client_id(nonce);
        r.input(now, crate::replica::Input::Message { from, payload });
        self.after_input(node)
    }

    fn enlist_arrive(
        &mut self,
        node: NodeId,
        slot: usize,
        inc: u64,
        nonce: u64,
    ) -> Result<(), Violation> {
        let m = &mut self.cw.masters[slot];
        if m.inc != inc || !m.up {
            return Ok(());
        }
        let rpc = match m.enlist_rpc {
            Some(rpc) => rpc,
            None => {
                m.enlist_seq += 1;
                let rpc = RpcId {
                    // Its nonce is its exactly-once client id: a new
                    // process, a new client.
                    client: nonce,
                    seq: m.enlist_seq,
                    after: m.observed,
                };
                m.enlist_rpc = Some(rpc);
                rpc
            }
        };
        m.requests += 1;
        let id = master_request_id(m.requests, false);
        let req = ClientRequest::Operate(ClientOp {
            rpc,
            op: Request::Enlist {
                addr: master_addr(slot),
                services: services::MASTER,
                nonce,
            },
        });
        self.master_request(node, slot, nonce, id, &req)
    }

    fn heartbeat_arrive(
        &mut self,
        node: NodeId,
        slot: usize,
        inc: u64,
        from: ServerId,
    ) -> Result<(), Violation> {
        let m = &mut self.cw.masters[slot];
        if m.inc != inc || !m.up {
            return Ok(());
        }
        m.requests += 1;
        let id = master_request_id(m.requests, true);
        let nonce = m.agent.nonce();
        self.master_request(node, slot, nonce, id, &ClientRequest::Heartbeat { from })
    }

    /// A replica's answer to a master's request, sent back over their link.
    fn master_reply(&mut self, node: NodeId, slot: usize, id: u64, reply: ClientReply) {
        let inc = self.cw.masters[slot].inc;
        let seen = self.commit_of(node);
        let heartbeat = id & 1 == 1;
        let ev = match (heartbeat, reply) {
            (
                true,
                ClientReply::HeartbeatAck {
                    gone,
                    leader,
                    term,
                    interval_us,
                    ..
                },
            ) => CoordEv::HeartbeatReply {
                slot,
                inc,
                dead: gone,
                hint: leader,
                leader_term: Some(term),
                interval_us,
            },
            // The answer to a leave: what follows is learned by heartbeat.
            (true, ClientReply::Leaving { .. }) => return,
            (true, ClientReply::NotLeader { leader, .. }) => CoordEv::HeartbeatReply {
                slot,
                inc,
                dead: false,
                hint: leader,
                leader_term: None,
                interval_us: 0,
            },
            (true, _) => CoordEv::HeartbeatReply {
                slot,
                inc,
                dead: false,
                hint: None,
                leader_term: None,
                interval_us: 0,
            },
            (
                false,
                ClientReply::Committed {
                    result: OpResult::Enlisted(sid),
                    ..
                },
            ) => CoordEv::EnlistReply {
                slot,
                inc,
                id: Some(sid),
                hint: Some(node),
                answered: true,
                seen,
            },
            (false, ClientReply::NotLeader { leader, .. }) => CoordEv::EnlistReply {
                slot,
                inc,
                id: None,
                hint: leader,
                answered: false,
                seen,
            },
            // Refused, rejected, unknown, told to retry: that operation is
            // over (a retry would be refused or unknown alike).
            (false, other) => CoordEv::EnlistReply {
                slot,
                inc,
                id: None,
                hint: None,
                answered: !matches!(other, ClientReply::Retry(_)),
                seen,
            },
        };
        self.over_link(node, slot, ev);
    }

    /// After a configuration landed in master `slot`: no other master
    /// whose crash was not committed holds a tablet sharing a key with one
    /// `slot` now holds (a master declared crashed may still hold its old
    /// configuration: in a real process its lease has run out).
    fn check_no_tablet_held_twice(&self, slot: usize) -> Result<(), Violation> {
        let crashed = &self.cw.declared_crashed;
        let m = &self.cw.masters[slot];
        let (Some(id), Some(mine)) = (m.agent.id(), m.agent.config()) else {
            return Ok(());
        };
        if crashed.contains(&id) {
            return Ok(());
        }
        for (other, o) in self.cw.masters.iter().enumerate() {
            if other == slot || !o.up {
                continue;
            }
            let (Some(oid), Some(theirs)) = (o.agent.id(), o.agent.config()) else {
                continue;
            };
            if oid == id || crashed.contains(&oid) {
                continue;
            }
            for a in &mine.tablets {
                for b in &theirs.tablets {
                    if a.table == b.table
                        && a.start_hash <= b.end_hash
                        && b.start_hash <= a.end_hash
                    {
                        return Err(Violation::new(
                            "tablet held twice",
                            format!(
                                "m{slot} ({id}, version {}) and m{other} ({oid}, version {}) both hold table {} hashes {:#x}..={:#x} / {:#x}..={:#x}",
                                mine.version, theirs.version, a.table, a.start_hash, a.end_hash, b.start_hash, b.end_hash
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn push_arrive(
        &mut self,
        slot: usize,
        from: NodeId,
        region: Bytes,
        (write, peer, inc): (u64, PeerId, u64),
    ) -> Result<(), Violation> {
        let grant_fencing = self.cw.p.grant_fencing;
        let m = &mut self.cw.masters[slot];
        if !m.up {
            return Ok(());
        }
        if grant_fencing && m.granted.map(|g| g.1) != Some(from) {
            // Not the granted writer: its queue pair was revoked (or the
            // region never registered for it); nothing lands, no ack.
            self.stats.ungranted_pushes_refused += 1;
            self.trace(|| format!("m{slot} refuses a write from n{from}: not granted"));
            return Ok(());
        }
        let m = &mut self.cw.masters[slot];
        let decoded = crate::cluster::ConfigRegion::decode(&region);
        let outcome = m.agent.on_region_write(&region);
        let (term, version) = match &decoded {
            Ok(r) => (r.term, r.version),
            Err(e) => {
                return Err(Violation::new(
                    "push",
                    format!("m{slot} got an unreadable region from n{from}: {e}"),
                ))
            }
        };
        let seen_before = m.term_seen;
        let landed_before = m.last_applied.map_or(0, |(_, v)| v);
        let landed = |m: &mut SimMaster| {
            m.term_seen = m.term_seen.max(term);
            m.last_applied = Some((term, version));
        };
        match outcome {
            RegionOutcome::Applied { .. } | RegionOutcome::Regressed { .. } => {
                landed(m);
                if term < seen_before {
                    return Err(Violation::new(
                        "stale push won",
                        format!(
                            "a write of term {term} (version {version}) from n{from} landed in m{slot}'s region after one of term {seen_before}"
                        ),
                    ));
                }
                if version < landed_before {
                    return Err(Violation::new(
                        "configuration went back",
                        format!("m{slot}'s region went from version {landed_before} to {version}"),
                    ));
                }
                self.stats.pushes_applied += 1;
            }
            RegionOutcome::StaleTerm { .. } => {
                self.stats.stale_pushes_refused += 1;
                self.trace(|| format!("m{slot} fences off a write of term {term} from n{from}"));
                return Ok(());
            }
            RegionOutcome::NotMine => return Ok(()),
            RegionOutcome::Invalid(e) => {
                return Err(Violation::new(
                    "push",
                    format!("m{slot} refused a well-formed region: {e}"),
                ))
            }
        }
        self.check_no_tablet_held_twice(slot)?;
        let m = &self.cw.masters[slot];
        let held = m.agent.config().map_or(0, |c| c.version);
        self.trace(|| {
            format!("m{slot} holds version {held} after a write of {version} (term {term})")
        });
        // The transport reports the write landed (on RDMA, its completion;
        // on TCP, the master's acknowledgement frame), to the process that
        // made it.
        self.over_link(
            from,
            slot,
            CoordEv::PushAck {
                node: from,
                write,
                peer,
                inc,
            },
        );
        Ok(())
    }

    // ----- the coordinator on each replica --------------------------------

    /// Runs replica `id`'s ready loop and carries out what it asks, as the
    /// process's driver would, with the simulated network and disk; then
    /// checks every entry it applied.
    pub(super) fn drive_replica(&mut self, id: NodeId) -> Result<(), Violation> {
        let now = self.instant();
        let node = self.nodes.get_mut(&id).unwrap();
        let inc = node.incarnation;
        let Some(r) = node.replica.as_mut() else {
            return Ok(());
        };
        let was_active = r.coordinator().is_active();
        if let Err(e) = r.drive(now) {
            return Err(Violation::new("replica stopped", format!("node {id}: {e}")));
        }
        let active = r.coordinator().is_active();
        let term = r.raft().term();
        let incomplete = r.cluster().incomplete().len();
        let notes = r.take_applied();
        let mut outputs = Vec::new();
        while let Some(out) = r.poll_output() {
            outputs.push(out);
        }
        if active && self.healed {
            self.cw.established_after_heal = true;
        }
        if active && !was_active {
            self.trace(|| {
                format!("n{id} coordinator active in term {term}: {incomplete} incomplete")
            });
        }
        self.check_applied(id, &notes)?;
        if !notes.is_empty() {
            self.check_changes(id)?;
        }
        // The leader crashes just before its completion record goes
        // anywhere: none of this round's output happens.
        let completes = outputs.iter().any(|o| match o {
            Output::Persist(job) => job.entries.iter().any(|e| {
                e.kind == EntryKind::Normal
                    && matches!(Record::decode(&e.data), Ok(Record::Complete { .. }))
            }),
            _ => false,
        });
        if completes
            && active
            && !self.healed
            && self.rng.random_bool(self.cw.p.crash_before_complete)
        {
            self.trace(|| format!("n{id} crashes before writing a completion record"));
            self.crash(id);
            let down = self.rng.random_range(self.p.down_us.0..self.p.down_us.1);
            self.at(down, Ev::Restart(id));
            return Ok(());
        }
        let pushes = outputs
            .iter()
            .filter(|o| matches!(o, Output::Push { .. }))
            .count();
        let mut pushed = 0;
        for out in outputs {
            match out {
                Output::Send { to, payload } => self.route(id, to, payload),
                Output::Persist(job) => {
                    let node = self.nodes.get_mut(&id).unwrap();
                    node.jobs.push_back(job);
                    if node.disk_inflight == 0 {
                        self.start_disk_write(id);
                    }
                }
                Output::AddPeer { .. } => {} // the simulated network knows everyone
                Output::WriteSnapshot(job) => {
                    // Encoding and a file's fsync: several disk writes'
                    // time, during which the replica goes on applying.
                    let lat = self.rng.random_range(self.p.disk_us.0..self.p.disk_us.1)
                        * self.rng.random_range(4..40);
                    let index = job.meta.index;
                    self.trace(|| format!("n{id} writes a snapshot at {index}"));
                    self.cev(lat, CoordEv::SnapshotWritten { node: id, inc, job });
                }
                Output::Push {
                    write,
                    server,
                    addr,
                    peer,
                    region,
                    ..
                } => {
                    if pushed > 0
                        && pushed < pushes
                        && !self.healed
                        && self.rng.random_bool(self.cw.p.crash_between_pushes)
                    {
                        self.trace(|| format!("n{id} crashes between two pushes"));
                        self.crash(id);
                        let down = self.rng.random_range(self.p.down_us.0..self.p.down_us.1);
                        self.at(down, Ev::Restart(id));
                        return Ok(());
                    }
                    pushed += 1;
                    self.stats.pushes += 1;
                    // One push in flight per master: a replica sends
                    // another only once the last landed, or went
                    // unacknowledged for half a retry period (lost).
                    let term = crate::cluster::ConfigRegion::decode(&region).map_or(0, |r| r.term);
                    let stall_us = TICK_US * (COORD_CONFIG.push_retry_ticks / 2).max(1);
                    let now = self.now;
                    let lane = self.cw.push_lanes.entry((id, inc, peer, term)).or_default();
                    if let Some((&w, &at)) = lane.iter().find(|(_, &at)| now - at < stall_us) {
                        return Err(Violation::new(
                            "push lane",
                            format!(
                                "n{id} pushed to {server} (write {write}) while its write {w}, sent {} µs ago, was in flight",
                                now - at
                            ),
                        ));
                    }
                    lane.retain(|_, &mut at| now - at < 100 * stall_us);
                    lane.insert(write, now);
                    let slot: usize = addr[1..].parse().expect("sim master address");
                    if self.cw.blocked.contains(&(id, slot)) || self.lost() {
                        continue;
                    }
                    // One connection per (writer incarnation, master): it
                    // delivers in order (an RC queue pair), sometimes late.
                    let mut d = self.net_delay();
                    if !self.healed && self.rng.random_bool(self.cw.p.push_spike) {
                        d += self.rng.random_range(5_000..60_000);
                    }
                    let last = self.cw.push_fifo.entry((id, inc, slot)).or_insert(0);
                    let at = (self.now + d).max(*last + 1);
                    *last = at;
                    let d = at - self.now;
                    self.trace(|| format!("n{id} push to {server} at m{slot}"));
                    self.cev(
                        d,
                        CoordEv::PushArrive {
                            slot,
                            from: id,
                            region,
                            write,
                            peer,
                            inc,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Where a replica's message goes: another replica over the network,
    /// a client, or a master's client.
    fn route(&mut self, from: NodeId, to: PeerId, payload: Bytes) {
        use ramcoord_net::tls::PeerClass;
        match PeerClass::of(to) {
            PeerClass::Replica(to) => self.send_bytes(from, to, payload),
            PeerClass::Admin | PeerClass::Reader => {
                let c = (to & 0xffff_ffff) as usize;
                if c >= self.cw.clients.len() {
                    return; // the administrator: answers go nowhere
                }
                let Ok(env) = protocol::decode::<ClientReply>(&payload[1..]) else {
                    return;
                };
                let Some(reply) = client_reply(env.body) else {
                    return;
                };
                let seen = self.commit_of(from);
                self.coord_reply(c, env.id, reply, seen);
            }
            PeerClass::Master => {
                let Some(slot) = self
                    .cw
                    .masters
                    .iter()
                    .position(|m| m.up && protocol::master_client_id(m.agent.nonce()) == to)
                else {
                    return; // that process is gone
                };
                let Ok(env) = protocol::decode::<ClientReply>(&payload[1..]) else {
                    return;
                };
                self.master_reply(from, slot, env.id, env.body);
            }
        }
    }

    /// Checks every entry replica `id` applied: order and agreement, the
    /// cluster state's invariants, exactly once, invalid records, and a
    /// completion only after its pushes landed; counts and crash faults.
    fn check_applied(&mut self, id: NodeId, notes: &[AppliedNote]) -> Result<(), Violation> {
        for note in notes {
            let note = match note {
                AppliedNote::Snapshot { index } => {
                    self.nodes.get_mut(&id).unwrap().applied = *index;
                    self.stats.snapshots_installed += 1;
                    let index = *index;
                    self.trace(|| format!("n{id} restore snapshot at {index}"));
                    continue;
                }
                AppliedNote::Entry(note) => note,
            };
            let e = &note.entry;
            self.check_apply(id, e)?;
            let data: &[u8] = if e.kind == EntryKind::Normal {
                &e.data
            } else {
                &[]
            };
            let record = Record::decode(data);
            if matches!(record, Ok(Record::ClientCommit { .. }))
                && matches!(note.outcome, Outcome::Committed(_) | Outcome::Rejected(_))
                && !self.cw.replayable.contains(&e.data)
            {
                if self.cw.replayable.len() == 16 {
                    self.cw.replayable.pop_front();
                }
                self.cw.replayable.push_back(e.data.clone());
            }
            // A completion must come after its pushes landed: checked the
            // first time it applies anywhere, against the masters.
            if let (Ok(Record::Complete { seq }), Some(p)) = (&record, &note.completing) {
                if !self.cw.completed.contains(seq) {
                    self.check_pushes_landed(*seq, p)?;
                }
            }
            let outcome = &note.outcome;
            if let (
                Ok(Record::Commit(crate::cluster::Op::ServerCrashed { id: c, .. })),
                Outcome::Committed(_),
            ) = (&record, outcome)
            {
                self.cw.declared_crashed.insert(*c);
            }
            self.check_exactly_once(e, outcome)?;
            let invalid = matches!(
                outcome,
                Outcome::Malformed(_) | Outcome::Rejected(Rejection::Invalid(_))
            );
            let injected = e.kind == EntryKind::Normal && self.cw.injected.contains(&e.data);
            if invalid != injected {
                return Err(Violation::new(
                    "invalid record",
                    format!(
                        "node {id} entry {}: applied as {outcome}, but it was {}",
                        e.index,
                        if injected {
                            "injected as invalid"
                        } else {
                            "proposed through the edge's validation"
                        }
                    ),
                ));
            }
            if invalid {
                self.stats.invalid_applied += 1;
            }
            if let Some(Err(why)) = &note.state_check {
                return Err(Violation::new(
                    "cluster state invariant",
                    format!("node {id} after entry {}: {why}", e.index),
                ));
            }
            let inc = self.nodes[&id].incarnation;
            match outcome {
                Outcome::Committed(_) => {
                    self.cw.commit_terms.entry(e.index).or_insert(e.term);
                    if note.active
                        && !self.healed
                        && self.rng.random_bool(self.cw.p.crash_after_commit)
                    {
                        let i = e.index;
                        self.trace(|| format!("n{id} crashes right after commit point {i}"));
                        self.at(0, Ev::CrashNode(id, inc));
                    }
                }
                Outcome::Completed(seq) if self.cw.completed.insert(*seq) => {
                    self.stats.coord_ops_completed += 1;
                    if self.cw.commit_terms.get(seq).is_some_and(|t| *t < e.term) {
                        self.stats.roll_forwards += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The changes replica `id` holds for watchers: consecutive versions
    /// ending at its state's version, each the same change every replica
    /// holds under that version (so a watcher moving between replicas
    /// sees no gap, no repeat and nothing different).
    fn check_changes(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(r) = self.nodes[&id].replica.as_ref() else {
            return Ok(());
        };
        let version = r.cluster().version();
        let mut expect: Option<u64> = None;
        for c in r.changes() {
            if expect.is_some_and(|v| v != c.version) {
                return Err(Violation::new(
                    "watch history",
                    format!(
                        "node {id}: change {} after {}",
                        c.version,
                        expect.map_or("none".to_string(), |v| (v - 1).to_string())
                    ),
                ));
            }
            expect = Some(c.version + 1);
            let seen = (c.index, c.term, c.summary.clone());
            match self.cw.changes.get(&c.version) {
                Some(first) if *first != seen => {
                    return Err(Violation::new(
                        "watch history",
                        format!(
                            "node {id}: version {} is {seen:?}, another replica held {first:?}",
                            c.version
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    self.cw.changes.insert(c.version, seen);
                }
            }
        }
        if let Some(next) = expect {
            if next != version + 1 {
                return Err(Violation::new(
                    "watch history",
                    format!(
                        "node {id}: changes end at {}, state at version {version}",
                        next - 1
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Exactly once: a client operation (the [`RpcId`] in its commit
    /// record, read from the entry itself) takes effect at one index at
    /// most, and a duplicate names that index. Counted once per index.
    fn check_exactly_once(
        &mut self,
        e: &ramcoord_log::Entry,
        outcome: &Outcome,
    ) -> Result<(), Violation> {
        if e.kind != EntryKind::Normal {
            return Ok(());
        }
        let Some(rpc) = Record::decode(&e.data).ok().and_then(|r| r.rpc()) else {
            return Ok(());
        };
        let took = match outcome {
            Outcome::Committed(_) | Outcome::Rejected(_) => Some(e.index),
            Outcome::Duplicate { index, .. } => {
                if self.cw.duplicates_seen.insert(e.index) {
                    self.stats.duplicate_records += 1;
                }
                let first = self.cw.rpc_effect.get(&rpc.key()).map(|(i, _)| *i);
                if first != Some(*index) {
                    return Err(Violation::new(
                        "exactly once",
                        format!(
                            "entry {} of operation {rpc} applied as a duplicate of index {index}; it took effect at {}",
                            e.index,
                            first.map_or("no index".to_string(), |i| format!("index {i}"))
                        ),
                    ));
                }
                None
            }
            _ => None,
        };
        if let Some(index) = took {
            let text = outcome.to_string();
            let first = self.cw.rpc_effect.entry(rpc.key()).or_insert((index, text));
            if first.0 != index {
                return Err(Violation::new(
                    "exactly once",
                    format!(
                        "operation {rpc} took effect at index {} ({}) and again at index {index} ({outcome})",
                        first.0, first.1
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every target of operation `seq` that is still running holds a
    /// configuration at least as new as the operation.
    fn check_pushes_landed(&self, seq: u64, p: &crate::cluster::Pending) -> Result<(), Violation> {
        for t in &p.targets {
            let Some((slot, m)) = self
                .cw
                .masters
                .iter()
                .enumerate()
                .find(|(_, m)| m.up && m.agent.id() == Some(*t))
            else {
                continue; // gone: its crash operation takes over
            };
            let held = m.agent.region().map_or(0, |r| r.version);
            if held < p.version {
                return Err(Violation::new(
                    "completion before push",
                    format!(
                        "operation {seq} ({}) completes while m{slot} ({t}) holds version {held} < {}",
                        p.op.kind(),
                        p.version
                    ),
                ));
            }
        }
        Ok(())
    }

    // ----- clients --------------------------------------------------------

    fn coord_client_next(&mut self, c: usize) {
        if self.cw.clients[c].in_flight.is_some() || self.now >= self.cw.clients_stop_at {
            return;
        }
        let op_id = self.cw.next_op + 1;
        self.cw.next_op = op_id;
        let name = TABLE_NAMES[self.rng.random_range(0..TABLE_NAMES.len())].to_string();
        let roll = self.rng.random_range(0..100);
        let enlisted: Vec<ServerId> = self
            .cw
            .masters
            .iter()
            .filter(|m| m.up)
            .filter_map(|m| m.agent.id())
            .collect();
        let op = if roll < 30 {
            None
        } else if roll < 55 {
            Some(Request::CreateTable {
                name: name.clone(),
                tablets: self.rng.random_range(1..=4),
            })
        } else if roll < 65 {
            Some(Request::DropTable { name: name.clone() })
        } else if roll < 80 {
            Some(Request::SplitTablet {
                table: name.clone(),
                split_hash: self.rng.random(),
            })
        } else if !enlisted.is_empty() {
            Some(Request::MigrateTablet {
                table: name.clone(),
                hash: self.rng.random(),
                to: enlisted[self.rng.random_range(0..enlisted.len())],
            })
        } else {
            None
        };
        let req = match op {
            Some(op) => {
                let cl = &mut self.cw.clients[c];
                cl.seq += 1;
                let rpc = RpcId {
                    client: cl.id,
                    seq: cl.seq,
                    after: cl.observed,
                };
                CReq::Op(rpc, op)
            }
            None => CReq::Lookup(name),
        };
        let hint = self.cw.clients[c].leader_hint;
        let node = self.pick_node(hint);
        self.cw.clock += 1;
        let idx = self.cw.history.len();
        self.cw.history.push(CHist {
            call: self.cw.clock,
            ret: None,
            index: None,
            what: match &req {
                CReq::Op(rpc, r) => format!("{rpc} {}", r.summary()),
                CReq::Lookup(name) => format!("lookup {name:?}"),
            },
        });
        self.cw.clients[c].in_flight = Some(CInFlight {
            op_id,
            idx,
            req,
            attempt: 0,
            node,
            maybe_proposed: false,
        });
        self.send_attempt(c, node);
    }

    /// Sends the next attempt of client `c`'s request (same id) to `node`.
    fn send_attempt(&mut self, c: usize, node: NodeId) {
        let Some(f) = self.cw.clients[c].in_flight.as_mut() else {
            return;
        };
        f.attempt += 1;
        f.node = node;
        let (op_id, attempt, req) = (f.op_id, f.attempt, f.req.clone());
        if attempt > 1 {
            self.stats.op_retries += 1;
        }
        self.trace(|| format!("cclient {c} op {op_id} attempt {attempt} {req:?} -> n{node}"));
        let d = self.net_delay();
        self.cev(
            d,
            CoordEv::Request {
                node,
                client: c,
                op_id,
                req,
            },
        );
        self.cev(
            CLIENT_TIMEOUT_US,
            CoordEv::Timeout {
                client: c,
                op_id,
                attempt,
            },
        );
    }

    fn coord_request(
        &mut self,
        id: NodeId,
        client: usize,
        op_id: u64,
        req: CReq,
    ) -> Result<(), Violation> {
        let now = self.instant();
        let Some(r) = self.nodes.get_mut(&id).and_then(|n| n.replica.as_mut()) else {
            return Ok(());
        };
        let last_before = r.raft().log().last_index();
        let answered_before = r.retries_answered_applied();
        let body = match req {
            CReq::Lookup(table) => ClientRequest::Lookup { table },
            CReq::Op(rpc, op) => ClientRequest::Operate(ClientOp { rpc, op }),
        };
        let payload = protocol::encode(protocol::tag::CLIENT, op_id, &body);
        r.input(
            now,
            crate::replica::Input::Message {
                from: client_peer(client),
                payload,
            },
        );
        self.stats.retries_answered_applied += r.retries_answered_applied() - answered_before;
        self.after_input(id)?;
        // It proposed the client's operation: sometimes the leader crashes
        // right away.
        let node = &self.nodes[&id];
        let inc = node.incarnation;
        let proposed = node.replica.as_ref().is_some_and(|r| {
            r.raft().role() == Role::Leader && r.raft().log().last_index() > last_before
        });
        if proposed
            && matches!(body, ClientRequest::Operate(_))
            && !self.healed
            && self.rng.random_bool(self.cw.p.crash_after_propose)
        {
            self.trace(|| format!("n{id} crashes right after proposing"));
            self.at(0, Ev::CrashNode(id, inc));
        }
        Ok(())
    }

    fn coord_reply(&mut self, client: usize, op_id: u64, reply: CReply, seen: u64) {
        let d = self.net_delay();
        self.cev(
            d,
            CoordEv::Response {
                client,
                op_id,
                reply,
                seen,
            },
        );
    }

    fn coord_response(
        &mut self,
        c: usize,
        op_id: u64,
        reply: CReply,
        seen: u64,
    ) -> Result<(), Violation> {
        let cl = &mut self.cw.clients[c];
        cl.observed = cl.observed.max(seen);
        let Some(f) = cl.in_flight.as_ref() else {
            return Ok(());
        };
        if f.op_id != op_id {
            return Ok(());
        }
        let (idx, maybe_proposed, last_node) = (f.idx, f.maybe_proposed, f.node);
        let rpc = match &f.req {
            CReq::Op(rpc, _) => Some(*rpc),
            CReq::Lookup(_) => None,
        };
        self.trace(|| format!("cclient {c} op {op_id} <- {reply:?}"));
        if let (CReply::Failed(hint), Some(_), true) = (&reply, rpc, maybe_proposed) {
            // An earlier attempt may still apply: send it again (same id)
            // until a definitive answer, while the clients run.
            let hint = *hint;
            self.cw.clients[c].leader_hint = hint;
            if self.now >= self.cw.clients_stop_at {
                return self.give_up(c);
            }
            let node = match hint {
                Some(h) if h != last_node => h,
                _ => self.pick_other_node(last_node),
            };
            // As the real client: a moment's pause while a leader is
            // being elected.
            let d = self.rng.random_range(1_000..10_000);
            self.cev(
                d,
                CoordEv::Resend {
                    client: c,
                    op_id,
                    node,
                },
            );
            return Ok(());
        }
        self.cw.clients[c].in_flight = None;
        self.cw.clock += 1;
        let h = &mut self.cw.history[idx];
        match &reply {
            CReply::Applied { index, outcome } => {
                h.what = format!("{} -> {outcome}", h.what);
                h.ret = Some(self.cw.clock);
                h.index = Some(*index);
                self.stats.ops_ok += 1;
                if self.healed {
                    self.live_commit_after_heal = true;
                }
                if let Some(rpc) = rpc {
                    // Every answer names where the operation took effect.
                    let took = self.cw.rpc_effect.get(&rpc.key());
                    if took.map(|(i, _)| *i) != Some(*index) {
                        return Err(Violation::new(
                            "exactly once",
                            format!(
                                "client {c} was told operation {rpc} applied at index {index} ({outcome}); it took effect at {}",
                                took.map_or("no index".to_string(), |(i, o)| format!("index {i} ({o})"))
                            ),
                        ));
                    }
                }
            }
            CReply::Lookup { index, found } => {
                self.stats.reads += 1;
                h.what = format!("{} -> found {found}", h.what);
                h.ret = Some(self.cw.clock);
                h.index = Some(*index);
                self.stats.ops_ok += 1;
            }
            CReply::Failed(hint) => {
                self.cw.clients[c].leader_hint = *hint;
            }
            CReply::Refused => {}
            CReply::Unknown(reason) => {
                let why = reason.to_string();
                self.trace(|| format!("cclient {c} op {op_id}: outcome unknown: {why}"));
                self.stats.unknown_outcomes += 1;
                self.stats.ops_unknown += 1;
                self.cw.clients[c].leader_hint = None;
            }
        }
        let d = self.rng.random_range(0..5_000);
        self.cev(d, CoordEv::ClientNext(c));
        Ok(())
    }

    /// Client `c` stops trying its request: its outcome stays unknown.
    fn give_up(&mut self, c: usize) -> Result<(), Violation> {
        self.cw.clients[c].in_flight = None;
        self.cw.clients[c].leader_hint = None;
        self.stats.ops_unknown += 1;
        self.trace(|| format!("cclient {c} gives up"));
        self.cev(0, CoordEv::ClientNext(c));
        Ok(())
    }

    /// A replica other than `not` (any, if it is the only one).
    fn pick_other_node(&mut self, not: NodeId) -> NodeId {
        let ids: Vec<NodeId> = self.node_ids().into_iter().filter(|n| *n != not).collect();
        if ids.is_empty() {
            return not;
        }
        ids[self.rng.random_range(0..ids.len())]
    }

    fn coord_timeout(&mut self, c: usize, op_id: u64, attempt: u32) {
        let Some(f) = self.cw.clients[c].in_flight.as_mut() else {
            return;
        };
        if f.op_id != op_id || f.attempt != attempt {
            return;
        }
        self.trace(|| format!("cclient {c} op {op_id} attempt {attempt} timed out"));
        let f = self.cw.clients[c].in_flight.as_mut().expect("just looked");
        let last = f.node;
        if matches!(f.req, CReq::Lookup(_)) || self.now >= self.cw.clients_stop_at {
            let _ = self.give_up(c);
            return;
        }
        // The leader may have vanished with the operation proposed, or
        // committed, or not: the same operation, same id, elsewhere.
        f.maybe_proposed = true;
        self.cw.clients[c].leader_hint = None;
        let node = self.pick_other_node(last);
        self.send_attempt(c, node);
    }

    // ----- end of run -----------------------------------------------------

    /// The checks at quiescence (see the module docs).
    pub(super) fn coordinator_final_checks(&self) -> Result<(), Violation> {
        // With nothing injected, every master heartbeats on time: one
        // declared crashed was suspected under load alone.
        if self.opts.faults == FaultLevel::None && self.stats.masters_declared_crashed_alive > 0 {
            return Err(Violation::new(
                "false suspicion",
                format!(
                    "{} of {} running masters were declared crashed with no fault injected",
                    self.stats.masters_declared_crashed_alive,
                    self.cw.masters.len()
                ),
            ));
        }
        if !self.cw.established_after_heal {
            return Err(Violation::new(
                "liveness",
                "no coordinator was established after the faults healed".into(),
            ));
        }
        // Every live replica's state, checked in full once more (during
        // the run a large cluster's are checked every k-th entry only).
        for (id, n) in &self.nodes {
            if let Some(Err(why)) = n.replica.as_ref().map(|r| r.cluster().check()) {
                return Err(Violation::new(
                    "cluster state invariant",
                    format!("node {id} at the end, applied {}: {why}", n.applied),
                ));
            }
        }
        // The state is a function of the applied prefix: the replica that
        // applied the most holds the newest (an election at the very end
        // may leave no established leader at this instant).
        let Some(newest) = self
            .nodes
            .values()
            .filter(|n| n.replica.is_some())
            .max_by_key(|n| n.applied)
        else {
            return Err(Violation::new("liveness", "every replica is down".into()));
        };
        let state = newest.replica.as_ref().expect("up").cluster();
        if let Some((seq, p)) = state.incomplete().iter().next() {
            return Err(Violation::new(
                "atomicity",
                format!(
                    "operation {seq} ({}) committed but not complete at quiescence (waiting for {})",
                    p.op.kind(),
                    p.targets
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ));
        }
        for (slot, m) in self.cw.masters.iter().enumerate() {
            if !m.up {
                continue;
            }
            let Some(id) = m.agent.id() else {
                return Err(Violation::new(
                    "liveness",
                    format!("m{slot} never enlisted"),
                ));
            };
            if !state.is_up(id) {
                return Err(Violation::new(
                    "zombie master",
                    format!("m{slot} ({id}) still runs but the coordinator says it is not up"),
                ));
            }
            let want = state.region_for(id, 0);
            let have = m.agent.config();
            // Tablets exactly; the server list may lag (it is pushed only
            // with tablet changes) but never run ahead.
            let same = have.is_some_and(|h| {
                h.server_list_version <= want.server_list_version && h.tablets == want.tablets
            });
            if !same {
                return Err(Violation::new(
                    "configuration",
                    format!(
                        "m{slot} ({id}) holds {}; the coordinator says server list {} (or older) and tablets {}",
                        have.map_or("nothing".to_string(), |h| format!(
                            "server list {} and tablets {}",
                            h.server_list_version,
                            tablets_text(&h.tablets)
                        )),
                        want.server_list_version,
                        tablets_text(&want.tablets)
                    ),
                ));
            }
        }
        let live: HashSet<ServerId> = self
            .cw
            .masters
            .iter()
            .filter(|m| m.up)
            .filter_map(|m| m.agent.id())
            .collect();
        for t in state.tables() {
            for tb in &t.tablets {
                if !live.contains(&tb.owner) {
                    return Err(Violation::new(
                        "tablet ownership",
                        format!(
                            "table {:?} tablet at {:#x} is owned by {}, which is not a live master",
                            t.name, tb.start_hash, tb.owner
                        ),
                    ));
                }
            }
        }
        self.check_log_order_linearizable()
    }

    /// Every operation and lookup took effect at a log index; one that
    /// returned before another was called must have an index no later.
    fn check_log_order_linearizable(&self) -> Result<(), Violation> {
        let mut done: Vec<(u64, u64, usize)> = self
            .cw
            .history
            .iter()
            .enumerate()
            .filter_map(|(i, h)| Some((h.ret?, h.index?, i)))
            .collect();
        done.sort();
        // prefix[k] = the largest index among the first k returns.
        let mut prefix = Vec::with_capacity(done.len() + 1);
        prefix.push((0u64, usize::MAX));
        for &(_, index, i) in &done {
            let last = *prefix.last().expect("non-empty");
            prefix.push(if index > last.0 { (index, i) } else { last });
        }
        for h in &self.cw.history {
            let Some(index) = h.index else { continue };
            let k = done.partition_point(|&(ret, _, _)| ret < h.call);
            let (max_before, who) = prefix[k];
            if max_before > index {
                let other = &self.cw.history[who];
                return Err(Violation::new(
                    "linearizability",
                    format!(
                        "{} saw the state at index {index}, but {} had returned at index {max_before} before it was called",
                        h.what, other.what
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A replica's answer as the simulated client reads it (`None`: not an
/// answer it waits for).
fn client_reply(reply: ClientReply) -> Option<CReply> {
    Some(match reply {
        ClientReply::Committed { seq, result, .. } => CReply::Applied {
            index: seq,
            outcome: crate::ctl::result_text(&result),
        },
        ClientReply::Lookup { exists, index } => CReply::Lookup {
            index,
            found: exists,
        },
        ClientReply::NotLeader { leader, .. } => CReply::Failed(leader),
        // Not proposed, or proposed and lost in a change of leader.
        ClientReply::Retry(_) => CReply::Failed(None),
        ClientReply::Refused(_) => CReply::Refused,
        ClientReply::Unknown(why) => CReply::Unknown(why),
        _ => return None,
    })
}

/// An invalid coordinator record: one that breaks a limit (the edge
/// refuses such requests) or bytes that are not a record at all.
fn invalid_record(rng: &mut ChaCha8Rng) -> Bytes {
    use crate::cluster::limits::{NAME_BYTES_MAX, TABLETS_PER_TABLE_MAX};
    use crate::cluster::{Op, TabletSpec};
    let bad_name = |rng: &mut ChaCha8Rng| match rng.random_range(0..4) {
        0 => String::new(),
        1 => "n".repeat(NAME_BYTES_MAX + 1),
        2 => "t0\n".to_string(),
        _ => format!("t{}\u{7f}", rng.random_range(0..4)),
    };
    let owner = ServerId {
        index: 1,
        generation: 1,
    };
    let record = match rng.random_range(0..8) {
        0 => Record::Commit(Op::CreateTable {
            name: bad_name(rng),
            tablets: vec![TabletSpec {
                start_hash: 0,
                end_hash: u64::MAX,
                owner,
            }],
        }),
        1 => Record::Commit(Op::CreateTable {
            // A valid name the clients use, with a tablet count out of range.
            name: TABLE_NAMES[rng.random_range(0..TABLE_NAMES.len())].to_string(),
            tablets: if rng.random_bool(0.5) {
                Vec::new()
            } else {
                (0..=TABLETS_PER_TABLE_MAX as u64)
                    .map(|i| TabletSpec {
                        start_hash: i,
                        end_hash: i,
                        owner,
                    })
                    .collect()
            },
        }),
        2 => Record::Commit(Op::DropTable {
            name: bad_name(rng),
        }),
        3 => Record::Commit(Op::SplitTablet {
            table: bad_name(rng),
            split_hash: rng.random(),
        }),
        4 => Record::Commit(Op::MigrateTablet {
            table: bad_name(rng),
            hash: rng.random(),
            to: owner,
        }),
        5 => Record::Commit(Op::EnlistServer {
            addr: if rng.random_bool(0.5) {
                String::new()
            } else {
                "m0 with spaces".into()
            },
            services: services::MASTER,
            nonce: rng.random(),
        }),
        _ => {
            // Not a record: garbage after a real header, an unknown
            // version, or a valid record with trailing bytes.
            let mut b = Record::Complete { seq: rng.random() }
                .encode()
                .expect("small record")
                .to_vec();
            match rng.random_range(0..3) {
                0 => b.truncate(2),
                1 => b[1] = b[1].wrapping_add(1),
                _ => b.push(rng.random()),
            }
            if b.len() == 2 {
                b.extend_from_slice(&[0xff; 3]);
            }
            return Bytes::from(b);
        }
    };
    record
        .encode()
        .expect("invalid records still fit in a log entry")
}

/// Region tablets as people read them: `table:0x..=0x..`, space-separated.
fn tablets_text(t: &[crate::cluster::region::RegionTablet]) -> String {
    if t.is_empty() {
        return "none".into();
    }
    t.iter()
        .map(|x| format!("{}:{:#x}..={:#x}", x.table, x.start_hash, x.end_hash))
        .collect::<Vec<_>>()
        .join(" ")
}
