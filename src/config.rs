//! Configuration for `mcp-tunnel run`: raw flags and environment variables in, one validated,
//! immutable [`RunConfig`] out.
//!
//! Names are the official `tunnel-client`'s, so an operator who followed its docs switches binaries
//! without rewriting anything. Precedence: flag > environment variable > default. Every error names
//! the offending key (the flag or variable the value came from) and says how to fix it; no error
//! ever repeats a secret's value. The process exits with code 2 on any of them.
//!
//! Secret-bearing options (API key, extra header sets) accept references instead of values:
//! `env:VAR` reads another environment variable, `file:/path` reads a file (trailing newline
//! trimmed). On the command line the API key *must* be a reference: argv is visible to every user
//! of the host through `ps` and `/proc`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ureq::http::Uri;

use crate::duration;
use crate::net::{HopNet, ProxyChoice, ProxyUrl};
use crate::secret::Secret;
use crate::tls::{self, ClientIdentity, PemSource};
use crate::wire;

/// The hard ceiling the contract puts on one poll's `limit`.
pub const MAX_POLL_LIMIT: usize = 25;

/// One option of `run`: its flag, the environment variables it is read from (first set wins), its
/// default and its help line. The same table drives parsing and `--help`, so they cannot drift.
#[derive(Clone, Copy)]
pub struct Opt {
    pub flag: &'static str,
    pub env: &'static [&'static str],
    pub default: Option<&'static str>,
    pub help: &'static str,
    /// May be given several times (flags repeated, or one entry per line in the variable).
    pub repeatable: bool,
    /// A true/false option: the bare flag means true; `--flag=false` also works.
    pub switch: bool,
}

impl Opt {
    /// A starting point for option tables: `Opt { flag, help, ..Opt::BASE }`.
    pub const BASE: Opt = Opt {
        flag: "",
        env: &[],
        default: None,
        help: "",
        repeatable: false,
        switch: false,
    };
}

const fn opt(
    flag: &'static str,
    env: &'static [&'static str],
    default: Option<&'static str>,
    help: &'static str,
) -> Opt {
    Opt {
        flag,
        env,
        default,
        help,
        repeatable: false,
        switch: false,
    }
}

const fn switch(o: Opt) -> Opt {
    Opt { switch: true, ..o }
}

const fn repeatable(o: Opt) -> Opt {
    Opt {
        repeatable: true,
        ..o
    }
}

// Option keys, shared by the table and the validation code below.
const BASE_URL: &str = "--control-plane.base-url";
const URL_PATH: &str = "--control-plane.url-path";
const TUNNEL_ID: &str = "--control-plane.tunnel-id";
const API_KEY: &str = "--control-plane.api-key";
const POLL_TIMEOUT: &str = "--control-plane.poll-timeout";
const POLL_GUARDRAIL: &str = "--control-plane.poll-deadline-guardrail";
const MAX_INFLIGHT: &str = "--control-plane.max-inflight";
const CP_EXTRA_HEADERS: &str = "--control-plane.extra-headers";
const MCP_URL: &str = "--mcp.server-url";
const MCP_COMMAND: &str = "--mcp.command";
const MCP_MAX_CONCURRENT: &str = "--mcp.max-concurrent-requests";
const MCP_EXTRA_HEADERS: &str = "--mcp.extra-headers";
const MCP_CONN_TTL: &str = "--mcp.connection-max-ttl";
const DRAIN_TIMEOUT: &str = "--shutdown.drain-timeout";
const CA_BUNDLE: &str = "--ca-bundle";
const CA_BUNDLE_SYSTEM: &str = "--ca-bundle.system";
const HTTP_PROXY: &str = "--http-proxy";
const CP_HTTP_PROXY: &str = "--control-plane.http-proxy";
const CP_CLIENT_CERT: &str = "--control-plane.client-cert";
const CP_CLIENT_KEY: &str = "--control-plane.client-key";
const MCP_HTTP_PROXY: &str = "--mcp.http-proxy";
const MCP_CLIENT_CERT: &str = "--mcp.client-cert";
const MCP_CLIENT_KEY: &str = "--mcp.client-key";

/// The default control plane, and where it expects mutual-TLS clients.
const DEFAULT_BASE_URL: &str = "https://api.openai.com";
const DEFAULT_MTLS_BASE_URL: &str = "https://mtls.api.openai.com";
const LOG_LEVEL: &str = "--log.level";
const LOG_FORMAT: &str = "--log.format";
const LOG_FILE: &str = "--log.file";
const HEALTH_LISTEN: &str = "--health.listen-addr";
const HEALTH_URL_FILE: &str = "--health.url-file";
const PID_FILE: &str = "--pid-file";
const EXIT_ON_AUTH_FAILURE: &str = "--exit-on-auth-failure";
/// Read before everything else: the KEY=VALUE file that fills in what the environment lacks.
pub const ENV_FILE: &str = "--env-file";

