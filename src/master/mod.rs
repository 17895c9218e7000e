//! A master's side of the protocol: its configuration region, the tablets
//! it serves, and a small in-memory key-value store per tablet.
//!
//! [`MasterAgent`] is sans-IO. The coordinator writes configuration
//! regions into it ([`MasterAgent::on_region_write`]: on RDMA a one-sided
//! write the master's worker never sees; here the receiving side applies
//! the rule below); clients' reads and writes go through
//! [`MasterAgent::get`] / [`MasterAgent::put`], which refuse a key whose
//! tablet this master does not own (the client looks the owner up again).
//!
//! # Which writes apply
//!
//! A region applies only if it is for this server, checks out (magic,
//! version, checksum), comes from a term **not older** than the newest term
//! this master has seen, and carries a configuration version **newer**
//! than the one held. So a master never goes back to an older
//! configuration, and a deposed coordinator still pushing cannot undo what
//! a newer one wrote. Tablets the new configuration no longer lists are
//! dropped with their data.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::cluster::{key_hash, ConfigRegion, RegionError, ServerId, ServerStatus, TableId};

/// What became of a region write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionOutcome {
    /// Applied: the master now holds this version.
    Applied {
        /// The version now held.
        version: u64,
    },
    /// Not newer than the version held (a repeat or a late write).
    NotNewer {
        /// The version held.
        held: u64,
    },
    /// From a term older than one already seen: a deposed coordinator.
    StaleTerm {
        /// The write's term.
        term: u64,
        /// The newest term seen.
        seen: u64,
    },
    /// For another server (this one restarted, or a misdirected write).
    NotMine,
    /// Unreadable (torn, corrupt, unknown format).
    Invalid(RegionError),
}

/// Why a client's request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MasterError {
    /// This master does not own the key's tablet (now): look it up again.
    #[error("server {me:?} does not own table {table} hash {hash:#x}")]
    NotOwner {
        /// This master, if enlisted.
        me: Option<ServerId>,
        /// The table.
        table: TableId,
        /// The key's hash.
        hash: u64,
    },
}

/// Planted bugs for the simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasterBugs {
    /// Apply a region from a term older than one already seen.
    pub accept_stale_term: bool,
}

/// One master (see the module docs).
#[derive(Debug, Default)]
pub struct MasterAgent {
    id: Option<ServerId>,
    bugs: MasterBugs,
    config: Option<ConfigRegion>,
    term_seen: u64,
    data: BTreeMap<(TableId, Bytes), Bytes>,
}

impl MasterAgent {
    /// A master that has not enlisted yet.
    pub fn new(bugs: MasterBugs) -> MasterAgent {
        MasterAgent {
            bugs,
            ..MasterAgent::default()
        }
    }

    /// Records the id the coordinator gave this process at enlistment.
    pub fn enlisted(&mut self, id: ServerId) {
        self.id = Some(id);
    }

    /// Its id, once enlisted.
    pub fn id(&self) -> Option<ServerId> {
        self.id
    }

    /// The configuration it holds.
    pub fn config(&self) -> Option<&ConfigRegion> {
        self.config.as_ref()
    }

    /// The newest coordinator term it has seen.
    pub fn term_seen(&self) -> u64 {
        self.term_seen
    }

    /// Whether its configuration says it is no longer up (declared crashed:
    /// it must stop serving and enlist again as a new server).
    pub fn declared_dead(&self) -> bool {
        let (Some(id), Some(c)) = (self.id, &self.config) else {
            return false;
        };
        c.servers
            .iter()
            .any(|s| s.id == id && s.status != ServerStatus::Up)
    }

    /// A coordinator wrote `bytes` into the configuration region.
    pub fn on_region_write(&mut self, bytes: &[u8]) -> RegionOutcome {
        let region = match ConfigRegion::decode(bytes) {
            Ok(r) => r,
            Err(e) => return RegionOutcome::Invalid(e),
        };
        if Some(region.owner) != self.id {
            return RegionOutcome::NotMine;
        }
        if region.term < self.term_seen && !self.bugs.accept_stale_term {
            return RegionOutcome::StaleTerm {
                term: region.term,
                seen: self.term_seen,
            };
        }
        self.term_seen = self.term_seen.max(region.term);
        let held = self.config.as_ref().map_or(0, |c| c.version);
        if region.version <= held {
            return RegionOutcome::NotNewer { held };
        }
        let version = region.version;
        self.data.retain(|(table, key), _| {
            let h = key_hash(key);
            region
                .tablets
                .iter()
                .any(|t| t.table == *table && t.start_hash <= h && h <= t.end_hash)
        });
        self.config = Some(region);
        RegionOutcome::Applied { version }
    }

    fn check_owner(&self, table: TableId, key: &[u8]) -> Result<(), MasterError> {
        let hash = key_hash(key);
        let owns = !self.declared_dead()
            && self.config.as_ref().is_some_and(|c| {
                c.tablets
                    .iter()
                    .any(|t| t.table == table && t.start_hash <= hash && hash <= t.end_hash)
            });
        if owns {
            Ok(())
        } else {
            Err(MasterError::NotOwner {
                me: self.id,
                table,
                hash,
            })
        }
    }

    /// Reads `key` of `table`, if this master owns its tablet.
    pub fn get(&self, table: TableId, key: &[u8]) -> Result<Option<Bytes>, MasterError> {
        self.check_owner(table, key)?;
        Ok(self
            .data
            .get(&(table, Bytes::copy_from_slice(key)))
            .cloned())
    }

    /// Writes `key` of `table`, if this master owns its tablet.
    pub fn put(&mut self, table: TableId, key: &[u8], value: Bytes) -> Result<(), MasterError> {
        self.check_owner(table, key)?;
        self.data
            .insert((table, Bytes::copy_from_slice(key)), value);
        Ok(())
    }
}
