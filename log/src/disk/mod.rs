//! The log on disk: the record format ([`record`]), the hard-state file
//! ([`hard_state`]), and [`DiskStorage`] ([`segment_log`]), which keeps the
//! Raft log in segment files behind the `Storage` trait, writing through
//! io_uring or `pwrite` + `fdatasync`.
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
//! A record is durable once the flush that carried it has finished (the
//! `fdatasync` returned, or the io_uring `RWF_DSYNC` write completed):
//! `DiskStorage::durable_index` says up to where. A hard state's term and
//! vote are durable when `set_hard_state` returns; a change of the commit
//! index alone is written without waiting for the disk (it is a hint that
//! may come back older after a crash, and `open` clamps it to the log: the
//! leader re-establishes it), which spares an `fdatasync` per commit. Nothing is acknowledged before that (the
//! Raft core sends votes and append acknowledgements only after `advance`).

pub mod fault;
pub mod hard_state;
pub mod record;
pub mod segment_log;
mod uring;

pub use uring::{FlushRing, SegmentWrite};

pub use segment_log::{
    BackendChoice, DiskStorage, Durability, OpenError, Recovery, SnapshotFileWriter,
};
