//! Long-lived streams and server→client requests with the Redis store: a host's stream opened on
//! node A is served by a client instance polling node B.
//!
//! - A `stream` command not bound to a session goes to the tunnel's stream list, which only
//!   polls of instances that announced `streams` take from; one in a process-affine session goes
//!   to its instance's list ([`super::Shared::enqueue`]). Whether a stream can be handed out at
//!   all ([`Shared::streams_available`]) is Redis's answer: the session's instance announced the
//!   feature, or (unbound) some instance that did polls.
//! - The cap (`--stream.max-per-tunnel`) holds across the cluster: each open stream is a member
//!   of the tunnel's sorted set with its lease's end as score (`--store.lease`), added before
//!   the command is queued, removed when its ticket goes, renewed by the node holding it
//!   ([`TunnelHub::upkeep`]), so a dead node's streams free their places within a lease.
//! - A stream whose lease ran out (its node died) is reaped by whichever node's upkeep finds
//!   it first: its place, pending and delivered keys go, and the instance holding it gets the
//!   `cancel` order stored with its place (reason `host_closed`: its host's connection went with
//!   the node), so the client closes the upstream request even when the stream is quiet.
//! - The stream's messages: every payload for a stream goes through the list of the node whose
//!   connector holds it, including those posted on that node itself ([`TunnelHub::respond`]), so
//!   messages posted on several nodes reach the host in the order they were posted. Heartbeats
//!   and `--stream.max-lifetime` stay with that node; its end (a terminal payload) and a host's
//!   hang-up (a `cancel` order in the instance's list) cross nodes like any command's.
//! - A server request a client forwarded on a command is remembered in Redis
//!   (`mcpt:t:{tunnel}:ask:…`, [`ASKED_TTL`]) by the node holding that command, so the host's
//!   answer POSTed on any node becomes a `server_response` for the instance that asked.

use std::time::Instant;

use super::super::server_requests::{ASKED_TTL, canonical_id, request_id};
use super::super::{StreamKind, SubmitError, TunnelHub};
use super::{FORWARD_TTL, Shared, StoredCancel, millis};
use crate::relay::store;
use crate::wire::{RespType, ResponsePayload};

/// KEYS: the tunnel's open streams, their `cancel` orders. ARGV: the cap, the request id, the
/// lease ms, its `cancel` order. Leaves expired leases to [`UPKEEP`] (it tells their clients),
/// then adds this one unless the cap counting only live leases (Redis's clock) is reached: 1
/// added, 0 refused.
const STREAM_SLOT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]) * 2)
return 1
";

/// KEYS: the tunnel's open streams, their `cancel` orders. ARGV: the lease ms, the tunnel, the
/// `cancel` list's TTL ms, then the request ids of the streams held by this node. First reaps
/// the streams whose lease ran out (their node died): forgets them and tells the instance that
/// took each (when it still polls) with its `cancel` order. Then renews the leases of those held
/// here that are still open, and their pending keys; the delivered key outlives the lease (the
/// reaper reads it). Returns the number reaped.
const UPKEEP: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, rid in ipairs(dead) do
  redis.call('ZREM', KEYS[1], rid)
  local order = redis.call('HGET', KEYS[2], rid)
  redis.call('HDEL', KEYS[2], rid)
  local inst = redis.call('GET', 'mcpt:d:' .. rid)
  redis.call('DEL', 'mcpt:p:' .. rid, 'mcpt:d:' .. rid)
  local prefix = 'mcpt:t:' .. ARGV[2] .. ':i:'
  if order and inst and redis.call('EXISTS', prefix .. inst .. ':alive') == 1 then
    redis.call('RPUSH', prefix .. inst .. ':c', order)
    redis.call('PEXPIRE', prefix .. inst .. ':c', ARGV[3])
  end
end
for i = 4, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i])
    redis.call('PEXPIRE', 'mcpt:p:' .. ARGV[i], lease)
    redis.call('PEXPIRE', 'mcpt:d:' .. ARGV[i], lease * 2)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], lease * 2) end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], lease * 2) end
