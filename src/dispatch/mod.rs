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
//!   logged once per change with the fix — except a 404 in the first seconds, before any poll
//!   succeeded, which is retried within a second (a tunnel the relay has not loaded yet).
//! - **Readiness**: a poll held by the control plane counts as working polling (see
//!   [`crate::ops::Health`]), so a fresh client is ready without waiting for a long-poll to end.
//! - **Shutdown**: [`Tunnel::stop`] stops polling at once; [`Tunnel::drain`] waits until every
//!   queued and running command has finished (or the drain timeout passes).
//!
//! - **Cancellation** (our extension, only with a control plane that announced it): a `cancel`
//!   command ends a queued or running command's MCP call, nothing posted; see [`cancel`].
//! - **Long-lived streams** (our extension, likewise): a `stream` command is held on its own
//!   thread, never a worker, at most `--mcp.max-streams` at once; see [`stream`].
//!
//! This file wires the [`Tunnel`] together and holds its lifecycle; the poll thread is in
//! [`poll`], a worker's admit → call → settle in [`worker`] and [`settle`], cancellation in
//! [`cancel`], the start-up OAuth discovery of `main` in [`oauth`].

mod cancel;
mod oauth;
mod poll;
mod settle;
mod stream;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::harpoon::CHANNEL as HARPOON_CHANNEL;
use crate::config::{ChannelTransport, DiscoveryConfig, RunConfig};
use crate::contain;
use crate::control_plane::ControlPlane;
use crate::deadline;
use crate::mcp::Transport;
use crate::mcp::harpoon::Harpoon;
use crate::mcp::http::HttpTransport;
use crate::mcp::stdio::StdioTransport;
use crate::ops::health::Report;
use crate::ops::metrics::Gauges;
use crate::ops::{Health, Metrics, Readiness};
use crate::wire::ChannelInfo;

use cancel::{Notice, Running};
use worker::Job;

/// The target of every log line of the engine, whichever of its files logs it: log filters and
/// the JSON logs' `target` field name the engine, not its layout.
const LOG_TARGET: &str = module_path!();

/// How often idle channels are probed for reachability (readiness).
const PROBE_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    running: usize,
    stopping: bool,
    /// Threads waiting on [`Tunnel::changed`] right now: a command that finishes notifies only
    /// when one does, so the steady state wakes no thread but the next worker.
    watching: usize,
}

/// The running client.
pub struct Tunnel {
    control: ControlPlane,
    /// Channel name → its MCP server.
    channels: HashMap<String, Transport>,
    /// OAuth discovery settings (the `oauth_discovery` command).
    discovery: DiscoveryConfig,
    max_inflight: usize,
    workers: usize,
    exit_on_auth_failure: bool,
    state: Mutex<State>,
    /// Signalled once per queued command: wakes one idle worker, not all of them.
    work: Condvar,
    /// Signalled when a command leaves the queue or finishes while a thread waits for that (the
    /// poll thread for a free slot, `drain`; see [`State::watching`]), and on stop.
    changed: Condvar,
    /// Signalled on stop only: pauses and [`Tunnel::wait_stopped`] wait on it.
    stopped: Condvar,
    /// Signalled when an enqueue fills the queue, and on stop: the `poll-cancels` thread waits on
    /// it.
    filled: Condvar,
    metrics: Arc<Metrics>,
    health: Health,
    /// Set when the control plane rejected the key and `--exit-on-auth-failure` asked to stop.
    auth_failed: AtomicBool,
    /// A poll or probe thread panicked.
    internal_failure: AtomicBool,
    /// Milliseconds since `started` at the poll thread's last sign of life (for the watchdog).
    heartbeat_ms: AtomicU64,
    started: Instant,
    /// Calls a `cancel` command may end, by request id (only while cancellation is in use).
    running: Mutex<HashMap<String, Running>>,
    /// To the `cancel` thread, which sends `notifications/cancelled`.
    notices: Sender<Notice>,
    /// Its other end, until [`Tunnel::start`] hands it to that thread.
    notices_rx: Mutex<Option<Receiver<Notice>>>,
    /// Streams held right now, and at most (`--mcp.max-streams`).
    streams_open: AtomicUsize,
    max_streams: usize,
    /// To the `streams` thread, which starts a thread per stream command.
    stream_jobs: Sender<Job>,
    stream_jobs_rx: Mutex<Option<Receiver<Job>>>,
}

