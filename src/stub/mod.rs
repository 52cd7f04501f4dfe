//! A tiny built-in Streamable HTTP MCP server (`mcp-tunnel stub`), for demos, operator smoke
//! tests, benchmarks and our own tests. Built on [`crate::http_server`]; no state beyond the set of
//! live session ids.
//!
//! Protocol: MCP revision 2025-06-18 over Streamable HTTP (2025-03-26 and 2024-11-05 are also
//! accepted). The endpoint is `/mcp`:
//!
//! - `POST` carries one JSON-RPC message. A request is answered with one `application/json`
//!   response, except a `progress` tool call from a client that accepts `text/event-stream`: that
//!   one is answered with an event stream of `notifications/progress` then the result.
//!   Notifications and client responses get `202`. Batches are refused (`-32600`).
//! - `DELETE` ends a session; `GET` (a server-initiated stream) is not offered: `405`.
//!
//! Sessions: `initialize` hands out a fresh `Mcp-Session-Id`. A request naming an unknown session
//! gets `404` (the spec's signal to re-initialize); a request naming none is served anyway, so
//! stateless clients work too.
//!
//! Tools: `echo`, `add`, `slow`, `progress`, `fail` (a tool-level error result) and `fail_rpc` (a
//! JSON-RPC error), each exercising one path of a client or of the tunnel.
//!
//! Logging: one debug line per request naming the JSON-RPC method only. Bodies and header values
//! are never logged, since they may carry credentials.

use std::collections::HashSet;
use std::io;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use log::debug;
use serde_json::{Map, Number, Value, json};

use crate::config::{self, Opt, Sources};
use crate::http_server::{ChunkWriter, Limits, Request, Response, Server};
use crate::secret::Secret;

/// The one path that speaks MCP; anything else is 404.
const ENDPOINT: &str = "/mcp";

/// The revision we implement, answered when the client asks for one we do not know.
const LATEST_PROTOCOL: &str = "2025-06-18";

/// Revisions whose wire format this server satisfies; a client asking for one gets it back.
const SUPPORTED_PROTOCOLS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

const SESSION_HEADER: &str = "Mcp-Session-Id";

/// Random bytes per session id (32 hex characters): 128 bits, not guessable.
const SESSION_ID_BYTES: usize = 16;

/// Live sessions kept at most. Clients that never send `DELETE` would otherwise grow the set
/// without bound; past the cap an arbitrary old session is forgotten, which the spec allows (its
/// client gets 404 and initializes again).
const MAX_SESSIONS: usize = 10_000;

/// Longest sleep of the `slow` tool: long enough for any timeout test, short enough that a stray
/// call does not hold a connection thread for long.
const MAX_SLOW_MS: u64 = 60_000;

/// `progress` tool defaults and caps. The caps bound one call to 100 × 5 s.
const DEFAULT_PROGRESS_STEPS: u64 = 3;
const MAX_PROGRESS_STEPS: u64 = 100;
const DEFAULT_PROGRESS_DELAY_MS: u64 = 100;
const MAX_PROGRESS_DELAY_MS: u64 = 5_000;

/// Message of the `fail` and `fail_rpc` tools when the caller gives none.
const DEFAULT_FAILURE_MESSAGE: &str = "failure requested";

/// Characters of a JSON-RPC method name put in a log line; names are client-chosen and unbounded.
const LOGGED_METHOD_CHARS: usize = 64;

// JSON-RPC 2.0 error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
/// The `fail_rpc` tool's error: the first code of JSON-RPC's implementation-defined server range.
const SERVER_ERROR: i64 = -32000;
/// In the body of a 404 for an unknown session; the code the official TypeScript SDK uses there.
const SESSION_NOT_FOUND: i64 = -32001;

/// Options for the stub server.
#[derive(Debug, Clone)]
pub struct StubOptions {
    /// `serverInfo.name` in the `initialize` result.
    pub name: String,
    /// When set, every request must carry `Authorization: Bearer <it>`, else 401.
    pub require_bearer: Option<Secret>,
}

impl Default for StubOptions {
    fn default() -> Self {
        StubOptions {
            name: "mcp-tunnel-stub".to_string(),
            require_bearer: None,
        }
    }
}

/// Starts serving on `listener`; the MCP endpoint is the path `/mcp` (any other path → 404).
pub fn start(listener: TcpListener, opts: StubOptions) -> io::Result<Server> {
    let stub = Arc::new(Stub {
        name: opts.name,
        bearer: opts.require_bearer,
        sessions: Mutex::new(HashSet::new()),
    });
    Server::start(listener, None, Limits::default(), move |req: Request| {
        stub.handle(&req)
    })
}

const LISTEN: &str = "--listen";
const NAME: &str = "--name";
const REQUIRE_BEARER: &str = "--require-bearer";

