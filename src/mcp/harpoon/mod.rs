//! Harpoon: the MCP server built into the client, answering on the reserved channel `harpoon`
//! in memory (no child process, no socket). It exposes an allowlisted, buffered HTTP client as
//! two tools: `list_targets` (labels, descriptions, allowed methods; never URLs) and
//! `call_target` ([`call`]: one GET, POST or PUT to a target by label, within size, time and
//! redirect limits). OpenAI's service uses it to reach the registration, token and revocation
//! endpoints of an authorization server inside the private network.
//!
//! Speaks JSON-RPC 2.0 as MCP over Streamable HTTP would: `initialize`, `ping`, `tools/list`,
//! `tools/call`; notifications are acknowledged with 202; anything else is `-32601`. It keeps no
//! session state, yet is declared with `proc_affinity` (the official client's rule for an
//! in-memory server). Tool failures are tool results with `isError` and the text
//! `label L: reason`; an unknown tool or malformed arguments are `-32602`.
//!
//! Outbound calls go through [`crate::http_client`] agents built from the Harpoon hop's
//! networking (the client's CA roots, `--harpoon.http-proxy` or `--http-proxy`), one per Unix
//! socket a target names.

mod allowlist;
mod call;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use ureq::Agent;

use super::{Outcome, Reply};
use crate::config::HarpoonConfig;
use crate::http_client::{self, AgentOptions};
use crate::net::HopNet;
use crate::wire::RespType;
use allowlist::UrlKey;

const LOG_TARGET: &str = module_path!();

/// MCP revisions `initialize` accepts; the first is answered when the caller's is unknown.
const PROTOCOLS: [&str; 4] = ["2025-06-18", "2025-11-25", "2025-03-26", "2024-11-05"];

const INSTRUCTIONS: &str = "Harpoon is a constrained outbound HTTP client. list_targets names the \
     allowlisted targets; call_target makes one GET, POST or PUT request to a target by label, \
     within size, timeout and redirect limits. No other host or path can be reached.";

/// One allowlisted target, ready to call.
struct Target {
    label: String,
    description: String,
    url: String,
    key: UrlKey,
    /// Index into [`Harpoon::agents`].
    agent: usize,
}

/// The embedded server.
pub struct Harpoon {
    targets: Vec<Target>,
    /// The direct agent first, then one per Unix socket.
    agents: Vec<Agent>,
    max_response_bytes: usize,
    max_redirects: usize,
}

impl Harpoon {
    /// The server for `cfg`'s targets; `None` when there are none (the channel is off).
    pub fn new(cfg: &HarpoonConfig) -> Result<Option<Harpoon>, String> {
        if cfg.targets.is_empty() {
            return Ok(None);
        }
        let opts = AgentOptions {
            max_idle_age: Duration::from_secs(30),
            max_idle_per_host: 2,
        };
        let mut agents = vec![http_client::build_agent(&opts, &cfg.net)?];
        let mut sockets: Vec<PathBuf> = Vec::new();
        let mut targets = Vec::new();
        for t in &cfg.targets {
            let key = UrlKey::of(&t.url)
                .ok_or_else(|| format!("harpoon target {}: unusable URL", t.label))?;
            let agent = match &t.unix_socket {
                None => 0,
                Some(path) => match sockets.iter().position(|p| p == path) {
                    Some(i) => i + 1,
                    None => {
                        let net = HopNet {
                            unix_socket: Some(path.clone()),
                            ..cfg.net.clone()
                        };
                        agents.push(http_client::build_agent(&opts, &net)?);
                        sockets.push(path.clone());
                        sockets.len()
                    }
                },
            };
            targets.push(Target {
                label: t.label.clone(),
                description: t.description.clone(),
                url: t.url.clone(),
                key,
                agent,
            });
        }
        Ok(Some(Harpoon {
            targets,
            agents,
            max_response_bytes: cfg.max_response_bytes,
            max_redirects: cfg.max_redirects,
        }))
    }

    fn agent_of(&self, target: usize) -> &Agent {
        &self.agents[self.targets[target].agent]
    }

