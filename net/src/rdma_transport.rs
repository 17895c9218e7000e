//! [`Transport`] over RDMA (feature `rdma`): messages and one-sided writes
//! both as RDMA WRITEs into the peer's registered memory (messages into a
//! ring, writes into declared regions).
//!
//! # One loop, no thread per connection
//!
//! Every established connection, in and out, belongs to one event loop
//! (the transport's `Core`): it posts work requests, polls the completion
//! queues, reads the message rings and returns credit, never waiting on
//! the NIC. Who runs the loop is the only difference between the two
//! ways to start a transport:
//!
//! - [`RdmaConfig::inline`]: the owner's thread, in
//!   [`Transport::next_event`] and [`Transport::flush`], beside whatever
//!   else it waits on ([`Transport::ready_fd`] is an epoll descriptor over
//!   the connections' completion and `rdma_cm` channels). A message from
//!   the owner's `send` to the peer's owner crosses no thread at all: this
//!   is the commit path of a coordinator on RDMA.
//! - otherwise one `rdma-driver` thread runs it and delivers into
//!   [`Transport::events`] (masters, tests).
//!
//! The loop polls each completion queue; before it sleeps it arms every
//! queue whose last event it consumed (a request for one event at the next
//! completion), polls once more (a completion between the last poll and
//! the arm raises no event), and only then sleeps: nothing is missed and
//! nobody busy-polls for long on a small machine (it spins
//! [`crate::rdma::RECV_SPIN`] first, where a reply is often already on its
//! way).
//!
//! Threads besides the loop: one accepts (admission, `rdma_accept`, the
//! advertisement); one per peer connects while it is not connected (pass,
//! connect, advertisement) and hands the connection over; a short-lived
//! one closes each failed connection (`rdma_disconnect` waits for the
//! peer). None lives per connection or per peer.
//!
//! # Messages and writes
//!
//! Per configured peer the loop keeps a bounded queue of frames (past
//! [`RdmaConfig::queue_frames_max`] new ones are dropped, counted in
//! [`RdmaTransport::dropped_frames`]) and one outbound connection.
//!
//! - **Messages** (Raft appends with their entries, votes, acks) are
//!   written one-sidedly into the **message ring** the peer registered for
//!   this connection ([`crate::ring`] has the protocol: framing, who owns
//!   which bytes, credits). What is queued goes in one post: the frames as
//!   one RDMA WRITE, then the ring's tail word with an immediate value
//!   (the tail's low 32 bits) that completes one of the receiver's posted
//!   receives. No receive buffer is consumed per message. One post is in
//!   flight per connection; what is sent meanwhile waits for its
//!   completion and goes in the next (batching is the pipelining).
//! - **Writes** into a peer's declared regions are checked against the
//!   advertisement (unknown region, out of bounds) and RDMA-WRITTEN, in
//!   order with the messages before them; each completion becomes an
//!   [`Event::WriteDone`] (`Landed`: in the peer's memory; `Refused`: the
//!   peer revoked this writer). A write in flight when its connection
//!   closes completes as `Refused` (it may or may not have landed); the
//!   writer retries on its own timer.
//!
//! On an accepted connection the loop reads the ring up to the tail each
//! immediate names (the immediate completes after everything posted
//! before it has landed), delivers the frames, and returns credit (the
//! head, and how many immediates were reaped) with a two-sided SEND, one
//! in flight, later ones coalesced into it.
//!
//! # Regions are memory
//!
//! A one-sided write runs no code on the receiving side, so a region here
//! is memory the NIC writes, declared when the transport starts
//! ([`RdmaConfig::regions`]) and read with [`RdmaTransport::region`];
//! [`Transport::register_region`] (a callback region, as TCP uses) is
//! refused and logged. The fence is [`RdmaTransport::revoke`]: the owner
//! moves a writer's queue pair to the error state. With
//! [`RdmaConfig::exclusive_writer`] (a master's configuration region) one
//! peer at a time may write: [`RdmaTransport::grant_writes`] revokes every
//! other writer first, and a peer not granted is accepted with no region
//! registered on its connection; a sender whose write names a region the
//! peer did not advertise reconnects once for a fresh advertisement
//! before it reports `NoSuchRegion`.
//!
//! # Admission
//!
//! A connection request says who it is from and which cluster, and, when
//! the listener has a [`RdmaConfig::passes`] book, must carry a pass that
//! the listener issued over an authenticated TCP connection
//! ([`crate::rdma_pass`]). The listener checks it before it accepts the
//! request: a request without a valid pass gets no registered memory, no
//! ring and no region key (the queue pair `rdma_cm` made for the request
//! is destroyed with it); it is refused, counted
//! ([`RdmaTransport::refused_requests`]) and logged at most once a second.
//! Admitted connections are bounded too: two live ones per peer (its
//! newest revokes its oldest) and 16 in all (past it, refused). Without
//! TLS (`--insecure`) a pass goes to whoever claims a replica's id, as
//! everything else does then.
//! With [`RdmaConfig::pass_fetch`] the connector fetches a pass over TCP
//! before it connects, again when it is half its lifetime old, and after
//! any failed connect (the listener may have restarted with a new key).
//!
//! # Connecting and closing
//!
//! A connect gives up after [`crate::rdma::CONNECT_TIMEOUT`] (a peer not
//! listening is refused at once) and the connector retries with a back-off
//! up to 250 ms. A connection whose peer disconnects (its `rdma_cm`
//! channel wakes the loop), whose work request fails, or that breaks the
//! ring's rules is closed and, if outbound, connected again.
//!
//! # Limits of this version
//!
//! Only configured peers (and ones added later) can be sent to: clients
//! use TCP. Messages up to a quarter of [`RdmaConfig::ring_bytes`] (larger
//! ones are dropped and logged).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel::{unbounded, Receiver};
use rustix::event::{epoll, eventfd, EventfdFlags};

use crate::rdma::{
    Cq, Incoming, RdmaConn, RdmaError, RdmaListener, RegionMemory, RemoteRegion, Revoker, SendKind,
    RECV_SLOTS, RECV_SPIN,
};
use crate::rdma_pass::{Pass, PassBook, RequestPrivate, PASS_TTL};
use crate::ring::{self, PlaceError, RingReader, RingWriter, RING_HEADER_BYTES};
use crate::tcp::PassFetchError;
use crate::tls::Tls;
use crate::{Event, PeerId, Region, RegionId, Transport, WriteStatus};

/// The region id a connection's message ring is advertised under
/// (reserved: a declared region may not use it).
pub const RING_REGION: RegionId = u32::MAX;
/// Default data bytes of a message ring (per accepted connection).
pub const RING_BYTES_DEFAULT: usize = 16 << 20;
/// A post carries at most this many bytes of frames.
pub const BATCH_BYTES_MAX: usize = 256 << 10;
/// Ring posts the sender may have unconsumed at the receiver: each one's
/// immediate takes one of the receiver's posted receives until its loop
/// reaps it, and a post that finds none is refused (receiver not ready).
const POSTS_UNCONSUMED_MAX: u64 = RECV_SLOTS as u64 - 4;
/// How often a connector that cannot connect says so at warn level.
const UNREACHABLE_WARN_EVERY: Duration = Duration::from_secs(10);
/// How long a sender with frames waiting may go without credit before it
/// gives the connection up.
const CREDIT_WAIT_MAX: Duration = Duration::from_secs(5);
/// Completions taken from one queue in one pass (the others get their
/// turn).
const COMPLETIONS_PER_PASS_MAX: usize = 64;
/// Events the loop holds for its owner; past it, it stops reading rings
/// (their credit is withheld, so the senders wait).
const READY_EVENTS_MAX: usize = 8192;
/// The epoll token of the kick eventfd.
const KICK_TOKEN: u64 = u64::MAX;

