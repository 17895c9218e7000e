//! `ctl watch` at a replica: the configuration changes it has applied,
//! kept in order by version, and the watchers waiting for the next one.
//!
//! Every committed operation makes one configuration version (the cluster
//! state counts them), so "the changes after version V" has one answer in
//! every replica that has applied that far: the same records, in the same
//! order. A watcher that loses its replica asks another one from the last
//! version it saw. If that replica has applied less, the watcher waits
//! until it catches up; if it no longer holds the next change (it keeps
//! the last [`CHANGES_KEPT`], and none from before the snapshot it
//! started from), it says so and the watcher starts again from the
//! current state. Nothing is invented and nothing is skipped.
//!
//! A watch with nothing to say yet waits here (a long poll) until the next
//! change applies or its wait ends, whichever is first; waits end on
//! ticks. At most [`WATCHERS_MAX`] wait; past it a watch is answered at
//! once with no changes (the watcher asks again).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ramcoord_log::Storage;
use ramcoord_net::PeerId;

use super::Replica;
use crate::cluster::{Effect, Op, Table, TableId};
use crate::protocol::{self as client, Change, ClientReply};

/// Changes a replica keeps for watchers (oldest dropped first)...
pub const CHANGES_KEPT: usize = 4096;

/// ...and bytes of them (encoded) at most.
pub const CHANGES_BYTES_MAX: usize = 64 << 20;

/// Bytes of changes one answer carries at most (at least one change is
/// always sent; a single change larger than a frame is refused by
/// [`Replica::reply`]'s guard).
pub const WATCH_REPLY_BYTES: usize = 1 << 20;

/// Watches one peer may have waiting at once (past it its next is
/// answered at once, empty).
pub const WATCHERS_PER_PEER_MAX: usize = 16;

/// Watches a replica keeps waiting; past it a watch is answered at once.
pub const WATCHERS_MAX: usize = 1024;

/// A watch waiting for a change after `after`.
pub(super) struct Watcher {
    from: PeerId,
    request: u64,
    after: u64,
    until: Instant,
}

impl<S: Storage> Replica<S> {
    /// Notes the change an operation's commit record made (just applied,
    /// not rejected): the tables and servers it touched, as they are now.
    pub(super) fn note_change(&mut self, index: u64, term: u64, op: &Op, effect: &Effect) {
        let version = self.cluster.version();
        let mut servers = Vec::new();
        let mut tables = Vec::new();
        let mut dropped_table = None;
        let table = |name: &str| self.cluster.table(name).cloned();
        match op {
            Op::EnlistServer { .. } => {
                if let Effect::Enlisted(id) = effect {
                    servers.extend(self.cluster.server(*id).cloned());
                }
            }
            Op::CreateTable { name, .. } => tables.extend(table(name)),
            Op::DropTable { name } => dropped_table = Some(name.clone()),
            Op::SplitTablet { table: name, .. } => tables.extend(table(name)),
            Op::MigrateTablet {
                table: name, to, ..
            } => {
                tables.extend(table(name));
                servers.extend(self.cluster.server(*to).cloned());
            }
            Op::ServerCrashed { id, plan } => {
                // Only the tablets that moved (a crash can touch every
                // table; the change stays the size of the plan, and so
                // does its cost: copying each table it touched, to keep
                // the moved tablets, was 17 MB at 1M tablets, most of a
                // leaving master's plan).
                servers.extend(self.cluster.server(*id).cloned());
                let mut moved: BTreeMap<TableId, BTreeSet<u64>> = BTreeMap::new();
                for r in plan {
                    moved.entry(r.table).or_default().insert(r.start_hash);
                }
                for (t, starts) in moved {
                    let Some(t) = self.cluster.table_by_id(t) else {
                        continue;
                    };
                    tables.push(Table {
                        id: t.id,
                        name: t.name.clone(),
                        state: t.state,
                        tablets: starts
                            .iter()
                            .filter_map(|s| {
                                let i = t.tablets.binary_search_by_key(s, |x| x.start_hash);
                                i.ok().map(|i| t.tablets[i].clone())
                            })
                            .collect(),
                    });
                }
            }
            Op::ServerRemoved { id } => servers.extend(self.cluster.server(*id).cloned()),
        }
        let change = Change {
            version,
            index,
            term,
            kind: op.kind().to_string(),
            summary: op.summary(),
            servers,
            tables,
            dropped_table,
        };
        let bytes = postcard::to_allocvec(&change).map_or(0, |v| v.len());
        self.changes_bytes += bytes;
        self.changes.push_back((change, bytes));
        while self.changes.len() > CHANGES_KEPT
            || (self.changes_bytes > CHANGES_BYTES_MAX && self.changes.len() > 1)
        {
            if let Some((_, b)) = self.changes.pop_front() {
                self.changes_bytes -= b;
            }
        }
    }

