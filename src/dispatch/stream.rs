//! Long-lived streams, our extension of the contract ([`crate::wire::FEATURE_STREAMS`]): the
//! relay hands over a `stream` command (a 2025 session's `GET` stream or a 2026-07-28
//! `subscriptions/listen`), and the client holds the stream at the MCP server, forwarding each
//! message as `jsonrpc_notify` as it arrives, until it ends.
//!
//! - **Own threads.** A stream may live for hours, so it never takes a worker or a queue slot:
//!   the poll thread hands it to the `streams` thread, which starts one thread per stream. At
//!   most `--mcp.max-streams` are held at once; one beyond that is answered at once with a
//!   `429` JSON-RPC error (`tunnel_stream_limit`), the MCP server untouched.
//! - **What is posted.** First an "opened" `jsonrpc_notify` without a message (the server's
//!   returnable headers; the relay then opens the host's event stream), then one
//!   `jsonrpc_notify` per message, then the terminal response: listen's completion result, or an
//!   empty `jsonrpc_response` when the server ended the stream. A server that refuses the stream
//!   has its answer posted as the terminal response.
//! - **Ending it.** The relay's `cancel` (the host closed its stream, or `--stream.max-lifetime`
//!   passed) closes the upstream request within [`crate::http_client::CANCEL_CHECK`]; so does a
//!   notification the relay no longer takes (it ended the stream for a host that did not read).
//!   Nothing more is posted then. Streams are not waited for on shutdown.
//! - Only while the control plane's last answer named `streams`: otherwise a `stream` command is
//!   an unknown type ([`crate::control_plane`]), never started.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::Instant;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::contain::{self, Settled};
use crate::control_plane::PostOutcome;
use crate::failure::{Failure, Source};
use crate::http_client::CancelFlag;
use crate::mcp::{Headers, Outcome, Reply};
use crate::wire::{self, CommandKind, RespType, RpcShape, StreamOpen};

use super::cancel::Running;
use super::worker::{Addressee, Ending, Job};
use super::{LOG_TARGET, Tunnel};

/// What metrics and logs call a stream command.
const KIND: &str = wire::COMMAND_STREAM;

impl Tunnel {
    /// The `streams` thread: starts one thread per stream command the poll thread hands over.
    pub(super) fn stream_loop(self: &Arc<Self>, jobs: Receiver<Job>) {
        for job in jobs {
            let me = Arc::clone(self);
            let started = thread::Builder::new()
                .name("stream".into())
                .spawn(move || me.hold_stream(job));
            if let Err(e) = started {
                // The relay answers its host when the stream does not open in time.
                log::error!(target: LOG_TARGET, "cannot start a stream thread: {e}");
            }
        }
    }

    /// Holds one stream to its end (see the module docs).
    fn hold_stream(&self, job: Job) {
        let Job { polled, received } = job;
        let Ok(command) = polled.command else {
            return; // `enqueue` hands over decoded stream commands only
        };
        let client_request_id = command.header("X-Request-Id").map(str::to_string);
        let CommandKind::Stream(open) = command.kind else {
            return;
        };
        let (message, id) = match &open {
            StreamOpen::Listen(m) => (
                Arc::from(m.to_owned()),
                RpcShape::of(m.get()).and_then(|s| s.id),
            ),
            StreamOpen::Get => (Arc::from(empty_object()), None),
        };
        let id = id.unwrap_or(Value::Null);
        let channel = wire::canonical_channel(command.raw_channel.as_deref())
            .and_then(|c| self.channels.get_key_value(&c));
        let mut to = Addressee {
            request_id: command.request_id,
            channel: String::new(),
            shard_token: command.shard_token,
            client_request_id,
            deadline: polled.deadline,
        };
        let settled = Settled::default();
        let Some((channel, transport)) = channel else {
            to.channel = command.raw_channel.unwrap_or_default();
            let ending = Ending::UnknownChannel { to, kind: KIND, id };
            return self.settle(ending, &settled);
        };
        to.channel = channel.clone();
        let held = self.streams_open.fetch_add(1, Ordering::SeqCst);
        if held >= self.max_streams {
            self.streams_open.fetch_sub(1, Ordering::SeqCst);
            log::warn!(
                target: LOG_TARGET,
                "command {}: {held} streams held already (--mcp.max-streams); refused",
                to.request_id
            );
            let reply = Reply::error_json(429, stream_limit_error(&id));
            let ending = Ending::Replied {
                to,
                kind: KIND,
                took: Default::default(),
                received,
                reply,
            };
            return self.settle(ending, &settled);
        }
        let flag = CancelFlag::default();
        let running = Running {
            flag: flag.clone(),
            channel: channel.clone(),
            message,
            headers: command.headers.clone(),
        };
        self.running_calls().insert(to.request_id.clone(), running);
        log::info!(
            target: LOG_TARGET,
            "command {}: holding a {} stream on {channel}",
            to.request_id,
            match open {
                StreamOpen::Get => "GET",
                StreamOpen::Listen(_) => "subscriptions/listen",
            }
        );
        let started = Instant::now();
        let outcome = contain::contained(|| {
            let mut sink = |message: Option<Box<RawValue>>, headers: &Headers| {
                self.forward(&to, message, headers, &flag)
            };
            transport.stream(&open, &command.headers, to.deadline, &mut sink, &flag)
        });
        self.running_calls().remove(&to.request_id);
        self.streams_open.fetch_sub(1, Ordering::SeqCst);
        let took = started.elapsed();
        let ending = match outcome {
            Some(Outcome::Cancelled) => Ending::Cancelled {
                to,
                kind: KIND,
                took,
            },
            Some(Outcome::Expired) => Ending::ExpiredInCall {
                to,
                kind: KIND,
                took,
            },
            Some(Outcome::Reply(reply)) => Ending::Replied {
                to,
                kind: KIND,
                took,
                received,
                reply,
            },
            None => Ending::Replied {
                to,
                kind: KIND,
                took,
                received,
                reply: Reply::failure(&Failure::new(Source::ClientInternal, "panic"), &id),
            },
        };
        self.settle(ending, &settled);
    }

    /// Posts one stream message (`None`: the "opened" marker); `false` ends the stream.
    fn forward(
        &self,
        to: &Addressee,
        message: Option<Box<RawValue>>,
        headers: &Headers,
        flag: &CancelFlag,
    ) -> bool {
        if flag.is_cancelled() {
            return false;
        }
        let reply = Reply {
            resp_json: message,
            resp_headers: headers.clone(),
            resp_code: 200,
            resp_type: RespType::JsonrpcNotify,
            failure: None,
        };
        let delivery = self.post(to, reply);
        if delivery == PostOutcome::Accepted {
            return true;
        }
        log::info!(
            target: LOG_TARGET,
            "command {}: the relay no longer takes this stream ({delivery:?}); closing it",
            to.request_id
        );
        // As if cancelled: the flag ends an HTTP stream, the notice a stdio child's listen.
        self.cancel(&to.request_id, Some("not_taken"));
        false
    }
}

/// `{}`: what a GET stream's cancellation names (no request, so no `notifications/cancelled`).
fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_string()).expect("valid JSON")
}

/// The JSON-RPC error for a stream beyond `--mcp.max-streams`.
fn stream_limit_error(id: &Value) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": -32099,
            "message": "too many open event streams at the tunnel client (--mcp.max-streams)",
            "data": { "code": "tunnel_stream_limit" },
        },
    })
    .to_string()
}
