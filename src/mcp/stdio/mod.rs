//! MCP servers that are programs speaking newline-delimited JSON-RPC on stdin/stdout.
//!
//! A stdio channel runs its server as supervised child processes ([`process`]: one child, its
//! multiplexer and restarts; [`supervisor`]: its life; [`route`]: its return path). This file
//! decides which child a message goes to:
//!
//! - **Eras** ([`era`]): the channel's first child is probed with `server/discover` once. A legacy
//!   (2025) server gets every message, modern requests included (it answers them with an error,
//!   and the host falls back). A modern-capable server keeps that first child for modern
//!   (stateless) traffic, and legacy traffic gets a child of its own, started on its first use and
//!   never probed: a process serves one era, and neither era's traffic reaches the other's child.
//! - **The legacy handshake** ([`handshake`]): one `initialize` per child, owned by the tunnel,
//!   replayed after a restart.
//! - **Sessions**: by default (`shared`) every session of an era shares that era's child. With
//!   `sessions=per-session` ([`sessions`]) each legacy session gets a child of its own, started on
//!   its `initialize` and stopped on its `DELETE` or when idle; sessionless (modern) traffic still
//!   goes to the first child.
//!
//! The child is started without a shell: the command is split into argv by a small tokenizer,
//! and `;`, `|` or `$(…)` are just characters. It runs in its own process group, and every stop
//! or restart signals the whole group (SIGTERM, then SIGKILL after a 3 s grace), so helpers it
//! forked die with it. Each child is a *generation*: only its own stdout reader can end it, never
//! the reader of an older child whose pipe a leftover helper kept open.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

mod era;
mod handshake;
mod listen;
mod object;
mod process;
mod route;
mod sessions;
mod supervisor;

pub(in crate::mcp) use object::restore_id;
pub use supervisor::{MAX_QUEUED_BYTES, MAX_QUEUED_MESSAGES};

use super::{NotifySink, Outcome, Reply, StreamSink};
use crate::config::{StdioOptions, StdioSessions};
use crate::http_client::CancelFlag;
use crate::wire::{RespType, RpcShape};
use era::{Era, EraSlot, era_of_message};
use object::Object;
use process::Process;
use sessions::Sessions;

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

/// One stdio channel: its server's children and the routing between them.
pub struct StdioTransport {
    channel: String,
    argv: Vec<String>,
    scrub: Vec<String>,
    era: Arc<EraSlot>,
    /// The probed child: every message of a legacy server, the modern ones of a modern one.
    first: Process,
    /// A modern-capable server's child for legacy sessions, started on first use.
    legacy: Mutex<Option<Arc<Process>>>,
    /// Per-session mode: each legacy session's own child.
    sessions: Option<Arc<Sessions>>,
}

impl StdioTransport {
    /// Starts a channel whose sessions share its children; see [`StdioTransport::start_with`].
    pub fn start(
        channel: &str,
        argv: Vec<String>,
        scrub: Vec<String>,
    ) -> io::Result<StdioTransport> {
        StdioTransport::start_with(channel, argv, scrub, &StdioOptions::default())
    }

    /// Starts the supervisor, which starts the first child, and in per-session mode the
    /// bookkeeping of the sessions' children. `scrub` names environment variables the children
    /// must not inherit (secrets of ours).
    pub fn start_with(
        channel: &str,
        argv: Vec<String>,
        scrub: Vec<String>,
        options: &StdioOptions,
    ) -> io::Result<StdioTransport> {
        let sessions = match options.sessions {
            StdioSessions::Shared => None,
            StdioSessions::PerSession => Some(Sessions::start(channel, &argv, &scrub, options)?),
        };
        let era = EraSlot::new();
        let first = Process::start(channel, argv.clone(), scrub.clone(), Some(Arc::clone(&era)))?;
        Ok(StdioTransport {
            channel: channel.to_string(),
            argv,
            scrub,
            era,
            first,
            legacy: Mutex::new(None),
            sessions,
        })
    }

    /// Whether the (first) child is running right now.
    pub fn is_up(&self) -> bool {
        self.first.is_up()
    }

    /// Why the channel cannot take calls right now (`None`: it can), for `/readyz`. A
    /// per-session child's trouble is its session's, not the channel's (a new session gets a
    /// new child; one broken for good breaks the first child too), and a full cap is load, not
    /// a fault: neither makes the channel unready.
    pub fn problem(&self) -> Option<String> {
        self.first
            .problem()
            .or_else(|| self.legacy_child().and_then(|p| p.problem()))
    }

    /// Waits at most `timeout` for a status of the first child that `wanted` accepts; the latest
    /// status either way (`None`: the supervisor has not tried to start a child yet).
    pub fn wait_status(
        &self,
        timeout: Duration,
        wanted: impl Fn(&ChildStatus) -> bool,
    ) -> Option<ChildStatus> {
        self.first.wait_status(timeout, wanted)
    }

    /// How many times the channel's children have been restarted.
    pub fn restarts(&self) -> u64 {
        self.first.restarts()
            + self.legacy_child().map_or(0, |p| p.restarts())
            + self.sessions.as_ref().map_or(0, |s| s.restarts())
    }

