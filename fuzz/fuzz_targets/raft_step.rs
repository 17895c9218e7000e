//! Decoded Raft messages stepped into a replica: `decode_message`, then
//! `RawNode::step` and the node's ready loop (persist to `MemStorage`,
//! restore the cluster state from an installed snapshot, apply committed
//! entries to a `ClusterState`), as `ramcoord::node` does with what its
//! peers send. `ramcoord_log::wire` promises that what it accepts cannot
//! make the Raft core trip an assertion; this target holds it to that.
//!
//! The replica is node 1 of voters {1, 2, 3}. The input's first byte picks
//! its starting role (follower; candidate; leader of term 2 with one
//! entry proposed); the rest is a list of chunks (`ramcoord_fuzz::chunks`):
//! an empty chunk is a tick, any other is a message body as it arrives
//! after the node's tag byte. Messages not addressed to node 1 are
//! dropped, as the node drops them.
//!
//! Checks: no panic anywhere in the core, the storage or the state
//! machine; the state machine's invariants hold after each entry applied.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ramcoord::cluster::ClusterState;
use ramcoord_fuzz::chunks;
use ramcoord_log::wire::decode_message;
use ramcoord_log::{
    ConfState, Config, EntryKind, MemStorage, Message, MessageBody, RawNode, Role, Storage,
};

struct Replica {
    raft: RawNode<MemStorage>,
    cluster: ClusterState,
}

impl Replica {
    fn new() -> Replica {
        let storage = MemStorage::bootstrap(&ConfState::with_voters([1, 2, 3]));
        let mut cfg = Config::new(1);
        cfg.seed = 7;
        Replica {
            raft: RawNode::new(cfg, storage).expect("a valid configuration"),
            cluster: ClusterState::default(),
        }
    }

    /// The node's ready loop; `false` where the node would stop (a storage
    /// error, a snapshot that does not restore).
    fn drive(&mut self) -> bool {
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            let storage = self.raft.storage_mut();
            if let Some(snap) = &rd.snapshot {
                if storage.apply_snapshot(snap.clone()).is_err() {
                    return false;
                }
                match ClusterState::restore(&snap.data) {
                    Ok(c) => self.cluster = c,
                    Err(_) => return false,
                }
            }
            if storage.append(&rd.entries).is_err() {
                return false;
            }
            if let Some(hs) = rd.hard_state {
                if storage.set_hard_state(hs).is_err() {
                    return false;
                }
            }
            for e in std::mem::take(&mut rd.committed_entries) {
                if e.index <= self.cluster.applied_index() {
                    continue;
                }
                let data: &[u8] = if e.kind == EntryKind::Normal {
                    &e.data
                } else {
                    &[]
                };
                let outcome = self.cluster.apply(e.index, data);
                if let Err(err) = self.cluster.check() {
                    panic!("invariant broken by entry {} ({outcome:?}): {err}", e.index);
                }
            }
            self.raft.advance(rd);
        }
        true
    }

    fn step(&mut self, m: Message) -> bool {
        self.raft.step(m);
        self.drive()
    }
}

fn grant(from: u64, term: u64, pre: bool) -> Message {
    let body = if pre {
        MessageBody::PreVoteResp { reject: false }
    } else {
        MessageBody::VoteResp { reject: false }
    };
    Message {
        from,
        to: 1,
        term,
        body,
    }
}

/// Node 1 as a candidate (or, with `win`, the leader) of the next term.
fn campaign(r: &mut Replica, win: bool) -> bool {
    r.raft.campaign_now();
    if !r.drive() {
        return false;
    }
    if r.raft.role() == Role::PreCandidate {
        let term = r.raft.term() + 1;
        if !r.step(grant(2, term, true)) {
            return false;
        }
    }
    if win && r.raft.role() == Role::Candidate {
        let term = r.raft.term();
        if !r.step(grant(2, term, false)) {
            return false;
        }
    }
    if win && r.raft.role() == Role::Leader {
        let _ = r.raft.propose(Bytes::from_static(b"\xc0\x01\x02"));
        return r.drive();
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut r = Replica::new();
    if !r.drive() {
        return;
    }
    let ok = match mode % 3 {
        0 => true,
        1 => campaign(&mut r, false),
        _ => campaign(&mut r, true),
    };
    if !ok {
        return;
    }
    for chunk in chunks(rest).into_iter().take(64) {
        if chunk.is_empty() {
            r.raft.tick();
            if !r.drive() {
                return;
            }
            continue;
        }
        let Ok(m) = decode_message(Bytes::copy_from_slice(chunk)) else {
            continue;
        };
        if m.to != 1 {
            continue;
        }
        if !r.step(m) {
            return;
        }
    }
});