/// The options of `mcp-tunnel stub`.
pub const STUB_OPTIONS: &[Opt] = &[
    Opt {
        flag: LISTEN,
        env: &["STUB_LISTEN"],
        default: Some("127.0.0.1:3000"),
        help: "Address to listen on; the MCP endpoint is http://ADDR/mcp.",
        ..Opt::BASE
    },
    Opt {
        flag: NAME,
        env: &["STUB_NAME"],
        default: Some("mcp-tunnel-stub"),
        help: "serverInfo.name reported by initialize.",
        ..Opt::BASE
    },
    Opt {
        flag: REQUIRE_BEARER,
        env: &["STUB_REQUIRE_BEARER"],
        default: Some(""),
        help: "Require `Authorization: Bearer <token>`; as a flag only env:VAR or file:PATH.",
        ..Opt::BASE
    },
];

/// `--help` text for `mcp-tunnel stub`.
pub fn help() -> String {
    config::help_text(
        "mcp-tunnel stub: a small built-in Streamable HTTP MCP server (MCP 2025-06-18) with the \
         tools echo, add, slow, progress, fail and fail_rpc, for demos, smoke tests and benchmarks",
        "mcp-tunnel stub [OPTIONS]",
        STUB_OPTIONS,
    )
}

/// `mcp-tunnel stub`: serves until SIGTERM/SIGINT. Returns the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let env = |name: &str| std::env::var(name).ok();
    let parsed = Sources::parse(STUB_OPTIONS, args, &env, "stub").and_then(|src| {
        let Some(src) = src else { return Ok(None) };
        if src
            .flag(REQUIRE_BEARER)
            .is_some_and(|v| !v.starts_with("env:") && !v.starts_with("file:"))
        {
            return Err(config::err(
                REQUIRE_BEARER,
                "on the command line only as env:VAR or file:PATH",
            ));
        }
        let bearer = src.get(REQUIRE_BEARER);
        let require_bearer = if bearer.value.is_empty() {
            None
        } else {
            Some(config::resolve_secret(&bearer, &env)?)
        };
        Ok(Some((
            src.get(LISTEN).value,
            StubOptions {
                name: src.get(NAME).value,
                require_bearer,
            },
        )))
    });
    let (listen, opts) = match parsed {
        Ok(Some(p)) => p,
        Ok(None) => {
            print!("{}", help());
            return 0;
        }
        Err(e) => {
            eprintln!("mcp-tunnel stub: configuration error: {e}");
            return 2;
        }
    };
    crate::logging::init(&config::LogConfig::stderr(log::LevelFilter::Info));
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "mcp-tunnel stub: configuration error: {LISTEN}: cannot listen on {listen}: {e}"
            );
            return 2;
        }
    };
    let server = match start(listener, opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-tunnel stub: {e}");
            return 1;
        }
    };
    // Printed on stdout so scripts can read where it listens (useful with port 0).
    println!(
        "mcp-tunnel stub serving http://{}{ENDPOINT}",
        server.local_addr()
    );
    crate::signals::wait_for_stop();
    server.shutdown();
    0
}

/// The server's state, shared by all connection threads.
struct Stub {
    name: String,
    bearer: Option<Secret>,
    sessions: Mutex<HashSet<String>>,
}

/// What the request's `Mcp-Session-Id` header refers to.
enum Session {
    Absent,
    Known(String),
    Unknown,
}

/// One JSON-RPC message, as far as routing needs it.
enum Message<'a> {
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
struct Invalid {
    id: Value,
    message: &'static str,
}

/// The answer to a request, before it is put on the wire.
enum Reply {
    Result(Value),
    Error { code: i64, message: String },
}

/// A validated `tools/call`.
enum Call {
    Echo(String),
    /// The sum, already formatted.
    Add(String),
    Slow(u64),
    Progress {
        steps: u64,
        delay_ms: u64,
        token: Option<Value>,
    },
    Fail(String),
    FailRpc(String),
}

impl Stub {
    fn handle(&self, req: &Request) -> Response {
        if !self.authorized(req) {
            debug!(
                "stub: {} refused: missing or wrong bearer token",
                req.method
            );
            return Response::new(401, "missing or wrong bearer token\n")
                .with_header("WWW-Authenticate", "Bearer");
        }
        if req.path() != ENDPOINT {
            debug!("stub: {} to an unknown path", req.method);
            return Response::new(404, "not found: the MCP endpoint is /mcp\n");
        }
        let session = self.session(req);
        let response = match req.method.as_str() {
            "POST" => self.post(req, &session),
            "DELETE" => self.delete(&session),
            other => {
                debug!("stub: {other} not allowed");
                Response::new(405, "only POST and DELETE are served at /mcp\n")
                    .with_header("Allow", "POST, DELETE")
            }
        };
        match session {
            // An initialize answer already names its new session.
            Session::Known(id) if !has_header(&response, SESSION_HEADER) => {
                response.with_header(SESSION_HEADER, &id)
            }
            _ => response,
        }
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(expected) = &self.bearer else {
            return true;
        };
        let Some((scheme, token)) = req
            .header("Authorization")
            .and_then(|v| v.trim().split_once(' '))
        else {
            return false;
        };
        scheme.eq_ignore_ascii_case("Bearer")
            && crate::crypto::constant_time_eq(
                token.trim().as_bytes(),
                expected.expose().as_bytes(),
            )
    }

