//! The storage crash test with real processes (`ramcoord storage-crash`).
//!
//! A child process appends to a `DiskStorage` continuously (batches of
//! random sizes, sometimes overwriting and truncating its own unreported
//! tail, sometimes saving the hard state) and prints `durable N` whenever
//! the log's durable index grows: after a blocking `sync`, or as the
//! asynchronous flushes (`flush_start` / `flush_poll`, group commit on
//! io_uring) finish. The parent reads those lines, `kill -9`s the child at a random
//! moment (often in the middle of a write), reopens the log and checks that
//! every entry up to the highest index reported durable is present and
//! intact. The same directory is used across iterations, so every iteration
//! also recovers from the previous crash.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use ramcoord_log::disk::DiskStorage;
use ramcoord_log::{Entry, EntryKind, HardState, Index, Storage, Term};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Small segments so the test crosses segment boundaries often.
const SEGMENT_BYTES: u64 = 64 << 10;

/// The payload of entry `index` written in `term`: its identity first, so
/// a check can tell a wrong entry from a right one.
fn payload(index: Index, term: Term, len: usize) -> Bytes {
    let mut b = Vec::with_capacity(16 + len);
    b.extend_from_slice(&index.to_le_bytes());
    b.extend_from_slice(&term.to_le_bytes());
    b.extend((0..len).map(|i| (index as usize).wrapping_mul(131).wrapping_add(i) as u8));
    Bytes::from(b)
}

/// Why the crash test failed (what it found, and where).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CrashTestError(pub String);

fn check_payload(e: &Entry) -> Result<(), String> {
    let d = &e.data;
    if d.len() < 16 {
        return Err(format!("entry {} has a {}-byte payload", e.index, d.len()));
    }
    let index = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
    let term = u64::from_le_bytes(d[8..16].try_into().expect("8 bytes"));
    if index != e.index || term != e.term || payload(index, term, d.len() - 16) != *d {
        return Err(format!(
            "entry {}@{} holds the payload of {index}@{term} or garbage",
            e.index, e.term
        ));
    }
    Ok(())
}

fn entries(first: Index, n: u64, term: Term, rng: &mut ChaCha8Rng) -> Vec<Entry> {
    (first..first + n)
        .map(|index| {
            let len = rng.random_range(0..400);
            Entry {
                term,
                index,
                kind: EntryKind::Normal,
                data: payload(index, term, len),
            }
        })
        .collect()
}

/// The child: appends until killed. Never returns normally.
pub fn child(dir: &Path, term: Term) -> Result<(), CrashTestError> {
    run_child(dir, term).map_err(CrashTestError)
}

fn run_child(dir: &Path, term: Term) -> Result<(), String> {
    let (mut log, _) = DiskStorage::open(dir, SEGMENT_BYTES).map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(term.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let stdout = std::io::stdout();
    let mut reported: Index = 0;
    loop {
        let last = log.last_index();
        if rng.random_bool(0.2) {
            // An unreported tail, overwritten and cut back: what a Raft
            // conflict does to entries that were never acknowledged.
            let n = rng.random_range(1..8);
            log.append(&entries(last + 1, n, term, &mut rng))
                .map_err(|e| e.to_string())?;
            log.truncate_suffix(last + 1 + rng.random_range(0..n))
                .map_err(|e| e.to_string())?;
        }
        let first = log.last_index() + 1;
        let n = rng.random_range(1..8);
        log.append(&entries(first, n, term, &mut rng))
            .map_err(|e| e.to_string())?;
        if rng.random_bool(0.5) {
            log.sync().map_err(|e| e.to_string())?;
        } else {
            log.flush_start().map_err(|e| e.to_string())?;
            log.flush_poll(rng.random_bool(0.3))
                .map_err(|e| e.to_string())?;
        }
        if rng.random_bool(0.1) {
            let hs = HardState {
                term,
                vote: Some(term % 3 + 1),
                commit: log.durable_index(),
            };
            log.set_hard_state(hs).map_err(|e| e.to_string())?;
        }
        let durable = log.durable_index();
        if durable < reported {
            return Err(format!(
                "the durable index went back from {reported} to {durable}"
            ));
        }
        if durable > reported {
            reported = durable;
            let mut out = stdout.lock();
            writeln!(out, "durable {durable}").map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
        }
    }
}

/// What a run of the parent found.
#[derive(Debug, Default)]
pub struct CrashReport {
    /// Iterations run.
    pub iterations: u64,
    /// Entries verified after the last reopen.
    pub entries_checked: u64,
    /// Reopens that found and truncated a torn tail.
    pub torn_tails: u64,
    /// Highest index reported durable.
    pub durable_max: Index,
}

/// The parent: `iterations` rounds of spawn, kill -9, reopen, check.
pub fn parent(
    exe: &Path,
    dir: &Path,
    iterations: u64,
    seed: u64,
) -> Result<CrashReport, CrashTestError> {
    run_parent(exe, dir, iterations, seed).map_err(CrashTestError)
}

fn run_parent(exe: &Path, dir: &Path, iterations: u64, seed: u64) -> Result<CrashReport, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = CrashReport::default();
    for i in 1..=iterations {
        let mut child = Command::new(exe)
            .args(["storage-crash", "--child", "--term"])
            .arg(i.to_string())
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", exe.display()))?;
        let reports_wanted = rng.random_range(0..30);
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        for _ in 0..reports_wanted {
            match lines.next() {
                Some(Ok(line)) => {
                    let n: Index = line
                        .strip_prefix("durable ")
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| format!("child said {line:?}"))?;
                    report.durable_max = report.durable_max.max(n);
                }
                Some(Err(e)) => return Err(format!("reading the child: {e}")),
                None => {
                    let status = child.wait().map_err(|e| e.to_string())?;
                    return Err(format!("child exited early: {status}"));
                }
            }
        }
        child.kill().map_err(|e| format!("kill -9: {e}"))?;
        child.wait().map_err(|e| e.to_string())?;

        let (log, recovery) = DiskStorage::open(dir, SEGMENT_BYTES)
            .map_err(|e| format!("iteration {i}: reopening after kill -9: {e}"))?;
        if recovery.torn_tail.is_some() {
            report.torn_tails += 1;
        }
        if log.last_index() < report.durable_max {
            return Err(format!(
                "iteration {i}: index {} was reported durable, the log ends at {}",
                report.durable_max,
                log.last_index()
            ));
        }
        let all = log
            .entries(log.first_index(), report.durable_max + 1, u64::MAX)
            .map_err(|e| format!("iteration {i}: {e}"))?;
        for e in &all {
            check_payload(e).map_err(|m| format!("iteration {i}: {m}"))?;
        }
        report.entries_checked = all.len() as u64;
        report.iterations = i;
    }
    Ok(report)
}

/// A fresh directory for a run under the system temp dir.
pub fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ramcoord-storage-crash-{}", std::process::id()))
}
