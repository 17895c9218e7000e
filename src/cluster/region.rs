//! A master's **configuration region**: what the coordinator writes into a
//! master's memory (a one-sided write: RDMA WRITE on RDMA, applied by the
//! receiving I/O thread on TCP, written directly in the simulator).
//!
//! # Layout
//!
//! ```text
//! offset  size  field
//!      0     4  magic "RCCR" (little-endian u32 0x5243_4352)
//!      4     1  format version (REGION_FORMAT_VERSION)
//!      5     3  reserved, zero
//!      8     8  term of the coordinator that wrote it
//!     16     8  configuration version
//!     24     4  body length in bytes
//!     28     4  CRC32C of bytes 0..28 and the body
//!     32     …  body: postcard-encoded ConfigRegionBody
//! ```
//!
//! A reader checks magic, version, length and CRC before using anything:
//! a torn or stale write (a writer that died mid-write, two writers
//! racing) reads as an error and is never acted on. The master applies a
//! region only if its term is not older than the newest term it has seen
//! and its version is newer than what it holds (see `master`).
//!
//! # What is in the body, and why not the server list
//!
//! Format 2 carries what differs per master and nothing else: its id, its
//! own status in the server list (at `server_list_version`), and the
//! tablets it owns. Format 1 carried the whole server list in every
//! master's region, so a change pushed to N masters cost N regions of
//! O(N) bytes each, O(N²) per change. A master reads the list for one
//! thing only, whether it is still up (it stops serving once the list
//! says otherwise); it never routes by it (clients ask the coordinator
//! who owns a key) and safety rests on tablet ownership, the lease and
//! the migration hand-over, not on the list. So the one entry it reads is
//! what it gets, and a region's size depends on its tablets alone: the
//! part every master shares (header, term, versions) is a few dozen bytes.
//! A master not in the list at all (removed) is sent `Removed`.
//!
//! # Whole configurations and parts (format 3)
//!
//! Format 2 wrote a master its whole configuration every time: a new
//! table of 10,000 tablets over 10,000 masters pushed each master every
//! tablet it owned, not just its new one, so loading 100 such tables
//! moved about a gigabyte of regions where a few megabytes changed.
//! Format 3 adds `tables`: `None` is the whole configuration (as before);
//! `Some(ts)` is a *part*, the master's tablets of the tables `ts` only,
//! which replace what it held of those tables and leave the rest alone.
//! The coordinator pushes a master the part made of every table that an
//! operation not yet acknowledged by that master changed for it (see
//! `coordinator`): so a write acknowledged at version v means the master
//! holds every change up to v, as a whole configuration did.
//!
//! Parts need every write to be read: the master builds its configuration
//! from them in order. Over TCP the receiving thread hands each write to
//! the master before acknowledging it, and the simulator does the same;
//! over RDMA a write is acknowledged by the NIC and a later one can land
//! over it before the master looked, so coordinators write whole
//! configurations there (a missed one is superseded by the next).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::limits::REGION_BYTES_MAX;
use super::types::{ServerId, ServerStatus, TableId};

const REGION_MAGIC: u32 = 0x5243_4352;
/// The region format written (and the only one read): 2 since the server
/// list gave way to the owner's own status, 3 since a write may be a part
/// (a wire change: coordinators and masters run one build).
pub const REGION_FORMAT_VERSION: u8 = 3;
const HEADER_BYTES: usize = 32;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct RegionHeader {
    magic: U32,
    format: u8,
    reserved: [u8; 3],
    term: U64,
    version: U64,
    body_len: U32,
    crc: U32,
}

const _: () = assert!(std::mem::size_of::<RegionHeader>() == HEADER_BYTES);

/// A tablet the master owns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RegionTablet {
    /// The table.
    pub table: TableId,
    /// First hash (inclusive).
    pub start_hash: u64,
    /// Last hash (inclusive).
    pub end_hash: u64,
}

#[derive(Serialize, Deserialize)]
struct ConfigRegionBody {
    server_list_version: u64,
    owner: ServerId,
    status: ServerStatus,
    tables: Option<Vec<TableId>>,
    tablets: Vec<RegionTablet>,
}

