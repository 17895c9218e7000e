//! [`ClusterState`]: the server list, the tablet map and the journal of
//! incomplete operations, changed only by applying log records in order.
//!
//! Applying is deterministic: every replica that applies the same records
//! holds the same state (the simulator checks it by digest), so a new
//! leader knows exactly which operations are incomplete and what each
//! target must hold. Nothing here does I/O or reads a clock.
//!
//! **Snapshots without stopping the replica.** Encoding a million-tablet
//! state takes tens of milliseconds, longer than a commit, so a replica
//! does not encode on its Raft thread: it takes [`ClusterState::frozen`],
//! a copy that shares the server list, each table and the exactly-once
//! table with the live state (`Arc`s), and a worker encodes and writes
//! that. The live state changes those parts copy-on-write
//! (`Arc::make_mut`): while no snapshot holds them, a change copies
//! nothing; while one does, the first change to a part copies that part
//! once (a table: at most 4,096 tablets, ~160 KiB; the server list at 10,000
//! masters: ~1 MiB). The encoding is the same as the unshared state's, so
//! the snapshot format did not change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::limits::LimitError;
use super::limits::*;
use super::record::{Op, Reassignment, Record, RecordError, RpcId, Seq, TabletSpec};
use super::region::{ConfigRegion, RegionTablet};
use super::types::*;

/// A broken invariant of the cluster state, in words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvariantViolation(pub String);

/// An operation past its commit point whose completion record is not yet
/// applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// What was decided.
    pub op: Op,
    /// The configuration version its commit produced: a target is done
    /// once it acknowledged a configuration at least this new.
    pub version: u64,
    /// Servers whose configuration the operation changed and that have not
    /// crashed since.
    pub targets: BTreeSet<ServerId>,
    /// The table it works on (table operations serialise per table).
    pub table: Option<TableId>,
}

/// Why a commit record changed nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A table of that name exists.
    #[error("a table named {0:?} exists")]
    NameTaken(String),
    /// No table of that name.
    #[error("no table named {0:?}")]
    NoSuchTable(String),
    /// Another operation on the table is incomplete, or the tablet is
    /// recovering: retry later.
    #[error("table {0:?} is busy with another operation; retry")]
    Busy(String),
    /// The server is not up (unknown, crashed or removed).
    #[error("server {0} is not up")]
    ServerNotUp(ServerId),
    /// This process enlisted already, as this server.
    #[error("already enlisted as server {0}")]
    AlreadyEnlisted(ServerId),
    /// The tablets do not cover the hash space in order.
    #[error("the tablets do not cover the hash space exactly once")]
    BadTablets,
    /// The split hash is already a tablet boundary.
    #[error("hash {0:#x} already starts a tablet")]
    BadSplit(u64),
    /// The tablet is already owned by the target server.
    #[error("the tablet is already owned by {0}")]
    AlreadyOwner(ServerId),
    /// The recovery plan does not match the server's tablets now.
    #[error("the recovery plan of server {0} is stale")]
    StalePlan(ServerId),
    /// The server's crash recovery has not completed.
    #[error("server {0} has not finished crash recovery")]
    NotRecovered(ServerId),
    /// A limit would be exceeded.
    #[error("limit reached: {0}")]
    Limit(String),
    /// The record breaks a rule every request is validated against (a
    /// leader never proposes one; it came from an older version, a bug or
    /// a forged proposal).
    #[error("invalid record: {0}")]
    Invalid(LimitError),
    /// Another tablet migration is incomplete (one at a time, so that a
    /// new owner never waits on an old owner that waits on it: see the
    /// coordinator's handover rule).
    #[error("a migration of table {0:?} is still in progress (one at a time); retry")]
    Migrating(String),
}

/// What applying a commit record did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A server enlisted with this id.
    Enlisted(ServerId),
    /// A table was created with this id.
    TableCreated(TableId),
    /// The change was made.
    Changed,
}

/// What applying one record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An operation passed its commit point (its seq is the index).
    Committed(Effect),
    /// A commit record whose precondition failed: nothing changed.
    Rejected(Rejection),
    /// An operation completed.
    Completed(Seq),
    /// A completion of an operation already complete (or never journaled):
    /// nothing changed.
    AlreadyComplete(Seq),
    /// Not a coordinator record (Raft's own no-op or configuration entry).
    NotARecord,
    /// A no-op record: nothing changed.
    Noop,
    /// The entry is not a well-formed coordinator record: nothing changed.
    /// (Leaders never write one; applying it must not stop a replica.)
    Malformed(RecordError),
    /// A client's operation that was applied already (a second commit
    /// record with the same [`RpcId`]: a retry proposed by a leader that
    /// had not applied the first yet): nothing changed; the first one's
    /// outcome.
    Duplicate {
        /// The operation.
        rpc: RpcId,
        /// Where it was applied (its seq).
        index: Seq,
        /// What it did there.
        result: Result<Effect, Rejection>,
    },
    /// A client's operation whose outcome the state no longer knows (see
    /// [`UnknownReason`]): nothing changed; it may or may not have been
    /// applied earlier.
    Unknown {
        /// The operation.
        rpc: RpcId,
        /// Why the state cannot tell.
        reason: UnknownReason,
    },
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::Enlisted(id) => write!(f, "enlisted {id}"),
            Effect::TableCreated(t) => write!(f, "created table {t}"),
            Effect::Changed => write!(f, "changed"),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Committed(e) => write!(f, "committed: {e}"),
            Outcome::Rejected(r) => write!(f, "rejected: {r}"),
            Outcome::Completed(s) => write!(f, "completed {s}"),
            Outcome::AlreadyComplete(s) => write!(f, "already complete {s}"),
            Outcome::NotARecord => write!(f, "not a record"),
            Outcome::Noop => write!(f, "noop"),
            Outcome::Malformed(e) => write!(f, "malformed: {e}"),
            Outcome::Duplicate { rpc, index, result } => match result {
                Ok(e) => write!(f, "{rpc} duplicate of index {index} ({e})"),
                Err(r) => write!(f, "{rpc} duplicate of index {index} (rejected: {r})"),
            },
            Outcome::Unknown { rpc, reason } => write!(f, "{rpc} outcome unknown: {reason}"),
        }
    }
}

/// What a client's operation did, kept for its retries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The client's last operation applied.
    pub seq: u64,
    /// Where its commit record applied (the operation's seq); also the
    /// session's age for eviction.
    pub index: Seq,
    /// What it did: the effect, or why its precondition failed.
    pub result: Result<Effect, Rejection>,
}

/// Where a client's operation stands, as far as the applied state knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcStatus<'a> {
    /// Not applied: it may be proposed (and the first commit record of it
    /// to apply will take effect).
    New,
    /// Applied: answer with this outcome, do not propose again.
    Applied(&'a Session),
    /// The state cannot tell: answer "unknown", do not propose.
    Unknown(UnknownReason),
}

/// Why the state cannot tell whether a client's operation was applied.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownReason {
    /// The client has had a later operation applied (`last`): only the
    /// last one's outcome is kept.
    Superseded {
        /// The client's last applied seq.
        last: u64,
    },
    /// The client is not in the table, and the table has evicted clients
    /// whose last operation applied after what this client had seen
    /// (`after`): its operation may have applied and been evicted.
    Evicted {
        /// The highest index an evicted client's operation applied at.
        horizon: Seq,
    },
}

impl std::fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnknownReason::Superseded { last } => write!(
                f,
                "the client's operation {last} was applied after it; only the last outcome is kept"
            ),
            UnknownReason::Evicted { horizon } => write!(
                f,
                "the client is not among the clients the coordinator remembers (at most {SESSIONS_MAX} by default; it evicted clients up to index {horizon}): an earlier attempt may have applied and been forgotten"
            ),
        }
    }
}

