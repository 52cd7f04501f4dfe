//! Cancellation, our extension of the contract ([`crate::wire::FEATURE_CANCEL`]): the relay
//! sends a `cancel` command naming a command whose caller left, and the client ends that
//! command's MCP call and posts nothing for it.
//!
//! - **Where it is heard.** Cancels come with ordinary polls, and — since a client whose queue is
//!   full does not poll — on a second long-poll for cancellations only, run while the queue is
//!   full by the `poll-cancels` thread. Neither happens unless the control plane announced the
//!   feature ([`crate::control_plane::ControlPlane::extensions`]); from any other control plane
//!   a `cancel` is an unknown command type, skipped.
//! - **What it does.** A command still in the local queue is removed (never run). A running one
//!   has its [`CancelFlag`] set: over HTTP the upstream response is closed within
//!   [`crate::http_client::CANCEL_CHECK`], the 2026-07-28 signal; then a `notifications/cancelled`
//!   with the request's id goes to the MCP server when it is due (a 2025 HTTP session, or
//!   stdio, whose router maps the id and frees the waiting call), on the `cancel` thread so
//!   that neither the poll thread nor a worker waits for it. A cancel for a command not here
//!   (finished meanwhile, or never ours) is counted and ignored.
//! - The call's worker ends with [`Ending::Cancelled`](super::worker::Ending): nothing posted,
//!   free at once.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::backoff::Backoff;
use crate::control_plane::PollOk;
use crate::http_client::CancelFlag;
use crate::ops::metrics::CommandOutcome;
use crate::wire::{CommandKind, FEATURE_CANCEL};

use super::{LOG_TARGET, Tunnel};

/// How often the `poll-cancels` thread, while the queue is full but cancellation not (yet) in
/// use, looks again whether it has to poll; otherwise it sleeps until the queue changes.
const RECHECK: Duration = Duration::from_secs(1);
/// First and longest delay after a failed poll for cancellations.
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(10);

/// A running MCP call that a `cancel` command may end.
pub(super) struct Running {
    pub(super) flag: CancelFlag,
    pub(super) channel: String,
    /// The request and its headers, for the `notifications/cancelled` naming its id.
    pub(super) message: Arc<RawValue>,
    pub(super) headers: Vec<(String, String)>,
}

/// A `notifications/cancelled` to send, on the `cancel` thread.
pub(super) struct Notice {
    channel: String,
    message: Arc<RawValue>,
    headers: Vec<(String, String)>,
}

impl Tunnel {
    /// Whether `cancel` commands are in use with this control plane.
    pub(super) fn cancellation_on(&self) -> bool {
        self.control.speaks(FEATURE_CANCEL)
    }

    /// Registers a call that a cancel may end; `None` when cancellation is not in use.
    pub(super) fn track_call(
        &self,
        request_id: &str,
        channel: &str,
        message: &RawValue,
        headers: &[(String, String)],
    ) -> Option<CancelFlag> {
        if !self.cancellation_on() {
            return None;
        }
        let flag = CancelFlag::default();
        let running = Running {
            flag: flag.clone(),
            channel: channel.to_string(),
            message: Arc::from(message.to_owned()),
            headers: headers.to_vec(),
        };
        self.running_calls().insert(request_id.to_string(), running);
        Some(flag)
    }

    pub(super) fn untrack_call(&self, request_id: &str) {
        self.running_calls().remove(request_id);
    }

    pub(super) fn running_calls(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries out one `cancel` command for `request_id`.
    pub(super) fn cancel(&self, request_id: &str, reason: Option<&str>) {
        let reason = reason.unwrap_or("unspecified");
        let queued = {
            let mut state = self.lock();
            let at = state.queue.iter().position(|job| {
                job.polled.command.as_ref().is_ok_and(|c| {
                    c.request_id == request_id && !matches!(c.kind, CommandKind::Cancel { .. })
                })
            });
            let queued = at.and_then(|i| state.queue.remove(i));
            self.changed_if_watched(state);
            queued
        };
        if let Some(job) = queued {
            self.metrics.cancel_command("queued");
            let (kind, channel) = match &job.polled.command {
                Ok(c) => (
                    c.kind.name(),
                    c.raw_channel.clone().unwrap_or_else(|| "main".into()),
                ),
                Err(_) => ("invalid", "main".into()),
            };
            self.metrics
                .command(kind, &channel, CommandOutcome::Cancelled);
            log::info!(
                target: LOG_TARGET,
                "command {request_id}: cancelled by the caller ({reason}) before it ran; nothing posted"
            );
            return;
        }
        let Some(running) = self.running_calls().remove(request_id) else {
            self.metrics.cancel_command("none");
            log::debug!(
                target: LOG_TARGET,
                "command {request_id}: cancel ({reason}) for no call running here; ignored"
            );
            return;
        };
        self.metrics.cancel_command("running");
        log::info!(
            target: LOG_TARGET,
            "command {request_id}: cancelled by the caller ({reason}); ending its MCP call"
        );
        running.flag.cancel();
        let notice = Notice {
            channel: running.channel,
            message: running.message,
            headers: running.headers,
        };
        // The cancel thread holds the receiver for the process's life.
        let _ = self.notices.send(notice);
    }

    /// The `cancel` thread: sends each `notifications/cancelled` in turn.
    pub(super) fn notice_loop(&self, notices: Receiver<Notice>) {
        for notice in notices {
            if let Some(transport) = self.channels.get(&notice.channel) {
                transport.notify_cancelled(&notice.message, &notice.headers);
            }
        }
    }

    /// The `poll-cancels` thread: while cancellation is in use and the queue is full (so the
    /// poll thread does not poll), long-polls for cancellations only.
    pub(super) fn cancel_poll_loop(&self) {
        let mut backoff = Backoff::new(RETRY_BASE, RETRY_CAP);
        loop {
            {
                let mut state = self.lock();
                loop {
                    if state.stopping {
                        return;
                    }
                    let full = state.queue.len() + state.running >= self.max_inflight;
                    if full && self.cancellation_on() {
                        break;
                    }
                    // Only an enqueue (which notifies when it fills the queue) makes it full: a
                    // client that is not full sleeps until woken. A full one without
                    // cancellation looks again every RECHECK, since the feature arrives on a
                    // poll (and a slot that frees meanwhile is seen then too).
                    state = if full {
                        self.filled
                            .wait_timeout(state, RECHECK)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    } else {
                        self.filled.wait(state).unwrap_or_else(|e| e.into_inner())
                    };
                }
            }
            match self.control.poll_cancellations() {
                Ok(PollOk::Commands { received, commands }) => {
                    backoff.reset();
                    self.enqueue(received, commands);
                }
                Ok(PollOk::Empty) => backoff.reset(),
                Err(e) => {
                    let delay = backoff.next_delay();
                    log::debug!(
                        target: LOG_TARGET,
                        "poll for cancellations failed ({e:?}); next in {delay:?}"
                    );
                    if !self.pause(delay, false) {
                        return;
                    }
                }
            }
        }
    }
}
