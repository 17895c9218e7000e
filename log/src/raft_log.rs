//! The log as the core sees it: durable entries in [`Storage`] followed by
//! entries not yet durable (`Unstable`), plus the commit and apply points.
//!
//! Invariants:
//! - `applied <= committed <= last_index()`;
//! - unstable entries are contiguous from `unstable.offset`; entries below it
//!   are read from storage;
//! - entries below `unstable.in_progress` have been handed to the driver to
//!   persist and are not handed out again; they stay readable here until the
//!   driver acknowledges them.

use crate::storage::{Storage, StorageError};
use crate::types::{Entry, Index, Snapshot, Term};

#[derive(Debug)]
pub(crate) struct Unstable {
    /// A snapshot received from the leader, not yet durable.
    pub snapshot: Option<Snapshot>,
    /// Whether `snapshot` has been handed to the driver.
    pub snapshot_in_progress: bool,
    /// Entries not yet durable.
    pub entries: Vec<Entry>,
    /// Index of `entries[0]` (or where the next entry would go).
    pub offset: Index,
    /// Entries with index `< in_progress` have been handed out.
    pub in_progress: Index,
}

/// The log: storage, unstable tail, commit and apply points.
#[derive(Debug)]
pub struct RaftLog<S: Storage> {
    pub(crate) storage: S,
    pub(crate) unstable: Unstable,
    /// Highest index known committed.
    pub committed: Index,
    /// Highest index handed out for applying.
    pub applied: Index,
}

impl<S: Storage> RaftLog<S> {
    pub(crate) fn new(storage: S, committed: Index) -> RaftLog<S> {
        let first = storage.first_index();
        let last = storage.last_index();
        assert!(
            committed <= last,
            "hard state commit {committed} is past the log's last index {last}"
        );
        RaftLog {
            unstable: Unstable {
                snapshot: None,
                snapshot_in_progress: false,
                entries: Vec::new(),
                offset: last + 1,
                in_progress: last + 1,
            },
            committed: committed.max(first - 1),
            applied: first - 1,
            storage,
        }
    }

    /// First index with an entry.
    pub fn first_index(&self) -> Index {
        match &self.unstable.snapshot {
            Some(s) => s.meta.index + 1,
            None => self.storage.first_index(),
        }
    }

    /// Last index with an entry.
    pub fn last_index(&self) -> Index {
        if let Some(e) = self.unstable.entries.last() {
            return e.index;
        }
        match &self.unstable.snapshot {
            Some(s) => s.meta.index,
            None => self.storage.last_index(),
        }
    }

    /// Term of the entry at `index`.
    pub fn term(&self, index: Index) -> Result<Term, StorageError> {
        if let Some(s) = &self.unstable.snapshot {
            if index == s.meta.index {
                return Ok(s.meta.term);
            }
            if index < s.meta.index {
                return Err(StorageError::Compacted(index));
            }
        }
        if index >= self.unstable.offset {
            return self
                .unstable
                .entries
                .get((index - self.unstable.offset) as usize)
                .map(|e| e.term)
                .ok_or(StorageError::Unavailable(index));
        }
        self.storage.term(index)
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.term(self.last_index())
            .expect("the last entry's term is always known")
    }

