//! Linearizability checking (Wing & Gong's search with Lowe's memoisation).
//!
//! Every verdict of the simulator rests on this module, so it is small, stands
//! on its own (`ramcoord lincheck`), and is tested against 60 histories
//! recorded by Jepsen against etcd whose verdicts are published.
//!
//! # The history
//!
//! A [`History`] is a list of [`Operation`]s, each with the position of its
//! invocation and, if the client saw one, of its response. An operation whose
//! outcome is unknown (a timeout, Jepsen's `:info`) has no response: it may
//! take effect at any moment after its invocation, or never. Operations that
//! certainly had no effect (a failed compare-and-set) and reads that returned
//! nothing constrain nothing and are left out by the history's builder.
//!
//! # The search
//!
//! The history becomes a doubly linked list of call and return entries in
//! real-time order. The search walks the list from its head: at a call it
//! tries to *linearize* the operation (apply it to the model; the model says
//! whether the recorded output is possible), and if that yields a
//! configuration (set of linearized operations, model state) not seen before,
//! it removes the operation's call and return from the list and starts again
//! from the head. Reaching a return entry means the operation returned before
//! we could place it: backtrack. The history is linearizable when every
//! completed operation has been placed. Operations with unknown outcomes have
//! their returns at the very end, so reaching one means everything that had to
//! be placed was.
//!
//! The memo of configurations is what keeps this polynomial in practice: the
//! same set of placed operations leading to the same model state is explored
//! once. A search budget bounds pathological inputs; exceeding it is reported
//! as [`Verdict::Unknown`], never guessed.

pub mod jepsen;
pub mod register;

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification: the state an object starts in and what one
/// operation does to it.
pub trait Model {
    /// The object's state. Small and cheap to clone: the search memoises it.
    type State: Clone + Eq + Hash;
    /// What a client asked for.
    type Input;
    /// What the client was told.
    type Output;
    /// The state before any operation.
    fn init(&self) -> Self::State;
    /// The state after applying `input` to `state`, if the object could have
    /// answered `output` from `state`; `None` if that answer is impossible.
    /// `output == None` means the answer is unknown (the operation did take
    /// effect, its result was not seen).
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// One client operation in a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Position of the invocation in the history's total order of events.
    pub call: u64,
    /// Position of the response; `None` if the outcome is unknown.
    pub ret: Option<u64>,
    /// What was asked.
    pub input: I,
    /// What was answered; `None` if unknown.
    pub output: Option<O>,
    /// Who asked (for messages only).
    pub process: u64,
    /// Where the operation came from (a line number, a trace position), for
    /// messages only.
    pub origin: u64,
}

/// A set of operations to check.
pub type History<I, O> = Vec<Operation<I, O>>;

/// Why a history is not linearizable, as far as the search got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// How many operations were placed in the deepest partial linearization.
    pub placed_max: usize,
    /// Indices (into the history) of the completed operations whose response
    /// came before the search could place them, at that deepest point.
    pub unplaceable: Vec<usize>,
}

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations respects real time and the model.
    Linearizable,
    /// No such order exists.
    NotLinearizable(Failure),
    /// The search budget ran out before a verdict.
    Unknown,
}

impl Verdict {
    /// True for [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// The number of search steps after which [`check`] gives up with
/// [`Verdict::Unknown`]. Generous: the Jepsen histories need far fewer.
pub const SEARCH_STEPS_MAX: u64 = 50_000_000;

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
}

/// A fixed-size bit set of operation indices, hashed as words.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks `history` against `model`.
pub fn check<M: Model>(model: &M, history: &History<M::Input, M::Output>) -> Verdict {
    check_with_budget(model, history, SEARCH_STEPS_MAX)
}

