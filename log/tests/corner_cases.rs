//! Named corner cases of the Raft core, each scripted message by message.

mod harness;

use bytes::Bytes;
use harness::{plain, Cluster};
use ramcoord_log::*;

fn is_append_to(m: &Message, to: NodeId) -> bool {
    m.to == to && matches!(m.body, MessageBody::Append { .. })
}

/// Runs figure 8 of the Raft paper up to step (c): a leader replicates an
/// entry of an earlier term to a majority. Returns the cluster, that
/// entry's index and its term.
fn figure_8_until_old_entry_on_majority(bugs: InjectedBugs) -> (Cluster, Index, Term) {
    let mut c = Cluster::new(5, |cfg| {
        plain(cfg);
        cfg.append_entries_max = 1;
        cfg.bugs = bugs;
    });
    let votes = |m: &Message| {
        matches!(
            m.body,
            MessageBody::Vote { .. } | MessageBody::VoteResp { .. }
        )
    };
    // (a) S1 leads term t and replicates entry i to S2 only.
    c.elect(1);
    c.stabilize();
    let t = c.node(1).term();
    c.isolated.extend([3, 4, 5]);
    let i = c.propose(1, "old");
    c.stabilize();
    assert_eq!(c.log_terms(2).last(), Some(&(i, t)));
    assert_eq!(
        c.node(1).log().committed,
        i - 1,
        "entry i is on 2 of 5 only"
    );
    // (b) S1 crashes; S5 wins term t+1 with S3 and S4, appends its own
    // entry at i and crashes before sending it anywhere.
    c.crash(1);
    c.isolated.clear();
    c.isolated.insert(2);
    c.node_mut(5).campaign_now();
    c.deliver_where(votes);
    assert_eq!(c.node(5).role(), Role::Leader);
    assert_eq!(c.node(5).term(), t + 1);
    assert_eq!(c.log_terms(5).last(), Some(&(i, t + 1)));
    c.crash(5);
    // (c) S1 comes back and wins term t+2 with S3 and S4 (retrying after
    // their rejections teach it term t+1).
    c.isolated.clear();
    c.restart(1);
    c.isolated.insert(2);
    for _ in 0..3 {
        if c.node(1).role() == Role::Leader {
            break;
        }
        c.node_mut(1).campaign_now();
        c.deliver_where(votes);
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), t + 2);
    // S1 brings S3 and S4 up to date one entry at a time; stop once they
    // hold the old entry i, before S1's own entry i+1 reaches them.
    for f in [3, 4] {
        for _ in 0..100 {
            if c.log_terms(f).last() == Some(&(i, t)) {
                break;
            }
            if !c.deliver_one(|m| is_append_to(m, f) || (m.from == f && m.to == 1)) {
                c.node_mut(1).tick(); // a heartbeat restarts a paused probe
                c.process(1);
            }
        }
        assert_eq!(c.log_terms(f).last(), Some(&(i, t)), "node {f}");
        // Its acknowledgement of entry i reaches S1.
        c.deliver_one(|m| {
            m.from == f && m.to == 1 && matches!(m.body, MessageBody::AppendResp { .. })
        });
        assert_eq!(c.node(1).progress(f).unwrap().match_index, i);
    }
    // Entry i is now known on S1, S3 and S4, a majority; S1's own entry
    // i+1 is on S1 only.
    (c, i, t)
}

