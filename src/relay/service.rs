//! The relay as a service, like the client: the pid file, the non-public metrics listener,
//! systemd notification (READY, STOPPING, WATCHDOG), the drain on SIGTERM, and an open-files
//! limit that fits `--max-connections`.
//!
//! Drain: on SIGTERM/SIGINT the relay says `STOPPING=1`, answers `/healthz` and `/readyz` 503
//! (load balancers take the node out), refuses new connector requests with 503 `relay_draining`,
//! ends held long-polls at once with an empty answer, and waits up to
//! `--shutdown.drain-timeout` for the connector requests it holds to be answered. Its listener
//! stays open meanwhile: the tunnel clients must still reach it to post those answers. Open
//! event streams (a session's GET stream, `subscriptions/listen`) are not waited for; they end
//! when the process does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Relay;
use super::metrics::Kind;
use crate::ops::Readiness;
use crate::ops::health::{HealthServer, Report};
use crate::ops::notify;
use crate::ops::pidfile::{Acquired, PidFile};

/// How often the drain looks at the requests still held.
const DRAIN_CHECK: Duration = Duration::from_millis(50);

/// Descriptors the relay needs beside one per connection: listeners, the tunnels file, the audit
/// log, Redis, standard streams, with room to spare.
const SPARE_DESCRIPTORS: u64 = 256;

/// Raises the soft open-files limit toward the hard one so that `--max-connections` connections
/// (one descriptor each) fit: systemd's and most shells' default soft limit is 1024, below the
/// default cap of 2048, and a relay out of descriptors refuses connections at accept. Warns, naming
/// the fix, when even the hard limit is too low.
pub fn fit_file_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = (max_connections as u64).saturating_add(SPARE_DESCRIPTORS);
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if soft < want && hard > soft {
        let raised = Rlimit {
            current: Some(want.min(hard)),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => log::debug!("open files limit raised from {soft} to {}", want.min(hard)),
            Err(e) => log::warn!("cannot raise the open files limit from {soft}: {e}"),
        }
    }
    if hard < want {
        log::warn!(
            "open files are limited to {hard} (hard limit), fewer than --max-connections \
             {max_connections} needs (+{SPARE_DESCRIPTORS}): connections beyond about {} will be \
             refused; raise LimitNOFILE= in the unit (or ulimit -n), or lower --max-connections",
            hard.saturating_sub(SPARE_DESCRIPTORS)
        );
    }
}

/// `--pid-file`: `Ok(None)` when another copy holds it (the caller exits 0).
pub fn take_pid_file(path: &Path) -> Result<Option<PidFile>, String> {
    match PidFile::acquire(path)? {
        Acquired::Held(p) => Ok(Some(p)),
        Acquired::Busy(pid) => {
            log::info!(
                "another relay (pid {pid}) holds {}; exiting",
                path.display()
            );
            Ok(None)
        }
    }
}

/// What the metrics listener reports.
struct RelayReport(Arc<Relay>);

impl Report for RelayReport {
    fn readiness(&self) -> Readiness {
        let relay = &self.0;
        let mut checks = BTreeMap::new();
        checks.insert(
            "draining".to_string(),
            relay.draining().then(|| "draining (SIGTERM)".to_string()),
        );
        if let Some(store) = &relay.store {
            checks.insert(
                "store".to_string(),
                store.ping().err().map(|e| format!("store: {e}")),
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
            oauth: None,
        }
    }

    fn metrics(&self) -> String {
        self.0.render_metrics()
    }

    fn route(&self, req: &crate::http_server::Request) -> Option<crate::http_server::Response> {
        super::status::route(&self.0, req)
    }

    fn max_body(&self) -> usize {
        super::status::MAX_BODY
    }
}

/// Starts the `--metrics-listen` server.
pub fn metrics_server(relay: &Arc<Relay>, addr: &str) -> Result<HealthServer, String> {
    let server = HealthServer::start(addr, None, Arc::new(RelayReport(Arc::clone(relay))))?;
    log::info!(
        "metrics listening on http://{} (/metrics, /healthz, /readyz, /status; not public: keep it so)",
        server.local_addr()
    );
    Ok(server)
}

/// Ready: systemd is told, and a watchdog thread pings while the relay's state can be taken.
pub fn ready(relay: &Arc<Relay>) {
    notify::notify("READY=1");
    let Some(interval) = notify::watchdog_interval() else {
        return;
    };
    let relay = Arc::clone(relay);
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            loop {
                // A relay whose hubs cannot be reached (a deadlock) stops pinging.
                if relay.hubs.lock().is_ok() || relay.hubs.is_poisoned() {
                    notify::notify("WATCHDOG=1");
                }
                std::thread::sleep(interval);
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the watchdog thread: {e}");
    }
}

/// The drain (see the module docs); returns when no connector request is held any more or
/// `timeout` passed.
pub fn drain(relay: &Relay, timeout: Duration) {
    notify::notify("STOPPING=1");
    relay.start_drain();
    let held = || relay.metrics().in_progress(Kind::Connector);
    log::info!(
        "draining: {} connector request(s) held; waiting up to {}s",
        held(),
        timeout.as_secs()
    );
    let deadline = Instant::now() + timeout;
    while held() > 0 && Instant::now() < deadline {
        std::thread::sleep(DRAIN_CHECK);
    }
    match held() {
        0 => log::info!("drained"),
        n => log::warn!("drain timeout: {n} connector request(s) still held; stopping anyway"),
    }
}
