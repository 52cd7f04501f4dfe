//! The public MCP endpoint: `/v1/mcp/{tunnel_id}[/{channel}]`, what MCP hosts call.
//!
//! A POST becomes a `jsonrpc` command and the HTTP request is held until the tunnel client
//! answers: one JSON response, or — when the caller accepts `text/event-stream` and notifications
//! come first — an event stream with one event per payload, closed after the terminal one.
//! DELETE with an `Mcp-Session-Id` (a 2025 session host ending its session) becomes
//! `session_termination`. GET is 405: with a session id (a 2025 host asking for the standalone
//! server stream) `Allow: POST, DELETE`; GET or DELETE without one (a stateless 2026-07-28
//! host, for which only POST means something) `Allow: POST`.
//!
//! The message crosses as the caller wrote it: the command carries the body's text, and the
//! answer's text is the response body (or an event's data); `Mcp-Method`, `Mcp-Name`,
//! `Mcp-Param-*` and `MCP-Protocol-Version` travel in the command's headers as sent. Every error
//! the relay makes itself is a JSON-RPC error object ([`super::mcp_error`]) carrying the
//! request's id when the body was read: 502 `tunnel_client_gone` when the client that took the
//! command is gone, 503, 504, 404 `session_not_found`, 400 for a body that is not one message.
//!
//! Nothing is queued before the request is authorised and well-formed, and nothing waits longer
//! than the connector budget: the command's `response_timeout` is the budget left, so the client
//! never works for a caller who has gone.
//!
//! Nor longer than the caller: a held request whose caller closed its connection (checked every
//! [`HOST_GONE_CHECK`], also while its event stream waits) is cancelled ([`Ticket::cancel`]):
//! withdrawn if still queued, else its client is told when it speaks our extension. A
//! `notifications/cancelled` naming a request held here ends it the same way and is answered 202
//! by the relay itself; one naming nothing cancellable here crosses as any other message.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::hub::{CommandBody, SubmitError, Ticket, TunnelHub, Wait, now_rfc3339};
use super::mcp_error::{self, McpError};
use super::stream::{self, StreamLimits};
use super::tunnels::{ConnectorAuth, TunnelRecord};
use super::{bearer, bearer_token};
use crate::headers;
use crate::http_server::{ChunkWriter, Request, Response};
use crate::wire::{COMMAND_SERVER_RESPONSE, RespType, ResponsePayload};
use serde_json::Value;

/// Time reserved at the end of the connector's budget for the client's response POST to reach
/// us: the command's deadline is this much earlier than the connector's.
pub(super) const RESPONSE_MARGIN: Duration = Duration::from_millis(500);

/// How often a waiting connector request checks whether the client that took its command is
/// gone (see `hub::CLIENT_GONE_GRACE`).
pub(super) const CLIENT_GONE_CHECK: Duration = Duration::from_millis(500);

/// How often a held request checks that its caller is still connected (a non-blocking peek);
/// an answer arriving meanwhile is taken at once, never delayed by this.
pub(super) const HOST_GONE_CHECK: Duration = Duration::from_millis(250);

/// Longest JSON-RPC `id` text kept for the relay's own error answers; a longer one (only a
/// hostile caller sends that) gets `null`, so the copy stays small.
const MAX_KEPT_ID: usize = 1024;

/// Settings the connector endpoint needs.
pub struct ConnectorLimits {
    /// How long one connector request may wait for its answer.
    pub wait: Duration,
    /// Largest request body accepted.
    pub max_body: usize,
    /// CORS is on: `OPTIONS` is one more allowed method.
    pub cors: bool,
    /// Long-lived streams ([`super::stream`]).
    pub streams: StreamLimits,
    /// This request's: where its ticket reports the client instance that served it.
    pub served_by: Arc<OnceLock<String>>,
}

