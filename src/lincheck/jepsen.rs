//! Reader for Jepsen register histories (the `jepsen.util` log lines).
//!
//! One event per line after the `jepsen.util - ` marker, fields separated by
//! any whitespace (Jepsen writes tabs; other tools write spaces):
//! `<process> <type> <f> <value>` with type `:invoke | :ok | :fail | :info`,
//! f `:read | :write | :cas`, value `nil`, an integer, `[from to]` or
//! `:timed-out`. Lines without the marker are other log output and are
//! skipped; a line *with* the marker that does not parse is an error naming
//! the line, never silently dropped, because a dropped event can flip a verdict.
//!
//! How outcomes map onto the checker's history (see [`super`]):
//! `:ok` is a completed operation; `:fail` certainly had no effect and is left
//! out; `:info` on a write or cas is an unknown outcome (pending until the end
//! of time); a read that failed or timed out constrains nothing and is left
//! out; an invocation never answered is an unknown outcome.

use std::collections::HashMap;

use thiserror::Error;

use super::register::{RegisterInput, RegisterOutput};
use super::{History, Operation};

/// The marker that makes a line an event.
const EVENT_MARKER: &str = "jepsen.util - ";

/// A history line that looks like an event and cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: u64,
    /// The line as read.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum F {
    Read,
    Write,
    Cas,
}

