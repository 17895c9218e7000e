//! The nouns of the cluster state: servers and their ids, tables, tablets,
//! key hashes.

use serde::{Deserialize, Serialize};

/// A storage server's identity. A restarted master enlists again and gets
/// a new id: the same slot `index` may be reused once the old server is
/// removed, with a larger `generation`, so an id never names two processes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId {
    /// The slot in the server list (from 1).
    pub index: u32,
    /// Bumped each time the slot is reused (from 1).
    pub generation: u32,
}

impl std::fmt::Display for ServerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.index, self.generation)
    }
}

/// Text that is not a server id (`INDEX.GENERATION`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: a server id is INDEX.GENERATION, e.g. 2.1")]
pub struct ParseServerIdError(pub String);

impl std::str::FromStr for ServerId {
    type Err = ParseServerIdError;

    /// Parses `INDEX.GENERATION` (as printed), e.g. `2.1`.
    fn from_str(s: &str) -> Result<ServerId, ParseServerIdError> {
        let bad = || ParseServerIdError(s.to_string());
        let (i, g) = s.split_once('.').ok_or_else(bad)?;
        Ok(ServerId {
            index: i.parse().map_err(|_| bad())?,
            generation: g.parse().map_err(|_| bad())?,
        })
    }
}

/// Where a server is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerStatus {
    /// Enlisted and believed alive: may own tablets.
    Up,
    /// Declared crashed (its crash operation passed its commit point): owns
    /// nothing, its tablets went to the recovery plan's owners.
    Crashed,
    /// Crash recovery finished and the slot may be reused.
    Removed,
}

/// The services a server offers (a bit set).
pub mod services {
    /// Serves tablets.
    pub const MASTER: u8 = 1;
    /// Stores replicas of masters' logs.
    pub const BACKUP: u8 = 2;
}

/// One entry of the server list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Its id.
    pub id: ServerId,
    /// Where it listens (`host:port`).
    pub addr: String,
    /// A bit set of [`services`].
    pub services: u8,
    /// Up, crashed or removed.
    pub status: ServerStatus,
    /// The enlisting process's random nonce: a retried enlistment of the
    /// same process is recognised instead of creating a second server.
    pub nonce: u64,
}

/// A table's id (never reused).
pub type TableId = u64;

/// Where a table is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableState {
    /// Its create passed the commit point; owners are being told.
    Creating,
    /// Every owner took its tablets.
    Normal,
}

/// Where a tablet is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TabletState {
    /// Served by its owner.
    Normal,
    /// Reassigned by a crash's recovery plan; the new owner is taking it.
    Recovering,
}

/// A contiguous range of key hashes of one table, owned by one server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Tablet {
    /// First key hash (inclusive).
    pub start_hash: u64,
    /// Last key hash (inclusive).
    pub end_hash: u64,
    /// The one server that serves it.
    pub owner: ServerId,
    /// Normal or recovering.
    pub state: TabletState,
}

impl Tablet {
    /// Whether `hash` falls in this tablet.
    pub fn contains(&self, hash: u64) -> bool {
        self.start_hash <= hash && hash <= self.end_hash
    }
}

/// A table: its tablets cover the whole 64-bit hash space, in order,
/// without gaps or overlaps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Its id.
    pub id: TableId,
    /// Its unique name.
    pub name: String,
    /// Creating or normal.
    pub state: TableState,
    /// Sorted by `start_hash`.
    pub tablets: Vec<Tablet>,
}

impl Table {
    /// The tablet holding `hash` (every hash has exactly one).
    pub fn tablet_for(&self, hash: u64) -> Option<&Tablet> {
        self.position_of(hash).map(|i| &self.tablets[i])
    }

    /// Where the tablet holding `hash` is in `tablets` (a binary search:
    /// they are sorted by first hash and do not overlap).
    pub fn position_of(&self, hash: u64) -> Option<usize> {
        let i = self.tablets.partition_point(|t| t.start_hash <= hash);
        let i = i.checked_sub(1)?;
        self.tablets[i].contains(hash).then_some(i)
    }
}

/// The hash of a key: what picks its tablet.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// `n` ranges of (nearly) equal width covering `0..=u64::MAX`, in order.
pub fn even_ranges(n: u32) -> Vec<(u64, u64)> {
    assert!(n > 0, "at least one tablet");
    let width = (u64::MAX / n as u64).max(1);
    (0..n as u64)
        .map(|i| {
            let start = i * width;
            let end = if i + 1 == n as u64 {
                u64::MAX
            } else {
                (i + 1) * width - 1
            };
            (start, end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_ranges_cover_the_hash_space_without_gaps() {
        for n in [1, 2, 3, 7, 64] {
            let r = even_ranges(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].0, 0);
            assert_eq!(r.last().unwrap().1, u64::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
            }
        }
    }
}
