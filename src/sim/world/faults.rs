//! Node-level faults and operator actions: crashes (favouring the
//! leader), membership changes and leadership transfers.

use rand::Rng;

use super::*;

impl World {
    /// The first node, in id order, that believes it leads (there may be a
    /// stale one too; the nemesis does not care which it picks).
    pub(super) fn some_leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .find(|n| n.raft().is_some_and(|r| r.role() == Role::Leader))
            .map(|n| n.id)
    }

    pub(super) fn crash_some(&mut self) {
        if self.healed {
            return;
        }
        let up: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect();
        if !up.is_empty() {
            // Favour the leader: its crash exercises roll-over the most.
            let leader = self.some_leader();
            let victim = match leader {
                Some(l) if self.rng.random_bool(0.5) => l,
                _ => up[self.rng.random_range(0..up.len())],
            };
            self.crash(victim);
            let down = self.rng.random_range(self.p.down_us.0..self.p.down_us.1);
            self.at(down, Ev::Restart(victim));
        }
        let d = self
            .rng
            .random_range(self.p.crash_every_us.0..self.p.crash_every_us.1);
        self.at(d, Ev::Crash);
    }

    pub(super) fn admin(&mut self) {
        if self.healed {
            return;
        }
        let d = self.rng.random_range(100_000..500_000);
        self.at(d, Ev::Admin);
        let Some(leader) = self.some_leader() else {
            return;
        };
        let live = self.live_ids();
        let conf = self.nodes[&leader].raft().expect("leads").conf().clone();
        let others: Vec<NodeId> = conf
            .voters
            .iter()
            .copied()
            .filter(|&v| v != leader)
            .collect();
        let roll = self.rng.random_range(0..100);
        let desc = if roll < 40 {
            if others.is_empty() {
                return;
            }
            let to = others[self.rng.random_range(0..others.len())];
            let node = self.nodes.get_mut(&leader).unwrap();
            let r = match (node.raft.as_mut(), node.replica.as_mut()) {
                (Some(raft), _) => raft.transfer_leader(to),
                (None, Some(r)) => r.transfer_leader(to),
                (None, None) => return,
            };
            self.stats.transfers += u64::from(r.is_ok());
            format!("transfer {leader}->{to}: {r:?}")
        } else if let Some(gone) = live.into_iter().find(|id| !conf.voters.contains(id)) {
            // Someone is out: bring it back, as a learner first.
            let cc = if conf.learners.contains(&gone) {
                ConfChange::AddVoter(gone)
            } else {
                ConfChange::AddLearner(gone)
            };
            format!("{cc:?}: {}", self.change_membership(leader, cc))
        } else if conf.voters.len() >= 3 {
            let victim = others[self.rng.random_range(0..others.len())];
            let cc = ConfChange::Remove(victim);
            format!("{cc:?}: {}", self.change_membership(leader, cc))
        } else {
            return;
        };
        self.trace(|| format!("admin at n{leader}: {desc}"));
        let _ = self.after_input(leader);
    }

    /// Asks replica `leader` for a membership change, as an administrator
    /// would: straight into the Raft core in the Raft workload, through the
    /// client protocol (`ctl add-replica` and friends) in the coordinator
    /// workload. What happened, for the trace.
    fn change_membership(&mut self, leader: NodeId, cc: ConfChange) -> String {
        let now = self.instant();
        let node = self.nodes.get_mut(&leader).unwrap();
        if let Some(raft) = node.raft.as_mut() {
            return format!("{:?}", raft.propose_conf_change(cc));
        }
        let Some(r) = node.replica.as_mut() else {
            return "down".into();
        };
        use crate::protocol::{ClientRequest, ReplicaChange};
        let change = match cc {
            ConfChange::AddLearner(id) => ReplicaChange::AddLearner {
                id,
                addr: Some(format!("127.0.0.1:{}", 7000 + id)),
            },
            ConfChange::AddVoter(id) => ReplicaChange::AddVoter(id),
            ConfChange::Remove(id) => ReplicaChange::Remove(id),
        };
        let payload = crate::protocol::encode(
            crate::protocol::tag::CLIENT,
            0,
            &ClientRequest::ChangeReplicas(change),
        );
        r.input(
            now,
            Input::Message {
                from: coordinator::ADMIN_PEER,
                payload,
            },
        );
        "asked".into()
    }

    /// The liveness phase heals membership too: a replica the admin
    /// removed (which, without pre-vote, keeps campaigning and deposing
    /// leaders) is added back, as a learner and then a voter.
    pub(super) fn restore_membership(&mut self) {
        let Some(leader) = self.some_leader() else {
            self.at(20_000, Ev::RestoreMembership);
            return;
        };
        let live = self.live_ids();
        let conf = self.nodes[&leader].raft().expect("leads").conf().clone();
        let Some(gone) = live.into_iter().find(|id| !conf.voters.contains(id)) else {
            return; // everyone is a voter again
        };
        let cc = if conf.learners.contains(&gone) {
            ConfChange::AddVoter(gone)
        } else {
            ConfChange::AddLearner(gone)
        };
        let r = self.change_membership(leader, cc);
        self.trace(|| format!("restore membership at n{leader}: {cc:?}: {r}"));
        let _ = self.after_input(leader);
        self.at(20_000, Ev::RestoreMembership);
    }
}
