//! The cluster state the coordinator owns, as a deterministic state machine
//! applied from the replicated log.
//!
//! - [`types`]: servers (`ServerId` = slot index + generation), tables,
//!   tablets (ranges of a 64-bit key hash), their states;
//! - [`record`]: the log records (an operation's **commit record**, its
//!   **completion record**), versioned and decoded defensively;
//! - [`state`]: [`ClusterState`], which applies records and checks its own
//!   invariants, and answers what each master's configuration is;
//! - [`region`]: a master's **configuration region**, the bytes a
//!   coordinator writes into a master's memory (one-sided write) with the
//!   writer's term, a version and a checksum.
//!
//! # Operations and what may run together
//!
//! Every operation is one commit record; its sequence number is the
//! record's log index. Applying it changes the server list and tablet map
//! at once (the commit point) and journals it as *incomplete* with the set
//! of servers whose configuration changed (its push targets). The leader
//! pushes each target its configuration; when every target has
//! acknowledged a configuration at least as new as the operation (or is no
//! longer up: its own crash operation took over its share), the leader
//! writes the completion record.
//!
//! A target is a master whose *tablets* change (and a new server, which
//! needs its first configuration). A region carries the master's tablets
//! and its own status in the server list, not the list (`region`): masters
//! read the list only to notice they were declared crashed, which the
//! heartbeat's answer tells them anyway, and ownership rests on tablets
//! alone. So an enlistment pushes to the new server only, a crash to its
//! recovery plan's recipients, a removal to nobody, and each region's size
//! depends on its master's tablets only: bringing N masters up costs N
//! pushes of constant size, not N² pushes of O(N) bytes. (Issue 17, part 5;
//! `docs/push-fanout-plan.md`.)
//!
//! Preconditions are checked when a record is applied, on every replica,
//! so racing proposals (two leaders, two clients) resolve the same way
//! everywhere; a record whose precondition fails changes nothing and
//! journals nothing (the client is told why):
//!
//! - two creates of one name: the second is refused (`NameTaken`);
//! - drop, split and migrate of a table wait (`Busy`, retry) while
//!   another operation on that table is incomplete, and a tablet that is
//!   recovering cannot be split or migrated;
//! - enlistments, crashes and removals never wait for table operations:
//!   a master that crashes while a create or migration is handing it
//!   tablets is declared crashed, its recovery plan reassigns those
//!   tablets, and the first operation stops waiting for it;
//! - a crash record must list exactly the tablets the server owns when it
//!   applies (else `StalePlan`, and the leader plans again); a server is
//!   removed only after its crash operation completed.

pub mod limits;
pub mod record;
pub mod region;
pub mod state;
pub mod types;

pub use limits::LimitError;
pub use record::{Op, Reassignment, Record, RecordError, RpcId, Seq, TabletSpec};
pub use region::{ConfigRegion, RegionError};
pub use state::{
    ClusterState, Effect, InvariantViolation, Outcome, Pending, Rejection, RpcStatus, Session,
    Sessions, SnapshotError, UnknownReason,
};
pub use types::*;