/// How an [`RdmaTransport`] runs.
#[derive(Clone, Debug)]
pub struct RdmaConfig {
    /// This node's id.
    pub id: PeerId,
    /// The cluster's id: connections from another cluster are refused.
    pub cluster: u64,
    /// Where to listen (an address routed over an RDMA device, or any).
    pub listen: SocketAddr,
    /// Peers to send to.
    pub peers: HashMap<PeerId, SocketAddr>,
    /// Regions peers may write: id and length.
    pub regions: Vec<(RegionId, usize)>,
    /// Frames queued per peer before new ones are dropped.
    pub queue_frames_max: usize,
    /// Data bytes of the message ring each accepted connection gets (a
    /// multiple of 8); a message may be up to a quarter of it.
    pub ring_bytes: usize,
    /// Only one peer at a time may connect (and so write): the one named
    /// by [`RdmaTransport::grant_writes`], nobody before. A master's
    /// configuration region is kept this way: granting a newer leader
    /// revokes the older one first.
    pub exclusive_writer: bool,
    /// The book whose passes admit connection requests (shared with this
    /// node's TCP side, which issues them); `None` admits any request of
    /// the cluster (only for the transport's own tests and benchmarks on
    /// a fabric nobody else reaches).
    pub passes: Option<Arc<PassBook>>,
    /// How this node fetches passes for its own connections; `None`: its
    /// requests carry none.
    pub pass_fetch: Option<PassFetch>,
    /// The owner's thread runs the event loop, in
    /// [`Transport::next_event`] and [`Transport::flush`] (waiting on
    /// [`Transport::ready_fd`] between them); [`Transport::events`] stays
    /// empty. Off: an `rdma-driver` thread runs it and delivers into
    /// `events()`.
    pub inline: bool,
}

/// Passes are fetched over TCP from the address the peer listens on for
/// RDMA (the same address and port), with these credentials.
#[derive(Clone, Debug)]
pub struct PassFetch {
    /// Mutual TLS, and the peer's certificate must admit its id; `None`:
    /// plain TCP (an insecure cluster).
    pub tls: Option<Tls>,
}

/// How long fetching a pass may take.
const PASS_FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// After a peer answered a pass request with no pass, the sender asks
/// again no sooner than this.
const PASS_REFUSED_RETRY: Duration = Duration::from_secs(2);
/// Live connections one peer may hold open to us; its next one revokes
/// its oldest.
const CONNECTIONS_PER_PEER_MAX: usize = 2;
/// Live accepted connections in all (each pins a message ring of
/// [`RdmaConfig::ring_bytes`]); past it, requests are refused.
const CONNECTIONS_MAX: usize = 16;
/// A refused connection request is logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

impl RdmaConfig {
    /// Defaults for node `id` listening on `listen`.
    pub fn new(id: PeerId, cluster: u64, listen: SocketAddr) -> RdmaConfig {
        RdmaConfig {
            id,
            cluster,
            listen,
            peers: HashMap::new(),
            regions: Vec::new(),
            queue_frames_max: 4096,
            ring_bytes: RING_BYTES_DEFAULT,
            exclusive_writer: false,
            passes: None,
            pass_fetch: None,
            inline: false,
        }
    }
}

/// Receiver → sender on the same connection: credit (head, immediates
/// reaped), two-sided.
const TAG_CREDIT: u8 = 2;
const TAG_REGIONS: u8 = 1;

enum Out {
    Message(Bytes),
    Write {
        id: u64,
        region: RegionId,
        offset: u64,
        bytes: Bytes,
        /// Already retried on a fresh connection because the region was
        /// not advertised.
        retried: bool,
    },
}

struct Inner {
    /// This transport's own handle, for the threads it starts later.
    me: std::sync::Weak<Inner>,
    cfg: RdmaConfig,
    shutdown: AtomicBool,
    regions: HashMap<RegionId, Arc<RegionMemory>>,
    /// Accepted connections by peer: how to revoke each, and whether the
    /// declared regions were registered on it. (Never locked while
    /// locking `core`: the core locks it, not the other way round.)
    writers: Mutex<HashMap<PeerId, Vec<(Revoker, bool)>>>,
    next_write: AtomicU64,
    dropped_frames: AtomicU64,
    /// Connection requests refused (malformed, another cluster, no valid
    /// pass).
    refused_requests: AtomicU64,
    /// With `exclusive_writer`: the peer allowed to connect.
    granted: Mutex<Option<PeerId>>,
    /// The event loop's state.
    core: Mutex<Core>,
    /// The loop's wake-ups: every connection's completion and `rdma_cm`
    /// channels, and `kick`.
    epoll: OwnedFd,
    /// Written by other threads to wake the loop (a connection handed
    /// over, a send from a thread that is not the loop's).
    kick: OwnedFd,
    /// The loop may have slept since it last emptied `epoll`: its next
    /// pass does (so a consumed event is not reported again).
    drain_due: AtomicBool,
}

/// A node's RDMA endpoint (see the module docs).
pub struct RdmaTransport {
    inner: Arc<Inner>,
    events: Receiver<Event>,
}

impl RdmaTransport {
    /// Listens and connects to the configured peers. Fails with the list of
    /// devices found if there is no RDMA device.
    pub fn start(cfg: RdmaConfig) -> Result<RdmaTransport, RdmaError> {
        // Bounded: an owner that falls behind stops the driver, which then
        // stops reading rings (their credit withheld, the senders wait).
        // Dropping the transport drops the receiver, which ends a send.
        let (tx, rx) = crossbeam::channel::bounded(READY_EVENTS_MAX);
        RdmaTransport::start_with(
            cfg,
            Box::new(move |ev| {
                let _ = tx.send(ev);
            }),
            rx,
        )
    }

    /// As [`RdmaTransport::start`] (without [`RdmaConfig::inline`]),
    /// delivering events through `deliver` (e.g. into another transport's
    /// queue) instead of [`Transport::events`], which then stays empty.
    pub fn start_delivering(
        cfg: RdmaConfig,
        deliver: Box<dyn Fn(Event) + Send + Sync>,
    ) -> Result<RdmaTransport, RdmaError> {
        RdmaTransport::start_with(cfg, deliver, unbounded().1)
    }

