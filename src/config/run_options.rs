//! `run`'s option table: every flag, its environment variables, default and help line, in
//! `--help` order, and the key constants the rest of `config` reads them by.
//!
//! Names are the official `tunnel-client`'s, so an operator who followed its docs switches
//! binaries without rewriting anything. What each value must look like is checked where the
//! [`RunConfig`](super::RunConfig) is built ([`super::run`]); this file only declares.

use super::log_options::{LOG_FILE, LOG_FORMAT, LOG_LEVEL};
use super::official_options::OFFICIAL_ONLY;
use super::profile::{
    CONFIG, CONFIG_VAR, PROFILE, PROFILE_DIR, PROFILE_DIR_VAR, PROFILE_FILE, PROFILE_FILE_VAR,
    PROFILE_VAR,
};
use super::table::{ENV_FILE, Opt, YamlShape, help_text};

// Option keys, shared by the table and the code that validates the values.
pub(super) const BASE_URL: &str = "--control-plane.base-url";
pub(super) const URL_PATH: &str = "--control-plane.url-path";
pub(super) const TUNNEL_ID: &str = "--control-plane.tunnel-id";
pub(super) const API_KEY: &str = "--control-plane.api-key";
pub(super) const ORGANIZATION_ID: &str = "--control-plane.organization-id";
pub(super) const POLL_TIMEOUT: &str = "--control-plane.poll-timeout";
pub(super) const POLL_GUARDRAIL: &str = "--control-plane.poll-deadline-guardrail";
pub(super) const MAX_INFLIGHT: &str = "--control-plane.max-inflight";
pub(super) const CP_EXTRA_HEADERS: &str = "--control-plane.extra-headers";
pub(super) const POLL_CHANNELS: &str = "--control-plane.poll-channel";
pub(super) const MCP_URL: &str = "--mcp.server-url";
pub(super) const MCP_COMMAND: &str = "--mcp.command";
pub(super) const MCP_STDIO_SESSIONS: &str = "--mcp.stdio-sessions";
pub(super) const MCP_STDIO_MAX_SESSIONS: &str = "--mcp.stdio-max-sessions";
pub(super) const MCP_STDIO_IDLE: &str = "--mcp.stdio-session-idle-timeout";
pub(super) const MCP_MAX_CONCURRENT: &str = "--mcp.max-concurrent-requests";
pub(super) const MCP_MAX_STREAMS: &str = "--mcp.max-streams";
pub(super) const MCP_EXTRA_HEADERS: &str = "--mcp.extra-headers";
pub(super) const MCP_CONN_TTL: &str = "--mcp.connection-max-ttl";
pub(super) const MCP_STARTUP_WAIT: &str = "--mcp.startup-wait-timeout";
pub(super) const MCP_DISCOVERY_HEADERS: &str = "--mcp.discovery-extra-headers";
pub(super) const MCP_DISCOVERY_ALLOW: &str = "--mcp.discovery-allow-origin";
pub(super) const MCP_REQUIRE_DISCOVERY: &str = "--mcp.require-oauth-discovery";
pub(super) const DRAIN_TIMEOUT: &str = "--shutdown.drain-timeout";
pub(super) const CA_BUNDLE: &str = "--ca-bundle";
pub(super) const CA_BUNDLE_SYSTEM: &str = "--ca-bundle.system";
pub(super) const HTTP_PROXY: &str = "--http-proxy";
pub(super) const CP_HTTP_PROXY: &str = "--control-plane.http-proxy";
pub(super) const CP_CLIENT_CERT: &str = "--control-plane.client-cert";
pub(super) const CP_CLIENT_KEY: &str = "--control-plane.client-key";
pub(super) const MCP_HTTP_PROXY: &str = "--mcp.http-proxy";
pub(super) const MCP_CLIENT_CERT: &str = "--mcp.client-cert";
pub(super) const MCP_CLIENT_KEY: &str = "--mcp.client-key";
pub(super) const HEALTH_LISTEN: &str = "--health.listen-addr";
pub(super) const HEALTH_UNIX_SOCKET: &str = "--health.unix-socket";
pub(super) const HEALTH_URL_FILE: &str = "--health.url-file";
pub(super) const PID_FILE: &str = "--pid.file";
pub(super) const PID_FILE_ALIAS: &str = "--pid-file";
pub(super) const EXIT_ON_AUTH_FAILURE: &str = "--exit-on-auth-failure";
pub(super) const LOG_HTTP_RAW: &str = "--log.http-raw-unsafe";
pub(super) const HARPOON_TARGET: &str = "--harpoon.target";
pub(super) const HARPOON_PLAINTEXT: &str = "--harpoon.allow-plaintext-http";
pub(super) const HARPOON_MAX_BYTES: &str = "--harpoon.max-response-bytes";
pub(super) const HARPOON_MAX_REDIRECTS: &str = "--harpoon.max-redirects";
pub(super) const HARPOON_HTTP_PROXY: &str = "--harpoon.http-proxy";

