//! The one small synchronous HTTP/1.1 server, shared by the relay, the built-in stub MCP server,
//! the ops endpoints and the loopback fakes in our tests.
//!
//! API CONTRACT (stub: to be implemented)
//!
//! - One accept thread; one thread per connection, capped at `Limits::max_connections` (a connection
//!   over the cap gets `503` and is closed).
//! - Requests are parsed with `httparse` (never by hand). Bodies: `Content-Length` or
//!   `Transfer-Encoding: chunked` (chunk sizes via `httparse::parse_chunk_size`). Header block larger
//!   than `max_header_bytes` -> 431; body larger than `max_body_bytes` -> 413; malformed -> 400; each
//!   then closes the connection.
//! - Keep-alive (HTTP/1.1 default, `Connection: close` honoured); `idle_timeout` between requests,
//!   `read_timeout` while a request is being read.
//! - Optional TLS through `rustls::ServerConfig`.
//! - `Server::shutdown` stops accepting, and returns once the accept thread has ended.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

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
    pub read_timeout: Duration,
    /// Time a kept-alive connection may sit idle between requests. Default 60 s.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        todo!()
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
}

impl Request {
    /// First value of a header, name matched case-insensitively.
    pub fn header(&self, _name: &str) -> Option<&str> {
        todo!()
    }
    /// The path without the query string.
    pub fn path(&self) -> &str {
        todo!()
    }
    /// First value of a query parameter (percent-decoding of `%XX` and `+` applied).
    pub fn query_param(&self, _name: &str) -> Option<String> {
        todo!()
    }
}

/// Writes the chunks of a streamed (chunked transfer-encoding) response body.
pub struct ChunkWriter<'a> {
    _inner: &'a mut dyn io::Write,
}

impl ChunkWriter<'_> {
    /// Sends one chunk and flushes it to the peer at once (SSE events must not sit in a buffer).
    pub fn send(&mut self, _bytes: &[u8]) -> io::Result<()> {
        todo!()
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
    pub fn new(_status: u16, _body: impl Into<Vec<u8>>) -> Self {
        todo!()
    }
    /// `Content-Type: application/json` with the given body.
    pub fn json(_status: u16, _body: impl Into<Vec<u8>>) -> Self {
        todo!()
    }
    /// A chunked, streamed response (e.g. `text/event-stream`).
    pub fn stream(_status: u16, _headers: Vec<(String, String)>, _body: StreamBody) -> Self {
        todo!()
    }
    /// Adds a header (builder style).
    pub fn with_header(self, _name: &str, _value: &str) -> Self {
        todo!()
    }
}

/// Handles one request. Called on the connection's thread; may block (long-poll, slow fakes).
pub trait Handler: Fn(Request) -> Response + Send + Sync + 'static {}
impl<F: Fn(Request) -> Response + Send + Sync + 'static> Handler for F {}

/// A running server.
pub struct Server {}

impl Server {
    /// Starts serving on an already-bound listener (bind `127.0.0.1:0` for an ephemeral port).
    pub fn start(
        _listener: TcpListener,
        _tls: Option<Arc<rustls::ServerConfig>>,
        _limits: Limits,
        _handler: impl Handler,
    ) -> io::Result<Server> {
        todo!()
    }
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        todo!()
    }
    /// Stops accepting new connections; returns when the accept thread has ended. Connections
    /// already open finish their current request and close.
    pub fn shutdown(self) {
        todo!()
    }
}
