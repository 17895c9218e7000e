//! The io_uring path of the log. A flush submits, per dirty segment, one
//! write of everything appended since the previous flush with `RWF_DSYNC`
//! (the write completes once its data is durable: one submission instead of
//! a write linked to an `fdatasync`, measured equal or better here), and
//! returns at once; [`Ring::reap`] collects the completions later. The
//! buffers travel with the flush and are owned by the ring until the
//! kernel is done with them. The unsafe code of the log crate lives here,
//! and only here.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use io_uring::{opcode, types, IoUring};

/// Ring entries: one per dirty segment per flush (a flush rarely spans more
/// than one segment).
const RING_ENTRIES: u32 = 64;
/// `RWF_DSYNC` from linux/fs.h.
const RWF_DSYNC: i32 = 0x2;

/// One segment's share of a flush: its file, where the bytes go, the bytes.
pub struct SegmentWrite {
    /// The segment's file: a descriptor of its own, held until the flush
    /// is reaped.
    pub fd: OwnedFd,
    /// Where in it.
    pub offset: u64,
    /// What goes there.
    pub bytes: Vec<u8>,
}

/// Where the log's flushes go: the log's own [`Ring`], or the ring of the
/// event loop the replica runs on (its sockets' ring: the durable writes
/// leave with the sends in one submission, and their completions wake the
/// loop as messages do). Either holds each flush's buffers until its
/// completions, and has at most one flush in flight.
pub trait FlushRing: Send {
    /// Queues one durable write (`RWF_DSYNC`) per segment and returns
    /// without waiting. Each write's descriptor is held until
    /// [`FlushRing::reap`] has reported the flush finished.
    fn submit(&mut self, writes: Vec<SegmentWrite>) -> io::Result<()>;
    /// `Ok(true)` once no flush is in flight (the last finished durably),
    /// `Ok(false)` while one is (blocking until it finishes if `wait`); the
    /// first error once a flush with a failed write has finished.
    fn reap(&mut self, wait: bool) -> io::Result<bool>;
    /// Whether a flush is in flight.
    fn busy(&self) -> bool;
    /// Whether the flush in flight has finished (its completions wait to
    /// be reaped).
    fn finished(&self) -> bool;
    /// A descriptor that becomes readable when the flush in flight
    /// finishes, for an event loop to wait on beside its sockets; `None`
    /// for a loop's own ring (its wait ends by itself).
    fn completion_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>>;
}

impl FlushRing for Ring {
    fn submit(&mut self, writes: Vec<SegmentWrite>) -> io::Result<()> {
        Ring::submit(self, writes)
    }

    fn reap(&mut self, wait: bool) -> io::Result<bool> {
        Ring::reap(self, wait)
    }

    fn busy(&self) -> bool {
        Ring::busy(self)
    }

    fn finished(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags};
        self.busy() && {
            let mut fds = [PollFd::from_borrowed_fd(self.fd(), PollFlags::IN)];
            poll(&mut fds, Some(&rustix::event::Timespec::default())).unwrap_or(0) > 0
        }
    }

    fn completion_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.fd())
    }
}

/// An io_uring instance owned by one `DiskStorage`, with at most one flush
/// in flight.
pub(crate) struct Ring {
    ring: IoUring,
    /// The writes of the flush in flight: the kernel reads these buffers
    /// until their completions arrive, so they live here until then.
    in_flight: Vec<SegmentWrite>,
    /// Completions still expected for `in_flight`.
    outstanding: usize,
    /// The first failure among the completions seen so far.
    failure: Option<io::Error>,
}

impl Ring {
    /// A ring, or why the kernel (or a seccomp filter) refuses one.
    pub(crate) fn new() -> io::Result<Ring> {
        Ok(Ring {
            ring: IoUring::new(RING_ENTRIES)?,
            in_flight: Vec::new(),
            outstanding: 0,
            failure: None,
        })
    }

