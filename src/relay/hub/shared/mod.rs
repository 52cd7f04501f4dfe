//! The hub's Redis side (`--store redis://…`): the tunnel's queue lives in Redis, so a command
//! queued on one relay node can be taken by a poll on another, and a response POST on any node
//! reaches the connector waiting on the node that queued it.
//!
//! What stays in each node's memory: the pending commands of the connectors waiting here (their
//! channels), the instances that poll here (cancels, affinity), the session table. What is in
//! Redis (keys and scripts: [`crate::relay::store`]): the queue, which node a command's
//! connector waits on (the node id is the shard token's prefix, `node.random`), the shard token
//! of every waiting command, whether any node has a polling client.
//!
//! Process affinity across nodes: a poll keeps its instance's and its affine channels' keys
//! alive; an `initialize` on such a channel binds its session (minted here when the server
//! issued none) to the instance that took it, in Redis; later commands of the session go to that
//! instance's own list, which only its polls take from (before the tunnel's list).
//!
//! Cancellation across nodes: a `cancel` order goes to the list of the instance that took the
//! command (when it announced the feature), read by its polls on any node.
//!
//! A gone instance ([`super::CLIENT_GONE_GRACE`]) is announced by the node it polled, for the
//! connectors waiting on other nodes.
//!
//! Long-lived streams and server→client requests across nodes: [`streams`]. `poll`: the
//! long-poll and requeue with the queue in Redis.

mod poll;
mod streams;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::queue::{CancelOrder, CommandBody, POLL_ANSWER_BUDGET, Queued, StreamSpec};
use super::{Cancelled, Pending, RespondError, SubmitError};
use crate::crypto::random_hex;
use crate::relay::store::{self, Store, StoreError};
use crate::wire::{self, ResponsePayload};

/// How long keys outlive the deadline that made them (clock differences between nodes, a
/// response POST just at the deadline).
const KEY_SLACK: Duration = Duration::from_secs(60);
/// Shortest wait worth a `BLPOP` (its timeout has millisecond resolution; 0 would block forever).
const MIN_BLOCK: Duration = Duration::from_millis(10);
/// How long a forwarded response waits in a node's list for that node to take it.
const FORWARD_TTL: Duration = Duration::from_secs(60);

/// What one take from Redis got: `cancel` orders and commands with their shard tokens.
type Taken = (Vec<CancelOrder>, Vec<(Queued, String)>);

/// One tunnel's handle on the shared store.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) tunnel: String,
    /// The queue and Redis value of each command queued from here, so a withdrawal can remove
    /// it.
    values: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// When the leases of the streams held here were last renewed ([`streams`]).
    renewed: Mutex<Option<Instant>>,
}

/// A queued command as stored in Redis: `request_id\n` then this as JSON.
#[derive(Serialize, Deserialize)]
struct Stored {
    tok: String,
    /// Unix milliseconds.
    deadline: u64,
    /// Only this instance may take it (process affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aff: Option<String>,
    command_type: String,
    channel: String,
    headers: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jsonrpc: Option<Box<RawValue>>,
    created_at: String,
    /// A `stream` command: its kind and when it must end (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<(String, u64)>,
}

/// A `cancel` order in an instance's list, for whichever node it polls.
#[derive(Serialize, Deserialize)]
struct StoredCancel {
    rid: String,
    tok: String,
    ch: String,
    reason: String,
}

/// The reasons a `cancel` command gives, as the `&'static str` a [`CancelOrder`] holds.
fn cancel_reason(text: &str) -> &'static str {
    ["notifications_cancelled", "max_lifetime"]
        .into_iter()
        .find(|r| *r == text)
        .unwrap_or("host_closed")
}

/// A response posted on another node, in the waiting node's list.
#[derive(Serialize, Deserialize)]
pub(crate) struct Forwarded {
    pub(crate) tunnel: String,
    pub(crate) token: String,
    pub(crate) payload: ResponsePayload,
}

