//! A replica driven by hand: one voter over memory, its persist jobs
//! written (or held back) by the test, its messages read off its outputs.

use super::*;
use crate::cluster::{Op, Record};
use crate::protocol::ClientRequest;
use ramcoord_log::{ConfState, Config, MemStorage, RawNode, Role};

const NONCE: u64 = 7;

struct One {
    replica: Replica<MemStorage>,
    now: Instant,
    /// Persist jobs are kept back (not durable) while set.
    hold: bool,
    held: Vec<PersistJob>,
    /// Replies to the master, by request id.
    to_master: Vec<(u64, ClientReply)>,
}

impl One {
    fn new() -> One {
        let raft = RawNode::new(
            Config::new(1),
            MemStorage::bootstrap(&ConfState::with_voters(1..=1)),
        )
        .expect("a valid config");
        let now = Instant::now();
        let replica = Replica::new(ReplicaConfig::new(1), raft, ClusterState::default(), now)
            .expect("a fresh replica starts");
        One {
            replica,
            now,
            hold: false,
            held: Vec::new(),
            to_master: Vec::new(),
        }
    }

    /// A new replica that leads, its coordinator active.
    fn leading() -> One {
        let mut one = One::new();
        for _ in 0..200 {
            if one.replica.raft().role() == Role::Leader && one.replica.coord.is_active() {
                break;
            }
            one.tick();
        }
        assert!(one.replica.coord.is_active(), "a lone voter leads");
        one
    }

    /// Enlists a master with `nonce`; its server id.
    fn enlist(&mut self, nonce: u64) -> ServerId {
        self.replica
            .propose(
                self.now,
                &Record::Commit(Op::EnlistServer {
                    addr: format!("127.0.0.1:{}", 7000 + nonce),
                    services: crate::cluster::services::MASTER,
                    nonce,
                }),
            )
            .expect("proposed");
        self.settle();
        self.replica
            .cluster()
            .servers()
            .find(|s| s.nonce == nonce)
            .expect("enlisted")
            .id
    }

    /// Drives the replica until it has nothing more to say.
    fn settle(&mut self) {
        loop {
            self.replica.drive(self.now).expect("the replica runs");
            let mut any = false;
            while let Some(out) = self.replica.poll_output() {
                any = true;
                match out {
                    Output::Persist(job) if self.hold => self.held.push(job),
                    Output::Persist(job) => self.write(job),
                    Output::Send { to, payload } if to == protocol::master_client_id(NONCE) => {
                        let env = protocol::decode::<ClientReply>(&payload[1..])
                            .expect("the replica's replies decode");
                        self.to_master.push((env.id, env.body));
                    }
                    _ => {}
                }
            }
            if !any {
                return;
            }
        }
    }

    fn write(&mut self, job: PersistJob) {
        job.write_to(self.replica.storage_mut()).expect("memory");
        self.replica
            .input(self.now, Input::Persisted { number: job.number });
    }

    /// Makes the held jobs durable.
    fn release(&mut self) {
        self.hold = false;
        for job in std::mem::take(&mut self.held) {
            self.write(job);
        }
        self.settle();
    }

    fn tick(&mut self) {
        self.now += self.replica.cfg.tick;
        self.replica.input(self.now, Input::Tick);
        self.settle();
    }

    fn heartbeat(&mut self, id: u64, from: ServerId) {
        let payload = protocol::encode(
            protocol::tag::CLIENT,
            id,
            &ClientRequest::Heartbeat { from },
        );
        let from = protocol::master_client_id(NONCE);
        self.replica
            .input(self.now, Input::Message { from, payload });
        self.settle();
    }
}

/// A master's heartbeat that reaches the leader after the leader proposed
/// the master's crash, but before that crash applied, is answered only
/// once it has applied, and then as "gone" (no lease): a lease granted
/// there would let the master serve tablets the crash hands to others.
/// Only the crashes proposed are waited for, not the whole log.
#[test]
fn a_heartbeat_waits_for_a_crash_proposed_before_it_but_not_for_the_rest_of_the_log() {
    let mut one = One::leading();
    let id = one.enlist(NONCE);

    // Proposals that do not touch the master, not yet durable: its
    // heartbeat is answered without waiting for them.
    one.hold = true;
    one.replica
        .propose(one.now, &Record::Noop)
        .expect("proposed");
    one.settle();
    one.heartbeat(1, id);
    assert!(
        matches!(
            one.to_master.as_slice(),
            [(1, ClientReply::HeartbeatAck { gone: false, lease_us, .. })] if *lease_us > 0
        ),
        "answered with a lease at once: {:?}",
        one.to_master
    );
    one.release();
    one.to_master.clear();

    // Its crash proposed, not yet durable: the heartbeat waits.
    one.hold = true;
    one.replica
        .propose(
            one.now,
            &Record::Commit(Op::ServerCrashed {
                id,
                plan: Vec::new(),
            }),
        )
        .expect("proposed");
    one.settle();
    one.heartbeat(2, id);
    // Its read begins at the next tick (one read a tick) and confirms at
    // once (one voter); the answer still waits for the crash.
    one.tick();
    assert!(
        one.to_master.is_empty(),
        "no answer before the crash applied: {:?}",
        one.to_master
    );
    one.release();
    assert!(
        matches!(
            one.to_master.as_slice(),
            [(
                2,
                ClientReply::HeartbeatAck {
                    gone: true,
                    lease_us: 0,
                    ..
                }
            )]
        ),
        "told it is gone, with no lease: {:?}",
        one.to_master
    );
}