    /// The ring's descriptor: readable while completions wait to be
    /// reaped, so an event loop can wait on it beside its sockets.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.ring.as_fd()
    }

    /// Whether a flush is in flight.
    pub(crate) fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Submits one durable write per segment and returns without waiting.
    /// The caller must keep every `fd` open until [`Ring::reap`] has
    /// reported the flush finished.
    pub(crate) fn submit(&mut self, writes: Vec<SegmentWrite>) -> io::Result<()> {
        assert!(!self.busy(), "one flush in flight at a time");
        assert!(
            writes.len() <= RING_ENTRIES as usize,
            "too many segments in one flush"
        );
        // The buffers move into `in_flight` before any entry is queued, and
        // stay there until every queued entry has completed (`reap`, or
        // `Drop`), whatever fails below.
        self.in_flight = writes;
        self.outstanding = 0;
        self.failure = None;
        for (i, w) in self.in_flight.iter().enumerate() {
            let Ok(len) = u32::try_from(w.bytes.len()) else {
                self.failure = Some(io::Error::other("write larger than 4 GiB"));
                break;
            };
            let write = opcode::Write::new(types::Fd(w.fd.as_raw_fd()), w.bytes.as_ptr(), len)
                .offset(w.offset)
                .rw_flags(RWF_DSYNC)
                .build()
                .user_data(i as u64);
            // SAFETY: the buffer behind `write` is the heap allocation of
            // `w.bytes`, held in `self.in_flight`, which is cleared only
            // once no queued entry is outstanding (`reap`), and `Drop` waits
            // for the outstanding ones (or leaks them). The descriptor is
            // the write's own (`SegmentWrite::fd`), held as long.
            let queued = unsafe { self.ring.submission().push(&write).is_ok() };
            if !queued {
                self.failure = Some(io::Error::other("submission queue full"));
                break;
            }
            self.outstanding += 1;
        }
        if self.outstanding == 0 {
            // Nothing was queued: nothing to wait for.
            self.in_flight.clear();
            return Err(self
                .failure
                .take()
                .unwrap_or_else(|| io::Error::other("an empty flush")));
        }
        // A failed submit leaves what was queued in the queue (a later
        // enter, `reap` or `Drop`, hands it over): the flush stays in
        // flight, and the caller treats the error as fatal.
        self.ring.submit()?;
        Ok(())
    }

    /// Collects completions of the flush in flight, blocking until it has
    /// finished if `wait`. Returns `Ok(true)` once every write of the flush
    /// is durable, `Ok(false)` if some are still in flight, and the first
    /// error once a flush with a failed write has finished.
    pub(crate) fn reap(&mut self, wait: bool) -> io::Result<bool> {
        if !self.busy() {
            return Ok(true);
        }
        while self.outstanding > 0 {
            let mut seen = 0;
            for cqe in self.ring.completion() {
                seen += 1;
                let w = &self.in_flight[cqe.user_data() as usize];
                let res = cqe.result();
                let err = if res < 0 {
                    Some(io::Error::from_raw_os_error(-res))
                } else if res as usize != w.bytes.len() {
                    Some(io::Error::other(format!(
                        "short write: {res} of {} bytes",
                        w.bytes.len()
                    )))
                } else {
                    None
                };
                if self.failure.is_none() {
                    self.failure = err;
                }
            }
            self.outstanding -= seen;
            if self.outstanding == 0 {
                break;
            }
            if !wait {
                return Ok(false);
            }
            match self.ring.submit_and_wait(1) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => {
                    r?;
                }
            }
        }
        self.in_flight.clear();
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The kernel may still read the buffers: wait for it before they
        // are freed.
        while self.outstanding > 0 {
            let seen = self.ring.completion().count();
            self.outstanding -= seen;
            if self.outstanding > 0 && self.ring.submit_and_wait(1).is_err() {
                // The ring cannot be waited on; leaking the buffers is the
                // only safe choice left.
                std::mem::forget(std::mem::take(&mut self.in_flight));
                return;
            }
        }
    }
}
