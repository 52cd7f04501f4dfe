//! The relay's per-tunnel meeting point between connector requests and polling clients.
//!
//! A connector request becomes a queued command and a channel its HTTP thread waits on. A poll
//! takes queued commands (first poller wins, each command delivered once) and remembers which
//! client instance got each one. A response POST finds the pending command by request id and
//! shard token and hands the payload to the waiting connector thread. When that thread gives up
//! (deadline, or the caller left) it removes every trace of the command, so a late POST is a
//! clean `404 pending_request_not_found`.
//!
//! Process affinity: a client may declare channels `proc_affinity` (stdio servers hold session
//! state in one process). The answer to `initialize` on such a channel binds its `Mcp-Session-Id`
//! (minted here when the server issued none) to the instance that served it, and later commands
//! of that session are only handed to that instance.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use serde_json::value::RawValue;

use crate::backoff::random_hex;
use crate::wire::{RespType, ResponsePayload};

/// The longest session → instance table kept per tunnel; the oldest binding goes first. Bounds
/// memory when connectors open sessions and never end them.
const MAX_SESSIONS: usize = 10_000;

/// Limits that apply to every tunnel.
#[derive(Debug, Clone)]
pub struct HubLimits {
    /// Commands waiting for a poller, per tunnel.
    pub queue_capacity: usize,
    /// A client counts as connected while a poll of it waits, and this long after its last poll
    /// or response.
    pub client_timeout: Duration,
}

/// A command waiting in the queue.
struct Queued {
    request_id: String,
    /// The client must be done (MCP call and response POST) by then.
    deadline: Instant,
    /// Only this instance may take it (process affinity).
    affinity: Option<String>,
    body: CommandBody,
}

/// What a poll hands out, less the parts computed at delivery (`response_timeout`).
pub struct CommandBody {
    pub command_type: &'static str,
    pub channel: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub jsonrpc: Option<Box<RawValue>>,
    pub created_at: String,
}

struct Pending {
    shard_token: String,
    to_connector: Sender<ResponsePayload>,
    /// The instance the command was delivered to.
    instance: Option<String>,
    /// Set for `initialize` on a channel some instance declared process-affine.
    binds_session: bool,
}

#[derive(Default)]
struct Instance {
    waiting_polls: usize,
    last_seen: Option<Instant>,
    affine_channels: HashSet<String>,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Queued>,
    pending: HashMap<String, Pending>,
    instances: HashMap<String, Instance>,
    /// Mcp-Session-Id → instance id, for process-affine channels; with insertion order for
    /// eviction.
    sessions: HashMap<String, String>,
    session_order: VecDeque<String>,
}

/// Why a command could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// No client has polled recently.
    NotConnected,
    QueueFull,
    /// The session belongs to a client instance that is gone: the connector must re-initialize.
    SessionGone,
}

/// Why a response POST was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RespondError {
    /// Unknown request id, wrong shard token, already answered, or the connector left.
    NotPending,
}

/// One tunnel's queue and pending commands.
pub struct TunnelHub {
    inner: Mutex<Inner>,
    /// Signalled when commands are queued.
    queued: Condvar,
    limits: HubLimits,
}

/// A queued command's handle for the connector thread. Dropping it withdraws the command
/// wherever it is (queued or delivered), so nothing outlives the caller who asked.
pub struct Ticket {
    hub: Arc<TunnelHub>,
    pub request_id: String,
    pub answers: Receiver<ResponsePayload>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.hub.withdraw(&self.request_id);
    }
}

