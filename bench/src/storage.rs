//! `ramcoord-bench storage`: the durable log against the disk's floor, in
//! one run, on one file system.
//!
//! - **floor**: a loop of 4 KiB `pwrite` + `fdatasync` on a preallocated
//!   file: what no log on this disk can beat; and 256 KiB writes, for the
//!   disk's durable bandwidth;
//! - **append**: one appender, one 4 KiB entry per `DiskStorage::append` +
//!   `sync`: the log's own cost on top of the floor;
//! - **group commit**: N appenders, each with one entry outstanding, hand
//!   entries to one writer thread that owns the log and uses its
//!   asynchronous flush (`flush_start` / `flush_poll`): entries arriving
//!   while a flush is in the disk go out in the next one. Appenders are
//!   closed-loop clients driven from one client thread (as a coordinator's
//!   clients arrive: requests on an event loop), plus one run with an OS
//!   thread per appender, where the wake-ups are part of the cost.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel;
use hdrhistogram::Histogram;
use ramcoord_log::disk::{BackendChoice, DiskStorage, Durability};
use ramcoord_log::{Entry, EntryKind, Storage};
use serde::Serialize;

/// Payload per entry: with its 32-byte header a record is exactly one 4 KiB
/// block, the size the floor writes.
const ENTRY_BYTES: usize = 4096 - 32;
const FLOOR_BYTES: usize = 4096;
/// Payload of a coordinator-sized entry (a commit record): a 256-byte
/// record with its header.
const SMALL_ENTRY_BYTES: usize = 256 - 32;
/// Bytes per write when measuring the disk's durable bandwidth.
const BANDWIDTH_BYTES: usize = 256 << 10;
const SEGMENT_BYTES: u64 = 64 << 20;

/// The measured figures (`--json` prints them as one object).
#[derive(Serialize, Default)]
pub struct StorageReport {
    pub floor_p50_us: f64,
    pub floor_p99_us: f64,
    pub floor_syncs_per_s: f64,
    pub append_p50_us: f64,
    pub append_p99_us: f64,
    pub append_p999_us: f64,
    pub append_max_us: f64,
    pub append_async_p50_us: f64,
    pub append_async_p99_us: f64,
    pub append_memory_p50_us: f64,
    pub append_memory_p99_us: f64,
    pub group_commit_entries_per_s_1: f64,
    pub group_commit_entries_per_s_8: f64,
    pub group_commit_entries_per_s_64: f64,
    pub group_commit_syncs_per_s_64: f64,
    pub group_commit_small_entries_per_s_64: f64,
    pub group_commit_small_syncs_per_s_64: f64,
    pub group_commit_threads_entries_per_s_64: f64,
    pub group_commit_threads_syncs_per_s_64: f64,
    pub floor_bandwidth_mb_per_s: f64,
    pub ratio_append_p50_to_floor_p50: f64,
    pub ratio_entries_64_to_floor_syncs: f64,
    pub ratio_small_entries_64_to_floor_syncs: f64,
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A file of `count` blocks of `block_bytes`, written once and synced so
/// that later writes rewrite allocated blocks (what the log's zeroed
/// segments give it).
fn prepared_file(path: &Path, block_bytes: usize, count: u64) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let block = vec![0x5au8; block_bytes];
    for i in 0..count {
        f.write_all_at(&block, i * block_bytes as u64).unwrap();
    }
    f.sync_all().unwrap();
    f
}

pub(crate) fn floor(dir: &Path, ops: u64) -> Histogram<u64> {
    let path = dir.join("floor.dat");
    let f = prepared_file(&path, FLOOR_BYTES, ops);
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut block = vec![0x5au8; FLOOR_BYTES];
    for i in 0..ops {
        // New contents each time, as a log writes.
        block.fill(i as u8 ^ 0xa5);
        let t = Instant::now();
        f.write_all_at(&block, i * FLOOR_BYTES as u64).unwrap();
        f.sync_data().unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    std::fs::remove_file(&path).unwrap();
    h
}

/// MB/s of 256 KiB `pwrite` + `fdatasync` on a preallocated file: what
/// bounds group commit of large entries.
fn floor_bandwidth(dir: &Path, ops: u64) -> f64 {
    let path = dir.join("bandwidth.dat");
    let f = prepared_file(&path, BANDWIDTH_BYTES, ops);
    let mut block = vec![0x5au8; BANDWIDTH_BYTES];
    let t = Instant::now();
    for i in 0..ops {
        block.fill(i as u8 ^ 0xa5);
        f.write_all_at(&block, i * BANDWIDTH_BYTES as u64).unwrap();
        f.sync_data().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    (ops as f64 * BANDWIDTH_BYTES as f64) / 1e6 / secs
}

fn entry(index: u64) -> Entry {
    entry_with(index, Bytes::from(vec![index as u8; ENTRY_BYTES]))
}

fn entry_with(index: u64, data: Bytes) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data,
    }
}

