//! The status page and its JSON API on the non-public `--metrics-listen` listener:
//! `GET /status` (server-rendered HTML, usable without JS), `GET /status.json` (the same data),
//! `GET /status/assets/{status.css,status.js}` (compiled in; nothing is fetched from anywhere),
//! `POST /status/login` and `POST /status/logout`.
//!
//! What it shows: each tunnel by name with its client instances (an 8-character prefix of the
//! instance id, first and last poll, the `X-Tunnel-MCP-Server-Info` version and channels), its
//! queue depth and capacity and the requests in flight; the last calls (the audit records of
//! [`super::audit`], kept here in a bounded ring even when `--audit-log` is off, the
//! serving instance as `instance_prefix`, cut as the instances' ids are) and the last
//! errors (the calls that failed, in a ring of their own so that traffic does not push them
//! out). Never arguments, results, keys, tokens, session ids, or tunnel ids (a connector URL
//! may be all a passthrough tunnel's caller needs): the records hold none.
//!
//! Protection: every route answers 404 unless the relay has an admin key (`relay admin-key`, its
//! digest in the tunnels file; the same key opens the tunnels admin API). Then a request needs
//! `Authorization: Bearer <key>` or the session cookie that `POST /status/login` (a form with
//! the key) sets: `HttpOnly`, `SameSite=Strict`, `Path=/`, holding a random id that maps, here,
//! to an expiry ([`SESSION_TTL`]); logout forgets it. The listener speaks plain HTTP (it is
//! meant for loopback or a private network), so the cookie is not `Secure`.
//!
//! CSRF: the pages only read; the one state change a forged form could cause is a login, which
//! needs the key, or a logout of a session the forger's request does not carry (SameSite=Strict
//! keeps the cookie off cross-site requests). So no token is needed. Every answer carries a
//! strict Content-Security-Policy (same-origin style and script only, no framing).

mod view;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::keys;
use crate::crypto::random_hex;
use crate::http_server::{Request, Response};
use crate::wire::ServerInfo;

/// Calls kept for the live view, and failed calls for "last errors".
pub const RECENT_CALLS: usize = 100;
pub const RECENT_ERRORS: usize = 50;
/// Instances remembered per tunnel (the most recently polling ones).
const INSTANCES_PER_TUNNEL: usize = 16;
/// How long a login lasts, and how many logins are held at most (the oldest goes first).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const MAX_SESSIONS: usize = 256;
/// Characters of an instance id shown.
const INSTANCE_PREFIX: usize = 8;
/// The login form's body is one short field.
pub const MAX_BODY: usize = 4096;

const COOKIE: &str = "mcpt_status";

/// Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                       connect-src 'self'; base-uri 'none'; form-action 'self'; \
                       frame-ancestors 'none'";

/// One client instance as its polls showed it.
#[derive(Clone)]
pub(super) struct InstanceSeen {
    pub(super) id: String,
    pub(super) first_poll: String,
    pub(super) last_poll: String,
    pub(super) last_poll_at: Instant,
    pub(super) info: Option<ServerInfo>,
}

#[derive(Default)]
struct Rings {
    calls: VecDeque<Value>,
    errors: VecDeque<Value>,
}

/// What the status page keeps: recent calls and errors, instances seen, logins.
pub struct StatusBoard {
    rings: Mutex<Rings>,
    /// Tunnel name → instances, newest poll last.
    instances: Mutex<HashMap<String, Vec<InstanceSeen>>>,
    /// SHA-256 of a session id → its expiry (a lookup by digest leaks nothing by its timing).
    sessions: Mutex<HashMap<String, Instant>>,
    started: Instant,
    started_at: String,
}

fn push(ring: &mut VecDeque<Value>, value: Value, cap: usize) {
    ring.push_back(value);
    while ring.len() > cap {
        ring.pop_front();
    }
}

