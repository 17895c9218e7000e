//! Elections: role changes, pre-vote and vote rounds, the leader's tick
//! (heartbeats, check-quorum).

use bytes::Bytes;
use rand::Rng;

use super::*;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    pub(super) fn reset(&mut self, term: Term) {
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

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader_id = leader;
    }

    pub(super) fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        // A pre-candidate changes neither term nor vote.
        self.votes.clear();
        self.leader_id = None;
        self.role = Role::PreCandidate;
    }

    pub(super) fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        // `campaign` checked the term can grow.
        self.reset(self.term.saturating_add(1));
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    pub(super) fn become_leader(&mut self) {
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
        self.bcast_pending = true;
    }

    pub(super) fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        if !self.promotable() {
            return;
        }
        if self.term >= crate::constants::TERM_MAX {
            // Unreachable through `step` (it refuses such terms); a
            // corrupted hard state could still say so. Never wrap.
            self.note_refusal(self.id, Refusal::TermCeiling(self.term));
            return;
        }
        self.campaigns += 1;
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
    pub(super) fn poll(&mut self) {
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
        // A candidate leads only once its own vote is in, and that vote
        // arrives only when the new term is durable: a leader whose term
        // is not on disk could crash, forget the term, be elected in it a
        // second time and write a different entry at an index it already
        // used in that term (two entries with one index and term).
        let own_vote_durable = self.votes.get(&self.id) == Some(&true);
        if granted >= self.quorum() {
            match self.role {
                Role::PreCandidate => self.campaign(false, false),
                Role::Candidate if own_vote_durable => self.become_leader(),
                _ => {}
            }
        } else if rejected >= self.quorum() {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    pub(super) fn tick_leader(&mut self) {
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

    pub(super) fn handle_vote_request(
        &mut self,
        m: &Message,
        last_index: Index,
        last_term: Term,
        pre: bool,
    ) {
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

    pub(super) fn step_candidate(&mut self, m: Message) {
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
}
