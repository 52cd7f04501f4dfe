//! The one small synchronous HTTP/1.1 server, shared by the relay, the built-in stub MCP server,
//! the ops endpoints and the loopback fakes in our tests.
//!
//! API CONTRACT
//!
//! - One accept thread; one thread per connection, capped at `Limits::max_connections` in all and
//!   `Limits::max_connections_per_peer` per peer address (a connection over a cap gets `503` and is
//!   closed; over TLS it is closed without a response, since answering would need a handshake on the
//!   accept thread, which never waits on a peer). The last `Limits::reserved_connections` slots only
//!   serve requests whose path `Limits::reserved_route` accepts (others get `503`), and such a
//!   connection closes after any error response, so the reserve cannot be parked on.
//! - A new connection must complete its TLS handshake and first request head within
//!   `header_timeout` (silent: closed without a word; partial head: 408); so must every later head,
//!   counted from its first byte.
//! - Admission: once a head is parsed, and before any body byte is read or `100 Continue` sent, the
//!   server asks the [`Admit`] function (default: admit everything) for the request's body limit, or
//!   for a response to send instead (401, 404, ...): then the body is not read and the connection
//!   closes if one was announced.
//! - Requests are parsed with `httparse` (never by hand). Bodies: `Content-Length` or
//!   `Transfer-Encoding: chunked` (chunk sizes via `httparse::parse_chunk_size`). Header block larger
//!   than `max_header_bytes` -> 431; body larger than the admitted limit (at most `max_body_bytes`)
//!   -> 413, from `Content-Length` before reading, or as chunks arrive; malformed -> 400; each
//!   then closes the connection. Both `Content-Length` and `Transfer-Encoding` -> 400; a transfer
//!   coding other than plain `chunked` -> 501 (or 400 if `chunked` is not last); a request not
//!   complete within `read_timeout` -> 408.
//! - Keep-alive (HTTP/1.1 default, `Connection: close` honoured; HTTP/1.0 always closes);
//!   `idle_timeout` between requests, `read_timeout` while a request is being read.
//! - Optional TLS through `rustls::ServerConfig`.
//! - `Server::shutdown` stops accepting, and returns once the accept thread has ended. Dropping a
//!   `Server` shuts it down the same way.
//! - Responses: the server owns framing. It drops any `Content-Length`/`Transfer-Encoding` the
//!   handler set and writes its own; a handler `Connection: close` closes after the response.
//!   `Body::Stream` is sent chunked (close-delimited to HTTP/1.0 clients).
//! - A panicking handler or admission function gets the client a 500 and the connection closed; a
//!   panicking `Body::Stream` producer gets the stream cut short (no terminating chunk) and the
//!   connection closed; either way the server keeps going. This holds in release builds too: the
//!   release profile unwinds (`panic = "unwind"` in Cargo.toml, checked by a test).
//!
//! Logging: per-connection events at debug level. Header values, targets and bodies are never
//! logged, since they may carry credentials.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};
use rustls::{ServerConnection, StreamOwned};

mod request_reader;
mod slots;

use request_reader::{Framing, Head, Incoming, READ_CHUNK, Reject, Source, Untimed, body_framing};
use slots::{Pool, Refusal, Slots, Taken};

/// How often an idle keep-alive connection wakes to notice a shutdown. Idle reads are cut into
/// slices this long; short enough that shutdown frees idle connections promptly, long enough to
/// cost nothing measurable.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// After an error response we half-close and keep reading (discarding) for at most this long, so
/// the kernel does not answer the peer's still-arriving bytes with a RST that would destroy the
/// response before the peer reads it.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// ... and for at most this many discarded bytes.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// Pause after an unexpected `accept` error (e.g. out of file descriptors) so the accept thread
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Time allowed for the self-connect that wakes the blocked accept thread on shutdown.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Self-connect attempts before shutdown gives up on joining the accept thread.
const WAKE_ATTEMPTS: usize = 3;

/// Bounds that keep a slow or hostile peer from exhausting the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent connections; one thread each. Default 256.
    pub max_connections: usize,
    /// Concurrent connections from one peer address (IPv4 address or IPv6 /64). Default: no
    /// separate cap (`usize::MAX`).
    pub max_connections_per_peer: usize,
    /// Of `max_connections`, slots kept for requests `reserved_route` accepts; at least one slot
    /// always stays general. Default 0.
    pub reserved_connections: usize,
    /// Which request paths (without the query) may use a reserved slot. Default: none.
    pub reserved_route: fn(&str) -> bool,
    /// Request line + headers. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Request body, the most any admission may allow. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Time allowed for a new connection's TLS handshake and first request head, and for each
    /// later request head from its first byte. Default 5 s.
    pub header_timeout: Duration,
    /// Time allowed to receive one whole request once its first byte arrived. Default 30 s.
    /// Also bounds how long a write may block on a peer that does not read.
    pub read_timeout: Duration,
    /// Time a kept-alive connection may sit idle between requests. Default 60 s.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_connections_per_peer: usize::MAX,
            reserved_connections: 0,
            reserved_route: |_| false,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
            header_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// One parsed request, body fully read.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// Path including the query string, as sent (`/v1/tunnels/x/poll?limit=3`).
    pub target: String,
    /// Header names as sent (case preserved), in order; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    /// The peer presented a TLS client certificate that the server's client-CA verifier
    /// accepted (always false without TLS or without a client CA).
    pub client_cert_verified: bool,
    /// A second handle on the connection's socket, for [`Request::peer_gone`].
    pub socket: Option<TcpStream>,
    /// The connection this request came on; says later whether it is still open and who closed it.
    pub connection: ConnectionHandle,
}

impl Request {
    /// Whether the peer has closed the connection (or it broke) while the handler worked — for
    /// long waits such as a long-poll, which should not hand work to a peer that is gone. Only
    /// meaningful while the request is being handled: the peer sends nothing else meanwhile, so
    /// anything readable is end-of-stream or unexpected bytes.
    pub fn peer_gone(&self) -> bool {
        let Some(socket) = &self.socket else {
            return false;
        };
        // The connection thread is inside the handler, so nobody else uses the socket now; the
        // blocking mode is restored before returning.
        if socket.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let gone = match socket.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        let restored = socket.set_nonblocking(false).is_ok();
        gone || !restored
    }

    /// First value of a header, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }
    /// The path without the query string.
    pub fn path(&self) -> &str {
        path_of(&self.target)
    }
    /// First value of a query parameter (percent-decoding of `%XX` and `+` applied).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let (_, query) = self.target.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }
}

/// A request as admission sees it: the head is read, the body (if any) is not.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Path including the query string, as sent.
    pub target: &'a str,
    pub headers: &'a [(String, String)],
    pub peer: SocketAddr,
    /// As [`Request::client_cert_verified`].
    pub client_cert_verified: bool,
}

impl RequestHead<'_> {
    /// First value of a header, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(self.headers, name)
    }
    /// The path without the query string.
    pub fn path(&self) -> &str {
        path_of(self.target)
    }
}

