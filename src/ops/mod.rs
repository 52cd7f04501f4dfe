//! The operator surface of `mcp-tunnel run`: readiness, metrics, the health server, systemd
//! notification and the pid file. The client records what happens ([`Health`], [`Metrics`]);
//! these modules only report it.

pub mod health;
pub mod metrics;
pub mod notify;
pub mod pidfile;
pub mod startup_wait;

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

/// What the start-up OAuth discovery of an HTTP `main` found (`/readyz`, and readiness itself
/// with `--mcp.require-oauth-discovery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthStatus {
    /// Not finished yet.
    Pending,
    /// `main` serves protected-resource metadata.
    Protected {
        metadata_url: String,
        authorization_server: Option<String>,
    },
    /// No sign of OAuth: no challenge, and no metadata at the well-known locations.
    None,
    /// Discovery failed (the reason names URLs and statuses only).
    Failed(String),
}

/// How long a poll must be in flight, unanswered, before it counts as held (see [`Health`]). A
/// control plane that refuses a poll (401/403/404, 5xx, a proxy's error page) answers at once;
/// one that accepted it keeps it open until work arrives or its wait ends.
pub const HELD_AFTER: Duration = Duration::from_millis(500);

/// Readiness: the last successful poll, the control plane's standing complaint, and each
/// channel's reachability as the last call or probe found it.
///
/// The control plane counts as working when a poll returned recently, **or** when a poll is being
/// held: in flight for [`HELD_AFTER`] without an answer, on a connection whose key and tunnel the
/// control plane accepted since the last poll failure (a metadata read or a returned poll; see
/// [`Health::key_accepted`]). The blocking HTTP client cannot tell "sent and held" from "still
/// connecting", so the acceptance is what rules out a control plane that never saw the request:
/// it came over the same pooled connection moments before. Without it a fresh client would be
/// "not ready" for a whole long-poll wait (up to 25 s) on a healthy setup. Any poll failure
/// withdraws the acceptance, so a control plane that refuses or fails never shows ready this way.
pub struct Health {
    /// A poll older than this makes the client not ready (2 × (poll wait + guardrail)).
    poll_window: Duration,
    /// [`HELD_AFTER`]; a field so that the unit tests need not wait for it.
    held_after: Duration,
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    last_poll_ok: Option<Instant>,
    control_plane_problem: Option<String>,
    last_poll_error: Option<String>,
    /// When the poll now in flight was sent; `None` between polls.
    poll_in_flight: Option<Instant>,
    /// The control plane accepted our key and tunnel since the last poll failure.
    accepted: bool,
    channels: BTreeMap<String, ChannelState>,
    /// `None`: no start-up discovery (main is not HTTP).
    oauth: Option<OAuthStatus>,
    /// Readiness waits for [`OAuthStatus::Protected`].
    oauth_required: bool,
    /// The start-up listener wait (`--mcp.startup-wait-timeout`): the channel it is about and
    /// why it keeps the client not ready (waiting, or the wait timed out).
    startup: Option<(String, String)>,
}

/// The answer to "are we ready?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// One line; the first reason for not being ready, or "ready".
    pub reason: String,
    /// Every check: name → `None` when fine, else its problem.
    pub checks: BTreeMap<String, Option<String>>,
    /// The start-up OAuth discovery of `main`, when there is one.
    pub oauth: Option<OAuthStatus>,
}

