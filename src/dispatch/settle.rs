//! How a command ends, in one place: [`Tunnel::settle`] logs the command's line, posts its one
//! terminal answer when its ending has one, marks it settled and counts it. Every response POST,
//! notifications included ([`Tunnel::notify`]), is built and sent by [`Tunnel::post`], which also
//! counts its retries.
//!
//! Metric labels stay bounded: a channel we do not serve is counted as `(unknown)`, and a command
//! that was never identifiable is not counted at all.

use serde_json::Value;
use serde_json::value::RawValue;

use crate::contain::Settled;
use crate::control_plane::PostOutcome;
use crate::failure::{self, Failure, Source};
use crate::mcp::{Headers, Reply, oauth_discovery};
use crate::ops::metrics::CommandOutcome;
use crate::wire::{RespType, ResponsePayload};

use super::worker::{Addressee, Ending};
use super::{LOG_TARGET, Tunnel};

impl Tunnel {
    /// Carries out a command's ending; `settled` is marked once its answer is posted or
    /// deliberately withheld.
    pub(super) fn settle(&self, ending: Ending, settled: &Settled) {
        match ending {
            Ending::Unanswerable { reason } => {
                settled.mark();
                log::warn!(
                    target: LOG_TARGET,
                    "skipping a command that cannot be answered: {reason}"
                );
            }
            Ending::UnknownType { request_id, kind } => {
                settled.mark();
                log::warn!(
                    target: LOG_TARGET,
                    "skipping command {request_id}: unknown command_type {kind:?}"
                );
            }
            Ending::Malformed {
                to,
                raw_channel,
                reason,
            } => {
                log::warn!(
                    target: LOG_TARGET,
                    request_id = to.request_id.as_str(),
                    channel = raw_channel.as_deref().unwrap_or_default(),
                    status = 400;
                    "command {} is malformed ({reason}); answering 400",
                    to.request_id
                );
                let body = failure::error_response(&Value::Null, "invalid tunnel command", None);
                self.answer(&to, Reply::error_json(400, body), settled);
                self.metrics
                    .command("invalid", &to.channel, CommandOutcome::Rejected);
            }
            Ending::ExpiredInQueue {
                request_id,
                channel,
                kind,
                from_created_at,
            } => {
                settled.mark();
                let anchor = if from_created_at {
                    "counted from its created_at (a stall, or clocks more than 2 s apart)"
                } else {
                    "counted from the poll answer"
                };
                log::info!(
                    target: LOG_TARGET,
                    request_id = request_id.as_str(), channel = channel.as_str();
                    "dropped command {request_id}: its response_timeout, {anchor}, had passed before dispatch"
                );
                self.metrics
                    .command(kind, &channel, CommandOutcome::Expired);
            }
            Ending::DiscoveryUnsupported { to } => {
                log::warn!(
                    target: LOG_TARGET,
                    request_id = to.request_id.as_str(),
                    channel = to.channel.as_str(),
                    status = 400;
                    "command {}: oauth_discovery is answered only on an HTTP main; answering 400",
                    to.request_id
                );
                let reply = oauth_discovery::unsupported_channel(&to.channel);
                self.answer(&to, reply, settled);
                let channel = if self.channels.contains_key(&to.channel) {
                    to.channel.as_str()
                } else {
                    "(unknown)"
                };
                self.metrics.command(
                    crate::wire::COMMAND_OAUTH_DISCOVERY,
                    channel,
                    CommandOutcome::Rejected,
                );
            }
            Ending::UnknownChannel { to, kind, id } => {
                log::warn!(
                    target: LOG_TARGET,
                    request_id = to.request_id.as_str(),
                    channel = to.channel.as_str(),
                    status = 400;
                    "command {}: unsupported channel",
                    to.request_id
                );
                let body = failure::error_response(&id, "unsupported channel", None);
                self.answer(&to, Reply::error_json(400, body), settled);
                // Unknown names stay out of the labels (unbounded cardinality).
                self.metrics
                    .command(kind, "(unknown)", CommandOutcome::Rejected);
            }
            Ending::Cancelled { to, kind, took } => {
                settled.mark();
                self.metrics.mcp_latency(&to.channel, took);
                log::info!(
                    target: LOG_TARGET,
                    request_id = to.request_id.as_str(), channel = to.channel.as_str();
                    "command {}: cancelled by the caller; nothing posted",
                    to.request_id
                );
                self.metrics
                    .command(kind, &to.channel, CommandOutcome::Cancelled);
            }
            Ending::ExpiredInCall { to, kind, took } => {
                settled.mark();
                self.metrics.mcp_latency(&to.channel, took);
                log::info!(
                    target: LOG_TARGET,
                    request_id = to.request_id.as_str(),
                    channel = to.channel.as_str(),
                    duration_ms = took.as_millis();
                    "command {}: response_timeout passed during the MCP call after {took:?}; nothing posted",
                    to.request_id
                );
                self.metrics
                    .command(kind, &to.channel, CommandOutcome::Expired);
            }
            Ending::Replied {
                to,
                kind,
                took,
                received,
                reply,
            } => {
                self.metrics.mcp_latency(&to.channel, took);
                log::debug!(
                    target: LOG_TARGET,
                    request_id = to.request_id.as_str(),
                    channel = to.channel.as_str(),
                    status = reply.resp_code,
                    duration_ms = took.as_millis();
                    "command {} on {}: MCP answered {} in {took:?}",
                    to.request_id,
                    to.channel,
                    reply.resp_code
                );
                self.health.channel_seen(
                    &to.channel,
                    reply.failure.as_ref().and_then(unreachable_reason),
                );
                let synthesized = reply.failure.is_some();
                let delivered = self.answer(&to, reply, settled);
                let outcome = match (delivered, synthesized) {
                    (false, _) => CommandOutcome::NotDelivered,
                    (true, true) => CommandOutcome::Failed,
                    (true, false) => CommandOutcome::Answered,
                };
                if delivered {
                    self.metrics.command_latency(received.elapsed());
                }
                self.metrics.command(kind, &to.channel, outcome);
            }
            Ending::Panicked(answer) => {
                log::error!(
                    target: LOG_TARGET,
                    request_id = answer.to.request_id.as_str(),
                    channel = answer.to.channel.as_str();
                    "command {}: internal error while running it; answering with a JSON-RPC error",
                    answer.to.request_id
                );
                self.answer(&answer.to, answer.reply(), settled);
                self.metrics
                    .command(answer.kind(), &answer.to.channel, CommandOutcome::Failed);
            }
        }
    }

