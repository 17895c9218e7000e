//! RDMA for the cluster, TCP for everyone else (feature `rdma`).
//!
//! A coordinator replica on RDMA talks to its peer replicas (Raft, whose
//! appends travel as one-sided writes into each follower's message ring)
//! and to masters (configuration pushed by one-sided writes) over RDMA,
//! while clients, `ctl` and the masters' own requests (enlist, heartbeat)
//! keep using TCP: they come from hosts that may have no RDMA device, and
//! they are not on the commit path's critical hops.
//!
//! Routing: a message or write to a peer the RDMA side knows (a configured
//! replica, or one added with [`Transport::add_peer`] — masters and
//! replicas added later) goes over RDMA; anything else (a client, known
//! only by the TCP connection it opened) over TCP.
//!
//! Who runs the RDMA side's loop follows the TCP side: when TCP runs in
//! the owner's thread (it has a [`Transport::ready_fd`]), so does RDMA
//! ([`RdmaConfig::inline`]): [`Transport::next_event`] takes from both in
//! turn, and the hybrid's `ready_fd` is an epoll descriptor over both
//! sides' own, so an RDMA message reaches the owner with no thread in
//! between. Otherwise RDMA's driver thread delivers into TCP's queue.
//!
//! Admission: the two sides share one pass book ([`crate::rdma_pass`]):
//! the TCP side issues passes to replicas that authenticated to it, the
//! RDMA side admits only connection requests that carry one, and fetches
//! its own passes over TCP with the TCP side's credentials. Always on: a
//! hybrid transport never admits an RDMA connection without a pass.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel::Receiver;
use rustix::event::{epoll, poll, PollFd, PollFlags};

use crate::rdma::RdmaError;
use crate::rdma_pass::PassBook;
use crate::rdma_transport::{PassFetch, RdmaConfig, RdmaTransport};
use crate::tcp::{ListenError, TcpConfig, TcpTransport};
use crate::{Event, PeerId, Region, RegionId, Transport};

/// The RDMA side's write ids have this bit set, so they never collide
/// with the TCP side's.
const RDMA_WRITE_ID_BIT: u64 = 1 << 63;

