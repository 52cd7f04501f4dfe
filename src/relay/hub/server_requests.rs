//! Server→client requests crossing the relay (our extension,
//! [`crate::wire::FEATURE_SERVER_REQUESTS`]): a client instance that announced the feature posts
//! an MCP server's request (sampling, elicitation, roots) as a `jsonrpc_notify` on the command's
//! stream, which the host sees on its event stream like any message. The hub remembers, by the
//! request's id (the client gives each a unique one), which instance and channel asked, and in
//! which session when the command was in one, so the host's answer (a POST with that id and a
//! result or error, no method, in that same session) becomes a `server_response` command for
//! that instance alone. An answer from another session (or none) is not the asked host's: it is
//! treated as unknown, and the request stays remembered for its own host.
//!
//! Bounded: at most [`MAX_ASKED`] per tunnel, each for [`ASKED_TTL`]; the oldest goes first.
//! An answer to an id not remembered (expired, never asked, or asked of a client without the
//! feature) takes the contract's way: an ordinary `jsonrpc` command.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Most server requests remembered per tunnel.
pub const MAX_ASKED: usize = 4096;
/// How long one is remembered (servers give up on theirs sooner).
pub const ASKED_TTL: Duration = Duration::from_secs(600);

/// The id of `message` as canonical JSON text when it is a request (a method and an id).
pub(super) fn request_id(message: &str) -> Option<String> {
    if !message.contains("\"id\"") {
        return None; // a notification, the common case: not parsed
    }
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(message) else {
        return None;
    };
    m.get("method")?;
    Some(m.get("id")?.to_string())
}

/// `raw_id` (an answer's id as posted) as canonical JSON text.
pub(super) fn canonical_id(raw_id: &str) -> Option<String> {
    serde_json::from_str::<Value>(raw_id)
        .ok()
        .map(|v| v.to_string())
}

/// Who asked: the instance and the session the request came in (if any).
struct Asker {
    instance: String,
    session: Option<String>,
    at: Instant,
}

/// Who asked, by the request's id (its canonical JSON text) and channel.
#[derive(Default)]
pub(super) struct AskedTable(HashMap<(String, String), Asker>);

impl AskedTable {
    /// Remembers `message` if it is a request (a method and an id) from `instance` on `channel`,
    /// forwarded on a command of `session`.
    pub(super) fn note(
        &mut self,
        message: &str,
        instance: &str,
        channel: &str,
        session: Option<&str>,
    ) {
        let Some(id) = request_id(message) else {
            return;
        };
        let now = Instant::now();
        self.0.retain(|_, a| now.duration_since(a.at) < ASKED_TTL);
        if self.0.len() >= MAX_ASKED
            && let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, a)| a.at)
                .map(|(k, _)| k.clone())
        {
            self.0.remove(&oldest);
        }
        let key = (channel.to_string(), id);
        let asker = Asker {
            instance: instance.to_string(),
            session: session.map(str::to_string),
            at: now,
        };
        self.0.insert(key, asker);
    }

    /// The instance that asked the request `raw_id` names on `channel`, forgotten now (one
    /// answer per request). A request asked in a session is answered only from that session
    /// (`session`): from any other it stays remembered and this is `None`.
    pub(super) fn take(
        &mut self,
        channel: &str,
        raw_id: &str,
        session: Option<&str>,
    ) -> Option<String> {
        let key = (channel.to_string(), canonical_id(raw_id)?);
        let asked_in = self.0.get(&key)?.session.as_deref();
        if asked_in.is_some() && asked_in != session {
            return None;
        }
        let asker = self.0.remove(&key)?;
        (asker.at.elapsed() < ASKED_TTL).then_some(asker.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_finds_who_asked_once_and_only_on_that_channel() {
        let mut t = AskedTable::default();
        t.note(
            r#"{"jsonrpc":"2.0","id":"mcpt-sr-1","method":"roots/list"}"#,
            "i1",
            "main",
            None,
        );
        t.note(
            r#"{"jsonrpc":"2.0","method":"notifications/message"}"#,
            "i1",
            "main",
            None,
        );
        assert_eq!(t.take("other", r#""mcpt-sr-1""#, None), None);
        assert_eq!(
            t.take("main", r#""mcpt-sr-1""#, None).as_deref(),
            Some("i1")
        );
        assert_eq!(t.take("main", r#""mcpt-sr-1""#, None), None);
        assert_eq!(t.0.len(), 0);
    }

    #[test]
    fn a_request_asked_in_a_session_is_answered_only_from_it() {
        let mut t = AskedTable::default();
        let ask = r#"{"jsonrpc":"2.0","id":7,"method":"roots/list"}"#;
        t.note(ask, "i1", "main", Some("s1"));
        assert_eq!(t.take("main", "7", None), None);
        assert_eq!(t.take("main", "7", Some("s2")), None);
        assert_eq!(t.take("main", "7", Some("s1")).as_deref(), Some("i1"));
        assert_eq!(t.take("main", "7", Some("s1")), None);
    }
}
