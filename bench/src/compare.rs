//! `compare`: the floor, ramcoord (fsync and memory durability), etcd,
//! failover and configuration push in one run, so every ratio compares
//! figures measured minutes apart on the same machine. Writes
//! `bench/results/<timestamp>.json` (the report, with the flat fields
//! checks read), `<timestamp>.md` (the table) and two PNG plots: latency
//! CDFs on a log axis, and throughput against clients.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use crate::cluster::{CommitReport, FailoverReport, TlsCostReport};
use crate::dist::Dist;
use crate::etcd::EtcdReport;
use crate::floor::FloorReport;
use crate::push::PushResult;

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Round trips for the RTT floor.
    pub rtt_ops: u64,
    /// Synced writes for the fsync floor.
    pub fsync_ops: u64,
    /// Sequential operations per latency measurement.
    pub latency_ops: u64,
    /// Seconds per throughput point.
    pub seconds: f64,
    /// Failover trials.
    pub failover_trials: usize,
    /// Push rounds per fan-out.
    pub push_rounds: usize,
    /// Masters and clients of the thread count (`threads`).
    pub threads_masters: usize,
    /// Clients of the thread count, each connected to every replica.
    pub threads_clients: usize,
}

impl Sizes {
    /// `--quick`: well under two minutes.
    pub fn quick() -> Sizes {
        Sizes {
            rtt_ops: 5000,
            fsync_ops: 500,
            latency_ops: 500,
            seconds: 1.5,
            failover_trials: 5,
            push_rounds: 50,
            threads_masters: 10,
            threads_clients: 50,
        }
    }

    /// The default.
    pub fn full() -> Sizes {
        Sizes {
            rtt_ops: 20_000,
            fsync_ops: 2000,
            latency_ops: 3000,
            seconds: 4.0,
            failover_trials: 20,
            push_rounds: 200,
            threads_masters: 100,
            threads_clients: 1000,
        }
    }
}