    fn start_with(
        cfg: RdmaConfig,
        deliver: Box<dyn Fn(Event) + Send + Sync>,
        rx: Receiver<Event>,
    ) -> Result<RdmaTransport, RdmaError> {
        assert!(
            cfg.regions.iter().all(|r| r.0 != RING_REGION),
            "region id {RING_REGION} is reserved for the message ring"
        );
        assert!(
            cfg.ring_bytes >= 4096 && cfg.ring_bytes % 8 == 0,
            "ring_bytes must be a multiple of 8, at least 4096"
        );
        let os = |call: &'static str| {
            move |e: rustix::io::Errno| RdmaError::Call {
                call,
                err: e.into(),
            }
        };
        let epoll_fd = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(os("epoll_create"))?;
        let kick =
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(os("eventfd"))?;
        epoll::add(
            &epoll_fd,
            &kick,
            epoll::EventData::new_u64(KICK_TOKEN),
            epoll::EventFlags::IN,
        )
        .map_err(os("epoll_ctl"))?;
        let listener = RdmaListener::bind(cfg.listen)?;
        let regions = cfg
            .regions
            .iter()
            .map(|&(id, len)| (id, RegionMemory::new(len)))
            .collect();
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            cfg: cfg.clone(),
            shutdown: AtomicBool::new(false),
            regions,
            writers: Mutex::new(HashMap::new()),
            next_write: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            refused_requests: AtomicU64::new(0),
            granted: Mutex::new(None),
            core: Mutex::new(Core::default()),
            epoll: epoll_fd,
            kick,
            drain_due: AtomicBool::new(false),
        });
        let i = inner.clone();
        std::thread::Builder::new()
            .name("rdma-accept".into())
            .spawn(move || accept_loop(i, listener))
            .expect("spawning a transport thread");
        if !cfg.inline {
            let i = inner.clone();
            std::thread::Builder::new()
                .name("rdma-driver".into())
                .spawn(move || {
                    while !i.shutdown.load(Ordering::SeqCst) {
                        if let Some(ev) = next_event(&i, Duration::from_millis(50)) {
                            deliver(ev);
                        }
                    }
                })
                .expect("spawning a transport thread");
        }
        let t = RdmaTransport { inner, events: rx };
        for (&peer, &addr) in &cfg.peers {
            t.add_peer(peer, addr);
        }
        tracing::info!(id = cfg.id, listen = %cfg.listen, inline = cfg.inline, "RDMA transport listening");
        Ok(t)
    }

    /// The memory of region `id` (declared at start).
    pub fn region(&self, id: RegionId) -> Option<Arc<RegionMemory>> {
        self.inner.regions.get(&id).cloned()
    }

    /// Revokes every connection `peer` opened to us: its one-sided writes
    /// (and messages) fail from now on; it must reconnect to write again.
    pub fn revoke(&self, peer: PeerId) -> Result<usize, RdmaError> {
        // Under the lock: the loop removes a connection's entry under it
        // too before the connection (and queue pair) is destroyed.
        let mut writers = self.inner.writers.lock().expect("lock poisoned");
        let revokers = writers.remove(&peer).unwrap_or_default();
        for (r, _) in &revokers {
            r.revoke()?;
        }
        drop(writers);
        tracing::info!(peer, connections = revokers.len(), "revoked a writer");
        Ok(revokers.len())
    }

    /// With [`RdmaConfig::exclusive_writer`]: from now on only `peer` may
    /// connect; every connection of any other peer is revoked first (its
    /// later writes fail at the writer and never reach memory), and their
    /// reconnections are refused. Returns the connections revoked.
    pub fn grant_writes(&self, peer: PeerId) -> Result<usize, RdmaError> {
        // The grant changes under the writers' lock, which the accept loop
        // holds while it admits a connection: no connection of another
        // peer slips in between the revocation and the grant.
        let mut writers = self.inner.writers.lock().expect("lock poisoned");
        let mut n = 0;
        for (p, revokers) in writers.iter_mut() {
            // Every other peer's connections, and the granted peer's own
            // connections that were accepted without the regions (so it
            // reconnects and gets them).
            let mut keep = Vec::new();
            for (r, writable) in revokers.drain(..) {
                if *p == peer && writable {
                    keep.push((r, writable));
                } else {
                    r.revoke()?;
                    n += 1;
                }
            }
            *revokers = keep;
        }
        *self.inner.granted.lock().expect("lock poisoned") = Some(peer);
        drop(writers);
        tracing::info!(peer, revoked = n, "write access granted");
        Ok(n)
    }

    /// Whether messages and writes to `peer` go over this transport.
    pub fn routes(&self, peer: PeerId) -> bool {
        lock(&self.inner).peers.contains_key(&peer)
    }

    /// Frames dropped because a peer's queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.inner.dropped_frames.load(Ordering::Relaxed)
    }

    /// Connection requests refused before anything was registered for
    /// them: malformed, from another cluster, or without a valid pass.
    pub fn refused_requests(&self) -> u64 {
        self.inner.refused_requests.load(Ordering::Relaxed)
    }

    /// Accepted connections open now.
    pub fn live_connections(&self) -> usize {
        self.inner
            .writers
            .lock()
            .expect("lock poisoned")
            .values()
            .map(Vec::len)
            .sum()
    }

    fn enqueue(&self, to: PeerId, out: Out) -> bool {
        let inner = &*self.inner;
        let mut core = lock(inner);
        let Some(p) = core.peers.get_mut(&to) else {
            tracing::debug!(to, "no route to peer; frame dropped");
            return false;
        };
        if p.queue.len() >= inner.cfg.queue_frames_max {
            inner.dropped_frames.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let was_empty = p.queue.is_empty();
        p.queue.push_back(out);
        if !inner.cfg.inline {
            // Posted from this thread; the sleeping driver armed its queues
            // for what it knew then, so wake it to arm for this post (its
            // completion, what waits behind it, a write's `WriteDone`).
            core.pump_peer(inner, to);
            kick(inner);
        } else if was_empty {
            // Posted at the loop's next pass (a queue that was not empty
            // is waiting for a completion, a credit or a connection, each
            // of which pumps it).
            core.to_pump.push(to);
        }
        true
    }
}

fn lock(inner: &Inner) -> MutexGuard<'_, Core> {
    // A panic inside the loop is a bug; the transport stops with it.
    inner
        .core
        .lock()
        .expect("RDMA transport core lock poisoned")
}

fn kick(inner: &Inner) {
    let _ = rustix::io::write(&inner.kick, &1u64.to_ne_bytes());
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        let mut core = lock(&self.inner);
        core.peers.clear();
        let tokens: Vec<u64> = core.conns.keys().copied().collect();
        for t in tokens {
            core.close(&self.inner, t, None);
        }
    }
}

impl Transport for RdmaTransport {
    fn id(&self) -> PeerId {
        self.inner.cfg.id
    }

    fn send(&self, to: PeerId, payload: Bytes) {
        self.enqueue(to, Out::Message(payload));
    }

    fn write(&self, to: PeerId, region: RegionId, offset: u64, bytes: Bytes) -> u64 {
        let id = self.inner.next_write.fetch_add(1, Ordering::Relaxed) + 1;
        self.enqueue(
            to,
            Out::Write {
                id,
                region,
                offset,
                bytes,
                retried: false,
            },
        );
        id
    }

    fn add_peer(&self, peer: PeerId, addr: SocketAddr) {
        let mut core = lock(&self.inner);
        if core.peers.contains_key(&peer) {
            return;
        }
        core.next_gen += 1;
        let gen = core.next_gen;
        core.peers.insert(
            peer,
            PeerOut {
                addr,
                gen,
                queue: VecDeque::new(),
                conn: None,
            },
        );
        drop(core);
        spawn_connector(&self.inner, peer, addr, gen);
    }

    fn remove_peer(&self, peer: PeerId) {
        let inner = &*self.inner;
        let mut core = lock(inner);
        if let Some(p) = core.peers.remove(&peer) {
            if let Some(t) = p.conn {
                core.close(inner, t, None);
            }
            tracing::debug!(peer, "RDMA peer removed");
        }
    }

