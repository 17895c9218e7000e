//! The TCP transport: one connection per direction and peer, framed
//! ([`crate::frame`]), `TCP_NODELAY`, reconnect with exponential backoff.
//!
//! # One event loop
//!
//! Every established connection, in and out, is run by one event loop:
//! through an io_uring ([`TcpConfig::io_uring`], `uring.rs`: receives and
//! sends as submitted operations, the sends of a ready leaving in one
//! system call at [`Transport::flush`]) or, where the kernel lacks what
//! that needs, edge-triggered `epoll` through `mio` (a system call per
//! read and send). Who runs it is the only choice:
//!
//! - **the owner's thread** ([`TcpConfig::inline_io`]), in
//!   [`Transport::next_event`] and [`Transport::flush`], waiting on
//!   [`Transport::ready_fd`] between them: a message costs one wake-up of
//!   the owner (by the kernel) rather than two (a reader, then the owner),
//!   which on the commit path of a coordinator replica is every round trip
//!   to a follower;
//! - otherwise one `net-driver` thread, delivering into
//!   [`Transport::events`] (masters: a one-sided write lands in the
//!   driver's loop without waking the worker; tests).
//!
//! With [`TcpConfig::io_threads`] the connections of clients and masters
//! run on rings of their own threads, handing what they receive to the
//! loop's owner through a bounded queue.
//!
//! Sends never wait for a socket: what a socket does not take waits in the
//! connection's bounded backlog ([`TcpConfig::send_backlog_bytes_max`]),
//! flushed when the socket turns writable, and a peer that lets more pile
//! up is declared slow and disconnected.
//!
//! # Threads
//!
//! - one thread accepts connections as an event loop (`accept.rs`): every
//!   TLS handshake and first frame runs in its poll, and a welcomed
//!   connection goes to the loop, so a connection costs no thread at any
//!   point;
//! - a message for a peer with no configured address (a client that
//!   connected to us) is answered on the connection it opened;
//! - per configured coordinator replica, a connector thread connects
//!   (backing off from `backoff_min` to `backoff_max` while the peer is
//!   away), says `Hello`, writes the frames queued meanwhile, hands the
//!   connection to the loop and ends; the connection's close starts the
//!   next connector: a peer costs a thread only while it is being
//!   connected. A removed peer ([`Transport::remove_peer`]) is let go for
//!   good;
//! - every other configured peer is a **push peer** (the masters a leader
//!   writes configuration into, thousands of them): it is connected only
//!   when something is to be sent to it, by a pool of at most
//!   [`CONNECTORS_MAX`] threads (an enlistment storm costs a few threads,
//!   not one per master), and its connection is closed after
//!   [`PUSH_CONN_IDLE`] without a send, or earlier to keep the open ones
//!   under [`Limits::push_conns_max`] (the least recently used first).
//!   A region write waiting for a push peer replaces an older one to the
//!   same place (the newest region is the master's whole configuration),
//!   and one is dropped while the peer has not taken
//!   [`PUSH_UNSENT_MAX`] of earlier ones: what waits for a master is
//!   bounded by about one region, whatever the writer retries.
//!
//! # Descriptors
//!
//! A connection costs one descriptor: the transport keeps a weak handle
//! on it to close it at shutdown, not a duplicate (only a connector's
//! socket, while its handshake blocks, is duplicated). With push
//! connections bounded apart, a leader under a 20,000-descriptor limit
//! holds a connection from each of 10,000 masters, and admission's cap
//! on clients is derived from the same count ([`crate::admission`]).
//!
//! A peer that sends anything that is not a valid frame (garbage, a bad
//! checksum, an oversized length, a wrong version, another cluster's
//! hello) is disconnected and the reason logged; everything else goes on.
//! The queue per peer is bounded: frames for a peer that cannot keep up
//! (or is away) beyond it are dropped and counted.
//!
//! **Bounds on inbound connections** ([`crate::admission`]): every accepted
//! connection is admitted against caps on client connections (in all and
//! per source address, derived from the descriptor limit), must finish its
//! hello within a deadline, is closed when a client's bytes of incomplete
//! frames would pass the bound over all clients, and, as a client, when
//! idle too long. A connection closed for bad input or a bound has every
//! handle dropped at once, so the kernel resets a peer still sending.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossbeam::channel::{unbounded, Receiver, Sender};

mod accept;
mod uring;

pub use uring::DurableWrite;

use crate::admission::{Admission, Limits, Ticket};
use crate::frame::{Frame, FrameDecoder, FrameError};
use crate::link::{Link, SendError};
use crate::rdma_pass::{Pass, PassBook};
use crate::tls::{Identity, PeerClass, Tls};
use crate::{apply_write, Event, PeerId, Region, RegionId, RegionMap, Transport};

/// How a [`TcpTransport`] runs.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This node's id.
    pub id: PeerId,
    /// The cluster's id: connections from another cluster are refused.
    pub cluster: u64,
    /// Where to listen (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Peers to send to, by id.
    pub peers: HashMap<PeerId, SocketAddr>,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Frames queued per peer before new ones are dropped.
    pub queue_frames_max: usize,
    /// Bytes that may wait in a connection to a peer we send
    /// to (a replica, a master we push to) while its socket is full; a
    /// peer that lets more pile up is declared slow and disconnected
    /// ([`crate::link::Link::send`]). Sends never wait for a socket.
    pub send_backlog_bytes_max: usize,
    /// The same bound for a coordinator replica: Raft may have
    /// `inflight_appends_max` × `append_bytes_max` (64 MiB by default) in
    /// flight to a follower catching up.
    pub replica_backlog_bytes_max: usize,
    /// The same bound for answers on connections peers opened to us
    /// (clients).
    pub answer_backlog_bytes_max: usize,
    /// The owner's thread runs the event loop, in `next_event` and
    /// `flush` (see the module docs); off: a `net-driver` thread runs it
    /// and delivers into `events()`.
    pub inline_io: bool,
    /// The event loop runs on io_uring (`uring.rs`) rather than `epoll`;
    /// falls back to `epoll` (logged) where the kernel refuses a ring.
    pub io_uring: bool,
    /// On io_uring: threads besides the loop's, each with a
    /// ring of its own, that read and write every connection that is not
    /// to a coordinator replica (clients, masters): their decoding, TLS and
    /// sends leave the owner's thread, and what they receive reaches the
    /// owner through a bounded queue. 0: the owner does all of it.
    pub io_threads: usize,
    /// CPUs to pin threads to ([`crate::affinity`]): the owner's is the
    /// caller's to pin (entry 0); I/O thread `k` (from 1) takes entry
    /// `k % len`. Empty: nothing pinned.
    pub pin_cpus: Vec<usize>,
    /// Bounds on what inbound connections may hold ([`crate::admission`]).
    pub limits: Limits,
    /// A push peer's connection is closed after this long without a send,
    /// or without its peer taking any of its unsent bytes
    /// ([`PUSH_CONN_IDLE`]; checked once a second).
    pub push_conn_idle: Duration,
    /// Mutual TLS on every connection, and the ids it binds
    /// ([`crate::tls`]); `None`: plain TCP, ids taken on trust.
    pub tls: Option<Tls>,
    /// Where this node listens for RDMA too: the book whose passes admit
    /// RDMA connections, issued here to replicas that ask over an
    /// authenticated connection ([`crate::rdma_pass`]). `None`: pass
    /// requests are refused.
    pub passes: Option<Arc<PassBook>>,
}

impl TcpConfig {
    /// Defaults for node `id` listening on `listen`.
    pub fn new(id: PeerId, cluster: u64, listen: SocketAddr) -> TcpConfig {
        TcpConfig {
            id,
            cluster,
            listen,
            peers: HashMap::new(),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            queue_frames_max: 4096,
            send_backlog_bytes_max: 8 << 20,
            replica_backlog_bytes_max: 80 << 20,
            answer_backlog_bytes_max: 256 << 10,
            inline_io: false,
            io_uring: true,
            io_threads: 0,
            pin_cpus: Vec::new(),
            limits: Limits::default(),
            push_conn_idle: PUSH_CONN_IDLE,
            tls: None,
            passes: None,
        }
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

struct Inner {
    id: PeerId,
    cluster: u64,
    cfg: TcpConfig,
    shutdown: AtomicBool,
    /// Events from outside the loop ([`TcpTransport::event_sink`]), which
    /// the loop hands on with its own.
    events: Sender<Event>,
    sink: Receiver<Event>,
    regions: RegionMap,
    outbound: Mutex<HashMap<PeerId, Arc<Outbound>>>,
    /// Push peers waiting for a connection ([`Outbound::lazy`]).
    connect_pool: Mutex<ConnectPool>,
    /// Push connections open.
    push_conns: AtomicUsize,
    /// Region writes superseded before they were sent.
    superseded_writes: AtomicU64,
    /// The newest connection each peer opened to us, for answering peers
    /// whose address we do not know (clients).
    inbound: Mutex<HashMap<PeerId, Arc<Link>>>,
    /// Every open connection, to close them at shutdown, by the remote
    /// address it had when opened (one connection per address and port).
    conns: Mutex<Tracked>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_write: AtomicU64,
    dropped_frames: AtomicU64,
    /// Connections closed because their peer stopped reading.
    slow_peers: AtomicU64,
    /// Connections closed for a protocol error (bad input).
    rejected_conns: AtomicU64,
    /// The event loop that runs every connection.
    event_loop: EventLoop,
    /// Bounds on inbound connections.
    admission: Arc<Admission>,
    /// The listening socket (a second handle): shut down to wake the
    /// accept thread at shutdown.
    listener: TcpListener,
}

/// The event loop's state (see the module docs).
struct EventLoop {
    io: LoopIo,
    /// The I/O threads' rings ([`TcpConfig::io_threads`]; ring `i + 1`).
    helpers: Vec<uring::Uring>,
    conns: Mutex<HashMap<mio::Token, LoopConn>>,
    next_token: std::sync::atomic::AtomicUsize,
    ready: Mutex<ReadyQueue>,
    /// When idle client connections were last looked for.
    idle_sweep: Mutex<std::time::Instant>,
}

/// How the loop reads and writes its connections.
enum LoopIo {
    /// Readiness from `epoll`, then a system call per read and send.
    Epoll(EpollIo),
    /// Reads and sends as io_uring operations (`uring.rs`).
    Uring(Box<uring::Uring>),
}

/// The loop on `epoll` (through `mio`).
struct EpollIo {
    poll: Mutex<mio::Poll>,
    /// `poll`'s epoll descriptor: readable while a connection (or the
    /// waker) has something for `next_event` ([`Transport::ready_fd`]).
    epoll_fd: std::os::fd::OwnedFd,
    /// Read buffer and event list, reused (zeroing 64 KiB per poll showed
    /// up at the top of a profile).
    scratch: Mutex<(Vec<u8>, mio::Events)>,
    registry: mio::Registry,
    waker: mio::Waker,
}

impl EpollIo {
    fn new() -> std::io::Result<EpollIo> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        // SAFETY: `poll` was just created and is alive for this whole
        // statement, so its descriptor is open while borrowed; the dup is
        // our own descriptor for the same epoll instance, owned by
        // `EpollIo` (closed when the transport is).
        let raw =
            unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&poll)) };
        let epoll_fd = rustix::io::fcntl_dupfd_cloexec(raw, 0)?;
        Ok(EpollIo {
            epoll_fd,
            poll: Mutex::new(poll),
            scratch: Mutex::new((vec![0u8; 64 << 10], mio::Events::with_capacity(256))),
            registry,
            waker,
        })
    }
}

