//! Which network a process's cluster traffic uses (`--transport`).
//!
//! - `tcp`: everything over TCP (commodity hosts; the default).
//! - `rdma`: coordinator replicas replicate Raft over RDMA (appends written
//!   one-sidedly into each follower's message ring) and push configuration
//!   into masters' regions by RDMA WRITE; masters expose their
//!   configuration region as registered memory, read it without a lock
//!   (checksummed: a torn read is never acted on) and grant write access
//!   to one coordinator at a time (the newest leader they heard of; the
//!   older one's queue pair is moved to the error state first). Clients,
//!   `ctl` and masters' enlist/heartbeat requests stay on TCP. Needs a
//!   binary built with `--features rdma` and an RDMA device.

/// `--transport`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP only.
    #[default]
    Tcp,
    /// RDMA inside the cluster, TCP for clients.
    Rdma,
}

/// Whether this binary was built with RDMA support.
pub const RDMA_BUILT: bool = cfg!(feature = "rdma");

/// Why `--transport rdma` cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum RdmaUnavailable {
    /// Built without the `rdma` feature.
    #[error("--transport rdma: this binary was built without RDMA support; rebuild with `cargo build --release --features rdma` (needs libibverbs-dev, librdmacm-dev, libclang)")]
    NotBuilt,
    /// No usable device (the message names the devices found).
    #[cfg(feature = "rdma")]
    #[error(transparent)]
    NoDevice(#[from] ramcoord_net::rdma::RdmaError),
}

/// Fails unless `--transport rdma` can run here: built with the feature,
/// and a device present (the error names the devices found).
pub fn check_rdma() -> Result<(), RdmaUnavailable> {
    #[cfg(feature = "rdma")]
    {
        ramcoord_net::rdma::require_device()?;
        Ok(())
    }
    #[cfg(not(feature = "rdma"))]
    {
        Err(RdmaUnavailable::NotBuilt)
    }
}