fn first_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn path_of(target: &str) -> &str {
    match target.split_once('?') {
        Some((path, _)) => path,
        None => target,
    }
}

/// Form-style decoding: `+` is a space, `%XX` a byte; a `%` not followed by two hex digits stays
/// literal. Bytes that do not form UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .map(|h| (hex_value(h[0]) << 4) | hex_value(h[1]));
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one ASCII hex digit (callers check `is_ascii_hexdigit` first).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Writes the chunks of a streamed (chunked transfer-encoding) response body.
pub struct ChunkWriter<'a> {
    inner: &'a mut dyn io::Write,
    /// False for HTTP/1.0 peers, which get the bytes raw and the end of the body by connection close.
    chunked: bool,
}

impl ChunkWriter<'_> {
    /// Sends one chunk and flushes it to the peer at once (SSE events must not sit in a buffer).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        // A zero-length chunk is the end-of-body marker; sending one would end the stream early.
        if bytes.is_empty() {
            return Ok(());
        }
        if self.chunked {
            // One write per chunk, so the size line and data leave in the same segment.
            let mut frame = Vec::with_capacity(bytes.len() + 20);
            frame.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
            frame.extend_from_slice(bytes);
            frame.extend_from_slice(b"\r\n");
            self.inner.write_all(&frame)?;
        } else {
            self.inner.write_all(bytes)?;
        }
        self.inner.flush()
    }
}

/// A streamed body producer. Returning `Ok` sends the terminating chunk; returning `Err` closes the
/// connection without it, so the peer sees the stream cut short.
pub type StreamBody = Box<dyn FnOnce(&mut ChunkWriter<'_>) -> io::Result<()> + Send>;

pub enum Body {
    /// Sent with `Content-Length`.
    Full(Vec<u8>),
    /// Sent with `Transfer-Encoding: chunked`.
    Stream(StreamBody),
}

pub struct Response {
    pub status: u16,
    /// Extra headers. The server adds `Content-Length`/`Transfer-Encoding`, `Date` is not added.
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    /// A response with a full body and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Full(body.into()),
        }
    }
    /// `Content-Type: application/json` with the given body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status, body).with_header("Content-Type", "application/json")
    }
    /// A chunked, streamed response (e.g. `text/event-stream`).
    pub fn stream(status: u16, headers: Vec<(String, String)>, body: StreamBody) -> Self {
        Response {
            status,
            headers,
            body: Body::Stream(body),
        }
    }
    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
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

/// The admission of [`Server::start`]: every request, up to `Limits::max_body_bytes`.
fn admit_all(_head: &RequestHead<'_>) -> Result<usize, Response> {
    Ok(usize::MAX)
}

/// State shared by the accept thread, the connection threads and the `Server` handle.
struct Shared {
    handler: Box<dyn Fn(Request) -> Response + Send + Sync>,
    admit: Box<dyn Admit>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: AtomicBool,
    /// Connections currently holding a thread (or about to get one), by pool and peer.
    slots: Slots,
}

/// A running server. Dropping it shuts it down like [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving on an already-bound listener (bind `127.0.0.1:0` for an ephemeral port).
    /// Every request is admitted with a body of up to `Limits::max_body_bytes`.
    pub fn start(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
        handler: impl Handler,
    ) -> io::Result<Server> {
        Server::start_with_admission(listener, tls, limits, admit_all, handler)
    }

    /// [`Server::start`], with `admit` deciding each request's body limit before its body is read.
    pub fn start_with_admission(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
        admit: impl Admit,
        handler: impl Handler,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        // The accept loop relies on blocking accepts (shutdown wakes it by connecting).
        listener.set_nonblocking(false)?;
        let slots = Slots::new(
            limits.max_connections,
            limits.reserved_connections,
            limits.max_connections_per_peer,
        );
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            admit: Box::new(admit),
            tls,
            limits,
            shutdown: AtomicBool::new(false),
            slots,
        });
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))?;
        debug!("http server listening on {addr}");
        Ok(Server {
            addr,
            shared,
            accept: Some(accept),
        })
    }
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Stops accepting new connections; returns when the accept thread has ended. Connections
    /// already open finish their current request and close.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(handle) = self.accept.take() else {
            return;
        };
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // The accept thread is blocked in accept(); a connection of our own wakes it up, and it
        // then sees the flag. A listener on the unspecified address is reached over loopback.
        let target = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.addr.port())
            }
            _ => self.addr,
        };
        let woken = (0..WAKE_ATTEMPTS).any(|_| {
            handle.is_finished()
                || match TcpStream::connect_timeout(&target, WAKE_TIMEOUT) {
                    Ok(_) => true,
                    Err(e) => {
                        debug!("shutdown wake-up connect to {target} failed: {e}");
                        false
                    }
                }
        });
        if woken || handle.is_finished() {
            if handle.join().is_err() {
                warn!("http accept thread panicked");
            }
        } else {
            // Joining now could block forever; the thread exits at its next accepted connection.
            warn!("could not wake the http accept thread on {target}; not waiting for it");
        }
        debug!("http server on {} stopped", self.addr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Releases a connection slot when the connection's thread ends (even by panic), or when the
/// thread could not be spawned.
struct Slot(Arc<Shared>, Taken);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.release(self.1);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) => {
                if shared.shutdown.load(Ordering::SeqCst) {
                    break;
                }
                match e.kind() {
                    // The peer gave up before we got to it, or a signal: nothing to wait out.
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => {}
                    _ => {
                        warn!("http accept failed: {e}");
                        thread::sleep(ACCEPT_ERROR_BACKOFF);
                    }
                }
                continue;
            }
        };
        // Either the wake-up connection from `stop`, or a client that arrived too late.
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let taken = match shared.slots.take(peer.ip()) {
            Ok(taken) => taken,
            Err(refusal) => {
                match refusal {
                    Refusal::Full => debug!(
                        "{peer}: connection refused, at the cap of {}",
                        shared.limits.max_connections
                    ),
                    Refusal::PeerCap => debug!(
                        "{peer}: connection refused, at the per-peer cap of {}",
                        shared.limits.max_connections_per_peer
                    ),
                }
                refuse_busy(tcp, shared.tls.is_some());
                continue;
            }
        };
        // The header deadline counts from here, so a thread that starts late costs the peer.
        let accepted = Instant::now();
        let slot = Slot(Arc::clone(&shared), taken);
        let spawned = thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                let slot = slot;
                serve_connection(tcp, peer, accepted, slot.1.pool, &slot.0);
            });
        // On failure the closure, and with it the slot, has been dropped: the count is restored.
        if let Err(e) = spawned {
            warn!("could not spawn a connection thread: {e}");
        }
    }
    debug!("http accept thread ending");
}

