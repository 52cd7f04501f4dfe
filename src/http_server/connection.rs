//! One connection's life, on its own thread: the TLS handshake, then requests one after another
//! (keep-alive, pipelining) until either side closes, the connection idles out, or the server
//! shuts down.
//!
//! Each exchange: wait for the first byte (idle timeout; the first head counts from the accept),
//! read the head within `header_timeout`, ask [`Admit`] before any body byte is read or
//! `100 Continue` sent, read the body within `read_timeout`, call the [`Handler`], write the
//! response. Panics in admission, handler or stream producer are caught here: the peer gets a
//! 500 (or a stream cut short) and the connection closes; the server keeps going. A connection
//! on a reserve slot serves only the reserved route, and closes after any error response.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use log::{debug, warn};

use super::limits::{Limits, later};
use super::request::{ConnectionHandle, Request, RequestHead, path_of, says_close};
use super::request_reader::{
    Framing, Head, Incoming, READ_CHUNK, Reject, body_framing, is_timeout,
};
use super::response::{
    Body, ChunkWriter, Response, error_response, render_head, status_has_no_body,
};
use super::slots::Pool;
use super::transport::{SharedTcp, Transport, peer_closed, tls_handshake};
use super::waiting::{Registered, Waiting};

/// TLS handshakes that failed (or timed out), process-wide: the relay's metrics report it.
static TLS_HANDSHAKE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many TLS handshakes failed since the process started, on every server.
pub fn tls_handshake_failures() -> u64 {
    TLS_HANDSHAKE_FAILURES.load(Ordering::Relaxed)
}

/// Handles one request. Called on the connection's thread; may block (long-poll, slow fakes).
pub trait Handler: Fn(Request) -> Response + Send + Sync + 'static {}
impl<F: Fn(Request) -> Response + Send + Sync + 'static> Handler for F {}

