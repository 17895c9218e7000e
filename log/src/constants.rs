//! Every limit of the Raft core, in one place, with the relations between
//! them checked at compile time.

/// Default election timeout: a follower that hears nothing from a leader for
/// this many ticks (randomised in `[t, 2t)`) campaigns.
pub const ELECTION_TIMEOUT_TICKS_DEFAULT: u64 = 10;
/// Default heartbeat interval of a leader.
pub const HEARTBEAT_INTERVAL_TICKS_DEFAULT: u64 = 1;
/// Default bound on appends in flight to one follower (pipelining depth).
pub const INFLIGHT_APPENDS_MAX_DEFAULT: usize = 64;
/// Hard bound on appends in flight to one follower.
pub const INFLIGHT_APPENDS_MAX: usize = 4096;
/// Default bound on entries in one append message (batching).
pub const APPEND_ENTRIES_MAX_DEFAULT: usize = 256;
/// Default bound on payload bytes in one append message. One entry larger
/// than this still travels alone.
pub const APPEND_BYTES_MAX_DEFAULT: u64 = 1 << 20;
/// Largest payload a single proposal may carry.
pub const ENTRY_BYTES_MAX: usize = 16 << 20;
/// Bound on uncommitted payload bytes a leader accepts before refusing
/// proposals (flow control against a leader that cannot commit).
pub const UNCOMMITTED_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Default size of one InstallSnapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES_DEFAULT: usize = 64 << 10;
/// Largest snapshot a follower accepts while assembling chunks.
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 30;
/// Bound on read-index requests a leader holds while confirming leadership.
pub const PENDING_READS_MAX: usize = 4096;

/// Largest step up in term one message may bring. Terms rise by one per
/// election (pre-vote keeps a cut-off node's term still), so no honest
/// message comes near this; a message beyond it is refused, so that no
/// handful of messages can push the term to where it cannot grow.
pub const TERM_JUMP_MAX: u64 = 1 << 32;
/// Highest term a message may carry: above it, a term could not be
/// incremented at every election for as long as the group will live.
pub const TERM_MAX: u64 = u64::MAX - (1 << 32);

const _: () = assert!(HEARTBEAT_INTERVAL_TICKS_DEFAULT < ELECTION_TIMEOUT_TICKS_DEFAULT);
const _: () = assert!(INFLIGHT_APPENDS_MAX_DEFAULT <= INFLIGHT_APPENDS_MAX);
const _: () = assert!((ENTRY_BYTES_MAX as u64) <= UNCOMMITTED_BYTES_MAX_DEFAULT);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_DEFAULT <= SNAPSHOT_BYTES_MAX);
