//! Roll-forward of every operation kind, by name (RAMCloud's
//! `recover_incomplete_*`): a leader commits an operation, pushes some of
//! its configuration (or none), and dies; the next leader must finish it.
//! The log, the replicas and the masters are plain values here; the
//! simulator covers the same paths with faults and timing.

use std::collections::BTreeMap;

use super::*;
use crate::cluster::{
    services, ClusterState, Outcome, Rejection, ServerId, TableState, TabletState,
};
use crate::master::{MasterAction, MasterAgent, MasterBugs, MasterConfig, RegionOutcome};

struct Harness {
    state: ClusterState,
    index: u64,
    masters: BTreeMap<ServerId, MasterAgent>,
}

impl Harness {
    /// A cluster with `n` enlisted masters, each holding its configuration.
    fn with_masters(n: u32) -> Harness {
        let mut h = Harness {
            state: ClusterState::default(),
            index: 0,
            masters: BTreeMap::new(),
        };
        for i in 0..n {
            let rec = Record::Commit(Op::EnlistServer {
                addr: format!("m{i}:7000"),
                services: services::MASTER,
                nonce: 1000 + i as u64,
            });
            let Outcome::Committed(crate::cluster::Effect::Enlisted(id)) = h.commit(&rec) else {
                panic!("enlist failed");
            };
            let mut m = agent(MasterBugs::default());
            m.enlisted(id);
            h.masters.insert(id, m);
        }
        let mut c = leader(1, &h.state);
        h.settle(&mut c, |_| true);
        assert!(h.state.incomplete().is_empty());
        h
    }

    /// Creates table `name` with `tablets` tablets and lets it complete.
    fn create_table(&mut self, name: &str, tablets: u32) {
        let mut c = leader(2, &self.state);
        let req = Request::CreateTable {
            name: name.into(),
            tablets,
        };
        let rec = c.prepare(&self.state, &req).unwrap();
        self.commit(&rec);
        self.settle(&mut c, |_| true);
    }

    fn ids(&self) -> Vec<ServerId> {
        self.masters.keys().copied().collect()
    }

    fn commit(&mut self, rec: &Record) -> Outcome {
        self.index += 1;
        let out = self.state.apply(self.index, &rec.encode().unwrap());
        self.state.check().expect("state invariants");
        out
    }

    /// Executes actions: pushes reach masters for which `reach` says so
    /// (and are acknowledged); proposals commit at once.
    fn execute(
        &mut self,
        c: &mut Coordinator,
        actions: Vec<Action>,
        reach: &dyn Fn(ServerId) -> bool,
    ) -> usize {
        let n = actions.len();
        for a in actions {
            match a {
                Action::Push {
                    to,
                    region,
                    version,
                    ..
                } => {
                    if !reach(to) {
                        continue;
                    }
                    let Some(m) = self.masters.get_mut(&to) else {
                        continue;
                    };
                    match m.on_region_write(&region) {
                        RegionOutcome::Applied { .. } => c.on_push_acked(to, c.term(), version),
                        other => panic!("push to {to} refused: {other:?}"),
                    }
                    self.assert_no_tablet_held_twice();
                }
                Action::Propose(rec) => {
                    self.commit(&rec);
                }
            }
        }
        n
    }

    /// Runs the coordinator until it has nothing left to do.
    fn settle(&mut self, c: &mut Coordinator, reach: impl Fn(ServerId) -> bool) {
        for _ in 0..1000 {
            let mut acts = c.on_applied(&self.state);
            acts.extend(c.tick(&self.state));
            for m in self.ids() {
                c.on_heartbeat(m);
            }
            if self.execute(c, acts, &reach) == 0 && self.state.incomplete().is_empty() {
                return;
            }
        }
        panic!("did not settle: {:?}", self.state.incomplete());
    }

