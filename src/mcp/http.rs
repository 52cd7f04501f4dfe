//! Forwarding to a Streamable HTTP MCP server.
//!
//! A JSON-RPC message goes out as one `POST`; the answer is either one JSON body or an event
//! stream whose notifications are handed on as they arrive until the message answering our request
//! id ends it. `session_termination` becomes one `DELETE`. Every failure that is not the server's
//! own valid JSON-RPC error becomes a synthesized `-32603` (see [`crate::failure`]); every wait is
//! bounded by the command's deadline, and a passed deadline means nothing is posted at all.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;
use ureq::Agent;
use ureq::http::Response;

mod stream;
mod watch;

use super::server_requests::{self, Asked};
use super::sse::SseReader;
use super::{NotifySink, Outcome, Reply};

/// Sees each HTTP exchange's result before it is read (the response's status and headers, or the
/// error that kept it from arriving). `run` passes none; `doctor` uses it to diagnose a hop
/// precisely (a proxy's refusal, the TLS alert, a redirect's target) on `run`'s own requests.
pub type Observer<'a> = dyn FnMut(Result<&Response<ureq::Body>, &ureq::Error>) + 'a;
use crate::config::{DiscoveryConfig, McpConfig};
use crate::failure::{Failure, Source};
use crate::headers;
use crate::http_client::{self, AgentOptions};
use crate::net::HopNet;
use crate::secret::Secret;
use crate::wire::{RespType, RpcShape};

/// `Accept` sent when the command does not carry its own: Streamable HTTP servers may answer
/// either way.
const DEFAULT_ACCEPT: &str = "application/json, text/event-stream";
/// Longest a call may run when the command has no deadline, so no worker is held forever.
const NO_DEADLINE_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest JSON answer (or single event) read from the MCP server. Tool results can carry
/// images; beyond this the answer is refused rather than buffered without bound.
const MAX_RESPONSE_BODY: usize = 32 * 1024 * 1024;
/// A JSON-RPC error larger than this is not passed through as the server's own (contract rule).
const MAX_PASSTHROUGH_ERROR: usize = 100 * 1024;
/// Bytes read from an answer we do not use, so the connection can go back to the pool.
const MAX_DRAIN: u64 = 64 * 1024;
/// Time allowed for a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for our error reply to a server→client request on an event stream.
const SERVER_REQUEST_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One Streamable HTTP MCP server.
pub struct HttpTransport {
    agent: Agent,
    url: String,
    /// The proxy, as it may be shown, for errors about it.
    proxy_name: String,
    extra_headers: Vec<(String, Secret)>,
    /// Server→client requests forwarded to the host, awaiting its answer.
    asked: Box<Asked>,
    /// Sessions' standalone streams held for server requests ([`watch`]).
    watches: Box<watch::Watches>,
}

impl HttpTransport {
    pub fn new(url: &str, net: &HopNet, cfg: &McpConfig) -> Result<HttpTransport, String> {
        let options = AgentOptions {
            max_idle_age: cfg.connection_max_ttl,
            max_idle_per_host: cfg.max_concurrent,
        };
        Ok(HttpTransport {
            agent: http_client::build_agent(&options, net)?,
            url: url.to_string(),
            proxy_name: net.proxy_name(),
            extra_headers: cfg.extra_headers.clone(),
            asked: Box::default(),
            watches: Box::default(),
        })
    }

    /// Server→client requests this transport forwards (our relay extension) or refuses.
    pub fn asked(&self) -> &Asked {
        &self.asked
    }

    /// OAuth discovery for this server, on this transport's agent (TLS, proxy) and static headers.
    pub fn oauth_discovery(&self, cfg: &DiscoveryConfig) -> super::oauth_discovery::Discovery {
        super::oauth_discovery::Discovery::new(
            self.agent.clone(),
            &self.url,
            &self.extra_headers,
            &cfg.extra_headers,
            &cfg.allow_origins,
        )
    }

