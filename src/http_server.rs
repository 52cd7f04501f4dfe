//! The one small synchronous HTTP/1.1 server, shared by the relay, the built-in stub MCP server,
//! the ops endpoints and the loopback fakes in our tests.
//!
//! API CONTRACT
//!
//! - One accept thread; one thread per connection, capped at `Limits::max_connections` (a connection
//!   over the cap gets `503` and is closed; over TLS it is closed without a response, since answering
//!   would need a handshake on the accept thread).
//! - Requests are parsed with `httparse` (never by hand). Bodies: `Content-Length` or
//!   `Transfer-Encoding: chunked` (chunk sizes via `httparse::parse_chunk_size`). Header block larger
//!   than `max_header_bytes` -> 431; body larger than `max_body_bytes` -> 413; malformed -> 400; each
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
//! - A panicking handler gets the client a 500 and the connection closed; the server keeps going.
//!
//! Logging: per-connection events at debug level. Header values, targets and bodies are never
//! logged, since they may carry credentials.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};
use rustls::{ServerConnection, StreamOwned};

/// Header slots offered to `httparse`; more header fields than this is answered with 431, like an
/// oversized header block. Generous for API clients, small enough to live on the stack.
const MAX_HEADERS: usize = 100;

/// Bytes asked of the socket per read. Big enough for a typical request in one read.
const READ_CHUNK: usize = 16 * 1024;

