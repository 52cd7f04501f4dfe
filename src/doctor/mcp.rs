//! The MCP channel checks: `initialize`, `notifications/initialized` and `tools/list`, then the
//! session's end, driven by [`crate::mcp::session`] through the transport `run` builds for the
//! channel — the same agent, headers and event-stream reading over HTTP, the same supervised
//! child (scrubbed environment, own process group) on stdio. This file only words the outcome.

use std::time::Instant;

use serde_json::Value;
use ureq::Body;
use ureq::http::Response;

use crate::config::RunConfig;
use crate::failure::Failure;
use crate::mcp::http::HttpTransport;
use crate::mcp::session::{Exchange, Hello, ServerHello, Session, StepError};
use crate::mcp::stdio::{ChildStatus, StdioTransport};
use crate::mcp::{Outcome, Transport};
use crate::net::HopNet;

use super::*;

/// What doctor says of itself in `initialize`.
const HELLO: Hello<'static> = Hello {
    client_name: CLIENT_INFO_NAME,
    client_version: env!("CARGO_PKG_VERSION"),
    protocol_version: PROTOCOL_VERSION,
};

/// The HTTP channel's exchange: `run`'s transport, observed so that the first request's route
/// (proxy `CONNECT`, TLS) is reported precisely and a refusal's status and headers are at hand.
struct Observed<'a, 'r> {
    transport: &'a HttpTransport,
    hop: &'a Hop<'a>,
    report: &'r mut Report,
    /// Whether the first request's result has been reported.
    first_done: bool,
    /// The first request got no answer; its failure is reported already.
    unreachable: bool,
    /// The latest answer's status, `Location` and challenge scheme.
    status: Option<u16>,
    location: Option<String>,
    challenge: Option<String>,
    /// The latest transport error, described.
    error: Option<String>,
}

impl Observed<'_, '_> {
    fn observe(&mut self, result: Result<&Response<Body>, &ureq::Error>) {
        if !self.first_done {
            self.first_done = true;
            let answered =
                first_answer(self.hop, result.map(|_| ()), "MCP initialize", self.report);
            self.unreachable = !answered;
        }
        match result {
            Ok(resp) => {
                self.status = Some(resp.status().as_u16());
                self.location = header(resp, "location");
                self.challenge = header(resp, "www-authenticate")
                    .and_then(|v| v.split_whitespace().next().map(str::to_string));
                self.error = None;
            }
            Err(e) => self.error = Some(Failure::from_ureq(e).describe()),
        }
    }
}

impl Exchange for Observed<'_, '_> {
    fn send(
        &mut self,
        message: &serde_json::value::RawValue,
        headers: &[(String, String)],
        deadline: Instant,
    ) -> Outcome {
        let transport = self.transport;
        transport.call_observed(message, headers, Some(deadline), &mut |_, _| {}, &mut |r| {
            self.observe(r)
        })
    }

    fn terminate(&mut self, headers: &[(String, String)], deadline: Instant) -> Outcome {
        let transport = self.transport;
        transport.terminate_observed(headers, Some(deadline), &mut |r| self.observe(r))
    }
}

