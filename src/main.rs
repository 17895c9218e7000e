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