    /// No two up masters hold configurations that share a key.
    fn assert_no_tablet_held_twice(&self) {
        let held: Vec<(ServerId, &crate::cluster::region::RegionTablet)> = self
            .masters
            .iter()
            .filter(|(id, _)| self.state.is_up(**id))
            .filter_map(|(id, m)| Some((*id, m.config()?)))
            .flat_map(|(id, c)| c.tablets.iter().map(move |t| (id, t)))
            .collect();
        for (i, (a, ta)) in held.iter().enumerate() {
            for (b, tb) in &held[i + 1..] {
                let overlap = ta.table == tb.table
                    && ta.start_hash <= tb.end_hash
                    && tb.start_hash <= ta.end_hash;
                assert!(!overlap, "{a} and {b} both hold {ta:?} / {tb:?}");
            }
        }
    }

    /// Every up master holds exactly the tablets the state says it should,
    /// and a server list no newer than the state's (lists are pushed only
    /// with tablet changes: they may lag).
    fn assert_masters_match(&self) {
        for (id, m) in &self.masters {
            if !self.state.is_up(*id) {
                continue;
            }
            let want = self.state.region_for(*id, 0);
            let have = m.config().expect("a configuration");
            assert!(
                have.server_list_version <= want.server_list_version,
                "{id}: list {} ahead of {}",
                have.server_list_version,
                want.server_list_version
            );
            assert_eq!(have.tablets, want.tablets, "{id}");
        }
    }
}

fn agent(bugs: MasterBugs) -> MasterAgent {
    MasterAgent::new(
        MasterConfig::default(),
        "m:1".into(),
        services::MASTER,
        1,
        bugs,
    )
}

fn leader(term: u64, state: &ClusterState) -> Coordinator {
    let mut c = Coordinator::new(CoordinatorConfig::default(), CoordinatorBugs::default());
    c.set_leadership(true, term, state);
    c
}

/// Commits `req` under a first leader that reaches only `reach_first`
/// before dying, then lets a second leader finish. Returns the harness.
fn roll_forward(
    h: &mut Harness,
    req: Request,
    reach_first: impl Fn(ServerId) -> bool,
) -> (Seq, Outcome) {
    let mut a = leader(2, &h.state);
    let rec = a.prepare(&h.state, &req).expect("preparable");
    let out = h.commit(&rec);
    let seq = h.index;
    assert!(matches!(out, Outcome::Committed(_)), "{out:?}");
    if let Outcome::Committed(crate::cluster::Effect::Enlisted(id)) = out {
        let mut m = agent(MasterBugs::default());
        m.enlisted(id);
        h.masters.insert(id, m);
    }
    assert!(h.state.incomplete().contains_key(&seq));
    // The first leader pushes once (to whom it reaches) and dies before
    // writing the completion.
    let acts: Vec<Action> = a
        .on_applied(&h.state)
        .into_iter()
        .filter(|a| matches!(a, Action::Push { .. }))
        .collect();
    h.execute(&mut a, acts, &reach_first);
    drop(a);
    assert!(h.state.incomplete().contains_key(&seq), "not complete yet");
    let mut b = leader(3, &h.state);
    h.settle(&mut b, |_| true);
    assert!(h.state.incomplete().is_empty());
    h.assert_masters_match();
    (seq, out)
}

#[test]
fn recover_incomplete_enlist() {
    let mut h = Harness::with_masters(2);
    let req = Request::Enlist {
        addr: "m9:7000".into(),
        services: services::MASTER,
        nonce: 77,
    };
    let (_, out) = roll_forward(&mut h, req, |_| false);
    let Outcome::Committed(crate::cluster::Effect::Enlisted(id)) = out else {
        panic!("{out:?}")
    };
    assert!(h.state.is_up(id));
    // A retried enlistment of the same process is recognised.
    let again = Record::Commit(Op::EnlistServer {
        addr: "m9:7000".into(),
        services: services::MASTER,
        nonce: 77,
    });
    assert_eq!(
        h.commit(&again),
        Outcome::Rejected(Rejection::AlreadyEnlisted(id))
    );
}

#[test]
fn recover_incomplete_create_table() {
    let mut h = Harness::with_masters(3);
    let first = h.ids()[0];
    let req = Request::CreateTable {
        name: "users".into(),
        tablets: 4,
    };
    roll_forward(&mut h, req, |m| m == first);
    let t = h.state.table("users").unwrap();
    assert_eq!(t.state, TableState::Normal);
    assert_eq!(t.tablets.len(), 4);
    // Owners balanced over the three masters.
    for m in h.ids() {
        assert!(!h.state.tablets_of(m).is_empty());
    }
}