/// The exactly-once table: per client, its last applied operation and
/// what it did, for at most `limit` clients; past it the client whose
/// last operation applied at the lowest index is evicted. Deterministic:
/// it changes only when a client's commit record applies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(from = "SessionsWire", into = "SessionsWire")]
pub struct Sessions {
    limit: usize,
    clients: BTreeMap<u64, Session>,
    /// Session index -> client (the eviction order; rebuilt on restore).
    by_index: BTreeMap<Seq, u64>,
    /// The highest index among evicted sessions (0: none evicted).
    horizon: Seq,
    /// Sessions evicted so far.
    evictions: u64,
}

/// How [`Sessions`] are encoded: the eviction order is derived.
#[derive(Serialize, Deserialize, Clone)]
struct SessionsWire {
    limit: u64,
    horizon: Seq,
    evictions: u64,
    clients: Vec<(u64, Session)>,
}

impl From<SessionsWire> for Sessions {
    fn from(w: SessionsWire) -> Sessions {
        let clients: BTreeMap<u64, Session> = w.clients.into_iter().collect();
        let by_index = clients.iter().map(|(c, s)| (s.index, *c)).collect();
        Sessions {
            limit: usize::try_from(w.limit).unwrap_or(usize::MAX),
            clients,
            by_index,
            horizon: w.horizon,
            evictions: w.evictions,
        }
    }
}

impl From<Sessions> for SessionsWire {
    fn from(s: Sessions) -> SessionsWire {
        SessionsWire {
            limit: s.limit as u64,
            horizon: s.horizon,
            evictions: s.evictions,
            clients: s.clients.into_iter().collect(),
        }
    }
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::with_limit(SESSIONS_MAX)
    }
}

impl Sessions {
    /// An empty table keeping at most `limit` clients (at least one).
    pub fn with_limit(limit: usize) -> Sessions {
        Sessions {
            limit: limit.max(1),
            clients: BTreeMap::new(),
            by_index: BTreeMap::new(),
            horizon: 0,
            evictions: 0,
        }
    }

    /// Where `rpc` stands (see [`RpcStatus`]).
    pub fn status(&self, rpc: &RpcId) -> RpcStatus<'_> {
        match self.clients.get(&rpc.client) {
            Some(s) if s.seq == rpc.seq => RpcStatus::Applied(s),
            Some(s) if s.seq > rpc.seq => {
                RpcStatus::Unknown(UnknownReason::Superseded { last: s.seq })
            }
            Some(_) => RpcStatus::New,
            // Any earlier application of this operation is at an index
            // above `after`; every session that applied above the horizon
            // is still here. So below it, it may have been evicted.
            None if rpc.after < self.horizon => RpcStatus::Unknown(UnknownReason::Evicted {
                horizon: self.horizon,
            }),
            None => RpcStatus::New,
        }
    }

    /// Records that `rpc` applied at `index` with `result` (evicting the
    /// least recently used client if the table is full).
    fn record(&mut self, rpc: RpcId, index: Seq, result: Result<Effect, Rejection>) {
        if let Some(old) = self.clients.get(&rpc.client) {
            self.by_index.remove(&old.index);
        }
        self.clients.insert(
            rpc.client,
            Session {
                seq: rpc.seq,
                index,
                result,
            },
        );
        self.by_index.insert(index, rpc.client);
        while self.clients.len() > self.limit {
            let (i, c) = self.by_index.pop_first().expect("as many as clients");
            self.clients.remove(&c);
            self.horizon = self.horizon.max(i);
            self.evictions += 1;
        }
    }

    /// The client's session, if kept.
    pub fn get(&self, client: u64) -> Option<&Session> {
        self.clients.get(&client)
    }

    /// Clients kept.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client is kept.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Most clients kept.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Clients evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The highest index an evicted client's last operation applied at.
    pub fn horizon(&self) -> Seq {
        self.horizon
    }

    fn check(&self, applied: u64) -> Result<(), String> {
        if self.clients.len() > self.limit {
            return Err(format!(
                "{} client sessions over the limit of {}",
                self.clients.len(),
                self.limit
            ));
        }
        if self.by_index.len() != self.clients.len()
            || self
                .by_index
                .iter()
                .any(|(i, c)| self.clients.get(c).map(|s| s.index) != Some(*i))
        {
            return Err("two client sessions at one index".into());
        }
        if let Some((i, c)) = self.by_index.last_key_value() {
            if *i > applied {
                return Err(format!(
                    "client {c:016x}'s session at index {i}, beyond the applied {applied}"
                ));
            }
        }
        if self.horizon > applied {
            return Err(format!("eviction horizon {} from the future", self.horizon));
        }
        Ok(())
    }
}

/// The coordinator's state (see the module docs).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// By slot index. Shared copy-on-write (as are `tables`' entries and
    /// `sessions`): [`ClusterState::frozen`] hands a snapshot writer the
    /// state in O(tables), and a change made while it encodes copies only
    /// what it changes (see the module docs).
    servers: Arc<BTreeMap<u32, Server>>,
    /// Grows by one per change to the server list.
    server_list_version: u64,
    tables: BTreeMap<TableId, Arc<Table>>,
    next_table_id: TableId,
    /// Grows by one per applied commit record: orders configurations.
    version: u64,
    incomplete: BTreeMap<Seq, Pending>,
    /// The index of the last entry applied.
    applied_index: u64,
    /// Clients' last operations (exactly-once answers). Snapshot version 2.
    sessions: Arc<Sessions>,
    /// Each server's tablets as (table, first hash): what a master owns,
    /// found without a walk of the whole map (a recovery plan, a push,
    /// owners for a new table). Derived: not in snapshots, rebuilt when
    /// one is restored, checked against the map by [`ClusterState::check`].
    #[serde(skip)]
    owned: BTreeMap<ServerId, BTreeSet<(TableId, u64)>>,
    /// The up masters by (tablets owned, id): owners for a new table and
    /// a recovery plan start from the least loaded without looking at
    /// every master (a one-tablet create at 10,000 masters read them all).
    /// Derived like `owned`, and checked the same way.
    #[serde(skip)]
    by_load: BTreeSet<(usize, ServerId)>,
}

/// The state as snapshot format version 1 wrote it (no sessions).
#[derive(Deserialize)]
struct ClusterStateV1 {
    servers: BTreeMap<u32, Server>,
    server_list_version: u64,
    tables: BTreeMap<TableId, Table>,
    next_table_id: TableId,
    version: u64,
    incomplete: BTreeMap<Seq, Pending>,
    applied_index: u64,
}

const SNAPSHOT_MAGIC: u8 = 0xC5;
/// Version 2 added the client sessions; version 1 snapshots still load
/// (with an empty table: operations applied before it are not known to
/// retries).
const SNAPSHOT_FORMAT_VERSION: u8 = 2;

impl ClusterState {
    /// An empty state whose exactly-once table keeps at most `limit`
    /// clients (the default is [`SESSIONS_MAX`]; the simulator uses small
    /// tables to exercise eviction). Every replica must use the same.
    pub fn with_session_limit(limit: usize) -> ClusterState {
        ClusterState {
            sessions: Arc::new(Sessions::with_limit(limit)),
            ..ClusterState::default()
        }
    }

    /// The exactly-once table.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Where a client's operation stands in the applied state: applied
    /// (answer its outcome), unknown (answer so), or new (it may be
    /// proposed). A leader asks before proposing; applying a
    /// [`Record::ClientCommit`] asks again, so a second record of one
    /// operation never takes effect.
    pub fn rpc_status(&self, rpc: &RpcId) -> RpcStatus<'_> {
        self.sessions.status(rpc)
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The configuration version (grows by one per applied operation).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The server list's version.
    pub fn server_list_version(&self) -> u64 {
        self.server_list_version
    }

