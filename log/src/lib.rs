//! ramcoord's replicated log: a sans-IO Raft core and its storage.
//!
//! The core ([`RawNode`]) has no sockets, threads, clocks, files or
//! randomness of its own: time is [`RawNode::tick`], the network is
//! [`RawNode::step`] and [`Ready::messages`], the disk is the [`Storage`]
//! the driver writes from each [`Ready`], and randomness comes from a seed in
//! the [`Config`]. That is what lets the simulator in the `ramcoord` crate
//! run thousands of seeded clusters with faults and replay any of them.
//!
//! Driving a node:
//!
//! ```
//! use bytes::Bytes;
//! use ramcoord_log::{Config, ConfState, EntryKind, MemStorage, RawNode, Role, Storage};
//!
//! let storage = MemStorage::bootstrap(&ConfState::with_voters([1]));
//! let mut node = RawNode::new(Config::new(1), storage).unwrap();
//! let mut applied = Vec::new();
//! for _ in 0..100 {
//!     node.tick();
//!     if node.role() == Role::Leader && applied.is_empty() {
//!         node.propose(Bytes::from_static(b"hello")).unwrap();
//!     }
//!     while node.has_ready() {
//!         let rd = node.ready();
//!         // 1. send rd.messages (none: a single node)
//!         // 2. persist
//!         if let Some(s) = &rd.snapshot { node.storage_mut().apply_snapshot(s.clone()).unwrap(); }
//!         node.storage_mut().append(&rd.entries).unwrap();
//!         if let Some(hs) = rd.hard_state { node.storage_mut().set_hard_state(hs).unwrap(); }
//!         // 3. send rd.persisted_messages (none), 4. apply
//!         applied.extend(rd.committed_entries.iter().filter(|e| e.kind == EntryKind::Normal).map(|e| e.data.clone()));
//!         node.advance(rd);
//!     }
//! }
//! assert_eq!(applied, vec![Bytes::from_static(b"hello")]);
//! ```

#![deny(missing_docs)]

pub mod config;
pub mod constants;
pub mod disk;
pub mod message;
pub mod progress;
pub mod raft;
pub mod raft_log;
pub mod ready;
pub mod storage;
pub mod types;
pub mod wire;

pub use config::{Config, ConfigError, InjectedBugs, ReadMode};
pub use message::{Message, MessageBody};
pub use raft::{ProposeError, RawNode, Refusal, Role, StartError};
pub use ready::Ready;
pub use storage::{MemStorage, Storage, StorageError};
pub use types::*;
