//! The start-up OAuth discovery of an HTTP `main`: the same discovery as the `oauth_discovery`
//! command, run once on its own thread when the client starts, reported by `/readyz` (and logged)
//! and never counted as a command. It never holds up polling; readiness waits for it only with
//! `--mcp.require-oauth-discovery`, and then it is retried, with growing pauses, until it finds
//! metadata; otherwise only a failure (say, `main` not listening yet) is retried, for a minute.
//! Header values are never logged (discovery headers are secrets).

use std::time::{Duration, Instant};

use super::{LOG_TARGET, Tunnel};
use crate::mcp::Transport;
use crate::mcp::oauth_discovery::{self, Found, NotFound};
use crate::ops::OAuthStatus;
use crate::wire;

/// First pause before a required discovery is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How long a failed discovery is retried when it is not required (a `main` still starting).
const FAILED_RETRY_FOR: Duration = Duration::from_secs(60);

/// Every log line of a start-up discovery result begins so.
const STARTUP: &str = "start-up OAuth discovery: ";

impl Tunnel {
    /// Whether a start-up discovery applies: `main` is Streamable HTTP.
    pub(super) fn discovers_at_start(&self) -> bool {
        matches!(
            self.channels.get(wire::DEFAULT_CHANNEL),
            Some(Transport::Http(_))
        )
    }

    /// Runs the start-up discovery (and, when required, its retries) until done or stopping.
    pub(super) fn startup_discovery(&self) {
        let Some(Transport::Http(http)) = self.channels.get(wire::DEFAULT_CHANNEL) else {
            return;
        };
        let mut pause = RETRY_FIRST;
        let mut last: Option<OAuthStatus> = None;
        let started = Instant::now();
        loop {
            let deadline = Instant::now() + oauth_discovery::OVERALL_TIMEOUT;
            let status = status_of(http.oauth_discovery(&self.discovery).run(deadline));
            if last.as_ref() != Some(&status) {
                log_status(&status);
            }
            let done = match &status {
                OAuthStatus::Protected { .. } => true,
                _ if self.discovery.required => false,
                // A server that starts after the client (connection refused) gets a while to
                // come up before its status is left at "failed".
                OAuthStatus::Failed(_) => started.elapsed() >= FAILED_RETRY_FOR,
                _ => true,
            };
            self.health.oauth_seen(status.clone());
            last = Some(status);
            if done || !self.pause(pause, false) {
                return;
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
    }
}

fn status_of(result: Result<Found, NotFound>) -> OAuthStatus {
    match result {
        Ok(found) => OAuthStatus::Protected {
            metadata_url: found.prmd_url,
            authorization_server: found.authorization_server,
        },
        Err(NotFound::NoMetadata(_)) => OAuthStatus::None,
        Err(NotFound::Failed(why)) => OAuthStatus::Failed(why),
    }
}

fn log_status(status: &OAuthStatus) {
    match status {
        OAuthStatus::Protected {
            metadata_url,
            authorization_server,
        } => log::info!(
            target: LOG_TARGET,
            "{STARTUP}main is OAuth-protected: PRMD at {metadata_url}, authorization server {}",
            authorization_server.as_deref().unwrap_or("(none named)")
        ),
        OAuthStatus::None => log::info!(target: LOG_TARGET, "{STARTUP}main: no OAuth metadata"),
        OAuthStatus::Failed(why) => {
            log::warn!(target: LOG_TARGET, "{STARTUP}main: failed: {why}")
        }
        OAuthStatus::Pending => {}
    }
}