    /// The answer to a watch from `after`, if there is one now: the
    /// changes after it, or that they are no longer held.
    fn changes_after(&self, after: u64) -> Option<ClientReply> {
        let version = self.cluster.version();
        if after >= version {
            return None;
        }
        // The history holds consecutive versions ending at `version`.
        let oldest = self.changes.front().map_or(version + 1, |c| c.0.version);
        if after + 1 < oldest {
            return Some(ClientReply::ChangesCompacted { oldest, version });
        }
        let skip = (after + 1 - oldest) as usize;
        let mut bytes = 0;
        let mut changes = Vec::new();
        for (c, b) in self
            .changes
            .iter()
            .skip(skip)
            .take(client::WATCH_CHANGES_MAX)
        {
            if !changes.is_empty() && bytes + b > WATCH_REPLY_BYTES {
                break;
            }
            bytes += b;
            changes.push(c.clone());
        }
        Some(ClientReply::Changes { version, changes })
    }

    /// A watch: answered now if there is something to say (or no room to
    /// wait), else kept until a change applies or its wait ends.
    pub(super) fn watch(&mut self, from: PeerId, request: u64, after: u64, wait_ms: u32) {
        let reply = match self.changes_after(after) {
            Some(reply) => reply,
            // Cut off from the leader, it may wait for ever while the
            // cluster changes: the watcher is sent to another replica.
            None if wait_ms > 0 && !self.hears_leader() => {
                ClientReply::Refused("this replica hears no leader; ask another replica".into())
            }
            None if wait_ms == 0
                || self.watchers.len() >= WATCHERS_MAX
                || self.watchers.iter().filter(|w| w.from == from).count()
                    >= WATCHERS_PER_PEER_MAX =>
            {
                ClientReply::Changes {
                    version: self.cluster.version(),
                    changes: Vec::new(),
                }
            }
            None => {
                let wait = Duration::from_millis(wait_ms.min(client::WATCH_WAIT_MS_MAX) as u64);
                self.watchers.push_back(Watcher {
                    from,
                    request,
                    after,
                    until: self.now + wait,
                });
                return;
            }
        };
        self.reply(from, request, &reply);
    }

    /// Answers the watchers that have a change to see, and those whose
    /// wait is over (with none).
    pub(super) fn answer_watchers(&mut self) {
        if self.watchers.is_empty() {
            return;
        }
        let version = self.cluster.version();
        let now = self.now;
        let mut keep = VecDeque::with_capacity(self.watchers.len());
        while let Some(w) = self.watchers.pop_front() {
            let reply = match self.changes_after(w.after) {
                Some(reply) => reply,
                None if now >= w.until => ClientReply::Changes {
                    version,
                    changes: Vec::new(),
                },
                None => {
                    keep.push_back(w);
                    continue;
                }
            };
            self.reply(w.from, w.request, &reply);
        }
        self.watchers = keep;
    }

    /// The changes this replica holds (oldest first).
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().map(|(c, _)| c)
    }
}
