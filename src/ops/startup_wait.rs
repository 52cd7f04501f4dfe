//! `--mcp.startup-wait-timeout`: before the first poll, wait until each Streamable HTTP channel's
//! server accepts a connection (a sidecar that starts after us), so that the first commands do
//! not fail against a listener that is not up yet.
//!
//! A connection counts as accepted when the TCP handshake (or the Unix-socket connect) succeeds;
//! nothing is sent. The server is dialled itself, never through a proxy: the question is whether
//! its listener is up. One deadline covers all channels. While it waits, `/readyz` says what for;
//! when the deadline passes, polling starts anyway (as the official client does) and `/readyz`
//! stays not ready, naming the channel, until that channel's server is seen to answer.

use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Health;
use crate::config::{ChannelConfig, ChannelTransport};

/// The flag, for messages.
const FLAG: &str = "--mcp.startup-wait-timeout";
/// Longest single connection attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed attempt: from the first to the last, doubling.
const FIRST_RETRY: Duration = Duration::from_millis(50);
const LAST_RETRY: Duration = Duration::from_millis(500);

/// Where a channel's server listens.
enum Listener {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl Listener {
    fn of(url: &str, unix_socket: Option<&PathBuf>) -> Option<Listener> {
        if let Some(path) = unix_socket {
            return Some(Listener::Unix(path.clone()));
        }
        let uri: ureq::http::Uri = url.parse().ok()?;
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        Some(Listener::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// One attempt to connect, closed at once; the error says why it failed.
    fn accepts(&self, left: Duration) -> Result<(), String> {
        let timeout = left.clamp(Duration::from_millis(1), ATTEMPT_TIMEOUT);
        match self {
            Listener::Unix(path) => UnixStream::connect(path)
                .map(drop)
                .map_err(|e| format!("{}: {e}", path.display())),
            Listener::Tcp { host, port } => {
                let addrs = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| format!("{host}:{port}: {e}"))?;
                let mut last = format!("{host}:{port}: no address");
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(_) => return Ok(()),
                        Err(e) => last = format!("{addr}: {e}"),
                    }
                }
                Err(last)
            }
        }
    }
}

/// Waits (at most `timeout` in all) for every HTTP channel's listener, reporting to `health`.
/// `pause` sleeps for the given time and answers false once the client is stopping; the wait
/// then ends at once. Returns false when it ended that way.
pub fn wait_for_listeners(
    channels: &[ChannelConfig],
    timeout: Duration,
    health: &Health,
    pause: &dyn Fn(Duration) -> bool,
) -> bool {
    if timeout.is_zero() {
        return true;
    }
    let started = Instant::now();
    for channel in channels {
        let ChannelTransport::Http { url, net } = &channel.transport else {
            continue; // a stdio server is our child: it is there once spawned
        };
        let Some(listener) = Listener::of(url, net.unix_socket.as_ref()) else {
            continue;
        };
        let name = &channel.name;
        health.startup_problem(
            name,
            Some(format!(
                "waiting for mcp channel {name} to accept connections ({FLAG} {timeout:?})"
            )),
        );
        let mut retry = FIRST_RETRY;
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let error = match listener.accepts(left) {
                Ok(()) => {
                    log::info!("mcp channel {name} accepts connections");
                    health.startup_problem(name, None);
                    break;
                }
                Err(e) => e,
            };
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                log::warn!(
                    "mcp channel {name} did not accept connections within {timeout:?} ({FLAG}): \
                     {error}; polling anyway"
                );
                health.startup_problem(
                    name,
                    Some(format!(
                        "mcp channel {name} did not accept connections within {timeout:?} \
                         ({FLAG}): {error}"
                    )),
                );
                return true;
            }
            log::debug!("mcp channel {name} not accepting connections yet: {error}");
            if !pause(retry.min(left)) {
                return false;
            }
            retry = (retry * 2).min(LAST_RETRY);
        }
    }
    true
}
