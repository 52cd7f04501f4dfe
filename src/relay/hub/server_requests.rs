//! Server→client requests crossing the relay (our extension,
//! [`crate::wire::FEATURE_SERVER_REQUESTS`]): a client instance that announced the feature posts
//! an MCP server's request (sampling, elicitation, roots) as a `jsonrpc_notify` on the command's
//! stream, which the host sees on its event stream like any message. The hub remembers, by the
//! request's id (the client gives each a unique one), which instance and channel asked, so the
//! host's answer (a POST with that id and a result or error, no method) becomes a
//! `server_response` command for that instance alone.
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

/// Who asked, by the request's id (its canonical JSON text) and channel.
#[derive(Default)]
pub(super) struct AskedTable(HashMap<(String, String), (String, Instant)>);

impl AskedTable {
    /// Remembers `message` if it is a request (a method and an id) from `instance` on `channel`.
    pub(super) fn note(&mut self, message: &str, instance: &str, channel: &str) {
        if !message.contains("\"id\"") {
            return; // a notification, the common case: not parsed
        }
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(message) else {
            return;
        };
        let (Some(_), Some(id)) = (m.get("method"), m.get("id")) else {
            return;
        };
        let now = Instant::now();
        self.0
            .retain(|_, (_, at)| now.duration_since(*at) < ASKED_TTL);
        if self.0.len() >= MAX_ASKED
            && let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            self.0.remove(&oldest);
        }
        let key = (channel.to_string(), id.to_string());
        self.0.insert(key, (instance.to_string(), now));
    }

    /// The instance that asked the request `raw_id` names on `channel`, forgotten now (one
    /// answer per request).
    pub(super) fn take(&mut self, channel: &str, raw_id: &str) -> Option<String> {
        let id: Value = serde_json::from_str(raw_id).ok()?;
        let (instance, at) = self.0.remove(&(channel.to_string(), id.to_string()))?;
        (at.elapsed() < ASKED_TTL).then_some(instance)
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
        );
        t.note(
            r#"{"jsonrpc":"2.0","method":"notifications/message"}"#,
            "i1",
            "main",
        );
        assert_eq!(t.take("other", r#""mcpt-sr-1""#), None);
        assert_eq!(t.take("main", r#""mcpt-sr-1""#).as_deref(), Some("i1"));
        assert_eq!(t.take("main", r#""mcpt-sr-1""#), None);
        assert_eq!(t.0.len(), 0);
    }
}
