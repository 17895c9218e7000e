//! The history of a chaos run: every client operation as JSON lines, one
//! event per line, in the shape an external (Jepsen-style) checker reads.
//!
//! # Format
//!
//! ```text
//! {"process": 3, "type": "invoke", "f": "create", "key": "t7", "value": null, "time": 1234567}
//! {"process": 3, "type": "ok",     "f": "create", "key": "t7", "value": null, "time": 1299001}
//! ```
//!
//! - `process`: the client (one operation at a time per process);
//! - `type`: `invoke` when the operation is sent, then exactly one
//!   completion: `ok` (applied), `fail` (certainly not applied: the name
//!   existed, or did not) or `info` (unknown: timed out, the connection
//!   broke; it may take effect at any later moment, or never). A process
//!   whose operation ended in `info` is retired: its next operation comes
//!   from a new process number, as in Jepsen;
//! - `f`: `create`, `drop`, `read` (ok carries `"value": true|false`, the
//!   table exists), `put` (value: the string written) or `get` (ok carries
//!   the string read, or `null`);
//! - `key`: the table name (or, for put/get, the key);
//! - `time`: nanoseconds from the run's start.
//!
//! Reading a history back ([`read`]) checks each line and the pairing of
//! invocations and completions, and says which line is wrong.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// What kind of event.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation was sent.
    Invoke,
    /// It was applied.
    Ok,
    /// It was certainly not applied.
    Fail,
    /// Its outcome is unknown.
    Info,
}

/// Which operation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// Create a table.
    Create,
    /// Drop a table.
    Drop,
    /// Whether a table exists (a linearizable read).
    Read,
    /// Write a key at its master.
    Put,
    /// Read a key at its master.
    Get,
}

/// A value: `null`, a boolean (read) or a string (put, get).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Value {
    /// A read's answer.
    Bool(bool),
    /// A put's value or a get's answer.
    Str(String),
}

/// One line of a history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The client.
    pub process: u64,
    /// Invocation or completion.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation.
    pub f: Function,
    /// The table or key.
    pub key: String,
    /// See [`Value`]; `null` when there is none.
    pub value: Option<Value>,
    /// Nanoseconds from the run's start.
    pub time: u64,
}

/// Writes events as JSON lines.
pub struct HistoryWriter<W: Write> {
    out: W,
}

impl<W: Write> HistoryWriter<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> HistoryWriter<W> {
        HistoryWriter { out }
    }

    /// Writes one event as a line.
    pub fn write(&mut self, e: &Event) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, e)?;
        self.out.write_all(b"\n")
    }

    /// Flushes what was written.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Why a history does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A line is not an event.
    #[error("line {line}: {why}")]
    Malformed {
        /// 1-based.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// Invocations and completions do not pair up.
    #[error("line {line}: {why}")]
    Unpaired {
        /// 1-based.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// The file could not be read.
    #[error("{0}")]
    Io(String),
}

/// One operation of a history: its invocation and, if any, its completion
/// (events with their 1-based line numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The invocation and its line.
    pub invoke: (Event, usize),
    /// The completion and its line; `None` if the history ends first (as
    /// unknown as `info`).
    pub complete: Option<(Event, usize)>,
}

