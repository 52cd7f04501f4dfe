//! The relay's per-tunnel meeting point between connector requests and polling clients.
//!
//! A connector request becomes a queued command and a channel its HTTP thread waits on. A poll
//! takes queued commands (first poller wins, each command delivered once) and remembers which
//! client instance got each one. A response POST finds the pending command by request id and
//! shard token and hands the payload to the waiting connector thread. When that thread gives up
//! (deadline, or the caller left) it removes every trace of the command, so a late POST is a
//! clean `404 pending_request_not_found`.
//!
//! Bounds: a poll answer carries at most [`POLL_ANSWER_BUDGET`] bytes of commands (at least one
//! command); a request's unread notifications at most [`NOTIFY_BUFFER_BYTES`]. A client instance
//! whose connections were all closed by its side, with nothing new from it for
//! [`CLIENT_GONE_GRACE`], is gone: its connectors stop waiting ([`Ticket::client_gone`]).
//!
//! Process affinity: a client may declare channels `proc_affinity` (stdio servers hold session
//! state in one process). The answer to `initialize` on such a channel binds its `Mcp-Session-Id`
//! (minted here when the server issued none) to the instance that served it, and later commands
//! of that session are only handed to that instance.
//!
//! Cancellation (our extension, [`crate::wire::FEATURE_CANCEL`]): when a command's caller leaves
//! (it closed its request, or sent `notifications/cancelled`), [`TunnelHub::cancel`] withdraws a
//! command still queued, or, when it was delivered to an instance that announced the feature,
//! leaves a `cancel` command for that instance's next poll. A poll may ask for cancels only (a
//! client whose queue is full).
//!
//! This is the relay's only shared mutable state besides the registry: one lock per tunnel
//! guards the queue, the pending commands, the instances and the session bindings, and no
//! method leaves them half-changed. Here: the hub and response routing; `ticket` the connector
//! thread's handle on its command (and which instance served it), `queue` the commands and
//! poll-answer budget, `instance` the client instances and when one is gone, `sessions` the
//! session → instance table.

mod instance;
mod queue;
mod server_requests;
mod sessions;
mod shared;
mod streams;
mod ticket;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::crypto::{random_fill, random_hex, to_hex};
use crate::http_server::ConnectionHandle;
use crate::wire::{
    Extensions, FEATURE_CANCEL, FEATURE_SERVER_REQUESTS, FEATURE_STREAMS, RespType, ResponsePayload,
};
pub use instance::CLIENT_GONE_GRACE;
use instance::{FORGET_INSTANCE_AFTER, Instance};
use queue::{CancelOrder, Item};
pub use queue::{CommandBody, Delivered, POLL_ANSWER_BUDGET, now_rfc3339};
use queue::{Queued, StreamSpec, take_eligible};
use serde_json::Value;
use sessions::{SessionTable, session_of};
pub(crate) use shared::{Shared, take_forwarded};
pub use streams::{STREAM_BUFFER_BYTES, StreamKind, slow_readers_cut};
pub use ticket::Ticket;

/// How often a waiting long-poll checks that its poller is still connected.
const GONE_CHECK: Duration = Duration::from_secs(1);

/// Most bytes of notifications held for one connector request that has not taken them yet (an
/// MCP host that opened an event stream and does not read it). When a notification would pass
/// it, the relay drops the request: its stream is closed and the client's next POST for it gets
/// 404. One notification larger than this is accepted when nothing is buffered.
pub const NOTIFY_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Limits that apply to every tunnel.
#[derive(Debug, Clone)]
pub struct HubLimits {
    /// Commands waiting for a poller, per tunnel.
    pub queue_capacity: usize,
    /// A client counts as connected while a poll of it waits, and this long after its last poll
    /// or response.
    pub client_timeout: Duration,
}

/// A command from submit until its terminal answer or its withdrawal.
struct Pending {
    shard_token: String,
    to_connector: Sender<ResponsePayload>,
    /// Notification bytes sent to the connector thread and not taken by it yet.
    buffered: Arc<AtomicUsize>,
    /// The instance the command was delivered to; kept in `served` when this is removed.
    instance: Option<String>,
    served: Arc<OnceLock<String>>,
    /// Set for `initialize` on a channel some instance declared process-affine.
    binds_session: bool,
    /// What a `notifications/cancelled` names it by: channel, session and JSON-RPC id.
    channel: String,
    session: Option<String>,
    rpc_id: Option<Value>,
    /// Set when it was cancelled, so its connector thread tells that from a dropped request.
    cancelled: Arc<AtomicBool>,
    /// A `stream` command: counted against the per-tunnel cap, its unread notifications bounded
    /// by [`STREAM_BUFFER_BYTES`], and its instance told when its caller leaves.
    stream: bool,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Queued>,
    pending: HashMap<String, Pending>,
    instances: HashMap<String, Instance>,
    /// Which instance holds each session of a process-affine channel.
    sessions: SessionTable,
    /// Server→client requests forwarded to hosts, by id: who asked ([`server_requests`]).
    asked: server_requests::AskedTable,
}