return #dead
";

/// KEYS: the session's key ('' for none). ARGV: the tunnel. 1 when a stream can be handed out:
/// the instance holding the session announced `streams`, or (no binding) one that did polls.
const AVAILABLE: &str = r"
local owner = false
if KEYS[1] ~= '' then owner = redis.call('GET', KEYS[1]) end
if owner then
  local f = redis.call('GET', 'mcpt:t:' .. ARGV[1] .. ':i:' .. owner .. ':alive')
  if f and string.find(f, 'streams', 1, true) then return 1 end
  return 0
end
return redis.call('EXISTS', 'mcpt:t:' .. ARGV[1] .. ':salive')
";

/// KEYS: the ask key, the command's delivered key. ARGV: the instance ('' to read it from the
/// delivered key), the session ('' for none), TTL ms, the tunnel. Remembers who asked when that
/// instance announced `server-requests`: 1 noted, 0 not.
const NOTE_ASK: &str = r"
local inst = ARGV[1]
if inst == '' then inst = redis.call('GET', KEYS[2]) end
if not inst then return 0 end
local f = redis.call('GET', 'mcpt:t:' .. ARGV[4] .. ':i:' .. inst .. ':alive')
if not f or not string.find(f, 'server-requests', 1, true) then return 0 end
redis.call('SET', KEYS[1], inst .. '\n' .. ARGV[2], 'PX', ARGV[3])
return 1
";

/// KEYS: the ask key. ARGV: the answering session ('' for none). The instance that asked,
/// forgotten now; nil when none is remembered or it was asked in another session (then it stays).
const TAKE_ASK: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local nl = string.find(v, '\n', 1, true)
if not nl then return false end
local asked = string.sub(v, nl + 1)
if asked ~= '' and asked ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
return string.sub(v, 1, nl - 1)
";

/// A stored stream kind as the `&'static str` a stream command carries.
pub(super) fn kind(text: &str) -> &'static str {
    [StreamKind::Get, StreamKind::Listen]
        .into_iter()
        .map(StreamKind::as_str)
        .find(|k| *k == text)
        .unwrap_or(StreamKind::Get.as_str())
}

impl Shared {
    /// [`TunnelHub::streams_available`] with the Redis store (false when Redis is down: the
    /// request then takes the contract's way, and gets 503 there).
    pub(in crate::relay::hub) fn streams_available(&self, session: Option<&str>) -> bool {
        let key = session.map_or_else(String::new, |s| store::session_key(&self.tunnel, s));
        let reply = self
            .store
            .eval(AVAILABLE, &[key.as_bytes()], &[self.tunnel.as_bytes()]);
        reply.ok().and_then(|r| r.as_int()) == Some(1)
    }

    /// A place among the tunnel's open streams for `request_id` (its connector waiting here
    /// with `token`, on `channel`), cluster-wide.
    pub(in crate::relay::hub) fn take_stream_slot(
        &self,
        (request_id, token, channel): (&str, &str, &str),
        max_open: usize,
    ) -> Result<(), SubmitError> {
        let keys = [
            store::streams_key(&self.tunnel),
            store::stream_orders_key(&self.tunnel),
        ];
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let order = serde_json::to_vec(&StoredCancel {
            rid: request_id.to_string(),
            tok: token.to_string(),
            ch: channel.to_string(),
            reason: "host_closed".to_string(),
        })
        .unwrap_or_default();
        let (max, lease) = (max_open.to_string(), millis(self.store.lease()));
        let args: [&[u8]; 4] = [
            max.as_bytes(),
            request_id.as_bytes(),
            lease.as_bytes(),
            &order,
        ];
        match self
            .store
            .eval(STREAM_SLOT, &keys, &args)
            .map(|r| r.as_int())
        {
            Ok(Some(1)) => Ok(()),
            Ok(_) => Err(SubmitError::StreamLimit),
            Err(_) => Err(SubmitError::StoreUnavailable),
        }
    }

