//! The stub's MCP sessions: the set of live `Mcp-Session-Id`s, the only state the stub keeps.
//!
//! `initialize` mints an unguessable id; `DELETE` forgets it. The set is bounded: past
//! [`MAX_SESSIONS`] an arbitrary old session is forgotten, which the spec allows (its client gets
//! 404 and initializes again).

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Random bytes per session id (32 hex characters): 128 bits, not guessable.
pub(super) const SESSION_ID_BYTES: usize = 16;

/// Live sessions kept at most. Clients that never send `DELETE` would otherwise grow the set
/// without bound.
const MAX_SESSIONS: usize = 10_000;

/// What the request's `Mcp-Session-Id` header refers to.
pub(super) enum Session {
    Absent,
    Known(String),
    Unknown,
}

/// The live session ids, shared by all connection threads.
#[derive(Default)]
pub(super) struct Sessions(Mutex<HashSet<String>>);

impl Sessions {
    /// What a request's session header (if any) names.
    pub(super) fn look_up(&self, header: Option<&str>) -> Session {
        match header {
            None => Session::Absent,
            Some(id) => {
                let id = id.trim();
                if self.lock().contains(id) {
                    Session::Known(id.to_string())
                } else {
                    Session::Unknown
                }
            }
        }
    }

    /// A fresh session, remembered until [`Sessions::end`] or eviction.
    pub(super) fn start(&self) -> String {
        let id = crate::crypto::random_hex(SESSION_ID_BYTES);
        let mut sessions = self.lock();
        if sessions.len() >= MAX_SESSIONS {
            let evicted = sessions.iter().next().cloned();
            if let Some(evicted) = evicted {
                sessions.remove(&evicted);
            }
        }
        sessions.insert(id.clone());
        id
    }

    pub(super) fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        // The set stays consistent even if a holder panicked: every update is a single call.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