/// Whether an audit record is a failure: an error status or an outcome that names one.
fn is_error(line: &Value) -> bool {
    let status = line["status"].as_u64().unwrap_or(0);
    let outcome = line["outcome"].as_str().unwrap_or_default();
    status >= 400 || !(outcome.ends_with("xx") || outcome.is_empty())
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusBoard {
    pub fn new() -> StatusBoard {
        StatusBoard {
            rings: Mutex::default(),
            instances: Mutex::default(),
            sessions: Mutex::default(),
            started: Instant::now(),
            started_at: super::hub::now_rfc3339(),
        }
    }

    /// Keeps an audit record (its tunnel id dropped) for the live view.
    pub fn record(&self, mut line: Value) {
        if let Some(map) = line.as_object_mut() {
            map.remove("tunnel_id");
            // The instance that served it, as the instances table names it.
            if let Some(id) = map.remove("client_instance").filter(|i| !i.is_null()) {
                let prefix: String = id
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(INSTANCE_PREFIX)
                    .collect();
                map.insert("instance_prefix".into(), json!(prefix));
            }
            // Microseconds are plenty on a page.
            if let Some(ms) = map.get("latency_ms").and_then(Value::as_f64) {
                map.insert("latency_ms".into(), json!((ms * 1000.0).round() / 1000.0));
            }
        }
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        if is_error(&line) {
            push(&mut rings.errors, line.clone(), RECENT_ERRORS);
        }
        push(&mut rings.calls, line, RECENT_CALLS);
    }

    /// An authorised poll of `tunnel` by `instance`, with its `X-Tunnel-MCP-Server-Info`.
    pub fn saw_poll(&self, tunnel: &str, instance: &str, server_info: Option<&str>) {
        let info = server_info.and_then(ServerInfo::from_header);
        let now = super::hub::now_rfc3339();
        let mut all = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        // Every poll comes here: the tunnel's name is copied only when it is first seen.
        if !all.contains_key(tunnel) {
            all.insert(tunnel.to_string(), Vec::new());
        }
        let Some(list) = all.get_mut(tunnel) else {
            return;
        };
        let mut seen = match list.iter().position(|i| i.id == instance) {
            Some(at) => list.remove(at),
            None => InstanceSeen {
                id: instance.to_string(),
                first_poll: now.clone(),
                last_poll: String::new(),
                last_poll_at: Instant::now(),
                info: None,
            },
        };
        seen.last_poll = now;
        seen.last_poll_at = Instant::now();
        if info.is_some() {
            seen.info = info;
        }
        list.push(seen);
        if list.len() > INSTANCES_PER_TUNNEL {
            list.remove(0);
        }
    }

    fn instances_of(&self, tunnel: &str) -> Vec<InstanceSeen> {
        let all = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        all.get(tunnel).cloned().unwrap_or_default()
    }

    fn rings(&self) -> (Vec<Value>, Vec<Value>) {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        (
            rings.calls.iter().rev().cloned().collect(),
            rings.errors.iter().rev().cloned().collect(),
        )
    }

    fn new_session(&self) -> String {
        let id = random_hex(32);
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, expiry| *expiry > now);
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, expiry)| **expiry)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => sessions.remove(&k),
                None => break,
            };
        }
        sessions.insert(keys::hash(&id), now + SESSION_TTL);
        id
    }

    fn session_valid(&self, id: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(&keys::hash(id))
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    fn end_session(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(&keys::hash(id));
    }
}