#[test]
fn figure_8_an_old_term_entry_on_a_majority_is_not_committed_by_counting() {
    let (mut c, i, t) = figure_8_until_old_entry_on_majority(InjectedBugs::default());
    assert!(
        c.node(1).log().committed < i,
        "entry of term {t} committed by counting replicas"
    );
    // (d) S1 crashes before its own entry spreads; S5 wins (its last term
    // t+1 beats the others' t) and overwrites entry i everywhere. That is
    // safe precisely because entry i was never committed.
    c.crash(1);
    c.drop_where(|_| true);
    c.isolated.clear();
    c.restart(5);
    for _ in 0..4 {
        if c.node(5).role() == Role::Leader {
            break;
        }
        c.node_mut(5).campaign_now();
        c.stabilize();
    }
    assert_eq!(c.node(5).role(), Role::Leader);
    c.stabilize();
    // Followers learn the commit index with the next heartbeat.
    let heartbeat = c.cfg.heartbeat_interval_ticks;
    c.tick(5, heartbeat);
    c.stabilize();
    for id in [2, 3, 4, 5] {
        assert_eq!(c.node(id).log().term(i), Ok(t + 1), "node {id}");
        assert!(c.node(id).log().committed > i);
        let applied_old = c.applied[&id].iter().any(|e| e.index == i && e.term == t);
        assert!(!applied_old, "node {id} applied the overwritten entry");
    }
}

#[test]
fn figure_8_with_the_planted_bug_commits_the_old_entry() {
    // The same script with the planted bug: the old entry commits by
    // counting, which step (d) would then overwrite. This is what the
    // simulator's `--inject-bug commit-previous-term` looks for.
    let bugs = InjectedBugs {
        commit_previous_term: true,
        ..InjectedBugs::default()
    };
    let (c, i, _) = figure_8_until_old_entry_on_majority(bugs);
    assert!(c.node(1).log().committed >= i);
}

#[test]
fn pre_vote_keeps_a_partitioned_node_from_disrupting_on_rejoin() {
    let mut c = Cluster::new(3, |cfg| {
        cfg.pre_vote = true;
        cfg.check_quorum = true;
    });
    c.tick_all(30);
    let leader = c.leader().expect("a leader");
    let term = c.node(leader).term();
    let lonely = if leader == 3 { 2 } else { 3 };
    c.isolated.insert(lonely);
    c.tick(lonely, 200);
    // Pre-votes went unanswered: the term never moved.
    assert_eq!(c.node(lonely).term(), term);
    c.propose(leader, "while-apart");
    c.stabilize();
    c.isolated.clear();
    c.tick_all(30);
    assert_eq!(
        c.leader(),
        Some(leader),
        "the rejoining node deposed the leader"
    );
    assert_eq!(c.node(leader).term(), term);
    assert_eq!(
        c.applied_data(lonely),
        vec![Bytes::from_static(b"while-apart")]
    );
}

#[test]
fn without_pre_vote_a_rejoining_node_disrupts_the_leader() {
    // The contrast that shows the test above can fail.
    let mut c = Cluster::new(3, plain);
    c.elect(1);
    let term = c.node(1).term();
    c.isolated.insert(3);
    c.tick(3, 200);
    assert!(c.node(3).term() > term);
    c.isolated.clear();
    c.node_mut(1).tick();
    c.stabilize();
    assert!(c.node(1).term() > term, "the leader learned a higher term");
}

#[test]
fn check_quorum_leader_steps_down_when_it_loses_its_quorum() {
    let mut c = Cluster::new(3, |cfg| cfg.check_quorum = true);
    c.elect(1);
    c.isolated.insert(1);
    c.tick(1, 2 * c.cfg.election_timeout_ticks);
    assert_eq!(c.node(1).role(), Role::Follower);
    assert!(matches!(
        c.node_mut(1).propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { .. })
    ));

    // Without check-quorum an isolated leader believes in itself forever.
    let mut c = Cluster::new(3, plain);
    c.elect(1);
    c.isolated.insert(1);
    c.tick(1, 10 * c.cfg.election_timeout_ticks);
    assert_eq!(c.node(1).role(), Role::Leader);
}

