//! A coordinator replica as a running thing: the Raft core over a durable
//! [`DiskStorage`], talking to its peers through a [`Transport`], applying
//! committed records to its [`ClusterState`] and, when it is the
//! established leader, letting its [`Coordinator`] act.
//!
//! This is the driver the simulator stands in for: the same `RawNode`,
//! `ClusterState` and `Coordinator`, with real disk and network. One thread
//! runs it ([`CoordinatorNode::run_for`] / [`CoordinatorNode::step`]):
//! wait for a message or the next tick, hand it to Raft, then drive the
//! ready loop:
//!
//! 1. send the messages that may leave now (the leader's appends go out in
//!    parallel with its own write, thesis §10.2.1);
//! 2. write entries, hard state and snapshot, and make them durable;
//! 3. send the messages that needed that (votes, acknowledgements);
//! 4. apply committed entries to the cluster state;
//! 5. `advance`, then let the coordinator act.
//!
//! Not here yet (next increments of the real-cluster issue): pushes to
//! masters (the peer directory), client requests, log compaction.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use ramcoord_log::disk::{DiskStorage, Durability, OpenError};
use ramcoord_log::wire::{decode_message, encode_message};
use ramcoord_log::{
    ConfState, Config, EntryKind, Message, NodeId, ProposeError, RawNode, Role, Storage,
    StorageError,
};
use ramcoord_net::{Event, Transport};

use crate::cluster::{ApplyError, ClusterState, Record};
use crate::coordinator::{Action, Coordinator, CoordinatorBugs, CoordinatorConfig};

/// The first byte of a transport message: what follows.
pub mod tag {
    /// A Raft message (`ramcoord_log::wire`).
    pub const RAFT: u8 = 1;
    /// A client request ([`super::client`]).
    pub const CLIENT: u8 = 2;
    /// A replica's answer to a client ([`super::client`]).
    pub const CLIENT_REPLY: u8 = 3;
}

pub mod client;

/// How a coordinator replica runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This replica's id.
    pub id: NodeId,
    /// Every founding replica's id (this one included).
    pub replicas: Vec<NodeId>,
    /// Where its log lives.
    pub data_dir: PathBuf,
    /// When an appended entry counts as durable.
    pub durability: Durability,
    /// One Raft tick.
    pub tick: Duration,
    /// Election timeout, in ticks.
    pub election_ticks: u64,
    /// Heartbeat interval, in ticks.
    pub heartbeat_ticks: u64,
    /// Segment size of the log.
    pub segment_bytes: u64,
}

impl NodeConfig {
    /// Defaults: 10 ms ticks, elections after 10–20 ticks, heartbeats
    /// every tick, fsync durability.
    pub fn new(id: NodeId, replicas: Vec<NodeId>, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            id,
            replicas,
            data_dir,
            durability: Durability::Fsync,
            tick: Duration::from_millis(10),
            election_ticks: 10,
            heartbeat_ticks: 1,
            segment_bytes: ramcoord_log::disk::segment_log::SEGMENT_BYTES_DEFAULT,
        }
    }
}

