//! A coordinator replica's endpoint: what its thread publishes, and the
//! answers built from it (see the parent module).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ramcoord_net::admission::Admission;

use super::{health, Published, Response, METRICS_CONTENT_TYPE, READY_APPLY_LAG_MAX};
use crate::metrics::{level, Metrics, ReasonLabel};
use crate::protocol::{Status, View};

/// The status page (static: built into the binary; it draws itself from
/// the data embedded in it, then polls `/api/status`).
const PAGE: &str = include_str!("status.html");

/// The view is copied for the page only while someone asked for it within
/// this long (at scale it is the large part)...
const VIEW_WANTED_FOR: Duration = Duration::from_secs(10);

/// ...and at most this often (a copy is made on the replica's thread).
pub const VIEW_EVERY: Duration = Duration::from_secs(1);

/// What the replica's thread last published.
pub struct ReplicaState {
    /// Its status, as `ctl status` shows it.
    pub status: Status,
    /// It hears from a leader (or is one).
    pub hears_leader: bool,
    /// Its applied cluster state, if the page asked recently (copied at
    /// most every [`VIEW_EVERY`]).
    pub view: Option<Arc<View>>,
    /// Recent commit-point latencies (µs), oldest first.
    pub latencies_us: Vec<u64>,
}

/// What the replica's thread shares with the endpoint.
pub struct Observed {
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// Its last published state.
    pub state: Published<ReplicaState>,
    started: Instant,
    /// When (ms after `started`) the page last asked for the view; 0:
    /// never.
    view_asked_ms: AtomicU64,
    /// The transport's connection bounds and counts, if it has them.
    admission: Option<Arc<Admission>>,
    /// Connection refusals already counted into the metrics.
    refused_connections_counted: AtomicU64,
    /// Every replica's status page (`--http-peers`), by id.
    pages: std::collections::BTreeMap<u64, String>,
}

impl Observed {
    /// For a replica with these metrics (and, if known, its transport's
    /// admission counts).
    pub fn new(
        metrics: Arc<Metrics>,
        admission: Option<Arc<Admission>>,
        pages: std::collections::BTreeMap<u64, String>,
    ) -> Arc<Observed> {
        Arc::new(Observed {
            pages,
            metrics,
            state: Published::default(),
            started: Instant::now(),
            view_asked_ms: AtomicU64::new(0),
            admission,
            refused_connections_counted: AtomicU64::new(0),
        })
    }

    /// Whether the page asked for the view lately (the publisher then
    /// includes it).
    pub fn view_wanted(&self) -> bool {
        let asked = self.view_asked_ms.load(Ordering::Relaxed);
        asked > 0
            && self.started.elapsed().as_millis() as u64
                <= asked + VIEW_WANTED_FOR.as_millis() as u64
    }

    fn ask_view(&self) {
        let now = (self.started.elapsed().as_millis() as u64).max(1);
        self.view_asked_ms.store(now, Ordering::Relaxed);
    }

    /// Answers `path` (see the parent module's list).
    pub fn route(&self, path: &str) -> Response {
        match path {
            "/metrics" => {
                if let Some(a) = &self.admission {
                    self.metrics.connections.set(level(a.clients() as u64));
                    let refused = a.refused();
                    let counted = self
                        .refused_connections_counted
                        .swap(refused, Ordering::Relaxed);
                    if refused > counted {
                        self.metrics
                            .refused
                            .get_or_create(&ReasonLabel {
                                reason: "connection-bound".into(),
                            })
                            .inc_by(refused - counted);
                    }
                }
                Response::ok(METRICS_CONTENT_TYPE, self.metrics.encode())
            }
            "/health" => health(self.state.get().0),
            "/ready" => self.ready(),
            "/api/status" => {
                self.ask_view();
                Response::json(200, &self.status_json())
            }
            "/" | "/index.html" => {
                self.ask_view();
                // The data goes in with the page: it draws at once (and a
                // browser that runs no further script still shows it).
                // `<` escaped: no name in the data can close or open
                // anything in the page's script.
                let data = self.status_json().to_string().replace('<', "\\u003c");
                Response::ok(
                    "text/html; charset=utf-8",
                    PAGE.replace("/*STATUS_JSON*/null", &data),
                )
            }
            other => Response::not_found(other),
        }
    }

