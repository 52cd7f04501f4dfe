//! A tiny built-in Streamable HTTP MCP server (`mcp-tunnel stub`), for demos, operator smoke
//! tests, benchmarks and our own tests. Built on [`crate::http_server`]; no state beyond the set of
//! live session ids.
//!
//! Protocol: both eras over Streamable HTTP. Sessions: MCP revision 2025-06-18 (2025-03-26 and
//! 2024-11-05 are also accepted). Stateless: MCP 2026-07-28 — `server/discover`, and requests
//! that carry their version in `_meta` (see `modern` for how a request is told apart and what is
//! checked). The endpoint is `/mcp`:
//!
//! - `POST` carries one JSON-RPC message. A request is answered with one `application/json`
//!   response, except a `progress` tool call from a client that accepts `text/event-stream`: that
//!   one is answered with an event stream of `notifications/progress` then the result.
//!   Notifications and client responses get `202`. Batches are refused (`-32600`).
//! - `DELETE` with a session ends it; `GET` (a server-initiated stream) is not offered, and a
//!   `DELETE` without a session has nothing to end: both `405`.
//!
//! Sessions: `initialize` hands out a fresh `Mcp-Session-Id`. A legacy request naming an unknown
//! session gets `404` (the spec's signal to re-initialize); one naming none is served anyway, so
//! stateless clients work too. A modern request ignores any session header.
//!
//! Tools: `echo`, `add`, `slow`, `progress`, `fail` (a tool-level error result) and `fail_rpc` (a
//! JSON-RPC error), each exercising one path of a client or of the tunnel.
//!
//! Logging: one debug line per request naming the JSON-RPC method only. Bodies and header values
//! are never logged, since they may carry credentials.
//!
//! Here: the options, the `mcp-tunnel stub` command and the HTTP side (bearer check, `/mcp`
//! routing, which method gets which answer). The JSON-RPC message shapes are in `protocol`, the
//! session set in `session`, the tools in `tools`, the 2026-07-28 era's rules in `modern`.

mod modern;
mod protocol;
mod session;
mod tools;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use log::debug;
use serde_json::{Value, json};

use crate::config::{self, Opt, Sources};
use crate::http_server::{Limits, Request, Response, Server};
use crate::secret::Secret;
use modern::Modern;
use protocol::{
    INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, Message, PARSE_ERROR, Reply,
    SESSION_NOT_FOUND, classify, json_response, rpc_error, rpc_reply,
};
use session::{Session, Sessions};
use tools::{Call, parse_call, progress_stream, run_call, tools_list};

/// The one path that speaks MCP; anything else is 404.
const ENDPOINT: &str = "/mcp";

/// The revision we implement, answered when the client asks for one we do not know.
const LATEST_PROTOCOL: &str = "2025-06-18";

/// Revisions whose wire format this server satisfies; a client asking for one gets it back.
const SUPPORTED_PROTOCOLS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

const SESSION_HEADER: &str = "Mcp-Session-Id";

/// What `initialize` and `server/discover` tell a client about us.
const INSTRUCTIONS: &str =
    "mcp-tunnel's built-in test server. Tools: echo, add, slow, progress, fail, fail_rpc.";

/// Characters of a JSON-RPC method name put in a log line; names are client-chosen and unbounded.
const LOGGED_METHOD_CHARS: usize = 64;

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
        sessions: Sessions::default(),
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
        "mcp-tunnel stub: a small built-in Streamable HTTP MCP server (MCP 2025-06-18 sessions and \
         stateless 2026-07-28) with the \
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
            .is_some_and(|v| !config::is_reference(v))
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
    sessions: Sessions,
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
        let session = self.sessions.look_up(req.header(SESSION_HEADER));
        let (response, stateless) = match req.method.as_str() {
            "POST" => self.post(req, &session),
            "DELETE" => (self.delete(&session), false),
            other => {
                debug!("stub: {other} not allowed");
                let response = Response::new(405, "only POST and DELETE are served at /mcp\n")
                    .with_header("Allow", "POST, DELETE");
                (response, false)
            }
        };
        match session {
            // A modern answer names no session, whatever the request carried.
            _ if stateless => response,
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

    fn delete(&self, session: &Session) -> Response {
        debug!("stub: DELETE session");
        match session {
            // Nothing to end: a modern client has no session, and a legacy one names its own.
            Session::Absent => Response::new(
                405,
                "DELETE ends a session and needs its Mcp-Session-Id header; MCP 2026-07-28 has no sessions\n",
            )
            .with_header("Allow", "POST, DELETE"),
            Session::Unknown => Response::new(404, "unknown session\n"),
            Session::Known(id) => {
                self.sessions.end(id);
                Response::new(204, Vec::new())
            }
        }
    }

    /// The answer, and whether it was served as a modern (stateless) request.
    fn post(&self, req: &Request, session: &Session) -> (Response, bool) {
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            debug!("stub: POST with a body that is not JSON");
            let error = rpc_error(
                &Value::Null,
                PARSE_ERROR,
                "parse error: the body is not JSON",
            );
            return (json_response(400, &error), false);
        };
        let message = match classify(&body) {
            Ok(message) => message,
            Err(invalid) => {
                debug!("stub: POST with an invalid JSON-RPC message");
                let error = rpc_error(&invalid.id, INVALID_REQUEST, invalid.message);
                return (json_response(400, &error), false);
            }
        };
        let method = match &message {
            Message::Request { method, .. } | Message::Notification { method } => *method,
            Message::Response => "(response)",
        };
        let logged: String = method.chars().take(LOGGED_METHOD_CHARS).collect();
        debug!("stub: POST {logged:?}");
        if let Message::Request { id, method, params } = message
            && modern::is_modern(req, method, params)
        {
            let request = Modern { id, method, params };
            return (self.modern(req, &request), true);
        }
        (self.legacy(req, session, message), false)
    }

    /// A request of the 2026-07-28 protocol: no session, checked headers.
    fn modern(&self, req: &Request, request: &Modern) -> Response {
        if let Err(refused) = modern::check(req, request) {
            debug!("stub: modern request refused by its header checks");
            return refused;
        }
        let reply = match request.method {
            "server/discover" => Reply::Result(modern::discover_result(&self.name, INSTRUCTIONS)),
            "tools/list" => Reply::Result(modern::complete(tools_list())),
            "tools/call" => match parse_call(request.params) {
                Err(message) => Reply::Error {
                    code: INVALID_PARAMS,
                    message,
                },
                Ok(Call::Progress {
                    steps,
                    delay_ms,
                    token,
                }) if accepts_event_stream(req) => {
                    return progress_stream(request.id.clone(), steps, delay_ms, token);
                }
                Ok(call) => match run_call(call) {
                    Reply::Result(result) => Reply::Result(modern::complete(result)),
                    error => error,
                },
            },
            other => {
                let error = rpc_error(
                    request.id,
                    METHOD_NOT_FOUND,
                    &format!("method not found: {other}"),
                );
                return json_response(404, &error);
            }
        };
        json_response(200, &rpc_reply(request.id, reply))
    }

    /// A message of the 2025 session protocol.
    fn legacy(&self, req: &Request, session: &Session, message: Message) -> Response {
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
                let session_id = self.sessions.start();
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
            "instructions": INSTRUCTIONS,
        })
    }
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