    /// True if entry `index` exists with `term`.
    pub fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// True if a log ending at (`last_index`, `last_term`) is at least as
    /// up to date as ours (§5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries `[lo, hi)` up to `max_bytes` (at least one).
    pub fn entries(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted(lo));
        }
        let hi = hi.min(self.last_index() + 1);
        let mut out = Vec::new();
        if lo < self.unstable.offset {
            out = self
                .storage
                .entries(lo, hi.min(self.unstable.offset), max_bytes)?;
            if (out.len() as Index) < hi.min(self.unstable.offset) - lo {
                return Ok(out);
            }
        }
        let mut bytes: u64 = out.iter().map(Entry::payload_len).sum();
        let start = lo.max(self.unstable.offset);
        for i in start..hi {
            let e = &self.unstable.entries[(i - self.unstable.offset) as usize];
            bytes += e.payload_len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    /// The largest index `<= index` whose term is `<= term` (used to skip a
    /// whole conflicting term at once when backing up, thesis §5.3).
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term && i > 0 => i -= 1,
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    /// Appends `entries` (which may overlap the log), truncating the first
    /// conflicting suffix. Returns the new last index, or `None` if a
    /// conflict would rewrite a committed entry (a protocol violation the
    /// caller asserts on).
    pub(crate) fn maybe_append_from_leader(&mut self, entries: &[Entry]) -> Index {
        let mut conflict = None;
        for e in entries {
            if !self.match_term(e.index, e.term) {
                conflict = Some(e.index);
                break;
            }
        }
        if let Some(c) = conflict {
            assert!(
                c > self.committed,
                "conflict at {c} would rewrite committed entries (commit {})",
                self.committed
            );
            let from = (c - entries[0].index) as usize;
            self.append(&entries[from..]);
        }
        entries.last().map_or(self.last_index(), |e| e.index)
    }

    /// Appends entries that continue or overwrite the unstable tail.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let after = first.index;
        assert!(
            after > self.committed,
            "append at {after} below commit {}",
            self.committed
        );
        let u = &mut self.unstable;
        let end = u.offset + u.entries.len() as Index;
        if after == end {
            // Fast path: continues the tail.
        } else if after <= u.offset {
            // Replaces the whole unstable tail (and shadows a storage suffix,
            // which the driver will truncate when it persists these).
            u.offset = after;
            u.entries.clear();
        } else {
            u.entries.truncate((after - u.offset) as usize);
        }
        u.in_progress = u.in_progress.min(after);
        u.entries.extend_from_slice(entries);
    }

    /// Entries not yet handed to the driver.
    pub(crate) fn next_unstable(&self) -> &[Entry] {
        let start =
            (self.unstable.in_progress.max(self.unstable.offset) - self.unstable.offset) as usize;
        &self.unstable.entries[start.min(self.unstable.entries.len())..]
    }

    /// Marks every unstable entry handed out.
    pub(crate) fn accept_unstable(&mut self) {
        self.unstable.in_progress = self.unstable.offset + self.unstable.entries.len() as Index;
        if self.unstable.snapshot.is_some() {
            self.unstable.snapshot_in_progress = true;
        }
    }

    /// The driver made entries up to (`index`, `term`) durable.
    pub(crate) fn stable_to(&mut self, index: Index, term: Term) {
        let u = &mut self.unstable;
        if index < u.offset {
            return;
        }
        let Some(e) = u.entries.get((index - u.offset) as usize) else {
            return;
        };
        if e.term != term {
            return; // overwritten since; the newer entries are still pending
        }
        let n = (index + 1 - u.offset) as usize;
        u.entries.drain(..n);
        u.offset = index + 1;
        u.in_progress = u.in_progress.max(u.offset);
    }

    /// The driver made the snapshot at `index` durable.
    pub(crate) fn stable_snapshot_to(&mut self, index: Index) {
        if self
            .unstable
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == index)
        {
            self.unstable.snapshot = None;
            self.unstable.snapshot_in_progress = false;
        }
    }

    /// Replaces the log with a snapshot from the leader.
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(index > self.committed);
        self.committed = index;
        self.unstable.offset = index + 1;
        self.unstable.in_progress = index + 1;
        self.unstable.entries.clear();
        self.unstable.snapshot = Some(snapshot);
        self.unstable.snapshot_in_progress = false;
    }

    /// The highest index that is durable locally (committed entries are
    /// handed out for applying only up to here).
    pub fn persisted_last(&self) -> Index {
        if self.unstable.snapshot.is_some() {
            // Nothing past a snapshot that is not durable yet.
            return self
                .storage
                .last_index()
                .min(self.storage.first_index() - 1);
        }
        (self.unstable.offset - 1).min(self.last_index())
    }

    /// Raises the commit index (never lowers it).
    pub(crate) fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} past last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// The storage, read-only.
    pub fn storage(&self) -> &S {
        &self.storage
    }
}
