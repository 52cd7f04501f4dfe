//! Where the relay's requests are counted ([`super::metrics`]) and written to the audit log
//! ([`super::audit`]): around the connector and OAuth routes, around polls, and at admission,
//! whose refusals never reach a handler.
//!
//! An event stream's answer is followed to its end: its latency, metrics and `stream_close`
//! audit line come when the stream body finishes, not when its head is sent.

use std::sync::Arc;

use super::Relay;
use super::audit::{AuditLog, Call, Head};
use super::mcp_error;
use super::metrics::{self, InProgress, Kind, RelayMetrics, TunnelGauges, UNKNOWN_TUNNEL};
use crate::http_server::{Body, ChunkWriter, Request, RequestHead, Response};
use crate::wire;

/// The relay's own codes that mean "refused for its credentials".
fn is_auth_refusal(outcome: &str) -> bool {
    outcome == mcp_error::INVALID_CONNECTOR_KEY.code
        || outcome == mcp_error::CLIENT_CERTIFICATE_REQUIRED.code
}

impl Relay {
    /// Whether SIGTERM started the drain.
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts the drain: new connector requests are refused, held polls return at once.
    pub fn start_drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let hubs = self
            .hubs
            .lock()
            .map(|h| h.values().cloned().collect::<Vec<_>>());
        hubs.unwrap_or_default().iter().for_each(|h| h.wake_polls());
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<RelayMetrics> {
        &self.metrics
    }

    /// Writes audit lines from now on.
    pub fn set_audit(&self, audit: AuditLog) {
        let _ = self.audit.set(Arc::new(audit));
    }

    /// SIGHUP: the audit file is reopened (after logrotate moved it).
    pub fn reopen_audit(&self) {
        if let Some(a) = self.audit.get() {
            a.reopen();
        }
    }

    /// The exposition text of `/metrics`.
    pub fn render_metrics(&self) -> String {
        let records = {
            let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
            registry.tunnels.clone()
        };
        let tunnels: Vec<TunnelGauges> = records
            .iter()
            .map(|r| {
                let hub = self.hub(&r.id);
                TunnelGauges {
                    name: r.name.clone(),
                    queued: hub.queued_len(),
                    capacity: self.cfg.queue_capacity,
                    instances: hub.live_instances(),
                    connected: hub.connected(),
                }
            })
            .collect();
        let store = if self.store.is_some() {
            "redis"
        } else {
            "memory"
        };
        self.metrics.render(&tunnels, store)
    }

    /// The call of a request to `/v1/mcp/{id}…` or its OAuth metadata, with what the tunnels
    /// file says of the tunnel.
    fn call_of(&self, req: &Head<'_>, event: &'static str, segments: &[&str]) -> Call {
        let id = segments.first().copied().unwrap_or_default();
        let mut call = Call::of(req, event, id);
        if let Some(record) = self.known(id) {
            call.tunnel = Some(record.name.clone());
            call.auth = Some(record.connector_auth.as_str());
        }
        call.channel = match segments.get(1).copied() {
            None | Some("") => Some(wire::DEFAULT_CHANNEL.to_string()),
            Some(c) => wire::canonical_channel(Some(c)),
        };
        call
    }

    /// The connector route, counted and audited; refused at once while draining.
    pub(super) fn observed_mcp(&self, segments: &[&str], req: Request) -> Response {
        // A stream's lines are named in `finish`, once it is known to be one.
        let event = match req.method.as_str() {
            "DELETE" => "session_termination",
            _ => "connector_request",
        };
        let call = self.call_of(&Head::of(&req), event, segments);
        if self.draining() {
            let resp = mcp_error::RELAY_DRAINING
                .response(None)
                .with_header("Connection", "close");
            return self.finish(call, resp, None);
        }
        let held = self.metrics.enter(Kind::Connector, None);
        let resp = match self.handle_mcp(segments, req, &call.served_by) {
            Ok(resp) => resp,
            Err(e) => e.response(None),
        };
        self.finish(call, resp, Some(held))
    }

    /// The OAuth metadata route, audited as `oauth_discovery`.
    pub(super) fn observed_oauth(&self, segments: &[&str], req: Request) -> Response {
        let mut call = self.call_of(&Head::of(&req), "oauth_discovery", segments);
        call.channel = call.channel.filter(|_| segments.len() > 1);
        let _other = self.metrics.enter(Kind::Other, None);
        let resp = self.protected_resource(segments, req);
        let outcome = metrics::outcome(&resp);
        let line = call.line(
            resp.status,
            outcome,
            call.started.elapsed(),
            body_len(&resp),
        );
        self.audit_line(line);
        resp
    }

