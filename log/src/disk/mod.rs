//! The log on disk (issue 4, in progress): the record format and the
//! hard-state file land first; segment files, recovery, snapshots and the
//! io_uring backend build on them.
//!
//! # Layout of a data directory
//!
//! ```text
//! hardstate            two 64-byte checksummed slots, written alternately
//! log/<first>.seg      fixed-size, preallocated segments of records
//! snapshot             the latest snapshot (temp file + fsync + rename)
//! ```
//!
//! # When a byte is durable
//!
//! A record or a hard state is durable once the `fdatasync` that follows its
//! write has returned. Nothing is acknowledged before that (the Raft core
//! sends votes and append acknowledgements only after `advance`).

pub mod hard_state;
pub mod record;
pub mod segment_log;
mod uring;

pub use segment_log::{BackendChoice, DiskStorage, OpenError, Recovery};