/// Reads a history and pairs each invocation with its completion.
pub fn read(input: impl BufRead) -> Result<Vec<Op>, HistoryError> {
    use std::collections::HashMap;
    let mut ops: Vec<Op> = Vec::new();
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut last_time = 0u64;
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| HistoryError::Io(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let e: Event = serde_json::from_str(&line).map_err(|e| HistoryError::Malformed {
            line: n,
            why: e.to_string(),
        })?;
        if e.time < last_time {
            return Err(HistoryError::Malformed {
                line: n,
                why: format!("time {} goes back (after {last_time})", e.time),
            });
        }
        last_time = e.time;
        let unpaired = |why: String| HistoryError::Unpaired { line: n, why };
        match e.kind {
            EventType::Invoke => {
                if open.contains_key(&e.process) {
                    return Err(unpaired(format!(
                        "process {} invokes again before its operation completed",
                        e.process
                    )));
                }
                open.insert(e.process, ops.len());
                ops.push(Op {
                    invoke: (e, n),
                    complete: None,
                });
            }
            _ => {
                let Some(at) = open.remove(&e.process) else {
                    return Err(unpaired(format!(
                        "process {} completes an operation it did not invoke",
                        e.process
                    )));
                };
                let inv = &ops[at].invoke.0;
                if inv.f != e.f || inv.key != e.key {
                    return Err(unpaired(format!(
                        "process {} completes {} {} but invoked {} {}",
                        e.process,
                        format!("{:?}", e.f).to_lowercase(),
                        e.key,
                        format!("{:?}", inv.f).to_lowercase(),
                        inv.key
                    )));
                }
                ops[at].complete = Some((e, n));
            }
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        process: u64,
        kind: EventType,
        f: Function,
        key: &str,
        value: Option<Value>,
        time: u64,
    ) -> Event {
        Event {
            process,
            kind,
            f,
            key: key.into(),
            value,
            time,
        }
    }

    #[test]
    fn events_are_written_in_the_documented_shape() {
        let mut out = Vec::new();
        let mut w = HistoryWriter::new(&mut out);
        w.write(&ev(
            3,
            EventType::Invoke,
            Function::Create,
            "t7",
            None,
            1234567,
        ))
        .unwrap();
        w.write(&ev(
            3,
            EventType::Ok,
            Function::Read,
            "t7",
            Some(Value::Bool(true)),
            1234600,
        ))
        .unwrap();
        w.write(&ev(
            4,
            EventType::Ok,
            Function::Get,
            "k",
            Some(Value::Str("v1".into())),
            1234700,
        ))
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"process":3,"type":"invoke","f":"create","key":"t7","value":null,"time":1234567}"#
        );
        assert_eq!(
            lines[1],
            r#"{"process":3,"type":"ok","f":"read","key":"t7","value":true,"time":1234600}"#
        );
        assert_eq!(
            lines[2],
            r#"{"process":4,"type":"ok","f":"get","key":"k","value":"v1","time":1234700}"#
        );
    }

    #[test]
    fn a_history_reads_back_paired_and_its_errors_name_the_line() {
        let text = concat!(
            r#"{"process": 1, "type": "invoke", "f": "create", "key": "t1", "value": null, "time": 10}"#,
            "\n",
            r#"{"process": 2, "type": "invoke", "f": "read", "key": "t1", "value": null, "time": 11}"#,
            "\n",
            r#"{"process": 1, "type": "info", "f": "create", "key": "t1", "value": null, "time": 20}"#,
            "\n",
        );
        let ops = read(text.as_bytes()).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].complete.as_ref().map(|c| c.1), Some(3));
        assert!(ops[1].complete.is_none(), "the read never completed");

        let bad = [
            ("{\"process\": 1}\n", 1, "Malformed"),
            (
                concat!(
                    r#"{"process": 1, "type": "ok", "f": "create", "key": "t1", "value": null, "time": 10}"#,
                    "\n"
                ),
                1,
                "Unpaired",
            ),
            (
                concat!(
                    r#"{"process": 1, "type": "invoke", "f": "create", "key": "t1", "value": null, "time": 10}"#,
                    "\n",
                    r#"{"process": 1, "type": "invoke", "f": "drop", "key": "t1", "value": null, "time": 12}"#,
                    "\n"
                ),
                2,
                "Unpaired",
            ),
            (
                concat!(
                    r#"{"process": 1, "type": "invoke", "f": "create", "key": "t1", "value": null, "time": 10}"#,
                    "\n",
                    r#"{"process": 1, "type": "ok", "f": "drop", "key": "t1", "value": null, "time": 12}"#,
                    "\n"
                ),
                2,
                "Unpaired",
            ),
            (
                concat!(
                    r#"{"process": 1, "type": "invoke", "f": "create", "key": "t1", "value": null, "time": 10}"#,
                    "\n",
                    r#"{"process": 1, "type": "ok", "f": "create", "key": "t1", "value": null, "time": 9}"#,
                    "\n"
                ),
                2,
                "Malformed",
            ),
        ];
        for (text, line, kind) in bad {
            let e = read(text.as_bytes()).unwrap_err();
            let got = match &e {
                HistoryError::Malformed { line, .. } => (*line, "Malformed"),
                HistoryError::Unpaired { line, .. } => (*line, "Unpaired"),
                HistoryError::Io(_) => (0, "Io"),
            };
            assert_eq!(got, (line, kind), "{e}");
        }
    }
}
