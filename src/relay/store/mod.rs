//! Where the relay keeps its queues: `--store memory` (the default: each hub's own memory) or
//! `--store redis://[user:pass@]host:port[/db]` / `rediss://…` (several relay nodes share their
//! queues in one Redis).
//!
//! This module holds the Redis side's primitives: the URL ([`StoreUrl`], its password a
//! [`Secret`]), a small pool of [`resp::Conn`]s, the node's identity, the key names and the Lua
//! scripts that make each step atomic. Keys (every one with a TTL):
//! - `mcpt:t:{tunnel}:q` — the tunnel's queued commands (a list, `request_id\nJSON`); its length
//!   is the cluster-wide queue capacity check.
//! - `mcpt:t:{tunnel}:alive` — set by every poll, expiring after `--client-timeout`: some node has
//!   a tunnel client.
//! - `mcpt:p:{request_id}` — the command's shard token while its connector waits; a response POST
//!   on any node is checked against it.
//! - `mcpt:n:{node}:r` — response payloads posted on other nodes for connectors waiting here.
//! - `mcpt:n:{node}:alive` — the node runs (renewed every third of `--store.lease`, expiring
//!   after it): a response for a connector waiting on a node that died is refused (404, as for
//!   any command no longer pending) and the command's keys deleted, not forwarded into a list no
//!   one reads.
//! - `mcpt:d:{request_id}` — the client instance a command was delivered to (as long as its
//!   pending key lives).
//! - Process affinity: `mcpt:t:{tunnel}:aff:{channel}` (some instance declared the channel
//!   process-affine; `--client-timeout`), `mcpt:t:{tunnel}:i:{instance}:alive` (that instance
//!   polled; `--client-timeout`), `mcpt:t:{tunnel}:i:{instance}:q` (commands only that instance
//!   may take), `mcpt:t:{tunnel}:s:{session}` (the instance holding a session; [`SESSION_TTL`]
//!   after its last command).
//! - Long-lived streams ([`crate::relay::hub`]'s `shared::streams`): `mcpt:t:{tunnel}:sq` (`stream`
//!   commands not bound to a session, taken only by instances that announced `streams`),
//!   `mcpt:t:{tunnel}:salive` (such an instance polled; `--client-timeout`), `mcpt:t:{tunnel}:st`
//!   (a sorted set of the open streams, each member's score its lease's end; the per-tunnel cap),
//!   `mcpt:t:{tunnel}:sti` (a hash: each open stream's `cancel` order, for whichever node finds
//!   its lease expired; `--store.lease`).
//! - Server→client requests: `mcpt:t:{tunnel}:ask:{channel}:{id}` (both in hex; the instance and
//!   session that asked, for the host's answer; ten minutes).
//!
//! A command leaves the queue by `LPOP`/`BLPOP` (inside a script for several): Redis runs each
//! atomically, so two pollers on two nodes never get the same command. When Redis cannot be
//! reached every call fails fast with [`StoreError`] and [`Store::healthy`] turns false until a
//! call succeeds again.

pub mod resp;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::crypto::random_hex;
use crate::secret::Secret;
use resp::{Conn, Reply};

/// How long connecting, or an ordinary command, may take.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per node.
const MAX_IDLE: usize = 16;

/// A parsed `--store` value.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Memory,
    Redis(StoreUrl),
}

/// `redis://[user:pass@]host:port[/db]` or `rediss://…`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Redis(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The URL with its password masked (`***`): safe for logs and errors.
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match (&self.user, &self.password) {
            (Some(u), Some(p)) => format!("{u}:{p}@"),
            (None, Some(p)) => format!(":{p}@"),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{auth}{}:{}/{}", host, self.port, self.db)
    }
}