/// One appender: `append` + `sync()` (blocking: written and fdatasync'ed
/// in the caller's thread), or with `asynchronous`, `append` +
/// `flush_start` + `flush_poll(wait)` (io_uring: the flush runs while the
/// caller could do other work).
fn append_single(
    dir: &Path,
    ops: u64,
    backend: BackendChoice,
    durability: Durability,
    asynchronous: bool,
) -> Histogram<u64> {
    let d = dir.join("append");
    let (mut log, _) = DiskStorage::open_with(&d, SEGMENT_BYTES, backend).unwrap();
    log.set_durability(durability).unwrap();
    // The first append creates the first segment (zeroing it inline, tens
    // of ms); later segments are prepared in the background. Measure the
    // steady state.
    log.append(&[entry(1)]).unwrap();
    log.sync().unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    for i in 2..=ops + 1 {
        let e = entry(i);
        let t = Instant::now();
        log.append(std::slice::from_ref(&e)).unwrap();
        if asynchronous {
            log.flush_start().unwrap();
            while log.flush_poll(true).unwrap() < i {}
        } else {
            log.sync().unwrap();
        }
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    drop(log);
    std::fs::remove_dir_all(&d).unwrap();
    h
}

/// What a group-commit run measured.
struct GroupCommit {
    entries_per_s: f64,
    flushes_per_s: f64,
}

/// How concurrent appenders are driven.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Appenders {
    /// One OS thread per appender, each blocking until its entry is
    /// durable: the thread wake-ups (two per entry) are part of the cost.
    Threads,
    /// Closed-loop appenders driven from one client thread, each with one
    /// entry outstanding (how a coordinator's clients arrive: as requests
    /// on an event loop, not as threads). One wake-up per flush.
    Pipelined,
}

/// What reaches the writer thread.
enum Arrival {
    /// One entry; release this appender when it is durable.
    Entry(channel::Sender<()>),
    /// This many entries from the pipelined client.
    Entries(u64),
}

