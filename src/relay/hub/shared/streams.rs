//! Long-lived streams and server→client requests with the Redis store: a host's stream opened on
//! node A is served by a client instance polling node B.
//!
//! - A `stream` command not bound to a session goes to the tunnel's stream list, which only
//!   polls of instances that announced `streams` take from; one in a process-affine session goes
//!   to its instance's list ([`super::Shared::enqueue`]). Whether a stream can be handed out at
//!   all ([`Shared::streams_available`]) is Redis's answer: the session's instance announced the
//!   feature, or (unbound) some instance that did polls.
//! - The cap (`--stream.max-per-tunnel`) holds across the cluster: each open stream is a member
//!   of the tunnel's sorted set with its lease's end as score ([`STREAM_LEASE`]), added before
//!   the command is queued, removed when its ticket goes, renewed by the node holding it
//!   ([`TunnelHub::upkeep`]), so a dead node's streams free their places within a lease.
//! - The stream's messages: every payload for a stream goes through the list of the node whose
//!   connector holds it, including those posted on that node itself ([`TunnelHub::respond`]), so
//!   messages posted on several nodes reach the host in the order they were posted. Heartbeats
//!   and `--stream.max-lifetime` stay with that node; its end (a terminal payload) and a host's
//!   hang-up (a `cancel` order in the instance's list) cross nodes like any command's.
//! - A server request a client forwarded on a command is remembered in Redis
//!   (`mcpt:t:{tunnel}:ask:…`, [`ASKED_TTL`]) by the node holding that command, so the host's
//!   answer POSTed on any node becomes a `server_response` for the instance that asked.

use std::time::{Duration, Instant};

use super::super::server_requests::{ASKED_TTL, canonical_id, request_id};
use super::super::{StreamKind, SubmitError, TunnelHub};
use super::{Shared, millis};
use crate::relay::store;
use crate::wire::{RespType, ResponsePayload};

/// How long an open stream holds its place in the cluster-wide count without its node renewing
/// it (a node that died frees its streams' places, and their keys expire, within this).
pub const STREAM_LEASE: Duration = Duration::from_secs(30);
/// How often the node holding streams renews their leases.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// KEYS: the tunnel's open streams. ARGV: the cap, the request id, the lease ms. Drops expired
/// leases (Redis's clock), then adds this one unless the cap is reached: 1 added, 0 refused.
const STREAM_SLOT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
";

/// KEYS: the tunnel's open streams. ARGV: the lease ms, then request ids. Renews the leases of
/// those still open, and their pending and delivered keys.
const RENEW: &str = r"
local t = redis.call('TIME')
local ends = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', ends, ARGV[i])
    redis.call('PEXPIRE', 'mcpt:p:' .. ARGV[i], ARGV[1])
    redis.call('PEXPIRE', 'mcpt:d:' .. ARGV[i], ARGV[1])
  end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
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

    /// A place among the tunnel's open streams for `request_id`, cluster-wide.
    pub(in crate::relay::hub) fn take_stream_slot(
        &self,
        request_id: &str,
        max_open: usize,
    ) -> Result<(), SubmitError> {
        let key = store::streams_key(&self.tunnel);
        let (max, lease) = (max_open.to_string(), millis(STREAM_LEASE));
        let args: [&[u8]; 3] = [max.as_bytes(), request_id.as_bytes(), lease.as_bytes()];
        match self
            .store
            .eval(STREAM_SLOT, &[key.as_bytes()], &args)
            .map(|r| r.as_int())
        {
            Ok(Some(1)) => Ok(()),
            Ok(_) => Err(SubmitError::StreamLimit),
            Err(_) => Err(SubmitError::StoreUnavailable),
        }
    }

    /// Renews the leases of the streams `held` here, at most every [`RENEW_EVERY`].
    fn renew_streams(&self, held: &[String]) {
        let mut renewed = self
            .renewed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.is_empty() || renewed.is_some_and(|t| t.elapsed() < RENEW_EVERY) {
            return;
        }
        let key = store::streams_key(&self.tunnel);
        let lease = millis(STREAM_LEASE);
        let mut args: Vec<&[u8]> = vec![lease.as_bytes()];
        args.extend(held.iter().map(|r| r.as_bytes()));
        match self.store.eval(RENEW, &[key.as_bytes()], &args) {
            Ok(_) => *renewed = Some(Instant::now()),
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
    /// instances polling here are gone ([`TunnelHub::announce_gone`]) and renews the leases of
    /// the streams held here.
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
        shared.renew_streams(&held);
    }
}