    /// Refused: on RDMA a region is memory declared at start
    /// ([`RdmaConfig::regions`]); a callback cannot run on a one-sided write.
    fn register_region(&self, id: RegionId, _region: Arc<dyn Region>) {
        tracing::error!(
            region = id,
            "register_region is not supported over RDMA: declare regions in RdmaConfig"
        );
    }

    fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.cfg.inline.then(|| self.inner.epoll.as_fd())
    }

    fn flush(&self) {
        if self.inner.cfg.inline {
            prepare_to_sleep(&self.inner);
        }
    }

    fn next_event(&self, timeout: Duration) -> Option<Event> {
        if !self.inner.cfg.inline {
            return if timeout.is_zero() {
                self.events.try_recv().ok()
            } else {
                self.events.recv_timeout(timeout).ok()
            };
        }
        next_event(&self.inner, timeout)
    }
}

/// The loop's step: one pass; if nothing came and `timeout` allows, spin
/// briefly, then arm and sleep on the channels, and pass again.
fn next_event(inner: &Inner, timeout: Duration) -> Option<Event> {
    let start = Instant::now();
    let mut slept = false;
    loop {
        if inner.drain_due.swap(false, Ordering::AcqRel) {
            drain_wakeups(inner, Duration::ZERO);
        }
        {
            let mut core = lock(inner);
            core.pass(inner);
            if let Some(ev) = core.ready.pop_front() {
                return Some(ev);
            }
        }
        let waited = start.elapsed();
        if timeout.is_zero() || waited >= timeout {
            return None;
        }
        if !slept && waited < RECV_SPIN {
            std::hint::spin_loop();
            continue;
        }
        if prepare_to_sleep(inner) {
            continue;
        }
        inner.drain_due.store(false, Ordering::Release);
        drain_wakeups(inner, timeout - waited);
        slept = true;
    }
}

/// Posts what waits, arms every completion queue whose event was
/// consumed, and polls once more; true if that found something (then the
/// kick is written, so that a poll on [`Transport::ready_fd`] returns at
/// once).
fn prepare_to_sleep(inner: &Inner) -> bool {
    let mut core = lock(inner);
    core.pass(inner);
    // A pass after arming may leave a state that needs another queue
    // armed (a credit reaped, then a post with frames behind it): arm
    // until nothing new needs it.
    while core.arm_all(inner) {
        core.pass(inner);
    }
    inner.drain_due.store(true, Ordering::Release);
    if core.ready.is_empty() {
        false
    } else {
        kick(inner);
        true
    }
}

/// Waits up to `timeout` on the loop's epoll set, then consumes what woke
/// it: completion-channel events (their queues need arming again),
/// disconnects (the connection is closed), the kick.
fn drain_wakeups(inner: &Inner, timeout: Duration) {
    let mut evs = Vec::with_capacity(64);
    let ts = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    match epoll::wait(
        &inner.epoll,
        rustix::buffer::spare_capacity(&mut evs),
        Some(&ts),
    ) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return,
        Err(e) => {
            tracing::warn!(error = %e, "epoll_wait failed");
            return;
        }
    }
    if evs.is_empty() {
        return;
    }
    let mut core = lock(inner);
    for ev in evs {
        let data = ev.data.u64();
        if data == KICK_TOKEN {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&inner.kick, &mut b);
            continue;
        }
        core.on_wakeup(inner, data >> 2, (data & 3) as u8);
    }
}

/// The event loop's state (see the module docs): every established
/// connection, the peers' queues, and what is ready for the owner.
#[derive(Default)]
struct Core {
    conns: HashMap<u64, Conn>,
    peers: HashMap<PeerId, PeerOut>,
    ready: VecDeque<Event>,
    /// Peers with frames queued since their last pump.
    to_pump: Vec<PeerId>,
    next_token: u64,
    next_gen: u64,
    /// Scratch for ring reads.
    got: Vec<Bytes>,
}

/// A peer this node sends to.
struct PeerOut {
    addr: SocketAddr,
    /// Which `add_peer` this is: a connector of an older one (the peer
    /// removed and added again) hands nothing over.
    gen: u64,
    queue: VecDeque<Out>,
    /// Its outbound connection, while established.
    conn: Option<u64>,
}

/// One established connection.
struct Conn {
    rdma: RdmaConn,
    peer: PeerId,
    /// Whether each completion queue (send, receive) is armed: asked for an
    /// event at its next completion, and that event not yet consumed.
    armed: [bool; 2],
    side: Side,
}

enum Side {
    /// Ours: we write the peer's ring and regions.
    Out(OutConn),
    /// The peer's: it writes our ring.
    In(InConn),
}

struct OutConn {
    regions: HashMap<RegionId, RemoteRegion>,
    ring: RingSender,
    /// The post in flight (one at a time: the staging buffer is the NIC's
    /// until it completes).
    post: Option<Post>,
    /// Frames have waited for credit since.
    starved_since: Option<Instant>,
}

struct Post {
    /// Work requests not yet completed.
    wrs_left: usize,
    /// The write this post carries (a batch of frames: none).
    write: Option<u64>,
    /// The first error among its completions.
    error: Option<RdmaError>,
}

struct InConn {
    ring: Arc<RegionMemory>,
    reader: RingReader,
    /// The newest tail the immediates named.
    tail: u64,
    /// Immediates reaped, and as of the last credit sent.
    reaped: u64,
    credited_reaped: u64,
    /// A credit SEND is in flight; another is owed after it.
    credit_in_flight: bool,
    credit_owed: bool,
    revoker: Revoker,
}

/// The sender's side of one connection's ring: the writer's bookkeeping
/// and the batch of frames not yet posted.
struct RingSender {
    remote: RemoteRegion,
    writer: RingWriter,
    /// Frames laid out as they go in the ring, starting at `start`.
    batch: Vec<u8>,
    start: u64,
    /// A pad header goes here before the batch (the batch wrapped).
    pad_at: Option<u64>,
    posts: u64,
    posts_reaped: u64,
}

/// What became of a frame offered to the batch.
enum Added {
    /// In the batch.
    Yes,
    /// Never fits the ring: dropped (and logged).
    Dropped,
    /// Post the batch first (the ring wraps here, or is full until the
    /// batch's frames are consumed).
    PostFirst,
    /// No room until the receiver returns credit.
    NoRoom,
}

impl RingSender {
    fn new(remote: RemoteRegion) -> RingSender {
        let cap = remote.len as usize - RING_HEADER_BYTES;
        RingSender {
            remote,
            writer: RingWriter::new(cap),
            batch: Vec::new(),
            start: 0,
            pad_at: None,
            posts: 0,
            posts_reaped: 0,
        }
    }

    fn add(&mut self, peer: PeerId, payload: &[u8]) -> Added {
        let before = self.writer.clone();
        let p = match self.writer.place(payload.len()) {
            Ok(p) => p,
            Err(PlaceError::TooLarge { len, max }) => {
                tracing::error!(
                    peer,
                    len,
                    max,
                    "message larger than the ring allows; dropped"
                );
                return Added::Dropped;
            }
            Err(PlaceError::Full) if self.batch.is_empty() => return Added::NoRoom,
            Err(PlaceError::Full) => return Added::PostFirst,
        };
        if p.pad_at.is_some() && !self.batch.is_empty() {
            // What precedes the wrap goes in a post of its own.
            self.writer = before;
            return Added::PostFirst;
        }
        if self.batch.is_empty() {
            self.start = p.offset as u64;
            self.pad_at = p.pad_at.map(|a| a as u64);
        }
        let at = self.batch.len();
        self.batch.resize(at + p.bytes, 0);
        ring::encode_frame(payload, &mut self.batch[at..]);
        Added::Yes
    }

