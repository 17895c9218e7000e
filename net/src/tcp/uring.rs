//! The event loop on io_uring: the loop's thread reads and writes every
//! welcomed connection through one ring, instead of `epoll` readiness
//! followed by a `read` or `send` system call per connection.
//!
//! # What the ring does
//!
//! - **Receives.** Each connection has one multishot `Recv` armed: one
//!   submission, then a completion for every burst of bytes the socket
//!   gets, until the connection ends. The kernel picks each burst's buffer
//!   from a ring of buffers the ring owns ([`BufPool`], a provided-buffer
//!   ring): 16 of 64 KiB shared by the replicas, 512 of 4 KiB shared by
//!   everyone else (clients' requests are small, and up to
//!   `client_conns_max` of them may be connected: the memory no longer
//!   grows with them). The bytes go through the TLS session, if any, into
//!   the connection's frame decoder, and the buffer goes straight back to
//!   the kernel. A completion of zero bytes is the peer's close; a
//!   completion that ends the multishot (no `MORE` flag: the pool ran dry,
//!   or the kernel chose to) arms it again.
//! - **Sends.** A sender never touches the socket: [`Link::send`] seals
//!   the frame into the link's backlog (bounded, as on epoll) and, the
//!   first time bytes wait, marks the connection dirty. Before the owner
//!   waits it turns every dirty connection into one `Send` of everything
//!   waiting (at most one in flight per connection, so bytes leave in
//!   order), and one `io_uring_enter` submits them all: the sends of a
//!   whole ready cost one system call.
//! - **Bounds.** A client or master connection stops being read while the
//!   events queued for the owner are at [`READY_EVENTS_MAX`] (its receive
//!   is cancelled; its peer's TCP window then closes); it is read again
//!   once half of them are taken. Replicas are always read (Raft bounds what they send).
//!   One [`Uring::poll`] makes at most [`PASSES_MAX`] passes over the
//!   completions, so a peer that keeps its socket full cannot keep the
//!   owner from its ticks.
//! - **Wake-ups.** Other threads (the accept loop handing over a
//!   connection, a connector, an event sink) queue their work and write
//!   an eventfd the ring polls (multishot `PollAdd`); the owner's own
//!   sends need no wake-up.
//!
//! # Buffers the kernel holds
//!
//! The pools' buffers may be written by the kernel whenever a receive is
//! armed; they are freed only after every receive has ended and the pool
//! is unregistered. A `Send`'s bytes are read by the kernel until its
//! completion: they live in the link's `flight` buffer (not touched while
//! a send is in flight), kept alive by an `Arc` of the link in the
//! connection's [`Ops`], which is dropped only once nothing is in flight
//! for it: a closed connection is shut down, its operations complete (with
//! zero or an error), and only then does it go. When the transport is
//! dropped, the ring waits (bounded) for what is still in flight and leaks
//! the memory of anything that never completes rather than free memory
//! the kernel may still use.
//!
//! The owner may instead wait on the ring's descriptor ([`Uring::fd`],
//! readable while completions wait) beside other descriptors.
//!
//! # The owner's disk on the same ring
//!
//! The owner's log may flush through this ring ([`RingDisk`]): a flush is
//! one `RWF_DSYNC` write per segment, queued on the ring and submitted
//! with the next submission, beside the ready's sends (one system call
//! for both), and its completions arrive among the sockets' (kind
//! `KIND_DISK`). A completed durable write ends the owner's wait, as a
//! message would. The ring holds the writes' buffers until their
//! completions; one flush is in flight at a time. When the log waits for a
//! flush itself (it cuts a segment, it closes), it waits on the ring and
//! sets aside the sockets' completions it meets for the owner's next turn.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::{close, drain_frames, EventLoop, Inner, LoopConn, READY_EVENTS_MAX};
use crate::link::{Link, RingHook};
use crate::tls::PeerClass;

/// Submission queue entries.
const RING_ENTRIES: u32 = 1024;
/// Completion queue entries: a receive and a send may be in flight for
/// every connection (up to the admission caps: 16384 clients), and the
/// kernel keeps what does not fit rather than drop it (`FEAT_NODROP`).
const CQ_ENTRIES: u32 = 65_536;
/// Passes over the completion queue per [`Uring::poll`]: a peer that keeps
/// its socket full completes a receive on every pass, and the owner must
/// get back to its ticks and its queue.
const PASSES_MAX: usize = 4;
/// The replicas' receive buffers: a burst of appends in one completion.
/// A handful of replica connections, each with at most a few bursts
/// waiting to be looked at.
const POOL_REPLICA: PoolShape = PoolShape {
    group: 0,
    count: 16,
    bytes: 64 << 10,
};
/// Everyone else's (clients, masters): small requests and
/// acknowledgements, up to this many bursts waiting at once; past it a
/// receive ends (`ENOBUFS`, nothing lost) and is armed again once the
/// owner has given the buffers back.
const POOL_OTHER: PoolShape = PoolShape {
    group: 1,
    count: 512,
    bytes: 4 << 10,
};

/// What a completion is for: the kind in the top byte of `user_data`, the
/// connection's token below.
const KIND_SHIFT: u32 = 56;
const KIND_WAKE: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_CANCEL: u64 = 4;
const KIND_DISK: u64 = 5;
/// `RWF_DSYNC` from linux/fs.h: the write completes once its data is
/// durable.
const RWF_DSYNC: i32 = 0x2;
const TOKEN_MASK: u64 = (1 << KIND_SHIFT) - 1;

