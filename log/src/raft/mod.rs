//! The Raft state machine: inputs are [`RawNode::step`], [`RawNode::tick`],
//! [`RawNode::propose`] (and the other request methods); outputs are
//! [`Ready`] values. No I/O, no clock, no threads: the same code runs under
//! the deterministic simulator and in the real coordinator.
//!
//! Role behaviour is a `match` on [`Role`]; roles change only in the
//! `become_*` methods. This module holds the node's state, the message
//! dispatch, the request API and the `Ready` output; the protocol phases
//! live beside it: `election` (roles, votes, the leader's tick),
//! `replication` (appends, acknowledgements, the commit rule, heartbeats),
//! `snapshot` (InstallSnapshot in chunks) and `read` (ReadIndex, leases).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{Config, ReadMode};
use crate::constants::{ENTRY_BYTES_MAX, PENDING_READS_MAX};
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::raft_log::RaftLog;
use crate::ready::Ready;
use crate::storage::Storage;
use crate::types::*;

mod election;
mod read;
mod replication;
mod snapshot;

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

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// The leader a refusal names, in words.
fn leader_text(leader: &Option<NodeId>) -> String {
    leader.map_or_else(|| "no leader known".to_string(), |l| format!("leader: {l}"))
}

/// Why a request was refused. The caller may retry elsewhere or later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals; `leader` is the one this node knows.
    #[error("not the leader ({})", leader_text(.leader))]
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
    /// The term of the leader sending it.
    term: Term,
    data: BytesMut,
}

/// Why a [`RawNode`] could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The committed entries could not be read back from storage.
    #[error("reading the log on start: {0}")]
    Log(crate::storage::StorageError),
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
    /// Leader: entries were appended since the last ready; they go to the
    /// followers when the ready is taken, one append per follower carrying
    /// them all (however many proposals came in between).
    bcast_pending: bool,
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
    /// Messages refused by [`RawNode::step`], and the latest reason.
    refused: u64,
    /// Elections this node started (pre-vote or vote rounds it began).
    campaigns: u64,
    last_refusal: Option<(NodeId, Refusal)>,
    /// Followers found to have lost entries they acknowledged (leader only;
    /// see `handle_append_resp`), and the latest: (follower, the match
    /// index we had, what it holds).
    lost_matches: u64,
    last_lost_match: Option<(NodeId, Index, Index)>,
}

/// Why [`RawNode::step`] refused a message (it changed nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Addressed to another node.
    #[error("addressed to node {0}")]
    Misaddressed(NodeId),
    /// Its term is above [`crate::constants::TERM_MAX`].
    #[error("term {0} is above the ceiling")]
    TermCeiling(Term),
    /// Its term is more than [`crate::constants::TERM_JUMP_MAX`] above
    /// ours.
    #[error("term {theirs} jumps more than 2^32 past ours ({ours})")]
    TermJump {
        /// The message's term.
        theirs: Term,
        /// This node's.
        ours: Term,
    },
    /// The sender is not in this node's configuration, and the message is
    /// not one a leader of no newer term than ours sends (a replica that
    /// lags behind a membership change hears its new leader through those).
    #[error("the sender is not a member of the configuration")]
    NotAMember,
}

impl<S: Storage> RawNode<S> {
    /// Starts a node from what `storage` holds (a new node, or a restart).
    /// The driver restores its state machine from `storage.snapshot()`; the
    /// committed entries after it are handed out again for applying.
    pub fn new(cfg: Config, storage: S) -> Result<RawNode<S>, StartError> {
        cfg.validate()?;
        let (hs, mut conf) = storage.initial_state();
        let log = RaftLog::new(storage, hs.commit);
        // The configuration takes effect when applied; on restart, every
        // committed change is known applied already.
        let first = log.first_index();
        if log.committed >= first {
            let ents = log
                .entries(first, log.committed + 1, u64::MAX)
                .map_err(StartError::Log)?;
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
            bcast_pending: false,
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
            refused: 0,
            campaigns: 0,
            last_refusal: None,
            lost_matches: 0,
            last_lost_match: None,
            ready_number: 0,
            advanced_number: 0,
        };
        node.become_follower(hs.term, None);
        if let ReadMode::Lease { .. } = node.cfg.read_mode {
            node.restart_lease_ticks = node.cfg.election_timeout_ticks;
        }
        Ok(node)
    }

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

