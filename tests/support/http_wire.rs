//! A raw HTTP/1.1 client for testing our own server byte by byte (`mcp_tunnel::http_server`), and
//! the fixtures those tests share: an echo handler that shows what the server parsed, and small
//! limits. Every read and write is bounded by [`PROMPTLY`], so a broken server fails a test
//! instead of hanging it.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use mcp_tunnel::http_server::{Handler, Limits, Request, Response, Server};

use super::PROMPTLY;

/// A plain-TCP server on an ephemeral loopback port.
pub fn start(limits: Limits, handler: impl Handler) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    Server::start(listener, None, limits, handler).unwrap()
}

/// Everything the server sends until it closes the connection (a read timeout fails).
pub fn read_until_closed(stream: &mut TcpStream) -> String {
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

pub fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_read_timeout(Some(PROMPTLY)).unwrap();
    stream.set_write_timeout(Some(PROMPTLY)).unwrap();
    stream
}

/// Echoes what the server parsed, so tests can check parsing end to end.
pub fn echo(req: Request) -> Response {
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

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Appends at least one byte from `r` to `buf`; panics at EOF (reads are bounded by the
/// socket timeout).
pub fn more(r: &mut impl Read, buf: &mut Vec<u8>) {
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
pub fn read_reply_from(r: &mut impl Read, buf: &mut Vec<u8>, head_only: bool) -> Reply {
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
                if let httparse::Status::Complete(found) = httparse::parse_chunk_size(buf).unwrap()
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

pub fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Reply {
    read_reply_from(stream, buf, false)
}

/// Sends raw bytes on a fresh connection and reads one response.
pub fn exchange(server: &Server, raw: &[u8]) -> (Reply, TcpStream) {
    let mut stream = connect(server);
    stream.write_all(raw).unwrap();
    let reply = read_reply(&mut stream, &mut Vec::new());
    (reply, stream)
}

/// True once the server has closed the connection (EOF, or a reset).
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 64];
    match stream.read(&mut sink) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !is_timeout(&e),
    }
}

pub fn small_limits() -> Limits {
    Limits {
        max_connections: 8,
        max_header_bytes: 512,
        max_body_bytes: 16,
        read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// Whether a read failed by timing out (the socket timeouts set by [`connect`]).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Statuses whose responses never carry a body (RFC 9110): 1xx, 204 and 304.
fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}
