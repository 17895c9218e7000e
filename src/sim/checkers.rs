//! Safety invariants, checked after every simulated step.
//!
//! The checker keeps a global record of what the cluster has promised
//! (leaders per term, committed entries, applied entries) and compares every
//! node's new state against it as it changes. A violation names the
//! invariant and what broke it; the seed replays it exactly.

use std::collections::{BTreeMap, HashMap};

use ramcoord_log::{Entry, Index, NodeId, Term};
use xxhash_rust::xxh3::xxh3_64;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl Violation {
    pub(crate) fn new(invariant: &'static str, detail: String) -> Violation {
        Violation { invariant, detail }
    }
}

/// A digest of an entry's identity and contents.
pub fn entry_digest(e: &Entry) -> u64 {
    let mut buf = Vec::with_capacity(e.data.len() + 17);
    buf.extend_from_slice(&e.term.to_le_bytes());
    buf.push(e.kind as u8);
    buf.extend_from_slice(&e.data);
    xxh3_64(&buf)
}

/// The global record the invariants are checked against.
#[derive(Default)]
pub struct Checker {
    /// Election safety: at most one leader per term.
    leaders: HashMap<Term, NodeId>,
    /// Log matching: one entry per (index, term).
    entries: HashMap<(Index, Term), u64>,
    /// Committed entries never change: index -> (entry term, digest, the
    /// earliest term in which a node saw it committed).
    committed: BTreeMap<Index, (Term, u64, Term)>,
    /// State machine safety: index -> digest of what was applied there.
    applied: BTreeMap<Index, u64>,
}

impl Checker {
    /// A node is leader of `term`.
    pub fn on_leader(&mut self, node: NodeId, term: Term) -> Result<bool, Violation> {
        match self.leaders.insert(term, node) {
            Some(prev) if prev != node => Err(Violation::new(
                "election safety",
                format!("nodes {prev} and {node} both lead term {term}"),
            )),
            Some(_) => Ok(false),
            None => Ok(true),
        }
    }

    /// A node is about to persist `entries`.
    pub fn on_entries(&mut self, node: NodeId, entries: &[Entry]) -> Result<(), Violation> {
        for e in entries {
            let d = entry_digest(e);
            if let Some(prev) = self.entries.insert((e.index, e.term), d) {
                if prev != d {
                    return Err(Violation::new(
                        "log matching",
                        format!(
                            "node {node} has a different entry at index {} term {}",
                            e.index, e.term
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A node in term `now_term` considers (`index`, `term`, `digest`)
    /// committed.
    pub fn on_committed(
        &mut self,
        node: NodeId,
        now_term: Term,
        index: Index,
        term: Term,
        digest: u64,
    ) -> Result<(), Violation> {
        match self.committed.get_mut(&index) {
            Some(prev) if (prev.0, prev.1) != (term, digest) => Err(Violation::new(
                "committed entry changed",
                format!(
                    "node {node} commits index {index} at term {term}, but term {} was committed there before",
                    prev.0
                ),
            )),
            Some(prev) => {
                prev.2 = prev.2.min(now_term);
                Ok(())
            }
            None => {
                self.committed.insert(index, (term, digest, now_term));
                Ok(())
            }
        }
    }

    /// A new leader's log must hold every entry committed in an earlier
    /// term (leader completeness, Raft §5.4: an entry committed in term T
    /// is in the log of every leader of a term after T; a leader of an
    /// earlier term that only takes office late, after a slow disk, need
    /// not have it). `term_at` answers the leader's term at an index, or
    /// `None` if compacted (compacted entries were committed and checked).
    pub fn check_leader_completeness(
        &self,
        node: NodeId,
        leader_term: Term,
        last_index: Index,
        term_at: impl Fn(Index) -> Option<Result<Term, ()>>,
    ) -> Result<(), Violation> {
        for (&index, &(term, _, committed_in)) in &self.committed {
            if committed_in >= leader_term {
                continue; // committed in this term or later
            }
            if index > last_index {
                return Err(Violation::new(
                    "leader completeness",
                    format!("leader {node} of term {leader_term} lacks committed index {index} (its last is {last_index})"),
                ));
            }
            match term_at(index) {
                None => {}
                Some(Ok(t)) if t == term => {}
                Some(got) => {
                    return Err(Violation::new(
                        "leader completeness",
                        format!(
                            "leader {node} of term {leader_term} has {} at committed index {index}, expected term {term}",
                            match got {
                                Ok(t) => format!("term {t}"),
                                Err(_) => "no term".to_string(),
                            }
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// A node applied the entry `digest` at `index`.
    pub fn on_applied(&mut self, node: NodeId, index: Index, digest: u64) -> Result<(), Violation> {
        match self.applied.insert(index, digest) {
            Some(prev) if prev != digest => Err(Violation::new(
                "state machine safety",
                format!(
                    "node {node} applied a different entry at index {index} than another node did"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Highest index anyone applied.
    pub fn applied_max(&self) -> Index {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }

    /// What was applied at `index`, if anything.
    pub fn applied_at(&self, index: Index) -> Option<u64> {
        self.applied.get(&index).copied()
    }
}
