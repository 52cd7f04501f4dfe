//! A worker: takes one queued job at a time and runs it to its end. Every command ends with
//! exactly one terminal POST or a documented drop, in three steps ([`Tunnel::run`]):
//!
//! - **admit** turns away what cannot run, each with its ending: a malformed command (answered
//!   400, or only logged when it names no request to answer), an unknown `command_type` (logged),
//!   a `response_timeout` that passed while it was queued (logged, nothing posted), a channel we do
//!   not serve (answered 400);
//! - **call** hands the rest to its channel's transport (HTTP or stdio) with the deadline,
//!   posting the answer's notifications as they arrive;
//! - **settle** ([`super::settle`]) carries out the ending: its log line, its one terminal POST if
//!   it has one, its metrics.
//!
//! A run is contained ([`crate::contain`]): if it panics before it was settled, the command is
//! answered with a `-32603` (`client_internal`/`panic`) and the worker takes the next job.

use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;

use crate::contain::{self, Settled};
use crate::control_plane::Polled;
use crate::failure::{Failure, Source};
use crate::mcp::oauth_discovery::{self, NotFound};
use crate::mcp::{Headers, Outcome, Reply, Transport};
use crate::secret::Secret;
use crate::wire::{self, BadCommand, Command, CommandKind, RpcShape};

use super::{LOG_TARGET, Tunnel};

/// One queued command.
pub(super) struct Job {
    pub(super) polled: Polled,
    /// When the poll answer carrying it arrived.
    pub(super) received: Instant,
}

/// Where a command's answers go: everything a POST for it needs besides the reply.
pub(super) struct Addressee {
    pub(super) request_id: String,
    /// The channel the answer names (also its log field and metric label, unless its ending
    /// says otherwise).
    pub(super) channel: String,
    pub(super) shard_token: Secret,
    /// The command's `X-Request-Id`, echoed as `X-Client-Request-Id`.
    pub(super) client_request_id: Option<String>,
    pub(super) deadline: Option<Instant>,
}

/// How a command ends: decided by admit or call, carried out by [`Tunnel::settle`].
pub(super) enum Ending {
    /// No usable `request_id` + `shard_token`: nothing can be answered, only logged.
    Unanswerable { reason: String },
    /// A `command_type` this client does not know: skipped with a log line.
    UnknownType { request_id: String, kind: String },
    /// Identifiable but unusable: answered 400 `invalid tunnel command`.
    Malformed {
        to: Addressee,
        raw_channel: Option<String>,
        reason: String,
    },
    /// Its deadline passed before a worker took it: nothing posted, the MCP server untouched.
    ExpiredInQueue {
        request_id: String,
        /// The raw channel (or `main`), as logged and counted.
        channel: String,
        kind: &'static str,
        from_created_at: bool,
    },
    /// An `oauth_discovery` not for an HTTP `main`: answered 400 `unsupported_channel`.
    DiscoveryUnsupported { to: Addressee },
    /// Names no channel of ours: answered 400 `unsupported channel`.
    UnknownChannel {
        to: Addressee,
        kind: &'static str,
        /// The JSON-RPC id to answer (null when the body has none).
        id: Value,
    },
    /// The caller cancelled it during the MCP call: nothing posted.
    Cancelled {
        to: Addressee,
        kind: &'static str,
        took: Duration,
    },
    /// Its deadline passed during the MCP call: nothing posted.
    ExpiredInCall {
        to: Addressee,
        kind: &'static str,
        took: Duration,
    },
    /// The MCP call's answer (or the failure we synthesized for it): posted.
    Replied {
        to: Addressee,
        kind: &'static str,
        took: Duration,
        /// When its poll answer arrived (for the command latency).
        received: Instant,
        reply: Reply,
    },
    /// Its run panicked before it was settled: answered `-32603`.
    Panicked(PanicAnswer),
}

/// What a command asks of its MCP server, once admitted.
enum Request {
    JsonRpc(Box<RawValue>),
    SessionTermination,
    OAuthDiscovery,
}

