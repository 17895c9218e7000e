//! Accepting: one thread accepts every connection and
//! runs every TLS handshake and first frame as an event loop (`epoll`
//! through `mio`), then hands the connection to the loop. No
//! thread per connection, however many clients connect at once; the
//! owner's thread (a coordinator's Raft loop) pays no handshake's
//! cryptography.
//!
//! With io_uring ([`super::TcpConfig::io_uring`]) the listener is not
//! polled: one multishot `Accept` stays armed on a small ring of this
//! thread's ([`AcceptRing`]) and completes once per connection, with the
//! new socket; the loop's `epoll` watches the ring's descriptor beside the
//! handshakes'. A burst of connections costs no `accept` call each (one
//! `getpeername` each, for the address admission judges). Where the
//! kernel has no multishot accept, the listener is polled as before.
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
    adopt, close_for_bound, refuse_credential, untrack, welcome, ConnKind, Inner, ReadError,
};
use crate::admission::Ticket;
use crate::frame::{Frame, FrameDecoder};
use crate::link::Link;

const LISTENER: Token = Token(0);
/// The accept ring's descriptor (handshakes count up from 1).
const RING: Token = Token(usize::MAX);
/// Longest wait in `poll` (the shutdown flag and accept retries are looked
/// at this often when nothing happens).
const POLL_MAX: Duration = Duration::from_millis(200);
/// After `accept` fails for want of descriptors or memory, try again this
/// much later (the connections wait in the kernel's backlog).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A connection between `accept` and its first frame.
struct Handshake {
    /// The socket as accepted (and registered here), until the link
    /// takes it over (no duplicate descriptor: one per connection).
    sock: Option<TcpStream>,
    /// The server side of the TLS session, while handshaking.
    tls: Option<rustls::Connection>,
    /// The established link, reading its first frame.
    link: Option<Arc<Link>>,
    dec: FrameDecoder,
    ticket: Ticket,
    addr: SocketAddr,
    deadline: Instant,
}

impl Handshake {
    /// The connection's socket, in the link once there is one.
    fn socket(&self) -> Option<&TcpStream> {
        match &self.link {
            Some(l) => Some(l.socket()),
            None => self.sock.as_ref(),
        }
    }