    /// Forwards one JSON-RPC message. `on_notify` receives each notification of an event stream
    /// as it arrives, with the stream's returnable response headers (the connector may need the
    /// session id before the final answer).
    pub fn call(
        &self,
        message: &RawValue,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
    ) -> Outcome {
        let request = RpcShape::of(message.get())
            .filter(|s| s.id.is_some() && s.method.as_deref().is_some_and(|m| m != "initialize"));
        if request.is_some() {
            // Requests the server sends on the session's standalone stream must not go unheard
            // ([`watch`]; `run`'s calls only, not `doctor`'s).
            self.watches.ensure(self, command_headers);
        }
        self.call_observed(message, command_headers, deadline, on_notify, &mut |_| {})
    }

    /// [`HttpTransport::call`] that ends [`Outcome::Cancelled`] once `cancel` is set: the
    /// exchange runs under [`http_client::cancellable`], so a wait for the server stops within
    /// [`http_client::CANCEL_CHECK`] and the connection is closed, which a 2026-07-28 server
    /// takes as the cancellation. Whatever the call had got by then is not posted.
    pub fn call_cancellable(
        &self,
        message: &RawValue,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
        cancel: &http_client::CancelFlag,
    ) -> Outcome {
        let outcome = http_client::cancellable(cancel, || {
            self.call(message, command_headers, deadline, on_notify)
        });
        if cancel.is_cancelled() {
            return Outcome::Cancelled;
        }
        outcome
    }

