//! `mcp-tunnel relay`: a self-hosted control plane plus the public MCP endpoint.
//!
//! One HTTP server (plain, or TLS with `--tls-cert`/`--tls-key`) serves both sides:
//!
//! | path | who calls it | module |
//! |---|---|---|
//! | `GET /v1/tunnels/{id}`, `GET …/poll`, `POST …/response` | tunnel clients (runtime key) | [`control`] |
//! | `GET`/`POST /v1/tunnels`, `GET`/`POST`/`DELETE /v1/tunnels/{id}` | operators (admin key) | [`admin`] |
//! | `POST`/`DELETE /v1/mcp/{id}[/{channel}][/]` | MCP hosts (connector key) | [`connector`] |
//! | `OPTIONS /v1/mcp/…` | browsers' CORS preflights (no key) | [`cors`] |
//! | `GET /.well-known/oauth-protected-resource/v1/mcp/{id}[/{channel}]` | MCP hosts (no key) | [`oauth`] |
//! | `GET /healthz` | load balancers | here |
//! | `GET /metrics`, `/healthz`, `/readyz` on `--metrics-listen` only | Prometheus, probes | [`metrics`], [`service`] |
//! | `GET /status`, `/status.json`, `POST /status/login` on `--metrics-listen` only | operators (admin key) | [`status`] |
//!
//! Each connector request is counted ([`metrics`]) and may be written to the audit log
//! ([`audit`]) by [`observe`]; SIGTERM drains ([`service`]).
//!
//! On `/v1/mcp/…` every error the relay makes is a JSON-RPC error object ([`mcp_error`]); the
//! control plane keeps the contract's `{"error":{"message","type","code"}}` ([`api_error`]).
//!
//! Tunnels and their key hashes live in a small TOML file ([`tunnels`]), managed with
//! `mcp-tunnel relay tunnel add|list|remove|rotate-key` or the admin API and re-read on SIGHUP, when it changes,
//! and when a request names a tunnel the relay does not know ([`reload`]), without dropping
//! connections. Queues and pending requests live in memory ([`hub`]); a relay
//! restart fails the requests in flight, which their callers see as errors, never as hangs.

pub mod admin;
pub mod audit;
pub mod connector;
pub mod control;
pub mod cors;
mod dir_watch;
pub mod hub;
pub mod keys;
pub mod mcp_error;
pub mod metrics;
pub mod oauth;
mod observe;
pub mod options;
pub mod reload;
mod service;
pub mod status;
pub mod store;
pub mod stream;
pub mod tunnels;

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use crate::http_server::{Limits, Request, RequestHead, Response, Server};
use crate::wire;
use connector::ConnectorLimits;
use cors::Preflight;
use hub::{HubLimits, Shared, TunnelHub};
use mcp_error::McpError;
use options::{LISTEN, MAX_REQUEST_BODY, TUNNELS_FILE};
pub use options::{RELAY_OPTIONS, RelayConfig, help, parse_config};
use reload::{ReloadGate, report_reload, watch_tunnels_file};
use store::{Store, StoreSpec};
use tunnels::{ConnectorAuth, Registry, TunnelRecord};

/// Body limit of every route that carries no payload (metadata, poll, DELETE, health): nothing
/// legitimate sends more, and admission refuses bigger bodies before reading them.
const SMALL_BODY: usize = 64 * 1024;

/// An error in the contract's shape: `{"error":{"message","type","code"}}`.
pub fn api_error(status: u16, kind: &str, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "message": message, "type": kind, "code": code } });
    Response::json(status, body.to_string())
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(req: &Request) -> Option<&str> {
    bearer_token(req.header("Authorization"))
}

/// The token of an `Authorization` header value of the Bearer scheme.
fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// A tunnel's record as of the registry it was looked up in: that registry (replaced whole on a
/// reload, never changed in place) shared, not the record copied for every request.
struct Record {
    registry: Arc<Registry>,
    index: usize,
}

