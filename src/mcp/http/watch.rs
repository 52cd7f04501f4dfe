//! A 2025 session's standalone stream, held by the client itself so that a server→client request
//! the server sends there (as server-everything does with `roots/list`) is refused at once
//! instead of waiting, unheard, for an answer that never comes while the tool call hangs.
//!
//! - **When.** Before a session's first request (not `initialize`) goes out, unless the host
//!   holds the session's `GET` stream itself (a `stream` command, see [`super::stream`]: the
//!   requests then arrive there, forwarded or refused). The call waits for the server's answer
//!   to the `GET` for at most [`OPEN_WAIT`], so the stream is there before the request that may
//!   lead the server to use it. A server that does not offer the stream (any answer that is not
//!   a 2xx event stream) is not asked again for that session.
//! - **What it does.** A server→client request on it gets `-32601 not supported through tunnel`
//!   (nothing can take it to the host: no call's stream is tied to it); notifications on it are
//!   dropped, as the server drops them when no stream is open.
//! - **Bounds.** At most [`MAX_WATCHES`] sessions at once (the least recently used one is
//!   closed for a new one); one unused for [`WATCH_IDLE`] is closed at the next call; a
//!   session's `DELETE`, or the host opening its own `GET`, closes it. Each is one thread and
//!   one connection to the MCP server.

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use ureq::Agent;

use super::{HttpTransport, MAX_RESPONSE_BODY, SERVER_REQUEST_REPLY_TIMEOUT, content_type, drain};
use crate::failure::Failure;
use crate::http_client::{self, CancelFlag};
use crate::mcp::server_requests;
use crate::mcp::sse::SseReader;
use crate::wire::RpcShape;

/// Longest a call waits for its session's standalone stream to open.
pub(super) const OPEN_WAIT: Duration = Duration::from_secs(1);
/// Most sessions whose standalone stream the client holds at once, per server.
pub(super) const MAX_WATCHES: usize = 64;
/// A watched session without a call this long has its stream closed.
pub(super) const WATCH_IDLE: Duration = Duration::from_secs(300);
/// Longest one standalone stream is held (then reopened by the next call).
const WATCH_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The sessions watched, by session id, and those whose `GET` the host holds (how many).
#[derive(Default)]
pub(super) struct Watches(Mutex<HashMap<String, Watch>>, Mutex<HashMap<String, usize>>);

struct Watch {
    /// `None`: the server offers no standalone stream for this session.
    flag: Option<CancelFlag>,
    used: Instant,
    /// Cleared when its thread ends (the server closed the stream): the next call reopens it.
    alive: Arc<AtomicBool>,
}

