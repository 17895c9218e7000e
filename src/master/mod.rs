//! A master's side of the protocol: its configuration region, the tablets
//! it serves, and a small in-memory key-value store per tablet.
//!
//! [`MasterAgent`] is sans-IO. Driven by [`MasterAgent::tick`], it asks to
//! enlist (retrying, with a nonce so a retry is recognised) and then
//! heartbeats the coordinator, following leader hints and trying another
//! replica when one does not answer; told it was declared crashed, it asks
//! to be shut down (a new process enlists as a new server). The coordinator
//! writes configuration
//! regions into it ([`MasterAgent::on_region_write`]: on RDMA a one-sided
//! write the master's worker never sees; here the receiving side applies
//! the rule below); clients' reads and writes go through
//! [`MasterAgent::get`] / [`MasterAgent::put`], which refuse a key whose
//! tablet this master does not own (the client looks the owner up again)
//! or when its lease has run out.
//!
//! # The lease: a cut-off master stops serving before its tablets move
//!
//! A master that cannot reach the coordinators is declared crashed after
//! the coordinators' master timeout, and its tablets go to other masters.
//! It may still be running and still reachable by clients. So it serves
//! only under a **lease**: a heartbeat *sent* at time `s` and acknowledged
//! by the active coordinator lets it serve until `s + lease`
//! ([`MasterAgent::lease_granted`]); past that, every request is refused
//! until another heartbeat is acknowledged.
//!
//! Why no tablet is then served by two masters at once: the coordinator
//! acknowledges a heartbeat only after a quorum round that began after the
//! heartbeat arrived (Raft's read index), so the acknowledging leader still
//! led at some moment after `s`. A leader of a later term was therefore
//! elected after `s`, and every leader counts a master's silence from when
//! it took office or last heard it (both after `s`). The crash that hands
//! the tablets on is declared no sooner than `s + master timeout` (less two
//! ticks), and the lease the coordinator grants is shorter
//! ([`lease_for_timeout`]). A crash decided *before* the heartbeat arrived
//! may sit in the leader's log, proposed but not applied: the leader
//! answers only once it has applied its log as it was when the
//! heartbeat's read began, so it sees that crash and grants no lease.
//! Every replica must run with the same master timeout and tick.
//!
//! **Clock assumption:** the master's clock and the coordinators' tick
//! clocks advance at the same rate to within the margin the lease leaves
//! (a tenth of the timeout; a host's clocks drift by parts per million).
//! Nothing assumes they agree on the time of day.
//!
//! # Which writes land, and what the master acts on
//!
//! The region is memory a coordinator writes without the master's CPU
//! (RDMA WRITE). The receiving side cannot compare versions before the
//! bytes land; what it can do is **fence**: once it has seen a write from
//! term T, writes from older terms are refused (on RDMA: the old leader's
//! queue pair is moved to the error state, as Mu does; on TCP the I/O
//! thread checks the term). So a deposed coordinator whose write was still
//! in flight cannot overwrite what a newer one wrote. Within one term the
//! writer's connection delivers in order, and versions come from the
//! committed log, so with the fence the region's version never goes back.
//!
//! The master acts on a write only if it checks out (magic, format,
//! checksum: a torn write is never used) and its version is not older
//! than the newest it has acted on: if the region ever went back (a fence
//! that failed), the master refuses to serve until a newer configuration
//! arrives, rather than act on an older one. A write is a whole
//! configuration or a part (some tables' tablets, see
//! [`crate::cluster::region`]); the master lays each over what it holds
//! ([`ConfigRegion::merged`]) and acts on the result. Tablets it no
//! longer holds are dropped with their data.

use std::collections::BTreeMap;

pub mod process;
pub mod serve_log;

use bytes::Bytes;

use crate::cluster::{key_hash, ConfigRegion, RegionError, ServerId, ServerStatus, TableId};

