//! `mcp-tunnel run`: wires the configuration, the signal handling, the operator surface (pid
//! file, health server, systemd notification) and the [`Tunnel`] together.
//!
//! Exit codes: 0 clean stop (also: another copy holds the pid file), 1 runtime failure or a
//! second signal, 2 configuration error (from `main`), 3 the control plane rejected the key and
//! `--exit-on-auth-failure` was set.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::config::RunConfig;
use crate::dispatch::Tunnel;
use crate::ops::health::{HealthServer, Report};
use crate::ops::notify;
use crate::ops::pidfile::{Acquired, PidFile};
use crate::signals::{Signal, SignalStream};

/// How long stdio servers get to exit on shutdown (stdin closed, then SIGTERM, then kill).
const STDIO_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code when the control plane rejected the key and `--exit-on-auth-failure` is set.
pub const EXIT_AUTH_FAILURE: i32 = 3;

/// Runs the client until SIGTERM/SIGINT, then drains. Returns the process exit code.
pub fn run(cfg: &RunConfig) -> i32 {
    // Before any child exists: a stdio server runs as our uid, and a dumpable process lets any
    // same-uid process read /proc/<pid>/environ (the original block, secrets included, however we
    // edit our environment later), /proc/<pid>/mem, or ptrace us.
    crate::secret::make_non_dumpable();
    // First, before any side effect: is another copy already running?
    let _pid_file = match &cfg.ops.pid_file {
        None => None,
        Some(path) => match PidFile::acquire(path) {
            Ok(Acquired::Held(held)) => Some(held),
            Ok(Acquired::Busy(pid)) => {
                log::info!(
                    "another mcp-tunnel (pid {pid}) holds {}; nothing to do",
                    path.display()
                );
                return 0;
            }
            Err(e) => {
                log::error!("{e}");
                return 1;
            }
        },
    };
    for notice in &cfg.notices {
        log::warn!("{notice}");
    }
    if cfg.ops.http_raw_log {
        crate::http_log::enable();
        if log::log_enabled!(target: crate::http_log::TARGET, log::Level::Debug) {
            log::warn!(
                "--log.http-raw-unsafe: logging every outbound HTTP exchange head (credentials redacted)"
            );
        } else {
            log::warn!("--log.http-raw-unsafe has no effect below --log.level debug");
        }
    }
    let tunnel = match Tunnel::new(cfg) {
        Ok(t) => t,
        Err(e) => {
            log::error!("cannot start the MCP channels: {e}");
            return 1;
        }
    };
    let report: Arc<dyn Report> = Arc::clone(&tunnel) as Arc<dyn Report>;
    let url_file = cfg.ops.health_url_file.as_deref();
    let (started, fix) = match (&cfg.ops.health_unix_socket, &cfg.ops.health_listen) {
        (Some(socket), _) => (
            Some(HealthServer::start_unix(socket, url_file, report)),
            "set HEALTH_UNIX_SOCKET (--health.unix-socket) to a free path",
        ),
        (None, Some(addr)) => (
            Some(HealthServer::start(addr, url_file, report)),
            "set HEALTH_LISTEN_ADDR (--health.listen-addr) or off",
        ),
        (None, None) => (None, ""),
    };
    let health = match started {
        None => None,
        Some(Ok(server)) => {
            log::info!(
                "health server on {} (/healthz, /readyz, /metrics)",
                server.describe()
            );
            Some(server)
        }
        Some(Err(e)) => {
            log::error!("{e}: {fix}");
            tunnel.close(STDIO_STOP_TIMEOUT);
            return 2;
        }
    };
    if let Err(e) = watch_signals(Arc::clone(&tunnel)) {
        log::error!("cannot install signal handlers: {e}");
        return 1;
    }
    log::info!(
        "mcp-tunnel {} starting: tunnel {} via {}{}, instance {}",
        env!("CARGO_PKG_VERSION"),
        cfg.control_plane.tunnel_id,
        cfg.control_plane.base_url,
        cfg.control_plane.url_path,
        tunnel.control_plane().instance_id()
    );
    let waited = crate::ops::startup_wait::wait_for_listeners(
        &cfg.mcp.channels,
        cfg.mcp.startup_wait_timeout,
        tunnel.health(),
        &|delay| tunnel.wait_unless_stopped(delay),
    );
    if !waited {
        log::info!("stopped while waiting for the MCP servers to start");
        tunnel.close(STDIO_STOP_TIMEOUT);
        if let Some(server) = health {
            server.stop();
        }
        return 0;
    }
    match tunnel.control_plane().metadata() {
        Ok(meta) if meta.description.is_empty() => log::info!("tunnel {:?}", meta.name),
        Ok(meta) => log::info!("tunnel {:?}: {}", meta.name, meta.description),
        // Diagnostics only: the poll loop reports (and paces) real problems.
        Err(e) => log::warn!("tunnel metadata unavailable: {e}"),
    }
    if let Err(e) = tunnel.start(cfg.mcp.max_concurrent) {
        log::error!("cannot start threads: {e}");
        return 1;
    }
    let channels: Vec<&str> = cfg.mcp.channels.iter().map(|c| c.name.as_str()).collect();
    log::info!(
        "polling; channels {}; {} workers, {} commands in flight at most",
        channels.join(", "),
        cfg.mcp.max_concurrent,
        cfg.control_plane.max_inflight
    );
    notify::notify("READY=1");
    start_watchdog(Arc::clone(&tunnel), cfg);
    tunnel.wait_stopped();
    notify::notify("STOPPING=1");
    log::info!(
        "stopping: polling ended, draining in-flight commands (up to {:?})",
        cfg.drain_timeout
    );
    let unfinished = tunnel.drain(cfg.drain_timeout);
    if unfinished > 0 {
        log::warn!("drain timeout: {unfinished} command(s) abandoned unanswered");
    }
    tunnel.close(STDIO_STOP_TIMEOUT);
    if let Some(server) = health {
        server.stop();
    }
    log::info!("stopped");
    if tunnel.internal_failure() {
        crate::contain::EXIT_INTERNAL
    } else if tunnel.auth_failed() {
        EXIT_AUTH_FAILURE
    } else {
        0
    }
}