/// Every option of `run`, in `--help` order.
pub const RUN_OPTIONS: &[Opt] = &[
    opt(
        BASE_URL,
        &["CONTROL_PLANE_BASE_URL"],
        Some("https://api.openai.com"),
        "Control-plane origin (scheme://host[:port], no path). http:// only for loopback hosts.",
    ),
    opt(
        URL_PATH,
        &["CONTROL_PLANE_URL_PATH"],
        Some(""),
        "Path prefix put before /v1/tunnels/... (for API gateways).",
    ),
    opt(
        TUNNEL_ID,
        &["CONTROL_PLANE_TUNNEL_ID"],
        None,
        "Tunnel id, e.g. tunnel_0123456789abcdef0123456789abcdef. Required.",
    ),
    opt(
        API_KEY,
        &["CONTROL_PLANE_API_KEY", "OPENAI_API_KEY"],
        None,
        "Runtime API key. Required. On the command line only as env:VAR or file:/path.",
    ),
    opt(
        POLL_TIMEOUT,
        &["CONTROL_PLANE_POLL_TIMEOUT"],
        Some("30s"),
        "How long one long-poll may wait on the control plane for work.",
    ),
    opt(
        POLL_GUARDRAIL,
        &["CONTROL_PLANE_POLL_DEADLINE_GUARDRAIL"],
        Some("5s"),
        "Extra time allowed for a poll's HTTP exchange beyond the poll wait.",
    ),
    opt(
        MAX_INFLIGHT,
        &["CONTROL_PLANE_MAX_INFLIGHT_REQUESTS"],
        Some("20"),
        "Commands held at once (queued + running); the poll asks for at most the free slots.",
    ),
    opt(
        CP_EXTRA_HEADERS,
        &["CONTROL_PLANE_EXTRA_HEADERS"],
        Some(""),
        "Extra headers for control-plane requests, \"K: V, K2: V2\" (or env:VAR / file:/path).",
    ),
    repeatable(opt(
        MCP_URL,
        &["MCP_SERVER_URL"],
        None,
        "A Streamable HTTP MCP server: URL (channel main) or channel=NAME,url=URL[,client-cert=P,\
         client-key=P,http-proxy=URL,unix-socket=PATH]. Repeatable; in the variable one entry \
         per line.",
    )),
    repeatable(opt(
        MCP_COMMAND,
        &["MCP_COMMAND"],
        None,
        "A stdio MCP server: command line (channel main) or channel=NAME,command=LINE. Split \
         into argv with quotes and backslashes, never run by a shell. Repeatable; in the \
         variable one entry per line.",
    )),
    opt(
        MCP_MAX_CONCURRENT,
        &["MCP_MAX_CONCURRENT_REQUESTS"],
        Some("10"),
        "Worker threads: MCP calls running at once.",
    ),
    opt(
        MCP_EXTRA_HEADERS,
        &["MCP_EXTRA_HEADERS"],
        Some(""),
        "Static headers for the MCP server, \"K: V, K2: V2\" (or env:VAR / file:/path); \
         headers carried by a command win.",
    ),
    opt(
        MCP_CONN_TTL,
        &["MCP_CONNECTION_MAX_TTL"],
        Some("10m"),
        "Longest time an idle pooled MCP connection is kept for reuse.",
    ),
    opt(
        CA_BUNDLE,
        &["CA_BUNDLE"],
        Some(""),
        "PEM file of extra CA certificates (a private CA, a TLS-inspecting proxy), trusted in \
         addition to the built-in Mozilla roots, for every outbound TLS connection.",
    ),
    switch(opt(
        CA_BUNDLE_SYSTEM,
        &["CA_BUNDLE_SYSTEM"],
        Some("false"),
        "true: also trust the operating system's CA bundle \
         (/etc/ssl/certs/ca-certificates.crt, /etc/pki/tls/certs/ca-bundle.crt).",
    )),
    opt(
        HTTP_PROXY,
        &["TUNNEL_CLIENT_HTTP_PROXY"],
        Some(""),
        "Proxy for both hops: http(s)://[user:pass@]host:port or env:VAR. An explicit proxy \
         ignores NO_PROXY; without one, HTTPS_PROXY/HTTP_PROXY/NO_PROXY apply.",
    ),
    opt(
        CP_HTTP_PROXY,
        &["CONTROL_PLANE_HTTP_PROXY"],
        Some(""),
        "Proxy for the control plane only (wins over --http-proxy).",
    ),
    opt(
        CP_CLIENT_CERT,
        &["CONTROL_PLANE_CLIENT_CERT"],
        Some(""),
        "Client certificate for mutual TLS with the control plane: a PEM path, file:/path or \
         env:VAR. With the default base URL, https://mtls.api.openai.com is used.",
    ),
    opt(
        CP_CLIENT_KEY,
        &["CONTROL_PLANE_CLIENT_KEY"],
        Some(""),
        "Its private key (PEM path, file:/path or env:VAR).",
    ),
    opt(
        MCP_HTTP_PROXY,
        &["MCP_HTTP_PROXY"],
        Some(""),
        "Proxy for the MCP servers (wins over --http-proxy; a channel's http-proxy= wins over it).",
    ),
    opt(
        MCP_CLIENT_CERT,
        &["MCP_CLIENT_CERT"],
        Some(""),
        "Client certificate presented to the MCP servers' origins (PEM path, file:/path or \
         env:VAR); a channel's client-cert= wins.",
    ),
    opt(
        MCP_CLIENT_KEY,
        &["MCP_CLIENT_KEY"],
        Some(""),
        "Its private key.",
    ),
    opt(
        DRAIN_TIMEOUT,
        &["SHUTDOWN_DRAIN_TIMEOUT"],
        Some("10s"),
        "On SIGTERM/SIGINT, how long in-flight commands may take to finish and post.",
    ),
    opt(
        LOG_LEVEL,
        &["LOG_LEVEL"],
        Some("info"),
        "error, warn, info, debug or trace. Secrets are never logged at any level.",
    ),
    opt(
        LOG_FORMAT,
        &["LOG_FORMAT"],
        Some("text"),
        "text, or json (one object per line: ts, level, target, msg and fields).",
    ),
    opt(
        LOG_FILE,
        &["LOG_FILE"],
        Some(""),
        "Append logs to this file (mode 0600, reopened on SIGHUP for logrotate) instead of stderr.",
    ),
    opt(
        HEALTH_LISTEN,
        &["HEALTH_LISTEN_ADDR"],
        Some("127.0.0.1:8080"),
        "Address of /healthz, /readyz and /metrics; :0 picks a free port, off disables.",
    ),
    opt(
        HEALTH_URL_FILE,
        &["HEALTH_URL_FILE"],
        Some(""),
        "Write the health server's base URL here (atomically; removed on exit).",
    ),
    opt(
        PID_FILE,
        &["PID_FILE"],
        Some(""),
        "Hold this pid file with an exclusive lock; if another copy holds it, exit 0 at once \
         (for cron and init scripts).",
    ),
    switch(opt(
        EXIT_ON_AUTH_FAILURE,
        &["EXIT_ON_AUTH_FAILURE"],
        Some("false"),
        "true: exit with code 3 when the control plane rejects the API key (401/403) instead of \
         retrying slowly.",
    )),
    opt(
        ENV_FILE,
        &["ENV_FILE"],
        Some(""),
        "KEY=VALUE file (the /etc/default and systemd EnvironmentFile format) read after the \
         process environment: flags > environment > this file > defaults. --config is an alias.",
    ),
];

/// Validated settings for the control-plane hop.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// `scheme://host[:port]`, no trailing slash.
    pub base_url: String,
    /// `""` or `/prefix` without a trailing slash.
    pub url_path: String,
    pub tunnel_id: String,
    pub api_key: Secret,
    pub poll_timeout: Duration,
    pub poll_deadline_guardrail: Duration,
    pub max_inflight: usize,
    pub extra_headers: Vec<(String, Secret)>,
    pub net: HopNet,
}

impl ControlPlaneConfig {
    /// `{base}{prefix}/v1/tunnels/{id}`; the endpoints hang below it.
    pub fn tunnel_url(&self) -> String {
        format!(
            "{}{}/v1/tunnels/{}",
            self.base_url, self.url_path, self.tunnel_id
        )
    }
}

/// How one channel reaches its MCP server.
#[derive(Debug, Clone)]
pub enum ChannelTransport {
    /// Streamable HTTP at this URL, connecting as `net` says.
    Http { url: String, net: HopNet },
    /// A program speaking JSON-RPC on stdin/stdout, started with this argv (no shell).
    Stdio { argv: Vec<String> },
}

/// One named channel of the tunnel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub name: String,
    pub transport: ChannelTransport,
}

/// The most channels one client declares (the contract's limit for the server-info header).
pub const MAX_CHANNELS: usize = 32;

/// Validated settings for the MCP hop.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// At least `main`, names unique and canonical.
    pub channels: Vec<ChannelConfig>,
    pub max_concurrent: usize,
    pub extra_headers: Vec<(String, Secret)>,
    pub connection_max_ttl: Duration,
}

/// Everything `mcp-tunnel run` needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub control_plane: ControlPlaneConfig,
    pub mcp: McpConfig,
    /// Environment variables holding our secrets (the key, extra headers, client keys, proxy
    /// credentials, and any `env:` reference among them): a stdio MCP server must not inherit
    /// them.
    pub secret_env_vars: Vec<String>,
    pub drain_timeout: Duration,
    pub log: LogConfig,
    pub ops: OpsConfig,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: log::LevelFilter,
    pub format: LogFormat,
    /// Append here instead of stderr.
    pub file: Option<std::path::PathBuf>,
}

impl LogConfig {
    /// Text to stderr at `level`.
    pub fn stderr(level: log::LevelFilter) -> LogConfig {
        LogConfig {
            level,
            format: LogFormat::Text,
            file: None,
        }
    }
}

/// The operator surface of `run`.
#[derive(Debug, Clone, Default)]
pub struct OpsConfig {
    /// Where /healthz, /readyz and /metrics listen; `None` when disabled.
    pub health_listen: Option<String>,
    pub health_url_file: Option<std::path::PathBuf>,
    pub pid_file: Option<std::path::PathBuf>,
    pub exit_on_auth_failure: bool,
}

/// A configuration problem, naming the key it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// What the command line asked for.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<RunConfig>),
    Help,
}

/// A raw value and the key it was read from (a flag or an environment variable), for messages.
pub struct Raw {
    pub source: String,
    pub value: String,
}

