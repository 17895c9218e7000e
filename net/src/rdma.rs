//! RDMA verbs for the transport (feature `rdma`): reliable-connected queue
//! pairs set up with `rdma_cm`, two-sided messages (SEND/RECV), one-sided
//! writes (RDMA WRITE) into a peer's registered region, and revocation of a
//! writer (its queue pair moved to the error state).
//!
//! This is the first layer of the RDMA transport: one connection,
//! [`RECV_SLOTS`] receives kept posted, and two sets of calls:
//!
//! - **blocking** ones (`send`, `recv*`, `write*`), for handshakes, tests
//!   and benchmarks: a call polls its completion queue briefly, then arms
//!   it and sleeps on the completion channel (`rdma_get_send_comp` /
//!   `rdma_get_recv_comp`), so two processes on a 2-core machine do not
//!   starve each other (or soft-RoCE's kernel threads) by busy polling;
//! - **non-blocking** ones for an event loop that owns many connections
//!   ([`RdmaConn::set_nonblocking`], then `start_writes`, `start_send`,
//!   `poll_send`, `try_recv_any`, `arm` and `take_cq_events`, waiting on
//!   [`RdmaConn::wake_fds`]): the transport's loop
//!   (`crate::rdma_transport`).
//!
//! # Who owns which bytes
//!
//! Everything a NIC touches is a `NicMemory`: a raw allocation reached
//! only through raw pointers, never a Rust slice the compiler may assume
//! nobody else changes.
//!
//! - A [`RegionMemory`] is heap memory with a fixed address for its whole
//!   life; it is registered (remote write allowed) on every connection
//!   that may write it, and the registration's address and rkey go to the
//!   writer in the accept's private data. The NIC writes it with no CPU on
//!   this side; the owner reads it with volatile copies and must check what
//!   it read (the configuration region carries a checksum: a torn read is
//!   never acted on).
//! - Each connection owns a send buffer, receive slots and a staging
//!   buffer, registered locally; a message is copied into the send buffer,
//!   a one-sided write (or a batch of them, [`RdmaConn::write_runs`]) into
//!   the staging buffer, each reused once its completions have been reaped
//!   (one post in flight per connection).
//!
//! # Fencing
//!
//! [`RdmaConn::revoke`] moves the connection's queue pair to the error
//! state: every later (or queued) RDMA WRITE from that peer fails at the
//! peer with a completion error and never reaches the memory. A master
//! does this to the old leader's connection before accepting a newer
//! leader's writes, as Mu does.

use std::ffi::{CStr, CString};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::null_mut;
use std::sync::Arc;

use rdma_sys::*;

/// Largest message: the size of a connection's send buffer and of each
/// receive slot.
pub const MESSAGE_BYTES_MAX: usize = 64 << 10;
/// Receives kept posted per connection: a SEND that finds none posted is
/// refused (receiver not ready) and retried after a timer, which costs far
/// more than the memory.
pub const RECV_SLOTS: usize = 16;
/// How long a receive ([`RdmaConn::recv_or_closed`]) or a send-side
/// completion polls before it sleeps: long enough to catch a reply already
/// on its way on real hardware, short enough not to take a core from the
/// peer on a small machine.
pub const RECV_SPIN: std::time::Duration = std::time::Duration::from_micros(20);
/// Work requests one [`RdmaConn::write_runs`] may post (runs plus the
/// tail write), and the send queue's depth.
pub const SEND_WRS_MAX: usize = 4;
/// Largest private data a caller may send on connect: `rdma_cm` carries
/// 56 bytes on a connect request (RDMA_PS_TCP), padded with zeros, so one
/// goes to a length prefix.
pub const PRIVATE_DATA_BYTES_MAX: usize = 55;

/// Private data as sent: a length byte, then the bytes.
fn framed_private(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(bytes.len() as u8);
    v.extend_from_slice(bytes);
    v
}

/// The bytes of received private data (the padding dropped); empty if it
/// does not check out.
fn unframed_private(raw: &[u8]) -> Vec<u8> {
    match raw.split_first() {
        Some((&n, rest)) if (n as usize) <= rest.len() => rest[..n as usize].to_vec(),
        _ => Vec::new(),
    }
}

/// Devices as a list for people (`none` if empty).
fn device_list(found: &[String]) -> String {
    if found.is_empty() {
        "none".into()
    } else {
        found.join(", ")
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    /// No RDMA device: the transport cannot run here.
    #[error("no RDMA device (ibv_get_device_list found {}); load a driver (e.g. rdma_rxe: `rdma link add rxe0 type rxe netdev eth0`) or use --transport tcp", device_list(.found))]
    NoDevice {
        /// Devices found (empty).
        found: Vec<String>,
    },
    /// A verbs or rdma_cm call failed.
    #[error("{call}: {err}")]
    Call {
        /// The call.
        call: &'static str,
        /// errno.
        err: std::io::Error,
    },
    /// A work request completed with an error.
    #[error("{what} completed with status {status} ({name})")]
    Completion {
        /// The operation.
        what: &'static str,
        /// `ibv_wc_status`.
        status: u32,
        /// Its name.
        name: String,
    },
    /// The peer closed the connection (or its host dropped it).
    #[error("the peer closed the connection")]
    PeerClosed,
    /// Too large for a buffer or for private data.
    #[error("{what} of {len} bytes exceeds {max}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

fn call(name: &'static str, ret: i32) -> Result<(), RdmaError> {
    if ret == 0 {
        Ok(())
    } else {
        Err(RdmaError::Call {
            call: name,
            err: std::io::Error::last_os_error(),
        })
    }
}

/// The names of the RDMA devices present.
pub fn devices() -> Vec<String> {
    let mut n = 0i32;
    // SAFETY: ibv_get_device_list returns a NULL-terminated array (or
    // NULL) that we read `n` entries of and free with
    // ibv_free_device_list; each name is a NUL-terminated string owned by
    // the device, copied before the list is freed.
    unsafe {
        let list = ibv_get_device_list(&mut n);
        if list.is_null() {
            return Vec::new();
        }
        let names = (0..n as usize)
            .map(|i| {
                let d = *list.add(i);
                CStr::from_ptr(ibv_get_device_name(d))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        ibv_free_device_list(list);
        names
    }
}

/// Fails with the device list unless there is at least one device.
pub fn require_device() -> Result<Vec<String>, RdmaError> {
    let found = devices();
    if found.is_empty() {
        return Err(RdmaError::NoDevice { found });
    }
    Ok(found)
}

/// Memory a NIC reads or writes behind the compiler's back (registered
/// buffers and regions): a raw, zeroed, page-aligned allocation whose
/// contents are reached only through raw pointers (copies in and out),
/// never through a Rust reference, so no aliasing promise a `&[u8]` or
/// `&mut [u8]` makes is broken while the NIC writes. It never moves: the
/// address registered stays valid until it is freed, after its
/// registration is released.
pub(crate) struct NicMemory {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the allocation is owned; its contents are only ever copied
// through raw pointers (by whoever holds it, under the rules of the
// registration that uses it).
unsafe impl Send for NicMemory {}
// SAFETY: as above.
unsafe impl Sync for NicMemory {}

impl NicMemory {
    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len.max(1), 4096).expect("a valid layout")
    }

    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> NicMemory {
        let layout = NicMemory::layout(len);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = std::ptr::NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        NicMemory { ptr, len }
    }

    /// Its size.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Its address, for registration and scatter lists.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Copies `src` in at `at`. The NIC must not be using those bytes.
    /// Panics if out of bounds.
    pub(crate) fn copy_in(&self, at: usize, src: &[u8]) {
        assert!(at + src.len() <= self.len, "a copy past NIC memory's end");
        // SAFETY: in bounds; src is ordinary memory, never this allocation.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.as_ptr().add(at), src.len()) }
    }

    /// Copies bytes out from `at` into `dst`, once the NIC is done with
    /// them (their completion reaped). Panics if out of bounds.
    pub(crate) fn copy_out(&self, at: usize, dst: &mut [u8]) {
        assert!(at + dst.len() <= self.len, "a copy past NIC memory's end");
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // SAFETY: in bounds; dst is ordinary memory, never this allocation.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr().add(at), dst.as_mut_ptr(), dst.len()) }
    }
}

impl Drop for NicMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), NicMemory::layout(self.len)) }
    }
}