/// With a systemd watchdog, sends `WATCHDOG=1` while the poll thread shows signs of life; a
/// stuck poll thread stops the pings and systemd restarts the service.
fn start_watchdog(tunnel: Arc<Tunnel>, cfg: &RunConfig) {
    let Some(interval) = notify::watchdog_interval() else {
        return;
    };
    // A poll may legitimately take its wait plus guardrail; beyond twice that it is stuck.
    let stuck_after =
        2 * (cfg.control_plane.poll_timeout + cfg.control_plane.poll_deadline_guardrail);
    let spawned = thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            loop {
                if tunnel.poll_thread_idle() < stuck_after {
                    notify::notify("WATCHDOG=1");
                } else {
                    log::error!(
                        "the poll thread shows no sign of life; withholding the watchdog ping"
                    );
                }
                thread::sleep(interval);
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the watchdog thread: {e}");
    }
}

/// The first SIGTERM/SIGINT stops polling; a second one exits at once with code 1. SIGHUP
/// reopens the log file (logrotate).
fn watch_signals(tunnel: Arc<Tunnel>) -> std::io::Result<()> {
    let signals = SignalStream::stop_and_hangup()?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals {
                let Signal::Stop(number) = signal else {
                    crate::logging::reopen();
                    continue;
                };
                seen += 1;
                if seen == 1 {
                    log::info!("signal {number} received; second signal exits immediately");
                    tunnel.stop();
                } else {
                    log::warn!("second signal; exiting without draining");
                    std::process::exit(1);
                }
            }
        })?;
    Ok(())
}
