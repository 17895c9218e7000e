//! End-to-end tests of the client side on real processes (loopback): `ctl`
//! given a single follower finds the leader and every replica; host names
//! in addresses; membership commands naming replicas that do not exist;
//! `--json` errors; an operation whose leader is paused (SIGSTOP) after it
//! was sent is retried at the next leader and applied exactly once.
//! Nothing here asserts a duration.

use std::process::Command;
use std::time::{Duration, Instant};

use ramcoord::client::CoordinatorClient;
use ramcoord::coordinator::Request;
use ramcoord::local_cluster::{LocalCluster, LocalClusterConfig};
use ramcoord::protocol::{ClientReply, ClientRequest, OpResult, ReplicaChange};

const LIMIT: Duration = Duration::from_secs(30);

fn cluster(name: &str, masters: usize, host_names: bool) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("ramcoord-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = LocalClusterConfig::new(env!("CARGO_BIN_EXE_ramcoord").into(), dir, 3, masters);
    cfg.coordinator_args = ["--tick-ms", "5", "--master-timeout-ms", "2000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cfg.master_args = vec!["--heartbeat-ms".into(), "40".into()];
    cfg.host_names = host_names;
    LocalCluster::start(cfg).expect("cluster starts")
}

fn done(c: LocalCluster) {
    let dir = c.dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs the `ramcoord` binary: (exit code, stdout, stderr). `tls` (the
/// cluster's client flags) goes right after a `ctl`.
fn run(args: &[&str], tls: &[String]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ramcoord"));
    match args.split_first() {
        Some((&"ctl", rest)) => cmd.arg("ctl").args(tls).args(rest),
        _ => cmd.args(args),
    };
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A follower's address, as `ip:port`.
fn follower(c: &LocalCluster, leader: u64) -> String {
    let f = (1..=3).find(|i| *i != leader).unwrap();
    c.coordinators[f as usize - 1].addr.to_string()
}

/// How many create-table operations of `name` the active coordinator's
/// operation log holds.
fn creates_of(c: &LocalCluster, name: &str) -> usize {
    let view = c.ctl(Duration::from_secs(10)).view().unwrap();
    let prefix = format!("create-table {name:?}:");
    view.recent
        .iter()
        .filter(|o| o.kind == "create-table" && o.summary.starts_with(&prefix))
        .count()
}

/// `ctl --coordinators <one follower>`: `status` shows every replica (the
/// follower names the others' addresses), `create-table` reaches the
/// leader through the follower's answer (before: it spun until its
/// timeout, "leader Some(n)", knowing no address for it).
#[test]
fn a_follower_address_is_enough() {
    let mut c = cluster("follower", 2, false);
    let tls = c.client_args();
    let ramcoord = |args: &[&str]| run(args, &tls);
    let leader = c.wait_ready(2, LIMIT).unwrap();
    let f = follower(&c, leader.id);
    let (code, out, err) = ramcoord(&["ctl", "--coordinators", &f, "status"]);
    assert_eq!(code, 0, "{out}{err}");
    for p in &c.coordinators {
        assert!(
            out.contains(&p.addr.to_string()),
            "status via {f} lacks {}:\n{out}",
            p.addr
        );
    }
    assert!(
        out.lines()
            .any(|l| l.contains(" leader ") && l.contains("yes")),
        "no active leader row:\n{out}"
    );
    let (code, out, err) = ramcoord(&[
        "ctl",
        "--coordinators",
        &f,
        "--timeout",
        "20",
        "create-table",
        "via-follower",
        "--tablets",
        "2",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("committed: seq "), "{out}");
    let (code, out, err) = ramcoord(&["ctl", "--coordinators", &f, "--json", "tables"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"via-follower\""), "{out}");
    assert_eq!(creates_of(&c, "via-follower"), 1);

    // `members`: every replica once, a voter, at its address; the leader
    // says so itself; the leader has heard from each follower and knows
    // its match index. A replica that is down is shown as unreachable.
    let members = |c: &LocalCluster| {
        let (code, out, err) = ramcoord(&["ctl", "--coordinators", &f, "--json", "members"]);
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = v.as_array().unwrap().clone();
        assert_eq!(rows.len(), 3, "{out}");
        for (i, p) in c.coordinators.iter().enumerate() {
            let row = &rows[i];
            assert_eq!(row["id"], (i + 1) as u64, "{out}");
            assert_eq!(row["address"], p.addr.to_string(), "{out}");
            assert_eq!(row["member"], "voter", "{out}");
        }
        rows
    };
    let rows = members(&c);
    for row in &rows {
        if row["id"] == leader.id {
            assert_eq!(row["role"], "leader");
            assert!(row["last_contact_ms"].is_null(), "{row}");
        } else {
            assert_eq!(row["role"], "follower");
            assert!(row["last_contact_ms"].is_u64(), "{row}");
            assert!(row["match_index"].as_u64().unwrap() > 0, "{row}");
        }
    }
    let (code, out, err) = ramcoord(&["ctl", "--coordinators", &f, "members"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(" id address"), "{out}");
    assert_eq!(out.matches(" voter ").count(), 3, "{out}");
    let other = (1..=3u64)
        .find(|i| *i != leader.id && c.coordinators[*i as usize - 1].addr.to_string() != f)
        .unwrap();
    c.kill_coordinator(other);
    let rows = members(&c);
    assert_eq!(rows[other as usize - 1]["role"], "unreachable", "{rows:?}");
    c.check_alive().unwrap();
    done(c);
}

/// Replicas started with `--listen localhost:P --peers 1=localhost:P,...`
/// and masters with `--coordinators localhost:...` form a cluster; `ctl
/// --coordinators localhost:P` runs status and operations; a name that
/// does not resolve is an error naming it.
#[test]
fn host_names_are_resolved() {
    let c = cluster("names", 2, true);
    let tls = c.client_args();
    let ramcoord = |args: &[&str]| run(args, &tls);
    let leader = c.wait_ready(2, LIMIT).unwrap();
    let port = c.coordinators[0].addr.port();
    let local = format!("localhost:{port}");
    let (code, out, err) = ramcoord(&["ctl", "--coordinators", &local, "status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("leader"), "{out}");
    let (code, out, err) = ramcoord(&[
        "ctl",
        "--coordinators",
        &local,
        "--timeout",
        "20",
        "create-table",
        "by-name",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("committed: seq "), "{out}");
    // A follower names the leader by the address in its --peers: a name.
    let st = c.statuses();
    let any = st.iter().find(|s| s.id != leader.id).unwrap();
    assert!(
        any.addresses
            .iter()
            .all(|(_, a)| a.starts_with("localhost:")),
        "{any:?}"
    );
    for bad in ["no-such-host.invalid:7101", "localhost"] {
        let (code, out, err) = ramcoord(&["ctl", "--coordinators", bad, "status"]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains(bad), "{err}");
    }
    let (code, _, err) = ramcoord(&[
        "coordinator",
        "--id",
        "1",
        "--listen",
        "no-such-host.invalid:7101",
        "--peers",
        "1=no-such-host.invalid:7101",
        "--data-dir",
        "/nonexistent",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no-such-host.invalid"), "{err}");
    done(c);
}

/// `ctl remove-replica 99` (no such replica) fails naming 99 and the
/// members, instead of reporting success; so do adding 99 as a voter (it
/// is no learner and has no known address) and `add-replica 99` without
/// an address. With `--json` every error is one JSON object on stdout.
#[test]
fn unknown_replicas_are_refused_and_json_errors_are_json() {
    let c = cluster("unknown", 1, false);
    let tls = c.client_args();
    let ramcoord = |args: &[&str]| run(args, &tls);
    let leader = c.wait_ready(1, LIMIT).unwrap();
    let list = c.coordinator_list();
    let (code, out, err) = ramcoord(&["ctl", "--coordinators", &list, "remove-replica", "99"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("replica 99 is not in the group")
            && err.contains("voters 1,2,3 and learners none"),
        "{err}"
    );
    let (code, out, err) = ramcoord(&["ctl", "--coordinators", &list, "add-replica", "99"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("replica 99") && err.contains("--address"),
        "{err}"
    );
    let mut raw = CoordinatorClient::new(
        c.coordinators.iter().map(|p| p.addr).collect(),
        1,
        c.security(),
    );
    match raw.ask_leader(
        &ClientRequest::ChangeReplicas(ReplicaChange::AddVoter(99)),
        Instant::now() + LIMIT,
    ) {
        Ok(ClientReply::Refused(why)) => {
            assert!(why.contains("replica 99 is neither a learner"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    let after = c.active().unwrap();
    assert_eq!(after.voters, vec![1, 2, 3]);
    assert!(after.learners.is_empty());
    let _ = leader;

    // --json: the same errors, as {"error": ...} on stdout, nothing on
    // stderr, a non-zero status.
    let json_error = |args: &[&str], code: i32, needle: &str| {
        let (c, out, err) = ramcoord(args);
        assert_eq!(c, code, "{args:?}: {out}{err}");
        assert!(err.is_empty(), "{args:?}: stderr {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"));
        let obj = v.as_object().expect("an object");
        assert_eq!(obj.len(), 1, "{v}");
        let msg = obj["error"].as_str().expect("a string");
        assert!(msg.contains(needle), "{args:?}: {msg}");
        assert_eq!(out.trim().lines().count(), 1, "{out}");
    };
    json_error(
        &[
            "ctl",
            "--json",
            "--coordinators",
            &list,
            "remove-replica",
            "99",
        ],
        1,
        "replica 99",
    );
    json_error(
        &[
            "ctl",
            "--json",
            "--coordinators",
            &list,
            "get",
            "no-such-table",
            "k",
        ],
        1,
        "no-such-table",
    );
    json_error(
        &[
            "ctl",
            "--json",
            "--coordinators",
            "no-such-host.invalid:1",
            "status",
        ],
        1,
        "no-such-host.invalid",
    );
    json_error(
        &["ctl", "--json", "--coordinators", &list, "frobnicate"],
        2,
        "frobnicate",
    );
    done(c);
}

/// Sends SIGSTOP to a process; SIGCONT when dropped.
struct Paused(u32);

impl Paused {
    fn new(pid: u32) -> Paused {
        signal("-STOP", pid);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// An operation sent to a leader that is then paused (SIGSTOP: its
/// connections stay open, nothing answers) is sent again, with the same
/// client id and sequence number, to the next leader, and applied once;
/// when the old leader resumes and reads the request, nothing is applied
/// twice. Then an operation that was applied, sent again with its id to
/// yet another leader, is answered with its original seq and result.
#[test]
fn an_operation_at_a_paused_leader_is_applied_exactly_once() {
    let c = cluster("paused", 2, false);
    let first = c.wait_ready(2, LIMIT).unwrap();
    let mut ctl = c.ctl(LIMIT);
    // The client learns who leads and holds a connection to it.
    ctl.view().unwrap();
    let paused = Paused::new(c.coordinators[first.id as usize - 1].pid().unwrap());
    let r = ctl
        .operate(Request::CreateTable {
            name: "paused".into(),
            tablets: 2,
        })
        .expect("retried at the next leader");
    assert!(matches!(r.result, OpResult::TableCreated(_)), "{r:?}");
    let second = c
        .wait_for("a new leader", LIMIT, |c| {
            c.active().filter(|s| s.id != first.id)
        })
        .unwrap();
    assert!(r.term > first.term && second.term > first.term, "{r:?}");
    drop(paused);
    c.wait_for("every replica to apply it", LIMIT, |c| {
        let rows = c.statuses();
        let lead = rows.iter().find(|s| s.active)?;
        (rows.len() == 3
            && rows
                .iter()
                .all(|s| s.applied >= lead.commit && s.tables == 1))
        .then_some(())
    })
    .unwrap();
    assert_eq!(creates_of(&c, "paused"), 1);

    // The same operation (same id) again, at another leader: the
    // original answer, nothing proposed.
    let deadline = Instant::now() + LIMIT;
    let rpc = ctl.coordinator_client().next_rpc(deadline);
    let req = Request::CreateTable {
        name: "again".into(),
        tablets: 1,
    };
    let applied = ctl.operate_as(rpc, req.clone(), deadline).unwrap();
    let leader = c.active().unwrap();
    let paused = Paused::new(c.coordinators[leader.id as usize - 1].pid().unwrap());
    let retried = ctl.operate_as(rpc, req, Instant::now() + LIMIT).unwrap();
    assert_eq!(
        (retried.seq, &retried.result),
        (applied.seq, &applied.result),
        "a retry is answered with the original outcome"
    );
    let third = c.active().unwrap();
    assert_ne!(third.id, leader.id);
    drop(paused);
    assert_eq!(creates_of(&c, "again"), 1);
    let view = c.ctl(Duration::from_secs(10)).view().unwrap();
    assert_eq!(view.tables.len(), 2, "{:?}", view.tables);
    done(c);
}

/// `Lookup`: a linearizable read of whether a table exists, answered by
/// the leader after its read index (a reader may ask; a follower sends
/// the client to the leader; a bad name is refused).
#[test]
fn lookups_read_table_existence_at_the_leader() {
    let c = cluster("lookup", 1, false);
    let leader = c.wait_ready(1, LIMIT).unwrap();
    let mut ctl = c.ctl(LIMIT);
    let addrs = c.coordinators.iter().map(|p| p.addr).collect();
    let mut reader =
        CoordinatorClient::new(addrs, 1, c.security_as(ramcoord_net::tls::Identity::Reader));
    let lookup = |cl: &mut CoordinatorClient, table: &str| {
        cl.ask_leader(
            &ClientRequest::Lookup {
                table: table.into(),
            },
            Instant::now() + LIMIT,
        )
        .expect("an answer")
    };
    assert!(
        matches!(
            lookup(&mut reader, "users"),
            ClientReply::Lookup { exists: false, .. }
        ),
        "no table yet"
    );
    let created = ctl
        .operate(Request::CreateTable {
            name: "users".into(),
            tablets: 1,
        })
        .expect("created");
    match lookup(&mut reader, "users") {
        ClientReply::Lookup { exists, index } => {
            assert!(exists, "the create is seen");
            assert!(
                index >= created.seq,
                "read at {index}, created at {}",
                created.seq
            );
        }
        other => panic!("{other:?}"),
    }
    // A table is busy until its creation completes (pushed to its
    // masters): a drop before that is refused at apply.
    c.wait_for("the create to complete", LIMIT, |c| {
        c.active().filter(|s| s.incomplete == 0)
    })
    .unwrap();
    let dropped = ctl
        .operate(Request::DropTable {
            name: "users".into(),
        })
        .expect("dropped");
    assert_eq!(dropped.result, ramcoord::protocol::OpResult::Changed);
    assert!(matches!(
        lookup(&mut reader, "users"),
        ClientReply::Lookup { exists: false, .. }
    ));
    assert!(
        matches!(lookup(&mut reader, ""), ClientReply::Refused(_)),
        "an empty name is refused"
    );
    // A follower does not answer from its own state.
    let f = (1..=3).find(|i| *i != leader.id).unwrap() as usize;
    let mut direct = CoordinatorClient::new(
        vec![c.coordinators[f - 1].addr],
        1,
        c.security_as(ramcoord_net::tls::Identity::Reader),
    );
    let r = direct.ask(
        0,
        &ClientRequest::Lookup {
            table: "users".into(),
        },
    );
    assert!(
        matches!(r, Ok(ClientReply::NotLeader { leader: Some(l), .. }) if l == leader.id),
        "{r:?}"
    );
    done(c);
}

/// `ctl watch --from 1`: every committed change, as JSON lines with
/// consecutive `version`s, streamed while it happens; the watcher is
/// attached to the leader, which is then killed (SIGKILL): the watch
/// moves to another replica and goes on after the last version it
/// printed, with no gap and no repeat.
#[test]
fn watch_streams_every_change_across_a_leader_kill() {
    use std::io::{BufRead, BufReader};
    let mut c = cluster("watch", 2, false);
    let tls = c.client_args();
    let first = c.wait_ready(2, LIMIT).unwrap();
    // The leader first: that is the replica the watch asks.
    let lead = c.coordinators[first.id as usize - 1].addr.to_string();
    let mut addrs = vec![lead.clone()];
    addrs.extend(
        c.coordinators
            .iter()
            .map(|p| p.addr.to_string())
            .filter(|a| *a != lead),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_ramcoord"))
        .arg("ctl")
        .args(&tls)
        .args(["--coordinators", &addrs.join(","), "--timeout", "20"])
        .args(["watch", "--from", "1", "--count", "6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |what: &str| -> serde_json::Value {
        let line = rx
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("no watch line for {what}"));
        println!("{line}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    // The two masters' enlistments, already committed.
    let mut seen = vec![next("enlist"), next("enlist")];
    let mut ctl = c.ctl(LIMIT);
    for name in ["before-1", "before-2"] {
        ctl.operate(Request::CreateTable {
            name: name.into(),
            tablets: 2,
        })
        .unwrap();
        seen.push(next(name));
    }
    c.kill_coordinator(first.id);
    let second = c
        .wait_for("a new leader", LIMIT, |c| {
            c.active().filter(|s| s.id != first.id)
        })
        .unwrap();
    let mut ctl = c.ctl(LIMIT);
    for name in ["after-1", "after-2"] {
        ctl.operate(Request::CreateTable {
            name: name.into(),
            tablets: 2,
        })
        .unwrap();
        seen.push(next(name));
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "watch exited {status}: {err}");
    let versions: Vec<u64> = seen
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6], "consecutive, once each");
    let kinds: Vec<&str> = seen.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[..2], ["enlist", "enlist"]);
    let names: Vec<&str> = seen[2..]
        .iter()
        .map(|v| v["tables"][0]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before-1", "before-2", "after-1", "after-2"]);
    for v in &seen[2..] {
        let tablets = v["tables"][0]["tablets"].as_array().unwrap();
        assert_eq!(tablets.len(), 2, "{v}");
        assert!(tablets[0]["owner"].as_str().unwrap().contains('.'), "{v}");
    }
    let term = |v: &serde_json::Value| v["term"].as_u64().unwrap();
    assert!(
        term(&seen[5]) > term(&seen[3]),
        "the last changes are the new leader's"
    );
    assert!(second.term > first.term);
    assert!(
        seen[0]["servers"][0]["id"].as_str().unwrap().contains('.'),
        "{}",
        seen[0]
    );
    done(c);
}

/// `ctl endpoint health`: one line per replica (those given and those
/// they name); exit 0 when all are healthy; a killed replica is named
/// unhealthy and the exit code is 1; `--json` gives the same as objects.
#[test]
fn endpoint_health_names_each_replica() {
    let mut c = cluster("endpoint", 1, false);
    let tls = c.client_args();
    let leader = c.wait_ready(1, LIMIT).unwrap();
    let f = follower(&c, leader.id);
    let (code, out, err) = run(&["ctl", "--coordinators", &f, "endpoint", "health"], &tls);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    for p in &c.coordinators {
        assert!(out.contains(&format!("{} is healthy", p.addr)), "{out}");
    }
    let victim = (1..=3)
        .find(|i| *i != leader.id && c.coordinators[*i as usize - 1].addr.to_string() != f)
        .unwrap();
    c.kill_coordinator(victim);
    let (code, out, err) = run(
        &[
            "ctl",
            "--coordinators",
            &c.coordinator_list(),
            "--timeout",
            "2",
            "--json",
            "endpoint",
            "health",
        ],
        &tls,
    );
    assert_eq!(code, 1, "{out}{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let dead = r["address"] == c.coordinators[victim as usize - 1].addr.to_string();
        assert_eq!(r["healthy"], !dead, "{r}");
        assert_eq!(r["error"].is_string(), dead, "{r}");
    }
    done(c);
}

/// `ctl snapshot save`, then more changes, then every replica destroyed
/// (killed, its data directory deleted) and the masters with them;
/// `ramcoord restore` into new directories, the replicas started again,
/// new masters started (the documented procedure): the backup's tables,
/// not the later one, with their tablets served by the new masters once
/// the restored servers are declared crashed; and a new table created
/// after the restore is served too.
#[test]
fn a_backup_restores_a_destroyed_group() {
    let mut c = cluster("restore", 2, false);
    let tls = c.client_args();
    c.wait_ready(2, LIMIT).unwrap();
    let mut ctl = c.ctl(LIMIT);
    for name in ["kept-1", "kept-2"] {
        ctl.operate(Request::CreateTable {
            name: name.into(),
            tablets: 2,
        })
        .unwrap();
    }
    let before = ctl.view().unwrap();
    let backup = c.dir().join("cluster.backup");
    let list = c.coordinator_list();
    let (code, out, err) = run(
        &[
            "ctl",
            "--coordinators",
            &list,
            "snapshot",
            "save",
            backup.to_str().unwrap(),
        ],
        &tls,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("saved "), "{out}");
    let (code, out, err) = run(
        &["ctl", "snapshot", "status", backup.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("checksum ok") && out.contains("2 servers, 2 tables"),
        "{out}"
    );
    // A reader may not take one (it holds the masters' nonces).
    let reader: Vec<String> = tls
        .iter()
        .cloned()
        .chain(["--as".to_string(), "reader".to_string()])
        .collect();
    let (code, out, err) = run(
        &[
            "ctl",
            "--coordinators",
            &list,
            "snapshot",
            "save",
            "/tmp/never.backup",
        ],
        &reader,
    );
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("admin"), "{err}");

    // A change after the backup: lost with the group.
    ctl.operate(Request::CreateTable {
        name: "after-backup".into(),
        tablets: 2,
    })
    .unwrap();
    let peers: Vec<String> = c
        .coordinators
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}={}", i + 1, p.addr))
        .collect();
    let peers = peers.join(",");
    for id in 1..=3u64 {
        c.kill_coordinator(id);
        std::fs::remove_dir_all(c.dir().join(format!("c{id}"))).unwrap();
    }
    for m in 0..2 {
        c.kill_master(m);
    }
    for id in 1..=3u64 {
        let dir = c.dir().join(format!("c{id}"));
        let (code, out, err) = run(
            &[
                "restore",
                backup.to_str().unwrap(),
                "--id",
                &id.to_string(),
                "--peers",
                &peers,
                "--data-dir",
                dir.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("2 servers, 2 tables"), "{out}");
        // A second restore into a replica's directory is refused.
        if id == 1 {
            let (code, _, err) = run(
                &[
                    "restore",
                    backup.to_str().unwrap(),
                    "--id",
                    "1",
                    "--peers",
                    &peers,
                    "--data-dir",
                    dir.to_str().unwrap(),
                ],
                &[],
            );
            assert_ne!(code, 0);
            assert!(err.contains(dir.to_str().unwrap()), "{err}");
        }
    }
    for id in 1..=3u64 {
        c.restart_coordinator(id).unwrap();
    }
    // Right after the start: the backup's state, as it was.
    let restored = c
        .wait_for("the restored group", LIMIT, |c| {
            c.ctl(Duration::from_secs(2)).view().ok()
        })
        .unwrap();
    let names =
        |v: &ramcoord::protocol::View| v.tables.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&restored), names(&before));
    assert_eq!(
        restored.servers.iter().map(|s| s.id).collect::<Vec<_>>(),
        before.servers.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    for _ in 0..2 {
        c.start_master().unwrap();
    }
    let leader = c.wait_ready(2, LIMIT).unwrap();
    assert!(
        leader.term > 1000,
        "the new group starts past the old terms: {}",
        leader.term
    );
    let mut ctl = c.ctl(LIMIT);
    for table in ["kept-1", "kept-2"] {
        c.wait_for("the restored table served by the new masters", LIMIT, |c| {
            c.ctl(Duration::from_secs(5)).put(table, "k", "v").ok()
        })
        .unwrap();
        assert_eq!(
            ctl.get(table, "k").unwrap().value.as_deref(),
            Some(&b"v"[..])
        );
    }
    ctl.operate(Request::CreateTable {
        name: "after-restore".into(),
        tablets: 2,
    })
    .unwrap();
    c.wait_for("the new table to be served", LIMIT, |c| {
        let mut ctl = c.ctl(Duration::from_secs(5));
        ctl.put("after-restore", "x", "y").ok()
    })
    .unwrap();
    done(c);
}
