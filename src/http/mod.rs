//! The operator's HTTP endpoint (`--http ADDR` on `coordinator` and
//! `master`): metrics, health, readiness, and the coordinator's status
//! page.
//!
//! # Where it runs, and what it may cost
//!
//! One thread per process, apart from the replica's: it never touches the
//! Raft core. The replica's thread publishes what the endpoint shows
//! ([`Observed`]): metrics are atomics it updates as it goes; the status
//! (and, only while someone looks at the page, the cluster view) is
//! copied under a mutex at most every [`PUBLISH_EVERY`]. A scrape costs
//! the replica nothing it waits for.
//!
//! # Bounds
//!
//! Requests are served one at a time: one connection, one request, then
//! closed. A request's head may be [`REQUEST_HEAD_BYTES_MAX`] at most, and
//! everything (TLS handshake, request, answer) must be done within
//! [`REQUEST_TIMEOUT`] of the connection's acceptance: one deadline for
//! every read and write. So a client that stalls holds the endpoint for
//! [`REQUEST_TIMEOUT`] at most, and nothing a client sends makes the
//! process hold more than one request's bytes. Waiting connections queue
//! in the kernel's listen backlog. Only `GET` and `HEAD` are served; the
//! endpoint changes nothing.
//!
//! # Security
//!
//! When the process runs with TLS, so does this endpoint: HTTPS, and the
//! client must present a certificate of the cluster's CA (any role: what
//! is served is read-only, and a reader's certificate is enough; give it
//! to the scraper). `--http-plain` serves plain HTTP instead, for a
//! loopback address or behind a proxy that does TLS; it is logged as a
//! warning. Nothing served names a master's nonce or any credential.
//!
//! # Paths
//!
//! - `/metrics`: Prometheus (OpenMetrics text format);
//! - `/health`: 200 while the process's main loop is turning (it
//!   published within [`LIVE_WITHIN`]), else 503;
//! - `/ready`: 200 when it is useful: a coordinator replica that knows a
//!   leader it hears from (or is the active one) and has applied what is
//!   committed (within [`READY_APPLY_LAG_MAX`] entries); a master that is
//!   enlisted and holds a lease. Else 503 and why;
//! - `/` and `/api/status` (coordinator): the status page and its data.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod coordinator;
pub mod master;

/// The largest request head read (request line and headers).
pub const REQUEST_HEAD_BYTES_MAX: usize = 8192;

/// How long a client may take to send its request, and to take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the replica's thread publishes its status for the endpoint.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// `/health` fails once the main loop has not published for this long.
pub const LIVE_WITHIN: Duration = Duration::from_secs(3);

/// `/ready` fails for a replica more entries behind the commit index.
pub const READY_APPLY_LAG_MAX: u64 = 64;

/// An answer.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Its content type.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A 200 with `body`.
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: format!("{v}\n").into_bytes(),
        }
    }

    /// 404.
    pub fn not_found(path: &str) -> Response {
        Response {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: format!("no page at {path}\n").into_bytes(),
        }
    }
}

/// The content type of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What answers a path.
pub type Handler = Box<dyn Fn(&str) -> Response + Send>;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("--http {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The thread could not be started.
    #[error("starting the HTTP thread: {0}")]
    Thread(std::io::Error),
}

/// Starts serving on `addr` (see the module docs) in a thread of its own;
/// returns the address bound (port 0 picks one). With `tls`, HTTPS with a
/// client certificate required.
pub fn serve(
    addr: SocketAddr,
    tls: Option<ramcoord_net::tls::Tls>,
    handler: Handler,
) -> Result<SocketAddr, HttpError> {
    let listener = TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let mut refusals_logged: Option<Instant> = None;
            for conn in listener.incoming() {
                let stream = match conn {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and the like: wait a little, go on.
                        tracing::warn!(error = %e, "http: accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                let peer = stream.peer_addr().ok();
                if let Err(why) = serve_one(stream, tls.as_ref(), &handler) {
                    let quiet = refusals_logged.is_some_and(|t| t.elapsed() < Duration::from_secs(1));
                    if !quiet {
                        refusals_logged = Some(Instant::now());
                        tracing::info!(peer = %peer.map_or_else(|| "unknown".to_string(), |p| p.to_string()), why, "http: request not served");
                    }
                }
            }
        })
        .map_err(HttpError::Thread)?;
    Ok(bound)
}