#[test]
fn snapshot_racing_with_appends_converges() {
    let mut c = Cluster::new(3, |cfg| {
        cfg.snapshot_chunk_bytes = 7;
        cfg.append_entries_max = 2;
    });
    c.elect(1);
    c.isolated.insert(3);
    for i in 0..20 {
        c.propose(1, &format!("entry-{i}"));
    }
    c.stabilize();
    // The leader compacts everything applied: node 3 now needs a snapshot.
    let point = c.node(1).snapshot_point();
    let data = Bytes::from(format!("state-up-to-{}", point.index).repeat(3));
    c.node_mut(1)
        .storage_mut()
        .compact(Snapshot {
            meta: point.clone(),
            data,
        })
        .unwrap();
    let old_append_to_3 = Message {
        from: 1,
        to: 3,
        term: c.node(1).term(),
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![],
            commit: 1,
        },
    };
    c.isolated.clear();
    c.node_mut(1).tick();
    c.node_mut(1).tick();
    c.process(1);
    // Appends proposed while the snapshot streams, delivered in reverse.
    for i in 20..25 {
        c.propose(1, &format!("entry-{i}"));
    }
    for _ in 0..50 {
        c.process_all();
        c.queue.reverse();
        if let Some(m) = c.queue.pop() {
            if !c.isolated.contains(&m.to) {
                c.node_mut(m.to).step(m);
            }
        }
    }
    // A stale append from before the snapshot arrives late.
    c.node_mut(3).step(old_append_to_3);
    c.stabilize();
    c.tick_all(5);
    assert_eq!(c.node(3).log().last_index(), c.node(1).log().last_index());
    assert_eq!(c.node(3).log().committed, c.node(1).log().committed);
    let snap3 = c.node(3).log().storage().snapshot();
    assert_eq!(
        snap3.meta.index, point.index,
        "node 3 installed the leader's snapshot"
    );
    let tail: Vec<Bytes> = (20..25)
        .map(|i| Bytes::from(format!("entry-{i}")))
        .collect();
    assert!(
        c.applied_data(3).ends_with(&tail),
        "{:?}",
        c.applied_data(3)
    );
}

/// A snapshot streaming to a follower is replaced by a newer, smaller one
/// (the state machine shrank) before the transfer ends: the leader's
/// retransmit on a heartbeat answer must start over with the new snapshot,
/// not resume at an offset past its end. (Found by the coordinator
/// workload, whose snapshots shrink when tables are dropped.)
#[test]
fn a_snapshot_replaced_mid_transfer_by_a_smaller_one_starts_over() {
    let mut c = Cluster::new(3, |cfg| {
        cfg.snapshot_chunk_bytes = 7;
    });
    c.elect(1);
    c.isolated.insert(3);
    for i in 0..10 {
        c.propose(1, &format!("entry-{i}"));
    }
    c.stabilize();
    let compact = |c: &mut Cluster, len: usize| {
        let point = c.node(1).snapshot_point();
        let data = Bytes::from(vec![b's'; len]);
        c.node_mut(1)
            .storage_mut()
            .compact(Snapshot {
                meta: point.clone(),
                data,
            })
            .unwrap();
        point.index
    };
    compact(&mut c, 100);
    c.isolated.clear();
    // Heartbeats until the leader streams the snapshot; let about ten of
    // its 7-byte chunks through.
    c.tick(1, c.cfg.heartbeat_interval_ticks);
    let mut chunks = 0;
    while chunks < 10 {
        c.tick(1, 1);
        while chunks < 10 && c.deliver_one(|m| m.to == 3 || m.from == 3) {
            chunks += usize::from(c.delivered.last().is_some_and(|d| d.contains("Snapshot")));
        }
    }
    // Meanwhile the group moves on and the leader compacts to a much
    // smaller snapshot.
    c.isolated.insert(3);
    for i in 10..15 {
        c.propose(1, &format!("entry-{i}"));
    }
    c.stabilize();
    let newer = compact(&mut c, 20);
    c.isolated.clear();
    // A heartbeat answer from node 3 triggers a retransmit: it must be of
    // the new snapshot.
    c.tick(1, c.cfg.heartbeat_interval_ticks);
    c.stabilize();
    c.tick_all(3);
    c.stabilize();
    assert_eq!(c.node(3).log().storage().snapshot().meta.index, newer);
    assert_eq!(c.node(3).log().last_index(), c.node(1).log().last_index());
}