#[test]
fn recover_incomplete_drop_table() {
    let mut h = Harness::with_masters(2);
    h.create_table("t", 2);
    roll_forward(&mut h, Request::DropTable { name: "t".into() }, |_| false);
    assert!(h.state.table("t").is_none());
    for m in h.masters.values() {
        assert!(m.config().unwrap().tablets.is_empty());
    }
}

#[test]
fn recover_incomplete_split_tablet() {
    let mut h = Harness::with_masters(2);
    h.create_table("t", 1);
    let req = Request::SplitTablet {
        table: "t".into(),
        split_hash: 1 << 63,
    };
    roll_forward(&mut h, req, |_| false);
    let t = h.state.table("t").unwrap();
    assert_eq!(t.tablets.len(), 2);
    assert_eq!(t.tablets[1].start_hash, 1 << 63);
}

#[test]
fn recover_incomplete_migrate_tablet() {
    let mut h = Harness::with_masters(2);
    h.create_table("t", 1);
    let from = h.state.table("t").unwrap().tablets[0].owner;
    let to = *h.ids().iter().find(|m| **m != from).unwrap();
    let req = Request::MigrateTablet {
        table: "t".into(),
        hash: 5,
        to,
    };
    // The first leader reaches only the new owner, and so tells nobody:
    // the new owner waits for the old one to let go.
    roll_forward(&mut h, req, |m| m == to);
    assert_eq!(h.state.table("t").unwrap().tablets[0].owner, to);
    assert!(h.masters[&from].config().unwrap().tablets.is_empty());
}

/// A migration's new owner is pushed nothing until the old owner has
/// acknowledged letting go; the planted bug pushes both at once.
#[test]
fn a_migrated_tablet_is_granted_only_after_it_is_released() {
    for bug in [false, true] {
        let mut h = Harness::with_masters(2);
        h.create_table("t", 1);
        let from = h.state.table("t").unwrap().tablets[0].owner;
        let to = *h.ids().iter().find(|m| **m != from).unwrap();
        let mut c = Coordinator::new(
            CoordinatorConfig::default(),
            CoordinatorBugs {
                grant_before_release: bug,
                ..CoordinatorBugs::default()
            },
        );
        c.set_leadership(true, 4, &h.state);
        let rec = c
            .prepare(
                &h.state,
                &Request::MigrateTablet {
                    table: "t".into(),
                    hash: 5,
                    to,
                },
            )
            .unwrap();
        h.commit(&rec);
        let pushed: Vec<ServerId> = c
            .on_applied(&h.state)
            .into_iter()
            .filter_map(|a| match a {
                Action::Push { to, .. } => Some(to),
                _ => None,
            })
            .collect();
        if bug {
            assert_eq!(pushed.len(), 2, "both at once: {pushed:?}");
        } else {
            assert_eq!(pushed, vec![from], "the old owner first");
            c.on_push_acked(from, 4, h.state.version());
            let next: Vec<ServerId> = c
                .on_applied(&h.state)
                .into_iter()
                .filter_map(|a| match a {
                    Action::Push { to, .. } => Some(to),
                    _ => None,
                })
                .collect();
            assert_eq!(next, vec![to], "then the new one");
        }
    }
}

#[test]
fn recover_incomplete_server_crashed() {
    let mut h = Harness::with_masters(3);
    h.create_table("t", 3);
    let dead = h.ids()[0];
    // The first leader declares it crashed (no heartbeat) and dies after
    // the commit point, before any push.
    let mut a = leader(4, &h.state);
    let mut acts = Vec::new();
    for _ in 0..CoordinatorConfig::default().master_timeout_ticks {
        for m in h.ids().into_iter().filter(|m| *m != dead) {
            a.on_heartbeat(m);
        }
        acts.extend(a.tick(&h.state));
    }
    let crash: Vec<Action> = acts
        .into_iter()
        .filter(|a| matches!(a, Action::Propose(Record::Commit(Op::ServerCrashed { .. }))))
        .collect();
    assert_eq!(crash.len(), 1, "one crash proposal");
    h.execute(&mut a, crash, &|_| false);
    drop(a);
    assert_eq!(
        h.state.server(dead).unwrap().status,
        crate::cluster::ServerStatus::Crashed
    );
    let t = h.state.table("t").unwrap();
    assert!(t.tablets.iter().all(|tb| tb.owner != dead));
    assert!(t
        .tablets
        .iter()
        .any(|tb| tb.state == TabletState::Recovering));
    // The next leader pushes the plan, completes the crash, then removes
    // the server.
    h.masters.remove(&dead);
    let mut b = leader(5, &h.state);
    h.settle(&mut b, |_| true);
    h.assert_masters_match();
    let t = h.state.table("t").unwrap();
    assert!(t.tablets.iter().all(|tb| tb.state == TabletState::Normal));
    assert_eq!(
        h.state.server(dead).unwrap().status,
        crate::cluster::ServerStatus::Removed
    );
}

