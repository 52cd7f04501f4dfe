//! The relay's Prometheus metrics (text format 0.0.4), served only on `--metrics-listen`, never
//! on the public listener.
//!
//! Counters are recorded as requests end ([`RelayMetrics::call`], [`RelayMetrics::auth_failure`]);
//! gauges of the tunnels (queue depth and capacity, connected instances) are read when rendered.
//! Labels are bounded: tunnel *names* from the tunnels file (`(unknown)` for an id the file does
//! not have), a fixed set of method classes, outcomes that are a status class or one of the
//! relay's own error codes ([`OUTCOMES`]), route and kind names of our own. Never an id, key,
//! session id or anything a caller chose.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::mcp_error;
use crate::http_server::{Body, Response};
use crate::ops::metrics::{Histogram, escape};

/// The tunnel label of a request naming an id the tunnels file does not have.
pub const UNKNOWN_TUNNEL: &str = "(unknown)";

/// The relay's own error codes (`error.data.code`), the only outcomes besides a status class.
pub const OUTCOMES: &[&str] = &[
    mcp_error::INVALID_CONNECTOR_KEY.code,
    mcp_error::CLIENT_CERTIFICATE_REQUIRED.code,
    mcp_error::TUNNEL_NOT_FOUND.code,
    mcp_error::NOT_FOUND.code,
    mcp_error::INVALID_CHANNEL_FORMAT.code,
    mcp_error::METHOD_NOT_ALLOWED.code,
    mcp_error::REQUEST_BODY_TOO_LARGE.code,
    mcp_error::SESSION_NOT_FOUND.code,
    mcp_error::TUNNEL_CLIENT_NOT_CONNECTED.code,
    mcp_error::TUNNEL_QUEUE_FULL.code,
    mcp_error::TUNNEL_RESPONSE_TIMEOUT.code,
    mcp_error::CORS_ORIGIN_NOT_ALLOWED.code,
    mcp_error::MALFORMED_HTTP_REQUEST.code,
    mcp_error::REQUEST_TIMEOUT.code,
    mcp_error::HEADERS_TOO_LARGE.code,
    mcp_error::TRANSFER_CODING_NOT_SUPPORTED.code,
    mcp_error::RELAY_BUSY.code,
    mcp_error::RELAY_INTERNAL_ERROR.code,
    mcp_error::INVALID_JSON.code,
    mcp_error::TUNNEL_CLIENT_GONE.code,
    mcp_error::REQUEST_CANCELLED.code,
    mcp_error::TUNNEL_STREAM_LIMIT.code,
    mcp_error::TUNNEL_TRANSPORT_UNAVAILABLE.code,
    mcp_error::RELAY_DRAINING.code,
];

/// Method classes: the MCP methods worth a series of their own; the rest is `other`.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
];

/// The bounded method label of a request: its MCP method when listed, `notification` for any
/// `notifications/…`, `response` for a JSON-RPC response, `session_termination` (DELETE),
/// `stream` (GET), `unknown` (the body was not read or not JSON-RPC), else `other`.
pub fn method_class(
    http_method: &str,
    rpc_method: Option<&str>,
    is_response: bool,
) -> &'static str {
    match (http_method, rpc_method) {
        ("DELETE", _) => "session_termination",
        ("GET", _) => "stream",
        (_, Some(m)) if m.starts_with("notifications/") => "notification",
        (_, Some(m)) => METHODS
            .iter()
            .find(|k| **k == m)
            .copied()
            .unwrap_or("other"),
        (_, None) if is_response => "response",
        (_, None) => "unknown",
    }
}