/// Everything one `compare` run measured.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Report {
    /// When (UTC, RFC 3339).
    pub when: String,
    /// Quick or full.
    pub quick: bool,
    /// The floor.
    pub floor: FloorReport,
    /// ramcoord, fsync durability.
    pub ramcoord_fsync: CommitReport,
    /// ramcoord, memory durability.
    pub ramcoord_memory: CommitReport,
    /// ramcoord, fsync durability, without TLS (`--insecure`).
    pub ramcoord_fsync_insecure: CommitReport,
    /// TLS against `--insecure` on interleaved operations, fsync and
    /// memory.
    pub tls_cost: Vec<TlsCostReport>,
    /// etcd.
    pub etcd: EtcdReport,
    /// Failover.
    pub failover: FailoverReport,
    /// Configuration push, M = 1, 10, 100.
    pub push: Vec<PushResult>,
    /// Threads per coordinator replica with M masters and K clients
    /// (100 and 1000 in a full run, 10 and 50 with `--quick`).
    pub threads: Option<crate::threads::ThreadsReport>,
    // Flat fields (names kept stable for checks).
    /// Floor RTT p50 (µs).
    pub floor_rtt_p50_us: f64,
    /// Floor fsync p50 (µs).
    pub floor_fsync_p50_us: f64,
    /// Floor fsync p50 while two other processes sync on the same disk
    /// (µs): what each of the three replicas sharing this disk pays.
    pub floor_fsync3_p50_us: f64,
    /// The client-observed floor of a commit point: 2 × RTT + fsync3 (µs).
    pub floor_client_p50_us: f64,
    /// Commit point as the leader measures it, fsync, p50 (µs).
    pub commit_fsync_leader_p50_us: f64,
    /// Commit point as the leader measures it, memory, p50 (µs).
    pub commit_memory_leader_p50_us: f64,
    /// Push to 1 master, every region landed, p50 (µs).
    pub push_1_p50_us: f64,
    /// Push to 100 masters, every region landed, p50 (µs).
    pub push_100_p50_us: f64,
    /// The leader's threads with 100 masters and 1000 clients (full runs
    /// only; null with `--quick`).
    pub threads_coordinator_100_masters: f64,
    /// Commit point, fsync, p50 (µs).
    pub commit_fsync_p50_us: f64,
    /// Commit point, fsync, p99 (µs).
    pub commit_fsync_p99_us: f64,
    /// Commit point, fsync, p99.9 (µs).
    pub commit_fsync_p999_us: f64,
    /// Commit point, memory, p50 (µs).
    pub commit_memory_p50_us: f64,
    /// Commit point, memory, p99 (µs).
    pub commit_memory_p99_us: f64,
    /// Commit point, memory, p99.9 (µs).
    pub commit_memory_p999_us: f64,
    /// Commit point, fsync, without TLS, p50 (µs).
    pub commit_fsync_insecure_p50_us: f64,
    /// Commit point, fsync, without TLS, p99 (µs).
    pub commit_fsync_insecure_p99_us: f64,
    /// Operations/s, fsync, without TLS, 64 clients.
    pub fsync_insecure_ops_per_s_64: f64,
    /// TLS commit p50 / insecure commit p50, fsync, on interleaved
    /// operations (`tls_cost`).
    pub tls_commit_p50_ratio: f64,
    /// What TLS adds to the commit p50, memory durability (µs), on
    /// interleaved operations: the network's share without the disk.
    pub tls_commit_added_p50_us_memory: f64,
    /// etcd put p50 through its JSON gateway (µs).
    pub etcd_put_p50_us: f64,
    /// Operations/s, fsync, 64 clients.
    pub fsync_ops_per_s_64: f64,
    /// Operations/s, memory, 64 clients.
    pub memory_ops_per_s_64: f64,
    /// etcd puts/s, 64 clients (JSON gateway).
    pub etcd_ops_per_s_64: f64,
    /// etcd put p50 through its native gRPC API (µs).
    pub etcd_native_put_p50_us: f64,
    /// etcd puts/s, 64 clients, native gRPC.
    pub etcd_native_ops_per_s_64: f64,
    /// Failover to the first commit, p50 (ms).
    pub failover_p50_ms: f64,
    /// The goals, each as (name, measured ratio, limit, met).
    pub goals: Vec<Goal>,
}

/// One goal of the benchmark issue, checked on this run.
#[derive(Serialize, Clone, Debug)]
pub struct Goal {
    /// What.
    pub name: String,
    /// The measured figure (a ratio, or ms).
    pub measured: f64,
    /// The bound.
    pub limit: f64,
    /// `measured <= limit` (or `>=` for the "at least" goals).
    pub met: bool,
}

fn at_64(t: &[crate::cluster::Throughput]) -> f64 {
    t.iter()
        .find(|x| x.clients == 64)
        .map_or(0.0, |x| x.ops_per_s)
}