    /// Answers one JSON-RPC message of a command on channel `harpoon`.
    pub fn call(&self, message: &RawValue, deadline: Option<Instant>) -> Outcome {
        let parsed: Option<Map<String, Value>> = serde_json::from_str(message.get()).ok();
        let Some(msg) = parsed else {
            return reply(rpc_error(&Value::Null, -32600, "invalid request"));
        };
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let Some(id) = msg.get("id").cloned() else {
            // A notification (or a stray response): nothing to answer but the acknowledgement.
            return Outcome::Reply(Reply {
                resp_json: None,
                resp_headers: BTreeMap::new(),
                resp_code: 202,
                resp_type: RespType::NotifyAck,
                failure: None,
            });
        };
        let params = msg.get("params").and_then(Value::as_object);
        let body = match method {
            "initialize" => rpc_result(&id, self.initialize(params)),
            "ping" => rpc_result(&id, json!({})),
            "tools/list" => rpc_result(&id, json!({ "tools": self.tools() })),
            "tools/call" => match self.tools_call(params, deadline) {
                Ok(result) => rpc_result(&id, result),
                Err(message) => rpc_error(&id, -32602, &message),
            },
            _ => rpc_error(&id, -32601, "method not found"),
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Outcome::Expired;
        }
        reply(body)
    }

    fn initialize(&self, params: Option<&Map<String, Value>>) -> Value {
        let asked = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str);
        let version = asked
            .filter(|v| PROTOCOLS.contains(v))
            .unwrap_or(PROTOCOLS[0]);
        json!({
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": {
                "name": "harpoon",
                "title": "Harpoon (constrained HTTP client)",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "instructions": INSTRUCTIONS,
        })
    }

    fn tools(&self) -> Value {
        let label = json!({
            "type": "string", "minLength": 1, "maxLength": 64,
            "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$",
            "description": "Allowlisted target label",
        });
        json!([
            {
                "name": "list_targets",
                "title": "List Harpoon targets",
                "description": "List the allowlisted Harpoon targets by label.",
                "annotations": { "readOnlyHint": true, "idempotentHint": true, "openWorldHint": false },
                "inputSchema": {
                    "type": "object",
                    "properties": {
                        "categories": { "type": "array", "items": { "type": "string" } },
                        "sources": { "type": "array", "items": { "type": "string" } },
                        "tags": { "type": "array", "items": { "type": "string" } },
                    },
                },
            },
            {
                "name": "call_target",
                "title": "Call Harpoon target",
                "description": "Call an allowlisted HTTP target by label.",
                "annotations": { "openWorldHint": true },
                "inputSchema": {
                    "type": "object",
                    "required": ["label", "method"],
                    "properties": {
                        "label": label,
                        "method": { "type": "string", "enum": ["GET", "POST", "PUT"] },
                        "headers": {
                            "type": "object", "additionalProperties": { "type": "string" },
                            "description": "Request headers; hop-by-hop, proxy-forwarding and identity headers are dropped",
                        },
                        "body": { "type": "string", "description": "Request body as a raw string" },
                        "timeout_ms": { "type": "integer", "minimum": 100, "maximum": 120000, "default": 30000 },
                        "max_response_bytes": {
                            "type": "integer", "minimum": 1,
                            "maximum": self.max_response_bytes, "default": self.max_response_bytes,
                        },
                        "follow_redirects": { "type": "boolean", "default": true },
                        "max_redirects": {
                            "type": "integer", "minimum": 0,
                            "maximum": self.max_redirects, "default": self.max_redirects,
                        },
                    },
                },
            },
        ])
    }

    /// A `tools/call`: the tool result (a tool error among them), or the `-32602` message.
    fn tools_call(
        &self,
        params: Option<&Map<String, Value>>,
        deadline: Option<Instant>,
    ) -> Result<Value, String> {
        let name = params.and_then(|p| p.get("name")).and_then(Value::as_str);
        let empty = Map::new();
        let arguments = match params.and_then(|p| p.get("arguments")) {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(a)) => a,
            Some(_) => return Err("arguments must be an object".into()),
        };
        match name {
            Some("list_targets") => {
                let targets: Vec<Value> = self
                    .targets
                    .iter()
                    .filter(|_| config_source_matches(arguments))
                    .map(|t| {
                        let mut info = json!({
                            "label": t.label,
                            "category": "config",
                            "source": "config",
                            "allowed_methods": ["GET", "POST", "PUT"],
                        });
                        if !t.description.is_empty() {
                            info["description"] = Value::from(t.description.as_str());
                        }
                        info
                    })
                    .collect();
                Ok(tool_result(json!({ "targets": targets })))
            }
            Some("call_target") => {
                let label = arguments
                    .get("label")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .unwrap_or("");
                if label.is_empty() {
                    return Ok(tool_error("unknown", "label is required"));
                }
                Ok(match self.call_target(label, arguments, deadline) {
                    Ok(result) => tool_result(result),
                    Err(why) => {
                        log::info!(target: LOG_TARGET, "harpoon: label {label}: refused: {why}");
                        tool_error(label, &why)
                    }
                })
            }
            Some(other) => Err(format!("unknown tool {other:?}")),
            None => Err("params.name is required".into()),
        }
    }
}