    /// Server slots ever allocated. It never decreases: a removed server's
    /// slot is kept and reused, never dropped, so this is at least the
    /// most servers ever up at once, and every replica that has applied
    /// the same prefix holds the same figure. The heartbeat interval and
    /// master timeout scale with it ([`crate::coordinator::CoordinatorConfig`]),
    /// which is what makes a lease granted earlier never outlast a later
    /// timeout.
    pub fn server_slots(&self) -> usize {
        self.servers.len()
    }

    /// Every server, by slot.
    pub fn servers(&self) -> impl Iterator<Item = &Server> {
        self.servers.values()
    }

    /// The server with this id, if the list holds it (any status).
    pub fn server(&self, id: ServerId) -> Option<&Server> {
        self.servers.get(&id.index).filter(|s| s.id == id)
    }

    /// Whether `id` has left the cluster for good: declared crashed or
    /// removed, or its slot already holds a later generation. (A server
    /// the state has not heard of yet is not gone.)
    pub fn is_gone(&self, id: ServerId) -> bool {
        self.servers.get(&id.index).is_some_and(|s| {
            s.id.generation > id.generation || (s.id == id && s.status != ServerStatus::Up)
        })
    }

    /// Whether `id` is up.
    pub fn is_up(&self, id: ServerId) -> bool {
        self.server(id)
            .is_some_and(|s| s.status == ServerStatus::Up)
    }

    /// Up servers offering the master service, in id order.
    pub fn up_masters(&self) -> Vec<ServerId> {
        self.servers
            .values()
            .filter(|s| s.status == ServerStatus::Up && s.services & services::MASTER != 0)
            .map(|s| s.id)
            .collect()
    }

