//! `ramcoord-bench scale --state`: what the coordinator's state costs as
//! the cluster grows, in one process (no network, no disk): the part of
//! issue 19's goals that the state machine alone decides.
//!
//! For each size in a grid of masters × tablets, a `ClusterState` is built
//! by applying the records a real cluster would commit (every master's
//! enlistment, then tables of at most 4096 tablets, owners chosen by the
//! state's own `choose_owners`, each operation completed), and then timed:
//!
//! - `snapshot_ms`: encoding the state as a snapshot (what compaction
//!   costs the snapshot writer's thread, off the Raft thread);
//! - `freeze_us`: the frozen copy the Raft thread takes for that writer
//!   (`ClusterState::frozen`): what a snapshot costs the Raft thread;
//! - `restore_ms`: decoding and checking it (a restart's first step);
//! - `replay_100k_ms`: applying 100,000 more entries on top (a restart's
//!   second step: create, complete, drop and complete small tables);
//! - `restart_ms`: the two together;
//! - `recovery_plan_us`: one master's crash: planning where its tablets go
//!   and applying the crash record (the leader's CPU for it; the commit
//!   itself is the cluster's ordinary commit point);
//! - `recovery_during_snapshot_us`: the same while a snapshot writer holds
//!   a frozen copy: the crash's changes copy the parts they touch (the
//!   server list, each table that loses a tablet) first, once;
//! - `region_us`: one master's configuration region, built and encoded (a
//!   push's CPU on the leader);
//! - `choose_owners_us`: owners for a new 4096-tablet table;
//! - `state_mib`: the resident memory the state adds to a process (each
//!   point runs in a fresh process of its own, so no point inherits
//!   another's freed memory).
//!
//! Every figure is a median of a few repetitions; the baseline is the
//! smallest point of the same run (ratios are printed against it).

use std::time::Instant;

use ramcoord::cluster::{ClusterState, Op, Record, ServerId, TabletSpec};

/// One point of the grid.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub masters: u64,
    pub tablets: u64,
    pub build_ms: f64,
    pub snapshot_ms: f64,
    pub snapshot_mib: f64,
    #[serde(default)]
    pub freeze_us: f64,
    pub restore_ms: f64,
    pub replay_100k_ms: f64,
    pub restart_ms: f64,
    pub recovery_plan_us: f64,
    pub recovery_tablets: u64,
    #[serde(default)]
    pub recovery_during_snapshot_us: f64,
    pub region_us: f64,
    pub choose_owners_us: f64,
    pub state_mib: f64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Applies `rec` as the next entry.
fn apply(s: &mut ClusterState, rec: &Record) -> Result<(), String> {
    let data = rec.encode().map_err(|e| e.to_string())?;
    let index = s.applied_index() + 1;
    match s.apply(index, &data) {
        ramcoord::cluster::Outcome::Rejected(r) => Err(format!("{rec}: rejected: {r}")),
        ramcoord::cluster::Outcome::Malformed(e) => Err(format!("{rec}: malformed: {e}")),
        _ => Ok(()),
    }
}

/// Applies an operation and its completion.
fn operate(s: &mut ClusterState, op: Op) -> Result<(), String> {
    apply(s, &Record::Commit(op))?;
    let seq = s.applied_index();
    apply(s, &Record::Complete { seq })
}

/// A table of `n` tablets named `name`, owners from the state.
fn create_table(s: &ClusterState, name: String, n: u32) -> Result<Op, String> {
    let owners = s.choose_owners(n).ok_or("no master up")?;
    let tablets = ramcoord::cluster::even_ranges(n)
        .into_iter()
        .zip(owners)
        .map(|((start_hash, end_hash), owner)| TabletSpec {
            start_hash,
            end_hash,
            owner,
        })
        .collect();
    Ok(Op::CreateTable { name, tablets })
}

