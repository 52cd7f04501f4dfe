//! `mcp-tunnel run`: wires the configuration, the signal handling and the [`Tunnel`] together.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::RunConfig;
use crate::dispatch::Tunnel;

/// How long stdio servers get to exit on shutdown (stdin closed, then SIGTERM, then kill).
const STDIO_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the client until SIGTERM/SIGINT, then drains. Returns the process exit code.
pub fn run(cfg: &RunConfig) -> i32 {
    let tunnel = match Tunnel::new(cfg) {
        Ok(t) => t,
        Err(e) => {
            log::error!("cannot start the MCP channels: {e}");
            return 1;
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
    match tunnel.control_plane().metadata() {
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
    tunnel.wait_stopped();
    log::info!(
        "stopping: polling ended, draining in-flight commands (up to {:?})",
        cfg.drain_timeout
    );
    let unfinished = tunnel.drain(cfg.drain_timeout);
    if unfinished > 0 {
        log::warn!("drain timeout: {unfinished} command(s) abandoned unanswered");
    }
    tunnel.close(STDIO_STOP_TIMEOUT);
    log::info!("stopped");
    0
}

/// The first SIGTERM/SIGINT stops polling; a second one exits at once with code 1.
fn watch_signals(tunnel: Arc<Tunnel>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen == 1 {
                    log::info!("signal {signal} received; second signal exits immediately");
                    tunnel.stop();
                } else {
                    log::warn!("second signal; exiting without draining");
                    std::process::exit(1);
                }
            }
        })?;
    Ok(())
}

/// Blocks until SIGTERM or SIGINT (for the servers, which have nothing to drain).
pub fn wait_for_stop_signal() {
    match Signals::new([SIGTERM, SIGINT]) {
        Ok(mut signals) => {
            if let Some(signal) = signals.forever().next() {
                log::info!("signal {signal} received; stopping");
            }
        }
        Err(e) => log::error!("cannot install signal handlers: {e}"),
    }
}