    /// Every table, by id.
    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.values().map(|t| &**t)
    }

    /// The table whose id is `id`.
    pub fn table_by_id(&self, id: TableId) -> Option<&Table> {
        self.tables.get(&id).map(|t| &**t)
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.values().map(|t| &**t).find(|t| t.name == name)
    }

    /// Operations past their commit point and not complete, by seq.
    pub fn incomplete(&self) -> &BTreeMap<Seq, Pending> {
        &self.incomplete
    }

    /// Tablets owned by `id`: (table, tablet).
    pub fn tablets_of(&self, id: ServerId) -> Vec<(TableId, &Tablet)> {
        let Some(owned) = self.owned.get(&id) else {
            return Vec::new();
        };
        owned
            .iter()
            .filter_map(|(t, start)| {
                let table = self.tables.get(t)?;
                let i = table
                    .tablets
                    .binary_search_by_key(start, |tb| tb.start_hash)
                    .ok()?;
                Some((*t, &table.tablets[i]))
            })
            .collect()
    }

    /// How many tablets `id` owns.
    pub fn tablet_count(&self, id: ServerId) -> usize {
        self.owned.get(&id).map_or(0, BTreeSet::len)
    }

    /// The owner index as the map says it should be.
    fn owned_from_map(&self) -> BTreeMap<ServerId, BTreeSet<(TableId, u64)>> {
        let mut owned: BTreeMap<ServerId, BTreeSet<(TableId, u64)>> = BTreeMap::new();
        for t in self.tables.values() {
            for tb in &t.tablets {
                owned
                    .entry(tb.owner)
                    .or_default()
                    .insert((t.id, tb.start_hash));
            }
        }
        owned
    }

    fn own(&mut self, owner: ServerId, table: TableId, start: u64) {
        let before = self.tablet_count(owner);
        self.owned.entry(owner).or_default().insert((table, start));
        self.reload(owner, before);
    }

    fn disown(&mut self, owner: ServerId, table: TableId, start: u64) {
        let before = self.tablet_count(owner);
        if let Some(set) = self.owned.get_mut(&owner) {
            set.remove(&(table, start));
            if set.is_empty() {
                self.owned.remove(&owner);
            }
        }
        self.reload(owner, before);
    }

    /// Moves `id` in the load index after its count changed from `before`
    /// (only an up master is in it).
    fn reload(&mut self, id: ServerId, before: usize) {
        if self.by_load.remove(&(before, id)) {
            self.by_load.insert((self.tablet_count(id), id));
        }
    }

    /// The load index as the server list and the owner index say it
    /// should be.
    fn by_load_from_owned(&self) -> BTreeSet<(usize, ServerId)> {
        self.up_masters()
            .into_iter()
            .map(|m| (self.tablet_count(m), m))
            .collect()
    }

    /// `n` owners, one at a time to the least loaded up master (ties by
    /// id), each choice counting as one more tablet for it; `except` is
    /// never chosen. `None` if no master can be. Reads the load index in
    /// order and only as far as the choices reach: a heap holds the
    /// masters already chosen (with their new loads) and those read so
    /// far, and the next in the index is read whenever it could be the
    /// least loaded. The same choices as a heap of every master.
    fn least_loaded(&self, n: usize, except: Option<ServerId>) -> Option<Vec<ServerId>> {
        use std::cmp::Reverse;
        let mut index = self
            .by_load
            .iter()
            .filter(|(_, m)| Some(*m) != except)
            .copied()
            .peekable();
        let mut heap: std::collections::BinaryHeap<Reverse<(usize, ServerId)>> =
            std::collections::BinaryHeap::new();
        let mut owners = Vec::with_capacity(n);
        for _ in 0..n {
            while let Some(&next) = index.peek() {
                if heap.peek().is_some_and(|Reverse(top)| *top < next) {
                    break;
                }
                heap.push(Reverse(next));
                index.next();
            }
            let Reverse((l, id)) = heap.pop()?;
            owners.push(id);
            heap.push(Reverse((l + 1, id)));
        }
        Some(owners)
    }

    /// Applies the entry at `index` with payload `data` (empty for Raft's
    /// own entries). Entries must come in order, each exactly once (the
    /// driver's contract, asserted).
    ///
    /// Total: whatever `data` holds, the outcome is decided by `data` and
    /// the state alone, so every replica reaches the same one, and nothing
    /// here can stop a replica. Bytes that are not a record are
    /// [`Outcome::Malformed`]; a record that breaks a limit is
    /// [`Rejection::Invalid`]; either changes nothing but the applied index.
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Outcome {
        assert!(
            index > self.applied_index,
            "entry {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
        if data.is_empty() {
            return Outcome::NotARecord;
        }
        match Record::decode(data) {
            Err(e) => Outcome::Malformed(e),
            Ok(record) => match record.check() {
                Err(e) => Outcome::Rejected(Rejection::Invalid(e)),
                Ok(()) => self.apply_record(index, record),
            },
        }
    }

    /// Applies a decoded record at `index` (see [`ClusterState::apply`]).
    fn apply_record(&mut self, index: u64, record: Record) -> Outcome {
        match record {
            Record::Complete { seq } => self.complete(seq),
            Record::Noop => Outcome::Noop,
            Record::Commit(op) => match self.apply_op(index, op) {
                Ok(effect) => Outcome::Committed(effect),
                Err(r) => Outcome::Rejected(r),
            },
            Record::ClientCommit { rpc, op } => match self.sessions.status(&rpc) {
                RpcStatus::Applied(s) => Outcome::Duplicate {
                    rpc,
                    index: s.index,
                    result: s.result.clone(),
                },
                RpcStatus::Unknown(reason) => Outcome::Unknown { rpc, reason },
                RpcStatus::New => {
                    let result = self.apply_op(index, op);
                    Arc::make_mut(&mut self.sessions).record(rpc, index, result.clone());
                    match result {
                        Ok(effect) => Outcome::Committed(effect),
                        Err(r) => Outcome::Rejected(r),
                    }
                }
            },
        }
    }

    /// Applies an operation's commit record at `index`.
    fn apply_op(&mut self, index: u64, op: Op) -> Result<Effect, Rejection> {
        match self.commit(&op) {
            Err(r) => Err(r),
            Ok((effect, targets, table)) => {
                self.version += 1;
                self.incomplete.insert(
                    index,
                    Pending {
                        op,
                        version: self.version,
                        targets,
                        table,
                    },
                );
                Ok(effect)
            }
        }
    }

    fn table_id(&self, name: &str) -> Result<TableId, Rejection> {
        self.table(name)
            .map(|t| t.id)
            .ok_or_else(|| Rejection::NoSuchTable(name.to_string()))
    }

    /// Table operations serialise: refuse while another is incomplete.
    fn check_not_busy(&self, id: TableId) -> Result<(), Rejection> {
        if self.incomplete.values().any(|p| p.table == Some(id)) {
            return Err(Rejection::Busy(self.tables[&id].name.clone()));
        }
        Ok(())
    }

    /// Checks the precondition and makes the change. Returns the effect,
    /// the push targets and the table worked on.
    fn commit(
        &mut self,
        op: &Op,
    ) -> Result<(Effect, BTreeSet<ServerId>, Option<TableId>), Rejection> {
        match op {
            Op::EnlistServer {
                addr,
                services,
                nonce,
            } => {
                if let Some(s) = self
                    .servers
                    .values()
                    .find(|s| s.nonce == *nonce && s.status == ServerStatus::Up)
                {
                    return Err(Rejection::AlreadyEnlisted(s.id));
                }
                let reuse = self
                    .servers
                    .values()
                    .find(|s| s.status == ServerStatus::Removed)
                    .map(|s| s.id);
                let id = match reuse {
                    Some(old) => ServerId {
                        index: old.index,
                        generation: old.generation + 1,
                    },
                    None => {
                        if self.servers.len() >= SERVERS_MAX {
                            return Err(Rejection::Limit(format!("{SERVERS_MAX} servers")));
                        }
                        ServerId {
                            index: self.servers.keys().next_back().map_or(1, |i| i + 1),
                            generation: 1,
                        }
                    }
                };
                Arc::make_mut(&mut self.servers).insert(
                    id.index,
                    Server {
                        id,
                        addr: addr.clone(),
                        services: *services,
                        status: ServerStatus::Up,
                        nonce: *nonce,
                    },
                );
                self.server_list_version += 1;
                if services & services::MASTER != 0 {
                    self.by_load.insert((self.tablet_count(id), id));
                }
                // Only the new server needs a configuration: nobody
                // else's tablets changed (module docs).
                Ok((Effect::Enlisted(id), BTreeSet::from([id]), None))
            }
            Op::CreateTable { name, tablets } => {
                if self.table(name).is_some() {
                    return Err(Rejection::NameTaken(name.clone()));
                }
                if self.tables.len() >= TABLES_MAX {
                    return Err(Rejection::Limit(format!("{TABLES_MAX} tables")));
                }
                if !covers_hash_space(tablets.iter().map(|t| (t.start_hash, t.end_hash))) {
                    return Err(Rejection::BadTablets);
                }
                if let Some(t) = tablets.iter().find(|t| !self.is_up(t.owner)) {
                    return Err(Rejection::ServerNotUp(t.owner));
                }
                let id = self.next_table_id + 1;
                self.next_table_id = id;
                self.tables.insert(
                    id,
                    Arc::new(Table {
                        id,
                        name: name.clone(),
                        state: TableState::Creating,
                        tablets: tablets
                            .iter()
                            .map(|t: &TabletSpec| Tablet {
                                start_hash: t.start_hash,
                                end_hash: t.end_hash,
                                owner: t.owner,
                                state: TabletState::Normal,
                            })
                            .collect(),
                    }),
                );
                for t in tablets {
                    self.own(t.owner, id, t.start_hash);
                }
                let targets = tablets.iter().map(|t| t.owner).collect();
                Ok((Effect::TableCreated(id), targets, Some(id)))
            }
            Op::DropTable { name } => {
                let id = self.table_id(name)?;
                self.check_not_busy(id)?;
                let table = self.tables.remove(&id).expect("found above");
                for tb in &table.tablets {
                    self.disown(tb.owner, id, tb.start_hash);
                }
                let targets = table
                    .tablets
                    .iter()
                    .map(|t| t.owner)
                    .filter(|o| self.is_up(*o))
                    .collect();
                Ok((Effect::Changed, targets, Some(id)))
            }
            Op::SplitTablet { table, split_hash } => {
                let id = self.table_id(table)?;
                self.check_not_busy(id)?;
                let t = &self.tables[&id];
                if t.tablets.len() >= TABLETS_PER_TABLE_MAX {
                    return Err(Rejection::Limit(format!(
                        "{TABLETS_PER_TABLE_MAX} tablets per table"
                    )));
                }
                let pos = t
                    .position_of(*split_hash)
                    .expect("tablets cover the hash space");
                let tb = t.tablets[pos].clone();
                if tb.start_hash == *split_hash {
                    return Err(Rejection::BadSplit(*split_hash));
                }
                if tb.state == TabletState::Recovering {
                    return Err(Rejection::Busy(table.clone()));
                }
                let owner = tb.owner;
                let t = Arc::make_mut(self.tables.get_mut(&id).expect("found above"));
                t.tablets[pos].end_hash = split_hash - 1;
                t.tablets.insert(
                    pos + 1,
                    Tablet {
                        start_hash: *split_hash,
                        end_hash: tb.end_hash,
                        owner,
                        state: TabletState::Normal,
                    },
                );
                self.own(owner, id, *split_hash);
                Ok((Effect::Changed, BTreeSet::from([owner]), Some(id)))
            }
            Op::MigrateTablet { table, hash, to } => {
                let id = self.table_id(table)?;
                self.check_not_busy(id)?;
                if let Some(other) = self.incomplete.values().find_map(|p| match &p.op {
                    Op::MigrateTablet { table, .. } => Some(table.clone()),
                    _ => None,
                }) {
                    return Err(Rejection::Migrating(other));
                }
                if !self.is_up(*to) {
                    return Err(Rejection::ServerNotUp(*to));
                }
                let t = &self.tables[&id];
                let pos = t.position_of(*hash).expect("tablets cover the hash space");
                let from = t.tablets[pos].owner;
                if from == *to {
                    return Err(Rejection::AlreadyOwner(*to));
                }
                if t.tablets[pos].state == TabletState::Recovering {
                    return Err(Rejection::Busy(table.clone()));
                }
                let start = t.tablets[pos].start_hash;
                Arc::make_mut(self.tables.get_mut(&id).expect("found above")).tablets[pos].owner =
                    *to;
                self.disown(from, id, start);
                self.own(*to, id, start);
                // The old owner is up: a tablet is never owned by a server
                // that is not (crash records reassign them at once).
                Ok((Effect::Changed, BTreeSet::from([from, *to]), Some(id)))
            }
            Op::ServerCrashed { id, plan } => {
                if !self.is_up(*id) {
                    return Err(Rejection::ServerNotUp(*id));
                }
                let owned: BTreeSet<(TableId, u64)> = self
                    .tablets_of(*id)
                    .into_iter()
                    .map(|(t, tb)| (t, tb.start_hash))
                    .collect();
                let planned: BTreeSet<(TableId, u64)> =
                    plan.iter().map(|r| (r.table, r.start_hash)).collect();
                if owned != planned
                    || planned.len() != plan.len()
                    || plan.iter().any(|r| r.to == *id || !self.is_up(r.to))
                {
                    return Err(Rejection::StalePlan(*id));
                }
                Arc::make_mut(&mut self.servers)
                    .get_mut(&id.index)
                    .expect("up above")
                    .status = ServerStatus::Crashed;
                self.server_list_version += 1;
                self.by_load.remove(&(self.tablet_count(*id), *id));
                for r in plan {
                    let t =
                        Arc::make_mut(self.tables.get_mut(&r.table).expect("planned from the map"));
                    let i = t
                        .tablets
                        .binary_search_by_key(&r.start_hash, |tb| tb.start_hash)
                        .expect("planned from the map");
                    let tb = &mut t.tablets[i];
                    tb.owner = r.to;
                    tb.state = TabletState::Recovering;
                    self.disown(*id, r.table, r.start_hash);
                    self.own(r.to, r.table, r.start_hash);
                }
                // Operations waiting for the crashed server stop waiting:
                // the plan took over what they were handing to it.
                for p in self.incomplete.values_mut() {
                    p.targets.remove(id);
                }
                // The recipients of its tablets; nobody else's changed.
                Ok((Effect::Changed, plan.iter().map(|r| r.to).collect(), None))
            }
            Op::ServerRemoved { id } => {
                let crashed = self
                    .server(*id)
                    .is_some_and(|s| s.status == ServerStatus::Crashed);
                if !crashed {
                    return Err(Rejection::ServerNotUp(*id));
                }
                let recovering = self
                    .incomplete
                    .values()
                    .any(|p| matches!(&p.op, Op::ServerCrashed { id: c, .. } if c == id));
                if recovering {
                    return Err(Rejection::NotRecovered(*id));
                }
                Arc::make_mut(&mut self.servers)
                    .get_mut(&id.index)
                    .expect("crashed above")
                    .status = ServerStatus::Removed;
                self.server_list_version += 1;
                // It owned nothing (its recovery completed): no tablet
                // moves, nobody to push.
                Ok((Effect::Changed, BTreeSet::new(), None))
            }
        }
    }

    fn complete(&mut self, seq: Seq) -> Outcome {
        let Some(p) = self.incomplete.remove(&seq) else {
            return Outcome::AlreadyComplete(seq);
        };
        match &p.op {
            Op::CreateTable { .. } => {
                if let Some(t) = p
                    .table
                    .and_then(|id| self.tables.get_mut(&id))
                    .map(Arc::make_mut)
                {
                    t.state = TableState::Normal;
                }
            }
            Op::ServerCrashed { plan, .. } => {
                for r in plan {
                    if let Some(tb) = self.tables.get_mut(&r.table).and_then(|t| {
                        let t = Arc::make_mut(t);
                        let i = t
                            .tablets
                            .binary_search_by_key(&r.start_hash, |tb| tb.start_hash)
                            .ok()?;
                        Some(&mut t.tablets[i]).filter(|tb| tb.owner == r.to)
                    }) {
                        tb.state = TabletState::Normal;
                    }
                }
            }
            _ => {}
        }
        Outcome::Completed(seq)
    }

    /// Owners for `n` new tablets: the up masters with the fewest tablets
    /// first (ties by id), round-robin. `None` without an up master.
    pub fn choose_owners(&self, n: u32) -> Option<Vec<ServerId>> {
        if self.by_load.is_empty() {
            return None;
        }
        self.least_loaded(n as usize, None)
    }

    /// A recovery plan for `id`: each of its tablets to the least-loaded
    /// other up master. `None` if it owns tablets and no other master is up
    /// (the crash waits until one enlists).
    pub fn plan_recovery(&self, id: ServerId) -> Option<Vec<Reassignment>> {
        let owned: Vec<(TableId, u64)> = self
            .owned
            .get(&id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let to = self.least_loaded(owned.len(), Some(id))?;
        Some(
            owned
                .into_iter()
                .zip(to)
                .map(|((table, start_hash), to)| Reassignment {
                    table,
                    start_hash,
                    to,
                })
                .collect(),
        )
    }

    /// What server `id` must hold: its own status in the server list and
    /// its own tablets, stamped with the writer's `term` and the current
    /// version (see `region` for why no more than that).
    pub fn region_for(&self, id: ServerId, term: u64) -> ConfigRegion {
        ConfigRegion {
            term,
            version: self.version,
            server_list_version: self.server_list_version,
            owner: id,
            status: self.server(id).map_or(ServerStatus::Removed, |s| s.status),
            tables: None,
            tablets: self
                .tablets_of(id)
                .into_iter()
                .map(|(table, tb)| RegionTablet {
                    table,
                    start_hash: tb.start_hash,
                    end_hash: tb.end_hash,
                })
                .collect(),
        }
    }

    /// A part of [`Self::region_for`]: server `id`'s status and its
    /// tablets of `tables` only (see `region`). Costs its tablets of
    /// those tables, not all of them.
    pub fn region_part_for(
        &self,
        id: ServerId,
        term: u64,
        tables: &BTreeSet<TableId>,
    ) -> ConfigRegion {
        let mut tablets = Vec::new();
        if let Some(owned) = self.owned.get(&id) {
            for &t in tables {
                let Some(table) = self.tables.get(&t) else {
                    continue; // dropped: the part says it holds none
                };
                for (_, start) in owned.range((t, 0)..=(t, u64::MAX)) {
                    if let Ok(i) = table
                        .tablets
                        .binary_search_by_key(start, |tb| tb.start_hash)
                    {
                        let tb = &table.tablets[i];
                        tablets.push(RegionTablet {
                            table: t,
                            start_hash: tb.start_hash,
                            end_hash: tb.end_hash,
                        });
                    }
                }
            }
        }
        ConfigRegion {
            term,
            version: self.version,
            server_list_version: self.server_list_version,
            owner: id,
            status: self.server(id).map_or(ServerStatus::Removed, |s| s.status),
            tables: Some(tables.iter().copied().collect()),
            tablets,
        }
    }

    /// The invariants that hold after every applied record.
    pub fn check(&self) -> Result<(), InvariantViolation> {
        self.find_violation().map_err(InvariantViolation)
    }

    fn find_violation(&self) -> Result<(), String> {
        for (slot, s) in self.servers.iter() {
            if s.id.index != *slot {
                return Err(format!("server {} in slot {slot}", s.id));
            }
        }
        let mut names = BTreeSet::new();
        for (id, t) in &self.tables {
            if t.id != *id {
                return Err(format!("table {} under id {id}", t.id));
            }
            if t.id > self.next_table_id {
                return Err(format!(
                    "table {} past the last table id given, {}",
                    t.id, self.next_table_id
                ));
            }
            if !names.insert(&t.name) {
                return Err(format!("two tables named {:?}", t.name));
            }
            if !covers_hash_space(t.tablets.iter().map(|tb| (tb.start_hash, tb.end_hash))) {
                return Err(format!(
                    "table {:?}: tablets do not cover the hash space",
                    t.name
                ));
            }
            for tb in &t.tablets {
                if !self.is_up(tb.owner) {
                    return Err(format!(
                        "table {:?}: tablet at {:#x} owned by {} which is not up",
                        t.name, tb.start_hash, tb.owner
                    ));
                }
            }
        }
        if self.owned != self.owned_from_map() {
            return Err("the owner index disagrees with the tablet map".into());
        }
        if self.by_load != self.by_load_from_owned() {
            return Err("the load index disagrees with the server list".into());
        }
        for (seq, p) in &self.incomplete {
            if let Some(t) = p.targets.iter().find(|t| !self.is_up(**t)) {
                return Err(format!("operation {seq} waits for {t}, which is not up"));
            }
            if p.version > self.version {
                return Err(format!("operation {seq} from the future"));
            }
        }
        self.sessions.check(self.applied_index)
    }

    /// Moves the configuration and server-list versions `by` ahead (a
    /// restore from a backup: versions the old group handed out after the
    /// backup must not be handed out again for other changes). `None` if
    /// they would pass half the range (left for later commits).
    pub fn advance_versions(&mut self, by: u64) -> Option<()> {
        let limit = u64::MAX / 2;
        let v = self.version.checked_add(by).filter(|v| *v <= limit)?;
        let s = self
            .server_list_version
            .checked_add(by)
            .filter(|v| *v <= limit)?;
        self.version = v;
        self.server_list_version = s;
        Some(())
    }

    /// A copy of the state for a snapshot writer, cheap enough for the
    /// Raft thread: O(tables) reference counts, no tablet or server copied
    /// (see the module docs). It holds what [`ClusterState::snapshot`]
    /// encodes and nothing derived: query it only through `snapshot`.
    pub fn frozen(&self) -> ClusterState {
        ClusterState {
            servers: Arc::clone(&self.servers),
            server_list_version: self.server_list_version,
            tables: self.tables.clone(),
            next_table_id: self.next_table_id,
            version: self.version,
            incomplete: self.incomplete.clone(),
            applied_index: self.applied_index,
            sessions: Arc::clone(&self.sessions),
            owned: BTreeMap::new(),
            by_load: BTreeSet::new(),
        }
    }

    /// The state as snapshot bytes (versioned).
    pub fn snapshot(&self) -> Bytes {
        let mut out = vec![SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION];
        out.extend(postcard::to_stdvec(self).expect("state always serialises"));
        Bytes::from(out)
    }

    /// A state from [`ClusterState::snapshot`] bytes, checked.
    pub fn restore(buf: &[u8]) -> Result<ClusterState, SnapshotError> {
        if buf.len() < 2 || buf.len() > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::Size(buf.len()));
        }
        if buf[0] != SNAPSHOT_MAGIC || !(1..=SNAPSHOT_FORMAT_VERSION).contains(&buf[1]) {
            return Err(SnapshotError::Header {
                magic: buf[0],
                version: buf[1],
            });
        }
        let (s, rest) = if buf[1] == 1 {
            let (v1, rest): (ClusterStateV1, &[u8]) = postcard::take_from_bytes(&buf[2..])
                .map_err(|e| SnapshotError::Decode(e.to_string()))?;
            let s = ClusterState {
                servers: Arc::new(v1.servers),
                server_list_version: v1.server_list_version,
                tables: v1
                    .tables
                    .into_iter()
                    .map(|(k, t)| (k, Arc::new(t)))
                    .collect(),
                next_table_id: v1.next_table_id,
                version: v1.version,
                incomplete: v1.incomplete,
                applied_index: v1.applied_index,
                sessions: Arc::default(),
                owned: BTreeMap::new(),
                by_load: BTreeSet::new(),
            };
            (s, rest)
        } else {
            postcard::take_from_bytes::<ClusterState>(&buf[2..])
                .map_err(|e| SnapshotError::Decode(e.to_string()))?
        };
        if !rest.is_empty() {
            return Err(SnapshotError::Trailing(rest.len()));
        }
        let mut s = s;
        s.owned = s.owned_from_map();
        s.by_load = s.by_load_from_owned();
        s.check().map_err(|v| SnapshotError::Invalid(v.0))?;
        s.check_counters().map_err(SnapshotError::Invalid)?;
        Ok(s)
    }

    /// Whether every counter that applying records increments has room to
    /// (at most half its range). A state applied from empty never gets
    /// near; a snapshot that claims more would make the next record
    /// overflow one.
    fn check_counters(&self) -> Result<(), String> {
        const U64_HALF: u64 = u64::MAX >> 1;
        const U32_HALF: u32 = u32::MAX >> 1;
        for (what, v) in [
            ("configuration version", self.version),
            ("server list version", self.server_list_version),
            ("last table id", self.next_table_id),
            ("applied index", self.applied_index),
        ] {
            if v > U64_HALF {
                return Err(format!("{what} {v} is out of range"));
            }
        }
        if let Some(s) = self
            .servers
            .values()
            .find(|s| s.id.index > U32_HALF || s.id.generation > U32_HALF)
        {
            return Err(format!("server id {} is out of range", s.id));
        }
        Ok(())
    }
}