    /// [`HttpTransport::call`], with `observe` shown the exchange before it is read.
    pub fn call_observed(
        &self,
        message: &RawValue,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
        observe: &mut Observer<'_>,
    ) -> Outcome {
        let Some(shape) = RpcShape::of(message.get()) else {
            let failure = Failure::new(Source::Protocol, "malformed_json");
            return Outcome::Reply(Reply::failure(&failure, &Value::Null));
        };
        let id = shape.id.clone().unwrap_or(Value::Null);
        // A host's answer to a server request we forwarded goes back with the server's id.
        let session = server_requests::session_in(command_headers);
        let answer = self.asked.answer(message, session);
        let message = answer.as_deref().unwrap_or(message);
        let budget = budget(deadline);
        let req = self.with_headers(self.agent.post(&self.url), command_headers);
        let req = http_client::with_timeout(req, budget).header("Content-Type", "application/json");
        let result = req.send(message.get());
        observe(result.as_ref());
        if expired(deadline) {
            return Outcome::Expired;
        }
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let failure = Failure::from_ureq(&e);
                if let ureq::Error::ConnectProxyFailed(reason) = &e {
                    log::warn!(
                        "proxy {} refused the tunnel to the MCP server: {reason}",
                        self.proxy_name
                    );
                } else {
                    log::debug!("mcp call failed: {}", failure.describe());
                }
                return Outcome::Reply(if shape.id.is_none() || shape.method.is_none() {
                    ack(failure.resp_code(), BTreeMap::new())
                } else {
                    Reply::failure(&failure, &id)
                });
            }
        };
        let status = resp.status().as_u16();
        let resp_headers = returnable(&resp);
        // A notification, or an answer to a server request: the server owes only an ack.
        if shape.id.is_none() || shape.method.is_none() {
            drain(resp);
            let code = if (200..300).contains(&status) || status >= 400 {
                status
            } else {
                502
            };
            return Outcome::Reply(ack(code, resp_headers));
        }
        let is_stream = content_type(&resp) == "text/event-stream";
        if (200..300).contains(&status) && is_stream {
            return self.read_stream(resp, &id, command_headers, deadline, on_notify);
        }
        let outcome = read_json_answer(resp, status, resp_headers, &id);
        if expired(deadline) {
            return Outcome::Expired;
        }
        outcome
    }

    /// A lightweight reachability check for readiness: a `GET` without an event-stream `Accept`
    /// (Streamable HTTP servers answer it 405 or similar, opening no stream). Any HTTP answer
    /// means reachable; `Some(reason)` when the server could not be reached.
    pub fn probe(&self) -> Option<String> {
        let req = self
            .agent
            .get(&self.url)
            .header("Accept", "application/json");
        match http_client::with_timeout(req, PROBE_TIMEOUT).call() {
            Ok(resp) => {
                drain(resp);
                None
            }
            Err(e) => Some(Failure::from_ureq(&e).describe()),
        }
    }

    /// `DELETE` for a `session_termination` command.
    pub fn terminate_session(
        &self,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
    ) -> Outcome {
        self.terminate_observed(command_headers, deadline, &mut |_| {})
    }

    /// [`HttpTransport::terminate_session`], with `observe` shown the exchange.
    pub fn terminate_observed(
        &self,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        observe: &mut Observer<'_>,
    ) -> Outcome {
        let _ = self.watches.stop(command_headers);
        let req = self.with_headers(self.agent.delete(&self.url), command_headers);
        let result = http_client::with_timeout(req, budget(deadline)).call();
        observe(result.as_ref());
        if expired(deadline) {
            return Outcome::Expired;
        }
        let (resp_code, resp_headers) = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = returnable(&resp);
                drain(resp);
                (if status < 200 { 502 } else { status }, headers)
            }
            Err(e) => (Failure::from_ureq(&e).resp_code(), BTreeMap::new()),
        };
        Outcome::Reply(Reply {
            resp_json: None,
            resp_headers,
            resp_code,
            resp_type: RespType::SessionTerminationResponse,
            failure: None,
        })
    }

    /// Operator static headers, then the command's forwardable headers (which win on a clash),
    /// then our default `Accept` unless the command brought one.
    fn with_headers<B>(
        &self,
        mut req: ureq::RequestBuilder<B>,
        command_headers: &[(String, String)],
    ) -> ureq::RequestBuilder<B> {
        // [`HttpTransport::header_list`]'s list, without copying it first.
        let forwarded = headers::forwardable(command_headers);
        let carried = |name: &str| forwarded.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        for (name, value) in &self.extra_headers {
            if !carried(name) {
                req = req.header(name.as_str(), value.expose());
            }
        }
        let accept = !carried("accept");
        for (name, value) in &forwarded {
            req = req.header(name.as_str(), value.as_str());
        }
        if accept {
            req = req.header("Accept", DEFAULT_ACCEPT);
        }
        req
    }

    /// The headers [`HttpTransport::with_headers`] sets, in order.
    fn header_list(&self, command_headers: &[(String, String)]) -> Vec<(String, String)> {
        let forwarded = headers::forwardable(command_headers);
        let carried = |name: &str| forwarded.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut list: Vec<(String, String)> = Vec::new();
        for (name, value) in &self.extra_headers {
            if !carried(name) {
                list.push((name.clone(), value.expose().to_string()));
            }
        }
        list.extend(forwarded.iter().cloned());
        if !carried("accept") {
            list.push(("Accept".to_string(), DEFAULT_ACCEPT.to_string()));
        }
        list
    }

    /// Reads an event stream until the message answering `id`, forwarding notifications.
    fn read_stream(
        &self,
        mut resp: Response<ureq::Body>,
        id: &Value,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
    ) -> Outcome {
        let status = resp.status().as_u16();
        let resp_headers = returnable(&resp);
        let body = resp.body_mut().as_reader();
        let mut events = SseReader::new(BufReader::new(body), MAX_RESPONSE_BODY);
        loop {
            let event = match events.next_event() {
                Ok(Some(event)) => event,
                Ok(None) if expired(deadline) => return Outcome::Expired,
                Ok(None) => {
                    let failure = Failure::new(Source::TransportClosed, "eof");
                    return Outcome::Reply(Reply::failure(&failure, id));
                }
                Err(_) if expired(deadline) => return Outcome::Expired,
                Err(e) => {
                    let failure = if e.kind() == std::io::ErrorKind::InvalidData {
                        Failure::new(Source::Protocol, "response_body_too_large")
                    } else {
                        Failure::from_io(&e)
                    };
                    return Outcome::Reply(Reply::failure(&failure, id));
                }
            };
            if !event.is_message() || event.data.trim().is_empty() {
                continue;
            }
            let Ok(raw) = RawValue::from_string(event.data) else {
                log::warn!("mcp server sent an event that is not JSON; skipped");
                continue;
            };
            let Some(shape) = RpcShape::of(raw.get()) else {
                log::warn!("mcp server sent an event that is not a JSON-RPC object; skipped");
                continue;
            };
            if shape.is_notification() {
                on_notify(raw, &resp_headers);
            } else if shape.is_call()
                && server_requests::is_on()
                && host_reads_events(command_headers)
            {
                let id = shape.id.clone().unwrap_or(Value::Null);
                log::info!(
                    "mcp server sent a {} request; forwarded to the host",
                    shape.method.as_deref().unwrap_or("")
                );
                let session = server_requests::session_in(command_headers);
                on_notify(self.asked.tunnel(&raw, &id, session), &resp_headers);
            } else if shape.is_call() {
                self.refuse_server_request(&shape, command_headers, deadline);
            } else if shape.id.as_ref() == Some(id) {
                return Outcome::Reply(Reply::upstream(raw, resp_headers, status));
            } else {
                log::debug!("mcp server sent a response for another id on this stream; skipped");
            }
        }
    }

    /// A server→client request (sampling, elicitation, roots) cannot reach the connector through
    /// the tunnel; tell the server so, and keep waiting for the real answer.
    fn refuse_server_request(
        &self,
        shape: &RpcShape,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
    ) {
        let method = shape.method.as_deref().unwrap_or("");
        log::info!("mcp server sent a {method} request; answered 'not supported through tunnel'");
        let reply = server_requests::refusal(shape.id.as_ref().unwrap_or(&Value::Null));
        let timeout = budget(deadline).min(SERVER_REQUEST_REPLY_TIMEOUT);
        let req = self.with_headers(self.agent.post(&self.url), command_headers);
        let result = http_client::with_timeout(req, timeout)
            .header("Content-Type", "application/json")
            .send(reply.to_string().as_str());
        match result {
            Ok(resp) => drain(resp),
            Err(e) => log::debug!(
                "reply to server request failed: {}",
                Failure::from_ureq(&e).source.as_str()
            ),
        }
    }
}

