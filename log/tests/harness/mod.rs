//! A small deterministic test network for Raft corner cases: synchronous
//! persistence, a message queue the test controls, crash and restart.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use ramcoord_log::*;

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, RawNode<MemStorage>>,
    pub down: BTreeMap<NodeId, MemStorage>,
    pub queue: Vec<Message>,
    /// Nodes cut off from everyone (messages to or from them are dropped).
    pub isolated: BTreeSet<NodeId>,
    /// Every entry each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Read points each node produced.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// Every delivered message, formatted (for datadriven tests).
    pub delivered: Vec<String>,
    pub cfg: Config,
}

impl Cluster {
    /// `n` voters with ids 1..=n; `tune` adjusts every node's config.
    pub fn new(n: u64, tune: impl Fn(&mut Config)) -> Cluster {
        let mut cfg = Config::new(1);
        tune(&mut cfg);
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            down: BTreeMap::new(),
            queue: Vec::new(),
            isolated: BTreeSet::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            delivered: Vec::new(),
            cfg,
        };
        for id in 1..=n {
            c.add_node(id, ConfState::with_voters(1..=n));
        }
        c
    }

    pub fn add_node(&mut self, id: NodeId, conf: ConfState) {
        let mut cfg = self.cfg.clone();
        cfg.id = id;
        cfg.seed = id;
        self.nodes.insert(
            id,
            RawNode::new(
                cfg,
                if conf.voters.is_empty() {
                    MemStorage::default()
                } else {
                    MemStorage::bootstrap(&conf)
                },
            )
            .unwrap(),
        );
        self.applied.insert(id, Vec::new());
    }

    pub fn node(&self, id: NodeId) -> &RawNode<MemStorage> {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Runs `id`'s ready loop: persist synchronously, queue messages.
    pub fn process(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        while node.has_ready() {
            let mut rd = node.ready();
            let s = node.storage_mut();
            if let Some(snap) = &rd.snapshot {
                s.apply_snapshot(snap.clone()).unwrap();
                // The state machine is the applied list: a snapshot replaces it
                // with a marker of what it covers.
                let applied = self.applied.get_mut(&id).unwrap();
                applied.retain(|e| e.index <= snap.meta.index);
            }
            s.append(&rd.entries).unwrap();
            if let Some(hs) = rd.hard_state {
                s.set_hard_state(hs).unwrap();
            }
            // A partition drops what crosses it as it is sent.
            let isolated = &self.isolated;
            let cut = |m: &Message| isolated.contains(&m.from) || isolated.contains(&m.to);
            self.queue.extend(rd.messages.drain(..).filter(|m| !cut(m)));
            self.queue
                .extend(rd.persisted_messages.drain(..).filter(|m| !cut(m)));
            self.applied
                .get_mut(&id)
                .unwrap()
                .extend(rd.committed_entries.iter().cloned());
            self.reads
                .entry(id)
                .or_default()
                .append(&mut rd.read_states);
            node.advance(rd);
        }
    }

    pub fn process_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.process(id);
        }
    }

    fn deliverable(&self, m: &Message) -> bool {
        self.nodes.contains_key(&m.to)
            && !self.isolated.contains(&m.to)
            && !self.isolated.contains(&m.from)
    }

    /// Delivers queued messages matching `pred` (and the messages they cause
    /// that also match) until none is left; others stay queued. Messages to
    /// down or isolated nodes are dropped. Returns how many were taken.
    pub fn deliver_where(&mut self, pred: impl Fn(&Message) -> bool) -> usize {
        let mut taken = 0;
        while self.deliver_one(&pred) {
            taken += 1;
            assert!(taken < 100_000, "message storm");
        }
        taken
    }

    /// Takes the first queued message matching `pred`, if any, and delivers
    /// it unless its destination is down or cut off.
    pub fn deliver_one(&mut self, pred: impl Fn(&Message) -> bool) -> bool {
        self.process_all();
        let Some(pos) = self.queue.iter().position(pred) else {
            return false;
        };
        let m = self.queue.remove(pos);
        if self.deliverable(&m) {
            self.delivered.push(format_message(&m));
            self.node_mut(m.to).step(m.clone());
            self.process(m.to);
        }
        true
    }

    /// Delivers everything until quiet.
    pub fn stabilize(&mut self) -> usize {
        self.deliver_where(|_| true)
    }

    /// Drops queued messages matching `pred`.
    pub fn drop_where(&mut self, pred: impl Fn(&Message) -> bool) {
        self.queue.retain(|m| !pred(m));
    }

    pub fn tick(&mut self, id: NodeId, n: u64) {
        for _ in 0..n {
            self.node_mut(id).tick();
            self.process(id);
        }
    }

    /// Ticks every live node `n` times, delivering messages after each round.
    pub fn tick_all(&mut self, n: u64) {
        for _ in 0..n {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.node_mut(id).tick();
            }
            self.stabilize();
        }
    }

    /// Makes `id` campaign and delivers until quiet.
    pub fn elect(&mut self, id: NodeId) {
        self.node_mut(id).campaign_now();
        self.stabilize();
        assert_eq!(self.node(id).role(), Role::Leader, "node {id} did not win");
    }

    pub fn leader_among(&self, ids: &[NodeId]) -> Option<NodeId> {
        ids.iter()
            .copied()
            .find(|id| self.nodes.get(id).is_some_and(|n| n.role() == Role::Leader))
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .find(|n| n.role() == Role::Leader)
            .map(|n| n.id())
    }

    pub fn propose(&mut self, id: NodeId, data: &str) -> Index {
        let i = self
            .node_mut(id)
            .propose(Bytes::copy_from_slice(data.as_bytes()))
            .unwrap();
        self.process(id);
        i
    }

    /// Crashes `id`: everything it persisted survives, nothing else.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).unwrap();
        self.down.insert(id, node.into_storage());
        self.queue.retain(|m| m.to != id);
        self.applied.get_mut(&id).unwrap().clear();
    }

    pub fn restart(&mut self, id: NodeId) {
        let storage = self.down.remove(&id).unwrap();
        let mut cfg = self.cfg.clone();
        cfg.id = id;
        cfg.seed = id + 100;
        let node = RawNode::new(cfg, storage).unwrap();
        self.nodes.insert(id, node);
        self.process(id);
    }

    /// (index, term) of every entry in `id`'s log after its snapshot.
    pub fn log_terms(&self, id: NodeId) -> Vec<(Index, Term)> {
        let log = self.node(id).log();
        (log.first_index()..=log.last_index())
            .map(|i| (i, log.term(i).unwrap()))
            .collect()
    }

    /// The payloads of normal entries `id` applied.
    pub fn applied_data(&self, id: NodeId) -> Vec<Bytes> {
        self.applied[&id]
            .iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .map(|e| e.data.clone())
            .collect()
    }
}

