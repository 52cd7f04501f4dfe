//! Transports to the private MCP server. They know MCP and HTTP, never the control plane: a
//! transport takes one command's message and returns one [`Reply`] (or reports the deadline
//! passed), handing notifications to a callback as they arrive. [`session`] holds the MCP
//! session's own steps (initialize, tools/list, the end), spoken through these transports.
//! [`harpoon`] is the one MCP server of our own behind a transport: channel `harpoon`, answered
//! in memory.

pub mod harpoon;
pub mod http;
pub mod oauth_discovery;
pub mod server_requests;
pub mod session;
pub mod sse;
pub mod stdio;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use crate::failure::Failure;
use crate::http_client::CancelFlag;
use crate::wire::{RespType, RpcShape, StreamOpen};

/// Longest a `notifications/cancelled` we send for a cancelled call may take.
const CANCEL_NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Response headers as a payload carries them: name → values.
pub type Headers = BTreeMap<String, Vec<String>>;

/// Receives each notification of an answer as it arrives, with the answer's returnable headers
/// (a connector may need the session id before the final message).
pub type NotifySink<'a> = dyn FnMut(Box<RawValue>, &Headers) + 'a;

/// Receives a long-lived stream's messages as they arrive (`None` first: the stream is open),
/// with the answer's returnable headers; returns `false` to end the stream (nobody takes it).
pub type StreamSink<'a> = dyn FnMut(Option<Box<RawValue>>, &Headers) -> bool + 'a;

/// The terminal answer to one command, before it is addressed to the control plane.
#[derive(Debug)]
pub struct Reply {
    pub resp_json: Option<Box<RawValue>>,
    pub resp_headers: BTreeMap<String, Vec<String>>,
    pub resp_code: u16,
    pub resp_type: RespType,
    /// Set when this reply was synthesized for a failure (for readiness and metrics).
    pub failure: Option<Failure>,
}

impl Reply {
    /// A synthesized `-32603` for a failed request with JSON-RPC id `id`.
    pub fn failure(failure: &Failure, id: &serde_json::Value) -> Reply {
        Reply {
            failure: Some(failure.clone()),
            ..Reply::error_json(failure.resp_code(), failure.to_jsonrpc(id))
        }
    }

    /// The MCP server's own JSON-RPC answer, passed on as it came.
    pub fn upstream(resp_json: Box<RawValue>, resp_headers: Headers, resp_code: u16) -> Reply {
        Reply {
            resp_json: Some(resp_json),
            resp_headers,
            resp_code,
            resp_type: RespType::JsonrpcResponse,
            failure: None,
        }
    }

    /// A JSON error body we made ourselves, with `Content-Type: application/json`.
    pub fn error_json(resp_code: u16, body: String) -> Reply {
        let mut resp_headers = BTreeMap::new();
        resp_headers.insert(
            "Content-Type".to_string(),
            vec!["application/json".to_string()],
        );
        Reply {
            resp_json: RawValue::from_string(body).ok(),
            resp_headers,
            resp_code,
            resp_type: RespType::JsonrpcResponse,
            failure: None,
        }
    }
}

/// How a call to the MCP server ended.
#[derive(Debug)]
pub enum Outcome {
    /// Post this as the command's terminal response.
    Reply(Reply),
    /// The command's deadline passed: post nothing (the contract forbids late answers).
    Expired,
    /// The caller cancelled the request (`notifications/cancelled`, or the relay's `cancel`
    /// command): MCP says a cancelled request gets no answer, so nothing is posted and the
    /// worker is free at once.
    Cancelled,
}

/// One channel's way to its MCP server.
pub enum Transport {
    Http(http::HttpTransport),
    Stdio(stdio::StdioTransport),
    /// The embedded Harpoon server (channel `harpoon`).
    Harpoon(harpoon::Harpoon),
}

impl Transport {
    /// Forwards one JSON-RPC message; notifications of the answer go to `on_notify`.
    pub fn call(
        &self,
        message: &RawValue,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
    ) -> Outcome {
        match self {
            Transport::Http(t) => t.call(message, command_headers, deadline, on_notify),
            Transport::Stdio(t) => t.call(message, command_headers, deadline, on_notify),
            Transport::Harpoon(h) => h.call(message, deadline),
        }
    }

    /// [`Transport::call`] that ends once `cancel` is set: over HTTP the upstream response is
    /// closed within [`crate::http_client::CANCEL_CHECK`] (the 2026-07-28 cancellation signal)
    /// and the call ends [`Outcome::Cancelled`]. Over stdio the flag is not read: the call ends
    /// when [`Transport::notify_cancelled`] reaches the child's router.
    pub fn call_cancellable(
        &self,
        message: &RawValue,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
        cancel: &CancelFlag,
    ) -> Outcome {
        match self {
            Transport::Http(t) => {
                t.call_cancellable(message, command_headers, deadline, on_notify, cancel)
            }
            Transport::Stdio(t) => t.call(message, command_headers, deadline, on_notify),
            Transport::Harpoon(h) => h.call(message, deadline),
        }
    }

