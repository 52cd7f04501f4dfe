//! MCP servers that are programs speaking newline-delimited JSON-RPC on stdin/stdout.
//!
//! One child per channel serves **many calls at once**: every request's id is rewritten to a
//! unique internal id on the way in and restored on the way out, so two connector sessions both
//! using id `1` never collide. Progress tokens are rewritten the same way, which routes each
//! `notifications/progress` to the call that asked for it. Other notifications go to the call in
//! flight when exactly one is, and are dropped otherwise (nothing says whose they are).
//!
//! A supervisor thread owns the child: it restarts it with exponential backoff when it exits or
//! closes stdout, and fails the calls in flight at that moment at once (`transport_closed`). A call
//! whose deadline passes retires its internal id, so a late answer is discarded, never mistaken for
//! another call's. The child is started without a shell: the command is split into argv by a small
//! tokenizer, and `;`, `|` or `$(…)` are just characters.
//!
//! Lifecycle and isolation: the child runs in its own process group, and every stop or restart
//! signals the whole group (SIGTERM, then SIGKILL after [`EXIT_GRACE`]), so helpers it forked die
//! with it. Each child is a *generation*: only its own stdout reader can end it, never the reader of
//! an older child whose pipe a leftover helper kept open. Messages to the child wait in a queue
//! bounded by [`MAX_QUEUED_BYTES`] and [`MAX_QUEUED_MESSAGES`]: a child that stops reading its
//! stdin makes further calls fail at once (`client_internal`/`stdin_queue_full`) and the channel
//! unready, instead of growing our memory.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{NotifySink, Outcome, Reply};
use crate::backoff::Backoff;
use crate::failure::{Failure, Source};
use crate::wire::{RespType, RpcShape};
use rustix::process::{Pid, Signal};

/// Longest line read from the child; a longer one is skipped (and logged), not buffered.
const MAX_LINE: usize = 32 * 1024 * 1024;
/// Longest a call may run when the command has no deadline.
const NO_DEADLINE_TIMEOUT: Duration = Duration::from_secs(600);
/// First restart delay after the child exits; doubles per quick failure.
const RESTART_BASE: Duration = Duration::from_millis(200);
/// Longest restart delay in a crash loop.
const RESTART_CAP: Duration = Duration::from_secs(30);
/// A child that ran at least this long was healthy: the next restart starts from the base delay.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// On shutdown, time the child gets to exit after its stdin closes (the MCP stdio convention),
/// then again after SIGTERM, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(3);
/// Longest stderr line forwarded to our log.
const MAX_STDERR_LINE: usize = 2000;
/// Most bytes waiting for a child that does not read its stdin (beyond the pipe's own ~64 KiB).
/// A message larger than this is still taken when nothing else waits, so one big call always
/// goes through; a reading child drains the queue as fast as it reads.
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// Most messages waiting for the child, whatever their size (many tiny notifications).
pub const MAX_QUEUED_MESSAGES: usize = 1024;

/// Splits a command line into argv without a shell: whitespace separates words; single quotes
/// keep everything literally; double quotes keep everything but `\"` and `\\`; a backslash outside
/// quotes escapes the next character. `Err` for an unterminated quote or a trailing backslash.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("empty command".into());
    }
    Ok(words)
}

/// A JSON object whose members keep their order and their exact text; only the members we
/// rewrite (`id`, a progress token) change.
#[derive(Debug, Default)]
struct Object(Vec<(String, Box<RawValue>)>);

