//! A master's endpoint (`master --http`): `/metrics`, `/health`, `/ready`
//! (see the parent module). Everything is read from the master's agent at
//! the time of the request, under its lock (held for a copy of a few
//! numbers), plus the heartbeat loop's counters.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{health, Published, Response, METRICS_CONTENT_TYPE};
use crate::master::serve_log::boottime_ns;
use crate::master::MasterAgent;
use crate::metrics::level;

/// What a master shares with its endpoint.
pub struct MasterObserved {
    agent: Arc<Mutex<MasterAgent>>,
    /// Touched by the heartbeat loop at each turn.
    pub loop_seen: Published<()>,
    registry: Registry,
    /// Heartbeats acknowledged by the active coordinator.
    pub heartbeats: Counter,
    /// Heartbeats that got no acknowledgement.
    pub heartbeat_failures: Counter,
    enlisted: Gauge,
    version: Gauge,
    term: Gauge,
    tablets: Gauge,
    lease_remaining: Gauge<f64, AtomicU64>,
}

impl MasterObserved {
    /// For the master whose agent this is.
    pub fn new(agent: Arc<Mutex<MasterAgent>>) -> Arc<MasterObserved> {
        let mut registry = Registry::with_prefix("ramcoord_master");
        let o = MasterObserved {
            agent,
            loop_seen: Published::default(),
            heartbeats: Counter::default(),
            heartbeat_failures: Counter::default(),
            enlisted: Gauge::default(),
            version: Gauge::default(),
            term: Gauge::default(),
            tablets: Gauge::default(),
            lease_remaining: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "heartbeats",
            "Heartbeats acknowledged by the active coordinator",
            o.heartbeats.clone(),
        );
        r.register(
            "heartbeat_failures",
            "Heartbeats not acknowledged",
            o.heartbeat_failures.clone(),
        );
        r.register(
            "enlisted",
            "1 once enlisted in the server list",
            o.enlisted.clone(),
        );
        r.register(
            "config_version",
            "Configuration version of the region it holds",
            o.version.clone(),
        );
        r.register(
            "config_term",
            "Term of the coordinator that wrote its region",
            o.term.clone(),
        );
        r.register("tablets", "Tablets it serves", o.tablets.clone());
        r.register(
            "lease_remaining_seconds",
            "Time left on its lease (0: none; it does not serve)",
            o.lease_remaining.clone(),
        );
        Arc::new(MasterObserved { registry, ..o })
    }

    /// (server id, version, tablets, lease left in seconds) now.
    fn sample(&self) -> (Option<String>, u64, u64, f64) {
        let a = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        let id = a.id().map(|i| i.to_string());
        // What it acts on (a write may be a part of it).
        let (version, term, tablets) = a
            .config()
            .map_or((0, 0, 0), |r| (r.version, r.term, r.tablets.len() as u64));
        let left_ns = a.lease_until().saturating_sub(boottime_ns());
        drop(a);
        self.enlisted.set(i64::from(id.is_some()));
        self.version.set(level(version));
        self.term.set(level(term));
        self.tablets.set(level(tablets));
        let left = left_ns as f64 / 1e9;
        self.lease_remaining.set(left);
        (id, version, tablets, left)
    }

    /// Answers `path`.
    pub fn route(&self, path: &str) -> Response {
        match path {
            "/metrics" => {
                self.sample();
                let mut out = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
                Response::ok(METRICS_CONTENT_TYPE, out)
            }
            "/health" => {
                // Before enlistment the process waits for the coordinator
                // (as long as it takes): alive, not ready.
                let (id, ..) = self.sample();
                if id.is_none() {
                    return Response::json(
                        200,
                        &serde_json::json!({"health": "ok", "enlisted": false}),
                    );
                }
                health(self.loop_seen.get().0)
            }
            "/ready" => {
                let (id, version, tablets, left) = self.sample();
                let why = match &id {
                    None => Some("not enlisted yet"),
                    Some(_) if left <= 0.0 => Some("no lease: not serving"),
                    _ => None,
                };
                let body = serde_json::json!({
                    "ready": why.is_none(),
                    "why": why,
                    "server": id,
                    "config_version": version,
                    "tablets": tablets,
                    "lease_remaining_s": left,
                });
                Response::json(if why.is_none() { 200 } else { 503 }, &body)
            }
            other => Response::not_found(other),
        }
    }
}