/// Where option values come from: parsed flags, then the environment, then the table's defaults.
/// Shared by every subcommand with an option table.
pub struct Sources<'a> {
    options: &'static [Opt],
    flags: HashMap<&'static str, Vec<String>>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Sources<'a> {
    /// Parses `args` against `options`. `Ok(None)` means `-h`/`--help` was asked for. Each flag
    /// may be given once; anything unknown is an error naming it.
    pub fn parse(
        options: &'static [Opt],
        args: Vec<OsString>,
        env: &'a dyn Fn(&str) -> Option<String>,
        command: &str,
    ) -> Result<Option<Sources<'a>>, ConfigError> {
        // A bare switch means true: give it a value before the parser sees it.
        let args = args
            .into_iter()
            .map(|a| match options.iter().find(|o| o.switch && a == o.flag) {
                Some(o) => OsString::from(format!("{}=true", o.flag)),
                None => a,
            })
            .collect();
        let mut pargs = pico_args::Arguments::from_vec(args);
        if pargs.contains(["-h", "--help"]) {
            return Ok(None);
        }
        let mut flags = HashMap::new();
        for o in options {
            let mut values: Vec<String> =
                pargs.values_from_str(o.flag).map_err(|e| ConfigError {
                    key: o.flag.to_string(),
                    message: format!("{e}"),
                })?;
            if values.len() > 1 && !o.repeatable {
                return Err(err(o.flag, "given more than once; give it once"));
            }
            if !values.is_empty() {
                flags.insert(o.flag, std::mem::take(&mut values));
            }
        }
        if let Some(extra) = pargs.finish().first() {
            return Err(ConfigError {
                key: extra.to_string_lossy().into_owned(),
                message: format!("unknown argument; see `mcp-tunnel {command} --help`"),
            });
        }
        Ok(Some(Sources {
            options,
            flags,
            env,
        }))
    }

    /// The value given on the command line, if any.
    pub fn flag(&self, flag: &str) -> Option<&str> {
        self.flags
            .get(flag)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every value of a repeatable option: all its flags if given, else one per non-empty line
    /// of the first set environment variable.
    pub fn values(&self, flag: &str) -> Vec<Raw> {
        if let Some(values) = self.flags.get(flag) {
            return values
                .iter()
                .map(|v| Raw {
                    source: flag.to_string(),
                    value: v.clone(),
                })
                .collect();
        }
        for var in self.option(flag).env {
            if let Some(v) = (self.env)(var).filter(|v| !v.trim().is_empty()) {
                return v
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| Raw {
                        source: (*var).to_string(),
                        value: l.to_string(),
                    })
                    .collect();
            }
        }
        Vec::new()
    }

    /// The environment lookup, for following `env:` references.
    pub fn env(&self) -> &'a dyn Fn(&str) -> Option<String> {
        self.env
    }

    /// Flag, else the first non-empty environment variable, else the default.
    pub fn lookup(&self, flag: &str) -> Option<Raw> {
        if let Some(v) = self.flags.get(flag).and_then(|v| v.first()) {
            return Some(Raw {
                source: flag.to_string(),
                value: v.clone(),
            });
        }
        let o = self.option(flag);
        for var in o.env {
            if let Some(v) = (self.env)(var).filter(|v| !v.is_empty()) {
                return Some(Raw {
                    source: (*var).to_string(),
                    value: v,
                });
            }
        }
        o.default.map(|d| Raw {
            source: flag.to_string(),
            value: d.to_string(),
        })
    }

    /// Like [`lookup`](Self::lookup), with an error naming the variable when nothing is set.
    pub fn required(&self, flag: &str) -> Result<Raw, ConfigError> {
        self.lookup(flag).ok_or_else(|| {
            let o = self.option(flag);
            let var = o.env.first().copied().unwrap_or(o.flag);
            ConfigError {
                key: var.to_string(),
                message: format!("is required; set {var} or pass {flag}"),
            }
        })
    }

    /// For options that have a default.
    pub fn get(&self, flag: &str) -> Raw {
        self.lookup(flag).expect("option with a default")
    }

    fn option(&self, flag: &str) -> &'static Opt {
        self.options
            .iter()
            .find(|o| o.flag == flag)
            .expect("flag is in this command's option table")
    }
}

/// Reads `run`'s arguments (after the subcommand) and the environment into a [`RunConfig`].
/// `env` is injected so tests need not touch the process environment.
pub fn parse_run(
    args: Vec<OsString>,
    process_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    let (args, file_vars) = env_file_layer(args, process_env)?;
    let env = &|name: &str| process_env(name).or_else(|| file_vars.get(name).cloned());
    let Some(src) = Sources::parse(RUN_OPTIONS, args, env, "run")? else {
        return Ok(Parsed::Help);
    };
    // A literal key on argv would be visible in `ps`; refuse before anything else looks at it.
    if src.flag(API_KEY).is_some_and(|v| !is_reference(v)) {
        return Err(err(
            API_KEY,
            "a key on the command line is visible to every user of the host; \
             pass env:VAR or file:/path instead, or set CONTROL_PLANE_API_KEY",
        ));
    }
    let get = |flag| src.get(flag);
    let required = |flag| src.required(flag);

    let base_url = validate_base_url(&get(BASE_URL))?;
    let url_path = validate_url_path(&get(URL_PATH))?;
    let tunnel_id = validate_tunnel_id(&required(TUNNEL_ID)?)?;
    let api_key_raw = required(API_KEY)?;
    let api_key = resolve_secret(&api_key_raw, env)?;
    if api_key.expose().trim().is_empty() {
        return Err(err(&api_key_raw.source, "the API key is empty"));
    }
    let poll_timeout = positive_duration(&get(POLL_TIMEOUT))?;
    let poll_deadline_guardrail = positive_duration(&get(POLL_GUARDRAIL))?;
    let max_inflight = count(&get(MAX_INFLIGHT), 1, 10_000)?;
    let cp_extra = get(CP_EXTRA_HEADERS);
    let cp_extra_headers = parse_headers(&cp_extra, &resolve_secret(&cp_extra, env)?)?;
    for (name, _) in &cp_extra_headers {
        if crate::headers::is_reserved_header(name) {
            return Err(err(
                &cp_extra.source,
                &format!("header {name} is set by mcp-tunnel itself and cannot be overridden"),
            ));
        }
    }

    // Outbound networking, shared by both hops unless a narrower setting wins.
    let ca = get(CA_BUNDLE);
    let system = parse_bool(&get(CA_BUNDLE_SYSTEM))?;
    let ca_path = (!ca.value.is_empty()).then(|| std::path::PathBuf::from(&ca.value));
    let roots = tls::client_roots(ca_path.as_deref(), system).map_err(|e| {
        let key = if ca_path.is_some() {
            &ca.source
        } else {
            CA_BUNDLE_SYSTEM
        };
        err(key, &e)
    })?;
    let global_proxy = proxy_setting(&get(HTTP_PROXY), env)?;
    let cp_proxy = proxy_setting(&get(CP_HTTP_PROXY), env)?.or_else(|| global_proxy.clone());
    let cp_identity = identity(&get(CP_CLIENT_CERT), &get(CP_CLIENT_KEY), env)?;
    // OpenAI serves mutual-TLS clients on a separate host.
    let base_url = if cp_identity.is_some() && base_url == DEFAULT_BASE_URL {
        DEFAULT_MTLS_BASE_URL.to_string()
    } else {
        base_url
    };
    let cp_net = HopNet {
        roots: roots.clone(),
        identity: cp_identity,
        proxy: cp_proxy.map_or(ProxyChoice::FromEnvironment, ProxyChoice::Explicit),
        unix_socket: None,
    };
    let mcp_defaults = HopNet {
        roots,
        identity: identity(&get(MCP_CLIENT_CERT), &get(MCP_CLIENT_KEY), env)?,
        proxy: proxy_setting(&get(MCP_HTTP_PROXY), env)?
            .or(global_proxy)
            .map_or(ProxyChoice::FromEnvironment, ProxyChoice::Explicit),
        unix_socket: None,
    };

    let channels = parse_channels(
        &src.values(MCP_URL),
        &src.values(MCP_COMMAND),
        &mcp_defaults,
        env,
    )?;
    let max_concurrent = count(&get(MCP_MAX_CONCURRENT), 1, 1_000)?;
    let mcp_extra = get(MCP_EXTRA_HEADERS);
    let mcp_extra_headers = parse_headers(&mcp_extra, &resolve_secret(&mcp_extra, env)?)?;
    let connection_max_ttl = positive_duration(&get(MCP_CONN_TTL))?;
    let drain_timeout = any_duration(&get(DRAIN_TIMEOUT))?;
    let log = parse_log_config(&get(LOG_LEVEL), &get(LOG_FORMAT), &get(LOG_FILE))?;
    let health = get(HEALTH_LISTEN);
    let health_listen = match health.value.trim() {
        "" | "off" => None,
        addr => Some(validate_listen_addr(&health, addr)?),
    };
    let optional_path = |raw: Raw| {
        let v = raw.value.trim();
        (!v.is_empty()).then(|| std::path::PathBuf::from(v))
    };
    let ops = OpsConfig {
        health_listen,
        health_url_file: optional_path(get(HEALTH_URL_FILE)),
        pid_file: optional_path(get(PID_FILE)),
        exit_on_auth_failure: parse_bool(&get(EXIT_ON_AUTH_FAILURE))?,
    };

    let secret_env_vars = secret_env_vars(&src);

    Ok(Parsed::Run(Box::new(RunConfig {
        secret_env_vars,
        control_plane: ControlPlaneConfig {
            base_url,
            url_path,
            tunnel_id,
            api_key,
            poll_timeout,
            poll_deadline_guardrail,
            max_inflight,
            extra_headers: cp_extra_headers,
            net: cp_net,
        },
        mcp: McpConfig {
            channels,
            max_concurrent,
            extra_headers: mcp_extra_headers,
            connection_max_ttl,
        },
        drain_timeout,
        log,
        ops,
    })))
}