    /// `/ready`.
    fn ready(&self) -> Response {
        let (age, state) = self.state.get();
        let Some(st) = state else {
            return Response::json(503, &serde_json::json!({"ready": false, "why": "starting"}));
        };
        let lag = st.status.commit.saturating_sub(st.status.applied);
        let why = if age.is_none_or(|a| a > super::LIVE_WITHIN) {
            Some("the replica's loop is not turning".to_string())
        } else if !st.hears_leader || st.status.leader.is_none() {
            Some("no leader heard from".to_string())
        } else if lag > READY_APPLY_LAG_MAX {
            Some(format!("{lag} committed entries not applied yet"))
        } else {
            None
        };
        let body = serde_json::json!({
            "ready": why.is_none(),
            "why": why,
            "id": st.status.id,
            "role": st.status.role,
            "leader": st.status.leader,
            "term": st.status.term,
            "apply_lag": lag,
        });
        Response::json(if why.is_none() { 200 } else { 503 }, &body)
    }

    /// What the page shows, as JSON (names as the CLI writes them).
    pub fn status_json(&self) -> serde_json::Value {
        let (age, state) = self.state.get();
        let Some(st) = state else {
            return serde_json::json!({"starting": true});
        };
        let s = &st.status;
        let lower = |d: &dyn std::fmt::Debug| format!("{d:?}").to_lowercase();
        let mut replicas: Vec<serde_json::Value> = Vec::new();
        for id in s.voters.iter().chain(s.learners.iter()) {
            let addr = s
                .addresses
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, a)| a.clone());
            let matched = s.match_index.iter().find(|(i, _)| i == id).map(|(_, m)| *m);
            let contact = s
                .last_contact_ms
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, m)| *m);
            replicas.push(serde_json::json!({
                "id": id,
                "address": addr,
                "voter": s.voters.contains(id),
                "is_self": *id == s.id,
                "is_leader": s.leader == Some(*id),
                "match_index": if *id == s.id { Some(s.last_index) } else { matched },
                "lag": if *id == s.id { Some(0) } else { matched.map(|m| s.last_index.saturating_sub(m)) },
                "last_contact_ms": contact,
            }));
        }
        let view = st.view.as_ref().map(|v| {
            // Tablets per owner, in one pass.
            let mut owned: std::collections::HashMap<crate::cluster::ServerId, usize> =
                std::collections::HashMap::new();
            for t in &v.tables {
                for x in &t.tablets {
                    *owned.entry(x.owner).or_default() += 1;
                }
            }
            serde_json::json!({
                "servers": v.servers.iter().map(|x| serde_json::json!({
                    "id": x.id.to_string(),
                    "address": x.addr,
                    "status": lower(&x.status),
                    "tablets": owned.get(&x.id).copied().unwrap_or(0),
                })).collect::<Vec<_>>(),
                "tables": v.tables.iter().map(|t| serde_json::json!({
                    "name": t.name,
                    "id": t.id,
                    "state": lower(&t.state),
                    // Hashes as fractions of the key-hash space (the ring).
                    "tablets": t.tablets.iter().map(|x| serde_json::json!({
                        "start": x.start_hash as f64 / u64::MAX as f64,
                        "end": x.end_hash as f64 / u64::MAX as f64,
                        "start_hash": format!("{:#018x}", x.start_hash),
                        "owner": x.owner.to_string(),
                        "state": lower(&x.state),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "recent": v.recent.iter().rev().take(50).map(|o| serde_json::json!({
                    "seq": o.seq,
                    "term": o.term,
                    "kind": o.kind,
                    "summary": o.summary,
                    "rejected": o.rejected,
                    "commit_us": o.commit_us,
                    "complete_after_us": o.complete_after_us,
                    "complete": o.completed.is_some(),
                })).collect::<Vec<_>>(),
                "incomplete": v.incomplete.len(),
            })
        });
        let leader_addr = s.leader.and_then(|l| {
            s.addresses
                .iter()
                .find(|(i, _)| *i == l)
                .map(|(_, a)| a.clone())
        });
        serde_json::json!({
            "id": s.id,
            "role": s.role,
            "term": s.term,
            "commit": s.commit,
            "applied": s.applied,
            "leader": s.leader,
            "leader_address": leader_addr,
            "leader_page": s.leader.and_then(|l| self.pages.get(&l)),
            "active": s.active,
            "tls": !s.insecure,
            "published_ms_ago": age.map(|a| a.as_millis() as u64),
            "commit_p50_us": s.commit_p50_us,
            "commit_p99_us": s.commit_p99_us,
            "replicas": replicas,
            "view": view,
            "latencies_us": st.latencies_us,
        })
    }
}