/// Why a hybrid transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum HybridError {
    /// The TCP side.
    #[error("{0}")]
    Tcp(#[from] ListenError),
    /// The RDMA side.
    #[error("{0}")]
    Rdma(#[from] RdmaError),
}

/// See the module docs.
pub struct HybridTransport {
    tcp: TcpTransport,
    rdma: RdmaTransport,
    /// With both sides in the owner's thread: an epoll descriptor over
    /// both sides' ready descriptors.
    ready: Option<OwnedFd>,
    /// Which side `next_event` looks at first (they take turns).
    rdma_first: AtomicBool,
}

impl HybridTransport {
    /// Starts both sides; `rdma.peers` are the peers reached over RDMA.
    /// The pass book and how passes are fetched are set here (any given in
    /// the configurations is replaced).
    pub fn start(mut tcp: TcpConfig, mut rdma: RdmaConfig) -> Result<HybridTransport, HybridError> {
        let book = Arc::new(PassBook::new(rdma.cluster, rdma.id));
        tcp.passes = Some(book.clone());
        rdma.passes = Some(book);
        rdma.pass_fetch = Some(PassFetch {
            tls: tcp.tls.clone(),
        });
        let tcp = TcpTransport::start(tcp)?;
        if let Some(tcp_fd) = tcp.ready_fd() {
            rdma.inline = true;
            let rdma = RdmaTransport::start(rdma)?;
            let rdma_fd = rdma.ready_fd().expect("an inline RDMA transport has one");
            let os = |e: rustix::io::Errno| RdmaError::Call {
                call: "epoll (hybrid)",
                err: e.into(),
            };
            let ready = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(os)?;
            for (k, fd) in [tcp_fd, rdma_fd].into_iter().enumerate() {
                epoll::add(
                    &ready,
                    fd,
                    epoll::EventData::new_u64(k as u64),
                    epoll::EventFlags::IN,
                )
                .map_err(os)?;
            }
            return Ok(HybridTransport {
                tcp,
                rdma,
                ready: Some(ready),
                rdma_first: AtomicBool::new(false),
            });
        }
        rdma.inline = false;
        let sink = tcp.event_sink();
        let rdma =
            RdmaTransport::start_delivering(rdma, Box::new(move |ev| sink(rdma_write_ids(ev))))?;
        Ok(HybridTransport {
            tcp,
            rdma,
            ready: None,
            rdma_first: AtomicBool::new(false),
        })
    }

    /// The TCP side.
    pub fn tcp(&self) -> &TcpTransport {
        &self.tcp
    }

    /// The RDMA side.
    pub fn rdma(&self) -> &RdmaTransport {
        &self.rdma
    }
}

impl Transport for HybridTransport {
    fn id(&self) -> PeerId {
        self.tcp.id()
    }

    fn send(&self, to: PeerId, payload: Bytes) {
        if self.rdma.routes(to) {
            self.rdma.send(to, payload)
        } else {
            self.tcp.send(to, payload)
        }
    }

    fn write(&self, to: PeerId, region: RegionId, offset: u64, bytes: Bytes) -> u64 {
        if self.rdma.routes(to) {
            self.rdma.write(to, region, offset, bytes) | RDMA_WRITE_ID_BIT
        } else {
            self.tcp.write(to, region, offset, bytes)
        }
    }

    /// Peers added later are cluster members (masters, new replicas): RDMA.
    fn add_peer(&self, peer: PeerId, addr: SocketAddr) {
        self.rdma.add_peer(peer, addr)
    }

    fn remove_peer(&self, peer: PeerId) {
        self.rdma.remove_peer(peer);
        self.tcp.remove_peer(peer);
    }

    /// TCP's callback regions (RDMA regions are declared at start).
    fn register_region(&self, id: RegionId, region: Arc<dyn Region>) {
        self.tcp.register_region(id, region)
    }

    fn events(&self) -> &Receiver<Event> {
        self.tcp.events()
    }

    /// Both sides' descriptors in one (both in the owner's thread), or
    /// TCP's (RDMA's events reach TCP's queue through its event sink,
    /// which wakes TCP's poll).
    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.ready {
            Some(fd) => Some(fd.as_fd()),
            None => self.tcp.ready_fd(),
        }
    }

    /// The TCP side's ring (the owner runs it: every coordinator).
    fn disk_ring(&self) -> Option<crate::tcp::RingDisk> {
        self.tcp.disk_ring()
    }

    fn flush(&self) {
        self.tcp.flush();
        if self.ready.is_some() {
            self.rdma.flush();
        }
    }

    fn next_event(&self, timeout: Duration) -> Option<Event> {
        let Some(ready) = &self.ready else {
            return self.tcp.next_event(timeout);
        };
        let deadline = Instant::now() + timeout;
        loop {
            // The sides take turns, so that neither starves the other.
            let rdma_first = !self.rdma_first.fetch_xor(true, Ordering::Relaxed);
            for rdma in [rdma_first, !rdma_first] {
                let ev = if rdma {
                    self.rdma.next_event(Duration::ZERO).map(rdma_write_ids)
                } else {
                    self.tcp.next_event(Duration::ZERO)
                };
                if ev.is_some() {
                    return ev;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // A flush of the owner's log on the TCP side's ring finished
            // (`disk_ring`): the owner looks now.
            if left.is_zero() || self.tcp.take_disk_woke() {
                return None;
            }
            self.flush();
            let ts = rustix::event::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as _,
            };
            let mut fds = [PollFd::new(ready, PollFlags::IN)];
            let _ = poll(&mut fds, Some(&ts));
        }
    }
}

/// The RDMA side's write ids, told apart from the TCP side's.
fn rdma_write_ids(ev: Event) -> Event {
    match ev {
        Event::WriteDone { to, id, status } => Event::WriteDone {
            to,
            id: id | RDMA_WRITE_ID_BIT,
            status,
        },
        other => other,
    }
}