    /// Tells the MCP server that the request `message` (sent with `command_headers`) is
    /// cancelled, with a `notifications/cancelled` naming its id: over stdio always (the child
    /// router maps the id to the one the child knows, and frees the waiting call), over HTTP only
    /// in a 2025 session (an `Mcp-Session-Id` is present; a 2026-07-28 server takes the closed
    /// response as the signal). Best effort within [`CANCEL_NOTICE_TIMEOUT`]; the answer is
    /// not used.
    pub fn notify_cancelled(&self, message: &RawValue, command_headers: &[(String, String)]) {
        let Some(id) = RpcShape::of(message.get())
            .filter(|s| !s.is_notification())
            .and_then(|s| s.id)
        else {
            return;
        };
        let in_session = command_headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id"));
        if matches!(self, Transport::Harpoon(_))
            || matches!(self, Transport::Http(_)) && !in_session
        {
            return;
        }
        let notice = serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": { "requestId": id, "reason": "the caller cancelled the request" },
        });
        let Ok(notice) = RawValue::from_string(notice.to_string()) else {
            return;
        };
        // The session and protocol headers go along; the ones describing the cancelled
        // request itself (2026-07-28 routing headers) do not.
        let headers: Vec<(String, String)> = command_headers
            .iter()
            .filter(|(n, _)| {
                let n = n.to_ascii_lowercase();
                !(n == "mcp-method" || n == "mcp-name" || n.starts_with("mcp-param-"))
            })
            .cloned()
            .collect();
        let deadline = Instant::now() + CANCEL_NOTICE_TIMEOUT;
        let _ = self.call(&notice, &headers, Some(deadline), &mut |_, _| {});
    }

    /// Holds a long-lived stream (a `stream` command, our relay extension) until it ends; see
    /// [`http`]'s `stream`. On stdio a session's `GET` is a listener on the session's child
    /// ([`stdio`]: messages not tied to a request go to every stream held on that child), and a
    /// `subscriptions/listen` is a call to the child whose notifications (tagged with its
    /// subscription, see the stdio router) are forwarded as they come.
    pub fn stream(
        &self,
        open: &StreamOpen,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        sink: &mut StreamSink<'_>,
        cancel: &CancelFlag,
    ) -> Outcome {
        match (self, open) {
            (Transport::Http(t), _) => t.stream(open, command_headers, deadline, sink, cancel),
            (Transport::Stdio(t), StreamOpen::Listen(message)) => {
                // The host's stream opens now: a child's acknowledgement may come late or untagged.
                if !sink(None, &Headers::new()) {
                    return Outcome::Cancelled;
                }
                let mut on_notify = |raw: Box<RawValue>, headers: &Headers| {
                    if !cancel.is_cancelled() {
                        sink(Some(raw), headers);
                    }
                };
                t.call(message, command_headers, deadline, &mut on_notify)
            }
            (Transport::Stdio(t), StreamOpen::Get) => {
                t.hold_stream(command_headers, deadline, sink, cancel)
            }
            // Harpoon sends nothing unasked: no stream to hold.
            (Transport::Harpoon(_), _) => Outcome::Reply(Reply::error_json(
                405,
                r#"{"error":"harpoon holds no streams"}"#.to_string(),
            )),
        }
    }

    /// Ends an MCP session (`session_termination`).
    pub fn terminate_session(
        &self,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
    ) -> Outcome {
        match self {
            Transport::Http(t) => t.terminate_session(command_headers, deadline),
            Transport::Stdio(t) => t.terminate_session(command_headers),
            Transport::Harpoon(_) => Outcome::Reply(Reply {
                resp_json: None,
                resp_headers: Headers::new(),
                resp_code: 200,
                resp_type: RespType::SessionTerminationResponse,
                failure: None,
            }),
        }
    }

    /// Whether one MCP session must stay on this client instance: a stdio server keeps session
    /// state in its one process; the in-memory Harpoon server is declared so too (the official
    /// client's rule).
    pub fn proc_affinity(&self) -> bool {
        matches!(self, Transport::Stdio(_) | Transport::Harpoon(_))
    }

    /// Stops what the transport runs (a stdio child); waits at most `timeout`.
    pub fn stop(&self, timeout: Duration) {
        if let Transport::Stdio(t) = self {
            t.stop(timeout);
        }
    }
}
