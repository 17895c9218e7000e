//! Accepting with inline I/O: one thread accepts every connection and
//! runs every TLS handshake and first frame as an event loop (`epoll`
//! through `mio`), then hands the connection to the owner's poll. No
//! thread per connection, however many clients connect at once; the
//! owner's thread (a coordinator's Raft loop) pays no handshake's
//! cryptography.
//!
//! A connection here is admitted against the same bounds as everywhere
//! ([`crate::admission`]) before any byte is read, must finish its
//! handshake and first frame by the handshake deadline, and is then judged
//! by the same rules as a handshake thread's ([`super::welcome`]).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::{
    adopt, close_for_bound, refuse_credential, track, untrack, welcome, ConnKind, Inner, ReadError,
};
use crate::admission::Ticket;
use crate::frame::{Frame, FrameDecoder};
use crate::link::Link;

const LISTENER: Token = Token(0);
/// Longest wait in `poll` (the shutdown flag and accept retries are looked
/// at this often when nothing happens).
const POLL_MAX: Duration = Duration::from_millis(200);
/// After `accept` fails for want of descriptors or memory, try again this
/// much later (the connections wait in the kernel's backlog).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A connection between `accept` and its first frame.
struct Handshake {
    /// The socket as accepted (and registered here): kept until the
    /// connection leaves, so that its registration can always be undone
    /// through it (the link reads through a clone).
    sock: TcpStream,
    /// The server side of the TLS session, while handshaking.
    tls: Option<rustls::Connection>,
    /// The established link, reading its first frame.
    link: Option<Arc<Link>>,
    dec: FrameDecoder,
    ticket: Ticket,
    addr: SocketAddr,
    deadline: Instant,
}

/// Where a handshake stands after the socket said it is ready.
enum Step {
    /// Waiting for the socket.
    Wait,
    /// The first frame (or why there is none): the connection leaves here.
    First(Result<Frame, ReadError>),
    /// The TLS handshake failed: a credential refused (logged once a
    /// second).
    Refused(String),
}

/// The accept thread's loop (see the module docs); returns at shutdown.
pub(super) fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "no poll for handshakes; one thread per handshake instead");
            return super::accept_loop(inner, listener);
        }
    };
    let fd = listener.as_raw_fd();
    if let Err(e) = listener.set_nonblocking(true).and_then(|()| {
        poll.registry()
            .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)
    }) {
        tracing::warn!(error = %e, "cannot poll the listener; one thread per handshake instead");
        let _ = listener.set_nonblocking(false);
        return super::accept_loop(inner, listener);
    }
    let mut events = Events::with_capacity(256);
    let mut pending: HashMap<Token, Handshake> = HashMap::new();
    let mut next_token = 1usize;
    let mut buf = vec![0u8; 17 << 10];
    let mut accept_now = true;
    let mut retry_accept: Option<Instant> = None;
    while !inner.shutdown.load(Ordering::SeqCst) {
        let now = Instant::now();
        if retry_accept.is_some_and(|t| now >= t) {
            retry_accept = None;
            accept_now = true;
        }
        if accept_now {
            accept_now = false;
            if !accept_all(&inner, &listener, &poll, &mut pending, &mut next_token) {
                retry_accept = Some(now + ACCEPT_RETRY);
            }
        }
        expire(&inner, &poll, &mut pending, now);
        let wake = pending
            .values()
            .map(|h| h.deadline)
            .chain(retry_accept)
            .min()
            .map_or(POLL_MAX, |t| t.saturating_duration_since(now).min(POLL_MAX));
        if let Err(e) = poll.poll(&mut events, Some(wake)) {
            if e.kind() != ErrorKind::Interrupted {
                tracing::warn!(error = %e, "poll failed");
                std::thread::sleep(POLL_MAX);
            }
            continue;
        }
        for ev in events.iter() {
            let token = ev.token();
            if token == LISTENER {
                accept_now = true;
                continue;
            }
            let Some(h) = pending.get_mut(&token) else {
                continue;
            };
            match advance(h, &mut buf) {
                Step::Wait => {}
                step => {
                    let h = pending.remove(&token).expect("present");
                    finish(&inner, &poll, h, step);
                }
            }
        }
    }
}