/// What became of a region write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionOutcome {
    /// Landed, and the master acts on it (its version is not older than
    /// any it acted on before).
    Applied {
        /// The version now held.
        version: u64,
    },
    /// Landed, but older than a configuration the master already acted
    /// on: the master stops serving until a newer one lands. Only a
    /// failed fence lets this happen.
    Regressed {
        /// The version that landed.
        version: u64,
        /// The newest version acted on.
        acted: u64,
    },
    /// Refused by the fence: from a term older than one already seen (a
    /// deposed coordinator).
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

/// A master's id as the CLI prints it (`1.1`), or that it has none yet.
fn server_text(me: &Option<ServerId>) -> String {
    me.map_or_else(|| "(not enlisted yet)".to_string(), |id| id.to_string())
}

/// Why a client's request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MasterError {
    /// This master does not own the key's tablet (now): look it up again.
    #[error("server {} does not own table {table} hash {hash:#x}", server_text(.me))]
    NotOwner {
        /// This master, if enlisted.
        me: Option<ServerId>,
        /// The table.
        table: TableId,
        /// The key's hash.
        hash: u64,
    },
    /// Its lease ran out (or was never granted): it has not heard from the
    /// active coordinator lately and must not serve.
    #[error("server {} holds no lease (it expired at {expired}): not serving", server_text(.me))]
    NoLease {
        /// This master, if enlisted.
        me: Option<ServerId>,
        /// When the last lease ended (the master's clock).
        expired: u64,
    },
}

/// The lease a coordinator grants for a master timeout of `timeout`,
/// counted in ticks of `tick` (see the module docs): two ticks less than
/// the timeout (a tick can fire up to one tick early, and a heartbeat
/// handled just before an overdue tick is counted from the tick before),
/// less a tenth for the clocks' drift.
pub fn lease_for_timeout(timeout_ticks: u64, tick: std::time::Duration) -> std::time::Duration {
    (tick * timeout_ticks.saturating_sub(2) as u32) * 9 / 10
}

/// Timing of the master's own messages, in its driver's ticks.
#[derive(Clone, Copy, Debug)]
pub struct MasterConfig {
    /// Ask to enlist again after this long without an answer.
    pub enlist_retry_ticks: u64,
    /// Heartbeat this often.
    pub heartbeat_ticks: u64,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            enlist_retry_ticks: 2,
            heartbeat_ticks: 1,
        }
    }
}

/// What the master asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterAction {
    /// Send an enlistment request to coordinator replica `to` (any one if
    /// `None`).
    Enlist {
        /// The replica to ask.
        to: Option<u64>,
        /// This process's address.
        addr: String,
        /// Its services.
        services: u8,
        /// Its nonce.
        nonce: u64,
    },
    /// Send a heartbeat to coordinator replica `to` (any one if `None`).
    Heartbeat {
        /// The replica to tell.
        to: Option<u64>,
        /// This server.
        from: ServerId,
    },
    /// This server was declared crashed: stop serving and exit; a new
    /// process (a new server) may take its place.
    Shutdown,
}

/// Planted bugs for the simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasterBugs {
    /// No fence: a write from a term older than one already seen lands.
    pub accept_stale_term: bool,
    /// Serve whether or not the lease holds: a master cut off from the
    /// coordinators keeps serving tablets they have handed to another.
    pub ignore_lease: bool,
}