impl Object {
    fn parse(text: &str) -> Option<Object> {
        serde_json::from_str(text).ok()
    }

    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    fn set(&mut self, key: &str, value: &Value) {
        let raw = RawValue::from_string(value.to_string()).expect("a Value is valid JSON");
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = raw,
            None => self.0.push((key.to_string(), raw)),
        }
    }

    fn set_raw(&mut self, key: &str, raw: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = raw,
            None => self.0.push((key.to_string(), raw)),
        }
    }

    fn to_raw(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(self).expect("members are valid JSON")
    }

    /// `params._meta.progressToken`, with a setter for its rewritten form.
    fn progress_token(&self) -> Option<Value> {
        let params: Value = serde_json::from_str(self.get("params")?.get()).ok()?;
        params.get("_meta")?.get("progressToken").cloned()
    }

    fn set_progress_token(&mut self, token: &Value) {
        let Some(mut params) = self.get("params").and_then(|p| Object::parse(p.get())) else {
            return;
        };
        let Some(mut meta) = params.get("_meta").and_then(|m| Object::parse(m.get())) else {
            return;
        };
        meta.set("progressToken", token);
        params.set_raw("_meta", meta.to_raw());
        self.set_raw("params", params.to_raw());
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((k, v));
                }
                Ok(Object(members))
            }
        }
        d.deserialize_map(Members)
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// What the reader thread hands a waiting call.
enum Event {
    Notification(Box<RawValue>),
    Response(Box<RawValue>),
    /// The child went away before answering.
    Closed,
    /// The caller cancelled the call; the server will not answer it.
    Cancelled,
}

/// A call waiting for the child's answer, keyed by its internal id.
struct Call {
    events: Sender<Event>,
    /// The caller's progress token and the internal one that replaced it.
    progress: Option<(Value, String)>,
    /// The caller's id and MCP session, to find this call when the caller cancels it.
    original_id: Value,
    session: Option<String>,
}

#[derive(Default)]
struct State {
    calls: HashMap<u64, Call>,
    /// Internal progress token → internal call id.
    tokens: HashMap<String, u64>,
    up: bool,
    restarts: u64,
}

struct Shared {
    channel: String,
    argv: Vec<String>,
    /// Environment variables removed from the child's environment.
    scrub: Vec<String>,
    state: Mutex<State>,
    /// The queue to the child's writer thread. Writes never block a caller, the reader or
    /// shutdown: a child that stops reading stalls only its writer thread, and a full queue
    /// refuses the message. `None` while the child is down.
    stdin: Mutex<Option<StdinQueue>>,
    /// Set when the queue refused a message; cleared when the writer has emptied it.
    stdin_full: Arc<AtomicBool>,
    /// Which child is current, and whether its reader reached the end of its stdout; `wake`
    /// announces it (and stop).
    reader: Mutex<ReaderState>,
    wake: Condvar,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// Signalled on stop and when the supervisor ends.
    changed: Condvar,
    supervisor_done: Mutex<bool>,
}

/// The current child generation and whether its stdout reader has finished.
#[derive(Default)]
struct ReaderState {
    generation: u64,
    done: bool,
}

/// Why a message could not be queued for the child.
#[derive(Debug, PartialEq, Eq)]
enum QueueError {
    /// No child is running.
    Down,
    /// The child is not reading: [`MAX_QUEUED_BYTES`] or [`MAX_QUEUED_MESSAGES`] are waiting.
    Full,
}

/// The sending end of one child's bounded stdin queue.
#[derive(Clone)]
struct StdinQueue {
    lines: SyncSender<String>,
    /// Bytes queued and not yet written to the pipe (the writer subtracts what it wrote).
    queued_bytes: Arc<AtomicUsize>,
}

impl StdinQueue {
    fn new() -> (StdinQueue, Receiver<String>) {
        let (lines, receiver) = mpsc::sync_channel(MAX_QUEUED_MESSAGES);
        let queue = StdinQueue {
            lines,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
        };
        (queue, receiver)
    }

    fn push(&self, line: String) -> Result<(), QueueError> {
        let len = line.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::SeqCst);
        if before > 0 && before + len > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
            return Err(QueueError::Full);
        }
        match self.lines.try_send(line) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => QueueError::Full,
                    TrySendError::Disconnected(_) => QueueError::Down,
                })
            }
        }
    }
}

/// One stdio MCP server and its supervisor.
pub struct StdioTransport {
    shared: Arc<Shared>,
}