/// Finds `--env-file`/`--config` (or `ENV_FILE`) before anything else and loads that file, which
/// then sits between the process environment and the defaults. `--config` is rewritten to
/// `--env-file` so the option table knows one name.
fn env_file_layer(
    args: Vec<OsString>,
    process_env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<OsString>, HashMap<String, String>), ConfigError> {
    let mut path: Option<(String, String)> = None;
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy().into_owned();
        let (flag, inline) = match text.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (text.clone(), None),
        };
        if flag == "--config" || flag == ENV_FILE {
            let value = match inline {
                Some(v) => v,
                None => match iter.next() {
                    Some(v) => v.to_string_lossy().into_owned(),
                    None => return Err(err(&flag, "needs a file path")),
                },
            };
            out.push(OsString::from(format!("{ENV_FILE}={value}")));
            path = Some((flag, value));
        } else {
            out.push(arg);
        }
    }
    let path = path.or_else(|| {
        process_env("ENV_FILE")
            .filter(|v| !v.is_empty())
            .map(|v| ("ENV_FILE".to_string(), v))
    });
    let vars = match path {
        Some((source, file)) => {
            crate::envfile::load(std::path::Path::new(&file)).map_err(|e| err(&source, &e))?
        }
        None => HashMap::new(),
    };
    Ok((out, vars))
}

/// `--help` text for `run`, generated from [`RUN_OPTIONS`].
pub fn run_help() -> String {
    help_text(
        "mcp-tunnel run: poll the control plane and forward MCP requests to a private server",
        "mcp-tunnel run [OPTIONS]",
        RUN_OPTIONS,
    )
}

/// `--help` text for any option table: each option with its variables and default.
pub fn help_text(title: &str, usage: &str, options: &[Opt]) -> String {
    let mut out = format!(
        "{title}\n\nUsage: {usage}\n\n\
         Every option is also read from the environment variable shown; a flag wins over the\n\
         environment, which wins over the default. Durations: <integer><ns|us|ms|s|m|h>.\n\n\
         Options:\n"
    );
    for o in options {
        if o.switch {
            out.push_str(&format!("  {}[=true|false]\n", o.flag));
        } else {
            out.push_str(&format!("  {} <value>\n", o.flag));
        }
        out.push_str(&format!("      {}\n", o.help));
        let default = match o.default {
            None => "(required)".to_string(),
            Some("") => "(none)".to_string(),
            Some(d) => d.to_string(),
        };
        out.push_str(&format!(
            "      env: {}   default: {default}\n",
            o.env.join(", ")
        ));
    }
    out.push_str("  -h, --help\n      Print this help.\n");
    out
}

pub fn err(key: &str, message: &str) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.to_string(),
    }
}

fn is_reference(v: &str) -> bool {
    v.starts_with("env:") || v.starts_with("file:")
}