#[test]
fn recover_incomplete_server_removed() {
    let mut h = Harness::with_masters(2);
    let dead = h.ids()[1];
    let plan = h.state.plan_recovery(dead).unwrap();
    h.commit(&Record::Commit(Op::ServerCrashed { id: dead, plan }));
    let seq = h.index;
    h.commit(&Record::Complete { seq });
    h.masters.remove(&dead);
    // Removal committed, nobody told, leader dies; the next one finishes.
    h.commit(&Record::Commit(Op::ServerRemoved { id: dead }));
    assert_eq!(h.state.incomplete().len(), 1);
    let mut b = leader(3, &h.state);
    h.settle(&mut b, |_| true);
    h.assert_masters_match();
    // The slot is reused with a new generation.
    let out = h.commit(&Record::Commit(Op::EnlistServer {
        addr: "again:1".into(),
        services: services::MASTER,
        nonce: 5,
    }));
    assert_eq!(
        out,
        Outcome::Committed(crate::cluster::Effect::Enlisted(ServerId {
            index: dead.index,
            generation: dead.generation + 1
        }))
    );
}

/// A master crashes while a create is handing it tablets: the crash's
/// recovery plan takes them over and the create stops waiting for it.
#[test]
fn a_create_whose_owner_crashes_completes_through_the_recovery_plan() {
    let mut h = Harness::with_masters(2);
    let mut c = leader(2, &h.state);
    let rec = c
        .prepare(
            &h.state,
            &Request::CreateTable {
                name: "t".into(),
                tablets: 2,
            },
        )
        .unwrap();
    h.commit(&rec);
    let create = h.index;
    let dead = h.ids()[0];
    h.masters.remove(&dead);
    let plan = h.state.plan_recovery(dead).unwrap();
    h.commit(&Record::Commit(Op::ServerCrashed { id: dead, plan }));
    assert!(!h.state.incomplete()[&create].targets.contains(&dead));
    h.settle(&mut c, |_| true);
    let t = h.state.table("t").unwrap();
    assert_eq!(t.state, TableState::Normal);
    assert!(t.tablets.iter().all(|tb| tb.owner != dead));
    h.assert_masters_match();
}

/// Racing proposals resolve at apply: two creates of one name, a stale
/// recovery plan, a drop while the table is busy.
#[test]
fn preconditions_are_checked_when_records_apply() {
    let mut h = Harness::with_masters(2);
    let c = leader(2, &h.state);
    let req = Request::CreateTable {
        name: "t".into(),
        tablets: 2,
    };
    let r1 = c.prepare(&h.state, &req).unwrap();
    let r2 = c.prepare(&h.state, &req).unwrap();
    assert!(matches!(h.commit(&r1), Outcome::Committed(_)));
    assert_eq!(
        h.commit(&r2),
        Outcome::Rejected(Rejection::NameTaken("t".into()))
    );
    assert_eq!(
        h.commit(&Record::Commit(Op::DropTable { name: "t".into() })),
        Outcome::Rejected(Rejection::Busy("t".into()))
    );
    let m = h.ids()[0];
    let stale = Record::Commit(Op::ServerCrashed {
        id: m,
        plan: Vec::new(),
    });
    assert_eq!(h.commit(&stale), Outcome::Rejected(Rejection::StalePlan(m)));
    let version = h.state.version();
    assert_eq!(
        h.commit(&Record::Complete { seq: 999 }),
        Outcome::AlreadyComplete(999)
    );
    assert_eq!(h.state.version(), version);
}

