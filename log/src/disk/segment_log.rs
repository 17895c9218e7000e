//! `DiskStorage`: the Raft log in segment files, the hard state in its
//! two-slot file, the latest snapshot in its own file. Two write paths share
//! the format: io_uring (appends gathered in memory, flushed as one
//! `RWF_DSYNC` write per dirty segment, asynchronously, with group commit)
//! and plain `pwrite` at append + `fdatasync` at flush where io_uring is
//! unavailable.
//!
//! # Files
//!
//! `log/<first index, 20 digits>.seg` are preallocated, fixed-size segments
//! of records (see [`super::record`]); a record never spans two segments.
//! `log/spare.tmp` is the next segment, zeroed in the background once the
//! active one is half full and renamed into place at the rollover; `open`
//! deletes a leftover one (it holds no records).
//! `snapshot` holds the latest snapshot: a checksummed header (index, term,
//! configuration, data length) and the data; it is replaced by writing
//! `snapshot.tmp`, `fsync`, `rename`, `fsync` of the directory.
//!
//! # Durability
//!
//! `append` writes records (io_uring: into memory until the next flush);
//! they are durable once [`DiskStorage::durable_index`] covers them:
//! after `sync()` returns, or when [`DiskStorage::flush_poll`] reports the
//! flush that carried them finished. **Group commit:**
//! [`DiskStorage::flush_start`] hands everything appended so far to the
//! disk and returns; while that flush is in flight, new appends accumulate
//! and go out together in the next flush, started as soon as the one in
//! flight is reaped. At most one flush is in flight, so durability is
//! always a prefix. `Durability::Memory` counts the page cache as durable.
//! `set_hard_state` is durable when it returns if it changes the term or
//! the vote; a commit-index-only change is written without `fdatasync`. Snapshots and compaction
//! are durable when they return. `open` fdatasyncs what it recovered (it
//! may have been in the page cache only, after a process crash) before
//! reporting it durable.
//!
//! # Crash cases
//!
//! - A crash in the middle of an append leaves a torn record at the end of
//!   the last segment: `open` truncates it (zeroes it) and reports it.
//! - Truncating a suffix (a Raft conflict) deletes later segments, newest
//!   first, then zeroes the truncated bytes **back to front**, then syncs:
//!   a crash half-way leaves a prefix of the old log, never a hole followed
//!   by stale records.
//! - A crash between writing a snapshot and deleting the segments it
//!   replaces leaves old records: `open` keeps records after the snapshot
//!   only if the log holds the snapshot's own entry (index and term), as
//!   Raft's InstallSnapshot rule says, and drops them otherwise.
//! - A bad record anywhere but the tail of the last segment is corruption:
//!   `open` refuses, naming the file, offset and the index that should be
//!   there.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::hard_state::{HardStateError, HardStateFile};
use super::record::{self, Tail};
use super::uring::{FlushRing, Ring, SegmentWrite};
use crate::storage::{MemStorage, Storage, StorageError};
use crate::types::*;

/// Default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Largest snapshot file accepted on open.
pub const SNAPSHOT_FILE_BYTES_MAX: u64 = crate::constants::SNAPSHOT_BYTES_MAX as u64 + (1 << 20);
/// In `Durability::Memory`, how often the background flusher fdatasyncs.
pub const MEMORY_FLUSH_INTERVAL_MS: u64 = 50;
/// Bytes zeroed per write when truncating (back to front).
const ZERO_CHUNK_BYTES: usize = 64 << 10;

/// Why the log on disk cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Damage that is not a torn tail: never served, never skipped.
    #[error("{path}: corrupt at byte {offset} (expected index {index}): {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// The index that should be there.
        index: Index,
        /// What is wrong.
        reason: String,
    },
    /// An entry this replica had made durable (and may have acknowledged)
    /// is damaged or missing: it must not serve again under its id.
    #[error(
        "{path}: entry {index} is damaged or missing at byte {offset} ({reason}), but this replica \
         had made entries up to {acked} durable and may have acknowledged them; refusing to start \
         with acknowledged entries lost. Recover by removing this replica from the group \
         (ctl remove-replica) and adding a new one under a new id with an empty data directory \
         (coordinator --join, ctl add-replica); keep this directory for inspection"
    )]
    Lost {
        /// The file or directory.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// The first entry lost.
        index: Index,
        /// The acknowledged watermark.
        acked: Index,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the directory.
    #[error("{dir}: in use by {holder} (its LOCK is held); two replicas must never share a data directory")]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// Who holds it, as its LOCK file says.
        holder: String,
    },
    /// The hard-state file is unreadable.
    #[error(transparent)]
    HardState(#[from] HardStateError),
    /// `bootstrap` on a directory that already holds a log.
    #[error("{0}: already holds a log; refusing to overwrite it")]
    NotEmpty(PathBuf),
}

/// What `open` found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// A torn record truncated at the end of the last segment: (file, byte
    /// offset, why it did not check out).
    pub torn_tail: Option<(PathBuf, u64, String)>,
    /// Records after the snapshot that were dropped because the log did not
    /// hold the snapshot's entry.
    pub dropped_after_snapshot: u64,
}

/// How writes reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring if the kernel allows it, else `Std` (saying so once on
    /// stderr).
    Auto,
    /// `pwrite` at append, `fdatasync` at sync.
    Std,
    /// Writes gathered until sync, then one `RWF_DSYNC` write per segment
    /// through io_uring; an error if unavailable.
    Uring,
}

enum Backend {
    Std,
    /// The log's own ring, or the event loop's ([`DiskStorage::flush_on`]).
    Uring(Box<dyn FlushRing>),
}

/// When an appended record counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After `sync()`: written and `fdatasync`ed. The default.
    Fsync,
    /// After `sync()`: written to the page cache, which survives a process
    /// crash. A background thread `fdatasync`s every
    /// [`MEMORY_FLUSH_INTERVAL_MS`]; a machine crash (power, kernel) loses
    /// the writes of up to that window plus one flush. RAMCloud's buffered
    /// replicas: a majority holding an entry in memory is the commit point,
    /// a simultaneous power loss of that majority is the loss case. The
    /// hard state (term, vote) stays fsync'ed in both modes: a forgotten
    /// vote could elect two leaders.
    Memory,
}

/// Where the background flusher reports a failed `fdatasync`: the first
/// failure, kept for good.
type BackgroundFailure = std::sync::Arc<std::sync::Mutex<Option<String>>>;