/// Why a command could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// No client has polled recently.
    NotConnected,
    QueueFull,
    /// The session belongs to a client instance that is gone: the connector must re-initialize.
    SessionGone,
    /// The tunnel has as many open streams as `--stream.max-per-tunnel` allows.
    StreamLimit,
    /// The shared store (Redis) cannot be reached.
    StoreUnavailable,
}

/// Why a response POST was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RespondError {
    /// Unknown request id, wrong shard token, already answered, the connector left, or its
    /// notification buffer overflowed ([`NOTIFY_BUFFER_BYTES`]).
    NotPending,
    /// The shared store (Redis) cannot be reached: the client should retry.
    StoreUnavailable,
}

/// What the connector thread's wait for the next payload ended with.
pub enum Wait {
    Payload(ResponsePayload),
    /// Nothing within the time asked for.
    Timeout,
    /// The command can get no answer any more: its notifications overflowed the buffer.
    Dropped,
    /// The command was cancelled ([`TunnelHub::cancel`], from another request's
    /// `notifications/cancelled`): no answer will come.
    Cancelled,
}

/// What a cancellation did.
#[derive(Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// It was still queued: withdrawn, never delivered.
    Withdrawn,
    /// Its client instance gets a `cancel` command.
    Told,
    /// Its instance does not speak the extension (or it was already answered): only forgotten
    /// here, so a late answer gets 404.
    Forgotten,
}

/// What a poll asks for besides its limit and wait.
#[derive(Debug, Default)]
pub struct PollAsk {
    /// Channels the instance declared process-affine.
    pub affine_channels: HashSet<String>,
    /// The extension features it announced.
    pub extensions: Extensions,
    /// Only `cancel` commands (a client whose queue is full).
    pub cancels_only: bool,
}

/// One tunnel's queue and pending commands.
pub struct TunnelHub {
    inner: Mutex<Inner>,
    /// Signalled when commands are queued.
    queued: Condvar,
    limits: HubLimits,
    /// With `--store redis://…`: the queue is in Redis ([`shared`]).
    shared: Option<Shared>,
}

impl Inner {
    /// The entry of `instance`, made when first seen; its name is copied only then (this runs
    /// for every poll and response).
    fn instance_mut(&mut self, instance: &str) -> &mut Instance {
        if !self.instances.contains_key(instance) {
            self.instances
                .insert(instance.to_string(), Instance::default());
        }
        self.instances
            .get_mut(instance)
            .expect("the entry was just made")
    }

    /// A poll of `instance` stops waiting: counted out, seen now, and its cancel orders first in
    /// what it takes (the memory and the Redis poll both end so).
    fn poll_ended(&mut self, instance: &str, cancels: Vec<CancelOrder>) -> Vec<Delivered> {
        let me = self.instance_mut(instance);
        me.waiting_polls -= 1;
        me.last_seen = Some(Instant::now());
        cancels
            .into_iter()
            .map(|order| Delivered {
                item: Item::Cancel(order),
            })
            .collect()
    }
}

/// Bytes a payload holds in the notification buffer.
fn payload_bytes(payload: &ResponsePayload) -> usize {
    payload.resp_json.as_ref().map_or(0, |j| j.get().len())
        + payload
            .resp_headers
            .iter()
            .map(|(n, vs)| vs.iter().map(|v| n.len() + v.len()).sum::<usize>())
            .sum::<usize>()
}

impl TunnelHub {
    /// A hub whose queue is in the shared store when `shared` is given.
    pub(crate) fn new(limits: HubLimits, shared: Option<Shared>) -> Arc<TunnelHub> {
        Arc::new(TunnelHub {
            inner: Mutex::new(Inner::default()),
            queued: Condvar::new(),
            limits,
            shared,
        })
    }

    /// Poison-tolerant: a thread that panicked while holding the lock must not make every later
    /// request panic. The state stays consistent because no method leaves it half-changed across
    /// a call that could panic: each change is a single insert, remove or field store.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether any client instance has been seen recently.
    pub fn connected(&self) -> bool {
        let inner = self.lock();
        let now = Instant::now();
        let local = inner.instances.values().any(|i| self.alive(i, now));
        drop(inner);
        local || self.shared.as_ref().is_some_and(Shared::connected)
    }