/// A deposed coordinator's push is refused once a newer term was seen, and
/// no master ever goes back to an older configuration.
#[test]
fn masters_refuse_stale_terms_and_older_versions() {
    let mut h = Harness::with_masters(1);
    let id = h.ids()[0];
    let old = h.state.region_for(id, 2).encode().unwrap();
    h.commit(&Record::Commit(Op::EnlistServer {
        addr: "x:1".into(),
        services: services::MASTER,
        nonce: 9,
    }));
    let new = h.state.region_for(id, 3).encode().unwrap();
    let m = h.masters.get_mut(&id).unwrap();
    assert!(matches!(
        m.on_region_write(&new),
        RegionOutcome::Applied { .. }
    ));
    assert!(matches!(
        m.on_region_write(&old),
        RegionOutcome::StaleTerm { term: 2, seen: 3 }
    ));
    // An older version that gets past the fence (only a writer bug could
    // send one) lands, but the master does not act on it.
    let acted = m.config().unwrap().clone();
    let older_same_term = ClusterState::default().region_for(id, 3).encode().unwrap();
    assert!(matches!(
        m.on_region_write(&older_same_term),
        RegionOutcome::Regressed { .. }
    ));
    assert!(
        m.config().is_none(),
        "refuses to serve from a regressed region"
    );
    m.lease_granted(0, 1_000);
    assert!(m.get(1, b"k", 1).is_err());
    assert!(matches!(
        m.on_region_write(&acted.encode().unwrap()),
        RegionOutcome::Applied { .. }
    ));
    // The planted bug: without the fence, the deposed coordinator's late
    // write lands over the newer one.
    let mut buggy = agent(MasterBugs {
        accept_stale_term: true,
        ..MasterBugs::default()
    });
    buggy.enlisted(id);
    buggy.on_region_write(&new);
    assert!(matches!(
        buggy.on_region_write(&old),
        RegionOutcome::Regressed { .. }
    ));
    assert_eq!(buggy.region().unwrap().term, 2);
}

/// A master serves only under a lease counted from the heartbeat's send;
/// a late acknowledgement of an older heartbeat never shortens it; the
/// planted bug serves without one.
#[test]
fn masters_serve_only_under_a_lease() {
    let mut h = Harness::with_masters(1);
    h.create_table("t", 1);
    let id = h.ids()[0];
    let table = h.state.table("t").unwrap().id;
    let m = h.masters.get_mut(&id).unwrap();
    assert!(matches!(
        m.get(table, b"k", 5),
        Err(crate::master::MasterError::NoLease { expired: 0, .. })
    ));
    m.lease_granted(100, 50);
    assert_eq!(m.put(table, b"k", Bytes::from_static(b"v"), 120), Ok(()));
    assert_eq!(m.get(table, b"k", 149), Ok(Some(Bytes::from_static(b"v"))));
    m.lease_granted(90, 50); // an older heartbeat's late answer
    assert_eq!(m.lease_until(), 150);
    assert!(matches!(
        m.get(table, b"k", 150),
        Err(crate::master::MasterError::NoLease { expired: 150, .. })
    ));
    m.lease_granted(160, 50);
    assert!(m.get(table, b"k", 170).is_ok());
    // Ownership is still checked under a lease.
    assert!(matches!(
        m.get(table + 1, b"k", 170),
        Err(crate::master::MasterError::NotOwner { .. })
    ));

    let mut buggy = agent(MasterBugs {
        ignore_lease: true,
        ..MasterBugs::default()
    });
    buggy.enlisted(id);
    buggy.on_region_write(&h.state.region_for(id, 2).encode().unwrap());
    assert_eq!(buggy.get(table, b"k", 1_000_000), Ok(None));
}

/// The lease a coordinator grants is shorter than its master timeout by
/// two ticks and a tenth.
#[test]
fn the_lease_is_shorter_than_the_master_timeout() {
    let tick = std::time::Duration::from_millis(10);
    let lease = crate::master::lease_for_timeout(50, tick);
    assert_eq!(lease, std::time::Duration::from_millis(432));
    assert!(lease < tick * 48);
    assert_eq!(
        crate::master::lease_for_timeout(2, tick),
        std::time::Duration::ZERO
    );
}

