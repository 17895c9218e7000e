//! `--config FILE` on real processes: the example files in `deploy/`
//! parse as every key a flag of their command (`--check-config`); a key
//! that is not a flag is refused, naming it; a coordinator started from a
//! file runs with the file's settings, a flag on the command line winning
//! over the file's.

use std::process::Command;
use std::time::{Duration, Instant};

fn ramcoord(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_files_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (cmd, file, expect) in [
        (
            "coordinator",
            "deploy/coordinator.toml",
            "--peers=1=10.0.0.1:7100,2=10.0.0.2:7100,3=10.0.0.3:7100",
        ),
        (
            "master",
            "deploy/master.toml",
            "--coordinators=10.0.0.1:7100,10.0.0.2:7100,10.0.0.3:7100",
        ),
    ] {
        let path = format!("{root}/{file}");
        let (code, out, err) = ramcoord(&[cmd, "--config", &path, "--check-config"]);
        assert_eq!(code, 0, "{file}: {out}{err}");
        assert!(
            out.starts_with(&format!("{cmd} settings OK: ramcoord {cmd} ")),
            "{out}"
        );
        assert!(out.contains(expect), "{out}");
        assert!(out.contains("--tls-dir=/etc/ramcoord/tls"), "{out}");
    }
    // The units start what the files configure.
    for unit in ["ramcoord-coordinator.service", "ramcoord-master.service"] {
        let text = std::fs::read_to_string(format!("{root}/deploy/{unit}")).unwrap();
        assert!(text.contains("--config /etc/ramcoord/"), "{unit}");
        assert!(text.contains("KillSignal=SIGTERM"), "{unit}");
    }
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let dir = std::env::temp_dir().join(format!("ramcoord-config-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("typo.toml");
    std::fs::write(&f, "id = 1\nlisten = \"127.0.0.1:1\"\ndata-dri = \"/x\"\n").unwrap();
    let (code, _, err) = ramcoord(&[
        "coordinator",
        "--config",
        f.to_str().unwrap(),
        "--check-config",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`data-dri` is not a setting of `coordinator`"),
        "{err}"
    );
    assert!(err.contains("data-dir"), "the settings are listed: {err}");
    std::fs::write(&f, "tick-ms = \"fast\"\nid = 1\nlisten = \"127.0.0.1:1\"\npeers = \"1=127.0.0.1:1\"\ndata-dir = \"/x\"\n").unwrap();
    let (code, _, err) = ramcoord(&[
        "coordinator",
        "--config",
        f.to_str().unwrap(),
        "--check-config",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tick-ms"), "clap names the flag: {err}");
    let (code, _, err) = ramcoord(&["master", "--config", "/nonexistent/master.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/master.toml"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A one-replica group from a file whose data directory is overridden on
/// the command line: it starts, becomes ready (its HTTP endpoint, also
/// from the file, says so), writes its log where the command line said
/// and nothing where the file said; SIGTERM stops it with exit 0.
#[test]
fn a_coordinator_runs_from_a_file_and_flags_win() {
    let dir = std::env::temp_dir().join(format!("ramcoord-config-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listen = ramcoord::local_cluster::free_addr().unwrap();
    let http = ramcoord::local_cluster::free_addr().unwrap();
    let from_file = dir.join("from-file");
    let used = dir.join("from-flag");
    let f = dir.join("c.toml");
    std::fs::write(
        &f,
        format!(
            "id = 1\nlisten = \"{listen}\"\ndata-dir = \"{}\"\ninsecure = true\nhttp = \"{http}\"\ntick-ms = 5\n[peers]\n1 = \"{listen}\"\n",
            from_file.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(["coordinator", "--config", f.to_str().unwrap()])
        .args(["--data-dir", used.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let answer = std::net::TcpStream::connect(http).and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        if let Ok(a) = answer {
            if a.starts_with("HTTP/1.1 200") {
                break a;
            }
        }
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ready.contains("\"role\":\"leader\""), "{ready}");
    assert!(used.exists(), "the command line's --data-dir is used");
    assert!(!from_file.exists(), "the file's data-dir is not");
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful stop");
    let _ = std::fs::remove_dir_all(dir);
}
