//! What a replica tells about itself: `status`, `view`, and the
//! rate-limited logs of what it refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ramcoord_log::{Role, Storage};

use super::Replica;
use crate::metrics::{level, MasterLabel, Metrics};
use crate::protocol as client;

impl<S: Storage> Replica<S> {
    /// What this replica measures (share it with whoever serves it).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The recent commit-point latencies this replica measured (µs,
    /// oldest first).
    pub fn recent_commit_latencies_us(&self) -> Vec<u64> {
        self.commit_latencies_us.iter().copied().collect()
    }

    /// Whether it hears from a leader (or is the leader).
    pub fn hears_leader(&self) -> bool {
        self.raft.role() == Role::Leader || self.raft.hears_leader()
    }

    /// Sets the metrics' levels from the state now (the driver calls this
    /// once per tick; see `crate::metrics`). With `per_master`, also the
    /// per-master push lags (a walk over the masters: the driver asks for
    /// it less often).
    pub fn sample_metrics(&mut self, per_master: bool) {
        let m = &self.metrics;
        let (role, term, commit) = self.status();
        let applied = self.cluster.applied_index();
        m.term.set(level(term));
        m.leader_id.set(level(self.raft.leader_id().unwrap_or(0)));
        m.active.set(i64::from(self.coord.is_active()));
        m.commit_index.set(level(commit));
        m.applied_index.set(level(applied));
        m.apply_lag_entries
            .set(level(commit.saturating_sub(applied)));
        m.log_last_index.set(level(self.raft.log().last_index()));
        let snap = self.raft.storage().snapshot();
        m.snapshot_bytes.set(level(snap.data.len() as u64));
        m.snapshot_index.set(level(snap.meta.index));
        m.config_version.set(level(self.cluster.version()));
        // Counted again only when the server list changed: a walk over
        // every server at every tick was a steady cost at 10,000 masters.
        let list = self.cluster.server_list_version();
        if self.servers_up_counted.0 != Some(list) {
            self.servers_up_counted = (Some(list), self.cluster.up_masters().len() as u64);
        }
        m.servers_up.set(level(self.servers_up_counted.1));
        m.tables.set(level(self.cluster.tables().count() as u64));
        m.incomplete_operations
            .set(level(self.cluster.incomplete().len() as u64));
        let (refusals, _) = self.raft.refusals();
        if refusals > self.raft_refusals_counted {
            m.refused
                .get_or_create(&crate::metrics::ReasonLabel {
                    reason: "raft".into(),
                })
                .inc_by(refusals - self.raft_refusals_counted);
            self.raft_refusals_counted = refusals;
        }
        if per_master {
            let leading = role == Role::Leader && self.coord.is_active();
            m.push_lag_seconds.clear();
            let mut slow = 0;
            for (server, lane) in &self.push_lanes {
                if !leading || lane.term != term {
                    continue;
                }
                slow += i64::from(lane.slow);
                let lag = lane.in_flight.map_or(0.0, |(_, at)| {
                    self.now.saturating_duration_since(at).as_secs_f64()
                });
                m.push_lag_seconds
                    .get_or_create(&MasterLabel {
                        master: server.to_string(),
                    })
                    .set(lag);
            }
            m.masters_slow.set(slow);
            // Failures of masters no longer in the list leave the family.
            let cluster = &self.cluster;
            self.failed_masters.retain(|id| {
                let keep = cluster.server(*id).is_some();
                if !keep {
                    m.push_failures.remove(&MasterLabel {
                        master: id.to_string(),
                    });
                }
                keep
            });
        }
    }

    /// This replica's view (see [`client::Status`]).
    pub fn status_report(&self) -> client::Status {
        let (role, term, commit) = self.status();
        let role = match role {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
        };
        let match_index = if self.raft.role() == Role::Leader {
            self.raft
                .conf()
                .members()
                .filter(|id| *id != self.cfg.id)
                .filter_map(|id| self.raft.progress(id).map(|p| (id, p.match_index)))
                .collect()
        } else {
            Vec::new()
        };
        let (p50, p99) = self.recent_commit_percentiles();
        let last_contact_ms = self
            .raft
            .conf()
            .members()
            .filter(|id| *id != self.cfg.id)
            .filter_map(|id| {
                let at = self.heard_from.get(&id)?;
                Some((
                    id,
                    self.now.saturating_duration_since(*at).as_millis() as u64,
                ))
            })
            .collect();
        client::Status {
            id: self.cfg.id,
            role: role.to_string(),
            term,
            commit,
            last_index: self.raft.log().last_index(),
            durable_index: self.raft.storage().durable_index(),
            applied: self.cluster.applied_index(),
            leader: self.raft.leader_id(),
            active: self.coord.is_active(),
            servers_up: self.cluster.up_masters().len() as u64,
            tables: self.cluster.tables().count() as u64,
            incomplete: self.cluster.incomplete().len() as u64,
            match_index,
            voters: self.raft.conf().voters.iter().copied().collect(),
            learners: self.raft.conf().learners.iter().copied().collect(),
            addresses: self
                .cfg
                .peer_addrs
                .iter()
                .map(|(id, a)| (*id, a.clone()))
                .collect(),
            commits_measured: self.commits_measured,
            commit_p50_us: p50,
            commit_p99_us: p99,
            insecure: !self.cfg.tls,
            last_contact_ms,
        }
    }

    fn recent_commit_percentiles(&self) -> (u64, u64) {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 100_000_000, 3)
            .expect("valid bounds");
        for &us in &self.commit_latencies_us {
            h.saturating_record(us);
        }
        if h.is_empty() {
            return (0, 0);
        }
        (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
    }

    /// This replica's cluster state (see [`client::View`]).
    pub fn view(&self) -> client::View {
        client::View {
            id: self.cfg.id,
            term: self.raft.term(),
            active: self.coord.is_active(),
            applied: self.cluster.applied_index(),
            servers: self.cluster.servers().cloned().collect(),
            tables: self.cluster.tables().cloned().collect(),
            incomplete: self
                .cluster
                .incomplete()
                .iter()
                .map(|(seq, p)| (*seq, p.op.summary(), p.targets.iter().copied().collect()))
                .collect(),
            recent: self.recent.iter().cloned().collect(),
        }
    }

    /// Logs the Raft core's refusals (a message from a non-member, a term
    /// out of bounds), at most once a second, with how many since.
    pub(super) fn log_refusals(&mut self) {
        let (lost, latest) = self.raft.lost_matches();
        let now = self.now;
        let quiet = |at: Option<Instant>| {
            at.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        };
        if lost != self.lost_matches_logged.0 && !quiet(self.lost_matches_logged.1) {
            if let Some((follower, matched, holds)) = latest {
                tracing::warn!(
                    follower,
                    acknowledged = matched,
                    holds,
                    findings = lost - self.lost_matches_logged.0,
                    "follower holds less than it acknowledged (its log lost entries); \
                     replicating to it again from what it holds"
                );
            }
            self.lost_matches_logged = (lost, Some(now));
        }
        let (count, last) = self.raft.refusals();
        if count == self.refusals_logged.0 {
            return;
        }
        let now = self.now;
        if self
            .refusals_logged
            .1
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        if let Some((from, why)) = last {
            tracing::warn!(
                from,
                reason = %why,
                refused = count - self.refusals_logged.0,
                "Raft messages refused (changed nothing)"
            );
        }
        self.refusals_logged = (count, Some(now));
    }
}