impl Request {
    /// The command type as metrics label it.
    fn label(&self) -> &'static str {
        match self {
            Request::JsonRpc(_) => wire::COMMAND_JSONRPC,
            Request::SessionTermination => wire::COMMAND_SESSION_TERMINATION,
            Request::OAuthDiscovery => wire::COMMAND_OAUTH_DISCOVERY,
        }
    }
}

/// What admit decided.
enum Admission<'a> {
    /// Run it on its channel.
    Run(Admitted<'a>),
    /// It ends without an MCP call.
    TurnedAway(Ending),
}

/// A command that may run: its channel's transport and what to ask of it.
struct Admitted<'a> {
    to: Addressee,
    transport: &'a Transport,
    request: Request,
    headers: Vec<(String, String)>,
    received: Instant,
}

impl Tunnel {
    pub(super) fn work_loop(&self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        state.running += 1;
                        break job;
                    }
                    state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            self.run(job);
            let mut state = self.lock();
            state.running -= 1;
            self.changed_if_watched(state);
        }
    }

    /// Runs one job to its end. Every command ends with exactly one terminal POST or a documented
    /// drop: admit turns away what cannot run, with its ending; call runs the rest on its channel
    /// and says how that ended; settle carries out the ending, posting the one terminal answer
    /// if it has one. `settled` is marked once that answer is posted or deliberately withheld, so
    /// that a run which panics is answered (`-32603`, `client_internal`/`panic`) only when it had
    /// not been yet.
    fn run(&self, job: Job) {
        let if_it_panics = PanicAnswer::for_job(&job);
        let settled = Settled::default();
        let finished = contain::contained(|| {
            let ending = match self.admit(job) {
                Admission::Run(admitted) => self.call(admitted),
                Admission::TurnedAway(ending) => ending,
            };
            self.settle(ending, &settled);
        });
        if finished.is_none()
            && !settled.is_marked()
            && let Some(answer) = if_it_panics
        {
            // Contained too: a panic while answering must not take the worker with it.
            contain::contained(|| self.settle(Ending::Panicked(answer), &settled));
        }
    }

    /// Lets a command through to its channel, or says how it ends without one.
    fn admit(&self, job: Job) -> Admission<'_> {
        let Job { polled, received } = job;
        let command = match polled.command {
            Ok(command) => command,
            Err(BadCommand::Unanswerable(reason)) => {
                return Admission::TurnedAway(Ending::Unanswerable { reason });
            }
            Err(BadCommand::Invalid {
                request_id,
                shard_token,
                raw_channel,
                reason,
            }) => {
                let to = Addressee {
                    request_id,
                    channel: wire::canonical_channel(raw_channel.as_deref())
                        .unwrap_or_else(|| wire::DEFAULT_CHANNEL.to_string()),
                    shard_token,
                    client_request_id: None,
                    deadline: None,
                };
                return Admission::TurnedAway(Ending::Malformed {
                    to,
                    raw_channel,
                    reason,
                });
            }
        };
        let client_request_id = command.header("X-Request-Id").map(str::to_string);
        let Command {
            request_id,
            shard_token,
            raw_channel,
            headers,
            kind,
            ..
        } = command;
        let request = match kind {
            // A host's answer to a server request: a message to the server like any other.
            CommandKind::JsonRpc(message) | CommandKind::ServerResponse(message) => {
                Request::JsonRpc(message)
            }
            CommandKind::SessionTermination => Request::SessionTermination,
            CommandKind::OAuthDiscovery => Request::OAuthDiscovery,
            CommandKind::Unknown(kind) => {
                return Admission::TurnedAway(Ending::UnknownType { request_id, kind });
            }
            // The poll thread carries cancels out itself and starts streams on their own
            // threads (`enqueue`); none reaches a worker.
            CommandKind::Cancel { .. } => {
                let kind = wire::COMMAND_CANCEL.to_string();
                return Admission::TurnedAway(Ending::UnknownType { request_id, kind });
            }
            CommandKind::Stream(_) => {
                let kind = wire::COMMAND_STREAM.to_string();
                return Admission::TurnedAway(Ending::UnknownType { request_id, kind });
            }
        };
        if polled.deadline.is_some_and(|d| Instant::now() >= d) {
            return Admission::TurnedAway(Ending::ExpiredInQueue {
                request_id,
                channel: raw_channel.unwrap_or_else(|| wire::DEFAULT_CHANNEL.to_string()),
                kind: request.label(),
                from_created_at: polled.deadline_from_created_at,
            });
        }
        let mut to = Addressee {
            request_id,
            channel: String::new(),
            shard_token,
            client_request_id,
            deadline: polled.deadline,
        };
        let channel = wire::canonical_channel(raw_channel.as_deref())
            .and_then(|c| self.channels.get_key_value(&c));
        // Discovery is for an HTTP main only (the official client's rule).
        if matches!(request, Request::OAuthDiscovery)
            && !matches!(channel, Some((c, Transport::Http(_))) if c == wire::DEFAULT_CHANNEL)
        {
            to.channel = raw_channel.unwrap_or_else(|| wire::DEFAULT_CHANNEL.to_string());
            return Admission::TurnedAway(Ending::DiscoveryUnsupported { to });
        }
        let Some((channel, transport)) = channel else {
            to.channel = raw_channel.unwrap_or_default();
            let id = match &request {
                Request::JsonRpc(raw) => RpcShape::of(raw.get()).and_then(|s| s.id),
                Request::SessionTermination | Request::OAuthDiscovery => None,
            };
            return Admission::TurnedAway(Ending::UnknownChannel {
                to,
                kind: request.label(),
                id: id.unwrap_or(Value::Null),
            });
        };
        to.channel = channel.clone();
        Admission::Run(Admitted {
            to,
            transport,
            request,
            headers,
            received,
        })
    }

    /// Runs an admitted command on its channel's transport, within its deadline. Notifications
    /// of the answer are posted as they arrive; after one is lost, later ones are skipped (a gap
    /// would break their order).
    fn call(&self, admitted: Admitted<'_>) -> Ending {
        let Admitted {
            to,
            transport,
            request,
            headers,
            received,
        } = admitted;
        let kind = request.label();
        let started = Instant::now();
        let outcome = match &request {
            Request::JsonRpc(message) => {
                // Only a request can be cancelled: a notification gets no answer to wait for.
                let cancel = if self.cancellation_on()
                    && RpcShape::of(message.get()).is_some_and(|s| !s.is_notification())
                {
                    self.track_call(&to.request_id, &to.channel, message, &headers)
                } else {
                    None
                };
                let mut notifying = true;
                let mut on_notify = |notification: Box<RawValue>, answer_headers: &Headers| {
                    // Nothing more is posted for a cancelled call.
                    if notifying && !cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                        notifying = self.notify(&to, notification, answer_headers);
                    }
                };
                let outcome = match &cancel {
                    Some(flag) => transport.call_cancellable(
                        message,
                        &headers,
                        to.deadline,
                        &mut on_notify,
                        flag,
                    ),
                    None => transport.call(message, &headers, to.deadline, &mut on_notify),
                };
                if cancel.is_some() {
                    self.untrack_call(&to.request_id);
                }
                outcome
            }
            Request::SessionTermination => transport.terminate_session(&headers, to.deadline),
            Request::OAuthDiscovery => self.discover(transport, to.deadline),
        };
        let took = started.elapsed();
        match outcome {
            Outcome::Cancelled => Ending::Cancelled { to, kind, took },
            Outcome::Expired => Ending::ExpiredInCall { to, kind, took },
            Outcome::Reply(reply) => Ending::Replied {
                to,
                kind,
                took,
                received,
                reply,
            },
        }
    }
}

