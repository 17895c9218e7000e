//! `ramcoord ctl`: ask a coordinator group and its masters.
//!
//! Everything goes through [`Ctl`], which the CLI, the demo and the tests
//! share: typed calls ([`Ctl::operate`], [`Ctl::view`], [`Ctl::put`], ...)
//! and [`Ctl::run`], which runs one command and renders its answer as a
//! table or as JSON.
//!
//! Any one replica's address is enough: `status` asks every replica the
//! answers name, operations follow followers' `NotLeader` answers to the
//! leader's address. Operations are exactly-once: a retry at a new leader
//! carries the same client id and sequence number
//! ([`CoordinatorClient::operate`]).
//!
//! `put` and `get` go to the master that owns the key's tablet, found in
//! the active coordinator's tablet map: the data path proves the
//! configuration is live. A master that does not own the tablet (any more,
//! or not yet) refuses; the client reads the map again and retries until
//! its deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{ClientError, CoordinatorClient, MasterClient};
use crate::cluster::{key_hash, ServerId, ServerStatus, TableId};
use crate::coordinator::Request;
use crate::protocol::{
    Change, ClientReply, ClientRequest, MasterReply, MasterRequest, OpResult, ReplicaChange, RpcId,
    Status, View,
};

/// How `ctl` runs.
#[derive(Clone, Debug)]
pub struct CtlOptions {
    /// Coordinator replicas' addresses (any subset of the group).
    pub coordinators: Vec<SocketAddr>,
    /// Cluster id.
    pub cluster: u64,
    /// Render JSON instead of tables.
    pub json: bool,
    /// How long a command may take in all.
    pub timeout: Duration,
    /// After an operation's commit point, wait for its completion.
    pub wait: bool,
    /// TLS credential and role.
    pub security: crate::client::ClientSecurity,
}

/// A `ctl` command: the CLI's subcommands, declared here once (clap reads
/// these doc comments for `ramcoord ctl --help`), and what the demo, the
/// chaos runner and the tests run through [`Ctl::run`].
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum CtlCommand {
    /// Each replica's role, term, commit and applied index, leader, what
    /// its cluster state holds (servers up, tables, incomplete operations)
    /// and its recent commit-point latencies; the leader adds each
    /// follower's match index.
    Status,
    /// The coordinator group's members as the active coordinator sees
    /// them: id, address, role (as each replica reports it, or
    /// unreachable), voter or learner, match index, and how long ago the
    /// leader last heard from each.
    Members,
    /// Checks on the coordinator replicas themselves.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Backups of the cluster state (restore with `ramcoord restore`).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// The server list (from the active coordinator).
    Servers,
    /// Every table and its tablets' owners.
    Tables,
    /// Recent operations: commit term, commit-point latency, completion
    /// (and whether a later leader rolled it forward); incomplete ones.
    Ops,
    /// Create a table whose tablets split the key-hash space evenly among
    /// the masters up.
    CreateTable {
        /// Its name.
        name: String,
        /// How many tablets.
        #[arg(long, default_value_t = 1)]
        tablets: u32,
    },
    /// Drop a table (its masters forget its tablets and data).
    DropTable {
        /// Its name.
        name: String,
    },
    /// Split the tablet holding HASH so that a new tablet starts at HASH.
    SplitTablet {
        /// The table.
        table: String,
        /// Where the new tablet starts (decimal or 0x-hex).
        #[arg(value_parser = parse_hash)]
        hash: u64,
    },
    /// Move the tablet holding HASH to SERVER (e.g. 2.1).
    MigrateTablet {
        /// The table.
        table: String,
        /// Any hash in the tablet (decimal or 0x-hex).
        #[arg(value_parser = parse_hash)]
        hash: u64,
        /// The new owner (INDEX.GENERATION, as `ctl servers` prints).
        server: ServerId,
    },
    /// Remove coordinator replica ID from the group (a replica that is
    /// gone for good, or whose data directory was lost).
    RemoveReplica {
        /// The replica id.
        id: u64,
    },
    /// Add coordinator replica ID, started with --join: first as a learner,
    /// then, once it has caught up, as a voter. Use a new id for a replica
    /// that lost its data directory (ids are never reused).
    ///
    /// Replacing replica 3, which lost its disk:
    ///   ramcoord ctl --coordinators A1,A2 remove-replica 3
    ///   ramcoord coordinator --id 4 --join --listen A4 \
    ///     --peers 1=A1,2=A2,4=A4 --data-dir /new/dir &
    ///   ramcoord ctl --coordinators A1,A2 add-replica 4 --address A4
    #[command(verbatim_doc_comment)]
    AddReplica {
        /// The new replica's id.
        id: u64,
        /// Where it listens, HOST:PORT (needed unless every replica was
        /// started with it in --peers). A host name is resolved by ctl.
        #[arg(long)]
        address: Option<String>,
    },
    /// Stream every committed change of the server list and tablet map,
    /// one JSON object per line, as it commits: its configuration
    /// `version`, log index and term, kind and summary, and the servers
    /// and tables it changed as they are after it.
    ///
    /// Any replica answers (from what it has applied); if it goes away,
    /// the watch moves to another and resumes after the last version
    /// printed: no gaps, no repeats. Versions older than a replica holds
    /// (the last 4096 since it started) end the watch with an error.
    ///
    ///   ramcoord ctl --coordinators A1,A2,A3 watch            # from now
    ///   ramcoord ctl --coordinators A1,A2,A3 watch --from 1   # everything held
    #[command(verbatim_doc_comment)]
    Watch {
        /// The first version to print (inclusive). Default: the next
        /// change from now.
        #[arg(long, value_name = "VERSION")]
        from: Option<u64>,
        /// Stop after printing this many changes (default: run until
        /// interrupted).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Write a key at the master owning its tablet.
    Put {
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key from the master owning its tablet.
    Get {
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
}

/// `ctl endpoint ...`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum EndpointCommand {
    /// Asks every replica (those given and those they name) whether it is
    /// healthy: it answers, knows a leader it hears from, and has applied
    /// what is committed. One line each, with how long it took; exit 1 if
    /// any is not.
    Health,
}

/// `ctl snapshot ...`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Save the active coordinator's cluster state (server list, tablet
    /// map, incomplete operations, exactly-once table) as of a committed
    /// index to FILE, checksummed. Needs the admin role. Written to a
    /// temporary file, flushed, then renamed: FILE is whole or absent.
    Save {
        /// Where to write it.
        file: std::path::PathBuf,
    },
    /// Check a backup FILE (checksum, format, state) and say what it
    /// holds.
    Status {
        /// The backup.
        file: std::path::PathBuf,
    },
}

/// One replica's health (`ctl endpoint health`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct EndpointHealth {
    /// Where it was asked.
    pub address: String,
    /// Healthy.
    pub healthy: bool,
    /// How long its answer took (ms).
    pub took_ms: f64,
    /// Why not healthy.
    pub error: Option<String>,
}

