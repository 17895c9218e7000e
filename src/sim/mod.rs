//! The deterministic simulator: seeded runs of a whole Raft group with
//! faults, checked after every step.
//!
//! Layout: [`world`] runs one seed (nodes, disks, network, clients, the
//! nemesis), [`checkers`] holds the safety invariants, [`kv`] the replicated
//! state machine of the Raft workload's clients. The coordinator workload
//! runs the cluster state machine (`crate::cluster`) on the same replicas,
//! with masters and their configuration regions (`world/coordinator.rs`).

pub mod checkers;
pub mod kv;
pub mod world;

pub use world::{run, FaultLevel, SimOptions, SimOutcome, SimStats, Workload};

use crate::coordinator::CoordinatorBugs;
use crate::master::MasterBugs;
use ramcoord_log::InjectedBugs;

/// A bug `--inject-bug` can plant.
#[derive(Clone, Copy, Debug)]
pub struct PlantedBug {
    /// Its name on the command line.
    pub name: &'static str,
    /// The workload that exposes it.
    pub workload: &'static str,
    /// What it does.
    pub what: &'static str,
    /// The invariants it breaks: a seed catches it only by reporting one
    /// of these (a seed failing for another reason says the checker saw
    /// a consequence, or that something else is wrong).
    pub invariants: &'static [&'static str],
}

/// The bugs `--inject-bug` can plant.
pub const BUGS: &[PlantedBug] = &[
    PlantedBug {
        name: "commit-previous-term",
        workload: "raft",
        what: "a leader commits an entry of an earlier term by counting replicas (Raft figure 8)",
        invariants: &["leader completeness", "state machine safety"],
    },
    PlantedBug {
        name: "forget-vote",
        workload: "raft",
        what: "a vote is granted before it is durable and is never persisted",
        invariants: &["election safety"],
    },
    PlantedBug {
        name: "ack-before-persist",
        workload: "raft",
        what: "a follower acknowledges an append before persisting it",
        invariants: &["leader completeness", "state machine safety"],
    },
    PlantedBug {
        name: "keep-lost-match",
        workload: "raft",
        what: "a leader keeps its match index for a follower that lost entries it acknowledged",
        invariants: &["catch up"],
    },
    PlantedBug {
        name: "ack-before-flush",
        workload: "coordinator",
        what: "the replica's driver sends acknowledgements and votes before their write is durable",
        invariants: &[
            "leader completeness",
            "state machine safety",
            "election safety",
            "committed entry changed",
        ],
    },
    PlantedBug {
        name: "complete-before-push",
        workload: "coordinator",
        what: "the completion record is written before the masters acknowledged the pushes",
        invariants: &["completion before push"],
    },
    PlantedBug {
        name: "no-roll-forward",
        workload: "coordinator",
        what: "a new leader does not finish the operations committed before its term",
        invariants: &["atomicity"],
    },
    PlantedBug {
        name: "forget-clients",
        workload: "coordinator",
        what: "clients' ids are ignored: a retried operation is proposed and applied again",
        invariants: &["exactly once"],
    },
    PlantedBug {
        name: "grant-before-release",
        workload: "coordinator",
        what: "a migrated tablet's new owner is pushed before the old owner let go",
        invariants: &["tablet held twice"],
    },
    PlantedBug {
        name: "push-past-the-lane",
        workload: "coordinator",
        what: "the replica pushes to a master while its last push there is still in flight",
        invariants: &["push lane"],
    },
    PlantedBug {
        name: "narrow-part",
        workload: "coordinator",
        what: "a part of a configuration covers one unacknowledged operation's tables, not all of them",
        invariants: &["configuration", "tablet held twice"],
    },
    PlantedBug {
        name: "accept-stale-term",
        workload: "coordinator",
        what: "a master applies a configuration pushed from an older term",
        invariants: &["stale push won"],
    },
];

/// Every planted bug a run may carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// In the Raft core.
    pub raft: InjectedBugs,
    /// In the coordinator.
    pub coordinator: CoordinatorBugs,
    /// In the masters.
    pub master: MasterBugs,
    /// In the replica's driver (`crate::replica`).
    pub replica: crate::replica::NodeBugs,
}

/// The planted-bug switches for `name`, or `None` if there is no such bug.
pub fn bug_by_name(name: &str) -> Option<PlantedBugs> {
    let mut b = PlantedBugs::default();
    match name {
        "commit-previous-term" => b.raft.commit_previous_term = true,
        "forget-vote" => b.raft.forget_vote = true,
        "ack-before-persist" => b.raft.ack_before_persist = true,
        "keep-lost-match" => b.raft.keep_lost_match = true,
        "ack-before-flush" => b.replica.ack_before_flush = true,
        "complete-before-push" => b.coordinator.complete_before_push = true,
        "no-roll-forward" => b.coordinator.no_roll_forward = true,
        "forget-clients" => b.coordinator.forget_clients = true,
        "grant-before-release" => b.coordinator.grant_before_release = true,
        "push-past-the-lane" => b.replica.push_past_the_lane = true,
        "narrow-part" => b.coordinator.narrow_part = true,
        "accept-stale-term" => b.master.accept_stale_term = true,
        _ => return None,
    }
    Some(b)
}
