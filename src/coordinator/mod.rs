//! The active coordinator: what the Raft leader does besides replicating.
//!
//! [`Coordinator`] is sans-IO. Its inputs are the applied [`ClusterState`],
//! leadership changes, ticks, masters' heartbeats and push
//! acknowledgements; its outputs are [`Action`]s: records to propose and
//! configuration regions to write into masters. The driver (the simulator,
//! or the coordinator process) executes them and reports back.
//!
//! # Roll-forward is the normal path
//!
//! There is no separate recovery code. Whenever it is the established
//! leader (leader, and an entry of its own term applied: every earlier
//! commit is then applied too), the coordinator walks the incomplete
//! operations of the applied state and, for each, pushes every target that
//! has not acknowledged a configuration at least as new as the operation,
//! and proposes the completion record once all have. A new leader starts
//! with no acknowledgements, so it redoes every incomplete operation's
//! pushes, whoever committed it: that is the roll-forward. Pushes carry the
//! *current* configuration of the target (state, not steps), stamped with
//! the leader's term, so redoing one is harmless: a master ignores what is
//! not newer than what it holds.
//!
//! # A tablet changes hands only once its old owner has let go
//!
//! A migration's commit point moves the tablet in the map at once, but
//! the masters learn it by pushes that land at different times. Were the
//! new owner told first, both would serve the tablet until the old owner
//! heard. So the master that now owns a migrating tablet is pushed no
//! configuration at all (from any operation) until the old owner has
//! acknowledged one without it in this term, or is no longer up (declared
//! crashed: its lease ran out before that, see [`crate::master`]). This
//! holds whoever owns the tablet by then (a crash of the new owner hands
//! it on), and a new leader, knowing no acknowledgements, asks again.
//! Migrations go one at a time (the state rejects a second while one is
//! incomplete): the old owner is then never itself waiting, so the wait
//! always ends.
//!
//! # Failure detection
//!
//! Masters heartbeat the leader. An up master not heard from for the
//! master timeout (counted from when this leader took office) is declared
//! crashed: the leader proposes `ServerCrashed` with a recovery plan. Once
//! that completes, it proposes `ServerRemoved`.
//!
//! **The pace scales with the cluster.** Every heartbeat costs the leader
//! a decode, a read-index confirmation share and an answer, so at a fixed
//! interval the load grows with the masters (10,000 masters at 50 ms are
//! 200,000 a second). The leader tells each master in the heartbeat's
//! answer how often to heartbeat: the configured interval, or longer, so
//! that all the server slots together stay under
//! [`CoordinatorConfig::heartbeats_per_tick_max`]. The master timeout is
//! then at least four intervals (plus two ticks), and a lease is shorter
//! than the timeout as before. Both are computed from
//! [`ClusterState::server_slots`], which never decreases and is the same on
//! every replica for the same applied prefix: a leader that declares a
//! crash has applied at least what the leader that granted the master's
//! last lease had (it is active only once it applied everything committed
//! before its term), so its timeout is at least as long as the one that
//! lease was cut from. A shrinking figure (masters up now) would let a new
//! leader's shorter timeout expire inside an older, longer lease.
//!
//! The bound this gives, from a master's death to its recovery plan
//! proposed: the master timeout for the current slots, plus a tick; the
//! plan commits one log round trip later. With the defaults (500 ms
//! timeout, 50 ms interval, 10 ms ticks, 5,000 heartbeats a second at
//! most) that is 500 ms up to 600 masters, and 8 s at 10,000 (2 s
//! intervals). The rate is the knob: `ramcoord-bench scale` measures about
//! 17 µs of the leader's CPU per heartbeat, so 5,000 a second keep failure
//! detection under a tenth of a core whatever the cluster's size.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::cluster::limits::{self, LimitError};
use crate::cluster::{
    even_ranges, ClusterState, Op, Pending, Record, RecordError, Rejection, RpcId, Seq, ServerId,
    ServerStatus, TableId, TabletSpec,
};