    /// Reaps the tunnel's streams whose lease ran out and renews those `held` here, every
    /// third of `--store.lease` ([`UPKEEP`]).
    fn stream_upkeep(&self, held: &[String]) {
        let mut renewed = self
            .renewed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if renewed.is_some_and(|t| t.elapsed() < self.store.renew_every()) {
            return;
        }
        let keys = [
            store::streams_key(&self.tunnel),
            store::stream_orders_key(&self.tunnel),
        ];
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let (lease, orders_ttl) = (millis(self.store.lease()), millis(FORWARD_TTL));
        let mut args: Vec<&[u8]> = vec![
            lease.as_bytes(),
            self.tunnel.as_bytes(),
            orders_ttl.as_bytes(),
        ];
        args.extend(held.iter().map(|r| r.as_bytes()));
        match self.store.eval(UPKEEP, &keys, &args).map(|r| r.as_int()) {
            Ok(reaped) => {
                *renewed = Some(Instant::now());
                if let Some(n @ 1..) = reaped {
                    log::info!(
                        "tunnel {}: {n} stream(s) whose node stopped renewing their lease \
                         ended; their clients were told",
                        self.tunnel
                    );
                }
            }
            Err(e) => log::debug!("stream leases not renewed: {e}"),
        }
    }

    /// Remembers, for the host's answer on any node, who asked when `payload` (a notification
    /// for a command held here) is a server request: `instance` took the command (when it was
    /// taken on this node), `session` the command's.
    pub(in crate::relay::hub) fn note_ask(
        &self,
        payload: &ResponsePayload,
        instance: Option<&str>,
        channel: &str,
        session: Option<&str>,
    ) {
        if payload.resp_type != RespType::JsonrpcNotify {
            return;
        }
        let Some(id) = payload.resp_json.as_ref().and_then(|j| request_id(j.get())) else {
            return;
        };
        let keys = [
            store::ask_key(&self.tunnel, channel, &id),
            store::delivered_key(&payload.request_id),
        ];
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let ttl = millis(ASKED_TTL);
        let args: [&[u8]; 4] = [
            instance.unwrap_or("").as_bytes(),
            session.unwrap_or("").as_bytes(),
            ttl.as_bytes(),
            self.tunnel.as_bytes(),
        ];
        if let Err(e) = self.store.eval(NOTE_ASK, &keys, &args) {
            log::warn!("server request {id}: not remembered in Redis: {e}");
        }
    }

    /// The instance that asked the request `raw_id` names on `channel`, answered in `session`
    /// (see [`super::super::server_requests`]); forgotten now.
    pub(in crate::relay::hub) fn take_ask(
        &self,
        channel: &str,
        raw_id: &str,
        session: Option<&str>,
    ) -> Option<String> {
        let key = store::ask_key(&self.tunnel, channel, &canonical_id(raw_id)?);
        let reply = self.store.eval(
            TAKE_ASK,
            &[key.as_bytes()],
            &[session.unwrap_or("").as_bytes()],
        );
        reply
            .ok()?
            .into_bytes()
            .and_then(|b| String::from_utf8(b).ok())
    }
}

impl TunnelHub {
    /// Whether `request_id` is a stream whose connector waits on this node.
    pub(in crate::relay::hub) fn is_stream(&self, request_id: &str) -> bool {
        self.lock()
            .pending
            .get(request_id)
            .is_some_and(|p| p.stream)
    }

    /// What a node does about once a second with the Redis store: tells the others which
    /// instances polling here are gone ([`TunnelHub::announce_gone`]), renews the leases of
    /// the streams held here and reaps those of dead nodes.
    pub fn upkeep(&self) {
        self.announce_gone();
        let Some(shared) = &self.shared else {
            return;
        };
        let held: Vec<String> = self
            .lock()
            .pending
            .iter()
            .filter(|(_, p)| p.stream)
            .map(|(id, _)| id.clone())
            .collect();
        shared.stream_upkeep(&held);
    }
}