/// One master (see the module docs).
#[derive(Debug, Default)]
pub struct MasterAgent {
    cfg: MasterConfig,
    addr: String,
    services: u8,
    nonce: u64,
    now: u64,
    /// When the next enlistment request or heartbeat is due.
    next_send: u64,
    /// The coordinator replica believed to lead.
    leader_hint: Option<u64>,
    /// The last heartbeat was answered (if not, try another replica).
    answered: bool,
    /// Heartbeats in a row left unanswered by the time the next was due.
    unanswered: u32,
    id: Option<ServerId>,
    bugs: MasterBugs,
    /// The region's contents (the last write that landed).
    region: Option<ConfigRegion>,
    /// The configuration acted on: every write applied, laid over the
    /// ones before (whole, `tables: None`).
    config: Option<ConfigRegion>,
    /// A write older than `acted_version` landed after it (a failed
    /// fence): nothing is served until a newer one lands.
    regressed: bool,
    /// The newest version the worker acted on.
    acted_version: u64,
    /// The fence: the newest term a write landed from.
    term_seen: u64,
    data: BTreeMap<(TableId, Bytes), Bytes>,
    /// Serving is allowed before this time (the driver's clock; 0: never
    /// granted).
    lease_until: u64,
}

impl MasterAgent {
    /// A master process at `addr` that has not enlisted yet; `nonce` must
    /// be unique to this process (random at start).
    pub fn new(
        cfg: MasterConfig,
        addr: String,
        services: u8,
        nonce: u64,
        bugs: MasterBugs,
    ) -> MasterAgent {
        MasterAgent {
            cfg,
            addr,
            services,
            nonce,
            answered: true,
            bugs,
            ..MasterAgent::default()
        }
    }

    /// Records the id the coordinator gave this process at enlistment.
    pub fn enlisted(&mut self, id: ServerId) {
        self.id = Some(id);
    }

    /// Advances the clock by one tick: enlistment requests until enlisted,
    /// then heartbeats.
    pub fn tick(&mut self) -> Vec<MasterAction> {
        self.now += 1;
        if self.now < self.next_send {
            return Vec::new();
        }
        match self.id {
            None => {
                self.next_send = self.now + self.cfg.enlist_retry_ticks;
                vec![MasterAction::Enlist {
                    to: self.leader_hint,
                    addr: self.addr.clone(),
                    services: self.services,
                    nonce: self.nonce,
                }]
            }
            Some(from) => {
                self.next_send = self.now + self.cfg.heartbeat_ticks;
                if self.answered {
                    self.unanswered = 0;
                } else {
                    self.unanswered += 1;
                    // Twice silent: try another replica. Once is not
                    // enough: a leader answers only after a read index
                    // and its log's apply, which under load can take
                    // longer than a slowed interval, and a master that
                    // left its leader at every late answer would spend
                    // its heartbeats on followers and be declared crashed.
                    if self.unanswered >= 2 {
                        self.leader_hint = None;
                    }
                }
                self.answered = false;
                vec![MasterAction::Heartbeat {
                    to: self.leader_hint,
                    from,
                }]
            }
        }
    }

    /// Ticks from now until [`Self::tick`] has something to send (at
    /// least one): the ticks before it are idle, and a driver may skip
    /// them (calling `tick` for each when it wakes), until an answer makes
    /// it due sooner (an enlistment's: the first heartbeat at the next
    /// tick).
    pub fn ticks_until_due(&self) -> u64 {
        self.next_send.saturating_sub(self.now).max(1)
    }

    /// The answer to an enlistment request: the id given (`None`: not
    /// done, e.g. not the leader) and a hint at the leader.
    pub fn on_enlist_reply(&mut self, id: Option<ServerId>, leader_hint: Option<u64>) {
        if self.id.is_some() {
            return;
        }
        self.leader_hint = leader_hint.or(self.leader_hint);
        if let Some(id) = id {
            self.id = Some(id);
            self.next_send = self.now; // first heartbeat at the next tick
        }
    }

    /// Heartbeats from now on every `ticks` ticks (the leader's pace, from
    /// its answer; at least one).
    pub fn set_heartbeat_ticks(&mut self, ticks: u64) {
        self.cfg.heartbeat_ticks = ticks.max(1);
    }

    /// The answer to a heartbeat: whether the coordinator counts this
    /// server as gone, and who leads (the answering replica itself if it
    /// does; with no hint, the next heartbeat tries another replica).
    pub fn on_heartbeat_reply(
        &mut self,
        gone: bool,
        leader_hint: Option<u64>,
    ) -> Option<MasterAction> {
        self.answered = true;
        self.leader_hint = leader_hint;
        gone.then_some(MasterAction::Shutdown)
    }