impl Tunnel {
    /// Builds the client; stdio channels start their servers now.
    pub fn new(cfg: &RunConfig) -> Result<Arc<Tunnel>, String> {
        let mut channels = HashMap::new();
        let mut info = Vec::new();
        for channel in &cfg.mcp.channels {
            let transport = match &channel.transport {
                ChannelTransport::Http { url, net } => {
                    Transport::Http(HttpTransport::new(url, net, &cfg.mcp)?)
                }
                ChannelTransport::Stdio { argv, options } => Transport::Stdio(
                    StdioTransport::start_with(
                        &channel.name,
                        argv.clone(),
                        cfg.secret_env_vars.clone(),
                        options,
                    )
                    .map_err(|e| format!("channel {}: {e}", channel.name))?,
                ),
            };
            info.push(ChannelInfo {
                name: channel.name.clone(),
                proc_affinity: transport.proc_affinity(),
            });
            channels.insert(channel.name.clone(), transport);
        }
        // Channel harpoon exists (and is declared) only while it has a target.
        if let Some(harpoon) = Harpoon::new(&cfg.mcp.harpoon)? {
            let transport = Transport::Harpoon(harpoon);
            info.push(ChannelInfo {
                name: HARPOON_CHANNEL.to_string(),
                proc_affinity: transport.proc_affinity(),
            });
            channels.insert(HARPOON_CHANNEL.to_string(), transport);
        }
        let control = ControlPlane::new(&cfg.control_plane, &info, cfg.mcp.max_concurrent)?;
        let cp = &cfg.control_plane;
        let (notices, notices_rx) = mpsc::channel();
        let (stream_jobs, stream_jobs_rx) = mpsc::channel();
        let tunnel = Arc::new(Tunnel {
            control,
            channels,
            discovery: cfg.mcp.discovery.clone(),
            max_inflight: cp.max_inflight,
            workers: cfg.mcp.max_concurrent,
            exit_on_auth_failure: cfg.ops.exit_on_auth_failure,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            changed: Condvar::new(),
            stopped: Condvar::new(),
            filled: Condvar::new(),
            metrics: Arc::new(Metrics::default()),
            health: Health::new(
                cp.poll_timeout
                    .saturating_add(cp.poll_deadline_guardrail)
                    .saturating_mul(2),
            ),
            auth_failed: AtomicBool::new(false),
            internal_failure: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(0),
            started: Instant::now(),
            running: Mutex::new(HashMap::new()),
            notices,
            notices_rx: Mutex::new(Some(notices_rx)),
            streams_open: AtomicUsize::new(0),
            max_streams: cfg.mcp.max_streams,
            stream_jobs,
            stream_jobs_rx: Mutex::new(Some(stream_jobs_rx)),
        });
        if tunnel.discovers_at_start() {
            tunnel.health.oauth_expected(cfg.mcp.discovery.required);
        } else if cfg.mcp.discovery.required {
            log::warn!(
                target: LOG_TARGET,
                "--mcp.require-oauth-discovery has no effect: channel main is not Streamable HTTP"
            );
        }
        Ok(tunnel)
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

    /// The readiness record, for start-up steps outside the engine (the listener wait).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Waits `delay` unless stopped first; false when stopping.
    pub fn wait_unless_stopped(&self, delay: Duration) -> bool {
        self.pause(delay, false)
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
        let me = Arc::clone(self);
        thread::Builder::new()
            .name("poll-cancels".into())
            .spawn(move || me.stop_if_it_panics("poll-cancels", || me.cancel_poll_loop()))?;
        if self.discovers_at_start() {
            let me = Arc::clone(self);
            thread::Builder::new()
                .name("oauth-discovery".into())
                .spawn(move || {
                    // Only a report: a bug here costs the report, not the client.
                    if contain::contained(|| me.startup_discovery()).is_none() {
                        let why = "internal error".to_string();
                        me.health.oauth_seen(crate::ops::OAuthStatus::Failed(why));
                    }
                })?;
        }
        let notices = self
            .notices_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let stream_jobs = self
            .stream_jobs_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(jobs) = stream_jobs {
            let me = Arc::clone(self);
            thread::Builder::new()
                .name("streams".into())
                .spawn(move || me.stop_if_it_panics("streams", || me.stream_loop(jobs)))?;
        }
        if let Some(notices) = notices {
            let me = Arc::clone(self);
            thread::Builder::new()
                .name("cancel".into())
                .spawn(move || me.stop_if_it_panics("cancel", || me.notice_loop(notices)))?;
        }
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
        self.stopped.notify_all();
        self.filled.notify_all();
    }

    /// Blocks until [`stop`](Self::stop) has been called.
    pub fn wait_stopped(&self) {
        let mut state = self.lock();
        while !state.stopping {
            state = self.stopped.wait(state).unwrap_or_else(|e| e.into_inner());
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
            state = self.wait_changed(state, Some(left));
        }
    }

    /// Waits on [`Tunnel::changed`] (at most `timeout`), counted in [`State::watching`] so that
    /// it is notified.
    fn wait_changed<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        state.watching += 1;
        let mut state = match timeout {
            Some(timeout) => {
                (self.changed.wait_timeout(state, timeout))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
        };
        state.watching -= 1;
        state
    }

    /// Notifies [`Tunnel::changed`] after a command left the queue or finished, if a thread
    /// waits for that; takes the guard to decide under the lock.
    fn changed_if_watched(&self, state: MutexGuard<'_, State>) {
        let watched = state.watching > 0;
        drop(state);
        if watched {
            self.changed.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked cannot leave the state half-updated in a way that matters more
        // than stopping the whole client would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
                    Transport::Http(_) | Transport::Harpoon(_) => None,
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