pub fn handle(
    record: &TunnelRecord,
    hub: &Arc<TunnelHub>,
    channel: &str,
    req: Request,
    limits: &ConnectorLimits,
) -> Response {
    let started = Instant::now();
    if record.connector_auth == ConnectorAuth::RelayKey {
        let authorised = bearer(&req).is_some_and(|key| record.connector_key_matches(key));
        if !authorised {
            let presented = bearer_token(req.header("Authorization")).is_some();
            return mcp_error::unauthorized(presented);
        }
    }
    let in_session = req.header("Mcp-Session-Id").is_some();
    let options = if limits.cors { ", OPTIONS" } else { "" };
    match req.method.as_str() {
        "POST" => post(record, hub, channel, req, limits, started),
        // Our extension: a session's standalone stream, when a client instance can hold it.
        "GET"
            if stream::is_session_get(&req)
                && hub.streams_available(req.header("Mcp-Session-Id")) =>
        {
            stream::open(record, hub, channel, (req, None, None), limits, started)
        }
        "DELETE" if in_session => delete(record, hub, channel, req, limits, started),
        "GET" | "DELETE" if !in_session => mcp_error::METHOD_NOT_ALLOWED_STATELESS
            .response(None)
            .with_header("Allow", &format!("POST{options}")),
        _ => mcp_error::METHOD_NOT_ALLOWED
            .response(None)
            .with_header("Allow", &format!("POST, DELETE{options}")),
    }
}

/// The request's headers as a command carries them: blocklist applied, and in relay-key mode
/// without the connector key.
pub(super) fn command_headers(
    record: &TunnelRecord,
    req: &Request,
) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers::forwardable(&req.headers) {
        if record.connector_auth == ConnectorAuth::RelayKey
            && name.eq_ignore_ascii_case("authorization")
        {
            continue;
        }
        map.entry(name).or_default().push(value);
    }
    map
}

/// The answer when a command cannot be queued; `id` is the request's raw JSON-RPC id.
pub(super) fn submit_error(e: SubmitError, id: Option<&str>) -> Response {
    let error = match e {
        SubmitError::NotConnected => mcp_error::TUNNEL_CLIENT_NOT_CONNECTED,
        SubmitError::QueueFull => mcp_error::TUNNEL_QUEUE_FULL,
        SubmitError::SessionGone => mcp_error::SESSION_NOT_FOUND,
        SubmitError::StreamLimit => mcp_error::TUNNEL_STREAM_LIMIT,
        SubmitError::StoreUnavailable => mcp_error::TUNNEL_TRANSPORT_UNAVAILABLE,
    };
    error.response(id)
}

fn post(
    record: &TunnelRecord,
    hub: &Arc<TunnelHub>,
    channel: &str,
    mut req: Request,
    limits: &ConnectorLimits,
    started: Instant,
) -> Response {
    if req.body.len() > limits.max_body {
        return mcp_error::REQUEST_BODY_TOO_LARGE.response(None);
    }
    // The body becomes the command's message as is: one copy, never re-serialized.
    let (message, fields) = match Message::parse(std::mem::take(&mut req.body)) {
        Ok(parsed) => parsed,
        Err((error, fields)) => return error.response(fields.request_id()),
    };
    // The id the relay's own errors carry: a request's (a response's id is not the caller's).
    let id = fields.request_id();
    let accepts_sse = req
        .header("Accept")
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/event-stream"));
    let session = req.header("Mcp-Session-Id").map(str::to_string);
    if fields.method.as_deref() == Some("notifications/cancelled")
        && fields.id.is_none()
        && let Some(target) = cancelled_request_id(message.get())
        && let Some(done) = hub.cancel_by_rpc_id(channel, session.as_deref(), &target)
    {
        log::debug!("tunnel {}: notifications/cancelled: {done:?}", record.id);
        return Response::new(202, Vec::new());
    }
    if fields.method.as_deref() == Some("subscriptions/listen")
        && id.is_some()
        && hub.streams_available(session.as_deref())
    {
        let id = id.map(str::to_string);
        return stream::open(
            record,
            hub,
            channel,
            (req, Some(message), id),
            limits,
            started,
        );
    }
    // Our extension: a host's answer to a server request a client forwarded goes to that client.
    if fields.method.is_none()
        && let Some(raw_id) = fields.id.as_deref()
    {
        let body = CommandBody {
            command_type: COMMAND_SERVER_RESPONSE,
            channel: channel.to_string(),
            headers: command_headers(record, &req),
            jsonrpc: Some(message.clone()),
            created_at: now_rfc3339(),
        };
        let deadline = started + limits.wait;
        let margin = deadline.checked_sub(RESPONSE_MARGIN).unwrap_or(deadline);
        if let Some(submitted) =
            hub.submit_server_response(body, margin, raw_id, session.as_deref())
        {
            let ticket = match submitted {
                Ok(t) => t.report_to(&limits.served_by),
                Err(e) => return submit_error(e, None),
            };
            log::debug!(
                "tunnel {}: queued {} (server_response)",
                record.id,
                ticket.request_id
            );
            return wait_for_answer(ticket, deadline, false, None, req);
        }
    }
    // The id a later notifications/cancelled would name (a request's, short enough to keep).
    let rpc_id = id.and_then(|raw| serde_json::from_str::<Value>(raw).ok());
    let body = CommandBody {
        command_type: "jsonrpc",
        channel: channel.to_string(),
        headers: command_headers(record, &req),
        jsonrpc: Some(message),
        created_at: now_rfc3339(),
    };
    let deadline = started + limits.wait;
    let is_initialize = fields.method.as_deref() == Some("initialize");
    let ticket = match hub.submit_request(
        body,
        deadline.checked_sub(RESPONSE_MARGIN).unwrap_or(deadline),
        session.as_deref(),
        is_initialize,
        rpc_id,
    ) {
        Ok(t) => t.report_to(&limits.served_by),
        Err(e) => return submit_error(e, id),
    };
    log::debug!(
        "tunnel {}: queued {} ({})",
        record.id,
        ticket.request_id,
        fields.method.as_deref().unwrap_or("response")
    );
    wait_for_answer(ticket, deadline, accepts_sse, id, req)
}