impl StdioTransport {
    /// Starts the supervisor, which starts the child.
    /// `scrub` names environment variables the child must not inherit (secrets of ours).
    pub fn start(
        channel: &str,
        argv: Vec<String>,
        scrub: Vec<String>,
    ) -> io::Result<StdioTransport> {
        let shared = Arc::new(Shared::new(channel, argv, scrub));
        let supervised = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("stdio-{channel}"))
            .spawn(move || supervise(&supervised))?;
        Ok(StdioTransport { shared })
    }

    /// Whether the child is running right now.
    pub fn is_up(&self) -> bool {
        self.shared.lock().up
    }

    /// Why the channel cannot take calls right now (`None`: it can), for `/readyz`.
    pub fn problem(&self) -> Option<String> {
        if !self.is_up() {
            Some("stdio server is not running".to_string())
        } else if self.shared.stdin_full.load(Ordering::SeqCst) {
            Some(format!(
                "stdio server is not reading its stdin (queue of {} MiB full; calls refused)",
                MAX_QUEUED_BYTES / (1024 * 1024)
            ))
        } else {
            None
        }
    }

    /// How many times the child has been restarted.
    pub fn restarts(&self) -> u64 {
        self.shared.lock().restarts
    }

    /// Forwards one JSON-RPC message to the child.
    pub fn call(
        &self,
        message: &RawValue,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
    ) -> Outcome {
        // HTTP headers mean nothing to a stdio server, but the session id tells callers apart.
        let session = command_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id"))
            .map(|(_, v)| v.clone());
        let (Some(shape), Some(mut object)) =
            (RpcShape::of(message.get()), Object::parse(message.get()))
        else {
            let failure = Failure::new(Source::Protocol, "malformed_json");
            return Outcome::Reply(Reply::failure(&failure, &Value::Null));
        };
        if shape.is_notification() || shape.method.is_none() {
            // Notifications (and stray responses) need no answer from the child.
            let outgoing = if shape.method.as_deref() == Some("notifications/cancelled") {
                match self.translate_cancellation(object, session.as_deref()) {
                    Some(translated) => translated,
                    None => return Outcome::Reply(ack(202)),
                }
            } else {
                message.get().to_string()
            };
            let code = match self.shared.write_line(&outgoing) {
                Ok(()) => 202,
                Err(QueueError::Full) => 503,
                Err(QueueError::Down) => 502,
            };
            return Outcome::Reply(ack(code));
        }
        let original_id = shape.id.clone().unwrap_or(Value::Null);
        let internal = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let progress = rewrite_for_child(&mut object, internal);
        let (events, inbox) = mpsc::channel();
        {
            let mut state = self.shared.lock();
            if !state.up {
                drop(state);
                let failure = Failure::new(Source::Connect, "dial");
                return Outcome::Reply(Reply::failure(&failure, &original_id));
            }
            if let Some((_, token)) = &progress {
                state.tokens.insert(token.clone(), internal);
            }
            state.calls.insert(
                internal,
                Call {
                    events,
                    progress,
                    original_id: original_id.clone(),
                    session,
                },
            );
        }
        // Whatever happens below, the internal id is retired when this call ends.
        let _retire = Retire {
            shared: &self.shared,
            id: internal,
        };
        match self.shared.write_line(object.to_raw().get()) {
            Ok(()) => {}
            Err(QueueError::Down) => {
                let failure = Failure::new(Source::TransportClosed, "closed_pipe");
                return Outcome::Reply(Reply::failure(&failure, &original_id));
            }
            Err(QueueError::Full) => {
                let failure = Failure::new(Source::ClientInternal, "stdin_queue_full");
                return Outcome::Reply(Reply::failure(&failure, &original_id));
            }
        }
        let limit = deadline.unwrap_or_else(|| Instant::now() + NO_DEADLINE_TIMEOUT);
        loop {
            let left = limit.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(left) {
                Ok(Event::Notification(n)) => on_notify(n, &BTreeMap::new()),
                Ok(Event::Response(raw)) => {
                    return Outcome::Reply(Reply {
                        resp_json: Some(restore_id(&raw, &original_id)),
                        resp_headers: [(
                            "Content-Type".to_string(),
                            vec!["application/json".to_string()],
                        )]
                        .into(),
                        resp_code: 200,
                        resp_type: RespType::JsonrpcResponse,
                        failure: None,
                    });
                }
                Ok(Event::Cancelled) => return Outcome::Cancelled,
                Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    let failure = Failure::new(Source::TransportClosed, "eof");
                    return Outcome::Reply(Reply::failure(&failure, &original_id));
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Tell the server to stop working on it; its late answer will be discarded.
                    let cancel = serde_json::json!({
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": { "requestId": internal, "reason": "deadline passed" },
                    });
                    let _ = self.shared.write_line(&cancel.to_string());
                    if deadline.is_some() {
                        return Outcome::Expired;
                    }
                    let failure = Failure::new(Source::Timeout, "timeout");
                    return Outcome::Reply(Reply::failure(&failure, &original_id));
                }
            }
        }
    }

    /// A caller's `notifications/cancelled` names the caller's id; the child knows the call by its
    /// internal id. Rewritten when exactly one call of that session has that id in flight,
    /// dropped otherwise: cancelling someone else's call would be worse than cancelling none.
    fn translate_cancellation(&self, mut object: Object, session: Option<&str>) -> Option<String> {
        let mut params = object.get("params").and_then(|p| Object::parse(p.get()))?;
        let target: Value = serde_json::from_str(params.get("requestId")?.get()).ok()?;
        let state = self.shared.lock();
        let mut matching = state
            .calls
            .iter()
            .filter(|(_, c)| c.original_id == target && c.session.as_deref() == session);
        let (internal, call) = match (matching.next(), matching.next()) {
            (Some(only), None) => only,
            _ => {
                log::debug!(
                    "[{}] cancellation for no single call in flight; dropped",
                    self.shared.channel
                );
                return None;
            }
        };
        params.set("requestId", &Value::from(*internal));
        object.set_raw("params", params.to_raw());
        // The server will not answer a cancelled call: free its worker now.
        let _ = call.events.send(Event::Cancelled);
        Some(object.to_raw().get().to_string())
    }

    /// Stdio servers have no sessions to end over the transport: `405`, and the channel keeps
    /// serving.
    pub fn terminate_session(&self) -> Outcome {
        Outcome::Reply(Reply {
            resp_json: None,
            resp_headers: Default::default(),
            resp_code: 405,
            resp_type: RespType::SessionTerminationResponse,
            failure: None,
        })
    }

    /// Stops the child (stdin closed, then SIGTERM, then kill) and waits at most `timeout` for
    /// the supervisor to finish.
    pub fn stop(&self, timeout: Duration) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.stdin_lock().take();
        // Wake the supervisor, whichever of its waits it is in (taking each lock first, so a
        // waiter that is between its check and its wait cannot miss the signal).
        drop(self.shared.reader_lock());
        self.shared.wake.notify_all();
        drop(
            self.shared
                .supervisor_done
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        self.shared.changed.notify_all();
        let deadline = Instant::now() + timeout;
        let mut done = self
            .shared
            .supervisor_done
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while !*done {
            let now = Instant::now();
            if now >= deadline {
                log::warn!(
                    "[{}] stdio server did not stop in time",
                    self.shared.channel
                );
                return;
            }
            done = self
                .shared
                .changed
                .wait_timeout(done, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Removes a call's routing entries when it ends, however it ends.
struct Retire<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Retire<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(call) = state.calls.remove(&self.id)
            && let Some((_, token)) = call.progress
        {
            state.tokens.remove(&token);
        }
    }
}

impl Shared {
    fn new(channel: &str, argv: Vec<String>, scrub: Vec<String>) -> Shared {
        Shared {
            channel: channel.to_string(),
            argv,
            scrub,
            state: Mutex::new(State::default()),
            stdin: Mutex::new(None),
            stdin_full: Arc::new(AtomicBool::new(false)),
            reader: Mutex::new(ReaderState::default()),
            wake: Condvar::new(),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            changed: Condvar::new(),
            supervisor_done: Mutex::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stdin_lock(&self) -> MutexGuard<'_, Option<StdinQueue>> {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader_lock(&self) -> MutexGuard<'_, ReaderState> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one message and its newline for the child. JSON text never contains a raw newline
    /// outside strings, but a pretty-printed message may contain them between tokens: those are
    /// replaced by spaces so the message stays on one line.
    fn write_line(&self, json: &str) -> Result<(), QueueError> {
        let mut line = json.replace(['\n', '\r'], " ");
        line.push('\n');
        let queue = self.stdin_lock().clone().ok_or(QueueError::Down)?;
        let pushed = queue.push(line);
        if pushed == Err(QueueError::Full) && !self.stdin_full.swap(true, Ordering::SeqCst) {
            log::warn!(
                "[{}] stdio server is not reading its stdin: {} bytes queued; calls refused \
                 and channel unready until it reads again",
                self.channel,
                queue.queued_bytes.load(Ordering::SeqCst)
            );
        }
        pushed
    }

    /// Routes one line the child wrote.
    fn route(self: &Arc<Self>, line: &[u8]) {
        let text = match std::str::from_utf8(line) {
            Ok(t) if !t.trim().is_empty() => t.trim(),
            Ok(_) => return,
            Err(_) => {
                log::warn!(
                    "[{}] stdio server wrote a line that is not UTF-8; skipped",
                    self.channel
                );
                return;
            }
        };
        let (Some(shape), Some(object)) = (RpcShape::of(text), Object::parse(text)) else {
            log::warn!(
                "[{}] stdio server wrote a line that is not a JSON-RPC object; skipped",
                self.channel
            );
            return;
        };
        match (&shape.method, &shape.id) {
            (Some(method), Some(id)) => self.refuse_request(method, id),
            (Some(method), None) => self.route_notification(method, object),
            (None, Some(id)) => {
                let state = self.lock();
                match id.as_u64().and_then(|n| state.calls.get(&n)) {
                    Some(call) => {
                        let _ = call.events.send(Event::Response(object.to_raw()));
                    }
                    None => log::debug!(
                        "[{}] answer for a retired or unknown id discarded",
                        self.channel
                    ),
                }
            }
            (None, None) => {
                log::warn!(
                    "[{}] stdio server wrote a message with neither id nor method; skipped",
                    self.channel
                )
            }
        }
    }

    fn route_notification(&self, method: &str, mut object: Object) {
        let state = self.lock();
        let target = if method == "notifications/progress" {
            object
                .get("params")
                .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                .and_then(|p| {
                    p.get("progressToken")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .and_then(|token| state.tokens.get(&token).copied())
        } else if state.calls.len() == 1 {
            state.calls.keys().next().copied()
        } else {
            None
        };
        let Some(call) = target.and_then(|id| state.calls.get(&id)) else {
            log::debug!(
                "[{}] notification {method} has no call to go to; dropped",
                self.channel
            );
            return;
        };
        if let Some((original, _)) = &call.progress
            && method == "notifications/progress"
            && let Some(mut params) = object.get("params").and_then(|p| Object::parse(p.get()))
        {
            params.set("progressToken", original);
            object.set_raw("params", params.to_raw());
        }
        let _ = call.events.send(Event::Notification(object.to_raw()));
    }

    /// A server→client request (sampling, roots, elicitation) cannot cross the tunnel: answer it
    /// with an error so the server does not wait forever.
    fn refuse_request(&self, method: &str, id: &Value) {
        log::info!(
            "[{}] stdio server sent a {method} request; answered 'not supported through tunnel'",
            self.channel
        );
        let reply = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": { "code": -32601, "message": "not supported through tunnel" },
        });
        let _ = self.write_line(&reply.to_string());
    }

    /// Sleeps `delay` unless stopping first. Returns false when stopping.
    fn pause(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        let mut done = self
            .supervisor_done
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            done = self
                .changed
                .wait_timeout(done, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The answer to a forwarded notification.
fn ack(resp_code: u16) -> Reply {
    Reply {
        resp_json: None,
        resp_headers: Default::default(),
        resp_code,
        resp_type: RespType::NotifyAck,
        failure: None,
    }
}

/// Gives a caller's request the internal id and, when it has one, an internal progress token.
/// Returns the caller's token and the internal one.
fn rewrite_for_child(object: &mut Object, internal: u64) -> Option<(Value, String)> {
    object.set("id", &Value::from(internal));
    object.progress_token().map(|token| {
        let rewritten = format!("mcpt-progress-{internal}");
        object.set_progress_token(&Value::from(rewritten.clone()));
        (token, rewritten)
    })
}

/// Replaces the internal id of a child's answer with the caller's.
fn restore_id(raw: &RawValue, original: &Value) -> Box<RawValue> {
    match Object::parse(raw.get()) {
        Some(mut object) => {
            object.set("id", original);
            object.to_raw()
        }
        None => raw.to_owned(),
    }
}

/// How often the supervisor checks whether its child has exited while waiting for the reader or
/// a stop (the standard library cannot wait for a child with a timeout).
const EXIT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The supervisor: start, watch until the child goes away (or we stop), fail its calls, back off,
/// repeat.
fn supervise(shared: &Arc<Shared>) {
    let mut backoff = Backoff::new(RESTART_BASE, RESTART_CAP);
    while !shared.stopping.load(Ordering::SeqCst) {
        let started = Instant::now();
        match spawn_child(shared) {
            Ok(mut child) => {
                log::info!(
                    "[{}] stdio server started (pid {})",
                    shared.channel,
                    child.id()
                );
                watch(shared, &mut child);
                go_down(shared);
                let status = stop_child(shared, &mut child);
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                if started.elapsed() >= HEALTHY_RUN {
                    backoff.reset();
                }
                let delay = backoff.next_delay().max(RESTART_BASE);
                let restarts = {
                    let mut state = shared.lock();
                    state.restarts += 1;
                    state.restarts
                };
                log::warn!(
                    "[{}] stdio server exited ({status}); restart #{restarts} in {delay:?}",
                    shared.channel
                );
                if !shared.pause(delay) {
                    break;
                }
            }
            Err(e) => {
                let delay = backoff.next_delay().max(RESTART_BASE);
                log::error!(
                    "[{}] cannot start stdio server {:?}: {e}; retrying in {delay:?}",
                    shared.channel,
                    shared.argv[0]
                );
                if !shared.pause(delay) {
                    break;
                }
            }
        }
    }
    go_down(shared);
    *shared
        .supervisor_done
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = true;
    shared.changed.notify_all();
}

/// Returns when the current child closed its stdout, exited, or we are stopping.
fn watch(shared: &Shared, child: &mut Child) {
    let mut reader = shared.reader_lock();
    while !reader.done && !shared.stopping.load(Ordering::SeqCst) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        reader = shared
            .wake
            .wait_timeout(reader, EXIT_CHECK_INTERVAL)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn spawn_child(shared: &Arc<Shared>) -> io::Result<Child> {
    let mut command = Command::new(&shared.argv[0]);
    for name in &shared.scrub {
        command.env_remove(name);
    }
    let mut child = command
        .args(&shared.argv[1..])
        // Its own process group (id = its pid), so stop and restart can end its helpers too.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let channel = shared.channel.clone();
    if let Some(stderr) = child.stderr.take() {
        let channel = channel.clone();
        thread::Builder::new()
            .name(format!("stdio-{channel}-stderr"))
            .spawn(move || forward_stderr(&channel, stderr))?;
    }
    let (queue, lines) = StdinQueue::new();
    shared.stdin_full.store(false, Ordering::SeqCst);
    if let Some(stdin) = child.stdin.take() {
        let queued_bytes = Arc::clone(&queue.queued_bytes);
        let full = Arc::clone(&shared.stdin_full);
        thread::Builder::new()
            .name(format!("stdio-{channel}-stdin"))
            .spawn(move || write_stdin(stdin, lines, &queued_bytes, &full))?;
    }
    let generation = {
        let mut reader = shared.reader_lock();
        reader.generation += 1;
        reader.done = false;
        reader.generation
    };
    if let Some(stdout) = child.stdout.take() {
        let reader = Arc::clone(shared);
        let pid = child.id();
        thread::Builder::new()
            .name(format!("stdio-{channel}-stdout"))
            .spawn(move || {
                read_stdout(&reader, stdout);
                log::debug!(
                    "[{}] stdout of stdio server pid {pid} closed",
                    reader.channel
                );
                // A helper of an older child may hold its stdout open long after a restart:
                // its end says nothing about the current child.
                let mut state = reader.reader_lock();
                if state.generation == generation {
                    state.done = true;
                    reader.wake.notify_all();
                }
            })?;
    }
    *shared.stdin_lock() = Some(queue);
    shared.lock().up = true;
    Ok(child)
}

/// The writer thread: writes queued lines until the queue closes (then the pipe closes, which
/// tells the child to exit) or the pipe breaks. Once the queue is empty again the channel takes
/// calls again (`full` cleared).
fn write_stdin(
    mut stdin: ChildStdin,
    lines: Receiver<String>,
    queued_bytes: &AtomicUsize,
    full: &AtomicBool,
) {
    for line in lines {
        let written = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush());
        if queued_bytes.fetch_sub(line.len(), Ordering::SeqCst) == line.len() {
            full.store(false, Ordering::SeqCst);
        }
        if written.is_err() {
            return;
        }
    }
}

/// Reads lines until the child closes stdout, routing each.
fn read_stdout(shared: &Arc<Shared>, stdout: impl Read) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return,
            Ok(_) if line.len() > MAX_LINE => {
                log::warn!(
                    "[{}] stdio server wrote a line over {MAX_LINE} bytes; skipped",
                    shared.channel
                );
                if skip_rest_of_line(&mut reader).is_err() {
                    return;
                }
            }
            Ok(_) => shared.route(&line),
            Err(_) => return,
        }
    }
}

fn skip_rest_of_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(pos + 1);
            return Ok(());
        }
        let len = buf.len();
        reader.consume(len);
    }
}

