//! How a Raft node is tuned. Defaults come from [`crate::constants`].

use crate::constants::*;
use crate::types::NodeId;

/// How linearizable reads are confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex (thesis §6.4): the leader confirms it is still leader with a
    /// round of heartbeats to a quorum after the read arrives. No clock
    /// assumption.
    Safe,
    /// Lease reads (thesis §6.4.1): the leader answers at once while its
    /// lease holds. The lease starts when the leader *sent* the latest
    /// heartbeat a quorum answered and lasts
    /// `election_timeout_ticks - drift_margin_ticks` of the leader's ticks.
    ///
    /// **Clock assumption:** with check-quorum on, a follower refuses votes
    /// for `election_timeout_ticks` of *its own* ticks after hearing from the
    /// leader; the lease is safe only if, over one election timeout, no
    /// follower's tick clock runs faster than the leader's by more than
    /// `drift_margin_ticks`. A restarted node has forgotten whom it heard
    /// from, so in this mode every node refuses votes for one election
    /// timeout after it starts. Requires `check_quorum`.
    Lease {
        /// Ticks of drift the lease gives up for safety.
        drift_margin_ticks: u64,
    },
}

/// Faults planted on purpose so the simulator can prove it catches them.
/// Never set outside `ramcoord sim --inject-bug`.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// A leader commits an entry of an earlier term by counting replicas
    /// (the figure-8 bug of the Raft paper).
    pub commit_previous_term: bool,
    /// A vote is granted before it is durable, and is never persisted.
    pub forget_vote: bool,
    /// A follower acknowledges an append before persisting it.
    pub ack_before_persist: bool,
    /// A leader keeps its match index for a follower that says it lost
    /// entries it acknowledged (the follower then lags for ever).
    pub keep_lost_match: bool,
}

/// A node's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Minimum election timeout; each node randomises in `[t, 2t)`.
    pub election_timeout_ticks: u64,
    /// A leader heartbeats every this many ticks.
    pub heartbeat_interval_ticks: u64,
    /// Campaign with a pre-vote round first (§9.6): a node that cannot win
    /// does not raise terms and depose a healthy leader.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for an
    /// election timeout, and followers ignore vote requests while they hear
    /// from a leader (the leader lease).
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// Entries per append message.
    pub append_entries_max: usize,
    /// Payload bytes per append message.
    pub append_bytes_max: u64,
    /// Unacknowledged appends per follower.
    pub inflight_appends_max: usize,
    /// Uncommitted payload bytes before proposals are refused.
    pub uncommitted_bytes_max: u64,
    /// InstallSnapshot chunk size.
    pub snapshot_chunk_bytes: usize,
    /// Seed of the node's random source (election timeouts).
    pub seed: u64,
    /// Planted bugs (simulator only).
    #[doc(hidden)]
    pub bugs: InjectedBugs,
}

impl Config {
    /// Defaults for node `id`.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_ticks: ELECTION_TIMEOUT_TICKS_DEFAULT,
            heartbeat_interval_ticks: HEARTBEAT_INTERVAL_TICKS_DEFAULT,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            append_entries_max: APPEND_ENTRIES_MAX_DEFAULT,
            append_bytes_max: APPEND_BYTES_MAX_DEFAULT,
            inflight_appends_max: INFLIGHT_APPENDS_MAX_DEFAULT,
            uncommitted_bytes_max: UNCOMMITTED_BYTES_MAX_DEFAULT,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES_DEFAULT,
            seed: id,
            bugs: InjectedBugs::default(),
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ReservedId);
        }
        if self.heartbeat_interval_ticks == 0
            || self.heartbeat_interval_ticks >= self.election_timeout_ticks
        {
            return Err(ConfigError::HeartbeatInterval {
                heartbeat_ticks: self.heartbeat_interval_ticks,
                election_ticks: self.election_timeout_ticks,
            });
        }
        if self.inflight_appends_max == 0 || self.inflight_appends_max > INFLIGHT_APPENDS_MAX {
            return Err(ConfigError::InflightAppends(self.inflight_appends_max));
        }
        if self.append_entries_max == 0 || self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::ZeroBatch);
        }
        if let ReadMode::Lease { drift_margin_ticks } = self.read_mode {
            if !self.check_quorum {
                return Err(ConfigError::LeaseWithoutCheckQuorum);
            }
            if drift_margin_ticks >= self.election_timeout_ticks {
                return Err(ConfigError::LeaseMargin {
                    margin_ticks: drift_margin_ticks,
                    election_ticks: self.election_timeout_ticks,
                });
            }
        }
        Ok(())
    }
}

/// What is wrong with a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Node id 0 means "none" on the wire.
    #[error("node id 0 is reserved")]
    ReservedId,
    /// The heartbeat interval is zero or not below the election timeout.
    #[error("heartbeat interval ({heartbeat_ticks}) must be at least 1 and below the election timeout ({election_ticks})")]
    HeartbeatInterval {
        /// The heartbeat interval, in ticks.
        heartbeat_ticks: u64,
        /// The election timeout, in ticks.
        election_ticks: u64,
    },
    /// `inflight_appends_max` out of range.
    #[error("inflight_appends_max ({0}) must be in 1..={INFLIGHT_APPENDS_MAX}")]
    InflightAppends(usize),
    /// A batch bound of zero.
    #[error("append_entries_max and snapshot_chunk_bytes must be positive")]
    ZeroBatch,
    /// Lease reads without check-quorum (nothing would end the lease).
    #[error("lease reads need check_quorum (the lease is the followers' vote refusal)")]
    LeaseWithoutCheckQuorum,
    /// The lease's drift margin swallows the election timeout.
    #[error("the lease drift margin ({margin_ticks}) must be below the election timeout ({election_ticks})")]
    LeaseMargin {
        /// The margin, in ticks.
        margin_ticks: u64,
        /// The election timeout, in ticks.
        election_ticks: u64,
    },
}
