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
//!   complete within `read_timeout` -> 408. These answers of the server's own take the shape
//!   `Limits::error_shape` gives the request's path (as soon as its request line is read), else
//!   a plain `{"error":{"message","type","code"}}`.
//! - Keep-alive (HTTP/1.1 default, `Connection: close` honoured; HTTP/1.0 always closes);
//!   `idle_timeout` between requests, `read_timeout` while a request is being read.
//! - Optional TLS through `rustls::ServerConfig`.
//! - `Server::shutdown` stops accepting, and returns once the accept thread has ended; connections
//!   waiting for a request close at once (their sockets' read side is shut down: no connection
//!   polls for it), the others after their current exchange. Dropping a `Server` shuts it down the
//!   same way.
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
//!
//! MODULE MAP (each file opens with its own, narrower contract)
//!
//! - `server`: lifecycle — the listener, the accept thread, the connection cap, shutdown.
//! - `slots`: who may hold a connection thread (the caps, the reserve, per-peer shares).
//! - `connection`: one connection's life — handshake, keep-alive loop, admission, handler, response.
//! - `waiting`: the live connections' sockets, so shutdown can wake the idle ones.
//! - `transport`: the byte stream under it, plain TCP or TLS, with deadlines and lingering closes.
//! - `request_reader`: reading one request (head, body, chunks, trailers) within limits.
//! - `request`, `response`, `limits`: the message model — what handlers get and return, and the
//!   bounds the server keeps to.
//! - `fuzz`: the reader driven from memory, for the fuzzer.

mod connection;
mod fuzz;
mod limits;
mod request;
mod request_reader;
mod response;
mod server;
mod slots;
mod transport;
mod waiting;

pub use connection::{Admit, Handler, tls_handshake_failures};
pub use fuzz::{FuzzSummary, fuzz_read_request};
pub use limits::Limits;
pub use request::{ConnectionEnd, ConnectionHandle, Request, RequestHead};
pub use response::{Body, ChunkWriter, Response, StreamBody};
pub use server::Server;
