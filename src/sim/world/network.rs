//! The simulated network: delay, loss, duplication, reordering, and the
//! nemesis's partitions (symmetric, asymmetric, isolating the leader).

use rand::Rng;

use super::*;
use ramcoord_log::MessageBody;

impl World {
    pub(super) fn send(&mut self, m: Message) {
        let (from, to) = (m.from, m.to);
        self.send_over_network(from, to, |_| Ev::Deliver(m.clone()));
    }

    /// Sends a replica's encoded message to another replica over the
    /// simulated network (the coordinator workload).
    pub(super) fn send_bytes(&mut self, from: NodeId, to: NodeId, payload: bytes::Bytes) {
        self.send_over_network(from, to, |_| Ev::DeliverBytes {
            from,
            to,
            payload: payload.clone(),
        });
    }

    /// Delivers `ev()` from `from` to `to`, as the network's faults allow:
    /// cut links, loss, duplication, delay and reordering.
    fn send_over_network(&mut self, from: NodeId, to: NodeId, ev: impl Fn(()) -> Ev) {
        if self.blocked.contains(&(from, to)) {
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
            self.at(d, ev(()));
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

    /// Steps a forged message into a live replica, bypassing the network,
    /// as an attacker on a replica's port would (the transport does not
    /// authenticate yet): from a replica id no configuration holds with a
    /// newer term, or from a member with a term at the ceiling or far
    /// ahead. Each must be refused by the Raft core and change nothing:
    /// checked here, and by every safety and liveness check of the run.
    pub(super) fn forge(&mut self) -> Result<(), Violation> {
        if self.healed {
            return Ok(());
        }
        let d = self.rng.random_range(10_000..100_000);
        self.at(d, Ev::Forge);
        let ids: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let to = ids[self.rng.random_range(0..ids.len())];
        let raft = self.nodes[&to].raft().unwrap();
        let ours = raft.term();
        let members: Vec<NodeId> = raft.conf().members().collect();
        if members.is_empty() {
            return Ok(()); // a joining replica hears anyone until configured
        }
        let hears_leader = raft.hears_leader();
        let member = members[self.rng.random_range(0..members.len())];
        let (from, term) = match self.rng.random_range(0..3) {
            0 => (
                1_000_000 + self.rng.random_range(0..10),
                ours + self.rng.random_range(1..1000),
            ),
            1 => (member, u64::MAX - self.rng.random_range(0..3)),
            _ => (member, ours + (1 << 32) + self.rng.random_range(1..1000)),
        };
        // A non-member's leader messages reach a replica that hears no
        // leader of its own (its configuration may lag); forged ones are
        // refused only while it is in contact with its leader.
        let stranger = from >= 1_000_000;
        let kind = match self.rng.random_range(0..4) {
            0 if stranger && !hears_leader => 1,
            k => k,
        };
        let body = match kind {
            0 => MessageBody::Heartbeat {
                commit: 0,
                seq: 0,
                sent_tick: 0,
            },
            1 => MessageBody::Vote {
                last_index: u64::MAX - 1,
                last_term: term,
                transfer: true,
            },
            2 => MessageBody::PreVote {
                last_index: u64::MAX - 1,
                last_term: term,
            },
            _ => MessageBody::TimeoutNow,
        };
        let before = self.nodes[&to].refused();
        let m = Message {
            from,
            to,
            term,
            body,
        };
        self.trace(|| format!("forge {from}->{to} t{term} {}", m.body.name()));
        let now = self.instant();
        let node = self.nodes.get_mut(&to).unwrap();
        if let Some(raft) = node.raft.as_mut() {
            raft.step(m);
        } else if let Some(r) = node.replica.as_mut() {
            // Through the replica's edge, as it would come off the wire.
            let payload = crate::protocol::raft_payload(&m);
            r.input(now, crate::replica::Input::Message { from, payload });
        }
        self.stats.forged += 1;
        let raft = self.nodes[&to].raft().unwrap();
        if self.nodes[&to].refused() != before + 1 || raft.term() != ours {
            return Err(Violation::new(
                "forged message taken",
                format!("node {to} (term {ours}) took a forged message from {from} at term {term}"),
            ));
        }
        self.after_input(to)
    }

    pub(super) fn heal(&mut self) {
        self.healed = true;
        self.blocked.clear();
        self.p.slow_disk = 0.0;
        let down: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| !n.is_up())
            .map(|n| n.id)
            .collect();
        for id in down {
            self.at(0, Ev::Restart(id));
        }
        self.at(0, Ev::RestoreMembership);
        self.trace(|| "HEAL: faults stop; liveness phase".to_string());
    }
}