/// Whether the host's request accepts an event stream: only then does the relay show it what
/// the call's stream carries, a server request included (else it is refused).
fn host_reads_events(command_headers: &[(String, String)]) -> bool {
    command_headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("accept") && v.to_ascii_lowercase().contains("text/event-stream")
    })
}

/// The answer to a request that did not come as an event stream.
fn read_json_answer(
    mut resp: Response<ureq::Body>,
    status: u16,
    resp_headers: BTreeMap<String, Vec<String>>,
    id: &Value,
) -> Outcome {
    let is_json = content_type(&resp).ends_with("json");
    let mut body = Vec::new();
    let read = resp
        .body_mut()
        .as_reader()
        .take(MAX_RESPONSE_BODY as u64 + 1)
        .read_to_end(&mut body);
    if let Err(e) = read {
        return Outcome::Reply(Reply::failure(&Failure::from_io(&e), id));
    }
    let failure = if status >= 400 {
        if let Some(raw) = passthrough_error(&body, id) {
            return Outcome::Reply(Reply::upstream(raw, resp_headers, status));
        }
        // The raw body never crosses, but headers such as WWW-Authenticate still do.
        let mut reply = Reply::failure(&Failure::target_http(status), id);
        for (name, values) in resp_headers {
            reply.resp_headers.entry(name).or_insert(values);
        }
        return Outcome::Reply(reply);
    } else if !(200..300).contains(&status) {
        Failure::new(Source::Protocol, "http_status")
    } else if body.len() > MAX_RESPONSE_BODY {
        Failure::new(Source::Protocol, "response_body_too_large")
    } else if body.iter().all(u8::is_ascii_whitespace) {
        Failure::new(Source::Protocol, "response_body_missing")
    } else {
        match serde_json::from_slice::<Box<RawValue>>(&body) {
            Ok(raw) if raw.get().starts_with('{') => {
                return Outcome::Reply(Reply::upstream(raw, resp_headers, status));
            }
            _ if is_json => Failure::new(Source::Protocol, "malformed_json"),
            _ => Failure::new(Source::Protocol, "non_protocol_response"),
        }
    };
    Outcome::Reply(Reply::failure(&failure, id))
}