    fn session(&self, req: &Request) -> Session {
        match req.header(SESSION_HEADER) {
            None => Session::Absent,
            Some(id) => {
                let id = id.trim();
                if self.lock_sessions().contains(id) {
                    Session::Known(id.to_string())
                } else {
                    Session::Unknown
                }
            }
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // The set stays consistent even if a holder panicked: every update is a single call.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new_session(&self) -> String {
        let id = crate::crypto::random_hex(SESSION_ID_BYTES);
        let mut sessions = self.lock_sessions();
        if sessions.len() >= MAX_SESSIONS {
            let evicted = sessions.iter().next().cloned();
            if let Some(evicted) = evicted {
                sessions.remove(&evicted);
            }
        }
        sessions.insert(id.clone());
        id
    }

    fn delete(&self, session: &Session) -> Response {
        debug!("stub: DELETE session");
        match session {
            Session::Absent => Response::new(400, "DELETE needs an Mcp-Session-Id header\n"),
            Session::Unknown => Response::new(404, "unknown session\n"),
            Session::Known(id) => {
                self.lock_sessions().remove(id);
                Response::new(204, Vec::new())
            }
        }
    }

    fn post(&self, req: &Request, session: &Session) -> Response {
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            debug!("stub: POST with a body that is not JSON");
            let error = rpc_error(
                &Value::Null,
                PARSE_ERROR,
                "parse error: the body is not JSON",
            );
            return json_response(400, &error);
        };
        let message = match classify(&body) {
            Ok(message) => message,
            Err(invalid) => {
                debug!("stub: POST with an invalid JSON-RPC message");
                let error = rpc_error(&invalid.id, INVALID_REQUEST, invalid.message);
                return json_response(400, &error);
            }
        };
        let method = match &message {
            Message::Request { method, .. } | Message::Notification { method } => *method,
            Message::Response => "(response)",
        };
        let logged: String = method.chars().take(LOGGED_METHOD_CHARS).collect();
        debug!("stub: POST {logged:?}");

        let initialize = matches!(
            message,
            Message::Request {
                method: "initialize",
                ..
            }
        );
        if matches!(session, Session::Unknown) && !initialize {
            let id = match &message {
                Message::Request { id, .. } => (*id).clone(),
                _ => Value::Null,
            };
            let error = rpc_error(
                &id,
                SESSION_NOT_FOUND,
                "session not found: it ended or never existed; send initialize again",
            );
            return json_response(404, &error);
        }

        let (id, method, params) = match message {
            Message::Request { id, method, params } => (id, method, params),
            Message::Notification { .. } | Message::Response => {
                return Response::new(202, Vec::new());
            }
        };
        let reply = match method {
            "initialize" => {
                let session_id = self.new_session();
                let result = self.initialize_result(params);
                return json_response(200, &rpc_reply(id, Reply::Result(result)))
                    .with_header(SESSION_HEADER, &session_id);
            }
            "ping" => Reply::Result(json!({})),
            "tools/list" => Reply::Result(tools_list()),
            "tools/call" => match parse_call(params) {
                Err(message) => Reply::Error {
                    code: INVALID_PARAMS,
                    message,
                },
                Ok(Call::Progress {
                    steps,
                    delay_ms,
                    token,
                }) if accepts_event_stream(req) => {
                    return progress_stream(id.clone(), steps, delay_ms, token);
                }
                Ok(call) => run_call(call),
            },
            other => Reply::Error {
                code: METHOD_NOT_FOUND,
                message: format!("method not found: {other}"),
            },
        };
        json_response(200, &rpc_reply(id, reply))
    }

    fn initialize_result(&self, params: Option<&Value>) -> Value {
        let asked = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str);
        let version = SUPPORTED_PROTOCOLS
            .iter()
            .find(|v| Some(**v) == asked)
            .copied()
            .unwrap_or(LATEST_PROTOCOL);
        json!({
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": { "name": self.name, "version": env!("CARGO_PKG_VERSION") },
            "instructions": "mcp-tunnel's built-in test server. Tools: echo, add, slow, progress, fail, fail_rpc.",
        })
    }
}

/// Sorts a parsed body into request, notification or response, or says why it is none of them.
fn classify(body: &Value) -> Result<Message<'_>, Invalid> {
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