/// The session id in the request's `Cookie` header.
fn session_cookie(req: &Request) -> Option<&str> {
    req.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The headers every status answer carries.
fn hardened(resp: Response) -> Response {
    resp.with_header("Content-Security-Policy", CSP)
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("X-Frame-Options", "DENY")
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("Cache-Control", "no-store")
}

fn see_other(location: &str) -> Response {
    Response::new(303, Vec::new()).with_header("Location", location)
}

fn json_error(status: u16, code: &str) -> Response {
    Response::json(status, serde_json::json!({ "error": code }).to_string())
}

/// The routes of this module; `None` for a path that is not one of them.
pub(super) fn route(relay: &super::Relay, req: &Request) -> Option<Response> {
    let path = req.path();
    if path != "/status" && path != "/status.json" && !path.starts_with("/status/") {
        return None;
    }
    let board = &relay.status;
    if !relay.admin_key_configured() {
        return Some(hardened(Response::new(404, "not found\n")));
    }
    let by_key = relay.is_admin(super::bearer_token(req.header("Authorization")));
    let session = session_cookie(req).filter(|id| board.session_valid(id));
    let authorized = by_key || session.is_some();
    let resp = match (req.method.as_str(), path) {
        ("GET" | "HEAD", "/status/assets/status.css") => {
            view::asset("text/css; charset=utf-8", view::CSS)
        }
        ("GET" | "HEAD", "/status/assets/status.js") => {
            view::asset("text/javascript; charset=utf-8", view::JS)
        }
        ("POST", "/status/login") => login(relay, req),
        ("POST", "/status/logout") => {
            if let Some(id) = session_cookie(req) {
                board.end_session(id);
            }
            see_other("/status").with_header(
                "Set-Cookie",
                &format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            )
        }
        ("GET" | "HEAD", "/status") if authorized => {
            view::html(200, &view::page(&view::snapshot(relay), session.is_some()))
        }
        ("GET" | "HEAD", "/status") => view::html(401, &view::login_page(None))
            .with_header("WWW-Authenticate", "Bearer realm=\"mcp-tunnel status\""),
        ("GET" | "HEAD", "/status.json") if authorized => {
            Response::json(200, view::snapshot(relay).to_string())
        }
        ("GET" | "HEAD", "/status.json") => json_error(401, "admin_key_required")
            .with_header("WWW-Authenticate", "Bearer realm=\"mcp-tunnel status\""),
        (_, "/status" | "/status.json") => {
            Response::new(405, "method not allowed\n").with_header("Allow", "GET, HEAD")
        }
        _ => Response::new(404, "not found\n"),
    };
    Some(hardened(resp))
}

/// `POST /status/login` with the form field `key`: a session cookie and back to the page, or
/// the form again with 401.
fn login(relay: &super::Relay, req: &Request) -> Response {
    let board = &relay.status;
    let key = req.form_param("key").unwrap_or_default();
    if key.is_empty() || !relay.is_admin(Some(&key)) {
        log::warn!("status page: login refused from {}", req.peer);
        return view::html(401, &view::login_page(Some("That is not the admin key.")));
    }
    let id = board.new_session();
    see_other("/status").with_header(
        "Set-Cookie",
        &format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_TTL.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_calls_go_to_both_rings_and_tunnel_ids_to_neither() {
        let board = StatusBoard::new();
        board.record(
            json!({"status": 200, "outcome": "2xx", "tunnel_id": "tunnel_x",
            "latency_ms": 1.234_567_890_123}),
        );
        board.record(json!({"status": 503, "outcome": "tunnel_queue_full"}));
        board.record(json!({"status": 200, "outcome": "stream_broken"}));
        let (calls, errors) = board.rings();
        assert_eq!(calls.len(), 3);
        assert_eq!(errors.len(), 2);
        assert!(calls.iter().all(|c| c.get("tunnel_id").is_none()));
        assert_eq!(calls[2]["latency_ms"].to_string(), "1.235");
        for n in 0..2 * RECENT_CALLS {
            board.record(json!({"status": 200, "outcome": "2xx", "n": n}));
        }
        let (calls, errors) = board.rings();
        assert_eq!(calls.len(), RECENT_CALLS);
        assert_eq!(calls[0]["n"], 2 * RECENT_CALLS - 1, "newest first");
        assert_eq!(errors.len(), 2, "traffic does not push errors out");
    }

    #[test]
    fn instances_keep_their_first_poll_and_are_bounded() {
        let board = StatusBoard::new();
        board.saw_poll(
            "t",
            "a",
            Some(r#"{"version":1,"channels":[{"name":"main"}]}"#),
        );
        let first = board.instances_of("t")[0].first_poll.clone();
        board.saw_poll("t", "a", None);
        let seen = board.instances_of("t");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].first_poll, first);
        assert_eq!(seen[0].info.as_ref().map(|i| i.version), Some(1));
        for n in 0..2 * INSTANCES_PER_TUNNEL {
            board.saw_poll("t", &format!("i{n}"), None);
        }
        assert_eq!(board.instances_of("t").len(), INSTANCES_PER_TUNNEL);
    }

    #[test]
    fn sessions_are_random_known_and_ended() {
        let board = StatusBoard::new();
        let a = board.new_session();
        let b = board.new_session();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(board.session_valid(&a));
        assert!(!board.session_valid("nope"));
        board.end_session(&a);
        assert!(!board.session_valid(&a));
        assert!(board.session_valid(&b));
    }
}