/// Answers a connection over the cap with 503 from the accept thread, without ever blocking it.
fn refuse_busy(tcp: TcpStream, tls: bool) {
    if tls {
        // A response would need a TLS handshake first, which can block; just close.
        return;
    }
    if tcp.set_nonblocking(true).is_err() {
        return;
    }
    // A fresh socket's send buffer takes this small response whole; if not, the peer loses it.
    let _ = (&tcp).write_all(&render_full(error_response(503), true));
    let _ = tcp.shutdown(Shutdown::Write);
    // Discard whatever the peer already sent, so closing with unread data does not send a RST
    // that could destroy the 503 before the peer reads it. Bounded: never wait here.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match (&tcp).read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// The connection's byte stream, plain or TLS, so that everything above shares one code path.
enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Transport {
    /// Whether the TLS peer presented a certificate the verifier accepted; rustls only keeps
    /// peer certificates that passed verification.
    fn client_cert_verified(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }

    /// Orderly close: TLS close_notify, FIN, then discard what the peer still sends for a while
    /// (see `LINGER_TIME`).
    fn close(mut self) {
        if let Transport::Tls(t) = &mut self {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
        linger(self.tcp());
    }

    /// Abrupt close: no close_notify, so a TLS peer also sees the stream cut short.
    fn abort(self) {
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
}

impl Source for Transport {
    /// Reads some bytes, failing with a timeout error once `deadline` has passed. The deadline is
    /// re-applied before every socket read (also those rustls makes internally), so a peer
    /// trickling bytes cannot stretch it.
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => {
                set_timeout_until(s, deadline)?;
                s.read(buf)
            }
            Transport::Tls(t) => {
                let t = &mut **t;
                let mut sock = DeadlineIo {
                    sock: &mut t.sock,
                    deadline,
                };
                match rustls::Stream::new(&mut t.conn, &mut sock).read(buf) {
                    // A TCP close without close_notify: for a request stream that is plain EOF.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                    other => other,
                }
            }
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}

/// A socket whose every read is bounded by a deadline; handed to rustls.
struct DeadlineIo<'a> {
    sock: &'a mut TcpStream,
    deadline: Instant,
}

impl Read for DeadlineIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        set_timeout_until(self.sock, self.deadline)?;
        self.sock.read(buf)
    }
}

impl Write for DeadlineIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// Sets the socket read timeout to the time left until `deadline`, or fails if none is left
/// (a zero timeout would mean "block forever").
fn set_timeout_until(sock: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    sock.set_read_timeout(Some(left))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    pool: Pool,
    shared: &Shared,
) {
    debug!("{peer}: connection opened");
    // Responses and stream chunks are written whole; don't let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    // A peer that does not drain its socket for as long as it may take to send a request is gone.
    if tcp
        .set_write_timeout(Some(shared.limits.read_timeout))
        .is_err()
    {
        return;
    }
    // The handshake and the first request head share one short deadline: a peer that connects and
    // says nothing gives its slot back soon.
    let first_head_deadline = later(accepted, shared.limits.header_timeout);
    let io = match &shared.tls {
        None => Transport::Plain(tcp),
        Some(config) => match tls_handshake(tcp, config, first_head_deadline) {
            Ok(t) => Transport::Tls(Box::new(t)),
            Err(e) => {
                debug!("{peer}: TLS handshake failed: {e}");
                return;
            }
        },
    };
    let mut conn = Conn {
        incoming: Incoming::new(io),
        peer,
        shared,
        pool,
        first_head_deadline: Some(first_head_deadline),
        connection: ConnectionHandle::default(),
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

/// `start + duration`; a duration too large to add (a configuration of centuries) counts as a
/// year, which is "never" for any connection.
fn later(start: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    start
        .checked_add(duration)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

/// Half-closes and reads (and discards) what the peer still sends, for at most `LINGER_TIME` and
/// `LINGER_MAX_BYTES`: closing with unread data would make the kernel send a reset, and the peer
/// could lose what we sent last (a response, or a TLS alert) before reading it.
fn linger(tcp: &TcpStream) {
    let _ = tcp.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIME;
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_MAX_BYTES {
        if set_timeout_until(tcp, deadline).is_err() {
            break;
        }
        match (&*tcp).read(&mut sink) {
            Ok(n) if n > 0 => discarded += n,
            _ => break,
        }
    }
}

/// Runs the TLS handshake. A failed one lingers before closing, so the alert rustls sent (an
/// unknown CA, a missing client certificate) reaches the peer instead of a reset.
fn tls_handshake(
    tcp: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    deadline: Instant,
) -> io::Result<StreamOwned<ServerConnection, TcpStream>> {
    let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        let mut sock = DeadlineIo {
            sock: &mut tls.sock,
            deadline,
        };
        let result = tls.conn.complete_io(&mut sock);
        match result {
            Ok((0, 0)) if tls.conn.is_handshaking() => {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(_) => {}
            Err(e) => {
                // The alert may still sit in rustls' buffer: send it, then linger.
                let mut sock = DeadlineIo {
                    sock: &mut tls.sock,
                    deadline,
                };
                let _ = tls.conn.write_tls(&mut sock);
                linger(&tls.sock);
                return Err(e);
            }
        }
    }
    Ok(tls)
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
    shared: &'s Shared,
    /// A reserve connection serves only requests of the reserved route class.
    pool: Pool,
    /// The first request's head must be complete by then (counted from the accept); later heads
    /// get `header_timeout` from their first byte.
    first_head_deadline: Option<Instant>,
    connection: ConnectionHandle,
}

impl Conn<'_> {
    fn serve_one(&mut self) -> Next {
        let limits = &self.shared.limits;
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
                self.respond(error_response(status), &Exchange::closing());
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
                let handler = &self.shared.handler;
                let response = match catch_unwind(AssertUnwindSafe(|| handler(request))) {
                    Ok(r) => r,
                    Err(_) => {
                        warn!("{}: handler panicked on a {method} request", self.peer);
                        exchange.close = true;
                        error_response(500)
                    }
                };
                (method, response)
            }
        };
        // A reserve slot is for working clients: one that is refused gives the slot back.
        exchange.close |= self.pool == Pool::Reserve && response.status >= 400;
        // Once shutdown is flagged, this is the connection's last response.
        exchange.close |= self.shared.shutdown.load(Ordering::SeqCst);
        let status = response.status;
        let next = self.respond(response, &exchange);
        debug!("{}: {method} -> {status}", self.peer);
        next
    }

    /// Waits, until `deadline`, for the first byte of the next request. False means close
    /// quietly: the peer closed, the deadline passed (logged as `why`), or the server is shutting
    /// down.
    fn await_request(&mut self, deadline: Instant, why: &str) -> bool {
        if !self.incoming.buf.is_empty() {
            return true;
        }
        loop {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                debug!("{}: {why}", self.peer);
                return false;
            }
            match self.incoming.fill(deadline.min(later(now, IDLE_POLL))) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    debug!("{}: read failed while idle: {e}", self.peer);
                    return false;
                }
            }
        }
    }

    /// Reads the head (by `head_deadline`), asks admission, then reads the body (by `deadline`).
    fn read_request(
        &mut self,
        head_deadline: Instant,
        deadline: Instant,
    ) -> Result<(Received, Exchange), Reject> {
        let limits = &self.shared.limits;
        let head = self
            .incoming
            .read_head(limits.max_header_bytes, head_deadline)?;
        if self.pool == Pool::Reserve && !(limits.reserved_route)(path_of(&head.target)) {
            debug!(
                "{}: only reserved routes are served on this slot",
                self.peer
            );
            return Err(Reject::Status(503));
        }
        let framing = body_framing(&head.headers)?;
        let wants_close = head.http10
            || head
                .headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("connection") && has_token(v, "close"));
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
            socket: self.incoming.src.tcp().try_clone().ok(),
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
        let admit = &self.shared.admit;
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
                let mut writer = ChunkWriter {
                    inner: &mut self.incoming.src,
                    chunked: !raw_stream,
                };
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

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

