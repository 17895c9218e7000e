//! One connection's byte stream: a TCP socket, and its TLS session when the
//! transport is secured ([`crate::tls`]).
//!
//! A connection is written by any thread that sends and read by one reader
//! (a thread, or the owner's poll). With TLS both directions share one
//! rustls session, whose lock is only ever held to feed it, encrypt or
//! take plaintext out, never across a socket read or write: the reader
//! reads ciphertext into its own buffer unlocked, and a writer encrypts
//! under the session lock, then writes the records to the socket holding
//! only the write lock. The write lock keeps records in the order they
//! were sealed (their sequence numbers), and frames from two senders from
//! interleaving; a reader never waits behind a stalled write. Anything the
//! session queues while reading (an alert, a key update's answer) leaves
//! with the next write.
//!
//! The handshake has a deadline for the whole exchange: every socket read
//! and write in it is bounded by the time left, so a peer that trickles
//! bytes cannot hold the connection longer.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::tls::{peer_identity, Identity, Tls, TlsError};

/// A connection (see the module docs).
pub struct Link {
    sock: TcpStream,
    /// The TLS session (`None`: plain).
    session: Mutex<Option<rustls::Connection>>,
    /// Held while writing to the socket (see the module docs); holds the
    /// buffer records are sealed into, reused from write to write, and
    /// the bytes a non-blocking send left unsent.
    write_lock: Mutex<Outgoing>,
    /// Ciphertext read from the socket and not yet fed to the session
    /// (reader only).
    pending: Mutex<Pending>,
    /// The peer's identity from its certificate (TLS only).
    identity: Option<Identity>,
}

/// The reader's ciphertext buffer: `buf[fed..filled]` is still to be fed
/// to the session. Allocated (and zeroed) once, on the first read.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    fed: usize,
    filled: usize,
}

/// The writing side's buffers.
#[derive(Default)]
struct Outgoing {
    /// Where a write's TLS records are sealed (reused).
    seal: Vec<u8>,
    /// [`Link::send`]: bytes the socket did not take yet; `backlog[sent..]`
    /// is still to go, before anything newer.
    backlog: Vec<u8>,
    sent: usize,
    /// Set once the connection is handed to an io_uring loop
    /// ([`Link::attach_ring`]): from then on no caller writes the socket;
    /// bytes wait in `backlog` and the ring sends them.
    ring: Option<RingHook>,
    /// Ring mode: the bytes of the send in flight (`flight[flight_sent..]`
    /// still to go). Untouched while `in_flight`: the kernel reads it.
    flight: Vec<u8>,
    flight_sent: usize,
    in_flight: bool,
    /// Ring mode: the ring has been told this link has bytes to send.
    marked: bool,
}

/// How a link in ring mode tells its ring it has bytes to send.
pub(crate) struct RingHook {
    /// The connection's token in the ring.
    pub token: usize,
    /// Where the token goes.
    pub kick: std::sync::Arc<dyn Fn(usize) + Send + Sync>,
}

impl Outgoing {
    fn waiting(&self) -> usize {
        self.backlog.len() - self.sent
    }

    /// Ring mode: bytes not yet taken by the socket (waiting, or in the
    /// send in flight).
    fn unsent(&self) -> usize {
        self.waiting() + (self.flight.len() - self.flight_sent)
    }

    /// Ring mode: moves what waits into `flight` and returns the bytes to
    /// send, unless a send is in flight or nothing waits.
    fn take_flight(&mut self) -> Option<(*const u8, usize)> {
        if self.in_flight {
            return None;
        }
        self.marked = false;
        if self.flight_sent < self.flight.len() {
            // A send the ring could not start: its bytes go first.
            self.in_flight = true;
            let rest = &self.flight[self.flight_sent..];
            return Some((rest.as_ptr(), rest.len()));
        }
        if self.waiting() == 0 {
            return None;
        }
        self.flight.clear();
        if self.sent == 0 {
            std::mem::swap(&mut self.flight, &mut self.backlog);
        } else {
            self.flight.extend_from_slice(&self.backlog[self.sent..]);
            self.backlog.clear();
            self.sent = 0;
        }
        self.flight_sent = 0;
        self.in_flight = true;
        Some((self.flight.as_ptr(), self.flight.len()))
    }
}

