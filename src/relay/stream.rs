//! Long-lived event streams on the public MCP endpoint (our extension,
//! [`crate::wire::FEATURE_STREAMS`]): a 2026-07-28 `subscriptions/listen` POST, or a 2025
//! session's standalone `GET` (with `Mcp-Session-Id` and `Accept: text/event-stream`), becomes a
//! `stream` command for a client instance that announced the feature ([`TunnelHub::submit_stream`];
//! the instance that holds the session when one does). [`super::connector`] sends them here only
//! then; otherwise the contract's behaviour stays (a listen is an ordinary `jsonrpc` command, a
//! GET is 405).
//!
//! - The command must be taken and its first payload (the client's "opened" marker, or the
//!   server's first message) arrive within `--connector.timeout`; a terminal first payload (the
//!   MCP server refused the stream) is answered as any answer is. After that no connector timeout
//!   applies: the host's event stream stays open while both ends want it.
//! - While the stream is quiet the relay writes an SSE comment (`: keep-alive`) every
//!   `--stream.heartbeat` (default and most 25 s), which keeps proxies that cut idle responses
//!   from cutting it.
//! - `--stream.max-lifetime` (default 24 h) ends a stream gracefully: the client is told (a
//!   `cancel` with reason `max_lifetime`) and the host's stream ends without an error.
//! - `--stream.max-per-tunnel` (default 64) caps open streams per tunnel; beyond it the host gets
//!   429 `tunnel_stream_limit`.
//! - The host closing its stream cancels it (`cancel`, reason `host_closed`); the client closes
//!   the upstream request. A host that does not read has its stream ended once
//!   [`super::hub::STREAM_BUFFER_BYTES`] wait unread (see `hub::streams`).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::connector::{
    CLIENT_GONE_CHECK, ConnectorLimits, HOST_GONE_CHECK, RESPONSE_MARGIN, command_headers,
    final_response, returnable, sse_event, submit_error,
};
use super::hub::{CommandBody, StreamKind, SubmitError, Ticket, TunnelHub, Wait, now_rfc3339};
use super::mcp_error;
use super::tunnels::TunnelRecord;
use crate::config::{self, ConfigError, Opt, Sources};
use crate::http_server::{ChunkWriter, Request, Response};
use crate::wire::{COMMAND_STREAM, ResponsePayload};

const HEARTBEAT: &str = "--stream.heartbeat";
const MAX_LIFETIME: &str = "--stream.max-lifetime";
const MAX_PER_TUNNEL: &str = "--stream.max-per-tunnel";

/// The longest heartbeat interval allowed: the bar (Cloudflare cuts idle SSE at ~125 s,
/// others sooner).
const MAX_HEARTBEAT: Duration = Duration::from_secs(25);

/// The relay's stream options, for its option table.
pub const STREAM_OPTIONS: [Opt; 3] = [
    Opt {
        flag: HEARTBEAT,
        env: &["RELAY_STREAM_HEARTBEAT"],
        default: Some("25s"),
        help: "How often a quiet long-lived event stream gets an SSE comment (: keep-alive); at \
               most 25s.",
        ..Opt::BASE
    },
    Opt {
        flag: MAX_LIFETIME,
        env: &["RELAY_STREAM_MAX_LIFETIME"],
        default: Some("24h"),
        help: "A long-lived event stream (subscriptions/listen, a session's GET) ends gracefully \
               after this.",
        ..Opt::BASE
    },
    Opt {
        flag: MAX_PER_TUNNEL,
        env: &["RELAY_STREAM_MAX_PER_TUNNEL"],
        default: Some("64"),
        help: "Long-lived event streams open at once per tunnel; beyond it hosts get 429 \
               tunnel_stream_limit.",
        ..Opt::BASE
    },
];

/// Validated stream options.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub heartbeat: Duration,
    pub max_lifetime: Duration,
    pub max_per_tunnel: usize,
}

impl Default for StreamLimits {
    /// The options' defaults.
    fn default() -> StreamLimits {
        StreamLimits {
            heartbeat: MAX_HEARTBEAT,
            max_lifetime: Duration::from_secs(24 * 3600),
            max_per_tunnel: 64,
        }
    }
}

impl StreamLimits {
    pub fn from_sources(src: &Sources) -> Result<StreamLimits, ConfigError> {
        let heartbeat = config::positive_duration(&src.get(HEARTBEAT))?;
        if heartbeat > MAX_HEARTBEAT {
            return Err(config::err(HEARTBEAT, "must be at most 25s"));
        }
        Ok(StreamLimits {
            heartbeat,
            max_lifetime: config::positive_duration(&src.get(MAX_LIFETIME))?,
            max_per_tunnel: config::count(&src.get(MAX_PER_TUNNEL), 1, 100_000)?,
        })
    }
}

/// Whether a request opens a long-lived stream: a `GET` in a session asking for an event stream.
pub fn is_session_get(req: &Request) -> bool {
    req.method == "GET"
        && req.header("Mcp-Session-Id").is_some()
        && req
            .header("Accept")
            .is_some_and(|a| a.to_ascii_lowercase().contains("text/event-stream"))
}

