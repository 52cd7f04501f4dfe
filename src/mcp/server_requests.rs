//! Server→client requests (sampling, elicitation, roots) crossing the tunnel, our extension of
//! the contract ([`crate::wire::FEATURE_SERVER_REQUESTS`]), on the transport's side: which are
//! forwarded, and the ids they cross with.
//!
//! - **When.** Only while the control plane's last answer named the feature ([`set_on`], from
//!   the dispatcher before each call; one control plane per process, so one switch); otherwise a
//!   transport refuses such a request at once with `-32601 not supported through tunnel`, as
//!   before.
//! - **Ids.** A forwarded request crosses with an id of our own, `mcpt-sr-<random>-<n>`, unique
//!   across client instances and sessions, so the relay can route the host's answer back by it
//!   alone; the server's own id is kept here and put back when the answer comes
//!   ([`Asked::answer`]), byte for byte otherwise. At most [`MAX_ASKED`] are kept, each for
//!   [`ASKED_TTL`] (a server's own request timeout is shorter); past that an answer is passed on
//!   unchanged, which the server ignores.
//! - **Sessions.** Over HTTP a request asked in a session (the command's `Mcp-Session-Id`) has
//!   its id put back only for an answer in that same session; an answer from another session
//!   passes unchanged, as an unknown one does. (A stdio child's requests are not tied to one.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;

use crate::crypto::random_hex;
use crate::wire::RpcShape;

/// Most server requests awaiting their answer, per transport.
pub const MAX_ASKED: usize = 1024;
/// How long one awaits its answer.
pub const ASKED_TTL: Duration = Duration::from_secs(600);
/// The start of every id we give a forwarded request.
pub const ID_PREFIX: &str = "mcpt-sr-";

/// Whether server requests are forwarded (the control plane named the feature).
static ON: AtomicBool = AtomicBool::new(false);

pub fn set_on(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

pub fn is_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The server requests one transport (or stdio child) forwarded and awaits answers for.
pub struct Asked {
    prefix: String,
    next: AtomicU64,
    /// Ours → who waits for it.
    waiting: Mutex<HashMap<String, Waiting>>,
}

/// The server's id, the session it was asked in, when.
type Waiting = (Value, Option<String>, Instant);

impl Default for Asked {
    fn default() -> Asked {
        Asked {
            prefix: format!("{ID_PREFIX}{}-", random_hex(8)),
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl Asked {
    /// The request to forward, with an id of ours in place of `id` (the server's), asked in
    /// `session`.
    pub fn tunnel(&self, raw: &RawValue, id: &Value, session: Option<&str>) -> Box<RawValue> {
        let ours = format!(
            "{}{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let now = Instant::now();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.retain(|_, (_, _, at)| now.duration_since(*at) < ASKED_TTL);
        if waiting.len() >= MAX_ASKED
            && let Some(oldest) = waiting
                .iter()
                .min_by_key(|(_, (_, _, at))| *at)
                .map(|(k, _)| k.clone())
        {
            waiting.remove(&oldest);
        }
        let session = session.map(str::to_string);
        waiting.insert(ours.clone(), (id.clone(), session, now));
        with_id(raw, &Value::String(ours))
    }

    /// A host's answer (a message without `method`) to a request we forwarded, with the server's
    /// id back in place; `None` when `raw` is no such answer, or comes from another session than
    /// `session` while the request was asked in one.
    pub fn answer(&self, raw: &RawValue, session: Option<&str>) -> Option<Box<RawValue>> {
        let shape = RpcShape::of(raw.get()).filter(|s| s.method.is_none())?;
        let ours = shape.id.as_ref()?.as_str()?;
        if !ours.starts_with(&self.prefix) {
            return None;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let (_, asked_in, _) = waiting.get(ours)?;
        if asked_in.is_some() && asked_in.as_deref() != session {
            return None;
        }
        let (id, _, _) = waiting.remove(ours)?;
        Some(with_id(raw, &id))
    }
}

/// The `Mcp-Session-Id` among a command's headers.
pub fn session_in(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id"))
        .map(|(_, v)| v.as_str())
}

/// `raw` with its top-level `id` set to `id`, every other member's text untouched.
pub fn with_id(raw: &RawValue, id: &Value) -> Box<RawValue> {
    super::stdio::restore_id(raw, id)
}

/// The error a server gets for a request that cannot cross.
pub fn refusal(id: &Value) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": -32601, "message": "not supported through tunnel" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_request_crosses_with_our_id_and_its_answer_gets_the_servers_back() {
        let asked = Asked::default();
        let request = RawValue::from_string(
            r#"{"jsonrpc":"2.0","id":7,"method":"roots/list","params":{}}"#.into(),
        )
        .unwrap();
        let out = asked.tunnel(&request, &Value::from(7), None);
        let ours = RpcShape::of(out.get()).unwrap().id.unwrap();
        let ours = ours.as_str().unwrap();
        assert!(ours.starts_with(ID_PREFIX), "{ours}");
        assert!(out.get().contains(r#""method":"roots/list""#));
        let answer = format!(r#"{{"jsonrpc":"2.0","id":"{ours}","result":{{"roots":[]}}}}"#);
        let answer = RawValue::from_string(answer).unwrap();
        let back = asked.answer(&answer, None).unwrap();
        assert_eq!(
            back.get(),
            r#"{"jsonrpc":"2.0","id":7,"result":{"roots":[]}}"#
        );
        // Once only; a request or a foreign id is no answer.
        assert!(asked.answer(&answer, None).is_none());
        assert!(asked.answer(&request, None).is_none());
    }

    #[test]
    fn a_request_asked_in_a_session_gets_its_id_back_only_from_that_session() {
        let asked = Asked::default();
        let request =
            RawValue::from_string(r#"{"jsonrpc":"2.0","id":"s","method":"roots/list"}"#.into())
                .unwrap();
        let out = asked.tunnel(&request, &Value::from("s"), Some("sess-1"));
        let ours = RpcShape::of(out.get()).unwrap().id.unwrap();
        let answer = format!(r#"{{"jsonrpc":"2.0","id":{ours},"result":{{}}}}"#);
        let answer = RawValue::from_string(answer).unwrap();
        assert!(asked.answer(&answer, Some("sess-2")).is_none());
        assert!(asked.answer(&answer, None).is_none());
        let back = asked.answer(&answer, Some("sess-1")).unwrap();
        assert_eq!(back.get(), r#"{"jsonrpc":"2.0","id":"s","result":{}}"#);
    }
}
