//! `mcp-tunnel relay`: a self-hosted control plane plus the public MCP endpoint.
//!
//! One HTTP server (plain, or TLS with `--tls-cert`/`--tls-key`) serves both sides:
//!
//! | path | who calls it | module |
//! |---|---|---|
//! | `GET /v1/tunnels/{id}`, `GET …/poll`, `POST …/response` | tunnel clients (runtime key) | [`control`] |
//! | `POST`/`DELETE /v1/mcp/{id}[/{channel}]` | MCP hosts (connector key) | [`connector`] |
//! | `GET /healthz` | load balancers | here |
//!
//! Tunnels and their key hashes live in a small TOML file ([`tunnels`]), managed with
//! `mcp-tunnel relay tunnel add|list|remove|rotate-key` and re-read on SIGHUP or when it changes,
//! without dropping connections. Queues and pending requests live in memory ([`hub`]); a relay
//! restart fails the requests in flight, which their callers see as errors, never as hangs.

pub mod connector;
pub mod control;
pub mod hub;
pub mod keys;
pub mod tunnels;

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, SystemTime};

use crate::config::{self, ConfigError, Opt, Sources};
use crate::http_server::{Limits, Request, RequestHead, Response, Server};
use crate::wire;
use connector::ConnectorLimits;
use hub::{HubLimits, TunnelHub};
use tunnels::{ConnectorAuth, Registry, TunnelRecord};

/// Largest request the server reads: a response POST may carry a large tool result (the client
/// reads MCP answers up to 32 MiB). Connector requests have their own, smaller limit.
const MAX_REQUEST_BODY: usize = 33 * 1024 * 1024;
/// Body limit of every route that carries no payload (metadata, poll, DELETE, health): nothing
/// legitimate sends more, and admission refuses bigger bodies before reading them.
const SMALL_BODY: usize = 64 * 1024;
/// How often the tunnels file's modification time is checked for a reload.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

const LISTEN: &str = "--listen";
const TUNNELS_FILE: &str = "--tunnels-file";
const TLS_CERT: &str = "--tls-cert";
const TLS_KEY: &str = "--tls-key";
const TLS_CLIENT_CA: &str = "--tls-client-ca";
const TLS_CLIENT_AUTH: &str = "--tls-client-auth";
const POLL_MAX_WAIT: &str = "--poll-max-wait";
const CONNECTOR_TIMEOUT: &str = "--connector.timeout";
const CONNECTOR_MAX_BODY: &str = "--connector.max-body";
const CLIENT_TIMEOUT: &str = "--client-timeout";
const QUEUE_CAPACITY: &str = "--queue-capacity";
const MAX_CONNECTIONS: &str = "--max-connections";
const MAX_CONNECTIONS_PER_PEER: &str = "--max-connections-per-peer";
const CONTROL_PLANE_RESERVE: &str = "--control-plane-reserve-percent";
const HEADER_TIMEOUT: &str = "--header-timeout";
const LOG_LEVEL: &str = "--log.level";
const LOG_FORMAT: &str = "--log.format";
const LOG_FILE: &str = "--log.file";

