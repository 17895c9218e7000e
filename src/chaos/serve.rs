//! The atomicity checks of a chaos run, from the masters' serve logs
//! ([`crate::master::serve_log`]) and the coordinator's final map.
//!
//! - **No key served by two masters at once.** For every request a
//!   master logged as served at time `t`, no other master may have held
//!   the key's tablet *and* a lease at `t`; and the master itself must
//!   have held both (a master serving past its lease, or outside its
//!   tablets, is a violation even when nobody else noticed). A master's
//!   lease counts from the heartbeat's send time, which makes its window
//!   a little wider than what it could really serve: the check can only
//!   err towards reporting.
//! - **After the final heal, every master serves exactly the tablets the
//!   coordinator's map gives it**, and each table's tablets cover its
//!   hash space once, without gaps or overlaps.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{ServerStatus, TableId};
use crate::master::serve_log::{ServeEvent, ServeWhat};
use crate::protocol::View;

/// Violations of each kind kept with their evidence (the count goes on).
const VIOLATIONS_KEPT: usize = 8;

/// What the checks found.
#[derive(Clone, Debug, Default)]
pub struct ServeCheck {
    /// Masters (servers) with a serve log.
    pub servers: usize,
    /// Requests they served.
    pub served: u64,
    /// Requests served by a master that did not hold the key's tablet and
    /// a lease at the time.
    pub unheld: u64,
    /// Requests served while another master held the key's tablet and a
    /// lease.
    pub twice: u64,
    /// What the first few of each kind were.
    pub evidence: Vec<String>,
}

impl ServeCheck {
    fn violation(&mut self, twice: bool, why: String) {
        let kept = self
            .evidence
            .iter()
            .filter(|e| e.starts_with("key served") == twice)
            .count();
        if twice {
            self.twice += 1;
        } else {
            self.unheld += 1;
        }
        if kept < VIOLATIONS_KEPT {
            self.evidence.push(why);
        }
    }

    /// Violations of either kind.
    pub fn violations(&self) -> u64 {
        self.unheld + self.twice
    }

    /// Whether every check passed.
    pub fn atomic(&self) -> bool {
        self.violations() == 0
    }
}

type Range = (TableId, u64, u64);

/// One server's windows.
#[derive(Default)]
struct Windows {
    /// (time, the tablets owned from then on), in time order.
    tablets: Vec<(u64, Vec<Range>)>,
    /// (time, the lease's end as of then: a running maximum).
    leases: Vec<(u64, u64)>,
}

impl Windows {
    fn tablets_at(&self, t: u64) -> &[Range] {
        let i = self.tablets.partition_point(|(at, _)| *at <= t);
        if i == 0 {
            &[]
        } else {
            &self.tablets[i - 1].1
        }
    }

    fn lease_at(&self, t: u64) -> u64 {
        let i = self.leases.partition_point(|(at, _)| *at <= t);
        if i == 0 {
            0
        } else {
            self.leases[i - 1].1
        }
    }

    /// Whether it could serve `(table, hash)` at `t`, and if not, why.
    fn holds(&self, t: u64, table: TableId, hash: u64) -> Result<(), String> {
        let lease = self.lease_at(t);
        if lease <= t {
            return Err(if lease == 0 {
                "no lease yet".to_string()
            } else {
                format!("its lease ended {} µs before", (t - lease) / 1000)
            });
        }
        if self
            .tablets_at(t)
            .iter()
            .any(|&(tb, s, e)| tb == table && s <= hash && hash <= e)
        {
            Ok(())
        } else {
            Err("not its tablet".to_string())
        }
    }
}

