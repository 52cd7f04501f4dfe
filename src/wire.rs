//! Control-plane JSON: poll envelopes, commands and response payloads.
//!
//! Shared by the client and the relay. Unknown fields are ignored everywhere. JSON-RPC bodies are
//! kept as [`RawValue`]s so they cross the tunnel byte-exact: key order, number spelling and
//! whitespace are whatever the sender wrote.
//!
//! A poll answer is decoded one command at a time, so one malformed command cannot sink the
//! others in its batch ([`PollEnvelope::commands`] then [`Command::from_json`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::duration;
use crate::secret::Secret;

/// The channel a command without one belongs to.
pub const DEFAULT_CHANNEL: &str = "main";

/// The longest canonical channel name.
const MAX_CHANNEL_LEN: usize = 64;

/// `GET …/poll` with status 200. Commands stay raw until [`Command::from_json`].
#[derive(Debug, Deserialize)]
pub struct PollEnvelope {
    #[serde(default)]
    pub commands: Vec<Box<RawValue>>,
}

/// What a command asks for.
#[derive(Debug)]
pub enum CommandKind {
    /// Forward this JSON-RPC message (request or notification) unchanged.
    JsonRpc(Box<RawValue>),
    /// Close the MCP session named by the `Mcp-Session-Id` header.
    SessionTermination,
    /// Our extension ([`FEATURE_CANCEL`]): the caller of the command with this `request_id`
    /// left; end its MCP call and post nothing. Only meaningful when both ends announced it.
    Cancel {
        /// Why, for the log line (`host_closed`, `notifications_cancelled`); free text.
        reason: Option<String>,
    },
    /// Our extension ([`FEATURE_STREAMS`]): open a long-lived event stream at the MCP server and
    /// forward each of its messages as `jsonrpc_notify` until it ends, then post a terminal
    /// response. Only meaningful when both ends announced it.
    Stream(StreamOpen),
    /// Our extension ([`FEATURE_SERVER_REQUESTS`]): a host's answer (a JSON-RPC response) to a
    /// server→client request this client forwarded; delivered to the MCP server as a message.
    ServerResponse(Box<RawValue>),
    /// Fetch the `main` server's OAuth protected-resource metadata (RFC 9728) from inside the
    /// network; answered with an `oauth_discovery_response`. Carries nothing of its own.
    OAuthDiscovery,
    /// A type this client does not know; skipped with a log line.
    Unknown(String),
}

impl CommandKind {
    /// The command type as metrics and logs name it: its wire `command_type`, or `unknown` for a
    /// type this client does not know (never the foreign text, so metric labels stay few).
    pub fn name(&self) -> &'static str {
        match self {
            CommandKind::JsonRpc(_) => COMMAND_JSONRPC,
            CommandKind::SessionTermination => COMMAND_SESSION_TERMINATION,
            CommandKind::Cancel { .. } => COMMAND_CANCEL,
            CommandKind::OAuthDiscovery => COMMAND_OAUTH_DISCOVERY,
            CommandKind::Stream(_) => COMMAND_STREAM,
            CommandKind::ServerResponse(_) => COMMAND_SERVER_RESPONSE,
            CommandKind::Unknown(_) => "unknown",
        }
    }
}

/// What a `stream` command opens (its `stream` field).
#[derive(Debug)]
pub enum StreamOpen {
    /// `"stream":"get"`: a 2025 session's standalone `GET` stream (`Mcp-Session-Id` in the
    /// headers).
    Get,
    /// `"stream":"listen"`: a 2026-07-28 `subscriptions/listen` request, POSTed as it is.
    Listen(Box<RawValue>),
}

/// One decoded command.
#[derive(Debug)]
pub struct Command {
    pub request_id: String,
    /// Echoed only in the `X-Tunnel-Shard-Token` header of our answer.
    pub shard_token: Secret,
    /// The raw channel as sent (`None` when absent or empty); see [`canonical_channel`].
    pub raw_channel: Option<String>,
    /// `None`: no deadline (absent, null or invalid, which fails open).
    pub response_timeout: Option<Duration>,
    /// Multi-valued headers, flattened to `(name, value)` pairs in a stable order.
    pub headers: Vec<(String, String)>,
    pub kind: CommandKind,
}