impl Health {
    pub fn new(poll_window: Duration) -> Health {
        Health {
            poll_window,
            held_after: HELD_AFTER,
            state: Mutex::new(HealthState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A start-up OAuth discovery of `main` will run; `required`: readiness waits for metadata.
    pub fn oauth_expected(&self, required: bool) {
        let mut s = self.lock();
        s.oauth = Some(OAuthStatus::Pending);
        s.oauth_required = required;
    }

    /// The latest start-up discovery result.
    pub fn oauth_seen(&self, status: OAuthStatus) {
        self.lock().oauth = Some(status);
    }

    /// A poll is about to be sent.
    pub fn poll_started(&self) {
        self.lock().poll_in_flight = Some(Instant::now());
    }

    /// The control plane accepted our key for the tunnel on a request other than a poll (the
    /// metadata read): a poll held after this proves the connection.
    pub fn key_accepted(&self) {
        self.lock().accepted = true;
    }

    pub fn poll_succeeded(&self) {
        let mut s = self.lock();
        s.last_poll_ok = Some(Instant::now());
        s.control_plane_problem = None;
        s.last_poll_error = None;
        s.poll_in_flight = None;
        s.accepted = true;
    }

    /// A problem the operator must fix, shown by `/readyz` at once.
    pub fn poll_failed(&self, problem: String) {
        let mut s = self.lock();
        s.control_plane_problem = Some(problem);
        s.poll_in_flight = None;
        s.accepted = false;
    }

    /// A transient poll failure: readiness turns only when no poll succeeds for the poll
    /// window, and then names this as the last error.
    pub fn poll_error(&self, reason: &str) {
        let mut s = self.lock();
        s.last_poll_error = Some(reason.to_string());
        s.poll_in_flight = None;
        s.accepted = false;
    }

    /// The start-up listener wait's verdict on `channel`: `None` clears it.
    pub fn startup_problem(&self, channel: &str, problem: Option<String>) {
        self.lock().startup = problem.map(|p| (channel.to_string(), p));
    }

    /// The latest evidence about a channel: `None` when its server answered (whatever it said).
    /// An answer also ends a start-up wait that timed out on that channel.
    pub fn channel_seen(&self, channel: &str, problem: Option<String>) {
        let mut s = self.lock();
        if problem.is_none() && s.startup.as_ref().is_some_and(|(c, _)| c == channel) {
            s.startup = None;
        }
        s.channels.insert(
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
        let held = s.accepted
            && s.poll_in_flight
                .is_some_and(|sent| sent.elapsed() >= self.held_after);
        let poll = match (&s.control_plane_problem, s.last_poll_ok) {
            _ if held => None,
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
        if s.oauth_required {
            checks.insert(
                "oauth".to_string(),
                s.oauth.as_ref().and_then(oauth_problem),
            );
        }
        // The start-up wait explains the rest (no poll yet), so it comes first.
        let startup = s.startup.as_ref().map(|(_, problem)| problem.clone());
        let reason = startup
            .iter()
            .chain(checks.values().flatten())
            .next()
            .cloned()
            .unwrap_or_else(|| "ready".to_string());
        if startup.is_some() {
            checks.insert("startup".to_string(), startup);
        }
        Readiness {
            ready: checks.values().all(Option::is_none),
            reason,
            checks,
            oauth: s.oauth.clone(),
        }
    }
}

/// Why a required OAuth discovery keeps the client not ready.
fn oauth_problem(status: &OAuthStatus) -> Option<String> {
    const FLAG: &str = "--mcp.require-oauth-discovery";
    match status {
        OAuthStatus::Protected { .. } => None,
        OAuthStatus::Pending => Some(format!("waiting for the OAuth discovery of main ({FLAG})")),
        OAuthStatus::None => Some(format!("main has no OAuth metadata yet ({FLAG})")),
        OAuthStatus::Failed(why) => Some(format!("OAuth discovery of main failed ({FLAG}): {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_startup_wait_explains_first_and_ends_when_its_channel_answers() {
        let h = Health::new(Duration::from_secs(60));
        h.startup_problem("main", Some("waiting for main".into()));
        assert_eq!(h.readiness().reason, "waiting for main");
        h.poll_succeeded();
        h.channel_seen("other", None);
        assert!(!h.readiness().ready);
        h.channel_seen("main", Some("refused".into()));
        assert_eq!(h.readiness().reason, "waiting for main");
        h.channel_seen("main", None);
        assert!(h.readiness().ready);
        assert!(!h.readiness().checks.contains_key("startup"));
    }

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

    fn without_held_delay() -> Health {
        Health {
            held_after: Duration::ZERO,
            ..Health::new(Duration::from_secs(60))
        }
    }

    #[test]
    fn a_held_poll_is_ready_only_after_the_key_was_accepted() {
        let h = without_held_delay();
        h.poll_started();
        assert_eq!(h.readiness().reason, "no successful poll yet");
        h.key_accepted();
        assert!(h.readiness().ready, "{:?}", h.readiness());
        // The poll comes back refused: not ready, and the next held poll needs a new acceptance.
        h.poll_failed("control plane auth failed (401): check CONTROL_PLANE_API_KEY".into());
        h.poll_started();
        assert!(h.readiness().reason.contains("401"));
        h.key_accepted();
        assert!(h.readiness().ready);
        h.poll_error("HTTP 503");
        h.poll_started();
        assert!(!h.readiness().ready);
        // A returned poll is an acceptance of its own.
        h.poll_succeeded();
        h.poll_started();
        assert!(h.readiness().ready);
    }

    #[test]
    fn a_poll_not_yet_held_is_not_ready() {
        let h = Health::new(Duration::from_secs(60));
        h.key_accepted();
        h.poll_started();
        // Well within HELD_AFTER: a refusal could still come.
        assert_eq!(h.readiness().reason, "no successful poll yet");
        assert!(h.held_after >= Duration::from_millis(100));
    }

    #[test]
    fn a_required_oauth_discovery_holds_readiness_until_metadata_is_found() {
        let h = Health::new(Duration::from_secs(60));
        h.poll_succeeded();
        h.oauth_expected(false);
        let r = h.readiness();
        assert!(r.ready, "{r:?}");
        assert_eq!(r.oauth, Some(OAuthStatus::Pending));
        h.oauth_expected(true);
        assert!(
            h.readiness()
                .reason
                .contains("waiting for the OAuth discovery")
        );
        h.oauth_seen(OAuthStatus::None);
        assert!(h.readiness().reason.contains("no OAuth metadata"));
        h.oauth_seen(OAuthStatus::Failed("HTTP 500".into()));
        assert!(h.readiness().reason.ends_with("HTTP 500"));
        h.oauth_seen(OAuthStatus::Protected {
            metadata_url: "http://a/.well-known/oauth-protected-resource".into(),
            authorization_server: None,
        });
        assert!(h.readiness().ready);
    }

    #[test]
    fn an_old_poll_is_not_ready() {
        let h = Health::new(Duration::ZERO);
        h.poll_succeeded();
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.readiness().reason.starts_with("last successful poll"));
    }
}