    /// Forwards one JSON-RPC message to the child of its era.
    pub fn call(
        &self,
        message: &RawValue,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        on_notify: &mut NotifySink<'_>,
    ) -> Outcome {
        if let Some(outcome) = self
            .sessions
            .as_ref()
            .and_then(|s| s.call(message, command_headers, deadline, on_notify))
        {
            return outcome;
        }
        match self.legacy_target(message, command_headers, deadline) {
            Ok(Some(child)) => child.call(message, command_headers, deadline, on_notify),
            Ok(None) => self
                .first
                .call(message, command_headers, deadline, on_notify),
            Err(outcome) => outcome,
        }
    }

    /// Holds a session's `GET` stream (our relay extension) on the child that serves the session
    /// ([`listen`]): its own child in per-session mode (`404` when the session is not open), else
    /// the child of legacy sessions.
    pub fn hold_stream(
        &self,
        command_headers: &[(String, String)],
        deadline: Option<Instant>,
        sink: &mut StreamSink<'_>,
        cancel: &CancelFlag,
    ) -> Outcome {
        if let Some(outcome) = self
            .sessions
            .as_ref()
            .and_then(|s| s.hold_stream(command_headers, deadline, sink, cancel))
        {
            return outcome;
        }
        match self.legacy_child() {
            Some(child) if self.era.get() == Some(Era::Modern) => {
                child.hold_stream(deadline, sink, cancel)
            }
            _ => self.first.hold_stream(deadline, sink, cancel),
        }
    }

    /// The legacy child when `message` must go to it (a legacy message, a modern-capable server),
    /// `None` for the first child.
    fn legacy_target(
        &self,
        message: &RawValue,
        headers: &[(String, String)],
        deadline: Option<Instant>,
    ) -> Result<Option<Arc<Process>>, Outcome> {
        let (Some(shape), Some(object)) =
            (RpcShape::of(message.get()), Object::parse(message.get()))
        else {
            return Ok(None); // the first child's call answers malformed input
        };
        if era_of_message(shape.method.as_deref(), &object, headers) == Era::Modern {
            return Ok(None);
        }
        if self.era.get().is_none() {
            // The probe runs while the first child is prepared: once it is ready, it has run.
            let limit = deadline.unwrap_or_else(|| Instant::now() + process::READY_WAIT);
            let _ = self
                .first
                .wait_ready(limit.min(Instant::now() + process::READY_WAIT));
        }
        if self.era.get() != Some(Era::Modern) {
            return Ok(None);
        }
        if shape.method.as_deref() == Some("notifications/cancelled")
            && self.legacy_child().is_none()
        {
            return Ok(None); // nothing of a session is in flight anywhere but the first child
        }
        self.start_legacy_child().map(Some).map_err(|e| {
            log::error!(
                "[{}] cannot start the legacy stdio server: {e}",
                self.channel
            );
            let failure = crate::failure::Failure::new(crate::failure::Source::Connect, "dial");
            Outcome::Reply(Reply::failure(&failure, &shape.id.unwrap_or_default()))
        })
    }

    fn legacy_child(&self) -> Option<Arc<Process>> {
        self.legacy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn start_legacy_child(&self) -> io::Result<Arc<Process>> {
        let mut legacy = self.legacy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = &*legacy {
            return Ok(Arc::clone(child));
        }
        log::info!(
            "[{}] a legacy (initialize) session on a modern-capable server: starting its own \
             stdio server",
            self.channel
        );
        let label = format!("{}/legacy", self.channel);
        let child = Arc::new(Process::start(
            &label,
            self.argv.clone(),
            self.scrub.clone(),
            None,
        )?);
        *legacy = Some(Arc::clone(&child));
        Ok(child)
    }

    /// Ends a session (`DELETE`). In per-session mode its child is stopped (`204`; `404` for a
    /// session that is not open). Shared children have no sessions to end over the transport:
    /// `405`, and the channel keeps serving.
    pub fn terminate_session(&self, command_headers: &[(String, String)]) -> Outcome {
        if let Some(outcome) = self
            .sessions
            .as_ref()
            .and_then(|s| s.terminate(command_headers))
        {
            return outcome;
        }
        Outcome::Reply(Reply {
            resp_json: None,
            resp_headers: Default::default(),
            resp_code: 405,
            resp_type: RespType::SessionTerminationResponse,
            failure: None,
        })
    }

    /// Stops every child (stdin closed, then SIGTERM, then kill) and waits at most `timeout` for
    /// their supervisors to finish.
    pub fn stop(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let legacy = self.legacy_child();
        self.first.begin_stop();
        if let Some(child) = &legacy {
            child.begin_stop();
        }
        let per_session = self.sessions.as_ref().map(|s| s.begin_stop());
        self.first.wait_stopped(deadline);
        for child in legacy.iter().chain(per_session.iter().flatten()) {
            child.wait_stopped(deadline);
        }
    }
}

/// For the fuzzer: runs `data` through the stdout line framing and routing (child → caller,
/// with one call in flight whose id and progress token get restored) and, line by line, through
/// the request rewriting (caller → child: id, progress token, cancellation), all in memory with no
/// child process. Never panics, never blocks.
#[doc(hidden)]
pub fn fuzz_framing(data: &[u8]) {
    process::fuzz_framing(data);
}
