//! The operator surface of `mcp-tunnel run`: readiness, metrics, the health server, systemd
//! notification and the pid file. The client records what happens ([`Health`], [`Metrics`]);
//! these modules only report it.

pub mod health;
pub mod metrics;
pub mod notify;
pub mod pidfile;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use metrics::Metrics;

/// What is known about one channel's MCP server.
#[derive(Debug, Clone)]
struct ChannelState {
    /// `None`: reachable; `Some(reason)`: not.
    problem: Option<String>,
    seen: Instant,
}

/// Readiness: the last successful poll, the control plane's standing complaint, and each
/// channel's reachability as the last call or probe found it.
pub struct Health {
    /// A poll older than this makes the client not ready (2 × (poll wait + guardrail)).
    poll_window: Duration,
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    last_poll_ok: Option<Instant>,
    control_plane_problem: Option<String>,
    last_poll_error: Option<String>,
    channels: BTreeMap<String, ChannelState>,
}

/// The answer to "are we ready?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// One line; the first reason for not being ready, or "ready".
    pub reason: String,
    /// Every check: name → `None` when fine, else its problem.
    pub checks: BTreeMap<String, Option<String>>,
}

impl Health {
    pub fn new(poll_window: Duration) -> Health {
        Health {
            poll_window,
            state: Mutex::new(HealthState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn poll_succeeded(&self) {
        let mut s = self.lock();
        s.last_poll_ok = Some(Instant::now());
        s.control_plane_problem = None;
        s.last_poll_error = None;
    }

    /// A problem the operator must fix, shown by `/readyz` at once.
    pub fn poll_failed(&self, problem: String) {
        self.lock().control_plane_problem = Some(problem);
    }

    /// A transient poll failure: readiness turns only when no poll succeeds for the poll
    /// window, and then names this as the last error.
    pub fn poll_error(&self, reason: &str) {
        self.lock().last_poll_error = Some(reason.to_string());
    }

    /// The latest evidence about a channel: `None` when its server answered (whatever it said).
    pub fn channel_seen(&self, channel: &str, problem: Option<String>) {
        self.lock().channels.insert(
            channel.to_string(),
            ChannelState {
                problem,
                seen: Instant::now(),
            },
        );
    }

    /// How long ago a channel was last observed (`None`: never).
    pub fn channel_age(&self, channel: &str) -> Option<Duration> {
        self.lock().channels.get(channel).map(|c| c.seen.elapsed())
    }

    /// Whether a channel is known to be unreachable right now.
    pub fn channel_up(&self, channel: &str) -> bool {
        self.lock()
            .channels
            .get(channel)
            .is_none_or(|c| c.problem.is_none())
    }

    pub fn readiness(&self) -> Readiness {
        let s = self.lock();
        let mut checks = BTreeMap::new();
        let last_error = s
            .last_poll_error
            .as_ref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        let poll = match (&s.control_plane_problem, s.last_poll_ok) {
            (Some(problem), _) => Some(problem.clone()),
            (None, None) => Some(format!("no successful poll yet{last_error}")),
            (None, Some(at)) if at.elapsed() > self.poll_window => Some(format!(
                "last successful poll {}s ago{last_error}",
                at.elapsed().as_secs()
            )),
            (None, Some(_)) => None,
        };
        checks.insert("control_plane".to_string(), poll);
        for (name, c) in &s.channels {
            checks.insert(
                format!("channel {name}"),
                c.problem
                    .as_ref()
                    .map(|p| format!("mcp channel {name} unreachable: {p}")),
            );
        }
        let reason = checks
            .values()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_else(|| "ready".to_string());
        Readiness {
            ready: checks.values().all(Option::is_none),
            reason,
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_recent_poll_and_reachable_channels() {
        let h = Health::new(Duration::from_secs(60));
        h.channel_seen("main", None);
        assert_eq!(h.readiness().reason, "no successful poll yet");
        h.poll_succeeded();
        assert!(h.readiness().ready);
        h.poll_failed("control plane auth failed (401): check CONTROL_PLANE_API_KEY".into());
        let r = h.readiness();
        assert!(!r.ready);
        assert!(r.reason.contains("401"));
        h.poll_succeeded();
        h.channel_seen("main", Some("connection refused".into()));
        assert_eq!(
            h.readiness().reason,
            "mcp channel main unreachable: connection refused"
        );
        assert!(!h.channel_up("main"));
    }

    #[test]
    fn an_old_poll_is_not_ready() {
        let h = Health::new(Duration::ZERO);
        h.poll_succeeded();
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.readiness().reason.starts_with("last successful poll"));
    }
}