/// Timing knobs, in ticks of the driver's clock.
#[derive(Clone, Copy, Debug)]
pub struct CoordinatorConfig {
    /// Resend a push not acknowledged after this long.
    pub push_retry_ticks: u64,
    /// Propose a completion (or crash, removal) again if it has not
    /// applied after this long (the proposal may have been lost).
    pub propose_retry_ticks: u64,
    /// Declare a master crashed after this long without a heartbeat (at
    /// least; see [`CoordinatorConfig::master_timeout_for`]).
    pub master_timeout_ticks: u64,
    /// Masters heartbeat this often (at least; see
    /// [`CoordinatorConfig::heartbeat_interval_for`]).
    pub heartbeat_interval_ticks: u64,
    /// Heartbeats the leader takes per tick at most, whatever the number of
    /// masters: past it, masters are told to heartbeat less often (0: no
    /// limit).
    pub heartbeats_per_tick_max: u64,
    /// Push parts of configurations (the tables that changed for a master)
    /// rather than whole ones. Only where every write reaches the master
    /// before it is acknowledged (TCP, the simulator); not over RDMA (see
    /// [`crate::cluster::region`]).
    pub region_parts: bool,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            push_retry_ticks: 10,
            propose_retry_ticks: 20,
            master_timeout_ticks: 50,
            heartbeat_interval_ticks: 5,
            heartbeats_per_tick_max: 50,
            region_parts: true,
        }
    }
}

impl CoordinatorConfig {
    /// How often masters heartbeat with `slots` server slots (see the
    /// module docs): the configured interval, or as long as keeps every
    /// slot's heartbeats within [`Self::heartbeats_per_tick_max`].
    pub fn heartbeat_interval_for(&self, slots: usize) -> u64 {
        let base = self.heartbeat_interval_ticks.max(1);
        match self.heartbeats_per_tick_max {
            0 => base,
            per_tick => base.max((slots as u64).div_ceil(per_tick)),
        }
    }

    /// The master timeout with `slots` server slots: the configured one, or
    /// four heartbeat intervals and two ticks if that is longer. Never
    /// decreases as slots grow, which the leases' safety needs.
    pub fn master_timeout_for(&self, slots: usize) -> u64 {
        self.master_timeout_ticks
            .max(4 * self.heartbeat_interval_for(slots) + 2)
    }
}

/// Planted bugs for the simulator (each must be caught).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoordinatorBugs {
    /// Propose the completion record without waiting for the pushes.
    pub complete_before_push: bool,
    /// A new leader leaves alone the operations committed before its term.
    pub no_roll_forward: bool,
    /// Clients' exactly-once ids are ignored: a leader proposes a retry
    /// without asking the state, and replicas apply a client's commit
    /// record as a plain one (the simulator plants this in its driver).
    pub forget_clients: bool,
    /// A migrated tablet's new owner is pushed at once, before the old
    /// owner has let go: both serve it for a while.
    pub grant_before_release: bool,
    /// A part pushed to a master covers the tables of one operation it
    /// has not acknowledged, not all of them: an acknowledgement then
    /// counts for changes the master never received.
    pub narrow_part: bool,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Propose this record to the replicated log.
    Propose(Record),
    /// Write `region` into server `to`'s configuration region (one-sided).
    Push {
        /// The master.
        to: ServerId,
        /// Its address.
        addr: String,
        /// The configuration version in `region`.
        version: u64,
        /// The encoded region.
        region: Bytes,
    },
}

/// A client's request for an operation, before it is a record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Request {
    /// Enlist a server.
    Enlist {
        /// Its address.
        addr: String,
        /// Its services.
        services: u8,
        /// Its process nonce.
        nonce: u64,
    },
    /// Create a table with `tablets` tablets.
    CreateTable {
        /// The name.
        name: String,
        /// How many tablets.
        tablets: u32,
    },
    /// Drop a table.
    DropTable {
        /// The name.
        name: String,
    },
    /// Split the tablet holding `split_hash` there.
    SplitTablet {
        /// The table.
        table: String,
        /// Where.
        split_hash: u64,
    },
    /// Move the tablet holding `hash` to `to`.
    MigrateTablet {
        /// The table.
        table: String,
        /// Any hash in the tablet.
        hash: u64,
        /// The new owner.
        to: ServerId,
    },
}

