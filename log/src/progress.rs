//! What a leader knows about each follower's log, and the flow control of
//! appends to it.
//!
//! A follower is in one of three states (as in etcd-io/raft's tracker):
//! - **Probe**: the leader does not know where the logs match; it sends one
//!   append at a time and waits for the answer (or a heartbeat answer).
//! - **Replicate**: the logs match up to `match_index`; the leader streams
//!   appends optimistically, up to `inflight_max` unacknowledged at once.
//! - **Snapshot**: the follower needs entries the leader compacted; the leader
//!   streams a snapshot in chunks and appends nothing until it is installed.

use std::collections::VecDeque;

use crate::types::Index;

/// The replication state of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding the match point, one append at a time.
    Probe,
    /// Streaming appends.
    Replicate,
    /// Streaming a snapshot.
    Snapshot {
        /// Index of the snapshot being sent.
        index: Index,
        /// Bytes of it sent and acknowledged.
        acked_offset: u64,
        /// Bytes of it sent (a window of chunks ahead of `acked_offset`).
        sent_offset: u64,
        /// A chunk was retransmitted (a heartbeat answer) since the last
        /// answer taken: the next answer is taken even if it goes back
        /// (the follower lost what it had assembled).
        rewind_ok: bool,
    },
}

/// A leader's view of one follower.
///
/// Invariant: `match_index < next_index`.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be durable and matching on the follower.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    /// Flow-control state.
    pub state: ProgressState,
    /// In Probe: an append is out and unanswered.
    pub probe_sent: bool,
    /// Last index of each append in flight (Replicate), oldest first.
    pub inflights: VecDeque<Index>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The leader tick of the latest heartbeat this follower answered.
    pub acked_tick: u64,
    /// The leader tick at which the oldest append in flight was sent or the
    /// latest acknowledgement arrived, whichever is later: appends that stay
    /// unanswered long past it were lost, and the leader probes again.
    pub last_progress_tick: u64,
    /// The highest commit index sent to this follower.
    pub sent_commit: Index,
}

impl Progress {
    pub(crate) fn new(next_index: Index) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: VecDeque::new(),
            recent_active: false,
            acked_tick: 0,
            last_progress_tick: 0,
            sent_commit: 0,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        if let ProgressState::Snapshot { index, .. } = self.state {
            self.next_index = (self.match_index + 1).max(index + 1);
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.clear();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.clear();
    }

    pub(crate) fn become_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot {
            index,
            acked_offset: 0,
            sent_offset: 0,
            rewind_ok: false,
        };
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// True if appends are in flight and nothing was acknowledged for
    /// `timeout_ticks`: they (or their answers) were lost.
    pub fn is_stalled(&self, now_tick: u64, timeout_ticks: u64) -> bool {
        self.state == ProgressState::Replicate
            && !self.inflights.is_empty()
            && now_tick.saturating_sub(self.last_progress_tick) >= timeout_ticks
    }

    /// True if no append may be sent now.
    pub fn is_paused(&self, inflight_max: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.len() >= inflight_max,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records a successful append up to `index`. Returns false if it
    /// tells us nothing new (a stale or duplicated answer).
    pub(crate) fn maybe_update(&mut self, index: Index, now_tick: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
            self.last_progress_tick = now_tick;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflights.front().is_some_and(|&i| i <= index) {
            self.inflights.pop_front();
        }
        updated
    }

    /// Records a rejection of an append at `rejected` (its prev index);
    /// `next` is where the leader should try next. Returns false if the
    /// rejection is stale.
    pub(crate) fn maybe_decr_to(&mut self, rejected: Index, next: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false; // stale: we already know the logs match here
            }
            self.next_index = (self.match_index + 1).max(next.min(rejected));
            self.become_probe_keep_next();
            return true;
        }
        if self.next_index == 0 || self.next_index - 1 != rejected || rejected <= self.match_index {
            // Not the probe we have outstanding (a duplicate, or a follower
            // denying what it acknowledged): answering it again would let
            // duplicated rejections multiply our probes.
            return false;
        }
        self.next_index = (self.match_index + 1).max(next.min(rejected));
        self.probe_sent = false;
        true
    }

    pub(crate) fn become_probe_keep_next(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// Records an append of entries up to `last` being sent.
    pub(crate) fn sent_entries(&mut self, last: Index, had_entries: bool, now_tick: u64) {
        match self.state {
            ProgressState::Replicate => {
                if had_entries {
                    if self.inflights.is_empty() {
                        self.last_progress_tick = now_tick;
                    }
                    self.next_index = last + 1;
                    self.inflights.push_back(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {
                unreachable!("appends are not sent during a snapshot")
            }
        }
    }
}
