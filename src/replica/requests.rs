//! The client protocol at a replica: who may ask what, and how each
//! request is answered, proposed or made to wait.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ramcoord_log::{ConfChange, NodeId, ProposeError, Storage};
use ramcoord_net::tls::PeerClass;
use ramcoord_net::PeerId;

use super::reads::{Awaiting, HeartbeatWaiter, HEARTBEATS_WAITING_MAX};
use super::{Output, Replica};
use crate::cluster::{Effect, Record, RpcId, RpcStatus};
use crate::protocol::{self as client, master_client_id, ClientReply, ClientRequest, OpResult};

/// A client class in words, for refusals.
fn describe(class: PeerClass) -> &'static str {
    match class {
        PeerClass::Replica(_) => "you are a replica",
        PeerClass::Master => "you are a master",
        PeerClass::Admin => "you are an admin",
        PeerClass::Reader => "you are a reader",
    }
}

/// A client waiting for an entry's commit point.
pub(super) struct Waiter {
    pub(super) from: PeerId,
    pub(super) request: u64,
    pub(super) data: Bytes,
    pub(super) received: Instant,
    /// Answer again when the operation completes.
    pub(super) until_complete: bool,
    /// The client operation proposed, if it is one.
    pub(super) rpc: Option<RpcId>,
}

impl<S: Storage> Replica<S> {
    /// Whether `from` (its class proven by its certificate under TLS) may
    /// make `req`: readers look, admins also change the cluster, masters
    /// enlist and heartbeat for themselves. The error names the role that
    /// is missing.
    pub(super) fn authorize(&self, from: PeerId, req: &ClientRequest) -> Result<(), String> {
        let class = PeerClass::of(from);
        let admin = matches!(class, PeerClass::Admin);
        let master = matches!(class, PeerClass::Master);
        let need = |role: &str| Err(format!("this needs the {role} role ({})", describe(class)));
        match req {
            ClientRequest::Status
            | ClientRequest::Watch { .. }
            | ClientRequest::View
            | ClientRequest::Lookup { .. }
            | ClientRequest::OpState { .. } => Ok(()),
            ClientRequest::Noop | ClientRequest::ChangeReplicas(_) | ClientRequest::Backup
                if admin =>
            {
                Ok(())
            }
            ClientRequest::Noop | ClientRequest::ChangeReplicas(_) | ClientRequest::Backup => {
                need("admin")
            }
            ClientRequest::Operate(op) | ClientRequest::OperateUntilComplete(op) => match &op.op {
                crate::coordinator::Request::Enlist { nonce, .. } if master => {
                    if master_client_id(*nonce) == from {
                        Ok(())
                    } else {
                        Err("a master enlists under its own connection's id".into())
                    }
                }
                crate::coordinator::Request::Enlist { .. } => need("master"),
                _ if admin => Ok(()),
                _ => need("admin"),
            },
            // Only the active coordinator's state decides whether a server
            // is in the list: a follower that has not applied the
            // enlistment yet would refuse a master that is up, which then
            // loses its next heartbeat too; a follower sends it to the
            // leader instead (`answer`).
            ClientRequest::Leave { .. } | ClientRequest::Heartbeat { .. }
                if master && !self.coord.is_active() =>
            {
                Ok(())
            }
            ClientRequest::Leave { server } if master => match self.cluster.server(*server) {
                Some(s) if master_client_id(s.nonce) == from => Ok(()),
                Some(_) => Err(format!(
                    "server {server} was enlisted by another master process"
                )),
                None => Err(format!("server {server} is not in the server list")),
            },
            ClientRequest::Leave { .. } => need("master"),
            ClientRequest::Heartbeat { from: server } if master => {
                // Only the process that enlisted the server keeps it up;
                // a server never enlisted has nothing to keep up (and
                // must not grow the leader's tables).
                match self.cluster.server(*server) {
                    Some(s) if master_client_id(s.nonce) != from => Err(format!(
                        "server {server} was enlisted by another master process"
                    )),
                    Some(_) => Ok(()),
                    // Its slot holds a later server: it was declared
                    // crashed and removed. The answer tells it so (it must
                    // stop, not heartbeat for ever); that is all it gets.
                    None if self.cluster.is_gone(*server) => Ok(()),
                    None => Err(format!("server {server} is not in the server list")),
                }
            }
            ClientRequest::Heartbeat { .. } => need("master"),
        }
    }

    /// Logs a refusal for a missing role, at most once a second.
    pub(super) fn log_role_refusal(&mut self, from: PeerId, why: &str) {
        let now = self.now;
        if self
            .role_refusal_logged
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        self.role_refusal_logged = Some(now);
        tracing::warn!(
            from,
            refused = self.refused_by_role,
            reason = why,
            "request refused by role"
        );
    }

