//! Process affinity's table: which client instance holds each MCP session of a process-affine
//! channel, so later commands of that session go to the same process.
//!
//! Bounded: past [`MAX_SESSIONS`] bindings the oldest goes first.

use std::collections::{HashMap, VecDeque};

use crate::wire::ResponsePayload;

/// The longest session → instance table kept per tunnel; the oldest binding goes first. Bounds
/// memory when connectors open sessions and never end them.
const MAX_SESSIONS: usize = 10_000;

/// `Mcp-Session-Id` → instance id, with insertion order for eviction.
#[derive(Default)]
pub(super) struct SessionTable {
    owners: HashMap<String, String>,
    order: VecDeque<String>,
}

impl SessionTable {
    /// The instance holding `session`, if it is bound.
    pub(super) fn owner(&self, session: &str) -> Option<&String> {
        self.owners.get(session)
    }

    pub(super) fn bind(&mut self, session: String, instance: String) {
        if self.owners.insert(session.clone(), instance).is_none() {
            self.order.push_back(session);
        }
        while self.order.len() > MAX_SESSIONS {
            if let Some(old) = self.order.pop_front() {
                self.owners.remove(&old);
            }
        }
    }

    /// Forgets a binding. Its place in the eviction order stays until it comes round.
    pub(super) fn end(&mut self, session: &str) {
        self.owners.remove(session);
    }
}

/// The session id an MCP server's answer names, if any.
pub(super) fn session_of(payload: &ResponsePayload) -> Option<String> {
    payload
        .resp_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("mcp-session-id"))
        .and_then(|(_, v)| v.first().cloned())
}
