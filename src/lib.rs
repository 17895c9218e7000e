//! ramcoord: a fault-tolerant cluster coordinator for a RAMCloud-style
//! storage cluster.
//!
//! This crate holds the coordinator side: the cluster state and its log
//! records ([`cluster`]), the deterministic simulator that drives the Raft
//! log and the coordinator ([`sim`]), and the linearizability checker its
//! verdicts rest on ([`lincheck`]). The replicated log itself lives in the
//! `ramcoord-log` crate.

#![deny(missing_docs)]

pub mod addr;
pub mod chaos;
pub mod client;
pub mod cluster;
pub mod config_file;
pub mod coordinator;
pub mod ctl;
pub mod demo;
pub mod dev;
pub mod http;
pub mod lincheck;
pub mod local_cluster;
pub mod master;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod replica;
pub mod sim;
pub mod snapshot_file;
pub mod storage_crash;
pub mod transport;