/// Memory peers may write one-sidedly (see the module docs).
pub struct RegionMemory {
    bytes: NicMemory,
}

// SAFETY: the memory is only written by the NIC (on behalf of a peer) and
// read by `snapshot` with volatile copies; no Rust reference to its
// contents escapes, so sharing the owner across threads is sound.
unsafe impl Send for RegionMemory {}
// SAFETY: as above.
unsafe impl Sync for RegionMemory {}

impl RegionMemory {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Arc<RegionMemory> {
        Arc::new(RegionMemory {
            bytes: NicMemory::zeroed(len),
        })
    }

    /// Its size.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.len() == 0
    }

    fn ptr(&self) -> *mut u8 {
        self.bytes.as_ptr()
    }

    /// Copies `buf.len()` bytes from `offset` as they are now (a write may
    /// be landing: check what you read). Panics if out of bounds.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) {
        assert!(
            offset + buf.len() <= self.bytes.len(),
            "read past a region's end"
        );
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: in bounds (checked above); volatile because the NIC
            // writes this memory behind the compiler's back.
            *b = unsafe { std::ptr::read_volatile(self.ptr().add(offset + i)) };
        }
    }

    /// The little-endian u64 at `offset` (see [`RegionMemory::read_at`]).
    pub fn read_u64(&self, offset: usize) -> u64 {
        let mut b = [0u8; 8];
        self.read_at(offset, &mut b);
        u64::from_le_bytes(b)
    }

    /// A copy of the contents as they are now (a write may be landing:
    /// check what you read).
    pub fn snapshot(&self) -> Vec<u8> {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        (0..self.bytes.len())
            // SAFETY: in bounds; volatile because the NIC writes this memory
            // behind the compiler's back.
            .map(|i| unsafe { std::ptr::read_volatile(self.ptr().add(i)) })
            .collect()
    }
}

/// Where a peer may write: what the accepting side sends in its private
/// data (address, rkey, length; little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRegion {
    /// Its address in the peer's memory.
    pub addr: u64,
    /// The key that allows writing it.
    pub rkey: u32,
    /// Its length.
    pub len: u32,
}

impl RemoteRegion {
    /// Encoded length.
    pub const BYTES: usize = 16;

    fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.rkey.to_le_bytes());
        b[12..].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes the first 16 bytes (`None` if shorter).
    pub fn decode(b: &[u8]) -> Option<RemoteRegion> {
        if b.len() < 16 {
            return None;
        }
        Some(RemoteRegion {
            addr: u64::from_le_bytes(b[..8].try_into().ok()?),
            rkey: u32::from_le_bytes(b[8..12].try_into().ok()?),
            len: u32::from_le_bytes(b[12..16].try_into().ok()?),
        })
    }
}

fn addrinfo(addr: SocketAddr, passive: bool) -> Result<*mut rdma_addrinfo, RdmaError> {
    let host = CString::new(addr.ip().to_string()).expect("no NUL in an IP");
    let port = CString::new(addr.port().to_string()).expect("no NUL in a port");
    // SAFETY: hints is a zeroed POD struct with two fields set; on success
    // `res` is a list we own and free with rdma_freeaddrinfo.
    unsafe {
        let mut hints = std::mem::zeroed::<rdma_addrinfo>();
        if passive {
            hints.ai_flags = RAI_PASSIVE as i32;
        }
        hints.ai_port_space = rdma_port_space::RDMA_PS_TCP as i32;
        let mut res = null_mut();
        call(
            "rdma_getaddrinfo",
            rdma_getaddrinfo(host.as_ptr(), port.as_ptr(), &hints, &mut res),
        )?;
        Ok(res)
    }
}

/// A synchronous `rdma_cm` endpoint for `addr` with its queue pair:
/// listening (`passive`) or with address and route resolved to connect.
fn create_ep(addr: SocketAddr, passive: bool) -> Result<*mut rdma_cm_id, RdmaError> {
    let res = addrinfo(addr, passive)?;
    let mut attr = qp_init_attr();
    let mut id = null_mut();
    // SAFETY: res comes from rdma_getaddrinfo and is freed after use; attr
    // outlives the call; on success `id` is owned by the caller.
    let r = call("rdma_create_ep", unsafe {
        rdma_create_ep(&mut id, res, null_mut(), &mut attr)
    });
    // SAFETY: freed once, after its last use (errno was read above).
    unsafe { rdma_freeaddrinfo(res) };
    r.map(|()| id)
}

