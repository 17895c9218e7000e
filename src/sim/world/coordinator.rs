//! The coordinator workload: the replicas run the cluster state machine
//! and the active [`Coordinator`]; masters enlist, heartbeat and take
//! configuration pushes; clients issue operations and lookups.
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

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use rand::Rng;

use super::*;
use crate::cluster::{
    services, Effect, Outcome, Record, Rejection, RpcId, RpcStatus, ServerId, UnknownReason,
};
use crate::coordinator::{Action, CoordinatorConfig, Request};
use crate::master::{MasterAction, MasterAgent, MasterConfig, RegionOutcome};

/// A master's tick (it heartbeats every tick, asks to enlist every two).
const MASTER_TICK_US: u64 = 10_000;
/// Table names the clients pick from (few, so operations collide).
const TABLE_NAMES: [&str; 4] = ["t0", "t1", "t2", "t3"];
/// The coordinator's timing, in replica ticks (1 ms, up to 30% fast with
/// skew). A master is declared crashed after about ten missed heartbeats:
/// a heartbeat can go to a replica that does not know the leader, and a
/// live master declared crashed is a correct but needless recovery.
const COORD_CONFIG: CoordinatorConfig = CoordinatorConfig {
    push_retry_ticks: 10,
    propose_retry_ticks: 30,
    master_timeout_ticks: 150,
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
    Unknown(UnknownReason),
}

/// Who waits for a proposed record.
#[derive(Clone, Debug)]
pub(super) enum Waiter {
    Client {
        client: usize,
        op_id: u64,
        rpc: RpcId,
    },
    Master {
        slot: usize,
        inc: u64,
    },
}

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
    },
    PushAck {
        node: NodeId,
        from: ServerId,
        term: u64,
        version: u64,
    },
    MasterTick {
        slot: usize,
        inc: u64,
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
    },
    MasterCrash,
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
    /// The payloads of the invalid records injected.
    injected: HashSet<Bytes>,
    /// Where each client operation took effect, and what it did.
    /// By (client, seq).
    rpc_effect: HashMap<(u64, u64), (u64, String)>,
    /// Log indexes counted as duplicate records.
    duplicates_seen: HashSet<u64>,
    /// Servers whose crash was committed (applied by some replica).
    declared_crashed: HashSet<ServerId>,
}

fn master_addr(slot: usize) -> String {
    format!("m{slot}")
}

impl World {
    pub(super) fn is_coordinator(&self) -> bool {
        self.opts.workload == Workload::Coordinator
    }

    pub(super) fn new_coordinator(&self) -> Coordinator {
        Coordinator::new(COORD_CONFIG, self.opts.bugs.coordinator)
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
            .and_then(|n| n.raft.as_ref())
            .map_or(0, |r| r.log().committed)
    }

