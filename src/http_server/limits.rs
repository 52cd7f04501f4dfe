//! The bounds the server keeps to, so that a slow or hostile peer cannot exhaust it: connection
//! caps, header and body sizes, and the timeouts of each phase of a connection. Plain data with
//! defaults fit for a public endpoint; [`later`] turns a (possibly absurd) duration into a
//! deadline without ever overflowing.

use std::time::{Duration, Instant};

/// Bounds that keep a slow or hostile peer from exhausting the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent connections; one thread each. Default 256.
    pub max_connections: usize,
    /// Concurrent connections from one peer address (IPv4 address or IPv6 /64). Default: no
    /// separate cap (`usize::MAX`).
    pub max_connections_per_peer: usize,
    /// Of `max_connections`, slots kept for requests `reserved_route` accepts; at least one slot
    /// always stays general. Default 0.
    pub reserved_connections: usize,
    /// Which request paths (without the query) may use a reserved slot. Default: none.
    pub reserved_route: fn(&str) -> bool,
    /// The server's own error answers (400, 408, 413, 431, 501, 503 once a request's path is
    /// known) in the shape a route's callers read: `Some(response)` for a path that has its own
    /// error shape, `None` for the default `{"error":{…}}` body. Default: `None` everywhere.
    pub error_shape: fn(path: &str, status: u16) -> Option<super::Response>,
    /// Request line + headers. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Request body, the most any admission may allow. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Time allowed for a new connection's TLS handshake and first request head, and for each
    /// later request head from its first byte. Default 5 s.
    pub header_timeout: Duration,
    /// Time allowed to receive one whole request once its first byte arrived. Default 30 s.
    /// Also bounds how long a write may block on a peer that does not read.
    pub read_timeout: Duration,
    /// Time a kept-alive connection may sit idle between requests. Default 60 s.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_connections_per_peer: usize::MAX,
            reserved_connections: 0,
            reserved_route: |_| false,
            error_shape: |_, _| None,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
            header_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// `start + duration`; a duration too large to add (a configuration of centuries) counts as a
/// year, which is "never" for any connection.
pub(super) fn later(start: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    start
        .checked_add(duration)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let limits = Limits::default();
        assert_eq!(limits.max_connections, 256);
        assert_eq!(limits.max_header_bytes, 16 * 1024);
        assert_eq!(limits.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(limits.read_timeout, Duration::from_secs(30));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.header_timeout, Duration::from_secs(5));
        assert_eq!(limits.max_connections_per_peer, usize::MAX);
        assert_eq!(limits.reserved_connections, 0);
        assert!(!(limits.reserved_route)("/anything"));
    }
}