fn tools_list() -> Value {
    json!({ "tools": [
        {
            "name": "echo",
            "description": "Returns the given text unchanged.",
            "inputSchema": {
                "type": "object",
                "properties": { "text": { "type": "string", "description": "Text to send back." } },
                "required": ["text"],
            },
        },
        {
            "name": "add",
            "description": "Adds two numbers and returns the sum as text.",
            "inputSchema": {
                "type": "object",
                "properties": { "a": { "type": "number" }, "b": { "type": "number" } },
                "required": ["a", "b"],
            },
        },
        {
            "name": "slow",
            "description": "Sleeps for `ms` milliseconds (at most 60000), then answers.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "ms": { "type": "integer", "minimum": 0, "description": "Milliseconds to sleep; capped at 60000." },
                },
                "required": ["ms"],
            },
        },
        {
            "name": "progress",
            "description": "Works in `steps` steps, `delay_ms` apart. When the request carries a progress token and accepts an event stream, each step is reported as notifications/progress before the result.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "steps": { "type": "integer", "minimum": 0, "default": DEFAULT_PROGRESS_STEPS, "description": "Number of steps; capped at 100." },
                    "delay_ms": { "type": "integer", "minimum": 0, "default": DEFAULT_PROGRESS_DELAY_MS, "description": "Milliseconds before each step; capped at 5000." },
                },
            },
        },
        {
            "name": "fail",
            "description": "Always fails with a tool error result (isError) carrying `message`.",
            "inputSchema": {
                "type": "object",
                "properties": { "message": { "type": "string", "default": DEFAULT_FAILURE_MESSAGE } },
            },
        },
        {
            "name": "fail_rpc",
            "description": "Always fails with a JSON-RPC error (-32000) carrying `message`.",
            "inputSchema": {
                "type": "object",
                "properties": { "message": { "type": "string", "default": DEFAULT_FAILURE_MESSAGE } },
            },
        },
    ]})
}

/// Validates a `tools/call`'s params; the error is the `-32602` message.
fn parse_call(params: Option<&Value>) -> Result<Call, String> {
    let Some(Value::Object(params)) = params else {
        return Err("tools/call: params must be an object with a `name`".to_string());
    };
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err("tools/call: `name` must be a string".to_string());
    };
    let empty = Map::new();
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(args)) => args,
        Some(_) => return Err(format!("{name}: `arguments` must be an object")),
    };
    match name {
        "echo" => match args.get("text") {
            Some(Value::String(text)) => Ok(Call::Echo(text.clone())),
            _ => Err("echo: `text` is required and must be a string".to_string()),
        },
        "add" => {
            let a = number_arg(args, "a")?;
            let b = number_arg(args, "b")?;
            sum_text(a, b)
                .map(Call::Add)
                .ok_or_else(|| "add: the sum is too large for a 64-bit float".to_string())
        }
        "slow" => Ok(Call::Slow(int_arg(args, name, "ms", None, MAX_SLOW_MS)?)),
        "progress" => {
            let token = params
                .get("_meta")
                .and_then(|meta| meta.get("progressToken"))
                // The spec's ProgressToken is a string or a number; anything else is no token.
                .filter(|t| t.is_string() || t.is_number())
                .cloned();
            Ok(Call::Progress {
                steps: int_arg(
                    args,
                    name,
                    "steps",
                    Some(DEFAULT_PROGRESS_STEPS),
                    MAX_PROGRESS_STEPS,
                )?,
                delay_ms: int_arg(
                    args,
                    name,
                    "delay_ms",
                    Some(DEFAULT_PROGRESS_DELAY_MS),
                    MAX_PROGRESS_DELAY_MS,
                )?,
                token,
            })
        }
        "fail" => Ok(Call::Fail(message_arg(args, name)?)),
        "fail_rpc" => Ok(Call::FailRpc(message_arg(args, name)?)),
        other => Err(format!("unknown tool: {other}")),
    }
}

fn number_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a Number, String> {
    match args.get(name) {
        Some(Value::Number(n)) => Ok(n),
        _ => Err(format!("add: `{name}` is required and must be a number")),
    }
}

/// An optional message argument of `fail` / `fail_rpc`.
fn message_arg(args: &Map<String, Value>, tool: &str) -> Result<String, String> {
    match args.get("message") {
        None | Some(Value::Null) => Ok(DEFAULT_FAILURE_MESSAGE.to_string()),
        Some(Value::String(message)) => Ok(message.clone()),
        Some(_) => Err(format!("{tool}: `message` must be a string")),
    }
}

/// A non-negative integer argument, capped at `cap`. Whole floats (`5.0`) count as integers, as in
/// JSON Schema; absent or null means `default`, or an error when there is none.
fn int_arg(
    args: &Map<String, Value>,
    tool: &str,
    name: &str,
    default: Option<u64>,
    cap: u64,
) -> Result<u64, String> {
    let value = match args.get(name) {
        None | Some(Value::Null) => {
            return default.ok_or_else(|| {
                format!("{tool}: `{name}` is required and must be a non-negative integer")
            });
        }
        Some(value) => value,
    };
    let whole_float = || {
        value
            .as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            // Saturates for huge values; the cap applies right after.
            .map(|f| f as u64)
    };
    match value.as_u64().or_else(whole_float) {
        Some(n) => Ok(n.min(cap)),
        None => Err(format!("{tool}: `{name}` must be a non-negative integer")),
    }
}

/// The sum as text, integers without a fractional part. Integer inputs are added exactly (in
/// i128, which no two 64-bit integers overflow); `None` when a float sum overflows.
fn sum_text(a: &Number, b: &Number) -> Option<String> {
    let exact = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    if let (Some(x), Some(y)) = (exact(a), exact(b)) {
        return Some((x + y).to_string());
    }
    let sum = a.as_f64()? + b.as_f64()?;
    if !sum.is_finite() {
        return None;
    }
    // f64's Display prints whole values without ".0"; only the sign of zero needs tidying.
    Some(if sum == 0.0 {
        "0".to_string()
    } else {
        sum.to_string()
    })
}