/// Longest chunk-size line (size plus extensions) we buffer before calling the body malformed;
/// extensions are ignored, so there is no reason to hold more.
const MAX_CHUNK_LINE: usize = 4 * 1024;

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
    /// Request line + headers. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Request body. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Time allowed to receive one whole request once its first byte arrived. Default 30 s.
    /// Also bounds the TLS handshake and how long a write may block on a peer that does not read.
    pub read_timeout: Duration,
    /// Time a kept-alive connection may sit idle between requests. Default 60 s.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
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
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The path without the query string.
    pub fn path(&self) -> &str {
        match self.target.split_once('?') {
            Some((path, _)) => path,
            None => &self.target,
        }
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

/// State shared by the accept thread, the connection threads and the `Server` handle.
struct Shared {
    handler: Box<dyn Fn(Request) -> Response + Send + Sync>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: AtomicBool,
    /// Connections currently holding a thread (or about to get one).
    active: AtomicUsize,
}

/// A running server. Dropping it shuts it down like [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving on an already-bound listener (bind `127.0.0.1:0` for an ephemeral port).
    pub fn start(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
        handler: impl Handler,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        // The accept loop relies on blocking accepts (shutdown wakes it by connecting).
        listener.set_nonblocking(false)?;
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            tls,
            limits,
            shutdown: AtomicBool::new(false),
            active: AtomicUsize::new(0),
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
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
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
        if shared.active.fetch_add(1, Ordering::SeqCst) >= shared.limits.max_connections {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            debug!(
                "{peer}: connection refused, at the cap of {}",
                shared.limits.max_connections
            );
            refuse_busy(tcp, shared.tls.is_some());
            continue;
        }
        let slot = Slot(Arc::clone(&shared));
        let spawned = thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                let slot = slot;
                serve_connection(tcp, peer, &slot.0);
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

fn serve_connection(tcp: TcpStream, peer: SocketAddr, shared: &Shared) {
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
    let io = match &shared.tls {
        None => Transport::Plain(tcp),
        Some(config) => match tls_handshake(tcp, config, shared.limits.read_timeout) {
            Ok(t) => Transport::Tls(Box::new(t)),
            Err(e) => {
                debug!("{peer}: TLS handshake failed: {e}");
                return;
            }
        },
    };
    let mut conn = Conn {
        io,
        buf: Vec::new(),
        peer,
        shared,
        connection: ConnectionHandle::default(),
    };
    let end = loop {
        match conn.serve_one() {
            Next::KeepAlive => {}
            end => break end,
        }
    };
    conn.connection.mark_closed(peer_closed(conn.io.tcp()));
    match end {
        Next::Abort => conn.io.abort(),
        _ => conn.io.close(),
    }
    debug!("{peer}: connection closed");
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
    timeout: Duration,
) -> io::Result<StreamOwned<ServerConnection, TcpStream>> {
    let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    let deadline = Instant::now() + timeout;
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

/// Why reading a request stopped short.
enum Reject {
    /// Answer with this status, then close.
    Status(u16),
    /// Peer closed or the socket failed: close without a word.
    Gone,
}

/// The request line and headers, copied out of the read buffer.
struct Head {
    method: String,
    target: String,
    http10: bool,
    headers: Vec<(String, String)>,
}

/// How the request body is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

/// Facts about the request that shape the response.
struct Exchange {
    head_only: bool,
    http10: bool,
    close: bool,
}

struct Conn<'s> {
    io: Transport,
    /// Received bytes not consumed yet (possibly the start of a pipelined next request).
    buf: Vec<u8>,
    peer: SocketAddr,
    shared: &'s Shared,
    connection: ConnectionHandle,
}

impl Conn<'_> {
    fn serve_one(&mut self) -> Next {
        if !self.await_request() {
            return Next::Close;
        }
        let deadline = Instant::now() + self.shared.limits.read_timeout;
        let (request, mut exchange) = match self.read_request(deadline) {
            Ok(r) => r,
            Err(Reject::Gone) => return Next::Abort,
            Err(Reject::Status(status)) => {
                debug!("{}: request rejected with {status}", self.peer);
                self.respond(error_response(status), &Exchange::closing());
                return Next::Close;
            }
        };
        // A large body may have grown the buffer; don't keep that memory on an idle connection.
        self.buf.shrink_to(2 * READ_CHUNK);
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
        // Once shutdown is flagged, this is the connection's last response.
        exchange.close |= self.shared.shutdown.load(Ordering::SeqCst);
        let status = response.status;
        let next = self.respond(response, &exchange);
        debug!("{}: {method} -> {status}", self.peer);
        next
    }

    /// Waits for the first byte of the next request. False means close quietly: the peer closed,
    /// the idle timeout expired, or the server is shutting down.
    fn await_request(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let idle_deadline = Instant::now() + self.shared.limits.idle_timeout;
        loop {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= idle_deadline {
                debug!("{}: idle timeout", self.peer);
                return false;
            }
            match self.fill(idle_deadline.min(now + IDLE_POLL)) {
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

    /// Appends what the socket has (at least one byte, or 0 at EOF) to `buf`.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let result = self.io.read_until(&mut self.buf[old..], deadline);
        self.buf.truncate(old + *result.as_ref().unwrap_or(&0));
        result
    }

    /// `fill` for the middle of a request, where EOF and timeouts are failures.
    fn need_more(&mut self, deadline: Instant) -> Result<(), Reject> {
        match self.fill(deadline) {
            Ok(0) => Err(Reject::Gone),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err(Reject::Status(408)),
            Err(e) => {
                debug!("{}: read failed: {e}", self.peer);
                Err(Reject::Gone)
            }
        }
    }

    fn read_request(&mut self, deadline: Instant) -> Result<(Request, Exchange), Reject> {
        let head = self.read_head(deadline)?;
        let framing = body_framing(&head.headers)?;
        let max_body = self.shared.limits.max_body_bytes;
        if let Framing::Length(len) = framing
            && len > max_body
        {
            return Err(Reject::Status(413));
        }
        let expects_body = !matches!(framing, Framing::Length(0));
        let expect_continue = !head.http10
            && head.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("expect") && v.trim().eq_ignore_ascii_case("100-continue")
            });
        if expect_continue && expects_body {
            let sent = self
                .io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|()| self.io.flush());
            if sent.is_err() {
                return Err(Reject::Gone);
            }
        }
        let body = match framing {
            Framing::Length(len) => self.read_exact_body(len, deadline)?,
            Framing::Chunked => self.read_chunked_body(max_body, deadline)?,
        };
        let wants_close = head.http10
            || head
                .headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("connection") && has_token(v, "close"));
        let exchange = Exchange {
            head_only: head.method == "HEAD",
            http10: head.http10,
            close: wants_close,
        };
        let request = Request {
            method: head.method,
            target: head.target,
            headers: head.headers,
            body,
            peer: self.peer,
            client_cert_verified: self.io.client_cert_verified(),
            socket: self.io.tcp().try_clone().ok(),
            connection: self.connection.clone(),
        };
        Ok((request, exchange))
    }

    fn read_head(&mut self, deadline: Instant) -> Result<Head, Reject> {
        let max = self.shared.limits.max_header_bytes;
        loop {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut slots);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    if len > max {
                        return Err(Reject::Status(431));
                    }
                    let head = owned_head(&parsed)?;
                    self.buf.drain(..len);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(Reject::Status(431)),
                Err(_) => return Err(Reject::Status(400)),
            }
            if self.buf.len() >= max {
                return Err(Reject::Status(431));
            }
            self.need_more(deadline)?;
        }
    }

    fn read_exact_body(&mut self, len: usize, deadline: Instant) -> Result<Vec<u8>, Reject> {
        while self.buf.len() < len {
            self.need_more(deadline)?;
        }
        let rest = self.buf.split_off(len);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    fn read_chunked_body(&mut self, max: usize, deadline: Instant) -> Result<Vec<u8>, Reject> {
        let mut body = Vec::new();
        loop {
            let (line_len, size) = loop {
                // httparse takes an empty size ("\r\n") as 0; we insist on at least one digit.
                if self.buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                    return Err(Reject::Status(400));
                }
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_CHUNK_LINE => {
                        self.need_more(deadline)?;
                    }
                    _ => return Err(Reject::Status(400)),
                }
            };
            self.buf.drain(..line_len);
            if size == 0 {
                break;
            }
            let size = match usize::try_from(size) {
                Ok(s) if s <= max - body.len() => s,
                _ => return Err(Reject::Status(413)),
            };
            // The data and its CRLF.
            while self.buf.len() < size + 2 {
                self.need_more(deadline)?;
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(Reject::Status(400));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
        self.skip_trailers(deadline)?;
        Ok(body)
    }

    /// Reads and discards the trailer section (we give trailer fields no meaning), up to and
    /// including the final empty line.
    fn skip_trailers(&mut self, deadline: Instant) -> Result<(), Reject> {
        let max = self.shared.limits.max_header_bytes;
        loop {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(&self.buf, &mut slots) {
                Ok(httparse::Status::Complete((len, _))) => {
                    if len > max {
                        return Err(Reject::Status(431));
                    }
                    self.buf.drain(..len);
                    return Ok(());
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(Reject::Status(431)),
                Err(_) => return Err(Reject::Status(400)),
            }
            if self.buf.len() >= max {
                return Err(Reject::Status(431));
            }
            self.need_more(deadline)?;
        }
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
                    .io
                    .write_all(&out)
                    .and_then(|()| self.io.flush())
                    .is_err()
                {
                    return Next::Abort;
                }
            }
            Body::Stream(produce) => {
                // Headers go out at once: an event stream may not produce its first chunk soon.
                if self
                    .io
                    .write_all(&head.bytes)
                    .and_then(|()| self.io.flush())
                    .is_err()
                {
                    return Next::Abort;
                }
                if no_body {
                    return if close { Next::Close } else { Next::KeepAlive };
                }
                let mut writer = ChunkWriter {
                    inner: &mut self.io,
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
                        .io
                        .write_all(b"0\r\n\r\n")
                        .and_then(|()| self.io.flush())
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

/// Copies the parsed request line and headers out of the buffer they borrow.
fn owned_head(parsed: &httparse::Request<'_, '_>) -> Result<Head, Reject> {
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Reject::Status(400));
    };
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        // Non-UTF-8 header values have no use in our protocols; refuse rather than mangle.
        let value = std::str::from_utf8(h.value).map_err(|_| Reject::Status(400))?;
        headers.push((h.name.to_string(), value.to_string()));
    }
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        http10: version == 0,
        headers,
    })
}