/// Follows an `env:VAR` or `file:/path` reference; any other value is the secret itself.
pub fn resolve_secret(
    raw: &Raw,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, ConfigError> {
    if let Some(var) = raw.value.strip_prefix("env:") {
        return match env(var).filter(|v| !v.is_empty()) {
            Some(v) => Ok(Secret::new(v)),
            None => Err(err(
                &raw.source,
                &format!("refers to environment variable {var}, which is not set or empty"),
            )),
        };
    }
    if let Some(path) = raw.value.strip_prefix("file:") {
        return match std::fs::read_to_string(path) {
            Ok(text) => Ok(Secret::new(text.trim_end_matches(['\r', '\n']))),
            Err(e) => Err(err(&raw.source, &format!("cannot read file {path}: {e}"))),
        };
    }
    Ok(Secret::new(raw.value.clone()))
}

fn validate_base_url(raw: &Raw) -> Result<String, ConfigError> {
    let uri: Uri = raw.value.parse().map_err(|_| {
        err(
            &raw.source,
            "is not a URL; expected scheme://host[:port], e.g. https://api.openai.com",
        )
    })?;
    let scheme = uri.scheme_str().unwrap_or("");
    let host = uri.host().unwrap_or("");
    if host.is_empty() || !(scheme == "https" || scheme == "http") {
        return Err(err(
            &raw.source,
            "must be an http(s) origin, e.g. https://api.openai.com",
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(err(&raw.source, "must not contain credentials"));
    }
    if let Some(pq) = uri.path_and_query()
        && pq.as_str() != "/"
        && !pq.as_str().is_empty()
    {
        return Err(err(
            &raw.source,
            "must not contain a path or query; put a gateway prefix in --control-plane.url-path",
        ));
    }
    if scheme == "http" && !is_loopback_host(host) {
        return Err(err(
            &raw.source,
            "plain http:// would send the API key across the network in clear; use https:// \
             (http:// is accepted only for loopback hosts)",
        ));
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    Ok(format!("{scheme}://{authority}"))
}

pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn validate_url_path(raw: &Raw) -> Result<String, ConfigError> {
    let p = raw.value.trim_end_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    let ok_chars = p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/-._~%".contains(c));
    if !p.starts_with('/') || !ok_chars {
        return Err(err(
            &raw.source,
            "must be a path starting with / (letters, digits, - . _ ~ %), e.g. /gateway/tunnel",
        ));
    }
    Ok(p.to_string())
}

fn validate_tunnel_id(raw: &Raw) -> Result<String, ConfigError> {
    // Opaque per the contract, but it goes into a URL path: allow only characters that need no
    // escaping, which every id the service issues satisfies (tunnel_ + 32 hex).
    let id = raw.value.trim();
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(err(
            &raw.source,
            "is not a tunnel id; expected e.g. tunnel_0123456789abcdef0123456789abcdef",
        ));
    }
    Ok(id.to_string())
}

fn validate_mcp_url(raw: &Raw) -> Result<String, ConfigError> {
    let uri: Uri = raw.value.parse().map_err(|_| {
        err(
            &raw.source,
            "is not a URL; expected e.g. http://127.0.0.1:3000/mcp",
        )
    })?;
    let scheme = uri.scheme_str().unwrap_or("");
    if uri.host().is_none_or(str::is_empty) || !(scheme == "https" || scheme == "http") {
        return Err(err(
            &raw.source,
            "must be an http:// or https:// URL, e.g. http://127.0.0.1:3000/mcp",
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(err(
            &raw.source,
            "must not contain credentials; send them with --mcp.extra-headers instead",
        ));
    }
    Ok(raw.value.clone())
}

/// Builds the channel list from every `--mcp.server-url` and `--mcp.command` entry. An entry is
/// either a bare URL/command line (channel `main`) or qualified: `channel=NAME,url=URL` /
/// `channel=NAME,command=LINE` (the command takes the rest of the entry, commas included).
fn parse_channels(
    urls: &[Raw],
    commands: &[Raw],
    mcp_defaults: &HopNet,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ChannelConfig>, ConfigError> {
    let mut channels: Vec<ChannelConfig> = Vec::new();
    let mut add = |raw: &Raw, channel: ChannelConfig| -> Result<(), ConfigError> {
        if channels.iter().any(|c| c.name == channel.name) {
            return Err(err(
                &raw.source,
                &format!(
                    "channel {} is configured twice; each channel needs one server",
                    channel.name
                ),
            ));
        }
        channels.push(channel);
        Ok(())
    };
    for raw in urls {
        let (name, value) = split_channel_entry(raw, "url")?;
        let (value, options) = split_url_options(&value);
        let url = validate_mcp_url(&Raw {
            source: raw.source.clone(),
            value,
        })?;
        let net = channel_net(raw, &options, mcp_defaults, env)?;
        add(
            raw,
            ChannelConfig {
                name,
                transport: ChannelTransport::Http { url, net },
            },
        )?;
    }
    for raw in commands {
        let (name, line) = split_channel_entry(raw, "command")?;
        let argv = crate::argv::split_command(&line)
            .map_err(|e| err(&raw.source, &format!("cannot split the command line: {e}")))?;
        add(
            raw,
            ChannelConfig {
                name,
                transport: ChannelTransport::Stdio { argv },
            },
        )?;
    }
    if channels.is_empty() {
        return Err(err(
            "MCP_SERVER_URL",
            "is required (or MCP_COMMAND): set the MCP server to forward to, e.g. \
             http://127.0.0.1:3000/mcp or a stdio command",
        ));
    }
    if !channels.iter().any(|c| c.name == wire::DEFAULT_CHANNEL) {
        let key = match (urls.first(), commands.first()) {
            (Some(raw), _) | (None, Some(raw)) => raw.source.as_str(),
            (None, None) => "MCP_SERVER_URL",
        };
        return Err(err(
            key,
            "no server for channel main: give one entry without channel= (or with channel=main)",
        ));
    }
    if channels.len() > MAX_CHANNELS {
        return Err(err(
            "MCP_SERVER_URL",
            &format!("at most {MAX_CHANNELS} channels can be declared"),
        ));
    }
    Ok(channels)
}

/// `(channel, value)` of one entry; `kind` is `url` or `command`.
fn split_channel_entry(raw: &Raw, kind: &str) -> Result<(String, String), ConfigError> {
    let text = raw.value.trim();
    let Some(rest) = text.strip_prefix("channel=") else {
        return Ok((wire::DEFAULT_CHANNEL.to_string(), text.to_string()));
    };
    let usage = format!("expected channel=NAME,{kind}=VALUE");
    let (name, rest) = rest
        .split_once(',')
        .ok_or_else(|| err(&raw.source, &usage))?;
    let value = rest
        .trim_start()
        .strip_prefix(&format!("{kind}="))
        .ok_or_else(|| err(&raw.source, &usage))?;
    if wire::canonical_channel(Some(name)).as_deref() != Some(name) {
        return Err(err(
            &raw.source,
            &format!("{name:?} is not a channel name: use 1 to 64 of a-z 0-9 _ -"),
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Options whose values are secrets or may carry credentials.
const SECRET_OPTIONS: &[&str] = &[
    API_KEY,
    CP_EXTRA_HEADERS,
    MCP_EXTRA_HEADERS,
    CP_CLIENT_KEY,
    MCP_CLIENT_KEY,
    HTTP_PROXY,
    CP_HTTP_PROXY,
    MCP_HTTP_PROXY,
];

/// Every environment variable that holds (or that an `env:` reference points at) a secret.
fn secret_env_vars(src: &Sources<'_>) -> Vec<String> {
    let mut vars: Vec<String> = Vec::new();
    for flag in SECRET_OPTIONS {
        let o = RUN_OPTIONS
            .iter()
            .find(|o| o.flag == *flag)
            .expect("known option");
        vars.extend(o.env.iter().map(|v| (*v).to_string()));
        if let Some(var) = src
            .lookup(flag)
            .and_then(|r| r.value.strip_prefix("env:").map(str::to_string))
        {
            vars.push(var);
        }
    }
    // Per-channel options may reference variables too (client-key=env:…, http-proxy=env:…).
    for raw in src.values(MCP_URL) {
        for piece in raw.value.split(',') {
            if let Some((_, value)) = piece.split_once('=')
                && let Some(var) = value.strip_prefix("env:")
            {
                vars.push(var.to_string());
            }
        }
    }
    vars.sort();
    vars.dedup();
    vars
}

/// Per-channel options that may follow `url=` in a qualified entry.
const CHANNEL_OPTIONS: &[&str] = &["client-cert", "client-key", "http-proxy", "unix-socket"];

/// Splits `URL,key=value,…` into the URL and the known options after it. A piece that is not a
/// known option belongs to the URL (URLs may contain commas).
fn split_url_options(text: &str) -> (String, Vec<(String, String)>) {
    let mut url = String::new();
    let mut options: Vec<(String, String)> = Vec::new();
    for (i, piece) in text.split(',').enumerate() {
        let option = piece
            .split_once('=')
            .filter(|(k, _)| CHANNEL_OPTIONS.contains(&k.trim()))
            .filter(|_| i > 0);
        match (option, options.last_mut()) {
            (Some((k, v)), _) => options.push((k.trim().to_string(), v.trim().to_string())),
            (None, Some((_, v))) => {
                v.push(',');
                v.push_str(piece);
            }
            (None, None) => {
                if i > 0 {
                    url.push(',');
                }
                url.push_str(piece);
            }
        }
    }
    (url.trim().to_string(), options)
}

/// A channel's networking: its own options over the MCP-wide defaults.
fn channel_net(
    raw: &Raw,
    options: &[(String, String)],
    defaults: &HopNet,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HopNet, ConfigError> {
    let option = |key: &str| {
        options.iter().find(|(k, _)| k == key).map(|(_, v)| Raw {
            source: raw.source.clone(),
            value: v.clone(),
        })
    };
    let empty = || Raw {
        source: raw.source.clone(),
        value: String::new(),
    };
    let mut net = defaults.clone();
    if let Some(identity) = identity(
        &option("client-cert").unwrap_or_else(empty),
        &option("client-key").unwrap_or_else(empty),
        env,
    )? {
        net.identity = Some(identity);
    }
    let proxy = match option("http-proxy") {
        Some(p) => proxy_setting(&p, env)?,
        None => None,
    };
    if let Some(socket) = option("unix-socket") {
        if proxy.is_some() {
            return Err(err(
                &raw.source,
                "unix-socket= and http-proxy= exclude each other: a Unix socket is dialled directly",
            ));
        }
        let path = match socket.value.strip_prefix("env:") {
            Some(var) => env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                err(
                    &raw.source,
                    &format!("unix-socket refers to {var}, which is not set"),
                )
            })?,
            None => socket.value.clone(),
        };
        net.unix_socket = Some(std::path::PathBuf::from(path));
    }
    if let Some(proxy) = proxy {
        net.proxy = ProxyChoice::Explicit(proxy);
    }
    Ok(net)
}

/// A proxy URL or `env:VAR`; empty means "not set here".
fn proxy_setting(
    raw: &Raw,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProxyUrl>, ConfigError> {
    if raw.value.trim().is_empty() {
        return Ok(None);
    }
    let value = resolve_secret(raw, env)?;
    ProxyUrl::parse(value.expose())
        .map(Some)
        .map_err(|e| err(&raw.source, &e))
}

/// A client certificate and key: both or neither, each a path, `file:/path` or `env:VAR`.
fn identity(
    cert: &Raw,
    key: &Raw,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ClientIdentity>, ConfigError> {
    // The missing half has no source of its own: name it the way its partner was given.
    let missing = |absent: &Raw, given: &Raw, what: &str| {
        let key = if given.source.starts_with("--") {
            absent.source.clone()
        } else {
            RUN_OPTIONS
                .iter()
                .find(|o| o.flag == absent.source)
                .and_then(|o| o.env.first())
                .map_or(absent.source.clone(), |e| (*e).to_string())
        };
        err(&key, &format!("is required with a client {what}"))
    };
    match (cert.value.is_empty(), key.value.is_empty()) {
        (true, true) => return Ok(None),
        (false, true) => return Err(missing(key, cert, "certificate")),
        (true, false) => return Err(missing(cert, key, "key")),
        (false, false) => {}
    }
    let source = |raw: &Raw| -> Result<PemSource, ConfigError> {
        if let Some(var) = raw.value.strip_prefix("env:") {
            let pem = env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                err(
                    &raw.source,
                    &format!("refers to {var}, which is not set or empty"),
                )
            })?;
            return Ok(PemSource::Inline {
                var: var.to_string(),
                pem: Secret::new(pem),
            });
        }
        let path = raw.value.strip_prefix("file:").unwrap_or(&raw.value);
        Ok(PemSource::File(std::path::PathBuf::from(path)))
    };
    ClientIdentity::load(&source(cert)?, &source(key)?)
        .map(Some)
        .map_err(|e| err(&cert.source, &e))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`).
pub fn parse_bool(raw: &Raw) -> Result<bool, ConfigError> {
    match raw.value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(err(&raw.source, "must be true or false")),
    }
}

pub fn positive_duration(raw: &Raw) -> Result<Duration, ConfigError> {
    let d = any_duration(raw)?;
    if d.is_zero() {
        return Err(err(&raw.source, "must be greater than zero"));
    }
    Ok(d)
}

/// Longest duration a setting may have: no timeout needs more, and the bound keeps every
/// `Instant + setting` (and sums of settings) representable.
const MAX_SETTING_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

pub fn any_duration(raw: &Raw) -> Result<Duration, ConfigError> {
    let d = parse_duration_setting(raw)?;
    if d > MAX_SETTING_DURATION {
        return Err(err(&raw.source, "must be at most 8760h (one year)"));
    }
    Ok(d)
}

fn parse_duration_setting(raw: &Raw) -> Result<Duration, ConfigError> {
    duration::parse(raw.value.trim()).ok_or_else(|| {
        err(
            &raw.source,
            &format!(
                "{:?} is not a duration; use an integer and a unit, e.g. 30s, 4500ms, 10m",
                raw.value
            ),
        )
    })
}

pub fn count(raw: &Raw, min: usize, max: usize) -> Result<usize, ConfigError> {
    match raw.value.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(err(
            &raw.source,
            &format!("{:?} is not a whole number from {min} to {max}", raw.value),
        )),
    }
}

/// Level, format and file of the log, from their three options.
pub fn parse_log_config(level: &Raw, format: &Raw, file: &Raw) -> Result<LogConfig, ConfigError> {
    let format = match format.value.trim() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => return Err(err(&format.source, "must be text or json")),
    };
    let file = file.value.trim();
    Ok(LogConfig {
        level: parse_log_level(level)?,
        format,
        file: (!file.is_empty()).then(|| std::path::PathBuf::from(file)),
    })
}

/// `host:port`, `:port` (loopback) or `[v6]:port`, checked to parse as a socket address once a
/// bare `:port` is given its loopback host.
fn validate_listen_addr(raw: &Raw, addr: &str) -> Result<String, ConfigError> {
    let full = if addr.starts_with(':') {
        format!("127.0.0.1{addr}")
    } else {
        addr.to_string()
    };
    let resolvable = full.parse::<std::net::SocketAddr>().is_ok()
        || full
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !resolvable {
        return Err(err(
            &raw.source,
            "must be host:port (e.g. 127.0.0.1:8080), :0 for a free port, or off",
        ));
    }
    Ok(full)
}

pub fn parse_log_level(raw: &Raw) -> Result<log::LevelFilter, ConfigError> {
    raw.value.trim().parse().map_err(|_| {
        err(
            &raw.source,
            "must be one of off, error, warn, info, debug, trace",
        )
    })
}

/// Parses `"K: V, K2: V2"`. Values may be secret, so errors name the header, never the value.
pub fn parse_headers(raw: &Raw, text: &Secret) -> Result<Vec<(String, Secret)>, ConfigError> {
    let mut out = Vec::new();
    for (i, item) in text.expose().split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((name, value)) = item.split_once(':') else {
            return Err(err(
                &raw.source,
                &format!(
                    "entry {} has no ':'; expected \"Name: value, Name2: value2\"",
                    i + 1
                ),
            ));
        };
        let name = name.trim();
        if !crate::headers::is_token(name) {
            return Err(err(
                &raw.source,
                &format!("entry {} does not start with a valid header name", i + 1),
            ));
        }
        let value = value.trim();
        if value.chars().any(|c| c.is_control()) {
            return Err(err(
                &raw.source,
                &format!("header {name} has a control character in its value"),
            ));
        }
        out.push((name.to_string(), Secret::new(value)));
    }
    Ok(out)
}

/// Fuzzing entry point (`fuzz/`): one `--mcp.server-url` (or, with `command`, `--mcp.command`)
/// entry through the parsing steps of `parse_channels`, without the per-channel options' file and
/// environment lookups. Returns the channel name.
#[doc(hidden)]
pub fn fuzz_channel_entry(raw: &Raw, command: bool) -> Result<String, ConfigError> {
    let (name, value) = split_channel_entry(raw, if command { "command" } else { "url" })?;
    if command {
        crate::argv::split_command(&value).map_err(|e| err(&raw.source, &e))?;
    } else {
        let (url, _options) = split_url_options(&value);
        validate_mcp_url(&Raw {
            source: raw.source.clone(),
            value: url,
        })?;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-test-0123456789";

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn base_env() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "CONTROL_PLANE_TUNNEL_ID",
                "tunnel_0123456789abcdef0123456789abcdef",
            ),
            ("CONTROL_PLANE_API_KEY", KEY),
            ("MCP_SERVER_URL", "http://127.0.0.1:3000/mcp"),
        ]
    }

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<RunConfig, ConfigError> {
        let args = args.iter().map(OsString::from).collect();
        match parse_run(args, &env_of(env))? {
            Parsed::Run(c) => Ok(*c),
            Parsed::Help => panic!("unexpected help"),
        }
    }

    #[test]
    fn defaults_apply() {
        let c = parse(&[], &base_env()).unwrap();
        assert_eq!(c.control_plane.base_url, "https://api.openai.com");
        assert_eq!(c.control_plane.poll_timeout, Duration::from_secs(30));
        assert_eq!(
            c.control_plane.poll_deadline_guardrail,
            Duration::from_secs(5)
        );
        assert_eq!(c.control_plane.max_inflight, 20);
        assert_eq!(c.mcp.max_concurrent, 10);
        assert_eq!(c.mcp.connection_max_ttl, Duration::from_secs(600));
        assert_eq!(c.drain_timeout, Duration::from_secs(10));
        assert_eq!(c.control_plane.api_key.expose(), KEY);
        assert_eq!(
            c.control_plane.tunnel_url(),
            "https://api.openai.com/v1/tunnels/tunnel_0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn flags_beat_env_beats_default() {
        let mut env = base_env();
        env.push(("CONTROL_PLANE_POLL_TIMEOUT", "10s"));
        let c = parse(&[], &env).unwrap();
        assert_eq!(c.control_plane.poll_timeout, Duration::from_secs(10));
        let c = parse(&["--control-plane.poll-timeout", "4500ms"], &env).unwrap();
        assert_eq!(c.control_plane.poll_timeout, Duration::from_millis(4500));
        let c = parse(&["--control-plane.poll-timeout=2s"], &env).unwrap();
        assert_eq!(c.control_plane.poll_timeout, Duration::from_secs(2));
    }

    #[test]
    fn openai_api_key_is_the_fallback() {
        let env = [
            ("CONTROL_PLANE_TUNNEL_ID", "tunnel_x"),
            ("OPENAI_API_KEY", "sk-fallback"),
            ("MCP_SERVER_URL", "http://127.0.0.1:3000/mcp"),
        ];
        let c = parse(&[], &env).unwrap();
        assert_eq!(c.control_plane.api_key.expose(), "sk-fallback");
    }

    #[test]
    fn missing_required_names_the_variable() {
        let e = parse(&[], &[("CONTROL_PLANE_API_KEY", KEY)]).unwrap_err();
        assert_eq!(e.key, "CONTROL_PLANE_TUNNEL_ID");
    }

    #[test]
    fn literal_key_on_argv_is_refused_without_echo() {
        let e = parse(
            &["--control-plane.api-key", "sk-literal-on-argv"],
            &base_env(),
        )
        .unwrap_err();
        assert_eq!(e.key, API_KEY);
        assert!(!e.to_string().contains("sk-literal-on-argv"));
    }

    #[test]
    fn key_references_resolve() {
        let mut env = base_env();
        env.push(("MY_KEY", "sk-from-env"));
        let c = parse(&["--control-plane.api-key", "env:MY_KEY"], &env).unwrap();
        assert_eq!(c.control_plane.api_key.expose(), "sk-from-env");

        let path = std::env::temp_dir().join(format!("mcp-tunnel-key-{}", std::process::id()));
        std::fs::write(&path, "sk-from-file\n").unwrap();
        let arg = format!("file:{}", path.display());
        let c = parse(&["--control-plane.api-key", &arg], &env).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.control_plane.api_key.expose(), "sk-from-file");

        let e = parse(&["--control-plane.api-key", "env:NOPE"], &env).unwrap_err();
        assert!(e.message.contains("NOPE"));
    }

    #[test]
    fn plain_http_only_for_loopback() {
        let mut env = base_env();
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            env.push(("CONTROL_PLANE_BASE_URL", ok));
            assert!(parse(&[], &env).is_ok(), "{ok}");
            env.pop();
        }
        env.push(("CONTROL_PLANE_BASE_URL", "http://example.com"));
        let e = parse(&[], &env).unwrap_err();
        assert_eq!(e.key, "CONTROL_PLANE_BASE_URL");
        assert!(e.message.contains("https://"));
    }

    #[test]
    fn base_url_with_path_is_an_error() {
        let e = parse(
            &["--control-plane.base-url", "https://x.example/v1"],
            &base_env(),
        );
        assert_eq!(e.unwrap_err().key, BASE_URL);
        let c = parse(
            &["--control-plane.base-url", "https://x.example/"],
            &base_env(),
        )
        .unwrap();
        assert_eq!(c.control_plane.base_url, "https://x.example");
    }

    #[test]
    fn url_path_prefix_is_normalised() {
        let c = parse(&["--control-plane.url-path", "/gw/"], &base_env()).unwrap();
        assert_eq!(c.control_plane.url_path, "/gw");
        assert!(
            c.control_plane
                .tunnel_url()
                .ends_with("/gw/v1/tunnels/tunnel_0123456789abcdef0123456789abcdef")
        );
        assert!(parse(&["--control-plane.url-path", "gw?x=1"], &base_env()).is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "--control-plane.poll-timeout",
                "30",
                "--control-plane.poll-timeout",
            ),
            (
                "--control-plane.max-inflight",
                "0",
                "--control-plane.max-inflight",
            ),
            (
                "--mcp.max-concurrent-requests",
                "x",
                "--mcp.max-concurrent-requests",
            ),
            ("--mcp.server-url", "ftp://x/", "--mcp.server-url"),
            ("--log.level", "loud", "--log.level"),
            ("--mcp.extra-headers", "NoColon", "--mcp.extra-headers"),
        ];
        for (flag, value, key) in cases {
            let e = parse(&[flag, value], &base_env()).unwrap_err();
            assert_eq!(&e.key, key, "{flag}={value}");
        }
        let e = parse(&["--no-such-flag", "1"], &base_env()).unwrap_err();
        assert_eq!(e.key, "--no-such-flag");
    }

    #[test]
    fn extra_headers_parse_and_stay_masked() {
        let mut env = base_env();
        env.push((
            "MCP_EXTRA_HEADERS",
            "Authorization: Bearer abc, X-Team: blue",
        ));
        let c = parse(&[], &env).unwrap();
        let names: Vec<_> = c
            .mcp
            .extra_headers
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, ["Authorization", "X-Team"]);
        assert_eq!(c.mcp.extra_headers[0].1.expose(), "Bearer abc");
        assert!(!format!("{c:?}").contains("Bearer abc"));
        assert!(!format!("{c:?}").contains(KEY));
    }

    #[test]
    fn control_plane_headers_cannot_override_ours() {
        let mut env = base_env();
        env.push(("CONTROL_PLANE_EXTRA_HEADERS", "authorization: Bearer other"));
        let e = parse(&[], &env).unwrap_err();
        assert_eq!(e.key, "CONTROL_PLANE_EXTRA_HEADERS");
        assert!(!e.message.contains("Bearer other"));
    }

    #[test]
    fn help_lists_every_option_with_env_and_default() {
        let help = run_help();
        for o in RUN_OPTIONS {
            assert!(help.contains(o.flag), "{}", o.flag);
            for var in o.env {
                assert!(help.contains(var), "{var}");
            }
        }
        assert!(help.contains("https://api.openai.com"));
    }

    fn channels(env: &[(&str, &str)], args: &[&str]) -> Result<Vec<ChannelConfig>, ConfigError> {
        let mut all = vec![
            (
                "CONTROL_PLANE_TUNNEL_ID",
                "tunnel_0123456789abcdef0123456789abcdef",
            ),
            ("CONTROL_PLANE_API_KEY", KEY),
        ];
        all.extend_from_slice(env);
        parse(args, &all).map(|c| c.mcp.channels)
    }

    #[test]
    fn bare_url_and_command_are_channel_main() {
        let c = channels(&[("MCP_SERVER_URL", "http://127.0.0.1:1/mcp")], &[]).unwrap();
        assert_eq!(c[0].name, "main");
        let c = channels(&[("MCP_COMMAND", "npx -y 'my server'")], &[]).unwrap();
        assert!(matches!(&c[0].transport,
            ChannelTransport::Stdio { argv } if argv == &["npx", "-y", "my server"]));
    }

    #[test]
    fn qualified_channels_from_flags_and_env_lines() {
        let c = channels(
            &[],
            &[
                "--mcp.server-url",
                "http://127.0.0.1:1/mcp",
                "--mcp.server-url",
                "channel=analytics,url=https://a.example/mcp",
                "--mcp.command",
                "channel=tools,command=python3 -m srv --opt=a,b",
            ],
        )
        .unwrap();
        let names: Vec<_> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["main", "analytics", "tools"]);
        assert!(matches!(&c[2].transport,
            ChannelTransport::Stdio { argv } if argv == &["python3", "-m", "srv", "--opt=a,b"]));
        let c = channels(
            &[(
                "MCP_SERVER_URL",
                "http://127.0.0.1:1/mcp\nchannel=b,url=http://127.0.0.1:2/mcp\n",
            )],
            &[],
        )
        .unwrap();
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn channel_mistakes_are_named() {
        let dup = channels(
            &[
                ("MCP_SERVER_URL", "http://127.0.0.1:1/mcp"),
                ("MCP_COMMAND", "srv"),
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(dup.key, "MCP_COMMAND");
        assert!(dup.message.contains("twice"));
        let no_main = channels(
            &[("MCP_SERVER_URL", "channel=x,url=http://127.0.0.1:1/mcp")],
            &[],
        );
        assert!(no_main.unwrap_err().message.contains("main"));
        let bad_name = channels(&[("MCP_COMMAND", "channel=Bad Name,command=srv")], &[]);
        assert_eq!(bad_name.unwrap_err().key, "MCP_COMMAND");
        let bad_quote = channels(&[("MCP_COMMAND", "srv 'open")], &[]);
        assert!(bad_quote.unwrap_err().message.contains("quote"));
        let none = channels(&[], &[]).unwrap_err();
        assert_eq!(none.key, "MCP_SERVER_URL");
    }

    fn proxy_of(net: &HopNet) -> String {
        match &net.proxy {
            ProxyChoice::Explicit(p) => p.to_string(),
            ProxyChoice::FromEnvironment => "env".into(),
            ProxyChoice::Direct => "direct".into(),
        }
    }

    fn http_net(c: &ChannelConfig) -> &HopNet {
        match &c.transport {
            ChannelTransport::Http { net, .. } => net,
            ChannelTransport::Stdio { .. } => panic!("not an http channel"),
        }
    }

    #[test]
    fn url_options_split_from_the_url() {
        let (url, opts) =
            split_url_options("http://x/mcp?a=1,b,client-cert=/c.pem,http-proxy=http://p:1");
        assert_eq!(url, "http://x/mcp?a=1,b");
        assert_eq!(
            opts,
            [
                ("client-cert".to_string(), "/c.pem".to_string()),
                ("http-proxy".to_string(), "http://p:1".to_string())
            ]
        );
    }

    #[test]
    fn proxies_layer_channel_over_mcp_over_global() {
        let mut env = base_env();
        env.push(("TUNNEL_CLIENT_HTTP_PROXY", "http://global:1"));
        let c = parse(&[], &env).unwrap();
        assert_eq!(proxy_of(&c.control_plane.net), "http://global:1");
        assert_eq!(proxy_of(http_net(&c.mcp.channels[0])), "http://global:1");

        env.push(("CONTROL_PLANE_HTTP_PROXY", "http://u:pw@cp:2"));
        env.push(("MCP_HTTP_PROXY", "env:MY_PROXY"));
        env.push(("MY_PROXY", "http://mcp:3"));
        let c = parse(
            &[
                "--mcp.server-url",
                "channel=main,url=http://127.0.0.1:1/mcp,http-proxy=http://ch:4",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(proxy_of(&c.control_plane.net), "http://cp:2");
        assert_eq!(proxy_of(http_net(&c.mcp.channels[0])), "http://ch:4");
        assert!(!format!("{c:?}").contains("pw@"));

        let c = parse(&[], &env).unwrap();
        assert_eq!(proxy_of(http_net(&c.mcp.channels[0])), "http://mcp:3");
        let c = parse(&[], &base_env()).unwrap();
        assert_eq!(proxy_of(&c.control_plane.net), "env");
    }

    #[test]
    fn unix_socket_excludes_a_proxy() {
        let e = parse(
            &[
                "--mcp.server-url",
                "channel=main,url=http://mcp/mcp,unix-socket=/run/mcp.sock,http-proxy=http://p:1",
            ],
            &base_env(),
        )
        .unwrap_err();
        assert_eq!(e.key, "--mcp.server-url");
        let c = parse(
            &[
                "--mcp.server-url",
                "channel=main,url=http://mcp/mcp,unix-socket=/run/mcp.sock",
            ],
            &base_env(),
        )
        .unwrap();
        let net = http_net(&c.mcp.channels[0]);
        assert_eq!(
            net.unix_socket.as_deref(),
            Some(std::path::Path::new("/run/mcp.sock"))
        );
    }

    /// A throwaway self-signed certificate and key as PEM files in a fresh directory.
    fn cert_files(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("mcp-tunnel-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn client_certificates_are_checked_at_startup() {
        let (cert, key) = cert_files("a");
        let (_, other_key) = cert_files("b");
        let (cert, key, other_key) = (
            cert.display().to_string(),
            key.display().to_string(),
            other_key.display().to_string(),
        );
        let c = parse(
            &[
                "--control-plane.client-cert",
                &cert,
                "--control-plane.client-key",
                &key,
            ],
            &base_env(),
        )
        .unwrap();
        assert!(c.control_plane.net.identity.is_some());
        // mutual TLS with OpenAI goes to its mTLS host
        assert_eq!(c.control_plane.base_url, "https://mtls.api.openai.com");

        let e = parse(&["--control-plane.client-cert", &cert], &base_env()).unwrap_err();
        assert_eq!(e.key, "--control-plane.client-key");
        let e = parse(
            &["--mcp.client-cert", &cert, "--mcp.client-key", &other_key],
            &base_env(),
        )
        .unwrap_err();
        assert_eq!(e.key, "--mcp.client-cert");
        assert!(e.message.contains("does not belong"), "{e}");
        let e = parse(
            &["--mcp.client-cert", &key, "--mcp.client-key", &key],
            &base_env(),
        )
        .unwrap_err();
        assert!(e.message.contains("CERTIFICATE"), "{e}");
    }

    #[test]
    fn ca_bundle_errors_name_the_key() {
        let e = parse(&["--ca-bundle", "/nonexistent/ca.pem"], &base_env()).unwrap_err();
        assert_eq!(e.key, "--ca-bundle");
        let (cert, _) = cert_files("ca");
        assert!(parse(&["--ca-bundle", &cert.display().to_string()], &base_env()).is_ok());
    }

    #[test]
    fn switches_work_bare_and_with_a_value() {
        let c = parse(
            &["--exit-on-auth-failure", "--log.level", "debug"],
            &base_env(),
        )
        .unwrap();
        assert!(c.ops.exit_on_auth_failure);
        let c = parse(&["--exit-on-auth-failure=false"], &base_env()).unwrap();
        assert!(!c.ops.exit_on_auth_failure);
        let mut env = base_env();
        env.push(("EXIT_ON_AUTH_FAILURE", "true"));
        assert!(parse(&[], &env).unwrap().ops.exit_on_auth_failure);
    }

    #[test]
    fn secret_variables_are_listed_for_scrubbing() {
        let mut env = base_env();
        env.push(("MY_KEY", "sk-x"));
        env.push(("PROXY_CREDS", "http://u:p@proxy:1"));
        let c = parse(
            &[
                "--control-plane.api-key",
                "env:MY_KEY",
                "--mcp.server-url",
                "channel=main,url=http://127.0.0.1:1/mcp,http-proxy=env:PROXY_CREDS",
            ],
            &env,
        )
        .unwrap();
        for var in [
            "CONTROL_PLANE_API_KEY",
            "OPENAI_API_KEY",
            "MCP_EXTRA_HEADERS",
            "MY_KEY",
            "PROXY_CREDS",
        ] {
            assert!(c.secret_env_vars.iter().any(|v| v == var), "{var}");
        }
        assert!(!c.secret_env_vars.iter().any(|v| v == "PATH"));
    }
}