/// Why a command could not be decoded.
#[derive(Debug)]
pub enum BadCommand {
    /// No usable `request_id` + `shard_token`: nothing can be answered, only logged.
    Unanswerable(String),
    /// Identifiable but unusable: answer it with an error instead of leaving the caller waiting.
    Invalid {
        request_id: String,
        shard_token: Secret,
        raw_channel: Option<String>,
        reason: String,
    },
}

/// The fields we read; everything else is ignored.
#[derive(Deserialize)]
struct RawCommand {
    request_id: Option<Value>,
    shard_token: Option<Value>,
    command_type: Option<Value>,
    channel: Option<Value>,
    response_timeout: Option<Value>,
    headers: Option<Value>,
    jsonrpc: Option<Box<RawValue>>,
    reason: Option<Value>,
    stream: Option<Value>,
}

impl Command {
    /// Decodes one element of a poll envelope's `commands`.
    pub fn from_json(raw: &RawValue) -> Result<Command, BadCommand> {
        let c: RawCommand = serde_json::from_str(raw.get())
            .map_err(|e| BadCommand::Unanswerable(format!("not a command object: {e}")))?;
        let (Some(Value::String(request_id)), Some(Value::String(shard_token))) =
            (c.request_id, c.shard_token)
        else {
            return Err(BadCommand::Unanswerable(
                "missing request_id or shard_token".into(),
            ));
        };
        let shard_token = Secret::new(shard_token);
        let raw_channel = match c.channel {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            _ => None,
        };
        let invalid = |reason: &str| BadCommand::Invalid {
            request_id: request_id.clone(),
            shard_token: shard_token.clone(),
            raw_channel: raw_channel.clone(),
            reason: reason.to_string(),
        };
        // A missing command_type means jsonrpc: that is the OpenAPI default.
        let kind = match c.command_type {
            None | Some(Value::Null) => "jsonrpc".to_string(),
            Some(Value::String(t)) => t,
            Some(_) => return Err(invalid("command_type is not a string")),
        };
        let kind = match kind.as_str() {
            COMMAND_JSONRPC => match c.jsonrpc {
                Some(body) if body.get().trim_start().starts_with('{') => {
                    CommandKind::JsonRpc(body)
                }
                _ => return Err(invalid("jsonrpc command without a JSON-RPC object")),
            },
            COMMAND_SERVER_RESPONSE => match c.jsonrpc {
                Some(body) if body.get().trim_start().starts_with('{') => {
                    CommandKind::ServerResponse(body)
                }
                _ => return Err(invalid("server_response command without a JSON-RPC object")),
            },
            COMMAND_SESSION_TERMINATION => CommandKind::SessionTermination,
            COMMAND_OAUTH_DISCOVERY => CommandKind::OAuthDiscovery,
            COMMAND_CANCEL => CommandKind::Cancel {
                reason: match c.reason {
                    Some(Value::String(mut r)) => {
                        crate::text::truncate_on_char_boundary(&mut r, 64);
                        Some(r)
                    }
                    _ => None,
                },
            },
            COMMAND_STREAM => match (c.stream, c.jsonrpc) {
                (Some(Value::String(s)), _) if s == "get" => CommandKind::Stream(StreamOpen::Get),
                (Some(Value::String(s)), Some(body))
                    if s == "listen" && body.get().trim_start().starts_with('{') =>
                {
                    CommandKind::Stream(StreamOpen::Listen(body))
                }
                _ => return Err(invalid("stream command without a known stream kind")),
            },
            _ => CommandKind::Unknown(kind),
        };
        let response_timeout = match c.response_timeout {
            Some(Value::String(s)) => duration::parse(&s),
            _ => None,
        };
        Ok(Command {
            request_id,
            shard_token,
            raw_channel,
            response_timeout,
            headers: flatten_headers(c.headers),
            kind,
        })
    }

