//! Chaos on real processes (issue 16, in progress): the pieces that do not
//! need a cluster yet.
//!
//! - [`history`]: the history format every client operation of a chaos
//!   run is recorded in (JSON lines, the shape Jepsen's checkers read), its
//!   writer, and a reader that pairs invocations with completions;
//! - [`netns`]: the network a run's processes live in (a namespace per
//!   process on a bridge, partitions with nftables), built and removed
//!   whole, stale sets of a killed run cleaned at the next start;
//! - [`tables`]: linearizability of the table operations of a history, per
//!   name, as a register of "exists" acted on by create, drop and read,
//!   through [`crate::lincheck`]. `ramcoord lincheck --format tables FILE`
//!   runs it on a file.
//!
//! Still to come: the runner (the cluster started in the namespaces), the nemesis, the
//! workload, and the other checks (no acknowledged operation lost, the
//! masters' tablets, no key served twice). Reads of a table's existence
//! must then be linearizable at the coordinator: `View` is answered from
//! the leader's applied state without confirming it still leads (no read
//! index), so a deposed leader could answer a stale read; the runner's
//! reads need the Raft core's read index first.

pub mod history;
pub mod netns;
pub mod tables;