/// The owner's ring (see the module docs).
pub(super) struct Uring {
    core: Mutex<Core>,
    kick: Arc<Kick>,
    /// A second descriptor for the ring, for waiting on it from outside.
    fd: OwnedFd,
    /// A durable write ([`RingDisk`]) completed since the owner's wait last
    /// ended for one: its next wait ends at once.
    disk_woke: AtomicBool,
}

/// What other threads hand the owner.
pub(super) struct Kick {
    /// Connections with bytes waiting and no send in flight.
    dirty: Mutex<Vec<usize>>,
    /// Welcomed connections to start reading.
    adopted: Mutex<Vec<LoopConn>>,
    /// Connections closed by any thread: their buffers go once nothing is
    /// in flight for them (the owner looks at the list).
    forgotten: Mutex<Vec<usize>>,
    eventfd: OwnedFd,
    /// The thread that last ran the ring ([`thread_number`]; its own
    /// marks need no wake-up, it submits them before it waits).
    owner: AtomicU64,
}

/// A number for the calling thread, unique in the process (0 for none).
fn thread_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static NUMBER: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    NUMBER.with(|n| *n)
}

impl Kick {
    /// Wakes the owner (from any thread).
    pub(super) fn wake(&self) {
        let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
    }

    fn mark(&self, token: usize) {
        let first = {
            let mut dirty = self.dirty.lock().expect("lock poisoned");
            dirty.push(token);
            dirty.len() == 1
        };
        // One wake-up per batch: a list that was not empty has one on its
        // way already (the owner takes the whole list at once).
        if first && self.owner.load(Ordering::Relaxed) != thread_number() {
            self.wake();
        }
    }
}

/// The ring and what it has in flight; the owner's alone.
struct Core {
    ring: IoUring,
    ops: HashMap<usize, Ops>,
    /// Connections not read again because the owner is behind (see
    /// [`Uring::new`]).
    parked: Vec<usize>,
    wake_armed: bool,
    /// Polling the eventfd failed: never armed again.
    wake_broken: bool,
    /// Completions copied out of the ring (reused).
    done: Vec<(u64, i32, u32)>,
    /// Where receives land: [`POOL_OTHER`], and [`POOL_REPLICA`] on the
    /// owner's ring.
    pools: Vec<BufPool>,
    /// The owner's log's flush in flight ([`RingDisk`]).
    disk: DiskFlight,
    /// Completions taken off the ring by a log waiting for its flush
    /// ([`Uring::disk_reap`]), for the owner's next turn.
    deferred: Vec<(u64, i32, u32)>,
}

/// One durable write the ring carries for the owner's log: `bytes` at
/// `offset` of the open file `fd`, complete once on the disk.
pub struct DurableWrite {
    /// The file: a descriptor of its own, held (with the bytes) until the
    /// write completes, so no other file can take its number meanwhile.
    pub fd: OwnedFd,
    /// Where in it.
    pub offset: u64,
    /// What to write.
    pub bytes: Vec<u8>,
}

/// The flush in flight on the ring: its writes' buffers (the kernel reads
/// them until each completes) and how it is going.
#[derive(Default)]
struct DiskFlight {
    writes: Vec<DurableWrite>,
    /// Completions still expected.
    outstanding: usize,
    /// The first failure among those seen.
    failure: Option<std::io::Error>,
}

impl DiskFlight {
    /// One write's completion.
    fn complete(&mut self, index: usize, res: i32) {
        let Some(w) = self.writes.get(index) else {
            return;
        };
        let err = if res < 0 {
            Some(std::io::Error::from_raw_os_error(-res))
        } else if res as usize != w.bytes.len() {
            Some(std::io::Error::other(format!(
                "short write: {res} of {} bytes",
                w.bytes.len()
            )))
        } else {
            None
        };
        if self.failure.is_none() {
            self.failure = err;
        }
        self.outstanding = self.outstanding.saturating_sub(1);
    }
}

/// One connection's operations in flight.
struct Ops {
    link: Arc<Link>,
    /// The pool its receives take buffers from.
    group: u16,
    /// A multishot receive is armed (until a completion without `MORE`).
    recv_armed: bool,
    /// Its receive is being cancelled (the owner is behind).
    cancelling: bool,
    /// In `Core::parked`.
    parked: bool,
    send_armed: bool,
    /// The connection is still read (false: closing, waiting for what is
    /// in flight before it goes).
    open: bool,
}

impl Ops {
    fn idle(&self) -> bool {
        !self.recv_armed && !self.send_armed
    }
}