impl Request {
    /// One line saying what it asks, for logs and failure reports.
    pub fn summary(&self) -> String {
        match self {
            Request::Enlist { addr, .. } => format!("enlist {addr}"),
            Request::CreateTable { name, tablets } => {
                format!("create-table {name:?} ({tablets} tablets)")
            }
            Request::DropTable { name } => format!("drop-table {name:?}"),
            Request::SplitTablet { table, split_hash } => {
                format!("split-tablet {table:?} at {split_hash:#x}")
            }
            Request::MigrateTablet { table, hash, to } => {
                format!("migrate-tablet {table:?} hash {hash:#x} to {to}")
            }
        }
    }
}

/// Why a request cannot even be proposed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The state says no (the same checks apply again at commit).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// No up master to own tablets.
    #[error("no master is up")]
    NoMasters,
    /// The request breaks a limit (names the limit).
    #[error(transparent)]
    Invalid(#[from] LimitError),
    /// The operation's record would not fit in a log entry.
    #[error("the operation's record cannot be written: {0}")]
    Record(#[from] RecordError),
}

impl Request {
    /// Checks the request against the limits ([`crate::cluster::limits`])
    /// without looking at any state: what every replica would refuse to
    /// apply is refused here, before it is proposed.
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Request::Enlist { addr, .. } => limits::check_addr(addr),
            Request::CreateTable { name, tablets } => {
                limits::check_table_name(name)?;
                limits::check_tablet_count(*tablets as usize)
            }
            Request::DropTable { name }
            | Request::SplitTablet { table: name, .. }
            | Request::MigrateTablet { table: name, .. } => limits::check_table_name(name),
        }
    }
}

/// The leader's volatile coordinator state (see the module docs).
#[derive(Debug)]
pub struct Coordinator {
    cfg: CoordinatorConfig,
    bugs: CoordinatorBugs,
    now: u64,
    term: u64,
    active: bool,
    /// Operations with a smaller seq were committed before this term.
    term_first_seq: Seq,
    /// The term `term_first_seq` is for.
    term_first_seq_term: Option<u64>,
    /// Highest configuration version each master acknowledged this term.
    acked: BTreeMap<ServerId, u64>,
    /// Last push to each master: (version, when).
    pushed: BTreeMap<ServerId, (u64, u64)>,
    /// Proposals not yet seen taking effect, by what they are about: when
    /// sent, and the log index they should land at or before.
    proposed: BTreeMap<ProposalKey, (u64, u64)>,
    /// The leader's last log index (the driver keeps it current).
    log_last_index: u64,
    /// Last heartbeat from each master (or when this leader took office).
    heard: BTreeMap<ServerId, u64>,
    /// When to look at each tracked master's `heard` again: a master is
    /// looked at about once per timeout, not once per tick (see
    /// [`Coordinator::expired`]).
    deadlines: std::collections::BinaryHeap<std::cmp::Reverse<(u64, ServerId)>>,
    /// The server list version `heard` and `deadlines` track.
    tracked_list: Option<u64>,
    /// The applied index and clock of the last look for crashed servers to
    /// remove.
    removal_scan: (u64, u64),
    /// The crashed servers of the server list at a version: what the
    /// removal scan walks (a walk over every server each retry period was
    /// a steady cost with 10,000 masters and none crashed).
    crashed_at: (Option<u64>, Vec<ServerId>),
    /// Masters that asked to leave (a drain): declared crashed now, not
    /// after the timeout. Each has stopped serving before asking (see
    /// [`Coordinator::on_leave`]). Masters only: bounded by the list.
    leaving: std::collections::BTreeSet<ServerId>,
    /// The clock and applied index of the last step that ran: a step with
    /// neither moved and nothing else changed has nothing to do (see
    /// [`Coordinator::step`]).
    stepped: (u64, u64),
    /// Something a step reads besides the clock and the state changed
    /// (leadership, a master leaving).
    dirty: bool,
    /// A push was acknowledged since the last step.
    acks_dirty: bool,
    /// Per incomplete operation, the first target (in its target order)
    /// that had not acknowledged it at the last look: every target before
    /// it had. Acknowledgements only grow within a term, so a step that
    /// only has new acknowledgements to look at resumes from there (see
    /// [`Coordinator::step`]).
    first_unacked: BTreeMap<Seq, ServerId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ProposalKey {
    Complete(Seq),
    Crash(ServerId),
    Remove(ServerId),
}

impl Coordinator {
    /// An inactive coordinator.
    pub fn new(cfg: CoordinatorConfig, bugs: CoordinatorBugs) -> Coordinator {
        Coordinator {
            cfg,
            bugs,
            now: 0,
            term: 0,
            active: false,
            term_first_seq: 0,
            term_first_seq_term: None,
            acked: BTreeMap::new(),
            pushed: BTreeMap::new(),
            proposed: BTreeMap::new(),
            log_last_index: 0,
            heard: BTreeMap::new(),
            deadlines: std::collections::BinaryHeap::new(),
            tracked_list: None,
            removal_scan: (u64::MAX, 0),
            crashed_at: (None, Vec::new()),
            leaving: std::collections::BTreeSet::new(),
            stepped: (u64::MAX, u64::MAX),
            dirty: true,
            acks_dirty: false,
            first_unacked: BTreeMap::new(),
        }
    }