/// Serves one request on `stream` (TLS first if asked).
fn serve_one(
    stream: TcpStream,
    tls: Option<&ramcoord_net::tls::Tls>,
    handler: &Handler,
) -> Result<(), String> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let stream = Deadline { stream, deadline };
    match tls {
        None => exchange(stream, deadline, handler),
        Some(tls) => {
            let conn = tls.accept().map_err(|e| e.to_string())?;
            let mut s = rustls::StreamOwned::new(conn, stream);
            // The handshake happens on the first read; a client without a
            // certificate of the cluster's CA fails it.
            exchange(&mut s, deadline, handler)
        }
    }
}

/// A socket whose every read and write ends by one deadline: the time
/// left is set as the socket's timeout before each call, and past the
/// deadline a call fails at once. (A per-call timeout alone would let a
/// peer that sends or takes one byte just in time hold the thread for
/// ever, in a TLS handshake or a large answer.)
struct Deadline {
    stream: TcpStream,
    deadline: Instant,
}

impl Deadline {
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request's time is up",
            ));
        }
        Ok(left)
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// Reads a request head, answers it, closes.
fn exchange(mut s: impl Read + Write, deadline: Instant, handler: &Handler) -> Result<(), String> {
    let mut buf = vec![0u8; REQUEST_HEAD_BYTES_MAX];
    let mut len = 0;
    let (method, path) = loop {
        if Instant::now() > deadline {
            return Err("request not received in time".into());
        }
        if len == buf.len() {
            let _ = respond(&mut s, &status_only(431, "request head too large"), false);
            return Err("request head too large".into());
        }
        let n = s.read(&mut buf[len..]).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a request".into());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or_default().to_string(),
                    req.path.unwrap_or("/").to_string(),
                );
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => {
                let _ = respond(&mut s, &status_only(400, "bad request"), false);
                return Err(format!("bad request: {e}"));
            }
        }
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        respond(&mut s, &status_only(405, "only GET and HEAD"), false)
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let path = path.split('?').next().unwrap_or("/");
    let r = handler(path);
    respond(&mut s, &r, head_only).map_err(|e| e.to_string())
}

fn status_only(status: u16, why: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: format!("{why}\n").into_bytes(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn respond(s: &mut impl Write, r: &Response, head_only: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    s.write_all(head.as_bytes())?;
    if !head_only {
        s.write_all(&r.body)?;
    }
    s.flush()
}

/// A value published by the main loop for the endpoint, with when.
pub struct Published<T> {
    inner: Mutex<(Option<Instant>, Option<Arc<T>>)>,
}

impl<T> Default for Published<T> {
    fn default() -> Self {
        Published {
            inner: Mutex::new((None, None)),
        }
    }
}

impl<T> Published<T> {
    /// Publishes `v` (now).
    pub fn set(&self, v: T) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = (Some(Instant::now()), Some(Arc::new(v)));
    }

    /// Marks the loop alive without a new value.
    pub fn touch(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = Some(Instant::now());
    }

    /// The latest value and how long ago the loop last published.
    pub fn get(&self) -> (Option<Duration>, Option<Arc<T>>) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (g.0.map(|t| t.elapsed()), g.1.clone())
    }
}

/// `/health` from when the loop last published.
pub fn health(age: Option<Duration>) -> Response {
    match age {
        Some(a) if a <= LIVE_WITHIN => Response::json(
            200,
            &serde_json::json!({"health": "ok", "loop_seen_ms_ago": a.as_millis() as u64}),
        ),
        Some(a) => Response::json(
            503,
            &serde_json::json!({"health": "stalled", "loop_seen_ms_ago": a.as_millis() as u64}),
        ),
        None => Response::json(503, &serde_json::json!({"health": "starting"})),
    }
}