impl StoreSpec {
    /// Parses `memory`, `redis://…` or `rediss://…`. Errors never repeat the value (it may hold
    /// a password).
    pub fn parse(text: &str) -> Result<StoreSpec, String> {
        let text = text.trim();
        if text == "memory" {
            return Ok(StoreSpec::Memory);
        }
        let (tls, rest) = if let Some(r) = text.strip_prefix("redis://") {
            (false, r)
        } else if let Some(r) = text.strip_prefix("rediss://") {
            (true, r)
        } else {
            return Err("must be memory, redis://host:port[/db] or rediss://…".into());
        };
        let (authority, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, d)) => (
                a,
                d.parse::<u32>()
                    .map_err(|_| "the database after / must be a number".to_string())?,
            ),
            None => (rest, 0),
        };
        let (auth, hostport) = match authority.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, authority),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => {
                let (u, p) = a.split_once(':').unwrap_or((a, ""));
                let user = (!u.is_empty()).then(|| u.to_string());
                let password = (!p.is_empty()).then(|| Secret::new(p));
                (user, password)
            }
        };
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (h, rest) = v6
                    .split_once(']')
                    .ok_or_else(|| "an IPv6 address needs its closing ]".to_string())?;
                (h, rest.strip_prefix(':'))
            }
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            },
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| "the port must be a number".to_string())?,
            None => 6379,
        };
        if host.is_empty() {
            return Err("names no host".into());
        }
        Ok(StoreSpec::Redis(StoreUrl {
            tls,
            host: host.to_string(),
            port,
            db,
            user,
            password,
        }))
    }
}

/// Redis could not be reached or refused a command; the text names the step, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One relay node's handle on the shared Redis.
pub struct Store {
    url: StoreUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// This node's identity: carried in the shard tokens it issues, names its response list.
    node: String,
    idle: Mutex<Vec<Conn>>,
    healthy: AtomicBool,
    /// `--store.lease`: how long this node's leases (its own liveness, its streams' places)
    /// last without being renewed.
    lease: Duration,
    /// When this node last said it runs ([`Store::keep_alive`]).
    alive_at: Mutex<Option<Instant>>,
}

impl Store {
    pub fn new(
        url: StoreUrl,
        tls: Option<Arc<rustls::ClientConfig>>,
        lease: Duration,
    ) -> Arc<Store> {
        Arc::new(Store {
            url,
            tls,
            node: random_hex(6),
            idle: Mutex::new(Vec::new()),
            healthy: AtomicBool::new(true),
            lease,
            alive_at: Mutex::new(None),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// `--store.lease`.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often a lease is renewed: a third of it, so that two renewals may be late.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// Renews this node's liveness key (`mcpt:n:{node}:alive`) when a third of the lease has
    /// passed since it last did; called about once a second.
    pub fn keep_alive(&self) {
        let mut at = self.alive_at.lock().unwrap_or_else(|e| e.into_inner());
        if at.is_some_and(|t| t.elapsed() < self.renew_every()) {
            return;
        }
        let key = node_alive_key(&self.node);
        let ttl = self.lease.as_millis().max(1).to_string();
        if self
            .call(&[b"SET", key.as_bytes(), b"1", b"PX", ttl.as_bytes()])
            .is_ok()
        {
            *at = Some(Instant::now());
        }
    }

    /// The URL, password masked.
    pub fn describe(&self) -> String {
        self.url.to_string()
    }

    /// Whether the last call reached Redis.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// A `PING` now (for `/healthz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.call(&[b"PING"]).map(|_| ())
    }

    /// One command with the ordinary timeout.
    pub fn call(&self, args: resp::Args) -> Result<Reply, StoreError> {
        self.call_waiting(args, Duration::ZERO)
    }

    /// One command that may block on the server for up to `block` (a `BLPOP`).
    pub fn call_waiting(&self, args: resp::Args, block: Duration) -> Result<Reply, StoreError> {
        let result = self.attempt(args, block);
        self.healthy.store(result.is_ok(), Ordering::SeqCst);
        result
    }

    fn attempt(&self, args: resp::Args, block: Duration) -> Result<Reply, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().map_err(|e| unreachable(&self.url, &e))?,
        };
        if !block.is_zero() {
            conn.set_read_timeout(OP_TIMEOUT + block)
                .map_err(|e| unreachable(&self.url, &e))?;
        }
        let reply = conn.call(args).map_err(|e| {
            // Every idle connection is likely as dead as this one (Redis restarted, or closed
            // them): forget them all, so the next calls connect afresh instead of failing too.
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            unreachable(&self.url, &e)
        })?;
        if !block.is_zero() {
            conn.set_read_timeout(OP_TIMEOUT)
                .map_err(|e| unreachable(&self.url, &e))?;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        match reply {
            Reply::Error(e) => Err(StoreError(format!("Redis refused a command: {e}"))),
            other => Ok(other),
        }
    }

    fn connect(&self) -> io::Result<Conn> {
        let mut conn = Conn::connect(&self.url.host, self.url.port, OP_TIMEOUT, self.tls.as_ref())?;
        let refused = |what: &str, reply: Reply| match reply {
            Reply::Error(_) => Err(io::Error::other(format!("{what} was refused"))),
            _ => Ok(()),
        };
        if let Some(password) = &self.url.password {
            let reply = match &self.url.user {
                Some(user) => {
                    conn.call(&[b"AUTH", user.as_bytes(), password.expose().as_bytes()])?
                }
                None => conn.call(&[b"AUTH", password.expose().as_bytes()])?,
            };
            refused("AUTH", reply)?;
        }
        if self.url.db != 0 {
            let reply = conn.call(&[b"SELECT", self.url.db.to_string().as_bytes()])?;
            refused("SELECT", reply)?;
        }
        Ok(conn)
    }

    /// Runs a Lua script (sent whole each time: scripts are small, and `EVAL` needs no
    /// `SCRIPT LOAD` bookkeeping across Redis restarts).
    pub fn eval(&self, script: &str, keys: &[&[u8]], args: &[&[u8]]) -> Result<Reply, StoreError> {
        let count = keys.len().to_string();
        let mut all: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), count.as_bytes()];
        all.extend_from_slice(keys);
        all.extend_from_slice(args);
        self.call(&all)
    }
}

