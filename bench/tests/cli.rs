//! The bench's command line, run as a user runs it: what `--help` teaches
//! and that a bad argument is refused before any measurement starts.
//!
//! Also why this file exists at all: an integration test makes `cargo
//! test --workspace` build the `ramcoord-bench` binary with the
//! workspace's features, so scripts/test.sh runs that binary instead of
//! building it a second time with a different feature set.

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ramcoord-bench"))
        .args(args)
        .output()
        .expect("ramcoord-bench runs")
}

#[test]
fn help_names_every_benchmark() {
    let out = bench(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "core", "rdma", "floor", "commit", "tls-cost", "failover", "push", "threads", "etcd",
        "compare", "scale", "storage",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "--help lacks {command}:\n{help}"
        );
    }
}

#[test]
fn a_malformed_cluster_point_is_refused_before_anything_runs() {
    for (bad, says) in [
        ("20", "expected MASTERS:TABLETS"),
        ("x:100", "masters \"x\""),
        ("2:100", "masters must be at least 4"),
        ("100:0", "tablets must be at least 1"),
    ] {
        // The state part would run first (tens of seconds) if the value
        // were checked only when the cluster part reached it.
        let out = bench(&["scale", "--cluster-points", bad, "--out", "/nonexistent"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(says), "{bad}: {err}");
        assert!(
            !err.contains("scale:"),
            "{bad}: a measurement started: {err}"
        );
    }
}