    /// `NotLeader`, with the leader's id and address as far as known.
    pub(super) fn not_leader(&self, leader: Option<NodeId>) -> ClientReply {
        ClientReply::NotLeader {
            leader,
            addr: leader.and_then(|l| self.cfg.peer_addrs.get(&l).cloned()),
        }
    }

    /// Why a membership change cannot be proposed, checked against the
    /// leader's configuration (the Raft core checks the rest).
    fn check_replica_change(&self, change: &client::ReplicaChange) -> Result<(), String> {
        let conf = self.raft.conf();
        let members = || {
            format!(
                "the configuration has voters {} and learners {}",
                ramcoord_log::ids_text(&conf.voters),
                ramcoord_log::ids_text(&conf.learners)
            )
        };
        match change {
            client::ReplicaChange::Remove(id)
                if !conf.voters.contains(id) && !conf.learners.contains(id) =>
            {
                Err(format!("replica {id} is not in the group: {}", members()))
            }
            client::ReplicaChange::AddVoter(id) if conf.voters.contains(id) => {
                Err(format!("replica {id} is a voter already: {}", members()))
            }
            client::ReplicaChange::AddVoter(id)
                if !conf.learners.contains(id) && !self.cfg.peer_addrs.contains_key(id) =>
            {
                Err(format!(
                    "replica {id} is neither a learner nor a replica whose address is known ({}): add it with `ctl add-replica {id} --address HOST:PORT`",
                    members()
                ))
            }
            client::ReplicaChange::AddLearner { id, .. } if conf.voters.contains(id) => {
                Err(format!("replica {id} is a voter already: {}", members()))
            }
            client::ReplicaChange::AddLearner { id, addr: None }
                if !conf.learners.contains(id) && !self.cfg.peer_addrs.contains_key(id) =>
            {
                Err(format!(
                    "no address is known for replica {id} (it is not in this leader's --peers): give it with `ctl add-replica {id} --address HOST:PORT`"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The answer to a client operation already applied: its original
    /// seq and result (and, for `until_complete`, its completion, now or
    /// when it comes).
    pub(super) fn answer_applied(
        &mut self,
        from: PeerId,
        request: u64,
        seq: u64,
        result: &Result<Effect, crate::cluster::Rejection>,
        until_complete: bool,
        received: Instant,
    ) {
        let term = self.raft.log().term(seq).unwrap_or(self.raft.term());
        let reply = ClientReply::Committed {
            seq,
            term,
            result: OpResult::of(result),
            commit_us: self.now.duration_since(received).as_micros() as u64,
        };
        self.reply(from, request, &reply);
        let completes = result.is_ok();
        if !(until_complete && completes) {
            return;
        }
        if self.cluster.incomplete().contains_key(&seq) {
            self.completion_waiters.insert(
                seq,
                Waiter {
                    from,
                    request,
                    data: Bytes::new(),
                    received,
                    until_complete: true,
                    rpc: None,
                },
            );
        } else {
            let reply = ClientReply::Completed {
                seq,
                complete_us: self.now.duration_since(received).as_micros() as u64,
            };
            self.reply(from, request, &reply);
        }
    }

    pub(super) fn answer(&mut self, from: PeerId, request: u64, req: ClientRequest) {
        let not_leader = self.not_leader(self.raft.leader_id());
        let reply = match req {
            ClientRequest::Status => ClientReply::Status(self.status_report()),
            ClientRequest::OpState { seq } => ClientReply::OpState {
                seq,
                incomplete: self.cluster.incomplete().contains_key(&seq),
                applied: self.cluster.applied_index(),
            },
            ClientRequest::Watch { after, wait_ms } => {
                self.watch(from, request, after, wait_ms);
                return;
            }
            ClientRequest::View
            | ClientRequest::Backup
            | ClientRequest::Leave { .. }
            | ClientRequest::Lookup { .. }
            | ClientRequest::Heartbeat { .. }
            | ClientRequest::Operate(_)
            | ClientRequest::OperateUntilComplete(_)
            | ClientRequest::Noop
            | ClientRequest::ChangeReplicas(_)
                if !self.coord.is_active() =>
            {
                not_leader
            }
            ClientRequest::Leave { server } => {
                if self.coord.on_leave(server, &self.cluster) {
                    tracing::info!(%server, "master leaving (drain): declaring it crashed now so its tablets move");
                    ClientReply::Leaving {
                        accepted: true,
                        why: None,
                    }
                } else {
                    let why = if !self.cluster.is_up(server) {
                        format!("server {server} is not up")
                    } else {
                        format!("no other master is up to take server {server}'s tablets")
                    };
                    ClientReply::Leaving {
                        accepted: false,
                        why: Some(why),
                    }
                }
            }
            ClientRequest::Backup => {
                let index = self.cluster.applied_index();
                let state = self.cluster.snapshot();
                // It must fit in one reply frame (with room for the
                // envelope).
                let room = ramcoord_net::frame::FRAME_BODY_BYTES_MAX - 4096;
                if state.len() > room {
                    ClientReply::Refused(format!(
                        "the cluster state is {} bytes, more than one reply carries ({room}); \
                         back up a replica's data directory instead (its snapshot file)",
                        state.len()
                    ))
                } else {
                    ClientReply::Backup {
                        index,
                        term: self.raft.log().term(index).unwrap_or(0),
                        current_term: self.raft.term(),
                        version: self.cluster.version(),
                        state,
                    }
                }
            }
            ClientRequest::View => {
                let mut view = self.view();
                // A master's nonce is its transport id: whoever holds the
                // shared master credential could claim it. Only replicas
                // see them.
                if !matches!(PeerClass::of(from), PeerClass::Replica(_)) {
                    for s in &mut view.servers {
                        s.nonce = 0;
                    }
                }
                ClientReply::View(view)
            }
            ClientRequest::Lookup { table } => {
                if let Err(e) = crate::cluster::limits::check_table_name(&table) {
                    ClientReply::Refused(e.to_string())
                } else {
                    // Answered once the leader has confirmed it still leads
                    // (a heartbeat round) and applied up to the commit index
                    // of that moment: never from a deposed leader's state.
                    let what = Awaiting::Table {
                        from,
                        request,
                        table,
                    };
                    match self.await_read_index(what) {
                        None => return,
                        Some(reply) => reply,
                    }
                }
            }
            ClientRequest::Heartbeat { from: server } => {
                self.coord.on_heartbeat(server);
                self.on_master_heartbeat(server);
                if self.cluster.is_gone(server) {
                    tracing::info!(%server, "heartbeat from a server declared crashed: told to stop");
                    self.heartbeat_ack(server)
                } else {
                    // The lease it grants is safe only if this replica
                    // still leads after the heartbeat arrived, and knows
                    // of every crash of that master already in its log
                    // (see `master`): acknowledged after the next read
                    // index that begins, and after applying every crash
                    // proposed here before then
                    // ([`Self::start_heartbeats_read`]).
                    let in_read = self.heartbeats_read.map_or(0, |r| r.1);
                    if self.heartbeats_queued.len() + in_read >= HEARTBEATS_WAITING_MAX {
                        ClientReply::Retry(format!(
                            "{HEARTBEATS_WAITING_MAX} heartbeats are waiting here; try again"
                        ))
                    } else {
                        self.heartbeats_queued.push(HeartbeatWaiter {
                            from,
                            request,
                            server,
                        });
                        self.start_heartbeats_read();
                        return;
                    }
                }
            }
            ClientRequest::ChangeReplicas(change) => {
                if let Err(why) = self.check_replica_change(&change) {
                    tracing::info!(change = %change, why, "membership change refused");
                    self.reply(from, request, &ClientReply::Refused(why));
                    return;
                }
                let cc = match change {
                    client::ReplicaChange::Remove(id) => ConfChange::Remove(id),
                    client::ReplicaChange::AddLearner { id, addr } => {
                        // ctl resolves host names before sending: the
                        // replica's thread does no DNS lookups.
                        match addr
                            .as_deref()
                            .map(|a| (a, a.parse::<std::net::SocketAddr>()))
                        {
                            Some((_, Ok(a))) => {
                                self.out.push_back(Output::AddPeer { peer: id, addr: a });
                                self.cfg.peer_addrs.insert(id, a.to_string());
                            }
                            Some((a, Err(e))) => {
                                let why = format!(
                                    "replica {id}'s address {a:?} is not IP:PORT ({e}); resolve host names before sending"
                                );
                                self.reply(from, request, &ClientReply::Refused(why));
                                return;
                            }
                            None => {}
                        }
                        ConfChange::AddLearner(id)
                    }
                    client::ReplicaChange::AddVoter(id) => ConfChange::AddVoter(id),
                };
                match self.raft.propose_conf_change(cc) {
                    Ok(index) => {
                        tracing::info!(change = %cc, index, "membership change proposed");
                        self.add_waiter(
                            index,
                            Waiter {
                                from,
                                request,
                                data: cc.encode(),
                                received: self.now,
                                until_complete: false,
                                rpc: None,
                            },
                        );
                        return;
                    }
                    Err(e) => self.propose_error(e),
                }
            }
            ClientRequest::Noop => {
                self.propose_for(from, request, Record::Noop, false, None);
                return;
            }
            ClientRequest::Operate(ref cop) | ClientRequest::OperateUntilComplete(ref cop) => {
                let until_complete = matches!(req, ClientRequest::OperateUntilComplete(_));
                let rpc = cop.rpc;
                // Planted bug (simulator): the exactly-once table is not
                // asked, nor the proposals in flight.
                let forget = self.cfg.coordinator_bugs.forget_clients;
                let status = if forget {
                    RpcStatus::New
                } else {
                    self.cluster.rpc_status(&rpc)
                };
                match status {
                    RpcStatus::Applied(s) => {
                        let (seq, result) = (s.index, s.result.clone());
                        tracing::info!(%rpc, seq, "a retried operation was applied already: answered with its outcome");
                        let received = self.now;
                        self.retries_answered_applied += 1;
                        self.answer_applied(from, request, seq, &result, until_complete, received);
                        return;
                    }
                    RpcStatus::Unknown(why) => {
                        tracing::info!(%rpc, %why, "a retried operation's outcome is unknown");
                        ClientReply::Unknown(format!("operation {rpc}: {why}"))
                    }
                    RpcStatus::New => {
                        // Proposed here and not applied yet: the retry
                        // waits for that proposal.
                        let pending = self
                            .rpc_inflight
                            .get(&rpc.key())
                            .copied()
                            .filter(|_| !forget);
                        if let Some(w) = pending
                            .and_then(|i| self.waiters.get_mut(&i))
                            .filter(|w| w.rpc.map(|r| r.key()) == Some(rpc.key()))
                        {
                            tracing::info!(%rpc, index = pending.unwrap_or_default(), "a retried operation waits for its proposal");
                            w.from = from;
                            w.request = request;
                            w.until_complete |= until_complete;
                            return;
                        }
                        match self.coord.prepare_client(&self.cluster, &cop.op, rpc) {
                            Err(e) => ClientReply::Refused(e.to_string()),
                            Ok(record) => {
                                self.propose_for(from, request, record, until_complete, Some(rpc));
                                return;
                            }
                        }
                    }
                }
            }
        };
        self.reply(from, request, &reply);
    }

    /// What a refused proposal tells the client.
    fn propose_error(&self, e: ProposeError) -> ClientReply {
        match e {
            ProposeError::NotLeader { leader } => self.not_leader(leader),
            ProposeError::TransferInProgress
            | ProposeError::Backpressure
            | ProposeError::ConfChangePending => ClientReply::Retry(e.to_string()),
            e => ClientReply::Refused(e.to_string()),
        }
    }

    /// Registers a client waiting for the entry at `index`; one still
    /// registered there (its proposal was lost) is told to retry.
    fn add_waiter(&mut self, index: u64, w: Waiter) {
        if let Some(rpc) = w.rpc {
            self.rpc_inflight.insert(rpc.key(), index);
        }
        if let Some(old) = self.waiters.insert(index, w) {
            self.lost_waiter(old);
        }
    }

    /// Tells a waiter whose proposal was lost to retry.
    pub(super) fn lost_waiter(&mut self, w: Waiter) {
        if let Some(rpc) = w.rpc {
            self.rpc_inflight.remove(&rpc.key());
        }
        self.reply(
            w.from,
            w.request,
            &ClientReply::Retry(
                "the proposal was lost in a change of leader: not committed; send it again".into(),
            ),
        );
    }

    /// Proposes `record` for a client, who is answered at its commit point
    /// (and at its completion too, if `until_complete`).
    fn propose_for(
        &mut self,
        from: PeerId,
        request: u64,
        record: Record,
        until_complete: bool,
        rpc: Option<RpcId>,
    ) {
        let received = self.now;
        let data = match record.encode() {
            Ok(data) => data,
            Err(e) => {
                let reply = ClientReply::Refused(format!("cannot propose: {e}"));
                self.reply(from, request, &reply);
                return;
            }
        };
        let proposed = self.raft.propose(data.clone());
        if let Ok(index) = proposed {
            self.note_proposed(index, &record);
        }
        let reply = match proposed {
            Ok(index)
                if self.cfg.bugs.ack_before_commit
                    && matches!(PeerClass::of(from), PeerClass::Admin) =>
            {
                // The planted bug: an admin's operation "committed" before
                // its commit point (masters' enlistments are left alone).
                ClientReply::Committed {
                    seq: index,
                    term: self.raft.term(),
                    result: OpResult::of(&Ok(Effect::Changed)),
                    commit_us: self.now.duration_since(received).as_micros() as u64,
                }
            }
            Ok(index) => {
                self.proposed_at.insert(index, received);
                self.add_waiter(
                    index,
                    Waiter {
                        from,
                        request,
                        data,
                        received,
                        until_complete,
                        rpc,
                    },
                );
                return;
            }
            Err(e) => self.propose_error(e),
        };
        self.reply(from, request, &reply);
    }
}