    /// Whether this replica acts as the coordinator now.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The term it acts in.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Tells it whether this replica is the established leader of `term`
    /// (leader, with an entry of `term` applied). Becoming active forgets
    /// everything volatile: a new leader redoes every incomplete operation.
    pub fn set_leadership(&mut self, established: bool, term: u64, state: &ClusterState) {
        if established && self.term_first_seq_term != Some(term) {
            // The first activation in a term (a leader can fall behind
            // its commit index and become active again in the same term:
            // what it committed earlier in the term is still its own).
            self.term_first_seq = state.applied_index() + 1;
            self.term_first_seq_term = Some(term);
        }
        if established && (!self.active || term != self.term) {
            self.acked.clear();
            self.first_unacked.clear();
            self.pushed.clear();
            self.proposed.clear();
            // A master still leaving asks this leader again.
            self.leaving.clear();
            // Every master gets a full timeout from now.
            self.heard.clear();
            self.deadlines.clear();
            self.tracked_list = None;
            self.track(state);
        }
        // The replica says this after every batch of inputs: only a change
        // is news to the step.
        if established != self.active || term != self.term {
            self.dirty = true;
        }
        self.active = established;
        self.term = term;
    }

    /// The replica's last log index: a proposal is retried only once the
    /// log has applied past where it went (so a slow log is not flooded
    /// with copies of the same proposal).
    pub fn set_log_last_index(&mut self, last: u64) {
        self.log_last_index = last;
    }

    /// Advances the clock by one tick; returns what to do.
    pub fn tick(&mut self, state: &ClusterState) -> Vec<Action> {
        self.now += 1;
        self.step(state)
    }

    /// Reacts to newly applied records; returns what to do.
    pub fn on_applied(&mut self, state: &ClusterState) -> Vec<Action> {
        self.step(state)
    }

    /// A master's heartbeat.
    pub fn on_heartbeat(&mut self, from: ServerId) {
        // Only a server the leader tracks is heard (a heartbeat naming any
        // other id must not grow the table).
        if self.active {
            if let Some(at) = self.heard.get_mut(&from) {
                *at = self.now;
            }
        }
    }

    /// A master up in `state` asks to leave (it is being stopped): its
    /// tablets go to the others now, through the crash path (a recovery
    /// plan whose commit point hands them over), instead of after the
    /// master timeout. Safe only because the master stopped serving (gave
    /// up its lease) before asking: the new owners may serve as soon as
    /// they are pushed, with nobody else serving. Returns whether the
    /// crash will be proposed (false: this replica is not active, the
    /// server is not up, or no other master can take its tablets).
    pub fn on_leave(&mut self, server: ServerId, state: &ClusterState) -> bool {
        if !self.active || !state.is_up(server) || state.plan_recovery(server).is_none() {
            return false;
        }
        self.leaving.insert(server);
        self.dirty = true;
        true
    }

