//! The legacy (2025) handshake, owned by the tunnel for every session sharing one child.
//!
//! A 2025 stdio server takes exactly one `initialize` per process, and a strict one refuses a
//! second ("already initialized") and every request before it. So per process: the first
//! session's `initialize` goes to the child and its params and result are cached; a later one
//! (another session) is answered from the cache with the caller's id and never forwarded;
//! `notifications/initialized` reaches each child once and is acknowledged (202) after that. When
//! the child restarts, the cached `initialize` (under an internal id, its answer consumed) and
//! `notifications/initialized` are replayed to the new child before anything else, so open
//! sessions go on as if nothing happened. The sessions then share what the first `initialize`
//! negotiated (capabilities, protocol version): that is the price of one shared process.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;

use super::object::Object;
use super::process::{Call, Event, Process, Shared};
use crate::mcp::{Outcome, Reply};
use crate::wire::RpcShape;

/// Longest the replayed `initialize` may take on a restarted child before calls go to it anyway.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an internal request's wait checks whether the child is gone.
const GONE_CHECK: Duration = Duration::from_millis(100);

/// What one process remembers of the handshake.
#[derive(Default)]
pub(super) struct Handshake {
    /// The first successful `initialize`: its params (as sent) and its result (as answered).
    cached: Option<(Option<Box<RawValue>>, Box<RawValue>)>,
    /// An `initialize` is on its way to the child; later ones wait for its result.
    pending: bool,
    /// Some host has sent `notifications/initialized`: a restarted child gets it too.
    initialized_seen: bool,
    /// The current child has received `notifications/initialized`.
    child_notified: bool,
}

impl Handshake {
    /// A new child has received nothing yet.
    pub(super) fn child_gone(&mut self) {
        self.child_notified = false;
    }
}

/// What the handshake makes of one message.
pub(super) enum Intercept {
    /// Answered here; the child never sees it.
    Answer(Outcome),
    /// Goes to the child as any message does.
    Forward,
    /// The `initialize` that goes to the child; its result is to be cached.
    Initialize,
}

impl Process {
    /// The cached answer to a later `initialize`, when a session already initialized this process.
    pub(super) fn cached_initialize(&self, shape: &RpcShape) -> Option<Outcome> {
        let id = shape.id.as_ref()?;
        if shape.method.as_deref() != Some("initialize") {
            return None;
        }
        let state = self.shared.lock();
        let (_, result) = state.handshake.cached.as_ref()?;
        Some(answer_from_cache(result, id))
    }

