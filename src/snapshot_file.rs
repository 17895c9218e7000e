//! The backup file `ctl snapshot save` writes and `ramcoord restore`
//! reads: one consistent cluster state (server list, tablet map,
//! incomplete operations, exactly-once table) as of a committed log
//! index, checksummed.
//!
//! # Format
//!
//! All integers little-endian.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "RCBACKUP"
//!      8     4  format version (1)
//!     12     8  cluster id the state came from
//!     20     8  log index the state is as of (applied, hence committed)
//!     28     8  term of the entry at that index
//!     36     8  the leader's current term when it was saved
//!     44     8  configuration version of the state
//!     52     8  when it was saved (Unix seconds)
//!     60     4  length N of the state
//!     64     N  the state, in the replicas' own snapshot format
//!                (`ClusterState::snapshot`, itself versioned)
//!   64+N     4  CRC-32C of every byte before it
//! ```
//!
//! Reading checks, in order: the length (at least the header and the
//! checksum, and exactly what the header says), the magic, the format
//! version, the checksum, and then that the state decodes as a cluster
//! state. Any failure is an error naming what is wrong; a damaged backup
//! is never restored.
//!
//! # Why the current term is kept
//!
//! Masters accept configuration writes only from the newest coordinator
//! term they have heard of (the fence against a deposed leader). A group
//! restored at the saved entry's term would be older than what the masters
//! have seen, and every push would be refused. `restore` therefore starts
//! the new group past the saved current term (by `--term-gap`).

use bytes::Bytes;

use crate::cluster::{ClusterState, SnapshotError};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"RCBACKUP";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const HEADER_BYTES: usize = 64;
const CHECKSUM_BYTES: usize = 4;

/// A backup: a cluster state and where it was in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// The cluster it came from.
    pub cluster: u64,
    /// The log index the state is as of.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// The saving leader's term.
    pub current_term: u64,
    /// The state's configuration version.
    pub version: u64,
    /// When it was saved (Unix seconds).
    pub saved_at: u64,
    /// The state ([`ClusterState::snapshot`]).
    pub state: Bytes,
}