impl Report {
    /// Fills the flat fields and the goals from the parts.
    pub fn finish(&mut self) {
        self.floor_rtt_p50_us = self.floor.rtt.p50_us;
        self.floor_fsync_p50_us = self.floor.fsync.p50_us;
        self.floor_fsync3_p50_us = self.floor.fsync3.p50_us;
        self.floor_client_p50_us = 2.0 * self.floor_rtt_p50_us + self.floor_fsync3_p50_us;
        self.commit_fsync_leader_p50_us = self.ramcoord_fsync.commit_at_leader.p50_us;
        self.commit_memory_leader_p50_us = self.ramcoord_memory.commit_at_leader.p50_us;
        self.commit_fsync_p50_us = self.ramcoord_fsync.commit.p50_us;
        self.commit_fsync_p99_us = self.ramcoord_fsync.commit.p99_us;
        self.commit_fsync_p999_us = self.ramcoord_fsync.commit.p999_us;
        self.commit_memory_p50_us = self.ramcoord_memory.commit.p50_us;
        self.commit_memory_p99_us = self.ramcoord_memory.commit.p99_us;
        self.commit_memory_p999_us = self.ramcoord_memory.commit.p999_us;
        self.commit_fsync_insecure_p50_us = self.ramcoord_fsync_insecure.commit.p50_us;
        self.commit_fsync_insecure_p99_us = self.ramcoord_fsync_insecure.commit.p99_us;
        self.fsync_insecure_ops_per_s_64 = at_64(&self.ramcoord_fsync_insecure.throughput);
        let cost = |d: &str| self.tls_cost.iter().find(|c| c.durability == d);
        self.tls_commit_p50_ratio = cost("fsync").map_or(f64::INFINITY, |c| c.p50_ratio);
        self.tls_commit_added_p50_us_memory = cost("memory").map_or(f64::NAN, |c| c.p50_added_us);
        self.etcd_put_p50_us = self.etcd.put.p50_us;
        self.fsync_ops_per_s_64 = at_64(&self.ramcoord_fsync.throughput);
        self.memory_ops_per_s_64 = at_64(&self.ramcoord_memory.throughput);
        self.etcd_ops_per_s_64 = at_64(&self.etcd.throughput);
        self.etcd_native_put_p50_us = self.etcd.native_put.p50_us;
        self.etcd_native_ops_per_s_64 = at_64(&self.etcd.native_throughput);
        self.failover_p50_ms = self.failover.first_commit.p50_us / 1000.0;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
        let push_1 = self.push.iter().find(|p| p.masters == 1);
        let push_100 = self.push.iter().find(|p| p.masters == 100);
        self.push_1_p50_us = push_1.map_or(f64::NAN, |p| p.landed.p50_us);
        self.push_100_p50_us = push_100.map_or(f64::NAN, |p| p.landed.p50_us);
        self.threads_coordinator_100_masters = self
            .threads
            .as_ref()
            .filter(|t| t.masters == 100)
            .map_or(f64::NAN, |t| t.leader as f64);
        let at_most = |name: &str, measured: f64, limit: f64| Goal {
            name: name.into(),
            measured,
            limit,
            met: measured <= limit,
        };
        let at_least = |name: &str, measured: f64, limit: f64| Goal {
            name: name.into(),
            measured,
            limit,
            met: measured >= limit,
        };
        // The goals of issue 17 (ratios within this run).
        let fsync3 = self.floor_fsync3_p50_us;
        let rtt = self.floor_rtt_p50_us;
        self.goals = vec![
            at_most(
                "leader-side fsync commit p50 / (RTT + fsync3)",
                ratio(self.commit_fsync_leader_p50_us, rtt + fsync3),
                1.3,
            ),
            at_most(
                "client fsync commit p50 / (2 × RTT + fsync3)",
                ratio(self.commit_fsync_p50_us, self.floor_client_p50_us),
                1.3,
            ),
            at_most(
                "client memory commit p50 / (2 × RTT)",
                ratio(self.commit_memory_p50_us, 2.0 * rtt),
                1.5,
            ),
            at_most(
                "fsync commit p99.9 / p50",
                ratio(self.commit_fsync_p999_us, self.commit_fsync_p50_us),
                3.0,
            ),
            at_most(
                "memory commit p99.9 / p50",
                ratio(self.commit_memory_p999_us, self.commit_memory_p50_us),
                3.0,
            ),
            at_least(
                "fsync ops/s / etcd ops/s, 64 clients (etcd's native gRPC client)",
                ratio(self.fsync_ops_per_s_64, self.etcd_native_ops_per_s_64),
                5.0,
            ),
            at_least(
                "fsync ops/s / etcd ops/s, 64 clients (etcd through its JSON gateway, as earlier runs)",
                ratio(self.fsync_ops_per_s_64, self.etcd_ops_per_s_64),
                5.0,
            ),
            at_most(
                "TLS fsync commit p50 / --insecure fsync commit p50 (interleaved)",
                self.tls_commit_p50_ratio,
                1.10,
            ),
            at_most("failover p50 (ms)", self.failover_p50_ms, 50.0),
            at_most(
                "push to 100 masters p50 / push to 1 p50",
                ratio(self.push_100_p50_us, self.push_1_p50_us),
                10.0,
            ),
        ];
    }