    /// Storage (read only).
    pub fn storage(&self) -> &S {
        &self.log.storage
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

    /// Feeds a message from a peer (or one of this node's own deferred
    /// messages). Messages for another node are a driver bug.
    pub fn step(&mut self, m: Message) {
        if let Err(why) = self.admit(&m) {
            self.note_refusal(m.from, why);
            return;
        }
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

    /// Whether `step` takes `m` at all. Whatever a peer sends, a refused
    /// message changes nothing: terms never reach a value that cannot
    /// grow, and a non-member cannot depose anyone.
    fn admit(&self, m: &Message) -> Result<(), Refusal> {
        use crate::constants::{TERM_JUMP_MAX, TERM_MAX};
        if m.to != self.id {
            return Err(Refusal::Misaddressed(m.to));
        }
        if m.term > TERM_MAX {
            return Err(Refusal::TermCeiling(m.term));
        }
        if m.term > self.term.saturating_add(TERM_JUMP_MAX) {
            return Err(Refusal::TermJump {
                theirs: m.term,
                ours: self.term,
            });
        }
        // A replica that joined with no configuration yet hears only from
        // the leader that added it.
        let joining = self.conf.voters.is_empty() && self.conf.learners.is_empty();
        if !joining && !self.conf.members().any(|id| id == m.from) {
            let from_leader = matches!(
                m.body,
                MessageBody::Append { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::Snapshot { .. }
            );
            // A leader we do not know of yet is normal for a replica whose
            // configuration lags (it missed the change that added that
            // leader, or it replays its log after a restart): it must hear
            // that leader, or it stays behind for ever. So a non-member's
            // leader messages are taken at our term, and at a newer one
            // only while we hear from no leader of our own: a stranger can
            // never depose a leader that is in contact.
            if !(from_leader && (m.term <= self.term || !self.hears_leader())) {
                return Err(Refusal::NotAMember);
            }
        }
        Ok(())
    }

    fn note_lost_match(&mut self, from: NodeId, matched: Index, holds: Index) {
        self.lost_matches += 1;
        self.last_lost_match = Some((from, matched, holds));
    }

    fn note_refusal(&mut self, from: NodeId, why: Refusal) {
        self.refused += 1;
        self.last_refusal = Some((from, why));
    }

    /// Whether this node leads, or heard from its leader within an
    /// election timeout.
    pub fn hears_leader(&self) -> bool {
        self.role == Role::Leader
            || (self.leader_id.is_some() && self.election_elapsed < self.cfg.election_timeout_ticks)
    }

    /// How many elections this node started (each pre-vote or vote round
    /// it began, a repeated one after a timeout included).
    pub fn campaigns(&self) -> u64 {
        self.campaigns
    }

    /// How many messages `step` refused, and the latest (sender, reason):
    /// the driver logs them.
    pub fn refusals(&self) -> (u64, Option<(NodeId, Refusal)>) {
        (self.refused, self.last_refusal)
    }

    /// How many times, as leader, this node found a follower holding less
    /// than it had acknowledged (and so probed it again from what it
    /// holds), and the latest: (follower, match index we had, its hint).
    pub fn lost_matches(&self) -> (u64, Option<(NodeId, Index, Index)>) {
        (self.lost_matches, self.last_lost_match)
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
                let last = self.log.last_index();
                self.log.commit_to(commit.min(last));
                if commit > last {
                    // The leader believes we hold entries we do not: we lost
                    // them (see `handle_append_resp`). Say so the way a
                    // failed append does, or an idle leader never learns.
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::AppendResp {
                            reject: true,
                            index: commit,
                            hint_index: last,
                            hint_term: 0,
                        },
                    );
                }
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

    /// Proposes a command. Returns the index it will have if committed (at
    /// this node's current term).
    pub fn propose(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        self.check_can_propose(data.len(), data.len())?;
        let index = self.append_entries(vec![(EntryKind::Normal, data)]);
        self.bcast_pending = true;
        Ok(index)
    }

    /// Proposes several commands as one batch (one append, one persist).
    pub fn propose_batch(&mut self, batch: Vec<Bytes>) -> Result<Index, ProposeError> {
        assert!(!batch.is_empty(), "an empty batch proposes nothing");
        let total: usize = batch.iter().map(Bytes::len).sum();
        let largest = batch.iter().map(Bytes::len).max().unwrap_or(0);
        self.check_can_propose(largest, total)?;
        let index =
            self.append_entries(batch.into_iter().map(|d| (EntryKind::Normal, d)).collect());
        self.bcast_pending = true;
        Ok(index)
    }

    /// `largest` is the biggest entry's payload, `total` the batch's.
    fn check_can_propose(&self, largest: usize, total: usize) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader_id,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if largest > ENTRY_BYTES_MAX {
            return Err(ProposeError::TooLarge(largest));
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + total as u64 > self.cfg.uncommitted_bytes_max
        {
            return Err(ProposeError::Backpressure);
        }
        Ok(())
    }

    /// Proposes a single-server membership change. Refused while another
    /// is pending, and until this leader has committed an entry of its term.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Index, ProposeError> {
        self.check_can_propose(ConfChange::ENCODED_LEN, ConfChange::ENCODED_LEN)?;
        if self.pending_conf_index > self.log.applied || !self.committed_in_current_term() {
            return Err(ProposeError::ConfChangePending);
        }
        self.conf.apply(cc)?;
        let index = self.append_entries(vec![(EntryKind::ConfChange, cc.encode())]);
        self.pending_conf_index = index;
        self.bcast_pending = true;
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

    /// True if [`RawNode::ready`] has something.
    pub fn has_ready(&self) -> bool {
        let u = &self.log.unstable;
        !self.msgs.is_empty()
            || (self.bcast_pending && self.role == Role::Leader)
            || !self.msgs_after_persist.is_empty()
            || !self.read_states.is_empty()
            || (u.snapshot.is_some() && !u.snapshot_in_progress)
            || !self.log.next_unstable().is_empty()
            || self.hard_state() != self.prev_hard_state
            || (u.snapshot.is_none() && self.log.committed > self.log.applied)
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
        // Batched replication: every entry appended since the last ready
        // goes to each follower in one append (within flow control).
        if std::mem::take(&mut self.bcast_pending) && self.role == Role::Leader {
            self.bcast_new_entries();
        }

        // Committed entries first: applying a configuration change may
        // produce messages that belong in this ready.
        if let Some(s) = &self.log.unstable.snapshot {
            if !self.log.unstable.snapshot_in_progress {
                rd.snapshot = Some(s.clone());
                rd.snapshot_index = Some(s.meta.index);
                self.log.applied = s.meta.index;
            }
        } else {
            // Committed entries are applied even before they are durable
            // here: a majority holds them durably (the leader need not be
            // among it, thesis §10.2.1), so they survive any crash of this
            // replica, whose applied state is volatile and rebuilt from
            // its own log and snapshot on restart.
            let hi = self.log.committed;
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
