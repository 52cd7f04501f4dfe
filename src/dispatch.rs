//! The client's engine: one poll thread → a bounded queue → a fixed pool of workers → the MCP
//! transport → the response POST. Data flows one way; the only thing flowing back is "a slot is
//! free", which lets the poll thread ask for more.
//!
//! - **Queue**: holds at most `max_inflight` commands counting those running. The poll asks for
//!   `min(free slots, 25)` and does not poll at all while full. A batch larger than asked for is
//!   still taken whole: those commands were already handed to us.
//! - **Deadlines**: anchored at the instant the poll answer's headers arrived. A command already
//!   expired at dispatch is dropped without contacting the MCP server; one that expires mid-call is
//!   abandoned and nothing is posted.
//! - **Pacing**: transient poll failures back off exponentially with full jitter (200 ms → 10 s,
//!   never sooner than `Retry-After`); operator errors (400/401/403/404) wait 30 s → 5 min and are
//!   logged once per change with the fix.
//! - **Shutdown**: [`Tunnel::stop`] stops polling at once; [`Tunnel::drain`] waits until every
//!   queued and running command has finished (or the drain timeout passes).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use serde_json::value::RawValue;

use crate::backoff::Backoff;
use crate::config::{ChannelTransport, MAX_POLL_LIMIT, RunConfig};
use crate::contain::{self, Settled};
use crate::control_plane::{ControlPlane, Delivery, PollError, PollOk};
use crate::deadline;
use crate::failure::{self, Failure, Source};
use crate::mcp::http::HttpTransport;
use crate::mcp::stdio::StdioTransport;
use crate::mcp::{Outcome, Reply, Transport};
use crate::ops::health::Report;
use crate::ops::metrics::{CommandOutcome, Gauges, PollOutcome};
use crate::ops::{Health, Metrics, Readiness};
use crate::secret::Secret;
use crate::wire::ChannelInfo;
use crate::wire::{self, BadCommand, Command, CommandKind, RespType, ResponsePayload, RpcShape};

/// How often idle channels are probed for reachability (readiness).
const PROBE_INTERVAL: Duration = Duration::from_secs(15);
/// The poll thread shows it is alive at least this often while it waits (for the watchdog).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// First delay after a transient poll failure.
const POLL_RETRY_BASE: Duration = Duration::from_millis(200);
/// Longest delay between transient poll failures.
const POLL_RETRY_CAP: Duration = Duration::from_secs(10);
/// First delay after the control plane rejected our configuration (bad key, unknown tunnel):
/// retrying sooner cannot help and would only fill the log and the service's rate limits.
const OPERATOR_RETRY_BASE: Duration = Duration::from_secs(30);
/// Longest delay while the configuration stays rejected.
const OPERATOR_RETRY_CAP: Duration = Duration::from_secs(300);
/// Least time from the start of one poll to the start of the next after an empty answer: a
/// control plane (or proxy) that answers empty polls instantly would otherwise get thousands of
/// polls a second from us. A non-empty answer is followed by the next poll at once.
const MIN_EMPTY_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What a worker does with one queued item.
enum Work {
    Run(Command),
    /// A command we could identify but not use: answer with an error instead of silence.
    Reject {
        request_id: String,
        shard_token: Secret,
        raw_channel: Option<String>,
        reason: String,
    },
}

struct Job {
    work: Work,
    /// When the poll answer carrying it arrived.
    received: Instant,
    deadline: Option<Instant>,
    /// The deadline comes from `created_at`, not the poll receipt (see [`crate::deadline`]).
    deadline_from_created_at: bool,
}

/// What a worker needs to answer a command whose execution panicked, taken before it runs.
struct PanicAnswer {
    request_id: String,
    channel: String,
    shard_token: Secret,
    client_request_id: Option<String>,
    /// The JSON-RPC id to answer (null when the body has none).
    id: Value,
    deadline: Option<Instant>,
}

impl PanicAnswer {
    /// `None` for a malformed command: its answer is a fixed 400 with nothing to go wrong.
    fn for_job(job: &Job) -> Option<PanicAnswer> {
        let Work::Run(command) = &job.work else {
            return None;
        };
        let id = match &command.kind {
            CommandKind::JsonRpc(raw) => RpcShape::of(raw.get()).and_then(|s| s.id),
            _ => None,
        };
        let channel = wire::canonical_channel(command.raw_channel.as_deref())
            .or_else(|| command.raw_channel.clone())
            .unwrap_or_else(|| wire::DEFAULT_CHANNEL.to_string());
        Some(PanicAnswer {
            request_id: command.request_id.clone(),
            channel,
            shard_token: command.shard_token.clone(),
            client_request_id: command.header("X-Request-Id").map(str::to_string),
            id: id.unwrap_or(Value::Null),
            deadline: job.deadline,
        })
    }

