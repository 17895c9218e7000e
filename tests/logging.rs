//! `--log-level` and `--log-format`: what an operator, or a log collector,
//! gets on stderr.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A filter that does not parse is refused before anything starts, naming
/// the flag; `--log-format json` makes every line one JSON object with the
/// time, the level, the target and the fields; `--log-level` takes a
/// filter: with `warn,ramcoord::replica=info` the replica's own info line
/// ("coordinator active") comes through and the node's ("replica started",
/// logged before it at info) does not.
#[test]
fn json_logs_are_one_object_per_line_and_a_bad_level_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args([
            "--log-level",
            "info,[",
            "ctl",
            "--coordinators",
            "127.0.0.1:1",
            "status",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--log-level"), "{err}");

    let addr = ramcoord::local_cluster::free_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("ramcoord-logging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(["coordinator", "--id", "1", "--listen", &addr.to_string()])
        .args(["--peers", &format!("1={addr}"), "--data-dir"])
        .arg(&dir)
        .args(["--insecure", "--tick-ms", "5"])
        .args([
            "--log-format",
            "json",
            "--log-level",
            "warn,ramcoord::replica=info",
        ])
        .env_remove("RAMCOORD_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut lines, mut active) = (0, false);
    let mut filtered_out = Vec::new();
    while Instant::now() < deadline && !active {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        for field in ["timestamp", "level", "target", "fields"] {
            assert!(v.get(field).is_some(), "no {field:?} in {line}");
        }
        lines += 1;
        let target = v["target"].as_str().unwrap_or_default();
        if matches!(v["level"].as_str(), Some("INFO" | "DEBUG" | "TRACE"))
            && !target.starts_with("ramcoord::replica")
        {
            filtered_out.push(line.clone());
        }
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("coordinator active"))
        {
            active = true;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(active, "no \"coordinator active\" line among {lines}");
    assert!(
        filtered_out.is_empty(),
        "lines the filter should have dropped: {filtered_out:?}"
    );
}