    /// Admission with its refusals counted: a refused connector request is a connector
    /// request too (with its audit line), and refused keys count as auth failures.
    pub fn admit_observed(&self, head: &RequestHead<'_>) -> Result<usize, Response> {
        let refused = match self.admit(head) {
            Ok(limit) => return Ok(limit),
            Err(refused) => refused,
        };
        let path = head.path();
        if super::is_control_plane(path) {
            if matches!(refused.status, 401 | 403) {
                self.metrics.auth_failure("control_plane");
            }
        } else if super::is_mcp_endpoint(path) {
            let segments: Vec<&str> = path
                .trim_start_matches("/v1/mcp")
                .trim_start_matches('/')
                .split('/')
                .collect();
            let req = Head {
                method: head.method,
                mcp_name: head.header("Mcp-Name"),
                body: &[],
                peer: head.peer,
            };
            let event = match head.method {
                "DELETE" => "session_termination",
                _ => "connector_request",
            };
            let call = self.call_of(&req, event, &segments);
            // The refusal is sent as is; only its accounting is done here.
            let accounted = Response::new(refused.status, body_of(&refused));
            drop(self.finish(call, accounted, None));
        }
        Err(refused)
    }

    /// Counts and audits a connector answer; an event stream is followed to its end.
    fn finish(&self, call: Call, resp: Response, held: Option<InProgress>) -> Response {
        let outcome = metrics::outcome(&resp);
        let tunnel = call.tunnel.clone().unwrap_or_else(|| UNKNOWN_TUNNEL.into());
        let method = metrics::method_class(
            &call.http_method,
            call.rpc_method.as_deref(),
            call.is_response,
        );
        if is_auth_refusal(outcome) {
            self.metrics.auth_failure("connector");
        }
        let Body::Stream(_) = &resp.body else {
            self.metrics
                .call(&tunnel, method, outcome, call.started.elapsed());
            let line = call.line(
                resp.status,
                outcome,
                call.started.elapsed(),
                body_len(&resp),
            );
            self.audit_line(line);
            return resp;
        };
        // A long-lived stream (a session's GET stream, subscriptions/listen) is audited when
        // it opens and when it closes; an answer streamed as events only when it ends.
        let long_lived = method == "stream" || method == "subscriptions/listen";
        let mut call = call;
        let guard = if long_lived {
            call.event = "stream_open";
            self.audit_line(call.line(resp.status, outcome, call.started.elapsed(), None));
            call.event = "stream_close";
            drop(held);
            Some(self.metrics.enter(Kind::Stream, None))
        } else {
            held
        };
        let metrics = Arc::clone(&self.metrics);
        let audit = self.audit.get().cloned();
        let board = Arc::clone(&self.status);
        let status = resp.status;
        let Response {
            status: _,
            headers,
            body,
        } = resp;
        let Body::Stream(inner) = body else {
            unreachable!("matched above")
        };
        let wrapped = Box::new(move |w: &mut ChunkWriter<'_>| {
            let result = inner(w);
            let took = call.started.elapsed();
            let end = if result.is_ok() {
                outcome
            } else {
                "stream_broken"
            };
            metrics.call(&tunnel, method, outcome, took);
            let line = call.line(status, end, took, None);
            if let Some(a) = &audit {
                a.write(&line);
            }
            board.record(line);
            drop(guard);
            result
        });
        Response::stream(status, headers, wrapped)
    }

    /// An audit record: to the status page's live view, and to the audit log when on.
    fn audit_line(&self, line: serde_json::Value) {
        if let Some(a) = self.audit.get() {
            a.write(&line);
        }
        self.status.record(line);
    }

    /// A long-poll, counted while held; while draining it returns at once.
    pub(super) fn observed_poll(
        &self,
        record: &super::tunnels::TunnelRecord,
        req: &Request,
    ) -> Response {
        let _held = self.metrics.enter(Kind::LongPoll, Some(&record.name));
        // The status page learns of an instance when its poll arrives, not when it returns; only
        // an authorised poll counts (the key is checked again, by `poll`, for its answer).
        if super::bearer(req).is_some_and(|k| record.runtime_key_matches(k)) {
            self.status.saw_poll(
                &record.name,
                req.header("X-Tunnel-Client-Instance-Id")
                    .unwrap_or("anonymous"),
                req.header(wire::SERVER_INFO_HEADER),
            );
        }
        // A poll held when the drain starts returns at once, empty; one that arrives during the
        // drain still takes what is queued, without waiting, so held requests can finish.
        let late = self.draining();
        let wait = if late {
            std::time::Duration::ZERO
        } else {
            self.cfg.poll_max_wait
        };
        let hub = self.hub(&record.id);
        let resp = super::control::poll(record, &hub, req, wait, &|| !late && self.draining());
        if matches!(resp.status, 401 | 403) {
            self.metrics.auth_failure("control_plane");
        }
        resp
    }
}

/// A full body's length; `None` for a stream.
fn body_len(resp: &Response) -> Option<usize> {
    match &resp.body {
        Body::Full(b) => Some(b.len()),
        Body::Stream(_) => None,
    }
}

fn body_of(resp: &Response) -> Vec<u8> {
    match &resp.body {
        Body::Full(b) => b.clone(),
        Body::Stream(_) => Vec::new(),
    }
}