    /// The first value of a command header, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The canonical channel for a raw channel field, or `None` when it is not a valid name.
/// Absent means `main`; names are lowercase `[a-z0-9_-]{1,64}`.
pub fn canonical_channel(raw: Option<&str>) -> Option<String> {
    let Some(raw) = raw else {
        return Some(DEFAULT_CHANNEL.to_string());
    };
    let lower = raw.to_ascii_lowercase();
    let valid = !lower.is_empty()
        && lower.len() <= MAX_CHANNEL_LEN
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    valid.then_some(lower)
}

fn flatten_headers(headers: Option<Value>) -> Vec<(String, String)> {
    let Some(Value::Object(map)) = headers else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, values) in map {
        match values {
            Value::Array(items) => {
                for item in items {
                    if let Value::String(v) = item {
                        out.push((name.clone(), v));
                    }
                }
            }
            // Tolerate a single string where the contract says a list.
            Value::String(v) => out.push((name, v)),
            _ => {}
        }
    }
    out
}

/// `resp_type` of a posted response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RespType {
    JsonrpcResponse,
    JsonrpcNotify,
    NotifyAck,
    SessionTerminationResponse,
    /// The answer to an `oauth_discovery` command ([`COMMAND_OAUTH_DISCOVERY`]).
    OauthDiscoveryResponse,
}

impl RespType {
    /// Whether this payload ends the command (everything but a notification).
    pub fn is_terminal(self) -> bool {
        self != RespType::JsonrpcNotify
    }
}

/// Body of `POST …/response`. The shard token is never in here: it travels only in a header.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResponsePayload {
    pub request_id: String,
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_json: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resp_headers: BTreeMap<String, Vec<String>>,
    pub resp_code: u16,
    pub resp_type: RespType,
}

/// The answer to a successful response POST.
#[derive(Debug, Deserialize, Serialize)]
pub struct ResponseAck {
    #[serde(default)]
    pub status: String,
}

/// Service-side error body: `{"error":{"message":…,"type":…,"code":…}}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct ApiErrorResponse {
    pub error: ApiError,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ApiError {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub code: Option<String>,
}

/// Startup metadata from `GET /v1/tunnels/{id}`; diagnostics only.
#[derive(Debug, Deserialize, Serialize)]
pub struct TunnelMetadata {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// What a JSON-RPC message is, read from its raw text without changing it.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcShape {
    /// `None` when the member is absent (a notification); `Some(Value::Null)` for `"id": null`.
    pub id: Option<Value>,
    pub method: Option<String>,
    pub has_result: bool,
    pub has_error: bool,
}

impl RpcShape {
    /// `None` when the text is not a JSON object.
    pub fn of(raw: &str) -> Option<RpcShape> {
        let Value::Object(map) = serde_json::from_str::<Value>(raw).ok()? else {
            return None;
        };
        Some(RpcShape {
            id: map.get("id").cloned(),
            method: map
                .get("method")
                .and_then(Value::as_str)
                .map(str::to_string),
            has_result: map.contains_key("result"),
            has_error: map.contains_key("error"),
        })
    }

    /// A request or notification (it has a method).
    pub fn is_call(&self) -> bool {
        self.method.is_some()
    }

    /// A notification: a method and no id.
    pub fn is_notification(&self) -> bool {
        self.method.is_some() && self.id.is_none()
    }
}

/// The header in which our client and our relay name the extensions of the contract they speak
/// (README, "The extension between our relay and our client"). The client sends it on every
/// control-plane request, the relay on every control-plane answer; each side uses a feature only
/// when the other named it too. A control plane that is not ours ignores it and never sends it,
/// so the official contract applies unchanged.
pub const EXTENSIONS_HEADER: &str = "X-Mcp-Tunnel-Extensions";

/// On a poll: deliver only these command types (a comma-separated list). A client whose queue is
/// full polls this way for `cancel` commands, so that a busy client still hears of callers who
/// left, without being handed more work than it has room for.
pub const POLL_ONLY_HEADER: &str = "X-Mcp-Tunnel-Poll-Only";

/// Feature token: the relay sends `cancel` commands for commands whose caller left.
pub const FEATURE_CANCEL: &str = "cancel";

