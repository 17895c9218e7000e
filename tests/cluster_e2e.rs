//! End-to-end tests of a real cluster: coordinator and master processes on
//! loopback (`ramcoord::local_cluster`), driven through the `ctl` client.
//! Nothing here asserts a duration: waits have generous limits and only
//! say "it did not happen".

use std::time::Duration;

use ramcoord::cluster::{key_hash, ServerId, ServerStatus};
use ramcoord::coordinator::Request;
use ramcoord::ctl::CtlCommand;
use ramcoord::local_cluster::{LocalCluster, LocalClusterConfig};
use ramcoord::protocol::OpResult;

const LIMIT: Duration = Duration::from_secs(30);

fn cluster(name: &str, masters: usize, extra: &[&str]) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("ramcoord-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = LocalClusterConfig::new(env!("CARGO_BIN_EXE_ramcoord").into(), dir, 3, masters);
    // A --master-timeout-ms in `extra` replaces the default.
    let timeout: &[&str] = if extra.contains(&"--master-timeout-ms") {
        &[]
    } else {
        &["--master-timeout-ms", "400"]
    };
    cfg.coordinator_args = ["--tick-ms", "5"]
        .iter()
        .chain(timeout)
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    cfg.master_args = vec!["--heartbeat-ms".into(), "40".into()];
    // `--insecure` in `extra` runs the cluster without TLS (a test of what
    // Raft itself refuses, whatever the transport lets through).
    cfg.tls = !extra.contains(&"--insecure");
    cfg.coordinator_args.retain(|a| a != "--insecure");
    LocalCluster::start(cfg).expect("cluster starts")
}

fn done(c: LocalCluster) {
    let dir = c.dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}

/// The leader sets the masters' pace: told to have masters heartbeat
/// every 500 ms (their own flag says 40), each master takes that from the
/// leader's answers (and logs it). The master timeout given, 400 ms, is
/// shorter than that interval: without the rule that it is at least four
/// intervals, every master would be declared crashed within a second.
#[test]
fn the_leader_sets_the_masters_heartbeat_pace() {
    let mut c = cluster("pace", 2, &["--heartbeat-interval-ms", "500"]);
    c.wait_ready(2, LIMIT).unwrap();
    c.wait_for("every master to take the leader's pace", LIMIT, |c| {
        c.masters
            .iter()
            .all(|m| {
                std::fs::read_to_string(&m.log).is_ok_and(|l| {
                    l.contains("the leader sets the heartbeat interval") && l.contains("to_ms=500")
                })
            })
            .then_some(())
    })
    .unwrap();
    // Four intervals of the slow pace: time for a 400 ms timeout to fire
    // several times over. A master declared crashed exits (status 3).
    std::thread::sleep(Duration::from_secs(2));
    c.check_alive()
        .expect("no master was declared crashed: every process still runs");
    let after = c.wait_ready(2, LIMIT).unwrap();
    assert_eq!(after.servers_up, 2, "{after:?}");
    done(c);
}

