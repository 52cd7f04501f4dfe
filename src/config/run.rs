//! `run`'s validated, immutable [`RunConfig`] (and its parts), built from the flags, the
//! environment, the env file and the YAML config file by [`parse_run`].
//!
//! Precedence: flag > environment variable > env file > YAML config file > default. Every error
//! names the offending key (the flag, variable or `FILE:LINE: yaml.key` the value came from) and
//! says how to fix it; no error ever repeats a secret's value. The process exits with code 2 on
//! any of them.
//!
//! Secret-bearing options (API key, extra header sets) accept references instead of values:
//! `env:VAR` reads another environment variable, `file:/path` reads a file (trailing newline
//! trimmed). On the command line the API key *must* be a reference: argv is visible to every user
//! of the host through `ps` and `/proc`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::channels::{ChannelConfig, StdioOptions, StdioSessions, parse_channels};
use super::harpoon::{self, HarpoonConfig};
use super::log_options::{LogConfig, log_config};
use super::network::hop_nets;
use super::profile::config_file;
use super::run_options::{
    API_KEY, BASE_URL, CP_CLIENT_KEY, CP_EXTRA_HEADERS, CP_HTTP_PROXY, DEFAULT_BASE_URL,
    DEFAULT_MTLS_BASE_URL, DRAIN_TIMEOUT, EXIT_ON_AUTH_FAILURE, HARPOON_HTTP_PROXY,
    HARPOON_MAX_BYTES, HARPOON_MAX_REDIRECTS, HARPOON_PLAINTEXT, HARPOON_TARGET, HEALTH_LISTEN,
    HEALTH_UNIX_SOCKET, HEALTH_URL_FILE, HTTP_PROXY, LOG_HTTP_RAW, MAX_INFLIGHT, MCP_CLIENT_KEY,
    MCP_COMMAND, MCP_CONN_TTL, MCP_DISCOVERY_ALLOW, MCP_DISCOVERY_HEADERS, MCP_EXTRA_HEADERS,
    MCP_HTTP_PROXY, MCP_MAX_CONCURRENT, MCP_MAX_STREAMS, MCP_REQUIRE_DISCOVERY, MCP_STARTUP_WAIT,
    MCP_STDIO_IDLE, MCP_STDIO_MAX_SESSIONS, MCP_STDIO_SESSIONS, MCP_URL, ORGANIZATION_ID, PID_FILE,
    POLL_CHANNELS, POLL_GUARDRAIL, POLL_TIMEOUT, RUN_OPTIONS, TUNNEL_ID, URL_PATH,
};
use super::table::{ConfigError, Raw, Sources, Unsupported, env_file_layer, err};
use super::values::{
    any_duration, count, header_set, is_reference, origin_of, parse_bool, positive_duration,
    resolve_secret, validate_base_url, validate_listen_addr, validate_tunnel_id, validate_url_path,
};
use crate::net::HopNet;
use crate::secret::Secret;

/// The hard ceiling the contract puts on one poll's `limit`.
pub const MAX_POLL_LIMIT: usize = 25;

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
    /// Extra headers, `OpenAI-Organization` among them when [`organization_id`](Self::organization_id)
    /// is set.
    pub extra_headers: Vec<(String, Secret)>,
    /// `--control-plane.organization-id`: sent as `OpenAI-Organization` (in `extra_headers`).
    pub organization_id: Option<String>,
    /// `--control-plane.poll-channel`: the channels polled for, sorted; empty for unscoped polls.
    pub poll_channels: Vec<String>,
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

/// Validated settings for the MCP hop.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// At least `main`, names unique and canonical.
    pub channels: Vec<ChannelConfig>,
    pub max_concurrent: usize,
    /// Long-lived streams held at once (`--mcp.max-streams`, our relay extension).
    pub max_streams: usize,
    pub extra_headers: Vec<(String, Secret)>,
    pub connection_max_ttl: Duration,
    /// `--mcp.startup-wait-timeout`: how long the first poll may wait for the HTTP servers'
    /// listeners; zero for not at all.
    pub startup_wait_timeout: Duration,
    /// OAuth discovery for `main` (the `oauth_discovery` command).
    pub discovery: DiscoveryConfig,
    /// The embedded server on channel `harpoon`; off without targets.
    pub harpoon: HarpoonConfig,
}

