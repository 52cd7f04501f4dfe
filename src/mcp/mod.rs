//! Transports to the private MCP server. They know MCP and HTTP, never the control plane: a
//! transport takes one command's message and returns one [`Reply`] (or reports the deadline
//! passed), handing notifications to a callback as they arrive.

pub mod http;
pub mod sse;

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::failure::Failure;
use crate::wire::RespType;

/// The terminal answer to one command, before it is addressed to the control plane.
#[derive(Debug)]
pub struct Reply {
    pub resp_json: Option<Box<RawValue>>,
    pub resp_headers: BTreeMap<String, Vec<String>>,
    pub resp_code: u16,
    pub resp_type: RespType,
}

impl Reply {
    /// A synthesized `-32603` for a failed request with JSON-RPC id `id`.
    pub fn failure(failure: &Failure, id: &serde_json::Value) -> Reply {
        Reply::error_json(failure.resp_code(), failure.to_jsonrpc(id))
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
}
