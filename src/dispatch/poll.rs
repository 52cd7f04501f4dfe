//! The poll thread: asks the control plane for as many commands as there are free slots, queues
//! what it is handed, and paces itself.
//!
//! - It polls only while a slot is free, asking for `min(free slots, 25)`; a batch is queued whole,
//!   one job per command (malformed ones too: a worker answers or drops them, see [`super::worker`]).
//! - An empty answer is followed by the next poll no sooner than [`MIN_EMPTY_POLL_INTERVAL`] after
//!   the last one started; a non-empty one at once.
//! - Transient failures back off exponentially with full jitter, never sooner than `Retry-After`;
//!   a rejected configuration waits far longer and is logged once per change, with the fix.
//! - Except at start: until a poll has succeeded, for [`STARTUP_404_WINDOW`], a 404 (unknown
//!   tunnel) is retried within a second. A relay re-reads its tunnels file every few seconds, so a
//!   tunnel added just before its client started is found moments later; waiting the 30 s an
//!   operator error gets would leave it unusable for half a minute or more.
//! - Readiness ([`crate::ops::Health`]): each poll is announced before it is sent, so that a poll
//!   the control plane holds counts; after a rejected configuration the metadata is read again
//!   before the next poll, so that a fixed one shows as soon as its poll is held.
//! - While it waits it shows it is alive (the watchdog reads [`super::Tunnel::poll_thread_idle`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::config::MAX_POLL_LIMIT;
use crate::control_plane::{PollError, PollOk, Polled};
use crate::deadline;
use crate::ops::metrics::PollOutcome;
use crate::wire::{CommandKind, FEATURE_SERVER_REQUESTS};

use super::worker::Job;
use super::{LOG_TARGET, Tunnel};

/// The poll thread shows it is alive at least this often while it waits (for the watchdog).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// First delay after a transient poll failure.
const POLL_RETRY_BASE: Duration = Duration::from_millis(200);
/// Longest delay between transient poll failures.
const POLL_RETRY_CAP: Duration = Duration::from_secs(10);
/// First delay after the control plane rejected our configuration (bad key, unknown tunnel):
/// retrying sooner cannot help and would only fill the log and the service's rate limits.
const OPERATOR_RETRY_BASE: Duration = Duration::from_secs(30);
/// Longest delay while the configuration stays rejected.
const OPERATOR_RETRY_CAP: Duration = Duration::from_secs(300);
/// How long after the poll loop starts a 404 still gets quick retries, as long as no poll has
/// succeeded yet: a few of a relay's 2 s re-reads of its tunnels file. After a success a 404
/// means the tunnel was removed, and gets the operator backoff at once.
const STARTUP_404_WINDOW: Duration = Duration::from_secs(10);
/// First delay of those quick retries: 250 ms, doubling to [`STARTUP_404_RETRY_CAP`] (each delay
/// at least the base, jittered above it).
const STARTUP_404_RETRY_BASE: Duration = Duration::from_millis(250);
const STARTUP_404_RETRY_CAP: Duration = Duration::from_secs(1);
/// Least time from the start of one poll to the start of the next after an empty answer: a
/// control plane (or proxy) that answers empty polls instantly would otherwise get thousands of
/// polls a second from us. A non-empty answer is followed by the next poll at once.
const MIN_EMPTY_POLL_INTERVAL: Duration = Duration::from_millis(100);

