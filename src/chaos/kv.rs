//! Linearizability of the masters' `put` / `get` in a chaos history, one
//! key at a time: each key is a register (the [`Register`] model) that
//! starts empty.
//!
//! | operation | `ok` | `fail` | `info` / none |
//! |---|---|---|---|
//! | put | wrote its value | certainly not applied: left out | wrote it, if it took effect |
//! | get | read the value (or empty) | left out | left out |
//!
//! Only meaningful while every key's data stays where it is: a master's
//! data lives only in its memory, so a master that dies (killed, or
//! declared crashed) loses its keys and its tablets start empty
//! elsewhere. The chaos runner checks this only in runs where no master
//! was lost, and says so otherwise.

use std::collections::{BTreeMap, HashMap};

use super::history::{EventType, Function, Op, Value};
use crate::lincheck::register::{Register, RegisterInput, RegisterOutput};
use crate::lincheck::{History, Operation, Verdict};

/// The verdict for one key.
#[derive(Clone, Debug)]
pub struct KeyVerdict {
    /// The key (`table/key`).
    pub key: String,
    /// Operations checked.
    pub ops: usize,
    /// The search's answer.
    pub verdict: Verdict,
    /// For a failure: the history lines of the operations that could not
    /// be placed.
    pub evidence: Vec<usize>,
}

/// Checks the put / get operations of `ops` on the keys `include` accepts,
/// per key.
pub fn check_keys(ops: &[Op], include: impl Fn(&str) -> bool) -> Vec<KeyVerdict> {
    // Values become small integers for the register model; a value read
    // that no put wrote gets one of its own (and cannot be explained).
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut id_of = |s: &str| {
        let n = ids.len() as i64;
        *ids.entry(s.to_string()).or_insert(n)
    };
    let mut by_key: BTreeMap<&str, History<RegisterInput, RegisterOutput>> = BTreeMap::new();
    for op in ops {
        let (inv, inv_line) = &op.invoke;
        if !include(&inv.key) {
            continue;
        }
        let done = op
            .complete
            .as_ref()
            .map(|(c, line)| (c.kind, c.value.clone(), *line as u64));
        let (input, output, ret) = match (inv.f, done) {
            (Function::Put, Some((EventType::Fail, _, _))) => continue,
            (Function::Put, Some((EventType::Ok, _, line))) => {
                let Some(Value::Str(v)) = &inv.value else {
                    continue;
                };
                (
                    RegisterInput::Write(id_of(v)),
                    Some(RegisterOutput::Done),
                    Some(line),
                )
            }
            (Function::Put, _) => {
                let Some(Value::Str(v)) = &inv.value else {
                    continue;
                };
                (RegisterInput::Write(id_of(v)), None, None)
            }
            (Function::Get, Some((EventType::Ok, value, line))) => {
                let read = match value {
                    Some(Value::Str(s)) => Some(id_of(&s)),
                    _ => None,
                };
                (
                    RegisterInput::Read,
                    Some(RegisterOutput::Read(read)),
                    Some(line),
                )
            }
            _ => continue,
        };
        by_key.entry(&inv.key).or_default().push(Operation {
            call: *inv_line as u64,
            ret,
            input,
            output,
            process: inv.process,
            origin: *inv_line as u64,
        });
    }
    by_key
        .into_iter()
        .map(|(key, h)| {
            let (verdict, evidence) = super::tables::check_with_evidence(&Register, &h);
            KeyVerdict {
                key: key.to_string(),
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

    /// `process type f key value` per line (value: `-` for null).
    fn verdicts(spec: &str) -> Vec<(String, bool)> {
        let mut text = String::new();
        for (i, l) in spec
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let w: Vec<&str> = l.split_whitespace().collect();
            let value = match w.get(4) {
                None | Some(&"-") => "null".to_string(),
                Some(v) => format!("\"{v}\""),
            };
            text += &format!(
                "{{\"process\": {}, \"type\": \"{}\", \"f\": \"{}\", \"key\": \"{}\", \"value\": {value}, \"time\": {}}}\n",
                w[0], w[1], w[2], w[3], i * 10
            );
        }
        let ops = read(text.as_bytes()).expect("a well-formed history");
        check_keys(&ops, |_| true)
            .into_iter()
            .map(|v| (v.key, v.verdict.is_linearizable()))
            .collect()
    }

    #[test]
    fn reads_follow_writes() {
        let v = verdicts(
            "1 invoke get k -
             1 ok get k -
             1 invoke put k a
             1 ok put k a
             2 invoke get k -
             2 ok get k a",
        );
        assert_eq!(v, vec![("k".to_string(), true)]);
    }

    #[test]
    fn a_lost_acknowledged_put_is_caught() {
        let v = verdicts(
            "1 invoke put k a
             1 ok put k a
             2 invoke get k -
             2 ok get k -",
        );
        assert_eq!(v, vec![("k".to_string(), false)]);
    }

    #[test]
    fn an_unknown_put_may_land_and_a_failed_one_never_does() {
        let v = verdicts(
            "1 invoke put k a
             1 info put k a
             2 invoke get k -
             2 ok get k a",
        );
        assert_eq!(v, vec![("k".to_string(), true)]);
        let v = verdicts(
            "1 invoke put k a
             1 fail put k a
             2 invoke get k -
             2 ok get k a",
        );
        assert_eq!(v, vec![("k".to_string(), false)]);
    }
}
