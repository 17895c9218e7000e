//! The README's first command: `ramcoord demo` runs its whole scenario
//! (roll-forward after a leader kill, a master's recovery, a replica's
//! restart) and exits 0, leaving no process or directory behind.

use std::process::Command;

/// Processes whose command line mentions `needle` (the demo passes its
/// directory to every child it starts).
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

#[test]
fn demo_runs_its_scenario_and_cleans_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .arg("demo")
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "passed its commit point",
        "rolled forward",
        "recovery plan",
        "caught up",
        "timeline",
        "demo finished",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
    // The directory the demo itself names (it uses its own pid) is gone.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("demo finished"))
        .expect("the closing line");
    let dir = line
        .split(", ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" removed"))
        .unwrap_or_else(|| panic!("no directory in {line:?}"));
    assert!(dir.contains("ramcoord-demo-"), "{dir}");
    assert!(!std::path::Path::new(dir).exists(), "{dir} is left behind");
    // No child is left running: every process the demo started had the
    // directory on its command line.
    let left = processes_mentioning(dir);
    assert!(left.is_empty(), "left running: {left:?}");
}