impl std::ops::Deref for Record {
    type Target = TunnelRecord;
    fn deref(&self) -> &TunnelRecord {
        &self.registry.tunnels[self.index]
    }
}

/// The relay's shared state: the tunnel registry and one hub per tunnel.
pub struct Relay {
    cfg: RelayConfig,
    registry: RwLock<Arc<Registry>>,
    hubs: Mutex<HashMap<String, Arc<TunnelHub>>>,
    reload_gate: Mutex<ReloadGate>,
    /// `--store redis://…`: the queues shared with other relay nodes; `None` for memory.
    store: Option<Arc<Store>>,
    metrics: Arc<metrics::RelayMetrics>,
    /// `--audit-log`, once opened.
    audit: OnceLock<Arc<audit::AuditLog>>,
    /// SIGTERM arrived: finishing held requests, taking no new ones.
    draining: AtomicBool,
    /// The status page's recent calls, instances seen and logins.
    status: Arc<status::StatusBoard>,
}

impl Relay {
    pub fn new(cfg: RelayConfig, registry: Registry) -> Arc<Relay> {
        Relay::with_store(cfg, registry, None)
    }

    /// A relay whose hubs keep their queues in `store` when given.
    pub fn with_store(
        cfg: RelayConfig,
        registry: Registry,
        store: Option<Arc<Store>>,
    ) -> Arc<Relay> {
        Arc::new(Relay {
            status: Arc::new(status::StatusBoard::new()),
            cfg,
            registry: RwLock::new(Arc::new(registry)),
            hubs: Mutex::new(HashMap::new()),
            reload_gate: Mutex::new(ReloadGate::default()),
            store,
            metrics: Arc::default(),
            audit: OnceLock::new(),
            draining: AtomicBool::new(false),
        })
    }

    /// `GET /healthz`: alive; with a shared store, 503 while Redis does not answer.
    fn healthz(&self) -> Response {
        if self.draining() {
            return Response::new(503, "draining\n").with_header("Retry-After", "1");
        }
        match &self.store {
            None => Response::new(200, "ok\n"),
            Some(store) => match store.ping() {
                Ok(()) => Response::new(200, "ok\nstore: redis ok\n"),
                Err(e) => {
                    log::warn!("/healthz: {e}");
                    Response::new(503, "store: redis unavailable\n").with_header("Retry-After", "1")
                }
            },
        }
    }

    /// Whether a tunnel client has polled `tunnel_id` recently.
    pub fn client_connected(&self, tunnel_id: &str) -> bool {
        self.hub(tunnel_id).connected()
    }

    /// The tunnel `id`; an unknown id first re-reads the tunnels file (see [`reload`]).
    fn record(&self, id: &str) -> Option<Record> {
        self.known(id)
            .or_else(|| self.reload_on_miss(id).then(|| self.known(id)).flatten())
    }

    fn known(&self, id: &str) -> Option<Record> {
        let registry = Arc::clone(&self.registry.read().unwrap_or_else(|e| e.into_inner()));
        let index = registry.tunnels.iter().position(|t| t.id == id)?;
        Some(Record { registry, index })
    }