fn qp_init_attr() -> ibv_qp_init_attr {
    // SAFETY: a zeroed POD struct, then filled in.
    let mut a = unsafe { std::mem::zeroed::<ibv_qp_init_attr>() };
    a.cap.max_send_wr = SEND_WRS_MAX as u32;
    a.cap.max_recv_wr = RECV_SLOTS as u32;
    a.cap.max_send_sge = 1;
    a.cap.max_recv_sge = 1;
    a.sq_sig_all = 1;
    a.qp_type = ibv_qp_type::IBV_QPT_RC;
    a
}

/// A listening endpoint.
pub struct RdmaListener {
    id: *mut rdma_cm_id,
}

// SAFETY: the id is used by one thread at a time (accept takes &self but
// rdma_get_request on a listening id is thread-safe in librdmacm).
unsafe impl Send for RdmaListener {}

impl Drop for RdmaListener {
    fn drop(&mut self) {
        // SAFETY: created by rdma_create_ep, destroyed once.
        unsafe { rdma_destroy_ep(self.id) };
    }
}

impl RdmaListener {
    /// Listens on `addr` (an address of an RDMA-capable interface).
    pub fn bind(addr: SocketAddr) -> Result<RdmaListener, RdmaError> {
        require_device()?;
        let l = RdmaListener {
            id: create_ep(addr, true)?,
        };
        // SAFETY: id is a valid passive id.
        call("rdma_listen", unsafe { rdma_listen(l.id, 16) })?;
        Ok(l)
    }

    /// Waits for a connection request; accepts it, letting the peer write
    /// `region` (its address and key go back in the private data), and
    /// returns the connection with the peer's private data.
    pub fn accept(&self, region: Option<&Arc<RegionMemory>>) -> Result<RdmaConn, RdmaError> {
        self.request()?.accept(region)
    }

    /// Waits for a connection request, to be accepted or refused.
    pub fn request(&self) -> Result<ConnRequest, RdmaError> {
        let mut id = null_mut();
        // SAFETY: self.id listens; on success `id` is a new id with its QP,
        // owned by the ConnRequest built below.
        call("rdma_get_request", unsafe {
            rdma_get_request(self.id, &mut id)
        })?;
        // SAFETY: the request event is attached to the new id until the
        // next call on it; its private data is copied out at once.
        let private = unframed_private(&unsafe { event_private_data(id) });
        Ok(ConnRequest {
            id: Some(id),
            private,
        })
    }
}

/// A connection request not yet answered: [`ConnRequest::accept`] it, or
/// drop it to refuse it (the peer's connect fails at once).
pub struct ConnRequest {
    id: Option<*mut rdma_cm_id>,
    private: Vec<u8>,
}

// SAFETY: the id is owned by the request and used by one thread at a time.
unsafe impl Send for ConnRequest {}

impl Drop for ConnRequest {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // SAFETY: a requested id not accepted: refused, then destroyed
            // once.
            unsafe {
                rdma_reject(id, std::ptr::null(), 0);
                rdma_destroy_ep(id);
            }
        }
    }
}

impl ConnRequest {
    /// The private data the peer sent.
    pub fn private(&self) -> &[u8] {
        &self.private
    }

    /// Accepts, letting the peer write `region` (its address and key go
    /// back in the private data).
    pub fn accept(mut self, region: Option<&Arc<RegionMemory>>) -> Result<RdmaConn, RdmaError> {
        let id = self.id.take().expect("a request is answered once");
        let mut conn = RdmaConn::new(id, std::mem::take(&mut self.private))?;
        let mut private = Vec::new();
        if let Some(r) = region {
            conn.expose(r)?;
            let mr = conn.region_mrs.last().expect("just registered").1;
            // SAFETY: mr is a valid registration.
            let rkey = unsafe { (*mr).rkey };
            private.extend_from_slice(
                &RemoteRegion {
                    addr: r.ptr() as u64,
                    rkey,
                    len: r.len() as u32,
                }
                .encode(),
            );
        }
        conn.post_all_recvs()?;
        let private = framed_private(&private);
        // SAFETY: private lives until rdma_accept returns.
        let mut param = unsafe { std::mem::zeroed::<rdma_conn_param>() };
        param.private_data = private.as_ptr().cast();
        param.private_data_len = private.len() as u8;
        param.responder_resources = 1;
        param.initiator_depth = 1;
        param.rnr_retry_count = 3;
        // SAFETY: conn.id is the requested id.
        call("rdma_accept", unsafe { rdma_accept(conn.id, &mut param) })?;
        Ok(conn)
    }
}

/// Waits until `deadline` for the next event on `channel`; it must be
/// `want` (anything else — rejected, unreachable, an address or route
/// error — is an error naming it). Returns the event's private data.
///
/// # Safety
/// `channel` must be a valid event channel.
unsafe fn wait_cm_event(
    channel: *mut rdma_event_channel,
    want: rdma_cm_event_type::Type,
    deadline: std::time::Instant,
) -> Result<Vec<u8>, RdmaError> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let mut fd = libc::pollfd {
        fd: (*channel).fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let n = libc::poll(&mut fd, 1, left.as_millis().min(i32::MAX as u128) as i32);
    if n < 0 {
        return Err(RdmaError::Call {
            call: "poll (rdma_cm)",
            err: std::io::Error::last_os_error(),
        });
    }
    if n == 0 {
        return Err(RdmaError::Call {
            call: "rdma_cm (waiting for the peer)",
            err: std::io::Error::from(std::io::ErrorKind::TimedOut),
        });
    }
    let mut ev = null_mut();
    call("rdma_get_cm_event", rdma_get_cm_event(channel, &mut ev))?;
    let kind = (*ev).event;
    let conn = (*ev).param.conn;
    let private = if conn.private_data.is_null() {
        Vec::new()
    } else {
        std::slice::from_raw_parts(
            conn.private_data as *const u8,
            conn.private_data_len as usize,
        )
        .to_vec()
    };
    let status = (*ev).status;
    rdma_ack_cm_event(ev);
    if kind != want {
        let name = CStr::from_ptr(rdma_event_str(kind))
            .to_string_lossy()
            .into_owned();
        return Err(RdmaError::Completion {
            what: "connect",
            status: status.unsigned_abs(),
            name,
        });
    }
    Ok(private)
}