    /// Posts the batch (the frames, then the tail with an immediate);
    /// the work requests posted.
    fn post(&mut self, conn: &mut RdmaConn) -> Result<usize, RdmaError> {
        let pad = ring::pad_header();
        let base = RING_HEADER_BYTES as u64;
        let mut runs: Vec<(u64, &[u8])> = Vec::with_capacity(2);
        if let Some(at) = self.pad_at {
            runs.push((base + at, &pad));
        }
        runs.push((base + self.start, &self.batch));
        let tail = self.writer.tail();
        let r = conn.start_writes(self.remote, &runs, Some((0, tail, tail as u32)));
        self.batch.clear();
        self.pad_at = None;
        self.posts += 1;
        r
    }

    /// Takes in a credit message.
    fn on_credit(&mut self, m: &[u8]) -> Result<(), String> {
        if m.len() != 17 || m[0] != TAG_CREDIT {
            return Err("malformed credit".into());
        }
        let head = u64::from_le_bytes(m[1..9].try_into().expect("8 bytes"));
        let reaped = u64::from_le_bytes(m[9..17].try_into().expect("8 bytes"));
        if reaped < self.posts_reaped || reaped > self.posts {
            return Err(format!("credit for {reaped} posts of {}", self.posts));
        }
        self.posts_reaped = reaped;
        self.writer.on_credit(head).map_err(|e| e.to_string())
    }
}

impl Core {
    /// One pass: every connection's completions, then what waits to be
    /// posted.
    fn pass(&mut self, inner: &Inner) {
        let tokens: Vec<u64> = self.conns.keys().copied().collect();
        for t in tokens {
            if let Err(why) = self.service(t) {
                self.close(inner, t, Some(why));
            }
        }
        for peer in std::mem::take(&mut self.to_pump) {
            self.pump_peer(inner, peer);
        }
    }

    /// Reaps one connection's completions and acts on them.
    fn service(&mut self, token: u64) -> Result<(), String> {
        let Core {
            conns,
            peers,
            ready,
            to_pump,
            got,
            ..
        } = self;
        let Some(c) = conns.get_mut(&token) else {
            return Ok(());
        };
        let peer = c.peer;
        for _ in 0..COMPLETIONS_PER_PASS_MAX {
            let Some(done) = c.rdma.poll_send().map_err(|e| e.to_string())? else {
                break;
            };
            match (&mut c.side, done.kind) {
                (Side::Out(o), SendKind::Write) => {
                    let Some(post) = o.post.as_mut() else {
                        return Err("a completion with no post in flight".into());
                    };
                    post.wrs_left = post.wrs_left.saturating_sub(1);
                    if let Err(e) = done.result {
                        post.error.get_or_insert(e);
                    }
                    if post.wrs_left > 0 {
                        continue;
                    }
                    let post = o.post.take().expect("checked above");
                    if let Some(id) = post.write {
                        let status = match &post.error {
                            None => WriteStatus::Landed,
                            Some(RdmaError::Completion { name, .. }) => {
                                WriteStatus::Refused(format!("revoked by the peer: {name}"))
                            }
                            Some(e) => WriteStatus::Refused(e.to_string()),
                        };
                        ready.push_back(Event::WriteDone {
                            to: peer,
                            id,
                            status,
                        });
                    }
                    if let Some(e) = post.error {
                        // The queue pair is in the error state: a new one
                        // is needed (the peer decides whether to accept).
                        return Err(format!("a post failed: {e}"));
                    }
                    to_pump.push(peer);
                }
                (Side::In(i), SendKind::Send) => {
                    done.result.map_err(|e| format!("returning credit: {e}"))?;
                    i.credit_in_flight = false;
                }
                _ => return Err("a completion of the wrong kind".into()),
            }
        }
        for _ in 0..COMPLETIONS_PER_PASS_MAX {
            let inc = match &mut c.side {
                // Withhold reading (and so credit) while the owner is
                // behind: the sender stops at its credit.
                Side::In(_) if ready.len() >= READY_EVENTS_MAX => break,
                _ => c.rdma.try_recv_any().map_err(|e| e.to_string())?,
            };
            let Some(inc) = inc else { break };
            match (&mut c.side, inc) {
                (Side::In(i), Incoming::Immediate(imm)) => {
                    i.reaped += 1;
                    i.tail = i.tail.max(ring::tail_from_imm(i.tail, imm));
                }
                (Side::In(_), Incoming::Message(_)) => {
                    return Err(
                        "bad input (a two-sided message where only ring posts are expected)".into(),
                    );
                }
                (Side::Out(o), Incoming::Message(m)) => {
                    o.ring
                        .on_credit(&m)
                        .map_err(|e| format!("bad input (credit): {e}"))?;
                    o.starved_since = None;
                    to_pump.push(peer);
                }
                (Side::Out(_), Incoming::Immediate(_)) => {
                    return Err("bad input (an immediate on a sending connection)".into());
                }
            }
        }
        if let Side::In(i) = &mut c.side {
            if i.tail > i.reader.head() && ready.len() < READY_EVENTS_MAX {
                let ring = &i.ring;
                let r = i.reader.read(
                    i.tail,
                    |at, buf| ring.read_at(RING_HEADER_BYTES + at, buf),
                    got,
                );
                for payload in got.drain(..) {
                    ready.push_back(Event::Message {
                        from: peer,
                        payload,
                    });
                }
                r.map_err(|e| format!("bad input (message ring): {e}"))?;
            }
            if i.reader.credit_due().is_some()
                || i.reaped - i.credited_reaped >= POSTS_UNCONSUMED_MAX / 4
            {
                i.credit_owed = true;
            }
            if i.credit_owed && !i.credit_in_flight {
                let mut b = [0u8; 17];
                b[0] = TAG_CREDIT;
                b[1..9].copy_from_slice(&i.reader.head().to_le_bytes());
                b[9..17].copy_from_slice(&i.reaped.to_le_bytes());
                c.rdma
                    .start_send(&b)
                    .map_err(|e| format!("returning credit: {e}"))?;
                i.credited_reaped = i.reaped;
                i.credit_owed = false;
                i.credit_in_flight = true;
            }
        }
        if let Side::Out(o) = &c.side {
            if o.starved_since
                .is_some_and(|t| t.elapsed() > CREDIT_WAIT_MAX)
            {
                return Err("no credit from the receiver".into());
            }
            if o.post.is_none() && peers.get(&peer).is_some_and(|p| !p.queue.is_empty()) {
                to_pump.push(peer);
            }
        }
        Ok(())
    }

