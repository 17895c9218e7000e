//! The README's first command: `ramcoord demo` runs its whole scenario
//! (roll-forward after a leader kill, a master's recovery, a replica's
//! restart) and exits 0, leaving no process or directory behind.

use std::process::Command;

#[test]
fn demo_runs_its_scenario_and_cleans_up() {
    let dir = std::env::temp_dir().join(format!("ramcoord-demo-test-{}", std::process::id()));
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
    assert!(!dir.exists());
}