/// Every option of `relay`, in `--help` order.
pub const RELAY_OPTIONS: &[Opt] = &[
    Opt {
        flag: LISTEN,
        env: &["RELAY_LISTEN"],
        // Not 8080: that is the client's health port, and both may share a host.
        default: Some("127.0.0.1:8000"),
        help: "Address to listen on for both tunnel clients and MCP hosts.",
        ..Opt::BASE
    },
    Opt {
        flag: TUNNELS_FILE,
        env: &["RELAY_TUNNELS_FILE"],
        default: Some(tunnels::DEFAULT_TUNNELS_FILE),
        help: "Tunnels and key hashes (TOML). Re-read on SIGHUP and when it changes.",
        ..Opt::BASE
    },
    Opt {
        flag: TLS_CERT,
        env: &["RELAY_TLS_CERT"],
        default: Some(""),
        help: "PEM certificate chain; with --tls-key the relay serves HTTPS.",
        ..Opt::BASE
    },
    Opt {
        flag: TLS_KEY,
        env: &["RELAY_TLS_KEY"],
        default: Some(""),
        help: "PEM private key for --tls-cert.",
        ..Opt::BASE
    },
    Opt {
        flag: TLS_CLIENT_CA,
        env: &["RELAY_TLS_CLIENT_CA"],
        default: Some(""),
        help: "PEM CA bundle: require client certificates it signed (mutual TLS), so a stolen \
               runtime key alone is not enough. Needs --tls-cert.",
        ..Opt::BASE
    },
    Opt {
        flag: TLS_CLIENT_AUTH,
        env: &["RELAY_TLS_CLIENT_AUTH"],
        default: Some("control-plane"),
        help: "Where --tls-client-ca is required: control-plane (tunnel clients) or all (MCP \
               hosts too).",
        ..Opt::BASE
    },
    Opt {
        flag: POLL_MAX_WAIT,
        env: &["RELAY_POLL_MAX_WAIT"],
        default: Some("25s"),
        help: "Longest a long-poll is held; under 60 s so proxies that cut idle requests survive.",
        ..Opt::BASE
    },
    Opt {
        flag: CONNECTOR_TIMEOUT,
        env: &["RELAY_CONNECTOR_TIMEOUT"],
        default: Some("120s"),
        help: "How long an MCP host's request may wait for its answer before 504.",
        ..Opt::BASE
    },
    Opt {
        flag: CONNECTOR_MAX_BODY,
        env: &["RELAY_CONNECTOR_MAX_BODY"],
        default: Some("4194304"),
        help: "Largest MCP request body in bytes; larger ones get 413.",
        ..Opt::BASE
    },
    Opt {
        flag: CLIENT_TIMEOUT,
        env: &["RELAY_CLIENT_TIMEOUT"],
        default: Some("60s"),
        help: "A tunnel client counts as connected this long after its last poll or response.",
        ..Opt::BASE
    },
    Opt {
        flag: QUEUE_CAPACITY,
        env: &["RELAY_QUEUE_CAPACITY"],
        default: Some("256"),
        help: "Commands waiting per tunnel; beyond it MCP hosts get 503 + Retry-After.",
        ..Opt::BASE
    },
    Opt {
        flag: MAX_CONNECTIONS,
        env: &["RELAY_MAX_CONNECTIONS"],
        default: Some("2048"),
        help: "Open connections at most (one thread each, idle long-polls included).",
        ..Opt::BASE
    },
    Opt {
        flag: MAX_CONNECTIONS_PER_PEER,
        env: &["RELAY_MAX_CONNECTIONS_PER_PEER"],
        default: Some("64"),
        help: "Open connections at most from one address (IPv4, or IPv6 /64), so one host cannot \
               take every slot; 0 = no such cap (behind a reverse proxy, whose address all share).",
        ..Opt::BASE
    },
    Opt {
        flag: CONTROL_PLANE_RESERVE,
        env: &["RELAY_CONTROL_PLANE_RESERVE_PERCENT"],
        default: Some("10"),
        help: "Percent of --max-connections kept for tunnel clients (/v1/tunnels/...), so they \
               can poll and answer while MCP-side connections fill the rest (0 to 50).",
        ..Opt::BASE
    },
    Opt {
        flag: HEADER_TIMEOUT,
        env: &["RELAY_HEADER_TIMEOUT"],
        default: Some("5s"),
        help: "A new connection must finish its TLS handshake and send its request head within \
               this; so must every later request head. Silent connections are closed after it.",
        ..Opt::BASE
    },
    Opt {
        flag: LOG_LEVEL,
        env: &["LOG_LEVEL"],
        default: Some("info"),
        help: "error, warn, info, debug or trace. Keys are never logged at any level.",
        ..Opt::BASE
    },
    Opt {
        flag: LOG_FORMAT,
        env: &["LOG_FORMAT"],
        default: Some("text"),
        help: "text, or json (one object per line).",
        ..Opt::BASE
    },
    Opt {
        flag: LOG_FILE,
        env: &["LOG_FILE"],
        default: Some(""),
        help: "Append logs to this file (mode 0600, reopened on SIGHUP) instead of stderr.",
        ..Opt::BASE
    },
];

/// Validated relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub listen: String,
    pub tunnels_file: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Client certificates must chain to this CA bundle (on the endpoints `client_auth_all` says).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: the MCP endpoint requires a client certificate too, not only the
    /// control plane.
    pub client_auth_all: bool,
    pub poll_max_wait: Duration,
    pub connector_timeout: Duration,
    pub connector_max_body: usize,
    pub client_timeout: Duration,
    pub queue_capacity: usize,
    pub max_connections: usize,
    /// Connections from one peer address; `usize::MAX` for no such cap.
    pub max_connections_per_peer: usize,
    /// Percent of `max_connections` reserved for control-plane requests.
    pub control_plane_reserve_percent: usize,
    pub header_timeout: Duration,
    pub log: config::LogConfig,
}

