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
//! only by the TCP connection it opened) over TCP. Both sides deliver into
//! one queue, the TCP transport's, so the owner's loop is unchanged.
//!
//! Admission: the two sides share one pass book ([`crate::rdma_pass`]):
//! the TCP side issues passes to replicas that authenticated to it, the
//! RDMA side admits only connection requests that carry one, and fetches
//! its own passes over TCP with the TCP side's credentials. Always on: a
//! hybrid transport never admits an RDMA connection without a pass.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam::channel::Receiver;

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
        let sink = tcp.event_sink();
        let rdma = RdmaTransport::start_delivering(
            rdma,
            Box::new(move |ev| {
                sink(match ev {
                    Event::WriteDone { to, id, status } => Event::WriteDone {
                        to,
                        id: id | RDMA_WRITE_ID_BIT,
                        status,
                    },
                    other => other,
                })
            }),
        )?;
        Ok(HybridTransport { tcp, rdma })
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

    /// RDMA's events reach TCP's queue through its event sink, which wakes
    /// TCP's poll: TCP's descriptor covers both.
    fn ready_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.tcp.ready_fd()
    }

    fn flush(&self) {
        self.tcp.flush()
    }

    fn next_event(&self, timeout: std::time::Duration) -> Option<Event> {
        self.tcp.next_event(timeout)
    }
}
