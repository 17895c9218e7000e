//! A cluster run with mutual TLS (as `LocalCluster` starts one) against
//! forged and unfit peers: each is refused, and the cluster is unaffected
//! (the same leader in the same term, masters keep their keys).

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ramcoord::client::{ClientSecurity, CoordinatorClient};
use ramcoord::local_cluster::{LocalCluster, LocalClusterConfig};
use ramcoord::protocol::{master_client_id, raft_payload};
use ramcoord::protocol::{ClientReply, ClientRequest};
use ramcoord_log::{Message, MessageBody};
use ramcoord_net::tcp::{TcpConfig, TcpTransport};
use ramcoord_net::tls::{self, CredentialFiles, Identity, Tls};
use ramcoord_net::Transport;

const LIMIT: Duration = Duration::from_secs(30);

fn cluster(name: &str) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("ramcoord-sec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = LocalClusterConfig::new(env!("CARGO_BIN_EXE_ramcoord").into(), dir, 3, 2);
    cfg.coordinator_args = vec!["--tick-ms".into(), "5".into()];
    cfg.master_args = vec!["--heartbeat-ms".into(), "40".into()];
    LocalCluster::start(cfg).expect("cluster starts")
}

/// `ramcoord ctl` with `flags` before the command: (success, stdout+stderr).
fn ctl(c: &LocalCluster, flags: &[String], args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(["ctl", "--timeout", "5", "--coordinators"])
        .arg(c.coordinator_list())
        .args(flags)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn forged_and_unfit_peers_are_refused_and_the_cluster_is_unaffected() {
    let mut c = cluster("forged");
    let before = c.wait_ready(2, LIMIT).unwrap();
    let tls_dir = c.dir().join("tls");
    let tls_flag = tls_dir.display().to_string();
    let mut admin = c.ctl(LIMIT);
    admin
        .operate(ramcoord::coordinator::Request::CreateTable {
            name: "t".into(),
            tablets: 2,
        })
        .unwrap();
    admin.put("t", "k", "v").unwrap();

    // Another CA's admin, an expired admin, and no TLS at all.
    let other = c.dir().join("other-ca");
    tls::issue(&other, &[Identity::Admin], 30, false).unwrap();
    let expired = c.dir().join("expired");
    std::fs::create_dir_all(&expired).unwrap();
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(tls_dir.join(f), expired.join(f)).unwrap();
    }
    let now = time::OffsetDateTime::now_utc();
    tls::issue_valid(
        &expired,
        &[Identity::Admin],
        now - time::Duration::days(9),
        now - time::Duration::days(1),
        true,
    )
    .unwrap();
    for (what, flags) in [
        ("no certificate", s(&["--insecure"])),
        (
            "another CA",
            s(&["--tls-dir", &other.display().to_string()]),
        ),
        ("expired", s(&["--tls-dir", &expired.display().to_string()])),
    ] {
        let (ok, out) = ctl(&c, &flags, &["drop-table", "t"]);
        assert!(!ok, "{what}: {out}");
    }

    // A reader looks but may not change anything, here or at a master.
    let reader = s(&["--tls-dir", &tls_flag, "--as", "reader"]);
    let (ok, out) = ctl(&c, &reader, &["tables"]);
    assert!(ok && out.contains('t'), "{out}");
    let (ok, out) = ctl(&c, &reader, &["get", "t", "k"]);
    assert!(ok && out.contains('v'), "{out}");
    for args in [
        &["drop-table", "t"][..],
        &["create-table", "u"],
        &["remove-replica", "3"],
        &["put", "t", "k", "evil"],
    ] {
        let (ok, out) = ctl(&c, &reader, args);
        assert!(!ok && out.contains("admin role"), "{args:?}: {out}");
    }

    // A reader's credential claiming an admin id, or a replica's id; a
    // replica's credential claiming another replica: the transport closes
    // each before any message reaches Raft or the coordinator.
    let load = |id: Identity| Tls::load(&CredentialFiles::in_dir(&tls_dir, id)).unwrap();
    let leader_addr = c.coordinators[before.id as usize - 1].addr;
    let other_replica = if before.id == 1 { 2 } else { 1 };
    for (tls, claim) in [
        (load(Identity::Reader), (1u64 << 62) | (1 << 61) | 5),
        (load(Identity::Reader), other_replica),
        (load(Identity::Replica(3)), other_replica),
        (load(Identity::Master), other_replica),
    ] {
        let mut cfg = TcpConfig::new(claim, 1, "127.0.0.1:0".parse().unwrap());
        cfg.tls = Some(tls);
        let forger = TcpTransport::start(cfg).unwrap();
        forger.add_peer(before.id, leader_addr);
        let m = Message {
            from: claim,
            to: before.id,
            term: before.term + 1000,
            body: MessageBody::Heartbeat {
                commit: 0,
                seq: 0,
                sent_tick: 0,
            },
        };
        forger.send(before.id, raft_payload(&m));
        forger.send(before.id, Bytes::from_static(b"\x02garbage"));
        std::thread::sleep(Duration::from_millis(300));
    }

    // A master credential heartbeating for a server another master
    // enlisted, and enlisting under an id that is not its own.
    let victim = admin.view().unwrap().servers[0].id;
    let mut impostor = CoordinatorClient::new(
        c.coordinators.iter().map(|p| p.addr).collect(),
        1,
        ClientSecurity::with(load(Identity::Master)),
    );
    impostor.set_peer_id(master_client_id(12345));
    match impostor.ask_leader(
        &ClientRequest::Heartbeat { from: victim },
        Instant::now() + LIMIT,
    ) {
        Ok(ClientReply::Refused(why)) => assert!(why.contains("another master"), "{why}"),
        other => panic!("{other:?}"),
    }
    // An admin may not heartbeat or enlist at all.
    let mut admin_client = CoordinatorClient::new(
        c.coordinators.iter().map(|p| p.addr).collect(),
        1,
        c.security(),
    );
    match admin_client.ask_leader(
        &ClientRequest::Heartbeat { from: victim },
        Instant::now() + LIMIT,
    ) {
        Ok(ClientReply::Refused(why)) => assert!(why.contains("master role"), "{why}"),
        other => panic!("{other:?}"),
    }

    // Unaffected: the same leader in the same term, every process up, the
    // table and the key still there.
    c.check_alive().unwrap();
    let after = c.wait_ready(2, LIMIT).unwrap();
    assert_eq!((after.id, after.term), (before.id, before.term));
    for st in c.statuses() {
        assert_eq!(st.term, before.term, "replica {}", st.id);
        assert!(!st.insecure);
    }
    assert_eq!(
        admin.get("t", "k").unwrap().value.as_deref(),
        Some(&b"v"[..])
    );
    let dir = c.dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}

