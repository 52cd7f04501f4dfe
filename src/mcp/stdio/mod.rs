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
//! signals the whole group (SIGTERM, then SIGKILL after a 3 s grace), so helpers it forked die
//! with it. Each child is a *generation*: only its own stdout reader can end it, never the reader of
//! an older child whose pipe a leftover helper kept open. Messages to the child wait in a queue
//! bounded by [`MAX_QUEUED_BYTES`] and [`MAX_QUEUED_MESSAGES`]: a child that stops reading its
//! stdin makes further calls fail at once (`client_internal`/`stdin_queue_full`) and the channel
//! unready, instead of growing our memory.
//!
//! This file is the call side of the multiplexer (ids rewritten, answers awaited, cancellation
//! translated); [`route`] is its return path, [`supervisor`] the child's life.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;

mod object;
mod route;
mod supervisor;

pub use supervisor::{MAX_QUEUED_BYTES, MAX_QUEUED_MESSAGES};

use super::{NotifySink, Outcome, Reply};
use crate::failure::{Failure, Source};
use crate::wire::{RespType, RpcShape};
use object::{Object, restore_id, rewrite_for_child};
use supervisor::{QueueError, StdinQueue, read_stdout, supervise};

/// Longest a call may run when the command has no deadline.
const NO_DEADLINE_TIMEOUT: Duration = Duration::from_secs(600);

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
    /// How the latest start went; `status_changed` announces each change.
    status: Option<ChildStatus>,
}

/// How the child's latest start went, for a caller that waits for it (`doctor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildStatus {
    /// Running, with this pid.
    Running(u32),
    /// It could not be started: why, and whether the program was not found.
    NotStarted { error: String, not_found: bool },
    /// It exited or closed its stdout: its exit status.
    Exited(String),
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
    /// Signalled (with `state` locked) when [`State::status`] changes.
    status_changed: Condvar,
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

    /// Waits at most `timeout` for a child status that `wanted` accepts; the latest status
    /// either way (`None`: the supervisor has not tried to start a child yet).
    pub fn wait_status(
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
            status_changed: Condvar::new(),
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

    fn set_status(&self, status: ChildStatus) {
        self.lock().status = Some(status);
        self.status_changed.notify_all();
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