/// Accepts until the listener has nothing more; false if `accept` failed
/// for want of a resource (retried later).
fn accept_all(
    inner: &Arc<Inner>,
    listener: &TcpListener,
    poll: &Poll,
    pending: &mut HashMap<Token, Handshake>,
    next_token: &mut usize,
) -> bool {
    loop {
        let (stream, addr) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            // A connection reset before we took it: the next one.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) =>
            {
                continue
            }
            Err(_) if inner.shutdown.load(Ordering::SeqCst) => return true,
            Err(e) => {
                // Out of descriptors (EMFILE) or memory: the connection
                // waits in the backlog; peers and connected clients go on.
                let why = format!("accept failed: {e}");
                inner.admission.note_refusal(inner.cfg.listen, &why);
                return false;
            }
        };
        let peer_address = inner.cfg.peers.values().any(|p| p.ip() == addr.ip());
        let ticket = match inner.admission.admit(addr.ip(), peer_address) {
            Ok(t) => t,
            Err(why) => {
                // Closed before any read: it costs a descriptor for a
                // moment only.
                inner.admission.note_refusal(addr, why);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let tls = match &inner.cfg.tls {
            None => None,
            Some(t) => match t.accept() {
                Ok(c) => Some(rustls::Connection::Server(c)),
                Err(e) => {
                    refuse_credential(inner, addr, &e.to_string());
                    continue;
                }
            },
        };
        let token = Token(*next_token);
        *next_token = next_token.wrapping_add(1).max(1);
        let fd = stream.as_raw_fd();
        if let Err(e) = poll.registry().register(
            &mut SourceFd(&fd),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%addr, error = %e, "cannot poll a connection; closed");
            continue;
        }
        track(inner, &stream);
        pending.insert(
            token,
            Handshake {
                sock: stream,
                tls,
                link: None,
                dec: FrameDecoder::new(),
                ticket,
                addr,
                deadline: Instant::now() + inner.admission.limits().handshake_timeout,
            },
        );
    }
}

/// Moves a handshake on as far as the socket allows.
fn advance(h: &mut Handshake, buf: &mut [u8]) -> Step {
    if h.link.is_none() {
        let sock = &h.sock;
        if let Some(conn) = h.tls.as_mut() {
            loop {
                if conn.wants_write() {
                    match conn.write_tls(&mut &*sock) {
                        Ok(_) => continue,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Wait,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Step::Refused(format!("TLS handshake: {e}")),
                    }
                }
                if !conn.is_handshaking() {
                    break;
                }
                match conn.read_tls(&mut &*sock) {
                    Ok(0) => {
                        return Step::Refused(
                            "TLS handshake: the peer closed the connection".into(),
                        )
                    }
                    Ok(_) => {
                        if let Err(e) = conn.process_new_packets() {
                            // Tell the peer why, best effort.
                            let _ = conn.write_tls(&mut &*sock);
                            return Step::Refused(format!("TLS handshake: {e}"));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Wait,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Step::Refused(format!("TLS handshake: {e}")),
                }
            }
        }
        let clone = match sock.try_clone() {
            Ok(c) => c,
            Err(e) => return Step::First(Err(ReadError::Io(format!("dup: {e}")))),
        };
        let link = match h.tls.take() {
            None => Link::plain(clone),
            Some(conn) => match Link::established(clone, conn) {
                Ok(l) => l,
                Err(e) => return Step::Refused(e.to_string()),
            },
        };
        h.link = Some(Arc::new(link));
    }
    let link = h.link.as_ref().expect("set above");
    loop {
        match h.dec.next_frame() {
            Ok(Some(f)) => {
                let _ = h.ticket.account(h.dec.buffered());
                return Step::First(Ok(f));
            }
            Ok(None) => {}
            Err(e) => return Step::First(Err(ReadError::BadInput(e))),
        }
        match link.read(buf) {
            Ok(0) => return Step::First(Err(ReadError::Io("closed by the peer".into()))),
            Ok(n) => {
                h.dec.push(&buf[..n]);
                if let Err(why) = h.ticket.account(h.dec.buffered()) {
                    return Step::First(Err(ReadError::Bound(why)));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Step::First(Err(ReadError::Io(e.to_string()))),
        }
    }
}

/// A handshake leaves the loop: welcomed and handed to the owner, or
/// refused with its reason.
fn finish(inner: &Arc<Inner>, poll: &Poll, mut h: Handshake, step: Step) {
    let _ = poll
        .registry()
        .deregister(&mut SourceFd(&h.sock.as_raw_fd()));
    match step {
        Step::Wait => unreachable!("only finished handshakes leave"),
        Step::Refused(why) => {
            let _ = h.sock.shutdown(std::net::Shutdown::Both);
            refuse_credential(inner, h.addr, &why);
        }
        Step::First(first) => {
            let Some(link) = h.link.take() else {
                // No link was made (a failed dup): closed.
                let _ = h.sock.shutdown(std::net::Shutdown::Both);
                untrack(inner, h.addr);
                return;
            };
            if let Some(super::Welcomed {
                stream,
                dec,
                peer,
                writer,
                token,
            }) = welcome(inner, link, h.dec, h.addr, &mut h.ticket, first)
            {
                adopt(
                    inner,
                    stream,
                    dec,
                    peer,
                    h.addr,
                    ConnKind::Inbound { writer },
                    Some(h.ticket),
                    token,
                );
            }
        }
    }
}

/// Closes the handshakes past their deadline (a peer that trickles bytes
/// or says nothing).
fn expire(inner: &Inner, poll: &Poll, pending: &mut HashMap<Token, Handshake>, now: Instant) {
    let late: Vec<Token> = pending
        .iter()
        .filter(|(_, h)| now >= h.deadline)
        .map(|(t, _)| *t)
        .collect();
    for t in late {
        let h = pending.remove(&t).expect("present");
        let _ = poll
            .registry()
            .deregister(&mut SourceFd(&h.sock.as_raw_fd()));
        close_for_bound(inner, &h.sock, h.addr, "the handshake took too long");
    }
}