    /// The markdown table.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "Run {} ({}), µs as p50 / p99 / p99.9 / max\n\n",
            self.when,
            if self.quick { "--quick" } else { "full" }
        );
        s += "| what | latency | ops/s at 1 / 8 / 64 clients |\n|---|---|---|\n";
        let row = |name: &str, d: &Dist, t: &[crate::cluster::Throughput]| {
            let tp: Vec<String> = t.iter().map(|x| format!("{:.0}", x.ops_per_s)).collect();
            format!("| {name} | {} | {} |\n", d.row(), tp.join(" / "))
        };
        s += &row("floor: loopback RTT 64 B", &self.floor.rtt, &[]);
        s += &row(
            "floor: loopback RTT 64 B, mutual TLS (the transport's Link)",
            &self.floor.rtt_tls,
            &[],
        );
        s += &row("floor: 4 KiB write + fdatasync", &self.floor.fsync, &[]);
        s += &row(
            "floor: the same, two other processes syncing on the disk (fsync3)",
            &self.floor.fsync3,
            &[],
        );
        for r in [
            &self.ramcoord_fsync,
            &self.ramcoord_memory,
            &self.ramcoord_fsync_insecure,
        ] {
            let d = if r.tls {
                format!("{} (TLS)", r.durability)
            } else {
                format!("{} --insecure", r.durability)
            };
            s += &row(
                &format!("ramcoord {d}: commit point (client)"),
                &r.commit,
                &r.throughput,
            );
            s += &row(
                &format!("ramcoord {d}: commit point (at the leader)"),
                &r.commit_at_leader,
                &[],
            );
            s += &row(
                &format!("ramcoord {d}: full operation (pushes, completion)"),
                &r.complete,
                &[],
            );
            s += &format!(
                "| ramcoord {d}: no-op record | {} | 64 clients: {:.0} |\n",
                r.noop.row(),
                r.noop_ops_per_s_64
            );
        }
        for c in &self.tls_cost {
            s += &format!(
                "| TLS cost, {} (interleaved with --insecure): commit point | TLS {}; insecure {} | p50 {:+.0} µs (x{:.3}) |\n",
                c.durability,
                c.tls.row(),
                c.insecure.row(),
                c.p50_added_us,
                c.p50_ratio
            );
        }
        s += &row(
            &format!("etcd put, native gRPC client ({})", self.etcd.version),
            &self.etcd.native_put,
            &self.etcd.native_throughput,
        );
        s += &row(
            "etcd put, JSON gateway",
            &self.etcd.put,
            &self.etcd.throughput,
        );
        s += &row(
            "etcd serializable read (client + gateway overhead)",
            &self.etcd.client_floor,
            &[],
        );
        s += &format!(
            "| failover ({} ms election timeout, {} trials): kill → first commit | {} | |\n",
            self.failover.election_ms,
            self.failover.trials,
            self.failover.first_commit.row()
        );
        s += &format!(
            "| failover: kill → roll-forward done | {} | |\n",
            self.failover.rolled_forward.row()
        );
        for p in &self.push {
            s += &format!(
                "| push to {} masters ({} B regions): all landed | {} | |\n",
                p.masters,
                p.region_bytes,
                p.landed.row()
            );
        }
        if let Some(t) = &self.threads {
            s += &format!(
                "| threads per coordinator replica, {} masters and {} clients connected | leader {}, most {} | |\n",
                t.masters, t.clients, t.leader, t.max
            );
        }
        s += "\n| goal | measured | limit | met |\n|---|---|---|---|\n";
        for g in &self.goals {
            s += &format!(
                "| {} | {:.2} | {} | {} |\n",
                g.name,
                g.measured,
                g.limit,
                if g.met { "yes" } else { "**no**" }
            );
        }
        s
    }
}

