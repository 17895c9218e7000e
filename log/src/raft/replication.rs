//! Log replication: the follower's append handling and the leader's
//! flow-controlled appends, acknowledgements, commit rule and heartbeats.

use bytes::Bytes;

use super::*;
use crate::message::MessageBody;
use crate::progress::ProgressState;
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    pub(super) fn handle_append(
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
                return;
            }
            // One acknowledgement per leader per ready: a later append's
            // acknowledgement covers an earlier one's (both wait for the
            // same write), so it replaces it, keeping the highest index.
            let term = node.term;
            let earlier = node.msgs_after_persist.iter_mut().find(|m| {
                m.to == from
                    && m.term == term
                    && matches!(m.body, MessageBody::AppendResp { reject: false, .. })
            });
            if let Some(m) = earlier {
                if let MessageBody::AppendResp { index: acked, .. } = &mut m.body {
                    *acked = (*acked).max(index);
                }
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

    pub(super) fn append_entries(&mut self, items: Vec<(EntryKind, Bytes)>) -> Index {
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

    /// Sends each follower the entries it has not been sent yet (flow
    /// control allowing); nothing to a follower that has them all.
    pub(super) fn bcast_new_entries(&mut self) {
        for id in self.followers() {
            while self.maybe_send_append(id, false) {}
        }
    }

    pub(super) fn bcast_append(&mut self) {
        for id in self.followers() {
            self.maybe_send_append(id, true);
        }
    }

    /// Every member this leader tracks but itself.
    fn followers(&self) -> Vec<NodeId> {
        self.progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    /// Sends an append (or a snapshot) to `to` if flow control allows.
    /// Returns true if an append with entries was sent.
    pub(super) fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
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

    pub(super) fn handle_append_resp(
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
            if index <= pr.match_index
                && hint_index < pr.match_index
                && !matches!(pr.state, ProgressState::Snapshot { .. })
                && !self.cfg.bugs.keep_lost_match
            {
                // The follower denies holding entries it acknowledged: its
                // log lost them (damage past its acknowledged watermark, or
                // a replica without a disk restarted). Every later rejection
                // would sit at or below the match index and look stale, so
                // the follower would lag for ever. Forget what we knew and
                // probe from its hint. Lowering a match index never commits
                // anything, and the commit index never goes back. (A truly
                // stale rejection, reordered behind newer acknowledgements,
                // lands here too: it costs one probe round.)
                let matched = pr.match_index;
                pr.match_index = 0;
                pr.next_index = (probe + 1).min(last + 1).max(1);
                pr.become_probe_keep_next();
                pr.sent_commit = 0;
                self.note_lost_match(from, matched, hint_index);
                self.maybe_send_append(from, true);
                return;
            }
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
        // A new commit index is not broadcast on its own: it rides on the
        // next append or heartbeat (a commit-only append would cost every
        // follower a message and an acknowledgement per commit).
        self.maybe_commit();
        if from != self.id {
            while self.maybe_send_append(from, false) {}
        }
        if self.lead_transferee == Some(from) && matched == self.log.last_index() {
            self.send(from, self.term, MessageBody::TimeoutNow);
        }
    }

    pub(super) fn handle_heartbeat_resp(&mut self, from: NodeId, seq: u64, sent_tick: u64) {
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
            ProgressState::Snapshot {
                index,
                acked_offset,
                ..
            } => {
                let snap = self.log.storage.snapshot();
                if snap.meta.index != index {
                    // Compacted again meanwhile: the offset belongs to the
                    // old snapshot. Start over with the newer one.
                    self.send_snapshot(from);
                } else {
                    // Retransmit the window from what was acknowledged
                    // (a chunk may have been lost); the answer is taken
                    // whichever way it points.
                    self.progress.get_mut(&from).expect("above").state = ProgressState::Snapshot {
                        index,
                        acked_offset,
                        sent_offset: acked_offset,
                        rewind_ok: true,
                    };
                    self.send_snapshot_window(from, &snap);
                }
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

    /// Advances the commit index to what a quorum of voters has durably
    /// (current-term rule: only an entry of this term commits by counting).
    pub(super) fn maybe_commit(&mut self) -> bool {
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

    pub(super) fn bcast_heartbeat(&mut self) {
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
}