/// Marks the channel down and fails every call in flight at once.
fn go_down(shared: &Shared) {
    shared.stdin_lock().take();
    let mut state = shared.lock();
    state.up = false;
    for call in state.calls.values() {
        let _ = call.events.send(Event::Closed);
    }
}

/// Ends the child: stdin is already closed; wait, then SIGTERM its group, wait, then SIGKILL it;
/// then ends whatever helpers are left in its group.
fn stop_child(shared: &Shared, child: &mut Child) -> String {
    let group = child.id();
    let status = match wait_for_exit(child, EXIT_GRACE) {
        Some(status) => status,
        None => {
            signal_group(group, Signal::TERM);
            match wait_for_exit(child, EXIT_GRACE) {
                Some(status) => status,
                None => {
                    log::warn!(
                        "[{}] stdio server ignored stdin close and SIGTERM; killing it",
                        shared.channel
                    );
                    signal_group(group, Signal::KILL);
                    let _ = child.kill();
                    child
                        .wait()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| format!("wait failed: {e}"))
                }
            }
        }
    };
    end_group(shared, group);
    status
}

/// Helpers the server forked (its process group, which outlives it while any member lives):
/// SIGTERM, then SIGKILL after [`EXIT_GRACE`]. The group id cannot be reused while the group
/// exists, so this never signals strangers.
fn end_group(shared: &Shared, group: u32) {
    if !signal_group(group, Signal::TERM) {
        return; // no member left
    }
    let deadline = Instant::now() + EXIT_GRACE;
    while group_exists(group) {
        if Instant::now() >= deadline {
            log::warn!(
                "[{}] helpers of the stdio server ignored SIGTERM; killing its process group",
                shared.channel
            );
            signal_group(group, Signal::KILL);
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to process group `group`; false when the group no longer exists.
fn signal_group(group: u32, signal: Signal) -> bool {
    group_pid(group).is_some_and(|pid| rustix::process::kill_process_group(pid, signal).is_ok())
}

fn group_exists(group: u32) -> bool {
    group_pid(group).is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}

fn group_pid(group: u32) -> Option<Pid> {
    i32::try_from(group).ok().and_then(Pid::from_raw)
}

fn wait_for_exit(child: &mut Child, grace: Duration) -> Option<String> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.to_string()),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

fn forward_stderr(channel: &str, stderr: impl Read) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader
            .by_ref()
            .take(MAX_STDERR_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if !text.is_empty() {
                    log::info!("[{channel}] {text}");
                }
                if !line.ends_with(b"\n") && skip_rest_of_line(&mut reader).is_err() {
                    return;
                }
            }
        }
    }
}

