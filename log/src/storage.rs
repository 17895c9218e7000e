//! The log's storage interface and its in-memory implementation.
//!
//! # Correctness
//!
//! The Raft core only *reads* storage. The driver writes to it from each
//! [`crate::Ready`], in the order the readies were produced, and within one
//! ready in this order: snapshot, entries, hard state. A ready is
//! acknowledged ([`crate::RawNode::advance`]) only once all of its writes are
//! durable; until then the core keeps the entries in memory and never
//! answers anything that depends on them. A crash may lose any write not yet
//! acknowledged, and may tear the last one (a prefix of its entries survives,
//! its hard state does not); nothing acknowledged may be lost.
//!
//! Invariants an implementation keeps:
//! - `first_index() == snapshot().meta.index + 1`, `last_index() >= snapshot().meta.index`;
//! - `term(snapshot index)` is the snapshot's term; `term(i)` for
//!   `first_index() <= i <= last_index()` is entry `i`'s term;
//! - `append` of entries starting at `i` first discards every entry `>= i`.

#[cfg(test)]
use crate::types::SnapshotMeta;
use crate::types::{ConfChange, ConfState, Entry, EntryKind, HardState, Index, Snapshot, Term};

/// Why storage could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The index is below the latest snapshot: its entry is gone.
    #[error("index {0} is compacted")]
    Compacted(Index),
    /// The index is above the last entry.
    #[error("index {0} is not in the log yet")]
    Unavailable(Index),
    /// A write would leave a gap or rewrite compacted entries.
    #[error("write at index {at} does not continue the log (first {first}, last {last})")]
    NotContiguous {
        /// Where the write started.
        at: Index,
        /// The log's first index.
        first: Index,
        /// The log's last index.
        last: Index,
    },
    /// A snapshot older than the one held.
    #[error("snapshot at {new} is older than the one held at {held}")]
    SnapshotOutOfDate {
        /// The offered snapshot's index.
        new: Index,
        /// The held snapshot's index.
        held: Index,
    },
    /// The disk failed. Fatal: the node stops rather than guess what is
    /// durable.
    #[error("storage I/O failed: {0}")]
    Io(String),
}

/// Where the Raft log lives. See the module docs for the write rules.
pub trait Storage {
    /// The durable hard state and the configuration of the latest snapshot.
    fn initial_state(&self) -> (HardState, ConfState);
    /// The first index with an entry (snapshot index + 1).
    fn first_index(&self) -> Index;
    /// The last index with an entry (the snapshot index if none).
    fn last_index(&self) -> Index;
    /// The term of entry `index` (or of the snapshot, at its index).
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    /// Entries `[lo, hi)`, stopping early after `max_bytes` of payload (at
    /// least one entry is returned when `lo < hi`).
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// The latest snapshot (index 0 and empty data before the first).
    fn snapshot(&self) -> Snapshot;