    fn alive(&self, instance: &Instance, now: Instant) -> bool {
        instance.waiting_polls > 0
            || (!instance.gone(now)
                && instance
                    .last_seen
                    .is_some_and(|t| now.duration_since(t) < self.limits.client_timeout))
    }

    /// Remembers that `instance` made a request on `connection` (see [`CLIENT_GONE_GRACE`]).
    pub fn seen(&self, instance: &str, connection: &ConnectionHandle) {
        let mut inner = self.lock();
        let me = inner.instance_mut(instance);
        me.track(connection);
        me.last_seen = Some(Instant::now());
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
        self.submit_request(body, deadline, session, is_initialize, None)
    }

    /// [`TunnelHub::submit`] for a request with JSON-RPC id `rpc_id`, which a later
    /// `notifications/cancelled` may name ([`TunnelHub::cancel_by_rpc_id`]).
    pub fn submit_request(
        self: &Arc<Self>,
        body: CommandBody,
        deadline: Instant,
        session: Option<&str>,
        is_initialize: bool,
        rpc_id: Option<Value>,
    ) -> Result<Ticket, SubmitError> {
        let fields = (session, is_initialize, rpc_id);
        self.enqueue(body, deadline, fields, None, None)
    }

    /// Queues a host's answer to a server→client request (our extension,
    /// [`FEATURE_SERVER_REQUESTS`]) for the instance that forwarded the request `raw_id` names
    /// on `channel`, answered in `session` (the session that was asked, when it was asked in
    /// one); `None` when no instance is remembered for it (the caller then keeps the contract's
    /// way).
    pub fn submit_server_response(
        self: &Arc<Self>,
        body: CommandBody,
        deadline: Instant,
        raw_id: &str,
        session: Option<&str>,
    ) -> Option<Result<Ticket, SubmitError>> {
        let instance = match &self.shared {
            Some(shared) => shared.take_ask(&body.channel, raw_id, session)?,
            None => self.lock().asked.take(&body.channel, raw_id, session)?,
        };
        Some(self.enqueue(body, deadline, (None, false, None), None, Some(instance)))
    }

    fn enqueue(
        self: &Arc<Self>,
        body: CommandBody,
        deadline: Instant,
        (session, is_initialize, rpc_id): (Option<&str>, bool, Option<Value>),
        stream: Option<StreamSpec>,
        pinned: Option<String>,
    ) -> Result<Ticket, SubmitError> {
        let now = Instant::now();
        // With the shared store: the session's instance and whether the channel is affine.
        let initialize_on = is_initialize.then_some(&*body.channel);
        let remote = self
            .shared
            .as_ref()
            .map(|s| s.routing(session, initialize_on));
        let remote = remote.transpose()?;
        let mut inner = self.lock();
        // With the shared store, whether a client polls and the queue's room are Redis's.
        let local = self.shared.is_none();
        if local && !inner.instances.values().any(|i| self.alive(i, now)) {
            return Err(SubmitError::NotConnected);
        }
        let affinity = match (&remote, session.and_then(|s| inner.sessions.owner(s))) {
            // Redis checks that the owner still polls (SessionGone otherwise).
            (Some((owner, _)), _) => owner.clone().or(pinned),
            (None, Some(instance)) => {
                let alive = inner
                    .instances
                    .get(instance)
                    .is_some_and(|i| self.alive(i, now));
                if !alive {
                    return Err(SubmitError::SessionGone);
                }
                Some(instance.clone())
            }
            (None, None) => pinned,
        };
        if local && inner.queue.len() >= self.limits.queue_capacity {
            return Err(SubmitError::QueueFull);
        }
        // The request id and (memory store) the shard token: 16 random bytes each, read from
        // the OS in one call.
        let mut random = [0u8; 32];
        random_fill(&mut random);
        let request_id = format!("req_{}", to_hex(&random[..16]));
        let (to_connector, answers) = mpsc::channel();
        let buffered = Arc::new(AtomicUsize::new(0));
        let cancelled = Arc::new(AtomicBool::new(false));
        let served = Arc::new(OnceLock::new());
        let binds_session = is_initialize
            && (remote.as_ref().is_some_and(|r| r.1)
                || inner
                    .instances
                    .values()
                    .any(|i| i.affine_channels.contains(&body.channel)));
        inner.pending.insert(
            request_id.clone(),
            Pending {
                shard_token: self
                    .shared
                    .as_ref()
                    .map_or_else(|| to_hex(&random[16..]), Shared::new_token),
                to_connector,
                buffered: Arc::clone(&buffered),
                instance: None,
                served: Arc::clone(&served),
                binds_session,
                channel: body.channel.clone(),
                session: session.map(str::to_string),
                rpc_id,
                cancelled: Arc::clone(&cancelled),
                stream: stream.is_some(),
            },
        );
        let queued = Queued {
            request_id: request_id.clone(),
            deadline,
            affinity,
            body,
            stream,
        };
        let ticket = Ticket {
            hub: Arc::clone(self),
            request_id,
            answers,
            buffered,
            cancelled,
            served,
            report: None,
        };
        if let Some(shared) = &self.shared {
            return self.enqueue_shared(shared, inner, &queued, ticket);
        }
        inner.queue.push_back(queued);
        drop(inner);
        self.queued.notify_all();
        Ok(ticket)
    }