/// The store of `url`; for `rediss://` with the Mozilla roots plus `ca_file`'s certificates.
pub fn connect(
    url: &StoreUrl,
    ca_file: Option<&std::path::Path>,
    lease: Duration,
) -> Result<Arc<Store>, String> {
    if !url.tls {
        return Ok(Store::new(url.clone(), None, lease));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let _ = roots.add(cert.clone());
    }
    if let Some(path) = ca_file {
        for cert in crate::tls::load_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("--store.ca-file: {e}"))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Store::new(url.clone(), Some(Arc::new(config)), lease))
}

fn unreachable(url: &StoreUrl, e: &io::Error) -> StoreError {
    StoreError(format!(
        "Redis at {}:{} unreachable: {e}",
        url.host, url.port
    ))
}

/// Key names (see the module documentation).
pub fn queue_key(tunnel: &str) -> String {
    format!("mcpt:t:{tunnel}:q")
}
pub fn alive_key(tunnel: &str) -> String {
    format!("mcpt:t:{tunnel}:alive")
}
pub const PENDING_PREFIX: &str = "mcpt:p:";
pub fn pending_key(request_id: &str) -> String {
    format!("{PENDING_PREFIX}{request_id}")
}
pub fn responses_key(node: &str) -> String {
    format!("mcpt:n:{node}:r")
}
pub fn node_alive_key(node: &str) -> String {
    format!("mcpt:n:{node}:alive")
}
pub fn delivered_key(request_id: &str) -> String {
    format!("mcpt:d:{request_id}")
}
pub fn affine_key(tunnel: &str, channel: &str) -> String {
    format!("mcpt:t:{tunnel}:aff:{channel}")
}
pub fn instance_alive_key(tunnel: &str, instance: &str) -> String {
    format!("mcpt:t:{tunnel}:i:{instance}:alive")
}
pub fn instance_queue_key(tunnel: &str, instance: &str) -> String {
    format!("mcpt:t:{tunnel}:i:{instance}:q")
}
pub fn instance_gone_key(tunnel: &str, instance: &str) -> String {
    format!("mcpt:t:{tunnel}:i:{instance}:gone")
}
pub fn instance_cancels_key(tunnel: &str, instance: &str) -> String {
    format!("mcpt:t:{tunnel}:i:{instance}:c")
}
pub fn session_key(tunnel: &str, session: &str) -> String {
    format!("mcpt:t:{tunnel}:s:{session}")
}
pub fn stream_queue_key(tunnel: &str) -> String {
    format!("mcpt:t:{tunnel}:sq")
}
pub fn streams_alive_key(tunnel: &str) -> String {
    format!("mcpt:t:{tunnel}:salive")
}
pub fn streams_key(tunnel: &str) -> String {
    format!("mcpt:t:{tunnel}:st")
}
pub fn stream_orders_key(tunnel: &str) -> String {
    format!("mcpt:t:{tunnel}:sti")
}
/// The channel and the request's id (canonical JSON) in hex: any bytes, and no two alike.
pub fn ask_key(tunnel: &str, channel: &str, id: &str) -> String {
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    format!("mcpt:t:{tunnel}:ask:{}:{}", hex(channel), hex(id))
}

