//! Blocking clients of a coordinator group and of masters, over the frame
//! protocol (`ramcoord_net::frame`): what `ramcoord ctl`, the master
//! process, the demo and the tests use.
//!
//! A client is not a member of the cluster: it opens a connection, says
//! `Hello` with an id of its own (see [`client_peer_id`]), and is answered
//! on that connection (the transport answers peers it has no address for
//! on the connection they opened). The replica's `Hello` answer tells the
//! client which replica id is at which address, so a leader hint (a
//! replica id) can be followed.
//!
//! [`CoordinatorClient::ask_leader`] finds the active coordinator: it asks
//! the replica believed to lead, follows `NotLeader` hints (the leader's
//! id and, when the follower knows it, its address, which joins the
//! client's list), and tries the next address when a replica is down or
//! has no hint, until its deadline.
//!
//! Operations are exactly-once ([`crate::protocol`]): each carries the
//! client's random id and a sequence number ([`CoordinatorClient::next_rpc`]),
//! and [`CoordinatorClient::operate`] sends it again, same id, whenever an
//! attempt ends without an answer (a timeout, a lost connection, a
//! proposal lost in a change of leader), until its deadline. The
//! coordinator applies it at most once and answers a retry with the
//! original outcome. Only if the deadline passes after the operation was
//! sent is its outcome unknown ([`ClientError::NoAnswer`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ramcoord_net::frame::{Frame, FrameDecoder};
use ramcoord_net::link::{Link, LinkError};
use ramcoord_net::tls::{Identity, Tls, ADMIN_BIT, CLIENT_BIT};
use ramcoord_net::PeerId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::coordinator::Request;
use crate::protocol::tag;
use crate::protocol::{decode, encode, ClientOp, ClientReply, ClientRequest, RpcId};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Could not connect, or the connection failed.
    #[error("{addr}: {why}")]
    Io {
        /// Where.
        addr: SocketAddr,
        /// What happened.
        why: String,
    },
    /// The request was sent and no answer came in time.
    #[error("{addr}: no answer within the timeout")]
    Timeout {
        /// Where.
        addr: SocketAddr,
    },
    /// The peer answered something that is not a valid reply.
    #[error("{addr}: bad reply: {why}")]
    BadReply {
        /// Where.
        addr: SocketAddr,
        /// What is wrong.
        why: String,
    },
    /// No replica acted as the active coordinator before the deadline
    /// (the request was never sent, or had no effect where it was).
    #[error("no active coordinator found before the deadline (last: {last})")]
    NoLeader {
        /// The last thing that went wrong.
        last: String,
    },
    /// The request was sent (perhaps more than once, with the same
    /// exactly-once id) and no answer came before the deadline: it may or
    /// may not have been applied.
    #[error(
        "no answer before the deadline (last: {last}): the request was sent, so it may or may not have been applied"
    )]
    NoAnswer {
        /// The last thing that went wrong.
        last: String,
    },
}

/// A client id nobody else uses: bit 62 set (coordinator replicas use
/// small ids, masters bit 63), bit 61 for an admin (with TLS the transport
/// checks both against the client's certificate), then random bits.
pub fn client_peer_id(admin: bool) -> PeerId {
    let low: u64 = rand::random::<u64>() & (ADMIN_BIT - 1);
    CLIENT_BIT | if admin { ADMIN_BIT } else { 0 } | low
}

/// How a client connects: its TLS credential (`None`: plain TCP, for a
/// cluster run with `--insecure`) and the role it asks for.
#[derive(Clone, Debug)]
pub struct ClientSecurity {
    /// The credential presented to every server.
    pub tls: Option<Tls>,
    /// Act as an admin (else a reader). With TLS, the credential decides.
    pub admin: bool,
}

impl ClientSecurity {
    /// Plain TCP, as an admin (a cluster run with `--insecure`).
    pub fn insecure() -> ClientSecurity {
        ClientSecurity {
            tls: None,
            admin: true,
        }
    }

    /// Over TLS with `tls`, in the role its certificate names.
    pub fn with(tls: Tls) -> ClientSecurity {
        let admin = tls.identity() == Identity::Admin;
        ClientSecurity {
            tls: Some(tls),
            admin,
        }
    }

    fn peer_id(&self) -> PeerId {
        client_peer_id(self.admin)
    }
}