/// Plain Raft: no pre-vote, no check-quorum (for tests of the core rules).
pub fn plain(cfg: &mut Config) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
}

/// One line per message: `from->to Kind term=T fields`.
pub fn format_message(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => format!("PreVote last={last_index}@{last_term}"),
        MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            format!(
                "Vote last={last_index}@{last_term}{}",
                if *transfer { " transfer" } else { "" }
            )
        }
        MessageBody::PreVoteResp { reject } => {
            format!("PreVoteResp{}", if *reject { " reject" } else { "" })
        }
        MessageBody::VoteResp { reject } => {
            format!("VoteResp{}", if *reject { " reject" } else { "" })
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            let ents: Vec<String> = entries
                .iter()
                .map(|e| format!("{}@{}", e.index, e.term))
                .collect();
            format!(
                "Append prev={prev_index}@{prev_term} entries=[{}] commit={commit}",
                ents.join(" ")
            )
        }
        MessageBody::AppendResp {
            reject: false,
            index,
            ..
        } => format!("AppendResp index={index}"),
        MessageBody::AppendResp {
            reject: true,
            index,
            hint_index,
            hint_term,
        } => {
            format!("AppendResp reject={index} hint={hint_index}@{hint_term}")
        }
        MessageBody::Heartbeat { commit, seq, .. } => {
            format!("Heartbeat commit={commit} seq={seq}")
        }
        MessageBody::HeartbeatResp { seq, .. } => format!("HeartbeatResp seq={seq}"),
        MessageBody::Snapshot {
            meta,
            total_len,
            offset,
            data,
        } => format!(
            "Snapshot at={}@{} bytes={offset}..{} of {total_len}",
            meta.index,
            meta.term,
            offset + data.len() as u64
        ),
        MessageBody::SnapshotResp {
            index,
            next_offset,
            reject,
        } => {
            format!(
                "SnapshotResp at={index} next={next_offset}{}",
                if *reject { " reject" } else { "" }
            )
        }
        MessageBody::TimeoutNow => "TimeoutNow".to_string(),
        MessageBody::ReadIndex { ctx } => format!("ReadIndex ctx={ctx}"),
        MessageBody::ReadIndexResp { ctx, index } => {
            format!("ReadIndexResp ctx={ctx} index={index}")
        }
    };
    format!("{}->{} {} term={}", m.from, m.to, body, m.term)
}