    /// The active coordinator acknowledged a heartbeat this master sent at
    /// `sent_at` and granted a lease of `lease` (both in the driver's
    /// clock): it may serve until `sent_at + lease`. A lease never
    /// shortens (an acknowledgement of an older heartbeat arriving late
    /// changes nothing).
    pub fn lease_granted(&mut self, sent_at: u64, lease: u64) {
        self.lease_until = self.lease_until.max(sent_at.saturating_add(lease));
    }

    /// Ends the lease at once (told it was declared crashed: it serves
    /// nothing more while it stops).
    pub fn revoke_lease(&mut self) {
        self.lease_until = 0;
    }

    /// Until when it may serve (the driver's clock; 0: no lease yet).
    pub fn lease_until(&self) -> u64 {
        self.lease_until
    }

    /// The nonce it enlists with (its process's identity).
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// Its id, once enlisted.
    pub fn id(&self) -> Option<ServerId> {
        self.id
    }

    /// The configuration it acts on (every write applied, in order),
    /// unless the region went back.
    pub fn config(&self) -> Option<&ConfigRegion> {
        self.config.as_ref().filter(|_| !self.regressed)
    }

    /// What the region holds now (even if the worker refuses to act on it).
    pub fn region(&self) -> Option<&ConfigRegion> {
        self.region.as_ref()
    }

    /// The newest coordinator term it has seen.
    pub fn term_seen(&self) -> u64 {
        self.term_seen
    }

    /// Whether its configuration says it is no longer up (declared crashed:
    /// it must stop serving and enlist again as a new server).
    pub fn declared_dead(&self) -> bool {
        let (Some(id), Some(c)) = (self.id, self.config()) else {
            return false;
        };
        c.owner == id && c.status != ServerStatus::Up
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
        let version = region.version;
        let acted = self.acted_version;
        if version < acted {
            self.region = Some(region);
            self.regressed = true;
            return RegionOutcome::Regressed { version, acted };
        }
        let held = self.config.take().unwrap_or_else(|| ConfigRegion {
            tables: None,
            tablets: Vec::new(),
            ..region.clone()
        });
        let config = self.config.insert(held.merged(&region));
        self.region = Some(region);
        self.regressed = false;
        self.acted_version = version;
        self.data.retain(|(table, key), _| {
            let h = key_hash(key);
            config
                .tablets
                .iter()
                .any(|t| t.table == *table && t.start_hash <= h && h <= t.end_hash)
        });
        RegionOutcome::Applied { version }
    }

    fn check_owner(&self, table: TableId, key: &[u8], now: u64) -> Result<(), MasterError> {
        let hash = key_hash(key);
        if now >= self.lease_until && !self.bugs.ignore_lease {
            return Err(MasterError::NoLease {
                me: self.id,
                expired: self.lease_until,
            });
        }
        let owns = !self.declared_dead()
            && self.config().is_some_and(|c| {
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

    /// Reads `key` of `table` at time `now` (the driver's clock), if this
    /// master owns its tablet and holds a lease.
    pub fn get(&self, table: TableId, key: &[u8], now: u64) -> Result<Option<Bytes>, MasterError> {
        self.check_owner(table, key, now)?;
        Ok(self
            .data
            .get(&(table, Bytes::copy_from_slice(key)))
            .cloned())
    }

    /// Writes `key` of `table` at time `now` (the driver's clock), if this
    /// master owns its tablet and holds a lease.
    pub fn put(
        &mut self,
        table: TableId,
        key: &[u8],
        value: Bytes,
        now: u64,
    ) -> Result<(), MasterError> {
        self.check_owner(table, key, now)?;
        self.data
            .insert((table, Bytes::copy_from_slice(key)), value);
        Ok(())
    }
}
