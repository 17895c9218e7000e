//! Linearizability of the table operations of a chaos history, one table
//! name at a time: each name is a register holding "exists" or "does not",
//! which `create`, `drop` and `read` act on ([`TableModel`]).
//!
//! Every outcome constrains the order the search may choose:
//!
//! | operation | `ok` | `fail` | `info` / none |
//! |---|---|---|---|
//! | create | absent → present | it was present | present after it, if it took effect |
//! | drop | present → absent | it was absent | absent after it, if it took effect |
//! | read | the answer was the state | (not recorded) | constrains nothing |
//!
//! A failed create says the name existed at some moment between its
//! invocation and its answer, which is as much a read as a read is: it is
//! kept in the history (unlike a failed compare-and-set on a register).

use std::collections::BTreeMap;

use super::history::{EventType, Function, Op, Value};
use crate::lincheck::{check, History, Model, Operation, Verdict};

/// What a client asked about a table name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableInput {
    /// Create it.
    Create,
    /// Drop it.
    Drop,
    /// Whether it exists.
    Read,
}

/// What the coordinator answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableOutput {
    /// Created or dropped.
    Done,
    /// Refused: it existed (create) or did not (drop).
    Refused,
    /// A read's answer: exists.
    Exists(bool),
}

/// The sequential specification of one table name.
#[derive(Clone, Copy, Debug, Default)]
pub struct TableModel;

impl Model for TableModel {
    type State = bool;
    type Input = TableInput;
    type Output = TableOutput;

    fn init(&self) -> bool {
        false
    }

    fn step(
        &self,
        exists: &bool,
        input: &TableInput,
        output: Option<&TableOutput>,
    ) -> Option<bool> {
        use TableInput::*;
        use TableOutput::*;
        match (input, output) {
            (Create, Some(Done)) => (!exists).then_some(true),
            (Create, Some(Refused)) => exists.then_some(true),
            (Create, None) => Some(true),
            (Drop, Some(Done)) => exists.then_some(false),
            (Drop, Some(Refused)) => (!exists).then_some(false),
            (Drop, None) => Some(false),
            (Read, Some(Exists(v))) => (v == exists).then_some(*exists),
            (Read, None) => Some(*exists),
            _ => None,
        }
    }
}

/// The verdict for one table name.
#[derive(Clone, Debug)]
pub struct NameVerdict {
    /// The name.
    pub name: String,
    /// Operations checked (completed and unknown).
    pub ops: usize,
    /// The search's answer.
    pub verdict: Verdict,
    /// For a failure: the history lines of the operations that could not
    /// be placed (evidence).
    pub evidence: Vec<usize>,
}

/// Checks `h` against `model`; for a failure, also the history lines of
/// the operations that could not be placed (each operation's `origin`).
pub(crate) fn check_with_evidence<M: Model>(
    model: &M,
    h: &History<M::Input, M::Output>,
) -> (Verdict, Vec<usize>) {
    let verdict = check(model, h);
    let evidence = match &verdict {
        Verdict::NotLinearizable(f) => f
            .unplaceable
            .iter()
            .map(|&i| h[i].origin as usize)
            .collect(),
        _ => Vec::new(),
    };
    (verdict, evidence)
}

