//! Simulated disks: group-committed writes with latency and stalls, log
//! compaction, and crashes that lose what was not durable (sometimes
//! tearing the write in flight), then restarts from what was.

use rand::Rng;

use super::*;

impl World {
    pub(super) fn start_disk_write(&mut self, id: NodeId) {
        let slow = self.rng.random_bool(self.p.slow_disk);
        let lat = if slow {
            self.rng
                .random_range(self.p.slow_disk_us.0..self.p.slow_disk_us.1)
        } else {
            self.rng.random_range(self.p.disk_us.0..self.p.disk_us.1)
        };
        let node = self.nodes.get_mut(&id).unwrap();
        // Group commit: one write covers every ready queued so far.
        node.disk_inflight = node.disk_queue.len();
        let inc = node.incarnation;
        self.at(lat, Ev::DiskDone(id, inc));
        if !self.healed && self.rng.random_bool(self.p.crash_mid_write) {
            let at = self.rng.random_range(0..lat.max(1));
            self.at(at, Ev::CrashNode(id, inc));
        }
    }

    pub(super) fn disk_done(&mut self, id: NodeId, inc: u64) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).unwrap();
        if node.incarnation != inc || node.raft.is_none() {
            return Ok(());
        }
        let n = node.disk_inflight;
        node.disk_inflight = 0;
        for _ in 0..n {
            let node = self.nodes.get_mut(&id).unwrap();
            let mut rd = node
                .disk_queue
                .pop_front()
                .expect("in-flight readies are queued");
            let raft = node.raft.as_mut().unwrap();
            persist(raft.storage_mut(), &rd);
            let msgs = std::mem::take(&mut rd.persisted_messages);
            raft.advance(rd);
            for m in msgs {
                self.send(m);
            }
        }
        let id_ = id;
        self.trace(|| format!("n{id_} disk wrote {n} readies"));
        if !self.nodes[&id].disk_queue.is_empty() {
            self.start_disk_write(id);
        }
        self.after_input(id)
    }

    pub(super) fn maybe_compact(&mut self, id: NodeId) {
        let threshold = self.p.compact_threshold;
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        if !node.disk_queue.is_empty() {
            return;
        }
        let point = raft.snapshot_point();
        let held = raft.log().storage().snapshot().meta.index;
        if point.index < held + threshold || point.index > raft.log().storage().last_index() {
            return;
        }
        debug_assert_eq!(point.index, node.applied);
        let data = if self.opts.workload == Workload::Coordinator {
            node.cluster.snapshot()
        } else {
            node.kv.snapshot()
        };
        let snap = ramcoord_log::Snapshot { meta: point, data };
        raft.storage_mut()
            .compact(snap)
            .expect("compacting at the applied index");
    }

    pub(super) fn crash(&mut self, id: NodeId) {
        let torn = self.rng.random_bool(self.p.torn);
        let cut: u64 = self.rng.random();
        // A replica whose removal a leader has applied (so committed) may
        // lose its disk. It is retired for good and a replacement with a
        // new id starts with an empty log and no configuration; it joins
        // only when the admin adds it (learner, then voter), as
        // `ramcoord coordinator --join` does. Never the same id: an empty
        // log under an old id could vote in a lagging candidate's old
        // configuration, having forgotten the entries it acknowledged.
        let removed = self.some_leader().is_some_and(|l| {
            let conf = self.nodes[&l].raft.as_ref().expect("a leader is up").conf();
            !conf.voters.contains(&id) && !conf.learners.contains(&id)
        });
        let wipe = removed && self.p.admin && self.rng.random_bool(0.5);
        let fresh_cluster = self.fresh_cluster();
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.take() else { return };
        let mut storage = raft.into_storage();
        // The write in flight may have partly reached the disk: some whole
        // readies, then a prefix of one ready's entries (never its hard
        // state). None of it was acknowledged.
        let inflight = node.disk_inflight.min(node.disk_queue.len());
        if torn && inflight > 0 {
            let whole = (cut % inflight as u64) as usize;
            for rd in node.disk_queue.iter().take(whole) {
                persist(&mut storage, rd);
            }
            if let Some(rd) = node.disk_queue.get(whole) {
                if let Some(s) = &rd.snapshot {
                    let _ = s; // a torn snapshot write leaves the old log
                } else if !rd.entries.is_empty() {
                    let k = ((cut >> 32) % (rd.entries.len() as u64 + 1)) as usize;
                    if k > 0 {
                        self.stats.torn_writes += 1;
                        storage
                            .append(&rd.entries[..k])
                            .expect("torn prefix continues the log");
                    }
                }
            }
        }
        node.disk_queue.clear();
        node.disk_inflight = 0;
        node.incarnation += 1;
        node.down_storage = (!wipe).then_some(storage);
        node.kv = Kv::default();
        node.cluster = fresh_cluster;
        node.pending_records.clear();
        node.pending_lookups.clear();
        node.applied = 0;
        node.pending_writes.clear();
        node.pending_reads.clear();
        node.read_points.clear();
        node.was_leader_term = None;
        let fresh = self.new_coordinator();
        let node = self.nodes.get_mut(&id).unwrap();
        node.coord = fresh;
        self.stats.crashes += 1;
        self.trace(|| format!("n{id} CRASH (torn={torn})"));
        if wipe {
            let new = self.next_node_id;
            self.next_node_id += 1;
            let tick_us = self.nodes[&id].tick_us;
            self.insert_node(new, tick_us, None, Some(MemStorage::default()));
            self.stats.wipes += 1;
            let down = self
                .rng
                .random_range(self.p.down_us.0..self.p.down_us.1.max(self.p.down_us.0 + 1));
            self.at(down, Ev::Restart(new));
            self.trace(|| format!("n{id} lost its disk: retired; n{new} replaces it, empty"));
        }
    }

    pub(super) fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        let seed = self.rng.random();
        let cfg = self.raft_config(id, seed);
        let fresh = self.fresh_cluster();
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(storage) = node.down_storage.take() else {
            return Ok(());
        };
        let snap = storage.snapshot();
        let (kv, cluster) = if self.opts.workload == Workload::Coordinator {
            (Some(Kv::default()), restore_cluster(&snap.data, fresh))
        } else {
            (Kv::restore(&snap.data), Some(ClusterState::default()))
        };
        let (Some(kv), Some(cluster)) = (kv, cluster) else {
            return Err(Violation::new(
                "snapshot",
                format!("node {id} restarts from an unreadable snapshot"),
            ));
        };
        let raft = match RawNode::new(cfg, storage) {
            Ok(r) => r,
            Err(e) => {
                return Err(Violation::new(
                    "restart",
                    format!("node {id} cannot restart: {e}"),
                ))
            }
        };
        node.kv = kv;
        node.cluster = cluster;
        node.applied = snap.meta.index;
        node.commit_checked = raft.log().committed;
        node.last_seen = (raft.term(), raft.log().committed);
        node.raft = Some(raft);
        let (inc, tick) = (node.incarnation, node.tick_us);
        self.at(tick, Ev::Tick(id, inc));
        self.trace(|| format!("n{id} RESTART"));
        self.after_input(id)
    }
}

/// Writes one ready to storage: snapshot, entries, hard state.
pub(super) fn persist(storage: &mut MemStorage, rd: &Ready) {
    if let Some(s) = &rd.snapshot {
        storage
            .apply_snapshot(s.clone())
            .expect("snapshot from the leader is newer");
    }
    storage
        .append(&rd.entries)
        .expect("entries continue the durable log");
    if let Some(hs) = rd.hard_state {
        storage
            .set_hard_state(hs)
            .expect("memory storage never fails");
    }
}
