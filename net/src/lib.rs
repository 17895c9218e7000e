//! ramcoord's transports: TCP for commodity hosts, an in-memory one for
//! tests, RDMA (feature `rdma`: messages and configuration by one-sided
//! writes) and a hybrid of the two (RDMA inside the cluster, TCP for
//! clients), all behind [`Transport`].
//!
//! Two kinds of traffic:
//!
//! - **messages**: framed, two-sided, best effort, in order per peer while a
//!   connection lasts (Raft messages, client RPCs). A message to a peer that
//!   cannot be reached is dropped; the protocols above retry.
//! - **one-sided writes** of bytes into a peer's registered [`Region`]:
//!   applied by the receiving side's I/O path, never by its worker (on RDMA,
//!   by the NIC), and completed back to the writer with a
//!   [`WriteStatus`]: landed, refused by the region (a fence), or not
//!   possible. This is how a coordinator pushes configuration to masters.
//!
//! # Correctness
//!
//! - Messages from one sender to one receiver arrive in the order sent, or
//!   not at all (a reconnect may lose the ones in flight).
//! - Writes from one sender to one receiver land in the order issued (an
//!   RC queue pair; one TCP connection): the fencing argument of
//!   configuration regions relies on it.
//! - A write's completion says only what the region said: `Landed` means
//!   the bytes are in the region's memory, nothing about durability.
//! - Everything read from the network is checked ([`frame`]); a peer that
//!   sends garbage is disconnected with the reason logged, and the
//!   transport keeps serving everyone else.

#![deny(missing_docs)]

pub mod admission;
pub mod affinity;
pub mod frame;
#[cfg(feature = "rdma")]
pub mod hybrid;
pub mod link;
pub mod mem;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod rdma_pass;
#[cfg(feature = "rdma")]
pub mod rdma_transport;
pub mod ring;
pub mod tcp;
pub mod tls;

use std::sync::Arc;

use bytes::Bytes;
use crossbeam::channel::Receiver;

pub use frame::WriteStatus;

/// A node's identity on the network (chosen by the layer above).
pub type PeerId = u64;
/// A registered region's identity on its node.
pub type RegionId = u32;

/// Memory a peer may write one-sidedly.
pub trait Region: Send + Sync {
    /// Its size in bytes.
    fn len(&self) -> u64;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Puts `bytes` at `offset` (within bounds: the transport checked), or
    /// refuses with a reason (a fence). Runs on the transport's I/O path.
    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), WriteRefused>;
}

/// A region's refusal of a write (its fence said no), with the reason the
/// writer gets back in [`WriteStatus::Refused`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WriteRefused(pub String);

/// What a transport delivers to its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message from a peer.
    Message {
        /// The sender.
        from: PeerId,
        /// What it sent.
        payload: Bytes,
    },
    /// A one-sided write this node issued has completed.
    WriteDone {
        /// The peer written to.
        to: PeerId,
        /// The id [`Transport::write`] returned.
        id: u64,
        /// What became of it.
        status: WriteStatus,
    },
}