    fn new_master_agent(&mut self, slot: usize) -> MasterAgent {
        self.cw.next_nonce += 1;
        MasterAgent::new(
            MasterConfig::default(),
            master_addr(slot),
            services::MASTER,
            self.cw.next_nonce,
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

    /// Starts the workload: masters and clients.
    pub(super) fn coordinator_start(&mut self) {
        let p = CoordParams::draw(self.opts.faults, &mut self.rng);
        self.cw.p = p;
        let fresh = self.fresh_cluster();
        for n in self.nodes.values_mut() {
            n.cluster = fresh.clone();
        }
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
            });
            let d = self.rng.random_range(0..20_000);
            self.cev(d, CoordEv::MasterTick { slot, inc: 0 });
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
            CoordEv::PushArrive { slot, from, region } => {
                return self.push_arrive(slot, from, region)
            }
            CoordEv::PushAck {
                node,
                from,
                term,
                version,
            } => {
                self.trace(|| format!("n{node} ack from {from}: version {version} (term {term})"));
                if let Some(n) = self.nodes.get_mut(&node) {
                    if n.raft.is_some() {
                        n.coord.on_push_acked(from, term, version);
                        return self.coord_step(node, false);
                    }
                }
            }
            CoordEv::MasterTick { slot, inc } => self.master_tick(slot, inc),
            CoordEv::HeartbeatArrive {
                node,
                slot,
                inc,
                from,
            } => self.heartbeat_arrive(node, slot, inc, from),
            CoordEv::HeartbeatReply {
                slot,
                inc,
                dead,
                hint,
                leader_term,
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
                let m = &mut self.cw.masters[slot];
                if let Some(MasterAction::Shutdown) = m.agent.on_heartbeat_reply(dead, hint) {
                    // Declared crashed: this process stops serving and a
                    // new one (a new server) takes the slot.
                    let id = m.agent.id();
                    self.trace(|| format!("m{slot} learns it was declared crashed ({id:?})"));
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
            } => {
                let m = &mut self.cw.masters[slot];
                if m.inc != inc || !m.up || m.agent.id().is_some() {
                    return Ok(());
                }
                m.agent.on_enlist_reply(id, hint);
                if let Some(id) = id {
                    self.trace(|| format!("m{slot} enlisted as {id}"));
                }
            }
            CoordEv::MasterCrash => self.master_crash(),
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
            n.raft
                .as_ref()
                .is_some_and(|r| r.role() == Role::Leader)
                .then_some(id)
        });
        let Some(id) = leader else {
            return Ok(());
        };
        let bytes = invalid_record(&mut self.rng);
        self.cw.injected.insert(bytes.clone());
        let n = self.nodes.get_mut(&id).unwrap();
        let r = n.raft.as_mut().map(|raft| raft.propose(bytes.clone()));
        if matches!(r, Some(Ok(_))) {
            self.stats.invalid_injected += 1;
        }
        self.trace(|| {
            format!(
                "n{id} is handed an invalid record of {} bytes: {r:?}",
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
        let inc = m.inc;
        self.trace(|| format!("m{slot} RESTART as a new process"));
        self.cev(0, CoordEv::MasterTick { slot, inc });
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
        if up.len() > 1 {
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
    fn master_tick(&mut self, slot: usize, inc: u64) {
        let m = &mut self.cw.masters[slot];
        if m.inc != inc || !m.up {
            return;
        }
        let actions = m.agent.tick();
        self.cev(MASTER_TICK_US, CoordEv::MasterTick { slot, inc });
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

    fn enlist_arrive(
        &mut self,
        node: NodeId,
        slot: usize,
        inc: u64,
        nonce: u64,
    ) -> Result<(), Violation> {
        let n = self.nodes.get_mut(&node).unwrap();
        let Some(raft) = n.raft.as_mut() else {
            return Ok(());
        };
        let req = Request::Enlist {
            addr: master_addr(slot),
            services: services::MASTER,
            nonce,
        };
        let reply_hint = raft.leader_id();
        let bytes = n.coord.prepare(&n.cluster, &req).map(|rec| rec.encode());
        let proposed = match bytes {
            Ok(Ok(bytes)) => match raft.propose(bytes.clone()) {
                Ok(index) => {
                    n.pending_records
                        .insert(index, (Waiter::Master { slot, inc }, bytes));
                    true
                }
                Err(_) => false,
            },
            Ok(Err(_)) | Err(_) => false,
        };
        if !proposed {
            self.reply_master_enlist(node, slot, inc, None, reply_hint);
        }
        self.after_input(node)
    }

    fn reply_master_enlist(
        &mut self,
        node: NodeId,
        slot: usize,
        inc: u64,
        id: Option<ServerId>,
        hint: Option<NodeId>,
    ) {
        self.over_link(
            node,
            slot,
            CoordEv::EnlistReply {
                slot,
                inc,
                id,
                hint,
            },
        );
    }

    fn heartbeat_arrive(&mut self, node: NodeId, slot: usize, inc: u64, from: ServerId) {
        let n = self.nodes.get_mut(&node).unwrap();
        let Some(raft) = n.raft.as_ref() else { return };
        let hint = raft.leader_id();
        n.coord.on_heartbeat(from);
        // Only a server the state knows and no longer counts as up is told
        // it is dead (a lagging replica may not know it yet).
        let dead = n.cluster.is_gone(from);
        let leader = n.coord.is_active();
        let term = n.coord.term();
        self.trace(|| format!("n{node} heartbeat from {from} (m{slot}); active {leader}"));
        self.over_link(
            node,
            slot,
            CoordEv::HeartbeatReply {
                slot,
                inc,
                dead,
                hint: if leader { Some(node) } else { hint },
                leader_term: leader.then_some(term),
            },
        );
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

    fn push_arrive(&mut self, slot: usize, from: NodeId, region: Bytes) -> Result<(), Violation> {
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
        let id = m.agent.id().expect("a region lands only once enlisted");
        self.trace(|| {
            format!("m{slot} holds version {held} after a write of {version} (term {term})")
        });
        self.over_link(
            from,
            slot,
            CoordEv::PushAck {
                node: from,
                from: id,
                term,
                version: held,
            },
        );
        Ok(())
    }

    // ----- the coordinator on each replica --------------------------------

    /// Lets node `id`'s coordinator act on its applied state (and, with
    /// `tick`, on the passage of time), and carries out what it asks.
    pub(super) fn coord_step(&mut self, id: NodeId, tick: bool) -> Result<(), Violation> {
        let n = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = n.raft.as_ref() else {
            return Ok(());
        };
        let established = raft.role() == Role::Leader
            && raft.log().term(n.applied).ok() == Some(raft.term())
            && n.applied >= raft.log().committed;
        let term = raft.term();
        let last_index = raft.log().last_index();
        let was_active = n.coord.is_active();
        n.coord.set_log_last_index(last_index);
        n.coord.set_leadership(established, term, &n.cluster);
        if established && self.healed {
            self.cw.established_after_heal = true;
        }
        if established && !was_active {
            let k = n.cluster.incomplete().len();
            self.trace(|| format!("n{id} coordinator active in term {term}: {k} incomplete"));
        }
        let n = self.nodes.get_mut(&id).unwrap();
        let mut actions = n.coord.on_applied(&n.cluster);
        if tick {
            actions.extend(n.coord.tick(&n.cluster));
        }
        if actions.is_empty() {
            return Ok(());
        }
        let inc = n.incarnation;
        let pushes = actions
            .iter()
            .filter(|a| matches!(a, Action::Push { .. }))
            .count();
        let mut pushed = 0;
        let mut proposed = false;
        for a in actions {
            match a {
                Action::Push {
                    to, addr, region, ..
                } => {
                    if pushed > 0
                        && pushed < pushes
                        && !self.healed
                        && self.rng.random_bool(self.cw.p.crash_between_pushes)
                    {
                        self.trace(|| format!("n{id} crashes between two pushes"));
                        self.at(0, Ev::CrashNode(id, inc));
                        break;
                    }
                    pushed += 1;
                    self.stats.pushes += 1;
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
                    self.trace(|| format!("n{id} push to {to} at m{slot}"));
                    self.cev(
                        d,
                        CoordEv::PushArrive {
                            slot,
                            from: id,
                            region,
                        },
                    );
                }
                Action::Propose(rec) => {
                    if matches!(rec, Record::Complete { .. })
                        && !self.healed
                        && self.rng.random_bool(self.cw.p.crash_before_complete)
                    {
                        self.trace(|| format!("n{id} crashes before writing {rec:?}"));
                        self.at(0, Ev::CrashNode(id, inc));
                        break;
                    }
                    let n = self.nodes.get_mut(&id).unwrap();
                    if let (Some(raft), Ok(bytes)) = (n.raft.as_mut(), rec.encode()) {
                        let r = raft.propose(bytes);
                        proposed |= r.is_ok();
                        self.trace(|| format!("n{id} proposes {rec:?}: {r:?}"));
                    }
                }
            }
        }
        if proposed {
            self.drive(id)?;
            self.check_node(id)?;
        }
        Ok(())
    }

    /// Applies committed entries to node `id`'s cluster state.
    pub(super) fn apply_cluster(
        &mut self,
        id: NodeId,
        entries: &[ramcoord_log::Entry],
    ) -> Result<(), Violation> {
        for e in entries {
            self.check_apply(id, e)?;
            let node = self.nodes.get_mut(&id).unwrap();
            let data: &[u8] = if e.kind == EntryKind::Normal {
                &e.data
            } else {
                &[]
            };
            // A completion must come after its pushes landed: check the
            // first time it applies anywhere, against the masters.
            if let Ok(Record::Complete { seq }) = Record::decode(data) {
                if !self.cw.completed.contains(&seq) {
                    if let Some(p) = node.cluster.incomplete().get(&seq).cloned() {
                        self.check_pushes_landed(seq, &p)?;
                    }
                }
            }
            // Planted bug: replicas apply a client's commit record as a
            // plain one (the exactly-once table never hears of it).
            let stripped;
            let data: &[u8] = match Record::decode(data) {
                Ok(Record::ClientCommit { op, .. })
                    if self.opts.bugs.coordinator.forget_clients =>
                {
                    stripped = Record::Commit(op).encode().expect("it fit with its id");
                    &stripped
                }
                _ => data,
            };
            let node = self.nodes.get_mut(&id).unwrap();
            let crashed = match Record::decode(data) {
                Ok(Record::Commit(crate::cluster::Op::ServerCrashed { id, .. })) => Some(id),
                _ => None,
            };
            let outcome = node.cluster.apply(e.index, data);
            if let (Some(c), Outcome::Committed(_)) = (crashed, &outcome) {
                self.cw.declared_crashed.insert(c);
            }
            self.check_exactly_once(e, &outcome)?;
            let invalid = matches!(
                outcome,
                Outcome::Malformed(_) | Outcome::Rejected(Rejection::Invalid(_))
            );
            let injected = e.kind == EntryKind::Normal && self.cw.injected.contains(&e.data);
            if invalid != injected {
                return Err(Violation::new(
                    "invalid record",
                    format!(
                        "node {id} entry {}: applied as {outcome:?}, but it was {}",
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
            let node = self.nodes.get_mut(&id).unwrap();
            if let Err(why) = node.cluster.check() {
                return Err(Violation::new(
                    "cluster state invariant",
                    format!("node {id} after entry {}: {why}", e.index),
                ));
            }
            let active = node.coord.is_active();
            let inc = node.incarnation;
            let waiter = node
                .pending_records
                .remove(&e.index)
                .filter(|(_, bytes)| *bytes == e.data)
                .map(|(w, _)| w);
            match &outcome {
                Outcome::Committed(_) => {
                    self.cw.commit_terms.entry(e.index).or_insert(e.term);
                    if active && !self.healed && self.rng.random_bool(self.cw.p.crash_after_commit)
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
            match waiter {
                Some(Waiter::Client { client, op_id, .. }) => {
                    let reply = match &outcome {
                        Outcome::Duplicate { index, result, .. } => CReply::Applied {
                            index: *index,
                            outcome: outcome_text(result),
                        },
                        Outcome::Unknown { reason, .. } => CReply::Unknown(*reason),
                        _ => CReply::Applied {
                            index: e.index,
                            outcome: format!("{outcome:?}"),
                        },
                    };
                    let seen = self.commit_of(id);
                    self.coord_reply(client, op_id, reply, seen);
                }
                Some(Waiter::Master { slot, inc }) => {
                    let sid = match outcome {
                        Outcome::Committed(Effect::Enlisted(s))
                        | Outcome::Rejected(Rejection::AlreadyEnlisted(s)) => Some(s),
                        _ => None,
                    };
                    self.reply_master_enlist(id, slot, inc, sid, Some(id));
                }
                None => {}
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
                            "entry {} of operation {rpc} applied as a duplicate of index {index}; it took effect at {first:?}",
                            e.index
                        ),
                    ));
                }
                None
            }
            _ => None,
        };
        if let Some(index) = took {
            let text = format!("{outcome:?}");
            let first = self.cw.rpc_effect.entry(rpc.key()).or_insert((index, text));
            if first.0 != index {
                return Err(Violation::new(
                    "exactly once",
                    format!(
                        "operation {rpc} took effect at index {} ({}) and again at index {index} ({outcome:?})",
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

    /// Answers lookups whose read index node `id` has applied.
    pub(super) fn serve_lookups(&mut self, id: NodeId) {
        let (applied, ready) = self.take_ready_reads(id);
        for ctx in ready {
            let node = self.nodes.get_mut(&id).unwrap();
            if let Some((client, name)) = node.pending_lookups.remove(&ctx) {
                let found = node.cluster.table(&name).is_some();
                let seen = self.commit_of(id);
                self.coord_reply(
                    client,
                    ctx,
                    CReply::Lookup {
                        index: applied,
                        found,
                    },
                    seen,
                );
            }
        }
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
            what: format!("{req:?}"),
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
        let forget_clients = self.opts.bugs.coordinator.forget_clients;
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        let hint = raft.leader_id();
        let seen = raft.log().committed;
        let reply = match req {
            CReq::Lookup(name) => match raft.read_index(op_id) {
                Ok(()) => {
                    node.pending_lookups.insert(op_id, (client, name));
                    None
                }
                Err(_) => Some(CReply::Failed(hint)),
            },
            CReq::Op(_, _) if raft.role() != Role::Leader => Some(CReply::Failed(hint)),
            CReq::Op(rpc, r) => {
                // As the coordinator process: an operation applied already
                // is answered, one whose outcome the state cannot tell is
                // answered so, one this leader proposed already waits for
                // that proposal; only a new one is proposed.
                let status = if forget_clients {
                    RpcStatus::New
                } else {
                    node.cluster.rpc_status(&rpc)
                };
                let in_flight = !forget_clients
                    && node.pending_records.values().any(
                        |(w, _)| matches!(w, Waiter::Client { rpc: waiting, .. } if waiting.key() == rpc.key()),
                    );
                match status {
                    RpcStatus::Applied(s) => {
                        self.stats.retries_answered_applied += 1;
                        Some(CReply::Applied {
                            index: s.index,
                            outcome: outcome_text(&s.result),
                        })
                    }
                    RpcStatus::Unknown(reason) => Some(CReply::Unknown(reason)),
                    RpcStatus::New if in_flight => {
                        if self.opts.trace {
                            let line =
                                format!("{:>9} n{id} {rpc} waits for its proposal", self.now);
                            self.trace.push(line);
                        }
                        None
                    }
                    RpcStatus::New => {
                        let established = node.coord.is_active();
                        let prepared = node
                            .coord
                            .prepare_client(&node.cluster, &r, rpc)
                            .and_then(|rec| Ok(rec.encode()?));
                        match prepared {
                            // Refused before proposing: no effect (and, at
                            // an established leader, none to come).
                            Err(e) => {
                                if self.opts.trace {
                                    let line = format!("{:>9} n{id} refuses {r:?}: {e}", self.now);
                                    self.trace.push(line);
                                }
                                Some(if established {
                                    CReply::Refused
                                } else {
                                    CReply::Failed(hint)
                                })
                            }
                            Ok(bytes) => match raft.propose(bytes.clone()) {
                                Ok(index) => {
                                    node.pending_records.insert(
                                        index,
                                        (Waiter::Client { client, op_id, rpc }, bytes),
                                    );
                                    let inc = node.incarnation;
                                    if !self.healed
                                        && self.rng.random_bool(self.cw.p.crash_after_propose)
                                    {
                                        self.trace(|| {
                                            format!("n{id} crashes right after proposing {index}")
                                        });
                                        self.at(0, Ev::CrashNode(id, inc));
                                    }
                                    None
                                }
                                Err(e) => {
                                    if self.opts.trace {
                                        let line =
                                            format!("{:>9} n{id} cannot propose: {e}", self.now);
                                        self.trace.push(line);
                                    }
                                    Some(CReply::Failed(hint))
                                }
                            },
                        }
                    }
                }
            }
        };
        if let Some(reply) = reply {
            self.coord_reply(client, op_id, reply, seen);
        }
        self.after_input(id)
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
                                "client {c} was told operation {rpc} applied at index {index} ({outcome}); it took effect at {took:?}"
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
        if !self.cw.established_after_heal {
            return Err(Violation::new(
                "liveness",
                "no coordinator was established after the faults healed".into(),
            ));
        }
        // The state is a function of the applied prefix: the replica that
        // applied the most holds the newest (an election at the very end
        // may leave no established leader at this instant).
        let Some(newest) = self
            .nodes
            .values()
            .filter(|n| n.raft.is_some())
            .max_by_key(|n| n.applied)
        else {
            return Err(Violation::new("liveness", "every replica is down".into()));
        };
        let state = &newest.cluster;
        if let Some((seq, p)) = state.incomplete().iter().next() {
            return Err(Violation::new(
                "atomicity",
                format!(
                    "operation {seq} ({}) committed but not complete at quiescence (waiting for {:?})",
                    p.op.kind(),
                    p.targets
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
            let same = have.is_some_and(|h| {
                h.server_list_version == want.server_list_version && h.tablets == want.tablets
            });
            if !same {
                return Err(Violation::new(
                    "configuration",
                    format!(
                        "m{slot} ({id}) holds server list {:?} and tablets {:?}; the coordinator says {} and {:?}",
                        have.map(|h| h.server_list_version),
                        have.map(|h| &h.tablets),
                        want.server_list_version,
                        want.tablets
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

/// How an operation's result reads in the history: as the reply to its
/// first application said it.
fn outcome_text(result: &Result<Effect, Rejection>) -> String {
    match result {
        Ok(e) => format!("{:?}", Outcome::Committed(e.clone())),
        Err(r) => format!("{:?}", Outcome::Rejected(r.clone())),
    }
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
