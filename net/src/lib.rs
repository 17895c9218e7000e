//! ramcoord's transports: TCP for commodity hosts, RDMA (one-sided writes)
//! for InfiniBand/RoCE, and an in-memory one for tests.
//!
//! Empty for now: the Raft core and the simulator exchange
//! `ramcoord_log::Message` values directly. The transport trait (framed
//! messages plus one-sided writes into a peer's registered region) lands
//! with the real-cluster issue, RDMA after it.