/// Why [`Link::send`] did not take a frame.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer is not reading: the bytes it has yet to take would pass
    /// the bound. The connection must be closed (a frame may be half
    /// sent).
    #[error("the peer is not reading: {waiting} bytes wait for it, over the bound of {max}")]
    Backlogged {
        /// Bytes that were waiting, this frame's included.
        waiting: usize,
        /// The bound.
        max: usize,
    },
}

/// Bytes read from the socket at once: a whole TLS record (16 KiB of
/// plaintext and its overhead), so a connection's buffer stays small.
const READ_BYTES: usize = 17 << 10;
/// A connection keeps its sealing buffer up to this size between writes.
const WRITE_BUFFER_KEPT_BYTES: usize = 64 << 10;

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket failed, or the handshake did not finish in time.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed (no certificate, another CA, expired...).
    #[error("TLS handshake: {0}")]
    Handshake(String),
    /// The peer's certificate names no identity, or not the one expected.
    #[error("{0}")]
    Identity(String),
    /// Making the session failed.
    #[error("{0}")]
    Tls(#[from] TlsError),
}

impl Link {
    /// A plain connection.
    pub fn plain(sock: TcpStream) -> Link {
        Link {
            sock,
            session: Mutex::new(None),
            write_lock: Mutex::new(Outgoing::default()),
            pending: Mutex::new(Pending::default()),
            identity: None,
        }
    }

    /// Runs the server side of a TLS handshake on an accepted socket, by
    /// `deadline`.
    pub fn accept_tls(sock: TcpStream, tls: &Tls, deadline: Instant) -> Result<Link, LinkError> {
        let conn = rustls::Connection::Server(tls.accept()?);
        Link::handshake(sock, conn, deadline)
    }

    /// Runs the client side of a TLS handshake on a connected socket, by
    /// `deadline`.
    pub fn connect_tls(sock: TcpStream, tls: &Tls, deadline: Instant) -> Result<Link, LinkError> {
        let conn = rustls::Connection::Client(tls.connect()?);
        Link::handshake(sock, conn, deadline)
    }

    /// Connects to `addr` (TLS if `tls`), within `timeout` in all.
    pub fn connect(
        addr: SocketAddr,
        tls: Option<&Tls>,
        timeout: Duration,
    ) -> Result<Link, LinkError> {
        let deadline = Instant::now() + timeout;
        let sock = TcpStream::connect_timeout(&addr, timeout)?;
        let _ = sock.set_nodelay(true);
        match tls {
            Some(t) => Link::connect_tls(sock, t, deadline),
            None => Ok(Link::plain(sock)),
        }
    }