    fn hub(&self, id: &str) -> Arc<TunnelHub> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(hubs.entry(id.to_string()).or_insert_with(|| {
            let limits = HubLimits {
                queue_capacity: self.cfg.queue_capacity,
                client_timeout: self.cfg.client_timeout,
            };
            let shared = self.store.as_ref().map(|s| Shared::new(Arc::clone(s), id));
            TunnelHub::new(limits, shared)
        }))
    }

    /// Puts a freshly read registry in place: hubs of tunnels that still exist keep their
    /// queues; a removed tunnel's waiting requests end by their deadline.
    fn install(&self, registry: Registry) -> usize {
        let count = registry.tunnels.len();
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.retain(|id, _| registry.get(id).is_some());
        drop(hubs);
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(registry);
        count
    }

    /// With `--tls-client-ca`, refuses requests without a verified client certificate on the
    /// endpoints that need one (`control_plane`: a tunnel-client endpoint).
    fn require_client_cert(&self, verified: bool, control_plane: bool) -> Result<(), Response> {
        let required = self.cfg.client_ca.is_some() && (control_plane || self.cfg.client_auth_all);
        if required && !verified {
            return Err(api_error(
                403,
                "invalid_request_error",
                "client_certificate_required",
                "this endpoint requires a TLS client certificate signed by the relay's client CA",
            ));
        }
        Ok(())
    }

    /// Admission, from the head alone: the route's client certificate, tunnel and key are checked
    /// before any body byte is read, and the answer is the route's body limit. The handlers check
    /// again (the tunnels file may be reloaded in between).
    pub fn admit(&self, head: &RequestHead<'_>) -> Result<usize, Response> {
        let segments: Vec<&str> = head.path().trim_start_matches('/').split('/').collect();
        let key = bearer_token(head.header("Authorization"));
        match segments.as_slice() {
            ["healthz"] => Ok(SMALL_BODY),
            ["v1", "tunnels"] | ["v1", "tunnels", _] if self.is_admin(key) => Ok(SMALL_BODY),
            ["v1", "tunnels"] => Err(admin::admin_key_refused()),
            ["v1", "tunnels", id, rest @ ..] => {
                self.require_client_cert(head.client_cert_verified, true)?;
                let record = self.record(id).ok_or_else(unknown_tunnel)?;
                if !key.is_some_and(|k| record.runtime_key_matches(k)) {
                    return Err(runtime_key_refused());
                }
                Ok(match (head.method, rest) {
                    ("POST", ["response"]) => MAX_REQUEST_BODY,
                    _ => SMALL_BODY,
                })
            }
            ["v1", "mcp", rest @ ..] => self
                .admit_mcp(head, rest.first().copied().unwrap_or_default())
                .map_err(|refused| self.cfg.cors.decorate(refused, head.header("Origin"))),
            [w, k, "v1", "mcp", ..] if [*w, *k] == oauth::WELL_KNOWN => self
                .admit_oauth(head)
                .map_err(|refused| self.cfg.cors.decorate(refused, head.header("Origin"))),
            _ => Err(not_found()),
        }
    }

    /// Admission of `/v1/mcp/{id}…`. `OPTIONS` is admitted unchecked: its answer (a CORS
    /// preflight, or `Allow`) needs no key, and browsers send none with it.
    fn admit_mcp(&self, head: &RequestHead<'_>, id: &str) -> Result<usize, Response> {
        if head.method == "OPTIONS" {
            return Ok(SMALL_BODY);
        }
        self.require_client_cert(head.client_cert_verified, false)
            .map_err(|_| mcp_error::CLIENT_CERTIFICATE_REQUIRED.response(None))?;
        let record = self
            .record(id)
            .ok_or_else(|| mcp_error::TUNNEL_NOT_FOUND.response(None))?;
        let authorization = head.header("Authorization");
        if record.connector_auth == ConnectorAuth::RelayKey
            && !bearer_token(authorization).is_some_and(|k| record.connector_key_matches(k))
        {
            return Err(mcp_error::unauthorized(
                bearer_token(authorization).is_some(),
            ));
        }
        if head.method != "POST" {
            return Ok(SMALL_BODY);
        }
        // Checked here rather than left to the server, whose 413 is not a JSON-RPC error.
        let declared = head
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.cfg.connector_max_body as u64) {
            return Err(mcp_error::REQUEST_BODY_TOO_LARGE.response(None));
        }
        Ok(self.cfg.connector_max_body)
    }

    /// Routes one request.
    pub fn handle(&self, req: Request) -> Response {
        self.metrics.bytes_in(req.body.len());
        let resp = self.route(req);
        if let crate::http_server::Body::Full(body) = &resp.body {
            self.metrics.bytes_out(body.len());
        }
        resp
    }

    fn route(&self, req: Request) -> Response {
        let path = req.path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["healthz"] => self.healthz(),
            ["v1", "tunnels"] => self.admin_collection(&req),
            ["v1", "tunnels", id] if self.is_admin(bearer(&req)) => self.admin_tunnel(id, &req),
            ["v1", "tunnels", id, rest @ ..] => {
                if let Err(denied) = self.require_client_cert(req.client_cert_verified, true) {
                    return denied;
                }
                let Some(record) = self.record(id) else {
                    return unknown_tunnel();
                };
                let _held = match rest {
                    ["poll"] => None,
                    _ => Some(self.metrics.enter(metrics::Kind::ControlPlane, None)),
                };
                let resp = match (req.method.as_str(), rest) {
                    ("GET", []) => control::metadata(&record, &req),
                    ("GET", ["poll"]) => return self.observed_poll(&record, &req),
                    ("POST", ["response"]) => control::respond(&record, &self.hub(id), &req),
                    ("POST" | "DELETE", []) => admin::admin_key_required(),
                    _ => not_found(),
                };
                if matches!(resp.status, 401 | 403) {
                    self.metrics.auth_failure("control_plane");
                }
                resp
            }
            ["v1", "mcp", rest @ ..] => {
                if req.method == "OPTIONS" {
                    return self.options(&req);
                }
                let origin = req.header("Origin").map(str::to_string);
                let resp = self.observed_mcp(rest, req);
                self.cfg.cors.decorate(resp, origin.as_deref())
            }
            [w, k, "v1", "mcp", rest @ ..] if [*w, *k] == oauth::WELL_KNOWN => {
                self.observed_oauth(rest, req)
            }
            _ => not_found(),
        }
    }
}

