//! One supervised stdio child and the multiplexer in front of it.
//!
//! The child serves **many calls at once**: every request's id is rewritten to a unique internal
//! id on the way in and restored on the way out, so two connector sessions both using id `1`
//! never collide. Progress tokens are rewritten the same way, which routes each
//! `notifications/progress` to the call that asked for it. Other notifications go to the call in
//! flight when exactly one is, and are dropped otherwise (nothing says whose they are).
//!
//! A supervisor thread owns the child ([`super::supervisor`]): it restarts it with exponential
//! backoff when it exits or closes stdout, and fails the calls in flight at that moment at once
//! (`transport_closed`). A new child is *ready* only once it has been prepared (era probe,
//! handshake replay: [`super::handshake`]); calls that arrive before that wait for it, bounded by
//! their deadline and [`READY_WAIT`], so a restart costs open sessions nothing but a pause. A call
//! whose deadline passes retires its internal id, so a late answer is discarded, never mistaken
//! for another call's.
//!
//! Messages to the child wait in a queue bounded by [`MAX_QUEUED_BYTES`] and
//! [`MAX_QUEUED_MESSAGES`]: a child that stops reading its stdin makes further calls fail at once
//! (`client_internal`/`stdin_queue_full`) and the channel unready, instead of growing our memory.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;

use super::ChildStatus;
use super::era::EraSlot;
use super::handshake::{Handshake, Intercept};
use super::object::{Object, restore_id, rewrite_for_child};
use super::supervisor::{
    Line, MAX_QUEUED_BYTES, QueueError, StdinQueue, fate, read_stdout, supervise,
};
use crate::failure::{Failure, Source};
use crate::mcp::server_requests::Asked;
use crate::mcp::{NotifySink, Outcome, Reply};
use crate::wire::{RespType, RpcShape};

/// Longest a call may run when the command has no deadline.
const NO_DEADLINE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest a call waits for a child that is (re)starting or being prepared. The first restart
/// comes 200 ms after an exit; this covers a few quick ones and a 3 s era probe, and keeps a
/// crash-looping server from holding workers for the whole backoff.
pub(super) const READY_WAIT: Duration = Duration::from_secs(15);

/// What the reader thread hands a waiting call.
pub(super) enum Event {
    Notification(Box<RawValue>),
    Response(Box<RawValue>),
    /// The child went away before answering.
    Closed,
    /// The caller cancelled the call; the server will not answer it.
    Cancelled,
}

/// A call waiting for the child's answer, keyed by its internal id.
pub(super) struct Call {
    pub(super) events: Sender<Event>,
    /// The caller's progress token and the internal one that replaced it.
    pub(super) progress: Option<(Value, String)>,
    /// The caller's id and MCP session, to find this call when the caller cancels it.
    pub(super) original_id: Value,
    pub(super) session: Option<String>,
    /// A `subscriptions/listen` (tagged notifications may go to it, see [`super::route`]).
    pub(super) listen: bool,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) calls: HashMap<u64, Call>,
    /// Internal progress token → internal call id.
    pub(super) tokens: HashMap<String, u64>,
    /// The child's pipes are open.
    pub(super) up: bool,
    /// The child is up and prepared (probed, handshake replayed): calls may go to it.
    pub(super) ready: bool,
    pub(super) restarts: u64,
    /// How the latest start went; `status_changed` announces each change.
    pub(super) status: Option<ChildStatus>,
    /// The legacy handshake this process owns for its sessions.
    pub(super) handshake: Handshake,
    /// Long-lived streams held on this child (a session's `GET`, our relay extension), by an
    /// internal id: messages not tied to a request go to every one ([`super::listen`]).
    pub(super) listeners: HashMap<u64, Sender<Event>>,
}

pub(super) struct Shared {
    pub(super) channel: String,
    pub(super) argv: Vec<String>,
    /// Environment variables removed from the child's environment.
    pub(super) scrub: Vec<String>,
    /// Where the channel's era probe result goes: `Some` for the one process that probes.
    pub(super) probe: Option<Arc<EraSlot>>,
    pub(super) state: Mutex<State>,
    /// The queue to the child's writer thread. Writes never block a caller, the reader or
    /// shutdown: a child that stops reading stalls only its writer thread, and a full queue
    /// refuses the message. `None` while the child is down.
    pub(super) stdin: Mutex<Option<StdinQueue>>,
    /// Set when the queue refused a message; cleared when the writer has emptied it.
    pub(super) stdin_full: Arc<AtomicBool>,
    /// Which child is current, and whether its reader reached the end of its stdout; `wake`
    /// announces it (and stop).
    pub(super) reader: Mutex<ReaderState>,
    pub(super) wake: Condvar,
    /// Signalled (with `state` locked) when [`State::status`], `ready` or the handshake change.
    pub(super) status_changed: Condvar,
    pub(super) next_id: AtomicU64,
    /// Server→client requests forwarded to hosts (our extension), awaiting answers.
    pub(super) asked: Asked,
    pub(super) stopping: AtomicBool,
    /// Signalled on stop and when the supervisor ends.
    pub(super) changed: Condvar,
    pub(super) supervisor_done: Mutex<bool>,
}