/// How long [`RdmaConn::connect`] waits for a peer. A peer that is up but
/// not listening answers at once (rejected); this bounds a lost request:
/// under soft-RoCE the first request to a new neighbour is sometimes lost
/// (to address resolution, it seems) and retried by `rdma_cm` ~2 s later.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The private data of the event attached to `id`.
///
/// # Safety
/// `id` must be valid, with an event attached (just after
/// `rdma_get_request`, or after a synchronous `rdma_connect`).
unsafe fn event_private_data(id: *mut rdma_cm_id) -> Vec<u8> {
    let ev = (*id).event;
    if ev.is_null() {
        return Vec::new();
    }
    let conn = (*ev).param.conn;
    if conn.private_data.is_null() {
        return Vec::new();
    }
    std::slice::from_raw_parts(
        conn.private_data as *const u8,
        conn.private_data_len as usize,
    )
    .to_vec()
}

/// What a receive completed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A two-sided message.
    Message(Vec<u8>),
    /// A one-sided write with an immediate value landed (the value).
    Immediate(u32),
}

/// The `wr_id` of a one-sided write's work requests.
const WR_WRITE: u64 = 1;
/// The `wr_id` of a two-sided send's work request.
const WR_SEND: u64 = 2;

/// What a send-queue work request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendKind {
    /// An RDMA WRITE (with or without an immediate).
    Write,
    /// A two-sided SEND.
    Send,
}

/// One reaped send-queue completion.
#[derive(Debug)]
pub struct SendCompletion {
    /// What it completed.
    pub kind: SendKind,
    /// Whether it succeeded (an error status is named).
    pub result: Result<(), RdmaError>,
}

/// One of a connection's two completion queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cq {
    /// Sends and writes.
    Send,
    /// Receives (messages and immediates).
    Recv,
}

/// One reliable connection (see the module docs).
pub struct RdmaConn {
    /// A larger registered buffer for [`RdmaConn::write_runs`], made on
    /// first use.
    staging: Option<(NicMemory, *mut ibv_mr)>,
    /// The event channel of an actively opened connection (null for an
    /// accepted one, whose id carries its own), destroyed after the id.
    own_channel: *mut rdma_event_channel,
    /// Connected (an active connection still being set up is not).
    established: bool,
    id: *mut rdma_cm_id,
    send_buf: NicMemory,
    recv_buf: NicMemory,
    send_mr: *mut ibv_mr,
    recv_mr: *mut ibv_mr,
    /// Regions this peer may write, with their registrations.
    region_mrs: Vec<(Arc<RegionMemory>, *mut ibv_mr)>,
    peer_private: Vec<u8>,
}

// SAFETY: a connection is used by one thread at a time (&mut self for
// every operation); the raw pointers are owned by it.
unsafe impl Send for RdmaConn {}

impl Drop for RdmaConn {
    fn drop(&mut self) {
        // SAFETY: each registration is released once, before the id (and
        // its PD use) goes; the memory itself outlives its registration
        // (RegionMemory by the Arc held here, buffers by self).
        unsafe {
            if self.established {
                rdma_disconnect(self.id);
            }
            for (_, mr) in self.region_mrs.drain(..) {
                rdma_dereg_mr(mr);
            }
            if let Some((_, mr)) = self.staging.take() {
                rdma_dereg_mr(mr);
            }
            if !self.send_mr.is_null() {
                rdma_dereg_mr(self.send_mr);
            }
            if !self.recv_mr.is_null() {
                rdma_dereg_mr(self.recv_mr);
            }
            rdma_destroy_ep(self.id);
            if !self.own_channel.is_null() {
                rdma_destroy_event_channel(self.own_channel);
            }
        }
    }
}

impl RdmaConn {
    fn new(id: *mut rdma_cm_id, peer_private: Vec<u8>) -> Result<RdmaConn, RdmaError> {
        let mut c = RdmaConn {
            staging: None,
            own_channel: null_mut(),
            established: true,
            id,
            send_buf: NicMemory::zeroed(MESSAGE_BYTES_MAX),
            recv_buf: NicMemory::zeroed(MESSAGE_BYTES_MAX * RECV_SLOTS),
            send_mr: null_mut(),
            recv_mr: null_mut(),
            region_mrs: Vec::new(),
            peer_private,
        };
        // SAFETY: the buffers are boxed (fixed addresses) and outlive their
        // registrations (deregistered in Drop before the boxes are freed).
        unsafe {
            c.send_mr = rdma_reg_msgs(c.id, c.send_buf.as_ptr().cast(), MESSAGE_BYTES_MAX);
            c.recv_mr = rdma_reg_msgs(
                c.id,
                c.recv_buf.as_ptr().cast(),
                MESSAGE_BYTES_MAX * RECV_SLOTS,
            );
        }
        if c.send_mr.is_null() || c.recv_mr.is_null() {
            return Err(RdmaError::Call {
                call: "rdma_reg_msgs",
                err: std::io::Error::last_os_error(),
            });
        }
        Ok(c)
    }

    /// Connects to `addr`, sending `private` (at most
    /// [`PRIVATE_DATA_BYTES_MAX`] bytes), giving up after
    /// [`CONNECT_TIMEOUT`]; the peer's private data (its region, if any) is
    /// then in [`RdmaConn::peer_private`].
    pub fn connect(addr: SocketAddr, private: &[u8]) -> Result<RdmaConn, RdmaError> {
        RdmaConn::connect_timeout(addr, private, CONNECT_TIMEOUT)
    }

