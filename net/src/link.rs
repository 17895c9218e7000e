//! One connection's byte stream: a TCP socket, and its TLS session when the
//! transport is secured ([`crate::tls`]).
//!
//! A connection is written by any thread that sends (one lock, one write,
//! as before TLS) and read by one reader (a thread, or the owner's poll).
//! With TLS both directions share one rustls session, so the reader never
//! holds the session's lock across a socket read: it reads ciphertext into
//! its own buffer unlocked, then locks only to feed the session and take
//! the plaintext out. A writer locks to encrypt and put the records on the
//! socket. Plain connections take the same lock around writes, so frames
//! from two senders never interleave.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::tls::{peer_identity, Identity, Tls, TlsError};

/// A connection (see the module docs).
pub struct Link {
    sock: TcpStream,
    /// The TLS session (`None`: plain). Also the write lock.
    session: Mutex<Option<rustls::Connection>>,
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

/// Bytes read from the socket at once.
const READ_BYTES: usize = 64 << 10;

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
        let before = sock.read_timeout().ok().flatten();
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LinkError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the TLS handshake took too long",
                )));
            }
            sock.set_read_timeout(Some(left))?;
            if let Err(e) = conn.complete_io(&mut &sock) {
                // Tell the peer why, if rustls has an alert queued.
                let _ = conn.write_tls(&mut &sock);
                return Err(match e.kind() {
                    std::io::ErrorKind::InvalidData => LinkError::Handshake(e.to_string()),
                    _ => LinkError::Io(e),
                });
            }
        }
        // Whatever the peer's last flight left to send (a client's
        // Finished) goes now.
        while conn.wants_write() {
            conn.write_tls(&mut &sock)?;
        }
        sock.set_read_timeout(before)?;
        let identity = peer_identity(&conn).map_err(|e| LinkError::Identity(e.to_string()))?;
        Ok(Link {
            sock,
            session: Mutex::new(Some(conn)),
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

    /// Writes all of `bytes` (one frame, or several): frames from
    /// concurrent writers never interleave.
    pub fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut session = self.session.lock().expect("lock poisoned");
        match session.as_mut() {
            None => (&self.sock).write_all(bytes),
            Some(conn) => {
                // The session buffers a bounded amount of ciphertext: put
                // it on the socket as we go.
                let mut rest = bytes;
                while !rest.is_empty() {
                    let n = conn.writer().write(rest)?;
                    rest = &rest[n..];
                    flush(conn, &self.sock)?;
                }
                Ok(())
            }
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
                        let _ = flush(conn, &self.sock);
                        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                    }
                    // A key update or an alert may need an answer.
                    flush(conn, &self.sock)?;
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

fn flush(conn: &mut rustls::Connection, sock: &TcpStream) -> std::io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(&mut &*sock)?;
    }
    Ok(())
}