/// The body, untouched, when it is a valid JSON-RPC error for `id` that may pass through:
/// `jsonrpc` "2.0", the same id (or `null`, which servers use when they could not tie the error
/// to a request, e.g. an unknown session), an integer `error.code` and string `error.message`, no `result`
/// or `method`, at most [`MAX_PASSTHROUGH_ERROR`] bytes.
fn passthrough_error(body: &[u8], id: &Value) -> Option<Box<RawValue>> {
    if body.len() > MAX_PASSTHROUGH_ERROR {
        return None;
    }
    let raw: Box<RawValue> = serde_json::from_slice(body).ok()?;
    let Value::Object(map) = serde_json::from_str::<Value>(raw.get()).ok()? else {
        return None;
    };
    let error = map.get("error")?;
    let valid = map.get("jsonrpc") == Some(&Value::from("2.0"))
        && (map.get("id") == Some(id) || map.get("id") == Some(&Value::Null))
        && error.get("code").is_some_and(|c| c.is_i64() || c.is_u64())
        && error.get("message").is_some_and(Value::is_string)
        && !map.contains_key("result")
        && !map.contains_key("method");
    valid.then_some(raw)
}

fn ack(resp_code: u16, resp_headers: BTreeMap<String, Vec<String>>) -> Reply {
    Reply {
        resp_json: None,
        resp_headers,
        resp_code,
        resp_type: RespType::NotifyAck,
        failure: None,
    }
}

/// Time left for a call: until the deadline, or [`NO_DEADLINE_TIMEOUT`] without one.
fn budget(deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(d) => d.saturating_duration_since(Instant::now()),
        None => NO_DEADLINE_TIMEOUT,
    }
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// The media type of a response, lowercased, without parameters.
fn content_type(resp: &Response<ureq::Body>) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn returnable(resp: &Response<ureq::Body>) -> BTreeMap<String, Vec<String>> {
    let pairs: Vec<(&str, &str)> = resp
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    headers::returnable(pairs.into_iter())
}

/// Reads (a bounded amount of) an unused body so the connection can be reused.
fn drain(mut resp: Response<ureq::Body>) {
    let _ = std::io::copy(
        &mut resp.body_mut().as_reader().take(MAX_DRAIN),
        &mut std::io::sink(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn passthrough_requires_a_well_formed_error_for_our_id() {
        let ok = br#"{"id":7,"jsonrpc":"2.0","error":{"message":"nope","code":-32004,"data":{"z":1,"a":1.50}}}"#;
        assert_eq!(
            passthrough_error(ok, &json!(7)).unwrap().get().as_bytes(),
            ok.as_slice()
        );
        assert!(passthrough_error(ok, &json!(8)).is_none());
        let null_id =
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}"#;
        assert!(passthrough_error(null_id, &json!(8)).is_some());
        assert!(
            passthrough_error(
                br#"{"jsonrpc":"2.0","id":7,"error":{"code":"x","message":"m"}}"#,
                &json!(7)
            )
            .is_none()
        );
        assert!(
            passthrough_error(
                br#"{"jsonrpc":"2.0","id":7,"result":{},"error":{"code":1,"message":"m"}}"#,
                &json!(7)
            )
            .is_none()
        );
        assert!(passthrough_error(b"<html>", &json!(7)).is_none());
    }
}
