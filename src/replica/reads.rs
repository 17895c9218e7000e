//! Reads that wait for a read index: clients' linearizable lookups, and
//! masters' heartbeats, whose acknowledgement grants a lease.

use std::time::Duration;

use ramcoord_log::Storage;
use ramcoord_net::PeerId;

use super::Replica;
use crate::cluster::ServerId;
use crate::protocol::ClientReply;

/// What waits for a read index: a client's linearizable lookup
/// ([`ClientRequest::Lookup`]), or a batch of masters' heartbeats,
/// acknowledged (and their leases granted) only once the leader has
/// confirmed it still leads.
pub(super) struct Lookup {
    what: Awaiting,
    /// Answered only once the state has applied this index too: for
    /// heartbeats, the last crash this leader proposed before their read
    /// began (within its log), so that a crash of one of those masters
    /// already in the log (proposed, not yet applied) is seen, and no
    /// lease is granted past it.
    after: u64,
    /// The term it was asked in: the Raft core forgets pending reads when
    /// the term moves, so a lookup of an older term is never confirmed.
    term: u64,
}

/// What a read index is waited for.
pub(super) enum Awaiting {
    /// Whether this table exists.
    Table {
        from: PeerId,
        request: u64,
        table: String,
    },
    /// Heartbeats that arrived before this read began.
    Heartbeats(Vec<HeartbeatWaiter>),
}

/// A master waiting for its heartbeat's acknowledgement.
pub(super) struct HeartbeatWaiter {
    pub(super) from: PeerId,
    pub(super) request: u64,
    pub(super) server: ServerId,
}

/// Lookups one replica keeps waiting for their read index; past it a
/// lookup is answered `Retry`. Below the Raft core's own bound
/// (`PENDING_READS_MAX`, 4096), leaving room for the heartbeats' read.
const LOOKUPS_WAITING_MAX: usize = 4000;

/// Masters' heartbeats one replica keeps waiting (queued, or in the read
/// under way); past it a heartbeat is answered `Retry`. Apart from
/// lookups: a burst of lookups must not cost every master its lease.
pub(super) const HEARTBEATS_WAITING_MAX: usize = 16_384;

/// A heartbeats' read not confirmed by then is given up (the Raft core may
/// drop a read it cannot hold): its masters are told to retry and the
/// queued ones get a new read. Longer than a heartbeat round on any
/// healthy network, short against a lease.
const HEARTBEATS_READ_TIMEOUT: Duration = Duration::from_millis(250);

impl<S: Storage> Replica<S> {
    /// Answers the lookups whose read index this replica has applied.
    pub(super) fn answer_lookups(&mut self) {
        let applied = self.cluster.applied_index();
        let mut i = 0;
        while i < self.reads_confirmed.len() {
            let (index, tag) = self.reads_confirmed[i];
            let after = self.lookups.get(&tag).map_or(0, |l| l.after);
            if index.max(after) > applied {
                i += 1;
                continue;
            }
            self.reads_confirmed.swap_remove(i);
            let Some(l) = self.lookups.remove(&tag) else {
                continue;
            };
            match l.what {
                Awaiting::Table {
                    from,
                    request,
                    table,
                } => {
                    let reply = ClientReply::Lookup {
                        exists: self.cluster.table(&table).is_some(),
                        index: applied,
                    };
                    self.reply(from, request, &reply);
                }
                Awaiting::Heartbeats(waiters) => {
                    if self.heartbeats_read.is_some_and(|r| r.0 == tag) {
                        self.heartbeats_read = None;
                    }
                    for w in waiters {
                        let reply = self.heartbeat_ack(w.server);
                        self.reply(w.from, w.request, &reply);
                    }
                }
            }
        }
    }