impl Relay {
    /// `/v1/mcp/{id}[/{channel}][/]` after admission: the tunnel, the channel, then the connector.
    /// `served_by` learns which client instance served the request (for its audit line).
    fn handle_mcp(
        &self,
        segments: &[&str],
        req: Request,
        served_by: &Arc<OnceLock<String>>,
    ) -> Result<Response, McpError> {
        let (id, mut rest) = segments.split_first().ok_or(mcp_error::NOT_FOUND)?;
        // A trailing slash names the same endpoint.
        if let Some((&"", before)) = rest.split_last() {
            rest = before;
        }
        if self
            .require_client_cert(req.client_cert_verified, false)
            .is_err()
        {
            return Err(mcp_error::CLIENT_CERTIFICATE_REQUIRED);
        }
        let record = self.record(id).ok_or(mcp_error::TUNNEL_NOT_FOUND)?;
        let channel = match rest {
            [] => wire::DEFAULT_CHANNEL.to_string(),
            [channel] => {
                wire::canonical_channel(Some(channel)).ok_or(mcp_error::INVALID_CHANNEL_FORMAT)?
            }
            _ => return Err(mcp_error::NOT_FOUND),
        };
        let limits = ConnectorLimits {
            wait: self.cfg.connector_timeout,
            max_body: self.cfg.connector_max_body,
            cors: self.cfg.cors.enabled(),
            streams: self.cfg.streams,
            served_by: Arc::clone(served_by),
        };
        // A passthrough tunnel's OAuth challenges point at the relay's metadata URL.
        let prmd_url = self
            .cfg
            .public_url
            .as_deref()
            .filter(|_| record.connector_auth == ConnectorAuth::Passthrough)
            .map(|public| {
                oauth::prmd_url(
                    public,
                    &oauth::endpoint_path(&record.id, rest.first().copied()),
                )
            });
        let resp = connector::handle(&record, &self.hub(id), &channel, req, &limits);
        Ok(match prmd_url {
            Some(url) => oauth::rewrite_challenges(resp, &url),
            None => resp,
        })
    }

    /// `OPTIONS` on the MCP endpoint, before any key is checked: a CORS preflight is answered
    /// for listed origins and refused (403, no CORS headers) for others; a plain `OPTIONS`
    /// learns the methods.
    fn options(&self, req: &Request) -> Response {
        let header = |name: &str| req.header(name).map(str::to_string);
        match self.cfg.cors.preflight(&header) {
            Preflight::Allowed(resp) => resp,
            Preflight::Refused => mcp_error::CORS_ORIGIN_NOT_ALLOWED.response(None),
            Preflight::NotPreflight => {
                Response::new(204, Vec::new()).with_header("Allow", "POST, DELETE, OPTIONS")
            }
        }
    }
}

