//! The one place signal handlers are installed. `run` and `relay` take SIGTERM and SIGINT as
//! "stop" and SIGHUP as "reopen logs / reload"; the stub and the demo, which have nothing to
//! reload, only wait for a stop. What each command does with a signal stays in that command.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A signal, as the commands act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT (the number, for the log line).
    Stop(i32),
    /// SIGHUP: reopen the log file (logrotate); the relay also reloads its tunnels file.
    Hangup,
}

/// SIGTERM, SIGINT and SIGHUP, delivered in order as [`Signal`]s.
pub struct SignalStream(Signals);

impl SignalStream {
    /// Installs the handlers. From here on these signals no longer take their default action.
    pub fn stop_and_hangup() -> std::io::Result<Self> {
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map(Self)
    }
}

impl Iterator for SignalStream {
    type Item = Signal;

    /// Blocks until the next signal.
    fn next(&mut self) -> Option<Signal> {
        self.0.forever().next().map(|signal| {
            if signal == SIGHUP {
                Signal::Hangup
            } else {
                Signal::Stop(signal)
            }
        })
    }
}

/// Blocks until SIGTERM or SIGINT (for the servers, which have nothing to drain). SIGHUP keeps
/// its default action.
pub fn wait_for_stop() {
    match Signals::new([SIGTERM, SIGINT]) {
        Ok(mut signals) => {
            if let Some(signal) = signals.forever().next() {
                log::info!("signal {signal} received; stopping");
            }
        }
        Err(e) => log::error!("cannot install signal handlers: {e}"),
    }
}