/// Settings of OAuth discovery.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryConfig {
    /// Override the MCP static headers of the same name on discovery requests.
    pub extra_headers: Vec<(String, Secret)>,
    /// Normalized origins (`scheme://host[:port]`, default port left out) besides main's from
    /// which metadata named by a `resource_metadata` challenge may be fetched.
    pub allow_origins: Vec<String>,
    /// Readiness waits until the start-up discovery of an HTTP `main` found metadata.
    pub required: bool,
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
    /// Warnings for the log once it is set up: official settings given that this build ignores.
    pub notices: Vec<String>,
}

/// The operator surface of `run`.
#[derive(Debug, Clone, Default)]
pub struct OpsConfig {
    /// Where /healthz, /readyz and /metrics listen; `None` when disabled.
    pub health_listen: Option<String>,
    /// `--health.unix-socket`: serve there instead of `health_listen`.
    pub health_unix_socket: Option<PathBuf>,
    pub health_url_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub exit_on_auth_failure: bool,
    /// `--log.http-raw-unsafe`: outbound exchange heads at debug, credentials redacted.
    pub http_raw_log: bool,
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<RunConfig>),
    Help,
}

/// Reads `run`'s arguments (after the subcommand) and the environment into a [`RunConfig`].
/// `env` is injected so tests need not touch the process environment.
pub fn parse_run(
    args: Vec<OsString>,
    process_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    let parsed = with_run_sources(args, process_env, |src, file| build(src, file.notices))?;
    Ok(parsed.map_or(Parsed::Help, |cfg| Parsed::Run(Box::new(cfg))))
}

/// The files a configuration was read from besides flags and the environment.
pub struct ConfigFiles<'a> {
    /// The KEY=VALUE env file's path and variables.
    pub env_file: Option<(&'a str, &'a std::collections::HashMap<String, String>)>,
    /// Warnings about the YAML file (a literal key).
    pub notices: Vec<String>,
}

/// Builds `run`'s [`Sources`] — flags, the environment, the env file, the YAML config file — and
/// hands them to `f`; `Ok(None)` for `--help`.
pub fn with_run_sources<T>(
    args: Vec<OsString>,
    process_env: &dyn Fn(&str) -> Option<String>,
    f: impl FnOnce(&Sources<'_>, ConfigFiles<'_>) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    let file = env_file_layer(args, process_env)?;
    let file_vars = &file.vars;
    let env = &|name: &str| process_env(name).or_else(|| file_vars.get(name).cloned());
    let Some(src) = Sources::parse(RUN_OPTIONS, file.args, env, "run")? else {
        return Ok(None);
    };
    let loaded = match config_file(&src, env)? {
        Some(path) => super::yaml::load(&path, RUN_OPTIONS, env)?,
        None => Default::default(),
    };
    let src = src.with_layer(&loaded.layer);
    let files = ConfigFiles {
        env_file: file.path.as_deref().map(|p| (p, file_vars)),
        notices: loaded.notices.clone(),
    };
    f(&src, files).map(Some)
}

/// Checks every setting of `run`, as [`parse_run`] does.
pub(super) fn validate(src: &Sources<'_>) -> Result<(), ConfigError> {
    build(src, Vec::new()).map(drop)
}

