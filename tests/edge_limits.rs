//! The edge holds: every `ctl` command given empty, over-long,
//! control-character and maximum-size arguments against a real cluster.
//! A request that breaks a limit is refused before it is proposed, with an
//! error naming the limit; one at the limit works; and afterwards every
//! replica is still running, a restarted one comes back, and the cluster
//! still serves. (Before the fix, `drop-table ""` stopped every replica, on
//! every restart, and a raw request with a 2 MiB name made the leader
//! panic.)

use std::process::Command;
use std::time::Duration;

use ramcoord::client::CoordinatorClient;
use ramcoord::cluster::limits::NAME_BYTES_MAX;
use ramcoord::coordinator::Request;
use ramcoord::local_cluster::{LocalCluster, LocalClusterConfig};
use ramcoord::protocol::{ClientOp, ClientReply, ClientRequest, RpcId};

const LIMIT: Duration = Duration::from_secs(30);

fn cluster(name: &str) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("ramcoord-edge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = LocalClusterConfig::new(env!("CARGO_BIN_EXE_ramcoord").into(), dir, 3, 2);
    cfg.coordinator_args = vec!["--tick-ms".into(), "5".into()];
    cfg.master_args = vec!["--heartbeat-ms".into(), "40".into()];
    LocalCluster::start(cfg).expect("cluster starts")
}

/// Runs `ramcoord ctl … ARGS`; returns (success, stdout, stderr).
fn ctl(c: &LocalCluster, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(["ctl", "--timeout", "10", "--coordinators"])
        .arg(c.coordinator_list())
        .args(c.client_args())
        .args(args)
        .output()
        .expect("ctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The argument shapes every command is tried with, and the words the
/// refusal must contain (`None`: the argument is valid).
fn names() -> Vec<(&'static str, String, Option<&'static str>)> {
    vec![
        ("empty", String::new(), Some("must not be empty")),
        (
            "over-long",
            "x".repeat(NAME_BYTES_MAX + 1),
            Some("at most 256 bytes"),
        ),
        ("newline", "a\nb".into(), Some("control characters")),
        ("escape", "a\u{1b}[2Jb".into(), Some("control characters")),
        ("delete", "a\u{7f}".into(), Some("control characters")),
        ("maximum", "m".repeat(NAME_BYTES_MAX), None),
    ]
}

fn assert_all_alive(c: &mut LocalCluster, after: &str) {
    c.check_alive()
        .unwrap_or_else(|e| panic!("after {after}: a process stopped: {e}"));
    c.wait_ready(2, LIMIT)
        .unwrap_or_else(|e| panic!("after {after}: {e}"));
}

#[test]
fn every_command_refuses_bad_names_and_takes_the_longest_valid_one() {
    let mut c = cluster("names");
    c.wait_ready(2, LIMIT).unwrap();
    let servers = c.ctl(Duration::from_secs(5)).view().unwrap().servers;
    let server = servers[0].id.to_string();
    for (shape, name, refusal) in names() {
        let commands: Vec<Vec<&str>> = vec![
            vec!["create-table", &name, "--tablets", "2"],
            vec!["split-tablet", &name, "0x100"],
            vec!["migrate-tablet", &name, "0x0", &server],
            vec!["put", &name, "k", "v"],
            vec!["get", &name, "k"],
            vec!["drop-table", &name],
        ];
        for args in commands {
            let (ok, out, err) = ctl(&c, &args);
            let what = format!("ctl {} with the {shape} name", args[0]);
            match refusal {
                // Refused naming the limit (by the leader for operations,
                // by ctl itself for put and get, which propose nothing).
                Some(words) => {
                    assert!(!ok, "{what} succeeded: {out}");
                    assert!(err.contains(words), "{what}: {err:?} lacks {words:?}");
                }
                None => {
                    // The longest valid name works end to end (migrate may
                    // find the tablet already at the server: also fine).
                    let already = err.contains("already owned");
                    assert!(ok || already, "{what} failed: {err}");
                }
            }
            assert_all_alive(&mut c, &what);
        }
    }
    // A valid name that no table has: a definite answer.
    let (ok, _, err) = ctl(&c, &["get", "nosuchtable", "k"]);
    assert!(!ok && err.contains("no table named"), "{err}");
    // Tablet counts: zero and over the maximum are refused by name.
    for n in ["0", "4097"] {
        let (ok, _, err) = ctl(&c, &["create-table", "counted", "--tablets", n]);
        assert!(!ok && err.contains("1 to 4096 tablets"), "{n}: {err}");
    }
    // Nothing invalid reached the log: every operation the replicas
    // applied is valid, and a restarted replica replays its log and comes
    // back (a bad committed record used to stop it on every restart).
    let ops = c.ctl(Duration::from_secs(5)).view().unwrap().recent;
    assert!(
        ops.iter().all(|o| !o
            .rejected
            .as_deref()
            .unwrap_or("")
            .contains("invalid record")),
        "{ops:?}"
    );
    let leader = c.active().unwrap();
    c.kill_coordinator(leader.id);
    c.restart_coordinator(leader.id).unwrap();
    assert_all_alive(&mut c, "restarting the leader");
    let dir = c.dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_raw_request_with_a_huge_name_is_refused_not_a_panic() {
    let mut c = cluster("raw");
    let leader = c.wait_ready(2, LIMIT).unwrap();
    let addrs = c.ctl(Duration::from_secs(5)).statuses();
    let addr_list: Vec<_> = addrs.iter().map(|(a, _)| *a).collect();
    let mut client = CoordinatorClient::new(addr_list.clone(), 1, c.security());
    // Enlisting is a master's request, made under its own id.
    let nonce = 7 | (1 << 63);
    let mut master = CoordinatorClient::new(
        addr_list,
        1,
        c.security_as(ramcoord_net::tls::Identity::Master),
    );
    master.set_peer_id(ramcoord::protocol::master_client_id(nonce));
    let i = addrs
        .iter()
        .position(|(_, s)| s.as_ref().is_ok_and(|s| s.id == leader.id))
        .unwrap();
    for req in [
        Request::CreateTable {
            name: "n".repeat(2 << 20),
            tablets: 1,
        },
        Request::DropTable {
            name: "d".repeat(2 << 20),
        },
        Request::Enlist {
            addr: "a".repeat(2 << 20),
            services: 1,
            nonce,
        },
        Request::CreateTable {
            name: "ok".into(),
            tablets: u32::MAX,
        },
    ] {
        let asker = if matches!(req, Request::Enlist { .. }) {
            &mut master
        } else {
            &mut client
        };
        let reply = asker
            .ask(
                i,
                &ClientRequest::Operate(ClientOp {
                    rpc: RpcId {
                        client: 1,
                        seq: 1,
                        after: 0,
                    },
                    op: req.clone(),
                }),
            )
            .expect("the leader answers");
        match reply {
            ClientReply::Refused(why) => {
                assert!(why.contains("at most") || why.contains("tablets"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert_all_alive(&mut c, "a raw request with a huge argument");
    }
    let dir = c.dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}
