//! A coordinator replica as a running process: the sans-IO [`Replica`]
//! over a durable [`DiskStorage`], talking to its peers through a
//! [`Transport`].
//!
//! This is the process's driver; the simulator is the other one, and both
//! run the same [`Replica`]. The driver owns only what the replica must not
//! touch: the clock, the socket and the disk. One thread runs it
//! ([`CoordinatorNode::run_for`] / [`CoordinatorNode::step`]): wait for a
//! message or the next tick, hand every message that has arrived to the
//! replica (one disk write then covers them all), let it drive its ready
//! loop, and carry out what it asks:
//!
//! - `Send`: the transport's `send`;
//! - `Persist`: written to the log and, when it holds entries, made
//!   durable (`fdatasync`, or the page cache under `--durability memory`)
//!   before the replica hears it is persisted (so acknowledgements and
//!   votes never leave before their entries are durable);
//! - `Push`: a one-sided write into the master's configuration region
//!   ([`CONFIG_REGION`]); a write that lands is the master's
//!   acknowledgement, reported back to the replica;
//! - `WriteSnapshot`: encoded and written durably on a thread of its own
//!   (a million tablets take tens of milliseconds to encode, and the file
//!   an `fsync`), then handed back to the replica, which compacts its log.
//!   A snapshot installed from the leader is written only once that
//!   thread is done, so the older snapshot never replaces the newer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ramcoord_log::disk::{DiskStorage, Durability, FlushRing, OpenError, SegmentWrite};
use ramcoord_log::{ConfState, Config, NodeId, RawNode, Role, Snapshot, Storage, StorageError};
use ramcoord_net::admission::Admission;
use ramcoord_net::{Event, Transport};

use crate::cluster::{ClusterState, Record};
use crate::coordinator::CoordinatorConfig;
use crate::http::coordinator::{Observed, ReplicaState};
use crate::protocol::CONFIG_REGION;
use crate::replica::{Input, Output, Replica, ReplicaConfig, ReplicaError};

pub use crate::replica::NodeBugs;

/// Events a step takes between two looks at the clock.
const EVENTS_PER_CLOCK_LOOK: usize = 64;
/// Events a step takes at most before it ticks and drives the replica.
const EVENTS_PER_STEP_MAX: usize = 4096;

/// How a coordinator replica runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This replica's id.
    pub id: NodeId,
    /// Whether its connections are mutual TLS (else `--insecure`).
    pub tls: bool,
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
    /// The coordinator's timing (pushes, proposals, failure detection), in
    /// ticks.
    pub coordinator: CoordinatorConfig,
    /// Compact the log after this many entries applied since the last
    /// snapshot.
    pub snapshot_entries: u64,
    /// Join an existing group instead of founding one: start with an empty
    /// log and no configuration (never campaigning), and wait for the
    /// leader to add this replica (as a learner, then a voter) and send it
    /// the log. For a replica whose data directory was lost.
    pub join: bool,
    /// Spin on the event queue this long after activity before blocking
    /// (zero: always block).
    pub spin: Duration,
    /// Hold every push this long before sending it (a fault-injection knob
    /// for demos and tests: it widens the window between an operation's
    /// commit point and its completion).
    pub push_delay: Duration,
    /// The replicas' client addresses (`HOST:PORT`, as configured; this
    /// one's included): followers name the leader's in `NotLeader`, and
    /// the leader checks `add-voter` against them. A replica added with an
    /// address is added here by the leader that adds it.
    pub peer_addrs: BTreeMap<NodeId, String>,
    /// Planted bugs (only chaos tests set them).
    pub bugs: NodeBugs,
}

