//! Bookkeeping after an entry applies: the recent-operations list, the
//! commit-point latency, and the client waiting for the entry.

use bytes::Bytes;
use ramcoord_log::{EntryKind, Storage};

use super::{Replica, RECENT_OPS};
use crate::cluster::{Effect, Outcome, Record};
use crate::protocol::{self as client, ClientReply, OpRecord, OpResult};

impl<S: Storage> Replica<S> {
    /// Bookkeeping after applying the entry at `index`: the op log, the
    /// commit-point latency, and the client waiting for it.
    pub(super) fn applied(
        &mut self,
        index: u64,
        term: u64,
        data: &Bytes,
        outcome: &Outcome,
        kind: EntryKind,
    ) {
        let now = self.now;
        let active = self.coord.is_active();
        let proposed = self.proposed_at.remove(&index);
        // Proposals at indexes the log has applied past without them are
        // gone (overwritten by another leader's entries).
        while let Some((&i, _)) = self.proposed_at.first_key_value() {
            if i > index {
                break;
            }
            self.proposed_at.pop_first();
        }
        let commit_us = proposed.map(|t| now.duration_since(t).as_micros() as u64);
        // What the client waiting for this entry is told: (seq, term,
        // result) of the operation, or that its outcome is unknown.
        let result: Option<Result<(u64, u64, OpResult), String>> = match outcome {
            Outcome::Committed(_) | Outcome::Rejected(_) => {
                let Some(op) = Record::decode(data).ok().and_then(|r| r.op().cloned()) else {
                    // Only a commit record has a commit outcome.
                    tracing::error!(index, "a commit outcome without a commit record");
                    return;
                };
                let rejected = match outcome {
                    Outcome::Rejected(r) => Some(r.to_string()),
                    _ => None,
                };
                if let Outcome::Committed(effect) = outcome {
                    self.committed_at.insert(index, now);
                    self.note_change(index, term, &op, effect);
                }
                if let Some(us) = commit_us {
                    self.metrics.commit_point(op.kind(), us);
                    self.commits_measured += 1;
                    if self.commit_latencies_us.len() == client::RECENT_LATENCIES {
                        self.commit_latencies_us.pop_front();
                    }
                    self.commit_latencies_us.push_back(us);
                }
                if active {
                    match &rejected {
                        None => tracing::info!(
                            seq = index,
                            term,
                            op = %op.summary(),
                            commit_us,
                            "commit point"
                        ),
                        Some(why) => {
                            tracing::info!(seq = index, op = %op.kind(), why, "rejected at apply")
                        }
                    }
                }
                if self.recent.len() == RECENT_OPS {
                    self.recent.pop_front();
                }
                self.recent.push_back(OpRecord {
                    seq: index,
                    term,
                    summary: op.summary(),
                    kind: op.kind().to_string(),
                    rejected: rejected.clone(),
                    completed: None,
                    commit_us,
                    complete_after_us: None,
                });
                let r = match outcome {
                    Outcome::Committed(e) => Ok(e.clone()),
                    Outcome::Rejected(r) => Err(r.clone()),
                    _ => Ok(Effect::Changed),
                };
                Some(Ok((index, term, OpResult::of(&r))))
            }
            Outcome::Duplicate {
                rpc,
                index: seq,
                result,
            } => {
                if active {
                    tracing::info!(%rpc, index, seq, "a second commit record of an operation applied as a duplicate (nothing changed)");
                }
                let t = self.raft.log().term(*seq).unwrap_or(term);
                Some(Ok((*seq, t, OpResult::of(result))))
            }
            Outcome::Unknown { rpc, reason } => {
                if active {
                    tracing::info!(%rpc, index, %reason, "a client operation with an unknown outcome applied as nothing");
                }
                Some(Err(format!("operation {rpc}: {reason}")))
            }
            Outcome::Completed(seq) => {
                let after = self
                    .committed_at
                    .remove(seq)
                    .map(|t| now.duration_since(t).as_micros() as u64);
                let mut commit_term = None;
                if let Some(r) = self.recent.iter_mut().rev().find(|r| r.seq == *seq) {
                    r.completed = Some((index, term));
                    r.complete_after_us = after;
                    commit_term = Some(r.term);
                }
                if active {
                    let rolled_forward = commit_term.is_some_and(|t| t < term);
                    tracing::info!(
                        seq,
                        index,
                        rolled_forward,
                        complete_after_us = after,
                        "operation complete"
                    );
                }
                if let Some(w) = self.completion_waiters.remove(seq) {
                    let reply = ClientReply::Completed {
                        seq: *seq,
                        complete_us: now.duration_since(w.received).as_micros() as u64,
                    };
                    self.reply(w.from, w.request, &reply);
                }
                None
            }
            Outcome::Malformed(e) => {
                tracing::warn!(index, term, error = %e, "a committed entry is not a coordinator record: applied as a rejection (nothing changed)");
                Some(Ok((
                    index,
                    term,
                    OpResult::Rejected(format!("malformed record: {e}")),
                )))
            }
            Outcome::NotARecord if kind == EntryKind::ConfChange => {
                Some(Ok((index, term, OpResult::Changed)))
            }
            Outcome::Noop => {
                if let Some(us) = commit_us {
                    self.metrics.commit_point("noop", us);
                }
                Some(Ok((index, term, OpResult::Changed)))
            }
            Outcome::AlreadyComplete(_) | Outcome::NotARecord => None,
        };
        // Waiters before this index can no longer be answered by their entry.
        while let Some((&i, _)) = self.waiters.first_key_value() {
            if i >= index {
                break;
            }
            let (_, w) = self.waiters.pop_first().expect("just looked");
            self.lost_waiter(w);
        }
        let Some(w) = self.waiters.remove(&index) else {
            return;
        };
        if let Some(rpc) = w.rpc {
            self.rpc_inflight.remove(&rpc.key());
        }
        let received = w.received;
        match result {
            Some(Ok((seq, t, result))) if w.data == *data => {
                let completes = match outcome {
                    Outcome::Committed(_) => true,
                    Outcome::Duplicate { result, .. } => result.is_ok(),
                    _ => false,
                };
                if seq != index {
                    // A duplicate: answered as the original (and its
                    // completion, now or when it comes).
                    let r = match outcome {
                        Outcome::Duplicate { result, .. } => result.clone(),
                        _ => Ok(Effect::Changed),
                    };
                    self.answer_applied(w.from, w.request, seq, &r, w.until_complete, received);
                    return;
                }
                let reply = ClientReply::Committed {
                    seq,
                    term: t,
                    result,
                    commit_us: now.duration_since(received).as_micros() as u64,
                };
                self.reply(w.from, w.request, &reply);
                if w.until_complete && completes {
                    self.completion_waiters.insert(index, w);
                }
            }
            Some(Err(why)) if w.data == *data => {
                self.reply(w.from, w.request, &ClientReply::Unknown(why));
            }
            _ => self.lost_waiter(w),
        }
    }
}