    /// The `-32603` it answers with: `client_internal`/`panic`, the caller's id unchanged.
    fn reply(&self) -> Reply {
        Reply::failure(&Failure::new(Source::ClientInternal, "panic"), &self.id)
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    running: usize,
    stopping: bool,
}

/// The running client.
pub struct Tunnel {
    control: ControlPlane,
    /// Channel name → its MCP server.
    channels: HashMap<String, Transport>,
    max_inflight: usize,
    workers: usize,
    exit_on_auth_failure: bool,
    state: Mutex<State>,
    /// Signalled once per queued command: wakes one idle worker, not all of them.
    work: Condvar,
    /// Signalled when a command finishes and on stop: the poll thread (waiting for a free slot or
    /// pausing) and `drain` wait on it.
    changed: Condvar,
    metrics: Arc<Metrics>,
    health: Health,
    /// Set when the control plane rejected the key and `--exit-on-auth-failure` asked to stop.
    auth_failed: AtomicBool,
    /// A poll or probe thread panicked.
    internal_failure: AtomicBool,
    /// Milliseconds since `started` at the poll thread's last sign of life (for the watchdog).
    heartbeat_ms: AtomicU64,
    started: Instant,
}

impl Tunnel {
    /// Posts one payload and counts its retries: the control-plane client retries, dispatch
    /// keeps the books.
    fn post(
        &self,
        payload: &ResponsePayload,
        shard_token: &Secret,
        client_request_id: Option<&str>,
        deadline: Option<Instant>,
    ) -> Delivery {
        let posted = self
            .control
            .post_response(payload, shard_token, client_request_id, deadline);
        self.metrics.post_retries(posted.retries);
        posted.delivery
    }

    /// Builds the client; stdio channels start their servers now.
    pub fn new(cfg: &RunConfig) -> Result<Arc<Tunnel>, String> {
        let mut channels = HashMap::new();
        let mut info = Vec::new();
        for channel in &cfg.mcp.channels {
            let transport = match &channel.transport {
                ChannelTransport::Http { url, net } => {
                    Transport::Http(HttpTransport::new(url, net, &cfg.mcp)?)
                }
                ChannelTransport::Stdio { argv } => Transport::Stdio(
                    StdioTransport::start(&channel.name, argv.clone(), cfg.secret_env_vars.clone())
                        .map_err(|e| format!("channel {}: {e}", channel.name))?,
                ),
            };
            info.push(ChannelInfo {
                name: channel.name.clone(),
                proc_affinity: transport.proc_affinity(),
            });
            channels.insert(channel.name.clone(), transport);
        }
        let metrics = Arc::new(Metrics::default());
        let control = ControlPlane::new(&cfg.control_plane, &info, cfg.mcp.max_concurrent)?;
        let cp = &cfg.control_plane;
        Ok(Arc::new(Tunnel {
            control,
            channels,
            max_inflight: cp.max_inflight,
            workers: cfg.mcp.max_concurrent,
            exit_on_auth_failure: cfg.ops.exit_on_auth_failure,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            changed: Condvar::new(),
            metrics,
            health: Health::new(
                cp.poll_timeout
                    .saturating_add(cp.poll_deadline_guardrail)
                    .saturating_mul(2),
            ),
            auth_failed: AtomicBool::new(false),
            internal_failure: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(0),
            started: Instant::now(),
        }))
    }

    /// Stops what the channels run (stdio servers), waiting at most `timeout` for each.
    pub fn close(&self, timeout: Duration) {
        for transport in self.channels.values() {
            transport.stop(timeout);
        }
    }

    pub fn control_plane(&self) -> &ControlPlane {
        &self.control
    }