impl F {
    /// As the log writes it (without its colon).
    fn name(self) -> &'static str {
        match self {
            F::Read => "read",
            F::Write => "write",
            F::Cas => "cas",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Val {
    Nil,
    Int(i64),
    Pair(i64, i64),
    TimedOut,
}

struct Open {
    f: F,
    input: Option<RegisterInput>,
    line: u64,
}

/// A parsed history and the text of every line, for messages.
#[derive(Debug)]
pub struct JepsenHistory {
    /// The operations, with `call`/`ret`/`origin` as 1-based line numbers.
    pub history: History<RegisterInput, RegisterOutput>,
    /// The file's lines, index = line number - 1.
    pub lines: Vec<String>,
}

fn parse_kind(s: &str) -> Option<Kind> {
    Some(match s {
        ":invoke" => Kind::Invoke,
        ":ok" => Kind::Ok,
        ":fail" => Kind::Fail,
        ":info" => Kind::Info,
        _ => return None,
    })
}

fn parse_f(s: &str) -> Option<F> {
    Some(match s {
        ":read" => F::Read,
        ":write" => F::Write,
        ":cas" => F::Cas,
        _ => return None,
    })
}

fn parse_val(s: &str) -> Option<Val> {
    let s = s.trim();
    if s == "nil" {
        return Some(Val::Nil);
    }
    if s == ":timed-out" {
        return Some(Val::TimedOut);
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let mut it = inner.split_whitespace();
        let a = it.next()?.parse().ok()?;
        let b = it.next()?.parse().ok()?;
        return it.next().is_none().then_some(Val::Pair(a, b));
    }
    s.parse().ok().map(Val::Int)
}

/// Splits an event into process, type, f and value, separated by any run of
/// whitespace (tabs in Jepsen's own logs, spaces in others'). The value is
/// the rest of the line, because a cas value (`[1 2]`) holds a space.
fn split_fields(event: &str) -> Vec<&str> {
    let mut fields = Vec::with_capacity(4);
    let mut rest = event.trim();
    while fields.len() < 3 && !rest.is_empty() {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        fields.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    if !rest.is_empty() {
        fields.push(rest);
    }
    fields
}

/// Parses a Jepsen register history.
pub fn parse(text: &str) -> Result<JepsenHistory, ParseError> {
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut history = Vec::new();
    let mut open: HashMap<u64, Open> = HashMap::new();
    for (i, raw) in lines.iter().enumerate() {
        let line = i as u64 + 1;
        let Some(at) = raw.find(EVENT_MARKER) else {
            continue;
        };
        let err = |reason: String| ParseError {
            line,
            text: raw.clone(),
            reason,
        };
        let fields = split_fields(&raw[at + EVENT_MARKER.len()..]);
        if fields.len() != 4 {
            return Err(err(format!(
                "expected 4 whitespace-separated fields (process, type, f, value), found {}",
                fields.len()
            )));
        }
        let process: u64 = fields[0]
            .trim()
            .parse()
            .map_err(|_| err(format!("process {:?} is not a number", fields[0])))?;
        let kind = parse_kind(fields[1].trim())
            .ok_or_else(|| err(format!("unknown event type {:?}", fields[1])))?;
        let f = parse_f(fields[2].trim())
            .ok_or_else(|| err(format!("unknown operation {:?}", fields[2])))?;
        let val =
            parse_val(fields[3]).ok_or_else(|| err(format!("unreadable value {:?}", fields[3])))?;

        if kind == Kind::Invoke {
            if let Some(prev) = open.get(&process) {
                return Err(err(format!(
                    "process {process} invokes while its operation from line {} is in flight",
                    prev.line
                )));
            }
            let input = match (f, val) {
                (F::Read, _) => Some(RegisterInput::Read),
                (F::Write, Val::Int(v)) => Some(RegisterInput::Write(v)),
                (F::Cas, Val::Pair(a, b)) => Some(RegisterInput::Cas(a, b)),
                _ => return Err(err(format!("invalid value for an invoked :{}", f.name()))),
            };
            open.insert(process, Open { f, input, line });
            continue;
        }
        let Some(inv) = open.remove(&process) else {
            return Err(err(format!(
                "a return for process {process}, which has no operation in flight"
            )));
        };
        if inv.f != f {
            return Err(err(format!(
                "returns :{} but process {process} invoked :{} at line {}",
                f.name(),
                inv.f.name(),
                inv.line
            )));
        }
        let input = inv.input.expect("invocations always carry an input");
        let (ret, output) = match (kind, f, val) {
            (Kind::Ok, F::Read, Val::Nil) => (Some(line), Some(RegisterOutput::Read(None))),
            (Kind::Ok, F::Read, Val::Int(v)) => (Some(line), Some(RegisterOutput::Read(Some(v)))),
            (Kind::Ok, F::Write | F::Cas, _) => (Some(line), Some(RegisterOutput::Done)),
            (Kind::Ok, F::Read, _) => return Err(err("a read returned no value".into())),
            // Certainly no effect, or a read that saw nothing: constrains nothing.
            (Kind::Fail, _, _) | (Kind::Info, F::Read, _) => continue,
            (Kind::Info, F::Write | F::Cas, _) => (None, None),
            (Kind::Invoke, _, _) => unreachable!("handled above"),
        };
        history.push(Operation {
            call: inv.line,
            ret,
            input,
            output,
            process,
            origin: inv.line,
        });
    }
    // Invoked and never answered: the outcome is unknown.
    let mut pending: Vec<(u64, Open)> = open.into_iter().collect();
    pending.sort_by_key(|(_, o)| o.line);
    for (process, inv) in pending {
        if inv.f == F::Read {
            continue;
        }
        history.push(Operation {
            call: inv.line,
            ret: None,
            input: inv.input.expect("invocations always carry an input"),
            output: None,
            process,
            origin: inv.line,
        });
    }
    Ok(JepsenHistory { history, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "INFO  jepsen.util - ";

    #[test]
    fn reads_the_four_outcomes() {
        let text = format!(
            "noise\n{P}0\t:invoke\t:write\t1\n{P}0\t:ok\t:write\t1\n{P}1\t:invoke\t:cas\t[1 2]\n{P}1\t:fail\t:cas\t[1 2]\n{P}2\t:invoke\t:write\t3\n{P}2\t:info\t:write\t:timed-out\n{P}3\t:invoke\t:read\tnil\n{P}3\t:ok\t:read\t1\n"
        );
        let h = parse(&text).unwrap().history;
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].input, RegisterInput::Write(1));
        assert_eq!(h[0].ret, Some(3));
        assert_eq!(h[1].ret, None);
        assert_eq!(h[2].output, Some(RegisterOutput::Read(Some(1))));
    }

    #[test]
    fn fields_may_be_separated_by_any_whitespace() {
        let tabs = format!(
            "{P}0\t:invoke\t:write\t1\n{P}0\t:ok\t:write\t1\n{P}1\t:invoke\t:cas\t[1 2]\n{P}1\t:ok\t:cas\t[1 2]\n"
        );
        let spaces = format!(
            "{P}0 :invoke :write 1\n{P}0   :ok\t :write  1 \n{P}1 :invoke :cas [1 2]\n{P}1 :ok :cas [1  2]\n"
        );
        let a = parse(&tabs).unwrap().history;
        let b = parse(&spaces).unwrap().history;
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.iter()
                .map(|o| (o.input.clone(), o.output.clone()))
                .collect::<Vec<_>>(),
            b.iter()
                .map(|o| (o.input.clone(), o.output.clone()))
                .collect::<Vec<_>>()
        );
        assert!(parse(&format!("{P}0 :invoke :write\n")).is_err());
    }

    #[test]
    fn a_return_without_invocation_names_the_line() {
        let text =
            format!("{P}0\t:invoke\t:read\tnil\n{P}0\t:ok\t:read\t1\n{P}4\t:ok\t:write\t2\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("no operation in flight"), "{e}");
    }

    #[test]
    fn an_event_shaped_line_that_does_not_parse_is_an_error() {
        for bad in [
            ":frob\t:read\tnil",
            ":invoke\t:delete\tnil",
            ":invoke\t:write\tfoo",
            ":invoke\t:write",
        ] {
            let text = format!("{P}0\t{bad}\n");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, 1, "{bad}");
        }
    }
}