    /// A long-poll by `instance`: waits up to `wait` for commands it may take and returns at most
    /// `limit` of them, within [`POLL_ANSWER_BUDGET`]. `gone` says whether the poller has
    /// disconnected (checked before taking anything and at least every `GONE_CHECK`): a
    /// client that restarted leaves its old poll open here, and a command handed to it would be
    /// lost.
    pub fn poll(
        &self,
        instance: &str,
        affine_channels: HashSet<String>,
        limit: usize,
        wait: Duration,
        gone: &dyn Fn() -> bool,
    ) -> Vec<Delivered> {
        let ask = PollAsk {
            affine_channels,
            ..PollAsk::default()
        };
        self.poll_with(instance, ask, limit, wait, gone)
    }

    /// [`TunnelHub::poll`] with everything a poll may ask ([`PollAsk`]). `cancel` commands for
    /// the instance come first and do not count against `limit` (they take no slot).
    pub fn poll_with(
        &self,
        instance: &str,
        ask: PollAsk,
        limit: usize,
        wait: Duration,
        gone: &dyn Fn() -> bool,
    ) -> Vec<Delivered> {
        if let Some(shared) = &self.shared {
            return self.poll_shared(shared, instance, ask, limit, wait, gone);
        }
        // An unrepresentable deadline (a huge wait) means "no deadline": wait is capped by the
        // caller anyway.
        let deadline = Instant::now().checked_add(wait);
        let mut inner = self.lock();
        inner.instances.retain(|_, i| {
            i.waiting_polls > 0
                || i.last_seen
                    .is_some_and(|t| t.elapsed() < FORGET_INSTANCE_AFTER)
        });
        {
            let me = inner.instance_mut(instance);
            me.waiting_polls += 1;
            me.affine_channels = ask.affine_channels;
            me.extensions = ask.extensions;
            me.last_seen = Some(Instant::now());
        }
        let (cancels, taken) = loop {
            if gone() {
                break (Vec::new(), Vec::new());
            }
            let cancels: Vec<CancelOrder> = inner
                .instances
                .get_mut(instance)
                .map(|me| me.cancels.drain(..).collect())
                .unwrap_or_default();
            let taken = if ask.cancels_only {
                Vec::new()
            } else {
                let streams = inner
                    .instances
                    .get(instance)
                    .is_some_and(|me| me.extensions.has(FEATURE_STREAMS));
                take_eligible(&mut inner.queue, instance, streams, limit)
            };
            let now = Instant::now();
            let left = deadline.map(|d| d.saturating_duration_since(now));
            if !cancels.is_empty() || !taken.is_empty() || left == Some(Duration::ZERO) {
                break (cancels, taken);
            }
            inner = self
                .queued
                .wait_timeout(inner, left.unwrap_or(GONE_CHECK).min(GONE_CHECK))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        let mut out = inner.poll_ended(instance, cancels);
        for q in taken {
            let Some(pending) = inner.pending.get_mut(&q.request_id) else {
                continue; // withdrawn meanwhile
            };
            pending.instance = Some(instance.to_string());
            out.push(Delivered {
                item: Item::Work {
                    shard_token: pending.shard_token.clone(),
                    queued: q,
                },
            });
        }
        out
    }

    /// Puts commands whose poll answer could not be written back at the front of the queue, in
    /// their order, for the next poller. Only for answers the client cannot have acted on (the
    /// write failed before the answer's last byte); withdrawn commands are skipped.
    pub fn requeue(&self, commands: Vec<Delivered>) {
        if let Some(shared) = &self.shared {
            return self.requeue_shared(shared, commands);
        }
        let mut inner = self.lock();
        for d in commands.into_iter().rev() {
            let queued = match d.item {
                Item::Work { queued, .. } => queued,
                Item::Cancel(order) => {
                    if let Some(me) = inner.instances.get_mut(&order.instance) {
                        me.cancels.push_front(order);
                    }
                    continue;
                }
            };
            let Some(pending) = inner.pending.get_mut(&queued.request_id) else {
                continue;
            };
            pending.instance = None;
            inner.queue.push_front(queued);
        }
        drop(inner);
        self.queued.notify_all();
    }

    /// A response POST. Notifications go to the waiting connector; a terminal payload also ends
    /// the command. The answer to a process-affine `initialize` binds its session here.
    pub fn respond(&self, shard_token: &str, payload: ResponsePayload) -> Result<(), RespondError> {
        if let Some(shared) = &self.shared
            && (!shared.is_mine(shard_token) || self.is_stream(&payload.request_id))
        {
            // A stream's messages go through this node's list too, so that those posted on
            // several nodes reach its host in the order they were posted.
            return shared.forward(shard_token, payload);
        }
        self.deliver(shard_token, payload)
    }

    /// [`TunnelHub::respond`] for a connector waiting on this node: posted here, or taken from
    /// this node's list in the shared store (posted on any node).
    pub fn deliver(
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
        let channel = pending.channel.clone();
        let asked_in = pending.session.clone();
        let binds_session = pending.binds_session;
        if !payload.resp_type.is_terminal() {
            let size = payload_bytes(&payload);
            let held = pending.buffered.load(Ordering::SeqCst);
            let bound = if pending.stream {
                STREAM_BUFFER_BYTES
            } else {
                NOTIFY_BUFFER_BYTES
            };
            if held > 0 && held.saturating_add(size) > bound {
                if pending.stream {
                    streams::cut_slow_reader(&payload.request_id, held);
                }
                // The connector does not take what it is sent: drop the request. Its thread
                // sees the channel end; this and every later POST for it get 404.
                log::warn!(
                    "request {}: connector is not reading its event stream ({held} bytes \
                     waiting); dropping the request",
                    payload.request_id
                );
                inner.remove_pending(&payload.request_id);
                return Err(RespondError::NotPending);
            }
            pending.buffered.fetch_add(size, Ordering::SeqCst);
        } else {
            inner.remove_pending(&payload.request_id);
        }
        if let Some(id) = instance.as_ref()
            && let Some(i) = inner.instances.get_mut(id)
        {
            i.last_seen = Some(Instant::now());
            // A server request the client forwarded: remember who asked, for the answer.
            if i.extensions.has(FEATURE_SERVER_REQUESTS)
                && self.shared.is_none()
                && payload.resp_type == RespType::JsonrpcNotify
                && let Some(json) = &payload.resp_json
            {
                inner
                    .asked
                    .note(json.get(), id, &channel, asked_in.as_deref());
            }
        }
        if let Some(shared) = &self.shared {
            shared.note_ask(&payload, instance.as_deref(), &channel, asked_in.as_deref());
        }
        // Delivered by another node: Redis knows which instance took it.
        let remote = || self.shared.as_ref()?.delivered_to(&payload.request_id);
        let instance = instance.or_else(|| binds_session.then(remote).flatten());
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
            self.shared
                .as_ref()
                .inspect(|s| s.bind_session(&session, &instance));
            inner.sessions.bind(session, instance);
        }
        drop(inner);
        to_connector
            .send(payload)
            .map_err(|_| RespondError::NotPending)
    }