    /// Takes the socket out of the accept loop's poll.
    fn deregister(&self, poll: &Poll) {
        if let Some(s) = self.socket() {
            let _ = poll.registry().deregister(&mut SourceFd(&s.as_raw_fd()));
        }
    }
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
    // Without a poll nothing is accepted: say so, and try again (out of
    // descriptors or memory passes; peers already connected go on).
    let fd = listener.as_raw_fd();
    let mut poll = loop {
        let p = Poll::new().and_then(|poll| {
            listener.set_nonblocking(true)?;
            poll.registry()
                .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)?;
            Ok(poll)
        });
        match p {
            Ok(p) => break p,
            Err(e) => {
                tracing::error!(error = %e, "cannot poll the listener: accepting nothing; retrying in 1 s");
                super::sleep_unless_shutdown(&inner, Duration::from_secs(1));
                if inner.shutdown.load(Ordering::SeqCst) {
                    return;
                }
            }
        }
    };
    let mut ring = if inner.cfg.io_uring {
        match AcceptRing::new(&listener) {
            Ok(r) => {
                let rfd = r.fd();
                match poll
                    .registry()
                    .register(&mut SourceFd(&rfd), RING, Interest::READABLE)
                {
                    Ok(()) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot poll the accept ring; accepting from the listener");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "no multishot accept; accepting from the listener");
                None
            }
        }
    } else {
        None
    };
    if ring.is_some() {
        // The ring accepts; the listener's readiness would only wake us.
        let _ = poll.registry().deregister(&mut SourceFd(&fd));
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
            let mut source = match ring.as_mut() {
                Some(r) => Source::Ring(r),
                None => Source::Listener(&listener),
            };
            if !accept_all(&inner, &mut source, &poll, &mut pending, &mut next_token) {
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
            if token == LISTENER || token == RING {
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
    source: &mut Source<'_>,
    poll: &Poll,
    pending: &mut HashMap<Token, Handshake>,
    next_token: &mut usize,
) -> bool {
    loop {
        let (stream, addr) = match source.accept() {
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
        *next_token = next_token.wrapping_add(1).clamp(1, RING.0 - 1);
        let fd = stream.as_raw_fd();
        if let Err(e) = poll.registry().register(
            &mut SourceFd(&fd),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%addr, error = %e, "cannot poll a connection; closed");
            continue;
        }
        pending.insert(
            token,
            Handshake {
                sock: Some(stream),
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
        let Some(sock) = h.sock.as_ref() else {
            return Step::Refused("the connection's socket is gone".into());
        };
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
        let clone = h.sock.take().expect("looked at above");
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
            Ok(0) => return Step::First(Err(ReadError::Closed("closed by the peer".into()))),
            Ok(n) => {
                h.dec.push(&buf[..n]);
                if let Err(why) = h.ticket.account(h.dec.buffered()) {
                    return Step::First(Err(ReadError::Bound(why)));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Step::First(Err(ReadError::from_io(&e))),
        }
    }
}

/// A handshake leaves the loop: welcomed and handed to the owner, or
/// refused with its reason.
fn finish(inner: &Arc<Inner>, poll: &Poll, mut h: Handshake, step: Step) {
    h.deregister(poll);
    match step {
        Step::Wait => unreachable!("only finished handshakes leave"),
        Step::Refused(why) => {
            if let Some(s) = h.socket() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            refuse_credential(inner, h.addr, &why);
        }
        Step::First(first) => {
            let Some(link) = h.link.take() else {
                // No link was made: closed (dropped here).
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
        h.deregister(poll);
        match h.socket() {
            Some(s) => close_for_bound(inner, s, h.addr, "the handshake took too long"),
            None => inner
                .admission
                .note_refusal(h.addr, "the handshake took too long"),
        }
    }
}

/// Where new connections come from.
enum Source<'a> {
    /// `accept` on the (non-blocking) listener.
    Listener(&'a TcpListener),
    /// Completions of the multishot accept.
    Ring(&'a mut AcceptRing),
}

impl Source<'_> {
    /// The next new connection; `WouldBlock` when there is none.
    fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        match self {
            Source::Listener(l) => l.accept(),
            Source::Ring(r) => r.accept(),
        }
    }
}

/// A ring whose one multishot `Accept` on the listener completes once per
/// new connection (see the module docs).
pub(super) struct AcceptRing {
    ring: io_uring::IoUring,
    listener: std::os::fd::RawFd,
    /// The multishot accept is armed (until a completion without `MORE`).
    armed: bool,
}

impl AcceptRing {
    /// A ring accepting on `listener` (which must outlive it), or why the
    /// kernel cannot (multishot accept: Linux 5.19).
    fn new(listener: &TcpListener) -> std::io::Result<AcceptRing> {
        use io_uring::{opcode, IoUring, Probe};
        // Completions beyond the queue are kept by the kernel (NODROP), so
        // a burst larger than this is only slower, not lost.
        let ring = IoUring::builder().setup_cqsize(1024).build(8)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::AcceptMulti::CODE)
            || !super::uring::kernel_has_multishot()
            || !ring.params().is_feature_nodrop()
        {
            return Err(std::io::Error::new(
                ErrorKind::Unsupported,
                "this kernel's io_uring has no multishot accept",
            ));
        }
        let mut r = AcceptRing {
            ring,
            listener: listener.as_raw_fd(),
            armed: false,
        };
        if !r.arm() {
            return Err(std::io::Error::other("the accept ring took no accept"));
        }
        Ok(r)
    }

    /// The ring's descriptor: readable while completions wait.
    fn fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }

    /// Arms the multishot accept unless it is; false if the ring took
    /// nothing (the caller tries again later).
    fn arm(&mut self) -> bool {
        if self.armed {
            return true;
        }
        let accept = io_uring::opcode::AcceptMulti::new(io_uring::types::Fd(self.listener))
            .flags(rustix::net::SocketFlags::CLOEXEC.bits() as i32)
            .build()
            .user_data(1);
        // SAFETY: an accept writes no memory of ours (no address buffer);
        // the listener outlives the ring (both belong to the accept loop,
        // which drops the ring first).
        self.armed = unsafe { self.ring.submission().push(&accept) }.is_ok();
        // Queued is armed: an entry a failed submit left in the queue goes
        // with the next enter (arming again would queue a second accept).
        if let Err(e) = self.ring.submit() {
            tracing::warn!(error = %e, "io_uring submit failed");
        }
        self.armed
    }

    /// The next accepted connection; `WouldBlock` when none is waiting
    /// and the accept is armed. An accept that failed (out of descriptors,
    /// say) ends the multishot and is returned; it is armed again at the
    /// next call, which the caller makes a while later. So is one that
    /// ended for any other reason (the kernel ends a multishot when it
    /// must), at once: "nothing waiting" is said only with an accept armed,
    /// or the loop would never be woken again.
    fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        use std::os::fd::FromRawFd;
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                // Completions the kernel kept aside (a full queue) come
                // back through an enter.
                if self.ring.submission().cq_overflow() {
                    let _ = self.ring.submit();
                    if !self.ring.completion().is_empty() {
                        continue;
                    }
                }
                if !self.arm() {
                    return Err(std::io::Error::other(
                        "the accept ring took no accept (tried again shortly)",
                    ));
                }
                return Err(ErrorKind::WouldBlock.into());
            };
            if !io_uring::cqueue::more(cqe.flags()) {
                self.armed = false;
            }
            let res = cqe.result();
            if res == -rustix::io::Errno::AGAIN.raw_os_error()
                || res == -rustix::io::Errno::INTR.raw_os_error()
            {
                // Nothing accepted (the kernel's worker found the listener
                // empty): armed again above if it ended.
                continue;
            }
            if res < 0 {
                return Err(std::io::Error::from_raw_os_error(-res));
            }
            // SAFETY: a successful accept's result is a new descriptor,
            // ours alone.
            let stream = unsafe { TcpStream::from_raw_fd(res) };
            match stream.peer_addr() {
                Ok(addr) => return Ok((stream, addr)),
                // Reset before we looked: the next one.
                Err(_) => continue,
            }
        }
    }
}