    /// A master acknowledged holding configuration `version` (or newer) in
    /// answer to a push of `term`.
    pub fn on_push_acked(&mut self, from: ServerId, term: u64, version: u64) {
        if self.active && term == self.term {
            let v = self.acked.entry(from).or_default();
            if version > *v {
                *v = version;
                self.acks_dirty = true;
            }
        }
    }

    /// Builds the commit record for a client's request, checking it against
    /// the applied state (the record's own precondition is checked again
    /// when it applies).
    pub fn prepare(&self, state: &ClusterState, req: &Request) -> Result<Record, RequestError> {
        req.validate()?;
        let op = match req {
            Request::Enlist {
                addr,
                services,
                nonce,
            } => Op::EnlistServer {
                addr: addr.clone(),
                services: *services,
                nonce: *nonce,
            },
            Request::CreateTable { name, tablets } => {
                if state.table(name).is_some() {
                    return Err(Rejection::NameTaken(name.clone()).into());
                }
                if state.tables().count() >= limits::TABLES_MAX {
                    let what = format!("{} tables", limits::TABLES_MAX);
                    return Err(Rejection::Limit(what).into());
                }
                let owners = state
                    .choose_owners(*tablets)
                    .ok_or(RequestError::NoMasters)?;
                Op::CreateTable {
                    name: name.clone(),
                    tablets: even_ranges(*tablets)
                        .into_iter()
                        .zip(owners)
                        .map(|((start_hash, end_hash), owner)| TabletSpec {
                            start_hash,
                            end_hash,
                            owner,
                        })
                        .collect(),
                }
            }
            Request::DropTable { name } => Op::DropTable { name: name.clone() },
            Request::SplitTablet { table, split_hash } => Op::SplitTablet {
                table: table.clone(),
                split_hash: *split_hash,
            },
            Request::MigrateTablet { table, hash, to } => Op::MigrateTablet {
                table: table.clone(),
                hash: *hash,
                to: *to,
            },
        };
        Ok(Record::Commit(op))
    }

    /// [`Coordinator::prepare`] for a client's operation with its
    /// exactly-once id: the record is a [`Record::ClientCommit`]. (The
    /// caller asks [`ClusterState::rpc_status`] first: an operation
    /// already applied is answered, not prepared again.)
    pub fn prepare_client(
        &self,
        state: &ClusterState,
        req: &Request,
        rpc: RpcId,
    ) -> Result<Record, RequestError> {
        match self.prepare(state, req)? {
            Record::Commit(op) => Ok(Record::ClientCommit { rpc, op }),
            other => Ok(other),
        }
    }

    /// Pushes each of `due` its configuration: whole, or (with
    /// [`CoordinatorConfig::region_parts`]) the part made of every table
    /// that an operation it has not acknowledged changed for it. A write
    /// acknowledged at the current version then means, as a whole one
    /// did, that the master holds every change up to it: tables outside
    /// the part changed for it only in operations it acknowledged
    /// already, each with a write that covered them.
    fn push_regions(
        &self,
        state: &ClusterState,
        due: &[ServerId],
        due_set: &BTreeSet<ServerId>,
        out: &mut Vec<Action>,
    ) {
        if due.is_empty() {
            return;
        }
        let mut parts: BTreeMap<ServerId, BTreeSet<TableId>> = BTreeMap::new();
        if self.cfg.region_parts {
            for p in state.incomplete().values() {
                let targets = p.targets.iter().filter(|t| {
                    due_set.contains(t) && self.acked.get(t).copied().unwrap_or(0) < p.version
                });
                for &t in targets {
                    if self.bugs.narrow_part {
                        parts.insert(t, tables_changed(p).collect());
                    } else {
                        parts.entry(t).or_default().extend(tables_changed(p));
                    }
                }
            }
        }
        let version = state.version();
        for &t in due {
            let Some(server) = state.server(t) else {
                continue;
            };
            let region = if self.cfg.region_parts {
                let tables = parts.get(&t).cloned().unwrap_or_default();
                state.region_part_for(t, self.term, &tables)
            } else {
                state.region_for(t, self.term)
            };
            let region = match region.encode() {
                Ok(region) => region,
                Err(e) => {
                    // Retried at the push interval: the operations stay
                    // incomplete (visible in `ctl ops`) until the
                    // configuration shrinks.
                    tracing::error!(server = %t, error = %e, "cannot encode the configuration region; push skipped");
                    continue;
                }
            };
            out.push(Action::Push {
                to: t,
                addr: server.addr.clone(),
                version,
                region,
            });
        }
    }