/// Options that resolve `env:`/`file:` references themselves (a YAML file passes them on).
pub(super) const REFERENCE_OPTIONS: &[&str] = &[
    API_KEY,
    CP_CLIENT_CERT,
    CP_CLIENT_KEY,
    MCP_CLIENT_CERT,
    MCP_CLIENT_KEY,
    HTTP_PROXY,
    CP_HTTP_PROXY,
    MCP_HTTP_PROXY,
];

/// `mcp.server_urls[]`: `channel=…,url=…,…` entries of `--mcp.server-url`.
const SERVER_URL_ENTRY: YamlShape = YamlShape::Entries(
    &[
        ("channel", "channel"),
        ("url", "url"),
        ("unix_socket", "unix-socket"),
        ("http_proxy", "http-proxy"),
        ("client_cert", "client-cert"),
        ("client_key", "client-key"),
    ],
    "url",
    "channel",
);
/// `mcp.commands[]`: `channel=…,command=…` entries of `--mcp.command` (the command last).
const COMMAND_ENTRY: YamlShape = YamlShape::Entries(
    &[("channel", "channel"), ("command", "command")],
    "command",
    "channel",
);

/// The default control plane, and where it expects mutual-TLS clients.
pub(super) const DEFAULT_BASE_URL: &str = "https://api.openai.com";
pub(super) const DEFAULT_MTLS_BASE_URL: &str = "https://mtls.api.openai.com";