/// A network that repeats messages repeats the follower's answers to
/// snapshot chunks: each copy must not start another stream of chunks
/// beside the first (every copy answered, then every answer to those,
/// until the link is full of chunks the follower already has). Only an
/// answer that moves the transfer on sends the next chunk. (Found by the
/// simulator's heavy faults: a 611-byte snapshot still streaming 100
/// ticks later, dozens of chains of 16-byte chunks in flight.)
#[test]
fn repeated_answers_to_snapshot_chunks_do_not_multiply_the_chunks() {
    let mut c = Cluster::new(3, |cfg| {
        cfg.snapshot_chunk_bytes = 10;
    });
    c.elect(1);
    c.isolated.insert(3);
    for i in 0..10 {
        c.propose(1, &format!("entry-{i}"));
    }
    c.stabilize();
    let point = c.node(1).snapshot_point();
    c.node_mut(1)
        .storage_mut()
        .compact(Snapshot {
            meta: point.clone(),
            data: Bytes::from(vec![b's'; 100]),
        })
        .unwrap();
    c.isolated.clear();
    // A heartbeat round finds node 3 behind the snapshot.
    c.tick(1, c.cfg.heartbeat_interval_ticks);
    let mut chunks = 0;
    let mut steps = 0;
    loop {
        c.process_all();
        let Some(pos) = c.queue.iter().position(|m| m.to == 3 || m.from == 3) else {
            break;
        };
        let m = c.queue.remove(pos);
        chunks += usize::from(matches!(m.body, MessageBody::Snapshot { .. }));
        // Every answer to a chunk arrives three times.
        let copies = if matches!(m.body, MessageBody::SnapshotResp { .. }) {
            3
        } else {
            1
        };
        for _ in 0..copies {
            c.node_mut(m.to).step(m.clone());
            c.process(m.to);
        }
        steps += 1;
        assert!(
            steps < 5_000,
            "a storm: {chunks} chunks after {steps} messages"
        );
    }
    assert_eq!(c.node(3).log().storage().snapshot().meta.index, point.index);
    // Ten chunks of ten bytes, and nothing sent twice.
    assert_eq!(chunks, 10, "chunks sent for a 100-byte snapshot");
}

/// A follower loses the snapshot it was assembling (it restarts), and a
/// late copy of the first chunk starts its assembly again, so it answers
/// with an offset behind what the leader holds acknowledged. The leader
/// drops answers that go back (see the test above), but must still take
/// one that answers its retransmission, or the transfer would stall until
/// the next compaction. (Found by review of that rule.)
#[test]
fn a_follower_that_lost_its_partial_snapshot_still_gets_it() {
    let mut c = Cluster::new(3, |cfg| {
        cfg.snapshot_chunk_bytes = 10;
    });
    c.elect(1);
    c.isolated.insert(3);
    for i in 0..10 {
        c.propose(1, &format!("entry-{i}"));
    }
    c.stabilize();
    let point = c.node(1).snapshot_point();
    c.node_mut(1)
        .storage_mut()
        .compact(Snapshot {
            meta: point.clone(),
            data: Bytes::from(vec![b's'; 100]),
        })
        .unwrap();
    c.isolated.clear();
    c.tick(1, c.cfg.heartbeat_interval_ticks);
    // Four chunks through, a copy of the first kept.
    let mut first = None;
    let mut chunks = 0;
    while chunks < 4 {
        c.process_all();
        let pos = c
            .queue
            .iter()
            .position(|m| m.to == 3 || m.from == 3)
            .expect("the transfer goes on");
        let m = c.queue.remove(pos);
        if let MessageBody::Snapshot { offset, .. } = &m.body {
            chunks += 1;
            if *offset == 0 {
                first.get_or_insert_with(|| m.clone());
            }
        }
        let to = m.to;
        c.node_mut(to).step(m);
        c.process(to);
    }
    c.drop_where(|m| m.to == 3 || m.from == 3);
    c.crash(3);
    c.restart(3);
    c.node_mut(3).step(first.expect("the first chunk"));
    c.process(3);
    for _ in 0..30 {
        c.tick(1, 1);
        c.stabilize();
    }
    assert_eq!(c.node(3).log().storage().snapshot().meta.index, point.index);
    assert_eq!(c.node(3).log().last_index(), c.node(1).log().last_index());
}