impl Tunnel {
    /// Waits for a free slot; `None` once stopping.
    fn free_slots(&self) -> Option<usize> {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return None;
            }
            let free = self
                .max_inflight
                .saturating_sub(state.queue.len() + state.running);
            if free > 0 {
                return Some(free);
            }
            state = self.wait_changed(state, None);
        }
    }

    /// Sleeps for `delay` unless stopped first. Returns false when stopping. With `beat` (the
    /// poll thread), shows the thread alive at least every [`HEARTBEAT_INTERVAL`] while it waits.
    pub(super) fn pause(&self, delay: Duration, beat: bool) -> bool {
        let Some(deadline) = deadline::after(Instant::now(), delay) else {
            return !self.lock().stopping; // never: no pause is that long (backoffs are capped)
        };
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            if state.stopping {
                return false;
            }
            if now >= deadline {
                return true;
            }
            // Only a pause that shows signs of life needs to wake before its end.
            let wait = if beat {
                self.beat();
                (deadline - now).min(HEARTBEAT_INTERVAL)
            } else {
                deadline - now
            };
            state = self
                .stopped
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub(super) fn poll_loop(&self) {
        let loop_started = Instant::now();
        let mut transient = Backoff::new(POLL_RETRY_BASE, POLL_RETRY_CAP);
        let mut operator = Backoff::new(OPERATOR_RETRY_BASE, OPERATOR_RETRY_CAP);
        let mut startup = Backoff::new(STARTUP_404_RETRY_BASE, STARTUP_404_RETRY_CAP);
        // The last problem logged, so a problem that persists is logged once, not every poll.
        let mut last_problem: Option<String> = None;
        let mut ever_succeeded = false;
        // The startup metadata read (by `client::run`) already proved the key.
        let mut reread_metadata = false;
        if self.control.metadata_accepted() {
            self.health.key_accepted();
        }
        while let Some(free) = self.free_slots() {
            let limit = free.min(MAX_POLL_LIMIT);
            self.beat();
            if std::mem::take(&mut reread_metadata) && self.control.metadata().is_ok() {
                self.health.key_accepted();
                self.beat();
            }
            let poll_started = Instant::now();
            self.health.poll_started();
            let result = self.control.poll(limit);
            self.beat();
            let delay = match result {
                Ok(result) => {
                    transient.reset();
                    operator.reset();
                    ever_succeeded = true;
                    self.health.poll_succeeded();
                    if last_problem.take().is_some() {
                        log::info!(target: LOG_TARGET, "control plane polling works again");
                    }
                    match result {
                        PollOk::Commands { received, commands } => {
                            self.metrics.poll(PollOutcome::Commands);
                            self.enqueue(received, commands);
                        }
                        PollOk::Empty => {
                            self.metrics.poll(PollOutcome::Empty);
                            let floor =
                                MIN_EMPTY_POLL_INTERVAL.saturating_sub(poll_started.elapsed());
                            if !floor.is_zero() && !self.pause(floor, true) {
                                break;
                            }
                        }
                    }
                    continue;
                }
                Err(PollError::Operator { status, message }) => {
                    self.metrics.poll(PollOutcome::Rejected);
                    self.health.poll_failed(readiness_reason(status, &message));
                    reread_metadata = true;
                    if quick_404_retry(status, ever_succeeded, loop_started.elapsed()) {
                        let note = format!(
                            "control plane answered {message}: the tunnel may have been added \
                             just now; retrying within a second for up to {}s",
                            STARTUP_404_WINDOW.as_secs()
                        );
                        if last_problem.as_deref() != Some(note.as_str()) {
                            log::info!(target: LOG_TARGET, "{note}");
                            last_problem = Some(note);
                        }
                        let delay = startup.next_delay_at_least(STARTUP_404_RETRY_BASE);
                        log::debug!(target: LOG_TARGET, "next poll in {delay:?}");
                        if !self.pause(delay, true) {
                            break;
                        }
                        continue;
                    }
                    let advice = operator_advice(status, &message);
                    if last_problem.as_deref() != Some(advice.as_str()) {
                        log::error!(target: LOG_TARGET, "{advice}");
                        last_problem = Some(advice);
                    }
                    if self.exit_on_auth_failure && matches!(status, 401 | 403) {
                        log::error!(
                            target: LOG_TARGET,
                            "exiting (code 3): --exit-on-auth-failure is set"
                        );
                        self.auth_failed.store(true, Ordering::SeqCst);
                        self.stop();
                        break;
                    }
                    operator.next_delay_at_least(OPERATOR_RETRY_BASE)
                }
                Err(PollError::Transient {
                    reason,
                    retry_after,
                }) => {
                    self.metrics.poll(PollOutcome::Failed);
                    self.health.poll_error(&reason);
                    let problem = format!("poll failed: {reason}");
                    if last_problem.as_deref() != Some(problem.as_str()) {
                        log::warn!(target: LOG_TARGET, "{problem}; retrying with backoff");
                        last_problem = Some(problem);
                    }
                    let delay = transient.next_delay();
                    retry_after.map_or(delay, |floor| delay.max(floor))
                }
            };
            log::debug!(target: LOG_TARGET, "next poll in {delay:?}");
            if !self.pause(delay, true) {
                break;
            }
        }
        log::debug!(target: LOG_TARGET, "poll loop stopped");
    }

    /// Queues a poll batch, one job per command; `cancel` commands are carried out at once
    /// (they must not wait behind the work they cancel), and `stream` commands start on their
    /// own threads.
    pub(super) fn enqueue(&self, received: Instant, commands: Vec<Polled>) {
        if commands.is_empty() {
            return;
        }
        // Server→client requests of the calls these start cross only if the relay takes them.
        let forwarding = self.control.speaks(FEATURE_SERVER_REQUESTS);
        crate::mcp::server_requests::set_on(forwarding);
        log::debug!(target: LOG_TARGET, "received {} command(s)", commands.len());
        let mut jobs = Vec::with_capacity(commands.len());
        for polled in commands {
            match &polled.command {
                Ok(c) if matches!(c.kind, CommandKind::Cancel { .. }) => {
                    let CommandKind::Cancel { reason } = &c.kind else {
                        continue;
                    };
                    self.cancel(&c.request_id, reason.as_deref());
                }
                // Its own thread: a stream may outlive any worker's call ([`super::stream`]).
                Ok(c) if matches!(c.kind, CommandKind::Stream(_)) => {
                    let _ = self.stream_jobs.send(Job { polled, received });
                }
                _ => jobs.push(Job { polled, received }),
            }
        }
        let count = jobs.len();
        let full = {
            let mut state = self.lock();
            state.queue.extend(jobs);
            state.queue.len() + state.running >= self.max_inflight
        };
        for _ in 0..count {
            self.work.notify_one();
        }
        // The `poll-cancels` thread waits for a full queue.
        if full {
            self.filled.notify_all();
        }
    }
}