impl LoopIo {
    /// Wakes the owner.
    fn wake(&self) {
        match self {
            LoopIo::Epoll(e) => {
                let _ = e.waker.wake();
            }
            LoopIo::Uring(u) => u.kick().wake(),
        }
    }
}

const WAKE: mio::Token = mio::Token(0);

/// The events the loop received and its owner has not taken, in two
/// lanes: the coordinator replicas' (Raft) first, then everyone else's.
/// (With [`TcpConfig::inline_io`], as coordinator replicas run; without
/// it, the I/O threads' channel is one lane.)
///
/// Why: a replica's owner takes a bounded batch of events per step, and
/// answers only at the end of it. With one lane, a flood of clients and
/// masters (10,000 masters enlisting, each sent on by a follower with a
/// `NotLeader`, then heartbeating) put each Raft heartbeat and its answer
/// behind thousands of client messages on both sides, the leader's
/// heartbeats' reads timed out, the followers' election timers ran out,
/// and the group lost its leader over and over while masters reconnected
/// in a storm. Raft's own traffic is bounded by Raft (a window of appends
/// per follower), so serving it first cannot starve the clients for long.
#[derive(Default)]
struct ReadyQueue {
    replicas: std::collections::VecDeque<Event>,
    others: std::collections::VecDeque<Event>,
}

impl ReadyQueue {
    /// Queues `ev` in the replicas' lane if `replica`, else the other.
    fn push(&mut self, ev: Event, replica: bool) {
        if replica {
            self.replicas.push_back(ev);
        } else {
            self.others.push_back(ev);
        }
    }

    /// The next event: the replicas' lane first.
    fn pop_front(&mut self) -> Option<Event> {
        self.replicas
            .pop_front()
            .or_else(|| self.others.pop_front())
    }

    fn len(&self) -> usize {
        self.replicas.len() + self.others.len()
    }

    fn is_empty(&self) -> bool {
        self.replicas.is_empty() && self.others.is_empty()
    }
}

/// A connection run by the loop.
struct LoopConn {
    /// Its key in [`EventLoop::conns`] (and in the ring).
    token: usize,
    stream: Arc<Link>,
    dec: FrameDecoder,
    peer: PeerId,
    addr: SocketAddr,
    kind: ConnKind,
    /// Inbound: its place in the admission bounds.
    ticket: Option<Ticket>,
    /// When bytes last arrived (client idle timeout).
    last_read: std::time::Instant,
}

impl LoopConn {
    /// A coordinator replica's connection: not a client's that claimed a
    /// replica's id (admission gave those a client ticket). Its events go
    /// first, and it is read even while the owner is behind.
    fn is_replica(&self) -> bool {
        matches!(PeerClass::of(self.peer), PeerClass::Replica(_))
            && !self.ticket.as_ref().is_some_and(|t| t.is_client())
    }
}

enum ConnKind {
    /// Opened by the peer: write acks go back on `writer`.
    Inbound { writer: Arc<Link> },
    /// Ours: carries the peer's write acks.
    Outbound { out: Arc<Outbound>, generation: u64 },
}

/// The sending side of a connection to one peer.
struct Outbound {
    slot: Mutex<Slot>,
    /// Where the peer listens.
    addr: SocketAddr,
    /// A push peer (anyone but a coordinator replica: the masters a
    /// leader writes configuration into). Its connection is opened when
    /// something is to be sent, by the connector pool, and closed after
    /// [`PUSH_CONN_IDLE`] without a send or to make room under
    /// [`Limits::push_conns_max`]; a region write supersedes one still
    /// waiting for it (see [`TcpTransport::enqueue`]). A replica's
    /// connection is kept open, by a connector of its own.
    lazy: bool,
}

/// The live connection (if any) and the frames waiting for one.
struct Slot {
    stream: Option<Arc<Link>>,
    /// Bumped per connection: a reader that ends clears only its own.
    generation: u64,
    queue: std::collections::VecDeque<Frame>,
    /// Payload bytes in `queue` (bounded by
    /// [`TcpConfig::send_backlog_bytes_max`], as a connection's backlog).
    queued_bytes: usize,
    /// A push peer: in line for (or being given) a connection.
    connecting: bool,
    /// A push peer whose last attempt failed: not tried before this.
    next_attempt: Option<std::time::Instant>,
    /// A push peer: the wait after the next failed attempt.
    backoff: Duration,
    /// When something was last given to send (push connections idle
    /// out).
    last_used: std::time::Instant,
    /// A push peer's connection with bytes unsent: how many, and since
    /// when no fewer (a connection that takes nothing for
    /// [`PUSH_CONN_IDLE`] is closed as slow).
    stuck: Option<(std::time::Instant, usize)>,
}

/// Push peers waiting for a connection, and the pool's threads.
#[derive(Default)]
struct ConnectPool {
    waiting: std::collections::VecDeque<(PeerId, Arc<Outbound>)>,
    threads: usize,
}

/// Threads connecting push peers at once (each attempt is bounded: a 1 s
/// connect, a 5 s TLS handshake, a 5 s wait for the peer's hello).
const CONNECTORS_MAX: usize = 8;
/// A push connection with nothing sent for this long is closed (the next
/// push opens one): a leader holds descriptors for the masters it is
/// pushing to, not for every master. One whose peer takes none of its
/// unsent bytes for as long is closed as slow. (The default of
/// [`TcpConfig::push_conn_idle`].)
pub const PUSH_CONN_IDLE: Duration = Duration::from_secs(10);
/// A region write to a push peer whose connection still has more than
/// this unsent is dropped (counted in
/// [`TcpTransport::superseded_writes`]): a region is the master's whole
/// configuration, so the newest one is all it needs, and the writer
/// (the coordinator) sends it again until it is acknowledged. Without
/// this, a master that stalls while the writer retries would queue a
/// region per retry.
pub const PUSH_UNSENT_MAX: usize = 64 << 10;

/// A node's TCP endpoint (see the module docs).
pub struct TcpTransport {
    inner: Arc<Inner>,
    local: SocketAddr,
    events: Receiver<Event>,
}