/// `run`'s own options (the official client's names where it has them), in `--help` order.
const OWN_OPTIONS: &[Opt] = &[
    Opt {
        flag: BASE_URL,
        yaml: "control_plane.base_url",
        env: &["CONTROL_PLANE_BASE_URL"],
        default: Some(DEFAULT_BASE_URL),
        help: "Control-plane origin (scheme://host[:port], no path). http:// only for loopback hosts.",
        ..Opt::BASE
    },
    Opt {
        flag: URL_PATH,
        yaml: "control_plane.url_path",
        env: &["CONTROL_PLANE_URL_PATH"],
        default: Some(""),
        help: "Path prefix put before /v1/tunnels/... (for API gateways).",
        ..Opt::BASE
    },
    Opt {
        flag: TUNNEL_ID,
        yaml: "control_plane.tunnel_id",
        env: &["CONTROL_PLANE_TUNNEL_ID"],
        default: None,
        help: "Tunnel id, e.g. tunnel_0123456789abcdef0123456789abcdef. Required.",
        ..Opt::BASE
    },
    Opt {
        flag: API_KEY,
        yaml: "control_plane.api_key",
        env: &["CONTROL_PLANE_API_KEY", "OPENAI_API_KEY"],
        default: None,
        help: "Runtime API key. Required. On the command line only as env:VAR or file:/path.",
        ..Opt::BASE
    },
    Opt {
        flag: ORGANIZATION_ID,
        yaml: "control_plane.organization_id",
        env: &["CONTROL_PLANE_ORGANIZATION_ID"],
        default: Some(""),
        help: "Sent as OpenAI-Organization on every control-plane request (poll, response, metadata; \
         never to MCP servers), for a key that belongs to several organizations.",
        ..Opt::BASE
    },
    Opt {
        flag: POLL_TIMEOUT,
        yaml: "control_plane.poll_timeout",
        env: &["CONTROL_PLANE_POLL_TIMEOUT"],
        default: Some("30s"),
        help: "How long one long-poll may wait on the control plane for work.",
        ..Opt::BASE
    },
    Opt {
        flag: POLL_GUARDRAIL,
        yaml: "control_plane.poll_deadline_guardrail",
        env: &["CONTROL_PLANE_POLL_DEADLINE_GUARDRAIL"],
        default: Some("5s"),
        help: "Extra time allowed for a poll's HTTP exchange beyond the poll wait.",
        ..Opt::BASE
    },
    Opt {
        flag: MAX_INFLIGHT,
        yaml: "control_plane.max_inflight_requests",
        env: &["CONTROL_PLANE_MAX_INFLIGHT_REQUESTS"],
        default: Some("20"),
        help: "Commands held at once (queued + running); the poll asks for at most the free slots.",
        ..Opt::BASE
    },
    Opt {
        flag: CP_EXTRA_HEADERS,
        yaml: "control_plane.extra_headers",
        yaml_shape: YamlShape::Headers,
        env: &["CONTROL_PLANE_EXTRA_HEADERS"],
        default: Some(""),
        help: "Extra headers for control-plane requests, \"K: V, K2: V2\" (or env:VAR / file:/path \
         holding that); a value may itself be env:VAR or file:/path. Repeatable.",
        repeatable: true,
        ..Opt::BASE
    },
    Opt {
        flag: POLL_CHANNELS,
        yaml: "control_plane.poll_channels",
        yaml_shape: YamlShape::List,
        env: &["CONTROL_PLANE_POLL_CHANNELS"],
        default: Some(""),
        help: "Poll only for these channels (sent as repeated channel= on the poll); the others \
         configured are disabled. Repeatable; in the variable a comma list. Unset: unscoped polls.",
        repeatable: true,
        ..Opt::BASE
    },
    Opt {
        flag: MCP_URL,
        yaml: "mcp.server_urls",
        yaml_shape: SERVER_URL_ENTRY,
        env: &["MCP_SERVER_URL"],
        default: None,
        help: "A Streamable HTTP MCP server: URL (channel main) or channel=NAME,url=URL[,client-cert=P,\
         client-key=P,http-proxy=URL,unix-socket=PATH]. Repeatable; in the variable one entry \
         per line.",
        repeatable: true,
        ..Opt::BASE
    },
    Opt {
        flag: MCP_COMMAND,
        yaml: "mcp.commands",
        yaml_shape: COMMAND_ENTRY,
        env: &["MCP_COMMAND"],
        default: None,
        help: "A stdio MCP server: command line (channel main) or channel=NAME[,sessions=shared|\
         per-session],command=LINE. Split into argv with quotes and backslashes, never run by a \
         shell. Repeatable; in the variable one entry per line.",
        repeatable: true,
        ..Opt::BASE
    },
    Opt {
        flag: MCP_STDIO_SESSIONS,
        yaml: "mcp.stdio_sessions",
        env: &["MCP_STDIO_SESSIONS"],
        default: Some("shared"),
        help: "shared: a stdio channel's sessions share its server process; per-session: each \
         connector session gets a process of its own. A channel's sessions= wins.",
        ..Opt::BASE
    },
    Opt {
        flag: MCP_STDIO_MAX_SESSIONS,
        yaml: "mcp.stdio_max_sessions",
        env: &["MCP_STDIO_MAX_SESSIONS"],
        default: Some("16"),
        help: "Per-session stdio channels: the most sessions (processes) open at once per channel; \
         a further initialize is refused.",
        ..Opt::BASE
    },
    Opt {
        flag: MCP_STDIO_IDLE,
        yaml: "mcp.stdio_session_idle_timeout",
        env: &["MCP_STDIO_SESSION_IDLE_TIMEOUT"],
        default: Some("10m"),
        help: "Per-session stdio channels: a session without traffic for this long has its process \
         stopped (the host then re-initializes).",
        ..Opt::BASE
    },
    Opt {
        flag: MCP_MAX_CONCURRENT,
        yaml: "mcp.max_concurrent_requests",
        env: &["MCP_MAX_CONCURRENT_REQUESTS"],
        default: Some("10"),
        help: "Worker threads: MCP calls running at once.",
        ..Opt::BASE
    },
    Opt {
        flag: MCP_MAX_STREAMS,
        yaml: "mcp.max_streams",
        env: &["MCP_MAX_STREAMS"],
        default: Some("16"),
        help: "Long-lived event streams held at once (relay extension), each on its own thread, \
               not a worker; beyond it a stream is refused.",
        ..Opt::BASE
    },
    Opt {
        flag: MCP_EXTRA_HEADERS,
        yaml: "mcp.extra_headers",
        yaml_shape: YamlShape::Headers,
        env: &["MCP_EXTRA_HEADERS"],
        default: Some(""),
        help: "Static headers for the MCP server, \"K: V, K2: V2\" (or env:VAR / file:/path); \
         headers carried by a command win.",
        repeatable: true,
        ..Opt::BASE
    },
    Opt {
        flag: MCP_CONN_TTL,
        yaml: "mcp.connection_max_ttl",
        env: &["MCP_CONNECTION_MAX_TTL"],
        default: Some("10m"),
        help: "Longest time an idle pooled MCP connection is kept for reuse.",
        ..Opt::BASE
    },
    Opt {
        flag: MCP_STARTUP_WAIT,
        yaml: "mcp.startup_wait_timeout",
        env: &["MCP_STARTUP_WAIT_TIMEOUT"],
        default: Some("0s"),
        help: "Before the first poll, wait up to this long for each Streamable HTTP server to \
         accept a connection (a sidecar starting after us); /readyz says so meanwhile. When it \
         passes, polling starts anyway and /readyz stays not ready until the server answers. 0s: \
         no wait.",
        ..Opt::BASE
    },
    Opt {
        flag: MCP_DISCOVERY_HEADERS,
        yaml: "mcp.discovery_extra_headers",
        yaml_shape: YamlShape::Headers,
        env: &["MCP_DISCOVERY_EXTRA_HEADERS"],
        default: Some(""),
        help: "Headers for OAuth discovery requests to main's origin, \"K: V, K2: V2\" (or env:VAR / \
         file:/path); they override --mcp.extra-headers of the same name.",
        repeatable: true,
        ..Opt::BASE
    },
    Opt {
        flag: MCP_DISCOVERY_ALLOW,
        yaml: "mcp.discovery_allow_origins",
        yaml_shape: YamlShape::List,
        env: &["MCP_DISCOVERY_ALLOW_ORIGIN"],
        default: Some(""),
        help: "An origin (scheme://host[:port]) other than main's from which OAuth discovery may \
         fetch protected-resource metadata named by the server's 401. Repeatable or a comma list.",
        repeatable: true,
        ..Opt::BASE
    },
    Opt {
        flag: MCP_REQUIRE_DISCOVERY,
        yaml: "mcp.require_oauth_discovery",
        env: &["MCP_REQUIRE_OAUTH_DISCOVERY"],
        default: Some("false"),
        help: "true: not ready until the start-up OAuth discovery of an HTTP main found its \
         protected-resource metadata (retried until then).",
        switch: true,
        ..Opt::BASE
    },
    Opt {
        flag: CA_BUNDLE,
        yaml: "ca_bundle",
        env: &["CA_BUNDLE"],
        default: Some(""),
        help: "PEM file of extra CA certificates (a private CA, a TLS-inspecting proxy), trusted in \
         addition to the built-in Mozilla roots, for every outbound TLS connection.",
        ..Opt::BASE
    },
    Opt {
        flag: CA_BUNDLE_SYSTEM,
        yaml: "ca_bundle_system",
        env: &["CA_BUNDLE_SYSTEM"],
        default: Some("false"),
        help: "true: also trust the operating system's CA bundle \
         (/etc/ssl/certs/ca-certificates.crt, /etc/pki/tls/certs/ca-bundle.crt).",
        switch: true,
        ..Opt::BASE
    },
    Opt {
        flag: HTTP_PROXY,
        yaml: "http_proxy",
        env: &["TUNNEL_CLIENT_HTTP_PROXY"],
        default: Some(""),
        help: "Proxy for both hops: http(s)://[user:pass@]host:port or env:VAR. An explicit proxy \
         ignores NO_PROXY; without one, HTTPS_PROXY/HTTP_PROXY/NO_PROXY apply.",
        ..Opt::BASE
    },
    Opt {
        flag: CP_HTTP_PROXY,
        yaml: "control_plane.http_proxy",
        env: &["CONTROL_PLANE_HTTP_PROXY"],
        default: Some(""),
        help: "Proxy for the control plane only (wins over --http-proxy).",
        ..Opt::BASE
    },
    Opt {
        flag: CP_CLIENT_CERT,
        yaml: "control_plane.client_cert",
        env: &["CONTROL_PLANE_CLIENT_CERT"],
        default: Some(""),
        help: "Client certificate for mutual TLS with the control plane: a PEM path, file:/path or \
         env:VAR. With the default base URL, https://mtls.api.openai.com is used.",
        ..Opt::BASE
    },
    Opt {
        flag: CP_CLIENT_KEY,
        yaml: "control_plane.client_key",
        env: &["CONTROL_PLANE_CLIENT_KEY"],
        default: Some(""),
        help: "Its private key (PEM path, file:/path or env:VAR).",
        ..Opt::BASE
    },
    Opt {
        flag: MCP_HTTP_PROXY,
        yaml: "mcp.http_proxy",
        env: &["MCP_HTTP_PROXY"],
        default: Some(""),
        help: "Proxy for the MCP servers (wins over --http-proxy; a channel's http-proxy= wins over it).",
        ..Opt::BASE
    },
    Opt {
        flag: MCP_CLIENT_CERT,
        yaml: "mcp.client_cert",
        env: &["MCP_CLIENT_CERT"],
        default: Some(""),
        help: "Client certificate presented to the MCP servers' origins (PEM path, file:/path or \
         env:VAR); a channel's client-cert= wins.",
        ..Opt::BASE
    },
    Opt {
        flag: MCP_CLIENT_KEY,
        yaml: "mcp.client_key",
        env: &["MCP_CLIENT_KEY"],
        default: Some(""),
        help: "Its private key.",
        ..Opt::BASE
    },
    Opt {
        flag: DRAIN_TIMEOUT,
        yaml: "shutdown.drain_timeout",
        env: &["SHUTDOWN_DRAIN_TIMEOUT"],
        default: Some("10s"),
        help: "On SIGTERM/SIGINT, how long in-flight commands may take to finish and post.",
        ..Opt::BASE
    },
    LOG_LEVEL.in_yaml("log.level", YamlShape::Scalar),
    LOG_FORMAT.in_yaml("log.format", YamlShape::Scalar),
    LOG_FILE.in_yaml("log.file", YamlShape::Scalar),
    Opt {
        flag: LOG_HTTP_RAW,
        yaml: "log.http_raw_unsafe",
        env: &["LOG_HTTP_RAW_UNSAFE"],
        default: Some("false"),
        help: "true: log every outbound HTTP request and response head at debug (URL, status, \
         headers; no bodies). Keys, bearer tokens, cookies, shard tokens and other credentials \
         stay redacted.",
        switch: true,
        ..Opt::BASE
    },
    Opt {
        flag: HEALTH_LISTEN,
        yaml: "health.listen_addr",
        env: &["HEALTH_LISTEN_ADDR"],
        default: Some("127.0.0.1:8080"),
        help: "Address of /healthz, /readyz and /metrics; :0 picks a free port, off disables.",
        ..Opt::BASE
    },
    Opt {
        flag: HEALTH_UNIX_SOCKET,
        yaml: "health.unix_socket",
        env: &["HEALTH_UNIX_SOCKET"],
        default: Some(""),
        help: "Serve /healthz, /readyz and /metrics on this Unix socket (mode 0600) instead of TCP; \
         --health.listen-addr is then not bound. A stale socket is replaced; removed on exit.",
        ..Opt::BASE
    },
    Opt {
        flag: HEALTH_URL_FILE,
        yaml: "health.url_file",
        env: &["HEALTH_URL_FILE"],
        default: Some(""),
        help: "Write the health server's base URL here (atomically; removed on exit): http://ADDR, \
         or http+unix://BASE64URL(socket path) with --health.unix-socket.",
        ..Opt::BASE
    },
    Opt {
        flag: PID_FILE,
        yaml: "process.pid_file",
        env: &["PID_FILE"],
        aliases: &[PID_FILE_ALIAS],
        default: Some(""),
        help: "Hold this pid file with an exclusive lock; if another copy holds it, exit 0 at once \
         (for cron and init scripts).",
        ..Opt::BASE
    },
    Opt {
        flag: EXIT_ON_AUTH_FAILURE,
        yaml: "exit_on_auth_failure",
        env: &["EXIT_ON_AUTH_FAILURE"],
        default: Some("false"),
        help: "true: exit with code 3 when the control plane rejects the API key (401/403) instead of \
         retrying slowly.",
        switch: true,
        ..Opt::BASE
    },
    Opt {
        flag: ENV_FILE,
        env: &["ENV_FILE"],
        default: Some(""),
        help: "KEY=VALUE file (the /etc/default and systemd EnvironmentFile format) read after the \
         process environment: flags > environment > this file > the YAML file > defaults.",
        ..Opt::BASE
    },
    Opt {
        flag: CONFIG,
        env: &[CONFIG_VAR],
        default: Some(""),
        help: "The official client's YAML config file (config_version: 1), read beneath the \
         environment: flags > environment > env file > this file > defaults. A --config file that \
         is not YAML is read as an env file, as before.",
        ..Opt::BASE
    },
    Opt {
        flag: PROFILE,
        env: &[PROFILE_VAR],
        default: Some(""),
        help: "Read the YAML config file NAME.yaml in the profile directory (instead of --config).",
        ..Opt::BASE
    },
    Opt {
        flag: PROFILE_DIR,
        env: &[PROFILE_DIR_VAR],
        default: Some(""),
        help: "The profile directory; unset: $XDG_CONFIG_HOME/tunnel-client, else \
         ~/.config/tunnel-client.",
        ..Opt::BASE
    },
    Opt {
        flag: PROFILE_FILE,
        env: &[PROFILE_FILE_VAR],
        default: Some(""),
        help: "Read this profile file (a path ending in .yaml) instead of --config or --profile.",
        ..Opt::BASE
    },
    // Harpoon, the embedded MCP server on channel `harpoon` (see `super::harpoon`).
    Opt {
        flag: HARPOON_TARGET,
        env: &["HARPOON_TARGETS"],
        default: Some(""),
        help: "Harpoon target label=NAME,url=URL[,unix-socket=PATH][,desc=TEXT] the server on \
         channel harpoon may call; repeatable (variable: lines or ;). None: no channel harpoon.",
        repeatable: true,
        ..Opt::BASE
    }
    .in_yaml("harpoon.targets", HARPOON_TARGET_ENTRY),
    Opt {
        flag: HARPOON_PLAINTEXT,
        env: &["HARPOON_ALLOW_PLAINTEXT_HTTP"],
        default: Some("false"),
        help: "Allow plaintext http:// Harpoon targets (and redirects to them).",
        switch: true,
        ..Opt::BASE
    }
    .in_yaml("harpoon.allow_plaintext_http", YamlShape::Scalar),
    Opt {
        flag: HARPOON_MAX_BYTES,
        env: &["HARPOON_MAX_RESPONSE_BYTES"],
        default: Some("102400"),
        help: "Most body bytes of one Harpoon call (1-102400): ceiling of max_response_bytes.",
        ..Opt::BASE
    }
    .in_yaml("harpoon.max_response_bytes", YamlShape::Scalar),
    Opt {
        flag: HARPOON_MAX_REDIRECTS,
        env: &["HARPOON_MAX_REDIRECTS"],
        default: Some("5"),
        help: "Most redirects one Harpoon call follows (0-5), each to a target: ceiling of \
         max_redirects.",
        ..Opt::BASE
    }
    .in_yaml("harpoon.max_redirects", YamlShape::Scalar),
    Opt {
        flag: HARPOON_HTTP_PROXY,
        env: &["HARPOON_HTTP_PROXY"],
        default: Some(""),
        help: "Proxy for Harpoon calls (URL or env:VAR); default --http-proxy, else the proxy variables.",
        ..Opt::BASE
    }
    .in_yaml("harpoon.http_proxy", YamlShape::Scalar),
];

