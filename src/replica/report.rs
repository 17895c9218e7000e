//! What a replica tells about itself: `status`, `view`, and the
//! rate-limited logs of what it refused.

use std::time::{Duration, Instant};

use ramcoord_log::{Role, Storage};

use super::Replica;
use crate::protocol as client;

impl<S: Storage> Replica<S> {
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