    /// As [`RdmaConn::connect`], giving up after `timeout`. Address and
    /// route are resolved synchronously; the id then moves to an event
    /// channel of its own and connects asynchronously, waited for with a
    /// deadline: under soft-RoCE the synchronous `rdma_connect` waited
    /// forever for an address nobody listens on (a peer not started yet,
    /// or restarting).
    pub fn connect_timeout(
        addr: SocketAddr,
        private: &[u8],
        timeout: std::time::Duration,
    ) -> Result<RdmaConn, RdmaError> {
        require_device()?;
        if private.len() > PRIVATE_DATA_BYTES_MAX {
            return Err(RdmaError::TooLarge {
                what: "private data",
                len: private.len(),
                max: PRIVATE_DATA_BYTES_MAX,
            });
        }
        let deadline = std::time::Instant::now() + timeout;
        // Address and route resolved synchronously (bounded by librdmacm's
        // own timeouts), the QP created.
        let id = create_ep(addr, false)?;
        // SAFETY: the channel is created here and owned by the connection
        // built below (destroyed in its Drop after the id) or destroyed on
        // the error paths with the id.
        unsafe {
            // A short transport timeout (4.096 µs × 2^14 ≈ 67 ms per try,
            // rdma_cma.h's RDMA_OPTION_ID / RDMA_OPTION_ID_ACK_TIMEOUT): a
            // revoked writer learns it within a few tries, not seconds.
            let mut ack_timeout: u8 = 14;
            let r = call(
                "rdma_set_option (ack timeout)",
                rdma_set_option(id, 0, 3, (&mut ack_timeout as *mut u8).cast(), 1),
            );
            // The connect itself is asynchronous, on a channel of our own,
            // so that it can be given up.
            let channel = rdma_create_event_channel();
            let r = r.and_then(|()| {
                if channel.is_null() {
                    Err(RdmaError::Call {
                        call: "rdma_create_event_channel",
                        err: std::io::Error::last_os_error(),
                    })
                } else {
                    call("rdma_migrate_id", rdma_migrate_id(id, channel))
                }
            });
            if let Err(e) = r {
                rdma_destroy_ep(id);
                if !channel.is_null() {
                    rdma_destroy_event_channel(channel);
                }
                return Err(e);
            }
            // From here the connection owns the id and the channel.
            let mut conn = match RdmaConn::new(id, Vec::new()) {
                Ok(c) => c,
                Err(e) => {
                    // The failed connection's Drop destroyed the id.
                    rdma_destroy_event_channel(channel);
                    return Err(e);
                }
            };
            conn.own_channel = channel;
            conn.established = false;
            conn.post_all_recvs()?;
            let private = framed_private(private);
            let mut param = std::mem::zeroed::<rdma_conn_param>();
            param.private_data = private.as_ptr().cast();
            param.private_data_len = private.len() as u8;
            param.responder_resources = 1;
            param.initiator_depth = 1;
            // Bounded retries (7 would mean "forever" for RNR): a write to
            // a peer that revoked us must fail, not hang.
            param.retry_count = 3;
            param.rnr_retry_count = 3;
            call("rdma_connect", rdma_connect(conn.id, &mut param))?;
            conn.peer_private = unframed_private(&wait_cm_event(
                channel,
                rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED,
                deadline,
            )?);
            conn.established = true;
            Ok(conn)
        }
    }

    /// The private data the peer sent when connecting or accepting.
    pub fn peer_private(&self) -> &[u8] {
        &self.peer_private
    }

    fn expose(&mut self, region: &Arc<RegionMemory>) -> Result<(), RdmaError> {
        // SAFETY: the region memory is kept alive by the Arc stored next to
        // its registration until the registration is released.
        let mr = unsafe { rdma_reg_write(self.id, region.ptr().cast(), region.len()) };
        if mr.is_null() {
            return Err(RdmaError::Call {
                call: "rdma_reg_write",
                err: std::io::Error::last_os_error(),
            });
        }
        self.region_mrs.push((region.clone(), mr));
        Ok(())
    }

    fn post_all_recvs(&mut self) -> Result<(), RdmaError> {
        (0..RECV_SLOTS).try_for_each(|slot| self.post_recv(slot))
    }

    fn post_recv(&mut self, slot: usize) -> Result<(), RdmaError> {
        // SAFETY: the slot lies in recv_buf, registered by recv_mr, and is
        // not touched until its completion (wr_id = slot) is reaped in
        // recv().
        call("rdma_post_recv", unsafe {
            rdma_post_recv(
                self.id,
                slot as *mut std::ffi::c_void,
                self.recv_buf.as_ptr().add(slot * MESSAGE_BYTES_MAX).cast(),
                MESSAGE_BYTES_MAX,
                self.recv_mr,
            )
        })
    }

    /// Waits for the next send-side completion: polls for up to
    /// [`RECV_SPIN`] (on real hardware a write's acknowledgement is that
    /// close), then sleeps on the completion channel.
    fn wait_send(&mut self, what: &'static str) -> Result<(), RdmaError> {
        // SAFETY: a zeroed POD filled in by the calls below.
        let mut wc = unsafe { std::mem::zeroed::<ibv_wc>() };
        let spin_until = std::time::Instant::now() + RECV_SPIN;
        while std::time::Instant::now() < spin_until {
            // SAFETY: the id's send CQ is valid for the connection's life.
            match unsafe { ibv_poll_cq((*self.id).send_cq, 1, &mut wc) } {
                0 => std::hint::spin_loop(),
                1 => return check(&wc, what),
                _ => {
                    return Err(RdmaError::Call {
                        call: "ibv_poll_cq (send)",
                        err: std::io::Error::last_os_error(),
                    })
                }
            }
        }
        // SAFETY: id is valid; polls, then blocks on the completion channel.
        let n = unsafe { rdma_get_send_comp(self.id, &mut wc) };
        if n < 0 {
            return Err(RdmaError::Call {
                call: "rdma_get_send_comp",
                err: std::io::Error::last_os_error(),
            });
        }
        check(&wc, what)
    }