impl Uring {
    /// A ring, or why the kernel refuses one (then: epoll). Only the
    /// owner's ring runs the replicas' links (`EventLoop::ring_of`), so only
    /// it gets their pool (`replica_pool`).
    pub(super) fn new(replica_pool: bool) -> std::io::Result<Uring> {
        // COOP_TASKRUN (5.19): a completion does not interrupt the owner
        // while it runs (it finds its completions when it next enters or
        // waits; a sleeping owner is still woken). Measured on this VM in
        // memory mode: the commit point ~20 µs closer to epoll's. Older
        // kernels: without it.
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_clamp()
            .setup_coop_taskrun()
            .build(RING_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .setup_clamp()
                    .build(RING_ENTRIES)
            })?;
        // What this module needs of the kernel (5.11 and later has it all):
        // a timed wait (EXT_ARG), completions never dropped, and the
        // operations. Anything less: epoll.
        let unsupported = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("this kernel's io_uring lacks {what}"),
            )
        };
        if !ring.params().is_feature_ext_arg() {
            return Err(unsupported("timed waits (EXT_ARG, Linux 5.11)"));
        }
        if !ring.params().is_feature_nodrop() {
            return Err(unsupported("NODROP (Linux 5.5)"));
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::Recv::CODE, "Recv"),
            (opcode::Send::CODE, "Send"),
            (opcode::PollAdd::CODE, "PollAdd"),
        ] {
            if !probe.is_supported(code) {
                return Err(unsupported(name));
            }
        }
        if !kernel_has_multishot() {
            return Err(unsupported("multishot receives (Linux 6.0)"));
        }
        let mut pools = vec![BufPool::new(&ring, POOL_OTHER)?];
        if replica_pool {
            pools.push(BufPool::new(&ring, POOL_REPLICA)?);
        }
        let eventfd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        let fd = rustix::io::fcntl_dupfd_cloexec(ring.as_fd(), 0)?;
        Ok(Uring {
            core: Mutex::new(Core {
                ring,
                ops: HashMap::new(),
                parked: Vec::new(),
                wake_armed: false,
                wake_broken: false,
                done: Vec::new(),
                pools,
                disk: DiskFlight::default(),
                deferred: Vec::new(),
            }),
            kick: Arc::new(Kick {
                dirty: Mutex::new(Vec::new()),
                adopted: Mutex::new(Vec::new()),
                forgotten: Mutex::new(Vec::new()),
                eventfd,
                owner: AtomicU64::new(0),
            }),
            fd,
            disk_woke: AtomicBool::new(false),
        })
    }

    /// The ring's descriptor: readable while completions wait.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(super) fn kick(&self) -> &Kick {
        &self.kick
    }

    /// Puts `link` in ring mode under `token`: from now on its bytes are
    /// sent by the ring.
    pub(super) fn attach(&self, link: &Link, token: usize) {
        let kick = self.kick.clone();
        link.attach_ring(RingHook {
            token,
            kick: Arc::new(move |t| kick.mark(t)),
        });
    }

    /// Hands a welcomed connection to the owner (from any thread).
    pub(super) fn adopt(&self, conn: LoopConn) {
        self.kick.adopted.lock().expect("lock poisoned").push(conn);
        self.kick.wake();
    }

    /// Forgets a closed connection (from any thread, never waiting for
    /// the ring): its buffers go once nothing is in flight for it (the
    /// caller has shut its socket down, so that comes soon).
    pub(super) fn forget(&self, token: usize) {
        let first = {
            let mut f = self.kick.forgotten.lock().expect("lock poisoned");
            f.push(token);
            f.len() == 1
        };
        if first && self.kick.owner.load(Ordering::Relaxed) != thread_number() {
            self.kick.wake();
        }
    }

    /// Submits what waits to be sent (every dirty connection's bytes, in
    /// one system call). The owner calls it before waiting elsewhere.
    pub(super) fn flush(&self, inner: &Arc<Inner>, lp: &EventLoop) {
        self.owner();
        let mut core = self.core.lock().expect("lock poisoned");
        self.stage(inner, lp, &mut core);
        submit(&mut core.ring);
    }

    fn owner(&self) {
        self.kick.owner.store(thread_number(), Ordering::Relaxed);
    }

    /// The owner's turn: submits what waits, waits up to `timeout` for a
    /// completion, and handles every completion there is (frames go to
    /// `lp.ready`).
    pub(super) fn poll(&self, inner: &Arc<Inner>, lp: &EventLoop, timeout: Duration) {
        self.owner();
        let mut closing = Vec::new();
        {
            let mut core = self.core.lock().expect("lock poisoned");
            self.stage(inner, lp, &mut core);
            let waiting = !core.ring.completion().is_empty() || !core.deferred.is_empty();
            let r = if timeout.is_zero() || waiting {
                submit(&mut core.ring);
                Ok(0)
            } else {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                core.ring.submitter().submit_with_args(1, &args)
            };
            match r {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc_errno::ETIME | libc_errno::EINTR | libc_errno::EBUSY)
                    ) => {}
                Err(e) => tracing::warn!(error = %e, "io_uring wait failed"),
            }
            for _ in 0..PASSES_MAX {
                let core = &mut *core;
                core.done.clear();
                core.done.append(&mut core.deferred);
                core.done.extend(
                    core.ring
                        .completion()
                        .map(|c| (c.user_data(), c.result(), c.flags())),
                );
                if core.done.is_empty() {
                    break;
                }
                let done = std::mem::take(&mut core.done);
                for &(data, res, flags) in &done {
                    self.complete(inner, lp, core, data, res, flags, &mut closing);
                }
                core.done = done;
                self.stage(inner, lp, core);
                submit(&mut core.ring);
            }
        }
        for conn in closing {
            close(inner, conn);
        }
    }

    /// Starts reading adopted connections and sending what dirty ones
    /// hold.
    fn stage(&self, inner: &Arc<Inner>, lp: &EventLoop, core: &mut Core) {
        if !core.wake_armed && !core.wake_broken {
            // One-shot (re-armed after each wake-up): multishot polls
            // need Linux 5.13.
            let poll = opcode::PollAdd::new(
                types::Fd(std::os::fd::AsRawFd::as_raw_fd(&self.kick.eventfd)),
                rustix::event::PollFlags::IN.bits() as u32,
            )
            .build()
            .user_data(KIND_WAKE << KIND_SHIFT);
            // SAFETY: a poll reads no memory of ours; the eventfd lives as
            // long as the ring (both are fields of `Uring`).
            core.wake_armed = unsafe { push(&mut core.ring, &poll) };
        }
        let forgotten = std::mem::take(&mut *self.kick.forgotten.lock().expect("lock poisoned"));
        for token in forgotten {
            if let Some(ops) = core.ops.get_mut(&token) {
                ops.open = false;
                if ops.idle() {
                    core.ops.remove(&token);
                }
            }
        }
        let adopted = std::mem::take(&mut *self.kick.adopted.lock().expect("lock poisoned"));
        if !adopted.is_empty() {
            let mut conns = lp.conns.lock().expect("lock poisoned");
            for conn in adopted {
                let token = conn.token;
                // By what admission made of it, not by the id it claims.
                let client = conn.ticket.as_ref().is_some_and(|t| t.is_client());
                let replica = matches!(PeerClass::of(conn.peer), PeerClass::Replica(_)) && !client;
                let has_replica_pool = core
                    .pools
                    .iter()
                    .any(|p| p.shape.group == POOL_REPLICA.group);
                let group = if replica && has_replica_pool {
                    POOL_REPLICA.group
                } else {
                    POOL_OTHER.group
                };
                let mut ops = Ops {
                    link: conn.stream.clone(),
                    group,
                    recv_armed: false,
                    cancelling: false,
                    parked: false,
                    send_armed: false,
                    open: true,
                };
                if !arm_recv(&mut core.ring, token, &mut ops) {
                    ops.parked = true;
                    core.parked.push(token);
                }
                if let Some(bytes) = ops.link.ring_take() {
                    arm_send(&mut core.ring, token, &mut ops, bytes, &self.kick);
                }
                core.ops.insert(token, ops);
                conns.insert(mio::Token(token), conn);
            }
        }
        if !core.parked.is_empty()
            && lp.ready.lock().expect("lock poisoned").len() < READY_EVENTS_MAX / 2
        {
            tracing::info!("the owner caught up: reading clients and masters again");
            for token in std::mem::take(&mut core.parked) {
                if let Some(ops) = core.ops.get_mut(&token) {
                    ops.parked = false;
                    // One still being cancelled is armed again when its
                    // receive ends.
                    if ops.open && !ops.recv_armed && !arm_recv(&mut core.ring, token, ops) {
                        ops.parked = true;
                        core.parked.push(token);
                    }
                }
            }
        }
        let dirty = std::mem::take(&mut *self.kick.dirty.lock().expect("lock poisoned"));
        for token in dirty {
            let Some(ops) = core.ops.get_mut(&token) else {
                // Not adopted yet: its bytes go when it is.
                continue;
            };
            if !ops.open || ops.send_armed {
                continue;
            }
            if let Some(bytes) = ops.link.ring_take() {
                arm_send(&mut core.ring, token, ops, bytes, &self.kick);
            }
        }
        let _ = inner;
    }

    /// Queues a flush's durable writes on the ring (see the module docs);
    /// the owner's next submission carries them. One flush at a time.
    pub(super) fn disk_submit(&self, writes: Vec<DurableWrite>) -> std::io::Result<()> {
        let mut core = self.core.lock().expect("lock poisoned");
        let core = &mut *core;
        if !core.disk.writes.is_empty() {
            return Err(std::io::Error::other("a flush is already in flight"));
        }
        let mut entries = Vec::with_capacity(writes.len());
        for (i, w) in writes.iter().enumerate() {
            let len = u32::try_from(w.bytes.len())
                .map_err(|_| std::io::Error::other("write larger than 4 GiB"))?;
            entries.push(
                opcode::Write::new(
                    types::Fd(std::os::fd::AsRawFd::as_raw_fd(&w.fd)),
                    w.bytes.as_ptr(),
                    len,
                )
                .offset(w.offset)
                .rw_flags(RWF_DSYNC)
                .build()
                .user_data((KIND_DISK << KIND_SHIFT) | i as u64),
            );
        }
        // The buffers move into the ring's keeping before any entry can
        // reach the kernel (a full queue submits inside `push`); moving
        // the outer vector leaves each buffer's heap memory where it is.
        core.disk = DiskFlight {
            writes,
            outstanding: 0,
            failure: None,
        };
        for entry in &entries {
            // SAFETY: the entry reads a buffer now held in `core.disk`,
            // which is replaced only by a later flush, once this one has no
            // completion outstanding (checked above), or leaked by `Drop`
            // if one never comes.
            if unsafe { push(&mut core.ring, entry) } {
                core.disk.outstanding += 1;
            } else {
                // Those already queued complete; the flush fails when they
                // have.
                core.disk.failure = Some(std::io::Error::other(
                    "io_uring submission queue full: durable write not queued",
                ));
                break;
            }
        }
        Ok(())
    }

    /// Collects the flush's completions, waiting for the rest if `wait`
    /// (on the owner's thread: the sockets' completions met meanwhile are
    /// set aside for its next turn). `Ok(true)` once no flush is in flight
    /// (the one that was finished durably); the first error once a flush
    /// with a failed write has finished.
    pub(super) fn disk_reap(&self, wait: bool) -> std::io::Result<bool> {
        let mut core = self.core.lock().expect("lock poisoned");
        let core = &mut *core;
        loop {
            if core.disk.writes.is_empty() {
                return Ok(true);
            }
            if core.disk.outstanding == 0 {
                core.disk.writes.clear();
                // Reaped: no wait need end for it any more.
                self.disk_woke.store(false, Ordering::Relaxed);
                return match core.disk.failure.take() {
                    Some(e) => Err(e),
                    None => Ok(true),
                };
            }
            if !wait {
                return Ok(false);
            }
            match core.ring.submit_and_wait(1) {
                Ok(_) => {}
                // Interrupted, or the completion queue is full for a
                // moment (taken below): wait again.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc_errno::EINTR | libc_errno::EBUSY | libc_errno::EAGAIN)
                    ) => {}
                Err(e) => return Err(e),
            }
            let Core {
                ring,
                disk,
                deferred,
                ..
            } = core;
            for c in ring.completion() {
                if c.user_data() >> KIND_SHIFT == KIND_DISK {
                    disk.complete((c.user_data() & TOKEN_MASK) as usize, c.result());
                } else {
                    deferred.push((c.user_data(), c.result(), c.flags()));
                }
            }
        }
    }

    /// Whether a flush is in flight.
    pub(super) fn disk_busy(&self) -> bool {
        !self
            .core
            .lock()
            .expect("lock poisoned")
            .disk
            .writes
            .is_empty()
    }

    /// Whether the flush in flight has every completion (not yet reaped).
    pub(super) fn disk_finished(&self) -> bool {
        let core = self.core.lock().expect("lock poisoned");
        !core.disk.writes.is_empty() && core.disk.outstanding == 0
    }

    /// Whether a flush finished since this was last asked (the owner's
    /// wait ends for it, as for a message).
    pub(super) fn take_disk_woke(&self) -> bool {
        self.disk_woke.swap(false, Ordering::Relaxed)
    }

    /// Handles one completion.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &self,
        inner: &Arc<Inner>,
        lp: &EventLoop,
        core: &mut Core,
        data: u64,
        res: i32,
        flags: u32,
        closing: &mut Vec<LoopConn>,
    ) {
        let token = (data & TOKEN_MASK) as usize;
        match data >> KIND_SHIFT {
            KIND_WAKE => {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&self.kick.eventfd, &mut b);
                if res < 0 {
                    // Not re-armed (it would fail again at once): wake-ups
                    // from other threads then wait for the owner's next
                    // turn. The probe at start makes this unexpected.
                    tracing::error!(
                        error = %std::io::Error::from_raw_os_error(-res),
                        "io_uring cannot poll its wake-up descriptor"
                    );
                    core.wake_broken = true;
                }
                core.wake_armed = false;
                let _ = flags;
            }
            KIND_RECV => {
                let Core {
                    ops,
                    pools,
                    parked,
                    ring,
                    ..
                } = core;
                let Some(op) = ops.get_mut(&token) else {
                    return;
                };
                if !io_uring::cqueue::more(flags) {
                    op.recv_armed = false;
                    op.cancelling = false;
                }
                let Some(pool) = pools.iter_mut().find(|p| p.shape.group == op.group) else {
                    return;
                };
                // A buffer named by a completion without bytes goes straight
                // back (lost, it would shrink the pool for good).
                let bid = match io_uring::cqueue::buffer_select(flags) {
                    Some(bid) if res <= 0 => {
                        pool.give_back(bid);
                        None
                    }
                    other => other,
                };
                if !op.open {
                    if let Some(bid) = bid {
                        pool.give_back(bid);
                    }
                    if op.idle() {
                        ops.remove(&token);
                    }
                    return;
                }
                let mut conns = lp.conns.lock().expect("lock poisoned");
                let Some(conn) = conns.get_mut(&mio::Token(token)) else {
                    if let Some(bid) = bid {
                        pool.give_back(bid);
                    }
                    return;
                };
                let keep = if res > 0 {
                    match bid {
                        Some(bid) => {
                            conn.last_read = Instant::now();
                            // SAFETY: the kernel wrote `res` bytes into
                            // buffer `bid` and handed it to us with this
                            // completion; it is not given back (and so not
                            // written again) until after this call.
                            let bytes = unsafe { pool.bytes(bid, res as usize) };
                            let keep = received(inner, conn, bytes);
                            pool.give_back(bid);
                            keep
                        }
                        None => {
                            tracing::error!(peer = conn.peer, "io_uring receive without a buffer");
                            false
                        }
                    }
                } else if res == 0 {
                    if !inner.shutdown.load(Ordering::SeqCst) {
                        tracing::info!(peer = conn.peer, addr = %conn.addr, "connection closed");
                    }
                    false
                } else if matches!(
                    -res,
                    libc_errno::EINTR
                        | libc_errno::EAGAIN
                        | libc_errno::ENOBUFS
                        | libc_errno::ECANCELED
                ) {
                    // Interrupted, the pool dry for a moment (nothing was
                    // taken from the socket), or cancelled by us: armed
                    // again below.
                    true
                } else {
                    let e = std::io::Error::from_raw_os_error(-res);
                    tracing::info!(peer = conn.peer, addr = %conn.addr, error = %e, "connection failed");
                    false
                };
                // Replicas are read whatever the queue holds (Raft bounds
                // what they send); clients and masters wait while it is
                // full, on any ring.
                let pausable = !conn.is_replica();
                let behind =
                    pausable && lp.ready.lock().expect("lock poisoned").len() >= READY_EVENTS_MAX;
                if !keep {
                    // Its socket is shut down on close: an armed receive
                    // ends with zero bytes, and the connection's ops go.
                    closing.extend(conns.remove(&mio::Token(token)));
                } else if behind {
                    if parked.is_empty() {
                        tracing::warn!("the owner is behind: reading clients and masters paused");
                    }
                    if op.recv_armed && !op.cancelling {
                        let cancel = opcode::AsyncCancel::new(recv_data(token))
                            .build()
                            .user_data((KIND_CANCEL << KIND_SHIFT) | token as u64);
                        // SAFETY: a cancellation points at no memory.
                        op.cancelling = unsafe { push(ring, &cancel) };
                    }
                    if !op.parked {
                        op.parked = true;
                        parked.push(token);
                    }
                } else if !op.recv_armed && !op.parked && !arm_recv(ring, token, op) {
                    op.parked = true;
                    parked.push(token);
                }
            }
            KIND_CANCEL => {}
            KIND_DISK => {
                core.disk.complete(token, res);
                if core.disk.outstanding == 0 {
                    self.disk_woke.store(true, Ordering::Relaxed);
                }
            }
            KIND_SEND => {
                let Some(ops) = core.ops.get_mut(&token) else {
                    return;
                };
                ops.send_armed = false;
                if !ops.open {
                    ops.link.ring_failed();
                    if ops.idle() {
                        core.ops.remove(&token);
                    }
                    return;
                }
                let res = if matches!(-res, libc_errno::EINTR | libc_errno::EAGAIN) {
                    0
                } else {
                    res
                };
                if res >= 0 {
                    if let Some(bytes) = ops.link.ring_sent(res as usize) {
                        arm_send(&mut core.ring, token, ops, bytes, &self.kick);
                    }
                    return;
                }
                ops.link.ring_failed();
                let e = std::io::Error::from_raw_os_error(-res);
                let mut conns = lp.conns.lock().expect("lock poisoned");
                if let Some(conn) = conns.remove(&mio::Token(token)) {
                    tracing::info!(peer = conn.peer, addr = %conn.addr, error = %e, "connection failed");
                    closing.push(conn);
                }
            }
            _ => {}
        }
    }
}