/// Works out how the body is delimited (RFC 9112 section 6), refusing anything ambiguous: both
/// framings at once, conflicting or non-numeric lengths, codings other than plain `chunked`.
fn body_framing(headers: &[(String, String)]) -> Result<Framing, Reject> {
    let mut length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            for item in value.split(',') {
                let item = item.trim();
                // str::parse would accept a leading '+'.
                if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Reject::Status(400));
                }
                // All digits but beyond u64: certainly too large.
                let n = item.parse::<u64>().map_err(|_| Reject::Status(413))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Reject::Status(400));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.extend(
                value
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            );
        }
    }
    let has_te = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    match (length, has_te) {
        (Some(_), true) => Err(Reject::Status(400)),
        (Some(n), false) => Ok(Framing::Length(
            usize::try_from(n).map_err(|_| Reject::Status(413))?,
        )),
        (None, false) => Ok(Framing::Length(0)),
        (None, true) => match codings.last().map(String::as_str) {
            Some("chunked") if codings.len() == 1 => Ok(Framing::Chunked),
            // chunked last, but wrapped around a coding we do not decode.
            Some("chunked") => Err(Reject::Status(501)),
            // Without chunked last the body length cannot be known.
            _ => Err(Reject::Status(400)),
        },
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
        if !valid_header(name, value) {
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

/// A header is written only if it cannot break the message apart: a token name and a value
/// without CR, LF or NUL.
fn valid_header(name: &str, value: &str) -> bool {
    let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty()
        && name.bytes().all(token_char)
        && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
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
        let text = String::from_utf8_lossy(&raw);
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
}