/// The state of a cluster of `masters` masters and `tablets` tablets.
fn build(masters: u64, tablets: u64) -> Result<ClusterState, String> {
    let mut s = ClusterState::default();
    for m in 0..masters {
        operate(
            &mut s,
            Op::EnlistServer {
                addr: format!("10.{}.{}.{}:7200", m >> 16, (m >> 8) & 255, m & 255),
                services: ramcoord::cluster::services::MASTER,
                nonce: m + 1,
            },
        )?;
    }
    let per = ramcoord::cluster::limits::TABLETS_PER_TABLE_MAX as u64;
    let mut left = tablets;
    let mut t = 0;
    while left > 0 {
        let n = left.min(per) as u32;
        let op = create_table(&s, format!("table-{t}"), n)?;
        operate(&mut s, op)?;
        left -= n as u64;
        t += 1;
    }
    Ok(s)
}

/// Measures one point (see the module docs).
pub fn point(masters: u64, tablets: u64, reps: usize) -> Result<Point, String> {
    let rss_before = rss_kib();
    let t = Instant::now();
    let state = build(masters, tablets)?;
    let build_ms = ms(t);
    let state_mib = rss_kib().saturating_sub(rss_before) as f64 / 1024.0;

    let mut snap = Vec::new();
    let mut snapshot_ms = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        snap = state.snapshot().to_vec();
        snapshot_ms.push(ms(t));
    }
    let mut freeze_us = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let frozen = state.frozen();
        freeze_us.push(t.elapsed().as_secs_f64() * 1e6);
        drop(frozen);
    }
    let mut restore_ms = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let r = ClusterState::restore(&snap).map_err(|e| e.to_string())?;
        restore_ms.push(ms(t));
        drop(r);
    }
    // Replay: 100,000 entries on top of a restored copy. The records are
    // made first (choosing owners is the leader's work, not the replay's),
    // then only applied, as a restarting replica does.
    let mut leader = state.clone();
    let mut records = Vec::with_capacity(100_000);
    let mut k = 0u64;
    while records.len() < 100_000 {
        let name = format!("replay-{}", k % 8);
        let op = if leader.table(&name).is_some() {
            Op::DropTable { name }
        } else {
            create_table(&leader, name, 4)?
        };
        let commit = Record::Commit(op);
        apply(&mut leader, &commit)?;
        let seq = leader.applied_index();
        let complete = Record::Complete { seq };
        apply(&mut leader, &complete)?;
        records.push(commit.encode().map_err(|e| e.to_string())?);
        records.push(complete.encode().map_err(|e| e.to_string())?);
        k += 1;
    }
    drop(leader);
    let mut replayed = ClusterState::restore(&snap).map_err(|e| e.to_string())?;
    let t = Instant::now();
    for data in &records {
        let index = replayed.applied_index() + 1;
        if let ramcoord::cluster::Outcome::Rejected(r) = replayed.apply(index, data) {
            return Err(format!("replay: entry {index} rejected: {r}"));
        }
    }
    let replay_100k_ms = ms(t);
    drop(replayed);

    // One master's crash: the most loaded one's plan, then the record.
    let victim: ServerId = *state
        .up_masters()
        .iter()
        .max_by_key(|m| state.tablet_count(**m))
        .ok_or("no master")?;
    let recovery_tablets = state.tablet_count(victim) as u64;
    // Each repetition on a copy that shares nothing (a clone shares the
    // parts a snapshot shares: the first change would copy them), with and
    // without a frozen copy held as a snapshot writer would.
    let mut plan_us = Vec::new();
    let mut during_us = Vec::new();
    for during in [false, true] {
        for _ in 0..reps {
            let mut s = ClusterState::restore(&snap).map_err(|e| e.to_string())?;
            let frozen = during.then(|| s.frozen());
            let t = Instant::now();
            let plan = s.plan_recovery(victim).ok_or("no plan")?;
            apply(
                &mut s,
                &Record::Commit(Op::ServerCrashed { id: victim, plan }),
            )?;
            let us = t.elapsed().as_secs_f64() * 1e6;
            if during { &mut during_us } else { &mut plan_us }.push(us);
            drop(frozen);
        }
    }
    let mut region_us = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let region = state
            .region_for(victim, 1)
            .encode()
            .map_err(|e| e.to_string())?;
        region_us.push(t.elapsed().as_secs_f64() * 1e6);
        drop(region);
    }
    let mut choose_us = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let owners = state.choose_owners(4096).ok_or("no master up")?;
        choose_us.push(t.elapsed().as_secs_f64() * 1e6);
        drop(owners);
    }
    let snapshot_ms = median(snapshot_ms);
    let restore_ms = median(restore_ms);
    Ok(Point {
        masters,
        tablets,
        build_ms,
        snapshot_ms,
        snapshot_mib: snap.len() as f64 / (1 << 20) as f64,
        freeze_us: median(freeze_us),
        restore_ms,
        replay_100k_ms,
        restart_ms: restore_ms + replay_100k_ms,
        recovery_plan_us: median(plan_us),
        recovery_tablets,
        recovery_during_snapshot_us: median(during_us),
        region_us: median(region_us),
        choose_owners_us: median(choose_us),
        state_mib,
    })
}