/// The background flusher of `Durability::Memory`: syncs the segments it
/// is handed until its channel closes (the storage was dropped). A failed
/// sync is reported in `failure`, and every later call of the storage
/// fails with it: the page cache may have dropped writes the replica
/// already acknowledged, so it must stop, not go on as if they were there.
fn spawn_flusher(
    failure: BackgroundFailure,
) -> std::io::Result<crossbeam::channel::Sender<(PathBuf, File)>> {
    let (tx, rx) = crossbeam::channel::unbounded::<(PathBuf, File)>();
    std::thread::Builder::new()
        .name("log-flusher".into())
        .spawn(move || {
            let interval = std::time::Duration::from_millis(MEMORY_FLUSH_INTERVAL_MS);
            let mut files: Vec<(PathBuf, File)> = Vec::new();
            loop {
                match rx.recv_timeout(interval) {
                    Ok(f) => {
                        files.push(f);
                        // Only the newest segments take writes.
                        if files.len() > 4 {
                            files.remove(0);
                        }
                        continue;
                    }
                    Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam::channel::RecvTimeoutError::Disconnected) => {
                        for (_, f) in &files {
                            let _ = f.sync_data();
                        }
                        return;
                    }
                }
                for (path, f) in &files {
                    if let Err(e) = f.sync_data() {
                        let msg = format!(
                            "background fdatasync of {} failed: {e} (writes acknowledged in memory durability may be lost)",
                            path.display()
                        );
                        eprintln!("ramcoord: {msg}");
                        let mut failed = failure.lock().unwrap_or_else(|p| p.into_inner());
                        failed.get_or_insert(msg);
                        return;
                    }
                }
            }
        })?;
    Ok(tx)
}

struct Segment {
    first_index: Index,
    path: PathBuf,
    file: File,
    /// Bytes of records written.
    end: u64,
    /// The file's (preallocated) size.
    capacity: u64,
    /// io_uring: bytes appended since the last sync, not yet written; they
    /// belong at `end - pending.len()`.
    pending: Vec<u8>,
    /// Start offset of each record, by index - first_index.
    offsets: Vec<u64>,
    dirty: bool,
}

/// The durable Raft log (see the module docs).
pub struct DiskStorage {
    /// `LOCK`, held exclusively (flock) while the log is open: a second
    /// process on the same directory is refused.
    _lock: File,
    dir: PathBuf,
    segment_bytes: u64,
    mem: MemStorage,
    hard_state_file: HardStateFile,
    segments: Vec<Segment>,
    backend: Backend,
    /// Set in `Durability::Memory`: where new segments are announced.
    /// (The acknowledged watermark is raised only in `Durability::Fsync`:
    /// memory mode's loss window is documented, not corruption.)
    flusher: Option<crossbeam::channel::Sender<(PathBuf, File)>>,
    /// Every entry up to here is durable (per the durability mode).
    durable_index: Index,
    /// io_uring: the last index the flush in flight covers.
    in_flight_last: Index,
    /// io_uring, with the slow-disk fault hook on (`super::fault`): the
    /// flush in flight counts as finished no sooner than this, whenever
    /// the kernel completes it.
    in_flight_held_until: Option<std::time::Instant>,
    /// Flushes finished since open (group commit: entries per flush).
    flushes: u64,
    /// The next segment being zeroed in the background (see `SPARE_NAME`).
    spare: Option<std::thread::JoinHandle<std::io::Result<File>>>,
    /// A failed flush: every later call fails with this (after a failed
    /// `fdatasync` the state of the page cache is unknown; the node must
    /// stop, not retry).
    failed: Option<String>,
    /// A failure of the background flusher (`Durability::Memory`):
    /// as fatal as `failed`.
    background_failure: BackgroundFailure,
}

/// Takes the directory's exclusive lock (`LOCK`, flock: released by the
/// kernel when the process dies, so a killed replica never leaves a stale
/// lock), and writes this process's id into it for the next one to name.
fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    use rustix::fs::{flock, FlockOperation};
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            return Err(OpenError::Locked {
                dir: dir.to_owned(),
                holder: if holder.is_empty() {
                    "another process".into()
                } else {
                    format!("process {holder}")
                },
            });
        }
        Err(e) => return Err(io_err(&path)(e.into())),
    }
    file.set_len(0).map_err(io_err(&path))?;
    file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
        .map_err(io_err(&path))?;
    Ok(file)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

fn storage_io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Drop for DiskStorage {
    fn drop(&mut self) {
        // The ring may still be writing into our segment files: let it
        // finish before they are closed. Appends not yet handed to a flush
        // go to the page cache, so a clean close loses nothing (and the
        // next open makes them durable).
        let _ = self.write_out_pending();
        // The preparer writes into our directory: let it finish, so a
        // reopen of the same directory never races with it.
        if let Some(h) = self.spare.take() {
            let _ = h.join();
        }
    }
}

/// The next segment, zeroed in the background under this name (not a
/// `.seg`: `open` deletes it) and renamed when the log rolls over.
const SPARE_NAME: &str = "spare.tmp";

/// Creates `path` as a preallocated, zeroed, synced file of `len` bytes.
fn create_zeroed(path: &Path, len: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    // Preallocated so that a sync of an append does not also have to write
    // an allocation, and so the scan finds zeros past the last record.
    // Where the file system cannot fallocate, a sparse file reads the same
    // (zeros) and only costs more per sync.
    if rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len).is_err() {
        file.set_len(len)?;
    }
    // Allocated extents are still "unwritten" on ext4 and xfs: the first
    // sync over each block would also commit its conversion to the journal
    // (measured: ~2x the floor). Writing the zeros once, here, makes every
    // later append a pure overwrite. With O_DIRECT where the file system
    // allows it: no copy through the page cache (measured: that copy was a
    // third of the CPU time of a 4 KiB group-commit run on 2 cores).
    let direct = OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path);
    const CHUNK: usize = ZERO_CHUNK_BYTES * 16;
    // An aligned window into a slightly larger buffer: O_DIRECT wants the
    // memory aligned to the logical block size (4 KiB covers every disk).
    let raw = vec![0u8; CHUNK + 4096];
    let skew = raw.as_ptr().align_offset(4096);
    let zeros = &raw[skew..skew + CHUNK];
    let writer = match &direct {
        Ok(d) if len % 4096 == 0 => d,
        _ => &file,
    };
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK as u64) as usize;
        writer.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// Prepares the next segment as `path` on a background thread.
fn spawn_spare(path: PathBuf, len: u64) -> std::thread::JoinHandle<std::io::Result<File>> {
    std::thread::Builder::new()
        .name("log-spare".into())
        .spawn(move || create_zeroed(&path, len))
        .expect("spawning the segment preparer")
}

fn segment_path(dir: &Path, first_index: Index) -> PathBuf {
    dir.join("log").join(format!("{first_index:020}.seg"))
}

// ----- snapshot file --------------------------------------------------------

const SNAPSHOT_MAGIC: u32 = 0x4e53_4352; // "RCSN"

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct SnapshotHeader {
    magic: U32,
    version: u8,
    reserved: [u8; 3],
    index: U64,
    term: U64,
    voters: U32,
    learners: U32,
    data_len: U64,
    crc: U32,
    reserved2: U32,
}

fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut h = SnapshotHeader {
        magic: U32::new(SNAPSHOT_MAGIC),
        version: 1,
        reserved: [0; 3],
        index: U64::new(s.meta.index),
        term: U64::new(s.meta.term),
        voters: U32::new(s.meta.conf.voters.len() as u32),
        learners: U32::new(s.meta.conf.learners.len() as u32),
        data_len: U64::new(s.data.len() as u64),
        crc: U32::new(0),
        reserved2: U32::new(0),
    };
    let mut body = Vec::with_capacity(s.data.len() + 8 * s.meta.conf.members().count());
    for id in s.meta.conf.members() {
        body.extend_from_slice(&id.to_le_bytes());
    }
    body.extend_from_slice(&s.data);
    h.crc = U32::new(crc32c::crc32c_append(crc32c::crc32c(h.as_bytes()), &body));
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn decode_snapshot(buf: &[u8]) -> Result<Snapshot, String> {
    let (h, body) =
        SnapshotHeader::read_from_prefix(buf).map_err(|_| "shorter than its header".to_string())?;
    if h.magic.get() != SNAPSHOT_MAGIC || h.version != 1 {
        return Err("bad magic or version".into());
    }
    let mut check = h;
    check.crc = U32::new(0);
    if crc32c::crc32c_append(crc32c::crc32c(check.as_bytes()), body) != h.crc.get() {
        return Err("checksum mismatch".into());
    }
    let (nv, nl) = (h.voters.get() as usize, h.learners.get() as usize);
    let ids_len = (nv + nl) * 8;
    if Some(body.len() as u64) != (ids_len as u64).checked_add(h.data_len.get()) {
        return Err("length mismatch".into());
    }
    let id = |i: usize| u64::from_le_bytes(body[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let conf = ConfState {
        voters: (0..nv).map(id).collect(),
        learners: (nv..nv + nl).map(id).collect(),
    };
    let meta = SnapshotMeta {
        index: h.index.get(),
        term: h.term.get(),
        conf,
    };
    Ok(Snapshot {
        meta,
        data: Bytes::copy_from_slice(&body[ids_len..]),
    })
}

impl DiskStorage {
    /// Creates a new log in `dir` for a founding member (the founding
    /// configuration as log entries, as [`MemStorage::bootstrap`]). Refuses a
    /// directory that already holds a log.
    ///
    /// Atomic: the hard state is written (and synced) last, after the
    /// founding entries are durable, so a directory is either a complete
    /// founding member (its hard state written) or recognisably unfinished
    /// (never written: a crash or a full disk part way), and an unfinished
    /// one is cleared and started afresh.
    pub fn bootstrap(
        dir: &Path,
        conf: &ConfState,
        segment_bytes: u64,
    ) -> Result<DiskStorage, OpenError> {
        if DiskStorage::holds_state(dir)? {
            return Err(OpenError::NotEmpty(dir.to_owned()));
        }
        // An unfinished bootstrap's leftovers (its lock is taken by the
        // open below; nobody else may be here either).
        clear_unfinished_bootstrap(dir)?;
        let (mut disk, _) = DiskStorage::open(dir, segment_bytes)?;
        let boot = MemStorage::bootstrap(conf);
        let ents = boot.all_entries().to_vec();
        let fail = |e: StorageError| OpenError::Io {
            path: dir.to_owned(),
            source: std::io::Error::other(e.to_string()),
        };
        disk.append(&ents).map_err(fail)?;
        disk.sync().map_err(fail)?;
        // The commit point of bootstrapping: a synced hard-state write.
        let hs = boot.hard_state();
        disk.hard_state_file
            .set_acked(disk.durable_index, hs)
            .map_err(OpenError::HardState)?;
        disk.hard_state_file.save(hs)?;
        disk.mem.set_hard_state(hs).map_err(fail)?;
        Ok(disk)
    }

    /// The log of a founding member of a group restored from a backup:
    /// no entries, `snapshot` (its configuration the new group's), and a
    /// hard state of term `term` (at least the snapshot's; see
    /// `ramcoord restore` on why it may be higher) with nothing voted.
    /// Like [`DiskStorage::bootstrap`], the synced hard-state write is the
    /// commit point: a directory without it is redone.
    pub fn bootstrap_from_snapshot(
        dir: &Path,
        snapshot: Snapshot,
        term: Term,
        segment_bytes: u64,
    ) -> Result<DiskStorage, OpenError> {
        if DiskStorage::holds_state(dir)? {
            return Err(OpenError::NotEmpty(dir.to_owned()));
        }
        clear_unfinished_bootstrap(dir)?;
        let (mut disk, _) = DiskStorage::open(dir, segment_bytes)?;
        let fail = |e: StorageError| OpenError::Io {
            path: dir.to_owned(),
            source: std::io::Error::other(e.to_string()),
        };
        let hs = HardState {
            term: term.max(snapshot.meta.term),
            vote: None,
            commit: snapshot.meta.index,
        };
        disk.apply_snapshot(snapshot).map_err(fail)?;
        disk.sync().map_err(fail)?;
        disk.hard_state_file
            .set_acked(disk.durable_index, hs)
            .map_err(OpenError::HardState)?;
        disk.hard_state_file.save(hs)?;
        disk.mem.set_hard_state(hs).map_err(fail)?;
        Ok(disk)
    }

    /// Whether `dir` holds a replica's state: its hard state was ever
    /// written (a founding member whose bootstrap finished, or a joined
    /// replica that heard from a leader). A directory without one is new,
    /// or an unfinished bootstrap.
    pub fn holds_state(dir: &Path) -> Result<bool, OpenError> {
        let path = dir.join("hardstate");
        if !path.exists() {
            return Ok(false);
        }
        let image = fs::read(&path).map_err(io_err(&path))?;
        Ok(image.iter().any(|&b| b != 0))
    }

    /// Opens (creating if missing) the log in `dir`, recovering from any
    /// crash (see the module docs).
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(DiskStorage, Recovery), OpenError> {
        DiskStorage::open_with(dir, segment_bytes, BackendChoice::Auto)
    }

    /// [`DiskStorage::open`] with a chosen write path.
    pub fn open_with(
        dir: &Path,
        segment_bytes: u64,
        choice: BackendChoice,
    ) -> Result<(DiskStorage, Recovery), OpenError> {
        assert!(segment_bytes >= 4096, "segments of at least 4 KiB");
        let backend = match choice {
            BackendChoice::Std => Backend::Std,
            BackendChoice::Uring => Backend::Uring(Box::new(Ring::new().map_err(io_err(dir))?)),
            BackendChoice::Auto => match Ring::new() {
                Ok(ring) => Backend::Uring(Box::new(ring)),
                Err(e) => {
                    eprintln!(
                        "ramcoord: io_uring unavailable ({e}); the log uses pwrite + fdatasync"
                    );
                    Backend::Std
                }
            },
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock_dir(dir)?;
        let log_dir = dir.join("log");
        fs::create_dir_all(&log_dir).map_err(io_err(&log_dir))?;
        sync_dir(dir).map_err(io_err(dir))?;
        let (hard_state_file, opened) = HardStateFile::open_full(&dir.join("hardstate"))?;
        let hard_state = opened.state;
        let snap_path = dir.join("snapshot");
        let snapshot = match fs::read(&snap_path) {
            Ok(buf) => decode_snapshot(&buf).map_err(|reason| OpenError::Corrupt {
                path: snap_path.clone(),
                offset: 0,
                index: 0,
                reason,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(io_err(&snap_path)(e)),
        };
        let _ = fs::remove_file(dir.join("snapshot.tmp"));
        let _ = fs::remove_file(log_dir.join(SPARE_NAME));

        let mut firsts: Vec<Index> = Vec::new();
        for ent in fs::read_dir(&log_dir).map_err(io_err(&log_dir))? {
            let name = ent.map_err(io_err(&log_dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<Index>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();

        let mut recovery = Recovery::default();
        let mut segments: Vec<Segment> = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut prev: Option<(Index, Term)> = None;
        for (k, &first) in firsts.iter().enumerate() {
            let path = segment_path(dir, first);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let buf = fs::read(&path).map_err(io_err(&path))?;
            let scan = record::scan(&buf, prev);
            let is_last = k + 1 == firsts.len();
            let corrupt = |offset: usize, reason: String| OpenError::Corrupt {
                path: path.clone(),
                offset: offset as u64,
                index: prev.map_or(first, |(i, _)| i + 1),
                reason,
            };
            if let Some(r) = scan.records.first() {
                if r.entry.index != first {
                    return Err(corrupt(
                        0,
                        format!("first record is {}, file name says {first}", r.entry.index),
                    ));
                }
            }
            // Only the recorded watermark: the commit index may be written
            // (unsynced) ahead of the log's own sync.
            let acked = opened.acked;
            // The first entry a damaged tail would cost.
            let damaged = scan
                .records
                .last()
                .map(|r| r.entry.index)
                .or(prev.map(|(i, _)| i))
                .map_or(first, |i| i.saturating_add(1));
            match scan.tail {
                Tail::Clean => {}
                Tail::Torn { reason } if is_last && acked > 0 && damaged <= acked => {
                    // The damaged record is one this replica had made
                    // durable and may have acknowledged: not a torn write.
                    return Err(OpenError::Lost {
                        path: path.clone(),
                        offset: scan.end as u64,
                        index: damaged,
                        acked,
                        reason,
                    });
                }
                Tail::Torn { reason } if is_last => {
                    // Zero what the torn write left so the next append
                    // starts on clean ground.
                    let torn_len = buf.len() - scan.end;
                    file.write_all_at(&vec![0u8; torn_len], scan.end as u64)
                        .map_err(io_err(&path))?;
                    file.sync_data().map_err(io_err(&path))?;
                    recovery.torn_tail = Some((path.clone(), scan.end as u64, reason));
                }
                Tail::Torn { reason } | Tail::Corrupt { reason } => {
                    let idx_prev = scan
                        .records
                        .last()
                        .map(|r| (r.entry.index, r.entry.term))
                        .or(prev);
                    return Err(OpenError::Corrupt {
                        path: path.clone(),
                        offset: scan.end as u64,
                        index: idx_prev.map_or(first, |(i, _)| i + 1),
                        reason,
                    });
                }
            }
            if scan.records.is_empty() && !is_last {
                return Err(corrupt(0, "an empty segment before the last".into()));
            }
            if scan.records.is_empty() {
                // Created for records whose write never completed: remove
                // it; the next append makes a new one, correctly named.
                drop(file);
                fs::remove_file(&path).map_err(io_err(&path))?;
                sync_dir(&log_dir).map_err(io_err(&log_dir))?;
                continue;
            }
            let offsets = scan.records.iter().map(|r| r.offset as u64).collect();
            if let Some(r) = scan.records.last() {
                prev = Some((r.entry.index, r.entry.term));
            }
            entries.extend(scan.records.into_iter().map(|r| r.entry));
            segments.push(Segment {
                first_index: first,
                path,
                file,
                end: scan.end as u64,
                capacity: buf.len() as u64,
                pending: Vec::new(),
                offsets,
                dirty: false,
            });
        }

        // Entries the snapshot covers are compacted; entries after it are
        // kept only if the log continues the snapshot.
        let snap_index = snapshot.meta.index;
        // Segments written after the snapshot start past it. A segment that
        // starts at or below it predates the snapshot: its records are ours
        // (compaction) if it holds the snapshot's own entry, and a log the
        // snapshot replaced (a crash before the old segments were deleted)
        // if not.
        let predates = segments.iter().any(|s| s.first_index <= snap_index);
        let continues = snap_index == 0
            || !predates
            || entries
                .iter()
                .any(|e| e.index == snap_index && e.term == snapshot.meta.term);
        let mut kept: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.index > snap_index)
            .collect();
        let mut disk = DiskStorage {
            _lock: lock,
            dir: dir.to_owned(),
            segment_bytes,
            mem: MemStorage::default(),
            hard_state_file,
            segments,
            backend,
            flusher: None,
            durable_index: 0,
            in_flight_last: 0,
            in_flight_held_until: None,
            flushes: 0,
            failed: None,
            background_failure: BackgroundFailure::default(),
            spare: None,
        };
        // Also when every record is at or below the snapshot: the old
        // segments must go, or the next append lands after their last
        // record and the next open finds a gap.
        if !continues && !disk.segments.is_empty() {
            recovery.dropped_after_snapshot = kept.len() as u64;
            disk.drop_segments_from(0).map_err(|e| OpenError::Io {
                path: dir.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?;
            kept.clear();
        }
        if kept.first().is_some_and(|e| e.index != snap_index + 1) {
            let first = kept[0].index;
            return Err(OpenError::Corrupt {
                path: log_dir,
                offset: 0,
                index: snap_index + 1,
                reason: format!(
                    "the log starts at {first}, after a gap from the snapshot at {snap_index}"
                ),
            });
        }
        let mut hs = hard_state;
        let last = kept.last().map_or(snap_index, |e| e.index);
        let acked = opened.acked;
        if last < acked {
            // Segments deleted, or a log cut short, under a hard state
            // that says this replica held more.
            return Err(OpenError::Lost {
                path: log_dir,
                offset: 0,
                index: last + 1,
                acked,
                reason: format!(
                    "the log (with its snapshot) ends at {last}; entries {} to {acked} are missing",
                    last + 1
                ),
            });
        }
        // The commit index is an optimisation; never ahead of the log.
        hs.commit = hs.commit.clamp(snap_index, last.max(snap_index));
        // What was read back may sit only in the page cache (a process
        // crash before its sync): make it durable before anyone acts on
        // it, since a restarted follower acknowledges what its log holds.
        for seg in &disk.segments {
            seg.file.sync_data().map_err(io_err(&seg.path))?;
        }
        disk.durable_index = last.max(snap_index);
        disk.mem = MemStorage::from_parts(hs, snapshot, kept);
        Ok((disk, recovery))
    }

    /// Switches the durability mode (see [`Durability`]).
    pub fn set_durability(&mut self, durability: Durability) -> Result<(), StorageError> {
        match durability {
            Durability::Fsync => {
                if self.flusher.take().is_some() {
                    // What memory mode called durable is in the page cache
                    // only: sync it all before fsync mode claims anything.
                    self.write_out_pending()?;
                    for seg in &mut self.segments {
                        seg.file.sync_data().map_err(|e| storage_io(&seg.path, e))?;
                        seg.dirty = false;
                    }
                }
                self.sync()
            }
            Durability::Memory => {
                if self.flusher.is_none() {
                    let tx = spawn_flusher(self.background_failure.clone()).map_err(|e| {
                        StorageError::Io(format!("starting the background flusher: {e}"))
                    })?;
                    for seg in &self.segments {
                        let f = seg.file.try_clone().map_err(|e| storage_io(&seg.path, e))?;
                        let _ = tx.send((seg.path.clone(), f));
                    }
                    self.flusher = Some(tx);
                }
                Ok(())
            }
        }
    }

    /// Every entry up to this index is durable (per the durability mode):
    /// what a replica may acknowledge.
    pub fn durable_index(&self) -> Index {
        self.durable_index
    }

    /// Bytes of log records the segments hold (not their preallocated
    /// size): what replay reads at a restart.
    pub fn log_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.end).sum()
    }

    /// Flushes that have finished since the log was opened (each made one
    /// or more entries durable: with group commit, fewer than appends).
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Starts making every entry appended so far durable and returns
    /// without waiting for the disk (io_uring); [`DiskStorage::flush_poll`]
    /// reports progress. **Group commit:** while a flush is in flight this
    /// does nothing, and what was appended meanwhile goes out in one flush
    /// as soon as the one in flight finishes. The `std` backend and
    /// `Durability::Memory` finish the flush before returning.
    ///
    /// An error is fatal: the node must stop (after a failed `fdatasync`
    /// the kernel may have dropped the dirty pages; retrying could report
    /// lost data as durable). Every later call returns the same error.
    pub fn flush_start(&mut self) -> Result<(), StorageError> {
        self.check_failed()?;
        let last = self.mem.last_index();
        if self.durable_index >= last {
            return Ok(());
        }
        if self.flusher.is_some() {
            // Durability::Memory: the page cache is durable enough; the
            // flusher thread does the fdatasync.
            super::fault::before_sync(); // a chaos test's slow disk, if on
            self.write_out_pending()?;
            for seg in &mut self.segments {
                seg.dirty = false;
            }
            self.durable_index = last;
            self.flushes += 1;
            return Ok(());
        }
        match &mut self.backend {
            Backend::Uring(ring) => {
                if ring.busy() {
                    return Ok(()); // joins the next flush
                }
                // Bytes already written out (to cut or replace a file) but
                // not synced: rare, done here and now.
                for i in 0..self.segments.len() {
                    let seg = &self.segments[i];
                    if seg.dirty && seg.pending.is_empty() {
                        if let Err(e) = seg.file.sync_data() {
                            let msg = format!("{}: fdatasync: {e}", seg.path.display());
                            return Err(self.fail(msg));
                        }
                        self.segments[i].dirty = false;
                    }
                }
                // Each write holds a descriptor of its own (a dup): on an
                // event loop's ring the kernel sees the write only at the
                // loop's next submission, and a segment closed meanwhile
                // (a failure skips the wait for the flush) must not leave a
                // number another file could be given.
                let mut writes = Vec::new();
                let mut dup_failed = None;
                for s in self.segments.iter_mut().filter(|s| !s.pending.is_empty()) {
                    let fd = match s.file.as_fd().try_clone_to_owned() {
                        Ok(fd) => fd,
                        Err(e) => {
                            dup_failed = Some(format!("{}: dup: {e}", s.path.display()));
                            break;
                        }
                    };
                    let bytes = std::mem::take(&mut s.pending);
                    s.dirty = false;
                    writes.push(SegmentWrite {
                        fd,
                        offset: s.end - bytes.len() as u64,
                        bytes,
                    });
                }
                if let Some(msg) = dup_failed {
                    return Err(self.fail(msg));
                }
                let Backend::Uring(ring) = &mut self.backend else {
                    unreachable!("matched above")
                };
                if writes.is_empty() {
                    // Written already (a segment rollover syncs): durable.
                    self.durable_index = last;
                    self.flushes += 1;
                    return Ok(());
                }
                // The segments stay open until the flush is reaped: every
                // path that closes or cuts a segment waits for it first
                // (`write_out_pending`, `Drop`).
                if let Err(e) = ring.submit(writes) {
                    return Err(self.fail(format!("io_uring submit: {e}")));
                }
                self.in_flight_last = last;
                // A chaos test's slow disk, if switched on: the write is
                // not reported durable until the delay has passed, and the
                // caller's thread does not wait for it (as with a real
                // slow disk under io_uring).
                let delay = super::fault::sync_delay();
                self.in_flight_held_until =
                    (!delay.is_zero()).then(|| std::time::Instant::now() + delay);
            }
            Backend::Std => {
                super::fault::before_sync(); // a chaos test's slow disk, if on
                return self.sync_dirty_segments();
            }
        }
        Ok(())
    }

    /// Whether a flush is in flight (io_uring): its completion will make
    /// [`DiskStorage::completion_fd`] readable, or, with the slow-disk
    /// fault hook on, [`DiskStorage::flush_held_until`] says when to look.
    pub fn flush_in_flight(&self) -> bool {
        matches!(&self.backend, Backend::Uring(ring) if ring.busy())
    }

    /// Whether the flush in flight has finished, its completions waiting
    /// for [`DiskStorage::flush_poll`] (never while the slow-disk fault
    /// hook holds it).
    pub fn flush_finished(&self) -> bool {
        self.flush_held_until().is_none()
            && matches!(&self.backend, Backend::Uring(ring) if ring.finished())
    }

    /// Moves the flushes to `ring` (an event loop's: the sockets' ring of
    /// the replica's thread), after the flush in flight on the log's own
    /// ring, if any, has finished. Returns false, keeping things as they
    /// are, on the `std` backend (io_uring was refused or not chosen).
    pub fn flush_on(&mut self, ring: Box<dyn FlushRing>) -> Result<bool, StorageError> {
        if !matches!(self.backend, Backend::Uring(_)) {
            return Ok(false);
        }
        self.wait_in_flight()?;
        self.backend = Backend::Uring(ring);
        Ok(true)
    }

    /// With the slow-disk fault hook on: the flush in flight is not
    /// reported finished before this (an event loop wakes then, and does
    /// not wait on [`DiskStorage::completion_fd`] meanwhile: the kernel's
    /// completion may already be there).
    pub fn flush_held_until(&self) -> Option<std::time::Instant> {
        self.in_flight_held_until.filter(|_| self.flush_in_flight())
    }

    /// The io_uring descriptor whose readability means a flush's
    /// completion arrived ([`DiskStorage::flush_poll`] collects it);
    /// `None` on the `std` backend, whose flushes finish in the call, and
    /// on an event loop's ring ([`DiskStorage::flush_on`]), whose waits end
    /// by themselves when a flush finishes.
    pub fn completion_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match &self.backend {
            Backend::Uring(ring) => ring.completion_fd(),
            Backend::Std => None,
        }
    }

    /// `fdatasync`s every segment written since its last sync; then
    /// everything appended is durable.
    fn sync_dirty_segments(&mut self) -> Result<(), StorageError> {
        self.check_failed()?;
        for i in 0..self.segments.len() {
            let seg = &self.segments[i];
            if seg.dirty {
                if let Err(e) = seg.file.sync_data() {
                    let msg = format!("{}: fdatasync: {e}", seg.path.display());
                    return Err(self.fail(msg));
                }
                self.segments[i].dirty = false;
            }
        }
        let last = self.mem.last_index();
        if last > self.durable_index {
            self.durable_index = last;
            self.flushes += 1;
        }
        Ok(())
    }

    /// Collects a finished flush (blocking until the one in flight finishes
    /// if `wait`), starts the next one if entries were appended meanwhile,
    /// and returns [`DiskStorage::durable_index`].
    pub fn flush_poll(&mut self, wait: bool) -> Result<Index, StorageError> {
        self.check_failed()?;
        if let Some(until) = self.flush_held_until() {
            let now = std::time::Instant::now();
            if now < until {
                if !wait {
                    return Ok(self.durable_index);
                }
                std::thread::sleep(until - now);
            }
            // Held long enough: from now on the kernel's completion decides
            // (and the ring's descriptor is waited on again).
            self.in_flight_held_until = None;
        }
        let finished = match &mut self.backend {
            Backend::Uring(ring) if ring.busy() => match ring.reap(wait) {
                Ok(done) => done,
                Err(e) => return Err(self.fail(format!("io_uring durable write: {e}"))),
            },
            _ => false,
        };
        if finished {
            self.in_flight_held_until = None;
            self.durable_index = self.durable_index.max(self.in_flight_last);
            self.flushes += 1;
            if self.durable_index < self.mem.last_index() {
                self.flush_start()?;
            }
        }
        Ok(self.durable_index)
    }

    /// Waits for the flush in flight, without starting another.
    fn wait_in_flight(&mut self) -> Result<(), StorageError> {
        self.check_failed()?;
        if let Some(until) = self.in_flight_held_until.take() {
            // The slow-disk fault hook holds the flush in flight: so does
            // whoever must wait for it.
            std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
        }
        if let Backend::Uring(ring) = &mut self.backend {
            if ring.busy() {
                if let Err(e) = ring.reap(true) {
                    return Err(self.fail(format!("io_uring durable write: {e}")));
                }
                self.durable_index = self.durable_index.max(self.in_flight_last);
                self.flushes += 1;
            }
        }
        Ok(())
    }

    fn fail(&mut self, msg: String) -> StorageError {
        self.failed = Some(msg.clone());
        StorageError::Io(msg)
    }

    fn check_failed(&self) -> Result<(), StorageError> {
        if let Some(msg) = &self.failed {
            return Err(StorageError::Io(format!("an earlier flush failed: {msg}")));
        }
        let background = self
            .background_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match background.as_ref() {
            Some(msg) => Err(StorageError::Io(msg.clone())),
            None => Ok(()),
        }
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lowers the acknowledged watermark to `to` (durably, before the log
    /// is cut there: see `hard_state`).
    fn lower_acked(&mut self, to: Index) -> Result<(), StorageError> {
        if to < self.hard_state_file.acked() {
            self.hard_state_file
                .set_acked(to, self.mem.hard_state())
                .map_err(|e| StorageError::Io(e.to_string()))?;
        }
        Ok(())
    }

    /// Deletes segments from position `k` on, newest first.
    fn drop_segments_from(&mut self, k: usize) -> Result<(), StorageError> {
        while self.segments.len() > k {
            let seg = self.segments.pop().expect("non-empty");
            fs::remove_file(&seg.path).map_err(|e| storage_io(&seg.path, e))?;
        }
        let log_dir = self.dir.join("log");
        sync_dir(&log_dir).map_err(|e| storage_io(&log_dir, e))
    }

    /// [`Storage::compact`], with the snapshot's file written here
    /// (`write_file`) or already by a [`SnapshotFileWriter`].
    fn compact_inner(&mut self, snapshot: Snapshot, write_file: bool) -> Result<(), StorageError> {
        let index = snapshot.meta.index;
        // Validate before touching any file.
        if index < self.mem.first_index() {
            return Err(StorageError::SnapshotOutOfDate {
                new: index,
                held: self.mem.first_index() - 1,
            });
        }
        if index > self.mem.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        assert_eq!(
            self.mem.term(index),
            Ok(snapshot.meta.term),
            "snapshot term mismatch"
        );
        self.write_out_pending()?;
        if write_file {
            self.write_snapshot_file(&snapshot)?;
        }
        // Whole segments below the snapshot go; the first kept one may
        // start below it (those records are ignored on open).
        let keep_from = self
            .segments
            .iter()
            .rposition(|s| s.first_index <= index + 1)
            .unwrap_or(0);
        for seg in self.segments.drain(..keep_from) {
            fs::remove_file(&seg.path).map_err(|e| storage_io(&seg.path, e))?;
        }
        let log_dir = self.dir.join("log");
        sync_dir(&log_dir).map_err(|e| storage_io(&log_dir, e))?;
        self.mem.compact(snapshot)
    }

    fn write_snapshot_file(&self, snap: &Snapshot) -> Result<(), StorageError> {
        self.snapshot_file_writer().write(snap)
    }

    /// A writer of this log's snapshot file for another thread (see
    /// [`SnapshotFileWriter`]).
    pub fn snapshot_file_writer(&self) -> SnapshotFileWriter {
        SnapshotFileWriter {
            dir: self.dir.clone(),
        }
    }

    /// Writes (without syncing) what io_uring mode holds for the next sync,
    /// so files can be cut, replaced or deleted.
    fn write_out_pending(&mut self) -> Result<(), StorageError> {
        self.wait_in_flight()?;
        for seg in self.segments.iter_mut().filter(|s| !s.pending.is_empty()) {
            let at = seg.end - seg.pending.len() as u64;
            seg.file
                .write_all_at(&seg.pending, at)
                .map_err(|e| storage_io(&seg.path, e))?;
            seg.pending.clear();
        }
        Ok(())
    }

    /// Removes the records at and after `from` from the files.
    fn truncate_files(&mut self, from: Index) -> Result<(), StorageError> {
        self.lower_acked(from.saturating_sub(1))?;
        self.write_out_pending()?;
        self.durable_index = self.durable_index.min(from.saturating_sub(1));
        let Some(k) = self.segments.iter().rposition(|s| s.first_index <= from) else {
            return self.drop_segments_from(0);
        };
        self.drop_segments_from(k + 1)?;
        let seg = &mut self.segments[k];
        let pos = (from - seg.first_index) as usize;
        if pos >= seg.offsets.len() {
            return Ok(());
        }
        let start = seg.offsets[pos];
        // Back to front: a crash leaves a prefix of the old log.
        let mut hi = seg.end;
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        while hi > start {
            let lo = hi.saturating_sub(ZERO_CHUNK_BYTES as u64).max(start);
            seg.file
                .write_all_at(&zeros[..(hi - lo) as usize], lo)
                .map_err(|e| storage_io(&seg.path, e))?;
            hi = lo;
        }
        seg.file.sync_data().map_err(|e| storage_io(&seg.path, e))?;
        seg.offsets.truncate(pos);
        seg.end = start;
        Ok(())
    }

    fn new_segment(&mut self, first_index: Index, min_bytes: u64) -> Result<(), StorageError> {
        let path = segment_path(&self.dir, first_index);
        let len = self.segment_bytes.max(min_bytes);
        let spare_path = self.dir.join("log").join(SPARE_NAME);
        // The spare prepared in the background, if it fits: renaming it is
        // far cheaper than zeroing a segment on the append path.
        let spare = match self.spare.take() {
            Some(h) => match h.join() {
                Ok(Ok(f)) if len == self.segment_bytes => {
                    fs::rename(&spare_path, &path).map_err(|e| storage_io(&path, e))?;
                    Some(f)
                }
                Ok(Ok(_)) => None,
                Ok(Err(e)) => {
                    eprintln!(
                        "ramcoord: preparing {} failed ({e}); creating the segment inline",
                        spare_path.display()
                    );
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        let file = match spare {
            Some(f) => f,
            None => create_zeroed(&path, len).map_err(|e| storage_io(&path, e))?,
        };
        let log_dir = self.dir.join("log");
        sync_dir(&log_dir).map_err(|e| storage_io(&log_dir, e))?;
        if let Some(tx) = &self.flusher {
            let clone = file.try_clone().map_err(|e| storage_io(&path, e))?;
            let _ = tx.send((path.clone(), clone));
        }
        self.segments.push(Segment {
            first_index,
            path,
            file,
            end: 0,
            capacity: len,
            pending: Vec::new(),
            offsets: Vec::new(),
            dirty: false,
        });
        Ok(())
    }

    fn write_records(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        let mut batch_first = 0;
        for (i, e) in entries.iter().enumerate() {
            let len = record::encoded_len(e) as u64;
            let fits = self
                .segments
                .last()
                .is_some_and(|s| s.end + (buf.len() as u64) + len <= s.capacity);
            if !fits {
                self.flush_buf(&mut buf, &entries[batch_first..i])?;
                batch_first = i;
                // Everything before the new segment is durable before the
                // segment exists, so after any crash a segment's name is
                // the index that follows the previous segment's last record
                // (otherwise a lost tail in the old segment would leave the
                // new one misnamed). One extra sync per segment, in both
                // durability modes.
                self.write_out_pending()?;
                if let Some(seg) = self.segments.last_mut() {
                    seg.file.sync_data().map_err(|e| storage_io(&seg.path, e))?;
                    seg.dirty = false;
                }
                self.new_segment(e.index, len)?;
            }
            record::encode(e, &mut buf);
        }
        self.flush_buf(&mut buf, &entries[batch_first..])?;
        // Half way through a segment, start preparing the next one: ready
        // long before the rollover, and not competing with the disk when
        // the log has just been opened.
        if let Some(seg) = self.segments.last() {
            if self.spare.is_none() && seg.end > seg.capacity / 2 {
                let spare_path = self.dir.join("log").join(SPARE_NAME);
                self.spare = Some(spawn_spare(spare_path, self.segment_bytes));
            }
        }
        Ok(())
    }

    fn flush_buf(&mut self, buf: &mut Vec<u8>, entries: &[Entry]) -> Result<(), StorageError> {
        if buf.is_empty() {
            return Ok(());
        }
        let seg = self.segments.last_mut().expect("a segment to write to");
        match self.backend {
            Backend::Std => seg
                .file
                .write_all_at(buf, seg.end)
                .map_err(|e| storage_io(&seg.path, e))?,
            Backend::Uring(_) => seg.pending.extend_from_slice(buf),
        }
        let mut off = seg.end;
        for e in entries {
            seg.offsets.push(off);
            off += record::encoded_len(e) as u64;
        }
        debug_assert_eq!(off, seg.end + buf.len() as u64);
        seg.end = off;
        seg.dirty = true;
        buf.clear();
        Ok(())
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> (HardState, ConfState) {
        self.mem.initial_state()
    }
    fn first_index(&self) -> Index {
        self.mem.first_index()
    }
    fn last_index(&self) -> Index {
        self.mem.last_index()
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.mem.term(index)
    }
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.mem.entries(lo, hi, max_bytes)
    }
    fn snapshot(&self) -> Snapshot {
        self.mem.snapshot()
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index < self.mem.first_index() || first.index > self.mem.last_index() + 1 {
            return Err(StorageError::NotContiguous {
                at: first.index,
                first: self.mem.first_index(),
                last: self.mem.last_index(),
            });
        }
        if first.index <= self.mem.last_index() {
            self.truncate_files(first.index)?;
        }
        self.write_records(entries)?;
        self.mem.append(entries)
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError> {
        self.mem.truncate_suffix(from)?;
        self.truncate_files(from)
    }

    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        if self.flusher.is_none() && self.durable_index > self.hard_state_file.acked() {
            self.hard_state_file
                .set_acked(self.durable_index, self.mem.hard_state())
                .map_err(|e| StorageError::Io(e.to_string()))?;
        }
        let prev = self.mem.hard_state();
        let commit_only = hs.term == prev.term && hs.vote == prev.vote;
        if commit_only {
            // The commit index is a hint (see the module docs): the page
            // cache will do; the next term or vote change syncs it too.
            self.hard_state_file.save_unsynced(hs)
        } else {
            self.hard_state_file.save(hs)
        }
        .map_err(|e| StorageError::Io(e.to_string()))?;
        self.mem.set_hard_state(hs)
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        if snapshot.meta.index < self.mem.first_index() - 1 {
            return Err(StorageError::SnapshotOutOfDate {
                new: snapshot.meta.index,
                held: self.mem.first_index() - 1,
            });
        }
        self.lower_acked(snapshot.meta.index)?;
        self.write_out_pending()?;
        self.write_snapshot_file(&snapshot)?;
        // The whole log is replaced: later appends start a new segment.
        self.drop_segments_from(0)?;
        self.durable_index = snapshot.meta.index;
        self.mem.apply_snapshot(snapshot)
    }

    fn compact(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.compact_inner(snapshot, true)
    }

    fn compact_written(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.compact_inner(snapshot, false)
    }

    fn durable_index(&self) -> Index {
        DiskStorage::durable_index(self)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        if self.flusher.is_some() {
            // Memory durability: finishes in the call (the fault hook's
            // delay, if on, is waited there).
            return self.flush_start();
        }
        // A chaos test's slow disk, if switched on.
        super::fault::before_sync();
        // The caller waits anyway: write and fdatasync in this thread, on
        // either backend. Handing the write to an io_uring worker and
        // waiting for it costs a cross-thread hop per sync (measured ~20 µs
        // here); the ring pays off when the caller has other work
        // (`flush_start`).
        self.write_out_pending()?; // waits for a flush in flight first
        self.sync_dirty_segments()
    }
}

/// Writes a log's snapshot file from any thread, so that the thread
/// driving the log need not wait for a large snapshot's write and `fsync`
/// ([`DiskStorage::snapshot_file_writer`]); the log then takes the written
/// snapshot with [`Storage::compact_written`].
///
/// The file is replaced atomically (a temporary file, synced, renamed over
/// it, the directory synced), so a crash leaves the old snapshot or the
/// new one. A snapshot file newer than the log's first segment is what
/// opening expects after a crash between the write and the compaction
/// (the entries it covers are ignored). Two writes must not overlap, and
/// none may overlap the log's own snapshot writes (installing a leader's
/// snapshot): the caller orders them.
#[derive(Clone, Debug)]
pub struct SnapshotFileWriter {
    dir: PathBuf,
}

impl SnapshotFileWriter {
    /// Writes `snap` as the log's snapshot, durably.
    pub fn write(&self, snap: &Snapshot) -> Result<(), StorageError> {
        let tmp = self.dir.join("snapshot.tmp");
        let path = self.dir.join("snapshot");
        let mut f = File::create(&tmp).map_err(|e| storage_io(&tmp, e))?;
        f.write_all(&encode_snapshot(snap))
            .map_err(|e| storage_io(&tmp, e))?;
        f.sync_all().map_err(|e| storage_io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| storage_io(&path, e))?;
        sync_dir(&self.dir).map_err(|e| storage_io(&self.dir, e))
    }
}

/// Removes what an unfinished bootstrap left in `dir` (its hard state was
/// never written, so nothing there is anyone's state).
fn clear_unfinished_bootstrap(dir: &Path) -> Result<(), OpenError> {
    for leftover in ["log", "snapshot", "hardstate"] {
        let p = dir.join(leftover);
        let r = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/fuzz_targets/disk_open.rs): a snapshot file
    /// whose checksum holds but whose data length is near u64::MAX made
    /// the length check overflow (a panic with overflow checks; without
    /// them the sum wrapped to the body's length and reading the member
    /// ids sliced past the end: a panic in any build).
    #[test]
    fn a_snapshot_file_with_an_absurd_data_length_is_an_error() {
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 7,
                term: 2,
                conf: ConfState::with_voters([1]),
            },
            data: Bytes::new(),
        };
        let good = encode_snapshot(&snap);
        assert_eq!(decode_snapshot(&good), Ok(snap));
        // One voter (8 bytes of ids) and a data length of 2^64 - 8: the
        // sum wraps to 0, the length of a body cut after the header.
        let mut bad = good[..std::mem::size_of::<SnapshotHeader>()].to_vec();
        bad[32..40].copy_from_slice(&(u64::MAX - 7).to_le_bytes());
        bad[40..44].fill(0);
        let crc = crc32c::crc32c(&bad);
        bad[40..44].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_snapshot(&bad), Err("length mismatch".to_string()));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/disk_open.rs): a crash inside
    /// `apply_snapshot`, after the snapshot file is written and before the
    /// old segments are deleted, with an old log that ends below the
    /// snapshot. `open` accepted it but left the old segment; the next
    /// append went after its last record, and the open after that refused
    /// the directory ("record 41@3 does not follow 3@1").
    #[test]
    fn a_crash_while_installing_a_snapshot_over_a_shorter_log_recovers() {
        let dir = std::env::temp_dir().join(format!("ramcoord-snap-crash-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let conf = ConfState::with_voters([1, 2, 3]);
        drop(DiskStorage::bootstrap(&dir, &conf, 1 << 16).unwrap());
        // The snapshot file of an install at 40, written before the crash.
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 40,
                term: 3,
                conf,
            },
            data: Bytes::from_static(b"state"),
        };
        fs::write(dir.join("snapshot"), encode_snapshot(&snap)).unwrap();

        let open = || DiskStorage::open_with(&dir, 1 << 16, BackendChoice::Std);
        let (mut s, _) = open().unwrap();
        assert_eq!((s.first_index(), s.last_index()), (41, 40));
        let e = Entry {
            term: 3,
            index: 41,
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"after"),
        };
        s.append(std::slice::from_ref(&e)).unwrap();
        s.sync().unwrap();
        drop(s);
        let (s, recovery) = open().unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(s.entries(41, 42, u64::MAX), Ok(vec![e]));
        assert_eq!(s.snapshot(), snap);
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Memory durability: the background flusher's failed `fdatasync` is
    /// fatal. Every later write fails with its reason (before, it was only
    /// printed, and the replica went on acknowledging).
    #[test]
    fn a_failed_background_flush_fails_every_later_write() {
        let dir = std::env::temp_dir().join(format!("ramcoord-bg-fail-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let conf = ConfState::with_voters([1]);
        let mut s = DiskStorage::bootstrap(&dir, &conf, 1 << 16).unwrap();
        s.set_durability(Durability::Memory).unwrap();
        let entry = |index| Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"x"),
        };
        s.append(&[entry(1)]).unwrap();
        s.sync().unwrap();
        // What the flusher thread does when the disk fails.
        *s.background_failure.lock().unwrap() = Some("background fdatasync failed: EIO".into());
        s.append(&[entry(2)]).unwrap();
        let err = s.sync().unwrap_err();
        assert!(err.to_string().contains("EIO"), "{err}");
        assert!(s.flush_start().is_err());
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }
}