/// The pace scales with the server slots: the leader's heartbeat load
/// stays within its limit, the timeout is at least four intervals and
/// never shrinks as slots grow (the leases' safety), and every lease is
/// shorter than the timeout it was cut from.
#[test]
fn the_heartbeat_pace_keeps_the_leaders_load_bounded() {
    let tick = std::time::Duration::from_millis(10);
    let cfg = CoordinatorConfig::default();
    // Small clusters: the configured pace.
    assert_eq!(cfg.heartbeat_interval_for(3), cfg.heartbeat_interval_ticks);
    assert_eq!(cfg.master_timeout_for(3), cfg.master_timeout_ticks);
    // 10,000 masters at 50 a tick (10 ms): every 200 ticks (2 s), and a
    // timeout of 802 ticks.
    assert_eq!(cfg.heartbeat_interval_for(10_000), 200);
    assert_eq!(cfg.master_timeout_for(10_000), 802);
    let mut last_timeout = 0;
    for slots in (1..=200_000).step_by(997) {
        let interval = cfg.heartbeat_interval_for(slots);
        let timeout = cfg.master_timeout_for(slots);
        assert!(
            (slots as u64).div_ceil(interval) <= cfg.heartbeats_per_tick_max,
            "{slots} slots heartbeat every {interval} ticks: over the limit"
        );
        assert!(timeout >= 4 * interval + 2);
        assert!(
            timeout >= last_timeout,
            "the timeout shrank at {slots} slots"
        );
        last_timeout = timeout;
        let lease = crate::master::lease_for_timeout(timeout, tick);
        assert!(lease < tick * (timeout - 2) as u32);
    }
    // No limit: the configured pace whatever the size.
    let fixed = CoordinatorConfig {
        heartbeats_per_tick_max: 0,
        ..cfg
    };
    assert_eq!(
        fixed.heartbeat_interval_for(1_000_000),
        cfg.heartbeat_interval_ticks
    );
}

/// A leader declares a crash only after the timeout for the state's
/// slots: with many slots, a master silent for the configured timeout is
/// not yet declared, and is once the scaled one has passed.
#[test]
fn a_crash_waits_for_the_scaled_timeout() {
    let h = Harness::with_masters(3);
    let cfg = CoordinatorConfig {
        heartbeats_per_tick_max: 1,
        ..CoordinatorConfig::default()
    };
    // 3 slots at 1 a tick: every 5 ticks (the configured pace), timeout 50.
    assert_eq!(cfg.master_timeout_for(h.state.server_slots()), 50);
    let tight = CoordinatorConfig {
        heartbeats_per_tick_max: 0,
        heartbeat_interval_ticks: 20,
        ..CoordinatorConfig::default()
    };
    // Interval 20: timeout 82 ticks instead of 50.
    let timeout = tight.master_timeout_for(h.state.server_slots());
    assert_eq!(timeout, 82);
    let mut c = Coordinator::new(tight, CoordinatorBugs::default());
    c.set_leadership(true, 2, &h.state);
    let dead = h.ids()[0];
    let crash_at = (1..=100u64)
        .find(|_| {
            for m in h.ids().into_iter().filter(|m| *m != dead) {
                c.on_heartbeat(m);
            }
            c.tick(&h.state).iter().any(|a| {
                matches!(a, Action::Propose(Record::Commit(Op::ServerCrashed { id, .. })) if *id == dead)
            })
        })
        .expect("declared crashed");
    assert_eq!(
        crash_at, timeout,
        "declared at the scaled timeout, not before"
    );
}

/// Snapshots restore to the same state and bad ones are refused.
#[test]
fn snapshots_round_trip_and_bad_ones_are_errors() {
    let mut h = Harness::with_masters(3);
    let mut c = leader(2, &h.state);
    let rec = c
        .prepare(
            &h.state,
            &Request::CreateTable {
                name: "t".into(),
                tablets: 5,
            },
        )
        .unwrap();
    h.commit(&rec);
    let snap = h.state.snapshot();
    assert_eq!(ClusterState::restore(&snap), Ok(h.state.clone()));
    for cut in 0..snap.len() {
        assert!(ClusterState::restore(&snap[..cut]).is_err());
    }
    h.settle(&mut c, |_| true);
}