/// `harpoon.targets[]` as `label=…,url=…,unix-socket=…,desc=…` entries of `--harpoon.target`.
const HARPOON_TARGET_ENTRY: YamlShape = YamlShape::Entries(
    &[
        ("label", "label"),
        ("url", "url"),
        ("unix_socket", "unix-socket"),
        ("description", "desc"),
    ],
    "label",
    "",
);

/// Every option of `run`, in `--help` order: ours, then the official settings we lack.
pub const RUN_OPTIONS: &[Opt] =
    &concat::<{ OWN_OPTIONS.len() + OFFICIAL_ONLY.len() }>(OWN_OPTIONS, OFFICIAL_ONLY);

/// Two option tables as one array (`N` is their total length).
const fn concat<const N: usize>(a: &[Opt], b: &[Opt]) -> [Opt; N] {
    let mut out = [Opt::BASE; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - a.len()];
        i += 1;
    }
    out
}

/// `--help` text for `run`, generated from [`RUN_OPTIONS`].
pub fn run_help() -> String {
    help_text(
        "mcp-tunnel run: poll the control plane and forward MCP requests to a private server\n\n\
         The official client's YAML config file (--config, --profile, --profile-file) is read\n\
         beneath the environment and the env file; an option's yaml: line names its key.",
        "mcp-tunnel run [OPTIONS]",
        RUN_OPTIONS,
    )
}

/// The first environment variable of `run`'s option `flag`, for naming a value that was not
/// given at all by the variable its partner was given by; `flag` itself if it has none.
pub(super) fn first_env_var(flag: &str) -> &str {
    RUN_OPTIONS
        .iter()
        .find(|o| o.flag == flag)
        .and_then(|o| o.env.first().copied())
        .unwrap_or(flag)
}