/// `params.requestId` of a `notifications/cancelled`.
fn cancelled_request_id(message: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(message).ok()?;
    value
        .get("params")?
        .get("requestId")
        .filter(|id| id.is_string() || id.is_number())
        .cloned()
}

/// The few members of a JSON-RPC message the relay needs, read from its text without changing
/// it. A repeated member counts with its last value, as in most JSON readers.
#[derive(Default)]
struct Fields {
    /// The raw `id` text when present (`null` included) and at most [`MAX_KEPT_ID`] long.
    id: Option<String>,
    method: Option<String>,
    has_result: bool,
    has_error: bool,
}

impl Fields {
    /// The raw id of a request (a message with a `method`), for the relay's own errors.
    fn request_id(&self) -> Option<&str> {
        self.method.as_ref().and(self.id.as_deref())
    }
}

struct Message;

impl Message {
    /// The body as a raw JSON value plus its fields, unless it is not one JSON-RPC object (a
    /// request, a notification or a response): then the error to answer, with what was read.
    fn parse(body: Vec<u8>) -> Result<(Box<RawValue>, Fields), (McpError, Fields)> {
        let not_json = || (mcp_error::INVALID_JSON, Fields::default());
        let text = String::from_utf8(body).map_err(|_| not_json())?;
        let fields: Fields = match serde_json::from_str(&text) {
            Ok(fields) => fields,
            // JSON, but not an object (a batch, a bare value): an invalid request.
            Err(_) if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() => {
                return Err((mcp_error::INVALID_JSON_RPC, Fields::default()));
            }
            Err(_) => return Err(not_json()),
        };
        if fields.method.is_none() && !fields.has_result && !fields.has_error {
            return Err((mcp_error::INVALID_JSON_RPC, fields));
        }
        match RawValue::from_string(text) {
            Ok(raw) => Ok((raw, fields)),
            Err(_) => Err(not_json()),
        }
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut out = Fields::default();
                while let Some(key) = map.next_key::<String>()? {
                    // Borrowed: values are skimmed, never copied (but the short id).
                    let value: &RawValue = map.next_value()?;
                    match key.as_str() {
                        "id" => {
                            out.id = Some(value.get())
                                .filter(|id| id.len() <= MAX_KEPT_ID)
                                .map(str::to_string)
                                .or_else(|| Some("null".to_string()));
                        }
                        "method" => out.method = serde_json::from_str(value.get()).ok(),
                        "result" => out.has_result = true,
                        "error" => out.has_error = true,
                        _ => {}
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Members)
    }
}

fn delete(
    record: &TunnelRecord,
    hub: &Arc<TunnelHub>,
    channel: &str,
    req: Request,
    limits: &ConnectorLimits,
    started: Instant,
) -> Response {
    // `handle` routes only a DELETE with a session id here; without one it is a 405.
    let Some(session) = req.header("Mcp-Session-Id").map(str::to_string) else {
        return mcp_error::METHOD_NOT_ALLOWED_STATELESS.response(None);
    };
    let body = CommandBody {
        command_type: "session_termination",
        channel: channel.to_string(),
        headers: command_headers(record, &req),
        jsonrpc: None,
        created_at: now_rfc3339(),
    };
    let deadline = started + limits.wait;
    let ticket = match hub.submit(
        body,
        deadline.checked_sub(RESPONSE_MARGIN).unwrap_or(deadline),
        Some(&session),
        false,
    ) {
        Ok(t) => t.report_to(&limits.served_by),
        Err(e) => return submit_error(e, None),
    };
    let response = wait_for_answer(ticket, deadline, false, None, req);
    // The connector is done with the session whatever the server said (a stdio server answers
    // 405): its binding to a client instance is no longer needed.
    hub.end_session(&session);
    response
}

/// Waits for the terminal payload, streaming notifications first when the caller accepts them.
/// `id` is the raw JSON-RPC id of a request (for the relay's own error answers).
fn wait_for_answer(
    ticket: Ticket,
    deadline: Instant,
    accepts_sse: bool,
    id: Option<&str>,
    req: Request,
) -> Response {
    let mut client_checked = Instant::now();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return mcp_error::TUNNEL_RESPONSE_TIMEOUT.response(id);
        }
        match ticket.next(left.min(HOST_GONE_CHECK)) {
            Wait::Payload(payload) if payload.resp_type.is_terminal() => {
                return final_response(payload, accepts_sse);
            }
            Wait::Payload(notification) if accepts_sse => {
                return stream(ticket, notification, deadline, id.map(str::to_string), req);
            }
            // The caller cannot take notifications in a plain JSON answer: drop them.
            Wait::Payload(_) => continue,
            Wait::Timeout if req.peer_gone() => {
                let done = ticket.cancel("host_closed");
                log::debug!("{}: caller closed its request: {done:?}", ticket.request_id);
                // Nobody reads this answer; the connection is closed after it.
                return mcp_error::TUNNEL_RESPONSE_TIMEOUT
                    .response(id)
                    .with_header("Connection", "close");
            }
            Wait::Timeout if client_checked.elapsed() >= CLIENT_GONE_CHECK => {
                client_checked = Instant::now();
                if ticket.client_gone() {
                    return mcp_error::TUNNEL_CLIENT_GONE.response(id);
                }
            }
            Wait::Timeout => continue,
            Wait::Cancelled => return mcp_error::REQUEST_CANCELLED.response(id),
            // Only a stream's notifications can overflow; nothing more will come.
            Wait::Dropped => return mcp_error::TUNNEL_RESPONSE_TIMEOUT.response(id),
        }
    }
}