/// Checks that no key was served by two masters at once (see the module
/// docs); `events` are every master's serve logs, in any order.
pub fn check_serving(events: &[ServeEvent]) -> ServeCheck {
    let mut events: Vec<&ServeEvent> = events.iter().collect();
    events.sort_by_key(|e| e.t);
    let mut windows: BTreeMap<&str, Windows> = BTreeMap::new();
    for e in &events {
        let w = windows.entry(&e.server).or_default();
        match &e.what {
            ServeWhat::Tablets { tablets, .. } => w.tablets.push((e.t, tablets.clone())),
            ServeWhat::Lease { until } => {
                let until = w.leases.last().map_or(*until, |l| l.1.max(*until));
                w.leases.push((e.t, until));
            }
            ServeWhat::Served { .. } => {}
        }
    }
    let mut out = ServeCheck {
        servers: windows.len(),
        ..ServeCheck::default()
    };
    for e in &events {
        let ServeWhat::Served { f, table, hash } = &e.what else {
            continue;
        };
        out.served += 1;
        if let Err(why) = windows[e.server.as_str()].holds(e.t, *table, *hash) {
            out.violation(false, format!(
                "server {} served a {f} of table {table} hash {hash:#x} at {} ns without holding it: {why}",
                e.server, e.t
            ));
        }
        for (other, w) in &windows {
            if *other != e.server && w.holds(e.t, *table, *hash).is_ok() {
                out.violation(true, format!(
                    "key served by two masters at once: server {} served a {f} of table {table} hash {hash:#x} at {} ns while server {other} held that tablet (its lease ran to {} ns)",
                    e.server,
                    e.t,
                    w.lease_at(e.t)
                ));
            }
        }
    }
    out
}

