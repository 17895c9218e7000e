//! The simulated network: delay, loss, duplication, reordering, and the
//! nemesis's partitions (symmetric, asymmetric, isolating the leader).

use rand::Rng;

use super::*;

impl World {
    pub(super) fn send(&mut self, m: Message) {
        if self.blocked.contains(&(m.from, m.to)) {
            return;
        }
        if !self.healed && self.rng.random_bool(self.p.loss) {
            return;
        }
        let copies = if !self.healed && self.rng.random_bool(self.p.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut d = self.rng.random_range(self.p.delay_us.0..=self.p.delay_us.1);
            if !self.healed && self.rng.random_bool(self.p.reorder) {
                d += self.rng.random_range(0..self.p.reorder_us);
            }
            self.at(d, Ev::Deliver(m.clone()));
        }
    }

    pub(super) fn nemesis(&mut self) {
        if self.healed {
            return;
        }
        self.blocked.clear();
        let ids = self.node_ids();
        let what = self.rng.random_range(0..100);
        let desc = if what < 35 {
            "heal".to_string()
        } else if what < 60 {
            // Symmetric split into two sides.
            let side: Vec<NodeId> = ids
                .iter()
                .copied()
                .filter(|_| self.rng.random_bool(0.5))
                .collect();
            for &a in &ids {
                for &b in &ids {
                    if side.contains(&a) != side.contains(&b) {
                        self.blocked.insert((a, b));
                    }
                }
            }
            format!("split {side:?}")
        } else if what < 80 {
            // Isolate the leader (or anyone).
            let leader = self.some_leader();
            let victim = leader.unwrap_or(ids[self.rng.random_range(0..ids.len())]);
            for &b in &ids {
                if b != victim {
                    self.blocked.insert((victim, b));
                    self.blocked.insert((b, victim));
                }
            }
            format!("isolate {victim}")
        } else {
            // Asymmetric: some directed links drop everything.
            for &a in &ids {
                for &b in &ids {
                    if a != b && self.rng.random_bool(0.25) {
                        self.blocked.insert((a, b));
                    }
                }
            }
            format!("asymmetric {} links", self.blocked.len())
        };
        self.trace(|| format!("nemesis {desc}"));
        let d = self.rng.random_range(50_000..400_000);
        self.at(d, Ev::Nemesis);
    }

    pub(super) fn heal(&mut self) {
        self.healed = true;
        self.blocked.clear();
        self.p.slow_disk = 0.0;
        let down: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.raft.is_none())
            .map(|n| n.id)
            .collect();
        for id in down {
            self.at(0, Ev::Restart(id));
        }
        self.at(0, Ev::RestoreMembership);
        self.trace(|| "HEAL: faults stop; liveness phase".to_string());
    }
}