/// Bytes a receive brought: through the session into the decoder, frames
/// handled, bounds checked. False: close the connection.
fn received(inner: &Arc<Inner>, conn: &mut LoopConn, bytes: &[u8]) -> bool {
    match conn.stream.receive(bytes, &mut conn.dec) {
        Ok(true) => {}
        Ok(false) => {
            if !inner.shutdown.load(Ordering::SeqCst) {
                tracing::info!(peer = conn.peer, addr = %conn.addr, "connection closed");
            }
            return false;
        }
        Err(e) => {
            tracing::info!(peer = conn.peer, addr = %conn.addr, error = %e, "connection failed");
            return false;
        }
    }
    if !drain_frames(inner, conn) {
        return false;
    }
    if let Some(t) = conn.ticket.as_mut() {
        if let Err(why) = t.account(conn.dec.buffered()) {
            inner.admission.note_refusal(conn.addr, why);
            return false;
        }
    }
    true
}

/// Whether the kernel has multishot receives (6.0) and accepts (5.19), and
/// provided-buffer rings (5.19). None has a probe of its own; they arrived
/// with or before SINGLE_ISSUER (6.0), which a ring's set-up does check: a
/// throw-away ring that takes the flag answers for all of them.
pub(super) fn kernel_has_multishot() -> bool {
    IoUring::<squeue::Entry>::builder()
        .setup_single_issuer()
        .build(2)
        .is_ok()
}