pub(super) fn check_http_channel(
    cfg: &RunConfig,
    label: &str,
    url: &str,
    net: &HopNet,
    report: &mut Report,
) {
    let Some(hop) = hop(label, url, net, &MCP_KEYS, report) else {
        return;
    };
    if !reach(&hop, report) {
        return;
    }
    let transport = match HttpTransport::new(url, net, &cfg.mcp) {
        Ok(transport) => transport,
        Err(e) => {
            let fix = format!("correct {}", MCP_KEYS.proxy);
            report.fail(hop.name("HTTP client"), e, fix);
            return;
        }
    };
    let header_names: Vec<&str> = cfg
        .mcp
        .extra_headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    let refusal = |ex: &Observed<'_, '_>, status: u16, error: Option<&Value>, what: &str| {
        http_refusal(ex, status, error, url, &header_names, what)
    };
    let mut session = Session::new(Observed {
        transport: &transport,
        hop: &hop,
        report,
        first_done: false,
        unreachable: false,
        status: None,
        location: None,
        challenge: None,
        error: None,
    });

    let init_name = hop.name("MCP initialize");
    let server = session.initialize(&HELLO, Instant::now() + CHECK_TIMEOUT);
    let issued = session.session_id().is_some();
    let ex = session.exchange_mut();
    let server = match server {
        Ok(server) => server,
        Err(_) if ex.unreachable => return,
        Err(e) => {
            let (detail, fix) = match e {
                StepError::Refused { status, error, .. } => {
                    refusal(ex, status, error.as_ref(), "initialize")
                }
                StepError::Rpc(error) => initialize_refused(&error),
                other => match (other, ex.status) {
                    (StepError::Failed(f), Some(status)) if is_http_status(&f) => {
                        refusal(ex, status, None, "initialize")
                    }
                    (other, _) => (
                        format!("no usable answer to initialize: {}", problem(&other, ex)),
                        format!(
                            "check that {} is a Streamable HTTP MCP endpoint",
                            shown_url(url)
                        ),
                    ),
                },
            };
            ex.report.fail(init_name, detail, fix);
            end_session(&mut session);
            return;
        }
    };
    let issued = if issued { ", session issued" } else { "" };
    ex.report
        .pass(init_name, format!("{}{issued}", server_text(&server)));

    let initialized_name = hop.name("MCP initialized");
    let acknowledged = session.initialized(Instant::now() + CHECK_TIMEOUT);
    let ex = session.exchange_mut();
    match acknowledged {
        Ok(status) => ex.report.pass(
            initialized_name,
            format!("notifications/initialized accepted (HTTP {status})"),
        ),
        Err(e) => {
            let (detail, fix) = match (&e, &ex.error) {
                (_, Some(error)) => (
                    format!("notifications/initialized failed: {error}"),
                    "check the MCP server's logs".to_string(),
                ),
                (StepError::Refused { status, error, .. }, None) => {
                    refusal(ex, *status, error.as_ref(), "notifications/initialized")
                }
                (other, None) => (
                    format!("notifications/initialized failed: {}", problem(other, ex)),
                    "check the MCP server's logs".to_string(),
                ),
            };
            ex.report.fail(initialized_name, detail, fix);
            end_session(&mut session);
            return;
        }
    }

    let tools_name = hop.name("MCP tools/list");
    if !server.has_tools {
        session.exchange_mut().report.skip(
            tools_name,
            "not asked: the server declares no tools capability",
        );
        end_session(&mut session);
        return;
    }
    let listed = session.list_tools(Instant::now() + CHECK_TIMEOUT);
    let ended = end_session(&mut session);
    let ex = session.exchange_mut();
    match listed {
        Ok(count) => ex
            .report
            .pass(tools_name, format!("{}{ended}", tool_count(count))),
        Err(e) => {
            let detail = match e {
                StepError::Refused { status, error, .. } => {
                    refusal(ex, status, error.as_ref(), "tools/list").0
                }
                StepError::Rpc(error) => format!("tools/list failed: {}", rpc_error_text(&error)),
                other => format!("no answer: {}", problem(&other, ex)),
            };
            let fix = "check the MCP server's logs; `run` forwards tools/list as it is";
            ex.report.fail(tools_name, detail, fix);
        }
    }
}

/// `DELETE` for a session the server issued, and a note on how it went. Not a check of its own:
/// servers may refuse client-ended sessions (405).
fn end_session(session: &mut Session<Observed<'_, '_>>) -> String {
    match session.end(Instant::now() + CHECK_TIMEOUT) {
        None => String::new(),
        Some(result) => match (result, &session.exchange_mut().error) {
            (_, Some(error)) => format!("; ending the session failed ({error})"),
            (Ok(status), None) => format!("; session ended (DELETE → {status})"),
            (Err(_), None) => "; ending the session failed (no answer in time)".to_string(),
        },
    }
}

