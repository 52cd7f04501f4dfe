//! What a handler is given: a [`Request`] read whole, the [`RequestHead`] that admission sees before
//! the body is read, and the [`ConnectionHandle`] that tells, later, whether the request's
//! connection is still open and who closed it.
//!
//! Accessors never fail: a missing header or query parameter is `None`, and percent-decoding
//! keeps malformed escapes literally instead of refusing them.

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rustix::io::Errno;
use rustix::net::RecvFlags;

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
    /// The connection's socket (shared, not a second descriptor), for [`Request::peer_gone`].
    pub socket: Option<Arc<TcpStream>>,
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
        // One non-blocking peek (MSG_PEEK | MSG_DONTWAIT): a single syscall, and the socket's
        // own blocking mode is never touched.
        let mut byte = [0u8; 1];
        let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
        match rustix::net::recv(&**socket, &mut byte[..], flags) {
            Ok((0, _)) => true,
            Ok(_) => false,
            Err(e) => e != Errno::AGAIN,
        }
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

    /// First value of a field of an `application/x-www-form-urlencoded` body (decoded as
    /// [`Request::query_param`]); `None` for another content type.
    pub fn form_param(&self, name: &str) -> Option<String> {
        let form = self.header("Content-Type")?.split(';').next()?.trim();
        if !form.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return None;
        }
        let body = std::str::from_utf8(&self.body).ok()?;
        body.split('&').find_map(|pair| {
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

pub(super) fn path_of(target: &str) -> &str {
    match target.split_once('?') {
        Some((path, _)) => path,
        None => target,
    }
}

/// Whether the headers carry `Connection: close` (the option matched case-insensitively among
/// the comma-separated ones).
pub(super) fn says_close(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("connection") && has_token(v, "close"))
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
