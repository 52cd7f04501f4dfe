//! Loopback test fakes for the end-to-end tests: a fake control plane, a fake Streamable HTTP MCP
//! server, a wrapper around the real `mcp-tunnel` processes, and the relay-side roles (tunnels
//! files, relay and stub processes, a connector and a manual poller). All of them bind or call
//! `127.0.0.1` only, and bound every wait by a deadline. `http_wire` is a raw HTTP/1.1 client for
//! the tests of our own HTTP server.

// Each integration-test binary compiles its own copy of this module and uses a subset of it
// (including of the re-exports below).
#![allow(dead_code, unused_imports)]

mod browser;
mod commands;
mod control_plane;
pub mod http_wire;
mod mcp;
mod ops_checks;
mod process;
mod raw_host;
mod redis;
mod relay;
mod stage;
mod watched;

pub use browser::{Browser, chromium};
pub use commands::{Command, notification, rpc_request, tool_call};
pub use control_plane::{API_KEY, FakeControlPlane, PostedResponse, Scripted, TUNNEL_ID};
pub use mcp::{FakeMcp, McpReply, SseEvent};
pub use ops_checks::{assert_valid_exposition, read_until, sample};
pub use process::{
    ClientBuilder, TunnelClient, as_nobody_if_root, fixture_copy, process_gone, running_as_root,
};
pub use raw_host::RawHost;
pub use redis::{RedisServer, redis_installed};
pub use relay::{
    ArrivedEvent, Connector, HttpAnswer, Poller, Relay, RelayBuilder, Stub, TempDir, Tunnel,
    add_tunnel, add_tunnel_with_auth, audit_lines, http_get, http_send, remove_tunnel,
    request_id_of, result_payload, rotate_admin_key, shard_token_of, tunnel_client,
};
pub use stage::Stage;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound for anything that should happen promptly. Generous because shared CI machines are
/// slow; it costs nothing when things work, since every wait returns as soon as its condition holds.
pub const PROMPTLY: Duration = Duration::from_secs(10);

pub fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds)
}

/// Lets time pass for a *negative* check ("nothing else happens"). Only use it when the check is
/// bracketed by a positive event afterwards, so the test cannot pass merely because it looked too soon.
pub fn let_time_pass(duration: Duration) {
    std::thread::sleep(duration);
}

/// A loopback URL on which nothing listens: the port was bound, then released.
pub fn dead_loopback_url(path: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}{path}")
}

/// Whether a request to a fake MCP server looks like the client's own OAuth discovery (its
/// start-up discovery runs in every test with an HTTP `main`): an empty `POST` or a JSON `GET`
/// probe, or a well-known metadata fetch. Fakes keep these apart from the MCP traffic they count.
pub fn is_oauth_discovery(request: &mcp_tunnel::http_server::Request) -> bool {
    let json_get = request.method == "GET" && request.header("Accept") == Some("application/json");
    let empty_post = request.method == "POST" && request.body.is_empty();
    request.path().starts_with("/.well-known/") || json_get || empty_post
}

/// One HTTP request as a fake saw it, with the instant it arrived.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl SeenRequest {
    fn record(request: mcp_tunnel::http_server::Request, at: Instant) -> Self {
        SeenRequest {
            method: request.method,
            target: request.target,
            headers: request.headers,
            body: request.body,
            at,
        }
    }

    /// First value of a header, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }

    /// Every value of a header, name matched case-insensitively.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        !self.header_values(name).is_empty()
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// A query parameter's raw value (our tests only send values that need no decoding).
    pub fn query(&self, name: &str) -> Option<&str> {
        let query = self.target.split_once('?')?.1;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether `needle` occurs in any header name, header value or the body.
    pub fn mentions(&self, needle: &str) -> bool {
        self.body_text().contains(needle)
            || self
                .headers
                .iter()
                .any(|(key, value)| key.contains(needle) || value.contains(needle))
    }
}