/// `appenders` concurrent appenders, each appending one entry of
/// `entry_bytes` and waiting until it is durable, for `duration`. One
/// writer thread owns the log: it appends whatever has arrived, starts a
/// flush (`flush_start`), releases the appenders the previous flush made
/// durable while the new one is in the disk, then waits for it
/// (`flush_poll`). Entries that arrive while a flush is in flight go out in
/// the next one.
fn group_commit(
    dir: &Path,
    appenders: usize,
    entry_bytes: usize,
    mode: Appenders,
    duration: Duration,
    backend: BackendChoice,
) -> GroupCommit {
    let d = dir.join(format!("group-{appenders}-{entry_bytes}"));
    let (mut log, _) = DiskStorage::open_with(&d, SEGMENT_BYTES, backend).unwrap();
    let (tx, rx) = channel::unbounded::<Arrival>();
    let (durable_tx, durable_rx) = channel::unbounded::<u64>();
    let deadline = Instant::now() + duration;
    let payload = Bytes::from(vec![0x5au8; entry_bytes]);
    let writer = std::thread::spawn(move || {
        // Thread appenders waiting, with the index that releases them.
        let mut waiting: std::collections::VecDeque<(u64, channel::Sender<()>)> =
            Default::default();
        let mut released = 0u64;
        let mut release = |durable: u64, waiting: &mut std::collections::VecDeque<_>| {
            if durable <= released {
                return;
            }
            released = durable;
            while waiting
                .front()
                .is_some_and(|(i, _): &(u64, channel::Sender<()>)| *i <= durable)
            {
                let (_, w) = waiting.pop_front().expect("non-empty");
                let _ = w.send(());
            }
            if mode == Appenders::Pipelined {
                let _ = durable_tx.send(durable);
            }
        };
        loop {
            release(log.durable_index(), &mut waiting);
            let mut arrived: Vec<Arrival> = Vec::new();
            if log.durable_index() == log.last_index() {
                // Idle: sleep until an appender comes (or all are gone).
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(a) => arrived.push(a),
                    Err(channel::RecvTimeoutError::Timeout) => continue,
                    Err(channel::RecvTimeoutError::Disconnected) => break,
                }
            }
            arrived.extend(rx.try_iter());
            let mut batch: Vec<Entry> = Vec::new();
            let mut next = log.last_index() + 1;
            for a in arrived {
                let n = match a {
                    Arrival::Entry(w) => {
                        waiting.push_back((next, w));
                        1
                    }
                    Arrival::Entries(n) => n,
                };
                batch.extend((next..next + n).map(|i| entry_with(i, payload.clone())));
                next += n;
            }
            if !batch.is_empty() {
                log.append(&batch).unwrap();
            }
            // Starts a flush of everything appended, unless one is in the
            // disk already (then these join the next).
            log.flush_start().unwrap();
            // Release what is durable while the next flush runs.
            release(log.durable_index(), &mut waiting);
            if log.durable_index() < log.last_index() {
                log.flush_poll(true).unwrap();
            }
        }
        log.flushes()
    });
    let started = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = match mode {
        Appenders::Threads => (0..appenders)
            .map(|_| {
                let tx = tx.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    let (done_tx, done_rx) = channel::bounded(1);
                    while Instant::now() < deadline {
                        tx.send(Arrival::Entry(done_tx.clone())).unwrap();
                        done_rx.recv().unwrap();
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect(),
        Appenders::Pipelined => {
            let tx = tx.clone();
            let done = done.clone();
            vec![std::thread::spawn(move || {
                tx.send(Arrival::Entries(appenders as u64)).unwrap();
                let mut acked = 0u64;
                while let Ok(durable) = durable_rx.recv() {
                    let released = durable.saturating_sub(acked);
                    acked = acked.max(durable);
                    done.fetch_add(released, std::sync::atomic::Ordering::Relaxed);
                    if Instant::now() >= deadline {
                        break;
                    }
                    if released > 0 {
                        tx.send(Arrival::Entries(released)).unwrap();
                    }
                }
            })]
        }
    };
    drop(tx);
    for t in clients {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let flushes = writer.join().unwrap();
    std::fs::remove_dir_all(&d).unwrap();
    let entries = done.load(std::sync::atomic::Ordering::Relaxed);
    GroupCommit {
        entries_per_s: entries as f64 / elapsed,
        flushes_per_s: flushes as f64 / elapsed,
    }
}

/// Runs every part and returns the report; `progress` narrates.
pub fn run(
    dir: &Path,
    ops: u64,
    seconds: f64,
    backend: BackendChoice,
    progress: &mut dyn FnMut(&str),
) -> StorageReport {
    std::fs::create_dir_all(dir).unwrap();
    let mut r = StorageReport::default();
    progress("floor: 4 KiB pwrite + fdatasync");
    let f = floor(dir, ops);
    r.floor_p50_us = us(&f, 0.5);
    r.floor_p99_us = us(&f, 0.99);
    r.floor_syncs_per_s = 1e6 / (f.mean() / 1000.0);
    progress("append: one appender, 4 KiB entries, append + sync");
    let a = append_single(dir, ops, backend, Durability::Fsync, false);
    r.append_p50_us = us(&a, 0.5);
    r.append_p99_us = us(&a, 0.99);
    r.append_p999_us = us(&a, 0.999);
    r.append_max_us = a.max() as f64 / 1000.0;
    progress("append: one appender, 4 KiB entries, append + flush_start + flush_poll");
    let x = append_single(dir, ops, backend, Durability::Fsync, true);
    r.append_async_p50_us = us(&x, 0.5);
    r.append_async_p99_us = us(&x, 0.99);
    progress("append: one appender, durability memory (page cache, background flush)");
    let m = append_single(dir, ops, backend, Durability::Memory, false);
    r.append_memory_p50_us = us(&m, 0.5);
    r.append_memory_p99_us = us(&m, 0.99);
    progress("floor: 256 KiB pwrite + fdatasync (the disk's durable bandwidth)");
    r.floor_bandwidth_mb_per_s = floor_bandwidth(dir, ops.min(400));
    let dur = Duration::from_secs_f64(seconds);
    let runs = [
        (1, ENTRY_BYTES, Appenders::Pipelined),
        (8, ENTRY_BYTES, Appenders::Pipelined),
        (64, ENTRY_BYTES, Appenders::Pipelined),
        (64, SMALL_ENTRY_BYTES, Appenders::Pipelined),
        (64, ENTRY_BYTES, Appenders::Threads),
    ];
    for (n, bytes, mode) in runs {
        progress(&format!(
            "group commit: {n} appenders ({}), {} B records, for {seconds:.0} s",
            match mode {
                Appenders::Threads => "a thread each",
                Appenders::Pipelined => "closed loop from one client thread",
            },
            bytes + 32
        ));
        let g = group_commit(dir, n, bytes, mode, dur, backend);
        match (n, bytes == ENTRY_BYTES, mode) {
            (1, _, _) => r.group_commit_entries_per_s_1 = g.entries_per_s,
            (8, _, _) => r.group_commit_entries_per_s_8 = g.entries_per_s,
            (_, true, Appenders::Pipelined) => {
                r.group_commit_entries_per_s_64 = g.entries_per_s;
                r.group_commit_syncs_per_s_64 = g.flushes_per_s;
            }
            (_, false, _) => {
                r.group_commit_small_entries_per_s_64 = g.entries_per_s;
                r.group_commit_small_syncs_per_s_64 = g.flushes_per_s;
            }
            (_, true, Appenders::Threads) => {
                r.group_commit_threads_entries_per_s_64 = g.entries_per_s;
                r.group_commit_threads_syncs_per_s_64 = g.flushes_per_s;
            }
        }
    }
    r.ratio_append_p50_to_floor_p50 = r.append_p50_us / r.floor_p50_us;
    r.ratio_entries_64_to_floor_syncs = r.group_commit_entries_per_s_64 / r.floor_syncs_per_s;
    r.ratio_small_entries_64_to_floor_syncs =
        r.group_commit_small_entries_per_s_64 / r.floor_syncs_per_s;
    r
}

/// The human table.
pub fn table(r: &StorageReport) -> String {
    let mut t = format!(
        "{:<44} {:>9} {:>9} {:>9}\n",
        "", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let mut row = |name: &str, p50: f64, p99: f64, p999: Option<f64>| {
        let p999 = p999.map_or(String::new(), |v| format!("{v:.0}"));
        t += &format!("{name:<44} {p50:>9.1} {p99:>9.1} {p999:>9}\n");
    };
    row(
        "floor: 4 KiB write + fdatasync",
        r.floor_p50_us,
        r.floor_p99_us,
        None,
    );
    row(
        "DiskStorage append + sync (4 KiB)",
        r.append_p50_us,
        r.append_p99_us,
        Some(r.append_p999_us),
    );
    row(
        "DiskStorage append + flush_start/poll",
        r.append_async_p50_us,
        r.append_async_p99_us,
        None,
    );
    row(
        "DiskStorage append, durability memory",
        r.append_memory_p50_us,
        r.append_memory_p99_us,
        None,
    );
    let lines = [
        (
            "floor: 4 KiB write + fdatasync",
            r.floor_syncs_per_s,
            "syncs/s".to_string(),
        ),
        (
            "floor: 256 KiB write + fdatasync",
            r.floor_bandwidth_mb_per_s,
            "MB/s".to_string(),
        ),
        (
            "group commit, 1 appender, 4 KiB",
            r.group_commit_entries_per_s_1,
            "entries/s".into(),
        ),
        (
            "group commit, 8 appenders, 4 KiB",
            r.group_commit_entries_per_s_8,
            "entries/s".into(),
        ),
        (
            "group commit, 64 appenders, 4 KiB",
            r.group_commit_entries_per_s_64,
            format!("entries/s ({:.0} flushes/s)", r.group_commit_syncs_per_s_64),
        ),
        (
            "group commit, 64 appenders, 256 B",
            r.group_commit_small_entries_per_s_64,
            format!(
                "entries/s ({:.0} flushes/s)",
                r.group_commit_small_syncs_per_s_64
            ),
        ),
        (
            "group commit, 64 appender threads, 4 KiB",
            r.group_commit_threads_entries_per_s_64,
            format!(
                "entries/s ({:.0} flushes/s)",
                r.group_commit_threads_syncs_per_s_64
            ),
        ),
    ];
    for (name, v, unit) in lines {
        t += &format!("{name:<44} {v:>9.0} {unit}\n");
    }
    t += &format!(
        "append p50 / floor p50 = {:.2}\n\
         entries/s at 64 / floor syncs/s = {:.1} (4 KiB), {:.1} (256 B), {:.1} (threads)\n",
        r.ratio_append_p50_to_floor_p50,
        r.ratio_entries_64_to_floor_syncs,
        r.ratio_small_entries_64_to_floor_syncs,
        r.group_commit_threads_entries_per_s_64 / r.floor_syncs_per_s,
    );
    t
}