/// `list_targets` filters: every configured target has category and source `config` and no
/// tags, so a filter either keeps them all or none.
fn config_source_matches(arguments: &Map<String, Value>) -> bool {
    let listed = |field: &str| -> Vec<String> {
        (arguments
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten())
        .filter_map(Value::as_str)
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
    };
    let (categories, sources, tags) = (listed("categories"), listed("sources"), listed("tags"));
    (categories.is_empty() || categories.iter().any(|c| c == "config"))
        && (sources.is_empty() || sources.iter().any(|s| s == "config"))
        && tags.is_empty()
}

fn tool_result(structured: Value) -> Value {
    json!({
        "content": [{ "type": "text", "text": structured.to_string() }],
        "structuredContent": structured,
        "isError": false,
    })
}

fn tool_error(label: &str, message: &str) -> Value {
    json!({
        "content": [{ "type": "text", "text": format!("label {label}: {message}") }],
        "isError": true,
    })
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

fn reply(body: Value) -> Outcome {
    let mut headers = BTreeMap::new();
    headers.insert(
        "Content-Type".to_string(),
        vec!["application/json".to_string()],
    );
    match RawValue::from_string(body.to_string()) {
        Ok(raw) => Outcome::Reply(Reply::upstream(raw, headers, 200)),
        Err(_) => Outcome::Reply(Reply::error_json(500, String::from("{}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HarpoonTarget;

    fn server() -> Harpoon {
        let cfg = HarpoonConfig {
            targets: vec![HarpoonTarget {
                label: "auth".into(),
                url: "https://auth.example/token".into(),
                unix_socket: None,
                description: String::new(),
            }],
            net: HopNet::direct(),
            ..HarpoonConfig::default()
        };
        Harpoon::new(&cfg).unwrap().expect("a server")
    }

    fn answer(h: &Harpoon, message: &str) -> (u16, Option<Value>) {
        let raw = RawValue::from_string(message.to_string()).unwrap();
        match h.call(&raw, None) {
            Outcome::Reply(r) => (
                r.resp_code,
                r.resp_json.map(|j| serde_json::from_str(j.get()).unwrap()),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_targets_no_server() {
        assert!(Harpoon::new(&HarpoonConfig::default()).unwrap().is_none());
    }

    #[test]
    fn it_speaks_json_rpc_and_keeps_the_exact_id() {
        let h = server();
        let (code, body) = answer(
            &h,
            r#"{"jsonrpc":"2.0","id":18446744073709551617,"method":"initialize","params":{"protocolVersion":"1999-01-01"}}"#,
        );
        let body = body.unwrap();
        assert_eq!(code, 200);
        assert_eq!(body["id"].to_string(), "18446744073709551617");
        assert_eq!(body["result"]["protocolVersion"], PROTOCOLS[0]);
        let (code, body) = answer(
            &h,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        );
        assert_eq!((code, body), (202, None));
        let (_, body) = answer(&h, r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#);
        assert_eq!(body.unwrap()["result"], json!({}));
        let (_, body) = answer(&h, r#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#);
        assert_eq!(body.unwrap()["error"]["code"], -32601);
        let (_, body) = answer(&h, r#"[1,2]"#);
        assert_eq!(body.unwrap()["error"]["code"], -32600);
        let (_, body) = answer(
            &h,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"call_target","arguments":[]}}"#,
        );
        assert_eq!(body.unwrap()["error"]["code"], -32602);
    }

    #[test]
    fn list_target_filters_match_configured_targets_only() {
        let h = server();
        let list = |args: &str| {
            let (_, body) = answer(
                &h,
                &format!(
                    r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"list_targets","arguments":{args}}}}}"#
                ),
            );
            body.unwrap()["result"]["structuredContent"]["targets"]
                .as_array()
                .unwrap()
                .len()
        };
        assert_eq!(list("{}"), 1);
        assert_eq!(list(r#"{"categories":["config"],"sources":["CONFIG"]}"#), 1);
        assert_eq!(list(r#"{"categories":["oauth"]}"#), 0);
        assert_eq!(list(r#"{"tags":["token-endpoint"]}"#), 0);
    }
}
