//! A real cluster over RDMA (soft-RoCE): 3 coordinator replicas and 2
//! masters as processes with `--transport rdma`, run inside the VM by
//! `scripts/rdma-vm.sh` (two rxe devices, so every connection crosses a
//! wire). Raft replicates by one-sided writes into the followers' rings;
//! configuration reaches the masters by RDMA WRITE into their regions.
//! Built only with `--features rdma`; needs `RAMCOORD_RDMA_HOSTS` (the
//! devices' addresses, comma-separated).
#![cfg(feature = "rdma")]

use std::net::IpAddr;
use std::time::Duration;

use ramcoord::coordinator::Request;
use ramcoord::local_cluster::{LocalCluster, LocalClusterConfig};
use ramcoord::protocol::OpResult;

/// Generous: the VM emulates its CPU.
const LIMIT: Duration = Duration::from_secs(90);

fn hosts() -> Vec<IpAddr> {
    let v = std::env::var("RAMCOORD_RDMA_HOSTS").unwrap_or_else(|_| {
        panic!("no RAMCOORD_RDMA_HOSTS: run this test through scripts/rdma-vm.sh")
    });
    v.split(',')
        .map(|h| h.parse().expect("an IP address"))
        .collect()
}

fn log(c: &LocalCluster, name: &str) -> String {
    let p = c
        .coordinators
        .iter()
        .chain(c.masters.iter())
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no process {name}"));
    std::fs::read_to_string(&p.log).unwrap_or_default()
}

/// Prints the tail of every process's log if the test fails.
struct LogsOnFailure(Vec<(String, std::path::PathBuf)>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (name, path) in &self.0 {
            let l = std::fs::read_to_string(path).unwrap_or_default();
            // Clients' (ctl's) connections coming and going are noise here.
            let lines: Vec<&str> = l
                .lines()
                .filter(|x| !x.contains("ramcoord_net::tcp: connection closed"))
                .collect();
            eprintln!(
                "--- {name} (last 80 lines of {}, without clients' disconnects)",
                path.display()
            );
            for x in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{x}");
            }
        }
    }
}

fn step(what: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(std::time::Instant::now).elapsed();
    eprintln!("[{:8.3}s] {what}", t.as_secs_f64());
}

/// Creates tables, reads and writes keys at the masters that own them
/// (which check ownership against the region the coordinator wrote into
/// their memory), kills the leader, and does it again under the new one,
/// whose pushes land only once the masters granted it write access.
#[test]
#[ignore = "needs soft-RoCE devices: scripts/rdma-vm.sh runs it in a VM"]
fn a_cluster_over_rdma_survives_a_leader_kill_and_masters_follow_its_pushes() {
    let dir = std::env::temp_dir().join(format!("ramcoord-rdma-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let binary = std::env::var("RAMCOORD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ramcoord").to_string());
    let mut cfg = LocalClusterConfig::new(binary.into(), dir.clone(), 3, 2);
    cfg.rdma_hosts = hosts();
    cfg.coordinator_args = ["--tick-ms", "20", "--master-timeout-ms", "3000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cfg.master_args = vec!["--heartbeat-ms".into(), "100".into()];
    let mut c = LocalCluster::start(cfg).expect("cluster starts");
    let _logs = LogsOnFailure(
        c.coordinators
            .iter()
            .chain(c.masters.iter())
            .map(|p| (p.name.clone(), p.log.clone()))
            .collect(),
    );
    let leader = c.wait_ready(2, LIMIT).unwrap();
    step(&format!(
        "coordinator {} leads term {}; 2 masters enlisted",
        leader.id, leader.term
    ));
    let mut ctl = c.ctl(Duration::from_secs(20));
    for t in ["a", "b"] {
        let r = ctl
            .operate(Request::CreateTable {
                name: t.into(),
                tablets: 4,
            })
            .unwrap();
        assert!(matches!(r.result, OpResult::TableCreated(_)), "{r:?}");
    }
    // A master serves a key only if the region in its memory says it owns
    // the key's tablet: every put and get below went through that check.
    for k in 0..12 {
        ctl.put("a", &format!("k{k}"), &format!("v{k}")).unwrap();
    }
    for k in 0..12 {
        let got = ctl.get("a", &format!("k{k}")).unwrap();
        assert_eq!(got.value.as_deref(), Some(format!("v{k}").as_bytes()));
    }
    step("2 tables created, 12 keys written and read at their owners");
    for m in ["master-1", "master-2"] {
        let l = log(&c, m);
        assert!(
            l.contains("configuration region in RDMA memory"),
            "{m}:\n{l}"
        );
        assert!(
            l.contains("configuration writes granted to the leader"),
            "{m}:\n{l}"
        );
        assert!(l.contains("configuration applied"), "{m}:\n{l}");
    }
    let l = log(&c, &format!("coordinator-{}", leader.id));
    assert!(l.contains("RDMA connected"), "{l}");

    c.kill_coordinator(leader.id);
    step(&format!("killed the leader, coordinator {}", leader.id));
    let next = c
        .wait_for("a new leader", LIMIT, |c| {
            c.active().filter(|s| s.id != leader.id)
        })
        .unwrap();
    assert!(next.term > leader.term);
    step(&format!("coordinator {} leads term {}", next.id, next.term));
    // Completing this operation needs the new leader's pushes to land in
    // both masters: only after they granted it write access.
    let r = ctl
        .operate(Request::CreateTable {
            name: "c".into(),
            tablets: 4,
        })
        .unwrap();
    assert!(matches!(r.result, OpResult::TableCreated(_)), "{r:?}");
    assert!(r.term > leader.term);
    for k in 0..12 {
        ctl.put("c", &format!("k{k}"), "after").unwrap();
        assert_eq!(
            ctl.get("c", &format!("k{k}")).unwrap().value.as_deref(),
            Some(&b"after"[..])
        );
        // Keys of the first table are still where they were.
        assert_eq!(
            ctl.get("a", &format!("k{k}")).unwrap().value.as_deref(),
            Some(format!("v{k}").as_bytes())
        );
    }
    for m in ["master-1", "master-2"] {
        let l = log(&c, m);
        let grant = format!("leader={} term={}", next.id, next.term);
        assert!(
            l.lines()
                .any(|x| x.contains("configuration writes granted") && x.contains(&grant)),
            "{m} never granted the new leader ({grant}):\n{l}"
        );
    }
    step("table c created and served under the new leader; both masters granted it");
    c.check_alive().unwrap();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}
