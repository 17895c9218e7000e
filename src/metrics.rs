//! What a coordinator replica measures about itself, in the Prometheus
//! text format (`--http ADDR`, path `/metrics`).
//!
//! Two kinds of figure, kept apart because they are made apart:
//!
//! - **events**, recorded where they happen by the sans-IO replica (a
//!   commit point reached, a push refused, an election started) and by
//!   its driver (a flush finished): histograms and counters whose updates
//!   are single atomic operations, so recording costs the Raft thread
//!   nothing it would notice, and records under the simulator change no
//!   decision (a seed replays the same);
//! - **levels** (term, indexes, sizes, lags, connections), set by the
//!   driver from the replica's state once per tick: a scrape sees them at
//!   most a tick old.
//!
//! The HTTP thread only encodes (`prometheus-client` does the format).
//! Every name starts with `ramcoord_`; units are the last word of a name
//! (`_seconds`, `_bytes`, `_entries`); counters end in `_total`.
//!
//! Label values are bounded: operation kinds and refusal reasons are fixed
//! sets; the per-master families are cleared and refilled from the
//! masters up at each sample, so a master that is gone leaves them.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// An operation kind (`create-table`, `enlist`, `noop`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

/// A master, named as the CLI names it (`1.1`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MasterLabel {
    /// The server id.
    pub master: String,
}

/// Why a request or message was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `role` (the peer's certificate lacks the role), `malformed` (not a
    /// message of the protocol), `raft` (a Raft message the core refused).
    pub reason: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 25 µs to ~3.3 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(25e-6, 2.0, 18))
}

/// A replica's metrics (see the module docs). Cheap to share: every field
/// is a handle to atomics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// From receiving (or proposing) an operation to knowing its record
    /// committed, by operation kind: the commit point as this replica saw
    /// it (the leader; followers propose nothing).
    pub commit_point_seconds: HistogramFamily<KindLabel>,
    /// From starting a flush of the log to its completion.
    pub fsync_seconds: Histogram,
    /// Elections this replica started (as candidate or pre-candidate).
    pub elections_started: Counter,
    /// The current term.
    pub term: Gauge,
    /// The leader this replica knows of (0: none).
    pub leader_id: Gauge,
    /// 1 if this replica is the active coordinator.
    pub active: Gauge,
    /// The commit index.
    pub commit_index: Gauge,
    /// The index the cluster state has applied.
    pub applied_index: Gauge,
    /// Entries committed and not yet applied.
    pub apply_lag_entries: Gauge,
    /// The last index in the log.
    pub log_last_index: Gauge,
    /// Bytes of log records on disk.
    pub log_bytes: Gauge,
    /// Bytes of the newest snapshot.
    pub snapshot_bytes: Gauge,
    /// The index the newest snapshot covers.
    pub snapshot_index: Gauge,
    /// The configuration version.
    pub config_version: Gauge,
    /// Servers up in the server list.
    pub servers_up: Gauge,
    /// Tables.
    pub tables: Gauge,
    /// Operations past their commit point, not complete.
    pub incomplete_operations: Gauge,
    /// Pushes to a master that did not land (refused, or its connection
    /// lost), by master.
    pub push_failures: Family<MasterLabel, Counter>,
    /// How long the push in flight to a master has waited, by master (0:
    /// none in flight). The leader only.
    pub push_lag_seconds: Family<MasterLabel, Gauge<f64, AtomicU64>>,
    /// Masters marked slow (not pushed to until they heartbeat).
    pub masters_slow: Gauge,
    /// Open connections on this replica's transport.
    pub connections: Gauge,
    /// Requests and messages refused, by reason.
    pub refused: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered under `ramcoord_`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ramcoord");
        let m = Metrics {
            commit_point_seconds: Family::new_with_constructor(latency_histogram),
            fsync_seconds: latency_histogram(),
            elections_started: Counter::default(),
            term: Gauge::default(),
            leader_id: Gauge::default(),
            active: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            apply_lag_entries: Gauge::default(),
            log_last_index: Gauge::default(),
            log_bytes: Gauge::default(),
            snapshot_bytes: Gauge::default(),
            snapshot_index: Gauge::default(),
            config_version: Gauge::default(),
            servers_up: Gauge::default(),
            tables: Gauge::default(),
            incomplete_operations: Gauge::default(),
            push_failures: Family::default(),
            push_lag_seconds: Family::default(),
            masters_slow: Gauge::default(),
            connections: Gauge::default(),
            refused: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "commit_point_seconds",
            "From receiving an operation to knowing its record committed, by kind (this replica's proposals)",
            m.commit_point_seconds.clone(),
        );
        r.register(
            "fsync_seconds",
            "From starting a flush of the log to its completion",
            m.fsync_seconds.clone(),
        );
        r.register(
            "elections_started",
            "Election rounds (pre-vote and vote) this replica started",
            m.elections_started.clone(),
        );
        r.register("term", "Current Raft term", m.term.clone());
        r.register(
            "leader_id",
            "The replica this one believes leads (0: none)",
            m.leader_id.clone(),
        );
        r.register(
            "active",
            "1 if this replica is the active coordinator",
            m.active.clone(),
        );
        r.register("commit_index", "Raft commit index", m.commit_index.clone());
        r.register(
            "applied_index",
            "Index the cluster state has applied",
            m.applied_index.clone(),
        );
        r.register(
            "apply_lag_entries",
            "Committed entries not yet applied",
            m.apply_lag_entries.clone(),
        );
        r.register(
            "log_last_index",
            "Last index in the log",
            m.log_last_index.clone(),
        );
        r.register(
            "log_bytes",
            "Bytes of log records on disk",
            m.log_bytes.clone(),
        );
        r.register(
            "snapshot_bytes",
            "Bytes of the newest snapshot",
            m.snapshot_bytes.clone(),
        );
        r.register(
            "snapshot_index",
            "Index the newest snapshot covers",
            m.snapshot_index.clone(),
        );
        r.register(
            "config_version",
            "Configuration version (one per committed operation)",
            m.config_version.clone(),
        );
        r.register(
            "servers_up",
            "Servers up in the server list",
            m.servers_up.clone(),
        );
        r.register("tables", "Tables", m.tables.clone());
        r.register(
            "incomplete_operations",
            "Operations past their commit point, not complete",
            m.incomplete_operations.clone(),
        );
        r.register(
            "push_failures",
            "Pushes to a master that did not land, by master",
            m.push_failures.clone(),
        );
        r.register(
            "push_lag_seconds",
            "Age of the push in flight to each master (leader only)",
            m.push_lag_seconds.clone(),
        );
        r.register(
            "masters_slow",
            "Masters marked slow (not pushed to until they heartbeat)",
            m.masters_slow.clone(),
        );
        r.register(
            "connections",
            "Open connections on this replica's transport",
            m.connections.clone(),
        );
        r.register(
            "refused",
            "Requests and messages refused, by reason",
            m.refused.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one refusal for `reason`.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records a commit point of an operation of `kind`.
    pub fn commit_point(&self, kind: &str, us: u64) {
        self.commit_point_seconds
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .observe(us as f64 / 1e6);
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A gauge's value from a count (saturating: a gauge is an i64).
pub fn level(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