/// `command_type` of a cancellation ([`CommandKind::Cancel`]).
pub const COMMAND_CANCEL: &str = "cancel";
/// The `command_type` of a forwarded JSON-RPC message (also the default when absent).
pub const COMMAND_JSONRPC: &str = "jsonrpc";
/// The `command_type` that ends an MCP session.
pub const COMMAND_SESSION_TERMINATION: &str = "session_termination";

/// Feature token: long-lived event streams cross as `stream` commands (README, "The extension
/// between our relay and our client").
pub const FEATURE_STREAMS: &str = "streams";

/// `command_type` of a long-lived stream ([`CommandKind::Stream`]).
pub const COMMAND_STREAM: &str = "stream";

/// Feature token: server→client requests cross to the host, and its answers come back as
/// `server_response` commands (README, "The extension between our relay and our client").
pub const FEATURE_SERVER_REQUESTS: &str = "server-requests";

/// `command_type` of a host's answer to a server→client request ([`CommandKind::ServerResponse`]).
pub const COMMAND_SERVER_RESPONSE: &str = "server_response";

/// The command a host's GET of a tunnel's protected-resource metadata URL becomes: the client
/// fetches the MCP server's PRMD and answers with [`RespType::OauthDiscoveryResponse`].
pub const COMMAND_OAUTH_DISCOVERY: &str = "oauth_discovery";

/// Every feature this build speaks, sorted (as the header lists them). A feature token names one
/// fixed behaviour: a changed one gets a new token (`cancel2`), so old and new builds keep
/// understanding each other.
pub const FEATURES: &[&str] = &[FEATURE_CANCEL, FEATURE_SERVER_REQUESTS, FEATURE_STREAMS];

/// Most feature tokens read from one header: the list is short, a longer one is not ours.
const MAX_FEATURES: usize = 32;

/// A set of extension features, as named in [`EXTENSIONS_HEADER`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    features: BTreeSet<String>,
}

impl Extensions {
    /// Everything this build speaks ([`FEATURES`]).
    pub fn ours() -> Extensions {
        Extensions {
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// The features of a header value that this build also speaks: the ones both ends may use.
    /// Absent, empty or foreign values give none. Tokens are comma-separated, case-insensitive.
    pub fn from_header(value: Option<&str>) -> Extensions {
        let features = value
            .unwrap_or("")
            .split(',')
            .take(MAX_FEATURES)
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| FEATURES.contains(&t.as_str()))
            .collect();
        Extensions { features }
    }

    pub fn has(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// The header value: the features, comma-separated.
    pub fn to_header(&self) -> String {
        let names: Vec<&str> = self.features.iter().map(String::as_str).collect();
        names.join(",")
    }
}

/// The header in which a polling client declares the channels it serves.
pub const SERVER_INFO_HEADER: &str = "X-Tunnel-MCP-Server-Info";

/// One channel as declared in `X-Tunnel-MCP-Server-Info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub name: String,
    /// Commands of one MCP session must stay on this client instance (stdio channels).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proc_affinity: bool,
}

/// The `X-Tunnel-MCP-Server-Info` declaration: compact JSON, `version` first as in the
/// contract's examples. The relay reads only the channels; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub channels: Vec<ChannelInfo>,
}

impl ServerInfo {
    /// The declaration this client version sends (version 1).
    pub fn new(channels: Vec<ChannelInfo>) -> ServerInfo {
        ServerInfo {
            version: 1,
            channels,
        }
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        serde_json::to_string(self).expect("plain strings and numbers always serialize")
    }