/// Validates every setting of `run`.
fn build(src: &Sources<'_>, mut notices: Vec<String>) -> Result<RunConfig, ConfigError> {
    let env = src.env();
    // A literal key on argv would be visible in `ps`; refuse before anything else looks at it.
    if src.flag(API_KEY).is_some_and(|v| !is_reference(v)) {
        return Err(err(
            API_KEY,
            "a key on the command line is visible to every user of the host; \
             pass env:VAR or file:/path instead, or set CONTROL_PLANE_API_KEY",
        ));
    }
    notices.extend(unsupported_settings(src)?);
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
    let mut cp_extra_headers = header_set(&src.values(CP_EXTRA_HEADERS), env)?;
    for (name, _) in &cp_extra_headers {
        if crate::headers::is_reserved_header(name) {
            return Err(err(
                &cp_extra.source,
                &format!("header {name} is set by mcp-tunnel itself and cannot be overridden"),
            ));
        }
    }
    let organization_id = validate_organization_id(&get(ORGANIZATION_ID))?;
    if let Some(id) = &organization_id {
        if cp_extra_headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(ORGANIZATION_HEADER))
        {
            return Err(err(
                &cp_extra.source,
                &format!(
                    "sets {ORGANIZATION_HEADER}, which CONTROL_PLANE_ORGANIZATION_ID \
                     ({ORGANIZATION_ID}) sets too; give it once"
                ),
            ));
        }
        cp_extra_headers.push((ORGANIZATION_HEADER.to_string(), Secret::new(id.clone())));
    }

    // Outbound networking, shared by both hops unless a narrower setting wins.
    let nets = hop_nets(src)?;
    // OpenAI serves mutual-TLS clients on a separate host.
    let base_url = if nets.control_plane.identity.is_some() && base_url == DEFAULT_BASE_URL {
        DEFAULT_MTLS_BASE_URL.to_string()
    } else {
        base_url
    };

    let sessions = get(MCP_STDIO_SESSIONS);
    let stdio_defaults = StdioOptions {
        sessions: StdioSessions::parse(&sessions.source, &sessions.value)?,
        max_sessions: count(&get(MCP_STDIO_MAX_SESSIONS), 1, 1_000)?,
        session_idle_timeout: positive_duration(&get(MCP_STDIO_IDLE))?,
    };
    let channels = parse_channels(
        &src.values(MCP_URL),
        &src.values(MCP_COMMAND),
        &nets.mcp_defaults,
        &stdio_defaults,
        env,
    )?;
    let mut harpoon = harpoon_config(src, nets.harpoon)?;
    if let Some(raw) = (src.values(MCP_URL).iter().chain(&src.values(MCP_COMMAND)))
        .find(|r| r.value.trim_start().starts_with("channel=harpoon,"))
    {
        return Err(err(
            &raw.source,
            "channel harpoon is reserved for the embedded Harpoon server; \
             configure it with --harpoon.target",
        ));
    }
    let (poll_channels, channels) = poll_channels(src, channels, !harpoon.targets.is_empty())?;
    // An allowlist without harpoon turns the embedded server off like any other channel.
    if !poll_channels.is_empty() && !poll_channels.iter().any(|c| c == harpoon::CHANNEL) {
        harpoon.targets.clear();
    }
    let max_concurrent = count(&get(MCP_MAX_CONCURRENT), 1, 1_000)?;
    let max_streams = count(&get(MCP_MAX_STREAMS), 0, 1_000)?;
    let mcp_extra_headers = header_set(&src.values(MCP_EXTRA_HEADERS), env)?;
    let connection_max_ttl = positive_duration(&get(MCP_CONN_TTL))?;
    let startup_wait_timeout = any_duration(&get(MCP_STARTUP_WAIT))?;
    let mut allow_origins = Vec::new();
    for raw in src.values(MCP_DISCOVERY_ALLOW) {
        for item in raw.value.split([',', '\n']).map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let bare = item
                .parse::<ureq::http::Uri>()
                .is_ok_and(|u| u.path_and_query().is_none_or(|p| p.as_str() == "/"));
            let Some(origin) = origin_of(item).filter(|_| bare) else {
                return Err(err(
                    &raw.source,
                    &format!("{item:?} is not an origin; expected scheme://host[:port], no path"),
                ));
            };
            allow_origins.push(origin);
        }
    }
    let discovery = DiscoveryConfig {
        extra_headers: header_set(&src.values(MCP_DISCOVERY_HEADERS), env)?,
        allow_origins,
        required: parse_bool(&get(MCP_REQUIRE_DISCOVERY))?,
    };
    let drain_timeout = any_duration(&get(DRAIN_TIMEOUT))?;
    let log = log_config(src)?;
    let health = get(HEALTH_LISTEN);
    let health_listen = match health.value.trim() {
        "" | "off" => None,
        addr => Some(validate_listen_addr(&health, addr)?),
    };
    let optional_path = |raw: Raw| {
        let v = raw.value.trim();
        (!v.is_empty()).then(|| PathBuf::from(v))
    };
    let ops = OpsConfig {
        health_listen,
        health_unix_socket: optional_path(get(HEALTH_UNIX_SOCKET)),
        health_url_file: optional_path(get(HEALTH_URL_FILE)),
        pid_file: optional_path(get(PID_FILE)),
        exit_on_auth_failure: parse_bool(&get(EXIT_ON_AUTH_FAILURE))?,
        http_raw_log: parse_bool(&get(LOG_HTTP_RAW))?,
    };

    let secret_env_vars = secret_env_vars(src);

    Ok(RunConfig {
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
            organization_id,
            poll_channels,
            net: nets.control_plane,
        },
        mcp: McpConfig {
            channels,
            max_concurrent,
            max_streams,
            extra_headers: mcp_extra_headers,
            connection_max_ttl,
            startup_wait_timeout,
            discovery,
            harpoon,
        },
        drain_timeout,
        log,
        ops,
        notices,
    })
}