/// Starts the server with `run`'s stdio transport (secrets scrubbed from its environment, its
/// own process group), asks it, then stops it as `run` does on shutdown.
pub(super) fn check_stdio_channel(
    channel: &str,
    label: &str,
    argv: &[String],
    scrub: &[String],
    report: &mut Report,
) {
    let name = |check: &str| format!("{label}: {check}");
    let Some(program) = argv.first() else {
        report.fail(name("start"), "the command is empty", "set MCP_COMMAND");
        return;
    };
    let stdio = match StdioTransport::start(channel, argv.to_vec(), scrub.to_vec()) {
        Ok(stdio) => stdio,
        Err(e) => {
            report.fail(
                name("start"),
                format!("cannot start {program}: {e}"),
                "check MCP_COMMAND",
            );
            return;
        }
    };
    let transport = Transport::Stdio(stdio);
    check_stdio_session(&transport, program, &name, report);
    transport.stop(STDIO_STOP_TIMEOUT);
}

fn check_stdio_session(
    transport: &Transport,
    program: &str,
    name: &dyn Fn(&str) -> String,
    report: &mut Report,
) {
    let Transport::Stdio(stdio) = transport else {
        return;
    };
    match stdio.wait_status(CHECK_TIMEOUT, |_| true) {
        Some(ChildStatus::Running(pid)) => {
            report.pass(name("start"), format!("started {program} (pid {pid})"))
        }
        Some(ChildStatus::NotStarted { error, not_found }) => {
            let fix = if not_found {
                format!(
                    "install {program} or give its full path in MCP_COMMAND (it is run without a \
                     shell, with this PATH)"
                )
            } else {
                "check MCP_COMMAND and the program's permissions".to_string()
            };
            report.fail(
                name("start"),
                format!("cannot start {program}: {error}"),
                fix,
            );
            return;
        }
        Some(ChildStatus::Exited(status)) => {
            report.fail(
                name("start"),
                format!("{program} exited at once ({status})"),
                format!("run the command by hand ({program} …) to see its errors"),
            );
            return;
        }
        None => {
            report.fail(
                name("start"),
                format!(
                    "{program} did not start within {}s",
                    CHECK_TIMEOUT.as_secs()
                ),
                "check MCP_COMMAND",
            );
            return;
        }
    }
    let fix = format!(
        "run the command by hand ({program} …) to see its errors; it must speak MCP as \
         newline-delimited JSON-RPC on stdin/stdout"
    );
    // Why a call found no answer: the child's exit, when it has one.
    let gone = |e: &StepError| -> String {
        let exited = stdio.wait_status(EXIT_WAIT, |s| matches!(s, ChildStatus::Exited(_)));
        match (e, exited) {
            (StepError::Expired, _) => format!("timed out after {}s", CHECK_TIMEOUT.as_secs()),
            (_, Some(ChildStatus::Exited(status))) => {
                format!("the server closed its stdout and exited ({status})")
            }
            (StepError::Failed(f), _) => f.describe(),
            (StepError::Unusable(text), _) => text.to_string(),
            (StepError::Rpc(error), _) => rpc_error_text(error),
            (StepError::Refused { status, .. }, _) => format!("refused ({status})"),
        }
    };
    let mut session = Session::new(transport);
    let init_name = name("MCP initialize");
    let server = match session.initialize(&HELLO, Instant::now() + CHECK_TIMEOUT) {
        Ok(server) => server,
        Err(StepError::Rpc(error)) => {
            let (detail, fix) = initialize_refused(&error);
            report.fail(init_name, detail, fix);
            return;
        }
        Err(e) => {
            let detail = format!("no answer to initialize: {}", gone(&e));
            report.fail(init_name, detail, fix);
            return;
        }
    };
    report.pass(init_name, server_text(&server));
    let tools_name = name("MCP tools/list");
    if let Err(e) = session.initialized(Instant::now() + CHECK_TIMEOUT) {
        report.fail(tools_name, format!("after initialize: {}", gone(&e)), fix);
        return;
    }
    if !server.has_tools {
        report.skip(
            tools_name,
            "not asked: the server declares no tools capability",
        );
        return;
    }
    match session.list_tools(Instant::now() + CHECK_TIMEOUT) {
        Ok(count) => report.pass(tools_name, tool_count(count)),
        Err(StepError::Rpc(error)) => report.fail(
            tools_name,
            format!("tools/list failed: {}", rpc_error_text(&error)),
            fix,
        ),
        Err(e) => report.fail(tools_name, gone(&e), fix),
    }
}