/// What a client connects to (with TLS, checked against the server's
/// certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// A coordinator replica.
    Replica,
    /// A master.
    Master,
}

/// One connection speaking the frame protocol as a client.
pub struct Conn {
    addr: SocketAddr,
    stream: Link,
    dec: FrameDecoder,
    peer: PeerId,
    /// Read buffer, reused.
    buf: Vec<u8>,
}

impl Conn {
    /// Connects, says hello as `me` in `cluster`, and reads the answering
    /// hello (the peer's id).
    pub fn connect(
        addr: SocketAddr,
        cluster: u64,
        me: PeerId,
        timeout: Duration,
        tls: Option<&Tls>,
        server: ServerKind,
    ) -> Result<Conn, ClientError> {
        let io = |e: std::io::Error| ClientError::Io {
            addr,
            why: e.to_string(),
        };
        let stream = Link::connect(addr, tls, timeout).map_err(|e| match e {
            LinkError::Io(e) => io(e),
            other => ClientError::Io {
                addr,
                why: format!(
                    "{other} (is the cluster run with these credentials, or with --insecure?)"
                ),
            },
        })?;
        stream
            .write_all(&Frame::Hello { peer: me, cluster }.to_bytes())
            .map_err(io)?;
        let mut c = Conn {
            addr,
            stream,
            dec: FrameDecoder::new(),
            peer: 0,
            buf: vec![0u8; 16 << 10],
        };
        match c.read_frame(Instant::now() + timeout)? {
            Frame::Hello { peer, .. } => c.peer = peer,
            other => {
                return Err(ClientError::BadReply {
                    addr,
                    why: format!("expected hello, got {}", other.kind_name()),
                })
            }
        }
        // With TLS, the server is who it says, and what we meant to reach.
        if let Some(identity) = c.stream.identity() {
            let fits = identity.admits(c.peer)
                && match server {
                    ServerKind::Replica => matches!(identity, Identity::Replica(_)),
                    ServerKind::Master => identity == Identity::Master,
                };
            if !fits {
                return Err(ClientError::BadReply {
                    addr,
                    why: format!(
                        "the server presented a {identity} certificate and claims id {}; \
                         expected a {}",
                        c.peer,
                        match server {
                            ServerKind::Replica => "coordinator replica",
                            ServerKind::Master => "master",
                        }
                    ),
                });
            }
        }
        Ok(c)
    }

    /// The peer's id (from its hello).
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn read_frame(&mut self, deadline: Instant) -> Result<Frame, ClientError> {
        let addr = self.addr;
        let buf = &mut self.buf;
        loop {
            match self.dec.next_frame() {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => {
                    return Err(ClientError::BadReply {
                        addr,
                        why: e.to_string(),
                    })
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout { addr });
            }
            let _ = self.stream.socket().set_read_timeout(Some(left));
            match self.stream.read(buf) {
                Ok(0) => {
                    return Err(ClientError::Io {
                        addr,
                        why: "connection closed (wrong --cluster, a credential the server \
                              refused, or the process stopped)"
                            .into(),
                    })
                }
                Ok(n) => self.dec.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ClientError::Timeout { addr })
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ClientError::Io {
                        addr,
                        why: e.to_string(),
                    })
                }
            }
        }
    }

    /// Sends request `id` tagged `tag` and waits for the reply tagged
    /// `reply_tag` with the same id (older replies are skipped).
    pub fn call<Q: Serialize, R: DeserializeOwned>(
        &mut self,
        tag: u8,
        reply_tag: u8,
        id: u64,
        req: &Q,
        deadline: Instant,
    ) -> Result<R, ClientError> {
        let addr = self.addr;
        let mut out = BytesMut::new();
        Frame::Message(encode(tag, id, req)).encode(&mut out);
        self.stream.write_all(&out).map_err(|e| ClientError::Io {
            addr,
            why: e.to_string(),
        })?;
        self.recv(reply_tag, id, deadline)
    }

    /// Waits for a (further) reply tagged `reply_tag` to request `id`.
    pub fn recv<R: DeserializeOwned>(
        &mut self,
        reply_tag: u8,
        id: u64,
        deadline: Instant,
    ) -> Result<R, ClientError> {
        let addr = self.addr;
        loop {
            let Frame::Message(p) = self.read_frame(deadline)? else {
                continue;
            };
            if p.first() != Some(&reply_tag) {
                continue;
            }
            let env = decode::<R>(&p[1..]).map_err(|why| ClientError::BadReply {
                addr,
                why: why.to_string(),
            })?;
            if env.id == id {
                return Ok(env.body);
            }
        }
    }
}