/// For the fuzzer: runs `data` through the stdout line framing and routing (child → caller,
/// with one call in flight whose id and progress token get restored) and, line by line, through
/// the request rewriting (caller → child: id, progress token, cancellation), all in memory with no
/// child process. Never panics, never blocks.
#[doc(hidden)]
pub fn fuzz_framing(data: &[u8]) {
    let transport = StdioTransport {
        shared: Arc::new(Shared::new("fuzz", vec!["fuzz".into()], Vec::new())),
    };
    let caller_id = Value::from("caller");
    let (events, inbox) = mpsc::channel();
    {
        let mut state = transport.shared.lock();
        state.tokens.insert("mcpt-progress-1".into(), 1);
        state.calls.insert(
            1,
            Call {
                events,
                progress: Some((Value::from(7), "mcpt-progress-1".into())),
                original_id: caller_id.clone(),
                session: None,
            },
        );
    }
    read_stdout(&transport.shared, data);
    for event in inbox.try_iter() {
        if let Event::Response(raw) = event {
            let _ = restore_id(&raw, &caller_id);
        }
    }
    // The channel is down, so each request is rewritten and then refused at once.
    let mut sink = |_: Box<RawValue>, _: &super::Headers| {};
    let headers = [("Mcp-Session-Id".to_string(), "fuzz".to_string())];
    for line in data.split(|&b| b == b'\n') {
        let Ok(text) = std::str::from_utf8(line) else {
            continue;
        };
        if let Ok(raw) = serde_json::from_str::<Box<RawValue>>(text) {
            let _ = transport.call(&raw, &headers, Some(Instant::now()), &mut sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_framing_survives_odd_input() {
        let inputs: [&[u8]; 9] = [
            b"",
            b"\n\n\r\n",
            b"\xff\xfe not utf-8\n",
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"mcpt-progress-1\"}}\n{\"id\":1}",
            br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"_meta":{"progressToken":[1]}}}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"caller"}}"#,
            br#"{"id":18446744073709551617,"id":1.50,"method":"sampling/createMessage"}"#,
            b"[1,2,3]\nnull\n\"str\"\n{\"params\":{\"_meta\":7}}",
        ];
        for input in inputs {
            fuzz_framing(input);
        }
    }

    #[test]
    fn split_command_without_a_shell() {
        assert_eq!(
            split_command("npx -y @scope/server").unwrap(),
            ["npx", "-y", "@scope/server"]
        );
        assert_eq!(
            split_command(r#"python -c 'print("a b")' "x \"y\"" z\ w"#).unwrap(),
            ["python", "-c", r#"print("a b")"#, r#"x "y""#, "z w"]
        );
        assert_eq!(
            split_command("a;b | c $(d)").unwrap(),
            ["a;b", "|", "c", "$(d)"]
        );
        assert_eq!(split_command("''").unwrap(), [""]);
        assert!(split_command("'open").is_err());
        assert!(split_command("\"open").is_err());
        assert!(split_command("trailing\\").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn object_rewrites_only_what_it_is_asked_to() {
        let text = r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x","_meta":{"progressToken":7,"z":1.50}}}"#;
        let mut o = Object::parse(text).unwrap();
        assert_eq!(o.progress_token(), Some(Value::from(7)));
        o.set("id", &Value::from(12));
        o.set_progress_token(&Value::from("p-12"));
        assert_eq!(
            o.to_raw().get(),
            r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p-12","z":1.50}}}"#
        );
        assert_eq!(
            restore_id(&o.to_raw(), &Value::from("a")).get(),
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p-12","z":1.50}}}"#
        );
    }
}