fn unix_ms(at: Instant) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = if at >= Instant::now() {
        now + at.saturating_duration_since(Instant::now())
    } else {
        now.saturating_sub(Instant::now().saturating_duration_since(at))
    };
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
}

fn instant_of(ms: u64) -> Instant {
    let now_ms = unix_ms(Instant::now());
    Instant::now() + Duration::from_millis(ms.saturating_sub(now_ms))
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

/// The wire's command types as the `&'static str` a [`CommandBody`] holds.
fn command_type(text: &str) -> &'static str {
    [
        wire::COMMAND_SESSION_TERMINATION,
        wire::COMMAND_OAUTH_DISCOVERY,
        wire::COMMAND_STREAM,
        wire::COMMAND_SERVER_RESPONSE,
    ]
    .into_iter()
    .find(|t| *t == text)
    .unwrap_or(wire::COMMAND_JSONRPC)
}

impl Shared {
    pub(crate) fn new(store: Arc<Store>, tunnel: &str) -> Shared {
        Shared {
            store,
            tunnel: tunnel.to_string(),
            values: Mutex::new(HashMap::new()),
            renewed: Mutex::new(None),
        }
    }

    /// A shard token naming this node.
    pub(super) fn new_token(&self) -> String {
        format!("{}.{}", self.store.node(), random_hex(16))
    }

    /// Whether `token` was issued by this node (its connector waits here).
    pub(super) fn is_mine(&self, token: &str) -> bool {
        token
            .split_once('.')
            .is_some_and(|(n, _)| n == self.store.node())
    }

    fn encode(q: &Queued, token: &str) -> Vec<u8> {
        let stored = Stored {
            tok: token.to_string(),
            deadline: unix_ms(q.deadline),
            aff: q.affinity.clone(),
            command_type: q.body.command_type.to_string(),
            channel: q.body.channel.clone(),
            headers: q.body.headers.clone(),
            jsonrpc: q.body.jsonrpc.clone(),
            created_at: q.body.created_at.clone(),
            stream: q
                .stream
                .as_ref()
                .map(|s| (s.kind.to_string(), unix_ms(s.ends))),
        };
        let json = serde_json::to_string(&stored).unwrap_or_default();
        format!("{}\n{json}", q.request_id).into_bytes()
    }

    fn decode(value: &[u8]) -> Option<(Queued, String)> {
        let text = std::str::from_utf8(value).ok()?;
        let (request_id, json) = text.split_once('\n')?;
        let s: Stored = serde_json::from_str(json).ok()?;
        let queued = Queued {
            request_id: request_id.to_string(),
            deadline: instant_of(s.deadline),
            affinity: s.aff,
            body: CommandBody {
                command_type: command_type(&s.command_type),
                channel: s.channel,
                headers: s.headers,
                jsonrpc: s.jsonrpc,
                created_at: s.created_at,
            },
            stream: s.stream.map(|(kind, ends)| StreamSpec {
                kind: streams::kind(&kind),
                ends: instant_of(ends),
                max_open: 0,
            }),
        };
        Some((queued, s.tok))
    }

    /// Queues `q` in Redis: refused when no node has a polling client or the tunnel's queue is
    /// full cluster-wide.
    pub(super) fn enqueue(
        &self,
        q: &Queued,
        token: &str,
        capacity: usize,
    ) -> Result<(), SubmitError> {
        let value = Self::encode(q, token);
        let ttl = millis(q.deadline.saturating_duration_since(Instant::now()) + KEY_SLACK);
        let (queue, alive) = self.queue_of(q);
        let keys = [
            queue.clone(),
            alive,
            store::pending_key(&q.request_id),
            store::queue_key(&self.tunnel),
            store::node_alive_key(self.store.node()),
        ];
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let capacity = capacity.to_string();
        let lease = millis(self.store.lease());
        let args: [&[u8]; 6] = [
            capacity.as_bytes(),
            &value,
            token.as_bytes(),
            ttl.as_bytes(),
            ttl.as_bytes(),
            lease.as_bytes(),
        ];
        let reply = self.store.eval(store::ENQUEUE, &keys, &args);
        match reply.map(|r| r.as_int()) {
            Ok(Some(1)) => {
                self.lock_values()
                    .insert(q.request_id.clone(), (queue, value));
                Ok(())
            }
            Ok(Some(0)) if q.affinity.is_some() => Err(SubmitError::SessionGone),
            Ok(Some(0)) => Err(SubmitError::NotConnected),
            Ok(Some(_)) => Err(SubmitError::QueueFull),
            Ok(None) | Err(_) => Err(SubmitError::StoreUnavailable),
        }
    }

