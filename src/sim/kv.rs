//! The replicated state machine the simulator's clients use: a map of
//! 64-bit keys to 64-bit values with put and compare-and-set, and its
//! command and snapshot encodings.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A client command carried in a log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client operation this command is (unique in a run).
    pub op_id: u64,
    /// What it does.
    pub op: KvOp,
}

/// A state-changing operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put {
        /// Key.
        key: u64,
        /// Value.
        value: u64,
    },
    /// Set `key` to `to` if it holds `from`.
    Cas {
        /// Key.
        key: u64,
        /// Expected value.
        from: u64,
        /// New value.
        to: u64,
    },
}

impl Command {
    const LEN: usize = 1 + 8 * 4;

    /// Encodes the command as an entry payload.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(Self::LEN);
        match self.op {
            KvOp::Put { key, value } => {
                b.put_u8(1);
                b.put_u64_le(self.op_id);
                b.put_u64_le(key);
                b.put_u64_le(value);
                b.put_u64_le(0);
            }
            KvOp::Cas { key, from, to } => {
                b.put_u8(2);
                b.put_u64_le(self.op_id);
                b.put_u64_le(key);
                b.put_u64_le(from);
                b.put_u64_le(to);
            }
        }
        b.freeze()
    }

    /// Decodes an entry payload; `None` if it is not a command.
    pub fn decode(mut data: &[u8]) -> Option<Command> {
        if data.len() != Self::LEN {
            return None;
        }
        let tag = data.get_u8();
        let op_id = data.get_u64_le();
        let key = data.get_u64_le();
        let a = data.get_u64_le();
        let b = data.get_u64_le();
        let op = match tag {
            1 => KvOp::Put { key, value: a },
            2 => KvOp::Cas {
                key,
                from: a,
                to: b,
            },
            _ => return None,
        };
        Some(Command { op_id, op })
    }
}

/// The key-value map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<u64, u64>,
}

impl Kv {
    /// Applies a command; returns whether it took effect (a cas may not).
    pub fn apply(&mut self, cmd: &Command) -> bool {
        match cmd.op {
            KvOp::Put { key, value } => {
                self.map.insert(key, value);
                true
            }
            KvOp::Cas { key, from, to } => {
                if self.map.get(&key) == Some(&from) {
                    self.map.insert(key, to);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.map.get(&key).copied()
    }

    /// Serializes the map (the state-machine snapshot).
    pub fn snapshot(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(8 + self.map.len() * 16);
        b.put_u64_le(self.map.len() as u64);
        for (k, v) in &self.map {
            b.put_u64_le(*k);
            b.put_u64_le(*v);
        }
        b.freeze()
    }

    /// Restores from [`Kv::snapshot`] output; an empty buffer is an empty
    /// map. `None` if the bytes are not a snapshot.
    pub fn restore(mut data: &[u8]) -> Option<Kv> {
        let mut kv = Kv::default();
        if data.is_empty() {
            return Some(kv);
        }
        if data.len() < 8 {
            return None;
        }
        let n = data.get_u64_le() as usize;
        if data.len() != n.checked_mul(16)? {
            return None;
        }
        for _ in 0..n {
            let k = data.get_u64_le();
            let v = data.get_u64_le();
            kv.map.insert(k, v);
        }
        Some(kv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_and_snapshot_round_trip() {
        for op in [
            KvOp::Put { key: 1, value: 2 },
            KvOp::Cas {
                key: 3,
                from: 4,
                to: 5,
            },
        ] {
            let c = Command { op_id: 9, op };
            assert_eq!(Command::decode(&c.encode()), Some(c));
        }
        assert_eq!(Command::decode(b"short"), None);
        let mut kv = Kv::default();
        kv.apply(&Command {
            op_id: 1,
            op: KvOp::Put { key: 7, value: 8 },
        });
        assert_eq!(Kv::restore(&kv.snapshot()), Some(kv));
        assert_eq!(Kv::restore(&[1, 2, 3]), None);
    }
}