struct RenderedHead {
    bytes: Vec<u8>,
    /// Whether the connection closes after this response.
    close: bool,
}

/// Status line and headers. The handler's framing headers are replaced by `framing`; when closing
/// we make sure the peer is told so.
fn render_head(
    status: u16,
    headers: Vec<(String, String)>,
    close: bool,
    framing: Option<Framing>,
) -> RenderedHead {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        warn!("handler returned invalid status {status}; sending 500");
        500
    };
    let handler_close = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("connection") && has_token(v, "close"));
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in &headers {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        // Framing is ours; a handler `Connection` other than close would contradict our close.
        if is("content-length")
            || is("transfer-encoding")
            || (close && !handler_close && is("connection"))
        {
            continue;
        }
        if !crate::headers::is_writable(name, value) {
            // The name may be what is wrong with it, so do not echo it either.
            warn!("dropping a response header that is not valid HTTP");
            continue;
        }
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    if close && !handler_close {
        out.push_str("Connection: close\r\n");
    }
    match framing {
        Some(Framing::Length(len)) => out.push_str(&format!("Content-Length: {len}\r\n")),
        Some(Framing::Chunked) => out.push_str("Transfer-Encoding: chunked\r\n"),
        None => {}
    }
    out.push_str("\r\n");
    RenderedHead {
        bytes: out.into_bytes(),
        close: close || handler_close,
    }
}

/// A whole `Body::Full` response as bytes (for the accept thread's 503).
fn render_full(response: Response, close: bool) -> Vec<u8> {
    let Body::Full(body) = response.body else {
        return Vec::new();
    };
    let no_body = status_has_no_body(response.status);
    let framing = (!no_body).then_some(Framing::Length(body.len()));
    let mut out = render_head(response.status, response.headers, close, framing).bytes;
    if !no_body {
        out.extend_from_slice(&body);
    }
    out
}

/// The server's own error responses, in the JSON error shape the rest of the project uses.
fn error_response(status: u16) -> Response {
    let (message, kind, code) = match status {
        400 => ("malformed request", "invalid_request_error", "bad_request"),
        408 => (
            "request not received in time",
            "invalid_request_error",
            "request_timeout",
        ),
        413 => (
            "request body too large",
            "invalid_request_error",
            "request_body_too_large",
        ),
        431 => (
            "request header fields too large",
            "invalid_request_error",
            "request_header_fields_too_large",
        ),
        501 => (
            "transfer coding not supported",
            "invalid_request_error",
            "not_implemented",
        ),
        503 => ("server busy", "server_error", "server_busy"),
        _ => ("internal server error", "server_error", "internal_error"),
    };
    Response::json(
        status,
        format!(r#"{{"error":{{"message":"{message}","type":"{kind}","code":"{code}"}}}}"#),
    )
}

/// What [`fuzz_read_request`] made of its input.
#[doc(hidden)]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FuzzSummary {
    /// Requests read completely (head and body), one after another as if pipelined.
    pub requests: usize,
    /// Body bytes of those requests.
    pub body_bytes: usize,
    /// The status a bad request is answered with; `None` when the input ended (cleanly or
    /// mid-request).
    pub rejected: Option<u16>,
}

