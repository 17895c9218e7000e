//! The `ramcoord` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ramcoord::lincheck::{self, jepsen, register::Register, Verdict};

/// ramcoord: a fault-tolerant cluster coordinator (Raft log, commit points,
/// roll-forward).
#[derive(Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a recorded client history for linearizability.
    ///
    /// Reads a Jepsen register history (read / write / cas; `:info` outcomes
    /// count as "may have happened any time after the invocation, or never")
    /// and prints `linearizable` (exit 0) or `not linearizable` (exit 1) with
    /// the shortest failing prefix and the operations that could not be
    /// placed. Unreadable event lines are an error naming the line (exit 2).
    ///
    /// Example: ramcoord lincheck --format jepsen ../shared/jepsen/etcd_000.log
    Lincheck {
        /// History format.
        #[arg(long, value_enum, default_value_t = HistoryFormat::Jepsen)]
        format: HistoryFormat,
        /// The history file.
        file: PathBuf,
    },
    /// Run the deterministic simulator over a range of seeds.
    ///
    /// Each seed runs a whole Raft group (plus clients) over a simulated
    /// network and disks with faults, checks every safety invariant after
    /// every step (election safety, log matching, leader completeness, state
    /// machine safety, committed entries never change), then heals every
    /// fault and checks liveness, the survival of acknowledged writes and
    /// the linearizability of the client history. One seed determines
    /// everything: a failing seed replays exactly.
    ///
    /// --workload coordinator runs the coordinator on the replicas, with
    /// masters taking configuration pushes and clients creating, dropping,
    /// splitting and migrating tables; the leader crashes around commit
    /// points, masters crash and lose links. It checks the cluster state's
    /// invariants after every applied record, that no master goes back to
    /// an older configuration or takes one from a deposed term, and at the
    /// end that every committed operation completed and every master holds
    /// what the coordinator says.
    ///
    /// Examples:
    ///   ramcoord sim --workload raft --seeds 2000
    ///   ramcoord sim --workload raft --seeds 20000 --faults heavy --replicas 5
    ///   ramcoord sim --workload raft --seed 42 --trace
    ///   ramcoord sim --inject-bug forget-vote --seeds 2000
    ///   ramcoord sim --workload coordinator --seeds 2000
    ///   ramcoord sim --workload coordinator --inject-bug no-roll-forward --seeds 2000
    #[command(verbatim_doc_comment)]
    Sim(SimArgs),
    /// Crash-test the durable log with real processes: a child appends and
    /// reports what is durable, the parent kills it with SIGKILL, reopens
    /// the log and checks every reported entry. Exit 0 iff all survive.
    ///
    /// Example: ramcoord storage-crash --iterations 500
    #[command(hide = true)]
    StorageCrash {
        /// Rounds of spawn, kill -9, reopen, check.
        #[arg(long, default_value_t = 50)]
        iterations: u64,
        /// Seed of the kill timing.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where the log lives (default: a fresh temporary directory, removed
        /// after a passing run).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Internal: run as the appending child.
        #[arg(long, requires = "dir")]
        child: bool,
        /// Internal: the child's term.
        #[arg(long, default_value_t = 1)]
        term: u64,
    },
}

#[derive(clap::Args)]
struct SimArgs {
    /// What to simulate.
    #[arg(long, value_enum, default_value_t = Workload::Raft)]
    workload: Workload,
    /// How many seeds to run.
    #[arg(long, default_value_t = 100, conflicts_with = "seed")]
    seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Run exactly this one seed (with --trace: print its events).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the event trace of the seed and its hash.
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Fault intensity.
    #[arg(long, value_enum, default_value_t = Faults::Standard)]
    faults: Faults,
    /// Replicas in the group: 3 or 5; 0 alternates 3 and 5 by seed.
    #[arg(long, default_value_t = 0, value_parser = parse_replicas)]
    replicas: usize,
    /// Plant a known bug to see the checkers catch it (see --list-bugs).
    #[arg(long)]
    inject_bug: Option<String>,
    /// List the bugs --inject-bug knows and exit.
    #[arg(long)]
    list_bugs: bool,
    /// Worker threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_replicas(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ (0 | 3 | 5)) => Ok(n),
        _ => Err(format!("{s:?}: replicas must be 3, 5 or 0 (alternate)")),
    }
}

/// What the simulator runs.
#[derive(Clone, Copy, ValueEnum)]
enum Workload {
    /// A Raft group serving a key-value register workload.
    Raft,
    /// Coordinator replicas, masters and clients: operations with commit
    /// points, roll-forward, configuration pushes.
    Coordinator,
}

