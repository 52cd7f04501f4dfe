//! Per-session children (`sessions=per-session`): one stdio server process per connector session,
//! for servers whose state belongs to a session (memory, a working directory, a log level,
//! subscriptions) and so must not be shared.
//!
//! A legacy `initialize` without `Mcp-Session-Id` starts a child of its own (label
//! `<channel>/s<N>`, never probed: `initialize` commits it to the 2025 era) and goes to it through
//! that child's handshake owner, so a restart replays it. When the child accepts it, the answer
//! carries a new unguessable `Mcp-Session-Id` (the relay then binds the session to this client
//! instance), and every later message of that session goes to that child. Logs show the id's
//! first characters only. The child is stopped on the session's `DELETE` (`204`), or once the
//! session has had no traffic for the idle timeout (never while one of its calls runs). A message
//! naming a session that is not open (ended, expired, or from before a restart of ours) gets
//! `404` with a JSON-RPC error: MCP's signal for the host to initialize again. At most
//! `max_sessions` are open (or starting) at once; a further `initialize` is refused at once
//! (`503`, naming the flag), never queued. Everything without a session — modern requests, a
//! sessionless call — is not this file's: the channel's probed child serves it as in shared mode.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::process::Process;
use crate::config::StdioOptions;
use crate::http_client::CancelFlag;
use crate::mcp::{NotifySink, Outcome, Reply, StreamSink};
use crate::wire::{RespType, RpcShape};

/// The per-session children of one stdio channel.
pub(super) struct Sessions {
    channel: String,
    argv: Vec<String>,
    scrub: Vec<String>,
    max: usize,
    idle: Duration,
    inner: Mutex<Inner>,
    /// Wakes the reaper (on stop).
    wake: Condvar,
}

#[derive(Default)]
struct Inner {
    open: HashMap<String, Entry>,
    /// Slots taken by `initialize`s whose child is starting (they count against the cap).
    starting: usize,
    /// The last `N` of a `<channel>/s<N>` label.
    last_label: u64,
    /// Restarts of children already stopped, so the channel's count never goes down.
    retired_restarts: u64,
    /// Children told to stop, until their supervisor has finished (the channel's stop waits).
    retiring: Vec<Arc<Process>>,
    stopping: bool,
}

struct Entry {
    child: Arc<Process>,
    label: String,
    last_used: Instant,
    in_flight: usize,
}