    /// Posts what `peer`'s queue holds, if its connection has no post in
    /// flight: frames into one batch, or the write at the front.
    fn pump_peer(&mut self, inner: &Inner, peer: PeerId) {
        let Core {
            conns,
            peers,
            ready,
            ..
        } = self;
        let Some(p) = peers.get_mut(&peer) else {
            return;
        };
        let Some(token) = p.conn else { return };
        let Some(c) = conns.get_mut(&token) else {
            return;
        };
        let Side::Out(o) = &mut c.side else { return };
        if o.post.is_some() {
            return;
        }
        let mut failed = None;
        while o.post.is_none() && failed.is_none() {
            match p.queue.front() {
                None => break,
                Some(Out::Message(m)) => match o.ring.add(peer, m) {
                    Added::Yes => {
                        p.queue.pop_front();
                        if o.ring.batch.len() >= BATCH_BYTES_MAX {
                            break;
                        }
                    }
                    Added::Dropped => {
                        p.queue.pop_front();
                    }
                    Added::PostFirst => break,
                    Added::NoRoom => {
                        o.starved_since.get_or_insert_with(Instant::now);
                        break;
                    }
                },
                Some(Out::Write { .. }) if !o.ring.batch.is_empty() => break,
                Some(Out::Write { .. }) => {
                    let Some(Out::Write {
                        id,
                        region,
                        offset,
                        bytes,
                        retried,
                    }) = p.queue.pop_front()
                    else {
                        unreachable!("the front is a write")
                    };
                    let status = match o.regions.get(&region) {
                        None if !retried => {
                            // Perhaps not registered for us when we
                            // connected (a master grants one writer at a
                            // time): try once more on a fresh connection
                            // and advertisement.
                            p.queue.push_front(Out::Write {
                                id,
                                region,
                                offset,
                                bytes,
                                retried: true,
                            });
                            failed = Some("a region the peer did not advertise".to_string());
                            break;
                        }
                        None => WriteStatus::NoSuchRegion,
                        Some(r) if offset + bytes.len() as u64 > r.len as u64 => {
                            WriteStatus::OutOfBounds
                        }
                        Some(r) => match c.rdma.start_writes(*r, &[(offset, &bytes)], None) {
                            Ok(n) => {
                                o.post = Some(Post {
                                    wrs_left: n,
                                    write: Some(id),
                                    error: None,
                                });
                                continue;
                            }
                            Err(e) => {
                                failed = Some(format!("posting a write: {e}"));
                                WriteStatus::Refused(e.to_string())
                            }
                        },
                    };
                    ready.push_back(Event::WriteDone {
                        to: peer,
                        id,
                        status,
                    });
                }
            }
        }
        if failed.is_none() && o.post.is_none() && !o.ring.batch.is_empty() {
            if o.ring.posts - o.ring.posts_reaped < POSTS_UNCONSUMED_MAX {
                match o.ring.post(&mut c.rdma) {
                    Ok(n) => {
                        o.post = Some(Post {
                            wrs_left: n,
                            write: None,
                            error: None,
                        })
                    }
                    Err(e) => failed = Some(format!("posting messages: {e}")),
                }
            } else {
                o.starved_since.get_or_insert_with(Instant::now);
            }
        }
        if let Some(why) = failed {
            self.close(inner, token, Some(why));
        }
    }

    /// Arms every completion queue the loop must wake for (and whose last
    /// event was consumed). A completion that nothing waits on (a post's
    /// with nothing queued behind it, a credit while there is room) need
    /// not wake anyone: the next pass reaps it. On an emulated machine a
    /// wake-up costs more than the whole message.
    fn arm_all(&mut self, inner: &Inner) -> bool {
        let mut armed = false;
        let mut failed = Vec::new();
        for (&t, c) in &mut self.conns {
            let wanted = match &c.side {
                Side::Out(o) => {
                    let queued = self.peers.get(&c.peer).is_some_and(|p| !p.queue.is_empty());
                    let send = o
                        .post
                        .as_ref()
                        .is_some_and(|p| p.write.is_some() || queued || !o.ring.batch.is_empty());
                    [send, o.starved_since.is_some()]
                }
                Side::In(i) => [i.credit_in_flight && i.credit_owed, true],
            };
            for (k, cq) in [Cq::Send, Cq::Recv].into_iter().enumerate() {
                if wanted[k] && !c.armed[k] {
                    match c.rdma.arm(cq) {
                        Ok(()) => {
                            c.armed[k] = true;
                            armed = true;
                        }
                        Err(e) => failed.push((t, e.to_string())),
                    }
                }
            }
        }
        for (t, why) in failed {
            self.close(inner, t, Some(why));
        }
        armed
    }

    /// Something woke the loop for connection `token`: a completion
    /// channel (`kind` 0 send, 1 receive) or its `rdma_cm` channel (2).
    fn on_wakeup(&mut self, inner: &Inner, token: u64, kind: u8) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let r = match kind {
            0 | 1 => {
                let cq = if kind == 0 { Cq::Send } else { Cq::Recv };
                c.armed[kind as usize] = false;
                c.rdma
                    .take_cq_events(cq)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => Err("the peer closed the connection".to_string()),
        };
        if let Err(why) = r {
            self.close(inner, token, Some(why));
        }
    }

    /// Takes a connection handed over by a connector or the accept loop
    /// into the loop; on failure the connection is closed.
    fn adopt(
        &mut self,
        inner: &Inner,
        mut rdma: RdmaConn,
        peer: PeerId,
        side: Side,
    ) -> Result<u64, RdmaError> {
        if let Err(e) = rdma.set_nonblocking() {
            forget_revoker(inner, peer, &side);
            close_aside(rdma);
            return Err(e);
        }
        self.next_token += 1;
        let token = self.next_token;
        let fds = rdma.wake_fds();
        for (k, fd) in fds.iter().enumerate() {
            let data = epoll::EventData::new_u64(token << 2 | k as u64);
            if let Err(e) = epoll::add(&inner.epoll, fd, data, epoll::EventFlags::IN) {
                for fd in &fds[..k] {
                    let _ = epoll::delete(&inner.epoll, fd);
                }
                forget_revoker(inner, peer, &side);
                close_aside(rdma);
                return Err(RdmaError::Call {
                    call: "epoll_ctl",
                    err: e.into(),
                });
            }
        }
        self.conns.insert(
            token,
            Conn {
                rdma,
                peer,
                armed: [false; 2],
                side,
            },
        );
        kick(inner);
        Ok(token)
    }

    /// Closes connection `token` (logging `why`, if given): out of the
    /// loop, its writer entry forgotten, closed on a thread of its own;
    /// an outbound one is connected again.
    fn close(&mut self, inner: &Inner, token: u64, why: Option<String>) {
        let Some(c) = self.conns.remove(&token) else {
            return;
        };
        for fd in c.rdma.wake_fds() {
            let _ = epoll::delete(&inner.epoll, fd);
        }
        let peer = c.peer;
        let shutting_down = inner.shutdown.load(Ordering::SeqCst);
        match &c.side {
            Side::Out(o) => {
                // A write in flight may or may not have landed; its
                // writer learns it did not complete (and retries on its
                // own timer) rather than never hearing of it.
                if let Some(id) = o.post.as_ref().and_then(|p| p.write) {
                    self.ready.push_back(Event::WriteDone {
                        to: peer,
                        id,
                        status: WriteStatus::Refused(format!(
                            "the connection closed before the write completed ({})",
                            why.as_deref().unwrap_or("closed")
                        )),
                    });
                }
                if let Some(why) = &why {
                    if !shutting_down {
                        tracing::info!(peer, reason = %why, "RDMA connection failed; reconnecting");
                    }
                }
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.conn == Some(token) {
                        p.conn = None;
                        if !shutting_down {
                            spawn_connector(inner, peer, p.addr, p.gen);
                        }
                    }
                }
            }
            Side::In(i) => {
                if let Some(why) = &why {
                    if !shutting_down {
                        tracing::info!(peer, reason = %why, "RDMA connection closed");
                    }
                }
                let mut w = inner.writers.lock().expect("lock poisoned");
                if let Some(v) = w.get_mut(&peer) {
                    v.retain(|(r, _)| !r.same(&i.revoker));
                }
            }
        }
        close_aside(c.rdma);
    }
}

