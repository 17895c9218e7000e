//! Chaos on real processes (`ramcoord chaos`; issue 16).
//!
//! - [`run`]: the run itself: the cluster in namespaces, the nemesis, the
//!   clients, the checks (its module docs say what is still to come);
//! - [`history`]: the history format every client operation of a chaos
//!   run is recorded in (JSON lines, the shape Jepsen's checkers read), its
//!   writer, and a reader that pairs invocations with completions;
//! - [`netns`]: the network a run's processes live in (a namespace per
//!   process on a bridge, partitions with nftables), built and removed
//!   whole, stale sets of a killed run cleaned at the next start;
//! - [`tables`]: linearizability of the table operations of a history, per
//!   name, as a register of "exists" acted on by create, drop and read,
//!   through [`crate::lincheck`]. `ramcoord lincheck --format tables FILE`
//!   runs it on a file;
//! - [`kv`]: linearizability of the masters' put/get, per key;
//! - [`serve`]: no key served by two masters at once (from the masters'
//!   serve logs), and the final state against the coordinator's map;
//! - [`plot`]: the run's timeline as a PNG.
//!
//! The runner's reads are `Lookup`s, answered through the Raft core's read
//! index: `View` is answered from the leader's applied state without
//! confirming it still leads, so a deposed leader could answer it stale.
//! (The put/get clients use `View` only to find a key's master; a stale
//! answer costs them a retry, never a wrong result: the master checks.)

pub mod history;
pub mod kv;
pub mod netns;
pub mod plot;
pub mod run;
pub mod serve;
pub mod tables;
