//! `ramcoord-bench scale --parts cluster`: a real 3-replica coordinator
//! group (child processes, `--insecure`, fsync durability) with thousands
//! of light masters ([`crate::fleet`]) heartbeating it, the network half of
//! issue 19's goals.
//!
//! One point (M masters, T tablets) runs, in order:
//!
//! 1. two groups, each with a fleet of 3 masters: the one measured, and
//!    the **empty cluster** that runs beside it to the end as the
//!    baseline. The measured leader's CPU over a quiet window
//!    (`idle_cpu_pct`);
//! 2. a fleet of M - 3 more, enlisted (`enlist_s`), then T tablets in
//!    tables of at most 4096 (owners chosen by the leader), every create
//!    complete, i.e. pushed to all its owners (`load_s`);
//! 3. once the heartbeat pace the leader sets has settled, a quiet window
//!    again: the leader's CPU (`loaded_cpu_pct`) and heartbeats answered a
//!    second. `failure_detection_cpu_pct` is the difference from step 1:
//!    what keeping M masters' heartbeats and leases costs the leader
//!    process (all its threads), in percent of one core;
//! 4. the commit point: 200 operations (create or drop a one-tablet
//!    table, as the `commit` scenario does) and 200 no-ops on each group,
//!    one client each, one operation on either in turn, so both see the
//!    machine (disk, CPU) at the same moments: `commit_p50_ratio_loaded`
//!    is the loaded group's median over the empty one's;
//! 5. one master leaves (a drain: the leader declares it crashed at once,
//!    without waiting for its timeout) and its tablets move:
//!    `recovery_plan_ms` is the time from the request to the first region
//!    that gives one of its tablets to another master (the plan was
//!    committed before that push left, so this bounds the plan's commit
//!    from above), `recovery_pushed_ms` to the region that completes the
//!    set; the detection itself (a master that goes silent) adds the
//!    leader's master timeout (step 6);
//! 6. another master goes silent (a crash): `crash_pushed_ms` from then
//!    to its tablets pushed to their new owners (the timeout, then step
//!    5's path);
//! 7. the replicas' resident memory (`leader_rss_mib`, `follower_rss_mib`
//!    the larger follower).
//!
//! Throughout, an endpoint told it was declared crashed while it was
//! heartbeating is a false suspicion; the point fails if any occurred.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ramcoord::coordinator::Request;
use ramcoord::local_cluster::{LocalCluster, LocalClusterConfig};
use serde::{Deserialize, Serialize};

use crate::cluster::{client, noop, one_op, op_for, ramcoord_binary};
use crate::dist::Recorder;
use crate::fleet::{Fleet, FleetConfig};

/// One point of the cluster sweep (see the module docs).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterPoint {
    pub masters: u64,
    pub tablets: u64,
    pub enlist_s: f64,
    pub load_s: f64,
    /// Region bytes the masters received while tablets were loaded.
    pub load_pushed_mib: f64,
    pub heartbeat_interval_ms: f64,
    pub lease_ms: f64,
    pub heartbeats_per_s: f64,
    pub idle_cpu_pct: f64,
    pub loaded_cpu_pct: f64,
    pub failure_detection_cpu_pct: f64,
    /// The part of it in the kernel (TCP; on loopback that includes
    /// delivering the leader's answers into the masters' sockets, which a
    /// real network leaves to the masters' machines).
    #[serde(default)]
    pub failure_detection_system_pct: f64,
    pub commit_p50_empty_us: f64,
    pub commit_p50_loaded_us: f64,
    pub commit_p99_loaded_us: f64,
    pub commit_p50_ratio_loaded: f64,
    pub noop_p50_empty_us: f64,
    pub noop_p50_loaded_us: f64,
    pub recovery_tablets: u64,
    pub recovery_owners: u64,
    pub recovery_plan_ms: f64,
    pub recovery_pushed_ms: f64,
    pub crash_tablets: u64,
    /// From a master's crash (its last heartbeat at most one interval
    /// earlier) to its tablets pushed to new owners: the leader's timeout
    /// for it, then the same as a leave.
    pub crash_pushed_ms: f64,
    pub leader_rss_mib: f64,
    pub follower_rss_mib: f64,
    pub false_suspicions: u64,
    /// The leader was not the same after the load as before it (the
    /// loaded figures are the new leader's).
    pub leader_changes: u64,
    pub heartbeat_timeouts: u64,
    /// Processes holding the light masters (one per
    /// `fleet::ENDPOINTS_PER_PROCESS`).
    pub fleet_processes: u64,
    pub run_s: f64,
}