/// Why bytes are not a usable backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Shorter than a header and checksum.
    #[error("{0} bytes: too short to be a backup (at least {min})", min = HEADER_BYTES + CHECKSUM_BYTES)]
    Short(usize),
    /// Not a backup file.
    #[error("not a ramcoord backup (its first bytes are not {:?})", std::str::from_utf8(MAGIC).unwrap_or_default())]
    Magic,
    /// A format this build does not read.
    #[error("backup format version {0} (this build reads version {FORMAT_VERSION})")]
    Version(u32),
    /// The length in the header disagrees with the file's.
    #[error("the header says {said} bytes of state, the file holds {have}: truncated or damaged")]
    Length {
        /// The header's length.
        said: usize,
        /// What the file holds.
        have: usize,
    },
    /// The checksum does not match: damaged.
    #[error(
        "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is damaged"
    )]
    Checksum {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// The state inside does not decode.
    #[error("the state inside does not decode: {0}")]
    State(#[from] SnapshotError),
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

impl Backup {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.state.len() + CHECKSUM_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for v in [
            self.cluster,
            self.index,
            self.term,
            self.current_term,
            self.version,
            self.saved_at,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.state.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.state);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a backup, checking everything (see the module docs).
    pub fn decode(b: &[u8]) -> Result<Backup, BackupError> {
        if b.len() < HEADER_BYTES + CHECKSUM_BYTES {
            return Err(BackupError::Short(b.len()));
        }
        if &b[..8] != MAGIC {
            return Err(BackupError::Magic);
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(BackupError::Version(version));
        }
        let said = u32_at(b, 60) as usize;
        let have = b.len() - HEADER_BYTES - CHECKSUM_BYTES;
        if said != have {
            return Err(BackupError::Length { said, have });
        }
        let body = b.len() - CHECKSUM_BYTES;
        let stored = u32_at(b, body);
        let computed = crc32c::crc32c(&b[..body]);
        if stored != computed {
            return Err(BackupError::Checksum { stored, computed });
        }
        let backup = Backup {
            cluster: u64_at(b, 12),
            index: u64_at(b, 20),
            term: u64_at(b, 28),
            current_term: u64_at(b, 36),
            version: u64_at(b, 44),
            saved_at: u64_at(b, 52),
            state: Bytes::copy_from_slice(&b[HEADER_BYTES..body]),
        };
        backup.cluster_state()?;
        Ok(backup)
    }

    /// The cluster state inside.
    pub fn cluster_state(&self) -> Result<ClusterState, SnapshotError> {
        ClusterState::restore(&self.state)
    }
}

/// Why a data directory could not be seeded from a backup.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The directory could not be made a replica's (it holds one already,
    /// or the disk failed).
    #[error(transparent)]
    Open(#[from] ramcoord_log::disk::OpenError),
    /// The state inside does not decode.
    #[error("the backup's state does not decode: {0}")]
    State(#[from] SnapshotError),
    /// No voters.
    #[error("a group needs at least one voter")]
    NoVoters,
    /// The backup is of another cluster than the one named.
    #[error("the backup is of cluster {backup}, not cluster {asked} (give --cluster {backup} to restore it as that cluster)")]
    OtherCluster {
        /// The backup's.
        backup: u64,
        /// The one asked for.
        asked: u64,
    },
    /// The new group's term or versions would leave no room to go on.
    #[error("{0}: the new group would have no room left (give a smaller --term-gap)")]
    NoRoom(&'static str),
}

/// What a restore seeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The log index the new group starts after.
    pub index: u64,
    /// The term it starts at.
    pub term: u64,
    /// The configuration version of the state.
    pub version: u64,
    /// Servers in the list.
    pub servers: usize,
    /// Tables.
    pub tables: usize,
}

/// Configuration versions a restored group skips (see [`restore_into`]).
pub const VERSION_GAP: u64 = 1 << 20;

/// Seeds `dir` as a founding replica of a new group of `voters` (of
/// cluster `cluster`) holding `backup`'s state: a snapshot at the backup's
/// index and, as hard state, the saving leader's term plus `term_gap` (see
/// the module docs). The state's configuration versions move
/// [`VERSION_GAP`] ahead: versions the old group handed out after the
/// backup are never reused for other changes (a watcher from before sees
/// that it must start again, and masters take the new group's pushes).
/// Every replica of the new group is seeded from the same backup with the
/// same voters; they then elect a leader as any new group does.
pub fn restore_into(
    backup: &Backup,
    dir: &std::path::Path,
    voters: &[u64],
    term_gap: u64,
    cluster: u64,
) -> Result<Restored, RestoreError> {
    if voters.is_empty() {
        return Err(RestoreError::NoVoters);
    }
    if backup.cluster != cluster {
        return Err(RestoreError::OtherCluster {
            backup: backup.cluster,
            asked: cluster,
        });
    }
    let mut state = backup.cluster_state()?;
    state
        .advance_versions(VERSION_GAP)
        .ok_or(RestoreError::NoRoom("configuration version"))?;
    std::fs::create_dir_all(dir).map_err(|source| ramcoord_log::disk::OpenError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let snapshot = ramcoord_log::Snapshot {
        meta: ramcoord_log::SnapshotMeta {
            index: backup.index,
            term: backup.term,
            conf: ramcoord_log::ConfState::with_voters(voters.iter().copied()),
        },
        data: state.snapshot(),
    };
    let term_limit =
        ramcoord_log::constants::TERM_MAX.min(ramcoord_log::wire::WIRE_INDEX_TERM_MAX) - (1 << 32);
    let term = backup
        .current_term
        .max(backup.term)
        .checked_add(term_gap)
        .filter(|t| *t <= term_limit)
        .ok_or(RestoreError::NoRoom("term"))?;
    ramcoord_log::disk::DiskStorage::bootstrap_from_snapshot(
        dir,
        snapshot,
        term,
        ramcoord_log::disk::segment_log::SEGMENT_BYTES_DEFAULT,
    )?;
    Ok(Restored {
        index: backup.index,
        term,
        version: state.version(),
        servers: state.servers().count(),
        tables: state.tables().count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            cluster: 7,
            index: 42,
            term: 3,
            current_term: 5,
            version: 9,
            saved_at: 1_800_000_000,
            state: ClusterState::default().snapshot(),
        }
    }

    #[test]
    fn a_backup_round_trips() {
        let b = sample();
        assert_eq!(Backup::decode(&b.encode()).unwrap(), b);
    }

    #[test]
    fn every_damage_is_named() {
        let good = sample().encode();
        assert!(matches!(
            Backup::decode(&good[..10]),
            Err(BackupError::Short(10))
        ));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(Backup::decode(&bad), Err(BackupError::Magic)));
        let mut bad = good.clone();
        bad[8] = 2;
        assert!(matches!(Backup::decode(&bad), Err(BackupError::Version(2))));
        let bad = [&good[..good.len() - 1], &[0u8, 0][..]].concat();
        assert!(matches!(
            Backup::decode(&bad),
            Err(BackupError::Length { .. })
        ));
        // Every single flipped bit after the header's fixed part is caught.
        for i in 12..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(
                Backup::decode(&bad).is_err(),
                "byte {i} flipped went unseen"
            );
        }
        // A good checksum over a state that does not decode.
        let mut b = sample();
        b.state = Bytes::from_static(b"not a state");
        assert!(matches!(
            Backup::decode(&b.encode()),
            Err(BackupError::State(_))
        ));
    }
}