/// As `control`'s refusal of a missing or wrong runtime key (same status, code and challenge).
fn runtime_key_refused() -> Response {
    api_error(
        401,
        "invalid_request_error",
        "tunnel_use_forbidden",
        "missing or invalid runtime key for this tunnel",
    )
    .with_header("WWW-Authenticate", "Bearer realm=\"mcp-tunnel\"")
}

/// The routes tunnel clients use: the ones the reserved connection slots serve.
fn is_control_plane(path: &str) -> bool {
    path.starts_with("/v1/tunnels/")
}

/// The public MCP endpoint, whose errors are JSON-RPC error objects ([`mcp_error`]).
fn is_mcp_endpoint(path: &str) -> bool {
    path == "/v1/mcp" || path.starts_with("/v1/mcp/")
}

pub(crate) fn unknown_tunnel() -> Response {
    api_error(
        404,
        "invalid_request_error",
        "tunnel_not_found",
        "no such tunnel on this relay",
    )
}

fn not_found() -> Response {
    api_error(
        404,
        "invalid_request_error",
        "not_found",
        "no such endpoint",
    )
}

/// Starts serving `relay` on `listener`.
pub fn serve(relay: &Arc<Relay>, listener: TcpListener) -> Result<Server, String> {
    let tls = match &relay.cfg.tls {
        Some((cert, key)) => Some(crate::tls::server_config(
            cert,
            key,
            relay.cfg.client_ca.as_deref(),
        )?),
        None => None,
    };
    let cfg = &relay.cfg;
    let limits = Limits {
        max_connections: cfg.max_connections,
        max_connections_per_peer: cfg.max_connections_per_peer,
        reserved_connections: cfg.max_connections * cfg.control_plane_reserve_percent / 100,
        reserved_route: is_control_plane,
        error_shape: |path, status| {
            is_mcp_endpoint(path).then(|| mcp_error::server_refusal(status))
        },
        header_timeout: cfg.header_timeout,
        max_body_bytes: MAX_REQUEST_BODY,
        ..Limits::default()
    };
    let admitting = Arc::clone(relay);
    let handling = Arc::clone(relay);
    Server::start_with_admission(
        listener,
        tls,
        limits,
        move |head: &RequestHead<'_>| admitting.admit_observed(head),
        move |req| handling.handle(req),
    )
    .map_err(|e| format!("cannot start the server: {e}"))
}

