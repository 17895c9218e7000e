//! A master's serve log: what it was allowed to serve, and what it served,
//! when — the evidence `ramcoord chaos` checks "no key served by two
//! masters at once" against.
//!
//! # Format
//!
//! JSON lines, appended by the master process given `--serve-log FILE`,
//! one event per line, each written with a single `write` so a process
//! killed with SIGKILL leaves whole lines behind (the page cache keeps
//! them; nothing is fsynced: the log is evidence for a test on the same
//! host, not durable state):
//!
//! ```text
//! {"t":812345678901,"server":"2.1","event":"tablets","version":17,"tablets":[[3,0,18446744073709551615]]}
//! {"t":812345679001,"server":"2.1","event":"lease","until":812346100000}
//! {"t":812345680002,"server":"2.1","event":"served","f":"put","table":3,"hash":1234}
//! ```
//!
//! - `t`: `CLOCK_BOOTTIME` in nanoseconds — one clock for every process
//!   on the host, so the logs of several masters (and the chaos runner's
//!   own times) compare directly.
//! - `server`: the server id the coordinator gave this process.
//! - `tablets`: the configuration it acts on changed; from `t` it owns
//!   exactly these `[table, start_hash, end_hash]` (inclusive) ranges.
//! - `lease`: a heartbeat was acknowledged; it may serve until `until`.
//! - `served`: it answered a `get` or `put` of a key of `table` with hash
//!   `hash` (the time is the one its ownership and lease were checked at).
//!
//! A master may serve a key at `t` only if its last `tablets` event before
//! `t` covers the key and its lease runs past `t`; the chaos checker
//! rebuilds those windows per master and reports any `served` event that
//! falls inside another master's window for the same key.

use std::io::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::cluster::{ServerId, TableId};

/// `CLOCK_BOOTTIME` now, in nanoseconds (shared by every process on the
/// host). The lease clock: unlike `CLOCK_MONOTONIC` it counts time the
/// host spent suspended, so a master that slept does not wake up thinking
/// its lease still runs.
pub fn boottime_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// One line of a serve log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeEvent {
    /// `CLOCK_BOOTTIME`, nanoseconds.
    pub t: u64,
    /// The server, as the CLI names it (`index.generation`).
    pub server: String,
    /// What happened.
    #[serde(flatten)]
    pub what: ServeWhat,
}

/// What a serve-log line records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ServeWhat {
    /// From now on it owns exactly these tablets.
    Tablets {
        /// The configuration's version.
        version: u64,
        /// `(table, start_hash, end_hash)`, inclusive.
        tablets: Vec<(TableId, u64, u64)>,
    },
    /// It may serve until `until` (`CLOCK_BOOTTIME`, nanoseconds).
    Lease {
        /// The lease's end.
        until: u64,
    },
    /// It answered a request for a key of `table` with hash `hash`.
    Served {
        /// `get` or `put`.
        f: String,
        /// The table.
        table: TableId,
        /// The key's hash.
        hash: u64,
    },
}

/// An open serve log (see the module docs). A write that fails stops the
/// process: a log with holes would let the checker pass what it never
/// saw.
#[derive(Debug)]
pub struct ServeLog {
    file: Mutex<std::fs::File>,
}

impl ServeLog {
    /// Opens `path` for appending (creating it): a restarted master in
    /// the same slot appends under its new server id.
    pub fn create(path: &std::path::Path) -> std::io::Result<ServeLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(ServeLog {
            file: Mutex::new(file),
        })
    }

    /// Appends one event.
    pub fn record(&self, t: u64, server: ServerId, what: ServeWhat) {
        let e = ServeEvent {
            t,
            server: server.to_string(),
            what,
        };
        let mut line = serde_json::to_string(&e).expect("serve events always serialise");
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = f.write_all(line.as_bytes()) {
            tracing::error!(error = %err, "cannot write the serve log: stopping (its record would have holes)");
            eprintln!("ramcoord master: cannot write the serve log: {err}");
            std::process::exit(1);
        }
    }
}

/// Reads a serve log; a line that does not parse is an error naming it
/// (a torn last line of a killed process is skipped).
pub fn read(text: &str) -> Result<Vec<ServeEvent>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ServeEvent>(line) {
            Ok(e) => out.push(e),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_documented_shape() {
        let dir = std::env::temp_dir().join(format!("serve-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let log = ServeLog::create(&dir).unwrap();
        let id = ServerId {
            index: 2,
            generation: 1,
        };
        log.record(
            5,
            id,
            ServeWhat::Tablets {
                version: 17,
                tablets: vec![(3, 0, u64::MAX)],
            },
        );
        log.record(6, id, ServeWhat::Lease { until: 9 });
        log.record(
            7,
            id,
            ServeWhat::Served {
                f: "put".into(),
                table: 3,
                hash: 1234,
            },
        );
        let text = std::fs::read_to_string(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"t":5,"server":"2.1","event":"tablets","version":17,"tablets":[[3,0,18446744073709551615]]}"#
        );
        let events = read(&text).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].what, ServeWhat::Lease { until: 9 });
        // A torn last line (a killed process) is skipped; a bad line
        // elsewhere is an error.
        assert_eq!(read(&format!("{text}{{\"t\":8,\"ser")).unwrap().len(), 3);
        assert!(read(&format!("garbage\n{text}"))
            .unwrap_err()
            .contains("line 1"));
    }
}