    /// Appends `entries`, first discarding every entry at or after the first
    /// one's index. Entries must be contiguous and continue the log.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Discards entries at and after `from`.
    fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError>;
    /// Records the hard state.
    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError>;
    /// Replaces the whole log with `snapshot` (a follower installing one).
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;
    /// Records a snapshot of the local state machine at `meta.index` (which
    /// must be in the log) and discards the entries it covers.
    fn compact(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;
    /// [`Storage::compact`] for a snapshot already written durably where
    /// this storage keeps its snapshot, by a writer on another thread (so
    /// the caller's thread does not wait for the file): records it and
    /// discards the entries it covers. Where snapshots are not files of
    /// their own, the same as `compact`.
    fn compact_written(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.compact(snapshot)
    }
    /// Makes every write so far durable (`fdatasync`). A no-op where writes
    /// are durable when they return, or never (memory).
    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Every entry up to here is durable (for a report: the Raft core
    /// learns durability from the driver, never from this). Where writes
    /// are durable when they return: the last index.
    fn durable_index(&self) -> Index {
        self.last_index()
    }
}

/// The log in memory: for tests, the simulator, and `--durability memory`
/// style experiments. Durable only in the sense that the value survives as
/// long as the process does.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Entries after the snapshot; `entries[0].index == snapshot index + 1`.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// The log of a founding member of a new group: entries `1..=n` add
    /// the founding voters and learners, committed at term 1, exactly as on
    /// every other founding member. Keeping the founding configuration in
    /// the log (not only in a snapshot) lets a replica that joins later
    /// with an empty log learn it by plain replication. A replica that
    /// joins later starts from `MemStorage::default()`.
    pub fn bootstrap(conf: &ConfState) -> MemStorage {
        let changes = conf
            .voters
            .iter()
            .map(|&v| ConfChange::AddVoter(v))
            .chain(conf.learners.iter().map(|&l| ConfChange::AddLearner(l)));
        let entries: Vec<Entry> = changes
            .enumerate()
            .map(|(i, cc)| Entry {
                term: 1,
                index: i as Index + 1,
                kind: EntryKind::ConfChange,
                data: cc.encode(),
            })
            .collect();
        let commit = entries.len() as Index;
        MemStorage {
            hard_state: HardState {
                term: 1,
                vote: None,
                commit,
            },
            snapshot: Snapshot::default(),
            entries,
        }
    }

    /// A storage holding exactly these parts (recovery from disk).
    pub(crate) fn from_parts(
        hard_state: HardState,
        snapshot: Snapshot,
        entries: Vec<Entry>,
    ) -> MemStorage {
        if let Some(first) = entries.first() {
            assert_eq!(
                first.index,
                snapshot.meta.index + 1,
                "entries continue the snapshot"
            );
        }
        MemStorage {
            hard_state,
            snapshot,
            entries,
        }
    }

    /// The hard state as last written.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// All entries after the snapshot (for checkers).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    fn offset(&self) -> Index {
        self.snapshot.meta.index
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> (HardState, ConfState) {
        (self.hard_state, self.snapshot.meta.conf.clone())
    }

    fn first_index(&self) -> Index {
        self.offset() + 1
    }

    fn last_index(&self) -> Index {
        self.offset() + self.entries.len() as Index
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index < self.offset() {
            return Err(StorageError::Compacted(index));
        }
        if index == self.offset() {
            return Ok(self.snapshot.meta.term);
        }
        self.entries
            .get((index - self.offset() - 1) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable(index))
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.offset() {
            return Err(StorageError::Compacted(lo));
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.entries[(lo - self.offset() - 1) as usize..(hi - self.offset() - 1) as usize]
        {
            bytes += e.payload_len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn snapshot(&self) -> Snapshot {
        self.snapshot.clone()
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        for w in entries.windows(2) {
            assert_eq!(
                w[0].index + 1,
                w[1].index,
                "append of non-contiguous entries"
            );
        }
        if first.index <= self.offset() || first.index > self.last_index() + 1 {
            return Err(StorageError::NotContiguous {
                at: first.index,
                first: self.first_index(),
                last: self.last_index(),
            });
        }
        self.entries
            .truncate((first.index - self.offset() - 1) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError> {
        if from <= self.offset() {
            return Err(StorageError::Compacted(from));
        }
        if from <= self.last_index() {
            self.entries.truncate((from - self.offset() - 1) as usize);
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        self.hard_state = hs;
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        if snapshot.meta.index < self.offset() {
            return Err(StorageError::SnapshotOutOfDate {
                new: snapshot.meta.index,
                held: self.offset(),
            });
        }
        self.entries.clear();
        self.hard_state.commit = self.hard_state.commit.max(snapshot.meta.index);
        self.snapshot = snapshot;
        Ok(())
    }

    fn compact(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let index = snapshot.meta.index;
        if index <= self.offset() {
            return Err(StorageError::SnapshotOutOfDate {
                new: index,
                held: self.offset(),
            });
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        debug_assert_eq!(
            self.term(index),
            Ok(snapshot.meta.term),
            "snapshot term mismatch"
        );
        self.entries.drain(..(index - self.offset()) as usize);
        self.snapshot = snapshot;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ent(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![index as u8; 10]),
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut s = MemStorage::default();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        s.append(&[ent(2, 2)]).unwrap();
        assert_eq!(s.last_index(), 2);
        assert_eq!(s.term(2), Ok(2));
        assert!(s.append(&[ent(5, 2)]).is_err());
    }

    #[test]
    fn compaction_keeps_terms_and_bounds() {
        let mut s = MemStorage::default();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 2)]).unwrap();
        let meta = SnapshotMeta {
            index: 2,
            term: 1,
            conf: ConfState::with_voters([1]),
        };
        s.compact(Snapshot {
            meta,
            data: Bytes::new(),
        })
        .unwrap();
        assert_eq!(s.first_index(), 3);
        assert_eq!(s.term(2), Ok(1));
        assert_eq!(s.term(1), Err(StorageError::Compacted(1)));
        assert_eq!(s.entries(3, 4, 0).unwrap().len(), 1);
        assert_eq!(s.entries(2, 4, u64::MAX), Err(StorageError::Compacted(2)));
    }

    #[test]
    fn entries_respects_byte_limit_but_returns_one() {
        let mut s = MemStorage::default();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        assert_eq!(s.entries(1, 4, 0).unwrap().len(), 1);
        assert_eq!(s.entries(1, 4, 20).unwrap().len(), 2);
    }
}