/// `mcp-tunnel relay …`: the server, or `relay tunnel …` management. Returns the exit code.
pub fn main(mut args: Vec<OsString>) -> i32 {
    if args.first().and_then(|a| a.to_str()) == Some("tunnel") {
        args.remove(0);
        return tunnels::tunnel_command(args);
    }
    if args.first().and_then(|a| a.to_str()) == Some("admin-key") {
        args.remove(0);
        return tunnels::admin_key_command(args);
    }
    let env = |name: &str| std::env::var(name).ok();
    let cfg = match parse_config(args, &env) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            print!("{}", help());
            return 0;
        }
        Err(e) => {
            eprintln!("mcp-tunnel relay: configuration error: {e}");
            return 2;
        }
    };
    crate::logging::init(&cfg.log);
    service::fit_file_limit(cfg.max_connections);
    let _pid_file = match cfg.pid_file.as_deref().map(service::take_pid_file) {
        None => None,
        Some(Ok(Some(held))) => Some(held),
        Some(Ok(None)) => return 0,
        Some(Err(e)) => {
            eprintln!("mcp-tunnel relay: configuration error: --pid-file: {e}");
            return 2;
        }
    };
    let audit = match cfg.audit_log.as_deref().map(audit::AuditLog::open) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            eprintln!("mcp-tunnel relay: configuration error: --audit-log: {e}");
            return 2;
        }
    };
    let registry = match tunnels::load(&cfg.tunnels_file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mcp-tunnel relay: configuration error: {TUNNELS_FILE}: {e}");
            return 2;
        }
    };
    if registry.tunnels.is_empty() {
        log::warn!(
            "no tunnels in {}; add one with `mcp-tunnel relay tunnel add --name NAME`",
            cfg.tunnels_file.display()
        );
    }
    let listener = match TcpListener::bind(&cfg.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "mcp-tunnel relay: configuration error: {LISTEN}: cannot listen on {}: {e}",
                cfg.listen
            );
            return 2;
        }
    };
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    if let Some(public) = &cfg.public_url {
        log::info!(
            "public URL {public}: OAuth metadata of passthrough tunnels at {}",
            oauth::prmd_url(public, "/v1/mcp/{tunnel_id}")
        );
    }
    let store = match &cfg.store {
        StoreSpec::Memory => None,
        StoreSpec::Redis(url) => {
            match store::connect(url, cfg.store_ca.as_deref(), cfg.store_lease) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("mcp-tunnel relay: configuration error: --store: {e}");
                    return 2;
                }
            }
        }
    };
    let relay = Relay::with_store(cfg, registry, store);
    if let Some(audit) = audit {
        relay.set_audit(audit);
    }
    if let Some(store) = &relay.store {
        log::info!("store {} (node {})", store.describe(), store.node());
        if let Err(e) = store.ping() {
            log::warn!("{e}; connectors get 503 tunnel_transport_unavailable until it answers");
        }
        take_forwarded_responses(Arc::clone(&relay), Arc::clone(store));
    }
    let server = match serve(&relay, listener) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-tunnel relay: {e}");
            return 2;
        }
    };
    log::info!(
        "relay listening on {scheme}://{} with {} tunnel(s)",
        server.local_addr(),
        relay.registry.read().map(|r| r.tunnels.len()).unwrap_or(0)
    );
    let _metrics = match relay.cfg.metrics_listen.as_deref() {
        None => None,
        Some(addr) => match service::metrics_server(&relay, addr) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("mcp-tunnel relay: configuration error: --metrics-listen: {e}");
                return 2;
            }
        },
    };
    watch_tunnels_file(Arc::clone(&relay));
    service::ready(&relay);
    let code = wait_for_signals(&relay);
    server.shutdown();
    log::info!("relay stopped");
    code
}

/// Hands responses posted on other nodes to the connectors waiting here, on one thread.
fn take_forwarded_responses(relay: Arc<Relay>, store: Arc<Store>) {
    let spawned = std::thread::Builder::new()
        .name("store-responses".into())
        .spawn(move || {
            loop {
                // About once a second: instances gone here are announced to the other nodes, and
                // the leases of the streams held here renewed.
                let hubs = relay
                    .hubs
                    .lock()
                    .map(|h| h.values().cloned().collect::<Vec<_>>());
                hubs.unwrap_or_default().iter().for_each(|h| h.upkeep());
                match hub::take_forwarded(&store, Duration::from_secs(1)) {
                    Ok(messages) => {
                        for m in messages {
                            let _ = relay.hub(&m.tunnel).deliver(&m.token, m.payload);
                        }
                    }
                    // Redis is down: /healthz says so; try again shortly.
                    Err(_) => std::thread::sleep(Duration::from_secs(1)),
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the store's response thread: {e}");
    }
}

/// Blocks until SIGTERM/SIGINT; SIGHUP reloads the tunnels file.
fn wait_for_signals(relay: &Relay) -> i32 {
    let signals = match crate::signals::SignalStream::stop_and_hangup() {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    for signal in signals {
        match signal {
            crate::signals::Signal::Hangup => {
                crate::logging::reopen();
                relay.reopen_audit();
                report_reload(relay.reload(), "SIGHUP");
            }
            crate::signals::Signal::Stop(number) => {
                log::info!("signal {number} received; stopping");
                service::drain(relay, relay.cfg.drain_timeout);
                return 0;
            }
        }
    }
    0
}
