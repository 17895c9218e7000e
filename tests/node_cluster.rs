//! Three coordinator replicas with real disks over the in-memory transport:
//! a leader is elected, records commit and apply everywhere, a replica
//! restarted from its data directory catches up, and garbage from a peer
//! is dropped without harm.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ramcoord::cluster::{services, Op, Record};
use ramcoord::node::{CoordinatorNode, NodeConfig};
use ramcoord_log::Role;
use ramcoord_net::mem::{MemNetwork, MemTransport};
use ramcoord_net::Transport;

struct Dirs(PathBuf);
impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dirs: &Dirs, id: u64) -> NodeConfig {
    let mut c = NodeConfig::new(id, vec![1, 2, 3], dirs.0.join(format!("n{id}")));
    c.tick = Duration::from_millis(2);
    c.segment_bytes = 1 << 20;
    c
}

/// Steps every node until `done` holds (or fails after 10 s).
fn run_until(
    nodes: &mut [CoordinatorNode<MemTransport>],
    what: &str,
    done: impl Fn(&[CoordinatorNode<MemTransport>]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(nodes) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for n in nodes.iter_mut() {
            n.step(Instant::now() + Duration::from_millis(1)).unwrap();
        }
    }
}

fn leader(nodes: &[CoordinatorNode<MemTransport>]) -> Option<usize> {
    nodes.iter().position(|n| n.status().0 == Role::Leader)
}

fn enlist(nonce: u64) -> Record {
    Record::Commit(Op::EnlistServer {
        addr: format!("m{nonce}:1"),
        services: services::MASTER,
        nonce,
    })
}

#[test]
fn replicas_elect_commit_apply_and_catch_up_after_a_restart() {
    let dirs = Dirs(std::env::temp_dir().join(format!("ramcoord-node-{}", std::process::id())));
    let net = MemNetwork::new();
    let mut nodes: Vec<_> = (1..=3)
        .map(|id| CoordinatorNode::open(config(&dirs, id), net.join(id)).unwrap())
        .collect();
    run_until(&mut nodes, "a leader", |n| leader(n).is_some());
    let l = leader(&nodes).unwrap();
    nodes[l].propose(&enlist(1)).unwrap();
    run_until(&mut nodes, "the enlistment everywhere", |n| {
        n.iter().all(|x| x.cluster().up_masters().len() == 1)
    });

    // Replica 3 stops; the others go on; it restarts from its data dir.
    let stopped = nodes.pop().unwrap();
    drop(stopped);
    run_until(&mut nodes, "a leader of two", |n| leader(n).is_some());
    let l = leader(&nodes).unwrap();
    nodes[l].propose(&enlist(2)).unwrap();
    run_until(&mut nodes, "the second enlistment", |n| {
        n.iter().all(|x| x.cluster().up_masters().len() == 2)
    });
    let again = CoordinatorNode::open(config(&dirs, 3), net.join(3)).unwrap();
    // Opened from its disk: the state is its snapshot's (there is none
    // yet), not what the others did meanwhile; its log (one enlistment)
    // replays as it runs, and the second enlistment arrives from the
    // leader.
    assert_eq!(again.cluster().up_masters().len(), 0);
    assert_eq!(again.cluster().applied_index(), 0);
    nodes.push(again);
    run_until(&mut nodes, "the restarted replica to catch up", |n| {
        n[2].cluster().up_masters().len() == 2
            && n[2].status().2 >= n[0].status().2.min(n[1].status().2)
    });

    // Garbage from a peer is counted and dropped; the group keeps going.
    let stranger = net.join(9);
    for junk in [&b""[..], b"\x01", b"\x01\x01\x02\x03", b"\x07hello"] {
        for to in 1..=3 {
            stranger.send(to, Bytes::copy_from_slice(junk));
        }
    }
    let l = {
        run_until(&mut nodes, "a leader", |n| leader(n).is_some());
        leader(&nodes).unwrap()
    };
    nodes[l].propose(&enlist(3)).unwrap();
    run_until(&mut nodes, "the third enlistment", |n| {
        n.iter().all(|x| x.cluster().up_masters().len() == 3)
    });
    let rejected: u64 = nodes.iter().map(|n| n.rejected_messages()).sum();
    assert_eq!(rejected, 12);
}