/// Whether a rejected poll gets a quick retry: a 404 before any poll succeeded, within
/// [`STARTUP_404_WINDOW`] of the start.
fn quick_404_retry(status: u16, ever_succeeded: bool, since_start: Duration) -> bool {
    status == 404 && !ever_succeeded && since_start < STARTUP_404_WINDOW
}

/// The one-line `/readyz` reason for a configuration the control plane rejected.
fn readiness_reason(status: u16, message: &str) -> String {
    match status {
        403 if message.contains("client_certificate_required") => {
            "control plane requires a client certificate (403): set CONTROL_PLANE_CLIENT_CERT"
                .into()
        }
        401 => "control plane auth failed (401): check CONTROL_PLANE_API_KEY".into(),
        403 => "control plane refused this key for the tunnel (403): check CONTROL_PLANE_API_KEY \
                and CONTROL_PLANE_TUNNEL_ID"
            .into(),
        404 => "tunnel not found (404): check CONTROL_PLANE_TUNNEL_ID and CONTROL_PLANE_URL_PATH"
            .into(),
        _ => format!("control plane rejected the poll ({status}): check CONTROL_PLANE_TUNNEL_ID"),
    }
}

/// The log line for a configuration the control plane rejected, naming the setting to fix.
fn operator_advice(status: u16, message: &str) -> String {
    let fix = match status {
        403 if message.contains("client_certificate_required") => {
            "the control plane requires a TLS client certificate: set CONTROL_PLANE_CLIENT_CERT \
             and CONTROL_PLANE_CLIENT_KEY"
        }
        401 => "the API key was rejected: check CONTROL_PLANE_API_KEY (--control-plane.api-key)",
        403 => {
            "the API key may not use this tunnel: check CONTROL_PLANE_API_KEY and \
             CONTROL_PLANE_TUNNEL_ID belong together"
        }
        404 => {
            "the tunnel was not found: check CONTROL_PLANE_TUNNEL_ID, CONTROL_PLANE_BASE_URL and \
             CONTROL_PLANE_URL_PATH"
        }
        _ => {
            "the poll request was rejected: check CONTROL_PLANE_TUNNEL_ID and CONTROL_PLANE_URL_PATH"
        }
    };
    format!("control plane answered {message}; {fix}. Retrying slowly.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_404_at_start_is_retried_quickly() {
        let early = Duration::from_secs(1);
        assert!(quick_404_retry(404, false, early));
        assert!(quick_404_retry(
            404,
            false,
            STARTUP_404_WINDOW - Duration::from_millis(1)
        ));
        // After the window, after a success (the tunnel was removed), or another status: slow.
        assert!(!quick_404_retry(404, false, STARTUP_404_WINDOW));
        assert!(!quick_404_retry(404, true, early));
        for status in [400, 401, 403] {
            assert!(!quick_404_retry(status, false, early), "{status}");
        }
    }

    #[test]
    fn quick_retries_stay_between_the_base_and_the_cap() {
        let mut startup = Backoff::new(STARTUP_404_RETRY_BASE, STARTUP_404_RETRY_CAP);
        for _ in 0..10 {
            let delay = startup.next_delay_at_least(STARTUP_404_RETRY_BASE);
            assert!(delay >= STARTUP_404_RETRY_BASE && delay <= STARTUP_404_RETRY_CAP);
        }
    }
}
