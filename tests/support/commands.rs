//! Builders for the commands the fake control plane hands out, and the JSON-RPC messages inside them.

use serde_json::{Map, Value, json};

/// A timestamp far in the past: a client that wrongly derived deadlines from `created_at` instead of
/// the poll receipt instant would drop every command that carries a `response_timeout`.
const CREATED_AT: &str = "2020-01-01T00:00:00.000Z";

/// The shard token the fake attaches to a command: opaque-looking, distinct per request.
fn shard_token_for(request_id: &str) -> String {
    format!("shard.{request_id}.Zk9/q+w=")
}

/// A JSON-RPC request.
pub fn rpc_request(id: impl Into<Value>, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params})
}

/// A JSON-RPC `tools/call` request for `tool`.
pub fn tool_call(id: impl Into<Value>, tool: &str) -> Value {
    rpc_request(id, "tools/call", json!({"name": tool, "arguments": {}}))
}

/// A JSON-RPC notification (no id).
pub fn notification(method: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": method})
}

/// One polled command, as the control plane would queue it.
#[derive(Clone, Debug)]
pub struct Command {
    value: Value,
}

impl Command {
    /// A `jsonrpc` command on the main channel carrying `message`.
    pub fn jsonrpc(request_id: &str, message: Value) -> Command {
        let mut command = Command::base(request_id, "jsonrpc");
        command.set("jsonrpc", message);
        command
    }

    /// A `session_termination` command for `session_id`.
    pub fn session_termination(request_id: &str, session_id: &str) -> Command {
        Command::base(request_id, "session_termination").header("Mcp-Session-Id", session_id)
    }

    /// An `oauth_discovery` command on the main channel: only the common fields, no `headers`.
    pub fn oauth_discovery(request_id: &str) -> Command {
        let mut command = Command::base(request_id, "oauth_discovery");
        command.fields().remove("headers");
        command
    }

    pub fn channel(mut self, channel: &str) -> Command {
        self.set("channel", json!(channel));
        self
    }

    fn base(request_id: &str, command_type: &str) -> Command {
        Command {
            value: json!({
                "request_id": request_id,
                "shard_token": shard_token_for(request_id),
                "command_type": command_type,
                "channel": "main",
                "created_at": CREATED_AT,
                "headers": {},
            }),
        }
    }

    /// Adds one value to the command's multi-valued `headers` map.
    pub fn header(mut self, name: &str, value: &str) -> Command {
        let headers = self.fields()["headers"]
            .as_object_mut()
            .expect("headers is an object");
        headers
            .entry(name)
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("header values are an array")
            .push(json!(value));
        self
    }

    pub fn response_timeout(mut self, timeout: &str) -> Command {
        self.set("response_timeout", json!(timeout));
        self
    }

    pub fn created_at(mut self, created_at: &str) -> Command {
        self.set("created_at", json!(created_at));
        self
    }

    pub fn command_type(mut self, command_type: &str) -> Command {
        self.set("command_type", json!(command_type));
        self
    }

    pub fn request_id(&self) -> &str {
        self.value["request_id"].as_str().expect("request_id")
    }

    pub fn shard_token(&self) -> &str {
        self.value["shard_token"].as_str().expect("shard_token")
    }

    /// The JSON-RPC message this command carries, if it is a `jsonrpc` command.
    pub fn message(&self) -> &Value {
        &self.value["jsonrpc"]
    }

    fn set(&mut self, key: &str, value: Value) {
        self.fields().insert(key.to_owned(), value);
    }

    fn fields(&mut self) -> &mut Map<String, Value> {
        self.value.as_object_mut().expect("a command is an object")
    }
}

impl From<Command> for Value {
    fn from(command: Command) -> Value {
        command.value
    }
}