/// Forgets an accepted connection's revoker (before its queue pair goes:
/// a revoker must never outlive it).
fn forget_revoker(inner: &Inner, peer: PeerId, side: &Side) {
    if let Side::In(i) = side {
        let mut w = inner.writers.lock().expect("lock poisoned");
        if let Some(v) = w.get_mut(&peer) {
            v.retain(|(r, _)| !r.same(&i.revoker));
        }
    }
}

/// Starts the thread that connects to `peer` (incarnation `gen`) and hands
/// the connection to the loop; it ends then, or when the peer is removed.
fn spawn_connector(inner: &Inner, peer: PeerId, addr: SocketAddr, gen: u64) {
    // The thread needs the transport's state: take it through the core's
    // owner (an Arc), found via the weak handle kept for this.
    let Some(i) = inner.me.upgrade() else { return };
    if let Err(e) = std::thread::Builder::new()
        .name("rdma-connect".into())
        .spawn(move || connect_loop(i, peer, addr, gen))
    {
        tracing::error!(peer, error = %e, "no thread to connect to a peer over RDMA");
    }
}

/// Whether a connector of `peer` incarnation `gen` should go on.
fn wanted(inner: &Inner, peer: PeerId, gen: u64) -> bool {
    !inner.shutdown.load(Ordering::SeqCst)
        && lock(inner)
            .peers
            .get(&peer)
            .is_some_and(|p| p.gen == gen && p.conn.is_none())
}

/// The advertisement of our regions: tag, count, then (id, addr, rkey,
/// len) each. The declared regions are registered on the connection (and
/// advertised) only if `writable`; the message ring always is.
fn advertise(
    conn: &mut RdmaConn,
    inner: &Inner,
    ring: &Arc<RegionMemory>,
    writable: bool,
) -> Result<(), RdmaError> {
    let mut ids: Vec<_> = if writable {
        inner.regions.keys().copied().collect()
    } else {
        Vec::new()
    };
    let mut b = vec![TAG_REGIONS, ids.len() as u8 + 1];
    ids.sort_unstable();
    ids.push(RING_REGION);
    for id in ids {
        let mem = if id == RING_REGION {
            ring
        } else {
            &inner.regions[&id]
        };
        let r = conn.expose_region(mem)?;
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&r.addr.to_le_bytes());
        b.extend_from_slice(&r.rkey.to_le_bytes());
        b.extend_from_slice(&r.len.to_le_bytes());
    }
    conn.send(&b)
}

fn parse_advert(b: &[u8]) -> Option<HashMap<RegionId, RemoteRegion>> {
    let (&tag, rest) = b.split_first()?;
    let (&n, mut rest) = rest.split_first()?;
    if tag != TAG_REGIONS || rest.len() != n as usize * 20 {
        return None;
    }
    let mut out = HashMap::new();
    for _ in 0..n {
        let id = RegionId::from_le_bytes(rest[..4].try_into().ok()?);
        let r = RemoteRegion::decode(&rest[4..20])?;
        out.insert(id, r);
        rest = &rest[20..];
    }
    Some(out)
}

/// Refused connection requests: counted, logged at most once a second (a
/// scanner must not flood the log).
#[derive(Default)]
struct Refusals {
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl Refusals {
    fn note(&mut self, inner: &Inner, peer: Option<PeerId>, why: &str) {
        inner.refused_requests.fetch_add(1, Ordering::Relaxed);
        self.unlogged += 1;
        if self
            .last_logged
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY)
        {
            tracing::warn!(
                peer,
                reason = why,
                refused = self.unlogged,
                "refusing an RDMA connection request"
            );
            self.last_logged = Some(std::time::Instant::now());
            self.unlogged = 0;
        }
    }
}

fn accept_loop(inner: Arc<Inner>, listener: RdmaListener) {
    let mut refusals = Refusals::default();
    while !inner.shutdown.load(Ordering::SeqCst) {
        let req = match listener.request() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        // Everything is checked before the request is accepted: a refused
        // request never gets memory registered or a region key.
        let verdict = RequestPrivate::decode(req.private())
            .map_err(|e| (None, e.to_string()))
            .and_then(|r| {
                if r.cluster != inner.cfg.cluster {
                    return Err((Some(r.peer), format!("from cluster {}", r.cluster)));
                }
                if let Some(book) = &inner.cfg.passes {
                    book.check(r.peer, r.pass.as_ref())
                        .map_err(|e| (Some(r.peer), e.to_string()))?;
                }
                Ok(r.peer)
            });
        let peer = match verdict {
            Ok(p) => p,
            Err((peer, why)) => {
                // Dropping the request refuses it.
                refusals.note(&inner, peer, &why);
                continue;
            }
        };
        tracing::debug!(peer, "connection request admitted");
        // The writers' lock is held from the grant check until the
        // connection's revoker is recorded: a grant to another peer either
        // comes first or finds this connection and revokes it.
        let mut writers = inner.writers.lock().expect("lock poisoned");
        // Bounds on what admitted peers hold (each connection pins a
        // ring): a peer's newest connection revokes its oldest past the
        // per-peer bound (a reconnecting sender is never locked out by its
        // own dying connection), and past the total bound new requests are
        // refused.
        if let Some(v) = writers.get_mut(&peer) {
            while v.len() >= CONNECTIONS_PER_PEER_MAX {
                let (oldest, _) = v.remove(0);
                let _ = oldest.revoke();
                tracing::info!(
                    peer,
                    "revoked a peer's oldest RDMA connection (it opened more than {CONNECTIONS_PER_PEER_MAX})"
                );
            }
        }
        if writers.values().map(Vec::len).sum::<usize>() >= CONNECTIONS_MAX {
            drop(writers);
            refusals.note(
                &inner,
                Some(peer),
                &format!("RDMA connections at their limit ({CONNECTIONS_MAX})"),
            );
            continue;
        }
        let mut conn = match req.accept(None) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(peer, error = %e, "accept failed");
                continue;
            }
        };
        // Not granted (exclusive writer): the connection carries messages
        // but no region is registered on it, so nothing can write one; a
        // grant revokes it, and the peer reconnects to a fresh
        // advertisement. (Refusing by rejecting the request stalled both
        // sides' rdma_cm calls for seconds under soft-RoCE.)
        let writable = !inner.cfg.exclusive_writer
            || *inner.granted.lock().expect("lock poisoned") == Some(peer);
        let ring = RegionMemory::new(RING_HEADER_BYTES + inner.cfg.ring_bytes);
        if let Err(e) = advertise(&mut conn, &inner, &ring, writable) {
            tracing::warn!(peer, error = %e, "could not advertise regions");
            continue;
        }
        if !writable {
            tracing::debug!(peer, "connection without write access (not granted)");
        }
        let revoker = conn.revoker();
        writers.entry(peer).or_default().push((revoker, writable));
        drop(writers);
        let side = Side::In(InConn {
            ring,
            reader: RingReader::new(inner.cfg.ring_bytes),
            tail: 0,
            reaped: 0,
            credited_reaped: 0,
            credit_in_flight: false,
            credit_owed: false,
            revoker,
        });
        let adopted = {
            let mut core = lock(&inner);
            if inner.shutdown.load(Ordering::SeqCst) {
                Err(None)
            } else {
                core.adopt(&inner, conn, peer, side).map_err(Some)
            }
        };
        if let Err(failed) = adopted {
            let mut w = inner.writers.lock().expect("lock poisoned");
            if let Some(v) = w.get_mut(&peer) {
                v.retain(|(r, _)| !r.same(&revoker));
            }
            drop(w);
            if let Some(e) = failed {
                tracing::error!(peer, error = %e, "could not take an RDMA connection into the loop; closed");
            }
        }
    }
}

