//! Clients and what is checked against them: the register workload, its
//! history, acknowledged writes surviving, and linearizability.

use rand::Rng;

use super::*;

impl World {
    pub(super) fn client_next(&mut self, c: usize) {
        if self.clients[c].in_flight.is_some() {
            return;
        }
        let op_id = self.next_op;
        self.next_op += 1;
        let key = self.rng.random_range(0..KEYS);
        let roll = self.rng.random_range(0..100);
        let (req, input) = if roll < 40 {
            (Req::Read { key }, RegisterInput::Read)
        } else if roll < 80 {
            let value = self.next_value;
            self.next_value += 1;
            (
                Req::Write { key, value },
                RegisterInput::Write(value as i64),
            )
        } else {
            // Compare against a recent value so some succeed.
            let from = self
                .next_value
                .saturating_sub(self.rng.random_range(1..4))
                .max(1);
            let to = self.next_value;
            self.next_value += 1;
            (
                Req::Cas { key, from, to },
                RegisterInput::Cas(from as i64, to as i64),
            )
        };
        let ids = self.node_ids();
        let target = match self.clients[c].leader_hint {
            Some(l) if self.rng.random_bool(0.9) => l,
            _ => ids[self.rng.random_range(0..ids.len())],
        };
        self.hist_clock += 1;
        let idx = self.history.len();
        self.history.push(HistOp {
            key,
            op: Operation {
                call: self.hist_clock,
                ret: None,
                input,
                output: None,
                process: c as u64,
                origin: op_id,
            },
            write_index: None,
            write_digest: None,
            dropped: false,
        });
        self.clients[c].in_flight = Some((op_id, idx));
        let d = self.rng.random_range(self.p.delay_us.0..=self.p.delay_us.1);
        self.at(
            d,
            Ev::Request {
                node: target,
                client: c,
                op_id,
                req,
            },
        );
        self.at(CLIENT_TIMEOUT_US, Ev::Timeout { client: c, op_id });
        self.trace(|| format!("client {c} op {op_id} {req:?} -> n{target}"));
    }

