//! Transports to the private MCP server. They know MCP and HTTP, never the control plane: a
//! transport takes one command's message and returns one [`Reply`] (or reports the deadline
//! passed), handing notifications to a callback as they arrive. [`session`] holds the MCP
//! session's own steps (initialize, tools/list, the end), spoken through these transports.

pub mod http;
pub mod session;
pub mod sse;
pub mod stdio;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use crate::failure::Failure;
use crate::wire::RespType;

/// Response headers as a payload carries them: name → values.
pub type Headers = BTreeMap<String, Vec<String>>;

/// Receives each notification of an answer as it arrives, with the answer's returnable headers
/// (a connector may need the session id before the final message).
pub type NotifySink<'a> = dyn FnMut(Box<RawValue>, &Headers) + 'a;

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
    /// The caller cancelled the request (`notifications/cancelled`): MCP says a cancelled
    /// request gets no answer, so nothing is posted and the worker is free at once.
    Cancelled,
}

/// One channel's way to its MCP server.
pub enum Transport {
    Http(http::HttpTransport),
    Stdio(stdio::StdioTransport),
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
        }
    }

    /// Whether one MCP session must stay on this client instance: a stdio server keeps session
    /// state in its one process.
    pub fn proc_affinity(&self) -> bool {
        matches!(self, Transport::Stdio(_))
    }

    /// Stops what the transport runs (a stdio child); waits at most `timeout`.
    pub fn stop(&self, timeout: Duration) {
        if let Transport::Stdio(t) = self {
            t.stop(timeout);
        }
    }
}