    /// Starts the poll thread and `workers` worker threads.
    pub fn start(self: &Arc<Self>, workers: usize) -> std::io::Result<()> {
        for i in 0..workers {
            let me = Arc::clone(self);
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || me.work_loop())?;
        }
        let me = Arc::clone(self);
        thread::Builder::new()
            .name("poll".into())
            .spawn(move || me.stop_if_it_panics("poll", || me.poll_loop()))?;
        let me = Arc::clone(self);
        thread::Builder::new()
            .name("probe".into())
            .spawn(move || me.stop_if_it_panics("probe", || me.probe_loop()))?;
        Ok(())
    }

    /// Runs a thread's loop; if it panics, stops the client (it drains, then exits with
    /// [`contain::EXIT_INTERNAL`]) rather than run on without polling or probing.
    fn stop_if_it_panics(&self, thread: &str, body: impl FnOnce()) {
        if contain::contained(body).is_none() {
            log::error!(
                "the {thread} thread stopped on an internal error; stopping so that the supervisor restarts us"
            );
            self.internal_failure.store(true, Ordering::SeqCst);
            self.stop();
        }
    }

    /// Whether a thread of the client panicked (exit code [`contain::EXIT_INTERNAL`]).
    pub fn internal_failure(&self) -> bool {
        self.internal_failure.load(Ordering::SeqCst)
    }

    /// Whether the client stopped because the control plane rejected its key (exit code 3).
    pub fn auth_failed(&self) -> bool {
        self.auth_failed.load(Ordering::SeqCst)
    }

    /// How long ago the poll thread last showed it is not stuck.
    pub fn poll_thread_idle(&self) -> Duration {
        let beat = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(beat)
    }

    fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// Keeps HTTP channels' reachability fresh when no traffic shows it: one idle for
    /// [`PROBE_INTERVAL`] gets a lightweight request.
    /// The first probe waits one interval: until then a channel counts as reachable, and real
    /// calls report on it sooner anyway.
    fn probe_loop(&self) {
        while self.pause(PROBE_INTERVAL, false) {
            for (name, transport) in &self.channels {
                let Transport::Http(t) = transport else {
                    continue; // stdio channels are read live by `readiness`
                };
                let stale = self
                    .health
                    .channel_age(name)
                    .is_none_or(|age| age >= PROBE_INTERVAL);
                if stale {
                    self.health.channel_seen(name, t.probe());
                }
            }
        }
    }