impl TcpTransport {
    /// Starts listening and connecting to the configured peers.
    pub fn start(cfg: TcpConfig) -> Result<TcpTransport, ListenError> {
        let listener = bind_retrying(cfg.listen).map_err(|source| ListenError {
            addr: cfg.listen,
            source,
        })?;
        let local = listener.local_addr().map_err(|source| ListenError {
            addr: cfg.listen,
            source,
        })?;
        // The accept thread blocks in accept (no polling); at shutdown this
        // handle's `shutdown` wakes it.
        let listener_handle = listener.try_clone().map_err(|source| ListenError {
            addr: local,
            source,
        })?;
        let (tx, rx) = unbounded();
        let event_loop = {
            let io = |source: std::io::Error| ListenError {
                addr: local,
                source,
            };
            let ring = if cfg.io_uring {
                match uring::Uring::new(true) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "io_uring refused; connections are polled with epoll");
                        None
                    }
                }
            } else {
                None
            };
            let mut helpers = Vec::new();
            if ring.is_some() {
                for _ in 0..cfg.io_threads {
                    helpers.push(uring::Uring::new(false).map_err(io)?);
                }
            } else if cfg.io_threads > 0 {
                tracing::warn!(
                    io_threads = cfg.io_threads,
                    "I/O threads need io_uring: the owner does all the I/O"
                );
            }
            let io = match ring {
                Some(r) => LoopIo::Uring(Box::new(r)),
                None => LoopIo::Epoll(EpollIo::new().map_err(io)?),
            };
            EventLoop {
                io,
                helpers,
                conns: Mutex::new(HashMap::new()),
                next_token: std::sync::atomic::AtomicUsize::new(1),
                ready: Mutex::new(ReadyQueue::default()),
                idle_sweep: Mutex::new(std::time::Instant::now()),
            }
        };
        let admission = Admission::new(cfg.limits);
        let l = admission.limits();
        tracing::info!(
            client_conns_max = l.client_conns_max,
            client_conns_per_ip_max = l.client_conns_per_ip_max,
            client_buffered_bytes_max = l.client_buffered_bytes_max,
            handshake_timeout_ms = l.handshake_timeout.as_millis() as u64,
            client_idle_timeout_s = l.client_idle_timeout.as_secs(),
            push_conns_max = l.push_conns_max,
            "connection bounds"
        );
        let inner = Arc::new(Inner {
            admission,
            event_loop,
            id: cfg.id,
            cluster: cfg.cluster,
            cfg: cfg.clone(),
            shutdown: AtomicBool::new(false),
            events: tx,
            sink: rx.clone(),
            regions: RwLock::new(HashMap::new()),
            outbound: Mutex::new(HashMap::new()),
            connect_pool: Mutex::new(ConnectPool::default()),
            push_conns: AtomicUsize::new(0),
            superseded_writes: AtomicU64::new(0),
            inbound: Mutex::new(HashMap::new()),
            conns: Mutex::new(Tracked::default()),
            threads: Mutex::new(Vec::new()),
            next_write: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            slow_peers: AtomicU64::new(0),
            rejected_conns: AtomicU64::new(0),
            listener: listener_handle,
        });
        let i = inner.clone();
        spawn(&inner, "net-accept", move || {
            accept::accept_loop(i, listener)
        });
        for n in 0..inner.event_loop.helpers.len() {
            let i = inner.clone();
            spawn(&inner, &format!("net-io-{}", n + 1), move || {
                io_thread(&i, n)
            });
        }
        // Without inline I/O a thread of our own runs the loop and hands
        // what it takes to `events()`.
        let events = if cfg.inline_io {
            rx
        } else {
            // Bounded: an owner that falls behind stops the driver, which
            // then stops reading (TCP windows close) rather than queueing
            // without end.
            let (out_tx, out_rx) = crossbeam::channel::bounded(READY_EVENTS_MAX);
            let i = inner.clone();
            spawn(&inner, "net-driver", move || {
                while !i.shutdown.load(Ordering::SeqCst) {
                    let Some(mut ev) = next_event(&i, Duration::from_millis(100)) else {
                        continue;
                    };
                    loop {
                        match out_tx.send_timeout(ev, Duration::from_millis(100)) {
                            Ok(()) => break,
                            Err(crossbeam::channel::SendTimeoutError::Timeout(back)) => {
                                if i.shutdown.load(Ordering::SeqCst) {
                                    return;
                                }
                                ev = back;
                            }
                            Err(crossbeam::channel::SendTimeoutError::Disconnected(_)) => return,
                        }
                    }
                }
            });
            out_rx
        };
        let t = TcpTransport {
            inner,
            local,
            events,
        };
        for (&peer, &addr) in &cfg.peers {
            t.add_peer(peer, addr);
        }
        tracing::info!(id = cfg.id, %local, "listening");
        Ok(t)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Frames dropped because a peer's queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.inner.dropped_frames.load(Ordering::Relaxed)
    }

    /// Connections closed because their peer stopped reading (see
    /// [`TcpConfig::send_backlog_bytes_max`]).
    pub fn slow_peers(&self) -> u64 {
        self.inner.slow_peers.load(Ordering::Relaxed)
    }

    /// A function that delivers events into this transport's queue (and
    /// wakes an owner blocked in [`Transport::next_event`]): how another
    /// transport shares this one's owner loop.
    pub fn event_sink(&self) -> Box<dyn Fn(Event) + Send + Sync> {
        let inner = self.inner.clone();
        Box::new(move |ev| {
            let _ = inner.events.send(ev);
            inner.event_loop.io.wake();
        })
    }

    /// Events received and not yet taken by the loop's owner (with I/O
    /// threads, bounded near [`READY_EVENTS_MAX`]).
    pub fn queued_events(&self) -> usize {
        self.inner
            .event_loop
            .ready
            .lock()
            .expect("lock poisoned")
            .len()
    }

    /// The bounds on inbound connections, with their counts (open
    /// clients, refusals): for whoever reports them.
    pub fn admission(&self) -> Arc<Admission> {
        self.inner.admission.clone()
    }

    /// Connections closed because the peer sent bad input.
    pub fn rejected_connections(&self) -> u64 {
        self.inner.rejected_conns.load(Ordering::Relaxed)
    }

    fn enqueue(&self, to: PeerId, frame: Frame) {
        let out = self.inner.outbound.lock().expect("lock poisoned");
        let Some(q) = out.get(&to).cloned() else {
            drop(out);
            // No address: answer on the connection the peer opened, if any.
            let w = self
                .inner
                .inbound
                .lock()
                .expect("lock poisoned")
                .get(&to)
                .cloned();
            match w {
                Some(w) => {
                    let max = self.inner.cfg.answer_backlog_bytes_max;
                    if let Err(e) = put(&w, &frame, max) {
                        if matches!(e, SendError::Backlogged { .. }) {
                            declare_slow(&self.inner, to, &e);
                        }
                        tracing::debug!(to, error = %e, "answer lost with its connection");
                        w.shutdown();
                    }
                }
                None => tracing::debug!(to, "no route to peer; frame dropped"),
            }
            return;
        };
        drop(out);
        let mut slot = q.slot.lock().expect("lock poisoned");
        if q.lazy {
            // Only push connections idle out: a replica's send (the commit
            // path) reads no clock here.
            slot.last_used = std::time::Instant::now();
        }
        if let Some(stream) = slot.stream.as_ref() {
            if q.lazy && matches!(frame, Frame::Write { .. }) && stream.backlog() > PUSH_UNSENT_MAX
            {
                // The peer has not taken the last region yet: this one
                // waits for the writer's next retry (see PUSH_UNSENT_MAX).
                self.inner.superseded_writes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    to,
                    unsent = stream.backlog(),
                    "region write superseded: the peer has not taken the last one"
                );
                return;
            }
            let max = backlog_max(&self.inner, to);
            match put(stream, &frame, max) {
                Ok(()) => {}
                Err(e @ SendError::Backlogged { .. }) => {
                    declare_slow(&self.inner, to, &e);
                    stream.shutdown();
                    slot.stream = None;
                }
                Err(e) => {
                    tracing::info!(peer = to, error = %e, "send failed; reconnecting");
                    stream.shutdown();
                    slot.stream = None;
                }
            }
            return;
        }
        if q.lazy {
            // A region write replaces one still waiting for the
            // connection: the newest region is the master's whole
            // configuration.
            if let Frame::Write { region, offset, .. } = &frame {
                let (region, offset) = (*region, *offset);
                let before = slot.queue.len();
                let mut freed = 0;
                slot.queue.retain(|f| match f {
                    Frame::Write {
                        region: r,
                        offset: o,
                        ..
                    } if *r == region && *o == offset => {
                        freed += queued_size(f);
                        false
                    }
                    _ => true,
                });
                slot.queued_bytes -= freed;
                let superseded = before - slot.queue.len();
                self.inner
                    .superseded_writes
                    .fetch_add(superseded as u64, Ordering::Relaxed);
            }
        }
        let bytes = queued_size(&frame);
        if slot.queue.len() >= self.inner.cfg.queue_frames_max
            || slot.queued_bytes + bytes > backlog_max(&self.inner, to)
        {
            self.inner.dropped_frames.fetch_add(1, Ordering::Relaxed);
            return;
        }
        slot.queued_bytes += bytes;
        slot.queue.push_back(frame);
        if q.lazy
            && !slot.connecting
            && slot
                .next_attempt
                .is_none_or(|t| std::time::Instant::now() >= t)
        {
            slot.connecting = true;
            drop(slot);
            want_connection(&self.inner, to, &q);
        }
    }

    /// Region writes to push peers dropped before they were sent: replaced
    /// by a newer one while waiting for a connection, or dropped because
    /// the peer had not taken [`PUSH_UNSENT_MAX`] of earlier ones (the
    /// writer sends the newest again).
    pub fn superseded_writes(&self) -> u64 {
        self.inner.superseded_writes.load(Ordering::Relaxed)
    }

    /// Push connections open (see [`Limits::push_conns_max`]).
    pub fn push_connections(&self) -> usize {
        self.inner.push_conns.load(Ordering::Relaxed)
    }
}

impl Transport for TcpTransport {
    fn id(&self) -> PeerId {
        self.inner.id
    }

    fn send(&self, to: PeerId, payload: Bytes) {
        self.enqueue(to, Frame::Message(payload));
    }

    fn write(&self, to: PeerId, region: RegionId, offset: u64, bytes: Bytes) -> u64 {
        let id = self.inner.next_write.fetch_add(1, Ordering::Relaxed) + 1;
        self.enqueue(
            to,
            Frame::Write {
                id,
                region,
                offset,
                bytes,
            },
        );
        id
    }

    /// Adds (or ignores, if known) a peer to send to.
    fn add_peer(&self, peer: PeerId, addr: SocketAddr) {
        let mut out = self.inner.outbound.lock().expect("lock poisoned");
        if out.contains_key(&peer) {
            return;
        }
        let lazy = !matches!(PeerClass::of(peer), PeerClass::Replica(_));
        let o = Arc::new(Outbound {
            slot: Mutex::new(Slot {
                stream: None,
                generation: 0,
                queue: std::collections::VecDeque::new(),
                queued_bytes: 0,
                connecting: false,
                next_attempt: None,
                backoff: self.inner.cfg.backoff_min,
                last_used: std::time::Instant::now(),
                stuck: None,
            }),
            addr,
            lazy,
        });
        out.insert(peer, o.clone());
        drop(out);
        // A push peer is connected when there is something to push.
        if !lazy {
            let i = self.inner.clone();
            spawn(&self.inner, "net-connect", move || {
                connect_loop(i, peer, addr, o)
            });
        }
    }