    /// Starts a read index for the queued heartbeats, unless one is under
    /// way (they wait for it to end: one read at a time, however many
    /// masters). Their acknowledgements wait for the read and for the
    /// state to apply every crash this replica proposed before now.
    ///
    /// Why not the whole log as it is now: a lease must not outlive a
    /// crash already in the leader's log (its answer would say "up" while
    /// the recovery plan moves the master's tablets), but nothing else in
    /// the log beyond the read index changes the answer (only a
    /// `ServerCrashed` record makes an up master gone), and under a burst
    /// of proposals (10,000 masters enlisting) the log runs hundreds of
    /// entries ahead of the commit index: heartbeats that waited for all
    /// of it were answered a third of a second late, together, and over
    /// RDMA each master refused the leader's writes until then. Entries
    /// of earlier terms are below the read index (a leader's read waits
    /// for an entry of its own term to commit).
    pub(super) fn start_heartbeats_read(&mut self) {
        if let Some((tag, _, began)) = self.heartbeats_read {
            if self.now.duration_since(began) < HEARTBEATS_READ_TIMEOUT {
                return;
            }
            self.heartbeats_read = None;
            if let Some(Lookup {
                what: Awaiting::Heartbeats(waiters),
                ..
            }) = self.lookups.remove(&tag)
            {
                tracing::warn!(
                    masters = waiters.len(),
                    "a heartbeats' read was not confirmed in time; they retry"
                );
                let reply = ClientReply::Retry("no read index in time".into());
                for w in waiters {
                    self.reply(w.from, w.request, &reply);
                }
            }
        }
        if self.heartbeats_queued.is_empty() {
            return;
        }
        // One read a tick at most: a read costs a round of Raft messages to
        // every follower and back, and one begun as soon as the last ended
        // made the rounds a second follow the load instead of the clock.
        // A tick's wait is nothing to a lease of seconds.
        if self.heartbeats_read_tick == Some(self.ticks) {
            return;
        }
        self.heartbeats_read_tick = Some(self.ticks);
        let n = self.heartbeats_queued.len();
        // The next tick's queue starts at this one's size, not from empty
        // (growing it again, heartbeat by heartbeat, showed in profiles).
        let waiters = std::mem::replace(&mut self.heartbeats_queued, Vec::with_capacity(n));
        // Within the log: a crash proposed in an earlier leadership and
        // cut from the log since is not there to wait for (and its index
        // may not come again while the cluster is idle: no master would
        // get a lease). Entries of earlier terms are below the read index.
        let after = self.crash_proposed_index.min(self.raft.log().last_index());
        match self.await_read_index_after(Awaiting::Heartbeats(waiters), after) {
            Ok(tag) => self.heartbeats_read = Some((tag, n, self.now)),
            Err((Awaiting::Heartbeats(waiters), why)) => {
                let reply = ClientReply::Retry(why);
                for w in waiters {
                    self.reply(w.from, w.request, &reply);
                }
            }
            Err(_) => {}
        }
    }

    /// Asks the Raft core for a read index and keeps a client's lookup
    /// waiting for it (answered by [`Self::answer_lookups`]); the reply to
    /// send now if it cannot wait (`None`: it waits).
    pub(super) fn await_read_index(&mut self, what: Awaiting) -> Option<ClientReply> {
        let lookups = self.lookups.len() - usize::from(self.heartbeats_read.is_some());
        if lookups >= LOOKUPS_WAITING_MAX {
            return Some(ClientReply::Retry(format!(
                "{LOOKUPS_WAITING_MAX} lookups are waiting here; try again"
            )));
        }
        self.await_read_index_after(what, 0)
            .err()
            .map(|(_, why)| ClientReply::Retry(why))
    }

    /// Asks the Raft core for a read index for `what`, answered once it is
    /// confirmed and the state has applied `after`; its tag, or `what`
    /// back with the reply for its waiters.
    pub(super) fn await_read_index_after(
        &mut self,
        what: Awaiting,
        after: u64,
    ) -> Result<u64, (Awaiting, String)> {
        self.last_read_tag += 1;
        let tag = self.last_read_tag;
        match self.raft.read_index(tag) {
            Ok(()) => {
                let term = self.raft.term();
                self.lookups.insert(tag, Lookup { what, after, term });
                Ok(tag)
            }
            Err(e) => Err((what, format!("no read index: {e}"))),
        }
    }

    /// The answer to `server`'s heartbeat, with its lease (none if the
    /// server was declared crashed).
    pub(super) fn heartbeat_ack(&self, server: ServerId) -> ClientReply {
        let gone = self.cluster.is_gone(server);
        // Both from the applied state's slots (see `coordinator`'s
        // "Failure detection" on why that keeps every lease inside any
        // later timeout).
        let slots = self.cluster.server_slots();
        let c = &self.cfg.coordinator;
        let lease = crate::master::lease_for_timeout(c.master_timeout_for(slots), self.cfg.tick);
        let interval = self.cfg.tick * c.heartbeat_interval_for(slots).min(u32::MAX as u64) as u32;
        ClientReply::HeartbeatAck {
            gone,
            leader: Some(self.cfg.id),
            term: self.coord.term(),
            lease_us: if gone { 0 } else { lease.as_micros() as u64 },
            interval_us: interval.as_micros() as u64,
        }
    }

    /// A deposed leader's reads, or reads of an earlier term, are never
    /// confirmed: tells their clients where to go now.
    pub(super) fn drop_stale_reads(&mut self, established: bool) {
        let term = self.raft.term();
        if !self
            .lookups
            .values()
            .any(|l| !established || l.term != term)
        {
            return;
        }
        let not_leader = self.not_leader(self.raft.leader_id());
        let stale: Vec<u64> = self
            .lookups
            .iter()
            .filter(|(_, l)| !established || l.term != term)
            .map(|(tag, _)| *tag)
            .collect();
        for tag in stale {
            let Some(l) = self.lookups.remove(&tag) else {
                continue;
            };
            match l.what {
                Awaiting::Table { from, request, .. } => self.reply(from, request, &not_leader),
                Awaiting::Heartbeats(waiters) => {
                    if self.heartbeats_read.is_some_and(|r| r.0 == tag) {
                        self.heartbeats_read = None;
                    }
                    for w in waiters {
                        self.reply(w.from, w.request, &not_leader);
                    }
                }
            }
        }
        if self.lookups.is_empty() {
            self.reads_confirmed.clear();
        }
    }
}