/// How long a session binding outlives the last command of its session (the memory store
/// forgets an instance an hour after it was last seen, too).
pub const SESSION_TTL: Duration = Duration::from_secs(3600);

/// KEYS: the keys to keep alive for `ARGV[1]` ms (a poll's tunnel, instance and affine channels);
/// the second (the instance's) holds `ARGV[2]`, the extension features it announced. `ARGV[3]`:
/// the instance's gone key, deleted (it polls again).
pub const TOUCH: &str = r"
for i, k in ipairs(KEYS) do redis.call('SET', k, i == 2 and ARGV[2] or '1', 'PX', ARGV[1]) end
redis.call('DEL', ARGV[3])
return 1
";

/// KEYS: a command's delivered key. ARGV: the tunnel. 1 when the instance that took it was
/// announced gone (`mcpt:t:{tunnel}:i:{instance}:gone`).
pub const GONE: &str = r"
local inst = redis.call('GET', KEYS[1])
if not inst then return 0 end
return redis.call('EXISTS', 'mcpt:t:' .. ARGV[1] .. ':i:' .. inst .. ':gone')
";

/// KEYS: a command's delivered key. ARGV: the tunnel. 1 when a cancellation can reach it: it is
/// not delivered yet, or its instance announced the `cancel` feature.
pub const CANCELLABLE: &str = r"
local inst = redis.call('GET', KEYS[1])
if not inst then return 1 end
local alive = redis.call('GET', 'mcpt:t:' .. ARGV[1] .. ':i:' .. inst .. ':alive')
if alive and string.find(alive, 'cancel', 1, true) then return 1 end
return 0
";

/// KEYS: the queue it was pushed to, pending, delivered. ARGV: its queued value (or ''), the
/// `cancel` order, the tunnel, the order list's TTL ms, '1' to tell the instance even when it did
/// not announce the `cancel` feature (a stream). 1 withdrawn from the queue, 2 a `cancel`
/// order left in its instance's list (`mcpt:t:{tunnel}:i:{instance}:c`), 0 only forgotten.
pub const CANCEL: &str = r"
if ARGV[1] ~= '' and redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  return 1
end
local inst = redis.call('GET', KEYS[3])
redis.call('DEL', KEYS[2], KEYS[3])
if not inst then return 0 end
local alive = redis.call('GET', 'mcpt:t:' .. ARGV[3] .. ':i:' .. inst .. ':alive')
if not alive then return 0 end
if ARGV[5] ~= '1' and not string.find(alive, 'cancel', 1, true) then return 0 end
local list = 'mcpt:t:' .. ARGV[3] .. ':i:' .. inst .. ':c'
redis.call('RPUSH', list, ARGV[2])
redis.call('PEXPIRE', list, ARGV[4])
return 2
";

/// KEYS: a session's key. ARGV: TTL ms. The instance holding the session (its TTL renewed), or
/// nil.
pub const SESSION_OWNER: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return owner
";

