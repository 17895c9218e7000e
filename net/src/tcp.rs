//! The TCP transport: one connection per direction and peer, framed
//! ([`crate::frame`]), `TCP_NODELAY`, reconnect with exponential backoff.
//!
//! # Threads
//!
//! - a listener thread accepts connections; each accepted connection gets a
//!   reader thread, which checks the peer's `Hello` (same cluster), answers
//!   with its own, then delivers messages, applies one-sided writes to the
//!   registered regions and acknowledges them on the same connection
//!   (without waking the owner: the write is applied right there);
//! - a message for a peer with no configured address (a client that
//!   connected to us) is answered on the connection it opened;
//! - per configured peer, a sender thread owns the outgoing connection:
//!   connects (backing off from `backoff_min` to `backoff_max` while the
//!   peer is away), says `Hello`, then writes the frames queued for that
//!   peer; a reader thread on the same connection takes the peer's write
//!   acknowledgements.
//!
//! A peer that sends anything that is not a valid frame (garbage, a bad
//! checksum, an oversized length, a wrong version, another cluster's
//! hello) is disconnected and the reason logged; everything else goes on.
//! The queue per peer is bounded: frames for a peer that cannot keep up
//! (or is away) beyond it are dropped and counted.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossbeam::channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::frame::{Frame, FrameDecoder, FrameError};
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
    events: Sender<Event>,
    regions: RegionMap,
    outbound: Mutex<HashMap<PeerId, Sender<Frame>>>,
    /// The newest connection each peer opened to us, for answering peers
    /// whose address we do not know (clients).
    inbound: Mutex<HashMap<PeerId, Arc<Mutex<TcpStream>>>>,
    /// Every open connection, to close them at shutdown.
    conns: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_write: AtomicU64,
    dropped_frames: AtomicU64,
    /// Connections closed for a protocol error (bad input).
    rejected_conns: AtomicU64,
}

/// A node's TCP endpoint (see the module docs).
pub struct TcpTransport {
    inner: Arc<Inner>,
    local: SocketAddr,
    events: Receiver<Event>,
}