/// Connects to `peer` (incarnation `gen`) until it succeeds, and hands
/// the connection to the loop; gives up when the peer is removed or the
/// transport shuts down.
fn connect_loop(inner: Arc<Inner>, peer: PeerId, addr: SocketAddr, gen: u64) {
    // The pass for this peer and when it was fetched.
    let mut pass: Option<(Pass, std::time::Instant)> = None;
    let mut backoff = Duration::from_millis(10);
    // Unreachable since, and when we last said so at warn level.
    let mut down: Option<(std::time::Instant, std::time::Instant)> = None;
    while wanted(&inner, peer, gen) {
        let attempt = fresh_pass(&inner, peer, addr, &mut pass).and_then(|()| {
            let private = RequestPrivate {
                cluster: inner.cfg.cluster,
                peer: inner.cfg.id,
                pass: pass.map(|p| p.0),
            };
            tracing::debug!(peer, %addr, "connecting");
            RdmaConn::connect(addr, &private.encode()).map_err(|e| {
                // Rejected: nobody listens, or the listener refused the
                // pass (it may have restarted with a new key): the next
                // attempt fetches a new one. A timeout keeps it.
                if matches!(&e, RdmaError::Completion { name, .. } if name.contains("REJECTED")) {
                    pass = None;
                }
                Attempt::Failed(e.to_string())
            })
        });
        let mut conn = match attempt {
            Ok(c) => {
                if let Some((since, _)) = down.take() {
                    tracing::info!(peer, %addr, after = ?since.elapsed(), "reachable over RDMA again");
                }
                c
            }
            Err(a) => {
                let (e, floor) = match a {
                    Attempt::Failed(e) => (e, Duration::ZERO),
                    Attempt::NoPass(e) => (e, PASS_REFUSED_RETRY),
                };
                let now = std::time::Instant::now();
                let (since, said) = *down.get_or_insert((now, now));
                if now.duration_since(said) >= UNREACHABLE_WARN_EVERY {
                    // A peer down for long, or one not running with
                    // `--transport rdma` (nothing listens for rdma_cm there).
                    tracing::warn!(peer, %addr, error = %e, down_for = ?now.duration_since(since),
                        "peer unreachable over RDMA: is it running, with --transport rdma?");
                    down = Some((since, now));
                }
                tracing::debug!(peer, %addr, error = %e, "connect failed; retrying");
                std::thread::sleep(backoff.max(floor));
                backoff = (backoff * 2).min(Duration::from_millis(250));
                continue;
            }
        };
        // The advertisement comes first; a peer that went away during the
        // handshake must not hang this thread.
        let advert = match conn.recv_any_timeout(Duration::from_secs(2)) {
            Ok(Some(Incoming::Message(m))) => parse_advert(&m),
            _ => None,
        };
        let Some(mut regions) = advert else {
            tracing::warn!(peer, %addr, "closing connection: bad input (no region advertisement)");
            close_aside(conn);
            std::thread::sleep(backoff);
            continue;
        };
        let Some(remote_ring) = regions.remove(&RING_REGION) else {
            tracing::warn!(peer, %addr, "closing connection: bad input (no message ring advertised)");
            close_aside(conn);
            std::thread::sleep(backoff);
            continue;
        };
        if (remote_ring.len as usize) < RING_HEADER_BYTES + 64
            || (remote_ring.len as usize - RING_HEADER_BYTES) % 8 != 0
        {
            tracing::warn!(peer, %addr, len = remote_ring.len, "closing connection: bad input (message ring size)");
            close_aside(conn);
            std::thread::sleep(backoff);
            continue;
        }
        let n_regions = regions.len();
        let side = Side::Out(OutConn {
            regions,
            ring: RingSender::new(remote_ring),
            post: None,
            starved_since: None,
        });
        let mut core = lock(&inner);
        let current = core
            .peers
            .get(&peer)
            .is_some_and(|p| p.gen == gen && p.conn.is_none());
        if !current || inner.shutdown.load(Ordering::SeqCst) {
            drop(core);
            close_aside(conn);
            return;
        }
        match core.adopt(&inner, conn, peer, side) {
            Ok(token) => {
                if let Some(p) = core.peers.get_mut(&peer) {
                    p.conn = Some(token);
                }
                core.to_pump.push(peer);
                tracing::info!(peer, %addr, regions = n_regions, "RDMA connected");
                return;
            }
            Err(e) => {
                drop(core);
                tracing::error!(peer, error = %e, "could not take an RDMA connection into the loop; retrying");
                std::thread::sleep(backoff);
            }
        }
    }
}

/// With [`RdmaConfig::pass_fetch`], makes sure `pass` holds a pass for
/// `peer` that is less than half its lifetime old, fetching one over TCP.
fn fresh_pass(
    inner: &Inner,
    peer: PeerId,
    addr: SocketAddr,
    pass: &mut Option<(Pass, std::time::Instant)>,
) -> Result<(), Attempt> {
    let Some(fetch) = &inner.cfg.pass_fetch else {
        return Ok(());
    };
    if pass.is_some_and(|(_, at)| at.elapsed() < PASS_TTL / 2) {
        return Ok(());
    }
    let p = crate::tcp::fetch_pass(
        addr,
        inner.cfg.id,
        inner.cfg.cluster,
        fetch.tls.as_ref(),
        peer,
        PASS_FETCH_TIMEOUT,
    )
    .map_err(|e| match e {
        PassFetchError::Unreachable(why) => {
            Attempt::Failed(format!("fetching an RDMA pass: {why}"))
        }
        PassFetchError::Refused(why) => Attempt::NoPass(format!("fetching an RDMA pass: {why}")),
    })?;
    tracing::debug!(peer, %addr, "RDMA pass fetched");
    *pass = Some((p, std::time::Instant::now()));
    Ok(())
}

/// Why a connection attempt failed.
enum Attempt {
    /// The peer (or the path to it) failed: retry with the usual back-off.
    Failed(String),
    /// The peer answered over TCP but gave no pass (a credential it
    /// refused, or it does not listen for RDMA): retry no sooner than
    /// [`PASS_REFUSED_RETRY`], so a misconfigured peer is not asked for a
    /// TLS handshake four times a second.
    NoPass(String),
}

/// Closes a connection on a thread of its own: `rdma_disconnect` waits for
/// the peer's answer, which a dead or revoking peer may be slow to give.
fn close_aside(conn: RdmaConn) {
    let _ = std::thread::Builder::new()
        .name("rdma-close".into())
        .spawn(move || drop(conn));
}