impl CtlCommand {
    /// The coordinator operation this command asks for, if it is one.
    pub fn request(&self) -> Option<Request> {
        Some(match self.clone() {
            CtlCommand::CreateTable { name, tablets } => Request::CreateTable { name, tablets },
            CtlCommand::DropTable { name } => Request::DropTable { name },
            CtlCommand::SplitTablet { table, hash } => Request::SplitTablet {
                table,
                split_hash: hash,
            },
            CtlCommand::MigrateTablet {
                table,
                hash,
                server,
            } => Request::MigrateTablet {
                table,
                hash,
                to: server,
            },
            _ => return None,
        })
    }
}

/// Why a `ctl` call failed; its message is the one line `ctl` prints.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The coordinator group or a master could not be asked.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An operation was sent and no answer came before the deadline.
    #[error("gave up at the timeout: {0} (see `ctl ops`; running ctl again is a new operation)")]
    GaveUp(ClientError),
    /// A membership change was sent and no answer came before the deadline.
    #[error("{0} (`ctl status` shows the configuration)")]
    ChangeUnanswered(ClientError),
    /// The coordinator or a master refused the request (the reason).
    #[error("refused: {0}")]
    Refused(String),
    /// The leader lost track of the operation's outcome.
    #[error(
        "outcome unknown: {0}; the operation may or may not have been applied (see `ctl ops`)"
    )]
    Unknown(String),
    /// An answer of the wrong kind (a peer that does not speak the protocol).
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The operation passed its commit point, and applying its record
    /// rejected it.
    #[error("rejected when its commit record applied (seq {seq}): {why}")]
    Rejected {
        /// Its sequence number.
        seq: u64,
        /// Why.
        why: String,
    },
    /// Some replica is not healthy (every replica's line).
    #[error("{0}")]
    Unhealthy(String),
    /// No replica answered `status`.
    #[error("no coordinator answered ({0})")]
    NoCoordinator(String),
    /// No replica answered as the active coordinator.
    #[error("no active coordinator answered")]
    NoActive,
    /// Something did not happen before the deadline (what).
    #[error("{0} before the deadline")]
    Deadline(String),
    /// The active coordinator's map has no table of that name.
    #[error("no table named {0:?}")]
    NoTable(String),
    /// The table's tablets do not cover the key's hash.
    #[error("table {0:?} has no tablet for the key")]
    NoTablet(String),
    /// The key's tablet is owned by a server that is not up.
    #[error("the owner {0} of the key's tablet is not up")]
    OwnerDown(ServerId),
    /// A master answered that it does not own the key's tablet (yet).
    #[error("server {server}: {why}")]
    NotOwner {
        /// The master.
        server: ServerId,
        /// What it said.
        why: String,
    },
    /// An address that cannot be used (what it was for, and why).
    #[error("{what}: {source}")]
    Addr {
        /// Whose address.
        what: String,
        /// Why.
        source: crate::addr::AddrError,
    },
    /// The request breaks a limit (a table name, a tablet count).
    #[error(transparent)]
    Invalid(#[from] crate::cluster::LimitError),
    /// Text that is not what the argument takes.
    #[error("{0}")]
    Parse(String),
    /// A replica is a voter already.
    #[error("replica {0} is a voter already")]
    AlreadyVoter(u64),
}

/// A key hash as `ctl` takes it: decimal or 0x-hex, `_` allowed.
pub fn parse_hash(s: &str) -> Result<u64, CtlError> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|_| {
        CtlError::Parse(format!(
            "{s:?}: a hash is a 64-bit number, decimal or 0x-hex"
        ))
    })
}

/// An operation that passed its commit point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Its sequence number.
    pub seq: u64,
    /// The term it committed in.
    pub term: u64,
    /// What it did.
    pub result: OpResult,
    /// Commit-point latency measured by the leader.
    pub commit_us: u64,
    /// Round trip seen by this client.
    pub client_us: u64,
}

