//! The node's output: what to persist, send and apply.

use crate::message::Message;
use crate::types::{Entry, HardState, Index, ReadState, Snapshot, Term};

/// Everything a node asks its driver to do, handed out by
/// [`crate::RawNode::ready`] and acknowledged by [`crate::RawNode::advance`].
///
/// The driver, for each ready, in order of `number`:
/// 1. sends `messages` at once (they depend on nothing local being durable;
///    a leader's appends are here, so it persists in parallel with its
///    followers, thesis §10.2.1);
/// 2. persists `snapshot`, then `entries`, then `hard_state` (entries
///    overwrite any stored suffix from their first index on);
/// 3. once all of that is durable, sends `persisted_messages` (votes granted,
///    appends acknowledged) and calls `advance(ready)`;
/// 4. restores its state machine from `snapshot` if one is given, applies
///    `committed_entries` in order, and serves the reads in `read_states`
///    once it has applied their index. Committed entries may be applied
///    before this ready (or an earlier one still in flight) is durable
///    here: a majority holds them durably, so no crash of this node loses
///    them; the state machine must therefore be volatile (rebuilt from the
///    log and snapshot on restart), and a snapshot of it may only be taken
///    once what it covers is durable.
///
/// Readies may be pipelined (several persisted concurrently) as long as they
/// become durable, and are advanced, in order.
#[derive(Debug, Default)]
#[must_use = "a Ready must be persisted and advanced"]
pub struct Ready {
    /// Sequence number; `advance` must see them in order.
    pub number: u64,
    /// Hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Snapshot from the leader to persist and restore.
    pub snapshot: Option<Snapshot>,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// Committed entries to apply, in order (durable on a majority, not
    /// necessarily here yet).
    pub committed_entries: Vec<Entry>,
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Messages to send only after this ready is durable.
    pub persisted_messages: Vec<Message>,
    /// Confirmed read points.
    pub read_states: Vec<ReadState>,
    /// True if something must be fsync'ed (entries, snapshot, term or vote).
    pub must_sync: bool,
    pub(crate) self_messages: Vec<Message>,
    pub(crate) last_entry: Option<(Index, Term)>,
    pub(crate) snapshot_index: Option<Index>,
}

impl Ready {
    /// True if nothing needs persisting.
    pub fn is_persist_empty(&self) -> bool {
        self.hard_state.is_none() && self.snapshot.is_none() && self.entries.is_empty()
    }
}