/// The outcome label of an answer: the relay's own error code when the answer is one of its
/// errors, else the status class (`2xx`, `4xx`, …).
pub fn outcome(resp: &Response) -> &'static str {
    if let Body::Full(bytes) = &resp.body
        && bytes.len() <= 4096
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(code) = v.pointer("/error/data/code").and_then(|c| c.as_str())
        && let Some(known) = OUTCOMES.iter().find(|k| **k == code)
    {
        return known;
    }
    status_class(resp.status)
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Requests in progress, by kind (see [`RelayMetrics::enter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// An MCP host's request held for its answer.
    Connector,
    /// An event stream being written (a session's GET stream, `subscriptions/listen`, or a
    /// request answered with notifications first).
    Stream,
    /// A tunnel client's long-poll.
    LongPoll,
    /// Any other control-plane request (metadata, response POST).
    ControlPlane,
    /// OAuth metadata, health.
    Other,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Connector,
        Kind::Stream,
        Kind::LongPoll,
        Kind::ControlPlane,
        Kind::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Connector => "connector",
            Kind::Stream => "stream",
            Kind::LongPoll => "long_poll",
            Kind::ControlPlane => "control_plane",
            Kind::Other => "other",
        }
    }
}

/// One tunnel's gauges, read when the metrics are rendered.
#[derive(Debug, Clone, Default)]
pub struct TunnelGauges {
    pub name: String,
    pub queued: usize,
    pub capacity: usize,
    pub instances: usize,
    pub connected: bool,
}

/// What the relay counts.
#[derive(Default)]
pub struct RelayMetrics {
    /// (tunnel name, method class, outcome) → count.
    requests: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    /// Tunnel name → end-to-end latency of connector requests.
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Route → refused keys or client certificates.
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Kind → requests in progress.
    in_progress: Mutex<BTreeMap<Kind, i64>>,
    /// Tunnel name → long-polls held now.
    long_polls: Mutex<BTreeMap<String, i64>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request in progress of one kind; the gauge goes down when it is dropped.
pub struct InProgress {
    metrics: Arc<RelayMetrics>,
    kind: Kind,
    /// A long-poll's tunnel name.
    tunnel: Option<String>,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        *lock(&self.metrics.in_progress)
            .entry(self.kind)
            .or_default() -= 1;
        if let Some(t) = &self.tunnel {
            *lock(&self.metrics.long_polls).entry(t.clone()).or_default() -= 1;
        }
    }
}

impl RelayMetrics {
    /// Counts a request of `kind` in progress until the guard is dropped; a long-poll names its
    /// tunnel.
    pub fn enter(self: &Arc<Self>, kind: Kind, tunnel: Option<&str>) -> InProgress {
        *lock(&self.in_progress).entry(kind).or_default() += 1;
        if let Some(t) = tunnel {
            *lock(&self.long_polls).entry(t.to_string()).or_default() += 1;
        }
        InProgress {
            metrics: Arc::clone(self),
            kind,
            tunnel: tunnel.map(str::to_string),
        }
    }

    /// Requests of `kind` in progress now.
    pub fn in_progress(&self, kind: Kind) -> i64 {
        lock(&self.in_progress).get(&kind).copied().unwrap_or(0)
    }

    /// One connector request ended.
    pub fn call(&self, tunnel: &str, method: &'static str, outcome: &'static str, took: Duration) {
        *lock(&self.requests)
            .entry((tunnel.to_string(), method, outcome))
            .or_default() += 1;
        lock(&self.latency)
            .entry(tunnel.to_string())
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// A refused key or client certificate on `route` (`connector` or `control_plane`).
    pub fn auth_failure(&self, route: &'static str) {
        *lock(&self.auth_failures).entry(route).or_default() += 1;
    }

    /// Request body bytes read.
    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Response body bytes sent (full bodies; event streams are not counted).
    pub fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, tunnels: &[TunnelGauges], store: &str) -> String {
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "mcp_tunnel_relay_build_info",
            "gauge",
            "Version, commit and store of this relay.",
        );
        let _ = writeln!(
            out,
            "mcp_tunnel_relay_build_info{{version=\"{}\",commit=\"{}\",store=\"{store}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            crate::build::GIT_COMMIT,
        );

        head(
            &mut out,
            "mcp_tunnel_relay_connector_requests_total",
            "counter",
            "MCP hosts' requests by tunnel name, method class and outcome (status class or the \
             relay's error code).",
        );
        for ((tunnel, method, outcome), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "mcp_tunnel_relay_connector_requests_total{{tunnel=\"{}\",method=\"{method}\",\
                 outcome=\"{outcome}\"}} {n}",
                escape(tunnel)
            );
        }
        head(
            &mut out,
            "mcp_tunnel_relay_connector_request_duration_seconds",
            "histogram",
            "MCP hosts' requests from arrival to the end of the answer, by tunnel name.",
        );
        for (tunnel, h) in lock(&self.latency).iter() {
            let labels = format!("tunnel=\"{}\"", escape(tunnel));
            h.render(
                &mut out,
                "mcp_tunnel_relay_connector_request_duration_seconds",
                &labels,
            );
        }

        let gauge =
            |out: &mut String, name: &str, help: &str, value: &dyn Fn(&TunnelGauges) -> usize| {
                head(out, name, "gauge", help);
                for t in tunnels {
                    let _ = writeln!(out, "{name}{{tunnel=\"{}\"}} {}", escape(&t.name), value(t));
                }
            };
        gauge(
            &mut out,
            "mcp_tunnel_relay_queue_depth",
            "Commands queued on this node, not yet taken by a client.",
            &|t| t.queued,
        );
        gauge(
            &mut out,
            "mcp_tunnel_relay_queue_capacity",
            "Commands a tunnel's queue holds at most (--queue-capacity).",
            &|t| t.capacity,
        );
        gauge(
            &mut out,
            "mcp_tunnel_relay_client_instances",
            "Tunnel client instances of this node counted as connected.",
            &|t| t.instances,
        );
        gauge(
            &mut out,
            "mcp_tunnel_relay_tunnel_connected",
            "1 when a tunnel client is connected (on any node, with a shared store).",
            &|t| usize::from(t.connected),
        );

        head(
            &mut out,
            "mcp_tunnel_relay_long_polls_held",
            "gauge",
            "Tunnel clients' long-polls held now, by tunnel name.",
        );
        for (tunnel, n) in lock(&self.long_polls).iter() {
            let _ = writeln!(
                out,
                "mcp_tunnel_relay_long_polls_held{{tunnel=\"{}\"}} {n}",
                escape(tunnel)
            );
        }
        head(
            &mut out,
            "mcp_tunnel_relay_requests_in_progress",
            "gauge",
            "Requests being served now, by kind (each holds one connection).",
        );
        let in_progress = lock(&self.in_progress).clone();
        for kind in Kind::ALL {
            let n = in_progress.get(&kind).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "mcp_tunnel_relay_requests_in_progress{{kind=\"{}\"}} {n}",
                kind.label()
            );
        }

        head(
            &mut out,
            "mcp_tunnel_relay_auth_failures_total",
            "counter",
            "Requests refused for a missing or wrong key or client certificate, by route.",
        );
        let auth = lock(&self.auth_failures).clone();
        for route in ["connector", "control_plane"] {
            let n = auth.get(route).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "mcp_tunnel_relay_auth_failures_total{{route=\"{route}\"}} {n}"
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, n: u64| {
            head(out, name, "counter", help);
            let _ = writeln!(out, "{name} {n}");
        };
        counter(
            &mut out,
            "mcp_tunnel_relay_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out.",
            crate::http_server::tls_handshake_failures(),
        );
        counter(
            &mut out,
            "mcp_tunnel_relay_stream_slow_readers_cut_total",
            "Event streams closed because their reader fell too far behind.",
            super::hub::slow_readers_cut(),
        );
        head(
            &mut out,
            "mcp_tunnel_relay_body_bytes_total",
            "counter",
            "Request bodies read (in) and full response bodies sent (out); event streams excluded.",
        );
        let _ = writeln!(
            out,
            "mcp_tunnel_relay_body_bytes_total{{direction=\"in\"}} {}",
            self.bytes_in.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "mcp_tunnel_relay_body_bytes_total{{direction=\"out\"}} {}",
            self.bytes_out.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_the_relays_codes_or_a_status_class() {
        let busy = mcp_error::TUNNEL_QUEUE_FULL.response(Some("1"));
        assert_eq!(outcome(&busy), "tunnel_queue_full");
        let foreign = Response::json(
            500,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x","data":{"code":"a1b2"}}}"#,
        );
        assert_eq!(outcome(&foreign), "5xx");
        assert_eq!(outcome(&Response::new(202, Vec::new())), "2xx");
        assert_eq!(
            method_class("POST", Some("tools/call"), false),
            "tools/call"
        );
        assert_eq!(method_class("POST", Some("x/secret-123"), false), "other");
        assert_eq!(method_class("POST", None, true), "response");
        assert_eq!(method_class("DELETE", None, false), "session_termination");
    }

    #[test]
    fn gauges_come_back_down() {
        let m = Arc::new(RelayMetrics::default());
        let held = m.enter(Kind::LongPoll, Some("t"));
        assert_eq!(m.in_progress(Kind::LongPoll), 1);
        assert!(
            m.render(&[], "memory")
                .contains("long_polls_held{tunnel=\"t\"} 1")
        );
        drop(held);
        assert_eq!(m.in_progress(Kind::LongPoll), 0);
        assert!(
            m.render(&[], "memory")
                .contains("long_polls_held{tunnel=\"t\"} 0")
        );
    }
}
