//! The Streamable HTTP channel check: `initialize`, `notifications/initialized` and `tools/list`
//! against the server, then `DELETE` of the session it issued, with a fix for each refusal.

use std::io::{BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ureq::http::Response;
use ureq::{Agent, Body};

use crate::config::RunConfig;
use crate::http_client::{self, AgentOptions};
use crate::mcp::sse::SseReader;
use crate::net::HopNet;
use crate::secret::Secret;

use super::*;

/// One MCP session with a Streamable HTTP server, as `run` would talk to it.
pub(super) struct HttpSession<'a> {
    pub(super) agent: Agent,
    pub(super) url: &'a str,
    pub(super) extra_headers: &'a [(String, Secret)],
    pub(super) session_id: Option<String>,
    pub(super) protocol: Option<String>,
}

impl HttpSession<'_> {
    pub(super) fn decorate<B>(&self, mut req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        for (name, value) in self.extra_headers {
            req = req.header(name.as_str(), value.expose());
        }
        req = req.header("Accept", "application/json, text/event-stream");
        if let Some(id) = &self.session_id {
            req = req.header("Mcp-Session-Id", id);
        }
        if let Some(version) = &self.protocol {
            req = req.header("MCP-Protocol-Version", version);
        }
        req
    }

    pub(super) fn post(
        &self,
        message: &Value,
        timeout: Duration,
    ) -> Result<Response<Body>, ureq::Error> {
        let req = self
            .decorate(self.agent.post(self.url))
            .header("Content-Type", "application/json");
        http_client::with_timeout(req, timeout).send(message.to_string().as_str())
    }

    pub(super) fn delete(&self) -> Result<u16, ureq::Error> {
        let req = self.decorate(self.agent.delete(self.url));
        let mut resp = http_client::with_timeout(req, CHECK_TIMEOUT).call()?;
        let _ = read_body(&mut resp);
        Ok(resp.status().as_u16())
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
    let agent = match http_client::build_agent(
        &AgentOptions {
            max_idle_age: cfg.mcp.connection_max_ttl,
            max_idle_per_host: 1,
        },
        net,
    ) {
        Ok(agent) => agent,
        Err(e) => {
            report.fail(
                hop.name("HTTP client"),
                e,
                format!("correct {}", MCP_KEYS.proxy),
            );
            return;
        }
    };
    let mut session = HttpSession {
        agent,
        url,
        extra_headers: &cfg.mcp.extra_headers,
        session_id: None,
        protocol: None,
    };
    let header_names: Vec<&str> = cfg
        .mcp
        .extra_headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();

    // initialize
    let init_name = hop.name("MCP initialize");
    let result = session.post(&initialize_request(), CHECK_TIMEOUT);
    let Some(mut resp) = first_answer(&hop, result, "MCP initialize", report) else {
        return;
    };
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let (detail, fix) = http_refusal(&mut resp, url, &header_names, "initialize");
        report.fail(init_name, detail, fix);
        return;
    }
    session.session_id = header(&resp, "mcp-session-id");
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let init = match read_rpc_answer(&mut resp, &json!(1), deadline) {
        Ok(message) => message,
        Err(problem) => {
            report.fail(
                init_name,
                format!("no usable answer to initialize: {problem}"),
                format!(
                    "check that {} is a Streamable HTTP MCP endpoint",
                    shown_url(url)
                ),
            );
            end_http_session(&session);
            return;
        }
    };
    let Some(summary) = initialize_summary(&init, &init_name, report) else {
        end_http_session(&session);
        return;
    };
    session.protocol = summary.protocol.clone();
    report.pass(
        init_name,
        format!(
            "{}{}",
            summary.text,
            if session.session_id.is_some() {
                ", session issued"
            } else {
                ""
            }
        ),
    );

    // notifications/initialized
    let initialized_name = hop.name("MCP initialized");
    match session.post(&initialized_notification(), CHECK_TIMEOUT) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                let (detail, fix) =
                    http_refusal(&mut resp, url, &header_names, "notifications/initialized");
                report.fail(initialized_name, detail, fix);
                end_http_session(&session);
                return;
            }
            let _ = read_body(&mut resp);
            report.pass(
                initialized_name,
                format!("notifications/initialized accepted (HTTP {status})"),
            );
        }
        Err(e) => {
            report.fail(
                initialized_name,
                format!(
                    "notifications/initialized failed: {}",
                    crate::failure::Failure::from_ureq(&e).describe()
                ),
                "check the MCP server's logs",
            );
            end_http_session(&session);
            return;
        }
    }

    // tools/list
    let tools_name = hop.name("MCP tools/list");
    if !summary.has_tools {
        report.skip(
            tools_name,
            "not asked: the server declares no tools capability",
        );
    } else {
        let deadline = Instant::now() + CHECK_TIMEOUT;
        let outcome = list_tools(deadline, |message, deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut resp = session.post(message, left).map_err(|e| {
                format!(
                    "no answer: {}",
                    crate::failure::Failure::from_ureq(&e).describe()
                )
            })?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(http_refusal(&mut resp, url, &header_names, "tools/list").0);
            }
            read_rpc_answer(&mut resp, &message["id"], deadline)
        });
        let ended = end_http_session(&session);
        match outcome {
            Ok(count) => report.pass(tools_name, format!("{}{ended}", tool_count(count))),
            Err(problem) => report.fail(
                tools_name,
                problem,
                "check the MCP server's logs; `run` forwards tools/list as it is",
            ),
        }
        return;
    }
    end_http_session(&session);
}