impl NodeConfig {
    /// Defaults: 10 ms ticks, elections after 10–20 ticks, heartbeats
    /// every tick, fsync durability.
    pub fn new(id: NodeId, replicas: Vec<NodeId>, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            id,
            tls: false,
            replicas,
            data_dir,
            durability: Durability::Fsync,
            tick: Duration::from_millis(10),
            election_ticks: 10,
            heartbeat_ticks: 1,
            segment_bytes: ramcoord_log::disk::segment_log::SEGMENT_BYTES_DEFAULT,
            coordinator: CoordinatorConfig::default(),
            push_delay: Duration::ZERO,
            spin: Duration::ZERO,
            join: false,
            snapshot_entries: 10_000,
            peer_addrs: BTreeMap::new(),
            bugs: NodeBugs::default(),
        }
    }

    /// What the replica itself needs of this configuration.
    pub fn replica_config(&self) -> ReplicaConfig {
        ReplicaConfig {
            id: self.id,
            tls: self.tls,
            tick: self.tick,
            coordinator: self.coordinator,
            snapshot_entries: self.snapshot_entries,
            push_delay: self.push_delay,
            peer_addrs: self.peer_addrs.clone(),
            bugs: self.bugs,
            coordinator_bugs: Default::default(),
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
    /// The replica stopped: fatal.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The Raft node could not start (its configuration, or its log).
    #[error("starting Raft: {0}")]
    Start(#[from] ramcoord_log::StartError),
    /// The configuration is unusable.
    #[error("bad configuration: {0}")]
    Config(String),
    /// A record was not proposed.
    #[error("proposing: {0}")]
    Propose(#[from] crate::replica::ProposeRecordError),
}

/// Push writes the driver remembers (transport id -> the replica's id);
/// past it the oldest is forgotten (its completion, if it ever comes, is
/// dropped: the coordinator pushes again).
const PUSHES_TRACKED: usize = 65_536;

/// A running coordinator replica (see the module docs).
pub struct CoordinatorNode<T: Transport> {
    cfg: NodeConfig,
    replica: Replica<DiskStorage>,
    transport: T,
    next_tick: Instant,
    /// When the last event arrived (adaptive polling).
    last_activity: Instant,
    /// Push writes in flight: the transport's id -> the replica's.
    writes: HashMap<u64, u64>,
    /// Their transport ids, oldest first (to forget the oldest).
    writes_order: VecDeque<u64>,
    /// Masters pushed to: transport peer -> server. One that is no longer
    /// up is removed from the transport (its connection and anything held
    /// for it let go), checked once a second.
    pushed: HashMap<ramcoord_net::PeerId, crate::cluster::ServerId>,
    /// When `pushed` was last checked.
    pushed_checked: Instant,
    /// Slow steps since the last warning about them: how many, the
    /// longest (wall time, events, drive), and when that warning was.
    slow_steps: (u64, Duration, usize, Duration, Instant),
    /// Persist jobs written and waiting for the disk, in order: (job
    /// number, the last index that must be durable; 0 for none).
    persisting: VecDeque<(u64, u64)>,
    /// The transport cannot be waited on beside the disk (no
    /// [`Transport::ready_fd`]): flushes are waited for where they start.
    disk_blocks: bool,
    /// When the flush in flight started (for the fsync histogram).
    flush_started: Option<Instant>,
    /// What the HTTP endpoint shows, if there is one, and when it was
    /// last published.
    observed: Option<(Arc<Observed>, Instant)>,
    /// When the per-master metrics were last sampled.
    per_master_sampled: Instant,
    /// The last copy of the view made for the status page, and when.
    last_view: Option<(Instant, Arc<crate::protocol::View>)>,
    /// The snapshot being encoded and written off this thread, if any.
    snapshot_worker: Option<std::thread::JoinHandle<Result<Snapshot, StorageError>>>,
    /// A snapshot written, for the replica at the next step.
    snapshot_written: Option<Snapshot>,
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
        // New, or a bootstrap that never finished (it is redone).
        let fresh = !DiskStorage::holds_state(&cfg.data_dir)?;
        if cfg.join && !fresh {
            return Err(NodeError::Config(format!(
                "--join needs an empty data directory; {} holds a log (start without --join)",
                cfg.data_dir.display()
            )));
        }
        let mut storage = if cfg.join {
            tracing::info!(dir = %cfg.data_dir.display(), "joining: empty log, no configuration until the leader sends it");
            DiskStorage::open(&cfg.data_dir, cfg.segment_bytes)?.0
        } else if fresh {
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
        // One ring for the sockets and the disk where the transport has
        // one this thread runs: a flush's durable writes leave with the
        // ready's sends in one submission, and the loop waits on one ring.
        if let Some(ring) = transport.disk_ring() {
            if storage.flush_on(Box::new(LoopFlush(ring)))? {
                tracing::info!("the log flushes through the sockets' io_uring");
            }
        }
        let mut rcfg = Config::new(cfg.id);
        rcfg.election_timeout_ticks = cfg.election_ticks;
        rcfg.heartbeat_interval_ticks = cfg.heartbeat_ticks;
        rcfg.pre_vote = true;
        rcfg.check_quorum = true;
        rcfg.seed = cfg.id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ std::process::id() as u64;
        let raft = RawNode::new(rcfg, storage)?;
        tracing::info!(id = cfg.id, term = raft.term(), fresh, "replica started");
        let now = Instant::now();
        let replica = Replica::new(cfg.replica_config(), raft, ClusterState::default(), now)?;
        let disk_blocks = transport.ready_fd().is_none();
        Ok(CoordinatorNode {
            next_tick: now + cfg.tick,
            replica,
            transport,
            cfg,
            last_activity: now,
            writes: HashMap::new(),
            writes_order: VecDeque::new(),
            persisting: VecDeque::new(),
            disk_blocks,
            pushed: HashMap::new(),
            pushed_checked: now,
            // As if warned a second ago: the first slow step is said at
            // once (the storms come right after a start).
            slow_steps: (
                0,
                Duration::ZERO,
                0,
                Duration::ZERO,
                now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
            ),
            flush_started: None,
            observed: None,
            per_master_sampled: now,
            last_view: None,
            snapshot_worker: None,
            snapshot_written: None,
        })
    }

    /// Shares what this replica measures and publishes its state for an
    /// HTTP endpoint ([`crate::http`]), which knows every replica's page
    /// (`pages`, by id: a follower's links to the leader's); from now on the loop samples the
    /// metrics every tick and publishes every
    /// [`crate::http::PUBLISH_EVERY`].
    pub fn observe(
        &mut self,
        admission: Option<Arc<Admission>>,
        pages: std::collections::BTreeMap<u64, String>,
    ) -> Arc<Observed> {
        let o = Observed::new(self.replica.metrics().clone(), admission, pages);
        self.observed = Some((o.clone(), Instant::now() - crate::http::PUBLISH_EVERY));
        self.publish(true);
        o
    }

    /// Samples the metrics and, when due (or `now`), publishes the state.
    fn publish(&mut self, force: bool) {
        let Some((o, last)) = &self.observed else {
            return;
        };
        let now = Instant::now();
        let per_master = now.duration_since(self.per_master_sampled) >= Duration::from_secs(1);
        if per_master {
            self.per_master_sampled = now;
        }
        self.replica.sample_metrics(per_master);
        let storage = self.replica.storage();
        o.metrics
            .log_bytes
            .set(crate::metrics::level(storage.log_bytes()));
        if !force && now.duration_since(*last) < crate::http::PUBLISH_EVERY {
            return;
        }
        let o = o.clone();
        let view = if o.view_wanted() {
            match &self.last_view {
                Some((at, v)) if now.duration_since(*at) < crate::http::coordinator::VIEW_EVERY => {
                    Some(v.clone())
                }
                _ => {
                    let v = Arc::new(self.replica.view());
                    self.last_view = Some((now, v.clone()));
                    Some(v)
                }
            }
        } else {
            None
        };
        o.state.set(ReplicaState {
            status: self.replica.status_report(),
            hears_leader: self.replica.hears_leader(),
            view,
            latencies_us: self.replica.recent_commit_latencies_us(),
        });
        self.observed = Some((o, now));
    }

    /// The replica this process runs.
    pub fn replica(&self) -> &Replica<DiskStorage> {
        &self.replica
    }

    /// The applied cluster state.
    pub fn cluster(&self) -> &ClusterState {
        self.replica.cluster()
    }

    /// Raft role, term and commit index.
    pub fn status(&self) -> (Role, u64, u64) {
        self.replica.status()
    }

    /// The replica believed to lead.
    pub fn leader(&self) -> Option<NodeId> {
        self.replica.leader()
    }

    /// Messages refused as malformed.
    pub fn rejected_messages(&self) -> u64 {
        self.replica.rejected_messages()
    }

    /// Proposes a record (this replica must lead); returns its index.
    pub fn propose(&mut self, record: &Record) -> Result<u64, NodeError> {
        let r = self.replica.propose(Instant::now(), record);
        self.drive()?;
        Ok(r?)
    }

    /// Runs for `d` (handling messages and ticks as they come).
    pub fn run_for(&mut self, d: Duration) -> Result<(), NodeError> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.step(end)?;
        }
        Ok(())
    }

    /// Waits for one message, a disk completion or the next tick (no later
    /// than `deadline`) and handles what came.
    pub fn step(&mut self, deadline: Instant) -> Result<(), NodeError> {
        let mut wake = self.next_tick.min(deadline);
        if let Some(due) = self.replica.next_deadline() {
            wake = wake.min(due);
        }
        if let Some(due) = self.replica.storage().flush_held_until() {
            wake = wake.min(due);
        }
        let timeout = wake.saturating_duration_since(Instant::now());
        self.wait(timeout);
        let woke = Instant::now();
        // Take what else has arrived before writing to disk (one write for
        // the lot), but not past the next tick: under a flood of client
        // and master messages (10,000 masters enlisting at once) an
        // unbounded drain kept a leader from its ticks, hence from its
        // heartbeats to the followers, for longer than their election
        // timeout, and it lost its term. What is left is taken in the
        // next step, after the tick.
        let mut taken = 0usize;
        while let Some(ev) = self.transport.next_event(Duration::ZERO) {
            self.handle(ev);
            taken += 1;
            if taken % EVENTS_PER_CLOCK_LOOK == 0
                && (taken >= EVENTS_PER_STEP_MAX || Instant::now() >= self.next_tick)
            {
                break;
            }
        }
        self.collect_durable()?;
        self.collect_snapshot(false)?;
        if let Some(snapshot) = self.snapshot_written.take() {
            self.replica
                .input(Instant::now(), Input::SnapshotWritten { snapshot });
        }
        let now = Instant::now();
        if now >= self.next_tick {
            self.next_tick += self.cfg.tick;
            if self.next_tick < now {
                // A stall (a descheduled process): do not fire a burst of
                // ticks to catch up.
                self.next_tick = now + self.cfg.tick;
            }
            self.replica.input(now, Input::Tick);
            self.publish(false);
            if now.duration_since(self.pushed_checked) >= Duration::from_secs(1) {
                self.pushed_checked = now;
                self.forget_gone_masters();
            }
        }
        let drive_began = Instant::now();
        let r = self.drive();
        // A step that holds the thread for a good part of an election
        // timeout delays this replica's messages to its peers by as much:
        // a leader's followers start to campaign. Said, so that an
        // operator who sees elections knows where the time went.
        // Wall time: on a crowded machine it includes time the thread
        // waited for a core. At most one warning a second, with the count.
        let took = woke.elapsed();
        let half_election = u32::try_from(self.cfg.election_ticks / 2).unwrap_or(u32::MAX);
        if took >= self.cfg.tick.saturating_mul(half_election.max(1)) {
            let s = &mut self.slow_steps;
            s.0 += 1;
            if took > s.1 {
                (s.1, s.2, s.3) = (took, taken, drive_began.elapsed());
            }
            if s.4.elapsed() >= Duration::from_secs(1) {
                tracing::warn!(
                    steps = s.0,
                    longest_ms = s.1.as_millis() as u64,
                    events = s.2,
                    drive_ms = s.3.as_millis() as u64,
                    "slow steps: this replica held its thread for half an election timeout or more (wall time; its peers may start elections)"
                );
                *s = (0, Duration::ZERO, 0, Duration::ZERO, Instant::now());
            }
        }
        r
    }

    /// The first step of a graceful stop: a leader hands its leadership to
    /// the voter whose log is furthest along (it is brought up to date,
    /// then told to campaign at once: Raft's TimeoutNow). Returns that
    /// voter, or `None` if this replica does not lead or has no voter to
    /// hand over to.
    pub fn hand_off_leadership(&mut self) -> Result<Option<NodeId>, NodeError> {
        if self.replica.status().0 != Role::Leader {
            return Ok(None);
        }
        let st = self.replica.status_report();
        let Some(to) = st
            .match_index
            .iter()
            .filter(|(id, _)| st.voters.contains(id))
            .max_by_key(|(_, m)| *m)
            .map(|(id, _)| *id)
        else {
            return Ok(None);
        };
        if let Err(e) = self.replica.transfer_leader(to) {
            tracing::warn!(to, error = %e, "leadership not handed over");
            return Ok(None);
        }
        self.drive()?;
        Ok(Some(to))
    }

    /// The last step of a graceful stop: everything appended to the log is
    /// made durable (the flush in flight waited for, the rest written and
    /// synced), so nothing this replica acknowledged or voted for is lost
    /// with the process.
    pub fn flush_for_exit(&mut self) -> Result<(), NodeError> {
        self.replica.storage_mut().sync()?;
        // A snapshot being written finishes (a half-written one would only
        // be a temporary file, but the work is not thrown away).
        self.collect_snapshot(true)?;
        Ok(())
    }

    /// Takes the snapshot worker's result if it is done (or, `wait`, once
    /// it is): kept for the replica's next step. A write that failed stops
    /// the replica, as any failed write to its log does.
    fn collect_snapshot(&mut self, wait: bool) -> Result<(), NodeError> {
        if !self
            .snapshot_worker
            .as_ref()
            .is_some_and(|w| wait || w.is_finished())
        {
            return Ok(());
        }
        let worker = self.snapshot_worker.take().expect("just looked");
        match worker.join() {
            Ok(Ok(snapshot)) => {
                self.snapshot_written = Some(snapshot);
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StorageError::Io("the snapshot writer thread panicked".into()).into()),
        }
    }

    /// Encodes and writes `job` on a thread of its own (see the module
    /// docs); where no thread can be started, here.
    fn start_snapshot(&mut self, job: crate::replica::SnapshotJob) -> Result<(), NodeError> {
        // The replica has one job out at a time; a driver bug must not
        // overlap two writes of one file.
        self.collect_snapshot(true)?;
        let writer = self.replica.storage().snapshot_file_writer();
        let index = job.meta.index;
        let work = move || {
            let t = Instant::now();
            let snapshot = job.encode();
            let encoded = t.elapsed();
            writer.write(&snapshot)?;
            tracing::info!(
                index,
                bytes = snapshot.data.len(),
                encode_ms = encoded.as_secs_f64() * 1e3,
                write_ms = (t.elapsed() - encoded).as_secs_f64() * 1e3,
                "snapshot written off the Raft thread"
            );
            Ok(snapshot)
        };
        match std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(work.clone())
        {
            Ok(handle) => self.snapshot_worker = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, index, "cannot start the snapshot writer thread; writing the snapshot on the Raft thread");
                self.snapshot_written = Some(work()?);
            }
        }
        Ok(())
    }

    /// Removes from the transport the masters pushed to that are no longer
    /// up (declared crashed, or removed): they are never pushed again.
    fn forget_gone_masters(&mut self) {
        let cluster = self.replica.cluster();
        let transport = &self.transport;
        self.pushed.retain(|&peer, &mut server| {
            let up = cluster.is_up(server);
            if !up {
                tracing::debug!(%server, peer, "master gone: its connection is closed");
                transport.remove_peer(peer);
            }
            up
        });
    }

    /// Waits up to `timeout` for the network or the disk, never for the
    /// disk alone: the replica keeps receiving, ticking and sending
    /// (heartbeats among them) while its disk is slow. With the log on the
    /// transport's ring (`flush_on`) one wait covers both (a finished flush
    /// ends it); with a log ring of its own (epoll) both descriptors are
    /// waited on in one `poll`. Adaptive
    /// spin: right after activity (an answer is likely on its way) it
    /// looks for up to `spin` before blocking, because being woken from a
    /// blocked wait costs a cross-core wake-up (tens of µs on a small VM);
    /// once idle it blocks at once.
    fn wait(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if !self.cfg.spin.is_zero() && self.last_activity.elapsed() < self.cfg.spin {
            let until = (Instant::now() + self.cfg.spin).min(deadline);
            loop {
                if let Some(ev) = self.transport.next_event(Duration::ZERO) {
                    self.last_activity = Instant::now();
                    self.handle(ev);
                    return;
                }
                if self.disk_completed() {
                    // Collected by the caller; a wait now would sleep
                    // through it (the ring's completion is taken already).
                    return;
                }
                if Instant::now() >= until {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let storage = self.replica.storage();
        // A flush held by the fault hook is looked at when its time comes
        // (the wake-up time), not on its descriptor: its completion may
        // already be there, and waiting on it would spin.
        let disk_fd = if storage.flush_in_flight() && storage.flush_held_until().is_none() {
            storage.completion_fd()
        } else {
            None
        };
        match (disk_fd, self.transport.ready_fd()) {
            (Some(disk), Some(net)) => {
                use rustix::event::{poll, PollFd, PollFlags};
                // The spin above may have taken wake-ups (and posted) since
                // the last flush: hand the sends over and re-arm what the
                // transport must wake for before sleeping.
                self.transport.flush();
                let mut fds = [
                    PollFd::from_borrowed_fd(net, PollFlags::IN),
                    PollFd::from_borrowed_fd(disk, PollFlags::IN),
                ];
                let ts =
                    rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
                        tv_sec: i64::MAX,
                        tv_nsec: 0,
                    });
                match poll(&mut fds, Some(&ts)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => tracing::warn!(error = %e, "poll failed"),
                }
                // The caller takes the transport's events.
            }
            _ => {
                if let Some(ev) = self.transport.next_event(left) {
                    self.last_activity = Instant::now();
                    self.handle(ev);
                }
            }
        }
    }

    /// Whether the disk finished something since last looked at (without
    /// collecting it).
    fn disk_completed(&self) -> bool {
        self.replica.storage().flush_finished()
    }

    /// Collects finished flushes and tells the replica which persist jobs
    /// are now durable (in order: a job is done once the log is durable
    /// through its last entry, or through the log's end, if a later
    /// conflict cut it shorter).
    fn collect_durable(&mut self) -> Result<(), NodeError> {
        let storage = self.replica.storage_mut();
        let durable = if storage.flush_in_flight() {
            // Also starts the next flush if entries came meanwhile.
            let durable_before = storage.durable_index();
            let d = storage.flush_poll(false)?;
            if d > durable_before {
                if let Some(t) = self.flush_started.take() {
                    self.replica
                        .metrics()
                        .fsync_seconds
                        .observe(t.elapsed().as_secs_f64());
                }
            }
            let storage = self.replica.storage_mut();
            if storage.flush_in_flight() && self.flush_started.is_none() {
                self.flush_started = Some(Instant::now());
            }
            d
        } else {
            storage.durable_index()
        };
        let storage = self.replica.storage_mut();
        let all_durable = durable >= storage.last_index();
        let mut done = None;
        while let Some(&(number, need)) = self.persisting.front() {
            if need > durable && !all_durable {
                break;
            }
            done = Some(number);
            self.persisting.pop_front();
        }
        if let Some(number) = done {
            let now = Instant::now();
            self.replica.input(now, Input::Persisted { number });
            self.replica.drive(now)?;
        }
        Ok(())
    }

    /// Hands a transport event to the replica.
    fn handle(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Message { from, payload } => {
                self.replica.input(now, Input::Message { from, payload })
            }
            Event::WriteDone { to, id, status } => {
                let Some(write) = self.writes.remove(&id) else {
                    return;
                };
                self.replica
                    .input(now, Input::PushDone { write, to, status });
            }
        }
    }

    /// Lets the replica run its ready loop and carries out its outputs
    /// until it has nothing more to say.
    fn drive(&mut self) -> Result<(), NodeError> {
        self.replica.drive(Instant::now())?;
        while let Some(out) = self.replica.poll_output() {
            match out {
                Output::Send { to, payload } => self.transport.send(to, payload),
                Output::WriteSnapshot(job) => self.start_snapshot(job)?,
                Output::Persist(job) => {
                    if job.snapshot.is_some() {
                        // The leader's snapshot is newer than any this
                        // replica is writing: that write goes first.
                        self.collect_snapshot(true)?;
                    }
                    let storage = self.replica.storage_mut();
                    job.write_to(storage)?;
                    // What must be durable before the job counts as
                    // persisted: its entries. (A snapshot and a changed
                    // term or vote are durable when written.)
                    let need = job.entries.last().map_or(0, |e| e.index);
                    if need > 0 {
                        if !storage.flush_in_flight() {
                            self.flush_started = Some(Instant::now());
                        }
                        let storage = self.replica.storage_mut();
                        storage.flush_start()?;
                        if self.disk_blocks {
                            // No descriptor to wait on beside the network:
                            // wait for the disk here (the replica stalls
                            // with it).
                            while storage.flush_in_flight() && storage.durable_index() < need {
                                storage.flush_poll(true)?;
                            }
                        }
                        // Finished where it started (the `std` backend, or
                        // waited for above): time it here. Memory
                        // durability flushes nothing on this path.
                        if !storage.flush_in_flight() && self.cfg.durability == Durability::Fsync {
                            if let Some(t) = self.flush_started.take() {
                                self.replica
                                    .metrics()
                                    .fsync_seconds
                                    .observe(t.elapsed().as_secs_f64());
                            }
                        } else if !self.replica.storage().flush_in_flight() {
                            self.flush_started = None;
                        }
                    }
                    self.persisting.push_back((job.number, need));
                    // Memory durability and the `std` backend finish in
                    // the call: collect at once.
                    self.collect_durable()?;
                }
                Output::AddPeer { peer, addr } => self.transport.add_peer(peer, addr),
                Output::Push {
                    write,
                    server,
                    addr,
                    peer,
                    region,
                    ..
                } => {
                    let Ok(sock) = addr.parse::<std::net::SocketAddr>() else {
                        tracing::warn!(%server, addr, "server address is not HOST:PORT; cannot push");
                        continue;
                    };
                    self.transport.add_peer(peer, sock);
                    self.pushed.insert(peer, server);
                    let id = self.transport.write(peer, CONFIG_REGION, 0, region);
                    self.writes.insert(id, write);
                    self.writes_order.push_back(id);
                    while self.writes_order.len() > PUSHES_TRACKED {
                        if let Some(old) = self.writes_order.pop_front() {
                            self.writes.remove(&old);
                        }
                    }
                }
            }
        }
        // Everything this ready sent leaves now, in one submission.
        self.transport.flush();
        Ok(())
    }
}

/// The log's flushes on the transport's ring ([`Transport::disk_ring`]):
/// the log's segment writes handed over as the ring's durable writes.
struct LoopFlush(ramcoord_net::tcp::RingDisk);

impl FlushRing for LoopFlush {
    fn submit(&mut self, writes: Vec<SegmentWrite>) -> std::io::Result<()> {
        self.0.submit(
            writes
                .into_iter()
                .map(|w| ramcoord_net::tcp::DurableWrite {
                    fd: w.fd,
                    offset: w.offset,
                    bytes: w.bytes,
                })
                .collect(),
        )
    }

    fn reap(&mut self, wait: bool) -> std::io::Result<bool> {
        self.0.reap(wait)
    }

    fn busy(&self) -> bool {
        self.0.busy()
    }

    fn finished(&self) -> bool {
        self.0.finished()
    }

    fn completion_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}