/// Decides, from the head alone, whether a request's body is read: `Ok(limit)` admits a body of
/// at most `limit` bytes (and at most `Limits::max_body_bytes`); `Err(response)` answers at once,
/// without reading the body (authorization failures, unknown routes). Must be quick: it runs on
/// the connection's thread before the request is complete.
pub trait Admit: Fn(&RequestHead<'_>) -> Result<usize, Response> + Send + Sync + 'static {}
impl<F: Fn(&RequestHead<'_>) -> Result<usize, Response> + Send + Sync + 'static> Admit for F {}

/// What every connection of one server shares: how to answer, the settings, the shutdown flag.
pub(super) struct Service {
    pub handler: Box<dyn Fn(Request) -> Response + Send + Sync>,
    pub admit: Box<dyn Admit>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: Limits,
    /// Set once the server shuts down; each connection ends after its current exchange.
    pub shutdown: AtomicBool,
    /// The live connections; shutdown wakes those waiting for a request through it.
    pub waiting: Waiting,
}

/// Serves the connection accepted at `accepted` until it ends, then closes it.
pub(super) fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    pool: Pool,
    service: &Service,
) {
    debug!("{peer}: connection opened");
    let tcp = Arc::new(tcp);
    let registered = service.waiting.register(Arc::clone(&tcp));
    // Responses and stream chunks are written whole; don't let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    // A peer that does not drain its socket for as long as it may take to send a request is gone.
    if tcp
        .set_write_timeout(Some(service.limits.read_timeout))
        .is_err()
    {
        return;
    }
    // The handshake and the first request head share one short deadline: a peer that connects and
    // says nothing gives its slot back soon.
    let first_head_deadline = later(accepted, service.limits.header_timeout);
    let io = match &service.tls {
        None => Transport::Plain(SharedTcp(tcp)),
        Some(config) => match tls_handshake(SharedTcp(tcp), config, first_head_deadline) {
            Ok(t) => Transport::Tls(Box::new(t)),
            Err(e) => {
                debug!("{peer}: TLS handshake failed: {e}");
                TLS_HANDSHAKE_FAILURES.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
    };
    let mut conn = Conn {
        incoming: Incoming::new(io),
        peer,
        service,
        pool,
        first_head_deadline: Some(first_head_deadline),
        connection: ConnectionHandle::default(),
        reading_path: None,
        registered,
    };
    let end = loop {
        match conn.serve_one() {
            Next::KeepAlive => {}
            end => break end,
        }
    };
    conn.connection
        .mark_closed(peer_closed(conn.incoming.src.tcp()));
    match end {
        Next::Abort => conn.incoming.src.abort(),
        _ => conn.incoming.src.close(),
    }
    debug!("{peer}: connection closed");
}

/// What to do with the connection after one exchange.
enum Next {
    KeepAlive,
    /// Orderly close (FIN after everything sent, with lingering).
    Close,
    /// Close at once: the peer is gone, or a stream must look truncated.
    Abort,
}

/// What reading a request gave.
enum Received {
    /// A whole, admitted request for the handler.
    Request(Request),
    /// Admission's own answer to a request with this method; the body (if any) was not read.
    Answer(String, Response),
}

/// Facts about the request that shape the response.
struct Exchange {
    head_only: bool,
    http10: bool,
    close: bool,
}

struct Conn<'s> {
    /// The connection and the bytes received on it not consumed yet.
    incoming: Incoming<Transport>,
    peer: SocketAddr,
    service: &'s Service,
    /// A reserve connection serves only requests of the reserved route class.
    pool: Pool,
    /// The first request's head must be complete by then (counted from the accept); later heads
    /// get `header_timeout` from their first byte.
    first_head_deadline: Option<Instant>,
    connection: ConnectionHandle,
    /// The path of the request being read, once its head is parsed: the server's own error
    /// answer to it takes the route's shape (`Limits::error_shape`).
    reading_path: Option<String>,
    /// Its entry among the live connections: marked idle while it waits for a request.
    registered: Registered<'s>,
}

impl Conn<'_> {
    /// The server's own error answer to the request being read, in its route's shape.
    /// A head refused before it was whole (too large, malformed, too slow) still names its path
    /// when its request line arrived: `httparse` fills it in as it goes.
    fn refusal(&self, status: u16) -> Response {
        let unread_head;
        let path = match self.reading_path.as_deref() {
            Some(path) => Some(path),
            None => {
                unread_head = partial_head_path(&self.incoming.buf);
                unread_head.as_deref()
            }
        };
        path.and_then(|path| (self.service.limits.error_shape)(path, status))
            .unwrap_or_else(|| error_response(status))
    }

    fn serve_one(&mut self) -> Next {
        let limits = &self.service.limits;
        let head_deadline = match self.first_head_deadline.take() {
            Some(deadline) => {
                if !self.await_request(deadline, "no request within the header timeout") {
                    return Next::Close;
                }
                deadline
            }
            None => {
                if !self.await_request(later(Instant::now(), limits.idle_timeout), "idle timeout") {
                    return Next::Close;
                }
                later(Instant::now(), limits.header_timeout)
            }
        };
        let deadline = later(Instant::now(), limits.read_timeout);
        let (read, mut exchange) = match self.read_request(head_deadline.min(deadline), deadline) {
            Ok(r) => r,
            Err(Reject::Gone) => return Next::Abort,
            Err(Reject::Status(status)) => {
                debug!("{}: request rejected with {status}", self.peer);
                let response = self.refusal(status);
                self.respond(response, &Exchange::closing());
                return Next::Close;
            }
        };
        let (method, response) = match read {
            Received::Answer(method, response) => (method, response),
            Received::Request(request) => {
                // A large body may have grown the buffer; don't keep that memory on an idle
                // connection.
                self.incoming.buf.shrink_to(2 * READ_CHUNK);
                let method = request.method.clone();
                let handler = &self.service.handler;
                let response = match catch_unwind(AssertUnwindSafe(|| handler(request))) {
                    Ok(r) => r,
                    Err(_) => {
                        warn!("{}: handler panicked on a {method} request", self.peer);
                        exchange.close = true;
                        self.refusal(500)
                    }
                };
                (method, response)
            }
        };
        // A reserve slot is for working clients: one that is refused gives the slot back.
        exchange.close |= self.pool == Pool::Reserve && response.status >= 400;
        // Once shutdown is flagged, this is the connection's last response.
        exchange.close |= self.service.shutdown.load(Ordering::SeqCst);
        let status = response.status;
        let next = self.respond(response, &exchange);
        debug!("{}: {method} -> {status}", self.peer);
        next
    }

    /// Waits, until `deadline`, for the first byte of the next request. False means close
    /// quietly: the peer closed, the deadline passed (logged as `why`), or the server is shutting
    /// down. One blocking read bounded by the deadline: shutdown ends it by shutting the socket's
    /// read side down (see `waiting`), so an idle connection never wakes on its own.
    fn await_request(&mut self, deadline: Instant, why: &str) -> bool {
        if !self.incoming.buf.is_empty() {
            return true;
        }
        if !self.registered.go_idle(&self.service.shutdown) {
            return false;
        }
        let got = self.incoming.fill(deadline);
        if !self.registered.go_busy() {
            // Shutdown claimed the connection while it waited; a request just begun is dropped
            // unanswered, as one arriving after the flag always was.
            return false;
        }
        match got {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) if is_timeout(&e) => {
                debug!("{}: {why}", self.peer);
                false
            }
            Err(e) => {
                debug!("{}: read failed while idle: {e}", self.peer);
                false
            }
        }
    }

    /// Reads the head (by `head_deadline`), asks admission, then reads the body (by `deadline`).
    fn read_request(
        &mut self,
        head_deadline: Instant,
        deadline: Instant,
    ) -> Result<(Received, Exchange), Reject> {
        let limits = &self.service.limits;
        self.reading_path = None;
        let head = self
            .incoming
            .read_head(limits.max_header_bytes, head_deadline)?;
        self.reading_path = Some(path_of(&head.target).to_string());
        if self.pool == Pool::Reserve && !(limits.reserved_route)(path_of(&head.target)) {
            debug!(
                "{}: only reserved routes are served on this slot",
                self.peer
            );
            return Err(Reject::Status(503));
        }
        let framing = body_framing(&head.headers)?;
        let wants_close = head.http10 || says_close(&head.headers);
        let mut exchange = Exchange {
            head_only: head.method == "HEAD",
            http10: head.http10,
            close: wants_close,
        };
        let client_cert_verified = self.incoming.src.client_cert_verified();
        let limit = match self.admit(&head, client_cert_verified) {
            Ok(limit) => limit.min(limits.max_body_bytes),
            Err(response) => {
                // The body stays unread, so the connection cannot carry another request.
                exchange.close |= framing.announces_body();
                return Ok((Received::Answer(head.method, response), exchange));
            }
        };
        framing.check_length(limit)?;
        let expect_continue = !head.http10
            && head.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("expect") && v.trim().eq_ignore_ascii_case("100-continue")
            });
        if expect_continue && framing.announces_body() {
            let io = &mut self.incoming.src;
            let sent = io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|()| io.flush());
            if sent.is_err() {
                return Err(Reject::Gone);
            }
        }
        let body = self
            .incoming
            .read_body(framing, limit, limits.max_header_bytes, deadline)?;
        let Head {
            method,
            target,
            headers,
            ..
        } = head;
        let request = Request {
            method,
            target,
            headers,
            body,
            peer: self.peer,
            client_cert_verified,
            socket: Some(Arc::clone(self.incoming.src.tcp())),
            connection: self.connection.clone(),
        };
        Ok((Received::Request(request), exchange))
    }

    /// Runs admission on `head`; a panic in it is a 500 (and the connection closed).
    fn admit(&self, head: &Head, client_cert_verified: bool) -> Result<usize, Response> {
        let view = RequestHead {
            method: &head.method,
            target: &head.target,
            headers: &head.headers,
            peer: self.peer,
            client_cert_verified,
        };
        let admit = &self.service.admit;
        catch_unwind(AssertUnwindSafe(|| admit(&view))).unwrap_or_else(|_| {
            warn!(
                "{}: admission panicked on a {} request",
                self.peer, head.method
            );
            Err(error_response(500).with_header("Connection", "close"))
        })
    }

    /// Writes the response; says whether the connection may carry another request.
    fn respond(&mut self, response: Response, exchange: &Exchange) -> Next {
        let Response {
            status,
            headers,
            body,
        } = response;
        let no_body = exchange.head_only || status_has_no_body(status);
        let raw_stream = exchange.http10 && !no_body && matches!(body, Body::Stream(_));
        let head = render_head(
            status,
            headers,
            // HTTP/1.0 has no chunked coding: the end of a streamed body is the connection's end.
            exchange.close || raw_stream,
            match &body {
                _ if no_body => None,
                Body::Full(bytes) => Some(Framing::Length(bytes.len())),
                Body::Stream(_) if raw_stream => None,
                Body::Stream(_) => Some(Framing::Chunked),
            },
        );
        let close = head.close;
        match body {
            Body::Full(bytes) => {
                let mut out = head.bytes;
                if !no_body {
                    out.extend_from_slice(&bytes);
                }
                if self
                    .incoming
                    .src
                    .write_all(&out)
                    .and_then(|()| self.incoming.src.flush())
                    .is_err()
                {
                    return Next::Abort;
                }
            }
            Body::Stream(produce) => {
                // Headers go out at once: an event stream may not produce its first chunk soon.
                if self
                    .incoming
                    .src
                    .write_all(&head.bytes)
                    .and_then(|()| self.incoming.src.flush())
                    .is_err()
                {
                    return Next::Abort;
                }
                if no_body {
                    return if close { Next::Close } else { Next::KeepAlive };
                }
                let mut writer = ChunkWriter::new(&mut self.incoming.src, !raw_stream);
                match catch_unwind(AssertUnwindSafe(|| produce(&mut writer))) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        debug!("{}: response stream ended with an error: {e}", self.peer);
                        return Next::Abort;
                    }
                    Err(_) => {
                        warn!("{}: response stream producer panicked", self.peer);
                        return Next::Abort;
                    }
                }
                if !raw_stream
                    && !writer.finished()
                    && self
                        .incoming
                        .src
                        .write_all(b"0\r\n\r\n")
                        .and_then(|()| self.incoming.src.flush())
                        .is_err()
                {
                    return Next::Abort;
                }
            }
        }
        if close { Next::Close } else { Next::KeepAlive }
    }
}

impl Exchange {
    /// For error responses sent before (or instead of) understanding the request.
    fn closing() -> Self {
        Exchange {
            head_only: false,
            http10: false,
            close: true,
        }
    }
}

/// The path of the request line at the start of `buf`, if that line is complete.
fn partial_head_path(buf: &[u8]) -> Option<String> {
    let mut slots = [httparse::EMPTY_HEADER; 0];
    let mut request = httparse::Request::new(&mut slots);
    let _ = request.parse(buf);
    request.path.map(|target| path_of(target).to_string())
}