/// KEYS: the queue to push to (the tunnel's, or an instance's), the alive key that must exist
/// (tunnel or instance), pending, the tunnel's queue, this node's liveness key. ARGV: capacity,
/// value, shard token, queue TTL ms, pending TTL ms, the lease ms (for the liveness key when it
/// is missing: Redis restarted since this node last renewed it). 1 queued, 0 not alive, -1 the
/// tunnel's queues are full.
pub const ENQUEUE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local queued = redis.call('LLEN', KEYS[4])
if KEYS[1] ~= KEYS[4] then queued = queued + redis.call('LLEN', KEYS[1]) end
if queued >= tonumber(ARGV[1]) then return -1 end
redis.call('RPUSH', KEYS[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[5])
redis.call('SET', KEYS[5], '1', 'PX', ARGV[6], 'NX')
return 1
";

/// KEYS: the instance's queue, the tunnel's queue (taken from in that order), the instance's
/// `cancel` orders (all taken, at most 100, first), optionally the tunnel's stream queue (taken
/// from after the instance's). ARGV: most to
/// take, byte budget, bytes already taken, a request id taken by `BLPOP` to check (or ''), the
/// taking instance, the TTL ms of a queue a command is pushed back to ([`REQUEUE_TTL`]). Pops
/// commands whose connectors still wait (their pending key exists, on a node whose liveness key
/// does: a dead node's commands are dropped, keys and all), within the budget (one at least),
/// and records who took each (`mcpt:d:`). Returns {first still pending (0/1), number of orders,
/// orders..., taken...}.
pub const TAKE: &str = r"
local function waits(rid)
  local tok = redis.call('GET', 'mcpt:p:' .. rid)
  if not tok then return false end
  local node = string.match(tok, '^([^.]*)%.')
  if node and redis.call('EXISTS', 'mcpt:n:' .. node .. ':alive') == 0 then
    redis.call('DEL', 'mcpt:p:' .. rid)
    return false
  end
  return true
end
local function deliver(rid)
  if not waits(rid) then return false end
  local ttl = redis.call('PTTL', 'mcpt:p:' .. rid)
  if ttl <= 0 then return false end
  redis.call('SET', 'mcpt:d:' .. rid, ARGV[5], 'PX', ttl)
  return true
end
local first = 1
if ARGV[4] ~= '' then first = deliver(ARGV[4]) and 1 or 0 end
local orders = redis.call('LPOP', KEYS[3], 100) or {}
local out = {first, #orders}
for _, o in ipairs(orders) do out[#out + 1] = o end
local skip = #out
local bytes = tonumber(ARGV[3])
local n = tonumber(ARGV[1])
local queues = {KEYS[1]}
if KEYS[4] then queues[2] = KEYS[4] end
queues[#queues + 1] = KEYS[2]
for _, key in ipairs(queues) do
  while #out - skip < n do
    local v = redis.call('LPOP', key)
    if not v then break end
    local rid = string.match(v, '^([^\n]*)\n')
    if rid and waits(rid) then
      if bytes > 0 and bytes + #v > tonumber(ARGV[2]) then
        redis.call('LPUSH', key, v)
        if redis.call('PTTL', key) < tonumber(ARGV[6]) then redis.call('PEXPIRE', key, ARGV[6]) end
        return out
      end
      deliver(rid)
      bytes = bytes + #v
      out[#out + 1] = v
    end
  end
end
return out
";

/// KEYS: pending, the waiting node's response list, its liveness key, delivered. ARGV: shard
/// token, message, list TTL ms, terminal ('1'/'0'). 1 forwarded, 0 not pending (or another
/// token, or the waiting node died: then the command's keys go now).
pub const FORWARD: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[4])
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[4] == '1' then redis.call('DEL', KEYS[1]) end
return 1
";

/// KEYS: a queue. ARGV: a value, TTL ms. Puts a command back at the queue's head (a list that
/// emptied meanwhile is created again, so it gets a TTL again).
pub const PUT_BACK: &str = r"
redis.call('LPUSH', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

/// TTL of a queue a command was pushed back to: longer than any command's deadline
/// (`--connector.timeout`'s largest sensible value); the next enqueue extends it anyway.
pub const REQUEUE_TTL: Duration = Duration::from_secs(3600);

/// KEYS: the queue it was pushed to, pending, delivered, the tunnel's open streams and their
/// `cancel` orders. ARGV: the queued value (or ''), the request id. Forgets a command wherever
/// it is.
pub const WITHDRAW: &str = r"
if ARGV[1] ~= '' then redis.call('LREM', KEYS[1], 1, ARGV[1]) end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('HDEL', KEYS[5], ARGV[2])
return 1
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_print_their_password() {
        let StoreSpec::Redis(url) = StoreSpec::parse("redis://u:s3cret@h:7000/2").unwrap() else {
            panic!("not redis");
        };
        assert_eq!((url.host.as_str(), url.port, url.db), ("h", 7000, 2));
        assert_eq!(url.user.as_deref(), Some("u"));
        assert_eq!(url.password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(
            format!("{url:?} {url}"),
            "redis://u:***@h:7000/2 redis://u:***@h:7000/2"
        );
        let StoreSpec::Redis(url) = StoreSpec::parse("rediss://:pw@[::1]").unwrap() else {
            panic!("not redis");
        };
        assert!(url.tls && url.host == "::1" && url.port == 6379 && url.user.is_none());
        assert_eq!(StoreSpec::parse("memory").unwrap(), StoreSpec::Memory);
        for bad in ["http://h", "redis://:pw@h:x", "redis://h/x", "redis://"] {
            let err = StoreSpec::parse(bad).unwrap_err();
            assert!(!err.contains("pw"), "{err}");
        }
    }
}