    /// The caller of `request_id` left (`reason` says how, for the client's log): a queued
    /// command is withdrawn; a delivered one is forgotten, and its instance, if it announced
    /// [`FEATURE_CANCEL`], gets a `cancel` command with its next poll. Its connector thread
    /// sees [`Wait::Cancelled`].
    pub fn cancel(&self, request_id: &str, reason: &'static str) -> Cancelled {
        let mut inner = self.lock();
        let Some(pending) = inner.remove_pending(request_id) else {
            return Cancelled::Forgotten;
        };
        pending.cancelled.store(true, Ordering::SeqCst);
        let queued = inner.queue.len();
        inner.queue.retain(|q| q.request_id != request_id);
        if inner.queue.len() < queued {
            return Cancelled::Withdrawn;
        }
        if let Some(shared) = &self.shared {
            drop(inner); // queued or delivered by any node, polled next on any: Redis knows
            return shared.cancel(request_id, &pending, reason);
        }
        let Some(instance) = pending.instance else {
            return Cancelled::Forgotten; // in a poll answer being written: requeue skips it
        };
        // A stream's instance always hears of it: it holds the stream open until told.
        let Some(me) = inner
            .instances
            .get_mut(&instance)
            .filter(|i| i.extensions.has(FEATURE_CANCEL) || pending.stream)
        else {
            return Cancelled::Forgotten;
        };
        me.cancels.push_back(CancelOrder {
            request_id: request_id.to_string(),
            shard_token: pending.shard_token,
            channel: pending.channel,
            reason,
            instance,
        });
        drop(inner);
        self.queued.notify_all();
        Cancelled::Told
    }

