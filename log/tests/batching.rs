//! Batched replication, message by message: one append per follower per
//! ready however many proposals it carries, one acknowledgement per leader
//! per ready, no commit-only appends, and a leader that commits (and hands
//! out the entry to apply) before its own write is durable.

mod harness;

use bytes::Bytes;
use harness::Cluster;
use ramcoord_log::*;

fn appends_from(c: &Cluster, from: NodeId, to: NodeId) -> Vec<usize> {
    c.queue
        .iter()
        .filter(|m| m.from == from && m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::Append { entries, .. } => Some(entries.len()),
            _ => None,
        })
        .collect()
}

fn elected_three() -> Cluster {
    let mut c = Cluster::new(3, |cfg| cfg.append_entries_max = 64);
    c.elect(1);
    c.stabilize();
    c
}

#[test]
fn proposals_between_two_readies_go_to_each_follower_in_one_append() {
    let mut c = elected_three();
    for i in 0..10 {
        c.node_mut(1)
            .propose(Bytes::from(format!("op{i}")))
            .unwrap();
    }
    c.process(1);
    for follower in [2, 3] {
        assert_eq!(
            appends_from(&c, 1, follower),
            vec![10],
            "follower {follower}: one append with the ten entries"
        );
    }
}

#[test]
fn a_follower_acknowledges_the_appends_of_one_ready_once_with_the_highest_index() {
    let mut c = elected_three();
    // Two appends reach follower 2 before it runs its ready loop.
    c.propose(1, "a");
    c.propose(1, "b");
    let to_2: Vec<Message> = c
        .queue
        .iter()
        .filter(|m| m.to == 2 && matches!(m.body, MessageBody::Append { .. }))
        .cloned()
        .collect();
    assert_eq!(to_2.len(), 2, "one append per ready of the leader");
    c.queue.retain(|m| m.to != 2);
    for m in to_2 {
        c.node_mut(2).step(m);
    }
    c.process(2);
    let acks: Vec<Index> = c
        .queue
        .iter()
        .filter(|m| m.from == 2 && m.to == 1)
        .filter_map(|m| match m.body {
            MessageBody::AppendResp {
                reject: false,
                index,
                ..
            } => Some(index),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![c.node(1).log().last_index()]);
}

#[test]
fn a_new_commit_index_rides_on_the_next_message_instead_of_its_own_append() {
    let mut c = elected_three();
    let index = c.propose(1, "x");
    let before = c.delivered.len();
    c.stabilize();
    assert_eq!(c.node(1).log().committed, index, "the leader committed");
    let after: Vec<&String> = c.delivered[before..].iter().collect();
    // Two appends out with the entry, two acknowledgements back: nothing
    // else (no commit-only append, so no acknowledgement of one).
    assert_eq!(after.len(), 4, "{after:#?}");
    assert!(
        c.node(2).log().committed < index,
        "followers learn it later"
    );
    // The next heartbeat carries it.
    let heartbeat = c.cfg.heartbeat_interval_ticks;
    c.tick(1, heartbeat);
    c.stabilize();
    for f in [2, 3] {
        assert_eq!(c.node(f).log().committed, index, "follower {f}");
    }
}

#[test]
fn a_leader_commits_and_applies_before_its_own_write_is_durable() {
    let mut c = elected_three();
    let leader = c.node_mut(1);
    let index = leader.propose(Bytes::from_static(b"fast")).unwrap();
    // The leader's ready: its write is not made durable yet.
    let mut first = leader.ready();
    assert!(first.entries.iter().any(|e| e.index == index));
    let appends = std::mem::take(&mut first.messages);
    // The followers persist and acknowledge.
    for m in appends {
        let to = m.to;
        c.node_mut(to).step(m);
        c.process(to);
    }
    let acks: Vec<Message> = c.queue.drain(..).filter(|m| m.to == 1).collect();
    assert_eq!(acks.len(), 2);
    for m in acks {
        c.node_mut(1).step(m);
    }
    let leader = c.node_mut(1);
    assert_eq!(leader.log().committed, index, "committed by the followers");
    assert!(leader.has_ready());
    let second = leader.ready();
    assert!(
        second.committed_entries.iter().any(|e| e.index == index),
        "handed out for applying while the first write is still in flight"
    );
    // Then the first write completes; readies are advanced in order.
    let s = leader.storage_mut();
    s.append(&first.entries).unwrap();
    if let Some(hs) = first.hard_state {
        s.set_hard_state(hs).unwrap();
    }
    leader.advance(first);
    let s = leader.storage_mut();
    s.append(&second.entries).unwrap();
    if let Some(hs) = second.hard_state {
        s.set_hard_state(hs).unwrap();
    }
    leader.advance(second);
    c.stabilize();
    assert_eq!(c.node(1).log().committed, index);
}