/// Where a key lives, and what a master said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAnswer {
    /// The value read (for `get`).
    pub value: Option<Bytes>,
    /// The master that answered.
    pub server: ServerId,
    /// Its address.
    pub addr: String,
    /// How many times a master refused (stale map) before this answer.
    pub retries: u32,
}

/// One member of the coordinator group ([`Ctl::members`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its replica id.
    pub id: u64,
    /// Its client address, as configured.
    pub address: Option<String>,
    /// What it says it is ("leader", "follower", ...), or "unreachable".
    pub role: String,
    /// A voter (else a learner).
    pub voter: bool,
    /// How far its log matches the leader's (the leader's: its last
    /// index).
    pub match_index: Option<u64>,
    /// Milliseconds since the leader last heard from it (none for the
    /// leader itself, or one never heard from).
    pub last_contact_ms: Option<u64>,
}

/// A change as `ctl watch` prints it: one JSON object, servers and
/// tablet owners named as the CLI names them (`1.1`).
pub fn change_json(c: &Change) -> serde_json::Value {
    let lower = |d: &dyn std::fmt::Debug| format!("{d:?}").to_lowercase();
    serde_json::json!({
        "version": c.version,
        "index": c.index,
        "term": c.term,
        "kind": c.kind,
        "summary": c.summary,
        "servers": c.servers.iter().map(|s| serde_json::json!({
            "id": s.id.to_string(),
            "address": s.addr,
            "status": lower(&s.status),
        })).collect::<Vec<_>>(),
        "tables": c.tables.iter().map(|t| serde_json::json!({
            "name": t.name,
            "id": t.id,
            "state": lower(&t.state),
            "tablets": t.tablets.iter().map(|x| serde_json::json!({
                "start_hash": format!("{:#018x}", x.start_hash),
                "end_hash": format!("{:#018x}", x.end_hash),
                "owner": x.owner.to_string(),
                "state": lower(&x.state),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "dropped_table": c.dropped_table,
    })
}

/// How long one watch request waits at a replica for a change.
const WATCH_WAIT: Duration = Duration::from_secs(2);

/// A client of the coordinator group and its masters (see the module docs).
pub struct Ctl {
    opts: CtlOptions,
    coord: CoordinatorClient,
    masters: MasterClient,
    view: Option<View>,
}

impl Ctl {
    /// A client; connects lazily.
    pub fn new(opts: CtlOptions) -> Ctl {
        let mut coord = CoordinatorClient::new(
            opts.coordinators.clone(),
            opts.cluster,
            opts.security.clone(),
        );
        coord.attempt_timeout = opts.timeout.min(Duration::from_secs(2));
        let mut masters = MasterClient::new(opts.cluster, opts.security.clone());
        masters.attempt_timeout = opts.timeout.min(Duration::from_secs(2));
        Ctl {
            opts,
            coord,
            masters,
            view: None,
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.opts.timeout
    }

    /// The client of the coordinator group (its id, address list, ...).
    pub fn coordinator_client(&mut self) -> &mut CoordinatorClient {
        &mut self.coord
    }

    /// Every replica's status (or why it did not answer): the replicas
    /// given, and every replica their answers name an address for.
    pub fn statuses(&mut self) -> Vec<(SocketAddr, Result<Status, CtlError>)> {
        let mut rows = Vec::new();
        let mut i = 0;
        while i < self.coord.addrs().len() {
            let addr = self.coord.addrs()[i];
            let r = match self.coord.ask(i, &ClientRequest::Status) {
                Ok(ClientReply::Status(s)) => {
                    for (_, a) in &s.addresses {
                        if let Ok(a) = crate::addr::resolve(a) {
                            self.coord.learn_addr(a);
                        }
                    }
                    Ok(s)
                }
                Ok(other) => Err(unexpected(&other)),
                Err(e) => Err(e.into()),
            };
            rows.push((addr, r));
            i += 1;
        }
        rows
    }

    /// Streams configuration changes (see [`CtlCommand::Watch`]) to
    /// `each`, from version `from` (inclusive; default: after the current
    /// one), until `count` were given or `each` says stop. A replica that
    /// does not answer is left for the next; the watch fails once none
    /// has answered for the command's timeout.
    pub fn watch(
        &mut self,
        from: Option<u64>,
        count: Option<u64>,
        each: &mut dyn FnMut(&Change) -> bool,
    ) -> Result<u64, CtlError> {
        let wait_ms = WATCH_WAIT.as_millis() as u32;
        self.coord.attempt_timeout = WATCH_WAIT + self.opts.timeout.min(Duration::from_secs(2));
        let mut after = from.map(|v| v.saturating_sub(1));
        let mut given = 0u64;
        let mut i = 0;
        let mut answered_at = Instant::now();
        let mut last_error = None;
        // Replicas that said they no longer hold what is asked for.
        let mut compacted: Vec<String> = Vec::new();
        loop {
            if count.is_some_and(|n| given >= n) {
                return Ok(given);
            }
            let n = self.coord.addrs().len();
            if n == 0 {
                return Err(CtlError::NoCoordinator("no replica address given".into()));
            }
            if answered_at.elapsed() > self.opts.timeout {
                let why = last_error.map_or_else(String::new, |e: ClientError| e.to_string());
                return Err(CtlError::NoCoordinator(format!(
                    "no replica answered a watch for {:?} (last error: {why})",
                    self.opts.timeout
                )));
            }
            let req = ClientRequest::Watch {
                after: after.unwrap_or(u64::MAX),
                wait_ms: if after.is_some() { wait_ms } else { 0 },
            };
            let asked = Instant::now();
            match self.coord.ask(i % n, &req) {
                Ok(ClientReply::Changes { version, changes }) => {
                    answered_at = Instant::now();
                    // Answered at once with nothing (the replica had no room
                    // to keep the watch waiting): do not ask in a tight loop.
                    if changes.is_empty() && after.is_some() && asked.elapsed() < WATCH_WAIT / 4 {
                        std::thread::sleep(WATCH_WAIT / 4);
                    }
                    let Some(seen) = after else {
                        // From now: this replica's version.
                        after = Some(version);
                        continue;
                    };
                    let mut seen = seen;
                    for c in &changes {
                        if c.version <= seen {
                            continue;
                        }
                        if c.version != seen + 1 {
                            return Err(CtlError::Unexpected(format!(
                                "a change of version {} after version {seen} (a gap)",
                                c.version
                            )));
                        }
                        seen = c.version;
                        given += 1;
                        compacted.clear();
                        if !each(c) || count.is_some_and(|n| given >= n) {
                            return Ok(given);
                        }
                    }
                    after = Some(seen);
                }
                Ok(ClientReply::ChangesCompacted { oldest, version }) => {
                    // Another replica may hold more (this one may have
                    // just restarted or installed a snapshot).
                    compacted.push(format!(
                        "{} holds {oldest} to {version}",
                        self.coord.addrs()[i % n]
                    ));
                    if compacted.len() >= n {
                        return Err(CtlError::Refused(format!(
                            "no replica holds the changes after version {} ({}); watch from now, or from a version held",
                            after.unwrap_or(0),
                            compacted.join("; ")
                        )));
                    }
                    i += 1;
                    continue;
                }
                Ok(ClientReply::Refused(why)) => {
                    tracing::info!(replica = %self.coord.addrs()[i % n], why, "watch: asking the next replica");
                    i += 1;
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(e) => {
                    tracing::info!(replica = %self.coord.addrs()[i % n], error = %e, "watch: replica did not answer; asking the next");
                    last_error = Some(e);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Every replica's health (see [`EndpointCommand::Health`]).
    pub fn endpoint_health(&mut self) -> Vec<EndpointHealth> {
        let mut rows = Vec::new();
        let mut i = 0;
        while i < self.coord.addrs().len() {
            let addr = self.coord.addrs()[i];
            let start = Instant::now();
            let r = self.coord.ask(i, &ClientRequest::Status);
            let took_ms = start.elapsed().as_secs_f64() * 1e3;
            let error = match r {
                Ok(ClientReply::Status(s)) => {
                    for (_, a) in &s.addresses {
                        if let Ok(a) = crate::addr::resolve(a) {
                            self.coord.learn_addr(a);
                        }
                    }
                    let lag = s.commit.saturating_sub(s.applied);
                    let heard = s.leader.and_then(|l| {
                        if l == s.id {
                            Some(0)
                        } else {
                            s.last_contact_ms
                                .iter()
                                .find(|(id, _)| *id == l)
                                .map(|(_, ms)| *ms)
                        }
                    });
                    match (s.leader, heard) {
                        (None, _) => Some("knows no leader".to_string()),
                        (Some(l), None) => Some(format!("has not heard from leader {l}")),
                        (Some(l), Some(ms)) if ms > 5_000 => {
                            Some(format!("last heard from leader {l} {ms} ms ago"))
                        }
                        _ if lag > crate::http::READY_APPLY_LAG_MAX => {
                            Some(format!("{lag} committed entries not applied"))
                        }
                        _ => None,
                    }
                }
                Ok(other) => Some(unexpected(&other).to_string()),
                Err(e) => Some(e.to_string()),
            };
            rows.push(EndpointHealth {
                address: addr.to_string(),
                healthy: error.is_none(),
                took_ms,
                error,
            });
            i += 1;
        }
        rows
    }

    /// A backup of the active coordinator's cluster state.
    pub fn backup(&mut self) -> Result<crate::snapshot_file::Backup, CtlError> {
        match self
            .coord
            .ask_leader(&ClientRequest::Backup, self.deadline())?
        {
            ClientReply::Backup {
                index,
                term,
                current_term,
                version,
                state,
            } => Ok(crate::snapshot_file::Backup {
                cluster: self.opts.cluster,
                index,
                term,
                current_term,
                version,
                saved_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                state,
            }),
            ClientReply::Refused(why) => Err(CtlError::Refused(why)),
            other => Err(unexpected(&other)),
        }
    }

    /// The active coordinator's cluster state.
    pub fn view(&mut self) -> Result<View, CtlError> {
        match self
            .coord
            .ask_leader(&ClientRequest::View, self.deadline())?
        {
            ClientReply::View(v) => {
                self.view = Some(v.clone());
                Ok(v)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Runs an operation; returns at its commit point. It is retried at
    /// the next leader, with the same id, until the timeout (see the
    /// module docs).
    pub fn operate(&mut self, req: Request) -> Result<Committed, CtlError> {
        let deadline = self.deadline();
        let rpc = self.coord.next_rpc(deadline);
        self.operate_as(rpc, req, deadline)
    }

    /// Runs an operation under a given exactly-once id (a retry of an
    /// operation already sent must use its id).
    pub fn operate_as(
        &mut self,
        rpc: RpcId,
        req: Request,
        deadline: Instant,
    ) -> Result<Committed, CtlError> {
        let sent = Instant::now();
        match self.coord.operate(rpc, req, false, deadline) {
            Ok(ClientReply::Committed {
                seq,
                term,
                result,
                commit_us,
            }) => Ok(Committed {
                seq,
                term,
                result,
                commit_us,
                client_us: sent.elapsed().as_micros() as u64,
            }),
            Ok(ClientReply::Refused(why)) => Err(CtlError::Refused(why)),
            Ok(ClientReply::Unknown(why)) => Err(CtlError::Unknown(why)),
            Ok(other) => Err(unexpected(&other)),
            Err(e @ ClientError::NoAnswer { .. }) => Err(CtlError::GaveUp(e)),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes a membership change; returns the index it applied at.
    pub fn change_replicas(&mut self, change: ReplicaChange) -> Result<u64, CtlError> {
        match self
            .coord
            .ask_leader(&ClientRequest::ChangeReplicas(change), self.deadline())
        {
            Ok(ClientReply::Committed { seq, .. }) => Ok(seq),
            Ok(ClientReply::Refused(why)) => Err(CtlError::Refused(why)),
            Ok(other) => Err(unexpected(&other)),
            Err(e @ ClientError::NoAnswer { .. }) => Err(CtlError::ChangeUnanswered(e)),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds replica `id` as a learner, waits until its log has caught up
    /// with the leader's commit index, then makes it a voter (adding a
    /// voter that is far behind would stall commits until it caught up).
    pub fn add_replica(&mut self, id: u64, addr: Option<String>) -> Result<String, CtlError> {
        let leader = self.leader_status()?;
        if leader.voters.contains(&id) {
            return Err(CtlError::AlreadyVoter(id));
        }
        if !leader.learners.contains(&id) {
            self.change_replicas(ReplicaChange::AddLearner { id, addr })?;
        }
        let deadline = self.deadline();
        let caught_up = loop {
            let l = self.leader_status()?;
            if let Some((_, m)) = l.match_index.iter().find(|(r, _)| *r == id) {
                if *m >= l.commit {
                    break *m;
                }
            }
            if Instant::now() >= deadline {
                return Err(CtlError::Deadline(format!(
                    "replica {id} (is it running with --join?) did not catch up"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let at = self.change_replicas(ReplicaChange::AddVoter(id))?;
        Ok(format!(
            "replica {id} caught up (index {caught_up}) and is a voter from index {at}"
        ))
    }

    /// The group's members (voters, then learners, by id) as the active
    /// coordinator sees them, with each one's own role.
    pub fn members(&mut self) -> Result<Vec<Member>, CtlError> {
        let rows = self.statuses();
        let own: Vec<Status> = rows.into_iter().filter_map(|(_, r)| r.ok()).collect();
        let leader = own
            .iter()
            .find(|s| s.active)
            .cloned()
            .ok_or(CtlError::NoActive)?;
        let ids = leader
            .voters
            .iter()
            .map(|&id| (id, true))
            .chain(leader.learners.iter().map(|&id| (id, false)));
        Ok(ids
            .map(|(id, voter)| Member {
                id,
                address: leader
                    .addresses
                    .iter()
                    .find(|(r, _)| *r == id)
                    .map(|(_, a)| a.clone()),
                role: own
                    .iter()
                    .find(|s| s.id == id)
                    .map_or_else(|| "unreachable".to_string(), |s| s.role.clone()),
                voter,
                match_index: if id == leader.id {
                    Some(leader.last_index)
                } else {
                    leader
                        .match_index
                        .iter()
                        .find(|(r, _)| *r == id)
                        .map(|(_, m)| *m)
                },
                last_contact_ms: leader
                    .last_contact_ms
                    .iter()
                    .find(|(r, _)| *r == id)
                    .map(|(_, ms)| *ms),
            })
            .collect())
    }

    fn leader_status(&mut self) -> Result<Status, CtlError> {
        self.statuses()
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .find(|s| s.active)
            .ok_or(CtlError::NoActive)
    }

    /// Waits until operation `seq` has completed (as the active
    /// coordinator sees it).
    pub fn wait_complete(&mut self, seq: u64) -> Result<Duration, CtlError> {
        let start = Instant::now();
        let deadline = self.deadline();
        loop {
            match self
                .coord
                .ask_leader(&ClientRequest::OpState { seq }, deadline)
            {
                Ok(ClientReply::OpState {
                    incomplete: false,
                    applied,
                    ..
                }) if applied >= seq => return Ok(start.elapsed()),
                Ok(ClientReply::OpState { .. }) => {}
                Ok(other) => return Err(unexpected(&other)),
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(CtlError::Deadline(format!("operation {seq} not complete")));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn locate(&mut self, table: &str, key: &[u8]) -> Result<(TableId, ServerId, String), CtlError> {
        if self.view.is_none() {
            self.view()?;
        }
        let v = self.view.as_ref().expect("just read");
        let t = v
            .tables
            .iter()
            .find(|t| t.name == table)
            .ok_or_else(|| CtlError::NoTable(table.to_string()))?;
        let tablet = t
            .tablet_for(key_hash(key))
            .ok_or_else(|| CtlError::NoTablet(table.to_string()))?;
        let server = v
            .servers
            .iter()
            .find(|s| s.id == tablet.owner && s.status == ServerStatus::Up)
            .ok_or(CtlError::OwnerDown(tablet.owner))?;
        Ok((t.id, server.id, server.addr.clone()))
    }

    /// Sends a key request to its owner, re-reading the map while masters
    /// refuse, until the deadline.
    fn keyed(&mut self, table: &str, key: &str, put: Option<&str>) -> Result<KeyAnswer, CtlError> {
        // A name no table can have is refused here, naming the limit.
        crate::cluster::limits::check_table_name(table)?;
        let deadline = self.deadline();
        let mut retries = 0;
        let mut last;
        let mut fresh_view = false;
        loop {
            match self.locate(table, key.as_bytes()) {
                Ok((tid, server, addr)) => {
                    let req = match put {
                        Some(v) => MasterRequest::Put {
                            table: tid,
                            key: Bytes::copy_from_slice(key.as_bytes()),
                            value: Bytes::copy_from_slice(v.as_bytes()),
                        },
                        None => MasterRequest::Get {
                            table: tid,
                            key: Bytes::copy_from_slice(key.as_bytes()),
                        },
                    };
                    let r = match crate::addr::resolve(&addr) {
                        Ok(s) => self.masters.ask(s, &req).map_err(CtlError::from),
                        Err(source) => Err(CtlError::Addr {
                            what: format!("server {server}"),
                            source,
                        }),
                    };
                    match r {
                        Ok(MasterReply::Value(value)) => {
                            return Ok(KeyAnswer {
                                value,
                                server,
                                addr,
                                retries,
                            })
                        }
                        Ok(MasterReply::Stored) => {
                            return Ok(KeyAnswer {
                                value: None,
                                server,
                                addr,
                                retries,
                            })
                        }
                        Ok(MasterReply::NotOwner(why)) => last = CtlError::NotOwner { server, why },
                        Ok(MasterReply::Refused(why)) => return Err(CtlError::Refused(why)),
                        Err(e) => last = e,
                    }
                    retries += 1;
                }
                Err(e) => {
                    // The active coordinator's own map, read after the
                    // request began, has no such table: that is the answer
                    // (waiting would not create it).
                    if fresh_view && matches!(e, CtlError::NoTable(_)) {
                        return Err(e);
                    }
                    last = e;
                }
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(20));
            fresh_view = self.view().is_ok();
        }
    }

    /// Writes `key` = `value` in `table` at its owner.
    pub fn put(&mut self, table: &str, key: &str, value: &str) -> Result<KeyAnswer, CtlError> {
        self.keyed(table, key, Some(value))
    }

    /// Reads `key` of `table` from its owner.
    pub fn get(&mut self, table: &str, key: &str) -> Result<KeyAnswer, CtlError> {
        self.keyed(table, key, None)
    }

    /// Runs an operation and renders its outcome (waiting for its
    /// completion unless told not to).
    fn run_operation(&mut self, req: Request) -> Result<String, CtlError> {
        let json = self.opts.json;
        let c = self.operate(req)?;
        if let OpResult::Rejected(why) = &c.result {
            return Err(CtlError::Rejected {
                seq: c.seq,
                why: why.clone(),
            });
        }
        let completed = if self.opts.wait {
            Some(self.wait_complete(c.seq)?)
        } else {
            None
        };
        Ok(if json {
            serde_json::json!({
                "seq": c.seq,
                "term": c.term,
                "result": c.result,
                "commit_us": c.commit_us,
                "client_us": c.client_us,
                "completed": completed.is_some(),
                "complete_wait_us": completed.map(|d| d.as_micros() as u64),
            })
            .to_string()
        } else {
            let mut s = format!(
                    "committed: seq {} in term {} ({}); commit point {} µs at the leader, {} µs round trip",
                    c.seq,
                    c.term,
                    result_text(&c.result),
                    c.commit_us,
                    c.client_us
                );
            if let Some(d) = completed {
                s += &format!("\ncomplete: {} µs later", d.as_micros());
            }
            s
        })
    }

    /// Runs one command; returns what to print (an error is one line).
    pub fn run(&mut self, cmd: CtlCommand) -> Result<String, CtlError> {
        let json = self.opts.json;
        match cmd {
            CtlCommand::Status => {
                let rows = self.statuses();
                if rows.iter().all(|(_, r)| r.is_err()) {
                    let why: Vec<String> = rows
                        .iter()
                        .map(|(a, r)| format!("{a}: {}", r.as_ref().expect_err("all failed")))
                        .collect();
                    return Err(CtlError::NoCoordinator(why.join("; ")));
                }
                Ok(if json {
                    let v: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|(addr, r)| match r {
                            Ok(st) => {
                                serde_json::json!({"address": addr.to_string(), "status": st})
                            }
                            Err(e) => serde_json::json!({"address": addr.to_string(), "error": e.to_string()}),
                        })
                        .collect();
                    serde_json::Value::Array(v).to_string()
                } else {
                    render_status(&rows)
                })
            }
            CtlCommand::Members => {
                let rows = self.members()?;
                Ok(if json {
                    serde_json::Value::Array(
                        rows.iter()
                            .map(|m| {
                                serde_json::json!({
                                    "id": m.id,
                                    "address": m.address,
                                    "role": m.role,
                                    "member": if m.voter { "voter" } else { "learner" },
                                    "match_index": m.match_index,
                                    "last_contact_ms": m.last_contact_ms,
                                })
                            })
                            .collect(),
                    )
                    .to_string()
                } else {
                    render_members(&rows)
                })
            }
            CtlCommand::Servers => {
                let v = self.view()?;
                Ok(if json {
                    serde_json::to_string(&v.servers).expect("serialisable")
                } else {
                    render_servers(&v)
                })
            }
            CtlCommand::Tables => {
                let v = self.view()?;
                Ok(if json {
                    serde_json::to_string(&v.tables).expect("serialisable")
                } else {
                    render_tables(&v)
                })
            }
            CtlCommand::Ops => {
                let v = self.view()?;
                Ok(if json {
                    serde_json::json!({"incomplete": v.incomplete, "recent": v.recent}).to_string()
                } else {
                    render_ops(&v)
                })
            }
            CtlCommand::RemoveReplica { id } => {
                let at = self.change_replicas(ReplicaChange::Remove(id))?;
                Ok(format!("replica {id} removed from the group at index {at}"))
            }
            CtlCommand::AddReplica { id, address } => {
                let addr = match address {
                    Some(a) => Some(
                        crate::addr::resolve(&a)
                            .map_err(|source| CtlError::Addr {
                                what: "--address".into(),
                                source,
                            })?
                            .to_string(),
                    ),
                    None => None,
                };
                self.add_replica(id, addr)
            }
            op @ (CtlCommand::CreateTable { .. }
            | CtlCommand::DropTable { .. }
            | CtlCommand::SplitTablet { .. }
            | CtlCommand::MigrateTablet { .. }) => match op.request() {
                Some(req) => self.run_operation(req),
                None => Err(CtlError::Parse("not an operation".into())),
            },
            CtlCommand::Endpoint(EndpointCommand::Health) => {
                let rows = self.endpoint_health();
                let text = if json {
                    serde_json::to_string(&rows).expect("serialisable")
                } else {
                    rows.iter()
                        .map(|r| match &r.error {
                            None => {
                                format!("{} is healthy: answered in {:.1} ms", r.address, r.took_ms)
                            }
                            Some(why) => format!(
                                "{} is unhealthy: {why} (after {:.1} ms)",
                                r.address, r.took_ms
                            ),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                if rows.iter().all(|r| r.healthy) {
                    Ok(text)
                } else {
                    Err(CtlError::Unhealthy(text))
                }
            }
            CtlCommand::Snapshot(SnapshotCommand::Save { file }) => {
                let b = self.backup()?;
                write_durably(&file, &b.encode())
                    .map_err(|e| CtlError::Parse(format!("writing {}: {e}", file.display())))?;
                Ok(if json {
                    serde_json::json!({"file": file.display().to_string(), "index": b.index, "term": b.term, "version": b.version, "bytes": b.state.len()}).to_string()
                } else {
                    format!(
                        "saved {}: cluster state as of index {} (term {}), configuration version {}, {} bytes of state",
                        file.display(),
                        b.index,
                        b.term,
                        b.version,
                        b.state.len()
                    )
                })
            }
            CtlCommand::Snapshot(SnapshotCommand::Status { file }) => {
                let bytes = std::fs::read(&file)
                    .map_err(|e| CtlError::Parse(format!("{}: {e}", file.display())))?;
                let b = crate::snapshot_file::Backup::decode(&bytes)
                    .map_err(|e| CtlError::Parse(format!("{}: {e}", file.display())))?;
                let st = b
                    .cluster_state()
                    .map_err(|e| CtlError::Parse(e.to_string()))?;
                let servers = st.servers().count();
                let tables = st.tables().count();
                Ok(if json {
                    serde_json::json!({"file": file.display().to_string(), "cluster": b.cluster, "index": b.index, "term": b.term, "current_term": b.current_term, "version": b.version, "saved_at": b.saved_at, "servers": servers, "tables": tables, "bytes": b.state.len(), "checksum": "ok"}).to_string()
                } else {
                    format!(
                        "{}: checksum ok; cluster {}, index {} (term {}, leader's term {}), configuration version {}, {servers} server{}, {tables} table{}, saved at Unix time {}",
                        file.display(),
                        b.cluster,
                        b.index,
                        b.term,
                        b.current_term,
                        b.version,
                        if servers == 1 { "" } else { "s" },
                        if tables == 1 { "" } else { "s" },
                        b.saved_at
                    )
                })
            }
            CtlCommand::Watch { from, count } => {
                // Collected (the CLI streams through `Ctl::watch` instead).
                let mut lines = Vec::new();
                self.watch(from, count, &mut |c| {
                    lines.push(change_json(c).to_string());
                    true
                })?;
                Ok(lines.join("\n"))
            }
            CtlCommand::Put { table, key, value } => {
                let a = self.put(&table, &key, &value)?;
                Ok(if json {
                    serde_json::json!({"stored": true, "server": a.server.to_string(), "address": a.addr, "retries": a.retries}).to_string()
                } else {
                    format!("stored at server {} ({})", a.server, a.addr)
                })
            }
            CtlCommand::Get { table, key } => {
                let a = self.get(&table, &key)?;
                let value = a
                    .value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                Ok(if json {
                    serde_json::json!({"value": value, "server": a.server.to_string(), "address": a.addr, "retries": a.retries}).to_string()
                } else {
                    match value {
                        Some(v) => format!("{v}    (server {} at {})", a.server, a.addr),
                        None => format!("(no value)    (server {} at {})", a.server, a.addr),
                    }
                })
            }
        }
    }
}

/// One line for an operation's result.
pub fn result_text(r: &OpResult) -> String {
    match r {
        OpResult::Enlisted(s) => format!("server {s}"),
        OpResult::TableCreated(t) => format!("table id {t}"),
        OpResult::Changed => "changed".into(),
        OpResult::Rejected(why) => format!("rejected: {why}"),
    }
}

/// An answer of the wrong kind, named by its kind.
fn unexpected(reply: &ClientReply) -> CtlError {
    CtlError::Unexpected(format!("a {} reply", reply.kind()))
}

fn render_members(rows: &[Member]) -> String {
    let mut out = format!(
        "{:>3} {:<28} {:<13} {:<7} {:>8} {:>13}\n",
        "id", "address", "role", "member", "match", "last contact"
    );
    for m in rows {
        out += &format!(
            "{:>3} {:<28} {:<13} {:<7} {:>8} {:>13}\n",
            m.id,
            m.address.as_deref().unwrap_or("-"),
            m.role,
            if m.voter { "voter" } else { "learner" },
            m.match_index.map_or("-".to_string(), |i| i.to_string()),
            m.last_contact_ms
                .map_or("-".to_string(), |ms| format!("{ms} ms ago")),
        );
    }
    out.trim_end().to_string()
}

fn render_status(rows: &[(SocketAddr, Result<Status, CtlError>)]) -> String {
    let mut out = format!(
        "{:<22} {:>3} {:<13} {:>5} {:>7} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6} {:>10} {:>17}\n",
        "address",
        "id",
        "role",
        "term",
        "commit",
        "durable",
        "applied",
        "leader",
        "active",
        "servers",
        "tables",
        "incomplete",
        "commit p50/p99 µs"
    );
    for (addr, r) in rows {
        match r {
            Ok(st) => {
                let lat = if st.commits_measured == 0 {
                    "-".to_string()
                } else {
                    format!("{}/{}", st.commit_p50_us, st.commit_p99_us)
                };
                out += &format!(
                    "{:<22} {:>3} {:<13} {:>5} {:>7} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6} {:>10} {:>17}\n",
                    addr.to_string(),
                    st.id,
                    st.role,
                    st.term,
                    st.commit,
                    st.durable_index,
                    st.applied,
                    st.leader.map_or("-".to_string(), |l| l.to_string()),
                    if st.active { "yes" } else { "no" },
                    st.servers_up,
                    st.tables,
                    st.incomplete,
                    lat
                );
                if st.insecure {
                    out += &format!(
                        "{:<22}     INSECURE: runs without TLS; anyone who reaches it can act as any replica, master or admin\n",
                        ""
                    );
                }
                if !st.match_index.is_empty() {
                    let m: Vec<String> = st
                        .match_index
                        .iter()
                        .map(|(id, i)| format!("{id}={i}"))
                        .collect();
                    out += &format!("{:<22}     match index: {}\n", "", m.join(" "));
                }
            }
            Err(e) => out += &format!("{:<22} unreachable: {e}\n", addr.to_string()),
        }
    }
    out.trim_end().to_string()
}

fn render_servers(v: &View) -> String {
    let mut out = format!(
        "{:<8} {:<22} {:<8} {:>7}\n",
        "server", "address", "status", "tablets"
    );
    for s in &v.servers {
        let tablets: usize = v
            .tables
            .iter()
            .map(|t| t.tablets.iter().filter(|x| x.owner == s.id).count())
            .sum();
        out += &format!(
            "{:<8} {:<22} {:<8} {:>7}\n",
            s.id.to_string(),
            s.addr,
            format!("{:?}", s.status).to_lowercase(),
            tablets
        );
    }
    out.trim_end().to_string()
}

fn render_tables(v: &View) -> String {
    if v.tables.is_empty() {
        return "(no tables)".into();
    }
    let mut out = String::new();
    for t in &v.tables {
        out += &format!(
            "{} (id {}, {}):\n",
            t.name,
            t.id,
            format!("{:?}", t.state).to_lowercase()
        );
        for x in &t.tablets {
            out += &format!(
                "  {:#018x}..={:#018x}  server {:<6} {}\n",
                x.start_hash,
                x.end_hash,
                x.owner.to_string(),
                format!("{:?}", x.state).to_lowercase()
            );
        }
    }
    out.trim_end().to_string()
}

fn render_ops(v: &View) -> String {
    let mut out = format!(
        "{:>5} {:>5} {:>10} {:>22} {:>12}  operation\n",
        "seq", "term", "commit µs", "completed (idx/term)", "complete µs"
    );
    for r in &v.recent {
        let done = match (&r.rejected, r.completed) {
            (Some(_), _) => "rejected".to_string(),
            (None, Some((i, t))) if t > r.term => format!("{i}/{t} rolled fwd"),
            (None, Some((i, t))) => format!("{i}/{t}"),
            (None, None) => "incomplete".to_string(),
        };
        out += &format!(
            "{:>5} {:>5} {:>10} {:>22} {:>12}  {}\n",
            r.seq,
            r.term,
            r.commit_us.map_or("-".into(), |u| u.to_string()),
            done,
            r.complete_after_us.map_or("-".into(), |u| u.to_string()),
            r.summary
        );
    }
    if !v.incomplete.is_empty() {
        out += "incomplete:\n";
        for (seq, s, targets) in &v.incomplete {
            let t: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
            out += &format!("  {seq}: {s} (waiting for {})\n", t.join(","));
        }
    }
    out.trim_end().to_string()
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside
/// it, flushed, renamed over it, and the directory flushed.
pub fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir)?.sync_all()
}