/// Why a replica stopped (or could not start).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The log on disk cannot be opened.
    #[error("opening the log: {0}")]
    Open(#[from] OpenError),
    /// The disk failed: fatal.
    #[error("the log failed: {0}")]
    Storage(#[from] StorageError),
    /// A committed entry is not a valid record: fatal, never skipped.
    #[error("cannot apply: {0}")]
    Apply(#[from] ApplyError),
    /// The configuration is unusable.
    #[error("bad configuration: {0}")]
    Config(String),
}

/// A running coordinator replica (see the module docs).
pub struct CoordinatorNode<T: Transport> {
    cfg: NodeConfig,
    raft: RawNode<DiskStorage>,
    transport: T,
    cluster: ClusterState,
    coord: Coordinator,
    next_tick: Instant,
    /// Transport messages that were not well-formed Raft messages.
    rejected_messages: u64,
}

impl<T: Transport> CoordinatorNode<T> {
    /// Opens (or, for an empty data directory, bootstraps) the replica's
    /// log and starts it on `transport`.
    pub fn open(cfg: NodeConfig, transport: T) -> Result<CoordinatorNode<T>, NodeError> {
        if !cfg.replicas.contains(&cfg.id) {
            return Err(NodeError::Config(format!(
                "replica {} is not among {:?}",
                cfg.id, cfg.replicas
            )));
        }
        let fresh = !cfg.data_dir.join("hardstate").exists();
        let mut storage = if fresh {
            let conf = ConfState::with_voters(cfg.replicas.iter().copied());
            DiskStorage::bootstrap(&cfg.data_dir, &conf, cfg.segment_bytes)?
        } else {
            let (s, recovery) = DiskStorage::open(&cfg.data_dir, cfg.segment_bytes)?;
            if let Some((path, offset, why)) = &recovery.torn_tail {
                tracing::warn!(path = %path.display(), offset, why, "truncated a torn record");
            }
            s
        };
        storage.set_durability(cfg.durability)?;
        let snapshot = storage.snapshot();
        let cluster = if snapshot.data.is_empty() {
            ClusterState::default()
        } else {
            ClusterState::restore(&snapshot.data).map_err(NodeError::Config)?
        };
        let mut rcfg = Config::new(cfg.id);
        rcfg.election_timeout_ticks = cfg.election_ticks;
        rcfg.heartbeat_interval_ticks = cfg.heartbeat_ticks;
        rcfg.pre_vote = true;
        rcfg.check_quorum = true;
        rcfg.seed = cfg.id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ std::process::id() as u64;
        let raft = RawNode::new(rcfg, storage).map_err(NodeError::Config)?;
        tracing::info!(id = cfg.id, term = raft.term(), fresh, "replica started");
        Ok(CoordinatorNode {
            next_tick: Instant::now() + cfg.tick,
            cfg,
            raft,
            transport,
            cluster,
            coord: Coordinator::new(CoordinatorConfig::default(), CoordinatorBugs::default()),
            rejected_messages: 0,
        })
    }

    /// The applied cluster state.
    pub fn cluster(&self) -> &ClusterState {
        &self.cluster
    }

    /// Raft role, term and commit index.
    pub fn status(&self) -> (Role, u64, u64) {
        (
            self.raft.role(),
            self.raft.term(),
            self.raft.log().committed,
        )
    }

    /// The replica believed to lead.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader_id()
    }

    /// Messages refused as malformed.
    pub fn rejected_messages(&self) -> u64 {
        self.rejected_messages
    }

    /// Proposes a record (this replica must lead); returns its index.
    pub fn propose(&mut self, record: &Record) -> Result<u64, NodeError> {
        let r = self.raft.propose(record.encode());
        self.drive()?;
        r.map_err(|e: ProposeError| NodeError::Config(e.to_string()))
    }

    /// Runs for `d` (handling messages and ticks as they come).
    pub fn run_for(&mut self, d: Duration) -> Result<(), NodeError> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.step(end)?;
        }
        Ok(())
    }

    /// Waits for one message or the next tick (no later than `deadline`)
    /// and handles it.
    pub fn step(&mut self, deadline: Instant) -> Result<(), NodeError> {
        let wake = self.next_tick.min(deadline);
        let timeout = wake.saturating_duration_since(Instant::now());
        if let Ok(ev) = self.transport.events().recv_timeout(timeout) {
            self.handle(ev);
            // Take whatever else has arrived before writing to disk: one
            // write for the lot.
            while let Ok(ev) = self.transport.events().try_recv() {
                self.handle(ev);
            }
        }
        if Instant::now() >= self.next_tick {
            self.next_tick += self.cfg.tick;
            self.raft.tick();
            self.drive()?;
            let actions = self.coord.tick(&self.cluster);
            self.act(actions)?;
        }
        self.drive()
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Message { from, payload } => {
                if payload.first() == Some(&tag::CLIENT) {
                    match client::decode_request(&payload[1..]) {
                        Ok(req) => self.answer(from, req),
                        Err(e) => {
                            self.rejected_messages += 1;
                            tracing::warn!(from, error = %e, "malformed client request dropped");
                        }
                    }
                    return;
                }
                if payload.first() != Some(&tag::RAFT) {
                    self.rejected_messages += 1;
                    tracing::warn!(from, "message with an unknown tag dropped");
                    return;
                }
                match decode_message(payload.slice(1..)) {
                    Ok(m) if m.from == from && m.to == self.cfg.id => self.raft.step(m),
                    Ok(m) => {
                        self.rejected_messages += 1;
                        tracing::warn!(from, claimed = m.from, to = m.to, "misaddressed message");
                    }
                    Err(e) => {
                        self.rejected_messages += 1;
                        tracing::warn!(from, error = %e, "malformed Raft message dropped");
                    }
                }
            }
            Event::WriteDone { .. } => {}
        }
    }

    /// This replica's view (see [`client::Status`]).
    pub fn status_report(&self) -> client::Status {
        let (role, term, commit) = self.status();
        let role = match role {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
        };
        let match_index = if self.raft.role() == Role::Leader {
            self.raft
                .conf()
                .members()
                .filter(|id| *id != self.cfg.id)
                .filter_map(|id| self.raft.progress(id).map(|p| (id, p.match_index)))
                .collect()
        } else {
            Vec::new()
        };
        client::Status {
            id: self.cfg.id,
            role: role.to_string(),
            term,
            commit,
            last_index: self.raft.log().last_index(),
            applied: self.cluster.applied_index(),
            leader: self.raft.leader_id(),
            active: self.coord.is_active(),
            servers_up: self.cluster.up_masters().len() as u64,
            tables: self.cluster.tables().count() as u64,
            incomplete: self.cluster.incomplete().len() as u64,
            match_index,
        }
    }

    fn answer(&mut self, from: u64, req: client::ClientRequest) {
        let reply = match req {
            client::ClientRequest::Status => client::ClientReply::Status(self.status_report()),
        };
        self.transport
            .send(from, client::encode(tag::CLIENT_REPLY, &reply));
    }

    fn send(&self, m: &Message) {
        let mut b = BytesMut::with_capacity(64);
        b.put_u8(tag::RAFT);
        encode_message(m, &mut b);
        self.transport.send(m.to, b.freeze());
    }

    /// The ready loop (see the module docs).
    fn drive(&mut self) -> Result<(), NodeError> {
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            for m in std::mem::take(&mut rd.messages) {
                self.send(&m);
            }
            let storage = self.raft.storage_mut();
            if let Some(snap) = &rd.snapshot {
                storage.apply_snapshot(snap.clone())?;
                self.cluster = ClusterState::restore(&snap.data).map_err(NodeError::Config)?;
            }
            storage.append(&rd.entries)?;
            if let Some(hs) = rd.hard_state {
                storage.set_hard_state(hs)?;
            }
            if !rd.entries.is_empty() {
                storage.sync()?;
            }
            for m in std::mem::take(&mut rd.persisted_messages) {
                self.send(&m);
            }
            for e in std::mem::take(&mut rd.committed_entries) {
                let data: &[u8] = if e.kind == EntryKind::Normal {
                    &e.data
                } else {
                    &[]
                };
                if e.index <= self.cluster.applied_index() {
                    continue; // covered by the snapshot restored at start
                }
                let outcome = self.cluster.apply(e.index, data)?;
                tracing::debug!(index = e.index, ?outcome, "applied");
            }
            self.raft.advance(rd);
        }
        let established = self.raft.role() == Role::Leader
            && self.raft.log().term(self.cluster.applied_index()).ok() == Some(self.raft.term())
            && self.cluster.applied_index() >= self.raft.log().committed;
        self.coord.set_log_last_index(self.raft.log().last_index());
        let was = self.coord.is_active();
        self.coord
            .set_leadership(established, self.raft.term(), &self.cluster);
        if established && !was {
            tracing::info!(
                id = self.cfg.id,
                term = self.raft.term(),
                incomplete = self.cluster.incomplete().len(),
                "coordinator active: rolling forward incomplete operations"
            );
        }
        let actions = self.coord.on_applied(&self.cluster);
        self.act(actions)
    }

    fn act(&mut self, actions: Vec<Action>) -> Result<(), NodeError> {
        let mut proposed = false;
        for a in actions {
            match a {
                Action::Propose(rec) => {
                    proposed |= self.raft.propose(rec.encode()).is_ok();
                }
                // The peer directory for masters comes with the master
                // process; until then pushes have nowhere to go.
                Action::Push { .. } => {}
            }
        }
        if proposed {
            self.drive()?;
        }
        Ok(())
    }
}

/// Encodes a Raft message as a transport payload (for tests and tools).
pub fn raft_payload(m: &Message) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(tag::RAFT);
    encode_message(m, &mut b);
    b.freeze()
}