/// The `user_data` of connection `token`'s receive.
fn recv_data(token: usize) -> u64 {
    (KIND_RECV << KIND_SHIFT) | token as u64
}

/// Arms a multishot receive into the connection's pool; false if the ring
/// refused it (the caller parks the connection and tries again later).
fn arm_recv(ring: &mut IoUring, token: usize, ops: &mut Ops) -> bool {
    let fd = std::os::fd::AsRawFd::as_raw_fd(ops.link.socket());
    let recv = opcode::RecvMulti::new(types::Fd(fd), ops.group)
        .build()
        .user_data(recv_data(token));
    // SAFETY: the kernel writes only buffers of the pool (alive as long as
    // the ring, and freed only after every receive has ended: see `Drop`);
    // the link in `ops`, which keeps the socket open, stays in `Core::ops`
    // until a completion has cleared `recv_armed`.
    ops.recv_armed = unsafe { push(ring, &recv) };
    ops.recv_armed
}

/// Starts a send of bytes [`Link::ring_take`] or [`Link::ring_sent`] gave;
/// if the ring refuses it, the link takes them back and is marked to try
/// again at the owner's next turn.
fn arm_send(
    ring: &mut IoUring,
    token: usize,
    ops: &mut Ops,
    (ptr, len): (*const u8, usize),
    kick: &Kick,
) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(ops.link.socket());
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let send = opcode::Send::new(types::Fd(fd), ptr, len)
        .flags(libc_errno::MSG_NOSIGNAL)
        .build()
        .user_data((KIND_SEND << KIND_SHIFT) | token as u64);
    // SAFETY: `ptr..ptr+len` lies in the link's `flight` buffer, which
    // the link leaves untouched while a send is in flight (`in_flight`,
    // cleared only by `ring_sent`/`ring_failed`, called on this send's
    // completion); the link is kept alive by `ops.link` in `Core::ops`
    // until that completion.
    ops.send_armed = unsafe { push(ring, &send) };
    if !ops.send_armed {
        ops.link.ring_not_started();
        kick.mark(token);
    }
}