/// How long a failed stdio call waits to learn the child's exit status.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

fn server_text(server: &ServerHello) -> String {
    let version = server
        .version
        .as_deref()
        .map(|v| format!(" {}", shorten(v)))
        .unwrap_or_default();
    format!(
        "server {:?}{version}, protocol {}",
        shorten(server.name.as_deref().unwrap_or("(unnamed)")),
        server.protocol.as_deref().unwrap_or("(not stated)")
    )
}

fn initialize_refused(error: &Value) -> (String, String) {
    (
        format!("initialize failed: {}", rpc_error_text(error)),
        "check the MCP server's logs; it refused to start a session".to_string(),
    )
}

fn tool_count(count: usize) -> String {
    match count {
        1 => "1 tool".to_string(),
        n => format!("{n} tools"),
    }
}

/// A 1xx or 3xx answer, which `run` reports as a protocol failure.
fn is_http_status(failure: &Failure) -> bool {
    failure.kind == Some("http_status")
}

/// A step's failure in a few words.
fn problem(e: &StepError, ex: &Observed<'_, '_>) -> String {
    if let Some(error) = &ex.error {
        return error.clone();
    }
    match e {
        StepError::Failed(f) => match f.kind {
            Some("response_body_missing") => "empty body".to_string(),
            Some("malformed_json" | "non_protocol_response") => "the body is not JSON".to_string(),
            Some("eof") => "the event stream ended without the answer".to_string(),
            Some("response_body_too_large") => "the answer is too large".to_string(),
            _ => f.describe(),
        },
        StepError::Unusable(text) => text.to_string(),
        StepError::Expired => "no answer in time".to_string(),
        StepError::Rpc(error) => rpc_error_text(error),
        StepError::Refused { status, .. } => format!("HTTP {status}"),
    }
}

/// The detail and fix for a non-2xx answer of the MCP server.
fn http_refusal(
    ex: &Observed<'_, '_>,
    status: u16,
    error: Option<&Value>,
    url: &str,
    header_names: &[&str],
    what: &str,
) -> (String, String) {
    let rpc = error
        .map(|e| format!(": {}", rpc_error_text(e)))
        .unwrap_or_default();
    let detail = format!("{what} answered HTTP {status}{rpc}");
    let fix = match status {
        401 | 403 => {
            let asks = ex
                .challenge
                .as_ref()
                .map(|s| format!(" (it asks for {})", shorten(s)))
                .unwrap_or_default();
            if header_names.is_empty() {
                format!(
                    "the server wants credentials{asks}: send them with MCP_EXTRA_HEADERS, e.g. \
                     \"Authorization: Bearer …\""
                )
            } else {
                format!(
                    "the server refused the credentials{asks}: check the values of the headers \
                     in MCP_EXTRA_HEADERS ({})",
                    header_names.join(", ")
                )
            }
        }
        404 => format!(
            "no MCP endpoint (or session) at {}: check the path in MCP_SERVER_URL",
            shown_url(url)
        ),
        405 | 406 | 415 => format!(
            "{} does not take Streamable HTTP MCP requests: check MCP_SERVER_URL (the legacy \
             HTTP+SSE transport is not supported)",
            shown_url(url)
        ),
        300..=399 => format!(
            "put the final URL{} in MCP_SERVER_URL (redirects are not followed)",
            ex.location
                .as_ref()
                .map(|l| format!(" ({})", shown_url(l)))
                .unwrap_or_default()
        ),
        407 => format!("give the proxy's credentials in {}", MCP_KEYS.proxy),
        500..=599 => "the MCP server failed: check its logs".to_string(),
        _ => "check the MCP server's logs and MCP_SERVER_URL".to_string(),
    };
    (detail, fix)
}

fn rpc_error_text(error: &Value) -> String {
    let code = error["code"]
        .as_i64()
        .map(|c| format!("{c} "))
        .unwrap_or_default();
    let message = error["message"].as_str().unwrap_or("(no message)");
    format!("{code}{}", shorten(message))
}