/// Operations (and no-ops) per commit measurement.
const OPS: u64 = 200;
/// The quiet windows for CPU.
const WINDOW: Duration = Duration::from_secs(10);

/// `(utime + stime, stime)` of process `pid`, in seconds.
fn cpu_s(pid: u32) -> Result<(f64, f64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // In USER_HZ ticks: 100 a second, fixed by Linux's ABI.
    Ok((
        (ticks(11) + ticks(12)) as f64 / 100.0,
        ticks(12) as f64 / 100.0,
    ))
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// The leader's process id, and the followers'.
fn pids(c: &LocalCluster) -> Result<(u32, Vec<u32>), String> {
    let leader = c
        .wait_for("an active coordinator", Duration::from_secs(20), |c| {
            c.active()
        })
        .map_err(|e| e.to_string())?;
    let li = leader.id as usize - 1;
    let mut followers = Vec::new();
    let mut lp = None;
    for (i, p) in c.coordinators.iter().enumerate() {
        let pid = p.pid().ok_or("a replica is not running")?;
        if i == li {
            lp = Some(pid);
        } else {
            followers.push(pid);
        }
    }
    Ok((lp.ok_or("leader not found")?, followers))
}

/// The leader's CPU over `window`, in percent of one core: all of it, and
/// the part in the kernel.
fn cpu_pct(pid: u32, window: Duration) -> Result<(f64, f64), String> {
    let a = cpu_s(pid)?;
    let t = Instant::now();
    std::thread::sleep(window);
    let b = cpu_s(pid)?;
    let pct = |d: f64| d / t.elapsed().as_secs_f64() * 100.0;
    Ok((pct(b.0 - a.0), pct(b.1 - a.1)))
}

/// Commit points and no-ops, one client on each of two clusters, one
/// operation on each in turn (both see the machine at the same moments):
/// (ops p50, ops p99, no-op p50) of `a`, then of `b`, µs.
type Commits = (f64, f64, f64);

fn commits(a: &LocalCluster, b: &LocalCluster) -> Result<(Commits, Commits), String> {
    let (mut ca, mut cb) = (client(a), client(b));
    for k in 0..20 {
        one_op(&mut ca, op_for(1000, k))?;
        one_op(&mut cb, op_for(1000, k))?;
    }
    let mut rec = [
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
    ];
    for k in 0..OPS {
        for (i, cl) in [&mut ca, &mut cb].into_iter().enumerate() {
            let (at_commit, _, _) = one_op(cl, op_for(0, k))?;
            rec[i * 2].record(at_commit);
            rec[i * 2 + 1].record(noop(cl)?);
        }
    }
    let d: Vec<_> = rec.iter().map(|r| r.dist()).collect();
    Ok((
        (d[0].p50_us, d[0].p99_us, d[1].p50_us),
        (d[2].p50_us, d[2].p99_us, d[3].p50_us),
    ))
}

/// A 3-replica group under `dir`, `--insecure`, no masters, ready.
fn group(dir: &std::path::Path) -> Result<LocalCluster, String> {
    let _ = std::fs::remove_dir_all(dir);
    let mut cfg = LocalClusterConfig::new(ramcoord_binary()?, dir.to_path_buf(), 3, 0);
    cfg.tls = false;
    cfg.log_filter = std::env::var("SCALE_LOG").unwrap_or_else(|_| "warn".into());
    if let Ok(extra) = std::env::var("SCALE_COORDINATOR_ARGS") {
        cfg.coordinator_args = extra.split_whitespace().map(String::from).collect();
    }
    let c = LocalCluster::start(cfg).map_err(|e| e.to_string())?;
    c.wait_ready(0, Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    Ok(c)
}

/// Creates `tablets` tablets in tables of at most 4096, with `clients`
/// clients in parallel; returns the time.
fn load(c: &LocalCluster, tablets: u64, clients: usize) -> Result<Duration, String> {
    let per = ramcoord::cluster::limits::TABLETS_PER_TABLE_MAX as u64;
    let tables: Vec<u64> = (0..tablets.div_ceil(per))
        .map(|t| per.min(tablets - t * per))
        .collect();
    let t = Instant::now();
    let errors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..clients {
            let (tables, errors) = (&tables, &errors);
            s.spawn(move || {
                let mut cl = client(c);
                for (i, n) in tables.iter().enumerate().skip(w).step_by(clients) {
                    let req = Request::CreateTable {
                        name: format!("scale-{i}"),
                        tablets: *n as u32,
                    };
                    let deadline = Instant::now() + Duration::from_secs(600);
                    let mut tries = 0;
                    loop {
                        match cl.operate_until_complete(req.clone(), deadline) {
                            Ok((_, _, Some(_))) => break,
                            Ok((reply, _, None)) if tries < 3 => {
                                tries += 1;
                                eprintln!("  table scale-{i}: {}; again", reply.describe());
                            }
                            Ok((reply, _, None)) => {
                                errors.lock().expect("lock").push(format!(
                                    "table scale-{i}: {} (no completion)",
                                    reply.describe()
                                ));
                                return;
                            }
                            Err(e) => {
                                errors
                                    .lock()
                                    .expect("lock")
                                    .push(format!("table scale-{i}: {e}"));
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().expect("lock");
    if let Some(e) = errors.first() {
        return Err(format!("{} tables not created; first: {e}", errors.len()));
    }
    Ok(t.elapsed())
}

/// Has endpoint `victim` of `big` leave (or crash), then waits (60 s at
/// most) until its `tablets` tablets are all pushed to other endpoints:
/// (first push ms, last push ms, owners), from the moment it left or
/// crashed.
fn moved(
    small: &Fleet,
    big: &Fleet,
    victim: usize,
    tablets: u64,
    crash: bool,
) -> Result<(f64, f64, u64), String> {
    small.record(true);
    big.record(true);
    let t0 = Instant::now();
    if crash {
        big.crash(victim);
    } else {
        big.leave(victim);
    }
    let base = small.len();
    let mut first = None;
    let mut done = None;
    let mut owners = std::collections::BTreeSet::new();
    while t0.elapsed() < Duration::from_secs(60) && done.is_none() {
        std::thread::sleep(Duration::from_millis(20));
        let mut landings = small.landings();
        landings.extend(big.landings().into_iter().map(|mut l| {
            l.endpoint += base;
            l
        }));
        landings.sort_by_key(|l| l.at);
        let mut moved = 0u64;
        owners.clear();
        for l in &landings {
            if l.endpoint == victim + base || l.tablets_after <= l.tablets_before {
                continue;
            }
            moved += (l.tablets_after - l.tablets_before) as u64;
            owners.insert(l.endpoint);
            first.get_or_insert(l.at);
            if moved >= tablets {
                done = Some(l.at);
                break;
            }
        }
    }
    small.record(false);
    big.record(false);
    let done = done.ok_or_else(|| {
        format!("master {victim}'s {tablets} tablets were not all pushed to new owners within 60 s")
    })?;
    let ms = |t: Instant| (t - t0).as_secs_f64() * 1e3;
    Ok((first.map_or(0.0, ms), ms(done), owners.len() as u64))
}

/// Measures one point (see the module docs); `dir` holds the replicas'
/// data for the run; the light masters run `per_process` to a child
/// process (`fleet-worker`).
pub fn point(
    dir: &std::path::Path,
    masters: u64,
    tablets: u64,
    per_process: usize,
    progress: &dyn Fn(&str),
) -> Result<ClusterPoint, String> {
    let started = Instant::now();
    if masters < 4 {
        return Err("a cluster point needs at least 4 masters".into());
    }
    // The baseline: a group of its own with three masters, running beside
    // the measured one to the end.
    let empty = group(&dir.join("empty"))?;
    let c = group(&dir.join("loaded"))?;
    let coordinators = c.coordinator_addrs();
    let fleet = |first: usize, count: usize, coordinators: &Vec<std::net::SocketAddr>| {
        Fleet::start(FleetConfig {
            count,
            first,
            cluster: 1,
            coordinators: coordinators.clone(),
            shards: 2,
            enlist_in_flight_max: 64,
            heartbeat: Duration::from_millis(50),
            per_process,
        })
    };
    let small = fleet(0, 3, &coordinators)?;
    small.wait_enlisted(Duration::from_secs(30))?;
    let baseline = fleet(masters as usize, 3, &empty.coordinator_addrs())?;
    baseline.wait_enlisted(Duration::from_secs(30))?;
    let (leader, _) = pids(&c)?;
    std::thread::sleep(Duration::from_secs(1));
    progress("  three masters: the leader's CPU");
    let (idle_cpu_pct, idle_system_pct) = cpu_pct(leader, WINDOW)?;

    progress(&format!("  enlisting {} light masters", masters - 3));
    let big = fleet(3, masters as usize - 3, &coordinators)?;
    let enlist = big.wait_enlisted(Duration::from_secs(900))?;
    progress(&format!(
        "  enlisted in {:.1} s ({} processes of light masters); loading {tablets} tablets",
        enlist.as_secs_f64(),
        big.processes()
    ));
    let bytes_before = big.stats().region_bytes.load(Ordering::Relaxed)
        + small.stats().region_bytes.load(Ordering::Relaxed);
    let load_t = load(&c, tablets, 4)?;
    let load_pushed = big.stats().region_bytes.load(Ordering::Relaxed)
        + small.stats().region_bytes.load(Ordering::Relaxed)
        - bytes_before;
    progress(&format!(
        "  loaded in {:.1} s ({:.1} MiB of regions pushed)",
        load_t.as_secs_f64(),
        load_pushed as f64 / (1 << 20) as f64
    ));
    // The pace the leader sets, then two intervals for every endpoint to
    // adopt it.
    // Also until the leader has closed the push connections the load
    // opened (idle for PUSH_CONN_IDLE, swept once a second): closing
    // thousands of them is the load's cost, and inside the window it was
    // a twentieth of the leader's CPU there.
    let interval_us = big.stats().interval_us.load(Ordering::Relaxed).max(1000);
    std::thread::sleep(
        Duration::from_micros(interval_us * 2)
            .max(ramcoord_net::tcp::PUSH_CONN_IDLE + Duration::from_secs(2)),
    );
    // A leader lost under the enlistment and load storms is counted, and
    // the figures below are the new leader's.
    let (leader_now, followers) = pids(&c)?;
    let leader_changes = u64::from(leader_now != leader);
    let leader = leader_now;
    progress("  loaded cluster: the leader's CPU, then commit points beside the empty one's");
    let hb_before = big.stats().heartbeats.load(Ordering::Relaxed)
        + small.stats().heartbeats.load(Ordering::Relaxed);
    let t = Instant::now();
    let (loaded_cpu_pct, loaded_system_pct) = cpu_pct(leader, WINDOW)?;
    let heartbeats_per_s = (big.stats().heartbeats.load(Ordering::Relaxed)
        + small.stats().heartbeats.load(Ordering::Relaxed)
        - hb_before) as f64
        / t.elapsed().as_secs_f64();
    let (
        (commit_p50_loaded_us, commit_p99_loaded_us, noop_p50_loaded_us),
        (commit_p50_empty_us, _, noop_p50_empty_us),
    ) = commits(&c, &empty)?;

    // One master leaves; its tablets move.
    let victim = (0..big.len())
        .max_by_key(|i| big.tablets_of(*i))
        .ok_or("no master")?;
    let recovery_tablets = big.tablets_of(victim) as u64;
    progress(&format!(
        "  master {victim} leaves with {recovery_tablets} tablets"
    ));
    let (first, done, owners) = moved(&small, &big, victim, recovery_tablets, false)?;
    let recovery_plan_ms = first;
    let recovery_pushed_ms = done;
    let recovery_owners = owners;

    // Another master goes silent (a crash): its tablets move once the
    // leader's timeout for it has passed.
    let crashed = (0..big.len())
        .filter(|i| *i != victim)
        .max_by_key(|i| big.tablets_of(*i))
        .ok_or("no master")?;
    let crash_tablets = big.tablets_of(crashed) as u64;
    progress(&format!(
        "  master {crashed} crashes with {crash_tablets} tablets"
    ));
    let (_, crash_pushed_ms, _) = moved(&small, &big, crashed, crash_tablets, true)?;

    let follower_rss_mib = followers.iter().map(|p| rss_mib(*p)).fold(0.0, f64::max);
    // Let every endpoint hear once more (a declaration is learned from a
    // heartbeat's answer).
    std::thread::sleep(Duration::from_micros(interval_us * 2));
    let false_suspicions = [&big, &small, &baseline]
        .iter()
        .map(|f| f.stats().declared_crashed_alive.load(Ordering::Relaxed) as u64)
        .sum::<u64>();
    let p = ClusterPoint {
        masters,
        tablets,
        enlist_s: enlist.as_secs_f64(),
        load_s: load_t.as_secs_f64(),
        load_pushed_mib: load_pushed as f64 / (1 << 20) as f64,
        heartbeat_interval_ms: interval_us as f64 / 1e3,
        lease_ms: big.stats().lease_us.load(Ordering::Relaxed) as f64 / 1e3,
        heartbeats_per_s,
        idle_cpu_pct,
        loaded_cpu_pct,
        failure_detection_cpu_pct: (loaded_cpu_pct - idle_cpu_pct).max(0.0),
        failure_detection_system_pct: (loaded_system_pct - idle_system_pct).max(0.0),
        commit_p50_empty_us,
        commit_p50_loaded_us,
        commit_p99_loaded_us,
        commit_p50_ratio_loaded: commit_p50_loaded_us / commit_p50_empty_us,
        noop_p50_empty_us,
        noop_p50_loaded_us,
        recovery_tablets,
        recovery_owners,
        crash_tablets,
        crash_pushed_ms,
        recovery_plan_ms,
        recovery_pushed_ms,
        leader_rss_mib: rss_mib(leader),
        follower_rss_mib,
        false_suspicions,
        leader_changes,
        heartbeat_timeouts: big.stats().heartbeat_timeouts.load(Ordering::Relaxed)
            + small.stats().heartbeat_timeouts.load(Ordering::Relaxed),
        fleet_processes: big.processes() as u64,
        run_s: started.elapsed().as_secs_f64(),
    };
    drop(big);
    drop(small);
    drop(baseline);
    drop(c);
    drop(empty);
    if p.false_suspicions > 0 {
        return Err(format!(
            "{} live masters were declared crashed ({p:?})",
            p.false_suspicions
        ));
    }
    Ok(p)
}

/// The table of a cluster sweep.
pub fn markdown(points: &[ClusterPoint]) -> String {
    let mut out = String::from(
        "| masters | tablets | enlist s | load s (MiB pushed) | heartbeat ms | heartbeats/s | detection CPU % (kernel) | commit p50 empty → loaded µs (ratio) | no-op p50 µs | leave: tablets → plan ms / pushed ms | crash → pushed ms | leader RSS MiB | leader lost |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        out += &format!(
            "| {} | {} | {:.1} | {:.1} ({:.1}) | {:.0} | {:.0} | {:.1} ({:.1}) | {:.0} → {:.0} ({:.2}) | {:.0} → {:.0} | {} → {:.1} / {:.1} | {:.0} | {:.0} | {} |\n",
            p.masters,
            p.tablets,
            p.enlist_s,
            p.load_s,
            p.load_pushed_mib,
            p.heartbeat_interval_ms,
            p.heartbeats_per_s,
            p.failure_detection_cpu_pct,
            p.failure_detection_system_pct,
            p.commit_p50_empty_us,
            p.commit_p50_loaded_us,
            p.commit_p50_ratio_loaded,
            p.noop_p50_empty_us,
            p.noop_p50_loaded_us,
            p.recovery_tablets,
            p.recovery_plan_ms,
            p.recovery_pushed_ms,
            p.crash_pushed_ms,
            p.leader_rss_mib,
            p.leader_changes,
        );
    }
    out
}

/// Four figures, each twice: against masters (log) at the tablet count
/// most points share (left), and against tablets (log) at the most
/// masters (right): the leader's CPU for failure detection, the commit
/// point empty and loaded, a leaving master's tablets planned and pushed,
/// the replicas' memory. A side with fewer than two points is left empty.
pub fn plot(points: &[ClusterPoint], path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;
    let mut counts = std::collections::BTreeMap::new();
    for p in points {
        *counts.entry(p.tablets).or_insert(0) += 1;
    }
    let tablets = counts
        .iter()
        .max_by_key(|(t, n)| (**n, std::cmp::Reverse(**t)))
        .map(|(t, _)| *t)
        .unwrap_or(0);
    let masters = points.iter().map(|p| p.masters).max().unwrap_or(0);
    let mut by_masters: Vec<&ClusterPoint> =
        points.iter().filter(|p| p.tablets == tablets).collect();
    by_masters.sort_by_key(|p| p.masters);
    let mut by_tablets: Vec<&ClusterPoint> =
        points.iter().filter(|p| p.masters == masters).collect();
    by_tablets.sort_by_key(|p| p.tablets);
    if by_masters.len() < 2 && by_tablets.len() < 2 {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (1200, 1600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((4, 2));
    type Series = (&'static str, fn(&ClusterPoint) -> f64);
    // Points in order, caption, x axis, x of a point.
    type Side<'a> = (
        &'a Vec<&'a ClusterPoint>,
        String,
        &'static str,
        fn(&ClusterPoint) -> f64,
    );
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let specs: [(&str, &str, Vec<Series>); 4] = [
        (
            "failure detection, leader CPU",
            "% of one core",
            vec![("heartbeats and leases", |p| p.failure_detection_cpu_pct)],
        ),
        (
            "commit point p50",
            "µs",
            vec![
                ("empty cluster", |p| p.commit_p50_empty_us),
                ("loaded", |p| p.commit_p50_loaded_us),
            ],
        ),
        (
            "a leaving master's tablets",
            "ms",
            vec![
                ("plan committed (first push)", |p| p.recovery_plan_ms),
                ("all new owners pushed", |p| p.recovery_pushed_ms),
            ],
        ),
        (
            "replica memory",
            "MiB resident",
            vec![
                ("leader", |p| p.leader_rss_mib),
                ("follower", |p| p.follower_rss_mib),
            ],
        ),
    ];
    for (row, (title, unit, series)) in specs.iter().enumerate() {
        let sides: [Side; 2] = [
            (
                &by_masters,
                format!("{title} ({tablets} tablets)"),
                "masters (log)",
                |p| p.masters as f64,
            ),
            (
                &by_tablets,
                format!("{title} ({masters} masters)"),
                "tablets (log)",
                |p| p.tablets as f64,
            ),
        ];
        for (col, (sweep, caption, x_desc, x_of)) in sides.into_iter().enumerate() {
            if sweep.len() < 2 {
                continue;
            }
            let area = &panels[row * 2 + col];
            let x0 = x_of(sweep[0]) * 0.8;
            let x1 = x_of(sweep[sweep.len() - 1]) * 1.25;
            let hi = sweep
                .iter()
                .flat_map(|p| series.iter().map(move |(_, f)| f(p)))
                .fold(0.0f64, f64::max)
                .max(1e-3)
                * 1.2;
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 17))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d((x0..x1).log_scale(), 0.0..hi)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(*unit)
                .draw()
                .map_err(|e| e.to_string())?;
            for ((name, f), color) in series.iter().zip([blue, orange]) {
                chart
                    .draw_series(LineSeries::new(
                        sweep.iter().map(|p| (x_of(p), f(p))),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(*name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(
                        sweep
                            .iter()
                            .map(|p| Circle::new((x_of(p), f(p)), 3, color.filled())),
                    )
                    .map_err(|e| e.to_string())?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}