    /// Sends a message (two-sided) and waits for its completion.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), RdmaError> {
        self.start_send(bytes)?;
        self.wait_send("send")
    }

    /// Waits for the next message (an immediate is an error here: use
    /// [`RdmaConn::recv_any`] on connections that receive them).
    pub fn recv(&mut self) -> Result<Vec<u8>, RdmaError> {
        match self.recv_any()? {
            Incoming::Message(m) => Ok(m),
            Incoming::Immediate(_) => Err(RdmaError::Completion {
                what: "recv",
                status: 0,
                name: "an unexpected write with immediate".into(),
            }),
        }
    }

    /// Waits for the next message or immediate.
    pub fn recv_any(&mut self) -> Result<Incoming, RdmaError> {
        // SAFETY: a zeroed POD filled in by the call.
        let mut wc = unsafe { std::mem::zeroed::<ibv_wc>() };
        // SAFETY: id is valid; polls, then blocks on the completion channel.
        let n = unsafe { rdma_get_recv_comp(self.id, &mut wc) };
        if n < 0 {
            return Err(RdmaError::Call {
                call: "rdma_get_recv_comp",
                err: std::io::Error::last_os_error(),
            });
        }
        self.reap_recv(&wc)
    }

    /// Waits for the next message or immediate, or until the peer closes
    /// the connection ([`RdmaError::PeerClosed`]): polls the completion
    /// queue for up to [`RECV_SPIN`], then arms it and sleeps on both the
    /// completion channel and the connection's `rdma_cm` event channel, so
    /// a peer's disconnect (or death) wakes this thread, which then closes
    /// its side (without that, the peer's disconnect would wait for an
    /// answer that never comes).
    pub fn recv_or_closed(&mut self) -> Result<Incoming, RdmaError> {
        let spin_until = std::time::Instant::now() + RECV_SPIN;
        loop {
            if let Some(i) = self.try_recv_any()? {
                return Ok(i);
            }
            if std::time::Instant::now() < spin_until {
                std::hint::spin_loop();
                continue;
            }
            // SAFETY: the receive CQ, its channel and the id's event
            // channel are valid for the connection's life; poll(2) reads
            // the two descriptors only; a CQ event taken here is acked.
            unsafe {
                let cq = (*self.id).recv_cq;
                call("ibv_req_notify_cq", ibv_req_notify_cq(cq, 0))?;
                if let Some(i) = self.try_recv_any()? {
                    return Ok(i);
                }
                let mut fds = [
                    libc::pollfd {
                        fd: (*(*self.id).recv_cq_channel).fd,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: (*(*self.id).channel).fd,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                if libc::poll(fds.as_mut_ptr(), 2, -1) < 0 {
                    let err = std::io::Error::last_os_error();
                    if err.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(RdmaError::Call { call: "poll", err });
                }
                if fds[0].revents != 0 {
                    let mut ev_cq = null_mut();
                    let mut ctx = null_mut();
                    call(
                        "ibv_get_cq_event",
                        ibv_get_cq_event((*self.id).recv_cq_channel, &mut ev_cq, &mut ctx),
                    )?;
                    ibv_ack_cq_events(ev_cq, 1);
                    continue;
                }
                if fds[1].revents != 0 {
                    // The pending event (a disconnect) is left for
                    // rdma_disconnect in Drop to consume.
                    return Err(RdmaError::PeerClosed);
                }
            }
        }
    }

    /// Waits up to `timeout` for the next message or immediate (polling,
    /// sleeping between polls): for a handshake, where a peer that went
    /// away must not hang the caller.
    pub fn recv_any_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<Option<Incoming>, RdmaError> {
        let end = std::time::Instant::now() + timeout;
        let mut nap = std::time::Duration::from_micros(20);
        loop {
            if let Some(i) = self.try_recv_any()? {
                return Ok(Some(i));
            }
            if std::time::Instant::now() >= end {
                return Ok(None);
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(std::time::Duration::from_millis(5));
        }
    }

    /// The next message or immediate if one has arrived, without waiting.
    /// Do not mix with a blocking receive on another thread.
    pub fn try_recv_any(&mut self) -> Result<Option<Incoming>, RdmaError> {
        // SAFETY: a zeroed POD filled in by the call.
        let mut wc = unsafe { std::mem::zeroed::<ibv_wc>() };
        // SAFETY: the id's receive CQ is valid for the connection's life.
        let n = unsafe { ibv_poll_cq((*self.id).recv_cq, 1, &mut wc) };
        match n {
            0 => Ok(None),
            1 => self.reap_recv(&wc).map(Some),
            _ => Err(RdmaError::Call {
                call: "ibv_poll_cq",
                err: std::io::Error::last_os_error(),
            }),
        }
    }

    fn reap_recv(&mut self, wc: &ibv_wc) -> Result<Incoming, RdmaError> {
        check(wc, "recv")?;
        let slot = wc.wr_id as usize;
        if slot >= RECV_SLOTS {
            return Err(RdmaError::TooLarge {
                what: "receive slot",
                len: slot,
                max: RECV_SLOTS - 1,
            });
        }
        if wc.opcode == ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM {
            // SAFETY: with IBV_WC_RECV_RDMA_WITH_IMM the union holds the
            // immediate (network byte order).
            let imm = u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data });
            self.post_recv(slot)?;
            return Ok(Incoming::Immediate(imm));
        }
        let len = (wc.byte_len as usize).min(MESSAGE_BYTES_MAX);
        let at = slot * MESSAGE_BYTES_MAX;
        let mut msg = vec![0u8; len];
        self.recv_buf.copy_out(at, &mut msg);
        self.post_recv(slot)?;
        Ok(Incoming::Message(msg))
    }

    /// Writes each `(offset, bytes)` run into the peer's `region`
    /// (one-sided, in order), then `tail` as 8 little-endian bytes at
    /// `tail_offset` with the immediate `imm` (which completes a receive at
    /// the peer), and waits for all of it. The queue pair's ordering means
    /// the runs have landed when the peer sees the immediate. At most
    /// [`SEND_WRS_MAX`]` - 1` runs.
    pub fn write_runs(
        &mut self,
        region: RemoteRegion,
        runs: &[(u64, &[u8])],
        tail_offset: u64,
        tail: u64,
        imm: u32,
    ) -> Result<(), RdmaError> {
        self.post_writes(region, runs, Some((tail_offset, tail, imm)))
    }

    /// Posts `runs` as RDMA WRITEs, then (if given) the tail word with an
    /// immediate, from the staging buffer, and reaps every completion.
    fn post_writes(
        &mut self,
        region: RemoteRegion,
        runs: &[(u64, &[u8])],
        tail: Option<(u64, u64, u32)>,
    ) -> Result<(), RdmaError> {
        let n = self.start_writes(region, runs, tail)?;
        // Every request is signalled (sq_sig_all): reap them all, keeping
        // the first error.
        let mut first = Ok(());
        for _ in 0..n {
            let r = self.wait_send("write");
            if first.is_ok() {
                first = r;
            }
            if matches!(first, Err(RdmaError::Call { .. })) {
                break;
            }
        }
        first
    }

    /// As [`RdmaConn::write_runs`] (or a plain write of each run when
    /// `tail` is `None`), without waiting: returns the number of work
    /// requests posted, each of which completes on the send queue
    /// ([`RdmaConn::poll_send`], kind [`SendKind::Write`]). The staging
    /// buffer is the kernel's until then: reap every one of them before
    /// the next `start_writes`.
    pub fn start_writes(
        &mut self,
        region: RemoteRegion,
        runs: &[(u64, &[u8])],
        tail: Option<(u64, u64, u32)>,
    ) -> Result<usize, RdmaError> {
        if runs.len() >= SEND_WRS_MAX {
            return Err(RdmaError::TooLarge {
                what: "runs in one post",
                len: runs.len(),
                max: SEND_WRS_MAX - 1,
            });
        }
        let total: usize = runs.iter().map(|r| r.1.len()).sum::<usize>() + 8;
        let tail_run = tail.map(|(off, _, _)| (off, &[0u8; 8][..]));
        for &(off, b) in runs.iter().chain(tail_run.iter()) {
            if off + b.len() as u64 > region.len as u64 {
                return Err(RdmaError::TooLarge {
                    what: "write past the region's end",
                    len: off as usize + b.len(),
                    max: region.len as usize,
                });
            }
        }
        if self.staging.as_ref().is_none_or(|s| s.0.len() < total) {
            let buf = NicMemory::zeroed(total.next_power_of_two());
            // SAFETY: the buffer never moves and is kept with its
            // registration, which is released before the buffer (here on
            // replacement, or in Drop).
            let mr = unsafe { rdma_reg_msgs(self.id, buf.as_ptr().cast(), buf.len()) };
            if mr.is_null() {
                return Err(RdmaError::Call {
                    call: "rdma_reg_msgs (staging)",
                    err: std::io::Error::last_os_error(),
                });
            }
            if let Some((_, old)) = self.staging.replace((buf, mr)) {
                // SAFETY: no work request uses the old buffer: every
                // post's completions are reaped before the next post
                // (start_writes' contract).
                unsafe { rdma_dereg_mr(old) };
            }
        }
        let (buf, mr) = self.staging.as_ref().expect("made above");
        // SAFETY: mr is the staging buffer's valid registration.
        let lkey = unsafe { (**mr).lkey };
        let mut sges = Vec::with_capacity(runs.len() + 1);
        let mut at = 0usize;
        for &(_, b) in runs {
            buf.copy_in(at, b);
            sges.push(ibv_sge {
                addr: buf.as_ptr() as u64 + at as u64,
                length: b.len() as u32,
                lkey,
            });
            at += b.len();
        }
        if let Some((_, t, _)) = tail {
            buf.copy_in(at, &t.to_le_bytes());
            sges.push(ibv_sge {
                addr: buf.as_ptr() as u64 + at as u64,
                length: 8,
                lkey,
            });
        }
        let offsets: Vec<u64> = runs.iter().map(|r| r.0).chain(tail.map(|t| t.0)).collect();
        // SAFETY: zeroed POD work requests, filled in below.
        let mut wrs: Vec<ibv_send_wr> = (0..sges.len())
            .map(|_| unsafe { std::mem::zeroed::<ibv_send_wr>() })
            .collect();
        let n = wrs.len();
        for i in 0..n {
            let last = i + 1 == n && tail.is_some();
            wrs[i].wr_id = WR_WRITE;
            wrs[i].sg_list = &mut sges[i];
            wrs[i].num_sge = 1;
            wrs[i].opcode = if last {
                ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM
            } else {
                ibv_wr_opcode::IBV_WR_RDMA_WRITE
            };
            wrs[i].send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
            wrs[i].wr.rdma = rdma_t {
                remote_addr: region.addr + offsets[i],
                rkey: region.rkey,
            };
            if let (true, Some((_, _, imm))) = (last, tail) {
                wrs[i].imm_data_invalidated_rkey_union.imm_data = imm.to_be();
            }
        }
        if n == 0 {
            return Ok(0);
        }
        for i in 0..n - 1 {
            let next: *mut ibv_send_wr = &mut wrs[i + 1];
            wrs[i].next = next;
        }
        let mut bad = null_mut();
        // SAFETY: the work requests and their scatter lists live through
        // the call (the provider copies them); the staging buffer
        // (registered) is not touched again until the caller has reaped
        // every completion (start_writes' contract); the remote address and
        // key come from the peer, which checks them.
        call("ibv_post_send", unsafe {
            ibv_post_send((*self.id).qp, wrs.as_mut_ptr(), &mut bad)
        })?;
        Ok(n)
    }

    /// As [`RdmaConn::send`], without waiting: the send buffer is the
    /// kernel's until the completion (kind [`SendKind::Send`]) is reaped
    /// with [`RdmaConn::poll_send`]; one at a time.
    pub fn start_send(&mut self, bytes: &[u8]) -> Result<(), RdmaError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(RdmaError::TooLarge {
                what: "message",
                len: bytes.len(),
                max: MESSAGE_BYTES_MAX,
            });
        }
        self.send_buf.copy_in(0, bytes);
        // SAFETY: send_buf is registered and not reused before the
        // completion is reaped (start_send's contract).
        call("rdma_post_send", unsafe {
            rdma_post_send(
                self.id,
                WR_SEND as *mut std::ffi::c_void,
                self.send_buf.as_ptr().cast(),
                bytes.len(),
                self.send_mr,
                0,
            )
        })
    }

    /// The next send-queue completion, if there is one (never waits).
    pub fn poll_send(&mut self) -> Result<Option<SendCompletion>, RdmaError> {
        // SAFETY: a zeroed POD filled in by the call.
        let mut wc = unsafe { std::mem::zeroed::<ibv_wc>() };
        // SAFETY: the id's send CQ is valid for the connection's life.
        match unsafe { ibv_poll_cq((*self.id).send_cq, 1, &mut wc) } {
            0 => Ok(None),
            1 => {
                let kind = if wc.wr_id == WR_SEND {
                    SendKind::Send
                } else {
                    SendKind::Write
                };
                let what = match kind {
                    SendKind::Send => "send",
                    SendKind::Write => "write",
                };
                Ok(Some(SendCompletion {
                    kind,
                    result: check(&wc, what),
                }))
            }
            _ => Err(RdmaError::Call {
                call: "ibv_poll_cq (send)",
                err: std::io::Error::last_os_error(),
            }),
        }
    }

    /// Asks for an event on the completion channel of `cq` at its next
    /// completion (one event per request). A completion that arrived
    /// before the request raises none: poll again after arming.
    pub fn arm(&mut self, cq: Cq) -> Result<(), RdmaError> {
        // SAFETY: the id's CQs are valid for the connection's life.
        unsafe {
            let q = match cq {
                Cq::Send => (*self.id).send_cq,
                Cq::Recv => (*self.id).recv_cq,
            };
            call("ibv_req_notify_cq", ibv_req_notify_cq(q, 0))
        }
    }

    /// The descriptors an event loop waits on for this connection: the
    /// send and receive completion channels (readable after an armed CQ
    /// completed) and the `rdma_cm` channel (readable when the peer
    /// disconnects), in that order. Take them out of any poll set before
    /// the connection is dropped.
    pub fn wake_fds(&self) -> [BorrowedFd<'_>; 3] {
        // SAFETY: the id and its channels are valid for the connection's
        // life, which the borrow does not outlive.
        unsafe {
            [
                BorrowedFd::borrow_raw((*(*self.id).send_cq_channel).fd),
                BorrowedFd::borrow_raw((*(*self.id).recv_cq_channel).fd),
                BorrowedFd::borrow_raw((*(*self.id).channel).fd),
            ]
        }
    }

    /// Puts both completion channels in non-blocking mode, for a
    /// connection driven by an event loop: from here on, use only the
    /// non-blocking calls (`start_*`, `poll_send`, `try_recv_any`, `arm`,
    /// `take_cq_events`).
    pub fn set_nonblocking(&mut self) -> Result<(), RdmaError> {
        let [send, recv, _] = self.wake_fds();
        for fd in [send.as_raw_fd(), recv.as_raw_fd()] {
            // SAFETY: fcntl on a descriptor this connection owns.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                    return Err(RdmaError::Call {
                        call: "fcntl (O_NONBLOCK)",
                        err: std::io::Error::last_os_error(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Takes (and acknowledges at once) every event waiting on `cq`'s
    /// completion channel; returns how many. After
    /// [`RdmaConn::set_nonblocking`] only (it would block otherwise).
    /// Unacknowledged events would make destroying the CQ wait forever.
    pub fn take_cq_events(&mut self, cq: Cq) -> Result<usize, RdmaError> {
        let mut n = 0;
        loop {
            let mut ev_cq = null_mut();
            let mut ctx = null_mut();
            // SAFETY: the channel is valid and non-blocking; an event taken
            // is acknowledged on the CQ it names before the next.
            let r = unsafe {
                let ch = match cq {
                    Cq::Send => (*self.id).send_cq_channel,
                    Cq::Recv => (*self.id).recv_cq_channel,
                };
                ibv_get_cq_event(ch, &mut ev_cq, &mut ctx)
            };
            if r != 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::WouldBlock {
                    return Ok(n);
                }
                return Err(RdmaError::Call {
                    call: "ibv_get_cq_event",
                    err,
                });
            }
            // SAFETY: ev_cq is the CQ the event named.
            unsafe { ibv_ack_cq_events(ev_cq, 1) };
            n += 1;
        }
    }

    /// Writes `bytes` at `offset` of the peer's region (one-sided) and
    /// waits for the completion: `Ok` means the bytes are in the peer's
    /// memory; an error (e.g. the peer revoked this connection) means they
    /// never landed.
    pub fn write(
        &mut self,
        region: RemoteRegion,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), RdmaError> {
        self.post_writes(region, &[(offset, bytes)], None)
    }

    /// Revokes the peer's access (see the module docs): the queue pair
    /// goes to the error state; its later writes fail at the peer.
    pub fn revoke(&mut self) -> Result<(), RdmaError> {
        self.revoker().revoke()
    }

    /// A handle that can revoke this connection from another thread
    /// (while this one blocks in `recv`). Valid while the connection lives.
    pub fn revoker(&self) -> Revoker {
        // SAFETY: id is valid for the connection's life.
        Revoker(unsafe { (*self.id).qp })
    }

    /// Exposes `region` to the peer (registered for remote writes) and
    /// returns where it may write.
    pub fn expose_region(&mut self, region: &Arc<RegionMemory>) -> Result<RemoteRegion, RdmaError> {
        self.expose(region)?;
        let mr = self.region_mrs.last().expect("just registered").1;
        Ok(RemoteRegion {
            addr: region.ptr() as u64,
            // SAFETY: mr is a valid registration.
            rkey: unsafe { (*mr).rkey },
            len: region.len() as u32,
        })
    }
}

/// Moves a connection's queue pair to the error state (see
/// [`RdmaConn::revoker`]).
#[derive(Clone, Copy, Debug)]
pub struct Revoker(*mut ibv_qp);

// SAFETY: ibv_modify_qp may be called from any thread; the QP outlives the
// handle by the contract of RdmaConn::revoker.
unsafe impl Send for Revoker {}
// SAFETY: as above.
unsafe impl Sync for Revoker {}

impl Revoker {
    /// Whether both name the same queue pair.
    pub fn same(&self, other: &Revoker) -> bool {
        std::ptr::eq(self.0, other.0)
    }

    /// Revokes: the peer's later (and queued) writes fail.
    pub fn revoke(&self) -> Result<(), RdmaError> {
        // SAFETY: a zeroed POD with the state set; the QP is valid.
        unsafe {
            let mut attr = std::mem::zeroed::<ibv_qp_attr>();
            attr.qp_state = ibv_qp_state::IBV_QPS_ERR;
            call(
                "ibv_modify_qp (to error)",
                ibv_modify_qp(self.0, &mut attr, ibv_qp_attr_mask::IBV_QP_STATE.0 as i32),
            )
        }
    }
}

fn check(wc: &ibv_wc, what: &'static str) -> Result<(), RdmaError> {
    if wc.status == ibv_wc_status::IBV_WC_SUCCESS {
        return Ok(());
    }
    // SAFETY: ibv_wc_status_str returns a static string for any status.
    let name = unsafe { CStr::from_ptr(ibv_wc_status_str(wc.status)) }
        .to_string_lossy()
        .into_owned();
    Err(RdmaError::Completion {
        what,
        status: wc.status,
        name,
    })
}