/// Without credentials a process refuses to start; with `--insecure` it
/// runs and says so, in its log and in `ctl status`.
#[test]
fn no_credentials_no_start_unless_insecure() {
    let dir = std::env::temp_dir().join(format!("ramcoord-sec-none-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(["coordinator", "--id", "1", "--listen", "127.0.0.1:0"])
        .args(["--peers", "1=127.0.0.1:1", "--data-dir"])
        .arg(dir.join("c1"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--tls-dir") && err.contains("--insecure"),
        "{err}"
    );
    // A key others may read is refused.
    let tls_dir = dir.join("tls");
    tls::issue(&tls_dir, &[Identity::Replica(1)], 30, false).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        tls_dir.join("replica-1.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .args(["coordinator", "--id", "1", "--listen", "127.0.0.1:0"])
        .args(["--peers", "1=127.0.0.1:1", "--data-dir"])
        .arg(dir.join("c1"))
        .arg("--tls-dir")
        .arg(&tls_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    // Insecure: it runs, and every status row says so.
    let mut cfg = LocalClusterConfig::new(
        env!("CARGO_BIN_EXE_ramcoord").into(),
        dir.join("insecure"),
        3,
        0,
    );
    cfg.tls = false;
    cfg.coordinator_args = vec!["--tick-ms".into(), "5".into()];
    let c = LocalCluster::start(cfg).unwrap();
    c.wait_ready(0, LIMIT).unwrap();
    let (ok, out) = ctl(&c, &s(&["--insecure"]), &["status"]);
    assert!(ok && out.matches("INSECURE").count() == 3, "{out}");
    let log = std::fs::read_to_string(c.dir().join("coordinator-1.log")).unwrap();
    assert!(log.contains("WITHOUT TLS"), "{log}");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