/// `--control-plane.poll-channel`: the sorted allowlist, and the channels left enabled. Each name
/// must be canonical, given once, and have a configured server.
fn poll_channels(
    src: &Sources<'_>,
    channels: Vec<ChannelConfig>,
    harpoon_on: bool,
) -> Result<(Vec<String>, Vec<ChannelConfig>), ConfigError> {
    let mut listed: Vec<String> = Vec::new();
    for raw in src.values(POLL_CHANNELS) {
        for name in raw.value.split(',').map(str::trim) {
            let problem = if name.is_empty() {
                Some("names an empty channel".to_string())
            } else if crate::wire::canonical_channel(Some(name)).as_deref() != Some(name) {
                Some(format!(
                    "{name:?} is not a channel name (lowercase letters, digits, - and _)"
                ))
            } else if listed.iter().any(|n| n == name) {
                Some(format!("names channel {name} twice"))
            } else if name == harpoon::CHANNEL && !harpoon_on {
                Some(format!(
                    "names channel {name}, which has no MCP server here: the embedded Harpoon \
                     server needs at least one --harpoon.target"
                ))
            } else if name != harpoon::CHANNEL && !channels.iter().any(|c| c.name == name) {
                Some(format!(
                    "names channel {name}, which has no MCP server here; configure it with \
                     --mcp.server-url or --mcp.command"
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(err(&raw.source, &problem));
            }
            listed.push(name.to_string());
        }
    }
    if listed.is_empty() {
        return Ok((listed, channels));
    }
    listed.sort();
    let enabled = channels
        .into_iter()
        .filter(|c| listed.contains(&c.name))
        .collect();
    Ok((listed, enabled))
}

/// The official client's settings this build lacks, when given: an error for one we refuse, a
/// notice for one we ignore. A switch given as false asks for what we do anyway.
fn unsupported_settings(src: &Sources<'_>) -> Result<Vec<String>, ConfigError> {
    let mut notices = Vec::new();
    for o in RUN_OPTIONS {
        let (Some(kind), Some(raw)) = (o.unsupported, src.given(o.flag)) else {
            continue;
        };
        if o.switch && parse_bool(&raw).is_ok_and(|on| !on) {
            continue;
        }
        match kind {
            Unsupported::Refused => {
                return Err(err(&raw.source, &format!("is not supported: {}", o.help)));
            }
            Unsupported::Ignored => {
                notices.push(format!("{} is ignored: {}", raw.source, o.help));
            }
        }
    }
    Ok(notices)
}

/// The `--harpoon.*` settings; `net` is Harpoon's networking from [`hop_nets`].
fn harpoon_config(src: &Sources<'_>, net: HopNet) -> Result<HarpoonConfig, ConfigError> {
    let allow_plaintext_http = parse_bool(&src.get(HARPOON_PLAINTEXT))?;
    let plaintext_key = format!("{HARPOON_PLAINTEXT} (HARPOON_ALLOW_PLAINTEXT_HTTP)");
    Ok(HarpoonConfig {
        targets: harpoon::parse_targets(
            &src.values(HARPOON_TARGET),
            allow_plaintext_http,
            &plaintext_key,
        )?,
        allow_plaintext_http,
        max_response_bytes: count(&src.get(HARPOON_MAX_BYTES), 1, harpoon::MAX_RESPONSE_BYTES)?,
        max_redirects: count(&src.get(HARPOON_MAX_REDIRECTS), 0, harpoon::MAX_REDIRECTS)?,
        net,
    })
}

/// The header the organization id travels in.
pub const ORGANIZATION_HEADER: &str = "OpenAI-Organization";

/// `--control-plane.organization-id`: unset, or printable ASCII without spaces at its ends (it
/// goes into a header; a CR or LF would split the request).
fn validate_organization_id(raw: &Raw) -> Result<Option<String>, ConfigError> {
    let id = raw.value.trim();
    if raw.value.is_empty() {
        return Ok(None);
    }
    if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(err(
            &raw.source,
            "is not an organization id; expected printable ASCII such as org-AbC123 \
             (no control characters, at most 256 bytes)",
        ));
    }
    Ok(Some(id.to_string()))
}

/// Options whose values are secrets or may carry credentials.
pub(super) const SECRET_OPTIONS: &[&str] = &[
    API_KEY,
    CP_EXTRA_HEADERS,
    MCP_EXTRA_HEADERS,
    MCP_DISCOVERY_HEADERS,
    CP_CLIENT_KEY,
    MCP_CLIENT_KEY,
    HTTP_PROXY,
    CP_HTTP_PROXY,
    MCP_HTTP_PROXY,
    HARPOON_HTTP_PROXY,
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
    // A header's value may be a reference of its own (`X-Auth: env:VAR`).
    for flag in [CP_EXTRA_HEADERS, MCP_EXTRA_HEADERS, MCP_DISCOVERY_HEADERS] {
        for raw in src.values(flag) {
            for item in raw.value.split(',') {
                if let Some((_, value)) = item.split_once(':')
                    && let Some(var) = value.trim().strip_prefix("env:")
                {
                    vars.push(var.to_string());
                }
            }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::channels::ChannelTransport;
    use crate::config::run_options::run_help;
    use crate::net::ProxyChoice;

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
            ChannelTransport::Stdio { argv, options }
                if argv == &["npx", "-y", "my server"] && *options == StdioOptions::default()));
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
            ChannelTransport::Stdio { argv, .. } if argv == &["python3", "-m", "srv", "--opt=a,b"]));
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

    fn stdio_options(c: &ChannelConfig) -> &StdioOptions {
        match &c.transport {
            ChannelTransport::Stdio { options, .. } => options,
            ChannelTransport::Http { .. } => panic!("not a stdio channel"),
        }
    }

    #[test]
    fn stdio_session_modes_come_from_the_entry_over_the_flag() {
        let c = channels(
            &[(
                "MCP_COMMAND",
                "channel=main,sessions=per-session,command=srv --opt=a,b\n\
                 channel=other,command=srv2\n\
                 channel=third, sessions=shared ,command=srv3",
            )],
            &[
                "--mcp.stdio-max-sessions",
                "3",
                "--mcp.stdio-session-idle-timeout",
                "90s",
            ],
        )
        .unwrap();
        assert!(matches!(&c[0].transport,
            ChannelTransport::Stdio { argv, .. } if argv == &["srv", "--opt=a,b"]));
        let main = stdio_options(&c[0]);
        assert_eq!(main.sessions, StdioSessions::PerSession);
        assert_eq!(main.max_sessions, 3);
        assert_eq!(main.session_idle_timeout, Duration::from_secs(90));
        assert_eq!(stdio_options(&c[1]).sessions, StdioSessions::Shared);
        assert_eq!(stdio_options(&c[2]).sessions, StdioSessions::Shared);

        let c = channels(
            &[
                ("MCP_COMMAND", "srv\nchannel=b,sessions=shared,command=srv"),
                ("MCP_STDIO_SESSIONS", "per-session"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(stdio_options(&c[0]).sessions, StdioSessions::PerSession);
        assert_eq!(stdio_options(&c[1]).sessions, StdioSessions::Shared);
        assert_eq!(stdio_options(&c[0]).max_sessions, 16);
        assert_eq!(
            stdio_options(&c[0]).session_idle_timeout,
            Duration::from_secs(600)
        );
    }

    #[test]
    fn stdio_session_mistakes_are_named() {
        let bad = |env: &[(&str, &str)], args: &[&str]| channels(env, args).unwrap_err();
        let e = bad(
            &[("MCP_COMMAND", "channel=main,sessions=many,command=srv")],
            &[],
        );
        assert_eq!(e.key, "MCP_COMMAND");
        assert!(e.message.contains("per-session"), "{e}");
        let e = bad(
            &[("MCP_COMMAND", "channel=main,colour=red,command=srv")],
            &[],
        );
        assert_eq!(e.key, "MCP_COMMAND");
        assert!(e.message.contains("sessions=shared|per-session"), "{e}");
        let e = bad(
            &[],
            &[
                "--mcp.command",
                "channel=main,sessions=shared,sessions=per-session,command=srv",
            ],
        );
        assert_eq!(e.key, "--mcp.command");
        assert!(e.message.contains("twice"), "{e}");
        let e = bad(
            &[
                ("MCP_COMMAND", "srv"),
                ("MCP_STDIO_SESSIONS", "per-process"),
            ],
            &[],
        );
        assert_eq!(e.key, "MCP_STDIO_SESSIONS");
        let e = bad(
            &[("MCP_COMMAND", "srv"), ("MCP_STDIO_MAX_SESSIONS", "0")],
            &[],
        );
        assert_eq!(e.key, "MCP_STDIO_MAX_SESSIONS");
        let e = bad(
            &[("MCP_COMMAND", "srv")],
            &["--mcp.stdio-session-idle-timeout", "0s"],
        );
        assert_eq!(e.key, "--mcp.stdio-session-idle-timeout");
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
    fn header_sets_take_repeated_flags_and_per_value_references() {
        let mut env = base_env();
        env.push(("CP_AUTH", "s3cret"));
        let dir = std::env::temp_dir().join(format!("mcp-tunnel-hdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("v");
        std::fs::write(&file, "from-file\n").unwrap();
        let c = parse(
            &[
                "--control-plane.extra-headers",
                "X-Auth: env:CP_AUTH, X-Plain: a",
                "--control-plane.extra-headers",
                &format!("X-File: file:{}", file.display()),
                "--control-plane.extra-headers",
                "x-plain: a",
            ],
            &env,
        )
        .unwrap();
        let got: Vec<(String, String)> = (c.control_plane.extra_headers.iter())
            .map(|(n, v)| (n.clone(), v.expose().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("X-Auth".to_string(), "s3cret".to_string()),
                ("X-Plain".to_string(), "a".to_string()),
                ("X-File".to_string(), "from-file".to_string()),
            ]
        );
        assert!(c.secret_env_vars.iter().any(|v| v == "CP_AUTH"));
        let e = parse(&["--mcp.extra-headers", "X-A: 1, x-a: 2"], &env).unwrap_err();
        assert_eq!(e.key, "--mcp.extra-headers");
        assert!(e.message.contains("different values"), "{e}");
        let e = parse(&["--mcp.discovery-extra-headers", "X-A: env:NOPE"], &env).unwrap_err();
        assert!(
            e.message.contains("header X-A") && e.message.contains("NOPE"),
            "{e}"
        );
        env.push(("MCP_EXTRA_HEADERS", "env:ALL"));
        env.push(("ALL", "X-B: env:CP_AUTH"));
        let c = parse(&[], &env).unwrap();
        assert_eq!(c.mcp.extra_headers[0].1.expose(), "s3cret");
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