/// Serves a stream request: `message` is the listen request (`None` for a GET), `id` its raw id.
pub fn open(
    record: &TunnelRecord,
    hub: &Arc<TunnelHub>,
    channel: &str,
    (req, message, id): (Request, Option<Box<RawValue>>, Option<String>),
    limits: &ConnectorLimits,
    started: Instant,
) -> Response {
    let kind = if message.is_some() {
        StreamKind::Listen
    } else {
        StreamKind::Get
    };
    let session = req.header("Mcp-Session-Id").map(str::to_string);
    let body = CommandBody {
        command_type: COMMAND_STREAM,
        channel: channel.to_string(),
        headers: command_headers(record, &req),
        jsonrpc: message,
        created_at: now_rfc3339(),
    };
    let deadline = started + limits.wait;
    let ends = started
        .checked_add(limits.streams.max_lifetime)
        .unwrap_or(deadline);
    let submitted = hub.submit_stream(
        body,
        kind,
        deadline.checked_sub(RESPONSE_MARGIN).unwrap_or(deadline),
        ends,
        session.as_deref(),
        limits.streams.max_per_tunnel,
    );
    let ticket = match submitted {
        Ok(t) => t.report_to(&limits.served_by),
        Err(SubmitError::StreamLimit) => {
            log::warn!(
                "tunnel {}: {} streams open (--stream.max-per-tunnel); refused another",
                record.id,
                limits.streams.max_per_tunnel
            );
            return mcp_error::TUNNEL_STREAM_LIMIT.response(id.as_deref());
        }
        Err(e) => return submit_error(e, id.as_deref()),
    };
    log::debug!(
        "tunnel {}: queued stream {} ({})",
        record.id,
        ticket.request_id,
        kind.as_str()
    );
    let mut client_checked = Instant::now();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return mcp_error::TUNNEL_RESPONSE_TIMEOUT.response(id.as_deref());
        }
        match ticket.next(left.min(HOST_GONE_CHECK)) {
            Wait::Payload(payload) if payload.resp_type.is_terminal() => {
                return final_response(payload, true);
            }
            Wait::Payload(first) => {
                let held = Held {
                    ticket,
                    ends,
                    heartbeat: limits.streams.heartbeat,
                    id,
                    req,
                };
                return held.serve(first);
            }
            Wait::Timeout if req.peer_gone() => {
                let done = ticket.cancel("host_closed");
                log::debug!("{}: caller closed its stream: {done:?}", ticket.request_id);
                return mcp_error::TUNNEL_RESPONSE_TIMEOUT
                    .response(id.as_deref())
                    .with_header("Connection", "close");
            }
            Wait::Timeout if client_checked.elapsed() >= CLIENT_GONE_CHECK => {
                client_checked = Instant::now();
                if ticket.client_gone() {
                    return mcp_error::TUNNEL_CLIENT_GONE.response(id.as_deref());
                }
            }
            Wait::Timeout => continue,
            Wait::Cancelled | Wait::Dropped => {
                return mcp_error::TUNNEL_RESPONSE_TIMEOUT.response(id.as_deref());
            }
        }
    }
}

/// An open stream, from its first payload on.
struct Held {
    ticket: Ticket,
    ends: Instant,
    heartbeat: Duration,
    /// The listen request's raw id (none for a GET).
    id: Option<String>,
    req: Request,
}

impl Held {
    fn serve(self, first: ResponsePayload) -> Response {
        let mut headers = returnable(&first.resp_headers);
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        headers.push(("Content-Type".to_string(), "text/event-stream".to_string()));
        headers.push(("Cache-Control".to_string(), "no-cache".to_string()));
        Response::stream(
            200,
            headers,
            Box::new(move |w: &mut ChunkWriter<'_>| {
                let pumped = self.pump(first, w);
                if pumped.is_err() {
                    // A write failed: the host is gone as surely as when it closed while quiet.
                    let done = self.ticket.cancel("host_closed");
                    log::debug!("{}: host's stream broke: {done:?}", self.ticket.request_id);
                }
                pumped
            }),
        )
    }

    /// Writes payloads as they come, with heartbeats between, until the stream ends.
    fn pump(&self, first: ResponsePayload, w: &mut ChunkWriter<'_>) -> io::Result<()> {
        let ticket = &self.ticket;
        match &first.resp_json {
            Some(json) => w.send(sse_event(json.get()).as_bytes())?,
            // The client's "opened" marker: the host learns the stream is there.
            None => w.send(b": stream open\n\n")?,
        }
        let mut written = Instant::now();
        let mut client_checked = Instant::now();
        loop {
            let now = Instant::now();
            if now >= self.ends {
                let done = ticket.cancel("max_lifetime");
                log::info!(
                    "{}: stream reached --stream.max-lifetime; ended ({done:?})",
                    ticket.request_id
                );
                return Ok(());
            }
            let beat_in = self.heartbeat.saturating_sub(written.elapsed());
            let wait = HOST_GONE_CHECK.min(beat_in).min(self.ends - now);
            match ticket.next(wait) {
                Wait::Payload(payload) => {
                    if let Some(json) = &payload.resp_json {
                        w.send(sse_event(json.get()).as_bytes())?;
                        written = Instant::now();
                    }
                    if payload.resp_type.is_terminal() {
                        return Ok(());
                    }
                }
                Wait::Timeout if self.req.peer_gone() => {
                    let done = ticket.cancel("host_closed");
                    log::debug!("{}: caller closed its stream: {done:?}", ticket.request_id);
                    return Err(io::Error::other("caller closed its event stream"));
                }
                Wait::Timeout if client_checked.elapsed() >= CLIENT_GONE_CHECK => {
                    client_checked = Instant::now();
                    if ticket.client_gone() {
                        if let Some(id) = &self.id {
                            let gone = mcp_error::TUNNEL_CLIENT_GONE.body(Some(id));
                            w.send(sse_event(&gone).as_bytes())?;
                        }
                        return Ok(());
                    }
                }
                Wait::Timeout => {
                    if written.elapsed() >= self.heartbeat {
                        w.send(b": keep-alive\n\n")?;
                        written = Instant::now();
                    }
                }
                Wait::Cancelled => return Ok(()),
                // Its host did not read: cut the stream (counted and logged by the hub).
                Wait::Dropped => {
                    return Err(io::Error::other("host not reading its event stream"));
                }
            }
        }
    }
}