/// Latency CDFs on a log axis.
pub fn plot_cdf(r: &Report, path: &Path) -> Result<(), String> {
    let series: Vec<(&str, &Dist, RGBColor)> = vec![
        ("floor RTT", &r.floor.rtt, RGBColor(150, 150, 150)),
        ("floor fdatasync", &r.floor.fsync, RGBColor(90, 90, 90)),
        (
            "floor fdatasync, 3 syncers",
            &r.floor.fsync3,
            RGBColor(60, 60, 60),
        ),
        ("ramcoord memory commit", &r.ramcoord_memory.commit, BLUE),
        (
            "ramcoord fsync commit",
            &r.ramcoord_fsync.commit,
            RGBColor(0, 140, 0),
        ),
        (
            "ramcoord fsync full op",
            &r.ramcoord_fsync.complete,
            RGBColor(120, 200, 120),
        ),
        ("etcd put, native gRPC", &r.etcd.native_put, RED),
        (
            "etcd put, JSON gateway",
            &r.etcd.put,
            RGBColor(240, 150, 150),
        ),
    ];
    let max = series.iter().map(|(_, d, _)| d.max_us).fold(10.0, f64::max) * 1.2;
    let min = series
        .iter()
        .filter(|(_, d, _)| d.count > 0)
        .map(|(_, d, _)| d.cdf.first().map_or(1.0, |p| p.1))
        .fold(f64::MAX, f64::min)
        .max(1.0)
        * 0.8;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency CDF (one run)", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((min..max).log_scale(), 0.0..1.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("microseconds (log)")
        .y_desc("fraction of operations")
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, d, color) in series {
        chart
            .draw_series(LineSeries::new(
                d.cdf.iter().map(|(q, v)| (v.max(min), *q)),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Throughput against clients.
pub fn plot_throughput(r: &Report, path: &Path) -> Result<(), String> {
    let series: Vec<(&str, &[crate::cluster::Throughput], RGBColor)> = vec![
        ("ramcoord memory", &r.ramcoord_memory.throughput, BLUE),
        (
            "ramcoord fsync",
            &r.ramcoord_fsync.throughput,
            RGBColor(0, 140, 0),
        ),
        ("etcd, native gRPC", &r.etcd.native_throughput, RED),
        (
            "etcd, JSON gateway",
            &r.etcd.throughput,
            RGBColor(240, 150, 150),
        ),
    ];
    let max = series
        .iter()
        .flat_map(|(_, t, _)| t.iter().map(|x| x.ops_per_s))
        .fold(10.0, f64::max)
        * 1.2;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("throughput, closed loop (one run)", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0f64..80.0).log_scale(), 0.0..max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (log)")
        .y_desc("operations / s")
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, t, color) in series {
        chart
            .draw_series(LineSeries::new(
                t.iter().map(|x| (x.clients as f64, x.ops_per_s)),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                t.iter()
                    .map(|x| Circle::new((x.clients as f64, x.ops_per_s), 4, color.filled())),
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
    root.present().map_err(|e| e.to_string())
}

/// Writes the JSON, the markdown and the plots under `out`; returns the
/// paths written.
pub fn write_outputs(r: &Report, out: &Path, stamp: &str) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join(format!("{stamp}.json"));
    std::fs::write(
        &json,
        serde_json::to_string_pretty(r).expect("serialisable"),
    )
    .map_err(|e| e.to_string())?;
    let md = out.join(format!("{stamp}.md"));
    std::fs::write(&md, r.markdown()).map_err(|e| e.to_string())?;
    let mut written = vec![json, md];
    match ramcoord::chaos::plot::register_font() {
        Ok(()) => {
            let cdf = out.join(format!("{stamp}-latency.png"));
            plot_cdf(r, &cdf)?;
            let tp = out.join(format!("{stamp}-throughput.png"));
            plot_throughput(r, &tp)?;
            written.push(cdf);
            written.push(tp);
        }
        Err(e) => eprintln!("no plots: {e}"),
    }
    Ok(written)
}