/// `DELETE` for a session the server issued, and a note on how it went. Not a check of its own:
/// servers may refuse client-ended sessions (405).
pub(super) fn end_http_session(session: &HttpSession<'_>) -> String {
    if session.session_id.is_none() {
        return String::new();
    }
    match session.delete() {
        Ok(status) => format!("; session ended (DELETE → {status})"),
        Err(e) => format!(
            "; ending the session failed ({})",
            crate::failure::Failure::from_ureq(&e).describe()
        ),
    }
}

pub(super) fn initialize_request() -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": CLIENT_INFO_NAME, "version": env!("CARGO_PKG_VERSION")},
        },
    })
}

pub(super) fn initialized_notification() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

pub(super) fn tools_list_request(id: u64, cursor: Option<&str>) -> Value {
    let params = match cursor {
        Some(c) => json!({ "cursor": c }),
        None => json!({}),
    };
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})
}

/// Counts the tools over every page, calling `ask` for each `tools/list` request.
pub(super) fn list_tools(
    deadline: Instant,
    mut ask: impl FnMut(&Value, Instant) -> Result<Value, String>,
) -> Result<usize, String> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    for page in 0..MAX_TOOL_PAGES {
        let request = tools_list_request(2 + page as u64, cursor.as_deref());
        let answer = ask(&request, deadline)?;
        if let Some(error) = answer.get("error") {
            return Err(format!("tools/list failed: {}", rpc_error_text(error)));
        }
        let tools = answer["result"]["tools"]
            .as_array()
            .ok_or("the tools/list answer has no tools array")?;
        count += tools.len();
        match answer["result"]["nextCursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
            _ => return Ok(count),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(count)
}

pub(super) fn tool_count(count: usize) -> String {
    match count {
        1 => "1 tool".to_string(),
        n => format!("{n} tools"),
    }
}

pub(super) struct InitSummary {
    pub(super) text: String,
    pub(super) protocol: Option<String>,
    pub(super) has_tools: bool,
}

/// Reads an `initialize` answer; reports (and returns `None` for) a JSON-RPC error.
pub(super) fn initialize_summary(
    answer: &Value,
    name: &str,
    report: &mut Report,
) -> Option<InitSummary> {
    if let Some(error) = answer.get("error") {
        report.fail(
            name,
            format!("initialize failed: {}", rpc_error_text(error)),
            "check the MCP server's logs; it refused to start a session",
        );
        return None;
    }
    let result = &answer["result"];
    let server = &result["serverInfo"];
    let server_name = server["name"].as_str().unwrap_or("(unnamed)");
    let version = server["version"]
        .as_str()
        .map(|v| format!(" {}", shorten(v)))
        .unwrap_or_default();
    let protocol = result["protocolVersion"].as_str().map(str::to_string);
    let has_tools = match result.get("capabilities") {
        Some(Value::Object(caps)) => caps.contains_key("tools"),
        // A server that declares nothing: ask anyway.
        _ => true,
    };
    Some(InitSummary {
        text: format!(
            "server {:?}{version}, protocol {}",
            shorten(server_name),
            protocol.as_deref().unwrap_or("(not stated)")
        ),
        protocol,
        has_tools,
    })
}

/// The detail and fix for a non-2xx answer of the MCP server.
pub(super) fn http_refusal(
    resp: &mut Response<Body>,
    url: &str,
    header_names: &[&str],
    what: &str,
) -> (String, String) {
    let status = resp.status().as_u16();
    let location = header(resp, "location");
    let challenge = header(resp, "www-authenticate")
        .and_then(|v| v.split_whitespace().next().map(str::to_string));
    let body = read_body(resp);
    let rpc = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error").map(rpc_error_text))
        .map(|t| format!(": {t}"))
        .unwrap_or_default();
    let detail = format!("{what} answered HTTP {status}{rpc}");
    let fix = match status {
        401 | 403 => {
            let asks = challenge
                .map(|s| format!(" (it asks for {})", shorten(&s)))
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
            location
                .map(|l| format!(" ({})", shown_url(&l)))
                .unwrap_or_default()
        ),
        407 => format!("give the proxy's credentials in {}", MCP_KEYS.proxy),
        500..=599 => "the MCP server failed: check its logs".to_string(),
        _ => "check the MCP server's logs and MCP_SERVER_URL".to_string(),
    };
    (detail, fix)
}

/// The JSON-RPC message answering `id`, from a JSON body or an event stream.
pub(super) fn read_rpc_answer(
    resp: &mut Response<Body>,
    id: &Value,
    deadline: Instant,
) -> Result<Value, String> {
    let content_type = header(resp, "content-type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if content_type == "text/event-stream" {
        let reader = BufReader::new(resp.body_mut().as_reader());
        let mut events = SseReader::new(reader, MAX_ANSWER);
        loop {
            if Instant::now() >= deadline {
                return Err("no answer on the event stream in time".to_string());
            }
            let event = match events.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => return Err("the event stream ended without the answer".to_string()),
                Err(e) => return Err(format!("reading the event stream: {e}")),
            };
            if !event.is_message() {
                continue;
            }
            if let Ok(message) = serde_json::from_str::<Value>(&event.data)
                && is_answer(&message, id)
            {
                return Ok(message);
            }
        }
    }
    let body = read_body(resp);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("empty body".to_string());
    }
    let message: Value = serde_json::from_slice(&body).map_err(|_| {
        format!(
            "the body is not JSON (Content-Type {})",
            if content_type.is_empty() {
                "none"
            } else {
                &content_type
            }
        )
    })?;
    if is_answer(&message, id) {
        Ok(message)
    } else {
        Err("the body is not a JSON-RPC answer to the request".to_string())
    }
}

pub(super) fn is_answer(message: &Value, id: &Value) -> bool {
    message.get("id") == Some(id)
        && message.get("method").is_none()
        && (message.get("result").is_some() || message.get("error").is_some())
}

pub(super) fn rpc_error_text(error: &Value) -> String {
    let code = error["code"]
        .as_i64()
        .map(|c| format!("{c} "))
        .unwrap_or_default();
    let message = error["message"].as_str().unwrap_or("(no message)");
    format!("{code}{}", shorten(message))
}

pub(super) fn read_body(resp: &mut Response<Body>) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut buf);
    buf
}

pub(super) fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A URL without its query or fragment (which may carry tokens) and without user info.
pub(super) fn shown_url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let (base, rest) = url.split_at(cut);
    let base = match base.split_once("://") {
        Some((scheme, after)) => {
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_string(),
    };
    if rest.is_empty() {
        base
    } else {
        format!("{base}?…")
    }
}

/// Server-provided text, cut to a readable length and to one line.
pub(super) fn shorten(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > MAX_SHOWN {
        let cut: String = one_line.chars().take(MAX_SHOWN).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}
