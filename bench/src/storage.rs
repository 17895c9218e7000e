//! `ramcoord-bench storage`: the durable log against the disk's floor, in
//! one run, on one file system.
//!
//! - **floor**: a loop of 4 KiB `pwrite` + `fdatasync` on a preallocated
//!   file: what no log on this disk can beat;
//! - **append**: one appender, one 4 KiB entry per `DiskStorage::append` +
//!   `sync`: the log's own cost on top of the floor;
//! - **group commit**: N appenders hand entries to one writer thread over a
//!   crossbeam channel; the writer takes everything queued, appends it as one
//!   batch, syncs once, and releases every appender in the batch (what the
//!   coordinator's log thread does with Raft readies).

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
    pub append_memory_p50_us: f64,
    pub append_memory_p99_us: f64,
    pub group_commit_entries_per_s_1: f64,
    pub group_commit_entries_per_s_8: f64,
    pub group_commit_entries_per_s_64: f64,
    pub group_commit_syncs_per_s_64: f64,
    pub ratio_append_p50_to_floor_p50: f64,
    pub ratio_entries_64_to_floor_syncs: f64,
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn floor(dir: &Path, ops: u64) -> Histogram<u64> {
    let path = dir.join("floor.dat");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(ops * FLOOR_BYTES as u64).unwrap();
    // Write it once so the loop below rewrites allocated blocks.
    let block = vec![0x5au8; FLOOR_BYTES];
    for i in 0..ops {
        f.write_all_at(&block, i * FLOOR_BYTES as u64).unwrap();
    }
    f.sync_all().unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut block = block;
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

fn entry(index: u64) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![index as u8; ENTRY_BYTES]),
    }
}

fn append_single(
    dir: &Path,
    ops: u64,
    backend: BackendChoice,
    durability: Durability,
) -> Histogram<u64> {
    let d = dir.join("append");
    let (mut log, _) = DiskStorage::open_with(&d, SEGMENT_BYTES, backend).unwrap();
    log.set_durability(durability).unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    for i in 1..=ops {
        let e = entry(i);
        let t = Instant::now();
        log.append(std::slice::from_ref(&e)).unwrap();
        log.sync().unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    drop(log);
    std::fs::remove_dir_all(&d).unwrap();
    h
}

/// Returns (entries/s, syncs/s) with `appenders` threads for `duration`.
fn group_commit(
    dir: &Path,
    appenders: usize,
    duration: Duration,
    backend: BackendChoice,
) -> (f64, f64) {
    let d = dir.join(format!("group-{appenders}"));
    let (mut log, _) = DiskStorage::open_with(&d, SEGMENT_BYTES, backend).unwrap();
    let (tx, rx) = channel::unbounded::<channel::Sender<()>>();
    let deadline = Instant::now() + duration;
    let writer = std::thread::spawn(move || {
        let (mut entries, mut syncs) = (0u64, 0u64);
        let mut next = 1u64;
        while let Ok(first) = rx.recv_timeout(Duration::from_millis(200)) {
            let mut waiting = vec![first];
            waiting.extend(rx.try_iter());
            let batch: Vec<Entry> = (next..next + waiting.len() as u64).map(entry).collect();
            next += batch.len() as u64;
            log.append(&batch).unwrap();
            log.sync().unwrap();
            entries += batch.len() as u64;
            syncs += 1;
            for w in waiting {
                let _ = w.send(());
            }
        }
        (entries, syncs)
    });
    let started = Instant::now();
    let threads: Vec<_> = (0..appenders)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let (done_tx, done_rx) = channel::bounded(1);
                while Instant::now() < deadline {
                    tx.send(done_tx.clone()).unwrap();
                    done_rx.recv().unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (entries, syncs) = writer.join().unwrap();
    std::fs::remove_dir_all(&d).unwrap();
    (entries as f64 / elapsed, syncs as f64 / elapsed)
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
    let a = append_single(dir, ops, backend, Durability::Fsync);
    r.append_p50_us = us(&a, 0.5);
    r.append_p99_us = us(&a, 0.99);
    r.append_p999_us = us(&a, 0.999);
    r.append_max_us = a.max() as f64 / 1000.0;
    progress("append: one appender, durability memory (page cache, background flush)");
    let m = append_single(dir, ops, backend, Durability::Memory);
    r.append_memory_p50_us = us(&m, 0.5);
    r.append_memory_p99_us = us(&m, 0.99);
    let dur = Duration::from_secs_f64(seconds);
    for n in [1usize, 8, 64] {
        progress(&format!("group commit: {n} appenders for {seconds:.0} s"));
        let (eps, sps) = group_commit(dir, n, dur, backend);
        match n {
            1 => r.group_commit_entries_per_s_1 = eps,
            8 => r.group_commit_entries_per_s_8 = eps,
            _ => {
                r.group_commit_entries_per_s_64 = eps;
                r.group_commit_syncs_per_s_64 = sps;
            }
        }
    }
    r.ratio_append_p50_to_floor_p50 = r.append_p50_us / r.floor_p50_us;
    r.ratio_entries_64_to_floor_syncs = r.group_commit_entries_per_s_64 / r.floor_syncs_per_s;
    r
}

/// The human table.
pub fn table(r: &StorageReport) -> String {
    format!(
        "{:<40} {:>10} {:>10} {:>10}\n\
         {:<40} {:>10.0} {:>10.0} {:>10}\n\
         {:<40} {:>10.0} {:>10.0} {:>10.0}\n\
         {:<40} {:>10.1} {:>10.1} {:>10}\n\
         {:<40} {:>10.0} entries/s  (1 appender)\n\
         {:<40} {:>10.0} entries/s  (8 appenders)\n\
         {:<40} {:>10.0} entries/s  ({:.0} syncs/s, 64 appenders)\n\
         append p50 / floor p50 = {:.2}   entries/s at 64 / floor syncs/s = {:.1}\n",
        "",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "floor: 4 KiB write + fdatasync",
        r.floor_p50_us,
        r.floor_p99_us,
        "",
        "DiskStorage append + sync (4 KiB)",
        r.append_p50_us,
        r.append_p99_us,
        r.append_p999_us,
        "DiskStorage append, durability memory",
        r.append_memory_p50_us,
        r.append_memory_p99_us,
        "",
        "group commit",
        r.group_commit_entries_per_s_1,
        "group commit",
        r.group_commit_entries_per_s_8,
        "group commit",
        r.group_commit_entries_per_s_64,
        r.group_commit_syncs_per_s_64,
        r.ratio_append_p50_to_floor_p50,
        r.ratio_entries_64_to_floor_syncs,
    )
}