    /// A `notifications/cancelled` for the request with JSON-RPC id `rpc_id` in `session` on
    /// `channel`: cancels it ([`TunnelHub::cancel`]) when exactly one such request is pending
    /// and it is still queued or its instance speaks [`FEATURE_CANCEL`]. Otherwise (`None`) the
    /// notification goes to the client as any other message, as the contract has it.
    pub fn cancel_by_rpc_id(
        &self,
        channel: &str,
        session: Option<&str>,
        rpc_id: &Value,
    ) -> Option<Cancelled> {
        let target = {
            let inner = self.lock();
            let mut matching = inner.pending.iter().filter(|(_, p)| {
                p.channel == channel
                    && p.session.as_deref() == session
                    && p.rpc_id.as_ref() == Some(rpc_id)
            });
            let (request_id, pending) = matching.next()?;
            if matching.next().is_some() {
                return None; // cancelling someone else's request would be worse than none
            }
            let cancellable = match &pending.instance {
                None => self.remote_cancellable(request_id),
                Some(i) => inner
                    .instances
                    .get(i)
                    .is_some_and(|i| i.extensions.has(FEATURE_CANCEL)),
            };
            if !cancellable {
                return None;
            }
            request_id.clone()
        };
        Some(self.cancel(&target, "notifications_cancelled"))
    }

    /// Removes a command wherever it is; see [`Ticket`].
    fn withdraw(&self, request_id: &str) {
        let mut inner = self.lock();
        inner.remove_pending(request_id);
        inner.queue.retain(|q| q.request_id != request_id);
        drop(inner);
        self.shared.as_ref().inspect(|s| s.withdraw(request_id));
    }

    /// Forgets a session binding (after a successful DELETE).
    pub fn end_session(&self, session: &str) {
        let mut inner = self.lock();
        inner.sessions.end(session);
        drop(inner);
        self.shared.as_ref().inspect(|s| s.end_session(session));
    }

