//! What a handler returns, and how the server puts it on the wire.
//!
//! A [`Response`] is a status, extra headers and a [`Body`]: whole, or streamed through a
//! [`ChunkWriter`]. Framing is the server's alone: `render_head` drops any `Content-Length` or
//! `Transfer-Encoding` a handler set and writes its own, refuses to write a header that is not
//! valid HTTP (`crate::headers::is_writable`), and always tells the peer when the connection
//! closes. The server's own error answers (`error_response`) use the project's JSON error shape.

use std::io;

use log::warn;

use super::request::says_close;
use super::request_reader::Framing;

/// Writes the chunks of a streamed (chunked transfer-encoding) response body.
pub struct ChunkWriter<'a> {
    inner: &'a mut dyn io::Write,
    /// False for HTTP/1.0 peers, which get the bytes raw and the end of the body by connection close.
    chunked: bool,
    /// [`ChunkWriter::finish`] wrote the end of the body: nothing more may be sent.
    finished: bool,
}

impl<'a> ChunkWriter<'a> {
    /// A writer onto `inner`; `chunked` false writes the bytes raw (for HTTP/1.0 peers).
    pub(super) fn new(inner: &'a mut dyn io::Write, chunked: bool) -> Self {
        ChunkWriter {
            inner,
            chunked,
            finished: false,
        }
    }

    /// Sends one chunk and flushes it to the peer at once (SSE events must not sit in a buffer).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_chunk(bytes, false)
    }

    /// Sends the last chunk (`bytes`, may be empty) and the end of the body in one write, so the
    /// peer gets them in one segment. Nothing can be sent after it: a later call fails.
    pub fn finish(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_chunk(bytes, true)
    }

    /// Whether [`ChunkWriter::finish`] wrote the end of the body.
    pub(super) fn finished(&self) -> bool {
        self.finished
    }

    fn write_chunk(&mut self, bytes: &[u8], last: bool) -> io::Result<()> {
        if self.finished {
            return Err(io::Error::other("the response body was already finished"));
        }
        // A zero-length chunk is the end-of-body marker; sending one would end the stream early.
        if bytes.is_empty() && !last {
            return Ok(());
        }
        if self.chunked {
            // One write per chunk, so the size line and data leave in the same segment.
            let mut frame = Vec::with_capacity(bytes.len() + 24);
            if !bytes.is_empty() {
                frame.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
                frame.extend_from_slice(bytes);
                frame.extend_from_slice(b"\r\n");
            }
            if last {
                frame.extend_from_slice(b"0\r\n\r\n");
            }
            self.inner.write_all(&frame)?;
        } else {
            self.inner.write_all(bytes)?;
        }
        self.finished = last;
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

pub(super) fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

pub(super) struct RenderedHead {
    pub bytes: Vec<u8>,
    /// Whether the connection closes after this response.
    pub close: bool,
}

/// Status line and headers. The handler's framing headers are replaced by `framing`; when closing
/// we make sure the peer is told so.
pub(super) fn render_head(
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
    let handler_close = says_close(&headers);
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
pub(super) fn render_full(response: Response, close: bool) -> Vec<u8> {
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
pub(super) fn error_response(status: u16) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(599), "Unknown");
    }
}