/// Heartbeats that arrive in a tick whose read has begun wait for the
/// next tick, and one read answers them all: a read is a round of Raft
/// messages to every follower, bounded to one a tick whatever the load.
#[test]
fn heartbeats_of_one_tick_share_one_read() {
    let mut one = One::leading();
    let id = one.enlist(NONCE);
    one.heartbeat(1, id);
    assert!(
        matches!(
            one.to_master.as_slice(),
            [(1, ClientReply::HeartbeatAck { gone: false, .. })]
        ),
        "the tick's first heartbeat begins a read, confirmed at once: {:?}",
        one.to_master
    );
    one.to_master.clear();
    let tag = one.replica.last_read_tag;
    one.heartbeat(2, id);
    one.heartbeat(3, id);
    assert!(
        one.to_master.is_empty(),
        "the tick's read has begun: the others wait for the next: {:?}",
        one.to_master
    );
    assert_eq!(
        one.replica.last_read_tag, tag,
        "no read begun in the same tick"
    );
    one.tick();
    let answered: Vec<u64> = one.to_master.iter().map(|(id, _)| *id).collect();
    assert_eq!(answered, vec![2, 3], "{:?}", one.to_master);
    assert_eq!(one.replica.last_read_tag, tag + 1, "one read answered both");
}

/// A crash's change (for `ctl watch`) lists only the tablets that moved,
/// in each table the plan touched, as they are after it.
#[test]
fn a_crash_change_lists_only_the_tablets_that_moved() {
    let mut one = One::leading();
    let (a, b) = (one.enlist(1), one.enlist(2));
    // Two tables of four tablets, owners alternating: `a` holds two of each.
    for name in ["t1", "t2"] {
        let tablets = crate::cluster::even_ranges(4)
            .into_iter()
            .enumerate()
            .map(|(i, (start_hash, end_hash))| crate::cluster::TabletSpec {
                start_hash,
                end_hash,
                owner: if i % 2 == 0 { a } else { b },
            })
            .collect();
        one.replica
            .propose(
                one.now,
                &Record::Commit(Op::CreateTable {
                    name: name.into(),
                    tablets,
                }),
            )
            .expect("proposed");
        one.settle();
    }
    let plan = one
        .replica
        .cluster()
        .plan_recovery(a)
        .expect("b takes them");
    assert_eq!(plan.len(), 4);
    one.replica
        .propose(one.now, &Record::Commit(Op::ServerCrashed { id: a, plan }))
        .expect("proposed");
    one.settle();
    let change = one.replica.changes().last().expect("noted").clone();
    assert_eq!(change.kind, "server-crashed");
    assert_eq!(change.tables.len(), 2);
    for t in &change.tables {
        let whole = one.replica.cluster().table_by_id(t.id).expect("exists");
        assert_eq!(t.name, whole.name);
        assert_eq!(t.tablets.len(), 2, "the two that moved, of four");
        for tb in &t.tablets {
            assert_eq!(tb.owner, b);
            assert!(whole.tablets.contains(tb), "as they are after it");
        }
    }
}

/// A crash proposed in an earlier leadership and cut from the log since
/// (another leader's entries replaced it) is not waited for: on an idle
/// cluster its index may never come, and no master would get a lease.
#[test]
fn a_heartbeat_does_not_wait_for_a_crash_no_longer_in_the_log() {
    let mut one = One::leading();
    let id = one.enlist(NONCE);
    // As left by a crash proposed at a far index, then truncated away.
    one.replica.crash_proposed_index = one.replica.raft().log().last_index() + 1_000;
    one.heartbeat(1, id);
    assert!(
        matches!(
            one.to_master.as_slice(),
            [(1, ClientReply::HeartbeatAck { gone: false, lease_us, .. })] if *lease_us > 0
        ),
        "answered with a lease: {:?}",
        one.to_master
    );
}