/// kill -9 of the leader while a client streams operations: every
/// operation acknowledged at its commit point is in the new leader's
/// state; those incomplete at the kill are rolled forward; the cluster
/// serves again.
#[test]
fn leader_kill_during_an_operation_stream() {
    // Pushes are held 100 ms so that operations are caught between their
    // commit point and their completion when the leader dies.
    let mut c = cluster("leaderkill", 3, &["--push-delay-ms", "100"]);
    let leader = c.wait_ready(3, LIMIT).unwrap();
    let mut ctl = c.ctl(Duration::from_secs(5));
    let mut acked = Vec::new();
    for i in 0..8 {
        let r = ctl
            .operate(Request::CreateTable {
                name: format!("t{i}"),
                tablets: 3,
            })
            .unwrap();
        assert!(matches!(r.result, OpResult::TableCreated(_)), "{r:?}");
        acked.push((format!("t{i}"), r.seq, r.term));
    }
    c.kill_coordinator(leader.id);
    // Keep streaming through the election: failures are allowed (no leader
    // yet, or an answer lost with the leader), acknowledgements must hold.
    let mut after_kill = 0;
    for i in 8..200 {
        if let Ok(r) = ctl.operate(Request::CreateTable {
            name: format!("t{i}"),
            tablets: 3,
        }) {
            if matches!(r.result, OpResult::TableCreated(_)) {
                acked.push((format!("t{i}"), r.seq, r.term));
                after_kill += 1;
                if after_kill == 8 {
                    break;
                }
            }
        }
    }
    assert_eq!(after_kill, 8, "the new leader did not serve operations");
    let next = c.active().expect("a new leader");
    assert_ne!(next.id, leader.id);
    assert!(next.term > leader.term);
    // Everything completes; the first eight committed in the old term and
    // (most of them) were completed by the new leader: rolled forward.
    c.wait_for("every operation to complete", LIMIT, |c| {
        c.active().filter(|s| s.incomplete == 0)
    })
    .unwrap();
    let view = ctl.view().unwrap();
    for (name, seq, term) in &acked {
        let t = view
            .tables
            .iter()
            .find(|t| &t.name == name)
            .unwrap_or_else(|| panic!("acknowledged table {name} (seq {seq}, term {term}) lost"));
        assert_eq!(t.tablets.len(), 3);
    }
    let rolled = view
        .recent
        .iter()
        .filter(|o| o.kind == "create-table")
        .filter(|o| o.completed.is_some_and(|(_, t)| t > o.term))
        .count();
    assert!(
        rolled >= 1,
        "no operation committed by the old leader was rolled forward: {:#?}",
        view.recent
    );
    c.check_alive().unwrap();
    done(c);
}

/// kill -9 of a master: the coordinator commits a recovery plan, its
/// tablets move to live masters, keys in the other tablets keep being
/// served; a new master process enlists as a new server.
#[test]
fn master_kill_moves_its_tablets() {
    // Masters' and clients' connections on an I/O thread of their own.
    let mut c = cluster("masterkill", 3, &["--cores", "2"]);
    c.wait_ready(3, LIMIT).unwrap();
    let mut ctl = c.ctl(Duration::from_secs(5));
    let created = ctl
        .operate(Request::CreateTable {
            name: "kv".into(),
            tablets: 6,
        })
        .unwrap();
    ctl.wait_complete(created.seq).unwrap();
    let mut owner = Vec::new();
    for k in 0..30 {
        let a = ctl.put("kv", &format!("k{k}"), &format!("v{k}")).unwrap();
        owner.push(a.server);
    }
    let victim: ServerId = owner[0];
    let view = ctl.view().unwrap();
    let addr = &view.servers.iter().find(|s| s.id == victim).unwrap().addr;
    let idx = c.master_at(addr).unwrap();
    c.kill_master(idx);
    c.wait_for("the crashed master's removal", LIMIT, |c| {
        let v = c.ctl(Duration::from_secs(1)).view().ok()?;
        v.servers
            .iter()
            .any(|s| s.id == victim && s.status == ServerStatus::Removed)
            .then_some(())
    })
    .unwrap();
    let view = ctl.view().unwrap();
    let kv = view.tables.iter().find(|t| t.name == "kv").unwrap();
    assert!(
        kv.tablets.iter().all(|t| t.owner != victim),
        "a tablet still names the crashed master: {kv:?}"
    );
    let plan = view
        .recent
        .iter()
        .find(|o| o.kind == "server-crashed")
        .expect("a recovery plan was committed");
    assert!(plan.completed.is_some(), "{plan:?}");
    for (k, o) in owner.iter().enumerate() {
        let a = ctl.get("kv", &format!("k{k}")).unwrap();
        assert_ne!(a.server, victim);
        if *o != victim {
            assert_eq!(a.value.as_deref(), Some(format!("v{k}").as_bytes()), "k{k}");
        }
    }
    // A new process enlists as a new server (the slot may be reused, with
    // a new generation).
    c.start_master().unwrap();
    let v = c
        .wait_for("the new master", LIMIT, |c| {
            let v = c.ctl(Duration::from_secs(1)).view().ok()?;
            (v.servers
                .iter()
                .filter(|s| s.status == ServerStatus::Up)
                .count()
                == 3)
                .then_some(v)
        })
        .unwrap();
    assert!(v
        .servers
        .iter()
        .all(|s| s.id != victim || s.status == ServerStatus::Removed));
    c.check_alive().unwrap();
    done(c);
}