/// A client of a coordinator group (see the module docs).
pub struct CoordinatorClient {
    addrs: Vec<SocketAddr>,
    cluster: u64,
    me: PeerId,
    security: ClientSecurity,
    conns: Vec<Option<Conn>>,
    /// Per connection: it has answered something.
    answered: Vec<bool>,
    /// The last attempt timed out on a connection that had answered
    /// before: a replica alive but slow to answer (see
    /// [`CoordinatorClient::last_failure_was_slow`]).
    slow: bool,
    /// Replica id -> index in `addrs`, learnt from hellos.
    ids: BTreeMap<u64, usize>,
    /// The index believed to lead.
    leader: Option<usize>,
    /// Where the next leaderless attempt goes.
    next: usize,
    next_request: u64,
    /// How long one attempt (connect, or wait for an answer) may take.
    pub attempt_timeout: Duration,
    /// This client's id for exactly-once operations (random).
    client_id: u64,
    /// The sequence number of its last operation.
    last_seq: u64,
    /// The highest committed index seen in an answer.
    observed: u64,
    /// Whether a replica was asked for its commit index already.
    asked_commit: bool,
}

impl CoordinatorClient {
    /// A client of the replicas at `addrs` (any subset of the group).
    pub fn new(
        addrs: Vec<SocketAddr>,
        cluster: u64,
        security: ClientSecurity,
    ) -> CoordinatorClient {
        CoordinatorClient {
            conns: addrs.iter().map(|_| None).collect(),
            answered: addrs.iter().map(|_| false).collect(),
            slow: false,
            addrs,
            cluster,
            me: security.peer_id(),
            security,
            ids: BTreeMap::new(),
            leader: None,
            next: 0,
            next_request: 0,
            attempt_timeout: Duration::from_secs(1),
            client_id: rand::random(),
            last_seq: 0,
            observed: 0,
            asked_commit: false,
        }
    }

    /// Speaks as transport id `me` from now on (a master enlists and
    /// heartbeats under its own id); drops open connections.
    pub fn set_peer_id(&mut self, me: PeerId) {
        self.me = me;
        for c in &mut self.conns {
            *c = None;
        }
    }

    /// The replicas' addresses: those given, then those learnt.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The index of `addr` in the address list, which it joins if new.
    pub fn learn_addr(&mut self, addr: SocketAddr) -> usize {
        if let Some(i) = self.addrs.iter().position(|a| *a == addr) {
            return i;
        }
        self.addrs.push(addr);
        self.conns.push(None);
        self.answered.push(false);
        self.addrs.len() - 1
    }

    /// This client's id for exactly-once operations.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The id for a new operation: the next sequence number, and the
    /// highest committed index this client has seen (before its first
    /// operation it asks a replica, within `deadline`, for its commit
    /// index). Every attempt of the operation must carry the same id.
    pub fn next_rpc(&mut self, deadline: Instant) -> RpcId {
        if !self.asked_commit {
            self.asked_commit = true;
            let until = deadline.min(Instant::now() + self.attempt_timeout);
            let _ = self.ask_leader(&ClientRequest::Status, until);
        }
        self.last_seq += 1;
        RpcId {
            client: self.client_id,
            seq: self.last_seq,
            after: self.observed,
        }
    }

    /// Notes the committed index an answer shows.
    fn observe(&mut self, reply: &ClientReply) {
        let seen = match reply {
            ClientReply::Status(s) => s.commit,
            ClientReply::View(v) => v.applied,
            ClientReply::Committed { seq, .. } => *seq,
            ClientReply::OpState { applied, .. } => *applied,
            _ => 0,
        };
        self.observed = self.observed.max(seen);
    }

    /// Whether the last attempt failed on a connection that had answered
    /// before (a replica alive but not answering in time: overloaded,
    /// most likely), as opposed to one that could not be reached or
    /// never answered (down, or cut off). A master backs off the first
    /// kind only (`master::process::heartbeat_attempt`).
    pub fn last_failure_was_slow(&self) -> bool {
        self.slow
    }