    /// Forgets `peer`: its connection is closed and never reopened, frames
    /// queued for it are dropped, and its connector thread (if one is
    /// connecting) ends.
    fn remove_peer(&self, peer: PeerId) {
        let removed = self
            .inner
            .outbound
            .lock()
            .expect("lock poisoned")
            .remove(&peer);
        if let Some(out) = removed {
            let mut slot = out.slot.lock().expect("lock poisoned");
            if let Some(s) = slot.stream.take() {
                s.shutdown();
            }
            slot.queue.clear();
            slot.queued_bytes = 0;
            tracing::debug!(peer, "peer removed");
        }
    }

    fn register_region(&self, id: RegionId, region: Arc<dyn Region>) {
        self.inner
            .regions
            .write()
            .expect("region map lock poisoned")
            .insert(id, region);
    }

    fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    fn flush(&self) {
        if self.inner.cfg.inline_io {
            flush(&self.inner);
        }
    }

    fn ready_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.inner
            .cfg
            .inline_io
            .then(|| match &self.inner.event_loop.io {
                LoopIo::Epoll(e) => e.epoll_fd.as_fd(),
                LoopIo::Uring(u) => u.fd(),
            })
    }

    fn disk_ring(&self) -> Option<RingDisk> {
        (self.inner.cfg.inline_io && matches!(self.inner.event_loop.io, LoopIo::Uring(_))).then(
            || RingDisk {
                inner: self.inner.clone(),
            },
        )
    }

    fn next_event(&self, timeout: Duration) -> Option<Event> {
        if self.inner.cfg.inline_io {
            return next_event(&self.inner, timeout);
        }
        if timeout.is_zero() {
            self.events.try_recv().ok()
        } else {
            self.events.recv_timeout(timeout).ok()
        }
    }
}

/// The owner's log's flushes on the transport's ring
/// ([`Transport::disk_ring`]; the ring's module docs say how).
#[derive(Clone)]
pub struct RingDisk {
    inner: Arc<Inner>,
}

impl RingDisk {
    fn ring(&self) -> std::io::Result<&uring::Uring> {
        match &self.inner.event_loop.io {
            LoopIo::Uring(u) => Ok(u),
            LoopIo::Epoll(_) => Err(std::io::Error::other("the transport runs on epoll")),
        }
    }

    /// Queues one flush's durable writes (one per file); the owner's next
    /// submission carries them with its sends. The files must stay open
    /// until [`RingDisk::reap`] reports the flush finished.
    pub fn submit(&self, writes: Vec<DurableWrite>) -> std::io::Result<()> {
        self.ring()?.disk_submit(writes)
    }

    /// `Ok(true)` once no flush is in flight (the last one finished
    /// durably), `Ok(false)` while one is, blocking until it finishes if
    /// `wait` (from the owner's thread); the first write error once a
    /// flush with a failed write has finished.
    pub fn reap(&self, wait: bool) -> std::io::Result<bool> {
        self.ring()?.disk_reap(wait)
    }

    /// Whether a flush is in flight.
    pub fn busy(&self) -> bool {
        self.ring().is_ok_and(|r| r.disk_busy())
    }

    /// Whether the flush in flight has finished (not yet reaped).
    pub fn finished(&self) -> bool {
        self.ring().is_ok_and(|r| r.disk_finished())
    }
}

impl TcpTransport {
    /// Whether a flush on the ring finished since this was last asked
    /// (an owner that waits on its own, as the hybrid transport does,
    /// ends its wait for it).
    pub fn take_disk_woke(&self) -> bool {
        match &self.inner.event_loop.io {
            LoopIo::Uring(u) => u.take_disk_woke(),
            LoopIo::Epoll(_) => false,
        }
    }
}

/// Hands what was sent since the last call to the kernel (on a ring, in
/// one submission).
fn flush(inner: &Arc<Inner>) {
    let lp = &inner.event_loop;
    if let LoopIo::Uring(u) = &lp.io {
        u.flush(inner, lp);
    }
}