/// Random bytes, bad frames and malformed requests to every listening
/// port: every process stays up, says why it closed the connection, and
/// the cluster keeps serving.
#[test]
fn garbage_on_every_port_is_refused_and_the_cluster_serves() {
    use ramcoord_net::frame::Frame;
    use rand::{Rng, SeedableRng};
    use std::io::Write;

    // Without TLS, so that the garbage reaches the frame decoders (with
    // TLS it ends at the handshake: tests/security.rs).
    // The I/O thread's connections take garbage too.
    let mut c = cluster("garbage", 2, &["--insecure", "--cores", "2"]);
    c.wait_ready(2, LIMIT).unwrap();
    let mut ctl = c.ctl(Duration::from_secs(5));
    ctl.operate(Request::CreateTable {
        name: "before".into(),
        tablets: 2,
    })
    .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let addrs: Vec<_> = c
        .coordinators
        .iter()
        .chain(c.masters.iter())
        .map(|p| p.addr)
        .collect();
    let hello = |cluster| {
        Frame::Hello {
            peer: (1 << 62) | 99,
            cluster,
        }
        .to_bytes()
        .to_vec()
    };
    let mut huge = b"RCNF".to_vec();
    huge.extend_from_slice(&[1, 1, 0, 0]);
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0; 4]);
    let mut wrong_version = Frame::Message(bytes::Bytes::from_static(b"x"))
        .to_bytes()
        .to_vec();
    wrong_version[4] = 9;
    for addr in &addrs {
        let random: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
        let tagged = |tag: u8, rng: &mut rand_chacha::ChaCha8Rng| {
            let mut body = vec![tag];
            body.extend((0..200).map(|_| rng.random::<u8>()));
            let mut v = hello(1);
            v.extend_from_slice(&Frame::Message(body.into()).to_bytes());
            v
        };
        let mut write_garbage = hello(1);
        write_garbage.extend_from_slice(
            &Frame::Write {
                id: 1,
                region: 1,
                offset: 0,
                bytes: random[..512].to_vec().into(),
            }
            .to_bytes(),
        );
        let mut hello_then_random = hello(1);
        hello_then_random.extend_from_slice(&random[..100]);
        let attacks: Vec<Vec<u8>> = vec![
            random.clone(),
            huge.clone(),
            wrong_version.clone(),
            hello(42),
            hello(1)[..10].to_vec(),
            hello_then_random,
            tagged(1, &mut rng),
            tagged(2, &mut rng),
            tagged(4, &mut rng),
            tagged(200, &mut rng),
            write_garbage,
        ];
        for a in attacks {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let _ = s.write_all(&a);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    c.check_alive().unwrap();
    // Still serving: an operation, keys at the masters, every replica.
    c.wait_ready(2, LIMIT).unwrap();
    ctl.operate(Request::CreateTable {
        name: "after".into(),
        tablets: 2,
    })
    .unwrap();
    ctl.put("after", "k", "v").unwrap();
    assert_eq!(
        ctl.get("after", "k").unwrap().value.as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(c.statuses().len(), 3, "every replica answers");
    // And said why it hung up.
    for p in c.coordinators.iter().chain(c.masters.iter()) {
        let log = std::fs::read_to_string(&p.log).unwrap();
        assert!(
            log.contains("closing connection: bad input"),
            "{} did not log a refused connection",
            p.name
        );
    }
    c.check_alive().unwrap();
    done(c);
}

/// A replica restarted from its data directory catches up; a replica whose
/// data directory was lost is replaced through membership changes (removed;
/// a new replica, new id, empty directory, `--join`, added as a learner,
/// caught up, promoted) and the new replica then carries the group's state:
/// with another replica down it is part of every quorum, and after the
/// leader is killed the new leader has everything acknowledged.
#[test]
fn restarted_and_replaced_replicas_rejoin() {
    // A short log between snapshots: the replacement is caught up by a
    // snapshot, the restarted replica restores one.
    // On epoll (the fallback where io_uring is refused).
    let mut c = cluster("rejoin", 2, &["--snapshot-entries", "8", "--io", "epoll"]);
    let leader = c.wait_ready(2, LIMIT).unwrap();
    let mut ctl = c.ctl(Duration::from_secs(10));
    let follower = (1..=3).find(|i| *i != leader.id).unwrap();
    let other = (1..=3).find(|i| *i != leader.id && *i != follower).unwrap();
    // Restart from the data directory, after missing some operations.
    c.kill_coordinator(follower);
    for i in 0..5 {
        ctl.operate(Request::CreateTable {
            name: format!("a{i}"),
            tablets: 2,
        })
        .unwrap();
    }
    c.restart_coordinator(follower).unwrap();
    c.wait_for("the restarted replica to catch up", LIMIT, |c| {
        let rows = c.statuses();
        let lead = rows.iter().find(|s| s.active)?;
        let me = rows.iter().find(|s| s.id == follower)?;
        (me.applied >= lead.commit && me.tables == 5).then_some(())
    })
    .unwrap();

    // Its disk is lost: remove it, start a replacement, add it.
    let new = c.replace_coordinator(follower).unwrap();
    let mut ctl = c.ctl(Duration::from_secs(10));
    println!(
        "{}",
        ctl.run(CtlCommand::RemoveReplica { id: follower }).unwrap()
    );
    for i in 0..5 {
        ctl.operate(Request::CreateTable {
            name: format!("b{i}"),
            tablets: 2,
        })
        .unwrap();
    }
    let addr = c.coordinators[new as usize - 1].addr.to_string();
    println!(
        "{}",
        ctl.run(CtlCommand::AddReplica {
            id: new,
            address: Some(addr)
        })
        .unwrap()
    );
    let st = c
        .wait_for("the new replica to be a voter with the state", LIMIT, |c| {
            let rows = c.statuses();
            let me = rows.iter().find(|s| s.id == new)?.clone();
            (me.voters.contains(&new) && me.tables == 10).then_some(me)
        })
        .unwrap();
    assert_eq!(st.voters.len(), 3, "{st:?}");
    assert!(!st.voters.contains(&follower), "{st:?}");
    let log = std::fs::read_to_string(&c.coordinators[new as usize - 1].log).unwrap();
    assert!(
        log.contains("installed a snapshot from the leader"),
        "the replacement was not caught up by a snapshot"
    );
    // Restarted, the replacement comes back as a member (found by a long
    // chaos run: restarted with --join and its log, it refused to start).
    c.restart_coordinator(new).unwrap();
    c.wait_for("the restarted replacement to answer", LIMIT, |c| {
        let rows = c.statuses();
        rows.iter()
            .find(|s| s.id == new && s.tables == 10)
            .map(|_| ())
    })
    .unwrap();

    // The other old follower goes: the new replica is needed for a quorum.
    c.kill_coordinator(other);
    let r = ctl
        .operate(Request::CreateTable {
            name: "c0".into(),
            tablets: 2,
        })
        .unwrap();
    assert!(matches!(r.result, OpResult::TableCreated(_)));
    // It comes back; then the leader is killed: the new leader (the
    // restarted replica or the new one) has every table.
    c.restart_coordinator(other).unwrap();
    c.wait_for("every replica to apply c0", LIMIT, |c| {
        let rows = c.statuses();
        (rows.len() == 3 && rows.iter().all(|s| s.tables == 11)).then_some(())
    })
    .unwrap();
    c.kill_coordinator(leader.id);
    let next = c
        .wait_for("a new leader", LIMIT, |c| {
            c.active().filter(|s| s.id != leader.id)
        })
        .unwrap();
    assert_eq!(next.tables, 11, "{next:?}");
    let mut ctl = c.ctl(Duration::from_secs(10));
    let names: Vec<String> = ctl
        .view()
        .unwrap()
        .tables
        .iter()
        .map(|t| t.name.clone())
        .collect();
    for n in ["a0", "a4", "b0", "b4", "c0"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    c.check_alive().unwrap();
    done(c);
}

/// Forged Raft messages on a replica's port (the transport does not
/// authenticate peers yet): a term at the ceiling from a connection that
/// claims to be a replica, a term far ahead, a newer term from an id no
/// configuration holds. Each is refused and logged; the leader keeps its
/// term, and after every replica restarts the group still elects and
/// serves. (Before: one message with term u64::MAX left the group without
/// a leader for good.)
#[test]
fn forged_raft_messages_do_not_wedge_the_group() {
    use ramcoord::protocol::raft_payload;
    use ramcoord_log::{Message, MessageBody};
    use ramcoord_net::frame::Frame;
    use std::io::Write;

    // Without TLS: the forger's hello is believed, so Raft's own checks
    // are what is tested (tests/security.rs: with TLS it never gets there).
    let mut c = cluster("forged", 2, &["--insecure"]);
    let before = c.wait_ready(2, LIMIT).unwrap();
    let replicas: Vec<(u64, std::net::SocketAddr)> = c
        .coordinators
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, p.addr))
        .collect();
    for &(to, addr) in &replicas {
        let member = if to == 1 { 2 } else { 1 };
        for (from, term) in [
            (member, u64::MAX),
            (member, u64::MAX - 1),
            (member, before.term + (1 << 33)),
            (99, before.term + 1000),
        ] {
            let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                continue;
            };
            let mut bytes = Frame::Hello {
                peer: from,
                cluster: 1,
            }
            .to_bytes()
            .to_vec();
            for body in [
                MessageBody::Heartbeat {
                    commit: 0,
                    seq: 0,
                    sent_tick: 0,
                },
                MessageBody::Vote {
                    last_index: u64::MAX - 1,
                    last_term: term,
                    transfer: true,
                },
            ] {
                let m = Message {
                    from,
                    to,
                    term,
                    body,
                };
                bytes.extend_from_slice(&Frame::Message(raft_payload(&m)).to_bytes());
            }
            let _ = s.write_all(&bytes);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    c.check_alive().unwrap();
    let after = c.wait_ready(2, LIMIT).unwrap();
    assert_eq!((after.id, after.term), (before.id, before.term));
    for s in c.statuses() {
        assert!(s.term < 1 << 32, "replica {} took term {}", s.id, s.term);
    }
    // Every replica restarts from its disk; the group elects and serves.
    for (id, _) in &replicas {
        c.kill_coordinator(*id);
        c.restart_coordinator(*id).unwrap();
    }
    c.wait_ready(2, LIMIT).unwrap();
    let mut ctl = c.ctl(Duration::from_secs(5));
    ctl.operate(Request::CreateTable {
        name: "after-forgery".into(),
        tablets: 2,
    })
    .unwrap();
    done(c);
}

/// Sends `sig` to process `pid`.
fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a live child's pid");
    rustix::process::kill_process(pid, sig).expect("kill");
}

/// The leader's disk stalls with its network healthy: the fault hook
/// (`--fault-signals`, SIGUSR1) holds each of its log flushes 2 s, over
/// twenty election timeouts (5 ms ticks, elections after 10 to 20). It
/// must keep leading in the same term, operations must keep committing
/// (its followers' disks make the majority), its own log must trail the
/// commit index meanwhile (the stall is real), and once the disk is back
/// (SIGUSR2) its log catches up. Before: the replica waited for each
/// fdatasync in its only thread, so a slow disk silenced its heartbeats.
#[test]
fn a_leader_whose_disk_stalls_keeps_leading_and_committing() {
    let mut c = cluster(
        "slowdisk",
        1,
        &["--fault-signals", "--fault-sync-delay-ms", "2000"],
    );
    let leader = c.wait_ready(1, LIMIT).unwrap();
    let pid = c.coordinators[leader.id as usize - 1].pid().unwrap();
    signal(pid, rustix::process::Signal::USR1);
    // Let a flush begin under the hook (one already in flight is not held).
    let mut ctl = c.ctl(Duration::from_secs(20));
    ctl.operate(Request::CreateTable {
        name: "first".into(),
        tablets: 1,
    })
    .unwrap();
    let mut lagging = 0;
    for i in 0..40 {
        let r = ctl
            .operate(Request::CreateTable {
                name: format!("stalled-{i}"),
                tablets: 1,
            })
            .unwrap();
        assert!(matches!(r.result, OpResult::TableCreated(_)), "{r:?}");
        assert_eq!(r.term, leader.term, "a new term during the stall");
        let st = c
            .statuses()
            .into_iter()
            .find(|s| s.id == leader.id)
            .expect("the leader answers its status");
        assert_eq!((st.role.as_str(), st.term), ("leader", leader.term));
        if st.durable_index < st.commit {
            lagging += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Most samples land inside a held flush (2 s each, the next one held
    // again): the leader's disk really was behind its commit point.
    assert!(
        lagging >= 20,
        "the leader's log trailed its commit index in only {lagging} of 40 samples"
    );
    let now = c.active().expect("an active coordinator");
    assert_eq!((now.id, now.term), (leader.id, leader.term));
    signal(pid, rustix::process::Signal::USR2);
    c.wait_for("the leader's log to catch up", LIMIT, |c| {
        c.statuses()
            .into_iter()
            .find(|s| s.id == leader.id && s.durable_index >= s.commit)
    })
    .unwrap();
    let r = ctl
        .operate(Request::CreateTable {
            name: "after".into(),
            tablets: 1,
        })
        .unwrap();
    assert_eq!(r.term, leader.term);
    c.check_alive().unwrap();
    done(c);
}

/// A master stops reading (SIGSTOP: its sockets fill, nothing is
/// acknowledged, no heartbeats; the master timeout is set far beyond the
/// test so it is not declared crashed) while tables are created and
/// retried pushes keep coming. The leader marks it slow and stops pushing
/// to it; nothing else waits for it: every operation commits in the same
/// term, the other masters are pushed (they serve their new tablets), and
/// no replica changes term. Once it reads again it heartbeats, the mark is
/// lifted, and it is pushed what it missed (it serves its tablets too).
/// Before: pushes were blocking writes from the Raft thread with a 1 s
/// timeout each, so such a master stalled the group.
#[test]
fn a_master_that_stops_reading_is_marked_slow_and_stalls_nothing() {
    let dir = std::env::temp_dir().join(format!("ramcoord-e2e-stopped-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = LocalClusterConfig::new(env!("CARGO_BIN_EXE_ramcoord").into(), dir, 3, 3);
    // Masters are never timed out here, but heartbeat every 40 ms: the
    // leader sets the pace (a tenth of the timeout, 60 s, by default), and
    // a master that took a 60 s pace before it was stopped would not be
    // heard again within the test's limit after it resumes.
    cfg.coordinator_args = [
        "--tick-ms",
        "5",
        "--master-timeout-ms",
        "600000",
        "--heartbeat-interval-ms",
        "40",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cfg.master_args = vec!["--heartbeat-ms".into(), "40".into()];
    let c = LocalCluster::start(cfg).expect("cluster starts");
    let leader = c.wait_ready(3, LIMIT).unwrap();
    let mut ctl = c.ctl(Duration::from_secs(10));
    let view = ctl.view().unwrap();
    let victim = view.servers[0].id;
    let idx = c.master_at(&view.servers[0].addr).unwrap();
    let pid = c.masters[idx].pid().unwrap();
    signal(pid, rustix::process::Signal::STOP);

    let leader_log = c.coordinators[leader.id as usize - 1].log.clone();
    let slow_line = format!("server={victim}");
    let marked = |what: &str| {
        std::fs::read_to_string(&leader_log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(what) && l.contains(&slow_line))
    };
    let tables = 12;
    let mut last_seq = 0;
    for i in 0..tables {
        let r = ctl
            .operate(Request::CreateTable {
                name: format!("t{i}"),
                tablets: 3,
            })
            .unwrap();
        assert!(matches!(r.result, OpResult::TableCreated(_)), "{r:?}");
        assert_eq!(r.term, leader.term, "a new term while a master was stopped");
        last_seq = r.seq;
        // Spread the operations over several push retry periods.
        std::thread::sleep(Duration::from_millis(50));
    }
    c.wait_for("the leader to mark the stopped master slow", LIMIT, |_| {
        marked("master declared slow").then_some(())
    })
    .unwrap();

    // The other masters were pushed their tablets of every new table.
    let view = ctl.view().unwrap();
    let mut theirs = 0;
    let mut victims = Vec::new();
    for t in view.tables.iter().filter(|t| t.name.starts_with('t')) {
        for k in 0..8 {
            let key = format!("k{k}");
            let owner = t.tablet_for(key_hash(key.as_bytes())).unwrap().owner;
            if owner == victim {
                victims.push((t.name.clone(), key));
                continue;
            }
            let a = ctl.put(&t.name, &key, "v").unwrap();
            assert_eq!(a.server, owner);
            theirs += 1;
        }
    }
    assert!(theirs > 0 && !victims.is_empty(), "{theirs} {victims:?}");
    for s in c.statuses() {
        assert_eq!(s.term, leader.term, "replica {} changed term", s.id);
    }
    let now = c.active().expect("an active coordinator");
    assert_eq!((now.id, now.term), (leader.id, leader.term));

    // It reads again: heartbeats lift the mark, and it is pushed the
    // tablets it missed.
    signal(pid, rustix::process::Signal::CONT);
    c.wait_for("the slow master to be pushed again", LIMIT, |_| {
        marked("slow master heartbeated").then_some(())
    })
    .unwrap();
    ctl.wait_complete(last_seq).unwrap();
    for (table, key) in &victims {
        let a = ctl.put(table, key, "v").unwrap();
        assert_eq!(a.server, victim);
    }
    let mut c = c;
    c.check_alive().unwrap();
    done(c);
}

/// SIGTERM is a graceful stop. On the leader: it hands leadership to a
/// follower (logged, naming it, and that follower leads next), flushes
/// its log and exits 0. On a follower: it flushes and exits 0. Restarted,
/// both rejoin from their logs and the cluster serves.
#[test]
fn sigterm_hands_leadership_over_flushes_and_exits_0() {
    let mut c = cluster("sigterm", 1, &[]);
    let leader = c.wait_ready(1, LIMIT).unwrap();
    let mut ctl = c.ctl(Duration::from_secs(10));
    ctl.operate(Request::CreateTable {
        name: "before".into(),
        tablets: 1,
    })
    .unwrap();
    let exit_of = |c: &mut LocalCluster, id: u64| {
        let p = &mut c.coordinators[id as usize - 1];
        let deadline = std::time::Instant::now() + LIMIT;
        while std::time::Instant::now() < deadline {
            if let Some(status) = p.exit_status() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("replica {id} did not exit after SIGTERM");
    };
    let pid = c.coordinators[leader.id as usize - 1].pid().unwrap();
    signal(pid, rustix::process::Signal::TERM);
    let status = exit_of(&mut c, leader.id);
    assert_eq!(status.code(), Some(0), "the leader's exit: {status}");
    let log = std::fs::read_to_string(&c.coordinators[leader.id as usize - 1].log).unwrap();
    let handed = log
        .lines()
        .find(|l| l.contains("leadership handed over"))
        .unwrap_or_else(|| panic!("no hand-over logged:\n{log}"));
    assert!(log.contains("log flushed; stopped"), "{log}");
    let next = c
        .wait_for("the next leader", LIMIT, |c| c.active())
        .unwrap();
    assert!(
        handed.contains(&format!("to={}", next.id)),
        "handed over as {handed:?}, but {} leads",
        next.id
    );
    assert!(next.term > leader.term);

    // The old leader rejoins; then a follower stops the same way.
    c.restart_coordinator(leader.id).unwrap();
    c.wait_for("three replicas again", LIMIT, |c| {
        (c.statuses().len() == 3).then_some(())
    })
    .unwrap();
    let follower = (1..=3u64).find(|i| *i != next.id).unwrap();
    let pid = c.coordinators[follower as usize - 1].pid().unwrap();
    signal(pid, rustix::process::Signal::TERM);
    let status = exit_of(&mut c, follower);
    assert_eq!(status.code(), Some(0), "the follower's exit: {status}");
    let log = std::fs::read_to_string(&c.coordinators[follower as usize - 1].log).unwrap();
    assert!(log.contains("log flushed; stopped"), "{log}");
    assert!(!log.contains("handing leadership over"), "{log}");
    c.restart_coordinator(follower).unwrap();
    let mut ctl = c.ctl(Duration::from_secs(20));
    ctl.operate(Request::CreateTable {
        name: "after".into(),
        tablets: 1,
    })
    .unwrap();
    let view = ctl.view().unwrap();
    assert!(view.tables.iter().any(|t| t.name == "before"));
    c.check_alive().unwrap();
    done(c);
}

/// SIGTERM on a master drains it: it stops serving, the coordinator
/// hands its tablets to the other masters at once (the master timeout is
/// set far past the test, so only the drain can move them), the master
/// exits 0, and every key of a table it served is written and read at the
/// new owners.
#[test]
fn sigterm_on_a_master_moves_its_tablets_then_exits_0() {
    let mut c = cluster("drain", 3, &["--master-timeout-ms", "600000"]);
    c.wait_ready(3, LIMIT).unwrap();
    let mut ctl = c.ctl(Duration::from_secs(10));
    ctl.operate(Request::CreateTable {
        name: "drained".into(),
        tablets: 6,
    })
    .unwrap();
    let before = ctl.view().unwrap();
    let leaving_addr = c.masters[0].addr.to_string();
    let leaving = before
        .servers
        .iter()
        .find(|s| s.addr == leaving_addr)
        .unwrap()
        .id;
    let owned = before.tables[0]
        .tablets
        .iter()
        .filter(|t| t.owner == leaving)
        .count();
    assert!(owned > 0, "the leaving master owns tablets");
    let pid = c.masters[0].pid().unwrap();
    signal(pid, rustix::process::Signal::TERM);
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = c.masters[0].exit_status() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the master did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{status}");
    let log = std::fs::read_to_string(&c.masters[0].log).unwrap();
    assert!(log.contains("stopped serving"), "{log}");
    assert!(log.contains("drained"), "{log}");
    let after = ctl.view().unwrap();
    assert!(
        after.tables[0].tablets.iter().all(|t| t.owner != leaving),
        "{:?}",
        after.tables[0].tablets
    );
    for i in 0..24 {
        let key = format!("k{i}");
        c.wait_for("a put at the new owner", LIMIT, |c| {
            c.ctl(Duration::from_secs(5)).put("drained", &key, "v").ok()
        })
        .unwrap();
        assert_eq!(
            ctl.get("drained", &key).unwrap().value.as_deref(),
            Some(&b"v"[..])
        );
    }
    let coord_log: String = c
        .coordinators
        .iter()
        .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
        .collect();
    assert!(coord_log.contains("master leaving (drain)"));
    done(c);
}
