//! What the hub knows of one tunnel client instance (one run of `mcp-tunnel run`): its waiting
//! polls, when it was last seen, the channels it declared process-affine, the extension features
//! it announced and the `cancel` commands waiting for it, and the connections of
//! its recent requests, from which it tells when the instance is gone.
//!
//! Gone is decided from evidence the client's side gave: all its connections closed by the
//! peer, nothing new for [`CLIENT_GONE_GRACE`]. A connection the relay closed itself proves
//! nothing.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::queue::CancelOrder;
use crate::http_server::{ConnectionEnd, ConnectionHandle};
use crate::wire::Extensions;

/// How long after its last connection was closed by the peer a client instance (without a
/// waiting poll) counts as gone; its delivered, unanswered commands then fail. Long enough for
/// a live client to reconnect after its HTTP library dropped a pooled connection.
pub const CLIENT_GONE_GRACE: Duration = Duration::from_secs(5);

/// How long a client instance that stopped polling is remembered before it is forgotten. Every
/// client restart brings a new instance id; without this the table would only grow.
pub(super) const FORGET_INSTANCE_AFTER: Duration = Duration::from_secs(3600);

/// Connection handles remembered per instance (its recent requests' connections). A client uses
/// one connection per worker plus the poll; more are not needed to see that all are closed.
const TRACKED_CONNECTIONS: usize = 32;

#[derive(Default)]
pub(super) struct Instance {
    pub(super) waiting_polls: usize,
    pub(super) last_seen: Option<Instant>,
    pub(super) affine_channels: HashSet<String>,
    /// The extension features it announced on its last poll (and the relay speaks).
    pub(super) extensions: Extensions,
    /// `cancel` commands for it, handed out with its next poll (our extension).
    pub(super) cancels: VecDeque<CancelOrder>,
    /// Connections of its recent requests, newest last.
    connections: VecDeque<ConnectionHandle>,
}

impl Instance {
    /// Gone: no poll of it waits, none of its connections is open, and the one that ended last
    /// was closed by the client's side at least [`CLIENT_GONE_GRACE`] ago. A connection the
    /// relay closed itself (idle timeout, a client that did not read) proves nothing, so then
    /// the instance is not gone; its commands wait for their deadline as before.
    pub(super) fn gone(&self, now: Instant) -> bool {
        if self.waiting_polls > 0 {
            return false;
        }
        let mut last: Option<ConnectionEnd> = None;
        for c in &self.connections {
            let Some(end) = c.end() else {
                return false;
            };
            if last.is_none_or(|l| end.at >= l.at) {
                last = Some(end);
            }
        }
        last.is_some_and(|l| l.by_peer && now.duration_since(l.at) >= CLIENT_GONE_GRACE)
    }

    pub(super) fn track(&mut self, connection: &ConnectionHandle) {
        if self.connections.iter().any(|c| c.same_as(connection)) {
            return;
        }
        self.connections.push_back(connection.clone());
        while self.connections.len() > TRACKED_CONNECTIONS {
            self.connections.pop_front();
        }
    }
}

impl super::TunnelHub {
    /// Client instances of this node counted as connected (for metrics).
    pub fn live_instances(&self) -> usize {
        let inner = self.lock();
        let now = Instant::now();
        inner
            .instances
            .values()
            .filter(|i| self.alive(i, now))
            .count()
    }

    /// The client instances this node knows, for the status page: id, whether counted
    /// connected, polls of it waiting now.
    pub fn instance_states(&self) -> Vec<(String, bool, usize)> {
        let inner = self.lock();
        let now = Instant::now();
        inner
            .instances
            .iter()
            .map(|(id, i)| (id.clone(), self.alive(i, now), i.waiting_polls))
            .collect()
    }

    /// Requests handed to this node's hub and not answered yet (queued or delivered).
    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// Wakes every held poll (a draining relay's polls see their stop at once).
    pub fn wake_polls(&self) {
        self.queued.notify_all();
    }
}
