//! InstallSnapshot: the leader streams its latest snapshot in chunks; the
//! follower assembles, installs, and acknowledges once it is durable.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::constants::SNAPSHOT_BYTES_MAX;
use crate::message::MessageBody;
use crate::progress::ProgressState;
use crate::storage::Storage;

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
        let assembling = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|inc| inc.meta == meta && inc.total_len == total_len);
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
        self.send_snapshot_chunk(to, &snap, 0);
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
        // bytes not done in 100 ticks). Zero is the exception: the
        // follower lost what it had assembled (a restart) and starts over.
        let moves_on = next_offset > acked_offset || (next_offset == 0 && acked_offset > 0);
        if !moves_on {
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
}
