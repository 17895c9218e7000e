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
        let lat = lat.max(node.disk_stalled_until.saturating_sub(self.now));
        // Group commit: one write covers every ready queued so far.
        node.disk_inflight = node.disk_queue.len() + node.jobs.len();
        let inc = node.incarnation;
        self.at(lat, Ev::DiskDone(id, inc));
        if !self.healed && self.rng.random_bool(self.p.crash_mid_write) {
            let at = self.rng.random_range(0..lat.max(1));
            self.at(at, Ev::CrashNode(id, inc));
        }
    }

    /// Stalls the settled leader's disk for ten election timeouts, with the
    /// network healthy: heartbeats must not wait for the disk (etcd's most
    /// reported failure starts with a slow disk costing the leader its
    /// lease), and commits go on with the followers' writes.
    pub(super) fn stall_leader_disk(&mut self) {
        let Some(id) = self.some_leader() else {
            return;
        };
        let stall_us = 10 * ELECTION_TICKS * TICK_US;
        let raft = self.nodes[&id].raft().expect("leads");
        let (term, commit, last) = (raft.term(), raft.log().committed, raft.log().last_index());
        let node = self.nodes.get_mut(&id).unwrap();
        node.disk_stalled_until = self.now + stall_us;
        self.stats.disk_stalls += 1;
        self.trace(|| format!("n{id} disk stalls for {stall_us}us (term {term})"));
        self.at(
            stall_us,
            Ev::CheckStall {
                id,
                term,
                commit,
                last,
            },
        );
    }

    /// See [`World::stall_leader_disk`].
    pub(super) fn check_stall(
        &mut self,
        id: NodeId,
        term: u64,
        commit: u64,
        last: u64,
    ) -> Result<(), Violation> {
        let Some(raft) = self.nodes.get(&id).and_then(|n| n.raft()) else {
            return Ok(()); // crashed meanwhile (the liveness phase has no crashes)
        };
        if raft.role() != Role::Leader || raft.term() != term {
            return Err(Violation::new(
                "leader lost to a slow disk",
                format!(
                    "node {id} led term {term} when its disk stalled for {} election timeouts with \
                     the network healthy; it is now {} in term {}",
                    10,
                    raft.role(),
                    raft.term()
                ),
            ));
        }
        let now_commit = raft.log().committed;
        // Committed once a majority of followers hold it, the leader's own
        // write not needed (only an entry of its term commits by counting).
        let conf = raft.conf();
        let quorum = conf.voters.len() / 2 + 1;
        let holding = conf
            .voters
            .iter()
            .filter(|&&v| v != id)
            .filter(|&&v| raft.progress(v).is_some_and(|p| p.match_index >= last))
            .count();
        let counted = holding >= quorum && raft.log().term(last) == Ok(term);
        if last > commit && counted && now_commit < last {
            return Err(Violation::new(
                "commits stalled with the leader's disk",
                format!(
                    "node {id} held entries up to {last} (committed {commit}) when its disk \
                     stalled; {} election timeouts later {holding} followers hold them (a \
                     majority of {} without the leader), yet it has committed only {now_commit}",
                    10,
                    conf.voters.len()
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn disk_done(&mut self, id: NodeId, inc: u64) -> Result<(), Violation> {
        let now = self.instant();
        let node = self.nodes.get_mut(&id).unwrap();
        if node.incarnation != inc || !node.is_up() {
            return Ok(());
        }
        let n = node.disk_inflight;
        node.disk_inflight = 0;
        if let Some(replica) = node.replica.as_mut() {
            // The coordinator workload: the replica's persist jobs.
            let mut last = None;
            for _ in 0..n {
                let job = node.jobs.pop_front().expect("in-flight jobs are queued");
                if let Err(e) = job.write_to(replica.storage_mut()) {
                    return Err(Violation::new(
                        "persist",
                        format!("node {id} cannot write persist job {}: {e}", job.number),
                    ));
                }
                last = Some(job.number);
            }
            if let Some(number) = last {
                replica.input(now, crate::replica::Input::Persisted { number });
            }
        }
        for _ in 0..n {
            let node = self.nodes.get_mut(&id).unwrap();
            let Some(raft) = node.raft.as_mut() else {
                break;
            };
            let mut rd = node
                .disk_queue
                .pop_front()
                .expect("in-flight readies are queued");
            persist(raft.storage_mut(), &rd);
            let msgs = std::mem::take(&mut rd.persisted_messages);
            raft.advance(rd);
            for m in msgs {
                self.send(m);
            }
        }
        let id_ = id;
        self.trace(|| format!("n{id_} disk wrote {n} readies"));
        let node = &self.nodes[&id];
        if !node.disk_queue.is_empty() || !node.jobs.is_empty() {
            self.start_disk_write(id);
        }
        self.after_input(id)
    }

    pub(super) fn maybe_compact(&mut self, id: NodeId) {
        let threshold = self.p.compact_threshold;
        let node = self.nodes.get_mut(&id).unwrap();
        // (A replica of the coordinator workload compacts its own log.)
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
        let data = node.kv.snapshot();
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
            let conf = self.nodes[&l].raft().expect("a leader is up").conf();
            !conf.voters.contains(&id) && !conf.learners.contains(&id)
        });
        let wipe = removed && self.p.admin && self.rng.random_bool(0.5);
        let node = self.nodes.get_mut(&id).unwrap();
        let (follower, mut storage) = if let Some(raft) = node.raft.take() {
            (raft.role() != Role::Leader, raft.into_storage())
        } else if let Some(r) = node.replica.take() {
            (r.raft().role() != Role::Leader, r.into_storage())
        } else {
            return;
        };
        // A leader's own lost tail tells nothing: its successor starts
        // with no match indexes. A follower's is the case to check.
        //
        // The write in flight may have partly reached the disk: some whole
        // readies, then a prefix of one ready's entries (never its hard
        // state). None of it was acknowledged.
        let queued: Vec<PersistJob> = if node.jobs.is_empty() {
            node.disk_queue.iter().map(job_of).collect()
        } else {
            node.jobs.iter().cloned().collect()
        };
        let inflight = node.disk_inflight.min(queued.len());
        if torn && inflight > 0 {
            let whole = (cut % inflight as u64) as usize;
            for job in queued.iter().take(whole) {
                job.write_to(&mut storage)
                    .expect("a whole job continues the durable log");
            }
            if let Some(rd) = queued.get(whole) {
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
        node.jobs.clear();
        node.disk_inflight = 0;
        let lose = self.lose_tail_next_crash || self.rng.random_bool(self.p.lose_tail);
        if !wipe && follower && lose {
            self.lose_tail(id, &mut storage);
        }
        let node = self.nodes.get_mut(&id).unwrap();
        node.incarnation += 1;
        node.down_storage = (!wipe).then_some(storage);
        node.kv = Kv::default();
        node.applied = 0;
        node.pending_writes.clear();
        node.pending_reads.clear();
        node.read_points.clear();
        node.was_leader_term = None;
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

    /// Cuts the tail of a crashed replica's durable log, as damage past
    /// its acknowledged watermark would be cut on open (never below its
    /// durable commit index, which the watermark covers). Only entries that
    /// every other replica holds durably (same index and term) may go, so
    /// no committed entry is lost and the election rule still protects
    /// them; what is lost had been acknowledged, and the leader's match
    /// index for this replica is now above what it holds.
    fn lose_tail(&mut self, id: NodeId, storage: &mut MemStorage) {
        let keep = self.losable_from(id, storage) - 1;
        let last = storage.last_index();
        if keep == last {
            return;
        }
        let cut = self.rng.random_range(keep..last);
        storage
            .truncate_suffix(cut + 1)
            .expect("cutting within the log");
        self.stats.tails_lost += 1;
        self.trace(|| format!("n{id} loses its acknowledged log tail {}..={last}", cut + 1));
    }

    /// After the heal, with the group settled: one follower restarts having
    /// lost acknowledged entries, under a leader that believes it holds
    /// them (during the faults leaders change too often for a stale match
    /// index to outlive the fault). It must be caught up before the end.
    pub(super) fn amnesia(&mut self, tries_left: u32) {
        let Some(leader) = self.some_leader() else {
            return self.amnesia_later(tries_left);
        };
        // A follower with a tail to lose: acknowledged entries past its
        // durable commit index that every other replica holds.
        let followers: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.id != leader)
            .filter(|n| {
                n.raft().is_some_and(|r| {
                    let s = r.log().storage();
                    self.losable_from(n.id, s) < s.last_index()
                })
            })
            .map(|n| n.id)
            .collect();
        if followers.is_empty() {
            return self.amnesia_later(tries_left);
        }
        let victim = followers[self.rng.random_range(0..followers.len())];
        let target = self.nodes[&leader].raft().expect("leads").log().committed;
        self.lose_tail_next_crash = true;
        self.crash(victim);
        self.lose_tail_next_crash = false;
        let down = self.rng.random_range(1_000..20_000);
        self.at(down, Ev::Restart(victim));
        // Caught up within a few heartbeats, not at the next compaction
        // (which would hide a stale match index behind a snapshot).
        self.at(
            down + AMNESIA_CATCH_UP_TICKS * TICK_US,
            Ev::CheckCaughtUp {
                id: victim,
                target,
                put_off: 0,
            },
        );
    }

    pub(super) fn check_amnesia_caught_up(
        &mut self,
        id: NodeId,
        target: u64,
        put_off: u32,
    ) -> Result<(), Violation> {
        let Some(raft) = self.nodes.get(&id).and_then(|n| n.raft()) else {
            return Ok(());
        };
        let committed = raft.log().committed;
        if committed >= target {
            return Ok(());
        }
        let matched = self
            .some_leader()
            .and_then(|l| self.nodes[&l].raft())
            .and_then(|r| r.progress(id).map(|p| p.match_index));
        // What this check hunts is a stale match index: a leader that
        // believes the node holds entries it lost, and so never sends
        // them. A leader whose match index for it is below what it lacks
        // knows, and is sending (a snapshot in 16-byte chunks through a
        // lossy, duplicating network can take longer than the window):
        // looked at again, up to four more windows, then it fails as well.
        let last = raft.log().last_index();
        if matched.is_some_and(|m| m <= last) && put_off < 4 {
            self.at(
                AMNESIA_CATCH_UP_TICKS * TICK_US,
                Ev::CheckCaughtUp {
                    id,
                    target,
                    put_off: put_off + 1,
                },
            );
            return Ok(());
        }
        Err(Violation::new(
            "catch up",
            format!(
                "node {id} restarted without acknowledged entries and, {} \
                 ticks later, has committed {committed} (its log ends at {}), below the {target} \
                 committed when it went down; the leader's match index for it is {}",
                AMNESIA_CATCH_UP_TICKS * (u64::from(put_off) + 1),
                last,
                matched.map_or("unknown".to_string(), |m| m.to_string())
            ),
        ))
    }

    fn amnesia_later(&mut self, tries_left: u32) {
        if tries_left > 0 {
            let d = self.rng.random_range(500..3_000);
            self.at(d, Ev::Amnesia(tries_left - 1));
        }
    }

    /// The first index of `id`'s durable log that it could lose (see
    /// `lose_tail`); its last index + 1 if none.
    fn losable_from(&self, id: NodeId, storage: &MemStorage) -> u64 {
        let others: Vec<&MemStorage> = self
            .nodes
            .values()
            .filter(|n| n.id != id)
            .filter_map(|n| {
                n.raft()
                    .map(|r| r.log().storage())
                    .or(n.down_storage.as_ref())
            })
            .collect();
        // Never below its own durable commit index: the real log writes
        // its acknowledged watermark with every hard-state change, and a
        // replica refuses to start when damage reaches below it.
        let floor = storage
            .snapshot()
            .meta
            .index
            .max(storage.hard_state().commit);
        let mut keep = storage.last_index();
        while keep > floor {
            let Ok(term) = storage.term(keep) else { break };
            if !others.iter().all(|o| o.term(keep) == Ok(term)) {
                break;
            }
            keep -= 1;
        }
        keep + 1
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
        node.applied = snap.meta.index;
        node.commit_checked = raft.log().committed;
        node.last_seen = (raft.term(), raft.log().committed);
        if self.opts.workload == Workload::Coordinator {
            // The replica as the process runs it, over this log.
            let cfg = self
                .cw
                .replica_config(id, self.p.compact_threshold, self.opts.bugs);
            let now = self.epoch + std::time::Duration::from_micros(self.now);
            let check_every = self.state_check_every();
            let node = self.nodes.get_mut(&id).unwrap();
            let mut replica = match Replica::new(cfg, raft, cluster, now) {
                Ok(r) => r,
                Err(e) => {
                    return Err(Violation::new(
                        "restart",
                        format!("node {id} cannot restart: {e}"),
                    ))
                }
            };
            replica.observe_applies(check_every);
            node.replica = Some(replica);
        } else {
            node.raft = Some(raft);
        }
        let node = self.nodes.get_mut(&id).unwrap();
        let (inc, tick) = (node.incarnation, node.tick_us);
        self.at(tick, Ev::Tick(id, inc));
        self.trace(|| format!("n{id} RESTART"));
        self.after_input(id)
    }
}

/// What a ready asks the disk to do, as a persist job.
fn job_of(rd: &Ready) -> PersistJob {
    PersistJob {
        number: rd.number,
        snapshot: rd.snapshot.clone(),
        entries: rd.entries.clone(),
        hard_state: rd.hard_state,
        must_sync: rd.must_sync,
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
