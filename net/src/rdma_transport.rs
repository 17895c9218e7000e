//! [`Transport`] over RDMA (feature `rdma`): messages as SENDs, one-sided
//! writes as RDMA WRITEs into the peer's registered memory.
//!
//! # Connections and threads
//!
//! Each node listens (`rdma_cm`). Per configured peer, a sender thread
//! connects (saying who it is and which cluster in the private data),
//! learns the peer's regions from the advertisement the peer sends first,
//! then takes frames off a bounded queue: messages are SENT, writes are
//! checked against the advertised region (unknown region, out of bounds)
//! and RDMA-WRITTEN; each write's completion becomes a
//! [`Event::WriteDone`] (`Landed`: in the peer's memory; `Refused`: the
//! peer revoked this writer). Per accepted connection, a receiver thread
//! sends the advertisement, then delivers what arrives. Completions are
//! awaited by sleeping on the completion channel after one poll.
//!
//! # Regions are memory
//!
//! A one-sided write runs no code on the receiving side, so a region here
//! is memory the NIC writes, declared when the transport starts
//! ([`RdmaConfig::regions`]) and read with [`RdmaTransport::region`];
//! [`Transport::register_region`] (a callback region, as TCP uses) is
//! refused and logged. The fence is [`RdmaTransport::revoke`]: the owner
//! moves a writer's queue pair to the error state.
//!
//! # Limits of this version
//!
//! Only configured peers can be sent to (no answering unknown clients on
//! their connection); one operation in flight per peer (the sender thread
//! waits for each completion); messages up to
//! [`super::rdma::MESSAGE_BYTES_MAX`] minus a tag byte.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crossbeam::channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::rdma::{RdmaConn, RdmaError, RdmaListener, RegionMemory, RemoteRegion, Revoker};
use crate::{Event, PeerId, Region, RegionId, Transport, WriteStatus};

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
}

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
        }
    }
}

const TAG_MESSAGE: u8 = 0;
const TAG_REGIONS: u8 = 1;

enum Out {
    Message(Bytes),
    Write {
        id: u64,
        region: RegionId,
        offset: u64,
        bytes: Bytes,
    },
}

struct Inner {
    cfg: RdmaConfig,
    shutdown: AtomicBool,
    events: Sender<Event>,
    regions: HashMap<RegionId, Arc<RegionMemory>>,
    outbound: Mutex<HashMap<PeerId, Sender<Out>>>,
    /// Accepted connections by peer: how to revoke each.
    writers: Mutex<HashMap<PeerId, Vec<Revoker>>>,
    next_write: AtomicU64,
    dropped_frames: AtomicU64,
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
        let listener = RdmaListener::bind(cfg.listen)?;
        let (tx, rx) = unbounded();
        let regions = cfg
            .regions
            .iter()
            .map(|&(id, len)| (id, RegionMemory::new(len)))
            .collect();
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            shutdown: AtomicBool::new(false),
            events: tx,
            regions,
            outbound: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            next_write: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
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
        for r in &revokers {
            r.revoke()?;
        }
        drop(writers);
        tracing::info!(peer, connections = revokers.len(), "revoked a writer");
        Ok(revokers.len())
    }

    /// Frames dropped because a peer's queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.inner.dropped_frames.load(Ordering::Relaxed)
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
/// len) each.
fn advertise(conn: &mut RdmaConn, inner: &Inner) -> Result<(), RdmaError> {
    let mut b = vec![TAG_REGIONS, inner.regions.len() as u8];
    let mut ids: Vec<_> = inner.regions.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let r = conn.expose_region(&inner.regions[&id])?;
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

fn accept_loop(inner: Arc<Inner>, listener: RdmaListener) {
    while !inner.shutdown.load(Ordering::SeqCst) {
        let mut conn = match listener.accept(None) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let p = conn.peer_private();
        if p.len() != 16 {
            tracing::warn!(
                len = p.len(),
                "closing connection: bad input (private data)"
            );
            continue;
        }
        let cluster = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
        let peer = u64::from_le_bytes(p[8..].try_into().expect("8 bytes"));
        if cluster != inner.cfg.cluster {
            tracing::warn!(
                peer,
                cluster,
                "closing connection: bad input (another cluster)"
            );
            continue;
        }
        if let Err(e) = advertise(&mut conn, &inner) {
            tracing::warn!(peer, error = %e, "could not advertise regions");
            continue;
        }
        inner
            .writers
            .lock()
            .expect("lock poisoned")
            .entry(peer)
            .or_default()
            .push(conn.revoker());
        let i = inner.clone();
        std::thread::Builder::new()
            .name("rdma-recv".into())
            .spawn(move || receive_loop(i, peer, conn))
            .expect("spawning a transport thread");
    }
}

fn receive_loop(inner: Arc<Inner>, peer: PeerId, conn: RdmaConn) {
    let revoker = conn.revoker();
    receive(&inner, peer, conn, |conn| {
        // Forget the revoker before the queue pair goes.
        let mut w = inner.writers.lock().expect("lock poisoned");
        if let Some(v) = w.get_mut(&peer) {
            v.retain(|r| !r.same(&revoker));
        }
        drop(w);
        drop(conn);
    });
}

fn receive(inner: &Inner, peer: PeerId, mut conn: RdmaConn, close: impl FnOnce(RdmaConn)) {
    loop {
        match conn.recv() {
            Ok(m) if m.first() == Some(&TAG_MESSAGE) => {
                let _ = inner.events.send(Event::Message {
                    from: peer,
                    payload: Bytes::copy_from_slice(&m[1..]),
                });
            }
            Ok(_) => {
                tracing::warn!(peer, "closing connection: bad input (unknown tag)");
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

fn send_loop(inner: Arc<Inner>, peer: PeerId, addr: SocketAddr, queue: Receiver<Out>) {
    let mut private = inner.cfg.cluster.to_le_bytes().to_vec();
    private.extend_from_slice(&inner.cfg.id.to_le_bytes());
    let mut backoff = Duration::from_millis(10);
    while !inner.shutdown.load(Ordering::SeqCst) {
        let mut conn = match RdmaConn::connect(addr, &private) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(peer, %addr, error = %e, "connect failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let regions = match conn.recv().ok().as_deref().and_then(parse_advert) {
            Some(r) => r,
            None => {
                tracing::warn!(peer, %addr, "closing connection: bad input (no region advertisement)");
                std::thread::sleep(backoff);
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        tracing::info!(peer, %addr, regions = regions.len(), "RDMA connected");
        loop {
            let out = match queue.recv_timeout(Duration::from_millis(50)) {
                Ok(o) => o,
                Err(RecvTimeoutError::Timeout) => {
                    if inner.shutdown.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match out {
                Out::Message(p) => {
                    let mut b = Vec::with_capacity(p.len() + 1);
                    b.push(TAG_MESSAGE);
                    b.extend_from_slice(&p);
                    if let Err(e) = conn.send(&b) {
                        tracing::info!(peer, error = %e, "send failed; reconnecting");
                        break;
                    }
                }
                Out::Write {
                    id,
                    region,
                    offset,
                    bytes,
                } => {
                    let status = match regions.get(&region) {
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
                    let _ = inner.events.send(Event::WriteDone {
                        to: peer,
                        id,
                        status,
                    });
                    if failed {
                        // The queue pair is in the error state: a new one
                        // is needed (the peer decides whether to accept).
                        break;
                    }
                }
            }
        }
        std::thread::sleep(backoff);
    }
}