    fn due(&self, sent_at: Option<u64>, retry: u64) -> bool {
        sent_at.is_none_or(|at| self.now >= at + retry)
    }

    /// Proposes `record` unless a copy is still on its way: retried only
    /// when the log has applied past the copy's index without the effect
    /// (it was rejected, or lost with a leader change), or after a long
    /// silence if the log never reached that index (the proposal was
    /// refused before it reached the log). A copy still waiting in a long
    /// log is not proposed again however long it waits: with 10,000
    /// masters enlisting, every completion proposed again after 10 retry
    /// periods in a backlog longer than that grew the backlog, which made
    /// more of them wait that long (a simulated 3,000-master run applied
    /// 22,696 entries where 12,033 did the same work).
    fn propose_once(
        &mut self,
        key: ProposalKey,
        record: Record,
        state: &ClusterState,
        out: &mut Vec<Action>,
    ) {
        let retry = self.cfg.propose_retry_ticks;
        let due = match self.proposed.get(&key) {
            None => true,
            Some(&(at, index)) => {
                (state.applied_index() >= index && self.now >= at + retry)
                    || (self.log_last_index < index && self.now >= at + 10 * retry)
            }
        };
        if due {
            let proposing = out
                .iter()
                .filter(|a| matches!(a, Action::Propose(_)))
                .count() as u64;
            let index = self.log_last_index + 1 + proposing;
            self.proposed.insert(key, (self.now, index));
            out.push(Action::Propose(record));
        }
    }

    /// The up masters silent for their timeout: each tracked master has a
    /// time to be looked at in `deadlines`; only those due are looked at
    /// (one whose heartbeats came meanwhile is put off to its new
    /// deadline), so a tick costs what expires, not a walk of every master
    /// (which, ten thousand of them a hundred times a second, was most of
    /// the leader's CPU). A master found silent is looked at again a retry
    /// period later, until its crash takes effect. The timeout never
    /// decreases (`master_timeout_for`), so a deadline computed earlier is
    /// never later than the one in force. The masters tracked follow the
    /// server list: when its version moves, new masters start with a full
    /// timeout and masters no longer up are forgotten.
    fn expired(&mut self, state: &ClusterState) -> Vec<ServerId> {
        use std::cmp::Reverse;
        self.track(state);
        let timeout = self.cfg.master_timeout_for(state.server_slots());
        let mut silent = Vec::new();
        while let Some(&Reverse((due, m))) = self.deadlines.peek() {
            if due > self.now {
                break;
            }
            self.deadlines.pop();
            let Some(&heard) = self.heard.get(&m) else {
                continue; // no longer up
            };
            if self.now < heard + timeout {
                self.deadlines.push(Reverse((heard + timeout, m)));
                continue;
            }
            silent.push(m);
            let again = self.now + self.cfg.propose_retry_ticks.max(1);
            self.deadlines.push(Reverse((again, m)));
        }
        silent
    }

    /// Whether an incomplete operation is a migration (whose new owner's
    /// push waits for an acknowledgement of the old owner).
    fn has_migrations(&self, state: &ClusterState) -> bool {
        !self.bugs.grant_before_release
            && state
                .incomplete()
                .values()
                .any(|p| matches!(p.op, Op::MigrateTablet { .. }))
    }

