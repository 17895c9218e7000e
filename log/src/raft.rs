//! The Raft state machine: inputs are [`RawNode::step`], [`RawNode::tick`],
//! [`RawNode::propose`] (and the other request methods); outputs are
//! [`Ready`] values. No I/O, no clock, no threads: the same code runs under
//! the deterministic simulator and in the real coordinator.
//!
//! Role behaviour is a `match` on [`Role`]; roles change only in the
//! `become_*` methods.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Config, ReadMode};
use crate::constants::{ENTRY_BYTES_MAX, PENDING_READS_MAX, SNAPSHOT_BYTES_MAX};
use crate::message::{Message, MessageBody};
use crate::progress::{Progress, ProgressState};
use crate::raft_log::RaftLog;
use crate::ready::Ready;
use crate::storage::Storage;
use crate::types::*;

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes; its term has not changed yet.
    PreCandidate,
    /// Asking for votes in its new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Why a request was refused. The caller may retry elsewhere or later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals; `leader` is the one this node knows.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node follows, if any.
        leader: Option<NodeId>,
    },
    /// Leadership is being handed over.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// The payload exceeds the entry size limit.
    #[error("entry of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Too many uncommitted bytes: the leader cannot commit fast enough.
    #[error("too many uncommitted bytes; retry later")]
    Backpressure,
    /// A configuration change is still uncommitted, or the leader has not
    /// committed an entry of its term yet.
    #[error("a configuration change is pending")]
    ConfChangePending,
    /// The change does not apply to the current configuration.
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(#[from] ConfChangeError),
    /// The target of a transfer is not a voter, or is this node.
    #[error("cannot transfer leadership to node {0}")]
    InvalidTransferee(NodeId),
    /// Too many reads waiting for confirmation.
    #[error("too many pending reads")]
    TooManyReads,
}

#[derive(Debug)]
struct PendingRead {
    seq: u64,
    index: Index,
    ctx: u64,
    from: NodeId,
    acks: BTreeSet<NodeId>,
}

#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_len: u64,
    data: BytesMut,
}

/// A Raft node over storage `S`.
pub struct RawNode<S: Storage> {
    cfg: Config,
    id: NodeId,
    /// Invariant: never decreases.
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader_id: Option<NodeId>,
    log: RaftLog<S>,
    /// The configuration as of the last applied configuration change.
    conf: ConfState,
    conf_applied_index: Index,
    /// Leader only: every member's progress, this node's included.
    progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_election_timeout: u64,
    tick_count: u64,
    rng: ChaCha8Rng,
    msgs: Vec<Message>,
    msgs_after_persist: Vec<Message>,
    read_states: Vec<ReadState>,
    /// Index of the latest configuration change proposed; no new one until
    /// it is applied.
    pending_conf_index: Index,
    lead_transferee: Option<NodeId>,
    /// Leader: (index, bytes) of its own uncommitted proposals.
    uncommitted: VecDeque<(Index, u64)>,
    uncommitted_bytes: u64,
    heartbeat_seq: u64,
    pending_reads: VecDeque<PendingRead>,
    reads_awaiting_commit: Vec<(u64, NodeId)>,
    incoming_snapshot: Option<IncomingSnapshot>,
    /// With lease reads: ticks left after start during which this node
    /// refuses (pre-)votes, as if it had just heard from a leader. It may
    /// have promised a leader its lease before a crash and forgotten.
    restart_lease_ticks: u64,
    prev_hard_state: HardState,
    ready_number: u64,
    advanced_number: u64,
}

impl<S: Storage> RawNode<S> {
    /// Starts a node from what `storage` holds (a new node, or a restart).
    /// The driver restores its state machine from `storage.snapshot()`; the
    /// committed entries after it are handed out again for applying.
    pub fn new(cfg: Config, storage: S) -> Result<RawNode<S>, String> {
        cfg.validate()?;
        let (hs, mut conf) = storage.initial_state();
        let log = RaftLog::new(storage, hs.commit);
        // The configuration takes effect when applied; on restart, every
        // committed change is known applied already.
        let first = log.first_index();
        if log.committed >= first {
            let ents = log
                .entries(first, log.committed + 1, u64::MAX)
                .map_err(|e| format!("reading the log on start: {e}"))?;
            for e in ents.iter().filter(|e| e.kind == EntryKind::ConfChange) {
                if let Ok(next) = ConfChange::decode(&e.data).and_then(|cc| conf.apply(cc)) {
                    conf = next;
                }
            }
        }
        let conf_applied_index = log.committed;
        let mut node = RawNode {
            id: cfg.id,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader_id: None,
            log,
            conf,
            conf_applied_index,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            tick_count: 0,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            pending_conf_index: 0,
            lead_transferee: None,
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            heartbeat_seq: 0,
            pending_reads: VecDeque::new(),
            reads_awaiting_commit: Vec::new(),
            incoming_snapshot: None,
            restart_lease_ticks: 0,
            prev_hard_state: hs,
            ready_number: 0,
            advanced_number: 0,
        };
        node.become_follower(hs.term, None);
        if let ReadMode::Lease { .. } = node.cfg.read_mode {
            node.restart_lease_ticks = node.cfg.election_timeout_ticks;
        }
        Ok(node)
    }