/// Two peers' votes are a quorum of three, but the candidate waits for its
/// own, which comes only once its new term is durable. (Found by the
/// coordinator workload: a leader elected before its term was on disk
/// crashed, came back in the old term, was elected in the same term again
/// and wrote a second, different entry at an index it had used.)
#[test]
fn a_candidate_leads_only_once_its_own_term_is_durable() {
    let mut c = Cluster::new(3, plain);
    c.node_mut(1).campaign_now();
    // Node 1's disk is slow: its ready (the new term, its own vote) is not
    // persisted yet, but the vote requests go out now.
    let mut rd = c.node_mut(1).ready();
    assert!(rd.hard_state.is_some_and(|hs| hs.term == 2));
    for m in std::mem::take(&mut rd.messages) {
        assert!(matches!(m.body, MessageBody::Vote { .. }));
        let to = m.to;
        c.node_mut(to).step(m);
        c.process(to);
    }
    let grants: Vec<Message> = c
        .queue
        .drain(..)
        .filter(|m| m.to == 1 && matches!(m.body, MessageBody::VoteResp { reject: false }))
        .collect();
    assert_eq!(grants.len(), 2, "both peers grant");
    for m in grants {
        c.node_mut(1).step(m);
    }
    assert_eq!(
        c.node(1).role(),
        Role::Candidate,
        "a quorum of peers, but its own term is not durable"
    );
    // The write completes: its own vote counts, and it leads.
    c.node_mut(1)
        .storage_mut()
        .set_hard_state(rd.hard_state.unwrap())
        .unwrap();
    c.node_mut(1).advance(rd);
    c.process(1);
    assert_eq!(c.node(1).role(), Role::Leader);
}

#[test]
fn membership_change_while_a_node_is_down() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.crash(3);
    c.add_node(4, ConfState::default());
    let apply = |c: &mut Cluster, cc: ConfChange| {
        c.node_mut(1).propose_conf_change(cc).unwrap();
        c.process(1);
        c.stabilize();
        c.tick_all(3);
    };
    apply(&mut c, ConfChange::AddLearner(4));
    assert!(c.node(1).conf().learners.contains(&4));
    // A second change is refused until the first is applied; it is by now.
    apply(&mut c, ConfChange::AddVoter(4));
    apply(&mut c, ConfChange::Remove(2));
    assert_eq!(c.node(1).conf().voters, [1, 3, 4].into_iter().collect());
    // Node 3 was down for all of it: on restart it learns the changes from
    // the log and the group (1, 3, 4) commits with it.
    c.restart(3);
    c.tick_all(5);
    for id in [1, 3, 4] {
        assert_eq!(
            c.node(id).conf().voters,
            [1, 3, 4].into_iter().collect(),
            "node {id}"
        );
    }
    c.crash(4);
    let i = c.propose(1, "after-changes");
    c.stabilize();
    assert!(
        c.node(1).log().committed >= i,
        "1 and 3 are a quorum of {{1, 3, 4}}"
    );
}