/// A node's endpoint (see the crate docs).
pub trait Transport: Send {
    /// This node's id.
    fn id(&self) -> PeerId;
    /// Sends a message to `to` (best effort). From the owner's thread, a
    /// transport that batches (TCP on io_uring) may hold it until the
    /// owner's next [`Transport::flush`] or [`Transport::next_event`]: an
    /// owner flushes before it waits on anything else.
    fn send(&self, to: PeerId, payload: Bytes);
    /// Writes `bytes` at `offset` of region `region` of peer `to`; returns
    /// the write's id, which its [`Event::WriteDone`] carries. A write that
    /// cannot be delivered completes with nothing (the writer retries on
    /// its own timer).
    fn write(&self, to: PeerId, region: RegionId, offset: u64, bytes: Bytes) -> u64;
    /// Tells the transport where peer `peer` listens, so it can send to it
    /// (a no-op if it knows already, and on transports that route by id).
    fn add_peer(&self, peer: PeerId, addr: std::net::SocketAddr);
    /// Forgets `peer` (added with [`Transport::add_peer`]): nothing more
    /// is sent to it, and whatever the transport holds for it (a
    /// connection, a thread connecting, queued frames) is let go. For a
    /// peer that left the cluster for good (a master declared crashed).
    fn remove_peer(&self, _peer: PeerId) {}
    /// Makes `region` writable by peers as `id`.
    fn register_region(&self, id: RegionId, region: Arc<dyn Region>);
    /// Where messages and write completions arrive.
    fn events(&self) -> &Receiver<Event>;
    /// A descriptor that becomes readable when [`Transport::next_event`]
    /// may have something new, so that an owner can wait on it beside its
    /// other descriptors (its disk's completions) in one `poll`, then take
    /// what arrived with `next_event(Duration::ZERO)` until `None`. `None`:
    /// this transport can be waited on only through `next_event`.
    fn ready_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    /// Hands what the owner sent since the last call to the kernel, all at
    /// once (a transport on io_uring submits every send of a ready in one
    /// system call here). An owner that waits on [`Transport::ready_fd`]
    /// calls it before waiting; [`Transport::next_event`] calls it itself.
    fn flush(&self) {}
    /// The next event, waiting up to `timeout` (zero: only what is there).
    /// Transports that read in the caller's thread (TCP with inline I/O)
    /// do their I/O here; the others take from [`Transport::events`].
    fn next_event(&self, timeout: std::time::Duration) -> Option<Event> {
        if timeout.is_zero() {
            self.events().try_recv().ok()
        } else {
            self.events().recv_timeout(timeout).ok()
        }
    }
    /// Where the owner's log may flush: this transport's own io_uring
    /// (TCP on io_uring, run by the owner's thread), so that its durable
    /// writes leave with the sends in one submission and their
    /// completions end [`Transport::next_event`]'s wait (it returns `None`
    /// early) as a message would. `None`: the log keeps a ring of its own.
    fn disk_ring(&self) -> Option<tcp::RingDisk> {
        None
    }
}

/// A node's registered regions, shared with its transport's I/O path.
pub(crate) type RegionMap = std::sync::RwLock<std::collections::HashMap<RegionId, Arc<dyn Region>>>;

/// Decides whether a write (offset, bytes) may land in a [`BufferRegion`].
pub type Fence = Box<dyn Fn(u64, &[u8]) -> Result<(), WriteRefused> + Send + Sync>;

/// Applies a write to a registered region: the bounds check and the
/// region's own verdict. Shared by every transport's receiving side.
pub(crate) fn apply_write(
    regions: &RegionMap,
    region: RegionId,
    offset: u64,
    bytes: &[u8],
) -> WriteStatus {
    let r = regions
        .read()
        .expect("region map lock poisoned")
        .get(&region)
        .cloned();
    let Some(r) = r else {
        return WriteStatus::NoSuchRegion;
    };
    match offset.checked_add(bytes.len() as u64) {
        Some(end) if end <= r.len() => {}
        _ => return WriteStatus::OutOfBounds,
    }
    match r.write(offset, bytes) {
        Ok(()) => WriteStatus::Landed,
        Err(WriteRefused(why)) => WriteStatus::Refused(why),
    }
}

/// A plain region: a fixed-size byte buffer behind a lock, with an optional
/// fence deciding which writes may land.
pub struct BufferRegion {
    data: std::sync::Mutex<Vec<u8>>,
    fence: Fence,
}

impl BufferRegion {
    /// `len` zero bytes, accepting every write.
    pub fn new(len: usize) -> BufferRegion {
        BufferRegion::with_fence(len, |_, _| Ok(()))
    }

    /// `len` zero bytes; `fence(offset, bytes)` may refuse a write.
    pub fn with_fence(
        len: usize,
        fence: impl Fn(u64, &[u8]) -> Result<(), WriteRefused> + Send + Sync + 'static,
    ) -> BufferRegion {
        BufferRegion {
            data: std::sync::Mutex::new(vec![0; len]),
            fence: Box::new(fence),
        }
    }

    /// A copy of the contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.lock().expect("region lock poisoned").clone()
    }
}

impl Region for BufferRegion {
    fn len(&self) -> u64 {
        self.data.lock().expect("region lock poisoned").len() as u64
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), WriteRefused> {
        (self.fence)(offset, bytes)?;
        let mut d = self.data.lock().expect("region lock poisoned");
        let at = offset as usize;
        d[at..at + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}