/// Checks the create / drop / read operations of `ops`, per name.
pub fn check_tables(ops: &[Op]) -> Vec<NameVerdict> {
    let mut by_name: BTreeMap<&str, History<TableInput, TableOutput>> = BTreeMap::new();
    for op in ops {
        let (inv, inv_line) = &op.invoke;
        let input = match inv.f {
            Function::Create => TableInput::Create,
            Function::Drop => TableInput::Drop,
            Function::Read => TableInput::Read,
            Function::Put | Function::Get => continue,
        };
        let done = op.complete.as_ref().and_then(|(c, line)| {
            let out = match (c.kind, input, &c.value) {
                (EventType::Ok, TableInput::Read, Some(Value::Bool(b))) => TableOutput::Exists(*b),
                (EventType::Ok, TableInput::Read, _) => return None, // no answer seen
                (EventType::Ok, _, _) => TableOutput::Done,
                (EventType::Fail, TableInput::Read, _) => return None,
                (EventType::Fail, _, _) => TableOutput::Refused,
                (EventType::Info | EventType::Invoke, _, _) => return None,
            };
            Some((out, *line as u64))
        });
        if input == TableInput::Read && done.is_none() {
            continue; // a read with no answer constrains nothing
        }
        by_name.entry(&inv.key).or_default().push(Operation {
            call: *inv_line as u64,
            ret: done.map(|d| d.1),
            input,
            output: done.map(|d| d.0),
            process: inv.process,
            origin: *inv_line as u64,
        });
    }
    by_name
        .into_iter()
        .map(|(name, h)| {
            let (verdict, evidence) = check_with_evidence(&TableModel, &h);
            NameVerdict {
                name: name.to_string(),
                ops: h.len(),
                verdict,
                evidence,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::read;

    /// A history from compact lines: `process type f key value`, one per
    /// line, times in line order.
    fn history(spec: &str) -> Vec<Op> {
        let mut text = String::new();
        for (i, l) in spec
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let w: Vec<&str> = l.split_whitespace().collect();
            let value = match w.get(4) {
                Some(&"true") => "true".to_string(),
                Some(&"false") => "false".to_string(),
                _ => "null".to_string(),
            };
            text += &format!(
                "{{\"process\": {}, \"type\": \"{}\", \"f\": \"{}\", \"key\": \"{}\", \"value\": {value}, \"time\": {}}}\n",
                w[0], w[1], w[2], w[3], i * 10
            );
        }
        read(text.as_bytes()).expect("a well-formed history")
    }

    fn verdicts(spec: &str) -> Vec<(String, bool)> {
        check_tables(&history(spec))
            .into_iter()
            .map(|v| (v.name, v.verdict.is_linearizable()))
            .collect()
    }

    #[test]
    fn concurrent_creates_one_wins_and_reads_follow() {
        let v = verdicts(
            "1 invoke create t1
             2 invoke create t1
             1 ok create t1
             2 fail create t1
             3 invoke read t1
             3 ok read t1 true
             1 invoke drop t1
             1 ok drop t1
             3 invoke read t1
             3 ok read t1 false",
        );
        assert_eq!(v, vec![("t1".to_string(), true)]);
    }

    #[test]
    fn a_read_that_misses_an_acknowledged_create_is_not_linearizable() {
        let v = verdicts(
            "1 invoke create t1
             1 ok create t1
             2 invoke read t1
             2 ok read t1 false",
        );
        assert_eq!(v, vec![("t1".to_string(), false)]);
        let evidence = &check_tables(&history(
            "1 invoke create t1
             1 ok create t1
             2 invoke read t1
             2 ok read t1 false",
        ))[0]
            .evidence;
        assert!(!evidence.is_empty(), "the failure names lines");
    }

    #[test]
    fn two_acknowledged_creates_without_a_drop_are_not_linearizable() {
        let v = verdicts(
            "1 invoke create t1
             1 ok create t1
             2 invoke create t1
             2 ok create t1",
        );
        assert_eq!(v, vec![("t1".to_string(), false)]);
    }

    #[test]
    fn an_unknown_create_may_have_happened_or_not() {
        // Seen as present, then absent: the unknown create explains the
        // first read; nothing else does.
        for (reads, ok) in [("true", true), ("false", true)] {
            let spec = format!(
                "1 invoke create t1
                 1 info create t1
                 2 invoke read t1
                 2 ok read t1 {reads}"
            );
            assert_eq!(verdicts(&spec), vec![("t1".to_string(), ok)]);
        }
        // A failed drop says it was absent; a later read of present needs
        // the unknown create to land in between.
        let v = verdicts(
            "1 invoke create t1
             2 invoke drop t1
             2 fail drop t1
             3 invoke read t1
             3 ok read t1 true
             1 info create t1",
        );
        assert_eq!(v, vec![("t1".to_string(), true)]);
    }

    #[test]
    fn names_are_checked_apart() {
        let v = verdicts(
            "1 invoke create a
             1 ok create a
             2 invoke read b
             2 ok read b false
             2 invoke read a
             2 ok read a true",
        );
        assert_eq!(v, vec![("a".to_string(), true), ("b".to_string(), true)]);
    }
}