#[test]
fn conf_change_refused_until_the_leader_commits_in_its_term() {
    let mut c = Cluster::new(3, plain);
    c.node_mut(1).campaign_now();
    // Deliver only the votes: the leader's empty entry is not committed yet.
    c.deliver_where(|m| {
        matches!(
            m.body,
            MessageBody::Vote { .. } | MessageBody::VoteResp { .. }
        )
    });
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(
        c.node_mut(1).propose_conf_change(ConfChange::Remove(3)),
        Err(ProposeError::ConfChangePending)
    );
    c.stabilize();
    c.tick_all(1);
    assert!(c
        .node_mut(1)
        .propose_conf_change(ConfChange::Remove(3))
        .is_ok());
}

#[test]
fn leader_transfer_to_a_lagging_node() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.isolated.insert(3);
    for i in 0..10 {
        c.propose(1, &format!("e{i}"));
    }
    c.stabilize();
    let last = c.node(1).log().last_index();
    assert!(c.node(3).log().last_index() < last);
    c.isolated.clear();
    c.node_mut(1).transfer_leader(3).unwrap();
    assert_eq!(
        c.node_mut(1).propose(Bytes::from_static(b"x")),
        Err(ProposeError::TransferInProgress)
    );
    c.process(1);
    c.stabilize();
    assert_eq!(
        c.leader(),
        Some(3),
        "the lagging node was caught up and took over"
    );
    assert!(
        c.node(3).log().last_index() > last,
        "the new leader appended its own entry"
    );
    assert_eq!(c.node(3).log().term(last), c.node(1).log().term(last));
}

#[test]
fn read_index_waits_for_a_quorum_and_fails_over_a_partition() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.stabilize();
    c.node_mut(1).read_index(7).unwrap();
    c.process(1);
    // No heartbeat answers yet: no read state.
    assert!(c.reads.get(&1).is_none_or(|r| r.is_empty()));
    c.stabilize();
    let reads = c.reads.get_mut(&1).unwrap();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].ctx, 7);
    assert_eq!(reads[0].index, c.nodes[&1].log().committed);
    reads.clear();
    // A follower's read is confirmed by the leader too.
    c.node_mut(2).read_index(9).unwrap();
    c.stabilize();
    assert_eq!(
        c.reads[&2].iter().map(|r| r.ctx).collect::<Vec<_>>(),
        vec![9]
    );
    // An isolated leader never confirms a read.
    c.isolated.insert(1);
    c.node_mut(1).read_index(8).unwrap();
    c.stabilize();
    assert!(c.reads[&1].is_empty());
}

#[test]
fn no_vote_or_ack_leaves_before_it_is_durable() {
    let mut c = Cluster::new(3, plain);
    c.node_mut(1).campaign_now();
    c.process(1);
    let vote_req = c.queue.iter().find(|m| m.to == 2).cloned().unwrap();
    c.node_mut(2).step(vote_req);
    let rd = c.node_mut(2).ready();
    assert!(rd
        .messages
        .iter()
        .all(|m| !matches!(m.body, MessageBody::VoteResp { reject: false })));
    assert!(rd
        .persisted_messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::VoteResp { reject: false })));
    assert_eq!(rd.hard_state.map(|h| h.vote), Some(Some(1)));
    c.node_mut(2).advance(rd);
}

#[test]
fn a_restarted_follower_does_not_vote_away_a_leaders_lease() {
    let mut c = Cluster::new(3, |cfg| {
        cfg.read_mode = ReadMode::Lease {
            drift_margin_ticks: 2,
        }
    });
    c.tick_all(4 * c.cfg.election_timeout_ticks);
    let leader = c.leader().expect("a leader");
    let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&i| i != leader).collect();
    let (restarted, candidate) = (others[0], others[1]);
    // A follower crashes and comes back at once; the leader is then cut off
    // while it still holds its lease.
    c.crash(restarted);
    c.restart(restarted);
    c.isolated.insert(leader);
    c.node_mut(candidate).campaign_now();
    c.stabilize();
    assert_ne!(
        c.node(candidate).role(),
        Role::Leader,
        "a vote was given within a promised lease"
    );
    // Once an election timeout passes on the restarted node's clock, the
    // group moves on without the old leader.
    c.tick_all(4 * c.cfg.election_timeout_ticks);
    assert!(c.leader_among(&others).is_some());
}