    /// Decides what becomes of `shape`; a second `initialize` while the first is on its way waits
    /// (at most until `limit`) for its result.
    pub(super) fn intercept(&self, shape: &RpcShape, limit: Instant) -> Intercept {
        let mut state = self.shared.lock();
        match (shape.method.as_deref(), &shape.id) {
            (Some("initialize"), Some(id)) => loop {
                if let Some((_, result)) = &state.handshake.cached {
                    return Intercept::Answer(answer_from_cache(result, id));
                }
                let now = Instant::now();
                if !state.handshake.pending || now >= limit {
                    // The first (or the one before failed, or took too long: let this one try).
                    state.handshake.pending = true;
                    return Intercept::Initialize;
                }
                state = self
                    .shared
                    .status_changed
                    .wait_timeout(state, limit - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            },
            (Some("notifications/initialized"), None) => {
                let handshake = &mut state.handshake;
                handshake.initialized_seen = true;
                if std::mem::replace(&mut handshake.child_notified, true) {
                    log::debug!(
                        "[{}] notifications/initialized already sent to this stdio server; \
                         acknowledged",
                        self.shared.channel
                    );
                    Intercept::Answer(Outcome::Reply(super::process::ack(202)))
                } else {
                    Intercept::Forward
                }
            }
            _ => Intercept::Forward,
        }
    }

    /// Caches the forwarded `initialize` when the child accepted it, and lets waiting ones go on.
    pub(super) fn initialize_done(&self, params: Option<Box<RawValue>>, outcome: &Outcome) {
        let result = match outcome {
            Outcome::Reply(reply) if reply.failure.is_none() => reply
                .resp_json
                .as_deref()
                .and_then(|raw| Object::parse(raw.get()))
                .and_then(|answer| answer.get("result").map(RawValue::to_owned)),
            _ => None,
        };
        let mut state = self.shared.lock();
        state.handshake.pending = false;
        if state.handshake.cached.is_none()
            && let Some(result) = result
        {
            state.handshake.cached = Some((params, result));
        }
        drop(state);
        self.shared.status_changed.notify_all();
    }
}

impl Shared {
    /// Replays the cached handshake to a child that has just started, before any other message.
    pub(super) fn replay_handshake(&self) {
        let (params, notify) = {
            let state = self.lock();
            match &state.handshake.cached {
                Some((params, _)) => (params.clone(), state.handshake.initialized_seen),
                None => return,
            }
        };
        match self.internal_request("initialize", params.as_deref(), REPLAY_TIMEOUT) {
            Some(answer)
                if Object::parse(answer.get()).is_some_and(|o| o.get("result").is_some()) =>
            {
                log::info!(
                    "[{}] replayed the cached initialize to the restarted stdio server",
                    self.channel
                )
            }
            Some(_) => log::warn!(
                "[{}] the restarted stdio server refused the replayed initialize",
                self.channel
            ),
            None => log::warn!(
                "[{}] the restarted stdio server did not answer the replayed initialize in {}s",
                self.channel,
                REPLAY_TIMEOUT.as_secs()
            ),
        }
        if notify {
            let line = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
            if self.write_line(line).is_ok() {
                self.lock().handshake.child_notified = true;
            }
        }
    }

    /// A request of our own to the current child (the era probe, the replayed `initialize`): its
    /// answer, or `None` when the child went away, we are stopping, or `timeout` passed.
    pub(super) fn internal_request(
        &self,
        method: &str,
        params: Option<&RawValue>,
        timeout: Duration,
    ) -> Option<Box<RawValue>> {
        let internal = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = Object::default();
        request.set("jsonrpc", &Value::from("2.0"));
        request.set("id", &Value::from(internal));
        request.set("method", &Value::from(method));
        if let Some(params) = params {
            request.set_raw("params", params.to_owned());
        }
        let (events, inbox) = mpsc::channel();
        self.lock().calls.insert(
            internal,
            Call {
                events,
                progress: None,
                original_id: Value::Null,
                session: None,
                listen: false,
            },
        );
        let answer = self.await_internal(&request, &inbox, timeout);
        self.lock().calls.remove(&internal);
        answer
    }

    fn await_internal(
        &self,
        request: &Object,
        inbox: &mpsc::Receiver<Event>,
        timeout: Duration,
    ) -> Option<Box<RawValue>> {
        self.write_line(request.to_raw().get()).ok()?;
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline || self.stopping.load(Ordering::SeqCst) || self.reader_lock().done {
                return None;
            }
            match inbox.recv_timeout(GONE_CHECK.min(deadline - now)) {
                Ok(Event::Response(raw)) => return Some(raw),
                Ok(Event::Notification(_)) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Event::Closed | Event::Cancelled) | Err(RecvTimeoutError::Disconnected) => {
                    return None;
                }
            }
        }
    }
}

/// `{"jsonrpc":"2.0","id":<the caller's>,"result":<cached>}`, as the child would have answered.
fn answer_from_cache(result: &RawValue, id: &Value) -> Outcome {
    let mut answer = Object::default();
    answer.set("jsonrpc", &Value::from("2.0"));
    answer.set("id", id);
    answer.set_raw("result", result.to_owned());
    let mut resp_headers = BTreeMap::new();
    resp_headers.insert(
        "Content-Type".to_string(),
        vec!["application/json".to_string()],
    );
    Outcome::Reply(Reply::upstream(answer.to_raw(), resp_headers, 200))
}