impl TcpTransport {
    /// Starts listening and connecting to the configured peers.
    pub fn start(cfg: TcpConfig) -> Result<TcpTransport, ListenError> {
        let listener = TcpListener::bind(cfg.listen).map_err(|source| ListenError {
            addr: cfg.listen,
            source,
        })?;
        let local = listener.local_addr().map_err(|source| ListenError {
            addr: cfg.listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ListenError {
                addr: local,
                source,
            })?;
        let (tx, rx) = unbounded();
        let inner = Arc::new(Inner {
            id: cfg.id,
            cluster: cfg.cluster,
            cfg: cfg.clone(),
            shutdown: AtomicBool::new(false),
            events: tx,
            regions: RwLock::new(HashMap::new()),
            outbound: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            next_write: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            rejected_conns: AtomicU64::new(0),
        });
        let i = inner.clone();
        spawn(&inner, "net-listen", move || accept_loop(i, listener));
        let t = TcpTransport {
            inner,
            local,
            events: rx,
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

    /// Connections closed because the peer sent bad input.
    pub fn rejected_connections(&self) -> u64 {
        self.inner.rejected_conns.load(Ordering::Relaxed)
    }

    fn enqueue(&self, to: PeerId, frame: Frame) {
        let out = self.inner.outbound.lock().expect("lock poisoned");
        let Some(q) = out.get(&to) else {
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
                    if let Err(e) = send_frame(&w, &frame) {
                        tracing::debug!(to, error = %e, "answer lost with its connection");
                    }
                }
                None => tracing::debug!(to, "no route to peer; frame dropped"),
            }
            return;
        };
        if let Err(TrySendError::Full(_)) = q.try_send(frame) {
            self.inner.dropped_frames.fetch_add(1, Ordering::Relaxed);
        }
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
        let (tx, rx) = bounded(self.inner.cfg.queue_frames_max);
        out.insert(peer, tx);
        drop(out);
        let i = self.inner.clone();
        spawn(&self.inner, "net-send", move || {
            send_loop(i, peer, addr, rx)
        });
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
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        for c in self.inner.conns.lock().expect("lock poisoned").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
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

fn spawn(inner: &Arc<Inner>, name: &str, f: impl FnOnce() + Send + 'static) {
    let h = std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawning a transport thread");
    inner.threads.lock().expect("lock poisoned").push(h);
}

fn track(inner: &Inner, s: &TcpStream) {
    if let Ok(c) = s.try_clone() {
        inner.conns.lock().expect("lock poisoned").push(c);
    }
}

fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    while !inner.shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, addr)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                track(&inner, &stream);
                let i = inner.clone();
                spawn(&inner, "net-conn", move || serve_inbound(i, stream, addr));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Why reading a frame stopped.
enum ReadError {
    /// The peer sent something that is not a valid frame.
    BadInput(FrameError),
    /// The connection ended or failed.
    Io(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::BadInput(e) => write!(f, "{e}"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads until a frame is complete (or the stream fails).
fn read_frame(stream: &mut TcpStream, dec: &mut FrameDecoder) -> Result<Frame, ReadError> {
    let mut buf = [0u8; 64 << 10];
    loop {
        match dec.next_frame() {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(ReadError::BadInput(e)),
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err(ReadError::Io("closed by the peer".into())),
            Ok(n) => dec.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e.to_string())),
        }
    }
}

fn serve_inbound(inner: Arc<Inner>, mut stream: TcpStream, addr: SocketAddr) {
    let mut dec = FrameDecoder::new();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let peer = match read_frame(&mut stream, &mut dec) {
        Ok(Frame::Hello { peer, cluster }) if cluster == inner.cluster => peer,
        Ok(Frame::Hello { cluster, .. }) => {
            reject(
                &inner,
                &stream,
                addr,
                &format!("hello from cluster {cluster}"),
            );
            return;
        }
        Ok(other) => {
            reject(
                &inner,
                &stream,
                addr,
                &format!("expected hello, got {other:?}"),
            );
            return;
        }
        Err(why) => {
            reject(&inner, &stream, addr, &why.to_string());
            return;
        }
    };
    let _ = stream.set_read_timeout(None);
    let hello = Frame::Hello {
        peer: inner.id,
        cluster: inner.cluster,
    };
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let writer = Arc::new(Mutex::new(writer));
    if send_frame(&writer, &hello).is_err() {
        return;
    }
    tracing::debug!(peer, %addr, "peer connected");
    // A peer we have no address for (a client) is answered on this
    // connection.
    inner
        .inbound
        .lock()
        .expect("lock poisoned")
        .insert(peer, writer.clone());
    read_loop(&inner, stream, dec, peer, addr, Some(&writer));
    let mut inbound = inner.inbound.lock().expect("lock poisoned");
    if inbound.get(&peer).is_some_and(|w| Arc::ptr_eq(w, &writer)) {
        inbound.remove(&peer);
    }
}

fn reject(inner: &Inner, stream: &TcpStream, addr: SocketAddr, why: &str) {
    if !inner.shutdown.load(Ordering::SeqCst) {
        inner.rejected_conns.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%addr, reason = why, "closing connection: bad input");
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn send_frame(writer: &Mutex<TcpStream>, frame: &Frame) -> std::io::Result<()> {
    let mut b = BytesMut::new();
    frame.encode(&mut b);
    writer.lock().expect("lock poisoned").write_all(&b)
}

/// Takes frames off a connection until it ends. `acks` is where write
/// acknowledgements go (the same connection).
fn read_loop(
    inner: &Inner,
    mut stream: TcpStream,
    mut dec: FrameDecoder,
    peer: PeerId,
    addr: SocketAddr,
    acks: Option<&Mutex<TcpStream>>,
) {
    loop {
        let frame = match read_frame(&mut stream, &mut dec) {
            Ok(f) => f,
            Err(ReadError::BadInput(e)) => {
                reject(inner, &stream, addr, &e.to_string());
                return;
            }
            Err(ReadError::Io(why)) => {
                if !inner.shutdown.load(Ordering::SeqCst) {
                    tracing::info!(peer, %addr, reason = why, "connection closed");
                }
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        };
        match frame {
            Frame::Message(payload) => {
                let _ = inner.events.send(Event::Message {
                    from: peer,
                    payload,
                });
            }
            Frame::Write {
                id,
                region,
                offset,
                bytes,
            } => {
                let status = apply_write(&inner.regions, region, offset, &bytes);
                let ack = Frame::WriteAck { id, status };
                if let Some(w) = acks {
                    if send_frame(w, &ack).is_err() {
                        return;
                    }
                }
            }
            Frame::WriteAck { id, status } => {
                let _ = inner.events.send(Event::WriteDone {
                    to: peer,
                    id,
                    status,
                });
            }
            Frame::Hello { .. } => {
                reject(inner, &stream, addr, "a second hello");
                return;
            }
        }
    }
}

fn send_loop(inner: Arc<Inner>, peer: PeerId, addr: SocketAddr, queue: Receiver<Frame>) {
    let mut backoff = inner.cfg.backoff_min;
    while !inner.shutdown.load(Ordering::SeqCst) {
        let stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer, %addr, error = %e, "connect failed; retrying");
                sleep_unless_shutdown(&inner, backoff);
                backoff = (backoff * 2).min(inner.cfg.backoff_max);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        track(&inner, &stream);
        let hello = Frame::Hello {
            peer: inner.id,
            cluster: inner.cluster,
        };
        let (Ok(writer), Ok(mut reader)) = (stream.try_clone(), stream.try_clone()) else {
            continue;
        };
        let writer = Mutex::new(writer);
        if send_frame(&writer, &hello).is_err() {
            sleep_unless_shutdown(&inner, backoff);
            continue;
        }
        // The peer answers with its own hello, then with write acks.
        let mut dec = FrameDecoder::new();
        let _ = reader.set_read_timeout(Some(Duration::from_secs(5)));
        match read_frame(&mut reader, &mut dec) {
            Ok(Frame::Hello { peer: p, cluster }) if p == peer && cluster == inner.cluster => {}
            Ok(other) => {
                reject(
                    &inner,
                    &stream,
                    addr,
                    &format!("bad hello answer {other:?}"),
                );
                sleep_unless_shutdown(&inner, backoff);
                continue;
            }
            Err(why) => {
                tracing::debug!(peer, %addr, reason = %why, "no hello answer");
                let _ = stream.shutdown(Shutdown::Both);
                sleep_unless_shutdown(&inner, backoff);
                continue;
            }
        }
        let _ = reader.set_read_timeout(None);
        backoff = inner.cfg.backoff_min;
        tracing::info!(peer, %addr, "connected");
        let i = inner.clone();
        spawn(&inner, "net-acks", move || {
            read_loop(&i, reader, dec, peer, addr, None)
        });
        loop {
            match queue.recv_timeout(Duration::from_millis(50)) {
                Ok(frame) => {
                    if let Err(e) = send_frame(&writer, &frame) {
                        tracing::info!(peer, %addr, error = %e, "send failed; reconnecting");
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if inner.shutdown.load(Ordering::SeqCst) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let _ = stream.shutdown(Shutdown::Both);
        sleep_unless_shutdown(&inner, backoff);
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