    /// Stops polling. Commands already received still run.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
    }

    /// Blocks until [`stop`](Self::stop) has been called.
    pub fn wait_stopped(&self) {
        let mut state = self.lock();
        while !state.stopping {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until no command is queued or running, at most `timeout`. Returns how many were
    /// still unfinished when it gave up.
    pub fn drain(&self, timeout: Duration) -> usize {
        let deadline = deadline::after(Instant::now(), timeout);
        let mut state = self.lock();
        loop {
            let unfinished = state.queue.len() + state.running;
            let now = Instant::now();
            if unfinished == 0 || deadline.is_some_and(|d| now >= d) {
                return unfinished;
            }
            let left = deadline.map_or(Duration::MAX, |d| d - now);
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked cannot leave the state half-updated in a way that matters more
        // than stopping the whole client would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a free slot; `None` once stopping.
    fn free_slots(&self) -> Option<usize> {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return None;
            }
            let free = self
                .max_inflight
                .saturating_sub(state.queue.len() + state.running);
            if free > 0 {
                return Some(free);
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sleeps for `delay` unless stopped first. Returns false when stopping. With `beat` (the
    /// poll thread), shows the thread alive at least every [`HEARTBEAT_INTERVAL`] while it waits.
    fn pause(&self, delay: Duration, beat: bool) -> bool {
        let Some(deadline) = deadline::after(Instant::now(), delay) else {
            return !self.lock().stopping; // never: no pause is that long (backoffs are capped)
        };
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            if state.stopping {
                return false;
            }
            if now >= deadline {
                return true;
            }
            // Only a pause that shows signs of life needs to wake before its end.
            let wait = if beat {
                self.beat();
                (deadline - now).min(HEARTBEAT_INTERVAL)
            } else {
                deadline - now
            };
            state = self
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn poll_loop(&self) {
        let mut transient = Backoff::new(POLL_RETRY_BASE, POLL_RETRY_CAP);
        let mut operator = Backoff::new(OPERATOR_RETRY_BASE, OPERATOR_RETRY_CAP);
        // The last problem logged, so a problem that persists is logged once, not every poll.
        let mut last_problem: Option<String> = None;
        while let Some(free) = self.free_slots() {
            let limit = free.min(MAX_POLL_LIMIT);
            self.beat();
            let poll_started = Instant::now();
            let result = self.control.poll(limit);
            self.beat();
            let delay = match result {
                Ok(result) => {
                    transient.reset();
                    operator.reset();
                    self.health.poll_succeeded();
                    if last_problem.take().is_some() {
                        log::info!("control plane polling works again");
                    }
                    match result {
                        PollOk::Commands { received, commands } => {
                            self.metrics.poll(PollOutcome::Commands);
                            self.enqueue(received, &commands);
                        }
                        PollOk::Empty => {
                            self.metrics.poll(PollOutcome::Empty);
                            let floor =
                                MIN_EMPTY_POLL_INTERVAL.saturating_sub(poll_started.elapsed());
                            if !floor.is_zero() && !self.pause(floor, true) {
                                break;
                            }
                        }
                    }
                    continue;
                }
                Err(PollError::Operator { status, message }) => {
                    self.metrics.poll(PollOutcome::Rejected);
                    self.health.poll_failed(readiness_reason(status, &message));
                    let advice = operator_advice(status, &message);
                    if last_problem.as_deref() != Some(advice.as_str()) {
                        log::error!("{advice}");
                        last_problem = Some(advice);
                    }
                    if self.exit_on_auth_failure && matches!(status, 401 | 403) {
                        log::error!("exiting (code 3): --exit-on-auth-failure is set");
                        self.auth_failed.store(true, Ordering::SeqCst);
                        self.stop();
                        break;
                    }
                    operator.next_delay_at_least(OPERATOR_RETRY_BASE)
                }
                Err(PollError::Transient {
                    reason,
                    retry_after,
                }) => {
                    self.metrics.poll(PollOutcome::Failed);
                    self.health.poll_error(&reason);
                    let problem = format!("poll failed: {reason}");
                    if last_problem.as_deref() != Some(problem.as_str()) {
                        log::warn!("{problem}; retrying with backoff");
                        last_problem = Some(problem);
                    }
                    let delay = transient.next_delay();
                    retry_after.map_or(delay, |floor| delay.max(floor))
                }
            };
            log::debug!("next poll in {delay:?}");
            if !self.pause(delay, true) {
                break;
            }
        }
        log::debug!("poll loop stopped");
    }

    /// Decodes a poll batch into jobs, every deadline anchored at `received`.
    fn enqueue(&self, received: Instant, commands: &[Box<RawValue>]) {
        let mut jobs = Vec::with_capacity(commands.len());
        for raw in commands {
            match Command::from_json(raw) {
                Ok(command) => {
                    if let CommandKind::Unknown(kind) = &command.kind {
                        log::warn!(
                            "skipping command {}: unknown command_type {kind:?}",
                            command.request_id
                        );
                        continue;
                    }
                    // An unrepresentable deadline is none (the MCP call's own cap applies).
                    let bounded = command.response_timeout.and_then(|t| {
                        let created_at = deadline::created_at_of(raw);
                        deadline::command_deadline(
                            received,
                            t,
                            created_at.as_deref(),
                            Instant::now(),
                            SystemTime::now(),
                        )
                    });
                    jobs.push(Job {
                        work: Work::Run(command),
                        received,
                        deadline: bounded.map(|(d, _)| d),
                        deadline_from_created_at: bounded.is_some_and(|(_, c)| c),
                    });
                }
                Err(BadCommand::Unanswerable(reason)) => {
                    log::warn!("skipping a command that cannot be answered: {reason}");
                }
                Err(BadCommand::Invalid {
                    request_id,
                    shard_token,
                    raw_channel,
                    reason,
                }) => jobs.push(Job {
                    work: Work::Reject {
                        request_id,
                        shard_token,
                        raw_channel,
                        reason,
                    },
                    received,
                    deadline: None,
                    deadline_from_created_at: false,
                }),
            }
        }
        if jobs.is_empty() {
            return;
        }
        log::debug!("received {} command(s)", jobs.len());
        let count = jobs.len();
        self.lock().queue.extend(jobs);
        for _ in 0..count {
            self.work.notify_one();
        }
    }

    fn work_loop(&self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        state.running += 1;
                        break job;
                    }
                    state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            let if_it_panics = PanicAnswer::for_job(&job);
            let settled = Settled::default();
            if contain::contained(|| self.execute(job, &settled)).is_none() {
                self.after_panic(if_it_panics, &settled);
            }
            self.lock().running -= 1;
            self.changed.notify_all();
        }
    }

    /// A command whose execution panicked gets a `-32603` (`client_internal`/`panic`), unless
    /// its answer had been posted or deliberately withheld before the panic.
    fn after_panic(&self, answer: Option<PanicAnswer>, settled: &Settled) {
        let Some(answer) = answer.filter(|_| !settled.is_marked()) else {
            return;
        };
        log::error!(
            request_id = answer.request_id.as_str(), channel = answer.channel.as_str();
            "command {}: internal error while running it; answering with a JSON-RPC error",
            answer.request_id
        );
        let reply = answer.reply();
        // Contained too: a panic while answering must not take the worker with it.
        contain::contained(|| {
            self.deliver(
                &answer.request_id,
                &answer.channel,
                &answer.shard_token,
                answer.client_request_id.as_deref(),
                reply,
                answer.deadline,
            )
        });
        self.metrics
            .command("jsonrpc", &answer.channel, CommandOutcome::Failed);
    }

    /// Runs one command; `settled` is marked once its answer is posted or deliberately withheld.
    fn execute(&self, job: Job, settled: &Settled) {
        let command = match job.work {
            Work::Run(command) => command,
            Work::Reject {
                request_id,
                shard_token,
                raw_channel,
                reason,
            } => {
                log::warn!(
                    request_id = request_id.as_str(),
                    channel = raw_channel.as_deref().unwrap_or_default(),
                    status = 400;
                    "command {request_id} is malformed ({reason}); answering 400"
                );
                let channel = wire::canonical_channel(raw_channel.as_deref())
                    .unwrap_or_else(|| wire::DEFAULT_CHANNEL.to_string());
                let body = failure::error_response(&Value::Null, "invalid tunnel command", None);
                let reply = Reply::error_json(400, body);
                self.deliver(&request_id, &channel, &shard_token, None, reply, None);
                settled.mark();
                self.metrics
                    .command("invalid", &channel, CommandOutcome::Rejected);
                return;
            }
        };
        let started = Instant::now();
        let kind = match &command.kind {
            CommandKind::SessionTermination => "session_termination",
            _ => "jsonrpc",
        };
        if job.deadline.is_some_and(|d| started >= d) {
            let anchor = if job.deadline_from_created_at {
                "counted from its created_at (a stall, or clocks more than 2 s apart)"
            } else {
                "counted from the poll answer"
            };
            log::info!(
                request_id = command.request_id.as_str(),
                channel = command.raw_channel.as_deref().unwrap_or(wire::DEFAULT_CHANNEL);
                "dropped command {}: its response_timeout, {anchor}, had passed before dispatch",
                command.request_id
            );
            let channel = command
                .raw_channel
                .as_deref()
                .unwrap_or(wire::DEFAULT_CHANNEL);
            settled.mark();
            self.metrics.command(kind, channel, CommandOutcome::Expired);
            return;
        }
        let channel = wire::canonical_channel(command.raw_channel.as_deref())
            .and_then(|c| self.channels.get_key_value(&c));
        let request_id_header = command.header("X-Request-Id");
        let Some((channel, transport)) = channel else {
            log::warn!(
                request_id = command.request_id.as_str(),
                channel = command.raw_channel.as_deref().unwrap_or_default(),
                status = 400;
                "command {}: unsupported channel",
                command.request_id
            );
            let id = match &command.kind {
                CommandKind::JsonRpc(raw) => RpcShape::of(raw.get()).and_then(|s| s.id),
                _ => None,
            };
            let body =
                failure::error_response(&id.unwrap_or(Value::Null), "unsupported channel", None);
            let channel = command.raw_channel.clone().unwrap_or_default();
            let reply = Reply::error_json(400, body);
            self.deliver(
                &command.request_id,
                &channel,
                &command.shard_token,
                request_id_header,
                reply,
                job.deadline,
            );
            settled.mark();
            // Unknown names stay out of the labels (unbounded cardinality).
            self.metrics
                .command(kind, "(unknown)", CommandOutcome::Rejected);
            return;
        };
        let outcome = match &command.kind {
            CommandKind::JsonRpc(message) => {
                let mut notifications_ok = true;
                let mut on_notify =
                    |notification: Box<RawValue>, headers: &BTreeMap<String, Vec<String>>| {
                        if !notifications_ok {
                            return;
                        }
                        let payload = ResponsePayload {
                            request_id: command.request_id.clone(),
                            channel: channel.clone(),
                            resp_json: Some(notification),
                            resp_headers: headers.clone(),
                            resp_code: 200,
                            resp_type: RespType::JsonrpcNotify,
                        };
                        let delivery = self.post(
                            &payload,
                            &command.shard_token,
                            request_id_header,
                            job.deadline,
                        );
                        if delivery != Delivery::Accepted {
                            // A lost notification breaks ordering; send no more for this command.
                            log::warn!(
                                request_id = command.request_id.as_str(),
                                channel = channel.as_str();
                                "command {}: notification not delivered ({delivery:?}); later ones skipped",
                                command.request_id
                            );
                            notifications_ok = false;
                        }
                    };
                transport.call(message, &command.headers, job.deadline, &mut on_notify)
            }
            CommandKind::SessionTermination => {
                transport.terminate_session(&command.headers, job.deadline)
            }
            CommandKind::Unknown(_) => {
                settled.mark();
                return;
            }
        };
        self.metrics.mcp_latency(channel, started.elapsed());
        match outcome {
            Outcome::Cancelled => {
                settled.mark();
                log::info!(
                    request_id = command.request_id.as_str(), channel = channel.as_str();
                    "command {}: cancelled by the caller; nothing posted",
                    command.request_id
                );
                self.metrics
                    .command(kind, channel, CommandOutcome::Cancelled);
            }
            Outcome::Expired => {
                settled.mark();
                log::info!(
                    request_id = command.request_id.as_str(),
                    channel = channel.as_str(),
                    duration_ms = started.elapsed().as_millis();
                    "command {}: response_timeout passed during the MCP call after {:?}; nothing posted",
                    command.request_id,
                    started.elapsed()
                );
                self.metrics.command(kind, channel, CommandOutcome::Expired);
            }
            Outcome::Reply(reply) => {
                log::debug!(
                    request_id = command.request_id.as_str(),
                    channel = channel.as_str(),
                    status = reply.resp_code,
                    duration_ms = started.elapsed().as_millis();
                    "command {} on {channel}: MCP answered {} in {:?}",
                    command.request_id,
                    reply.resp_code,
                    started.elapsed()
                );
                self.health
                    .channel_seen(channel, reply.failure.as_ref().and_then(unreachable_reason));
                let synthesized = reply.failure.is_some();
                let delivered = self.deliver(
                    &command.request_id,
                    channel,
                    &command.shard_token,
                    request_id_header,
                    reply,
                    job.deadline,
                );
                settled.mark();
                let outcome = match (delivered, synthesized) {
                    (false, _) => CommandOutcome::NotDelivered,
                    (true, true) => CommandOutcome::Failed,
                    (true, false) => CommandOutcome::Answered,
                };
                if delivered {
                    self.metrics.command_latency(job.received.elapsed());
                }
                self.metrics.command(kind, channel, outcome);
            }
        }
    }

    /// Posts a terminal reply and logs how that went; true when the control plane accepted it.
    fn deliver(
        &self,
        request_id: &str,
        channel: &str,
        shard_token: &Secret,
        client_request_id: Option<&str>,
        reply: Reply,
        deadline: Option<Instant>,
    ) -> bool {
        let payload = ResponsePayload {
            request_id: request_id.to_string(),
            channel: channel.to_string(),
            resp_json: reply.resp_json,
            resp_headers: reply.resp_headers,
            resp_code: reply.resp_code,
            resp_type: reply.resp_type,
        };
        match self.post(&payload, shard_token, client_request_id, deadline) {
            Delivery::Accepted => {
                log::debug!(
                    request_id,
                    channel,
                    status = payload.resp_code;
                    "command {request_id}: response delivered"
                );
                true
            }
            Delivery::NotPending => {
                log::info!(
                    request_id,
                    channel;
                    "command {request_id}: the control plane no longer waits for it (404); not replayed"
                );
                false
            }
            Delivery::Failed(why) => {
                log::warn!(
                    request_id,
                    channel;
                    "command {request_id}: response not delivered: {why}"
                );
                false
            }
        }
    }
}

impl Report for Tunnel {
    fn readiness(&self) -> Readiness {
        for (name, transport) in &self.channels {
            if let Transport::Stdio(t) = transport {
                let problem = t.problem();
                self.health.channel_seen(name, problem);
            }
        }
        self.health.readiness()
    }

    fn metrics(&self) -> String {
        let (queued, running) = {
            let state = self.lock();
            (state.queue.len(), state.running)
        };
        let channels = self
            .channels
            .iter()
            .map(|(name, t)| {
                let restarts = match t {
                    Transport::Stdio(s) => Some(s.restarts()),
                    Transport::Http(_) => None,
                };
                (name.clone(), (self.health.channel_up(name), restarts))
            })
            .collect();
        self.metrics.render(&Gauges {
            queued,
            running,
            workers: self.workers,
            max_inflight: self.max_inflight,
            channels,
        })
    }
}

/// A failure that says the MCP server could not be reached (as opposed to one it answered).
fn unreachable_reason(failure: &Failure) -> Option<String> {
    match failure.source {
        Source::Dns | Source::Tls | Source::Connect | Source::Timeout | Source::TransportClosed => {
            Some(failure.describe())
        }
        _ => None,
    }
}

/// The one-line `/readyz` reason for a configuration the control plane rejected.
fn readiness_reason(status: u16, message: &str) -> String {
    match status {
        403 if message.contains("client_certificate_required") => {
            "control plane requires a client certificate (403): set CONTROL_PLANE_CLIENT_CERT"
                .into()
        }
        401 => "control plane auth failed (401): check CONTROL_PLANE_API_KEY".into(),
        403 => "control plane refused this key for the tunnel (403): check CONTROL_PLANE_API_KEY \
                and CONTROL_PLANE_TUNNEL_ID"
            .into(),
        404 => "tunnel not found (404): check CONTROL_PLANE_TUNNEL_ID and CONTROL_PLANE_URL_PATH"
            .into(),
        _ => format!("control plane rejected the poll ({status}): check CONTROL_PLANE_TUNNEL_ID"),
    }
}

/// The log line for a configuration the control plane rejected, naming the setting to fix.
fn operator_advice(status: u16, message: &str) -> String {
    let fix = match status {
        403 if message.contains("client_certificate_required") => {
            "the control plane requires a TLS client certificate: set CONTROL_PLANE_CLIENT_CERT \
             and CONTROL_PLANE_CLIENT_KEY"
        }
        401 => "the API key was rejected: check CONTROL_PLANE_API_KEY (--control-plane.api-key)",
        403 => {
            "the API key may not use this tunnel: check CONTROL_PLANE_API_KEY and \
             CONTROL_PLANE_TUNNEL_ID belong together"
        }
        404 => {
            "the tunnel was not found: check CONTROL_PLANE_TUNNEL_ID, CONTROL_PLANE_BASE_URL and \
             CONTROL_PLANE_URL_PATH"
        }
        _ => {
            "the poll request was rejected: check CONTROL_PLANE_TUNNEL_ID and CONTROL_PLANE_URL_PATH"
        }
    };
    format!("control plane answered {message}; {fix}. Retrying slowly.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(command: &str) -> Job {
        let raw = RawValue::from_string(command.to_string()).unwrap();
        Job {
            work: Work::Run(Command::from_json(&raw).unwrap()),
            received: Instant::now(),
            deadline: None,
            deadline_from_created_at: false,
        }
    }

    #[test]
    fn a_command_that_panicked_is_answered_with_its_exact_id() {
        let job = job(
            r#"{"request_id":"r1","channel":"main","shard_token":"t","type":"jsonrpc","response_timeout":"30s","headers":{"X-Request-Id":["x1"]},"jsonrpc":{"jsonrpc":"2.0","id":18446744073709551617,"method":"tools/call"}}"#,
        );
        let answer = PanicAnswer::for_job(&job).unwrap();
        assert_eq!(
            (answer.request_id.as_str(), answer.channel.as_str()),
            ("r1", "main")
        );
        assert_eq!(answer.client_request_id.as_deref(), Some("x1"));
        let reply = answer.reply();
        let body: Value = serde_json::from_str(reply.resp_json.unwrap().get()).unwrap();
        assert_eq!(body["id"].to_string(), "18446744073709551617");
        assert_eq!(body["error"]["code"], -32603);
        let provenance = &body["error"]["data"]["tunnel_failure"];
        assert_eq!(provenance["source"], "client_internal");
        assert_eq!(provenance["transport_error_kind"], "panic");
    }
}
