//! Long-lived event streams at a Streamable HTTP MCP server (a `stream` command, our relay
//! extension): a 2025 session's standalone `GET` (the command's headers carry its
//! `Mcp-Session-Id`), or a 2026-07-28 `subscriptions/listen` POST.
//!
//! Once the server answers with an event stream, the sink hears "opened" (no message, the
//! answer's returnable headers), then each JSON-RPC message as it arrives. A server→client
//! request on the stream is forwarded like a notification, with an id of ours
//! ([`crate::mcp::server_requests`]), when that extension is on, else refused at once, as on a
//! call's stream, so nothing waits on the tunnel. While the host holds a session's `GET`, the
//! client holds no standalone stream of its own for it ([`super::watch`]). The stream ends with a terminal [`Reply`]: listen's completion result (the response
//! to its id), or, when the server ends the stream, an empty one (no message). A server that
//! refuses (any answer that is not a 2xx event stream) has its answer passed on as the terminal
//! reply, as for a call. The sink returning `false` (the relay no longer takes the stream), the
//! cancel flag, or the deadline end the upstream request; nothing more is posted then.

use std::io::BufReader;
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;

use super::{
    HttpTransport, MAX_RESPONSE_BODY, budget, content_type, drain, expired, read_json_answer,
    returnable,
};
use crate::failure::Failure;
use crate::http_client::{self, CancelFlag};
use crate::mcp::server_requests;
use crate::mcp::sse::SseReader;
use crate::mcp::{Headers, Outcome, Reply, StreamSink};
use crate::wire::{RespType, RpcShape, StreamOpen};

/// How long a host's GET is retried on 409 after we closed our own standalone stream.
const CONFLICT_RETRY_FOR: Duration = Duration::from_secs(2);

impl HttpTransport {
    /// Holds one stream open until it ends (see the module docs).
    pub fn stream(
        &self,
        open: &StreamOpen,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        sink: &mut StreamSink<'_>,
        cancel: &CancelFlag,
    ) -> Outcome {
        let host_get = matches!(open, StreamOpen::Get);
        let ours_closed = host_get && self.watches.held_by_host(command_headers);
        let outcome = http_client::cancellable(cancel, || {
            self.stream_uncancelled(open, command_headers, deadline, sink, ours_closed)
        });
        if host_get {
            self.watches.released(command_headers);
        }
        if cancel.is_cancelled() {
            return Outcome::Cancelled;
        }
        outcome
    }

    /// The host's `GET` of its session's standalone stream. When we just closed our own on
    /// that session, a server allowing one GET stream per session (FastMCP) may still count it
    /// and answer 409 for a moment: the GET is then tried again, for at most
    /// [`CONFLICT_RETRY_FOR`], rather than showing the host a conflict of our making.
    fn open_get(
        &self,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        ours_closed: bool,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let retry_until = Instant::now() + CONFLICT_RETRY_FOR;
        let mut pause = Duration::from_millis(25);
        loop {
            let req = self.with_headers(self.agent.get(&self.url), command_headers);
            let result = http_client::with_timeout(req, budget(deadline)).call();
            let conflict = matches!(&result, Ok(resp) if resp.status().as_u16() == 409);
            if !(ours_closed && conflict && Instant::now() + pause < retry_until)
                || expired(deadline)
            {
                return result;
            }
            if let Ok(resp) = result {
                drain(resp);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn stream_uncancelled(
        &self,
        open: &StreamOpen,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        sink: &mut StreamSink<'_>,
        ours_closed: bool,
    ) -> Outcome {
        let (result, id) = match open {
            StreamOpen::Get => (self.open_get(command_headers, deadline, ours_closed), None),
            StreamOpen::Listen(message) => {
                let id = RpcShape::of(message.get())
                    .and_then(|s| s.id)
                    .unwrap_or(Value::Null);
                let req = self.with_headers(self.agent.post(&self.url), command_headers);
                let sent = http_client::with_timeout(req, budget(deadline))
                    .header("Content-Type", "application/json")
                    .send(message.get());
                (sent, Some(id))
            }
        };
        if expired(deadline) {
            return Outcome::Expired;
        }
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let failure = Failure::from_ureq(&e);
                log::debug!("mcp stream failed to open: {}", failure.describe());
                return Outcome::Reply(match &id {
                    Some(id) => Reply::failure(&failure, id),
                    None => ended(failure.resp_code(), Headers::new()),
                });
            }
        };
        let status = resp.status().as_u16();
        let resp_headers = returnable(&resp);
        if !(200..300).contains(&status) || content_type(&resp) != "text/event-stream" {
            return Outcome::Reply(match &id {
                Some(id) => match read_json_answer(resp, status, resp_headers, id) {
                    Outcome::Reply(reply) => reply,
                    other => return other,
                },
                None => {
                    drain(resp);
                    let code = if (200..300).contains(&status) {
                        502
                    } else {
                        status
                    };
                    ended(code, resp_headers)
                }
            });
        }
        if !sink(None, &resp_headers) {
            return Outcome::Cancelled;
        }
        let body = resp.body_mut().as_reader();
        let mut events = SseReader::new(BufReader::new(body), MAX_RESPONSE_BODY);
        loop {
            let event = match events.next_event() {
                Ok(Some(event)) => event,
                Ok(None) | Err(_) if expired(deadline) => return Outcome::Expired,
                Ok(None) => return Outcome::Reply(ended(200, resp_headers)),
                Err(e) => {
                    log::debug!("mcp stream ended: {}", Failure::from_io(&e).describe());
                    return Outcome::Reply(ended(200, resp_headers));
                }
            };
            if !event.is_message() || event.data.trim().is_empty() {
                continue;
            }
            let Some((raw, shape)) = RawValue::from_string(event.data)
                .ok()
                .and_then(|raw| RpcShape::of(raw.get()).map(|shape| (raw, shape)))
            else {
                log::warn!("mcp server sent a stream event that is not a JSON-RPC object; skipped");
                continue;
            };
            if shape.is_notification() {
                if !sink(Some(raw), &resp_headers) {
                    return Outcome::Cancelled;
                }
            } else if shape.is_call() && server_requests::is_on() {
                let asked_id = shape.id.clone().unwrap_or(Value::Null);
                let session = server_requests::session_in(command_headers);
                let forwarded = self.asked.tunnel(&raw, &asked_id, session);
                if !sink(Some(forwarded), &resp_headers) {
                    return Outcome::Cancelled;
                }
            } else if shape.is_call() {
                self.refuse_server_request(&shape, command_headers, deadline);
            } else if id.is_some() && shape.id == id {
                return Outcome::Reply(Reply::upstream(raw, resp_headers, status));
            } else {
                log::debug!("mcp server sent a response for another id on a stream; skipped");
            }
        }
    }
}

/// The terminal reply of a stream that ended without a final message.
fn ended(resp_code: u16, resp_headers: Headers) -> Reply {
    Reply {
        resp_json: None,
        resp_headers,
        resp_code,
        resp_type: RespType::JsonrpcResponse,
        failure: None,
    }
}
