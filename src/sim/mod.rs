//! The deterministic simulator: seeded runs of a whole Raft group with
//! faults, checked after every step.
//!
//! Layout: [`world`] runs one seed (nodes, disks, network, clients, the
//! nemesis), [`checkers`] holds the safety invariants, [`kv`] the replicated
//! state machine the clients use. Later workloads (the coordinator's
//! operations) plug into the same harness.

pub mod checkers;
pub mod kv;
pub mod world;

pub use world::{run, FaultLevel, SimOptions, SimOutcome, SimStats};

use ramcoord_log::InjectedBugs;

/// The bugs `--inject-bug` can plant, with what each does.
pub const BUGS: &[(&str, &str)] = &[
    (
        "commit-previous-term",
        "a leader commits an entry of an earlier term by counting replicas (Raft figure 8)",
    ),
    (
        "forget-vote",
        "a vote is granted before it is durable and is never persisted",
    ),
    (
        "ack-before-persist",
        "a follower acknowledges an append before persisting it",
    ),
];

/// The planted-bug switches for `name`, or `None` if there is no such bug.
pub fn bug_by_name(name: &str) -> Option<InjectedBugs> {
    let mut b = InjectedBugs::default();
    match name {
        "commit-previous-term" => b.commit_previous_term = true,
        "forget-vote" => b.forget_vote = true,
        "ack-before-persist" => b.ack_before_persist = true,
        _ => return None,
    }
    Some(b)
}
