//! The register model: one value, read / write / compare-and-set.
//!
//! The register starts empty (`None`, Jepsen's `nil`). A compare-and-set that
//! is known to have failed had no effect and is not part of a history; one
//! that is known to have succeeded, or whose outcome is unknown, can only be
//! placed where the register holds its expected value.

use super::Model;

/// A register's value; `None` before the first write.
pub type Value = Option<i64>;

/// What a client asked the register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterInput {
    /// Read the value.
    Read,
    /// Set the value.
    Write(i64),
    /// Set the value to `.1` if it is `.0`.
    Cas(i64, i64),
}

/// What the register answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOutput {
    /// The value a read returned.
    Read(Value),
    /// A write or a compare-and-set took effect.
    Done,
}

impl std::fmt::Display for RegisterInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterInput::Read => write!(f, "read"),
            RegisterInput::Write(v) => write!(f, "write {v}"),
            RegisterInput::Cas(a, b) => write!(f, "cas {a}->{b}"),
        }
    }
}

impl std::fmt::Display for RegisterOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterOutput::Read(None) => write!(f, "nil"),
            RegisterOutput::Read(Some(v)) => write!(f, "{v}"),
            RegisterOutput::Done => write!(f, "ok"),
        }
    }
}

/// The sequential specification of a register.
#[derive(Clone, Copy, Debug, Default)]
pub struct Register;

impl Model for Register {
    type State = Value;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Value {
        None
    }

    fn step(
        &self,
        state: &Value,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<Value> {
        match (input, output) {
            (RegisterInput::Read, Some(RegisterOutput::Read(v))) => (v == state).then_some(*state),
            (RegisterInput::Read, None) => Some(*state),
            (RegisterInput::Write(v), None | Some(RegisterOutput::Done)) => Some(Some(*v)),
            (RegisterInput::Cas(from, to), None | Some(RegisterOutput::Done)) => {
                (*state == Some(*from)).then_some(Some(*to))
            }
            // A read answered "done" or a write answered a value: no state
            // of a register explains it.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lincheck::{check, Operation, Verdict};

    fn op(
        call: u64,
        ret: Option<u64>,
        input: RegisterInput,
        output: Option<RegisterOutput>,
    ) -> Operation<RegisterInput, RegisterOutput> {
        Operation {
            call,
            ret,
            input,
            output,
            process: 0,
            origin: call,
        }
    }

    #[test]
    fn sequential_read_after_write_is_linearizable() {
        let h = vec![
            op(
                0,
                Some(1),
                RegisterInput::Write(1),
                Some(RegisterOutput::Done),
            ),
            op(
                2,
                Some(3),
                RegisterInput::Read,
                Some(RegisterOutput::Read(Some(1))),
            ),
        ];
        assert_eq!(check(&Register, &h), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_completed_write_is_not() {
        let h = vec![
            op(
                0,
                Some(1),
                RegisterInput::Write(1),
                Some(RegisterOutput::Done),
            ),
            op(
                2,
                Some(3),
                RegisterInput::Read,
                Some(RegisterOutput::Read(None)),
            ),
        ];
        assert!(matches!(check(&Register, &h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        let h = vec![
            op(
                0,
                Some(3),
                RegisterInput::Write(1),
                Some(RegisterOutput::Done),
            ),
            op(
                1,
                Some(2),
                RegisterInput::Read,
                Some(RegisterOutput::Read(Some(1))),
            ),
            op(
                4,
                Some(5),
                RegisterInput::Read,
                Some(RegisterOutput::Read(Some(1))),
            ),
        ];
        assert_eq!(check(&Register, &h), Verdict::Linearizable);
    }

    #[test]
    fn unknown_write_may_take_effect_late_or_never() {
        let late = vec![
            op(0, None, RegisterInput::Write(7), None),
            op(
                1,
                Some(2),
                RegisterInput::Read,
                Some(RegisterOutput::Read(None)),
            ),
            op(
                3,
                Some(4),
                RegisterInput::Read,
                Some(RegisterOutput::Read(Some(7))),
            ),
        ];
        assert_eq!(check(&Register, &late), Verdict::Linearizable);
        let never = vec![
            op(0, None, RegisterInput::Write(7), None),
            op(
                1,
                Some(2),
                RegisterInput::Read,
                Some(RegisterOutput::Read(None)),
            ),
        ];
        assert_eq!(check(&Register, &never), Verdict::Linearizable);
        // But it cannot take effect, then be undone.
        let undone = vec![
            op(0, None, RegisterInput::Write(7), None),
            op(
                1,
                Some(2),
                RegisterInput::Read,
                Some(RegisterOutput::Read(Some(7))),
            ),
            op(
                3,
                Some(4),
                RegisterInput::Read,
                Some(RegisterOutput::Read(None)),
            ),
        ];
        assert!(matches!(
            check(&Register, &undone),
            Verdict::NotLinearizable(_)
        ));
    }

    #[test]
    fn cas_needs_its_expected_value() {
        let h = vec![
            op(
                0,
                Some(1),
                RegisterInput::Write(1),
                Some(RegisterOutput::Done),
            ),
            op(
                2,
                Some(3),
                RegisterInput::Cas(2, 3),
                Some(RegisterOutput::Done),
            ),
        ];
        assert!(matches!(check(&Register, &h), Verdict::NotLinearizable(_)));
    }
}