/// Parses `relay`'s options; `Ok(None)` for `--help`.
pub fn parse_config(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<RelayConfig>, ConfigError> {
    let Some(src) = Sources::parse(RELAY_OPTIONS, args, env, "relay")? else {
        return Ok(None);
    };
    let cert = src.get(TLS_CERT);
    let key = src.get(TLS_KEY);
    let tls = match (cert.value.is_empty(), key.value.is_empty()) {
        (true, true) => None,
        (false, false) => Some((PathBuf::from(cert.value), PathBuf::from(key.value))),
        (false, true) => return Err(config::err(TLS_KEY, "is required with --tls-cert")),
        (true, false) => return Err(config::err(TLS_CERT, "is required with --tls-key")),
    };
    let client_ca = src.get(TLS_CLIENT_CA);
    let client_ca = if client_ca.value.is_empty() {
        None
    } else if tls.is_none() {
        return Err(config::err(
            &client_ca.source,
            "client certificates need TLS: set --tls-cert and --tls-key too",
        ));
    } else {
        Some(PathBuf::from(client_ca.value))
    };
    let auth = src.get(TLS_CLIENT_AUTH);
    let client_auth_all = match auth.value.as_str() {
        "control-plane" => false,
        "all" => true,
        _ => return Err(config::err(&auth.source, "must be control-plane or all")),
    };
    Ok(Some(RelayConfig {
        listen: src.get(LISTEN).value,
        tunnels_file: PathBuf::from(src.get(TUNNELS_FILE).value),
        tls,
        client_ca,
        client_auth_all,
        poll_max_wait: config::positive_duration(&src.get(POLL_MAX_WAIT))?,
        connector_timeout: config::positive_duration(&src.get(CONNECTOR_TIMEOUT))?,
        connector_max_body: config::count(&src.get(CONNECTOR_MAX_BODY), 1, MAX_REQUEST_BODY)?,
        client_timeout: config::positive_duration(&src.get(CLIENT_TIMEOUT))?,
        queue_capacity: config::count(&src.get(QUEUE_CAPACITY), 1, 1_000_000)?,
        max_connections: config::count(&src.get(MAX_CONNECTIONS), 1, 100_000)?,
        max_connections_per_peer: match config::count(
            &src.get(MAX_CONNECTIONS_PER_PEER),
            0,
            100_000,
        )? {
            0 => usize::MAX,
            n => n,
        },
        control_plane_reserve_percent: config::count(&src.get(CONTROL_PLANE_RESERVE), 0, 50)?,
        header_timeout: config::positive_duration(&src.get(HEADER_TIMEOUT))?,
        log: config::parse_log_config(
            &src.get(LOG_LEVEL),
            &src.get(LOG_FORMAT),
            &src.get(LOG_FILE),
        )?,
    }))
}

pub fn help() -> String {
    let mut text = config::help_text(
        "mcp-tunnel relay: self-hosted control plane and public MCP endpoint",
        "mcp-tunnel relay [OPTIONS]\n       mcp-tunnel relay tunnel <add|list|remove|rotate-key> [--help]",
        RELAY_OPTIONS,
    );
    text.push_str(
        "\nEndpoints:\n  /v1/tunnels/{id}[/poll|/response]   tunnel clients (runtime key)\n  \
         /v1/mcp/{id}[/{channel}]            MCP hosts (connector key, or passthrough)\n  \
         /healthz                            liveness\n",
    );
    text
}

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

/// The relay's shared state: the tunnel registry and one hub per tunnel.
pub struct Relay {
    cfg: RelayConfig,
    registry: RwLock<Arc<Registry>>,
    hubs: Mutex<HashMap<String, Arc<TunnelHub>>>,
}

impl Relay {
    pub fn new(cfg: RelayConfig, registry: Registry) -> Arc<Relay> {
        Arc::new(Relay {
            cfg,
            registry: RwLock::new(Arc::new(registry)),
            hubs: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a tunnel client has polled `tunnel_id` recently.
    pub fn client_connected(&self, tunnel_id: &str) -> bool {
        self.hub(tunnel_id).connected()
    }

    fn record(&self, id: &str) -> Option<TunnelRecord> {
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        registry.get(id).cloned()
    }

    fn hub(&self, id: &str) -> Arc<TunnelHub> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(hubs.entry(id.to_string()).or_insert_with(|| {
            TunnelHub::new(HubLimits {
                queue_capacity: self.cfg.queue_capacity,
                client_timeout: self.cfg.client_timeout,
            })
        }))
    }

    /// Re-reads the tunnels file. Hubs of tunnels that still exist keep their queues; a removed
    /// tunnel's waiting requests end by their deadline.
    pub fn reload(&self) -> Result<usize, String> {
        let registry = tunnels::load(&self.cfg.tunnels_file)?;
        let count = registry.tunnels.len();
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.retain(|id, _| registry.get(id).is_some());
        drop(hubs);
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(registry);
        Ok(count)
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
            ["v1", "mcp", id, ..] => {
                self.require_client_cert(head.client_cert_verified, false)?;
                let record = self.record(id).ok_or_else(unknown_tunnel)?;
                if record.connector_auth == ConnectorAuth::RelayKey
                    && !key.is_some_and(|k| record.connector_key_matches(k))
                {
                    return Err(connector_key_refused());
                }
                Ok(match head.method {
                    "POST" => self.cfg.connector_max_body,
                    _ => SMALL_BODY,
                })
            }
            _ => Err(not_found()),
        }
    }

    /// Routes one request.
    pub fn handle(&self, req: Request) -> Response {
        let path = req.path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["healthz"] => Response::new(200, "ok\n"),
            ["v1", "tunnels", id, rest @ ..] => {
                if let Err(denied) = self.require_client_cert(req.client_cert_verified, true) {
                    return denied;
                }
                let Some(record) = self.record(id) else {
                    return unknown_tunnel();
                };
                match (req.method.as_str(), rest) {
                    ("GET", []) => control::metadata(&record, &req),
                    ("GET", ["poll"]) => {
                        control::poll(&record, &self.hub(id), &req, self.cfg.poll_max_wait)
                    }
                    ("POST", ["response"]) => control::respond(&record, &self.hub(id), &req),
                    _ => not_found(),
                }
            }
            ["v1", "mcp", id, rest @ ..] => {
                if let Err(denied) = self.require_client_cert(req.client_cert_verified, false) {
                    return denied;
                }
                let Some(record) = self.record(id) else {
                    return unknown_tunnel();
                };
                let channel = match rest {
                    [] => Some(wire::DEFAULT_CHANNEL.to_string()),
                    [channel] => wire::canonical_channel(Some(channel)),
                    _ => return not_found(),
                };
                let Some(channel) = channel else {
                    return api_error(
                        400,
                        "invalid_request_error",
                        "invalid_channel_format",
                        "channel names are lowercase letters, digits, - and _ (at most 64)",
                    );
                };
                let limits = ConnectorLimits {
                    wait: self.cfg.connector_timeout,
                    max_body: self.cfg.connector_max_body,
                };
                connector::handle(&record, &self.hub(id), &channel, req, &limits)
            }
            _ => not_found(),
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

/// As `connector`'s refusal of a missing or wrong connector key.
fn connector_key_refused() -> Response {
    api_error(
        401,
        "invalid_request_error",
        "invalid_connector_key",
        "missing or invalid connector key: send Authorization: Bearer <connector key>",
    )
    .with_header("WWW-Authenticate", "Bearer realm=\"mcp-tunnel\"")
}

/// The routes tunnel clients use: the ones the reserved connection slots serve.
fn is_control_plane(path: &str) -> bool {
    path.starts_with("/v1/tunnels/")
}

fn unknown_tunnel() -> Response {
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
        move |head: &RequestHead<'_>| admitting.admit(head),
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
    let relay = Relay::new(cfg, registry);
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
    watch_tunnels_file(Arc::clone(&relay));
    let code = wait_for_signals(&relay);
    server.shutdown();
    log::info!("relay stopped");
    code
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
                report_reload(relay.reload(), "SIGHUP");
            }
            crate::signals::Signal::Stop(number) => {
                log::info!("signal {number} received; stopping");
                return 0;
            }
        }
    }
    0
}

/// Reloads the tunnels file whenever its modification time changes, so `relay tunnel add`
/// takes effect without a signal.
fn watch_tunnels_file(relay: Arc<Relay>) {
    let modified = |relay: &Relay| -> Option<SystemTime> {
        std::fs::metadata(&relay.cfg.tunnels_file)
            .and_then(|m| m.modified())
            .ok()
    };
    let mut last = modified(&relay);
    let spawned = thread::Builder::new()
        .name("tunnels-watch".into())
        .spawn(move || {
            loop {
                thread::sleep(RELOAD_CHECK_INTERVAL);
                let now = modified(&relay);
                if now != last {
                    last = now;
                    report_reload(relay.reload(), "file change");
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot watch the tunnels file ({e}); reload with SIGHUP");
    }
}

fn report_reload(result: Result<usize, String>, why: &str) {
    match result {
        Ok(n) => log::info!("tunnels reloaded ({why}): {n} tunnel(s)"),
        Err(e) => log::error!("tunnels not reloaded ({why}), keeping the previous set: {e}"),
    }
}