    /// Commands queued right now (for tests and metrics).
    pub fn queued_len(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;

    fn hub(capacity: usize) -> Arc<TunnelHub> {
        TunnelHub::new(
            HubLimits {
                queue_capacity: capacity,
                client_timeout: Duration::from_secs(60),
            },
            None,
        )
    }

    fn body(channel: &str, message: &str) -> CommandBody {
        CommandBody {
            command_type: "jsonrpc",
            channel: channel.to_string(),
            headers: BTreeMap::new(),
            jsonrpc: Some(RawValue::from_string(message.to_string()).unwrap()),
            created_at: now_rfc3339(),
        }
    }

    fn values(delivered: Vec<Delivered>) -> Vec<Value> {
        delivered
            .iter()
            .map(|d| serde_json::from_str(&d.to_json()).unwrap())
            .collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    /// Registers `instance` as a poller (optionally declaring affine channels).
    fn announce(hub: &TunnelHub, instance: &str, affine: &[&str]) {
        let channels = affine.iter().map(|c| c.to_string()).collect();
        assert!(
            hub.poll(instance, channels, 1, Duration::ZERO, &|| false)
                .is_empty()
        );
    }

    fn answer(hub: &TunnelHub, command: &Value, headers: &[(&str, &str)]) {
        let payload = ResponsePayload {
            request_id: command["request_id"].as_str().unwrap().to_string(),
            channel: "main".into(),
            resp_json: Some(
                RawValue::from_string(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into()).unwrap(),
            ),
            resp_headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
            resp_code: 200,
            resp_type: RespType::JsonrpcResponse,
        };
        let token = command["shard_token"].as_str().unwrap();
        hub.respond(token, payload).unwrap();
    }

    fn empty_payload() -> ResponsePayload {
        ResponsePayload {
            request_id: String::new(),
            channel: String::new(),
            resp_json: None,
            resp_headers: BTreeMap::new(),
            resp_code: 0,
            resp_type: RespType::NotifyAck,
        }
    }

    #[test]
    fn nothing_is_queued_without_a_client() {
        let hub = hub(4);
        let err = hub.submit(body("main", "{}"), soon(), None, false).err();
        assert_eq!(err, Some(SubmitError::NotConnected));
        assert_eq!(hub.queued_len(), 0);
    }

    #[test]
    fn queue_is_bounded_and_withdrawn_commands_leave_it() {
        let hub = hub(2);
        announce(&hub, "a", &[]);
        let first = hub.submit(body("main", "{}"), soon(), None, false).unwrap();
        let _second = hub.submit(body("main", "{}"), soon(), None, false).unwrap();
        let third = hub.submit(body("main", "{}"), soon(), None, false).err();
        assert_eq!(third, Some(SubmitError::QueueFull));
        drop(first);
        assert_eq!(hub.queued_len(), 1);
    }

    #[test]
    fn each_command_is_delivered_once_and_answered_once() {
        let hub = hub(8);
        announce(&hub, "a", &[]);
        let ticket = hub
            .submit(body("main", r#"{"id":1}"#), soon(), None, false)
            .unwrap();
        let got = values(hub.poll("a", HashSet::new(), 25, Duration::ZERO, &|| false));
        assert_eq!(got.len(), 1);
        assert!(
            hub.poll("b", HashSet::new(), 25, Duration::ZERO, &|| false)
                .is_empty()
        );
        assert!(got[0]["response_timeout"].as_str().unwrap().ends_with("ms"));
        answer(&hub, &got[0], &[]);
        assert!(ticket.answers.try_recv().is_ok());
        // A second answer, or one with the wrong token, finds nothing pending.
        let again = ResponsePayload {
            request_id: ticket.request_id.clone(),
            ..empty_payload()
        };
        let token = got[0]["shard_token"].as_str().unwrap();
        assert_eq!(hub.respond(token, again), Err(RespondError::NotPending));
    }

    #[test]
    fn a_ticket_reports_the_instance_that_served_it_even_after_the_answer() {
        let hub = hub(8);
        announce(&hub, "a", &[]);
        let slot = Arc::new(OnceLock::new());
        let ticket = hub.submit(body("main", "{}"), soon(), None, false).unwrap();
        let ticket = ticket.report_to(&slot);
        assert_eq!(ticket.served_by(), None, "still queued");
        let got = values(hub.poll("a", HashSet::new(), 1, Duration::ZERO, &|| false));
        assert_eq!(ticket.served_by().as_deref(), Some("a"));
        answer(&hub, &got[0], &[]);
        assert!(hub.lock().pending.is_empty(), "the answer removed it");
        drop(ticket);
        assert_eq!(slot.get().map(String::as_str), Some("a"));
        // One that never reached a client reports nothing.
        let unserved = Arc::new(OnceLock::new());
        drop(
            hub.submit(body("main", "{}"), soon(), None, false)
                .unwrap()
                .report_to(&unserved),
        );
        assert_eq!(unserved.get(), None);
    }

    #[test]
    fn a_poller_that_left_takes_nothing() {
        let hub = hub(8);
        announce(&hub, "a", &[]);
        let _ticket = hub
            .submit(body("main", r#"{"id":1}"#), soon(), None, false)
            .unwrap();
        assert!(
            hub.poll("a", HashSet::new(), 25, Duration::from_secs(5), &|| true)
                .is_empty()
        );
        assert_eq!(
            hub.queued_len(),
            1,
            "the command waits for a poller that is still there"
        );
        assert_eq!(
            hub.poll("b", HashSet::new(), 25, Duration::ZERO, &|| false)
                .len(),
            1
        );
    }

    #[test]
    fn affine_sessions_stay_on_their_instance() {
        let hub = hub(8);
        announce(&hub, "a", &["main"]);
        announce(&hub, "b", &["main"]);
        let init = hub
            .submit(
                body("main", r#"{"id":1,"method":"initialize"}"#),
                soon(),
                None,
                true,
            )
            .unwrap();
        let delivered =
            values(
                hub.poll("a", ["main".to_string()].into(), 1, Duration::ZERO, &|| {
                    false
                }),
            );
        answer(&hub, &delivered[0], &[]);
        let reply = init.answers.try_recv().unwrap();
        // A stdio server issues no session id: the relay minted one.
        let session = reply.resp_headers["Mcp-Session-Id"][0].clone();
        assert!(session.starts_with("mcpt-"));

        let _call = hub
            .submit(body("main", r#"{"id":2}"#), soon(), Some(&session), false)
            .unwrap();
        assert!(
            hub.poll(
                "b",
                ["main".to_string()].into(),
                25,
                Duration::ZERO,
                &|| false
            )
            .is_empty()
        );
        assert_eq!(
            hub.poll(
                "a",
                ["main".to_string()].into(),
                25,
                Duration::ZERO,
                &|| false
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_session_whose_instance_is_gone_is_refused() {
        let limits = HubLimits {
            queue_capacity: 8,
            client_timeout: Duration::from_millis(1),
        };
        let hub = TunnelHub::new(limits, None);
        announce(&hub, "a", &["main"]);
        let init = hub
            .submit(
                body("main", r#"{"id":1,"method":"initialize"}"#),
                soon(),
                None,
                true,
            )
            .unwrap();
        let delivered =
            values(
                hub.poll("a", ["main".to_string()].into(), 1, Duration::ZERO, &|| {
                    false
                }),
            );
        answer(&hub, &delivered[0], &[("Mcp-Session-Id", "s-1")]);
        assert_eq!(
            init.answers.try_recv().unwrap().resp_headers["Mcp-Session-Id"],
            ["s-1"]
        );
        // "b" keeps polling; "a" has not been seen for longer than the client timeout.
        let waiting = {
            let hub = Arc::clone(&hub);
            std::thread::spawn(move || {
                hub.poll("b", HashSet::new(), 1, Duration::from_millis(300), &|| {
                    false
                })
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let result = loop {
            match hub.submit(body("main", r#"{"id":2}"#), soon(), Some("s-1"), false) {
                Err(SubmitError::SessionGone) => break Ok(()),
                other if Instant::now() >= deadline => break Err(format!("{:?}", other.err())),
                _ => std::thread::yield_now(),
            }
        };
        assert_eq!(result, Ok(()));
        waiting.join().unwrap();
    }

    #[test]
    fn a_poll_answer_stops_at_the_byte_budget_but_always_carries_one() {
        let hub = hub(64);
        announce(&hub, "a", &[]);
        let big = format!(r#"{{"id":1,"p":"{}"}}"#, "x".repeat(POLL_ANSWER_BUDGET / 3));
        let huge = format!(r#"{{"id":1,"p":"{}"}}"#, "x".repeat(POLL_ANSWER_BUDGET * 2));
        let _tickets: Vec<_> = [&big, &big, &big, &huge, &big]
            .iter()
            .map(|m| hub.submit(body("main", m), soon(), None, false).unwrap())
            .collect();
        let sizes = |d: Vec<Delivered>| d.len();
        let take = || hub.poll("a", HashSet::new(), 25, Duration::ZERO, &|| false);
        assert_eq!(
            sizes(take()),
            2,
            "three thirds plus overhead pass the budget"
        );
        assert_eq!(
            sizes(take()),
            1,
            "the third one; the huge one does not fit after it"
        );
        assert_eq!(sizes(take()), 1, "a command over the budget goes alone");
        assert_eq!(sizes(take()), 1);
    }

    #[test]
    fn unread_notifications_are_bounded_and_then_refused() {
        let hub = hub(8);
        announce(&hub, "a", &[]);
        let ticket = hub.submit(body("main", "{}"), soon(), None, false).unwrap();
        let command = &values(hub.poll("a", HashSet::new(), 1, Duration::ZERO, &|| false))[0];
        let token = command["shard_token"].as_str().unwrap();
        let note = format!(r#"{{"p":"{}"}}"#, "n".repeat(100_000));
        let notify = || ResponsePayload {
            request_id: ticket.request_id.clone(),
            resp_json: Some(RawValue::from_string(note.clone()).unwrap()),
            resp_type: RespType::JsonrpcNotify,
            ..empty_payload()
        };
        let mut accepted = 0;
        while hub.respond(token, notify()).is_ok() {
            accepted += 1;
            assert!(accepted <= NOTIFY_BUFFER_BYTES / 100_000, "unbounded");
        }
        assert!(accepted >= NOTIFY_BUFFER_BYTES / 100_000 - 1);
        // Later POSTs, the terminal one included, find nothing pending.
        assert_eq!(hub.respond(token, notify()), Err(RespondError::NotPending));
        // The connector thread drains what was buffered, then learns the request was dropped.
        for _ in 0..accepted {
            assert!(matches!(ticket.next(Duration::ZERO), Wait::Payload(_)));
        }
        assert!(matches!(ticket.next(Duration::ZERO), Wait::Dropped));
    }

    #[test]
    fn an_instance_is_gone_only_when_the_peer_closed_its_connections() {
        let hub = hub(8);
        let peer_closed = ConnectionHandle::default();
        hub.seen("a", &peer_closed);
        announce(&hub, "a", &[]);
        let ticket = hub.submit(body("main", "{}"), soon(), None, false).unwrap();
        assert_eq!(
            hub.poll("a", HashSet::new(), 1, Duration::ZERO, &|| false)
                .len(),
            1
        );
        assert!(!ticket.client_gone(), "its connection is open");
        peer_closed.mark_closed(true);
        assert!(!ticket.client_gone(), "within the grace");
        let later = Instant::now() + CLIENT_GONE_GRACE;
        let gone_later = || hub.lock().instances["a"].gone(later);
        assert!(gone_later());
        // A connection the relay closed itself proves nothing.
        let relay_closed = ConnectionHandle::default();
        hub.seen("a", &relay_closed);
        relay_closed.mark_closed(false);
        assert!(!gone_later());
        assert!(!ticket.client_gone());
    }
}