/// The loop's step: what is ready, else wait up to `timeout` for the
/// sockets (reading every ready connection), and look again.
fn next_event(inner: &Arc<Inner>, timeout: Duration) -> Option<Event> {
    let lp = &inner.event_loop;
    let deadline = std::time::Instant::now() + timeout;
    // What the owner sent since it last looked leaves before anything
    // else (one submission with a ring).
    flush(inner);
    loop {
        if let Some(ev) = lp.ready.lock().expect("lock poisoned").pop_front() {
            return Some(ev);
        }
        if let Ok(ev) = inner.sink.try_recv() {
            return Some(ev);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match &lp.io {
            LoopIo::Epoll(e) => poll_epoll(inner, lp, e, left),
            LoopIo::Uring(u) => {
                // A flush of the owner's log finished and is not reaped
                // yet (seen by an earlier zero-timeout look): the owner
                // reaps it now rather than sleep through it.
                if !left.is_zero() && u.take_disk_woke() {
                    return None;
                }
                u.poll(inner, lp, left);
                close_idle_clients(inner, lp);
                // One finished during this wait: the owner looks now. (A
                // zero-timeout call leaves the mark for the next wait.)
                if !left.is_zero() && u.take_disk_woke() {
                    let ready = lp.ready.lock().expect("lock poisoned").pop_front();
                    return ready.or_else(|| inner.sink.try_recv().ok());
                }
            }
        }
        if left.is_zero() {
            // An event sink's event may have come with the wake-up
            // this poll took.
            let ready = lp.ready.lock().expect("lock poisoned").pop_front();
            return ready.or_else(|| inner.sink.try_recv().ok());
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        for h in &self.inner.event_loop.helpers {
            h.kick().wake();
        }
        self.inner.event_loop.io.wake();
        // Wakes the accept thread (a shut-down listening socket fails
        // `accept` at once on Linux).
        let _ = rustix::net::shutdown(&self.inner.listener, rustix::net::Shutdown::Both);
        let tracked = std::mem::take(&mut *self.inner.conns.lock().expect("lock poisoned"));
        for (_, handle) in tracked.handles {
            match handle {
                Handle::Socket(c) => {
                    let _ = c.shutdown(Shutdown::Both);
                }
                Handle::Link(l) => {
                    if let Some(l) = l.upgrade() {
                        l.shutdown();
                    }
                }
            }
        }
        self.inner.outbound.lock().expect("lock poisoned").clear();
        let threads: Vec<_> = self
            .inner
            .threads
            .lock()
            .expect("lock poisoned")
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// How long a port in use is tried again before start-up fails.
const BIND_RETRY: Duration = Duration::from_secs(2);

/// Binds `addr`, trying again for [`BIND_RETRY`] while it is in use: a
/// process restarted right after it was killed finds its port still held
/// for a few milliseconds (measured: 5-11 ms here), because the kernel
/// tears a dead process's io_uring down asynchronously and its armed
/// accept holds the listening socket until then.
fn bind_retrying(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let deadline = std::time::Instant::now() + BIND_RETRY;
    let mut logged = false;
    loop {
        match TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !logged {
                    logged = true;
                    tracing::info!(%addr, "address in use (a previous process's socket closing?); trying again");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

fn spawn(inner: &Arc<Inner>, name: &str, f: impl FnOnce() + Send + 'static) {
    let h = std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawning a transport thread");
    let mut threads = inner.threads.lock().expect("lock poisoned");
    // Finished threads' handles go (dropping one releases the thread), so a
    // thread per connection does not pile up over a server's life.
    threads.retain(|t| !t.is_finished());
    threads.push(h);
}

/// The transport's handles on its open connections, to close them at
/// shutdown (a connector blocked in a handshake, a loop that is gone).
///
/// An established connection is held by a weak reference to its link, so
/// it costs no descriptor of its own: one descriptor per connection is
/// what lets one process hold a connection from each of 10,000 masters
/// under a 20,000-descriptor limit. Only a connector's socket, before it
/// has a link, is held by a duplicate descriptor (connectors are few).
#[derive(Default)]
struct Tracked {
    handles: HashMap<SocketAddr, Handle>,
    /// Entries after the last purge of closed connections: the next
    /// purge comes when the map has doubled, so tracking costs O(1)
    /// amortised however many connections are open.
    purged_len: usize,
}

enum Handle {
    /// A duplicate of a connector's socket (until the connection has a
    /// link).
    Socket(TcpStream),
    /// An established connection.
    Link(std::sync::Weak<Link>),
}

impl Tracked {
    fn insert(&mut self, addr: SocketAddr, handle: Handle) {
        self.handles.insert(addr, handle);
        if self.handles.len() > 2 * self.purged_len.max(64) {
            self.handles.retain(|_, h| match h {
                Handle::Socket(c) => c.peer_addr().is_ok(),
                Handle::Link(l) => l.strong_count() > 0,
            });
            self.purged_len = self.handles.len();
        }
    }
}

/// Keeps a duplicate of a connector's socket, to close it at shutdown
/// while its handshake blocks ([`track_link`] replaces it once the
/// connection is established).
fn track(inner: &Inner, s: &TcpStream) {
    let Ok(addr) = s.peer_addr() else { return };
    if let Ok(c) = s.try_clone() {
        let mut conns = inner.conns.lock().expect("lock poisoned");
        conns.insert(addr, Handle::Socket(c));
    }
}

/// Keeps a weak handle on an established connection, to close it at
/// shutdown (a duplicate descriptor kept for it by [`track`] is closed).
fn track_link(inner: &Inner, addr: SocketAddr, link: &Arc<Link>) {
    let mut conns = inner.conns.lock().expect("lock poisoned");
    conns.insert(addr, Handle::Link(Arc::downgrade(link)));
}

/// Drops the shutdown handle of the connection to `addr`, so that closing
/// the connection's own handles closes its socket now: the kernel then
/// resets a peer still sending (a shut-down socket whose descriptor lives
/// on keeps accepting bytes into its buffer, and its descriptor).
fn untrack(inner: &Inner, addr: SocketAddr) {
    inner
        .conns
        .lock()
        .expect("lock poisoned")
        .handles
        .remove(&addr);
}

/// Closes a connection that passed a bound (logged at most once a second).
fn close_for_bound(inner: &Inner, stream: &TcpStream, addr: SocketAddr, why: &str) {
    inner.admission.note_refusal(addr, why);
    let _ = stream.shutdown(Shutdown::Both);
    untrack(inner, addr);
}

/// Why reading a frame stopped.
enum ReadError {
    /// The peer sent something that is not a valid frame.
    BadInput(FrameError),
    /// The peer closed the connection (or reset it).
    Closed(String),
    /// The connection failed.
    Io(String),
    /// The connection passed a bound (admission): closed, logged at most
    /// once a second.
    Bound(&'static str),
}

impl ReadError {
    /// A failed read: the peer's close or reset, or another failure (a
    /// TLS record that does not decode is bad input, reported as such).
    fn from_io(e: &std::io::Error) -> ReadError {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        match e.kind() {
            ConnectionReset | ConnectionAborted | BrokenPipe => ReadError::Closed(e.to_string()),
            _ => ReadError::Io(e.to_string()),
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::BadInput(e) => write!(f, "{e}"),
            ReadError::Closed(e) | ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Bound(e) => write!(f, "{e}"),
        }
    }
}

/// Reads until a frame is complete (or the stream fails).
/// Reads until a frame is complete (or the stream fails). With a
/// `ticket`, the bytes buffered count against the admission bound; with a
/// `deadline`, the whole frame must arrive by then (however slowly the
/// peer trickles bytes).
fn read_frame(
    stream: &Link,
    dec: &mut FrameDecoder,
    ticket: Option<&mut Ticket>,
    deadline: Option<std::time::Instant>,
) -> Result<Frame, ReadError> {
    thread_local! {
        // One read buffer per reader thread, not zeroed per frame.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 << 10]);
    }
    BUF.with_borrow_mut(|buf| read_frame_with(stream, dec, buf, ticket, deadline))
}

fn read_frame_with(
    stream: &Link,
    dec: &mut FrameDecoder,
    buf: &mut [u8],
    mut ticket: Option<&mut Ticket>,
    deadline: Option<std::time::Instant>,
) -> Result<Frame, ReadError> {
    loop {
        match dec.next_frame() {
            Ok(Some(f)) => {
                if let Some(t) = ticket.as_deref_mut() {
                    let _ = t.account(dec.buffered());
                }
                return Ok(f);
            }
            Ok(None) => {}
            Err(e) => return Err(ReadError::BadInput(e)),
        }
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(ReadError::Bound("the handshake took too long"));
            }
            let _ = stream.socket().set_read_timeout(Some(left));
        }
        match stream.read(buf) {
            Ok(0) => return Err(ReadError::Closed("closed by the peer".into())),
            Ok(n) => {
                dec.push(&buf[..n]);
                if let Some(t) = ticket.as_deref_mut() {
                    t.account(dec.buffered()).map_err(ReadError::Bound)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) && deadline.is_none()
                    && ticket.as_deref().is_some_and(|t| t.is_client()) =>
            {
                return Err(ReadError::Bound("a client connection was idle too long"))
            }
            Err(e) => return Err(ReadError::from_io(&e)),
        }
    }
}

/// A connection [`welcome`] let in.
struct Welcomed {
    /// Read from.
    stream: Arc<Link>,
    /// Holds what came after the hello.
    dec: FrameDecoder,
    /// Who it is.
    peer: PeerId,
    /// Answered on (the same link).
    writer: Arc<Link>,
    /// Its token in the owner's poll ([`prepare`]).
    token: usize,
}

/// What an inbound connection's first frame decides, once its TLS
/// handshake (if any) is done: a hello from our cluster whose credential
/// admits its id is answered with ours, within the bounds on clients, and
/// the connection returned to be read (with the peer's id and the link to
/// answer on); a pass request is answered and closed; anything else is
/// refused. `None`: the connection is closed (the reason logged).
fn welcome(
    inner: &Arc<Inner>,
    stream: Arc<Link>,
    dec: FrameDecoder,
    addr: SocketAddr,
    ticket: &mut Ticket,
    first: Result<Frame, ReadError>,
) -> Option<Welcomed> {
    let inner = &**inner;
    let limits = inner.admission.limits();
    let (peer, wants_pass) = match first {
        Ok(Frame::Hello { peer, cluster }) if cluster == inner.cluster => (peer, false),
        Ok(Frame::PassRequest { peer, cluster }) if cluster == inner.cluster => (peer, true),
        Ok(Frame::Hello { cluster, .. }) => {
            reject(
                inner,
                stream.socket(),
                addr,
                &format!("hello from cluster {cluster}"),
            );
            return None;
        }
        Ok(Frame::PassRequest { cluster, .. }) => {
            reject(
                inner,
                stream.socket(),
                addr,
                &format!("pass request from cluster {cluster}"),
            );
            return None;
        }
        Ok(other) => {
            reject(
                inner,
                stream.socket(),
                addr,
                &format!("expected hello, got {}", other.kind_name()),
            );
            return None;
        }
        Err(ReadError::Bound(why)) => {
            close_for_bound(inner, stream.socket(), addr, why);
            return None;
        }
        Err(ReadError::Closed(why)) => {
            // Gone before it said who it is (a peer that gave up, a
            // port scan): nothing it sent was wrong.
            tracing::debug!(%addr, reason = %why, "connection closed before its hello");
            stream.shutdown();
            untrack(inner, addr);
            return None;
        }
        Err(why) => {
            reject(inner, stream.socket(), addr, &why.to_string());
            return None;
        }
    };
    if let Some(identity) = stream.identity() {
        if !identity.admits(peer) {
            stream.shutdown();
            untrack(inner, addr);
            refuse_credential(
                inner,
                addr,
                &format!("a {identity} certificate may not claim id {peer}"),
            );
            return None;
        }
    }
    if wants_pass {
        issue_pass(inner, &stream, addr, peer);
        return None;
    }
    // A configured peer is exempt from the client bounds; with TLS only a
    // replica's credential earns that (a master's is shared by all
    // masters, and any of them could claim another's id).
    let configured_peer = inner
        .outbound
        .lock()
        .expect("lock poisoned")
        .contains_key(&peer)
        && stream
            .identity()
            .is_none_or(|i| matches!(i, Identity::Replica(_)));
    if configured_peer {
        ticket.promote_to_peer();
        let _ = stream.socket().set_read_timeout(None);
    } else if !ticket.client_within_cap() {
        close_for_bound(
            inner,
            stream.socket(),
            addr,
            "client connections at their limit",
        );
        return None;
    } else {
        let _ = stream
            .socket()
            .set_read_timeout(Some(limits.client_idle_timeout));
    }
    let hello = Frame::Hello {
        peer: inner.id,
        cluster: inner.cluster,
    };
    let writer = stream.clone();
    if put(&writer, &hello, inner.cfg.answer_backlog_bytes_max).is_err() {
        return None;
    }
    tracing::debug!(peer, %addr, "peer connected");
    // From here on senders may use it: with a ring, through the ring.
    let token = prepare(inner, &writer, peer);
    // A peer we have no address for (a client) is answered on this
    // connection.
    inner
        .inbound
        .lock()
        .expect("lock poisoned")
        .insert(peer, writer.clone());
    Some(Welcomed {
        stream,
        dec,
        peer,
        writer,
        token,
    })
}

/// Answers a pass request ([`crate::rdma_pass`]) on a connection whose
/// credential admits `peer`, then closes it. Only a replica gets one:
/// replicas are the only peers that open RDMA connections.
fn issue_pass(inner: &Inner, stream: &Link, addr: SocketAddr, peer: PeerId) {
    let Some(book) = &inner.cfg.passes else {
        // Logged at most once a second: anyone may ask.
        stream.shutdown();
        refuse_credential(
            inner,
            addr,
            "an RDMA pass asked for, but nothing here listens for RDMA (is this node running with --transport rdma?)",
        );
        return;
    };
    let replica = match stream.identity() {
        Some(i) => matches!(i, Identity::Replica(_)),
        None => matches!(PeerClass::of(peer), PeerClass::Replica(_)),
    };
    if !replica {
        stream.shutdown();
        refuse_credential(
            inner,
            addr,
            &format!("an RDMA pass asked for by {peer}, which is not a replica"),
        );
        return;
    }
    let pass = book.issue(peer);
    match send_frame(stream, &Frame::Pass(pass)) {
        Ok(()) => tracing::debug!(peer, %addr, "RDMA pass issued"),
        Err(e) => tracing::debug!(peer, %addr, error = %e, "could not send an RDMA pass"),
    }
    stream.shutdown();
    untrack(inner, addr);
}

/// Fetches a pass for RDMA connections to `issuer` at `addr` (the address
/// it listens on for both TCP and RDMA), as `id` of `cluster`, over a
/// connection of its own: mutual TLS with `tls` (and the issuer's
/// certificate must admit `issuer`), plain TCP without.
pub fn fetch_pass(
    addr: SocketAddr,
    id: PeerId,
    cluster: u64,
    tls: Option<&Tls>,
    issuer: PeerId,
    timeout: Duration,
) -> Result<Pass, PassFetchError> {
    use PassFetchError::{Refused, Unreachable};
    let deadline = std::time::Instant::now() + timeout;
    let sock = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| Unreachable(format!("connect: {e}")))?;
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(timeout));
    let link = match tls {
        None => Link::plain(sock),
        Some(t) => {
            let l = Link::connect_tls(sock, t, deadline).map_err(|e| Refused(e.to_string()))?;
            if !l.identity().is_some_and(|i| i.admits(issuer)) {
                l.shutdown();
                let who = l.identity().map_or("no".to_string(), |i| i.to_string());
                return Err(Refused(format!(
                    "{addr} presented a {who} certificate, not one of peer {issuer}"
                )));
            }
            l
        }
    };
    let frame = Frame::PassRequest { peer: id, cluster };
    link.write_all(&frame.to_bytes())
        .map_err(|e| Refused(format!("sending the request: {e}")))?;
    let mut dec = FrameDecoder::new();
    let got = read_frame(&link, &mut dec, None, Some(deadline));
    link.shutdown();
    match got {
        Ok(Frame::Pass(p)) => Ok(p),
        Ok(other) => Err(Refused(format!(
            "expected a pass, got {}",
            other.kind_name()
        ))),
        Err(e) => Err(Refused(format!("no pass: {e}"))),
    }
}

/// Why [`fetch_pass`] got no pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassFetchError {
    /// Nothing answered at the address (the peer is down or restarting).
    #[error("{0}")]
    Unreachable(String),
    /// Something answered and gave no pass: a credential refused, a node
    /// that does not listen for RDMA, a timeout mid-exchange.
    #[error("{0}")]
    Refused(String),
}

/// Closes a connection whose credential failed (no certificate, another
/// CA, expired, an identity that may not claim its id): counted, logged
/// at most once a second (a scanner must not flood the log).
fn refuse_credential(inner: &Inner, addr: SocketAddr, why: &str) {
    if !inner.shutdown.load(Ordering::SeqCst) {
        inner.rejected_conns.fetch_add(1, Ordering::Relaxed);
        inner.admission.note_refusal(addr, why);
    }
    untrack(inner, addr);
}

fn reject(inner: &Inner, stream: &TcpStream, addr: SocketAddr, why: &str) {
    if !inner.shutdown.load(Ordering::SeqCst) {
        inner.rejected_conns.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%addr, reason = why, "closing connection: bad input");
    }
    let _ = stream.shutdown(Shutdown::Both);
    untrack(inner, addr);
}

/// Puts a frame on a connection, never waiting for the socket (the loop
/// must not block): the frame waits in the connection's bounded backlog
/// instead.
fn put(link: &Link, frame: &Frame, backlog_max: usize) -> Result<(), SendError> {
    let mut b = BytesMut::new();
    frame.encode(&mut b);
    link.send(&b, backlog_max)
}

/// How many bytes may wait for `peer` (see [`TcpConfig::send_backlog_bytes_max`]).
fn backlog_max(inner: &Inner, peer: PeerId) -> usize {
    match PeerClass::of(peer) {
        PeerClass::Replica(_) => inner.cfg.replica_backlog_bytes_max,
        _ => inner.cfg.send_backlog_bytes_max,
    }
}

/// What a frame waiting for a connection counts against the bound.
fn queued_size(frame: &Frame) -> usize {
    const OVERHEAD: usize = 64;
    OVERHEAD
        + match frame {
            Frame::Message(p) => p.len(),
            Frame::Write { bytes, .. } => bytes.len(),
            _ => 0,
        }
}

/// A peer let more bytes pile up than its bound: counted and logged; the
/// caller closes its connection.
fn declare_slow(inner: &Inner, peer: PeerId, why: &SendError) {
    inner.slow_peers.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(peer, reason = %why, "peer declared slow: connection closed");
}

fn send_frame(writer: &Link, frame: &Frame) -> std::io::Result<()> {
    let mut b = BytesMut::new();
    frame.encode(&mut b);
    writer.write_all(&b)
}

/// What a received frame means for its connection.
enum Verdict {
    /// Go on reading.
    Keep,
    /// The connection failed (an acknowledgement could not be sent).
    Close,
    /// Bad input: close it and log why.
    Reject(&'static str),
}

/// Handles one frame from `peer` in the loop: messages and write completions go to `deliver`,
/// writes are applied and acknowledged on `acks` (a connection the peer
/// opened; a write on one we opened is bad input, as is a second hello).
fn handle_frame(
    inner: &Inner,
    frame: Frame,
    peer: PeerId,
    identity: Option<Identity>,
    acks: Option<&Link>,
    deliver: impl FnOnce(Event),
) -> Verdict {
    match frame {
        Frame::Message(payload) => {
            deliver(Event::Message {
                from: peer,
                payload,
            });
            Verdict::Keep
        }
        Frame::Write {
            id,
            region,
            offset,
            bytes,
        } => {
            let Some(w) = acks else {
                return Verdict::Reject("a write on our own connection");
            };
            // Only a coordinator replica writes configuration into us.
            if identity.is_some_and(|i| !matches!(i, Identity::Replica(_))) {
                return Verdict::Reject("a one-sided write from a peer that is not a replica");
            }
            let status = apply_write(&inner.regions, region, offset, &bytes);
            let ack = Frame::WriteAck { id, status };
            if let Err(e) = put(w, &ack, inner.cfg.answer_backlog_bytes_max) {
                if matches!(e, SendError::Backlogged { .. }) {
                    declare_slow(inner, peer, &e);
                }
                return Verdict::Close;
            }
            Verdict::Keep
        }
        Frame::WriteAck { id, status } => {
            // Acknowledgements come back on the connection we wrote on;
            // one on a connection the peer opened is forged.
            if acks.is_some() {
                return Verdict::Reject("a write acknowledgement on a connection the peer opened");
            }
            deliver(Event::WriteDone {
                to: peer,
                id,
                status,
            });
            Verdict::Keep
        }
        Frame::Hello { .. } => Verdict::Reject("a second hello"),
        Frame::PassRequest { .. } | Frame::Pass(_) => {
            Verdict::Reject("a pass frame on an established connection")
        }
    }
}

/// Whether `out` is still the outbound side of `peer` (not removed with
/// [`Transport::remove_peer`]).
fn wanted(inner: &Inner, peer: PeerId, out: &Arc<Outbound>) -> bool {
    !inner.shutdown.load(Ordering::SeqCst)
        && inner
            .outbound
            .lock()
            .expect("lock poisoned")
            .get(&peer)
            .is_some_and(|o| Arc::ptr_eq(o, out))
}

/// How one connection attempt ended.
enum Attempt {
    /// Connected and handed to the loop (or the peer was removed meanwhile).
    Done,
    /// Nothing answered, or the connection failed before it was handed over.
    Failed,
    /// The peer's credential was refused (tried again no sooner than a
    /// second later: a misconfigured peer must not flood the log).
    Refused,
    /// Push connections are at their bound and none is idle: try later.
    Busy,
}

/// Connects to a coordinator replica and hands the connection to the loop;
/// the thread ends there, and when the connection closes, [`close`] starts
/// a new connector (so a peer costs a thread only while it is being
/// connected). Ends once the peer is removed.
fn connect_loop(inner: Arc<Inner>, peer: PeerId, addr: SocketAddr, out: Arc<Outbound>) {
    let mut backoff = inner.cfg.backoff_min;
    while wanted(&inner, peer, &out) {
        match connect_once(&inner, peer, addr, &out) {
            Attempt::Done => return,
            Attempt::Failed | Attempt::Busy => {
                sleep_unless_shutdown(&inner, backoff);
                backoff = (backoff * 2).min(inner.cfg.backoff_max);
            }
            Attempt::Refused => {
                sleep_unless_shutdown(&inner, backoff.max(Duration::from_secs(1)));
            }
        }
    }
}

/// Puts a push peer (a master) in line for a connection
/// ([`Outbound::lazy`]): a pool of at most [`CONNECTORS_MAX`] threads
/// connects them in turn, so a storm of new masters costs a few threads,
/// not one each.
fn want_connection(inner: &Arc<Inner>, peer: PeerId, out: &Arc<Outbound>) {
    let mut pool = inner.connect_pool.lock().expect("lock poisoned");
    pool.waiting.push_back((peer, out.clone()));
    if pool.threads < CONNECTORS_MAX {
        pool.threads += 1;
        drop(pool);
        let i = inner.clone();
        spawn(inner, "net-connect", move || connector(i));
    }
}

/// A pool thread: connects the push peers in line until none is left.
fn connector(inner: Arc<Inner>) {
    loop {
        let next = {
            let mut pool = inner.connect_pool.lock().expect("lock poisoned");
            match pool.waiting.pop_front() {
                Some(n) if !inner.shutdown.load(Ordering::SeqCst) => n,
                _ => {
                    pool.threads -= 1;
                    return;
                }
            }
        };
        let (peer, out) = next;
        if !wanted(&inner, peer, &out) {
            continue;
        }
        let addr = out.addr;
        let attempt = connect_once(&inner, peer, addr, &out);
        let mut slot = out.slot.lock().expect("lock poisoned");
        match attempt {
            Attempt::Done => {
                slot.connecting = false;
                slot.backoff = inner.cfg.backoff_min;
                slot.next_attempt = None;
                // Closed again before this (its close saw `connecting`
                // and left the reconnect to us): what waits needs one.
                if slot.stream.is_none() && !slot.queue.is_empty() && wanted(&inner, peer, &out) {
                    slot.connecting = true;
                    drop(slot);
                    want_connection(&inner, peer, &out);
                }
            }
            Attempt::Busy => {
                // Back in line (behind the others), a little later.
                drop(slot);
                sleep_unless_shutdown(&inner, Duration::from_millis(20));
                inner
                    .connect_pool
                    .lock()
                    .expect("lock poisoned")
                    .waiting
                    .push_back((peer, out.clone()));
            }
            Attempt::Failed | Attempt::Refused => {
                // What waits stays queued (bounded: one region, the
                // newest); the next send after the backoff tries again.
                let wait = if matches!(attempt, Attempt::Refused) {
                    slot.backoff.max(Duration::from_secs(1))
                } else {
                    slot.backoff
                };
                slot.connecting = false;
                slot.next_attempt = Some(std::time::Instant::now() + wait);
                slot.backoff = (slot.backoff * 2).min(inner.cfg.backoff_max);
            }
        }
    }
}

/// Closes the least recently used push connections with nothing left to
/// send, to make room under [`Limits::push_conns_max`]: a sixteenth of
/// the bound at a time, so that a storm of pushes to new masters (an
/// enlistment storm) looks through the connections once per sixteenth,
/// not once per connection. `false`: every one is busy.
fn evict_idle_push_conns(inner: &Arc<Inner>) -> bool {
    let lp = &inner.event_loop;
    let batch = (inner.admission.limits().push_conns_max / 16).max(1);
    let mut conns = lp.conns.lock().expect("lock poisoned");
    let mut idle: Vec<(std::time::Instant, mio::Token)> = Vec::new();
    for (t, c) in conns.iter() {
        if let ConnKind::Outbound { out, .. } = &c.kind {
            if !out.lazy || c.stream.backlog() > 0 {
                continue;
            }
            idle.push((out.slot.lock().expect("lock poisoned").last_used, *t));
        }
    }
    if idle.is_empty() {
        return false;
    }
    if idle.len() > batch {
        idle.select_nth_unstable(batch - 1);
        idle.truncate(batch);
    }
    let closing: Vec<LoopConn> = idle.iter().filter_map(|(_, t)| conns.remove(t)).collect();
    drop(conns);
    tracing::debug!(
        closed = closing.len(),
        "push connections closed for room (least recently used)"
    );
    for conn in closing {
        close(inner, conn);
    }
    true
}

/// One attempt to connect to `peer` and hand the connection to the loop
/// with what was queued for it.
fn connect_once(
    inner: &Arc<Inner>,
    peer: PeerId,
    addr: SocketAddr,
    out: &Arc<Outbound>,
) -> Attempt {
    if out.lazy {
        let max = inner.admission.limits().push_conns_max;
        while inner.push_conns.load(Ordering::SeqCst) >= max {
            if !evict_idle_push_conns(inner) {
                return Attempt::Busy;
            }
        }
    }
    let sock = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(peer, %addr, error = %e, "connect failed; retrying");
            return Attempt::Failed;
        }
    };
    let _ = sock.set_nodelay(true);
    // A peer that stops reading must not block senders for long.
    let _ = sock.set_write_timeout(Some(Duration::from_secs(1)));
    track(inner, &sock);
    let stream = match &inner.cfg.tls {
        None => Link::plain(sock),
        Some(tls) => {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            match Link::connect_tls(sock, tls, deadline) {
                Ok(l) if l.identity().is_some_and(|i| i.admits(peer)) => l,
                Ok(l) => {
                    l.shutdown();
                    let who = l.identity().map_or("no".to_string(), |i| i.to_string());
                    refuse_credential(
                        inner,
                        addr,
                        &format!("peer {peer} presented a {who} certificate"),
                    );
                    return Attempt::Refused;
                }
                Err(e) => {
                    refuse_credential(inner, addr, &format!("peer {peer}: {e}"));
                    return Attempt::Refused;
                }
            }
        }
    };
    let stream = Arc::new(stream);
    let hello = Frame::Hello {
        peer: inner.id,
        cluster: inner.cluster,
    };
    if stream.write_all(&hello.to_bytes()).is_err() {
        untrack(inner, addr);
        return Attempt::Failed;
    }
    // The peer answers with its own hello, then with write acks.
    let mut dec = FrameDecoder::new();
    let _ = stream
        .socket()
        .set_read_timeout(Some(Duration::from_secs(5)));
    match read_frame(&stream, &mut dec, None, None) {
        Ok(Frame::Hello { peer: p, cluster }) if p == peer && cluster == inner.cluster => {}
        Ok(other) => {
            reject(
                inner,
                stream.socket(),
                addr,
                &format!("bad hello answer: {}", other.kind_name()),
            );
            return Attempt::Failed;
        }
        Err(why) => {
            tracing::debug!(peer, %addr, reason = %why, "no hello answer");
            stream.shutdown();
            untrack(inner, addr);
            return Attempt::Failed;
        }
    }
    let _ = stream.socket().set_read_timeout(None);
    let reader = stream.clone();
    let token;
    // Hand the connection over: what was queued first, in order.
    let generation = {
        let mut slot = out.slot.lock().expect("lock poisoned");
        if !wanted(inner, peer, out) {
            // Removed while we connected (`remove_peer` takes the map
            // entry before this lock): nobody will use or close it.
            drop(slot);
            stream.shutdown();
            untrack(inner, addr);
            return Attempt::Done;
        }
        while let Some(f) = slot.queue.pop_front() {
            slot.queued_bytes -= queued_size(&f);
            // Never waiting for the socket while the slot is locked
            // (the owner's sends take that lock).
            if let Err(e) = put(&stream, &f, backlog_max(inner, peer)) {
                if matches!(e, SendError::Backlogged { .. }) {
                    declare_slow(inner, peer, &e);
                }
                drop(slot);
                stream.shutdown();
                untrack(inner, addr);
                return Attempt::Failed;
            }
        }
        token = prepare(inner, &stream, peer);
        slot.generation += 1;
        slot.stream = Some(stream);
        slot.last_used = std::time::Instant::now();
        slot.stuck = None;
        if out.lazy {
            inner.push_conns.fetch_add(1, Ordering::SeqCst);
        }
        slot.generation
    };
    if out.lazy {
        tracing::debug!(peer, %addr, "connected");
    } else {
        tracing::info!(peer, %addr, "connected");
    }
    // The acknowledgements come back on this connection; the loop
    // reads it now, and its close starts the next connector.
    adopt(
        inner,
        reader,
        dec,
        peer,
        addr,
        ConnKind::Outbound {
            out: out.clone(),
            generation,
        },
        None,
        token,
    );
    Attempt::Done
}

/// Gives a connection about to be handed to senders its token in the
/// loop, and with a ring, puts it in ring mode (from then on the ring
/// alone writes its socket).
fn prepare(inner: &Inner, link: &Link, peer: PeerId) -> usize {
    let lp = &inner.event_loop;
    let token = lp.next_token.fetch_add(1, Ordering::Relaxed);
    if let Some(u) = lp.ring_of(peer, token) {
        u.attach(link, token);
    }
    token
}

impl EventLoop {
    /// The ring that runs connection `token` to `peer`: the owner's for a
    /// coordinator replica (the commit path stays on one thread), an I/O
    /// thread's for anyone else, spread by token. `None`: epoll.
    fn ring_of(&self, peer: PeerId, token: usize) -> Option<&uring::Uring> {
        let LoopIo::Uring(own) = &self.io else {
            return None;
        };
        if self.helpers.is_empty() || matches!(PeerClass::of(peer), PeerClass::Replica(_)) {
            return Some(own);
        }
        Some(&self.helpers[token % self.helpers.len()])
    }
}

/// Events the rings may queue for the owner; past it they stop reading
/// clients and masters (their TCP windows close) until the owner has taken
/// half of them.
pub const READY_EVENTS_MAX: usize = 8192;

/// An I/O thread ([`TcpConfig::io_threads`]): runs ring `n + 1` until the
/// transport shuts down, and wakes the owner when it queued events.
fn io_thread(inner: &Arc<Inner>, n: usize) {
    let lp = &inner.event_loop;
    let ring = &lp.helpers[n];
    let cpus = &inner.cfg.pin_cpus;
    if !cpus.is_empty() {
        crate::affinity::pin_current_thread(cpus[(n + 1) % cpus.len()], "net-io");
    }
    while !inner.shutdown.load(Ordering::SeqCst) {
        ring.poll(inner, lp, Duration::from_millis(100));
        if !lp.ready.lock().expect("lock poisoned").is_empty() {
            lp.io.wake();
        }
        close_idle_clients(inner, lp);
    }
}

/// Hands a connection to the loop under the token
/// [`prepare`] gave it: frames already buffered by the handshake are
/// delivered first.
#[allow(clippy::too_many_arguments)]
fn adopt(
    inner: &Arc<Inner>,
    stream: Arc<Link>,
    dec: FrameDecoder,
    peer: PeerId,
    addr: SocketAddr,
    kind: ConnKind,
    ticket: Option<Ticket>,
    token: usize,
) {
    use std::os::fd::AsRawFd;
    track_link(inner, addr, &stream);
    let lp = &inner.event_loop;
    let mut conn = LoopConn {
        token,
        stream,
        dec,
        peer,
        addr,
        kind,
        ticket,
        last_read: std::time::Instant::now(),
    };
    let epoll = match (&lp.io, lp.ring_of(peer, token)) {
        (LoopIo::Epoll(e), _) => e,
        (LoopIo::Uring(_), None) => unreachable!("a ring runs every connection"),
        (LoopIo::Uring(_), Some(u)) => {
            // What came with the hello and sits in the session (the ring
            // sees only what arrives from now on): into the decoder.
            match conn.stream.receive(&[], &mut conn.dec) {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    close(inner, conn);
                    return;
                }
            }
            if !drain_frames(inner, &mut conn) {
                close(inner, conn);
                return;
            }
            if let Some(t) = conn.ticket.as_mut() {
                if let Err(why) = t.account(conn.dec.buffered()) {
                    inner.admission.note_refusal(conn.addr, why);
                    close(inner, conn);
                    return;
                }
            }
            u.adopt(conn);
            return;
        }
    };
    if conn.stream.socket().set_nonblocking(true).is_err() {
        close(inner, conn);
        return;
    }
    // What arrived with the hello and sits in the session's buffers
    // (invisible to an edge-triggered poll): read it all now.
    let mut buf = vec![0u8; 17 << 10];
    loop {
        match conn.stream.read(&mut buf) {
            Ok(0) => {
                close(inner, conn);
                return;
            }
            Ok(n) => {
                conn.dec.push(&buf[..n]);
                // A fast sender must not make this read grow the buffer
                // past its bound (this may run on the accept thread).
                if let Some(t) = conn.ticket.as_mut() {
                    if let Err(why) = t.account(conn.dec.buffered()) {
                        inner.admission.note_refusal(conn.addr, why);
                        close(inner, conn);
                        return;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                close(inner, conn);
                return;
            }
        }
    }
    let mut conns = lp.conns.lock().expect("lock poisoned");
    // Frames that came with the hello (a client sends both at once).
    if !drain_frames(inner, &mut conn) {
        close(inner, conn);
        return;
    }
    let fd = conn.stream.socket().as_raw_fd();
    // Writable too: a send the socket could not take all of waits in the
    // link's backlog, flushed when the socket drains.
    if let Err(e) = epoll.registry.register(
        &mut mio::unix::SourceFd(&fd),
        mio::Token(token),
        mio::Interest::READABLE | mio::Interest::WRITABLE,
    ) {
        tracing::warn!(peer, %addr, error = %e, "cannot poll a connection");
        close(inner, conn);
        return;
    }
    conns.insert(mio::Token(token), conn);
    drop(conns);
    let _ = epoll.waker.wake();
}

/// Handles the complete frames in a connection's decoder; false if the
/// connection must close (bad input).
fn drain_frames(inner: &Inner, conn: &mut LoopConn) -> bool {
    let lp = &inner.event_loop;
    let replica = conn.is_replica();
    loop {
        let frame = match conn.dec.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return true,
            Err(e) => {
                reject(inner, conn.stream.socket(), conn.addr, &e.to_string());
                return false;
            }
        };
        let acks = match &conn.kind {
            ConnKind::Inbound { writer } => Some(&**writer),
            ConnKind::Outbound { .. } => None,
        };
        let identity = conn.stream.identity();
        // A replica's events go first (`ReadyQueue`).
        let verdict = handle_frame(inner, frame, conn.peer, identity, acks, |ev| {
            lp.ready.lock().expect("lock poisoned").push(ev, replica)
        });
        match verdict {
            Verdict::Keep => {}
            Verdict::Close => return false,
            Verdict::Reject(why) => {
                reject(inner, conn.stream.socket(), conn.addr, why);
                return false;
            }
        }
    }
}

/// Forgets a connection the loop was reading.
fn close(inner: &Arc<Inner>, conn: LoopConn) {
    use std::os::fd::AsRawFd;
    conn.stream.shutdown();
    let lp = &inner.event_loop;
    match &lp.io {
        LoopIo::Epoll(e) => {
            let fd = conn.stream.socket().as_raw_fd();
            let _ = e.registry.deregister(&mut mio::unix::SourceFd(&fd));
        }
        LoopIo::Uring(_) => {
            if let Some(u) = lp.ring_of(conn.peer, conn.token) {
                u.forget(conn.token)
            }
        }
    }
    untrack(inner, conn.addr);
    match conn.kind {
        ConnKind::Inbound { writer } => {
            let mut inbound = inner.inbound.lock().expect("lock poisoned");
            if inbound
                .get(&conn.peer)
                .is_some_and(|w| Arc::ptr_eq(w, &writer))
            {
                inbound.remove(&conn.peer);
            }
        }
        ConnKind::Outbound { out, generation } => {
            let current = {
                let mut slot = out.slot.lock().expect("lock poisoned");
                let current = slot.generation == generation;
                if current {
                    if let Some(s) = slot.stream.take() {
                        s.shutdown();
                    }
                }
                current
            };
            if out.lazy {
                inner.push_conns.fetch_sub(1, Ordering::SeqCst);
                // A push peer is connected again only when something
                // waits to be sent.
                if current && wanted(inner, conn.peer, &out) {
                    let mut slot = out.slot.lock().expect("lock poisoned");
                    if !slot.queue.is_empty() && !slot.connecting {
                        slot.connecting = true;
                        drop(slot);
                        want_connection(inner, conn.peer, &out);
                    }
                }
                return;
            }
            // The connection the senders used is gone: connect again
            // (after the shortest backoff), unless the peer was removed.
            if current && wanted(inner, conn.peer, &out) {
                let (i, peer, addr) = (inner.clone(), conn.peer, conn.addr);
                spawn(inner, "net-connect", move || {
                    sleep_unless_shutdown(&i, i.cfg.backoff_min);
                    connect_loop(i, peer, addr, out)
                });
            }
        }
    }
}

/// The loop on epoll: waits up to `timeout` for readiness, reads every
/// ready connection until it would block, and queues what arrived.
fn poll_epoll(inner: &Arc<Inner>, lp: &EventLoop, epoll: &EpollIo, timeout: Duration) {
    let mut scratch = epoll.scratch.lock().expect("lock poisoned");
    let (buf, events) = &mut *scratch;
    {
        let mut poll = epoll.poll.lock().expect("lock poisoned");
        if let Err(e) = poll.poll(events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::warn!(error = %e, "poll failed");
            }
            return;
        }
    }
    for ev in events.iter() {
        let token = ev.token();
        if token == WAKE {
            continue;
        }
        let mut conns = lp.conns.lock().expect("lock poisoned");
        let Some(conn) = conns.get_mut(&token) else {
            continue;
        };
        let mut keep = true;
        if ev.is_writable() {
            if let Err(e) = conn.stream.flush() {
                tracing::info!(peer = conn.peer, addr = %conn.addr, error = %e, "connection failed");
                keep = false;
            }
        }
        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
        while keep && readable {
            match conn.stream.read(buf) {
                Ok(0) => {
                    if !inner.shutdown.load(Ordering::SeqCst) {
                        tracing::info!(peer = conn.peer, addr = %conn.addr, "connection closed");
                    }
                    keep = false;
                    break;
                }
                Ok(n) => {
                    conn.dec.push(&buf[..n]);
                    conn.last_read = std::time::Instant::now();
                    if !drain_frames(inner, conn) {
                        keep = false;
                        break;
                    }
                    if let Some(t) = conn.ticket.as_mut() {
                        if let Err(why) = t.account(conn.dec.buffered()) {
                            // Logged here; closed (and untracked) below.
                            inner.admission.note_refusal(conn.addr, why);
                            keep = false;
                            break;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::info!(peer = conn.peer, addr = %conn.addr, error = %e, "connection failed");
                    keep = false;
                    break;
                }
            }
        }
        if !keep {
            let conn = conns.remove(&token).expect("present");
            drop(conns);
            close(inner, conn);
        }
    }
    close_idle_clients(inner, lp);
}

/// Closes client connections idle past the bound (checked at most once a
/// second).
fn close_idle_clients(inner: &Arc<Inner>, lp: &EventLoop) {
    let now = std::time::Instant::now();
    {
        let mut last = lp.idle_sweep.lock().expect("lock poisoned");
        if now.duration_since(*last) < Duration::from_secs(1) {
            return;
        }
        *last = now;
    }
    let idle = inner.admission.limits().client_idle_timeout;
    let mut conns = lp.conns.lock().expect("lock poisoned");
    let stale: Vec<mio::Token> = conns
        .iter()
        .filter(|(_, c)| {
            c.ticket.as_ref().is_some_and(|t| t.is_client())
                && now.duration_since(c.last_read) >= idle
        })
        .map(|(t, _)| *t)
        .collect();
    // Push connections with nothing sent lately (the next push opens
    // one), and those whose peer has taken none of their unsent bytes for
    // as long (a master that stopped reading: its writes are dropped past
    // PUSH_UNSENT_MAX, so the backlog bound would never close it).
    let mut stuck = Vec::new();
    let push_idle = inner.cfg.push_conn_idle;
    let unused: Vec<mio::Token> = conns
        .iter()
        .filter(|(_, c)| match &c.kind {
            ConnKind::Outbound { out, .. } if out.lazy => {
                let unsent = c.stream.backlog();
                let mut slot = out.slot.lock().expect("lock poisoned");
                if unsent == 0 {
                    slot.stuck = None;
                    return now.duration_since(slot.last_used) >= push_idle;
                }
                match slot.stuck {
                    Some((since, was)) if unsent >= was => {
                        if now.duration_since(since) >= push_idle {
                            stuck.push((c.peer, unsent));
                            return true;
                        }
                    }
                    _ => slot.stuck = Some((now, unsent)),
                }
                false
            }
            ConnKind::Outbound { .. } | ConnKind::Inbound { .. } => false,
        })
        .map(|(t, _)| *t)
        .collect();
    for (peer, unsent) in &stuck {
        inner.slow_peers.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            peer,
            unsent,
            "push peer took nothing for {} ms: declared slow, connection closed",
            push_idle.as_millis()
        );
    }
    let closing: Vec<LoopConn> = stale.iter().filter_map(|t| conns.remove(t)).collect();
    let idle_pushes: Vec<LoopConn> = unused.iter().filter_map(|t| conns.remove(t)).collect();
    drop(conns);
    for conn in closing {
        inner
            .admission
            .note_refusal(conn.addr, "a client connection was idle too long");
        close(inner, conn);
    }
    if !idle_pushes.is_empty() {
        tracing::debug!(
            closed = idle_pushes.len(),
            "push connections idle; closed (the next push opens one)"
        );
    }
    for conn in idle_pushes {
        close(inner, conn);
    }
}

fn sleep_unless_shutdown(inner: &Inner, d: Duration) {
    let step = Duration::from_millis(10);
    let mut left = d;
    while !left.is_zero() && !inner.shutdown.load(Ordering::SeqCst) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}