    /// Posts a command's terminal answer, logs how that went and marks the command settled;
    /// true when the control plane accepted it.
    fn answer(&self, to: &Addressee, reply: Reply, settled: &Settled) -> bool {
        let (request_id, channel) = (to.request_id.as_str(), to.channel.as_str());
        let status = reply.resp_code;
        let delivered = match self.post(to, reply) {
            PostOutcome::Accepted => {
                log::debug!(
                    target: LOG_TARGET,
                    request_id,
                    channel,
                    status;
                    "command {request_id}: response delivered"
                );
                true
            }
            PostOutcome::NotPending => {
                log::info!(
                    target: LOG_TARGET,
                    request_id,
                    channel;
                    "command {request_id}: the control plane no longer waits for it (404); not replayed"
                );
                false
            }
            PostOutcome::Failed(why) => {
                log::warn!(
                    target: LOG_TARGET,
                    request_id,
                    channel;
                    "command {request_id}: response not delivered: {why}"
                );
                false
            }
        };
        settled.mark();
        delivered
    }

    /// Posts one notification of a command's answer; false when it was not delivered, after
    /// which the caller sends no more for this command (a gap would break their order).
    pub(super) fn notify(
        &self,
        to: &Addressee,
        notification: Box<RawValue>,
        headers: &Headers,
    ) -> bool {
        let reply = Reply {
            resp_json: Some(notification),
            resp_headers: headers.clone(),
            resp_code: 200,
            resp_type: RespType::JsonrpcNotify,
            failure: None,
        };
        let delivery = self.post(to, reply);
        if delivery == PostOutcome::Accepted {
            return true;
        }
        log::warn!(
            target: LOG_TARGET,
            request_id = to.request_id.as_str(),
            channel = to.channel.as_str();
            "command {}: notification not delivered ({delivery:?}); later ones skipped",
            to.request_id
        );
        false
    }

    /// Addresses `reply` to the control plane and posts it, with the retries its type allows
    /// ([`crate::control_plane::ControlPlane::post_response`]); counts those retries.
    pub(super) fn post(&self, to: &Addressee, reply: Reply) -> PostOutcome {
        let payload = ResponsePayload {
            request_id: to.request_id.clone(),
            channel: to.channel.clone(),
            resp_json: reply.resp_json,
            resp_headers: reply.resp_headers,
            resp_code: reply.resp_code,
            resp_type: reply.resp_type,
        };
        let delivery = self.control.post_response(
            &payload,
            &to.shard_token,
            to.client_request_id.as_deref(),
            to.deadline,
        );
        self.metrics.post_retries(delivery.retries);
        delivery.outcome
    }
}

/// A failure that says the MCP server could not be reached (as opposed to one it answered).
fn unreachable_reason(failure: &Failure) -> Option<String> {
    match failure.source {
        Source::Dns | Source::Tls | Source::Connect | Source::Timeout | Source::TransportClosed => {
            Some(failure.describe())
        }
        _ => None,
    }
}
