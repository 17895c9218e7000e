//! InstallSnapshot: the leader streams its latest snapshot in chunks; the
//! follower assembles, installs, and acknowledges once it is durable.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::constants::SNAPSHOT_BYTES_MAX;
use crate::message::MessageBody;
use crate::progress::ProgressState;
use crate::storage::Storage;

/// Snapshot chunks in flight to one follower.
const SNAPSHOT_WINDOW_CHUNKS: u64 = 4;

impl<S: Storage> RawNode<S> {
    pub(super) fn handle_snapshot_chunk(
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
        // The same snapshot from the same leader (its term): two leaders'
        // snapshots of equal metadata are never spliced together.
        let term = self.term;
        let same = |inc: &IncomingSnapshot| {
            inc.meta == meta && inc.total_len == total_len && inc.term == term
        };
        let assembling = self.incoming_snapshot.as_ref().is_some_and(same);
        if offset == 0 && !assembling {
            // A first chunk starts this snapshot. A first chunk of the one
            // being assembled is a repeat (a retransmission, a duplicate):
            // it is answered with where the transfer stands, never taken
            // as a restart, so what this node reports only moves forward
            // (the leader drops answers that do not; see
            // `handle_snapshot_resp`).
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                total_len,
                term,
                data: BytesMut::with_capacity(total_len as usize),
            });
        }
        let expected = match &self.incoming_snapshot {
            Some(inc) if same(inc) => inc.data.len() as u64,
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

    pub(super) fn install_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
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

    pub(super) fn send_snapshot(&mut self, to: NodeId) {
        let snap = self.log.storage.snapshot();
        let index = snap.meta.index;
        self.progress
            .get_mut(&to)
            .expect("member")
            .become_snapshot(index);
        self.send_snapshot_window(to, &snap);
    }

    /// Sends the chunks of `snap` from what `to` has not been sent up to
    /// [`SNAPSHOT_WINDOW_CHUNKS`] chunks past what it acknowledged: a few
    /// chunks in flight, so a transfer takes a round trip per window
    /// rather than per chunk, each answer that moves it on sliding the
    /// window one chunk (a lost chunk is sent again from the heartbeat's
    /// retransmission; the follower takes chunks only in order).
    pub(super) fn send_snapshot_window(&mut self, to: NodeId, snap: &Snapshot) {
        let total = snap.data.len() as u64;
        if total == 0 {
            // Nothing to stream: the one empty chunk installs it.
            self.send_snapshot_chunk(to, snap, 0);
            return;
        }
        let chunk = self.cfg.snapshot_chunk_bytes as u64;
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        let ProgressState::Snapshot {
            acked_offset,
            sent_offset,
            ..
        } = &mut pr.state
        else {
            return;
        };
        let limit = acked_offset
            .saturating_add(SNAPSHOT_WINDOW_CHUNKS.saturating_mul(chunk))
            .min(total);
        let mut offsets = Vec::new();
        let mut at = (*sent_offset).max(*acked_offset);
        while at < limit {
            offsets.push(at);
            at = at.saturating_add(chunk).min(total);
        }
        *sent_offset = at;
        for offset in offsets {
            self.send_snapshot_chunk(to, snap, offset);
        }
    }

    pub(super) fn send_snapshot_chunk(&mut self, to: NodeId, snap: &Snapshot, offset: u64) {
        let total = snap.data.len() as u64;
        assert!(
            offset <= total,
            "chunk offset {offset} past a {total}-byte snapshot"
        );
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

    pub(super) fn handle_snapshot_resp(
        &mut self,
        from: NodeId,
        index: Index,
        next_offset: u64,
        reject: bool,
    ) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let ProgressState::Snapshot {
            index: sent,
            acked_offset,
            sent_offset,
            rewind_ok,
        } = pr.state
        else {
            return;
        };
        if index != sent {
            return;
        }
        if reject {
            pr.become_probe();
            return;
        }
        // One chunk in flight: only an answer that moves the transfer on
        // sends the next. A duplicated or late answer (at or behind what
        // was acknowledged) is dropped: answering it too would start a
        // second ping-pong beside the first, every duplicate and every
        // heartbeat's retransmission another, until the chains crowd the
        // link (the simulator's heavy faults found a snapshot of 611
        // bytes not done in 100 ticks). An answer that goes back is taken
        // when it says zero (the follower restarted and lost what it had
        // assembled) or answers a retransmission (it lost it otherwise: a
        // late copy of the first chunk restarted its assembly after it
        // had installed the snapshot, say), at most once per
        // retransmission, so the transfer can always resume.
        let moves_on = next_offset > acked_offset
            || (next_offset < acked_offset && (next_offset == 0 || rewind_ok));
        if !moves_on {
            return;
        }
        pr.state = ProgressState::Snapshot {
            index: sent,
            acked_offset: next_offset,
            // Going back: send again from there.
            sent_offset: if next_offset < acked_offset {
                next_offset
            } else {
                sent_offset.max(next_offset)
            },
            rewind_ok: false,
        };
        let snap = self.log.storage.snapshot();
        if snap.meta.index != sent {
            // Compacted again meanwhile: start over with the newer one.
            self.send_snapshot(from);
        } else if next_offset < snap.data.len() as u64 {
            self.send_snapshot_window(from, &snap);
        }
    }
}
