//! `ramcoord dev`: a local cluster that stays up, prints what to use, and
//! cleans up on Ctrl-C. The `ctl` command line it prints works as printed;
//! its status page answers; SIGINT stops every process it started and
//! removes its directory, exit 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn dev_prints_what_works_and_cleans_up() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(["dev", "--coordinators", "3", "--masters", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("dev never said ready: {lines:#?}"));
        let done = line == "ready";
        lines.push(line);
        if done {
            break;
        }
    }
    let text = lines.join("\n");
    let find = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{text}"))
            .to_string()
    };
    let dir = find("starting in ").trim_end_matches(" ...").to_string();
    assert!(std::path::Path::new(&dir).exists());
    // The ctl line, run as printed.
    let ctl = find("ctl: ");
    let words: Vec<&str> = ctl.split_whitespace().collect();
    assert_eq!(words[..2], ["ramcoord", "ctl"], "{ctl}");
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(&words[1..])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{ctl}: {status}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.contains("leader"), "{status}");
    // The status page.
    let page = find("status page: ");
    let addr = page
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("<title>ramcoord status</title>"));
    // Every process it started, by the pids it printed.
    let pids: Vec<u32> = lines
        .iter()
        .filter(|l| {
            l.trim_start().starts_with("coordinator ") || l.trim_start().starts_with("master ")
        })
        .filter_map(|l| {
            let after = l.split("pid ").nth(1)?;
            after.split_whitespace().next()?.parse().ok()
        })
        .collect();
    assert_eq!(pids.len(), 5, "{text}");
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "dev did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code}");
    for pid in pids {
        let alive =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "process {pid} left running");
    }
    assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
}