/// A terminal payload as one HTTP answer (or a one-event stream when the MCP server itself
/// answered with an event stream and the caller accepts one).
pub(super) fn final_response(payload: ResponsePayload, accepts_sse: bool) -> Response {
    let status = connector_status(payload.resp_code);
    let mut headers = returnable(&payload.resp_headers);
    let was_stream = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("content-type") && v.contains("text/event-stream"));
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
    let Some(json) = payload
        .resp_json
        .filter(|_| payload.resp_type == RespType::JsonrpcResponse)
    else {
        return with_headers(Response::new(status, Vec::new()), headers);
    };
    if was_stream && accepts_sse {
        headers.push(("Content-Type".into(), "text/event-stream".into()));
        headers.push(("Cache-Control".into(), "no-cache".into()));
        let event = sse_event(json.get());
        return Response::stream(
            status,
            headers,
            Box::new(move |w: &mut ChunkWriter<'_>| w.finish(event.as_bytes())),
        );
    }
    headers.push(("Content-Type".into(), "application/json".into()));
    // The client's text as the body, moved, not copied.
    let body: Box<str> = json.into();
    with_headers(Response::new(status, body.into_string()), headers)
}

/// Opens an event stream with `first` and forwards every later payload until the terminal one.
/// The first payload's returnable headers (a session id, say) go on the stream's response.
fn stream(
    ticket: Ticket,
    first: ResponsePayload,
    deadline: Instant,
    id: Option<String>,
    req: Request,
) -> Response {
    let mut headers = returnable(&first.resp_headers);
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
    headers.push(("Content-Type".to_string(), "text/event-stream".to_string()));
    headers.push(("Cache-Control".to_string(), "no-cache".to_string()));
    Response::stream(
        200,
        headers,
        Box::new(move |w: &mut ChunkWriter<'_>| {
            let pumped = pump(&ticket, &first, deadline, id.as_deref(), &req, w);
            if pumped.is_err() {
                // A write failed: the caller is gone as surely as when it closed between events.
                let done = ticket.cancel("host_closed");
                log::debug!("{}: caller's stream broke: {done:?}", ticket.request_id);
            }
            pumped
        }),
    )
}