/// The master's own protocol: enlist until answered (with its nonce,
/// following hints), then heartbeat; a silent replica is abandoned; told it
/// is gone, it asks to shut down.
#[test]
fn a_master_enlists_then_heartbeats_and_shuts_down_when_declared_gone() {
    let cfg = MasterConfig {
        enlist_retry_ticks: 3,
        heartbeat_ticks: 2,
    };
    let mut m = MasterAgent::new(
        cfg,
        "m7:1".into(),
        services::MASTER,
        42,
        MasterBugs::default(),
    );
    let enlist = |to| MasterAction::Enlist {
        to,
        addr: "m7:1".into(),
        services: services::MASTER,
        nonce: 42,
    };
    assert_eq!(m.tick(), vec![enlist(None)]);
    assert!(m.tick().is_empty() && m.tick().is_empty());
    m.on_enlist_reply(None, Some(3)); // not the leader; try 3
    assert_eq!(m.tick(), vec![enlist(Some(3))]);
    let id = ServerId {
        index: 4,
        generation: 1,
    };
    m.on_enlist_reply(Some(id), Some(3));
    assert_eq!(m.id(), Some(id));
    let hb = |to| MasterAction::Heartbeat { to, from: id };
    assert_eq!(m.tick(), vec![hb(Some(3))]);
    assert!(m.tick().is_empty());
    // Unanswered once (an answer may be late under load): the same
    // replica again; twice: any replica.
    assert_eq!(m.tick(), vec![hb(Some(3))]);
    m.tick();
    assert_eq!(m.tick(), vec![hb(None)]);
    assert_eq!(m.on_heartbeat_reply(false, Some(2)), None);
    m.tick();
    assert_eq!(m.tick(), vec![hb(Some(2))]);
    // The leader sets the pace: every 5 ticks from now on.
    assert_eq!(m.on_heartbeat_reply(false, Some(2)), None);
    m.set_heartbeat_ticks(5);
    m.tick();
    assert_eq!(m.tick(), vec![hb(Some(2))]);
    assert_eq!(m.on_heartbeat_reply(false, Some(2)), None);
    for _ in 0..4 {
        assert!(m.tick().is_empty());
    }
    assert_eq!(m.tick(), vec![hb(Some(2))]);
    assert_eq!(
        m.on_heartbeat_reply(true, Some(2)),
        Some(MasterAction::Shutdown)
    );
}

/// A master that has not acknowledged its push yet (over RDMA: it has not
/// granted this leader its writes) is pushed again at the retry period,
/// not at every operation that applies meanwhile: 10,000 masters enlisting
/// at once were each pushed again at every enlistment after theirs.
#[test]
fn an_unacknowledged_push_is_retried_at_its_period_not_at_every_new_version() {
    let mut h = Harness::with_masters(2);
    let mut c = leader(2, &h.state);
    let enlist = |h: &mut Harness, i: u64| {
        let rec = Record::Commit(Op::EnlistServer {
            addr: format!("new{i}:7000"),
            services: services::MASTER,
            nonce: 5000 + i,
        });
        let Outcome::Committed(crate::cluster::Effect::Enlisted(id)) = h.commit(&rec) else {
            panic!("enlist failed");
        };
        id
    };
    let pushes_to = |acts: &[Action], to: ServerId| {
        acts.iter()
            .filter(|a| matches!(a, Action::Push { to: t, .. } if *t == to))
            .count()
    };
    let silent = enlist(&mut h, 0);
    assert_eq!(pushes_to(&c.on_applied(&h.state), silent), 1);
    // Others enlist (new versions); the silent master's push is not due.
    for i in 1..=20 {
        let other = enlist(&mut h, i);
        let acts = c.on_applied(&h.state);
        assert_eq!(pushes_to(&acts, silent), 0, "after enlistment {i}");
        assert_eq!(pushes_to(&acts, other), 1, "the new master {i}");
    }
    // The retry period passes: pushed again, once, at the newest version.
    let mut again = Vec::new();
    for _ in 0..CoordinatorConfig::default().push_retry_ticks {
        again.extend(c.tick(&h.state));
    }
    assert_eq!(pushes_to(&again, silent), 1);
    let version = h.state.version();
    assert!(again.iter().any(
        |a| matches!(a, Action::Push { to, version: v, .. } if *to == silent && *v == version)
    ));
}