    fn handshake(
        sock: TcpStream,
        mut conn: rustls::Connection,
        deadline: Instant,
    ) -> Result<Link, LinkError> {
        let before = (
            sock.read_timeout().ok().flatten(),
            sock.write_timeout().ok().flatten(),
        );
        let timed_out = || {
            LinkError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the TLS handshake took too long",
            ))
        };
        while conn.is_handshaking() || conn.wants_write() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            if conn.wants_write() {
                sock.set_write_timeout(Some(left))?;
                conn.write_tls(&mut &sock).map_err(|e| match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(),
                    _ => LinkError::Io(e),
                })?;
                continue;
            }
            sock.set_read_timeout(Some(left))?;
            let n = match conn.read_tls(&mut &sock) {
                Ok(0) => {
                    return Err(LinkError::Handshake(
                        "the peer closed the connection".into(),
                    ))
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out())
                }
                Err(e) => return Err(LinkError::Io(e)),
            };
            debug_assert!(n > 0);
            if let Err(e) = conn.process_new_packets() {
                // Tell the peer why, best effort, within the deadline.
                let _ = sock.set_write_timeout(Some(Duration::from_millis(100)));
                let _ = conn.write_tls(&mut &sock);
                return Err(LinkError::Handshake(e.to_string()));
            }
        }
        sock.set_read_timeout(before.0)?;
        sock.set_write_timeout(before.1)?;
        Link::established(sock, conn)
    }

    /// A link over a session whose handshake is done (driven by an event
    /// loop rather than [`Link::accept_tls`]): the peer's identity is taken
    /// from its certificate.
    pub fn established(sock: TcpStream, conn: rustls::Connection) -> Result<Link, LinkError> {
        let identity = peer_identity(&conn).map_err(|e| LinkError::Identity(e.to_string()))?;
        Ok(Link {
            sock,
            session: Mutex::new(Some(conn)),
            write_lock: Mutex::new(Outgoing::default()),
            pending: Mutex::new(Pending::default()),
            identity: Some(identity),
        })
    }

    /// The peer's identity from its certificate (`None` on a plain link).
    pub fn identity(&self) -> Option<Identity> {
        self.identity
    }

    /// Whether this link is encrypted and authenticated.
    pub fn is_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// The socket (for options, polling and shutdown; never read or write
    /// it directly on a TLS link).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Closes both directions.
    pub fn shutdown(&self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// Writes all of `bytes` (one frame, or several), blocking until the
    /// socket took them (or its write timeout): frames from concurrent
    /// writers never interleave. For threads that may wait; an event loop
    /// uses [`Link::send`].
    pub fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut guard = self.write_lock.lock().expect("lock poisoned");
        if guard.ring.is_some() {
            // The ring owns the socket: queue (nothing here may write it).
            drop(guard);
            return self.send(bytes, usize::MAX).map_err(|e| match e {
                SendError::Io(e) => e,
                other => std::io::Error::other(other.to_string()),
            });
        }
        let out = &mut *guard;
        if out.waiting() > 0 {
            // A non-blocking send left bytes: they go first.
            (&self.sock).write_all(&out.backlog[out.sent..])?;
            out.backlog.clear();
            out.sent = 0;
        }
        if !self.seal(bytes, &mut out.seal)? {
            return (&self.sock).write_all(bytes);
        }
        let r = (&self.sock).write_all(&out.seal);
        if out.seal.capacity() > WRITE_BUFFER_KEPT_BYTES {
            // A large frame's buffer is not kept for the connection's life.
            out.seal = Vec::new();
        }
        r
    }

    /// Encrypts `bytes` into `into` (cleared first); false on a plain link
    /// (nothing to do: the bytes go as they are).
    fn seal(&self, bytes: &[u8], into: &mut Vec<u8>) -> std::io::Result<bool> {
        let mut session = self.session.lock().expect("lock poisoned");
        let Some(conn) = session.as_mut() else {
            return Ok(false);
        };
        // The session holds a bounded amount of ciphertext: take it out
        // as we go.
        into.clear();
        let mut rest = bytes;
        loop {
            while conn.wants_write() {
                conn.write_tls(into)?;
            }
            if rest.is_empty() {
                return Ok(true);
            }
            let n = conn.writer().write(rest)?;
            rest = &rest[n..];
        }
    }

    /// Hands the link to an io_uring loop: from now on nothing here writes
    /// the socket; [`Link::send`] queues bytes and calls `hook.kick` with
    /// the token when the ring must send them, and the ring takes them
    /// with [`Link::ring_take`] and reports with [`Link::ring_sent`]. Bytes
    /// already waiting are handed on (the ring looks at a new connection
    /// at once).
    pub(crate) fn attach_ring(&self, hook: RingHook) {
        let mut out = self.write_lock.lock().expect("lock poisoned");
        out.ring = Some(hook);
    }

    /// Ring mode: the bytes to send next (pointer and length into a buffer
    /// this link keeps untouched until [`Link::ring_sent`] or
    /// [`Link::ring_failed`]), or `None` if a send is in flight or nothing
    /// waits.
    pub(crate) fn ring_take(&self) -> Option<(*const u8, usize)> {
        self.write_lock.lock().expect("lock poisoned").take_flight()
    }

    /// Ring mode: the send in flight took `n` bytes; returns the next
    /// bytes to send (the rest of this one, or what waits), if any.
    pub(crate) fn ring_sent(&self, n: usize) -> Option<(*const u8, usize)> {
        let mut out = self.write_lock.lock().expect("lock poisoned");
        out.flight_sent = (out.flight_sent + n).min(out.flight.len());
        if out.flight_sent < out.flight.len() {
            let rest = &out.flight[out.flight_sent..];
            return Some((rest.as_ptr(), rest.len()));
        }
        out.in_flight = false;
        out.flight.clear();
        out.flight_sent = 0;
        if out.flight.capacity() > WRITE_BUFFER_KEPT_BYTES {
            out.flight = Vec::new();
        }
        out.take_flight()
    }

    /// Ring mode: the ring could not start the send [`Link::ring_take`]
    /// gave; its bytes are given again by the next `ring_take`.
    pub(crate) fn ring_not_started(&self) {
        self.write_lock.lock().expect("lock poisoned").in_flight = false;
    }

    /// Ring mode: the send in flight failed (the connection is closing);
    /// its buffer is the link's again.
    pub(crate) fn ring_failed(&self) {
        let mut out = self.write_lock.lock().expect("lock poisoned");
        out.in_flight = false;
    }

    /// Ring mode: queues `bytes` for the ring, within `backlog_max`.
    fn ring_queue(out: &mut Outgoing, bytes: &[u8], backlog_max: usize) -> Result<(), SendError> {
        // Bytes not yet offered to the socket (the ring sends at the end
        // of the owner's ready) say little about the peer: the bound
        // applies once a send is in flight and more piles up behind it.
        // Before that, four bounds' worth in one ready is refused all the
        // same (the owner flushes every ready; nobody should queue that
        // much for one peer in one).
        let unsent = out.unsent();
        let max = if out.in_flight {
            backlog_max
        } else {
            backlog_max.saturating_mul(4)
        };
        if unsent > 0 && unsent + bytes.len() > max {
            return Err(SendError::Backlogged {
                waiting: unsent + bytes.len(),
                max,
            });
        }
        out.backlog.extend_from_slice(bytes);
        if !out.in_flight && !out.marked && out.waiting() > 0 {
            out.marked = true;
            if let Some(hook) = &out.ring {
                (hook.kick)(hook.token);
            }
        }
        Ok(())
    }

    /// Ring mode: feeds `bytes` read from the socket to the session (TLS)
    /// and the plaintext to `dec`. `Ok(false)`: the peer closed the
    /// session.
    pub(crate) fn receive(
        &self,
        bytes: &[u8],
        dec: &mut crate::frame::FrameDecoder,
    ) -> std::io::Result<bool> {
        let mut session = self.session.lock().expect("lock poisoned");
        let Some(conn) = session.as_mut() else {
            dec.push(bytes);
            return Ok(true);
        };
        // Ciphertext a blocking read took before the ring did goes first.
        let mut pending = self.pending.lock().expect("lock poisoned");
        let earlier = std::mem::take(&mut pending.buf);
        let (fed, filled) = (pending.fed, pending.filled);
        pending.fed = 0;
        pending.filled = 0;
        drop(pending);
        let earlier_rest = earlier.get(fed..filled).unwrap_or(&[]);
        let mut plain = [0u8; 4096];
        for mut rest in [earlier_rest, bytes] {
            loop {
                // Plaintext first: the session refuses ciphertext while
                // its plaintext buffer is full.
                loop {
                    match conn.reader().read(&mut plain) {
                        Ok(0) => return Ok(false),
                        Ok(n) => dec.push(&plain[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                if rest.is_empty() {
                    break;
                }
                if conn.read_tls(&mut rest)? == 0 {
                    // The session takes no more and has nothing to give:
                    // never spin on it.
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the TLS session refused more input",
                    ));
                }
                if let Err(e) = conn.process_new_packets() {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
            }
        }
        let answer = conn.wants_write();
        drop(session);
        if answer {
            // What the session queued in answer (a key update) leaves now.
            self.send(&[], usize::MAX).map_err(|e| match e {
                SendError::Io(e) => e,
                other => std::io::Error::other(other.to_string()),
            })?;
        }
        Ok(true)
    }

    /// Sends `bytes` without ever waiting for the socket (`MSG_DONTWAIT`,
    /// whatever the socket's mode): what the socket does not take now
    /// waits in the link's backlog, after anything already waiting, and
    /// goes out with the next `send` or [`Link::flush`] (call it when the
    /// socket turns writable). A frame is always taken when nothing waits;
    /// past that, at most `backlog_max` bytes may wait, and a peer that
    /// would make more wait is refused ([`SendError::Backlogged`]): it is
    /// not reading, and the caller closes the connection rather than hold
    /// more memory for it or wait on it.
    pub fn send(&self, bytes: &[u8], backlog_max: usize) -> Result<(), SendError> {
        let mut out = self.write_lock.lock().expect("lock poisoned");
        let out = &mut *out;
        let mut seal = std::mem::take(&mut out.seal);
        let sealed = self.seal(bytes, &mut seal)?;
        let bytes: &[u8] = if sealed { &seal } else { bytes };
        let r = if out.ring.is_some() {
            Link::ring_queue(out, bytes, backlog_max)
        } else {
            self.send_locked(out, bytes, backlog_max)
        };
        if seal.capacity() <= WRITE_BUFFER_KEPT_BYTES {
            out.seal = seal;
        }
        r
    }

    fn send_locked(
        &self,
        out: &mut Outgoing,
        bytes: &[u8],
        backlog_max: usize,
    ) -> Result<(), SendError> {
        if out.waiting() > 0 {
            self.flush_locked(out)?;
        }
        let mut rest = bytes;
        if out.waiting() == 0 {
            rest = &rest[self.send_some(rest)?..];
            if rest.is_empty() {
                return Ok(());
            }
        } else if out.waiting() + rest.len() > backlog_max {
            return Err(SendError::Backlogged {
                waiting: out.waiting() + rest.len(),
                max: backlog_max,
            });
        }
        out.backlog.extend_from_slice(rest);
        Ok(())
    }

    /// Writes what the socket takes of `bytes` now; how much it took.
    fn send_some(&self, bytes: &[u8]) -> std::io::Result<usize> {
        use rustix::net::{send, SendFlags};
        let mut done = 0;
        while done < bytes.len() {
            match send(
                &self.sock,
                &bytes[done..],
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Ok(n) => done += n,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(done)
    }

    fn flush_locked(&self, out: &mut Outgoing) -> std::io::Result<()> {
        let n = self.send_some(&out.backlog[out.sent..])?;
        out.sent += n;
        if out.sent == out.backlog.len() {
            out.backlog.clear();
            out.sent = 0;
            if out.backlog.capacity() > WRITE_BUFFER_KEPT_BYTES {
                out.backlog = Vec::new();
            }
        } else if out.sent >= out.backlog.len() / 2 {
            // A peer that reads steadily but a little slower than we send
            // never drains the backlog to empty: drop what went, or the
            // buffer would keep every byte ever sent.
            out.backlog.drain(..out.sent);
            out.sent = 0;
        }
        Ok(())
    }

    /// Sends what waits in the backlog, as far as the socket takes it now;
    /// returns the bytes still waiting.
    pub fn flush(&self) -> std::io::Result<usize> {
        let mut out = self.write_lock.lock().expect("lock poisoned");
        if out.ring.is_some() {
            return Ok(out.unsent());
        }
        if out.waiting() > 0 {
            self.flush_locked(&mut out)?;
        }
        Ok(out.waiting())
    }

    /// Bytes waiting in the backlog.
    pub fn backlog(&self) -> usize {
        let out = self.write_lock.lock().expect("lock poisoned");
        if out.ring.is_some() {
            out.unsent()
        } else {
            out.waiting()
        }
    }

    /// Reads plaintext into `buf`: `Ok(0)` when the peer closed, the
    /// socket's error (`WouldBlock` on a non-blocking socket with nothing
    /// to read, `TimedOut` past a read timeout) otherwise. One reader only.
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut pending = self.pending.lock().expect("lock poisoned");
        loop {
            {
                let mut session = self.session.lock().expect("lock poisoned");
                let Some(conn) = session.as_mut() else {
                    drop(session);
                    return (&self.sock).read(buf);
                };
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n), // 0: the peer closed the session
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                let p = &mut *pending;
                if p.fed < p.filled {
                    let n = conn.read_tls(&mut &p.buf[p.fed..p.filled])?;
                    p.fed += n;
                    if let Err(e) = conn.process_new_packets() {
                        // The connection ends; the alert is not worth a
                        // wait for the write lock.
                        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                    }
                    // What the session queued in answer (a key update)
                    // leaves with the next write.
                    continue;
                }
            }
            let p = &mut *pending;
            if p.buf.len() < READ_BYTES {
                p.buf.resize(READ_BYTES, 0);
            }
            p.fed = 0;
            p.filled = 0;
            match (&self.sock).read(&mut p.buf) {
                Ok(0) => return Ok(0),
                Ok(n) => p.filled = n,
                Err(e) => return Err(e),
            }
        }
    }
}