/// The table of a run, with each figure's ratio to the first point.
pub fn markdown(points: &[Point]) -> String {
    let mut out = String::from(
        "| masters | tablets | snapshot ms (MiB), off the Raft thread | freeze µs (Raft thread) | restore ms | replay 100k ms | restart ms | crash plan+apply µs (tablets) | … during a snapshot µs | region µs | owners for 4096 µs | state MiB | build ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        out += &format!(
            "| {} | {} | {:.1} ({:.1}) | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} ({}) | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            p.masters,
            p.tablets,
            p.snapshot_ms,
            p.snapshot_mib,
            p.freeze_us,
            p.restore_ms,
            p.replay_100k_ms,
            p.restart_ms,
            p.recovery_plan_us,
            p.recovery_tablets,
            p.recovery_during_snapshot_us,
            p.region_us,
            p.choose_owners_us,
            p.state_mib,
            p.build_ms
        );
    }
    out
}

/// One figure of a point, in milliseconds, for the curves.
type Figure = (&'static str, fn(&Point) -> f64);

const FIGURES: [Figure; 5] = [
    ("snapshot", |p| p.snapshot_ms),
    ("restore", |p| p.restore_ms),
    ("replay 100k entries", |p| p.replay_100k_ms),
    ("crash plan + apply", |p| p.recovery_plan_us / 1e3),
    ("one region", |p| p.region_us / 1e3),
];

/// The curves: each figure against tablets (at the most masters) and
/// against masters (at the most tablets), log-log, side by side.
pub fn plot(points: &[Point], path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;
    let most_m = points.iter().map(|p| p.masters).max().unwrap_or(1);
    let most_t = points.iter().map(|p| p.tablets).max().unwrap_or(1);
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(600);
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
    ];
    let all: Vec<f64> = points
        .iter()
        .flat_map(|p| FIGURES.iter().map(move |(_, f)| f(p)))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::MAX, f64::min).max(1e-4) * 0.5;
    let hi = all.iter().copied().fold(0.0, f64::max) * 2.0;
    for (area, by_tablets) in [(left, true), (right, false)] {
        let mut sweep: Vec<&Point> = points
            .iter()
            .filter(|p| {
                if by_tablets {
                    p.masters == most_m
                } else {
                    p.tablets == most_t
                }
            })
            .collect();
        sweep.sort_by_key(|p| if by_tablets { p.tablets } else { p.masters });
        let x = |p: &Point| {
            if by_tablets {
                p.tablets as f64
            } else {
                p.masters as f64
            }
        };
        let (x0, x1) = sweep
            .iter()
            .fold((f64::MAX, 0.0f64), |(a, b), p| (a.min(x(p)), b.max(x(p))));
        if sweep.len() < 2 {
            continue;
        }
        let caption = if by_tablets {
            format!("against tablets ({most_m} masters)")
        } else {
            format!("against masters ({most_t} tablets)")
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 * 0.8..x1 * 1.25).log_scale(), (lo..hi).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(if by_tablets {
                "tablets (log)"
            } else {
                "masters (log)"
            })
            .y_desc("milliseconds (log)")
            .draw()
            .map_err(|e| e.to_string())?;
        for ((name, f), color) in FIGURES.iter().zip(colors) {
            chart
                .draw_series(LineSeries::new(
                    sweep.iter().map(|p| (x(p), f(p).max(lo))),
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
                        .map(|p| Circle::new((x(p), f(p).max(lo)), 3, color.filled())),
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
    root.present().map_err(|e| e.to_string())
}