/// A new table pushes each of its owners its share of that table and
/// nothing else; the masters keep what they held of the other tables.
#[test]
fn a_new_table_pushes_each_master_only_its_share() {
    let mut h = Harness::with_masters(4);
    h.create_table("a", 8);
    let mut c = leader(3, &h.state);
    let req = Request::CreateTable {
        name: "b".into(),
        tablets: 4,
    };
    let rec = c.prepare(&h.state, &req).unwrap();
    let Outcome::Committed(crate::cluster::Effect::TableCreated(b)) = h.commit(&rec) else {
        panic!("not created");
    };
    let acts = c.on_applied(&h.state);
    let mut pushed = 0;
    for a in &acts {
        let Action::Push { region, .. } = a else {
            continue;
        };
        let r = crate::cluster::ConfigRegion::decode(region).unwrap();
        assert_eq!(r.tables, Some(vec![b]), "a part of the new table only");
        assert_eq!(r.tablets.len(), 1, "its one tablet of it");
        assert!(r.tablets.iter().all(|t| t.table == b));
        pushed += 1;
    }
    assert_eq!(pushed, 4);
    h.execute(&mut c, acts, &|_| true);
    h.settle(&mut c, |_| true);
    h.assert_masters_match();
    for m in h.masters.values() {
        assert_eq!(m.config().unwrap().tablets.len(), 3, "2 of a, 1 of b");
    }

    // Whole configurations (over RDMA): every tablet, every time.
    let mut whole = Coordinator::new(
        CoordinatorConfig {
            region_parts: false,
            ..CoordinatorConfig::default()
        },
        CoordinatorBugs::default(),
    );
    whole.set_leadership(true, 4, &h.state);
    let req = Request::CreateTable {
        name: "c".into(),
        tablets: 4,
    };
    let rec = whole.prepare(&h.state, &req).unwrap();
    h.commit(&rec);
    for a in whole.on_applied(&h.state) {
        if let Action::Push { region, .. } = a {
            let r = crate::cluster::ConfigRegion::decode(&region).unwrap();
            assert_eq!(r.tables, None);
            assert_eq!(r.tablets.len(), 4, "2 of a, 1 of b, 1 of c");
        }
    }
}

/// A completion waiting in a long log is not proposed again, however long
/// it waits there; one that never reached the log is, after a long
/// silence; one applied without effect is, after a retry period.
#[test]
fn a_proposal_waiting_in_a_long_log_is_not_proposed_again() {
    let mut h = Harness::with_masters(2);
    let mut c = leader(2, &h.state);
    let rec = c
        .prepare(
            &h.state,
            &Request::CreateTable {
                name: "t".into(),
                tablets: 2,
            },
        )
        .unwrap();
    h.commit(&rec);
    let completions = |acts: &[Action]| {
        acts.iter()
            .filter(|a| matches!(a, Action::Propose(Record::Complete { .. })))
            .count()
    };
    // Pushes land; the completion is proposed once, behind a long log.
    c.set_log_last_index(h.index + 5_000);
    let acts = c.on_applied(&h.state);
    h.execute(&mut c, acts, &|_| true);
    let mut proposed = completions(&c.on_applied(&h.state));
    // The driver: the proposal is in the log now.
    c.set_log_last_index(h.index + 5_001);
    for _ in 0..30 * CoordinatorConfig::default().propose_retry_ticks {
        proposed += completions(&c.tick(&h.state));
    }
    assert_eq!(proposed, 1, "proposed once while the log holds it");
    // A log that never reached its index: proposed again after the silence.
    c.set_log_last_index(h.index);
    let mut again = 0;
    for _ in 0..10 * CoordinatorConfig::default().propose_retry_ticks {
        again += completions(&c.tick(&h.state));
    }
    assert_eq!(again, 1, "proposed again: it never reached the log");
}
