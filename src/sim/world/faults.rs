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
            .find(|n| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader))
            .map(|n| n.id)
    }

    pub(super) fn crash_some(&mut self) {
        if self.healed {
            return;
        }
        let up: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.raft.is_some())
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
        let raft = self.nodes.get_mut(&leader).unwrap().raft.as_mut().unwrap();
        let conf = raft.conf().clone();
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
            let r = raft.transfer_leader(to);
            self.stats.transfers += u64::from(r.is_ok());
            format!("transfer {leader}->{to}: {r:?}")
        } else if let Some(gone) = live.into_iter().find(|id| !conf.voters.contains(id)) {
            // Someone is out: bring it back, as a learner first.
            let cc = if conf.learners.contains(&gone) {
                ConfChange::AddVoter(gone)
            } else {
                ConfChange::AddLearner(gone)
            };
            format!("{cc:?}: {:?}", raft.propose_conf_change(cc))
        } else if conf.voters.len() >= 3 {
            let victim = others[self.rng.random_range(0..others.len())];
            format!(
                "Remove({victim}): {:?}",
                raft.propose_conf_change(ConfChange::Remove(victim))
            )
        } else {
            return;
        };
        self.trace(|| format!("admin at n{leader}: {desc}"));
        let _ = self.after_input(leader);
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
        let raft = self.nodes.get_mut(&leader).unwrap().raft.as_mut().unwrap();
        let conf = raft.conf().clone();
        let Some(gone) = live.into_iter().find(|id| !conf.voters.contains(id)) else {
            return; // everyone is a voter again
        };
        let cc = if conf.learners.contains(&gone) {
            ConfChange::AddVoter(gone)
        } else {
            ConfChange::AddLearner(gone)
        };
        let r = raft.propose_conf_change(cc);
        self.trace(|| format!("restore membership at n{leader}: {cc:?}: {r:?}"));
        let _ = self.after_input(leader);
        self.at(20_000, Ev::RestoreMembership);
    }
}