    // ----- accessors -------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The leader this node knows of.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }
    /// Whom this node voted for in its current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    /// The applied configuration.
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }
    /// The log (read-only).
    pub fn log(&self) -> &RaftLog<S> {
        &self.log
    }
    /// A leader's view of member `id`.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }
    /// Storage, for the driver's writes (see [`Ready`]).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }
    /// Gives the storage back (a crash in the simulator).
    pub fn into_storage(self) -> S {
        self.log.storage
    }
    /// The point a state-machine snapshot taken now describes: the applied
    /// index, its term, and the configuration as of it.
    pub fn snapshot_point(&self) -> SnapshotMeta {
        let index = self.log.applied;
        SnapshotMeta {
            index,
            term: self
                .log
                .term(index)
                .expect("the applied entry is in the log"),
            conf: self.conf.clone(),
        }
    }

    fn quorum(&self) -> usize {
        self.conf.voters.len() / 2 + 1
    }

    fn promotable(&self) -> bool {
        self.conf.voters.contains(&self.id)
    }

    fn committed_in_current_term(&self) -> bool {
        self.log
            .term(self.log.committed)
            .is_ok_and(|t| t == self.term)
    }

    // ----- sending ---------------------------------------------------------

    fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        self.msgs_after_persist.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    // ----- role changes ----------------------------------------------------

    fn reset(&mut self, term: Term) {
        if self.term != term {
            assert!(
                term > self.term,
                "term goes backwards: {} -> {term}",
                self.term
            );
            self.term = term;
            self.vote = None;
        }
        self.leader_id = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout = self.cfg.election_timeout_ticks
            + self.rng.random_range(0..self.cfg.election_timeout_ticks);
        self.votes.clear();
        self.progress.clear();
        self.lead_transferee = None;
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
        self.pending_reads.clear();
        self.reads_awaiting_commit.clear();
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader_id = leader;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        // A pre-candidate changes neither term nor vote.
        self.votes.clear();
        self.leader_id = None;
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.reset(self.term + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader_id = Some(self.id);
        let last = self.log.last_index();
        let members: Vec<NodeId> = self.conf.members().collect();
        for id in members {
            self.progress.insert(id, Progress::new(last + 1));
        }
        if let Some(me) = self.progress.get_mut(&self.id) {
            me.match_index = self.log.persisted_last();
            me.become_replicate();
            me.recent_active = true;
        }
        // No configuration change until an entry of this term commits: this
        // is the fix to the single-server membership change bug.
        self.pending_conf_index = last + 1;
        self.append_entries(vec![(EntryKind::Empty, Bytes::new())]);
        self.bcast_append();
    }

    fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        if !self.promotable() {
            return;
        }
        let (term, body) = if pre_vote {
            self.become_pre_candidate();
            self.votes.insert(self.id, true); // a pre-vote changes no state
            let body = MessageBody::PreVote {
                last_index: self.log.last_index(),
                last_term: self.log.last_term(),
            };
            (self.term + 1, body)
        } else {
            self.become_candidate();
            // Our own vote counts only once it is durable.
            let me = self.id;
            self.send_after_persist(me, MessageBody::VoteResp { reject: false });
            let body = MessageBody::Vote {
                last_index: self.log.last_index(),
                last_term: self.log.last_term(),
                transfer,
            };
            (self.term, body)
        };
        let voters: Vec<NodeId> = self
            .conf
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.id)
            .collect();
        for v in voters {
            self.send(v, term, body.clone());
        }
        if pre_vote {
            self.poll();
        }
    }

    /// Counts votes; wins or loses the election when a quorum has spoken.
    fn poll(&mut self) {
        let granted = self
            .conf
            .voters
            .iter()
            .filter(|v| self.votes.get(v) == Some(&true))
            .count();
        let rejected = self
            .conf
            .voters
            .iter()
            .filter(|v| self.votes.get(v) == Some(&false))
            .count();
        if granted >= self.quorum() {
            match self.role {
                Role::PreCandidate => self.campaign(false, false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if rejected >= self.quorum() {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    // ----- inputs ----------------------------------------------------------

    /// Advances the node's clock by one tick.
    pub fn tick(&mut self) {
        self.tick_count += 1;
        self.restart_lease_ticks = self.restart_lease_ticks.saturating_sub(1);
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
                self.election_elapsed = 0;
                self.campaign(self.cfg.pre_vote, false);
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                let active = self
                    .conf
                    .voters
                    .iter()
                    .filter(|v| {
                        **v == self.id || self.progress.get(v).is_some_and(|p| p.recent_active)
                    })
                    .count();
                if active < self.quorum() {
                    let term = self.term;
                    self.become_follower(term, None);
                    return;
                }
                for (id, p) in self.progress.iter_mut() {
                    if *id != self.id {
                        p.recent_active = false;
                    }
                }
            }
            // A transfer that did not finish within an election timeout is
            // abandoned; proposals resume.
            self.lead_transferee = None;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    /// Feeds a message from a peer (or one of this node's own deferred
    /// messages). Messages for another node are a driver bug.
    pub fn step(&mut self, m: Message) {
        assert_eq!(
            m.to, self.id,
            "message for {} delivered to {}",
            m.to, self.id
        );
        if m.term > self.term {
            if let MessageBody::PreVote { .. } | MessageBody::Vote { .. } = m.body {
                let transfer = matches!(m.body, MessageBody::Vote { transfer: true, .. });
                let in_lease = self.cfg.check_quorum
                    && ((self.leader_id.is_some()
                        && self.election_elapsed < self.cfg.election_timeout_ticks)
                        || self.restart_lease_ticks > 0);
                if in_lease && !transfer {
                    return; // we hear from a leader: do not help depose it
                }
            }
            match m.body {
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResp { reject: false } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. } => {
                    // Tell a stale leader about the newer term (with
                    // check-quorum or pre-vote, it would never learn it from
                    // a vote request).
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::HeartbeatResp {
                            seq: 0,
                            sent_tick: 0,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, self.term, MessageBody::PreVoteResp { reject: true });
                }
                _ => {}
            }
            return;
        }

        match m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(&m, last_index, last_term, true),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(&m, last_index, last_term, false),
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    fn handle_vote_request(&mut self, m: &Message, last_index: Index, last_term: Term, pre: bool) {
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader_id.is_none())
            || (pre && m.term > self.term);
        if can_vote && self.log.is_up_to_date(last_index, last_term) {
            if pre {
                self.send(m.from, m.term, MessageBody::PreVoteResp { reject: false });
            } else {
                self.election_elapsed = 0;
                self.vote = Some(m.from);
                if self.cfg.bugs.forget_vote {
                    self.send(m.from, self.term, MessageBody::VoteResp { reject: false });
                } else {
                    self.send_after_persist(m.from, MessageBody::VoteResp { reject: false });
                }
            }
        } else {
            let body = if pre {
                MessageBody::PreVoteResp { reject: true }
            } else {
                MessageBody::VoteResp { reject: true }
            };
            self.send(m.from, self.term, body);
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.election_elapsed = 0;
                self.leader_id = Some(m.from);
                self.handle_append(m.from, prev_index, prev_term, &entries, commit);
            }
            MessageBody::Heartbeat {
                commit,
                seq,
                sent_tick,
            } => {
                self.election_elapsed = 0;
                self.leader_id = Some(m.from);
                // The leader sends min(its commit, our match): safe to take.
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(
                    m.from,
                    self.term,
                    MessageBody::HeartbeatResp { seq, sent_tick },
                );
            }
            MessageBody::Snapshot {
                meta,
                total_len,
                offset,
                data,
            } => {
                self.election_elapsed = 0;
                self.leader_id = Some(m.from);
                self.handle_snapshot_chunk(m.from, meta, total_len, offset, data);
            }
            MessageBody::TimeoutNow => self.campaign(false, true),
            MessageBody::ReadIndexResp { ctx, index } => {
                self.read_states.push(ReadState { index, ctx })
            }
            _ => {} // stale answers to a role we no longer have
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => {
                let term = self.term;
                self.become_follower(term, Some(m.from));
                self.step_follower(m);
            }
            MessageBody::PreVoteResp { reject } if self.role == Role::PreCandidate => {
                self.votes.entry(m.from).or_insert(!reject);
                self.poll();
            }
            MessageBody::VoteResp { reject } if self.role == Role::Candidate => {
                self.votes.entry(m.from).or_insert(!reject);
                self.poll();
            }
            _ => {}
        }
    }

    fn step_leader(&mut self, m: Message) {
        if let Some(p) = self.progress.get_mut(&m.from) {
            p.recent_active = true;
        }
        match m.body {
            MessageBody::AppendResp {
                reject,
                index,
                hint_index,
                hint_term,
            } => {
                self.handle_append_resp(m.from, reject, index, hint_index, hint_term);
            }
            MessageBody::HeartbeatResp { seq, sent_tick } => {
                self.handle_heartbeat_resp(m.from, seq, sent_tick)
            }
            MessageBody::SnapshotResp {
                index,
                next_offset,
                reject,
            } => {
                self.handle_snapshot_resp(m.from, index, next_offset, reject);
            }
            MessageBody::ReadIndex { ctx } if self.conf.members().any(|id| id == m.from) => {
                self.handle_read_request(ctx, m.from);
            }
            _ => {}
        }
    }

    // ----- replication: follower side -------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
        commit: Index,
    ) {
        let ack = |node: &mut Self, index: Index| {
            let body = MessageBody::AppendResp {
                reject: false,
                index,
                hint_index: 0,
                hint_term: 0,
            };
            if node.cfg.bugs.ack_before_persist {
                let term = node.term;
                node.send(from, term, body);
            } else {
                node.send_after_persist(from, body);
            }
        };
        if prev_index < self.log.committed {
            // Everything up to our commit point matches the leader's log.
            let c = self.log.committed;
            ack(self, c);
            return;
        }
        if self.log.match_term(prev_index, prev_term) {
            let last_new = if entries.is_empty() {
                prev_index
            } else {
                self.log.maybe_append_from_leader(entries)
            };
            self.log.commit_to(commit.min(last_new));
            ack(self, last_new);
        } else {
            let hint = prev_index.min(self.log.last_index());
            let (hint_index, hint_term) = self.log.find_conflict_by_term(hint, prev_term);
            let body = MessageBody::AppendResp {
                reject: true,
                index: prev_index,
                hint_index,
                hint_term,
            };
            self.send(from, self.term, body);
        }
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        total_len: u64,
        offset: u64,
        data: Bytes,
    ) {
        let index = meta.index;
        if total_len > SNAPSHOT_BYTES_MAX as u64 || offset + data.len() as u64 > total_len {
            self.send(
                from,
                self.term,
                MessageBody::SnapshotResp {
                    index,
                    next_offset: 0,
                    reject: true,
                },
            );
            return;
        }
        if offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                total_len,
                data: BytesMut::with_capacity(total_len as usize),
            });
        }
        let expected = match &self.incoming_snapshot {
            Some(inc) if inc.meta == meta && inc.total_len == total_len => inc.data.len() as u64,
            _ => 0,
        };
        if offset != expected {
            self.send(
                from,
                self.term,
                MessageBody::SnapshotResp {
                    index,
                    next_offset: expected,
                    reject: false,
                },
            );
            return;
        }
        let inc = self
            .incoming_snapshot
            .as_mut()
            .expect("started above or matched");
        inc.data.extend_from_slice(&data);
        if (inc.data.len() as u64) < total_len {
            let next_offset = inc.data.len() as u64;
            self.send(
                from,
                self.term,
                MessageBody::SnapshotResp {
                    index,
                    next_offset,
                    reject: false,
                },
            );
            return;
        }
        let inc = self.incoming_snapshot.take().expect("present");
        let snapshot = Snapshot {
            meta: inc.meta,
            data: inc.data.freeze(),
        };
        self.install_snapshot(from, snapshot);
    }

    fn install_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        let ack = |node: &mut Self, index: Index| {
            node.send_after_persist(
                from,
                MessageBody::AppendResp {
                    reject: false,
                    index,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
        };
        if index <= self.log.committed {
            let c = self.log.committed;
            ack(self, c);
            return;
        }
        if self.log.match_term(index, term) {
            // We have the entry: fast-forward the commit point instead.
            self.log.commit_to(index);
            ack(self, index);
            return;
        }
        self.conf = snapshot.meta.conf.clone();
        self.conf_applied_index = index;
        self.pending_conf_index = 0;
        self.log.restore(snapshot);
        ack(self, index);
    }

    // ----- replication: leader side ---------------------------------------

    fn append_entries(&mut self, items: Vec<(EntryKind, Bytes)>) -> Index {
        let mut last = self.log.last_index();
        let mut ents = Vec::with_capacity(items.len());
        for (kind, data) in items {
            last += 1;
            let bytes = data.len() as u64;
            self.uncommitted.push_back((last, bytes));
            self.uncommitted_bytes += bytes;
            ents.push(Entry {
                term: self.term,
                index: last,
                kind,
                data,
            });
        }
        self.log.append(&ents);
        // Our own acknowledgement, once durable.
        let me = self.id;
        self.msgs_after_persist
            .retain(|m| !(m.to == me && matches!(m.body, MessageBody::AppendResp { .. })));
        self.send_after_persist(
            me,
            MessageBody::AppendResp {
                reject: false,
                index: last,
                hint_index: 0,
                hint_term: 0,
            },
        );
        last
    }

    fn bcast_append(&mut self) {
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in peers {
            self.maybe_send_append(id, true);
        }
    }

    /// Sends an append (or a snapshot) to `to` if flow control allows.
    /// Returns true if an append with entries was sent.
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused(self.cfg.inflight_appends_max) {
            return false;
        }
        let next = pr.next_index;
        let prev_index = next - 1;
        let prev_term = self.log.term(prev_index);
        let entries = self.log.entries(
            next,
            next + self.cfg.append_entries_max as Index,
            self.cfg.append_bytes_max,
        );
        let (Ok(prev_term), Ok(entries)) = (prev_term, entries) else {
            self.send_snapshot(to);
            return false;
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let last = entries.last().map_or(prev_index, |e| e.index);
        let had = !entries.is_empty();
        self.progress
            .get_mut(&to)
            .expect("checked")
            .sent_entries(last, had, self.tick_count);
        let commit = self.log.committed;
        let pr = self.progress.get_mut(&to).expect("checked");
        pr.sent_commit = pr.sent_commit.max(commit.min(last));
        self.send(
            to,
            self.term,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        had
    }

    fn send_snapshot(&mut self, to: NodeId) {
        let snap = self.log.storage.snapshot();
        let index = snap.meta.index;
        self.progress
            .get_mut(&to)
            .expect("member")
            .become_snapshot(index);
        self.send_snapshot_chunk(to, &snap, 0);
    }

    fn send_snapshot_chunk(&mut self, to: NodeId, snap: &Snapshot, offset: u64) {
        let total = snap.data.len() as u64;
        let end = (offset + self.cfg.snapshot_chunk_bytes as u64).min(total);
        let data = snap.data.slice(offset as usize..end as usize);
        let body = MessageBody::Snapshot {
            meta: snap.meta.clone(),
            total_len: total,
            offset,
            data,
        };
        self.send(to, self.term, body);
    }

    fn handle_append_resp(
        &mut self,
        from: NodeId,
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let last = self.log.last_index();
        if reject {
            let probe = if hint_term > 0 {
                self.log.find_conflict_by_term(hint_index, hint_term).0
            } else {
                hint_index
            };
            let Some(pr) = self.progress.get_mut(&from) else {
                return;
            };
            if pr.maybe_decr_to(index, probe + 1) {
                self.maybe_send_append(from, true);
            }
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let index = index.min(last);
        if !pr.maybe_update(index, self.tick_count) {
            return;
        }
        if from != self.id {
            match pr.state {
                ProgressState::Probe => pr.become_replicate(),
                ProgressState::Snapshot { index: si, .. } if pr.match_index >= si => {
                    pr.become_replicate()
                }
                _ => {}
            }
        }
        let matched = pr.match_index;
        if self.maybe_commit() {
            self.bcast_append();
        } else if from != self.id {
            while self.maybe_send_append(from, false) {}
            // A follower that caught up after the commit point moved learns
            // it now, not a heartbeat later (its reads and applies wait on it).
            let pr = &self.progress[&from];
            if pr.sent_commit < self.log.committed.min(pr.match_index) {
                self.maybe_send_append(from, true);
            }
        }
        if self.lead_transferee == Some(from) && matched == self.log.last_index() {
            self.send(from, self.term, MessageBody::TimeoutNow);
        }
    }

    fn handle_heartbeat_resp(&mut self, from: NodeId, seq: u64, sent_tick: u64) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.acked_tick = pr.acked_tick.max(sent_tick);
        // The follower is reachable but our appends went unanswered: they
        // were lost (a TCP transport reports this as a broken connection;
        // a lossy network does not). Find the match point again.
        if pr.is_stalled(self.tick_count, 2 * self.cfg.heartbeat_interval_ticks + 2) {
            pr.become_probe();
        }
        match pr.state {
            ProgressState::Probe => pr.probe_sent = false,
            ProgressState::Snapshot { acked_offset, .. } => {
                // Retransmit the chunk that may have been lost.
                let snap = self.log.storage.snapshot();
                self.send_snapshot_chunk(from, &snap, acked_offset);
            }
            ProgressState::Replicate => {}
        }
        if self.progress[&from].match_index < self.log.last_index() {
            self.maybe_send_append(from, true);
        }
        // Read-index confirmation: an answer to round `seq` confirms every
        // read registered before it was sent.
        for r in self.pending_reads.iter_mut().take_while(|r| r.seq <= seq) {
            r.acks.insert(from);
        }
        self.release_reads();
    }

    fn handle_snapshot_resp(&mut self, from: NodeId, index: Index, next_offset: u64, reject: bool) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let ProgressState::Snapshot { index: sent, .. } = pr.state else {
            return;
        };
        if index != sent {
            return;
        }
        if reject {
            pr.become_probe();
            return;
        }
        pr.state = ProgressState::Snapshot {
            index: sent,
            acked_offset: next_offset,
        };
        let snap = self.log.storage.snapshot();
        if snap.meta.index != sent {
            // Compacted again meanwhile: start over with the newer one.
            self.send_snapshot(from);
        } else if next_offset < snap.data.len() as u64 {
            self.send_snapshot_chunk(from, &snap, next_offset);
        }
    }

    /// Advances the commit index to what a quorum of voters has durably
    /// (current-term rule: only an entry of this term commits by counting).
    fn maybe_commit(&mut self) -> bool {
        let mut matched: Vec<Index> = self
            .conf
            .voters
            .iter()
            .map(|v| self.progress.get(v).map_or(0, |p| p.match_index))
            .collect();
        if matched.is_empty() {
            return false;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let q = matched[self.quorum() - 1];
        if q <= self.log.committed {
            return false;
        }
        let term_ok = self.log.term(q).is_ok_and(|t| t == self.term);
        if !term_ok && !self.cfg.bugs.commit_previous_term {
            return false;
        }
        self.log.commit_to(q);
        while self.uncommitted.front().is_some_and(|&(i, _)| i <= q) {
            let (_, b) = self.uncommitted.pop_front().expect("checked");
            self.uncommitted_bytes -= b;
        }
        if self.committed_in_current_term() && !self.reads_awaiting_commit.is_empty() {
            for (ctx, from) in std::mem::take(&mut self.reads_awaiting_commit) {
                self.handle_read_request(ctx, from);
            }
        }
        true
    }

    fn bcast_heartbeat(&mut self) {
        let peers: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, p)| (*id, p.match_index))
            .collect();
        for (id, matched) in peers {
            let commit = self.log.committed.min(matched);
            if let Some(pr) = self.progress.get_mut(&id) {
                pr.sent_commit = pr.sent_commit.max(commit);
            }
            let body = MessageBody::Heartbeat {
                commit,
                seq: self.heartbeat_seq,
                sent_tick: self.tick_count,
            };
            self.send(id, self.term, body);
        }
    }

    // ----- reads -----------------------------------------------------------

    fn handle_read_request(&mut self, ctx: u64, from: NodeId) {
        if !self.committed_in_current_term() {
            // The commit index of a new leader may lag (thesis §6.4 step 1).
            if self.reads_awaiting_commit.len() < PENDING_READS_MAX {
                self.reads_awaiting_commit.push((ctx, from));
            }
            return;
        }
        let index = self.log.committed;
        if self.conf.voters.len() == 1 && self.promotable() {
            self.answer_read(ctx, from, index);
            return;
        }
        if let ReadMode::Lease { drift_margin_ticks } = self.cfg.read_mode {
            if self.lease_valid(drift_margin_ticks) {
                self.answer_read(ctx, from, index);
                return;
            }
        }
        if self.pending_reads.len() >= PENDING_READS_MAX {
            return;
        }
        self.heartbeat_seq += 1;
        let mut acks = BTreeSet::new();
        acks.insert(self.id);
        self.pending_reads.push_back(PendingRead {
            seq: self.heartbeat_seq,
            index,
            ctx,
            from,
            acks,
        });
        self.bcast_heartbeat();
    }

    fn lease_valid(&self, drift_margin_ticks: u64) -> bool {
        let mut acked: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|v| {
                if *v == self.id {
                    self.tick_count
                } else {
                    self.progress.get(v).map_or(0, |p| p.acked_tick)
                }
            })
            .collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let start = acked[self.quorum() - 1];
        start > 0 && self.tick_count - start < self.cfg.election_timeout_ticks - drift_margin_ticks
    }

    fn release_reads(&mut self) {
        let quorum = self.quorum();
        while let Some(front) = self.pending_reads.front() {
            let acked = front
                .acks
                .iter()
                .filter(|id| self.conf.voters.contains(id))
                .count();
            if acked < quorum {
                break;
            }
            let r = self.pending_reads.pop_front().expect("checked");
            self.answer_read(r.ctx, r.from, r.index);
        }
    }

    fn answer_read(&mut self, ctx: u64, from: NodeId, index: Index) {
        if from == self.id {
            self.read_states.push(ReadState { index, ctx });
        } else {
            self.send(from, self.term, MessageBody::ReadIndexResp { ctx, index });
        }
    }

    // ----- requests --------------------------------------------------------

    /// Proposes a command. Returns the index it will have if committed (at
    /// this node's current term).
    pub fn propose(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        self.check_can_propose(data.len())?;
        let index = self.append_entries(vec![(EntryKind::Normal, data)]);
        self.bcast_append();
        Ok(index)
    }

    /// Proposes several commands as one batch (one append, one persist).
    pub fn propose_batch(&mut self, batch: Vec<Bytes>) -> Result<Index, ProposeError> {
        let total: usize = batch.iter().map(Bytes::len).sum();
        self.check_can_propose(total)?;
        if let Some(big) = batch.iter().find(|b| b.len() > ENTRY_BYTES_MAX) {
            return Err(ProposeError::TooLarge(big.len()));
        }
        let index =
            self.append_entries(batch.into_iter().map(|d| (EntryKind::Normal, d)).collect());
        self.bcast_append();
        Ok(index)
    }

    fn check_can_propose(&self, len: usize) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader_id,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if len > ENTRY_BYTES_MAX {
            return Err(ProposeError::TooLarge(len));
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + len as u64 > self.cfg.uncommitted_bytes_max
        {
            return Err(ProposeError::Backpressure);
        }
        Ok(())
    }

    /// Proposes a single-server membership change. Refused while another
    /// is pending, and until this leader has committed an entry of its term.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Index, ProposeError> {
        self.check_can_propose(ConfChange::ENCODED_LEN)?;
        if self.pending_conf_index > self.log.applied || !self.committed_in_current_term() {
            return Err(ProposeError::ConfChangePending);
        }
        self.conf.apply(cc)?;
        let index = self.append_entries(vec![(EntryKind::ConfChange, cc.encode())]);
        self.pending_conf_index = index;
        self.bcast_append();
        Ok(index)
    }

    /// Hands leadership to `to`: it is brought up to date, then told to
    /// campaign at once (TimeoutNow). Proposals are refused meanwhile; the
    /// transfer is abandoned after an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader_id,
            });
        }
        if to == self.id || !self.conf.voters.contains(&to) {
            return Err(ProposeError::InvalidTransferee(to));
        }
        if self.lead_transferee == Some(to) {
            return Ok(());
        }
        self.lead_transferee = Some(to);
        self.election_elapsed = 0;
        if self.progress[&to].match_index == self.log.last_index() {
            self.send(to, self.term, MessageBody::TimeoutNow);
        } else {
            self.maybe_send_append(to, true);
        }
        Ok(())
    }

    /// Asks for a linearizable read point tagged `ctx`; it arrives in a
    /// later [`Ready::read_states`] (or never, if leadership is lost: the
    /// caller times out and retries).
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => {
                if self.pending_reads.len() >= PENDING_READS_MAX {
                    return Err(ProposeError::TooManyReads);
                }
                self.handle_read_request(ctx, self.id);
                Ok(())
            }
            _ => match self.leader_id {
                Some(leader) => {
                    self.send(leader, self.term, MessageBody::ReadIndex { ctx });
                    Ok(())
                }
                None => Err(ProposeError::NotLeader { leader: None }),
            },
        }
    }

    /// Starts an election now (as if the election timeout fired).
    pub fn campaign_now(&mut self) {
        if self.role != Role::Leader {
            self.campaign(self.cfg.pre_vote, false);
        }
    }

    // ----- output ----------------------------------------------------------

    /// True if [`RawNode::ready`] has something.
    pub fn has_ready(&self) -> bool {
        let u = &self.log.unstable;
        !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || !self.read_states.is_empty()
            || (u.snapshot.is_some() && !u.snapshot_in_progress)
            || !self.log.next_unstable().is_empty()
            || self.hard_state() != self.prev_hard_state
            || (u.snapshot.is_none()
                && self.log.committed.min(self.log.persisted_last()) > self.log.applied)
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Collects what the driver must do now (see [`Ready`]).
    pub fn ready(&mut self) -> Ready {
        self.ready_number += 1;
        let mut rd = Ready {
            number: self.ready_number,
            ..Ready::default()
        };

        // Committed entries first: applying a configuration change may
        // produce messages that belong in this ready.
        if let Some(s) = &self.log.unstable.snapshot {
            if !self.log.unstable.snapshot_in_progress {
                rd.snapshot = Some(s.clone());
                rd.snapshot_index = Some(s.meta.index);
                self.log.applied = s.meta.index;
            }
        } else {
            let hi = self.log.committed.min(self.log.persisted_last());
            if hi > self.log.applied {
                let ents = self
                    .log
                    .entries(self.log.applied + 1, hi + 1, u64::MAX)
                    .expect("committed, durable entries above applied are in the log");
                self.log.applied = hi;
                for e in ents.iter().filter(|e| e.kind == EntryKind::ConfChange) {
                    self.apply_conf_change(e);
                }
                rd.committed_entries = ents;
            }
        }

        rd.entries = self.log.next_unstable().to_vec();
        rd.last_entry = rd.entries.last().map(|e| (e.index, e.term));
        self.log.accept_unstable();

        let hs = self.hard_state();
        if hs != self.prev_hard_state {
            rd.must_sync =
                hs.term != self.prev_hard_state.term || hs.vote != self.prev_hard_state.vote;
            let mut persisted = hs;
            if self.cfg.bugs.forget_vote {
                persisted.vote = None;
            }
            rd.hard_state = Some(persisted);
            self.prev_hard_state = hs;
        }
        rd.must_sync |= !rd.entries.is_empty() || rd.snapshot.is_some();

        rd.messages = std::mem::take(&mut self.msgs);
        let me = self.id;
        let (mine, theirs): (Vec<Message>, Vec<Message>) =
            std::mem::take(&mut self.msgs_after_persist)
                .into_iter()
                .partition(|m| m.to == me);
        rd.self_messages = mine;
        rd.persisted_messages = theirs;
        rd.read_states = std::mem::take(&mut self.read_states);
        rd
    }

    /// Acknowledges that everything `rd` asked to persist is durable (and
    /// its persisted messages sent). Delivers this node's own deferred
    /// messages (its vote for itself, its own append acknowledgement).
    pub fn advance(&mut self, rd: Ready) {
        assert_eq!(
            rd.number,
            self.advanced_number + 1,
            "readies must be advanced in order"
        );
        self.advanced_number = rd.number;
        if let Some(index) = rd.snapshot_index {
            self.log.stable_snapshot_to(index);
        }
        if let Some((index, term)) = rd.last_entry {
            self.log.stable_to(index, term);
        }
        for m in rd.self_messages {
            self.step(m);
        }
    }

    fn apply_conf_change(&mut self, e: &Entry) {
        if e.index <= self.conf_applied_index {
            return; // applied before a restart
        }
        self.conf_applied_index = e.index;
        let Ok(next) = ConfChange::decode(&e.data).and_then(|cc| self.conf.apply(cc)) else {
            // Validated when proposed; a committed change that does not
            // apply is a no-op on every replica alike.
            return;
        };
        self.conf = next;
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let members: BTreeSet<NodeId> = self.conf.members().collect();
        self.progress.retain(|id, _| members.contains(id));
        let mut added = Vec::new();
        for id in members {
            self.progress.entry(id).or_insert_with(|| {
                added.push(id);
                Progress::new(last + 1)
            });
        }
        if !self.conf.voters.contains(&self.id) {
            // Removed ourselves: step down; the others elect a leader.
            let term = self.term;
            self.become_follower(term, None);
            return;
        }
        if self
            .lead_transferee
            .is_some_and(|t| !self.conf.voters.contains(&t))
        {
            self.lead_transferee = None;
        }
        // A smaller quorum may commit more; new members need the log.
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            for id in added {
                self.maybe_send_append(id, true);
            }
        }
    }
}
