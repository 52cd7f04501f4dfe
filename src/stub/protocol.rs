//! JSON-RPC 2.0 as the stub speaks it: sorting a POSTed body into request, notification or
//! client response (or saying why it is none of them), and building result and error messages.
//!
//! One message per POST: a batch is refused as an invalid request. Ids must be strings or
//! numbers (MCP forbids null), so every reply can echo the id back; a message too broken to have
//! a usable id is answered with `"id": null`, as JSON-RPC asks.

use serde_json::{Value, json};

use crate::http_server::Response;

// JSON-RPC 2.0 error codes.
pub(super) const PARSE_ERROR: i64 = -32700;
pub(super) const INVALID_REQUEST: i64 = -32600;
pub(super) const METHOD_NOT_FOUND: i64 = -32601;
pub(super) const INVALID_PARAMS: i64 = -32602;
/// The `fail_rpc` tool's error: the first code of JSON-RPC's implementation-defined server range.
pub(super) const SERVER_ERROR: i64 = -32000;
/// In the body of a 404 for an unknown session; the code the official TypeScript SDK uses there.
pub(super) const SESSION_NOT_FOUND: i64 = -32001;

/// One JSON-RPC message, as far as routing needs it.
pub(super) enum Message<'a> {
    Request {
        id: &'a Value,
        method: &'a str,
        params: Option<&'a Value>,
    },
    Notification {
        method: &'a str,
    },
    /// A client's answer to a server→client request. We never send any, so it is only acknowledged.
    Response,
}

/// A message that is JSON but not valid JSON-RPC: the id to answer with (null when unusable) and
/// why.
pub(super) struct Invalid {
    pub(super) id: Value,
    pub(super) message: &'static str,
}

/// The answer to a request, before it is put on the wire.
pub(super) enum Reply {
    Result(Value),
    Error { code: i64, message: String },
}

/// Sorts a parsed body into request, notification or response, or says why it is none of them.
pub(super) fn classify(body: &Value) -> Result<Message<'_>, Invalid> {
    let invalid = |id: &Value, message| Invalid {
        id: id.clone(),
        message,
    };
    let Value::Object(msg) = body else {
        let message = if body.is_array() {
            "batches are not supported: send one JSON-RPC message per POST"
        } else {
            "a JSON-RPC message must be an object"
        };
        return Err(invalid(&Value::Null, message));
    };
    // MCP forbids null ids; anything but a string or a number cannot be echoed back as an id.
    let id = match msg.get("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
        Some(_) => return Err(invalid(&Value::Null, "id must be a string or a number")),
    };
    let id_or_null = id.unwrap_or(&Value::Null);
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(id_or_null, "jsonrpc must be \"2.0\""));
    }
    match (msg.get("method"), id) {
        (Some(Value::String(method)), Some(id)) => Ok(Message::Request {
            id,
            method,
            params: msg.get("params"),
        }),
        (Some(Value::String(method)), None) => Ok(Message::Notification { method }),
        (Some(_), _) => Err(invalid(id_or_null, "method must be a string")),
        (None, Some(_)) if msg.contains_key("result") || msg.contains_key("error") => {
            Ok(Message::Response)
        }
        (None, _) => Err(invalid(id_or_null, "method is missing")),
    }
}

pub(super) fn rpc_reply(id: &Value, reply: Reply) -> Value {
    match reply {
        Reply::Result(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Reply::Error { code, message } => rpc_error(id, code, &message),
    }
}

pub(super) fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

pub(super) fn json_response(status: u16, body: &Value) -> Response {
    Response::json(status, body.to_string())
}