    /// The address of replica `id`, once a hello told it.
    pub fn addr_of(&self, id: u64) -> Option<SocketAddr> {
        self.ids.get(&id).map(|&i| self.addrs[i])
    }

    fn conn(&mut self, i: usize) -> Result<&mut Conn, ClientError> {
        if self.conns[i].is_none() {
            let c = Conn::connect(
                self.addrs[i],
                self.cluster,
                self.me,
                self.attempt_timeout,
                self.security.tls.as_ref(),
                ServerKind::Replica,
            )?;
            self.ids.insert(c.peer(), i);
            self.conns[i] = Some(c);
        }
        Ok(self.conns[i].as_mut().expect("just connected"))
    }

    /// Asks the replica at index `i` of the address list.
    pub fn ask(&mut self, i: usize, req: &ClientRequest) -> Result<ClientReply, ClientError> {
        self.ask_once(i, req, None).0
    }

    /// Asks the replica at index `i`, waiting at most `attempt_timeout`
    /// and never past `until`; also says whether the request was (or may
    /// have been) sent.
    fn ask_once(
        &mut self,
        i: usize,
        req: &ClientRequest,
        until: Option<Instant>,
    ) -> (Result<ClientReply, ClientError>, bool) {
        self.next_request += 1;
        let id = self.next_request;
        let attempt_end = Instant::now() + self.attempt_timeout;
        let deadline = until.map_or(attempt_end, |u| attempt_end.min(u));
        let conn = match self.conn(i) {
            Ok(c) => c,
            Err(e) => {
                self.conns[i] = None;
                self.answered[i] = false;
                self.slow = false;
                return (Err(e), false);
            }
        };
        let r = conn.call(tag::CLIENT, tag::CLIENT_REPLY, id, req, deadline);
        match &r {
            Ok(reply) => {
                self.answered[i] = true;
                self.slow = false;
                self.observe(reply)
            }
            // A connection with a late reply on it, or a dead one: start over.
            Err(_) => {
                self.slow = self.answered[i];
                self.conns[i] = None;
                self.answered[i] = false;
            }
        }
        (r, true)
    }