    fn lock_values(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Vec<u8>)>> {
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The list `q` goes to and the key saying some poller may take from it: its instance's
    /// (process affinity), the tunnel's streams (for instances that announced them), the tunnel's.
    fn queue_of(&self, q: &Queued) -> (String, String) {
        match (&q.affinity, &q.stream) {
            (Some(i), _) => (
                store::instance_queue_key(&self.tunnel, i),
                store::instance_alive_key(&self.tunnel, i),
            ),
            (None, Some(_)) => (
                store::stream_queue_key(&self.tunnel),
                store::streams_alive_key(&self.tunnel),
            ),
            (None, None) => (
                store::queue_key(&self.tunnel),
                store::alive_key(&self.tunnel),
            ),
        }
    }

    /// Takes the `cancel` orders for `instance` and up to `limit` commands (its own list
    /// first, the tunnel's streams too when it `streams`), waiting up to `block` for the first.
    fn take(
        &self,
        instance: &str,
        streams: bool,
        limit: usize,
        block: Duration,
    ) -> Result<Taken, StoreError> {
        let mut queues = vec![
            store::instance_queue_key(&self.tunnel, instance),
            store::queue_key(&self.tunnel),
            store::instance_cancels_key(&self.tunnel, instance),
        ];
        if streams {
            queues.push(store::stream_queue_key(&self.tunnel));
        }
        let mut taken = self.take_more(&queues, instance, limit, None)?;
        if taken.0.is_empty() && taken.1.is_empty() && block >= MIN_BLOCK {
            let secs = format!("{:.3}", block.as_secs_f64());
            // Without room for commands, only `cancel` orders may wake it.
            let lists = if limit == 0 {
                &queues[2..3]
            } else {
                &queues[..]
            };
            let mut args: Vec<&[u8]> = vec![b"BLPOP", queues[2].as_bytes()];
            args.extend(
                lists
                    .iter()
                    .filter(|q| **q != queues[2])
                    .map(|q| q.as_bytes()),
            );
            args.push(secs.as_bytes());
            let mut reply = self
                .store
                .call_waiting(&args, block)?
                .into_array()
                .into_iter();
            let key = reply.next().and_then(|r| r.into_bytes());
            let value = reply
                .next()
                .and_then(|r| r.into_bytes())
                .unwrap_or_default();
            if key.as_deref() == Some(queues[2].as_bytes()) {
                let order = self.decode_cancel(&value, instance);
                taken = self.take_more(&queues, instance, limit, None)?;
                taken.0.extend(order);
            } else if let Some(first) = Self::decode(&value) {
                taken = self.take_more(&queues, instance, limit.saturating_sub(1), Some(first))?;
            }
        }
        Ok(taken)
    }

    fn decode_cancel(&self, value: &[u8], instance: &str) -> Option<CancelOrder> {
        let c: StoredCancel = serde_json::from_slice(value).ok()?;
        Some(CancelOrder {
            request_id: c.rid,
            shard_token: c.tok,
            channel: c.ch,
            reason: cancel_reason(&c.reason),
            instance: instance.to_string(),
        })
    }

    /// Whether a cancellation of `request_id` (queued from here) can reach it: not delivered
    /// yet, or delivered to an instance that announced the `cancel` feature.
    pub(super) fn cancellable(&self, request_id: &str) -> bool {
        let key = store::delivered_key(request_id);
        let reply = self.store.eval(
            store::CANCELLABLE,
            &[key.as_bytes()],
            &[self.tunnel.as_bytes()],
        );
        reply.ok().and_then(|r| r.as_int()) == Some(1)
    }

    /// [`TunnelHub::cancel`] of a command queued from here, wherever it is now.
    pub(super) fn cancel(&self, request_id: &str, pending: &Pending, reason: &str) -> Cancelled {
        let (queue, value) = self
            .lock_values()
            .remove(request_id)
            .unwrap_or_else(|| (store::queue_key(&self.tunnel), Vec::new()));
        let order = serde_json::to_vec(&StoredCancel {
            rid: request_id.to_string(),
            tok: pending.shard_token.clone(),
            ch: pending.channel.clone(),
            reason: reason.to_string(),
        })
        .unwrap_or_default();
        let keys = [
            queue,
            store::pending_key(request_id),
            store::delivered_key(request_id),
        ];
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let ttl = millis(FORWARD_TTL);
        // A stream's instance always hears of it: it holds the stream open until told.
        let always: &[u8] = if pending.stream { b"1" } else { b"0" };
        let args: [&[u8]; 5] = [
            &value,
            &order,
            self.tunnel.as_bytes(),
            ttl.as_bytes(),
            always,
        ];
        match self
            .store
            .eval(store::CANCEL, &keys, &args)
            .map(|r| r.as_int())
        {
            Ok(Some(1)) => Cancelled::Withdrawn,
            Ok(Some(2)) => Cancelled::Told,
            _ => Cancelled::Forgotten,
        }
    }

    /// The [`store::TAKE`] script; `first` (taken by `BLPOP`) is kept if its connector still
    /// waits.
    fn take_more(
        &self,
        queues: &[String],
        instance: &str,
        limit: usize,
        first: Option<(Queued, String)>,
    ) -> Result<Taken, StoreError> {
        let budget = POLL_ANSWER_BUDGET.to_string();
        let (check, bytes) = match &first {
            Some((q, tok)) => (q.request_id.clone(), Self::encode(q, tok).len()),
            None => (String::new(), 0),
        };
        let (limit, bytes) = (limit.to_string(), bytes.to_string());
        let requeue_ttl = millis(store::REQUEUE_TTL);
        let args: [&[u8]; 6] = [
            limit.as_bytes(),
            budget.as_bytes(),
            bytes.as_bytes(),
            check.as_bytes(),
            instance.as_bytes(),
            requeue_ttl.as_bytes(),
        ];
        let keys: Vec<&[u8]> = queues.iter().map(|q| q.as_bytes()).collect();
        let mut reply = self
            .store
            .eval(store::TAKE, &keys, &args)?
            .into_array()
            .into_iter();
        let first_pending = reply.next().and_then(|r| r.as_int()) == Some(1);
        let orders = reply.next().and_then(|r| r.as_int()).unwrap_or(0);
        let orders: Vec<CancelOrder> = reply
            .by_ref()
            .take(usize::try_from(orders).unwrap_or(0))
            .filter_map(|r| r.into_bytes())
            .filter_map(|v| self.decode_cancel(&v, instance))
            .collect();
        let mut out: Vec<(Queued, String)> = first.filter(|_| first_pending).into_iter().collect();
        let now = Instant::now();
        out.extend(
            reply
                .filter_map(|r| r.into_bytes())
                .filter_map(|v| Self::decode(&v))
                .filter(|(q, _)| q.deadline > now),
        );
        Ok((orders, out))
    }

    /// Puts commands whose poll answer could not be written back at the queue's head.
    pub(super) fn put_back(&self, commands: Vec<(Queued, String)>) {
        for (q, token) in commands.into_iter().rev() {
            let queue = self.queue_of(&q).0;
            let value = Self::encode(&q, &token);
            let ttl = millis(store::REQUEUE_TTL);
            let put = self.store.eval(
                store::PUT_BACK,
                &[queue.as_bytes()],
                &[&value, ttl.as_bytes()],
            );
            if let Err(e) = put {
                log::warn!("request {}: could not requeue: {e}", q.request_id);
            }
        }
    }

    /// Some node has a polling client of this tunnel, `instance` polls, and it serves
    /// `affine` channels, for `client_timeout` from now.
    fn touch_alive(
        &self,
        instance: &str,
        affine: &[String],
        features: &str,
        client_timeout: Duration,
    ) {
        let mut keys = vec![
            store::alive_key(&self.tunnel),
            store::instance_alive_key(&self.tunnel, instance),
        ];
        keys.extend(affine.iter().map(|c| store::affine_key(&self.tunnel, c)));
        if features.contains(wire::FEATURE_STREAMS) {
            keys.push(store::streams_alive_key(&self.tunnel));
        }
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let ttl = millis(client_timeout);
        let gone = store::instance_gone_key(&self.tunnel, instance);
        let args: [&[u8]; 3] = [ttl.as_bytes(), features.as_bytes(), gone.as_bytes()];
        let _ = self.store.eval(store::TOUCH, &keys, &args);
    }

    /// Where a command goes: the instance holding `session` (if bound), and whether some
    /// instance declared `initialize_on` (the channel of an `initialize`) process-affine.
    pub(super) fn routing(
        &self,
        session: Option<&str>,
        initialize_on: Option<&str>,
    ) -> Result<(Option<String>, bool), SubmitError> {
        let owner = match session {
            Some(s) => self.session_owner(s)?,
            None => None,
        };
        let affine = match initialize_on {
            Some(channel) => self.affine(channel)?,
            None => false,
        };
        Ok((owner, affine))
    }

    /// Announces that `instance` is gone, for `ttl`.
    pub(super) fn mark_gone(&self, instance: &str, ttl: Duration) {
        let key = store::instance_gone_key(&self.tunnel, instance);
        let ttl = millis(ttl);
        let _ = self
            .store
            .call(&[b"SET", key.as_bytes(), b"1", b"PX", ttl.as_bytes()]);
    }

    /// Whether the instance that took `request_id` was announced gone by its node.
    pub(super) fn instance_gone(&self, request_id: &str) -> bool {
        let key = store::delivered_key(request_id);
        let reply = self
            .store
            .eval(store::GONE, &[key.as_bytes()], &[self.tunnel.as_bytes()]);
        reply.ok().and_then(|r| r.as_int()) == Some(1)
    }

    /// Whether some instance declared `channel` process-affine.
    fn affine(&self, channel: &str) -> Result<bool, SubmitError> {
        let key = store::affine_key(&self.tunnel, channel);
        match self.store.call(&[b"EXISTS", key.as_bytes()]) {
            Ok(r) => Ok(r.as_int() == Some(1)),
            Err(_) => Err(SubmitError::StoreUnavailable),
        }
    }

    /// The instance holding `session`, if it is bound (its binding renewed).
    fn session_owner(&self, session: &str) -> Result<Option<String>, SubmitError> {
        let key = store::session_key(&self.tunnel, session);
        let ttl = millis(store::SESSION_TTL);
        match self
            .store
            .eval(store::SESSION_OWNER, &[key.as_bytes()], &[ttl.as_bytes()])
        {
            Ok(r) => Ok(r.into_bytes().and_then(|b| String::from_utf8(b).ok())),
            Err(_) => Err(SubmitError::StoreUnavailable),
        }
    }

    /// Binds `session` to `instance` for every node.
    pub(super) fn bind_session(&self, session: &str, instance: &str) {
        let key = store::session_key(&self.tunnel, session);
        let ttl = millis(store::SESSION_TTL);
        let args: [&[u8]; 5] = [
            b"SET",
            key.as_bytes(),
            instance.as_bytes(),
            b"PX",
            ttl.as_bytes(),
        ];
        if let Err(e) = self.store.call(&args) {
            log::warn!("session binding not stored: {e}");
        }
    }

    /// Forgets a session binding (after a successful DELETE).
    pub(super) fn end_session(&self, session: &str) {
        let key = store::session_key(&self.tunnel, session);
        let _ = self.store.call(&[b"DEL", key.as_bytes()]);
    }

    /// The instance a command queued here was delivered to, on whichever node.
    pub(super) fn delivered_to(&self, request_id: &str) -> Option<String> {
        let key = store::delivered_key(request_id);
        let reply = self.store.call(&[b"GET", key.as_bytes()]).ok()?;
        reply.into_bytes().and_then(|b| String::from_utf8(b).ok())
    }

    /// Whether a client polled this tunnel on any node recently.
    pub(super) fn connected(&self) -> bool {
        let key = store::alive_key(&self.tunnel);
        let reply = self.store.call(&[b"EXISTS", key.as_bytes()]);
        reply.ok().and_then(|r| r.as_int()) == Some(1)
    }

    /// Forgets a command queued from here, wherever it is.
    pub(super) fn withdraw(&self, request_id: &str) {
        let (queue, value) = self
            .lock_values()
            .remove(request_id)
            .unwrap_or_else(|| (store::queue_key(&self.tunnel), Vec::new()));
        let keys = [
            queue,
            store::pending_key(request_id),
            store::delivered_key(request_id),
            store::streams_key(&self.tunnel),
            store::stream_orders_key(&self.tunnel),
        ];
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let args: [&[u8]; 2] = [&value, request_id.as_bytes()];
        if let Err(e) = self.store.eval(store::WITHDRAW, &keys, &args) {
            log::debug!("request {request_id}: withdrawal not recorded in Redis: {e}");
        }
    }

    /// A response POST for a command whose connector waits on another node: checked against
    /// the command's shard token and put in that node's list. `Ok(false)`: not pending.
    pub(super) fn forward(
        &self,
        token: &str,
        payload: ResponsePayload,
    ) -> Result<(), RespondError> {
        let Some((node, _)) = token.split_once('.') else {
            return Err(RespondError::NotPending);
        };
        let terminal = if payload.resp_type.is_terminal() {
            "1"
        } else {
            "0"
        };
        let keys = [
            store::pending_key(&payload.request_id),
            store::responses_key(node),
            store::node_alive_key(node),
            store::delivered_key(&payload.request_id),
        ];
        let message = serde_json::to_vec(&Forwarded {
            tunnel: self.tunnel.clone(),
            token: token.to_string(),
            payload,
        })
        .unwrap_or_default();
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let ttl = millis(FORWARD_TTL);
        let args: [&[u8]; 4] = [
            token.as_bytes(),
            &message,
            ttl.as_bytes(),
            terminal.as_bytes(),
        ];
        match self
            .store
            .eval(store::FORWARD, &keys, &args)
            .map(|r| r.as_int())
        {
            Ok(Some(1)) => Ok(()),
            Ok(_) => Err(RespondError::NotPending),
            Err(_) => Err(RespondError::StoreUnavailable),
        }
    }
}

/// Waits up to `block` for responses posted on other nodes for connectors waiting on this one.
/// Renews this node's liveness first ([`Store::keep_alive`]).
pub(crate) fn take_forwarded(store: &Store, block: Duration) -> Result<Vec<Forwarded>, StoreError> {
    store.keep_alive();
    let key = store::responses_key(store.node());
    let secs = format!("{:.3}", block.as_secs_f64().max(0.01));
    let reply = store.call_waiting(&[b"BLPOP", key.as_bytes(), secs.as_bytes()], block)?;
    let message = reply
        .into_array()
        .into_iter()
        .nth(1)
        .and_then(|r| r.into_bytes());
    Ok(message
        .and_then(|m| serde_json::from_slice(&m).ok())
        .into_iter()
        .collect())
}