/// Whether ranges, in order, cover `0..=u64::MAX` exactly once.
fn covers_hash_space(ranges: impl Iterator<Item = (u64, u64)>) -> bool {
    let mut next: Option<u64> = Some(0);
    for (start, end) in ranges {
        if Some(start) != next || end < start {
            return false;
        }
        next = end.checked_add(1);
    }
    next.is_none()
}

/// Why bytes are not a cluster state snapshot ([`ClusterState::restore`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Too short for a header, or over the bound.
    #[error("snapshot of {0} bytes")]
    Size(usize),
    /// Not a snapshot, or a format this build does not read.
    #[error("snapshot header {magic:#04x} {version} (this build reads {SNAPSHOT_MAGIC:#04x} versions 1 to {SNAPSHOT_FORMAT_VERSION})")]
    Header {
        /// The first byte.
        magic: u8,
        /// The format version byte.
        version: u8,
    },
    /// The body does not decode.
    #[error("snapshot: {0}")]
    Decode(String),
    /// Bytes after the state.
    #[error("{0} trailing bytes after the snapshot")]
    Trailing(usize),
    /// The state decodes but breaks an invariant (named).
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        let enlist = Record::Commit(Op::EnlistServer {
            addr: "m1:7000".into(),
            services: services::MASTER,
            nonce: 1,
        });
        s.apply(1, &enlist.encode().unwrap());
        let owner = s.up_masters()[0];
        let create = Record::Commit(Op::CreateTable {
            name: "t".into(),
            tablets: vec![TabletSpec {
                start_hash: 0,
                end_hash: u64::MAX,
                owner,
            }],
        });
        assert!(matches!(
            s.apply(2, &create.encode().unwrap()),
            Outcome::Committed(_)
        ));
        s
    }

    /// Found by fuzzing (fuzz/fuzz_targets/cluster_snapshot.rs): restore
    /// accepted a table filed under another id than its own, and a split
    /// of it while busy panicked on `self.tables[&id]`; and it accepted a
    /// configuration version of u64::MAX, which the next commit overflowed.
    #[test]
    fn restore_refuses_states_apply_cannot_go_on_from() {
        let good = state();
        assert_eq!(ClusterState::restore(&good.snapshot()), Ok(good.clone()));

        let mut misfiled = good.clone();
        let t = misfiled.tables.remove(&1).unwrap();
        misfiled.tables.insert(7, t);
        misfiled.next_table_id = 7;
        let err = ClusterState::restore(&misfiled.snapshot())
            .unwrap_err()
            .to_string();
        assert!(err.contains("under id 7"), "{err}");

        let mut ahead = good.clone();
        ahead.next_table_id = 0;
        assert!(ClusterState::restore(&ahead.snapshot()).is_err());

        for bump in [
            |s: &mut ClusterState| s.version = u64::MAX,
            |s: &mut ClusterState| s.server_list_version = u64::MAX,
            |s: &mut ClusterState| s.next_table_id = u64::MAX,
            |s: &mut ClusterState| s.applied_index = u64::MAX,
        ] {
            let mut s = good.clone();
            bump(&mut s);
            let err = ClusterState::restore(&s.snapshot())
                .unwrap_err()
                .to_string();
            assert!(err.contains("out of range"), "{err}");
        }
        // A server id whose generation cannot grow (this one owns nothing).
        let mut s = ClusterState::default();
        let enlist = Record::Commit(Op::EnlistServer {
            addr: "m9:7000".into(),
            services: services::BACKUP,
            nonce: 9,
        });
        s.apply(1, &enlist.encode().unwrap());
        s.apply(2, &Record::Complete { seq: 1 }.encode().unwrap());
        Arc::make_mut(&mut s.servers)
            .get_mut(&1)
            .unwrap()
            .id
            .generation = u32::MAX;
        let err = ClusterState::restore(&s.snapshot())
            .unwrap_err()
            .to_string();
        assert!(err.contains("out of range"), "{err}");
    }

    /// A region carries what its master acts on, its tablets and its own
    /// status, so its size does not grow with the cluster (format 1 held
    /// the whole server list); a master reads "not up" from its own entry
    /// and stops serving, whether it was declared crashed or is no longer
    /// in the list at all.
    #[test]
    fn a_region_holds_its_masters_status_and_not_the_list() {
        use crate::master::{MasterAgent, MasterBugs, MasterConfig};
        let dead_after = |region: &ConfigRegion| {
            let mut agent = MasterAgent::new(
                MasterConfig::default(),
                "m:1".into(),
                services::MASTER,
                1,
                MasterBugs::default(),
            );
            agent.enlisted(region.owner);
            agent.on_region_write(&region.encode().unwrap());
            agent.declared_dead()
        };
        let mut s = state();
        let first = s.up_masters()[0];
        let small = s.region_for(first, 1).encode().unwrap().len();
        let others: Vec<ServerId> = (0..50).map(|i| enlist(&mut s, 10 + i)).collect();
        let region = s.region_for(first, 1);
        assert_eq!(region.encode().unwrap().len(), small, "grew with the list");
        assert_eq!(region.status, ServerStatus::Up);
        assert!(!dead_after(&region));
        // Declared crashed: its own entry says so.
        let victim = others[0];
        let plan = s.plan_recovery(victim).unwrap();
        let crash = Record::Commit(Op::ServerCrashed { id: victim, plan });
        s.apply(100, &crash.encode().unwrap());
        let region = s.region_for(victim, 1);
        assert_eq!(region.status, ServerStatus::Crashed);
        assert!(dead_after(&region));
        // Not in the list (removed, or never there): not up either.
        let stranger = ServerId {
            index: 999,
            generation: 1,
        };
        assert!(dead_after(&s.region_for(stranger, 1)));
        assert!(!dead_after(&s.region_for(others[1], 1)));
    }

    fn rpc(client: u64, seq: u64, after: u64) -> RpcId {
        RpcId { client, seq, after }
    }

    fn enlist(s: &mut ClusterState, index: u64) -> ServerId {
        let r = Record::Commit(Op::EnlistServer {
            addr: format!("m{index}:1"),
            services: services::MASTER,
            nonce: index,
        });
        match s.apply(index, &r.encode().unwrap()) {
            Outcome::Committed(Effect::Enlisted(id)) => id,
            other => panic!("{other:?}"),
        }
    }

    fn create(rpc: RpcId, name: &str, owner: ServerId) -> Bytes {
        Record::ClientCommit {
            rpc,
            op: Op::CreateTable {
                name: name.into(),
                tablets: vec![TabletSpec {
                    start_hash: 0,
                    end_hash: u64::MAX,
                    owner,
                }],
            },
        }
        .encode()
        .unwrap()
    }

    /// A frozen copy encodes exactly as the state it was taken from, and
    /// keeps doing so while the live state goes on changing every shared
    /// part (server list, a table, the exactly-once table): the snapshot a
    /// worker encodes is the state at the index it was taken at.
    #[test]
    fn a_frozen_copy_is_the_state_it_was_taken_from() {
        let mut s = ClusterState::default();
        let m = enlist(&mut s, 1);
        s.apply(2, &create(rpc(7, 1, 1), "t", m));
        s.apply(3, &Record::Complete { seq: 2 }.encode().unwrap());
        let frozen = s.frozen();
        let bytes = s.snapshot();
        assert_eq!(frozen.snapshot(), bytes);
        // Changes to every shared part after the copy was taken.
        let m2 = enlist(&mut s, 4);
        s.apply(
            5,
            &Record::Commit(Op::SplitTablet {
                table: "t".into(),
                split_hash: 1 << 63,
            })
            .encode()
            .unwrap(),
        );
        assert_eq!(s.tables().next().unwrap().tablets.len(), 2, "split");
        s.apply(6, &create(rpc(8, 1, 1), "u", m2));
        assert_ne!(s.snapshot(), bytes, "the live state moved on");
        assert_eq!(frozen.snapshot(), bytes, "the copy did not");
        let back = ClusterState::restore(&frozen.snapshot()).unwrap();
        assert_eq!(back.applied_index(), 3);
        assert_eq!(back.tables().count(), 1);
        assert_eq!(back.tables().next().unwrap().tablets.len(), 1);
    }

    /// A second commit record of one operation (a retry proposed by a
    /// leader that had not applied the first) changes nothing and answers
    /// with the first one's index and result; so does asking before
    /// proposing.
    #[test]
    fn a_retry_gets_the_original_outcome_and_changes_nothing() {
        let mut s = ClusterState::default();
        let m = enlist(&mut s, 1);
        let r = rpc(7, 1, 1);
        assert_eq!(s.rpc_status(&r), RpcStatus::New);
        let first = s.apply(2, &create(r, "t", m));
        let Outcome::Committed(Effect::TableCreated(t)) = first else {
            panic!("{first:?}")
        };
        let applied = RpcStatus::Applied(&Session {
            seq: 1,
            index: 2,
            result: Ok(Effect::TableCreated(t)),
        });
        assert_eq!(s.rpc_status(&r), applied);
        // The retry's `after` may differ (it is the client's, per attempt
        // or not): the id is (client, seq).
        assert_eq!(s.rpc_status(&rpc(7, 1, 2)), applied);
        let before = s.clone();
        let again = s.apply(3, &create(r, "t", m));
        assert_eq!(
            again,
            Outcome::Duplicate {
                rpc: r,
                index: 2,
                result: Ok(Effect::TableCreated(t)),
            }
        );
        assert_eq!(s.tables().count(), 1);
        assert_eq!(s.version(), before.version());
        assert_eq!(s.sessions(), before.sessions());
        s.check().unwrap();
    }

    /// A rejection is an outcome too: the retry of a create that found
    /// the name taken is told so again, not applied.
    #[test]
    fn a_rejected_operation_is_remembered_as_rejected() {
        let mut s = ClusterState::default();
        let m = enlist(&mut s, 1);
        s.apply(2, &create(rpc(1, 1, 0), "t", m));
        let r = rpc(2, 1, 0);
        let taken = s.apply(3, &create(r, "t", m));
        assert_eq!(taken, Outcome::Rejected(Rejection::NameTaken("t".into())));
        match s.rpc_status(&r) {
            RpcStatus::Applied(x) => {
                assert_eq!(
                    (x.index, &x.result),
                    (3, &Err(Rejection::NameTaken("t".into())))
                )
            }
            other => panic!("{other:?}"),
        }
        // The client's next operation replaces it; the older one is then
        // unknown, never applied again.
        s.apply(4, &Record::Complete { seq: 2 }.encode().unwrap());
        let dropped = Record::ClientCommit {
            rpc: rpc(2, 2, 3),
            op: Op::DropTable { name: "t".into() },
        };
        assert_eq!(
            s.apply(5, &dropped.encode().unwrap()),
            Outcome::Committed(Effect::Changed)
        );
        assert_eq!(
            s.apply(6, &create(r, "t", m)),
            Outcome::Unknown {
                rpc: r,
                reason: UnknownReason::Superseded { last: 2 },
            }
        );
        assert!(s.table("t").is_none());
    }

    /// Past the bound the least recently used client (lowest index of its
    /// last operation) is evicted, the same way on every replica; its
    /// retry is answered "unknown" and applied as nothing, while a new
    /// client (one that saw an index past the horizon) is served.
    #[test]
    fn the_table_is_bounded_and_evicts_deterministically() {
        let mut s = ClusterState::with_session_limit(3);
        let m = enlist(&mut s, 1);
        let mut replica = s.clone();
        for (i, client) in [10u64, 11, 12, 13].iter().enumerate() {
            let index = 2 + i as u64;
            let b = create(rpc(*client, 1, 1), &format!("t{client}"), m);
            let o = s.apply(index, &b);
            assert!(matches!(o, Outcome::Committed(_)), "{o:?}");
            replica.apply(index, &b);
        }
        assert_eq!(s, replica, "every replica evicts the same client");
        assert_eq!(s.sessions().len(), 3);
        assert_eq!(s.sessions().evictions(), 1);
        assert_eq!(s.sessions().horizon(), 2);
        assert!(
            s.sessions().get(10).is_none(),
            "client 10 was used least recently"
        );
        // Client 10's retry (it had seen index 1 before sending): unknown.
        let retry = rpc(10, 1, 1);
        assert_eq!(
            s.rpc_status(&retry),
            RpcStatus::Unknown(UnknownReason::Evicted { horizon: 2 })
        );
        let o = s.apply(6, &create(retry, "t10", m));
        assert!(matches!(o, Outcome::Unknown { .. }), "{o:?}");
        assert_eq!(s.tables().count(), 4, "not applied twice");
        // A new client that saw index 5 is served; a client still in the
        // table is served whatever it saw.
        assert_eq!(s.rpc_status(&rpc(20, 1, 5)), RpcStatus::New);
        assert_eq!(s.rpc_status(&rpc(11, 2, 0)), RpcStatus::New);
        // Using a client refreshes it: 11 goes to the back, 12 is next out.
        s.apply(7, &create(rpc(11, 2, 0), "u11", m));
        s.apply(8, &create(rpc(20, 1, 5), "u20", m));
        assert!(s.sessions().get(12).is_none());
        assert!(s.sessions().get(11).is_some());
        assert_eq!(s.sessions().horizon(), 4);
        s.check().unwrap();
        // The table, its order and its horizon survive a snapshot.
        let back = ClusterState::restore(&s.snapshot()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.sessions().limit(), 3);
    }

    /// A snapshot written by format version 1 (no sessions) still loads,
    /// with an empty table of the default size; a later version is a clear
    /// error.
    #[test]
    fn version_1_snapshots_load() {
        #[derive(Serialize)]
        struct V1<'a> {
            servers: &'a BTreeMap<u32, Server>,
            server_list_version: u64,
            tables: &'a BTreeMap<TableId, Arc<Table>>,
            next_table_id: TableId,
            version: u64,
            incomplete: &'a BTreeMap<Seq, Pending>,
            applied_index: u64,
        }
        let mut s = ClusterState::default();
        let m = enlist(&mut s, 1);
        s.apply(
            2,
            &Record::Commit(Op::CreateTable {
                name: "t".into(),
                tablets: vec![TabletSpec {
                    start_hash: 0,
                    end_hash: u64::MAX,
                    owner: m,
                }],
            })
            .encode()
            .unwrap(),
        );
        let v1 = V1 {
            servers: &s.servers,
            server_list_version: s.server_list_version,
            tables: &s.tables,
            next_table_id: s.next_table_id,
            version: s.version,
            incomplete: &s.incomplete,
            applied_index: s.applied_index,
        };
        let mut bytes = vec![SNAPSHOT_MAGIC, 1];
        bytes.extend(postcard::to_stdvec(&v1).unwrap());
        let back = ClusterState::restore(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.sessions().limit(), SESSIONS_MAX);
        bytes[1] = SNAPSHOT_FORMAT_VERSION + 1;
        let e = ClusterState::restore(&bytes).unwrap_err().to_string();
        assert!(e.contains("versions 1 to 2"), "{e}");
    }

    /// Every master whose tablets an operation changes is among its push
    /// targets (else it would serve from a stale map until some later
    /// push), and every target is up: over random operation sequences.
    /// The targets are exactly those since issue 17's part 5: an
    /// enlistment pushes to the new server alone, a crash to its plan's
    /// recipients, a removal to nobody.
    #[test]
    fn every_master_whose_tablets_change_is_a_target() {
        use rand::{Rng, SeedableRng};
        let mut enlists = 0;
        let mut pushes_to_others = 0;
        for seed in 0..200u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut s = ClusterState::default();
            let mut index = 0u64;
            let mut nonce = 0u64;
            for _ in 0..60 {
                let up = s.up_masters();
                let tables: Vec<String> = s.tables().map(|t| t.name.clone()).collect();
                let record = match rng.random_range(0..8) {
                    0 | 1 if up.len() < 6 => {
                        nonce += 1;
                        Record::Commit(Op::EnlistServer {
                            addr: format!("m{nonce}:7000"),
                            services: services::MASTER,
                            nonce,
                        })
                    }
                    2 if !up.is_empty() => {
                        let n = rng.random_range(1..=4u64);
                        let step = u64::MAX / n;
                        let tablets = (0..n)
                            .map(|k| TabletSpec {
                                start_hash: k * step,
                                end_hash: if k + 1 == n {
                                    u64::MAX
                                } else {
                                    (k + 1) * step - 1
                                },
                                owner: up[rng.random_range(0..up.len())],
                            })
                            .collect();
                        Record::Commit(Op::CreateTable {
                            name: format!("t{}", rng.random_range(0..5)),
                            tablets,
                        })
                    }
                    3 if !tables.is_empty() => Record::Commit(Op::DropTable {
                        name: tables[rng.random_range(0..tables.len())].clone(),
                    }),
                    4 if !tables.is_empty() => Record::Commit(Op::SplitTablet {
                        table: tables[rng.random_range(0..tables.len())].clone(),
                        split_hash: rng.random(),
                    }),
                    5 if !tables.is_empty() && !up.is_empty() => {
                        Record::Commit(Op::MigrateTablet {
                            table: tables[rng.random_range(0..tables.len())].clone(),
                            hash: rng.random(),
                            to: up[rng.random_range(0..up.len())],
                        })
                    }
                    6 if up.len() > 1 => {
                        let id = up[rng.random_range(0..up.len())];
                        match s.plan_recovery(id) {
                            Some(plan) => Record::Commit(Op::ServerCrashed { id, plan }),
                            None => continue,
                        }
                    }
                    7 => {
                        // Complete something, or remove a recovered server.
                        let crashed = s
                            .servers()
                            .find(|x| x.status == ServerStatus::Crashed)
                            .map(|x| x.id);
                        match (s.incomplete().keys().next().copied(), crashed) {
                            (Some(seq), _) if rng.random_bool(0.7) => Record::Complete { seq },
                            (_, Some(id)) => Record::Commit(Op::ServerRemoved { id }),
                            (Some(seq), None) => Record::Complete { seq },
                            (None, None) => continue,
                        }
                    }
                    _ => continue,
                };
                let before: BTreeMap<ServerId, Vec<RegionTablet>> = s
                    .servers()
                    .map(|x| (x.id, s.region_for(x.id, 0).tablets))
                    .collect();
                index += 1;
                let outcome = s.apply(index, &record.encode().unwrap());
                let Outcome::Committed(effect) = outcome else {
                    continue;
                };
                let Some(p) = s.incomplete().get(&index) else {
                    continue;
                };
                let up_after: BTreeSet<ServerId> = s.up_masters().into_iter().collect();
                assert!(
                    p.targets.is_subset(&up_after),
                    "seed {seed}: {} targets {:?}, up {:?}",
                    p.op.kind(),
                    p.targets,
                    up_after
                );
                for id in &up_after {
                    let after = s.region_for(*id, 0).tablets;
                    let was = before.get(id).cloned().unwrap_or_default();
                    if after != was || !before.contains_key(id) {
                        assert!(
                            p.targets.contains(id),
                            "seed {seed}: {} changed {id}'s tablets ({was:?} -> {after:?}) without targeting it ({:?})",
                            p.op.kind(),
                            p.targets
                        );
                    }
                }
                if let Effect::Enlisted(id) = effect {
                    enlists += 1;
                    assert_eq!(p.targets, BTreeSet::from([id]), "seed {seed}");
                }
                pushes_to_others += p.targets.len();
            }
        }
        assert!(
            enlists > 100,
            "the sequences enlisted only {enlists} servers"
        );
        assert!(pushes_to_others > 0);
    }
}