/// Submits what is queued, if anything (an empty submission would still
/// cost a system call).
fn submit(ring: &mut IoUring) {
    // Completions the kernel kept aside (a full completion queue) come
    // back only through an enter: do one for them too.
    if ring.submission().is_empty() && !ring.submission().cq_overflow() {
        return;
    }
    if let Err(e) = ring.submit() {
        tracing::warn!(error = %e, "io_uring submit failed");
    }
}

/// Queues an entry, submitting first if the queue is full; false if the
/// kernel takes nothing (logged; the caller retries later).
///
/// # Safety
/// The memory the entry points to must stay valid until its completion.
unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> bool {
    for _ in 0..3 {
        // SAFETY: forwarded from the caller.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return true;
        }
        if let Err(e) = ring.submit() {
            tracing::warn!(error = %e, "io_uring submit failed");
            break;
        }
    }
    false
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Connections never adopted hold links whose hooks hold the kick:
        // let them go (else the cycle would leak them).
        // Poisoned locks too (a panic elsewhere): this must not panic
        // before the pools are dealt with, or they would be freed while the
        // kernel may write them.
        let adopted = std::mem::take(
            &mut *self
                .kick
                .adopted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for conn in adopted {
            conn.stream.shutdown();
        }
        let core = self
            .core
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ops in core.ops.values() {
            ops.link.shutdown();
        }
        // Completions a log's wait set aside (`disk_reap`) count too.
        for (data, _, flags) in std::mem::take(&mut core.deferred) {
            let kind = data >> KIND_SHIFT;
            if let Some(ops) = core.ops.get_mut(&((data & TOKEN_MASK) as usize)) {
                match kind {
                    KIND_RECV if !io_uring::cqueue::more(flags) => ops.recv_armed = false,
                    KIND_SEND => ops.send_armed = false,
                    _ => {}
                }
            }
        }
        // Shut-down sockets complete their receives and sends promptly,
        // and a durable write in a while; wait for them (bounded) before
        // the buffers go.
        let deadline = Instant::now() + Duration::from_secs(1);
        while (core.ops.values().any(|o| !o.idle()) || core.disk.outstanding > 0)
            && Instant::now() < deadline
        {
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = core.ring.submitter().submit_with_args(1, &args);
            let done: Vec<_> = core
                .ring
                .completion()
                .map(|c| {
                    (
                        c.user_data() >> KIND_SHIFT,
                        c.user_data() & TOKEN_MASK,
                        c.flags(),
                    )
                })
                .collect();
            for (kind, token, flags) in done {
                if kind == KIND_DISK {
                    core.disk.outstanding = core.disk.outstanding.saturating_sub(1);
                    continue;
                }
                if let Some(ops) = core.ops.get_mut(&(token as usize)) {
                    match kind {
                        KIND_RECV if !io_uring::cqueue::more(flags) => ops.recv_armed = false,
                        KIND_SEND => ops.send_armed = false,
                        _ => {}
                    }
                }
            }
        }
        if core.disk.outstanding > 0 {
            // The kernel may still read these.
            std::mem::forget(std::mem::take(&mut core.disk.writes));
        }
        let stuck: Vec<usize> = core
            .ops
            .iter()
            .filter(|(_, o)| !o.idle())
            .map(|(t, _)| *t)
            .collect();
        let receiving = stuck
            .iter()
            .any(|t| core.ops.get(t).is_some_and(|o| o.recv_armed));
        for t in stuck {
            // Never completed: the kernel may still use its memory.
            if let Some(ops) = core.ops.remove(&t) {
                std::mem::forget(ops);
            }
        }
        for pool in &mut core.pools {
            // Freed only once the kernel has let go of it; otherwise (a
            // receive may still write into it) leaked.
            if !receiving
                && core
                    .ring
                    .submitter()
                    .unregister_buf_ring(pool.shape.group)
                    .is_ok()
            {
                pool.free_on_drop = true;
            }
        }
    }
}