/// Runs a call and builds its reply (for `progress`, the plain-JSON form without notifications).
fn run_call(call: Call) -> Reply {
    match call {
        Call::Echo(text) => Reply::Result(text_result(text)),
        Call::Add(sum) => Reply::Result(text_result(sum)),
        Call::Slow(ms) => {
            thread::sleep(Duration::from_millis(ms));
            Reply::Result(text_result(format!("slept {ms} ms")))
        }
        Call::Progress {
            steps, delay_ms, ..
        } => {
            // Same work and duration as the streamed form; there is just nowhere to report it.
            for _ in 0..steps {
                thread::sleep(Duration::from_millis(delay_ms));
            }
            Reply::Result(text_result(format!("done after {steps} steps")))
        }
        Call::Fail(message) => Reply::Result(json!({
            "content": [{ "type": "text", "text": message }],
            "isError": true,
        })),
        Call::FailRpc(message) => Reply::Error {
            code: SERVER_ERROR,
            message,
        },
    }
}

/// The `progress` tool as an event stream: one `notifications/progress` per step (when the client
/// gave a token), each sent as its step completes, then the result.
fn progress_stream(id: Value, steps: u64, delay_ms: u64, token: Option<Value>) -> Response {
    let headers = vec![
        ("Content-Type".to_string(), "text/event-stream".to_string()),
        ("Cache-Control".to_string(), "no-cache".to_string()),
    ];
    Response::stream(
        200,
        headers,
        Box::new(move |w: &mut ChunkWriter<'_>| {
            for step in 1..=steps {
                thread::sleep(Duration::from_millis(delay_ms));
                if let Some(token) = &token {
                    let notification = json!({
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {
                            "progressToken": token,
                            "progress": step,
                            "total": steps,
                            "message": format!("step {step} of {steps}"),
                        },
                    });
                    send_event(w, &notification)?;
                }
            }
            let result = text_result(format!("done after {steps} steps"));
            send_event(w, &rpc_reply(&id, Reply::Result(result)))
        }),
    )
}

/// One SSE event. Compact JSON never contains a raw newline, so one `data:` line holds it.
fn send_event(w: &mut ChunkWriter<'_>, message: &Value) -> io::Result<()> {
    w.send(format!("event: message\ndata: {message}\n\n").as_bytes())
}

fn text_result(text: impl Into<String>) -> Value {
    json!({ "content": [{ "type": "text", "text": text.into() }] })
}