impl Tunnel {
    /// An `oauth_discovery` on `main` (admit made sure it is HTTP). It ends a little before the
    /// command's deadline, so that a failure can still be answered; after it, nothing is posted.
    fn discover(&self, transport: &Transport, deadline: Option<Instant>) -> Outcome {
        let Transport::Http(http) = transport else {
            return Outcome::Reply(oauth_discovery::unsupported_channel(wire::DEFAULT_CHANNEL));
        };
        let now = Instant::now();
        let until = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(now);
                now + left.saturating_sub((left / 10).min(Duration::from_millis(500)))
            }
            None => now + oauth_discovery::OVERALL_TIMEOUT,
        };
        let result = http.oauth_discovery(&self.discovery).run(until);
        match &result {
            Ok(found) => log::info!(
                target: LOG_TARGET,
                "oauth discovery: metadata found at {} (HTTP {})",
                found.prmd_url,
                found.status
            ),
            Err(not_found) => log::warn!(
                target: LOG_TARGET,
                "oauth discovery: {}; answering 502",
                not_found.describe()
            ),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Outcome::Expired;
        }
        Outcome::Reply(oauth_discovery::reply(result))
    }
}

/// What a worker needs to answer a command whose execution panicked, taken before it runs.
pub(super) struct PanicAnswer {
    pub(super) to: Addressee,
    /// The JSON-RPC id to answer (null when the body has none).
    id: Value,
    /// The command type ([`CommandKind::name`]), for its metric; an `oauth_discovery` is
    /// answered with its own failure shape.
    kind: &'static str,
}