    pub(super) fn request(
        &mut self,
        id: NodeId,
        client: usize,
        op_id: u64,
        req: Req,
    ) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        let result = match req {
            Req::Read { key } => raft.read_index(op_id).map(|_| {
                node.pending_reads.insert(op_id, (client, key));
            }),
            Req::Write { key, value } => {
                let cmd = Command {
                    op_id,
                    op: KvOp::Put { key, value },
                };
                raft.propose(cmd.encode()).map(|index| {
                    node.pending_writes.insert(index, (client, op_id));
                })
            }
            Req::Cas { key, from, to } => {
                let cmd = Command {
                    op_id,
                    op: KvOp::Cas { key, from, to },
                };
                raft.propose(cmd.encode()).map(|index| {
                    node.pending_writes.insert(index, (client, op_id));
                })
            }
        };
        if let Err(e) = result {
            let hint = match e {
                ProposeError::NotLeader { leader } => leader,
                _ => None,
            };
            self.reply(client, op_id, Reply::Failed(hint));
        }
        self.after_input(id)
    }

    pub(super) fn reply(&mut self, client: usize, op_id: u64, reply: Reply) {
        let d = self.rng.random_range(self.p.delay_us.0..=self.p.delay_us.1);
        self.at(
            d,
            Ev::Response {
                client,
                op_id,
                reply,
            },
        );
    }

    pub(super) fn response(&mut self, c: usize, op_id: u64, reply: Reply) {
        let Some((current, idx)) = self.clients[c].in_flight else {
            return;
        };
        if current != op_id {
            return; // answer to an operation that already timed out
        }
        self.clients[c].in_flight = None;
        self.hist_clock += 1;
        let h = &mut self.history[idx];
        match reply {
            Reply::Read(v) => {
                self.stats.reads += 1;
                h.op.ret = Some(self.hist_clock);
                h.op.output = Some(RegisterOutput::Read(v.map(|x| x as i64)));
                self.stats.ops_ok += 1;
            }
            Reply::Done => {
                h.op.ret = Some(self.hist_clock);
                h.op.output = Some(RegisterOutput::Done);
                self.stats.ops_ok += 1;
                if self.healed && h.op.call > 0 && !matches!(h.op.input, RegisterInput::Read) {
                    self.live_commit_after_heal = true;
                }
            }
            Reply::Failed(hint) => {
                // Certainly no effect: drop it from the history.
                self.history[idx].dropped = true;
                self.clients[c].leader_hint = hint;
            }
        }
        self.trace(|| format!("client {c} op {op_id} <- {reply:?}"));
        let d = self.rng.random_range(0..5_000);
        self.at(d, Ev::ClientNext(c));
    }

    pub(super) fn timeout(&mut self, c: usize, op_id: u64) {
        let Some((current, idx)) = self.clients[c].in_flight else {
            return;
        };
        if current != op_id {
            return;
        }
        self.clients[c].in_flight = None;
        self.clients[c].leader_hint = None;
        if matches!(self.history[idx].op.input, RegisterInput::Read) {
            self.history[idx].dropped = true; // a read that saw nothing constrains nothing
        } else {
            self.stats.ops_unknown += 1;
        }
        self.trace(|| format!("client {c} op {op_id} timed out"));
        self.at(0, Ev::ClientNext(c));
    }

    /// Every acknowledged write is still in the log of the final leader, at
    /// the index it was acknowledged at (or below its snapshot, which only
    /// covers applied entries).
    pub(super) fn check_acked_writes_survive(&self) -> Result<(), Violation> {
        // The newest leader (a deposed one may not know it yet).
        let leader = self
            .nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .filter(|r| r.role() == Role::Leader)
            .max_by_key(|r| r.term());
        let Some(leader) = leader else { return Ok(()) };
        let log = leader.log();
        for h in &self.history {
            let (Some(index), Some(digest)) = (h.write_index, h.write_digest) else {
                continue;
            };
            if h.op.output.is_none() {
                continue;
            }
            if index < log.first_index() {
                continue;
            }
            let found = log
                .entries(index, index + 1, u64::MAX)
                .ok()
                .and_then(|e| e.first().map(entry_digest));
            if found != Some(digest) {
                return Err(Violation::new(
                    "acknowledged write lost",
                    format!(
                        "op {} acknowledged at index {index} is not in leader {}'s log",
                        h.op.origin,
                        leader.id()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The client history as the checker sees it. The simulator knows what
    /// clients do not: a write whose outcome the client never learned
    /// either was applied somewhere (then it took effect no later than its
    /// first apply, which becomes its response time) or was never applied
    /// anywhere (then no read saw it, and "never happened" is equivalent to
    /// "happened after everything"). This keeps unknown outcomes from
    /// blowing up the search without hiding any anomaly a read could show.
    pub(super) fn checked_history(
        &self,
        key: u64,
    ) -> Vec<Operation<RegisterInput, RegisterOutput>> {
        let mut ops = Vec::new();
        for h in self.history.iter().filter(|h| h.key == key && !h.dropped) {
            let mut op = h.op.clone();
            if op.ret.is_none() {
                match self.first_applied.get(&op.origin) {
                    Some(&(clock, true)) => {
                        op.ret = Some(clock.max(op.call + 1));
                        op.output = Some(RegisterOutput::Done);
                    }
                    _ => continue,
                }
            }
            ops.push(op);
        }
        ops
    }

    pub(super) fn check_linearizable(&self) -> Result<(), Violation> {
        for key in 0..KEYS {
            let ops = self.checked_history(key);
            match lincheck::check_with_budget(&Register, &ops, LINCHECK_STEPS_MAX) {
                Verdict::Linearizable => {}
                Verdict::NotLinearizable(f) => {
                    let ops_desc: Vec<String> = f
                        .unplaceable
                        .iter()
                        .map(|&i| {
                            format!(
                                "op {} {} -> {}",
                                ops[i].origin,
                                ops[i].input,
                                ops[i]
                                    .output
                                    .as_ref()
                                    .map_or("no answer".to_string(), |o| o.to_string())
                            )
                        })
                        .collect();
                    return Err(Violation::new(
                        "linearizability",
                        format!(
                            "key {key}: history of {} ops is not linearizable; could not place {}",
                            ops.len(),
                            ops_desc.join("; ")
                        ),
                    ));
                }
                Verdict::Unknown => {
                    return Err(Violation::new(
                        "linearizability",
                        format!("key {key}: checker gave no verdict within its budget"),
                    ))
                }
            }
        }
        Ok(())
    }
}