    /// The acknowledgement-only step (see [`Coordinator::step`]): proposes
    /// the completion of every operation all of whose targets have now
    /// acknowledged it, reading each from where the last look stopped.
    fn complete_acknowledged(&mut self, state: &ClusterState, out: &mut Vec<Action>) {
        let mut done = Vec::new();
        for (&seq, p) in state.incomplete() {
            if self.bugs.no_roll_forward && seq < self.term_first_seq {
                continue;
            }
            let from = self.first_unacked.get(&seq).copied();
            let pending = p
                .targets
                .range(
                    from.unwrap_or(ServerId {
                        index: 0,
                        generation: 0,
                    })..,
                )
                .find(|t| self.acked.get(t).copied().unwrap_or(0) < p.version)
                .copied();
            match pending {
                Some(t) => {
                    self.first_unacked.insert(seq, t);
                }
                None => done.push(seq),
            }
        }
        for seq in done {
            self.propose_once(
                ProposalKey::Complete(seq),
                Record::Complete { seq },
                state,
                out,
            );
        }
    }

    /// Tracks the masters of the server list (see [`Coordinator::expired`]).
    fn track(&mut self, state: &ClusterState) {
        if self.tracked_list == Some(state.server_list_version()) {
            return;
        }
        self.tracked_list = Some(state.server_list_version());
        let timeout = self.cfg.master_timeout_for(state.server_slots());
        self.heard.retain(|m, _| state.is_up(*m));
        for m in state.up_masters() {
            if let std::collections::btree_map::Entry::Vacant(e) = self.heard.entry(m) {
                e.insert(self.now);
                self.deadlines
                    .push(std::cmp::Reverse((self.now + timeout, m)));
            }
        }
    }

    /// Masters that own a migrating tablet whose old owner is up and has
    /// not acknowledged a configuration without it in this term: they are
    /// pushed nothing yet (see the module docs).
    fn waiting_for_release(&self, state: &ClusterState) -> std::collections::BTreeSet<ServerId> {
        let mut waiting = std::collections::BTreeSet::new();
        if self.bugs.grant_before_release {
            return waiting;
        }
        for p in state.incomplete().values() {
            let Op::MigrateTablet { table, hash, to } = &p.op else {
                continue;
            };
            let Some(owner) = state
                .table(table)
                .and_then(|t| t.tablet_for(*hash))
                .map(|tb| tb.owner)
            else {
                continue;
            };
            let released = p.targets.iter().filter(|t| *t != to).all(|from| {
                *from == owner
                    || !state.is_up(*from)
                    || self.acked.get(from).copied().unwrap_or(0) >= p.version
            });
            if !released {
                waiting.insert(owner);
            }
        }
        waiting
    }