impl PanicAnswer {
    /// `None` for a malformed command or an unknown type: their endings are fixed, with nothing
    /// to go wrong, and an unknown type is never answered.
    fn for_job(job: &Job) -> Option<PanicAnswer> {
        let Ok(command) = &job.polled.command else {
            return None;
        };
        let id = match &command.kind {
            CommandKind::JsonRpc(raw) => RpcShape::of(raw.get()).and_then(|s| s.id),
            CommandKind::SessionTermination
            | CommandKind::OAuthDiscovery
            | CommandKind::ServerResponse(_) => None,
            CommandKind::Unknown(_) | CommandKind::Cancel { .. } | CommandKind::Stream(_) => {
                return None;
            }
        };
        let channel = wire::canonical_channel(command.raw_channel.as_deref())
            .or_else(|| command.raw_channel.clone())
            .unwrap_or_else(|| wire::DEFAULT_CHANNEL.to_string());
        Some(PanicAnswer {
            to: Addressee {
                request_id: command.request_id.clone(),
                channel,
                shard_token: command.shard_token.clone(),
                client_request_id: command.header("X-Request-Id").map(str::to_string),
                deadline: job.polled.deadline,
            },
            id: id.unwrap_or(Value::Null),
            kind: command.kind.name(),
        })
    }

    pub(super) fn kind(&self) -> &'static str {
        self.kind
    }

    /// The `-32603` it answers with: `client_internal`/`panic`, the caller's id unchanged.
    pub(super) fn reply(&self) -> Reply {
        if self.kind == wire::COMMAND_OAUTH_DISCOVERY {
            let why = NotFound::Failed("internal error".into());
            return oauth_discovery::reply(Err(why));
        }
        Reply::failure(&Failure::new(Source::ClientInternal, "panic"), &self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(command: &str) -> Job {
        let raw = RawValue::from_string(command.to_string()).unwrap();
        Job {
            polled: Polled {
                command: Ok(Command::from_json(&raw).unwrap()),
                deadline: None,
                deadline_from_created_at: false,
            },
            received: Instant::now(),
        }
    }

    #[test]
    fn a_command_that_panicked_is_answered_with_its_exact_id() {
        let job = job(
            r#"{"request_id":"r1","channel":"main","shard_token":"t","type":"jsonrpc","response_timeout":"30s","headers":{"X-Request-Id":["x1"]},"jsonrpc":{"jsonrpc":"2.0","id":18446744073709551617,"method":"tools/call"}}"#,
        );
        let answer = PanicAnswer::for_job(&job).unwrap();
        assert_eq!(
            (answer.to.request_id.as_str(), answer.to.channel.as_str()),
            ("r1", "main")
        );
        assert_eq!(answer.to.client_request_id.as_deref(), Some("x1"));
        let reply = answer.reply();
        let body: Value = serde_json::from_str(reply.resp_json.unwrap().get()).unwrap();
        assert_eq!(body["id"].to_string(), "18446744073709551617");
        assert_eq!(body["error"]["code"], -32603);
        let provenance = &body["error"]["data"]["tunnel_failure"];
        assert_eq!(provenance["source"], "client_internal");
        assert_eq!(provenance["transport_error_kind"], "panic");
    }
}