#[test]
fn proposals_are_refused_with_a_reason() {
    let mut c = Cluster::new(3, |cfg| cfg.uncommitted_bytes_max = 100);
    c.elect(1);
    c.stabilize();
    assert_eq!(
        c.node_mut(2).propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { leader: Some(1) })
    );
    let huge = Bytes::from(vec![0u8; constants::ENTRY_BYTES_MAX + 1]);
    assert_eq!(
        c.node_mut(1).propose(huge),
        Err(ProposeError::TooLarge(constants::ENTRY_BYTES_MAX + 1))
    );
    // A leader that cannot commit stops taking proposals once 100 bytes wait.
    c.isolated.insert(1);
    let chunk = Bytes::from(vec![1u8; 60]);
    assert!(c.node_mut(1).propose(chunk.clone()).is_ok());
    assert_eq!(
        c.node_mut(1).propose(chunk.clone()),
        Err(ProposeError::Backpressure)
    );
    // Once it commits again, it takes them.
    c.isolated.clear();
    c.process(1);
    c.tick_all(2);
    assert!(c.node_mut(1).propose(chunk).is_ok());
}

/// A forged or damaged message cannot wedge the group: a term at the
/// ceiling, a term that jumps far ahead, a sender that is not a member, or a
/// message addressed elsewhere is refused (counted) and changes nothing; the
/// leader keeps leading and the group keeps committing.
#[test]
fn messages_out_of_bounds_are_refused_and_change_nothing() {
    let mut c = Cluster::new(3, plain);
    c.elect(1);
    c.stabilize();
    let term = c.node(1).term();
    let append = |from: NodeId, to: NodeId, term: Term| Message {
        from,
        to,
        term,
        body: MessageBody::Heartbeat {
            commit: 0,
            seq: 1,
            sent_tick: 0,
        },
    };
    let vote = |from: NodeId, to: NodeId, term: Term| Message {
        from,
        to,
        term,
        body: MessageBody::Vote {
            last_index: u64::MAX - 1,
            last_term: term,
            transfer: true,
        },
    };
    let forged = [
        // A member claiming the largest term (it could never be exceeded).
        (append(2, 1, u64::MAX), "ceiling"),
        (vote(2, 1, u64::MAX), "ceiling"),
        // A member's term far ahead of ours.
        (append(3, 1, term + (1 << 33)), "jump"),
        // A non-member with a newer term: deposing would be its whole aim.
        (append(99, 1, term + 1000), "member"),
        (vote(99, 2, term + 1), "member"),
        // Addressed to someone else.
        (append(2, 7, term + 1), "addressed"),
    ];
    for (i, (m, what)) in forged.into_iter().enumerate() {
        let to = m.to;
        let node = if to == 7 { 1 } else { to };
        let mut m = m;
        m.to = to; // as sent
        c.node_mut(node).step(m);
        c.process_all();
        let (refused, last) = c.node(node).refusals();
        assert!(refused >= 1, "{what}: not refused");
        assert!(last.is_some(), "{what}");
        assert_eq!(
            c.node(1).role(),
            Role::Leader,
            "forged message {i} ({what})"
        );
        assert_eq!(c.node(1).term(), term, "forged message {i} ({what})");
        assert_eq!(c.node(2).term(), term, "forged message {i} ({what})");
    }
    // Still committing in the same term.
    let idx = c.propose(1, "after");
    c.stabilize();
    assert!(c.node(1).log().committed >= idx);
    assert_eq!(c.node(1).term(), term);
}