    /// A header value as a client sent it; `None` if it is not the declaration's JSON.
    pub fn from_header(value: &str) -> Option<ServerInfo> {
        serde_json::from_str(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_info_is_compact_and_marks_affinity_only_when_true() {
        let info = ServerInfo::new(vec![
            ChannelInfo {
                name: "main".into(),
                proc_affinity: false,
            },
            ChannelInfo {
                name: "tools".into(),
                proc_affinity: true,
            },
        ])
        .to_header();
        assert_eq!(
            info,
            r#"{"version":1,"channels":[{"name":"main"},{"name":"tools","proc_affinity":true}]}"#
        );
    }

    #[test]
    fn server_info_round_trips_and_ignores_unknown_fields() {
        let info = ServerInfo::from_header(
            r#"{"version":1,"extra":true,"channels":[{"name":"a","proc_affinity":true,"x":1},{"name":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(info.channels.len(), 2);
        assert!(info.channels[0].proc_affinity && !info.channels[1].proc_affinity);
        assert_eq!(ServerInfo::from_header(&info.to_header()), Some(info));
        assert_eq!(ServerInfo::from_header("not json"), None);
    }

    fn cmd(json: &str) -> Result<Command, BadCommand> {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        Command::from_json(&raw)
    }

    #[test]
    fn decodes_a_jsonrpc_command_keeping_the_body_exact() {
        let body = r#"{"id":1,"jsonrpc":"2.0","method":"tools/list","params":{"b":1.50,"a":2}}"#;
        let c = cmd(&format!(
            r#"{{"request_id":"r1","shard_token":"s1","command_type":"jsonrpc","channel":"Main",
               "response_timeout":"4500ms","headers":{{"Mcp-Session-Id":["abc"],"X-Two":["1","2"]}},
               "jsonrpc":{body},"future_field":true}}"#
        ))
        .unwrap();
        assert_eq!(c.request_id, "r1");
        assert_eq!(c.shard_token.expose(), "s1");
        assert_eq!(c.response_timeout, Some(Duration::from_millis(4500)));
        assert_eq!(c.header("mcp-session-id"), Some("abc"));
        assert_eq!(c.headers.iter().filter(|(n, _)| n == "X-Two").count(), 2);
        match c.kind {
            CommandKind::JsonRpc(raw) => assert_eq!(raw.get(), body),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            canonical_channel(c.raw_channel.as_deref()).as_deref(),
            Some("main")
        );
    }

    #[test]
    fn missing_command_type_means_jsonrpc() {
        let c =
            cmd(r#"{"request_id":"r","shard_token":"s","jsonrpc":{"jsonrpc":"2.0","method":"x"}}"#)
                .unwrap();
        assert!(matches!(c.kind, CommandKind::JsonRpc(_)));
        assert_eq!(c.raw_channel, None);
    }

    #[test]
    fn invalid_response_timeout_fails_open() {
        for t in [
            r#""1.5s""#,
            r#""-1s""#,
            "30",
            r#""1m30s""#,
            "null",
            r#"" 1s""#,
        ] {
            let c = cmd(&format!(
                r#"{{"request_id":"r","shard_token":"s","command_type":"session_termination","response_timeout":{t}}}"#
            ))
            .unwrap();
            assert_eq!(c.response_timeout, None, "{t}");
        }
        let c = cmd(r#"{"request_id":"r","shard_token":"s","command_type":"session_termination","response_timeout":"0s"}"#).unwrap();
        assert_eq!(c.response_timeout, Some(Duration::ZERO));
    }

    #[test]
    fn unknown_types_and_bad_commands_are_classified() {
        let c = cmd(r#"{"request_id":"r","shard_token":"s","command_type":"frobnicate"}"#).unwrap();
        assert!(matches!(c.kind, CommandKind::Unknown(ref t) if t == "frobnicate"));
        assert!(matches!(
            cmd(r#"{"shard_token":"s"}"#),
            Err(BadCommand::Unanswerable(_))
        ));
        assert!(matches!(cmd("[1]"), Err(BadCommand::Unanswerable(_))));
        assert!(matches!(
            cmd(r#"{"request_id":"r","shard_token":"s","command_type":"jsonrpc","jsonrpc":"x"}"#),
            Err(BadCommand::Invalid { .. })
        ));
    }

    #[test]
    fn a_cancel_command_names_the_cancelled_request() {
        let c = cmd(r#"{"request_id":"req_1","shard_token":"s","command_type":"cancel","reason":"host_closed"}"#)
            .unwrap();
        assert_eq!(c.request_id, "req_1");
        assert!(
            matches!(c.kind, CommandKind::Cancel { reason: Some(ref r) } if r == "host_closed")
        );
    }

    #[test]
    fn command_kinds_are_named_by_their_wire_type() {
        for t in ["session_termination", "oauth_discovery", "cancel"] {
            let c = cmd(&format!(
                r#"{{"request_id":"r","shard_token":"s","command_type":"{t}"}}"#
            ))
            .unwrap();
            assert_eq!(c.kind.name(), t);
        }
        let c = cmd(r#"{"request_id":"r","shard_token":"s","command_type":"x-new"}"#).unwrap();
        assert_eq!(c.kind.name(), "unknown");
    }

    #[test]
    fn stream_commands_name_what_they_open() {
        let get = cmd(r#"{"request_id":"r","shard_token":"s","command_type":"stream","stream":"get","headers":{"Mcp-Session-Id":["x"]}}"#)
            .unwrap();
        assert!(matches!(get.kind, CommandKind::Stream(StreamOpen::Get)));
        let listen = cmd(r#"{"request_id":"r","shard_token":"s","command_type":"stream","stream":"listen","jsonrpc":{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen"}}"#)
            .unwrap();
        assert!(matches!(
            listen.kind,
            CommandKind::Stream(StreamOpen::Listen(_))
        ));
        assert!(matches!(
            cmd(
                r#"{"request_id":"r","shard_token":"s","command_type":"stream","stream":"listen"}"#
            ),
            Err(BadCommand::Invalid { .. })
        ));
    }

    #[test]
    fn an_oauth_discovery_command_and_its_answer_type() {
        let c = cmd(r#"{"request_id":"r","shard_token":"s","command_type":"oauth_discovery"}"#)
            .unwrap();
        assert!(matches!(c.kind, CommandKind::OAuthDiscovery));
        assert_eq!(
            serde_json::to_string(&RespType::OauthDiscoveryResponse).unwrap(),
            r#""oauth_discovery_response""#
        );
        assert!(RespType::OauthDiscoveryResponse.is_terminal());
    }

    #[test]
    fn extensions_keep_only_features_both_ends_speak() {
        let both = Extensions::from_header(Some(" Cancel , streams,,x"));
        assert!(both.has(FEATURE_CANCEL) && both.has(FEATURE_STREAMS) && !both.has("x"));
        assert_eq!(both.to_header(), "cancel,streams");
        assert!(Extensions::from_header(Some("server-requests")).has(FEATURE_SERVER_REQUESTS));
        assert!(Extensions::from_header(None).is_empty());
        assert!(Extensions::from_header(Some("")).is_empty());
        assert_eq!(Extensions::ours().to_header(), FEATURES.join(","));
    }

    #[test]
    fn channels_are_canonical() {
        assert_eq!(canonical_channel(None).as_deref(), Some("main"));
        assert_eq!(
            canonical_channel(Some("Tools_1-a")).as_deref(),
            Some("tools_1-a")
        );
        assert_eq!(canonical_channel(Some("has space")), None);
        assert_eq!(canonical_channel(Some(&"x".repeat(65))), None);
    }

    #[test]
    fn response_payload_omits_empty_fields_and_never_has_a_shard_token() {
        let p = ResponsePayload {
            request_id: "r".into(),
            channel: "main".into(),
            resp_json: None,
            resp_headers: BTreeMap::new(),
            resp_code: 202,
            resp_type: RespType::NotifyAck,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"request_id":"r","channel":"main","resp_code":202,"resp_type":"notify_ack"}"#
        );
    }

    #[test]
    fn rpc_shape() {
        let n = RpcShape::of(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(n.is_notification());
        let r = RpcShape::of(r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#).unwrap();
        assert!(!r.is_notification());
        assert_eq!(r.id, Some(Value::Null));
        assert!(RpcShape::of("[]").is_none());
    }

    #[test]
    fn rpc_shape_keeps_the_id_exact() {
        // Synthesized errors and restored stdio ids are written from this id: beyond u64 or with
        // a fraction it must come out as the caller wrote it (serde_json's arbitrary_precision).
        for id in ["18446744073709551617", "-9223372036854775809", "1.50"] {
            let shape = RpcShape::of(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"x"}}"#));
            let written = serde_json::to_string(&shape.unwrap().id.unwrap()).unwrap();
            assert_eq!(written, id);
        }
    }
}
