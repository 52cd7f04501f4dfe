//! An MCP host on a raw connection to the relay: sends one request and reads its answer as it
//! comes, for tests that must read an event stream while it is open (answer what arrives on it,
//! count heartbeats, read slowly, hang up).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::relay::{Relay, Tunnel};

pub struct RawHost {
    pub stream: TcpStream,
    seen: Vec<u8>,
}

impl RawHost {
    /// The standalone stream (`GET`) of `session` on the tunnel's default channel.
    pub fn get(relay: &Relay, tunnel: &Tunnel, session: &str) -> RawHost {
        let head = format!(
            "GET /v1/mcp/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Accept: text/event-stream\r\nMcp-Session-Id: {session}\r\n\r\n",
            tunnel.id, tunnel.connector_key
        );
        RawHost::send(relay, head.as_bytes())
    }

    /// A `POST` of `message` in `session`, accepting an event stream.
    pub fn post(relay: &Relay, tunnel: &Tunnel, session: &str, message: &Value) -> RawHost {
        let body = message.to_string();
        let head = format!(
            "POST /v1/mcp/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
             Mcp-Session-Id: {session}\r\nContent-Length: {}\r\n\r\n{body}",
            tunnel.id,
            tunnel.connector_key,
            body.len()
        );
        RawHost::send(relay, head.as_bytes())
    }

    pub fn send(relay: &Relay, request: &[u8]) -> RawHost {
        let authority = relay.base_url().trim_start_matches("http://");
        let mut stream = TcpStream::connect(authority).unwrap();
        stream.write_all(request).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        RawHost {
            stream,
            seen: Vec::new(),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// The JSON messages of the `data:` lines read so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    }

    /// Reads until what arrived contains `needle` `times` times; false after `timeout`.
    pub fn wait_for(&mut self, needle: &str, times: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.text().matches(needle).count() >= times {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return self.text().matches(needle).count() >= times,
                Ok(n) => self.seen.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return false,
            }
        }
    }
}
