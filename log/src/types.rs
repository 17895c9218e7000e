//! The values the log is made of: entries, hard state, configurations and
//! snapshots.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A replica's identity within the Raft group. Never 0.
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A log position; the first entry has index 1, 0 means "before the log".
pub type Index = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command.
    Normal,
    /// A [`ConfChange`], encoded.
    ConfChange,
    /// The empty entry a new leader appends to commit its term.
    Empty,
}

/// One log entry. `data` is shared, never copied, from the proposal to the
/// storage and transport hand-off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: Term,
    /// Its position in the log.
    pub index: Index,
    /// What it carries.
    pub kind: EntryKind,
    /// The payload.
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry counts for in batching limits.
    pub fn payload_len(&self) -> u64 {
        self.data.len() as u64
    }
}

/// The state that must be durable before a node answers anything that
/// depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Whom it voted for in `term`.
    pub vote: Option<NodeId>,
    /// The highest index it knows committed (an optimisation: recomputed
    /// from the leader otherwise; never ahead of the durable log).
    pub commit: Index,
}

/// A group configuration: who votes and who only listens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// Voting members.
    pub voters: BTreeSet<NodeId>,
    /// Non-voting members (receive the log, never count for quorums).
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    /// A configuration of voters only.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> ConfState {
        ConfState {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The configuration after `cc`, or why `cc` does not apply.
    pub fn apply(&self, cc: ConfChange) -> Result<ConfState, ConfChangeError> {
        let mut next = self.clone();
        match cc {
            ConfChange::AddVoter(id) => {
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            ConfChange::AddLearner(id) => {
                if next.voters.contains(&id) {
                    return Err(ConfChangeError::DemoteVoter(id));
                }
                next.learners.insert(id);
            }
            ConfChange::Remove(id) => {
                next.voters.remove(&id);
                next.learners.remove(&id);
                if next.voters.is_empty() {
                    return Err(ConfChangeError::NoVotersLeft);
                }
            }
        }
        Ok(next)
    }
}

/// A single-server membership change (Raft thesis §4.1). One may be in
/// flight at a time, and a leader proposes one only after committing an
/// entry of its own term (the fix to the single-server change bug).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChange {
    /// Add a voter, or promote a learner.
    AddVoter(NodeId),
    /// Add a learner.
    AddLearner(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
}

/// Why a configuration change cannot be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// Removing the last voter would leave a group that can never elect.
    #[error("the change would leave no voters")]
    NoVotersLeft,
    /// Demotion is a remove followed by an add.
    #[error("node {0} is a voter; remove it before adding it as a learner")]
    DemoteVoter(NodeId),
    /// The encoded change is not one.
    #[error("malformed configuration change")]
    Malformed,
}

impl std::fmt::Display for ConfChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfChange::AddVoter(id) => write!(f, "add voter {id}"),
            ConfChange::AddLearner(id) => write!(f, "add learner {id}"),
            ConfChange::Remove(id) => write!(f, "remove {id}"),
        }
    }
}

/// Node ids as a list for people: `1,2,3`, or `none`.
pub fn ids_text<'a>(ids: impl IntoIterator<Item = &'a NodeId>) -> String {
    let v: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

impl ConfChange {
    /// Encoded size: a tag byte and a node id.
    pub const ENCODED_LEN: usize = 9;

    /// The entry payload for this change.
    pub fn encode(&self) -> Bytes {
        let (tag, id) = match *self {
            ConfChange::AddVoter(id) => (1u8, id),
            ConfChange::AddLearner(id) => (2, id),
            ConfChange::Remove(id) => (3, id),
        };
        let mut b = BytesMut::with_capacity(Self::ENCODED_LEN);
        b.put_u8(tag);
        b.put_u64_le(id);
        b.freeze()
    }

    /// Decodes an entry payload, checking its length and tag.
    pub fn decode(mut data: &[u8]) -> Result<ConfChange, ConfChangeError> {
        if data.len() != Self::ENCODED_LEN {
            return Err(ConfChangeError::Malformed);
        }
        let tag = data.get_u8();
        let id = data.get_u64_le();
        if id == 0 {
            return Err(ConfChangeError::Malformed);
        }
        match tag {
            1 => Ok(ConfChange::AddVoter(id)),
            2 => Ok(ConfChange::AddLearner(id)),
            3 => Ok(ConfChange::Remove(id)),
            _ => Err(ConfChangeError::Malformed),
        }
    }
}

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last index the snapshot includes.
    pub index: Index,
    /// The term of that entry.
    pub term: Term,
    /// The configuration as of `index`.
    pub conf: ConfState,
}

/// A state-machine snapshot: everything up to `meta.index`, applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The state machine's serialized state (opaque to the log).
    pub data: Bytes,
}

/// A confirmed linearizable read point: once the state machine has applied
/// `index`, a read tagged `ctx` may be served from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index at the time leadership was confirmed.
    pub index: Index,
    /// The caller's tag, as given to `read_index`.
    pub ctx: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_change_round_trips_and_rejects_garbage() {
        for cc in [
            ConfChange::AddVoter(3),
            ConfChange::AddLearner(9),
            ConfChange::Remove(1),
        ] {
            assert_eq!(ConfChange::decode(&cc.encode()), Ok(cc));
        }
        assert!(ConfChange::decode(&[1, 2, 3]).is_err());
        assert!(ConfChange::decode(&[7, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(ConfChange::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn removing_the_last_voter_is_refused() {
        let c = ConfState::with_voters([1]);
        assert_eq!(
            c.apply(ConfChange::Remove(1)),
            Err(ConfChangeError::NoVotersLeft)
        );
    }
}
