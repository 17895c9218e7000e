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

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ramcoord_log::Storage;
use ramcoord_net::PeerId;

use super::Replica;
use crate::cluster::{Effect, Op};
use crate::protocol::{self as client, Change, ClientReply};

/// Changes a replica keeps for watchers (oldest dropped first).
pub const CHANGES_KEPT: usize = 4096;

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
                servers.extend(self.cluster.server(*id).cloned());
                let ids: BTreeSet<_> = plan.iter().map(|r| r.table).collect();
                tables.extend(
                    self.cluster
                        .tables()
                        .filter(|t| ids.contains(&t.id))
                        .cloned(),
                );
            }
            Op::ServerRemoved { id } => servers.extend(self.cluster.server(*id).cloned()),
        }
        if self.changes.len() == CHANGES_KEPT {
            self.changes.pop_front();
        }
        self.changes.push_back(Change {
            version,
            index,
            term,
            kind: op.kind().to_string(),
            summary: op.summary(),
            servers,
            tables,
            dropped_table,
        });
    }

    /// The answer to a watch from `after`, if there is one now: the
    /// changes after it, or that they are no longer held.
    fn changes_after(&self, after: u64) -> Option<ClientReply> {
        let version = self.cluster.version();
        if after >= version {
            return None;
        }
        // The history holds consecutive versions ending at `version`.
        let oldest = self.changes.front().map_or(version + 1, |c| c.version);
        if after + 1 < oldest {
            return Some(ClientReply::ChangesCompacted { oldest, version });
        }
        let skip = (after + 1 - oldest) as usize;
        let changes = self
            .changes
            .iter()
            .skip(skip)
            .take(client::WATCH_CHANGES_MAX)
            .cloned()
            .collect();
        Some(ClientReply::Changes { version, changes })
    }

    /// A watch: answered now if there is something to say (or no room to
    /// wait), else kept until a change applies or its wait ends.
    pub(super) fn watch(&mut self, from: PeerId, request: u64, after: u64, wait_ms: u32) {
        let reply = match self.changes_after(after) {
            Some(reply) => reply,
            None if wait_ms == 0 || self.watchers.len() >= WATCHERS_MAX => ClientReply::Changes {
                version: self.cluster.version(),
                changes: Vec::new(),
            },
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
        self.changes.iter()
    }
}