    /// Follows a `NotLeader` answer from replica `i`: to the leader's
    /// index if its id or address is known (a new address joins the
    /// list), else on to the next replica.
    fn follow(&mut self, i: usize, leader: Option<u64>, addr: Option<&str>) {
        let known = leader.and_then(|l| self.ids.get(&l).copied());
        let hinted = known.or_else(|| {
            let a = crate::addr::resolve(addr?).ok()?;
            Some(self.learn_addr(a))
        });
        match hinted {
            Some(h) if h != i => self.leader = Some(h),
            _ => {
                // No usable hint: an election may be running, or the
                // leader is not yet active.
                self.leader = None;
                self.next = i + 1;
                if leader.is_none() || hinted == Some(i) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Asks the active coordinator, finding it (see the module docs), until
    /// `deadline`. Returns the first answer that is neither `NotLeader` nor
    /// `Retry`. A request that went out and got no answer is sent again
    /// to the next leader (operations carry their exactly-once id, so this
    /// is safe; other requests change nothing), except a membership
    /// change: its outcome is then unknown ([`ClientError::NoAnswer`]).
    pub fn ask_leader(
        &mut self,
        req: &ClientRequest,
        deadline: Instant,
    ) -> Result<ClientReply, ClientError> {
        let resend = !matches!(req, ClientRequest::ChangeReplicas(_));
        let mut last = String::from("no replica tried");
        let mut sent = false;
        while Instant::now() < deadline {
            let i = self.leader.unwrap_or(self.next % self.addrs.len());
            let (r, went_out) = self.ask_once(i, req, Some(deadline));
            match r {
                Ok(ClientReply::NotLeader { leader, addr }) => {
                    last = format!(
                        "{} is not the active coordinator (leader: {} at {})",
                        self.addrs[i],
                        leader.map_or("unknown".to_string(), |l| format!("replica {l}")),
                        addr.as_deref().unwrap_or("an unknown address")
                    );
                    self.follow(i, leader, addr.as_deref());
                }
                Ok(ClientReply::Retry(why)) => {
                    // No effect there: send it again (to whoever leads).
                    last = format!("{}: {why}", self.addrs[i]);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(reply) => {
                    if !matches!(reply, ClientReply::Status(_)) {
                        self.leader = Some(i);
                    }
                    return Ok(reply);
                }
                Err(e) => {
                    sent |= went_out;
                    last = e.to_string();
                    if went_out && !resend {
                        return Err(ClientError::NoAnswer { last });
                    }
                    self.leader = None;
                    self.next = i + 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let operation = matches!(
            req,
            ClientRequest::Operate(_)
                | ClientRequest::OperateUntilComplete(_)
                | ClientRequest::ChangeReplicas(_)
        );
        if sent && operation {
            Err(ClientError::NoAnswer { last })
        } else {
            Err(ClientError::NoLeader { last })
        }
    }

    /// Runs operation `op` with id `rpc` ([`CoordinatorClient::next_rpc`])
    /// at the active coordinator, sending it again (same id) until an
    /// answer comes or `deadline` passes; returns the answer at its commit
    /// point (`Committed`: for a retry of an operation applied already,
    /// the original seq and result), or `Refused` / `Unknown`.
    pub fn operate(
        &mut self,
        rpc: RpcId,
        op: Request,
        until_complete: bool,
        deadline: Instant,
    ) -> Result<ClientReply, ClientError> {
        let cop = ClientOp { rpc, op };
        let req = if until_complete {
            ClientRequest::OperateUntilComplete(cop)
        } else {
            ClientRequest::Operate(cop)
        };
        self.ask_leader(&req, deadline)
    }
}

impl CoordinatorClient {
    /// Runs an operation at the active coordinator and waits for both of
    /// its answers: the commit point and the completion. Returns each with
    /// the time it took from sending (the second is `None` if the operation
    /// was refused or rejected, which has no completion).
    #[allow(clippy::type_complexity)]
    pub fn operate_until_complete(
        &mut self,
        req: crate::coordinator::Request,
        deadline: Instant,
    ) -> Result<(ClientReply, Duration, Option<(ClientReply, Duration)>), ClientError> {
        let rpc = self.next_rpc(deadline);
        let sent = Instant::now();
        let mut at_commit = None;
        loop {
            let first = self.operate(rpc, req.clone(), true, deadline)?;
            let at = *at_commit.get_or_insert(sent.elapsed());
            let completes = matches!(
                &first,
                ClientReply::Committed { result, .. }
                    if !matches!(result, crate::protocol::OpResult::Rejected(_))
            );
            if !completes {
                return Ok((first, at, None));
            }
            let i = self.leader.expect("just answered");
            let id = self.next_request;
            let conn = self.conns[i].as_mut().expect("just answered");
            match conn.recv::<ClientReply>(tag::CLIENT_REPLY, id, deadline) {
                Ok(second) => return Ok((first, at, Some((second, sent.elapsed())))),
                Err(e) => {
                    // Ask again, same id: answered with the original
                    // outcome, then the completion.
                    self.conns[i] = None;
                    self.answered[i] = false;
                    self.leader = None;
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// A client of masters: one connection per master address, reused.
pub struct MasterClient {
    cluster: u64,
    me: PeerId,
    security: ClientSecurity,
    conns: BTreeMap<SocketAddr, Conn>,
    next_request: u64,
    /// How long one request may take.
    pub attempt_timeout: Duration,
}

impl MasterClient {
    /// A client of the masters of cluster `cluster`.
    pub fn new(cluster: u64, security: ClientSecurity) -> MasterClient {
        MasterClient {
            cluster,
            me: security.peer_id(),
            security,
            conns: BTreeMap::new(),
            next_request: 0,
            attempt_timeout: Duration::from_secs(1),
        }
    }

    /// Sends `req` to the master at `addr`.
    pub fn ask(
        &mut self,
        addr: SocketAddr,
        req: &crate::protocol::MasterRequest,
    ) -> Result<crate::protocol::MasterReply, ClientError> {
        self.next_request += 1;
        let id = self.next_request;
        if !self.conns.contains_key(&addr) {
            let c = Conn::connect(
                addr,
                self.cluster,
                self.me,
                self.attempt_timeout,
                self.security.tls.as_ref(),
                ServerKind::Master,
            )?;
            self.conns.insert(addr, c);
        }
        let deadline = Instant::now() + self.attempt_timeout;
        let c = self.conns.get_mut(&addr).expect("just connected");
        let r = c.call(tag::MASTER, tag::MASTER_REPLY, id, req, deadline);
        if r.is_err() {
            self.conns.remove(&addr);
        }
        r
    }
}
