//! ramcoord: a fault-tolerant cluster coordinator for a RAMCloud-style
//! storage cluster.
//!
//! This crate holds the coordinator side: the deterministic simulator that
//! drives the Raft log ([`sim`]) and the linearizability checker its verdicts
//! rest on ([`lincheck`]). The replicated log itself lives in the
//! `ramcoord-log` crate.

#![deny(missing_docs)]

pub mod lincheck;
pub mod sim;
pub mod storage_crash;
