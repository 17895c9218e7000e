//! Linearizable reads: ReadIndex rounds confirmed by heartbeats, and lease
//! reads (see `ReadMode::Lease` for the clock assumption).

use std::collections::BTreeSet;

use super::*;
use crate::config::ReadMode;
use crate::constants::PENDING_READS_MAX;
use crate::message::MessageBody;
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    pub(super) fn handle_read_request(&mut self, ctx: u64, from: NodeId) {
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

    pub(super) fn lease_valid(&self, drift_margin_ticks: u64) -> bool {
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

    pub(super) fn release_reads(&mut self) {
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

    pub(super) fn answer_read(&mut self, ctx: u64, from: NodeId, index: Index) {
        if from == self.id {
            self.read_states.push(ReadState { index, ctx });
        } else {
            self.send(from, self.term, MessageBody::ReadIndexResp { ctx, index });
        }
    }
}