    /// What the coordinator does next. Runs on every tick and after every
    /// batch of inputs, so it returns at once when nothing it reads moved:
    /// not the clock, not the applied index, nothing else (`dirty`). A
    /// heartbeat alone does not count: it can only put a master's
    /// deadline off, and deadlines are checked once a tick. The scans
    /// over every master (failure detection, removal of the crashed) run
    /// once a tick, never per input: with thousands of masters
    /// heartbeating, a scan per heartbeat was most of the leader's CPU.
    fn step(&mut self, state: &ClusterState) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.active {
            return out;
        }
        let ticked = self.stepped.0 != self.now;
        let moved = ticked || self.dirty || self.stepped.1 != state.applied_index();
        if !moved && !std::mem::take(&mut self.acks_dirty) {
            return out;
        }
        if !moved && !self.has_migrations(state) {
            // Only acknowledgements came: nothing is due to be pushed (the
            // clock and the configuration did not move since the last
            // step, which pushed every target it had to), so the only news
            // is operations acknowledged by all their targets. Each is
            // read from its first target unacknowledged at the last look:
            // a table of 4096 tablets pushed to thousands of masters costs
            // its targets once in all, not once per acknowledgement (which
            // was quadratic, and starved the leader's heartbeats). A
            // migration's new owner is pushed when its old owner lets go,
            // which is an acknowledgement: those take the full step.
            self.complete_acknowledged(state, &mut out);
            return out;
        }
        self.stepped = (self.now, state.applied_index());
        self.dirty = false;
        self.acks_dirty = false;
        self.first_unacked
            .retain(|seq, _| state.incomplete().contains_key(seq));
        // Forget proposals that have taken effect.
        self.proposed.retain(|k, _| match k {
            ProposalKey::Complete(seq) => state.incomplete().contains_key(seq),
            ProposalKey::Crash(id) => state.is_up(*id),
            ProposalKey::Remove(id) => state
                .server(*id)
                .is_some_and(|s| s.status == ServerStatus::Crashed),
        });
        // Incomplete operations: push, then complete (roll-forward).
        let version = state.version();
        let waiting = self.waiting_for_release(state);
        // Targets to push this step, in the order found; their regions are
        // built once every operation has been looked at (a part covers the
        // tables of all the operations the target has not acknowledged).
        let mut due: Vec<ServerId> = Vec::new();
        let mut due_set: BTreeSet<ServerId> = BTreeSet::new();
        for (&seq, p) in state.incomplete() {
            if self.bugs.no_roll_forward && seq < self.term_first_seq {
                continue;
            }
            let mut done = true;
            for &t in &p.targets {
                if self.acked.get(&t).copied().unwrap_or(0) >= p.version {
                    continue;
                }
                if done {
                    self.first_unacked.insert(seq, t);
                }
                done = false;
                if waiting.contains(&t) {
                    continue; // until the old owner lets go (module docs)
                }
                // A push already sent at this operation's version or later
                // serves it: it is retried at the push interval, not again
                // at every version that follows. (Pushing every unanswered
                // target again whenever any operation applied was
                // quadratic: 10,000 masters enlisting, each waiting for its
                // first heartbeat to grant the leader's writes, were pushed
                // again at every one of the enlistments after theirs.)
                let last = self.pushed.get(&t).copied();
                let fresh = last.is_some_and(|(v, _)| v >= p.version);
                if (!fresh || self.due(last.map(|(_, at)| at), self.cfg.push_retry_ticks))
                    && state.server(t).is_some()
                    && due_set.insert(t)
                {
                    self.pushed.insert(t, (version, self.now));
                    due.push(t);
                }
            }
            if done || self.bugs.complete_before_push {
                self.propose_once(
                    ProposalKey::Complete(seq),
                    Record::Complete { seq },
                    state,
                    &mut out,
                );
            }
        }
        self.push_regions(state, &due, &due_set, &mut out);
        // Failure detection: masters leaving at once, the timeouts once
        // a tick.
        self.leaving.retain(|m| state.is_up(*m));
        let mut suspects: Vec<ServerId> = self.leaving.iter().copied().collect();
        if ticked {
            suspects.extend(self.expired(state));
        }
        for m in suspects {
            if let Some(plan) = state.plan_recovery(m) {
                let rec = Record::Commit(Op::ServerCrashed { id: m, plan });
                self.propose_once(ProposalKey::Crash(m), rec, state, &mut out);
            }
        }
        // Crashed servers whose recovery finished leave the list: looked
        // for at a tick after the state changed, or a retry period after
        // the last look (a removal proposed may have been lost).
        let retry = self.cfg.propose_retry_ticks.max(1);
        let (scanned_index, scanned_at) = self.removal_scan;
        if !ticked || (scanned_index == state.applied_index() && self.now < scanned_at + retry) {
            return out;
        }
        self.removal_scan = (state.applied_index(), self.now);
        let list = state.server_list_version();
        if self.crashed_at.0 != Some(list) {
            self.crashed_at = (
                Some(list),
                state
                    .servers()
                    .filter(|s| s.status == ServerStatus::Crashed)
                    .map(|s| s.id)
                    .collect(),
            );
        }
        for i in 0..self.crashed_at.1.len() {
            let id = self.crashed_at.1[i];
            let recovering = state
                .incomplete()
                .values()
                .any(|p| matches!(&p.op, Op::ServerCrashed { id: c, .. } if *c == id));
            if !recovering {
                let rec = Record::Commit(Op::ServerRemoved { id });
                self.propose_once(ProposalKey::Remove(id), rec, state, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;

/// The tables whose tablets an operation changed for its targets: its
/// table, or the tables of a recovery plan.
fn tables_changed(p: &Pending) -> impl Iterator<Item = TableId> + '_ {
    let plan = match &p.op {
        Op::ServerCrashed { plan, .. } => plan.as_slice(),
        _ => &[],
    };
    p.table.into_iter().chain(plan.iter().map(|r| r.table))
}