/// One master's configuration (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRegion {
    /// The writer's Raft term.
    pub term: u64,
    /// The cluster configuration version it reflects.
    pub version: u64,
    /// The server list's version.
    pub server_list_version: u64,
    /// The master it is for.
    pub owner: ServerId,
    /// Its status in the server list at `server_list_version` (`Removed`
    /// when the list no longer has it).
    pub status: ServerStatus,
    /// What `tablets` covers: `None`, everything `owner` serves (a whole
    /// configuration); `Some(tables)` (increasing, no repeats), its
    /// tablets of those tables only (a part; see the module docs).
    pub tables: Option<Vec<TableId>>,
    /// The tablets `owner` serves (of `tables`, if a part).
    pub tablets: Vec<RegionTablet>,
}

/// Why bytes are not a usable region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    /// Shorter than its header, or than the length it claims.
    #[error("region of {have} bytes, {need} needed")]
    Short {
        /// Bytes present.
        have: usize,
        /// Bytes the header requires.
        need: usize,
    },
    /// Not a region (never written, or overwritten).
    #[error("bad region magic {0:#010x}")]
    BadMagic(u32),
    /// A format this build does not know.
    #[error("unknown region format {0}")]
    UnknownVersion(u8),
    /// Larger than the limit.
    #[error("region body of {0} bytes exceeds the limit of {REGION_BYTES_MAX} bytes")]
    TooLarge(usize),
    /// The checksum does not match: a torn or corrupted write.
    #[error("region checksum mismatch (torn or corrupt write)")]
    Checksum,
    /// The body does not decode.
    #[error("malformed region body: {0}")]
    Malformed(String),
}