/// For the fuzzer: reads requests (head, then a `Content-Length` or chunked body, default
/// [`Limits`]) from `data` as the server reads them off a connection, without sockets or threads.
#[doc(hidden)]
pub fn fuzz_read_request(data: &[u8]) -> FuzzSummary {
    let limits = Limits::default();
    let mut incoming = Incoming::new(Untimed(data));
    // In-memory input never times out; the deadline only satisfies the reader's signature.
    let deadline = later(Instant::now(), limits.read_timeout);
    let mut summary = FuzzSummary::default();
    loop {
        if incoming.buf.is_empty() && !matches!(incoming.fill(deadline), Ok(n) if n > 0) {
            return summary;
        }
        let read = incoming
            .read_head(limits.max_header_bytes, deadline)
            .and_then(|head| {
                let framing = body_framing(&head.headers)?;
                incoming.read_body(
                    framing,
                    limits.max_body_bytes,
                    limits.max_header_bytes,
                    deadline,
                )
            });
        match read {
            Ok(body) => {
                summary.requests += 1;
                summary.body_bytes += body.len();
            }
            Err(Reject::Status(status)) => {
                summary.rejected = Some(status);
                return summary;
            }
            Err(Reject::Gone) => return summary,
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

// ---------------------------------------------------------------------------------------------
// Connection liveness (used by the relay to notice that a tunnel client vanished)

/// A cheap, clonable view of one connection's life: open, or how it ended. The relay keeps the
/// handles of a client's recent requests; when every one of them was closed by the peer, the
/// client process is most likely gone (the kernel closes a killed process's sockets).
#[derive(Clone, Debug, Default)]
pub struct ConnectionHandle(Arc<OnceLock<ConnectionEnd>>);

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionEnd {
    pub at: Instant,
    /// The peer closed it (end of stream or reset). False when we closed it (idle timeout,
    /// shutdown, an error response, a peer that did not read): that says nothing about the peer.
    pub by_peer: bool,
}

impl ConnectionHandle {
    pub fn is_open(&self) -> bool {
        self.0.get().is_none()
    }

    /// `None` while the connection is open.
    pub fn end(&self) -> Option<ConnectionEnd> {
        self.0.get().copied()
    }

    /// Whether both handles are of the same connection.
    pub fn same_as(&self, other: &ConnectionHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Records the end (once; later calls change nothing). Public for tests of code that
    /// tracks handles.
    pub fn mark_closed(&self, by_peer: bool) {
        let _ = self.0.set(ConnectionEnd {
            at: Instant::now(),
            by_peer,
        });
    }
}

/// Whether the peer has closed its side: reading without blocking finds end-of-stream or a reset
/// (bytes still unread are discarded; the connection is ending anyway). Bounded: a peer that
/// keeps sending is not closed.
fn peer_closed(tcp: &TcpStream) -> bool {
    if tcp.set_nonblocking(true).is_err() {
        return false;
    }
    let mut sink = [0u8; 4096];
    let mut closed = false;
    for _ in 0..16 {
        match (&*tcp).read(&mut sink) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                closed = e.kind() != io::ErrorKind::WouldBlock;
                break;
            }
        }
    }
    let _ = tcp.set_nonblocking(false);
    closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc;

    /// Upper bound for any single client read/write, so a broken server fails a test instead of
    /// hanging it.
    const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

    fn start(limits: Limits, handler: impl Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Server::start(listener, None, limits, handler).unwrap()
    }

    /// Everything the server sends until it closes the connection (a read timeout fails).
    fn read_until_closed(stream: &mut TcpStream) -> String {
        let mut raw = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => panic!("server did not close the connection"),
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&raw).into_owned()
    }

    fn connect(server: &Server) -> TcpStream {
        let stream = TcpStream::connect(server.local_addr()).unwrap();
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream
    }

    /// Echoes what the server parsed, so tests can check parsing end to end.
    fn echo(req: Request) -> Response {
        let text = format!(
            "{} {} q={:?} h={:?} body={}",
            req.method,
            req.path(),
            req.query_param("name"),
            req.header("x-test"),
            String::from_utf8_lossy(&req.body)
        );
        Response::new(200, text)
            .with_header("X-Reply", "yes")
            // Framing is the server's: these two must not reach the wire.
            .with_header("Content-Length", "999")
            .with_header("Transfer-Encoding", "gzip")
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// Appends at least one byte from `r` to `buf`; panics at EOF (reads are bounded by the
    /// socket timeout).
    fn more(r: &mut impl Read, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).expect("read from server");
        assert!(
            n > 0,
            "unexpected EOF; have {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }

    /// Reads one response. `buf` carries bytes across calls on the same connection.
    /// `head_only` is for replies to HEAD, which have no body whatever the headers say.
    fn read_reply_from(r: &mut impl Read, buf: &mut Vec<u8>, head_only: bool) -> Reply {
        let (len, status, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = resp.parse(buf).unwrap() {
                let headers = resp
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8(h.value.to_vec()).unwrap();
                        (h.name.to_string(), value)
                    })
                    .collect();
                break (len, resp.code.unwrap(), headers);
            }
            more(r, buf);
        };
        buf.drain(..len);
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status_has_no_body(status) {
            return reply;
        }
        if reply.header("transfer-encoding") == Some("chunked") {
            loop {
                let (line, size) = loop {
                    if let httparse::Status::Complete(found) =
                        httparse::parse_chunk_size(buf).unwrap()
                    {
                        break found;
                    }
                    more(r, buf);
                };
                let size = usize::try_from(size).unwrap();
                while buf.len() < line + size + 2 {
                    more(r, buf);
                }
                reply.body.extend_from_slice(&buf[line..line + size]);
                assert_eq!(&buf[line + size..line + size + 2], b"\r\n");
                buf.drain(..line + size + 2);
                if size == 0 {
                    return reply;
                }
            }
        }
        if let Some(len) = reply.header("content-length") {
            let len: usize = len.parse().unwrap();
            while buf.len() < len {
                more(r, buf);
            }
            reply.body = buf.drain(..len).collect();
            return reply;
        }
        // Close-delimited.
        r.read_to_end(buf).unwrap();
        reply.body = std::mem::take(buf);
        reply
    }

    fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Reply {
        read_reply_from(stream, buf, false)
    }

    /// Sends raw bytes on a fresh connection and reads one response.
    fn exchange(server: &Server, raw: &[u8]) -> (Reply, TcpStream) {
        let mut stream = connect(server);
        stream.write_all(raw).unwrap();
        let reply = read_reply(&mut stream, &mut Vec::new());
        (reply, stream)
    }

    /// True once the server has closed the connection (EOF, or a reset).
    fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut sink = [0u8; 64];
        match stream.read(&mut sink) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !is_timeout(&e),
        }
    }

    fn small_limits() -> Limits {
        Limits {
            max_connections: 8,
            max_header_bytes: 512,
            max_body_bytes: 16,
            read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            ..Limits::default()
        }
    }

    /// The connection handle a request carries tells a peer's close from the server's own.
    #[test]
    fn connection_handle_tells_who_closed() {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let limits = Limits {
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let server = start(limits, move |req: Request| {
            let _ = tx.lock().unwrap().send(req.connection.clone());
            Response::new(200, "ok")
        });
        let wait_closed = |handle: &ConnectionHandle| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while handle.is_open() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            handle.end().expect("the connection ended")
        };
        // The peer closes.
        let mut peer = connect(&server);
        peer.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut peer, &mut Vec::new()).status, 200);
        let handle = rx.recv().unwrap();
        assert!(handle.is_open());
        drop(peer);
        assert!(wait_closed(&handle).by_peer);
        // The server closes an idle connection itself.
        let mut idle = connect(&server);
        idle.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut idle, &mut Vec::new()).status, 200);
        let handle = rx.recv().unwrap();
        assert!(!wait_closed(&handle).by_peer);
        assert!(closed_by_server(&mut idle));
    }

    fn request_with(target: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
            client_cert_verified: false,
            socket: None,
            connection: ConnectionHandle::default(),
        }
    }

    #[test]
    fn request_accessors() {
        let req = request_with(
            "/v1/x?name=a%20b+c&bad=%zz%4&utf=%e2%82%AC&flag&name=second",
            &[("X-Token", "one"), ("x-token", "two")],
        );
        assert_eq!(req.path(), "/v1/x");
        assert_eq!(req.header("x-TOKEN"), Some("one"));
        assert_eq!(req.header("missing"), None);
        assert_eq!(req.query_param("name").as_deref(), Some("a b c"));
        assert_eq!(req.query_param("bad").as_deref(), Some("%zz%4"));
        assert_eq!(req.query_param("utf").as_deref(), Some("€"));
        assert_eq!(req.query_param("flag").as_deref(), Some(""));
        assert_eq!(req.query_param("nope"), None);
        assert_eq!(request_with("/plain", &[]).path(), "/plain");
        assert_eq!(request_with("/plain", &[]).query_param("a"), None);
    }

    #[test]
    fn defaults_and_reason_phrases() {
        let limits = Limits::default();
        assert_eq!(limits.max_connections, 256);
        assert_eq!(limits.max_header_bytes, 16 * 1024);
        assert_eq!(limits.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(limits.read_timeout, Duration::from_secs(30));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.header_timeout, Duration::from_secs(5));
        assert_eq!(limits.max_connections_per_peer, usize::MAX);
        assert_eq!(limits.reserved_connections, 0);
        assert!(!(limits.reserved_route)("/anything"));
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(599), "Unknown");
    }

    #[test]
    fn get_and_post_with_content_length() {
        let server = start(small_limits(), echo);
        let (reply, _) = exchange(
            &server,
            b"GET /hello?name=a%20b+c HTTP/1.1\r\nHost: x\r\nX-TEST: v\r\n\r\n",
        );
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.text(),
            r#"GET /hello q=Some("a b c") h=Some("v") body="#
        );
        assert_eq!(reply.header("x-reply"), Some("yes"));
        let length = reply.body.len().to_string();
        assert_eq!(reply.header("content-length"), Some(length.as_str()));
        let lengths = reply
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        assert_eq!(lengths.count(), 1);
        assert_eq!(reply.header("transfer-encoding"), None);

        let (reply, _) = exchange(
            &server,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "POST /echo q=None h=None body=hello");
        server.shutdown();
    }

    #[test]
    fn chunked_request_body_with_extensions_and_trailers() {
        let server = start(small_limits(), echo);
        let mut stream = connect(&server);
        stream
            .write_all(
                b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            )
            .unwrap();
        let mut buf = Vec::new();
        let reply = read_reply(&mut stream, &mut buf);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "POST /c q=None h=None body=hello world");
        // The trailer section was consumed exactly: the next request parses cleanly.
        stream.write_all(b"GET /after HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
        server.shutdown();
    }

    #[test]
    fn keep_alive_pipelining_and_close() {
        let server = start(small_limits(), echo);
        let mut stream = connect(&server);
        let mut buf = Vec::new();
        stream.write_all(b"GET /one HTTP/1.1\r\n\r\n").unwrap();
        let first = read_reply(&mut stream, &mut buf);
        assert_eq!((first.status, first.header("connection")), (200, None));
        // Two requests in one write.
        stream
            .write_all(b"GET /two HTTP/1.1\r\n\r\nGET /three HTTP/1.1\r\n\r\n")
            .unwrap();
        assert!(
            read_reply(&mut stream, &mut buf)
                .text()
                .starts_with("GET /two ")
        );
        assert!(
            read_reply(&mut stream, &mut buf)
                .text()
                .starts_with("GET /three ")
        );
        stream
            .write_all(b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let last = read_reply(&mut stream, &mut buf);
        assert_eq!(last.header("connection"), Some("close"));
        assert!(closed_by_server(&mut stream));

        // HTTP/1.0 closes by default.
        let (reply, mut stream) = exchange(&server, b"GET /old HTTP/1.0\r\n\r\n");
        assert_eq!(reply.status, 200);
        assert!(closed_by_server(&mut stream));
        server.shutdown();
    }

    #[test]
    fn head_and_no_content_have_no_body() {
        let server = start(small_limits(), |req: Request| {
            if req.path() == "/empty" {
                Response::new(204, "ignored")
            } else {
                Response::new(200, "some body")
            }
        });
        let mut stream = connect(&server);
        let mut buf = Vec::new();
        stream.write_all(b"HEAD /x HTTP/1.1\r\n\r\n").unwrap();
        let head = read_reply_from(&mut stream, &mut buf, true);
        assert_eq!((head.status, head.header("content-length")), (200, None));
        stream.write_all(b"GET /empty HTTP/1.1\r\n\r\n").unwrap();
        let empty = read_reply(&mut stream, &mut buf);
        assert_eq!((empty.status, empty.header("content-length")), (204, None));
        // No stray body bytes were sent: the next response starts right at the status line.
        stream.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut stream, &mut buf).text(), "some body");
        server.shutdown();
    }

    #[test]
    fn expect_100_continue() {
        let server = start(small_limits(), echo);
        let mut stream = connect(&server);
        stream
            .write_all(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
            .unwrap();
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        let mut buf = Vec::new();
        while buf.len() < interim.len() {
            more(&mut stream, &mut buf);
        }
        assert_eq!(&buf[..interim.len()], interim);
        buf.drain(..interim.len());
        stream.write_all(b"body").unwrap();
        assert!(
            read_reply(&mut stream, &mut buf)
                .text()
                .ends_with("body=body")
        );
        server.shutdown();
    }

    #[test]
    fn oversize_body_gets_413() {
        let server = start(small_limits(), echo);
        let expected = r#"{"error":{"message":"request body too large","type":"invalid_request_error","code":"request_body_too_large"}}"#;
        let (reply, mut stream) = exchange(
            &server,
            b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n12345678901234567",
        );
        assert_eq!(reply.status, 413);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("connection"), Some("close"));
        assert_eq!(reply.text(), expected);
        assert!(closed_by_server(&mut stream));

        let (reply, mut stream) = exchange(
            &server,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n9\r\n123456789\r\n0\r\n\r\n",
        );
        assert_eq!((reply.status, reply.text().as_str()), (413, expected));
        assert!(closed_by_server(&mut stream));
        server.shutdown();
    }

    #[test]
    fn oversize_headers_get_431() {
        let server = start(small_limits(), echo);
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1000));
        let (reply, mut stream) = exchange(&server, big.as_bytes());
        assert_eq!(reply.status, 431);
        assert!(closed_by_server(&mut stream));
        server.shutdown();
    }

    #[test]
    fn malformed_requests_get_400() {
        let server = start(small_limits(), echo);
        for raw in [
            &b"\x01\x02 garbage\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let (reply, mut stream) = exchange(&server, raw);
            assert_eq!(reply.status, 400, "for {:?}", String::from_utf8_lossy(raw));
            assert!(closed_by_server(&mut stream));
        }
        server.shutdown();
    }

    #[test]
    fn slow_request_gets_408() {
        let limits = Limits {
            read_timeout: Duration::from_millis(300),
            ..small_limits()
        };
        let server = start(limits, echo);
        // Never finishes its header block.
        let (reply, mut stream) = exchange(&server, b"GET / HTTP/1.1\r\nHost:");
        assert_eq!(reply.status, 408);
        assert!(closed_by_server(&mut stream));
        server.shutdown();
    }

    #[test]
    fn streamed_response_arrives_chunk_by_chunk() {
        // The producer waits for the test between chunks: the first chunk can only be read in
        // time if it was flushed on its own.
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(Some(go_rx));
        let server = start(small_limits(), move |req: Request| {
            let Some(go) = go_rx
                .lock()
                .unwrap()
                .take()
                .filter(|_| req.path() == "/events")
            else {
                return Response::new(200, "plain");
            };
            Response::stream(
                200,
                vec![
                    ("Content-Type".into(), "text/event-stream".into()),
                    ("Content-Length".into(), "999".into()),
                ],
                Box::new(move |w| {
                    w.send(b"data: one\n\n")?;
                    w.send(b"")?;
                    go.recv_timeout(CLIENT_TIMEOUT).map_err(io::Error::other)?;
                    w.send(b"data: two\n\n")
                }),
            )
        });
        let mut stream = connect(&server);
        stream.write_all(b"GET /events HTTP/1.1\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        let first_chunk = b"b\r\ndata: one\n\n\r\n";
        while !raw.ends_with(first_chunk) {
            more(&mut stream, &mut raw);
        }
        let head = String::from_utf8_lossy(&raw).into_owned();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Transfer-Encoding: chunked\r\n"));
        assert!(!head.to_ascii_lowercase().contains("content-length"));
        go_tx.send(()).unwrap();
        let rest = b"b\r\ndata: two\n\n\r\n0\r\n\r\n";
        let before = raw.len();
        while raw.len() < before + rest.len() {
            more(&mut stream, &mut raw);
        }
        assert_eq!(&raw[before..], rest);
        // Kept alive after the stream.
        stream.write_all(b"GET /again HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        let reply = read_reply(&mut stream, &mut buf);
        assert_eq!(reply.status, 200);
        server.shutdown();
    }

    #[test]
    fn large_body_and_http10_stream() {
        let server = start(Limits::default(), |req: Request| {
            if req.method == "POST" {
                let sum: u64 = req.body.iter().map(|&b| u64::from(b)).sum();
                return Response::new(200, format!("{} {sum}", req.body.len()));
            }
            Response::stream(200, Vec::new(), Box::new(|w| w.send(b"raw bytes")))
        });
        let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        let expected_sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
        let mut stream = connect(&server);
        let head = format!(
            "POST /big HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let reply = read_reply(&mut stream, &mut Vec::new());
        assert_eq!(reply.text(), format!("{} {expected_sum}", body.len()));

        // HTTP/1.0 has no chunked coding: the body is raw and ends with the connection.
        let (reply, _) = exchange(&server, b"GET /s HTTP/1.0\r\n\r\n");
        assert_eq!(reply.header("transfer-encoding"), None);
        assert_eq!(reply.header("connection"), Some("close"));
        assert_eq!(reply.text(), "raw bytes");
        server.shutdown();
    }

    #[test]
    fn stream_error_truncates_the_body() {
        let server = start(small_limits(), |_req: Request| {
            Response::stream(
                200,
                Vec::new(),
                Box::new(|w| {
                    w.send(b"partial")?;
                    Err(io::Error::other("upstream gone"))
                }),
            )
        });
        let mut stream = connect(&server);
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let text = read_until_closed(&mut stream);
        assert!(text.ends_with("\r\n\r\n7\r\npartial\r\n"), "got {text:?}");
        assert!(!text.contains("\r\n0\r\n"));
        server.shutdown();
    }

    #[test]
    fn handler_panic_gets_500_and_server_survives() {
        let server = start(small_limits(), |req: Request| {
            if req.path() == "/panic" {
                panic!("test handler panic (expected)");
            }
            Response::new(200, "fine")
        });
        let (reply, mut stream) = exchange(&server, b"GET /panic HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 500);
        assert!(closed_by_server(&mut stream));
        let (reply, _) = exchange(&server, b"GET /ok HTTP/1.1\r\n\r\n");
        assert_eq!((reply.status, reply.text().as_str()), (200, "fine"));
        server.shutdown();
    }

    #[test]
    fn connection_cap_gives_503() {
        let limits = Limits {
            max_connections: 1,
            ..small_limits()
        };
        let server = start(limits, echo);
        // A proves it holds the only slot by getting an answer, then stays open.
        let mut a = connect(&server);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut a, &mut Vec::new()).status, 200);

        let mut b = connect(&server);
        let busy = read_reply(&mut b, &mut Vec::new());
        assert_eq!(busy.status, 503);
        assert!(busy.text().contains("server_busy"));
        assert!(closed_by_server(&mut b));

        // Once A leaves, its slot is released. The slot frees asynchronously, so poll for it
        // under a deadline.
        drop(a);
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            let (reply, _) = exchange(&server, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
            if reply.status == 200 {
                break;
            }
            assert_eq!(reply.status, 503);
            assert!(Instant::now() < deadline, "slot never released");
            thread::sleep(Duration::from_millis(10));
        }
        server.shutdown();
    }

    #[test]
    fn shutdown_is_prompt_and_closes_idle_connections() {
        let limits = Limits {
            idle_timeout: Duration::from_secs(600),
            ..small_limits()
        };
        let server = start(limits, echo);
        let addr = server.local_addr();
        let mut idle = connect(&server);
        idle.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut idle, &mut Vec::new()).status, 200);

        let (done_tx, done_rx) = mpsc::channel();
        let started = Instant::now();
        thread::spawn(move || {
            server.shutdown();
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("shutdown did not return promptly");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The listener is gone...
        assert!(TcpStream::connect(addr).is_err());
        // ...and the idle keep-alive connection is closed (long before its idle timeout).
        assert!(closed_by_server(&mut idle));
    }

    #[test]
    fn drop_stops_the_server() {
        let server = start(small_limits(), echo);
        let addr = server.local_addr();
        drop(server);
        assert!(TcpStream::connect(addr).is_err());
    }

    /// Test-only self-signed certificate for `localhost`/127.0.0.1 (P-256, valid 2000-2999).
    /// Its key protects nothing.
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBfjCCASOgAwIBAgIUQVp1FEIcvul967iK5XxJluMW70UwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTAwMDEwMTAwMDAwMFoYDzI5OTkxMjMx
MDAwMDAwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQToM4d6oo9jLxhf7Fay/WNQbrRaWK91+a3Fk61YMNHgckIrErj0Rup
uVRvIyQ/ESlgphYa6v60XTadf+fHAazTo1EwTzAaBgNVHREEEzARgglsb2NhbGhv
c3SHBH8AAAEwDAYDVR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMCB4AwEwYDVR0lBAww
CgYIKwYBBQUHAwEwCgYIKoZIzj0EAwIDSQAwRgIhAMCm5OG7Q+GROeKN9fR5MbhC
TqQO2LuOh0Q+CxQq1SaWAiEAhyeJv326KDu6lCyK7t7gPJsCB46jYf3WKnaP4+pN
K+w=
-----END CERTIFICATE-----
";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgF5WsE/x+khkYOXgH
ok/kQvF0FryzmjaaP21Y6uSMpSuhRANCAAQToM4d6oo9jLxhf7Fay/WNQbrRaWK9
1+a3Fk61YMNHgckIrErj0RupuVRvIyQ/ESlgphYa6v60XTadf+fHAazT
-----END PRIVATE KEY-----
";

    #[test]
    fn tls_requests_and_failed_handshake() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server::start(
            listener,
            Some(Arc::new(server_config)),
            small_limits(),
            echo,
        )
        .unwrap();

        // A client that does not speak TLS is dropped, and the server carries on.
        let mut plain = connect(&server);
        plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut sink = Vec::new();
        match plain.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) => assert!(!is_timeout(&e), "server kept a failed handshake open"),
        }

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(client_config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, connect(&server));
        let mut buf = Vec::new();
        tls.write_all(b"POST /a?name=x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
            .unwrap();
        let reply = read_reply_from(&mut tls, &mut buf, false);
        assert_eq!(reply.text(), r#"POST /a q=Some("x") h=None body=hi"#);
        // Keep-alive over TLS.
        tls.write_all(b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let reply = read_reply_from(&mut tls, &mut buf, false);
        assert_eq!(reply.status, 200);
        assert!(reply.text().starts_with("GET /b "));
        server.shutdown();
    }

    /// Admits `/open` with a 4-byte body limit; refuses everything else with 401 before its body.
    fn admit_open_only(head: &RequestHead<'_>) -> Result<usize, Response> {
        match head.path() {
            "/open" => Ok(4),
            "/boom" => panic!("test admission panic (expected)"),
            _ => Err(Response::new(401, "no key")),
        }
    }

    fn start_admitting(limits: Limits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Server::start_with_admission(listener, None, limits, admit_open_only, echo).unwrap()
    }

    #[test]
    fn refused_admission_answers_before_the_body_and_closes() {
        let server = start_admitting(small_limits());
        // Only the head of a huge body is sent: the answer must come without waiting for it.
        let (reply, mut stream) = exchange(
            &server,
            b"POST /x HTTP/1.1\r\nContent-Length: 30000000\r\n\r\n",
        );
        assert_eq!((reply.status, reply.text().as_str()), (401, "no key"));
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(closed_by_server(&mut stream));
        // No 100 Continue for a refused request: the first bytes are the 401.
        let (reply, _) = exchange(
            &server,
            b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(reply.status, 401);
        // Without a body the connection may stay open.
        let mut stream = connect(&server);
        let mut buf = Vec::new();
        stream.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut stream, &mut buf).status, 401);
        stream.write_all(b"GET /open HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
        server.shutdown();
    }

    #[test]
    fn admitted_limit_gives_413_before_reading_and_while_chunked() {
        let server = start_admitting(small_limits());
        let (reply, mut stream) = exchange(
            &server,
            b"POST /open HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(reply.status, 413);
        assert!(closed_by_server(&mut stream));
        let (reply, _) = exchange(
            &server,
            b"POST /open HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!(reply.status, 413);
        let (reply, _) = exchange(
            &server,
            b"POST /open HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
        );
        assert_eq!(
            (reply.status, reply.text().ends_with("body=abcd")),
            (200, true)
        );
        // A panicking admission is a 500, and the server carries on.
        let (reply, mut stream) = exchange(&server, b"GET /boom HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 500);
        assert!(closed_by_server(&mut stream));
        let (reply, _) = exchange(&server, b"GET /open HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 200);
        server.shutdown();
    }

    #[test]
    fn header_timeout_closes_silent_connections_and_408s_slow_heads() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(60),
            ..small_limits()
        };
        let server = start(limits, echo);
        let started = Instant::now();
        let mut silent = connect(&server);
        assert!(closed_by_server(&mut silent), "silent connection kept open");
        assert!(started.elapsed() < Duration::from_secs(5));
        let (reply, _) = exchange(&server, b"GET / HTTP/1.1\r\nHost:");
        assert_eq!(reply.status, 408);
        // A kept-alive connection may idle longer than the header timeout between requests.
        let mut stream = connect(&server);
        let mut buf = Vec::new();
        stream.write_all(b"GET /a HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
        thread::sleep(Duration::from_millis(600));
        stream.write_all(b"GET /b HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
        server.shutdown();
    }

    #[test]
    fn reserved_slots_serve_only_the_reserved_route() {
        let limits = Limits {
            max_connections: 2,
            reserved_connections: 1,
            reserved_route: |path| path.starts_with("/ctl"),
            ..small_limits()
        };
        let server = start(limits, echo);
        // A takes the only general slot and proves it by an answer.
        let mut a = connect(&server);
        a.write_all(b"GET /any HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut a, &mut Vec::new()).status, 200);
        // B lands in the reserve: another route is refused.
        let (reply, mut b) = exchange(&server, b"GET /any HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 503);
        assert!(closed_by_server(&mut b));
        // C lands in the reserve too (B's slot frees asynchronously: retry under a deadline).
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            let (reply, _) = exchange(
                &server,
                b"GET /ctl/poll HTTP/1.1\r\nConnection: close\r\n\r\n",
            );
            if reply.status == 200 {
                break;
            }
            assert_eq!(reply.status, 503);
            assert!(Instant::now() < deadline, "reserve slot never served /ctl");
            thread::sleep(Duration::from_millis(10));
        }
        drop(a);
        server.shutdown();
    }

    #[test]
    fn per_peer_cap_gives_503() {
        let limits = Limits {
            max_connections_per_peer: 1,
            ..small_limits()
        };
        let server = start(limits, echo);
        let mut a = connect(&server);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut a, &mut Vec::new()).status, 200);
        let mut b = connect(&server);
        let busy = read_reply(&mut b, &mut Vec::new());
        assert_eq!(busy.status, 503);
        server.shutdown();
    }

    #[test]
    fn stream_producer_panic_cuts_the_stream_and_server_survives() {
        let server = start(small_limits(), |req: Request| {
            if req.path() != "/panic" {
                return Response::new(200, "fine");
            }
            Response::stream(
                200,
                Vec::new(),
                Box::new(|w| {
                    w.send(b"partial")?;
                    panic!("test stream producer panic (expected)");
                }),
            )
        });
        let mut stream = connect(&server);
        stream.write_all(b"GET /panic HTTP/1.1\r\n\r\n").unwrap();
        let text = read_until_closed(&mut stream);
        assert!(text.ends_with("\r\n\r\n7\r\npartial\r\n"), "got {text:?}");
        let (reply, _) = exchange(&server, b"GET /ok HTTP/1.1\r\n\r\n");
        assert_eq!((reply.status, reply.text().as_str()), (200, "fine"));
        server.shutdown();
    }

    /// The panic promises above only hold in release builds if they unwind: `panic = "abort"`
    /// would end the whole process at the first panic.
    #[test]
    fn release_profile_unwinds_on_panic() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let manifest: toml::Table = text.parse().unwrap();
        let panic = manifest
            .get("profile")
            .and_then(|p| p.get("release"))
            .and_then(|r| r.get("panic"))
            .and_then(|p| p.as_str());
        // Unset means the default, which is unwind.
        assert!(
            matches!(panic, None | Some("unwind")),
            "[profile.release] panic = {panic:?}: the server's panic guarantees need unwind"
        );
    }

    #[test]
    fn fuzz_entry_reads_in_memory_requests() {
        let ok = fuzz_read_request(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX: y\r\n\r\n",
        );
        assert_eq!((ok.requests, ok.body_bytes, ok.rejected), (2, 5, None));
        assert_eq!(fuzz_read_request(b"").requests, 0);
        let bad = fuzz_read_request(b"GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx");
        assert_eq!(bad.rejected, Some(400));
        let huge = fuzz_read_request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        );
        assert_eq!(huge.rejected, Some(400));
        let too_big =
            fuzz_read_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n");
        assert_eq!(too_big.rejected, Some(413));
        let cut = fuzz_read_request(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc");
        assert_eq!((cut.requests, cut.rejected), (0, None));
    }
}