/// Checks the final state after the last heal: each table's tablets cover
/// its hash space once, and every master that is up holds (by its serve
/// log's last `tablets` event) exactly the tablets the map gives it.
pub fn check_final(view: &View, events: &[ServeEvent]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut want: BTreeMap<String, BTreeSet<Range>> = BTreeMap::new();
    for s in &view.servers {
        if s.status == ServerStatus::Up && s.services & crate::cluster::services::MASTER != 0 {
            want.insert(s.id.to_string(), BTreeSet::new());
        }
    }
    for t in &view.tables {
        let mut next = Some(0u64);
        for tb in &t.tablets {
            if Some(tb.start_hash) != next || tb.end_hash < tb.start_hash {
                bad.push(format!(
                    "table {}'s tablets do not cover its hash space once: a tablet starts at {:#x}, expected {}",
                    t.name,
                    tb.start_hash,
                    next.map_or("nothing (the space was covered)".into(), |n| format!("{n:#x}"))
                ));
            }
            next = tb.end_hash.checked_add(1);
            want.entry(tb.owner.to_string()).or_default().insert((
                t.id,
                tb.start_hash,
                tb.end_hash,
            ));
        }
        if next.is_some() {
            bad.push(format!(
                "table {}'s tablets end before the top of the hash space",
                t.name
            ));
        }
    }
    let mut have: BTreeMap<&str, (u64, BTreeSet<Range>)> = BTreeMap::new();
    for e in events {
        if let ServeWhat::Tablets { tablets, .. } = &e.what {
            let slot = have.entry(&e.server).or_insert((0, BTreeSet::new()));
            if e.t >= slot.0 {
                *slot = (e.t, tablets.iter().copied().collect());
            }
        }
    }
    for (server, tablets) in &want {
        match have.get(server.as_str()) {
            None if tablets.is_empty() => {}
            None => bad.push(format!(
                "server {server} owns {} tablets in the map but never applied a configuration",
                tablets.len()
            )),
            Some((_, held)) if held != tablets => bad.push(format!(
                "server {server} serves {} tablets, the map gives it {} (missing {:?}, extra {:?})",
                held.len(),
                tablets.len(),
                tablets.difference(held).collect::<Vec<_>>(),
                held.difference(tablets).collect::<Vec<_>>()
            )),
            Some(_) => {}
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, server: &str, what: ServeWhat) -> ServeEvent {
        ServeEvent {
            t,
            server: server.into(),
            what,
        }
    }

    fn tablets(v: Vec<Range>) -> ServeWhat {
        ServeWhat::Tablets {
            version: 1,
            tablets: v,
        }
    }

    fn served(table: TableId, hash: u64) -> ServeWhat {
        ServeWhat::Served {
            f: "get".into(),
            table,
            hash,
        }
    }

    #[test]
    fn a_handover_after_the_lease_is_atomic() {
        let log = vec![
            ev(0, "1.1", tablets(vec![(1, 0, u64::MAX)])),
            ev(10, "1.1", ServeWhat::Lease { until: 100 }),
            ev(50, "1.1", served(1, 7)),
            // 1.1 was declared crashed; 2.1 gets the tablet after its lease.
            ev(150, "2.1", ServeWhat::Lease { until: 400 }),
            ev(160, "2.1", tablets(vec![(1, 0, u64::MAX)])),
            ev(170, "2.1", served(1, 7)),
        ];
        let c = check_serving(&log);
        assert_eq!((c.served, c.violations()), (2, 0), "{:?}", c.evidence);
    }

    #[test]
    fn a_cut_off_master_serving_past_its_lease_is_caught() {
        let log = vec![
            ev(0, "1.1", tablets(vec![(1, 0, u64::MAX)])),
            ev(10, "1.1", ServeWhat::Lease { until: 100 }),
            ev(150, "2.1", ServeWhat::Lease { until: 400 }),
            ev(160, "2.1", tablets(vec![(1, 0, u64::MAX)])),
            ev(200, "1.1", served(1, 7)), // the planted bug
        ];
        let c = check_serving(&log);
        assert_eq!((c.unheld, c.twice), (1, 1), "{:?}", c.evidence);
        assert!(c.evidence[0].contains("lease ended"));
        assert!(c.evidence[1].contains("two masters at once"));
        // Serving outside its tablets is caught too.
        let c = check_serving(&[
            ev(10, "1.1", ServeWhat::Lease { until: 100 }),
            ev(20, "1.1", tablets(vec![(1, 0, 9)])),
            ev(30, "1.1", served(1, 10)),
        ]);
        assert_eq!((c.unheld, c.twice), (1, 0));
        assert!(c.evidence[0].contains("not its tablet"));
    }

    #[test]
    fn the_final_map_must_match_what_masters_hold() {
        use crate::cluster::{Server, ServerId, Table, TableState, Tablet, TabletState};
        let id = |i| ServerId {
            index: i,
            generation: 1,
        };
        let server = |i| Server {
            id: id(i),
            addr: format!("m{i}:1"),
            services: crate::cluster::services::MASTER,
            status: ServerStatus::Up,
            nonce: 0,
        };
        let tablet = |s, e, o| Tablet {
            start_hash: s,
            end_hash: e,
            owner: id(o),
            state: TabletState::Normal,
        };
        let mut view = View {
            id: 1,
            term: 1,
            active: true,
            applied: 9,
            servers: vec![server(1), server(2)],
            tables: vec![Table {
                id: 3,
                name: "kv".into(),
                state: TableState::Normal,
                tablets: vec![tablet(0, 99, 1), tablet(100, u64::MAX, 2)],
            }],
            incomplete: Vec::new(),
            recent: Vec::new(),
        };
        let log = vec![
            ev(1, "1.1", tablets(vec![(3, 0, 99)])),
            ev(1, "2.1", tablets(vec![(3, 100, u64::MAX)])),
        ];
        assert_eq!(check_final(&view, &log), Vec::<String>::new());
        // A master that still holds a tablet it lost.
        let stale = vec![
            ev(1, "1.1", tablets(vec![(3, 0, 99), (3, 100, u64::MAX)])),
            ev(1, "2.1", tablets(vec![(3, 100, u64::MAX)])),
        ];
        assert_eq!(check_final(&view, &stale).len(), 1);
        // A gap in the hash space.
        view.tables[0].tablets[1].start_hash = 101;
        assert!(check_final(&view, &log)[0].contains("cover"));
    }
}
