//! The durable log survives kill -9 of a process appending to it: 50 rounds
//! (`scripts/crash-storage.sh N` runs more).

use std::process::Command;

#[test]
fn every_reported_durable_entry_survives_kill_9() {
    let dir = std::env::temp_dir().join(format!("ramcoord-crash-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args([
            "storage-crash",
            "--iterations",
            "50",
            "--seed",
            "3",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("storage-crash: 50 iterations"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