/// Writes `first`, then every later payload until the terminal one.
fn pump(
    ticket: &Ticket,
    first: &ResponsePayload,
    deadline: Instant,
    id: Option<&str>,
    req: &Request,
    w: &mut ChunkWriter<'_>,
) -> io::Result<()> {
    if let Some(json) = &first.resp_json {
        w.send(sse_event(json.get()).as_bytes())?;
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Out of time: end the stream; the caller sees no final message.
            return Ok(());
        }
        let payload = match ticket.next(left.min(HOST_GONE_CHECK)) {
            Wait::Payload(payload) => payload,
            // The caller closed its stream: in 2026-07-28 that *is* the cancellation.
            Wait::Timeout if req.peer_gone() => {
                let done = ticket.cancel("host_closed");
                log::debug!("{}: caller closed its stream: {done:?}", ticket.request_id);
                return Err(io::Error::other("caller closed its event stream"));
            }
            Wait::Timeout if ticket.client_gone() => {
                if let Some(id) = id {
                    w.send(sse_event(&mcp_error::TUNNEL_CLIENT_GONE.body(Some(id))).as_bytes())?;
                }
                return Ok(());
            }
            Wait::Timeout => continue,
            // The caller cancelled it: end the stream without a final message.
            Wait::Cancelled => return Ok(()),
            // The caller did not read its notifications fast enough: cut the stream.
            Wait::Dropped => {
                return Err(io::Error::other("connector not reading its event stream"));
            }
        };
        if let Some(json) = &payload.resp_json {
            w.send(sse_event(json.get()).as_bytes())?;
        }
        if payload.resp_type.is_terminal() {
            return Ok(());
        }
    }
}

/// One `message` event; a JSON text spanning lines becomes several `data:` lines, which the
/// reader joins back with LF. Line breaks (CR, LF or CRLF, only ever whitespace in JSON) are the
/// one thing an event stream cannot carry byte for byte: they arrive as LF.
pub(super) fn sse_event(json: &str) -> String {
    let mut event = String::from("event: message\n");
    for line in json.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        event.push_str("data: ");
        event.push_str(line);
        event.push('\n');
    }
    event.push('\n');
    event
}

/// The status the connector sees: 1xx and statuses without a standard meaning become 502
/// (an unknown 2xx becomes 200).
fn connector_status(code: u16) -> u16 {
    let known = ureq::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .is_some();
    match code {
        200..=299 if known => code,
        200..=299 => 200,
        300..=599 if known => code,
        _ => 502,
    }
}

pub(super) fn returnable(resp_headers: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
    let pairs: Vec<(&str, &str)> = resp_headers
        .iter()
        .flat_map(|(n, vs)| vs.iter().map(move |v| (n.as_str(), v.as_str())))
        .collect();
    headers::returnable(pairs.into_iter())
        .into_iter()
        .flat_map(|(n, vs)| vs.into_iter().map(move |v| (n.clone(), v)))
        .collect()
}

fn with_headers(mut resp: Response, headers: Vec<(String, String)>) -> Response {
    resp.headers.extend(headers);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(connector_status(200), 200);
        assert_eq!(connector_status(202), 202);
        assert_eq!(connector_status(299), 200);
        assert_eq!(connector_status(101), 502);
        assert_eq!(connector_status(404), 404);
        assert_eq!(connector_status(599), 502);
        assert_eq!(connector_status(0), 502);
    }

    #[test]
    fn multi_line_json_becomes_several_data_lines() {
        assert_eq!(
            sse_event("{\n\"a\": 1\n}"),
            "event: message\ndata: {\ndata: \"a\": 1\ndata: }\n\n"
        );
    }
}
