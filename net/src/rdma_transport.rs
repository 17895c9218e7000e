//! [`Transport`] over RDMA (feature `rdma`): messages and one-sided writes
//! both as RDMA WRITEs into the peer's registered memory (messages into a
//! ring, writes into declared regions).
//!
//! # Connections and threads
//!
//! Each node listens (`rdma_cm`). Per configured peer, a sender thread
//! connects (saying who it is and which cluster in the private data),
//! learns the peer's regions from the advertisement the peer sends first,
//! then takes frames off a bounded queue (the back-pressure: a full queue
//! drops new frames, counted in [`RdmaTransport::dropped_frames`]).
//!
//! - **Messages** (Raft appends with their entries, votes, acks) are
//!   written one-sidedly into the **message ring** the peer registered for
//!   this connection ([`crate::ring`] has the protocol: framing, who owns
//!   which bytes, credits). The sender batches what is queued into one
//!   RDMA WRITE, then writes the ring's tail word with an immediate value
//!   that wakes the receiver. No receive buffer is consumed per message,
//!   and messages up to a quarter of the ring travel in one piece.
//! - **Writes** into a peer's declared regions are checked against the
//!   advertisement (unknown region, out of bounds) and RDMA-WRITTEN; each
//!   completion becomes an [`Event::WriteDone`] (`Landed`: in the peer's
//!   memory; `Refused`: the peer revoked this writer).
//!
//! Per accepted connection, a receiver thread sends the advertisement
//! (its regions and the connection's ring), then, woken by each
//! immediate, reads the new frames out of the ring, checks them, delivers
//! them, and returns credit. Completions are awaited by polling once and
//! then sleeping on the completion channel: no busy pollers on a small
//! machine.
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
//! ring, no region key and no thread (the queue pair `rdma_cm` made for
//! the request is destroyed with it); it is refused, counted
//! ([`RdmaTransport::refused_requests`]) and logged at most once a second.
//! Admitted connections are bounded too: two live ones per peer (its
//! newest revokes its oldest) and 16 in all (past it, refused). Without
//! TLS (`--insecure`) a pass goes to whoever claims a replica's id, as
//! everything else does then.
//! With [`RdmaConfig::pass_fetch`] the sender fetches a pass over TCP
//! before it connects, again when it is half its lifetime old, and after
//! any failed connect (the listener may have restarted with a new key).
//!
//! # Connecting and closing
//!
//! A connect gives up after [`crate::rdma::CONNECT_TIMEOUT`] (a peer not
//! listening is refused at once) and the sender retries with a back-off
//! up to 250 ms. A receiver wakes when its peer disconnects and closes its
//! side; a sender closes a failed connection on a thread of its own
//! (`rdma_disconnect` waits for the peer's answer).
//!
//! # Limits of this version
//!
//! Only configured peers can be sent to (no answering unknown clients on
//! their connection: clients use TCP); one post in flight per peer (the
//! sender waits for each batch's completion, so batching is the
//! pipelining); messages up to a quarter of [`RdmaConfig::ring_bytes`]
//! (larger ones are dropped and logged).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crossbeam::channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::rdma::{
    Incoming, RdmaConn, RdmaError, RdmaListener, RegionMemory, RemoteRegion, Revoker, RECV_SLOTS,
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
/// A batch of queued messages is written once it reaches this many bytes.
pub const BATCH_BYTES_MAX: usize = 256 << 10;
/// Ring posts the sender may have unconsumed at the receiver: each one's
/// immediate takes one of the receiver's posted receives until its thread
/// reaps it, and a post that finds none is refused (receiver not ready).
const POSTS_UNCONSUMED_MAX: u64 = RECV_SLOTS as u64 - 4;
/// How often a sender that cannot connect says so at warn level.
const UNREACHABLE_WARN_EVERY: Duration = Duration::from_secs(10);
/// How long a sender waits for credit before giving the connection up.
const CREDIT_WAIT_MAX: Duration = Duration::from_secs(5);

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
/// [`RdmaConfig::ring_bytes`] and a thread); past it, requests are refused.
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
    cfg: RdmaConfig,
    shutdown: AtomicBool,
    deliver: Box<dyn Fn(Event) + Send + Sync>,
    regions: HashMap<RegionId, Arc<RegionMemory>>,
    outbound: Mutex<HashMap<PeerId, Sender<Out>>>,
    /// Accepted connections by peer: how to revoke each, and whether the
    /// declared regions were registered on it.
    writers: Mutex<HashMap<PeerId, Vec<(Revoker, bool)>>>,
    next_write: AtomicU64,
    dropped_frames: AtomicU64,
    /// Connection requests refused (malformed, another cluster, no valid
    /// pass).
    refused_requests: AtomicU64,
    /// With `exclusive_writer`: the peer allowed to connect.
    granted: Mutex<Option<PeerId>>,
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
        let (tx, rx) = unbounded();
        RdmaTransport::start_with(
            cfg,
            Box::new(move |ev| {
                let _ = tx.send(ev);
            }),
            rx,
        )
    }

    /// As [`RdmaTransport::start`], delivering events through `deliver`
    /// (e.g. into another transport's queue) instead of
    /// [`Transport::events`], which then stays empty.
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
        let listener = RdmaListener::bind(cfg.listen)?;
        let regions = cfg
            .regions
            .iter()
            .map(|&(id, len)| (id, RegionMemory::new(len)))
            .collect();
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            shutdown: AtomicBool::new(false),
            deliver,
            regions,
            outbound: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            next_write: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            refused_requests: AtomicU64::new(0),
            granted: Mutex::new(None),
        });
        let i = inner.clone();
        std::thread::Builder::new()
            .name("rdma-accept".into())
            .spawn(move || accept_loop(i, listener))
            .expect("spawning a transport thread");
        let t = RdmaTransport { inner, events: rx };
        for (&peer, &addr) in &cfg.peers {
            t.add_peer(peer, addr);
        }
        tracing::info!(id = cfg.id, listen = %cfg.listen, "RDMA transport listening");
        Ok(t)
    }

    /// The memory of region `id` (declared at start).
    pub fn region(&self, id: RegionId) -> Option<Arc<RegionMemory>> {
        self.inner.regions.get(&id).cloned()
    }

    /// Revokes every connection `peer` opened to us: its one-sided writes
    /// (and messages) fail from now on; it must reconnect to write again.
    pub fn revoke(&self, peer: PeerId) -> Result<usize, RdmaError> {
        // Under the lock: a receiver thread removes its entry under it too
        // before its connection (and queue pair) is destroyed.
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
        self.inner
            .outbound
            .lock()
            .expect("lock poisoned")
            .contains_key(&peer)
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
        let q = self
            .inner
            .outbound
            .lock()
            .expect("lock poisoned")
            .get(&to)
            .cloned();
        let Some(q) = q else {
            tracing::debug!(to, "no route to peer; frame dropped");
            return false;
        };
        if let Err(TrySendError::Full(_)) = q.try_send(out) {
            self.inner.dropped_frames.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.outbound.lock().expect("lock poisoned").clear();
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
        let mut out = self.inner.outbound.lock().expect("lock poisoned");
        if out.contains_key(&peer) {
            return;
        }
        let (tx, rx) = bounded(self.inner.cfg.queue_frames_max);
        out.insert(peer, tx);
        drop(out);
        let i = self.inner.clone();
        std::thread::Builder::new()
            .name("rdma-send".into())
            .spawn(move || send_loop(i, peer, addr, rx))
            .expect("spawning a transport thread");
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
        // Bounds on what admitted peers hold (each connection pins a ring
        // and a thread): a peer's newest connection revokes its oldest
        // past the per-peer bound (a reconnecting sender is never locked
        // out by its own dying connection), and past the total bound new
        // requests are refused.
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
        writers
            .entry(peer)
            .or_default()
            .push((conn.revoker(), writable));
        drop(writers);
        let i = inner.clone();
        let revoker = conn.revoker();
        if let Err(e) = std::thread::Builder::new()
            .name("rdma-recv".into())
            .spawn(move || receive_loop(i, peer, conn, ring))
        {
            // The connection went with the closure; forget its revoker.
            tracing::error!(peer, error = %e, "no thread for an RDMA connection; closed");
            let mut w = inner.writers.lock().expect("lock poisoned");
            if let Some(v) = w.get_mut(&peer) {
                v.retain(|(r, _)| !r.same(&revoker));
            }
        }
    }
}

