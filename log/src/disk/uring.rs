//! The io_uring path of the log: each sync submits, per dirty segment, one
//! write of everything appended since the last sync with `RWF_DSYNC` (the
//! write completes once its data is durable: one submission instead of a
//! write linked to an `fdatasync`, measured equal or better here), and
//! waits for the completions. The unsafe code of the log crate lives here,
//! and only here.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// Ring entries: one per dirty segment per sync (a sync rarely spans more
/// than one segment).
const RING_ENTRIES: u32 = 64;
/// `RWF_DSYNC` from linux/fs.h.
const RWF_DSYNC: i32 = 0x2;

/// One segment's share of a sync: its file, where the new bytes go, the bytes.
pub(crate) struct SegmentWrite<'a> {
    pub fd: RawFd,
    pub offset: u64,
    pub bytes: &'a [u8],
}

/// An io_uring instance owned by one `DiskStorage`.
pub(crate) struct Ring {
    ring: IoUring,
}

impl Ring {
    /// A ring, or why the kernel (or a seccomp filter) refuses one.
    pub(crate) fn new() -> io::Result<Ring> {
        Ok(Ring {
            ring: IoUring::new(RING_ENTRIES)?,
        })
    }

    /// Writes every segment's bytes durably (`RWF_DSYNC`). Returns once
    /// every completion is in: then the bytes are durable.
    pub(crate) fn write_and_sync(&mut self, writes: &[SegmentWrite<'_>]) -> io::Result<()> {
        for chunk in writes.chunks(RING_ENTRIES as usize) {
            self.submit_chunk(chunk)?;
        }
        Ok(())
    }

    fn submit_chunk(&mut self, writes: &[SegmentWrite<'_>]) -> io::Result<()> {
        let mut expected = 0;
        for (i, w) in writes.iter().enumerate() {
            let len = u32::try_from(w.bytes.len())
                .map_err(|_| io::Error::other("write larger than 4 GiB"))?;
            // RWF_DSYNC: the write returns once its data is durable.
            let write = opcode::Write::new(types::Fd(w.fd), w.bytes.as_ptr(), len)
                .offset(w.offset)
                .rw_flags(RWF_DSYNC)
                .build()
                .user_data(i as u64);
            // SAFETY: the buffer behind `write` is `w.bytes`, borrowed for
            // the whole of this call, and this call does not return until
            // every submitted entry has completed (the loop below), so the
            // kernel never reads freed memory. The fds stay open: the
            // caller owns the files for at least as long.
            unsafe {
                let mut sq = self.ring.submission();
                sq.push(&write)
                    .map_err(|_| io::Error::other("submission queue full"))?;
            }
            expected += 1;
        }
        self.ring.submit_and_wait(expected)?;
        let mut seen = 0;
        let mut failure: Option<io::Error> = None;
        while seen < expected {
            let cqes: Vec<_> = self.ring.completion().collect();
            if cqes.is_empty() {
                self.ring.submit_and_wait(1)?;
                continue;
            }
            for cqe in cqes {
                seen += 1;
                let i = cqe.user_data() as usize;
                let res = cqe.result();
                let err = if res < 0 {
                    Some(io::Error::from_raw_os_error(-res))
                } else if res as usize != writes[i].bytes.len() {
                    Some(io::Error::other(format!(
                        "short write: {res} of {} bytes",
                        writes[i].bytes.len()
                    )))
                } else {
                    None
                };
                if failure.is_none() {
                    failure = err;
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