fn rpc_reply(id: &Value, reply: Reply) -> Value {
    match reply {
        Reply::Result(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Reply::Error { code, message } => rpc_error(id, code, &message),
    }
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::json(status, body.to_string())
}

/// Whether any `Accept` header lists `text/event-stream` (parameters and case ignored).
fn accepts_event_stream(req: &Request) -> bool {
    req.headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Accept"))
        .flat_map(|(_, value)| value.split(','))
        .any(|item| {
            let media = item.split(';').next().unwrap_or("");
            media.trim().eq_ignore_ascii_case("text/event-stream")
        })
}

fn has_header(response: &Response, name: &str) -> bool {
    response
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::time::Instant;

    /// Bound on every exchange, so a broken server fails the test instead of hanging it.
    const TEST_TIMEOUT: Duration = Duration::from_secs(20);

    struct Stubbed {
        server: Server,
        agent: ureq::Agent,
        url: String,
    }

    /// What the tests look at in an answer.
    struct Answer {
        status: u16,
        content_type: Option<String>,
        session: Option<String>,
        headers: ureq::http::HeaderMap,
        text: String,
    }

    impl Answer {
        fn json(&self) -> Value {
            serde_json::from_str(&self.text)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
        }
    }

    fn stub(opts: StubOptions) -> Stubbed {
        let server = start(TcpListener::bind("127.0.0.1:0").unwrap(), opts).unwrap();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TEST_TIMEOUT))
            .build()
            .into();
        let url = format!("http://{}/mcp", server.local_addr());
        Stubbed { server, agent, url }
    }

    fn answer(mut resp: ureq::http::Response<ureq::Body>) -> Answer {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (content_type, session) = (header("content-type"), header("mcp-session-id"));
        let headers = resp.headers().clone();
        Answer {
            status: resp.status().as_u16(),
            content_type,
            session,
            headers,
            text: resp.body_mut().read_to_string().unwrap(),
        }
    }

    impl Stubbed {
        fn send(&self, body: &str, accept: &str, session: Option<&str>) -> Answer {
            let mut req = self
                .agent
                .post(&self.url)
                .header("Content-Type", "application/json")
                .header("Accept", accept);
            if let Some(session) = session {
                req = req.header(SESSION_HEADER, session);
            }
            answer(req.send(body).unwrap())
        }

        fn post(&self, body: Value) -> Answer {
            self.send(&body.to_string(), "application/json", None)
        }

        /// A request with id 1; returns the JSON-RPC response.
        fn rpc(&self, method: &str, params: Value) -> Value {
            let reply =
                self.post(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}));
            assert_eq!(reply.status, 200, "{}", reply.text);
            assert_eq!(reply.content_type.as_deref(), Some("application/json"));
            reply.json()
        }

        fn call(&self, tool: &str, arguments: Value) -> Value {
            self.rpc("tools/call", json!({"name": tool, "arguments": arguments}))
        }

        fn initialize(&self) -> String {
            let reply = self.post(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": LATEST_PROTOCOL, "capabilities": {},
                           "clientInfo": {"name": "test", "version": "0"}}}));
            assert_eq!(reply.status, 200);
            reply.session.expect("initialize names a session")
        }
    }

    fn text_of(response: &Value) -> &str {
        response["result"]["content"][0]["text"].as_str().unwrap()
    }

    fn error_of(response: &Value) -> (i64, &str) {
        let error = &response["error"];
        (
            error["code"].as_i64().unwrap(),
            error["message"].as_str().unwrap(),
        )
    }

    #[test]
    fn initialize_hands_out_a_session_and_negotiates_the_version() {
        let s = stub(StubOptions {
            name: "demo".into(),
            ..StubOptions::default()
        });
        for (asked, expected) in [
            (json!("2025-06-18"), "2025-06-18"),
            (json!("2025-03-26"), "2025-03-26"),
            (json!("2024-11-05"), "2024-11-05"),
            (json!("1999-01-01"), LATEST_PROTOCOL),
            (json!(42), LATEST_PROTOCOL),
        ] {
            let reply = s.post(
                json!({"jsonrpc": "2.0", "id": "init", "method": "initialize",
                "params": {"protocolVersion": asked, "capabilities": {}}}),
            );
            assert_eq!(reply.status, 200);
            let session = reply.session.clone().unwrap();
            assert_eq!(session.len(), 2 * SESSION_ID_BYTES);
            assert!(session.bytes().all(|b| b.is_ascii_hexdigit()));
            let body = reply.json();
            assert_eq!(body["id"], "init");
            let result = &body["result"];
            assert_eq!(result["protocolVersion"], expected);
            assert_eq!(result["capabilities"]["tools"]["listChanged"], false);
            assert_eq!(result["serverInfo"]["name"], "demo");
            assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
        }
        assert_ne!(s.initialize(), s.initialize());
        s.server.shutdown();
    }

    #[test]
    fn tools_list_describes_every_tool_with_a_schema() {
        let s = stub(StubOptions::default());
        let reply = s.rpc("tools/list", json!({}));
        let tools = reply["result"]["tools"].as_array().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["echo", "add", "slow", "progress", "fail", "fail_rpc"]
        );
        for tool in tools {
            assert!(tool["description"].is_string());
            assert_eq!(tool["inputSchema"]["type"], "object");
            assert!(tool["inputSchema"]["properties"].is_object());
        }
        assert_eq!(tools[0]["inputSchema"]["required"], json!(["text"]));
        assert_eq!(tools[1]["inputSchema"]["properties"]["a"]["type"], "number");
        assert_eq!(
            tools[2]["inputSchema"]["properties"]["ms"]["type"],
            "integer"
        );
        assert_eq!(s.rpc("ping", Value::Null)["result"], json!({}));
        s.server.shutdown();
    }

    #[test]
    fn echo_add_and_slow() {
        let s = stub(StubOptions::default());
        let reply = s.call("echo", json!({"text": "héllo\nworld"}));
        assert_eq!(reply["id"], 1);
        assert_eq!(reply["result"]["content"][0]["type"], "text");
        assert_eq!(text_of(&reply), "héllo\nworld");
        assert!(reply["result"].get("isError").is_none());

        for (a, b, sum) in [
            (json!(2), json!(3), "5"),
            (json!(-7), json!(2), "-5"),
            (json!(1.5), json!(2), "3.5"),
            (json!(2.5), json!(0.5), "3"),
            (json!(-0.5), json!(0.5), "0"),
            (json!(u64::MAX), json!(1), "18446744073709551616"),
            (json!(i64::MIN), json!(-1), "-9223372036854775809"),
        ] {
            assert_eq!(text_of(&s.call("add", json!({"a": a, "b": b}))), sum);
        }
        let overflow = s.call("add", json!({"a": 1e308, "b": 1e308}));
        assert_eq!(error_of(&overflow).0, INVALID_PARAMS);

        assert_eq!(text_of(&s.call("slow", json!({"ms": 5}))), "slept 5 ms");
        assert_eq!(text_of(&s.call("slow", json!({"ms": 0.0}))), "slept 0 ms");
        s.server.shutdown();
    }

    #[test]
    fn bad_calls_get_invalid_params_and_unknown_methods_method_not_found() {
        let s = stub(StubOptions::default());
        for (params, needle) in [
            (json!({"name": "nope"}), "unknown tool: nope"),
            (json!({"name": "echo", "arguments": {}}), "echo: `text`"),
            (
                json!({"name": "echo", "arguments": {"text": 5}}),
                "echo: `text`",
            ),
            (
                json!({"name": "echo", "arguments": [1]}),
                "`arguments` must be an object",
            ),
            (
                json!({"name": "add", "arguments": {"a": "1", "b": 2}}),
                "add: `a`",
            ),
            (json!({"name": "add", "arguments": {"a": 1}}), "add: `b`"),
            (
                json!({"name": "slow", "arguments": {}}),
                "slow: `ms` is required",
            ),
            (
                json!({"name": "slow", "arguments": {"ms": -1}}),
                "slow: `ms`",
            ),
            (
                json!({"name": "slow", "arguments": {"ms": 1.5}}),
                "slow: `ms`",
            ),
            (
                json!({"name": "progress", "arguments": {"steps": "x"}}),
                "progress: `steps`",
            ),
            (
                json!({"name": "fail", "arguments": {"message": {}}}),
                "fail: `message`",
            ),
            (json!({"name": 7}), "`name` must be a string"),
            (json!([1, 2]), "params must be an object"),
        ] {
            let reply = s.rpc("tools/call", params.clone());
            let (code, message) = error_of(&reply);
            assert_eq!(code, INVALID_PARAMS, "for {params}");
            assert!(message.contains(needle), "for {params}: {message}");
        }
        let reply = s.rpc("resources/list", json!({}));
        assert_eq!(error_of(&reply).0, METHOD_NOT_FOUND);
        s.server.shutdown();
    }

    #[test]
    fn integer_arguments_are_capped_and_never_panic() {
        let args = |v: Value| v.as_object().unwrap().clone();
        let cap = |v: Value| int_arg(&args(json!({"n": v})), "t", "n", Some(3), 100);
        assert_eq!(cap(json!(5)), Ok(5));
        assert_eq!(cap(json!(u64::MAX)), Ok(100));
        assert_eq!(cap(json!(1e300)), Ok(100));
        assert_eq!(cap(json!(7.0)), Ok(7));
        assert_eq!(cap(Value::Null), Ok(3));
        assert!(cap(json!(-1)).is_err());
        assert!(cap(json!(i64::MIN)).is_err());
        assert!(cap(json!(-1e300)).is_err());
        assert!(cap(json!(true)).is_err());
        assert!(int_arg(&Map::new(), "t", "n", None, 100).is_err());
    }

    /// Reads one SSE event's JSON from the stream (skipping `event:` lines), or None at its end.
    fn next_event(reader: &mut impl BufRead) -> Option<Value> {
        let mut data = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                assert!(data.is_none(), "stream ended inside an event");
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if let Some(data) = data {
                    return Some(data);
                }
            } else if let Some(json) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(json).unwrap());
            } else {
                assert_eq!(line, "event: message");
            }
        }
    }

    #[test]
    fn progress_over_sse_reports_each_step_then_the_result() {
        let s = stub(StubOptions::default());
        let session = s.initialize();
        let delay = Duration::from_millis(150);
        let body = json!({"jsonrpc": "2.0", "id": "p1", "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": 3, "delay_ms": 150},
                       "_meta": {"progressToken": "tok-1"}}});
        let resp = s
            .agent
            .post(&s.url)
            .header("Accept", "application/json, text/event-stream")
            .header(SESSION_HEADER, &session)
            .send(body.to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["mcp-session-id"], session.as_str());
        let mut reader = BufReader::new(resp.into_body().into_reader());

        let mut arrivals = Vec::new();
        let mut events = Vec::new();
        while let Some(event) = next_event(&mut reader) {
            arrivals.push(Instant::now());
            events.push(event);
        }
        assert_eq!(events.len(), 4, "{events:?}");
        for (i, event) in events[..3].iter().enumerate() {
            let step = i as u64 + 1;
            assert_eq!(event["method"], "notifications/progress");
            assert!(event.get("id").is_none());
            let params = &event["params"];
            assert_eq!(params["progressToken"], "tok-1");
            assert_eq!(params["progress"], step);
            assert_eq!(params["total"], 3);
            assert_eq!(params["message"], format!("step {step} of 3"));
        }
        assert_eq!(events[3]["id"], "p1");
        assert_eq!(text_of(&events[3]), "done after 3 steps");
        // Flushed one by one: the first notification arrived while two more steps (2 × delay) were
        // still due. Only half of that is asserted, so a client thread scheduled late cannot fail it.
        assert!(arrivals[3] - arrivals[0] >= delay, "{arrivals:?}");
        s.server.shutdown();
    }

    #[test]
    fn progress_with_a_json_accept_answers_only_the_result() {
        let s = stub(StubOptions::default());
        let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": 2, "delay_ms": 1},
                       "_meta": {"progressToken": 5}}});
        let reply = s.send(&body.to_string(), "application/json", None);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        let reply = reply.json();
        assert_eq!(reply["id"], 9);
        assert_eq!(text_of(&reply), "done after 2 steps");

        // An event-stream accept only matters for progress: other calls stay plain JSON.
        let echo = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}}});
        let reply = s.send(
            &echo.to_string(),
            "application/json, text/event-stream",
            None,
        );
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        assert_eq!(text_of(&reply.json()), "x");
        s.server.shutdown();
    }

    #[test]
    fn notifications_and_client_responses_get_202() {
        let s = stub(StubOptions::default());
        let session = s.initialize();
        for message in [
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
            json!({"jsonrpc": "2.0", "id": 4, "result": {}}),
        ] {
            let reply = s.send(&message.to_string(), "application/json", Some(&session));
            assert_eq!(reply.status, 202, "for {message}");
            assert_eq!(reply.text, "");
            assert_eq!(reply.session.as_deref(), Some(session.as_str()));
        }
        s.server.shutdown();
    }

    #[test]
    fn sessions_unknown_absent_and_deleted() {
        let s = stub(StubOptions::default());
        let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).to_string();

        let unknown = s.send(&list, "application/json", Some("not-a-session"));
        assert_eq!(unknown.status, 404);
        assert_eq!(unknown.session, None);
        assert_eq!(error_of(&unknown.json()).0, SESSION_NOT_FOUND);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
        assert_eq!(s.send(&note, "application/json", Some("nope")).status, 404);

        // Lenient: no session header at all is served.
        assert_eq!(s.send(&list, "application/json", None).status, 200);

        let session = s.initialize();
        let known = s.send(&list, "application/json", Some(&session));
        assert_eq!(known.status, 200);
        assert_eq!(known.session.as_deref(), Some(session.as_str()));

        let delete = |id: Option<&str>| {
            let mut req = s.agent.delete(&s.url);
            if let Some(id) = id {
                req = req.header(SESSION_HEADER, id);
            }
            answer(req.call().unwrap()).status
        };
        assert_eq!(delete(Some(&session)), 204);
        assert_eq!(
            s.send(&list, "application/json", Some(&session)).status,
            404
        );
        assert_eq!(delete(Some(&session)), 404);
        assert_eq!(delete(None), 400);
        // initialize with a stale session id starts a new one.
        let fresh = s.initialize();
        assert_ne!(fresh, session);

        let get = answer(s.agent.get(&s.url).call().unwrap());
        assert_eq!(get.status, 405);
        assert_eq!(get.headers["allow"], "POST, DELETE");
        let elsewhere = s
            .agent
            .get(format!("http://{}/other", s.server.local_addr()));
        assert_eq!(answer(elsewhere.call().unwrap()).status, 404);
        s.server.shutdown();
    }

    #[test]
    fn fail_is_a_tool_error_and_fail_rpc_a_jsonrpc_error() {
        let s = stub(StubOptions::default());
        let reply = s.call("fail", json!({"message": "boom"}));
        assert!(reply.get("error").is_none());
        assert_eq!(reply["result"]["isError"], true);
        assert_eq!(text_of(&reply), "boom");
        let reply = s.call("fail", Value::Null);
        assert_eq!(text_of(&reply), DEFAULT_FAILURE_MESSAGE);

        let reply = s.call("fail_rpc", json!({"message": "kaput"}));
        assert_eq!(reply["id"], 1);
        assert!(reply.get("result").is_none());
        assert_eq!(error_of(&reply), (SERVER_ERROR, "kaput"));
        s.server.shutdown();
    }

    #[test]
    fn malformed_messages_get_400() {
        let s = stub(StubOptions::default());
        for (body, code, id) in [
            ("{not json", PARSE_ERROR, Value::Null),
            ("", PARSE_ERROR, Value::Null),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            ("42", INVALID_REQUEST, Value::Null),
            (
                r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#,
                INVALID_REQUEST,
                json!(7),
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":"x","method":5}"#,
                INVALID_REQUEST,
                json!("x"),
            ),
            (r#"{"jsonrpc":"2.0","id":"x"}"#, INVALID_REQUEST, json!("x")),
        ] {
            let reply = s.send(body, "application/json", None);
            assert_eq!(reply.status, 400, "for {body}");
            let reply = reply.json();
            assert_eq!(error_of(&reply).0, code, "for {body}");
            assert_eq!(reply["id"], id, "for {body}");
        }
        s.server.shutdown();
    }

    #[test]
    fn bearer_is_required_when_configured() {
        let s = stub(StubOptions {
            require_bearer: Some(Secret::new("s3cret")),
            ..StubOptions::default()
        });
        let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
        let post = |auth: Option<&str>| {
            let mut req = s.agent.post(&s.url);
            if let Some(auth) = auth {
                req = req.header("Authorization", auth);
            }
            answer(req.send(&ping).unwrap())
        };
        let refused = post(None);
        assert_eq!(refused.status, 401);
        assert_eq!(refused.headers["www-authenticate"], "Bearer");
        assert_eq!(post(Some("Bearer wrong")).status, 401);
        assert_eq!(post(Some("Bearer s3cre")).status, 401);
        assert_eq!(post(Some("Basic s3cret")).status, 401);
        let ok = post(Some("Bearer s3cret"));
        assert_eq!(ok.status, 200);
        assert_eq!(ok.json()["result"], json!({}));
        assert_eq!(post(Some("bearer s3cret")).status, 200);
        s.server.shutdown();
    }

    #[test]
    fn help_names_every_option() {
        for option in [
            "--listen",
            "127.0.0.1:3000",
            "--name",
            "--require-bearer",
            "env:VAR",
            "file:PATH",
        ] {
            assert!(help().contains(option), "{option}");
        }
    }
}
