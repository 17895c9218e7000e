//! The linearizability checker against 60 histories Jepsen recorded against
//! etcd, with their published verdicts (`tests/data/jepsen/`, origin and licence
//! in its README).

use std::path::PathBuf;
use std::process::Command;

use ramcoord::lincheck::{self, jepsen, register::Register, Verdict};

fn jepsen_dir() -> PathBuf {
    let dir = std::env::var_os("RAMCOORD_JEPSEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jepsen"));
    assert!(
        dir.join("answers.txt").exists(),
        "the known-answer histories are missing at {} (set RAMCOORD_JEPSEN_DIR)",
        dir.display()
    );
    dir
}

fn answers() -> Vec<(String, bool)> {
    let text = std::fs::read_to_string(jepsen_dir().join("answers.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (file, verdict) = l.split_once(' ').expect("answers.txt: `<file> <verdict>`");
            let linearizable = match verdict.trim() {
                "linearizable" => true,
                "not-linearizable" => false,
                other => panic!("answers.txt: unknown verdict {other:?}"),
            };
            (file.to_owned(), linearizable)
        })
        .collect()
}

#[test]
fn agrees_with_all_60_known_answers() {
    let answers = answers();
    assert_eq!(answers.len(), 60);
    let mut wrong = Vec::new();
    for (file, expected) in &answers {
        let text = std::fs::read_to_string(jepsen_dir().join(file)).unwrap();
        let parsed = jepsen::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let verdict = lincheck::check(&Register, &parsed.history);
        assert!(!matches!(verdict, Verdict::Unknown), "{file}: no verdict");
        if verdict.is_linearizable() != *expected {
            wrong.push(file.clone());
        }
        // The failing prefix exists exactly for the failing histories.
        let prefix = lincheck::shortest_failing_prefix(&Register, &parsed.history);
        assert_eq!(prefix.is_some(), !expected, "{file}: prefix {prefix:?}");
    }
    assert!(wrong.is_empty(), "wrong verdicts: {wrong:?}");
}

#[test]
fn cli_exit_codes_follow_the_verdict() {
    let bin = env!("CARGO_BIN_EXE_ramcoord");
    for (file, expected) in answers().into_iter().take(8) {
        let out = Command::new(bin)
            .args(["lincheck", "--format", "jepsen"])
            .arg(jepsen_dir().join(&file))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let first = stdout.lines().next().unwrap_or_default();
        if expected {
            assert_eq!(out.status.code(), Some(0), "{file}");
            assert_eq!(first, "linearizable");
        } else {
            assert_eq!(out.status.code(), Some(1), "{file}");
            assert_eq!(first, "not linearizable");
            assert!(stdout.contains("could not place"), "{file}: {stdout}");
        }
    }
}

#[test]
fn cli_bad_input_is_a_one_line_error() {
    let dir = std::env::temp_dir().join(format!("ramcoord-lincheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.log");
    std::fs::write(
        &bad,
        "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:frobnicate\t1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .arg("lincheck")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let missing = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(["lincheck", "/nonexistent/h.log"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--format tables`: a chaos history of table operations, checked per
/// name; a stale read is caught and its lines are the evidence.
#[test]
fn cli_checks_chaos_table_histories_per_name() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/chaos");
    let run = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_ramcoord"))
            .args(["lincheck", "--format", "tables"])
            .arg(data.join(file))
            .output()
            .unwrap()
    };
    let ok = run("concurrent.jsonl");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("t1: linearizable (5 operations)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("t2: linearizable (2 operations)"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("linearizable (2 names)"),
        "{stdout}"
    );

    let bad = run("stale-read.jsonl");
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("users: NOT linearizable"), "{stdout}");
    assert!(stdout.contains("orders: linearizable"), "{stdout}");
    // The evidence quotes the history's lines.
    assert!(
        stdout.contains(r#"  3: {"process": 1, "type": "invoke", "f": "read""#)
            || stdout.contains(r#"  1: {"process": 0, "type": "invoke", "f": "create""#),
        "{stdout}"
    );

    // A completion without an invocation is an error naming the line.
    let dir = std::env::temp_dir().join(format!("ramcoord-lincheck-t-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("h.jsonl");
    std::fs::write(
        &f,
        r#"{"process": 4, "type": "ok", "f": "drop", "key": "t", "value": null, "time": 5}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(["lincheck", "--format", "tables"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
    std::fs::remove_dir_all(&dir).unwrap();
}