/// The size of a pool of receive buffers.
#[derive(Clone, Copy)]
struct PoolShape {
    /// Its buffer group id (what a receive names).
    group: u16,
    /// How many buffers (a power of two).
    count: u16,
    /// Bytes in each.
    bytes: usize,
}

/// Receive buffers the kernel picks from (a provided-buffer ring): an
/// array of descriptors, page-aligned and shared with the kernel, whose
/// tail we advance to hand buffers over, and the buffers themselves, one
/// allocation. The kernel takes a buffer for each completion and names it
/// in the completion's flags; [`BufPool::give_back`] returns it.
struct BufPool {
    shape: PoolShape,
    entries: std::ptr::NonNull<types::BufRingEntry>,
    entries_layout: std::alloc::Layout,
    data: std::ptr::NonNull<u8>,
    data_layout: std::alloc::Layout,
    /// Our copy of the tail (the kernel reads the shared one).
    tail: u16,
    /// The kernel has let go of the pool (unregistered): its memory may be
    /// freed. Until then it is leaked on drop rather than freed under a
    /// receive that may still write it (a ring that failed half-way
    /// through its set-up, a panic).
    free_on_drop: bool,
}

impl BufPool {
    /// Allocates a pool, registers it with `ring` and hands every buffer
    /// to the kernel.
    fn new(ring: &IoUring, shape: PoolShape) -> std::io::Result<BufPool> {
        use std::alloc::{alloc_zeroed, Layout};
        assert!(shape.count.is_power_of_two(), "pool size");
        let oom = || std::io::Error::from(std::io::ErrorKind::OutOfMemory);
        // The kernel wants the descriptors page-aligned.
        let entries_layout = Layout::from_size_align(
            usize::from(shape.count) * std::mem::size_of::<types::BufRingEntry>(),
            rustix::param::page_size(),
        )
        .map_err(|_| oom())?;
        let data_layout = Layout::from_size_align(usize::from(shape.count) * shape.bytes, 64)
            .map_err(|_| oom())?;
        // SAFETY: both layouts have a non-zero size.
        let entries = std::ptr::NonNull::new(unsafe { alloc_zeroed(entries_layout) })
            .ok_or_else(oom)?
            .cast::<types::BufRingEntry>();
        // SAFETY: as above.
        let Some(data) = std::ptr::NonNull::new(unsafe { alloc_zeroed(data_layout) }) else {
            // SAFETY: allocated just above with this layout.
            unsafe { std::alloc::dealloc(entries.as_ptr().cast(), entries_layout) };
            return Err(oom());
        };
        let mut pool = BufPool {
            shape,
            entries,
            entries_layout,
            data,
            data_layout,
            tail: 0,
            free_on_drop: false,
        };
        // SAFETY: the descriptors are page-aligned, `count` long, and live
        // until the pool is unregistered (`Uring`'s `Drop`) or leaked.
        let registered = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                pool.entries.as_ptr() as u64,
                shape.count,
                shape.group,
                0,
            )
        };
        if let Err(e) = registered {
            // The kernel never had it.
            pool.free_on_drop = true;
            return Err(e);
        }
        for bid in 0..shape.count {
            pool.give_back(bid);
        }
        Ok(pool)
    }

    /// The first `len` bytes of buffer `bid`.
    ///
    /// # Safety
    /// The kernel must have handed `bid` over (a completion named it) and
    /// it must not have been given back since.
    unsafe fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid % self.shape.count);
        let len = len.min(self.shape.bytes);
        // SAFETY: in the data allocation (`bid < count`, `len <= bytes`);
        // the kernel does not write it while we hold it (caller's promise).
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(bid * self.shape.bytes), len) }
    }

    /// Hands buffer `bid` (back) to the kernel.
    fn give_back(&mut self, bid: u16) {
        let count = self.shape.count;
        let bid = bid % count;
        let slot = usize::from(self.tail & (count - 1));
        // SAFETY: `slot < count` descriptors; the kernel reads only the
        // descriptors before the shared tail, and this one is past it
        // until the store below.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        // SAFETY: `bid < count`: inside the data allocation.
        let addr = unsafe { self.data.as_ptr().add(usize::from(bid) * self.shape.bytes) };
        entry.set_addr(addr as u64);
        entry.set_len(self.shape.bytes as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is a u16 in the first descriptor, shared with
        // the kernel, which reads it atomically: published with release
        // ordering, after the descriptor.
        let tail = unsafe {
            std::sync::atomic::AtomicU16::from_ptr(
                types::BufRingEntry::tail(self.entries.as_ptr()).cast_mut(),
            )
        };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        if !self.free_on_drop {
            return;
        }
        // SAFETY: allocated in `new` with these layouts, and unregistered.
        unsafe {
            std::alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            std::alloc::dealloc(self.data.as_ptr(), self.data_layout);
        }
    }
}

// SAFETY: the pool is plain memory owned by the ring's `Core`, used by one
// thread at a time under its lock.
unsafe impl Send for BufPool {}

/// The Linux constants used here, as the raw numbers completions carry.
mod libc_errno {
    use rustix::io::Errno;
    pub const EINTR: i32 = Errno::INTR.raw_os_error();
    pub const EAGAIN: i32 = Errno::AGAIN.raw_os_error();
    pub const EBUSY: i32 = Errno::BUSY.raw_os_error();
    pub const ETIME: i32 = Errno::TIME.raw_os_error();
    pub const ENOBUFS: i32 = Errno::NOBUFS.raw_os_error();
    pub const ECANCELED: i32 = Errno::CANCELED.raw_os_error();
    pub const MSG_NOSIGNAL: i32 = rustix::net::SendFlags::NOSIGNAL.bits() as i32;
}
