//! Limits of the cluster state, in one place, and the checks that enforce
//! them.
//!
//! Every request is checked against these **before** it is proposed
//! ([`crate::coordinator::Request::validate`]), so a client gets an error
//! naming the limit and nothing reaches the log. The same checks run again
//! when a committed record is applied ([`super::Record::check`]): a record
//! that breaks one (written by an older version, a bug, or a forged
//! proposal) is applied as a deterministic rejection, identically on every
//! replica, and never stops one.

use serde::{Deserialize, Serialize};

/// Largest encoded record.
pub const RECORD_BYTES_MAX: usize = 1 << 20;
/// Longest table name, in bytes of UTF-8.
pub const NAME_BYTES_MAX: usize = 256;
/// Longest server address, in bytes.
pub const ADDR_BYTES_MAX: usize = 256;
/// Most tablets in one table.
pub const TABLETS_PER_TABLE_MAX: usize = 4096;
/// Most tables at once.
pub const TABLES_MAX: usize = 100_000;
/// Most servers in the list (slots, including removed ones).
pub const SERVERS_MAX: usize = 65_536;
/// Largest configuration region (header + body).
pub const REGION_BYTES_MAX: usize = 4 << 20;
/// Largest snapshot of the cluster state.
pub const SNAPSHOT_BYTES_MAX: usize = 64 << 20;
/// Most clients whose last operation the cluster state remembers for
/// exactly-once answers (see [`super::state::ClusterState::rpc_status`]).
/// Past it the least recently used client (the one whose last operation
/// applied at the lowest log index) is evicted, the same on every
/// replica; a retry from an evicted client is answered "unknown: may have
/// been applied", never applied again. Each entry is at most ~300 bytes
/// (a rejection naming a table), so the table stays under 3 MB.
pub const SESSIONS_MAX: usize = 10_000;

const _: () = assert!(RECORD_BYTES_MAX <= REGION_BYTES_MAX);
// A create of the most tablets, each at most 30 bytes encoded, with the
// longest name, always fits in a record.
const _: () = assert!(TABLETS_PER_TABLE_MAX * 30 + NAME_BYTES_MAX + 64 <= RECORD_BYTES_MAX);

/// A request or record breaks a limit. Each message names the limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// An empty table name.
    #[error("a table name must not be empty")]
    EmptyName,
    /// A table name over [`NAME_BYTES_MAX`].
    #[error("a table name is at most {max} bytes; this one has {len}")]
    NameTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A control character in a table name.
    #[error("a table name must not contain control characters ({ch:?} at byte {at})")]
    NameControl {
        /// Where.
        at: usize,
        /// Which.
        ch: char,
    },
    /// An empty server address.
    #[error("a server address must not be empty")]
    EmptyAddr,
    /// A server address over [`ADDR_BYTES_MAX`].
    #[error("a server address is at most {max} bytes; this one has {len}")]
    AddrTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A control character or whitespace in a server address.
    #[error(
        "a server address must not contain whitespace or control characters ({ch:?} at byte {at})"
    )]
    AddrCharacter {
        /// Where.
        at: usize,
        /// Which.
        ch: char,
    },
    /// Zero tablets, or more than [`TABLETS_PER_TABLE_MAX`].
    #[error("a table needs 1 to {max} tablets, not {n}")]
    TabletCount {
        /// Asked.
        n: usize,
        /// Allowed.
        max: usize,
    },
    /// An encoded record over [`RECORD_BYTES_MAX`].
    #[error("a record is at most {max} bytes; this one has {len}")]
    RecordTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks a table name: 1 to [`NAME_BYTES_MAX`] bytes, no control
/// characters (they would corrupt logs and terminals).
pub fn check_table_name(name: &str) -> Result<(), LimitError> {
    if name.is_empty() {
        return Err(LimitError::EmptyName);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(LimitError::NameTooLong {
            len: name.len(),
            max: NAME_BYTES_MAX,
        });
    }
    if let Some((at, ch)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(LimitError::NameControl { at, ch });
    }
    Ok(())
}

/// Checks a server address: 1 to [`ADDR_BYTES_MAX`] bytes, no whitespace
/// or control characters.
pub fn check_addr(addr: &str) -> Result<(), LimitError> {
    if addr.is_empty() {
        return Err(LimitError::EmptyAddr);
    }
    if addr.len() > ADDR_BYTES_MAX {
        return Err(LimitError::AddrTooLong {
            len: addr.len(),
            max: ADDR_BYTES_MAX,
        });
    }
    if let Some((at, ch)) = addr
        .char_indices()
        .find(|(_, c)| c.is_control() || c.is_whitespace())
    {
        return Err(LimitError::AddrCharacter { at, ch });
    }
    Ok(())
}

/// Checks a table's tablet count: 1 to [`TABLETS_PER_TABLE_MAX`].
pub fn check_tablet_count(n: usize) -> Result<(), LimitError> {
    if n == 0 || n > TABLETS_PER_TABLE_MAX {
        return Err(LimitError::TabletCount {
            n,
            max: TABLETS_PER_TABLE_MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_at_and_past_each_limit() {
        assert_eq!(check_table_name(""), Err(LimitError::EmptyName));
        assert_eq!(check_table_name(&"n".repeat(NAME_BYTES_MAX)), Ok(()));
        assert_eq!(
            check_table_name(&"n".repeat(NAME_BYTES_MAX + 1)),
            Err(LimitError::NameTooLong {
                len: NAME_BYTES_MAX + 1,
                max: NAME_BYTES_MAX
            })
        );
        assert_eq!(
            check_table_name("a\nb"),
            Err(LimitError::NameControl { at: 1, ch: '\n' })
        );
        assert_eq!(
            check_table_name("ok\u{7f}"),
            Err(LimitError::NameControl {
                at: 2,
                ch: '\u{7f}'
            })
        );
        assert_eq!(check_table_name("名前 with spaces"), Ok(()));
        let e = check_table_name(&"x".repeat(300)).unwrap_err().to_string();
        assert!(e.contains("256") && e.contains("300"), "{e}");
    }

    #[test]
    fn addresses_and_counts() {
        assert_eq!(check_addr(""), Err(LimitError::EmptyAddr));
        assert!(check_addr("10.0.0.1:7000").is_ok());
        assert!(check_addr("master-3.example:7000").is_ok());
        assert!(matches!(
            check_addr("a b:1"),
            Err(LimitError::AddrCharacter { at: 1, .. })
        ));
        assert!(matches!(
            check_addr(&"a".repeat(ADDR_BYTES_MAX + 1)),
            Err(LimitError::AddrTooLong { .. })
        ));
        assert!(check_tablet_count(0).is_err());
        assert!(check_tablet_count(1).is_ok());
        assert!(check_tablet_count(TABLETS_PER_TABLE_MAX).is_ok());
        assert!(check_tablet_count(TABLETS_PER_TABLE_MAX + 1).is_err());
    }
}