impl Sessions {
    /// Per-session bookkeeping for `channel`, and its idle reaper thread.
    pub(super) fn start(
        channel: &str,
        argv: &[String],
        scrub: &[String],
        options: &StdioOptions,
    ) -> std::io::Result<Arc<Sessions>> {
        let sessions = Arc::new(Sessions {
            channel: channel.to_string(),
            argv: argv.to_vec(),
            scrub: scrub.to_vec(),
            max: options.max_sessions,
            idle: options.session_idle_timeout,
            inner: Mutex::new(Inner::default()),
            wake: Condvar::new(),
        });
        // The reaper ends by itself once it sees the stop; nothing needs to join it.
        let reaper = Arc::clone(&sessions);
        thread::Builder::new()
            .name(format!("stdio-{channel}-reaper"))
            .spawn(move || reaper.reap())?;
        Ok(sessions)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `message` when it belongs to a per-session child (a sessionless legacy
    /// `initialize`, or any message naming a session); `None` for the channel's other children.
    pub(super) fn call(
        self: &Arc<Self>,
        message: &RawValue,
        headers: &[(String, String)],
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
    ) -> Option<Outcome> {
        let shape = RpcShape::of(message.get())?;
        let session = session_header(headers);
        let Some(session) = session else {
            if shape.method.as_deref() != Some("initialize") || shape.id.is_none() {
                return None;
            }
            return Some(self.open(&shape, message, headers, deadline, on_notify));
        };
        let Some(lease) = self.lease(session) else {
            log::info!(
                "[{}] a message for session {} which is not open; answered 404",
                self.channel,
                short(session)
            );
            return Some(not_found(&shape));
        };
        let outcome = lease.child.call(message, headers, deadline, on_notify);
        drop(lease);
        Some(outcome)
    }

    /// Holds the session's `GET` stream on its child (the session stays in use meanwhile);
    /// `None` when the command names no session.
    pub(super) fn hold_stream(
        self: &Arc<Self>,
        headers: &[(String, String)],
        deadline: Option<Instant>,
        sink: &mut StreamSink<'_>,
        cancel: &CancelFlag,
    ) -> Option<Outcome> {
        let session = session_header(headers)?;
        let Some(lease) = self.lease(session) else {
            return Some(Outcome::Reply(Reply {
                resp_json: None,
                resp_headers: Default::default(),
                resp_code: 404,
                resp_type: RespType::JsonrpcResponse,
                failure: None,
            }));
        };
        let outcome = lease.child.hold_stream(deadline, sink, cancel);
        drop(lease);
        Some(outcome)
    }

    /// Starts a child for a new session and sends it the session's `initialize`.
    fn open(
        self: &Arc<Self>,
        shape: &RpcShape,
        message: &RawValue,
        headers: &[(String, String)],
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
    ) -> Outcome {
        let id = shape.id.clone().unwrap_or(Value::Null);
        let label = {
            let mut inner = self.lock();
            let taken = inner.open.len() + inner.starting;
            if inner.stopping {
                let failure = crate::failure::Failure::new(crate::failure::Source::Connect, "dial");
                return Outcome::Reply(Reply::failure(&failure, &id));
            }
            if taken >= self.max {
                drop(inner);
                log::warn!(
                    "[{}] {} per-session stdio servers are open (--mcp.stdio-max-sessions); \
                     a new session's initialize is refused",
                    self.channel,
                    self.max
                );
                return at_capacity(&id, self.max);
            }
            inner.starting += 1;
            inner.last_label += 1;
            format!("{}/s{}", self.channel, inner.last_label)
        };
        let started = Process::start(&label, self.argv.clone(), self.scrub.clone(), None);
        let child = match started {
            Ok(child) => Arc::new(child),
            Err(e) => {
                self.lock().starting -= 1;
                log::error!("[{label}] cannot start a per-session stdio server: {e}");
                let failure = crate::failure::Failure::new(crate::failure::Source::Connect, "dial");
                return Outcome::Reply(Reply::failure(&failure, &id));
            }
        };
        let mut outcome = child.call(message, headers, deadline, on_notify);
        let accepted = matches!(&outcome, Outcome::Reply(r)
            if r.failure.is_none() && r.resp_code == 200 && has_result(r));
        let mut inner = self.lock();
        inner.starting -= 1;
        if !accepted || inner.stopping {
            drop(inner);
            log::info!("[{label}] the session's initialize was not accepted; stopping its server");
            self.retire(child);
            return outcome;
        }
        let session = format!("mcpt-{}", crate::crypto::random_hex(16));
        if let Outcome::Reply(reply) = &mut outcome {
            reply
                .resp_headers
                .insert("Mcp-Session-Id".to_string(), vec![session.clone()]);
        }
        log::info!(
            "[{label}] session {} has its own stdio server ({} of {} open)",
            short(&session),
            inner.open.len() + 1,
            self.max
        );
        inner.open.insert(
            session,
            Entry {
                child,
                label,
                last_used: Instant::now(),
                in_flight: 0,
            },
        );
        outcome
    }

    /// The open session's child, marked busy until the lease is dropped.
    fn lease<'a>(self: &'a Arc<Self>, session: &'a str) -> Option<Lease<'a>> {
        let mut inner = self.lock();
        let entry = inner.open.get_mut(session)?;
        entry.in_flight += 1;
        entry.last_used = Instant::now();
        Some(Lease {
            sessions: self,
            session,
            child: Arc::clone(&entry.child),
        })
    }

    /// Ends a session (its `DELETE`): `204` and its child stopped, or `404` when it is not open;
    /// `None` when the command names no session.
    pub(super) fn terminate(&self, headers: &[(String, String)]) -> Option<Outcome> {
        let session = session_header(headers)?;
        let ended = self.lock().open.remove(session);
        let code = match ended {
            Some(entry) => {
                log::info!(
                    "[{}] session {} ended (DELETE); stopping its stdio server",
                    entry.label,
                    short(session)
                );
                self.retire(entry.child);
                204
            }
            None => 404,
        };
        Some(Outcome::Reply(Reply {
            resp_json: None,
            resp_headers: Default::default(),
            resp_code: code,
            resp_type: RespType::SessionTerminationResponse,
            failure: None,
        }))
    }

    /// Tells a child to stop and keeps it until its supervisor has finished.
    fn retire(&self, child: Arc<Process>) {
        child.begin_stop();
        let mut inner = self.lock();
        inner.retired_restarts += child.restarts();
        inner.retiring.retain(|c| !is_stopped(c));
        inner.retiring.push(child);
    }

    /// How many times the per-session children have been restarted.
    pub(super) fn restarts(&self) -> u64 {
        let inner = self.lock();
        inner.retired_restarts + inner.open.values().map(|e| e.child.restarts()).sum::<u64>()
    }

    /// The reaper: stops the child of every session idle for longer than the timeout. It sleeps
    /// until the next session could expire, and ends on stop.
    fn reap(&self) {
        let mut inner = self.lock();
        loop {
            if inner.stopping {
                return;
            }
            let now = Instant::now();
            let expired: Vec<String> = inner
                .open
                .iter()
                .filter(|(_, e)| e.in_flight == 0 && now.duration_since(e.last_used) >= self.idle)
                .map(|(s, _)| s.clone())
                .collect();
            if !expired.is_empty() {
                let entries: Vec<(String, Entry)> = expired
                    .into_iter()
                    .filter_map(|s| inner.open.remove(&s).map(|e| (s, e)))
                    .collect();
                drop(inner);
                for (session, entry) in entries {
                    log::info!(
                        "[{}] session {} idle for {:?}; stopping its stdio server",
                        entry.label,
                        short(&session),
                        self.idle
                    );
                    self.retire(entry.child);
                }
                inner = self.lock();
                continue;
            }
            // The soonest an idle session expires; a busy one at the earliest `idle` from now.
            let next = inner
                .open
                .values()
                .filter(|e| e.in_flight == 0)
                .map(|e| e.last_used + self.idle)
                .min()
                .unwrap_or(now + self.idle)
                .min(now + self.idle);
            inner = self
                .wake
                .wait_timeout(inner, next.saturating_duration_since(now))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Tells every per-session child (open or still stopping) and the reaper to stop, and
    /// refuses new sessions from now on; returns the children, for the caller to wait for.
    pub(super) fn begin_stop(&self) -> Vec<Arc<Process>> {
        let mut inner = self.lock();
        inner.stopping = true;
        let mut children: Vec<Arc<Process>> = inner.retiring.drain(..).collect();
        children.extend(inner.open.drain().map(|(_, e)| e.child));
        drop(inner);
        self.wake.notify_all();
        for child in &children {
            child.begin_stop();
        }
        children
    }
}

/// A session's child, busy while this lives: the reaper leaves it alone, and its idle time
/// starts again when the call ends.
struct Lease<'a> {
    sessions: &'a Sessions,
    session: &'a str,
    child: Arc<Process>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut inner = self.sessions.lock();
        if let Some(entry) = inner.open.get_mut(self.session) {
            entry.in_flight -= 1;
            entry.last_used = Instant::now();
        }
    }
}

fn session_header(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id"))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Enough of a session id to tell sessions apart in a log, too little to use it.
fn short(session: &str) -> String {
    let shown: String = session.chars().take(13).collect();
    format!("{shown}…")
}

fn is_stopped(child: &Process) -> bool {
    *child
        .shared
        .supervisor_done
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn has_result(reply: &Reply) -> bool {
    reply
        .resp_json
        .as_deref()
        .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        .is_some_and(|answer| answer.get("result").is_some())
}

/// `404` for a message of a session that is not open: a JSON-RPC error for a request (MCP's
/// "Session not found", which tells the host to initialize again), an empty one otherwise.
fn not_found(shape: &RpcShape) -> Outcome {
    let Some(id) = shape.id.as_ref().filter(|_| shape.method.is_some()) else {
        return Outcome::Reply(super::process::ack(404));
    };
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": -32001,
            "message": "Session not found: its per-session stdio server was stopped (ended, idle \
                        or restarted tunnel client); initialize a new session",
        },
    });
    Outcome::Reply(Reply::error_json(404, body.to_string()))
}

/// `503` for an `initialize` past the cap.
fn at_capacity(id: &Value, max: usize) -> Outcome {
    let message = format!(
        "too many sessions: this stdio channel runs one server per session and {max} are open \
         (--mcp.stdio-max-sessions / MCP_STDIO_MAX_SESSIONS); end a session or raise the limit"
    );
    let body = crate::failure::error_response(id, &message, None);
    Outcome::Reply(Reply::error_json(503, body))
}