/// [`check`] with an explicit search budget.
pub fn check_with_budget<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    steps_max: u64,
) -> Verdict {
    // Build the entry list: calls and known returns in event order; unknown
    // returns after everything (they may happen at the end of time).
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(history.len() * 2);
    for (i, op) in history.iter().enumerate() {
        events.push((op.call, 0, i));
        if let Some(r) = op.ret {
            assert!(r > op.call, "operation {i} returns before it is invoked");
            events.push((r, 1, i));
        }
    }
    events.sort_unstable();
    let mut entries: Vec<Entry> = events
        .iter()
        .map(|&(_, kind, op)| Entry {
            op,
            is_call: kind == 0,
        })
        .collect();
    for (i, op) in history.iter().enumerate() {
        if op.ret.is_none() {
            entries.push(Entry {
                op: i,
                is_call: false,
            });
        }
    }
    // Linked list over entries with a head sentinel at index n and an end
    // marker at n+1.
    let n = entries.len();
    let head = n;
    let end = n + 1;
    let mut next = vec![0usize; n + 2];
    let mut prev = vec![0usize; n + 2];
    for i in 0..n {
        next[i] = if i + 1 < n { i + 1 } else { end };
        prev[i] = if i == 0 { head } else { i - 1 };
    }
    next[head] = if n > 0 { 0 } else { end };
    prev[end] = if n > 0 { n - 1 } else { head };
    let mut return_of = vec![usize::MAX; history.len()];
    for (i, e) in entries.iter().enumerate() {
        if !e.is_call {
            return_of[e.op] = i;
        }
    }

    let mut placed = Bits::new(history.len());
    let mut memo: HashSet<(Bits, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut cur = next[head];
    let mut steps = 0u64;
    let mut best = Failure {
        placed_max: 0,
        unplaceable: Vec::new(),
    };

    loop {
        steps += 1;
        if steps > steps_max {
            return Verdict::Unknown;
        }
        if cur == end {
            return Verdict::Linearizable;
        }
        let e = entries[cur];
        let op = &history[e.op];
        if e.is_call {
            if let Some(new_state) = model.step(&state, &op.input, op.output.as_ref()) {
                placed.set(e.op);
                if memo.insert((placed.clone(), new_state.clone())) {
                    stack.push((cur, std::mem::replace(&mut state, new_state)));
                    // Lift the call and its return out of the list.
                    let r = return_of[e.op];
                    next[prev[cur]] = next[cur];
                    prev[next[cur]] = prev[cur];
                    next[prev[r]] = next[r];
                    prev[next[r]] = prev[r];
                    cur = next[head];
                    continue;
                }
                placed.clear(e.op);
            }
            cur = next[cur];
        } else {
            if op.ret.is_none() {
                // Only unknown-outcome returns are left ahead: every
                // completed operation has been placed.
                return Verdict::Linearizable;
            }
            if stack.len() > best.placed_max || best.unplaceable.is_empty() {
                best.placed_max = stack.len();
                best.unplaceable = vec![e.op];
            } else if stack.len() == best.placed_max && !best.unplaceable.contains(&e.op) {
                best.unplaceable.push(e.op);
            }
            let Some((c, s)) = stack.pop() else {
                best.unplaceable.sort_unstable();
                return Verdict::NotLinearizable(best);
            };
            state = s;
            let op_idx = entries[c].op;
            placed.clear(op_idx);
            // Put the return back, then the call (reverse order of lifting).
            let r = return_of[op_idx];
            next[prev[r]] = r;
            prev[next[r]] = r;
            next[prev[c]] = c;
            prev[next[c]] = c;
            cur = next[c];
        }
    }
}

/// The shortest prefix of the event sequence (by event position) whose
/// history is not linearizable, found by bisection: truncating a history
/// turns operations that had not returned into unknown-outcome ones, and a
/// non-linearizable prefix stays non-linearizable when extended. Returns the
/// event position at which the prefix ends, or `None` if the whole history
/// is linearizable (or undecided).
pub fn shortest_failing_prefix<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
) -> Option<u64>
where
    M::Input: Clone,
    M::Output: Clone,
{
    let mut positions: Vec<u64> = history
        .iter()
        .flat_map(|op| std::iter::once(op.call).chain(op.ret))
        .collect();
    positions.sort_unstable();
    positions.dedup();
    let fails = |end: u64| -> bool {
        let prefix: History<M::Input, M::Output> = history
            .iter()
            .filter(|op| op.call <= end)
            .map(|op| {
                let mut op = op.clone();
                if op.ret.is_some_and(|r| r > end) {
                    op.ret = None;
                    op.output = None;
                }
                op
            })
            .collect();
        matches!(check(model, &prefix), Verdict::NotLinearizable(_))
    };
    let last = *positions.last()?;
    if !fails(last) {
        return None;
    }
    let (mut lo, mut hi) = (0usize, positions.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(positions[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(positions[lo])
}