fn receive_loop(inner: Arc<Inner>, peer: PeerId, conn: RdmaConn, ring: Arc<RegionMemory>) {
    let revoker = conn.revoker();
    receive(&inner, peer, conn, &ring, |conn| {
        // Forget the revoker before the queue pair goes.
        let mut w = inner.writers.lock().expect("lock poisoned");
        if let Some(v) = w.get_mut(&peer) {
            v.retain(|(r, _)| !r.same(&revoker));
        }
        drop(w);
        drop(conn);
    });
}

/// The receiving side of a connection: woken by each post's immediate,
/// reads the ring, delivers, returns credit.
fn receive(
    inner: &Inner,
    peer: PeerId,
    mut conn: RdmaConn,
    ring: &RegionMemory,
    close: impl FnOnce(RdmaConn),
) {
    let mut reader = RingReader::new(inner.cfg.ring_bytes);
    let mut reaped = 0u64;
    let mut credited_reaped = 0u64;
    let mut got = Vec::new();
    loop {
        match conn.recv_or_closed() {
            Ok(Incoming::Immediate(_)) => {
                reaped += 1;
                let tail = ring.read_u64(0);
                let r = reader.read(
                    tail,
                    |at, buf| ring.read_at(RING_HEADER_BYTES + at, buf),
                    &mut got,
                );
                for payload in got.drain(..) {
                    (inner.deliver)(Event::Message {
                        from: peer,
                        payload,
                    });
                }
                if let Err(e) = r {
                    tracing::warn!(peer, error = %e, "closing connection: bad input (message ring)");
                    close(conn);
                    return;
                }
                let head = reader.credit_due();
                if head.is_some() || reaped - credited_reaped >= POSTS_UNCONSUMED_MAX / 4 {
                    let mut b = vec![TAG_CREDIT];
                    b.extend_from_slice(&reader.head().to_le_bytes());
                    b.extend_from_slice(&reaped.to_le_bytes());
                    if let Err(e) = conn.send(&b) {
                        tracing::info!(peer, error = %e, "connection closed (returning credit)");
                        close(conn);
                        return;
                    }
                    credited_reaped = reaped;
                }
            }
            Ok(Incoming::Message(_)) => {
                tracing::warn!(peer, "closing connection: bad input (a two-sided message where only ring posts are expected)");
                close(conn);
                return;
            }
            Err(e) => {
                if !inner.shutdown.load(Ordering::SeqCst) {
                    tracing::info!(peer, error = %e, "connection closed");
                }
                close(conn);
                return;
            }
        }
    }
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

    /// Takes in any credit that arrived (non-blocking).
    fn absorb_credit(&mut self, conn: &mut RdmaConn) -> Result<(), String> {
        while let Some(inc) = conn.try_recv_any().map_err(|e| e.to_string())? {
            let Incoming::Message(m) = inc else {
                return Err("an immediate on a sending connection".into());
            };
            if m.len() != 17 || m[0] != TAG_CREDIT {
                return Err("malformed credit".into());
            }
            let head = u64::from_le_bytes(m[1..9].try_into().expect("8 bytes"));
            let reaped = u64::from_le_bytes(m[9..17].try_into().expect("8 bytes"));
            if reaped < self.posts_reaped || reaped > self.posts {
                return Err(format!("credit for {reaped} posts of {}", self.posts));
            }
            self.posts_reaped = reaped;
            self.writer.on_credit(head)?;
        }
        Ok(())
    }

    /// Waits (polling, sleeping between polls) until `ready` holds.
    fn wait_credit(
        &mut self,
        conn: &mut RdmaConn,
        inner: &Inner,
        ready: impl Fn(&RingSender) -> bool,
    ) -> Result<(), String> {
        let end = std::time::Instant::now() + CREDIT_WAIT_MAX;
        let mut nap = Duration::from_micros(20);
        loop {
            self.absorb_credit(conn)?;
            if ready(self) {
                return Ok(());
            }
            if inner.shutdown.load(Ordering::SeqCst) || std::time::Instant::now() > end {
                return Err("no credit from the receiver".into());
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }

    /// Adds a message to the batch, posting first if the ring wraps or is
    /// full. Err: the connection is unusable.
    fn push(&mut self, conn: &mut RdmaConn, inner: &Inner, payload: &[u8]) -> Result<bool, String> {
        let before = self.writer.clone();
        let p = match self.writer.place(payload.len()) {
            Ok(p) => p,
            Err(PlaceError::TooLarge { len, max }) => {
                tracing::error!(len, max, "message larger than the ring allows; dropped");
                return Ok(false);
            }
            Err(PlaceError::Full) => {
                self.flush(conn, inner)?;
                let need = payload.len();
                self.wait_credit(conn, inner, |s| s.writer.clone().place(need).is_ok())?;
                return self.push(conn, inner, payload);
            }
        };
        if p.pad_at.is_some() && (!self.batch.is_empty() || self.pad_at.is_some()) {
            // Post what precedes the wrap on its own, then start again.
            self.writer = before;
            self.flush(conn, inner)?;
            return self.push(conn, inner, payload);
        }
        if self.batch.is_empty() {
            self.start = p.offset as u64;
            self.pad_at = p.pad_at.map(|a| a as u64);
        }
        let at = self.batch.len();
        self.batch.resize(at + p.bytes, 0);
        ring::encode_frame(payload, &mut self.batch[at..]);
        if self.batch.len() >= BATCH_BYTES_MAX {
            self.flush(conn, inner)?;
        }
        Ok(true)
    }

    /// Posts the batch: the frames, then the tail with an immediate.
    fn flush(&mut self, conn: &mut RdmaConn, inner: &Inner) -> Result<(), String> {
        if self.batch.is_empty() && self.pad_at.is_none() {
            return Ok(());
        }
        self.wait_credit(conn, inner, |s| {
            s.posts - s.posts_reaped < POSTS_UNCONSUMED_MAX
        })?;
        let pad = ring::pad_header();
        let base = RING_HEADER_BYTES as u64;
        let mut runs: Vec<(u64, &[u8])> = Vec::with_capacity(2);
        if let Some(at) = self.pad_at {
            runs.push((base + at, &pad));
        }
        if !self.batch.is_empty() {
            runs.push((base + self.start, &self.batch));
        }
        let tail = self.writer.tail();
        let r = conn.write_runs(self.remote, &runs, 0, tail, tail as u32);
        self.batch.clear();
        self.pad_at = None;
        self.posts += 1;
        r.map_err(|e| e.to_string())?;
        self.absorb_credit(conn)
    }
}

fn send_loop(inner: Arc<Inner>, peer: PeerId, addr: SocketAddr, queue: Receiver<Out>) {
    // A write put back to be tried again on the next connection.
    let mut pending = None;
    // The pass for this peer and when it was fetched.
    let mut pass: Option<(Pass, std::time::Instant)> = None;
    let mut backoff = Duration::from_millis(10);
    // Unreachable since, and when we last said so at warn level.
    let mut down: Option<(std::time::Instant, std::time::Instant)> = None;
    while !inner.shutdown.load(Ordering::SeqCst) {
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
        let regions = match advert {
            Some(r) => r,
            None => {
                tracing::warn!(peer, %addr, "closing connection: bad input (no region advertisement)");
                close_aside(conn);
                std::thread::sleep(backoff);
                continue;
            }
        };
        let mut regions = regions;
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
        backoff = Duration::from_millis(10);
        tracing::info!(peer, %addr, regions = regions.len(), "RDMA connected");
        let mut ring = RingSender::new(remote_ring);
        if let Err(why) = serve_queue(
            &inner,
            peer,
            &mut conn,
            &regions,
            &mut ring,
            &queue,
            &mut pending,
        ) {
            if why.is_empty() {
                return; // shutting down
            }
            tracing::info!(peer, %addr, reason = why, "connection failed; reconnecting");
        }
        close_aside(conn);
        std::thread::sleep(backoff);
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
/// the peer's answer, which a dead or revoking peer may be slow to give;
/// the sender reconnects meanwhile.
fn close_aside(conn: RdmaConn) {
    let _ = std::thread::Builder::new()
        .name("rdma-close".into())
        .spawn(move || drop(conn));
}

/// Takes frames off `queue` and sends them on `conn` until the connection
/// fails (the reason) or the transport shuts down (empty reason).
fn serve_queue(
    inner: &Inner,
    peer: PeerId,
    conn: &mut RdmaConn,
    regions: &HashMap<RegionId, RemoteRegion>,
    ring: &mut RingSender,
    queue: &Receiver<Out>,
    pending: &mut Option<Out>,
) -> Result<(), String> {
    loop {
        // Batch what is queued; post when the queue runs dry.
        let out = match pending.take().map_or_else(|| queue.try_recv(), Ok) {
            Ok(o) => o,
            Err(_) => {
                ring.flush(conn, inner)?;
                match queue.recv_timeout(Duration::from_millis(50)) {
                    Ok(o) => o,
                    Err(RecvTimeoutError::Timeout) => {
                        if inner.shutdown.load(Ordering::SeqCst) {
                            return Err(String::new());
                        }
                        ring.absorb_credit(conn)?;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return Err(String::new()),
                }
            }
        };
        match out {
            Out::Message(p) => {
                ring.push(conn, inner, &p)?;
            }
            Out::Write {
                id,
                region,
                offset,
                bytes,
                retried,
            } => {
                // Writes stay in order with the messages before them.
                ring.flush(conn, inner)?;
                let status = match regions.get(&region) {
                    None if !retried => {
                        // Perhaps not registered for us when we connected
                        // (a master grants one writer at a time): try once
                        // more on a fresh connection and advertisement.
                        *pending = Some(Out::Write {
                            id,
                            region,
                            offset,
                            bytes,
                            retried: true,
                        });
                        return Err("a region the peer did not advertise".into());
                    }
                    None => WriteStatus::NoSuchRegion,
                    Some(r) if offset + bytes.len() as u64 > r.len as u64 => {
                        WriteStatus::OutOfBounds
                    }
                    Some(r) => match conn.write(*r, offset, &bytes) {
                        Ok(()) => WriteStatus::Landed,
                        Err(RdmaError::Completion { name, .. }) => {
                            WriteStatus::Refused(format!("revoked by the peer: {name}"))
                        }
                        Err(e) => WriteStatus::Refused(e.to_string()),
                    },
                };
                let failed = matches!(status, WriteStatus::Refused(_));
                (inner.deliver)(Event::WriteDone {
                    to: peer,
                    id,
                    status,
                });
                if failed {
                    // The queue pair is in the error state: a new one
                    // is needed (the peer decides whether to accept).
                    return Err("a write failed".into());
                }
            }
        }
    }
}