/// A member's message one term ahead is still taken (the normal way terms
/// grow): the refusals above do not stop elections.
#[test]
fn a_members_newer_term_is_still_taken() {
    let mut c = Cluster::new(3, plain);
    c.elect(1);
    c.stabilize();
    let term = c.node(1).term();
    c.elect(2);
    c.stabilize();
    assert_eq!(c.leader(), Some(2));
    assert!(c.node(1).term() > term);
    assert_eq!(c.node(1).refusals().0, 0);
}

/// A follower restarts holding less than it acknowledged: its durable tail
/// was damaged past its acknowledged watermark and cut on open (or it keeps
/// no disk). Returns the cluster, the follower's last index after the loss
/// and the leader's match index for it before.
fn follower_loses_its_acknowledged_tail(bugs: InjectedBugs) -> (Cluster, Index, Index) {
    let mut c = Cluster::new(3, |cfg| cfg.bugs = bugs);
    c.elect(1);
    for i in 0..6 {
        c.propose(1, &format!("w{i}"));
        c.stabilize();
    }
    c.tick_all(2);
    let matched = c.node(1).progress(3).unwrap().match_index;
    assert_eq!(matched, c.node(3).log().last_index());
    c.crash(3);
    let storage = c.down.get_mut(&3).unwrap();
    let holds = matched - 3;
    storage.truncate_suffix(holds + 1).unwrap();
    let mut hs = storage.hard_state();
    hs.commit = hs.commit.min(holds);
    storage.set_hard_state(hs).unwrap();
    c.restart(3);
    (c, holds, matched)
}

#[test]
fn an_idle_leader_catches_up_a_follower_that_lost_acknowledged_entries() {
    let (mut c, holds, matched) = follower_loses_its_acknowledged_tail(InjectedBugs::default());
    assert_eq!(c.node(3).log().last_index(), holds);
    // No proposals: heartbeats alone must reveal the loss (the follower is
    // told a commit index past its log and says so).
    for _ in 0..3 {
        c.tick_all(c.cfg.heartbeat_interval_ticks);
        c.stabilize();
    }
    let leader_last = c.node(1).log().last_index();
    assert_eq!(leader_last, matched);
    assert_eq!(c.node(3).log().last_index(), leader_last, "caught up");
    assert_eq!(c.node(3).log().committed, c.node(1).log().committed);
    assert_eq!(c.node(1).progress(3).unwrap().match_index, leader_last);
    assert_eq!(c.node(1).lost_matches().0, 1, "found once");
    assert_eq!(c.applied_data(3), c.applied_data(1));
}

#[test]
fn a_busy_leader_catches_up_a_follower_that_lost_acknowledged_entries() {
    let (mut c, holds, matched) = follower_loses_its_acknowledged_tail(InjectedBugs::default());
    let i = c.propose(1, "after the loss");
    c.stabilize();
    assert!(i > matched && holds < matched);
    assert_eq!(c.node(3).log().last_index(), i, "caught up");
    assert_eq!(c.node(1).progress(3).unwrap().match_index, i);
    // Node 3 counts again: with 2 down, 1 and 3 commit on their own.
    c.crash(2);
    let j = c.propose(1, "without 2");
    c.stabilize();
    assert_eq!(c.node(1).log().committed, j);
}

#[test]
fn keeping_the_match_index_of_a_follower_that_lost_entries_leaves_it_behind() {
    // The planted bug shows what the two tests above guard against.
    let bugs = InjectedBugs {
        keep_lost_match: true,
        ..InjectedBugs::default()
    };
    let (mut c, holds, matched) = follower_loses_its_acknowledged_tail(bugs);
    c.propose(1, "after the loss");
    for _ in 0..5 {
        c.tick_all(c.cfg.heartbeat_interval_ticks);
        c.stabilize();
    }
    assert_eq!(c.node(3).log().last_index(), holds, "left behind");
    assert!(c.node(1).progress(3).unwrap().match_index >= matched);
}