impl TunnelHub {
    pub fn new(limits: HubLimits) -> Arc<TunnelHub> {
        Arc::new(TunnelHub {
            inner: Mutex::new(Inner::default()),
            queued: Condvar::new(),
            limits,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any client instance has been seen recently.
    pub fn connected(&self) -> bool {
        let inner = self.lock();
        let now = Instant::now();
        inner.instances.values().any(|i| self.alive(i, now))
    }

    fn alive(&self, instance: &Instance, now: Instant) -> bool {
        instance.waiting_polls > 0
            || instance
                .last_seen
                .is_some_and(|t| now.duration_since(t) < self.limits.client_timeout)
    }

    /// Queues a command. `session` is the request's `Mcp-Session-Id`, `is_initialize` whether
    /// the message is an `initialize` request.
    pub fn submit(
        self: &Arc<Self>,
        body: CommandBody,
        deadline: Instant,
        session: Option<&str>,
        is_initialize: bool,
    ) -> Result<Ticket, SubmitError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if !inner.instances.values().any(|i| self.alive(i, now)) {
            return Err(SubmitError::NotConnected);
        }
        let affinity = match session.and_then(|s| inner.sessions.get(s)) {
            Some(instance) => {
                let alive = inner
                    .instances
                    .get(instance)
                    .is_some_and(|i| self.alive(i, now));
                if !alive {
                    return Err(SubmitError::SessionGone);
                }
                Some(instance.clone())
            }
            None => None,
        };
        if inner.queue.len() >= self.limits.queue_capacity {
            return Err(SubmitError::QueueFull);
        }
        let request_id = format!("req_{}", random_hex(16));
        let (to_connector, answers) = mpsc::channel();
        let binds_session = is_initialize
            && inner
                .instances
                .values()
                .any(|i| i.affine_channels.contains(&body.channel));
        inner.pending.insert(
            request_id.clone(),
            Pending {
                shard_token: random_hex(16),
                to_connector,
                instance: None,
                binds_session,
            },
        );
        inner.queue.push_back(Queued {
            request_id: request_id.clone(),
            deadline,
            affinity,
            body,
        });
        drop(inner);
        self.queued.notify_all();
        Ok(Ticket {
            hub: Arc::clone(self),
            request_id,
            answers,
        })
    }

    /// A long-poll by `instance`: waits up to `wait` for commands it may take and returns at most
    /// `limit` of them as poll-answer JSON objects.
    pub fn poll(
        &self,
        instance: &str,
        affine_channels: HashSet<String>,
        limit: usize,
        wait: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        {
            let me = inner.instances.entry(instance.to_string()).or_default();
            me.waiting_polls += 1;
            me.affine_channels = affine_channels;
            me.last_seen = Some(Instant::now());
        }
        let taken = loop {
            let taken = take_eligible(&mut inner, instance, limit);
            let now = Instant::now();
            if !taken.is_empty() || now >= deadline {
                break taken;
            }
            inner = self
                .queued
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        let me = inner.instances.entry(instance.to_string()).or_default();
        me.waiting_polls -= 1;
        me.last_seen = Some(Instant::now());
        let now = Instant::now();
        let mut out = Vec::with_capacity(taken.len());
        for q in taken {
            let Some(pending) = inner.pending.get_mut(&q.request_id) else {
                continue; // withdrawn meanwhile
            };
            pending.instance = Some(instance.to_string());
            let left = q.deadline.saturating_duration_since(now);
            let mut command = serde_json::json!({
                "request_id": q.request_id,
                "shard_token": pending.shard_token,
                "command_type": q.body.command_type,
                "channel": q.body.channel,
                "created_at": q.body.created_at,
                "response_timeout": format!("{}ms", left.as_millis()),
                "headers": q.body.headers,
            });
            if let Some(jsonrpc) = q.body.jsonrpc {
                command["jsonrpc"] = serde_json::from_str(jsonrpc.get()).unwrap_or(Value::Null);
            }
            out.push(command);
        }
        out
    }

    /// A response POST. Notifications go to the waiting connector; a terminal payload also ends
    /// the command. The answer to a process-affine `initialize` binds its session here.
    pub fn respond(
        &self,
        shard_token: &str,
        mut payload: ResponsePayload,
    ) -> Result<(), RespondError> {
        let mut inner = self.lock();
        let Some(pending) = inner
            .pending
            .get(&payload.request_id)
            .filter(|p| p.shard_token == shard_token)
        else {
            return Err(RespondError::NotPending);
        };
        let to_connector = pending.to_connector.clone();
        let instance = pending.instance.clone();
        let binds_session = pending.binds_session;
        if payload.resp_type.is_terminal() {
            inner.pending.remove(&payload.request_id);
        }
        if let Some(i) = instance.as_ref().and_then(|i| inner.instances.get_mut(i)) {
            i.last_seen = Some(Instant::now());
        }
        if binds_session
            && payload.resp_type == RespType::JsonrpcResponse
            && let Some(instance) = instance
        {
            let session = session_of(&payload).unwrap_or_else(|| {
                // A stdio server issues no session id; mint one so later calls can be routed
                // back to the process that holds the session's state.
                let minted = format!("mcpt-{}", random_hex(16));
                payload
                    .resp_headers
                    .insert("Mcp-Session-Id".to_string(), vec![minted.clone()]);
                minted
            });
            bind_session(&mut inner, session, instance);
        }
        drop(inner);
        to_connector
            .send(payload)
            .map_err(|_| RespondError::NotPending)
    }

    /// Removes a command wherever it is; see [`Ticket`].
    fn withdraw(&self, request_id: &str) {
        let mut inner = self.lock();
        inner.pending.remove(request_id);
        inner.queue.retain(|q| q.request_id != request_id);
    }

    /// Forgets a session binding (after a successful DELETE).
    pub fn end_session(&self, session: &str) {
        let mut inner = self.lock();
        inner.sessions.remove(session);
    }

    /// Commands queued right now (for tests and metrics).
    pub fn queued_len(&self) -> usize {
        self.lock().queue.len()
    }
}

/// Takes up to `limit` commands `instance` may serve, dropping expired ones on the way (their
/// connectors have already given up).
fn take_eligible(inner: &mut Inner, instance: &str, limit: usize) -> Vec<Queued> {
    let now = Instant::now();
    let mut taken = Vec::new();
    let mut kept = VecDeque::with_capacity(inner.queue.len());
    while let Some(q) = inner.queue.pop_front() {
        if q.deadline <= now {
            continue;
        }
        let eligible = q.affinity.as_deref().is_none_or(|a| a == instance);
        if eligible && taken.len() < limit {
            taken.push(q);
        } else {
            kept.push_back(q);
        }
    }
    inner.queue = kept;
    taken
}

fn session_of(payload: &ResponsePayload) -> Option<String> {
    payload
        .resp_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("mcp-session-id"))
        .and_then(|(_, v)| v.first().cloned())
}

fn bind_session(inner: &mut Inner, session: String, instance: String) {
    if inner.sessions.insert(session.clone(), instance).is_none() {
        inner.session_order.push_back(session);
    }
    while inner.session_order.len() > MAX_SESSIONS {
        if let Some(old) = inner.session_order.pop_front() {
            inner.sessions.remove(&old);
        }
    }
}

/// `created_at` for a command queued now.
pub fn now_rfc3339() -> String {
    crate::logging::utc_timestamp(SystemTime::now())
}