/// Fault intensity.
#[derive(Clone, Copy, ValueEnum)]
enum Faults {
    /// Ordinary delays only.
    None,
    /// Loss, duplication, reordering, partitions, crashes with torn writes,
    /// slow disks, tick skew, membership changes and leader transfers.
    Standard,
    /// The same, more often.
    Heavy,
}

#[derive(Clone, Copy, ValueEnum)]
enum HistoryFormat {
    /// Jepsen's `jepsen.util` log lines for a single register.
    Jepsen,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Lincheck { format, file } => run_lincheck(format, &file),
        Command::Sim(args) => run_sim(args),
        Command::StorageCrash {
            iterations,
            seed,
            dir,
            child,
            term,
        } => run_storage_crash(iterations, seed, dir, child, term),
    }
}

/// Appends a line to a report string (reports are written in one go, and a
/// closed stdout, as in `| head`, is not an error worth a panic).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

fn emit(out: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
}

fn run_lincheck(format: HistoryFormat, file: &PathBuf) -> ExitCode {
    let HistoryFormat::Jepsen = format;
    let mut out = String::new();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ramcoord lincheck: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let parsed = match jepsen::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ramcoord lincheck: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let line = |n: u64| parsed.lines[n as usize - 1].trim().to_owned();
    match lincheck::check(&Register, &parsed.history) {
        Verdict::Linearizable => {
            outln!(out, "linearizable");
            emit(&out);
            ExitCode::SUCCESS
        }
        Verdict::NotLinearizable(failure) => {
            outln!(out, "not linearizable");
            if let Some(end) = lincheck::shortest_failing_prefix(&Register, &parsed.history) {
                outln!(
                    out,
                    "shortest non-linearizable prefix: lines 1..={end}, ending with:"
                );
                outln!(out, "  {end}: {}", line(end));
            }
            outln!(
                out,
                "deepest partial linearization placed {} of {} operations; could not place:",
                failure.placed_max,
                parsed.history.len()
            );
            for i in failure.unplaceable {
                let op = &parsed.history[i];
                let ret = op
                    .ret
                    .map(|r| format!(" -> {}: {}", r, line(r)))
                    .unwrap_or_default();
                outln!(out, "  {}: {}{}", op.call, line(op.call), ret);
            }
            emit(&out);
            ExitCode::from(1)
        }
        Verdict::Unknown => {
            eprintln!(
                "ramcoord lincheck: search budget ({} steps) exhausted without a verdict",
                lincheck::SEARCH_STEPS_MAX
            );
            ExitCode::from(3)
        }
    }
}