/// The current child generation and whether its stdout reader has finished.
#[derive(Default)]
pub(super) struct ReaderState {
    pub(super) generation: u64,
    pub(super) done: bool,
}

/// Why a call could not wait for a ready child.
pub(super) enum NotReady {
    /// The deadline (or [`READY_WAIT`]) passed first.
    Timeout,
    /// The program cannot be started, or we are stopping: waiting would not help.
    Down,
}

/// One stdio MCP server process (restarted as needed) and its supervisor.
pub(super) struct Process {
    pub(super) shared: Arc<Shared>,
}

impl Process {
    /// Starts the supervisor, which starts the child. `scrub` names environment variables the
    /// child must not inherit (secrets of ours); `probe`, when given, receives the era probe's
    /// result if it has none yet.
    pub(super) fn start(
        channel: &str,
        argv: Vec<String>,
        scrub: Vec<String>,
        probe: Option<Arc<EraSlot>>,
    ) -> io::Result<Process> {
        let shared = Arc::new(Shared::new(channel, argv, scrub, probe));
        let supervised = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("stdio-{channel}"))
            .spawn(move || supervise(&supervised))?;
        Ok(Process { shared })
    }

    /// Whether the child is running right now.
    pub(super) fn is_up(&self) -> bool {
        self.shared.lock().up
    }

    /// Why the channel cannot take calls right now (`None`: it can), for `/readyz`.
    pub(super) fn problem(&self) -> Option<String> {
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

    /// Waits at most `timeout` for a child status that `wanted` accepts; the latest status
    /// either way (`None`: the supervisor has not tried to start a child yet).
    pub(super) fn wait_status(
        &self,
        timeout: Duration,
        wanted: impl Fn(&ChildStatus) -> bool,
    ) -> Option<ChildStatus> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            let now = Instant::now();
            if state.status.as_ref().is_some_and(&wanted) || now >= deadline {
                return state.status.clone();
            }
            state = self
                .shared
                .status_changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// How many times the child has been restarted.
    pub(super) fn restarts(&self) -> u64 {
        self.shared.lock().restarts
    }

    /// Waits until the child is ready, at most until `limit`.
    pub(super) fn wait_ready(&self, limit: Instant) -> Result<(), NotReady> {
        let mut state = self.shared.lock();
        loop {
            if state.ready {
                return Ok(());
            }
            let now = Instant::now();
            let unstartable = matches!(state.status, Some(ChildStatus::NotStarted { .. }));
            if unstartable || self.shared.stopping.load(Ordering::SeqCst) {
                return Err(NotReady::Down);
            }
            if now >= limit {
                return Err(NotReady::Timeout);
            }
            state = self
                .shared
                .status_changed
                .wait_timeout(state, limit - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Forwards one JSON-RPC message to the child.
    pub(super) fn call(
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
        let (Some(shape), Some(object)) =
            (RpcShape::of(message.get()), Object::parse(message.get()))
        else {
            let failure = Failure::new(Source::Protocol, "malformed_json");
            return Outcome::Reply(Reply::failure(&failure, &Value::Null));
        };
        let limit = deadline.unwrap_or_else(|| Instant::now() + NO_DEADLINE_TIMEOUT);
        let original_id = shape.id.clone().unwrap_or(Value::Null);
        let is_request = shape.method.is_some() && shape.id.is_some();
        // A later session's `initialize` is answered from the cache, even while the child is down.
        if let Some(answer) = self.cached_initialize(&shape) {
            return answer;
        }
        if let Err(why) = self.wait_ready(limit.min(Instant::now() + READY_WAIT)) {
            return match why {
                NotReady::Timeout if deadline.is_some_and(|d| Instant::now() >= d) => {
                    Outcome::Expired
                }
                _ if !is_request => Outcome::Reply(ack(502)),
                _ => {
                    let failure = Failure::new(Source::Connect, "dial");
                    Outcome::Reply(Reply::failure(&failure, &original_id))
                }
            };
        }
        match self.intercept(&shape, limit) {
            Intercept::Answer(outcome) => outcome,
            Intercept::Forward if !is_request => {
                self.notify(&shape, message, object, session.as_deref())
            }
            Intercept::Forward => self.forward(object, original_id, session, deadline, on_notify),
            Intercept::Initialize => {
                let params = object.get("params").map(RawValue::to_owned);
                let outcome = self.forward(object, original_id, session, deadline, on_notify);
                self.initialize_done(params, &outcome);
                outcome
            }
        }
    }

    /// Forwards a notification (or a stray response): it needs no answer from the child.
    fn notify(
        &self,
        shape: &RpcShape,
        message: &RawValue,
        object: Object,
        session: Option<&str>,
    ) -> Outcome {
        let outgoing = if shape.method.as_deref() == Some("notifications/cancelled") {
            match self.translate_cancellation(object, session) {
                Some(translated) => translated,
                None => return Outcome::Reply(ack(202)),
            }
        } else if let Some(answer) = self.shared.asked.answer(message, None) {
            answer.get().to_string() // a host's answer to a request this child sent
        } else {
            message.get().to_string()
        };
        let code = match self.shared.write_line(&outgoing) {
            Ok(()) => 202,
            Err(QueueError::Full) => 503,
            Err(QueueError::Down) => 502,
        };
        Outcome::Reply(ack(code))
    }

    /// Sends one request to the child under an internal id and waits for its answer.
    /// A request the child provably never got (it went away first: the write failed or was never
    /// tried) is sent once more, to the restarted child; one it may have read is not, as it could
    /// run twice.
    fn forward(
        &self,
        object: Object,
        original_id: Value,
        session: Option<String>,
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
    ) -> Outcome {
        let limit = deadline.unwrap_or_else(|| Instant::now() + NO_DEADLINE_TIMEOUT);
        let first = self.forward_once(
            object.clone(),
            &original_id,
            session.clone(),
            deadline,
            on_notify,
        );
        if let Ok(outcome) = first {
            return outcome;
        }
        log::info!(
            "[{}] the stdio server went away before it read a request; sending it to the \
             restarted server",
            self.shared.channel
        );
        if self
            .wait_ready(limit.min(Instant::now() + READY_WAIT))
            .is_ok()
            && let Ok(outcome) =
                self.forward_once(object, &original_id, session, deadline, on_notify)
        {
            return outcome;
        }
        let failure = Failure::new(Source::TransportClosed, "eof");
        Outcome::Reply(Reply::failure(&failure, &original_id))
    }

    fn forward_once(
        &self,
        mut object: Object,
        original_id: &Value,
        session: Option<String>,
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
    ) -> Result<Outcome, Undelivered> {
        let internal = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let listen = object
            .get("method")
            .is_some_and(|m| m.get() == "\"subscriptions/listen\"");
        let progress = rewrite_for_child(&mut object, internal);
        let (events, inbox) = mpsc::channel();
        {
            let mut state = self.shared.lock();
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
                    listen,
                },
            );
        }
        // Whatever happens below, the internal id is retired when this call ends.
        let _retire = Retire {
            shared: &self.shared,
            id: internal,
        };
        let line_fate = Arc::new(AtomicU8::new(fate::QUEUED));
        match self
            .shared
            .queue_line(object.to_raw().get(), Some(Arc::clone(&line_fate)))
        {
            Ok(()) => {}
            Err(QueueError::Down) => return Err(Undelivered),
            Err(QueueError::Full) => {
                let failure = Failure::new(Source::ClientInternal, "stdin_queue_full");
                return Ok(Outcome::Reply(Reply::failure(&failure, original_id)));
            }
        }
        let limit = deadline.unwrap_or_else(|| Instant::now() + NO_DEADLINE_TIMEOUT);
        loop {
            let left = limit.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(left) {
                Ok(Event::Notification(n)) => on_notify(n, &BTreeMap::new()),
                Ok(Event::Response(raw)) => {
                    return Ok(Outcome::Reply(Reply {
                        resp_json: Some(restore_id(&raw, original_id)),
                        resp_headers: [(
                            "Content-Type".to_string(),
                            vec!["application/json".to_string()],
                        )]
                        .into(),
                        resp_code: 200,
                        resp_type: RespType::JsonrpcResponse,
                        failure: None,
                    }));
                }
                Ok(Event::Cancelled) => return Ok(Outcome::Cancelled),
                Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    if never_delivered(&line_fate) {
                        return Err(Undelivered);
                    }
                    let failure = Failure::new(Source::TransportClosed, "eof");
                    return Ok(Outcome::Reply(Reply::failure(&failure, original_id)));
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
                        return Ok(Outcome::Expired);
                    }
                    let failure = Failure::new(Source::Timeout, "timeout");
                    return Ok(Outcome::Reply(Reply::failure(&failure, original_id)));
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

    /// Tells the supervisor to stop the child (stdin closed, then SIGTERM, then kill), and the
    /// calls waiting for it to give up.
    pub(super) fn begin_stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.stdin_lock().take();
        // Calls waiting for a ready child give up now.
        drop(self.shared.lock());
        self.shared.status_changed.notify_all();
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
    }

    /// Waits until `deadline` for the supervisor to finish after [`Process::begin_stop`].
    pub(super) fn wait_stopped(&self, deadline: Instant) {
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

/// A request the child provably never got.
struct Undelivered;

/// Whether a line's child went away without it: the writer had not taken it yet (now it never
/// will), or its write failed. A write in progress is waited for (it ends quickly once the pipe
/// is closed).
fn never_delivered(line: &AtomicU8) -> bool {
    let give_up = line.compare_exchange(
        fate::QUEUED,
        fate::UNDELIVERED,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    if give_up.is_ok() {
        return true;
    }
    let until = Instant::now() + Duration::from_secs(1);
    while line.load(Ordering::SeqCst) == fate::WRITING && Instant::now() < until {
        thread::sleep(Duration::from_millis(5));
    }
    line.load(Ordering::SeqCst) == fate::UNDELIVERED
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
    fn new(
        channel: &str,
        argv: Vec<String>,
        scrub: Vec<String>,
        probe: Option<Arc<EraSlot>>,
    ) -> Shared {
        Shared {
            channel: channel.to_string(),
            argv,
            scrub,
            probe,
            state: Mutex::new(State::default()),
            stdin: Mutex::new(None),
            stdin_full: Arc::new(AtomicBool::new(false)),
            reader: Mutex::new(ReaderState::default()),
            wake: Condvar::new(),
            status_changed: Condvar::new(),
            next_id: AtomicU64::new(1),
            asked: Asked::default(),
            stopping: AtomicBool::new(false),
            changed: Condvar::new(),
            supervisor_done: Mutex::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn stdin_lock(&self) -> MutexGuard<'_, Option<StdinQueue>> {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_status(&self, status: ChildStatus) {
        self.lock().status = Some(status);
        self.status_changed.notify_all();
    }

    pub(super) fn reader_lock(&self) -> MutexGuard<'_, ReaderState> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one message and its newline for the child. JSON text never contains a raw newline
    /// outside strings, but a pretty-printed message may contain them between tokens: those are
    /// replaced by spaces so the message stays on one line.
    pub(super) fn write_line(&self, json: &str) -> Result<(), QueueError> {
        self.queue_line(json, None)
    }

    /// [`Shared::write_line`], with the line's fate recorded in `fate` ([`fate`]).
    fn queue_line(&self, json: &str, fate: Option<Arc<AtomicU8>>) -> Result<(), QueueError> {
        let mut text = json.replace(['\n', '\r'], " ");
        text.push('\n');
        let queue = self.stdin_lock().clone().ok_or(QueueError::Down)?;
        let pushed = queue.push(Line { text, fate });
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

    /// Sleeps `delay` unless stopping first. Returns false when stopping.
    pub(super) fn pause(&self, delay: Duration) -> bool {
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
pub(super) fn ack(resp_code: u16) -> Reply {
    Reply {
        resp_json: None,
        resp_headers: Default::default(),
        resp_code,
        resp_type: RespType::NotifyAck,
        failure: None,
    }
}

/// For the fuzzer (through [`super::fuzz_framing`]): runs `data` through the stdout line framing and routing (child → caller,
/// with one call in flight whose id and progress token get restored) and, line by line, through
/// the request rewriting (caller → child: id, progress token, cancellation), all in memory with no
/// child process. Never panics, never blocks.
pub(super) fn fuzz_framing(data: &[u8]) {
    let transport = Process {
        shared: Arc::new(Shared::new("fuzz", vec!["fuzz".into()], Vec::new(), None)),
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
                listen: false,
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
    let mut sink = |_: Box<RawValue>, _: &crate::mcp::Headers| {};
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