impl Watches {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Watch>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure the session the headers name (if any) has its standalone stream held.
    pub(super) fn ensure(&self, transport: &HttpTransport, command_headers: &[(String, String)]) {
        let Some(session) = session_of(command_headers) else {
            return;
        };
        let now = Instant::now();
        let flag = {
            let mut watches = self.lock();
            watches.retain(|_, w| {
                let keep = now.duration_since(w.used) < WATCH_IDLE;
                if !keep && let Some(flag) = &w.flag {
                    flag.cancel();
                }
                keep
            });
            if let Some(w) = watches.get_mut(&session)
                && (w.flag.is_none() || w.alive.load(Ordering::SeqCst))
            {
                w.used = now;
                return;
            }
            if self.held().contains_key(&session) {
                return;
            }
            if watches.len() >= MAX_WATCHES
                && let Some(oldest) = watches
                    .iter()
                    .min_by_key(|(_, w)| w.used)
                    .map(|(s, _)| s.clone())
                && let Some(w) = watches.remove(&oldest)
                && let Some(flag) = w.flag
            {
                flag.cancel();
            }
            let flag = CancelFlag::default();
            let alive = Arc::new(AtomicBool::new(true));
            let watch = Watch {
                flag: Some(flag.clone()),
                used: now,
                alive: Arc::clone(&alive),
            };
            watches.insert(session.clone(), watch);
            (flag, alive)
        };
        let (flag, alive) = flag;
        let (opened, seen) = mpsc::channel();
        let upstream = Upstream {
            agent: transport.agent.clone(),
            url: transport.url.clone(),
            headers: transport.header_list(command_headers),
        };
        let name = session.clone();
        let spawned = thread::Builder::new()
            .name("mcp-watch".into())
            .spawn(move || {
                http_client::cancellable(&flag, || upstream.hold(&name, &opened));
                alive.store(false, Ordering::SeqCst);
            });
        let offered = spawned.is_ok() && seen.recv_timeout(OPEN_WAIT).unwrap_or(true);
        if !offered && let Some(w) = self.lock().get_mut(&session) {
            w.flag = None; // not asked again for this session
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.1.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host opens the session's `GET` itself: no watch while it holds it (ours, if any, is
    /// closed first, as a server may allow one such stream per session). Undone by
    /// [`Watches::released`].
    /// The host opens the session's standalone stream itself: ours is closed. `true` when ours
    /// was open, so the server may answer the host's GET 409 until it notices the close.
    pub(super) fn held_by_host(&self, command_headers: &[(String, String)]) -> bool {
        let Some(session) = session_of(command_headers) else {
            return false;
        };
        *self.held().entry(session).or_default() += 1;
        self.stop(command_headers)
    }

    pub(super) fn released(&self, command_headers: &[(String, String)]) {
        if let Some(session) = session_of(command_headers) {
            let mut held = self.held();
            if let Some(n) = held.get_mut(&session) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&session);
                }
            }
        }
    }

    /// Closes the session's standalone stream (its `DELETE`, or the host opening its own);
    /// `true` when one was open.
    pub(super) fn stop(&self, command_headers: &[(String, String)]) -> bool {
        let Some(session) = session_of(command_headers) else {
            return false;
        };
        if let Some(Watch {
            flag: Some(flag), ..
        }) = self.lock().remove(&session)
        {
            flag.cancel();
            return true;
        }
        false
    }
}

/// What the watch thread needs of its transport.
struct Upstream {
    agent: Agent,
    url: String,
    headers: Vec<(String, String)>,
}

impl Upstream {
    /// Holds the stream until it ends or is cancelled; tells `opened` whether it opened.
    fn hold(&self, session: &str, opened: &Sender<bool>) {
        let mut req = self.agent.get(&self.url);
        for (name, value) in &self.headers {
            if !name.eq_ignore_ascii_case("accept") {
                req = req.header(name.as_str(), value.as_str());
            }
        }
        let req = req.header("Accept", "text/event-stream");
        let mut resp = match http_client::with_timeout(req, WATCH_LIFETIME).call() {
            Ok(resp) => resp,
            Err(_) => {
                let _ = opened.send(false);
                return;
            }
        };
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) || content_type(&resp) != "text/event-stream" {
            let _ = opened.send(false);
            drain(resp);
            return;
        }
        let _ = opened.send(true);
        log::debug!("holding the standalone stream of an MCP session for server requests");
        let body = resp.body_mut().as_reader();
        let mut events = SseReader::new(BufReader::new(body), MAX_RESPONSE_BODY);
        while let Ok(Some(event)) = events.next_event() {
            if !event.is_message() {
                continue;
            }
            let Some(shape) = RpcShape::of(&event.data) else {
                continue;
            };
            match (&shape.method, &shape.id) {
                (Some(method), Some(id)) => self.refuse(method, id),
                (Some(method), None) => {
                    log::debug!("{method} on a standalone stream no host holds; dropped");
                }
                _ => {}
            }
        }
        log::debug!("session {}…: standalone stream ended", prefix(session));
    }

    fn refuse(&self, method: &str, id: &Value) {
        log::info!(
            "mcp server sent a {method} request on its standalone stream; answered 'not \
             supported through tunnel'"
        );
        let reply = server_requests::refusal(id).to_string();
        let mut req = self.agent.post(&self.url);
        for (name, value) in &self.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let sent = http_client::with_timeout(req, SERVER_REQUEST_REPLY_TIMEOUT)
            .header("Content-Type", "application/json")
            .send(reply.as_str());
        match sent {
            Ok(resp) => drain(resp),
            Err(e) => log::debug!(
                "reply to a server request failed: {}",
                Failure::from_ureq(&e).source.as_str()
            ),
        }
    }
}

fn session_of(headers: &[(String, String)]) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id"))
        .map(|(_, v)| v.clone())
}

/// The first characters of a session id, for a log line.
fn prefix(session: &str) -> &str {
    session.get(..8).unwrap_or(session)
}