impl ConfigRegion {
    /// The bytes a coordinator writes, or [`RegionError::TooLarge`] when
    /// the configuration does not fit in [`REGION_BYTES_MAX`] (a server
    /// list of tens of thousands of long addresses can reach it).
    pub fn encode(&self) -> Result<Bytes, RegionError> {
        let body = postcard::to_stdvec(&ConfigRegionBody {
            server_list_version: self.server_list_version,
            owner: self.owner,
            status: self.status,
            tables: self.tables.clone(),
            tablets: self.tablets.clone(),
        })
        .map_err(|e| RegionError::Malformed(format!("cannot encode: {e}")))?;
        if HEADER_BYTES + body.len() > REGION_BYTES_MAX {
            return Err(RegionError::TooLarge(body.len()));
        }
        let mut h = RegionHeader {
            magic: U32::new(REGION_MAGIC),
            format: REGION_FORMAT_VERSION,
            reserved: [0; 3],
            term: U64::new(self.term),
            version: U64::new(self.version),
            body_len: U32::new(body.len() as u32),
            crc: U32::new(0),
        };
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h.as_bytes()[..28]), &body);
        h.crc = U32::new(crc);
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&body);
        Ok(Bytes::from(out))
    }

    /// Reads a region, checking everything (see the module docs).
    pub fn decode(buf: &[u8]) -> Result<ConfigRegion, RegionError> {
        let (h, body) = RegionHeader::read_from_prefix(buf).map_err(|_| RegionError::Short {
            have: buf.len(),
            need: HEADER_BYTES,
        })?;
        if h.magic.get() != REGION_MAGIC {
            return Err(RegionError::BadMagic(h.magic.get()));
        }
        if h.format != REGION_FORMAT_VERSION {
            return Err(RegionError::UnknownVersion(h.format));
        }
        let len = h.body_len.get() as usize;
        if len > REGION_BYTES_MAX - HEADER_BYTES {
            return Err(RegionError::TooLarge(len));
        }
        if body.len() < len {
            return Err(RegionError::Short {
                have: buf.len(),
                need: HEADER_BYTES + len,
            });
        }
        let body = &body[..len];
        let mut zeroed = h;
        zeroed.crc = U32::new(0);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&zeroed.as_bytes()[..28]), body);
        if crc != h.crc.get() {
            return Err(RegionError::Checksum);
        }
        let (b, rest): (ConfigRegionBody, &[u8]) =
            postcard::take_from_bytes(body).map_err(|e| RegionError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(RegionError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        if let Some(tables) = &b.tables {
            if tables.windows(2).any(|w| w[0] >= w[1]) {
                return Err(RegionError::Malformed(
                    "a part's tables are not increasing".into(),
                ));
            }
            if let Some(t) = b
                .tablets
                .iter()
                .find(|t| tables.binary_search(&t.table).is_err())
            {
                return Err(RegionError::Malformed(format!(
                    "a part holds a tablet of table {}, which it does not cover",
                    t.table
                )));
            }
        }
        Ok(ConfigRegion {
            term: h.term.get(),
            version: h.version.get(),
            server_list_version: b.server_list_version,
            owner: b.owner,
            status: b.status,
            tables: b.tables,
            tablets: b.tablets,
        })
    }

    /// Whether this is a part (some tables), not a whole configuration.
    pub fn is_part(&self) -> bool {
        self.tables.is_some()
    }

    /// `self` (a whole configuration) with `write` laid over it: a whole
    /// configuration replaces it; a part replaces its tables' tablets and
    /// keeps the others. Term, versions and status are the write's.
    pub fn merged(&self, write: &ConfigRegion) -> ConfigRegion {
        let tablets = match &write.tables {
            None => write.tablets.clone(),
            Some(tables) => {
                let mut tablets: Vec<RegionTablet> = self
                    .tablets
                    .iter()
                    .filter(|t| tables.binary_search(&t.table).is_err())
                    .chain(write.tablets.iter())
                    .cloned()
                    .collect();
                tablets.sort_by_key(|t| (t.table, t.start_hash));
                tablets
            }
        };
        ConfigRegion {
            tables: None,
            tablets,
            ..write.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConfigRegion {
        let id = ServerId {
            index: 1,
            generation: 2,
        };
        ConfigRegion {
            term: 7,
            version: 42,
            server_list_version: 5,
            owner: id,
            status: ServerStatus::Up,
            tables: None,
            tablets: vec![RegionTablet {
                table: 3,
                start_hash: 0,
                end_hash: u64::MAX,
            }],
        }
    }

    fn tablet(table: TableId, start_hash: u64, end_hash: u64) -> RegionTablet {
        RegionTablet {
            table,
            start_hash,
            end_hash,
        }
    }

    #[test]
    fn regions_round_trip() {
        let r = sample();
        assert_eq!(ConfigRegion::decode(&r.encode().unwrap()), Ok(r));
        let part = ConfigRegion {
            tables: Some(vec![3, 9]),
            ..sample()
        };
        assert_eq!(ConfigRegion::decode(&part.encode().unwrap()), Ok(part));
    }

    #[test]
    fn a_part_must_cover_its_tablets_and_list_its_tables_in_order() {
        for tables in [vec![4], vec![3, 3], vec![5, 3]] {
            let bad = ConfigRegion {
                tables: Some(tables.clone()),
                ..sample()
            };
            assert!(
                matches!(
                    ConfigRegion::decode(&bad.encode().unwrap()),
                    Err(RegionError::Malformed(_))
                ),
                "{tables:?}"
            );
        }
    }

    #[test]
    fn a_part_replaces_its_tables_only_and_a_whole_region_everything() {
        let held = ConfigRegion {
            tablets: vec![tablet(1, 0, 9), tablet(2, 0, 9), tablet(3, 5, 9)],
            ..sample()
        };
        let part = ConfigRegion {
            version: 50,
            tables: Some(vec![2, 3, 4]),
            tablets: vec![tablet(3, 0, 4), tablet(4, 0, u64::MAX)],
            ..sample()
        };
        let m = held.merged(&part);
        assert_eq!(m.version, 50);
        assert_eq!(m.tables, None);
        assert_eq!(
            m.tablets,
            vec![tablet(1, 0, 9), tablet(3, 0, 4), tablet(4, 0, u64::MAX)]
        );
        let whole = ConfigRegion {
            version: 51,
            tablets: vec![tablet(7, 0, 1)],
            ..sample()
        };
        assert_eq!(m.merged(&whole).tablets, vec![tablet(7, 0, 1)]);
    }

    #[test]
    fn every_torn_or_flipped_region_is_an_error() {
        let good = sample().encode().unwrap();
        for cut in 0..good.len() {
            assert!(ConfigRegion::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..good.len() {
            let mut b = good.to_vec();
            b[i] ^= 0x40;
            assert!(ConfigRegion::decode(&b).is_err(), "flip at {i}");
        }
        // Half of a newer region over an older one: the checksum catches it.
        let mut newer = sample();
        newer.version = 43;
        newer.tablets.clear();
        let newer = newer.encode().unwrap();
        let mut torn = good.to_vec();
        torn[..20].copy_from_slice(&newer[..20]);
        assert!(ConfigRegion::decode(&torn).is_err());
    }
}
