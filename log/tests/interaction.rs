//! Datadriven protocol tests: scripts in `tests/testdata/*.txt` drive a
//! small cluster command by command; the expected output (every message
//! delivered, then each node's state) is checked in. Regenerate with
//! `REWRITE=1 cargo test -p ramcoord-log --test interaction`, then read
//! the diff: the diff is the review.
//!
//! Commands:
//! - `cluster voters=N [plain]` a new cluster (plain: no pre-vote, no check-quorum)
//! - `campaign id=N`, `tick id=N n=K`, `tick-all n=K`
//! - `propose id=N data=S`, `transfer id=N to=M`, `read id=N ctx=C`
//! - `add-learner id=N node=M`, `add-voter id=N node=M`, `remove id=N node=M`
//! - `stabilize` deliver everything; `deliver from=A to=B` deliver one
//! - `isolate id=N`, `heal`, `crash id=N`, `restart id=N`, `status`

mod harness;

use bytes::Bytes;
use datadriven::{walk, TestCase};
use harness::{plain, Cluster};
use ramcoord_log::*;

fn status(c: &Cluster) -> String {
    let mut out = String::new();
    for (id, n) in &c.nodes {
        let log = n.log();
        let voters: Vec<String> = n.conf().voters.iter().map(|v| v.to_string()).collect();
        let learners: Vec<String> = n.conf().learners.iter().map(|v| v.to_string()).collect();
        out += &format!(
            "n{id}: {:?} term={} last={} commit={} applied={} voters=[{}]{}\n",
            n.role(),
            n.term(),
            log.last_index(),
            log.committed,
            log.applied,
            voters.join(" "),
            if learners.is_empty() {
                String::new()
            } else {
                format!(" learners=[{}]", learners.join(" "))
            }
        );
    }
    for id in c.down.keys() {
        out += &format!("n{id}: down\n");
    }
    out
}

fn arg<T: std::str::FromStr>(tc: &mut TestCase, name: &str) -> T
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    tc.take_arg(name)
        .unwrap_or_else(|e| panic!("{}: {e:?}", tc.directive))
}

fn run_command(c: &mut Option<Cluster>, tc: &mut TestCase) -> String {
    if tc.directive == "cluster" {
        let voters: u64 = arg(tc, "voters");
        let plain_raft = tc.take_flag("plain").unwrap();
        *c = Some(Cluster::new(voters, |cfg| {
            if plain_raft {
                plain(cfg)
            }
        }));
        return status(c.as_ref().unwrap());
    }
    let c = c.as_mut().expect("`cluster` first");
    c.delivered.clear();
    let mut out = String::new();
    match tc.directive.as_str() {
        "campaign" => {
            let id = arg(tc, "id");
            c.node_mut(id).campaign_now();
            c.process(id);
        }
        "tick" => {
            let (id, n) = (arg(tc, "id"), arg(tc, "n"));
            c.tick(id, n);
        }
        "tick-all" => {
            let n = arg(tc, "n");
            c.tick_all(n);
        }
        "propose" => {
            let id = arg(tc, "id");
            let data: String = arg(tc, "data");
            match c.node_mut(id).propose(Bytes::from(data)) {
                Ok(i) => out += &format!("proposed at index {i}\n"),
                Err(e) => out += &format!("refused: {e}\n"),
            }
            c.process(id);
        }
        "transfer" => {
            let (id, to) = (arg(tc, "id"), arg(tc, "to"));
            if let Err(e) = c.node_mut(id).transfer_leader(to) {
                out += &format!("refused: {e}\n");
            }
            c.process(id);
        }
        "read" => {
            let (id, ctx) = (arg(tc, "id"), arg(tc, "ctx"));
            if let Err(e) = c.node_mut(id).read_index(ctx) {
                out += &format!("refused: {e}\n");
            }
            c.process(id);
        }
        "add-learner" | "add-voter" | "remove" => {
            let (id, node) = (arg(tc, "id"), arg(tc, "node"));
            let cc = match tc.directive.as_str() {
                "add-learner" => ConfChange::AddLearner(node),
                "add-voter" => ConfChange::AddVoter(node),
                _ => ConfChange::Remove(node),
            };
            if !c.nodes.contains_key(&node) && !c.down.contains_key(&node) {
                c.add_node(node, ConfState::default());
            }
            match c.node_mut(id).propose_conf_change(cc) {
                Ok(i) => out += &format!("proposed at index {i}\n"),
                Err(e) => out += &format!("refused: {e}\n"),
            }
            c.process(id);
        }
        "stabilize" => {
            c.stabilize();
        }
        "deliver" => {
            let (from, to): (NodeId, NodeId) = (arg(tc, "from"), arg(tc, "to"));
            if !c.deliver_one(|m| m.from == from && m.to == to) {
                out += "no such message\n";
            }
        }
        "isolate" => {
            let id = arg(tc, "id");
            c.isolated.insert(id);
        }
        "heal" => c.isolated.clear(),
        "crash" => {
            let id = arg(tc, "id");
            c.crash(id);
        }
        "restart" => {
            let id = arg(tc, "id");
            c.restart(id);
        }
        "status" => {}
        other => panic!("unknown command {other}"),
    }
    tc.expect_empty().unwrap();
    for line in &c.delivered {
        out += line;
        out += "\n";
    }
    if let Some(reads) = c.reads.values_mut().find(|r| !r.is_empty()) {
        for r in reads.drain(..) {
            out += &format!("read ctx={} at index={}\n", r.ctx, r.index);
        }
    }
    out += &status(c);
    out
}

#[test]
fn interaction_scripts() {
    walk("tests/testdata", |f| {
        let mut cluster = None;
        f.run(|tc| run_command(&mut cluster, tc));
    });
}