fn run_sim(args: SimArgs) -> ExitCode {
    use ramcoord::sim::{self, FaultLevel, SimOptions};
    if args.list_bugs {
        for (name, workload, what) in sim::BUGS {
            println!("{name:<22} {workload:<12} {what}");
        }
        return ExitCode::SUCCESS;
    }
    let workload = match args.workload {
        Workload::Raft => sim::Workload::Raft,
        Workload::Coordinator => sim::Workload::Coordinator,
    };
    let workload_name = args.workload.to_possible_value().expect("value");
    let workload_name = workload_name.get_name();
    if let Some((name, needs, _)) = args
        .inject_bug
        .as_deref()
        .and_then(|b| sim::BUGS.iter().find(|(n, _, _)| *n == b))
    {
        if *needs != workload_name {
            eprintln!(
                "ramcoord sim: bug {name:?} lives in the {needs} workload; add --workload {needs}"
            );
            return ExitCode::from(2);
        }
    }
    let bugs = match &args.inject_bug {
        None => Default::default(),
        Some(name) => match sim::bug_by_name(name) {
            Some(b) => b,
            None => {
                let known: Vec<&str> = sim::BUGS.iter().map(|(n, _, _)| *n).collect();
                eprintln!(
                    "ramcoord sim: unknown bug {name:?}; known: {}",
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        },
    };
    let faults = match args.faults {
        Faults::None => FaultLevel::None,
        Faults::Standard => FaultLevel::Standard,
        Faults::Heavy => FaultLevel::Heavy,
    };
    let replicas_for = |seed: u64| {
        if args.replicas == 0 {
            if seed % 2 == 0 {
                3
            } else {
                5
            }
        } else {
            args.replicas
        }
    };
    let opts_for = |seed: u64, trace: bool| SimOptions {
        seed,
        replicas: replicas_for(seed),
        faults,
        bugs,
        trace,
        workload,
    };

    if let Some(seed) = args.seed {
        let out = sim::run(opts_for(seed, args.trace));
        let mut text = String::new();
        for line in &out.trace {
            outln!(text, "{line}");
        }
        let s = &out.stats;
        outln!(
            text,
            "seed {seed}: {} replicas, {} events, {} leaders, applied {}, ops ok {} unknown {}, crashes {}",
            replicas_for(seed), s.events, s.leaders, s.applied_max, s.ops_ok, s.ops_unknown, s.crashes
        );
        let failed = match &out.violation {
            None => {
                outln!(text, "sim: 1 passed, 0 failed");
                false
            }
            Some(v) => {
                outln!(text, "seed {seed} FAILED: {}: {}", v.invariant, v.detail);
                outln!(text, "sim: 0 passed, 1 failed");
                true
            }
        };
        if args.trace {
            outln!(text, "trace-hash: {:016x}", out.trace_hash);
        }
        emit(&text);
        return if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = std::sync::atomic::AtomicU64::new(0);
    let started = std::time::Instant::now();
    let mut results: Vec<sim::SimOutcome> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= args.seeds {
                            break;
                        }
                        mine.push(sim::run(opts_for(args.first_seed + i, false)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("simulator worker panicked"))
            .collect()
    });
    results.sort_by_key(|r| r.seed);
    let elapsed = started.elapsed().as_secs_f64();
    let failed: Vec<&sim::SimOutcome> = results.iter().filter(|r| r.violation.is_some()).collect();
    let mut text = String::new();
    for r in &failed {
        let v = r.violation.as_ref().expect("filtered");
        outln!(
            text,
            "seed {} FAILED: {}: {}",
            r.seed,
            v.invariant,
            v.detail
        );
    }
    if let Some(first) = failed.first() {
        let bug = args
            .inject_bug
            .as_deref()
            .map(|b| format!(" --inject-bug {b}"))
            .unwrap_or_default();
        outln!(
            text,
            "replay: ramcoord sim --workload {workload_name} --seed {} --faults {} --replicas {}{bug} --trace",
            first.seed,
            args.faults.to_possible_value().expect("value").get_name(),
            replicas_for(first.seed)
        );
    }
    let events: u64 = results.iter().map(|r| r.stats.events).sum();
    let crashes: u64 = results.iter().map(|r| r.stats.crashes).sum();
    let ops: u64 = results.iter().map(|r| r.stats.ops_ok).sum();
    let sum = |f: fn(&sim::SimStats) -> u64| -> u64 { results.iter().map(|r| f(&r.stats)).sum() };
    outln!(
        text,
        "coverage: {} leaders, {} torn writes, {} snapshots installed, {} membership changes, {} transfers, {} reads",
        sum(|s| s.leaders),
        sum(|s| s.torn_writes),
        sum(|s| s.snapshots_installed),
        sum(|s| s.conf_changes),
        sum(|s| s.transfers),
        sum(|s| s.reads)
    );
    if workload == sim::Workload::Coordinator {
        outln!(
            text,
            "coordinator: {} operations completed ({} rolled forward by a later leader), {} pushes ({} landed, {} fenced off), {} master crashes",
            sum(|s| s.coord_ops_completed),
            sum(|s| s.roll_forwards),
            sum(|s| s.pushes),
            sum(|s| s.pushes_applied),
            sum(|s| s.stale_pushes_refused),
            sum(|s| s.master_crashes)
        );
    }
    outln!(
        text,
        "{} seeds in {elapsed:.1}s ({:.1} seeds/s, {threads} threads): {events} events, {crashes} crashes, {ops} client ops acknowledged",
        results.len(),
        results.len() as f64 / elapsed.max(1e-9)
    );
    outln!(
        text,
        "sim: {} passed, {} failed",
        results.len() - failed.len(),
        failed.len()
    );
    emit(&text);
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run_storage_crash(
    iterations: u64,
    seed: u64,
    dir: Option<PathBuf>,
    child: bool,
    term: u64,
) -> ExitCode {
    use ramcoord::storage_crash;
    if child {
        let dir = dir.expect("clap requires --dir with --child");
        if let Err(e) = storage_crash::child(&dir, term) {
            eprintln!("ramcoord storage-crash child: {e}");
        }
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ramcoord storage-crash: cannot find my own executable: {e}");
            return ExitCode::from(2);
        }
    };
    let (dir, temporary) = match dir {
        Some(d) => (d, false),
        None => (storage_crash::temp_dir(), true),
    };
    let started = std::time::Instant::now();
    match storage_crash::parent(&exe, &dir, iterations, seed) {
        Ok(r) => {
            println!(
                "storage-crash: {} iterations in {:.1}s, {} torn tails repaired, {} entries verified up to durable index {}",
                r.iterations,
                started.elapsed().as_secs_f64(),
                r.torn_tails,
                r.entries_checked,
                r.durable_max
            );
            if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "ramcoord storage-crash: FAILED: {e} (log kept in {})",
                dir.display()
            );
            ExitCode::from(1)
        }
    }
}
