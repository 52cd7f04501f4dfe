//! `mcp-tunnel relay`'s options: the option table, in `--help` order, and the validated
//! [`RelayConfig`] it parses into.
//!
//! Parsed with the shared [`crate::config`] machinery, so precedence (flag > environment >
//! default), error wording and the `--log.*` options are those of every other command. Every
//! error names the flag or variable at fault; the process exits with code 2 on any of them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::cors::Cors;
use super::oauth::parse_public_url;
use super::store::StoreSpec;
use super::stream::{STREAM_OPTIONS, StreamLimits};
use super::tunnels;
use crate::config::{self, ConfigError, ENV_FILE, LOG_FILE, LOG_FORMAT, LOG_LEVEL, Opt, Sources};

/// Largest request the server reads: a response POST may carry a large tool result (the client
/// reads MCP answers up to 32 MiB). Connector requests have their own, smaller limit, which
/// `--connector.max-body` may raise at most to this.
pub(super) const MAX_REQUEST_BODY: usize = 33 * 1024 * 1024;

// Option keys, shared by the table and the validation in `parse_config`.
pub(super) const LISTEN: &str = "--listen";
pub(super) const TUNNELS_FILE: &str = "--tunnels-file";
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
const CORS_ORIGIN: &str = "--cors-origin";
const PUBLIC_URL: &str = "--public-url";
const STORE: &str = "--store";
const STORE_CA_FILE: &str = "--store.ca-file";
const STORE_LEASE: &str = "--store.lease";
const METRICS_LISTEN: &str = "--metrics-listen";
const AUDIT_LOG: &str = "--audit-log";
const PID_FILE: &str = "--pid-file";
const DRAIN_TIMEOUT: &str = "--shutdown.drain-timeout";

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
        env: &[tunnels::TUNNELS_FILE_ENV],
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
    STREAM_OPTIONS[0],
    STREAM_OPTIONS[1],
    STREAM_OPTIONS[2],
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
        flag: CORS_ORIGIN,
        env: &["RELAY_CORS_ORIGIN"],
        default: Some(""),
        help: "A browser origin (scheme://host[:port]) allowed to call /v1/mcp/... : preflights \
               answered and CORS headers sent for it. Repeatable or comma-separated; in the \
               variable one or more per line. None: no CORS headers at all.",
        repeatable: true,
        ..Opt::BASE
    },
    Opt {
        flag: PUBLIC_URL,
        env: &["RELAY_PUBLIC_URL"],
        default: Some(""),
        help: "The relay's external origin (https://host[:port]; http:// only for loopback), as \
               MCP hosts reach it. Enables the OAuth protected-resource metadata routes \
               (/.well-known/oauth-protected-resource/v1/mcp/...); never taken from Host.",
        ..Opt::BASE
    },
    Opt {
        flag: STORE,
        env: &["RELAY_STORE"],
        default: Some("memory"),
        help: "Where the queues live: memory (this process) or redis://[user:pass@]host:port[/db] \
               (rediss:// for TLS), shared by several relay nodes.",
        ..Opt::BASE
    },
    Opt {
        flag: STORE_CA_FILE,
        env: &["RELAY_STORE_CA_FILE"],
        default: Some(""),
        help: "PEM CA bundle trusted for rediss:// besides the built-in Mozilla roots.",
        ..Opt::BASE
    },
    Opt {
        flag: STORE_LEASE,
        env: &["RELAY_STORE_LEASE"],
        default: Some("30s"),
        help: "With redis://: how long a relay node that stopped (killed, cut off) still holds \
               its long-lived streams' places and its waiting requests; then another node ends \
               them (clients told, keys deleted). Renewed every third of it; at least 2s.",
        ..Opt::BASE
    },
    Opt {
        flag: METRICS_LISTEN,
        env: &["RELAY_METRICS_LISTEN"],
        default: Some(""),
        help: "Address of a separate, non-public listener for GET /metrics (Prometheus text), \
               /healthz and /readyz, e.g. 127.0.0.1:9464. None: no such listener. Never the \
               --listen address.",
        ..Opt::BASE
    },
    Opt {
        flag: AUDIT_LOG,
        env: &["RELAY_AUDIT_LOG"],
        default: Some(""),
        help: "Audit log: one JSON line per connector request, session end, OAuth discovery and \
               stream open/close (no arguments, results, keys or tokens). A file (created 0600, \
               appended, reopened on SIGHUP) or - for standard output. None: off.",
        ..Opt::BASE
    },
    Opt {
        flag: PID_FILE,
        env: &["RELAY_PID_FILE"],
        aliases: &["--pid.file"],
        default: Some(""),
        help: "Hold this pid file with an exclusive lock; if another copy holds it, exit 0 at \
               once (for init scripts).",
        ..Opt::BASE
    },
    Opt {
        flag: DRAIN_TIMEOUT,
        env: &["RELAY_SHUTDOWN_DRAIN_TIMEOUT"],
        aliases: &["--drain-timeout"],
        default: Some("30s"),
        help: "On SIGTERM/SIGINT, how long held MCP requests may take to be answered: new ones \
               get 503 relay_draining, long-polls return at once, /healthz answers 503.",
        ..Opt::BASE
    },
    Opt {
        flag: ENV_FILE,
        env: &["ENV_FILE"],
        default: Some(""),
        help: "KEY=VALUE file (the /etc/default and systemd EnvironmentFile format) read after \
               the process environment: flags > environment > this file > defaults.",
        ..Opt::BASE
    },
    LOG_LEVEL,
    LOG_FORMAT,
    LOG_FILE,
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
    /// `--stream.*`: long-lived event streams (our extension).
    pub streams: StreamLimits,
    pub client_timeout: Duration,
    pub queue_capacity: usize,
    pub max_connections: usize,
    /// Connections from one peer address; `usize::MAX` for no such cap.
    pub max_connections_per_peer: usize,
    /// Percent of `max_connections` reserved for control-plane requests.
    pub control_plane_reserve_percent: usize,
    pub header_timeout: Duration,
    /// Browser origins allowed on the MCP endpoint (`--cors-origin`); empty: no CORS.
    pub cors: Cors,
    /// `--public-url`: the relay's external origin, no trailing slash; `None` when not set (the
    /// OAuth metadata routes then answer 404 `public_url_not_configured`).
    pub public_url: Option<String>,
    /// `--store`: memory, or the Redis several relay nodes share.
    pub store: StoreSpec,
    /// `--store.ca-file`: extra trust for `rediss://`.
    pub store_ca: Option<PathBuf>,
    /// `--store.lease`: how long a dead node's leases hold in Redis.
    pub store_lease: Duration,
    /// `--metrics-listen`: the non-public metrics listener; `None`: none.
    pub metrics_listen: Option<String>,
    /// `--audit-log`: a path, or `-` for standard output; `None`: off.
    pub audit_log: Option<String>,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--shutdown.drain-timeout`.
    pub drain_timeout: Duration,
    pub log: config::LogConfig,
}

/// Parses `relay`'s options; `Ok(None)` for `--help`.
pub fn parse_config(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<RelayConfig>, ConfigError> {
    let file = config::table::env_file_layer(args, env)?;
    let file_vars = file.vars;
    let env = &|name: &str| env(name).or_else(|| file_vars.get(name).cloned());
    let Some(src) = Sources::parse(RELAY_OPTIONS, file.args, env, "relay")? else {
        return Ok(None);
    };
    let listen = src.get(LISTEN).value;
    let metrics_listen = src.get(METRICS_LISTEN);
    let metrics_listen = match metrics_listen.value.trim() {
        "" => None,
        // (Port 0 on both is two ephemeral ports, as tests use.)
        same if same == listen.trim() && !same.ends_with(":0") => {
            return Err(config::err(
                &metrics_listen.source,
                "must differ from --listen: metrics are never served on the public listener",
            ));
        }
        addr => Some(addr.to_string()),
    };
    let nonempty = |flag: &str| Some(src.get(flag).value).filter(|v| !v.trim().is_empty());
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
    let mut origins = Vec::new();
    for raw in src.values(CORS_ORIGIN) {
        // One value at a time first, so that an error names the flag or variable at fault.
        Cors::parse([raw.value.as_str()]).map_err(|e| config::err(&raw.source, &e))?;
        origins.push(raw.value);
    }
    let cors = Cors::parse(origins.iter().map(String::as_str))
        .map_err(|e| config::err(CORS_ORIGIN, &e))?;
    let public_url = src.get(PUBLIC_URL);
    let public_url = match public_url.value.trim() {
        "" => None,
        value => Some(parse_public_url(value).map_err(|e| config::err(&public_url.source, &e))?),
    };
    Ok(Some(RelayConfig {
        listen,
        tunnels_file: PathBuf::from(src.get(TUNNELS_FILE).value),
        tls,
        client_ca,
        client_auth_all,
        poll_max_wait: config::positive_duration(&src.get(POLL_MAX_WAIT))?,
        connector_timeout: config::positive_duration(&src.get(CONNECTOR_TIMEOUT))?,
        connector_max_body: config::count(&src.get(CONNECTOR_MAX_BODY), 1, MAX_REQUEST_BODY)?,
        streams: StreamLimits::from_sources(&src)?,
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
        cors,
        public_url,
        store: {
            let store = src.get(STORE);
            StoreSpec::parse(&store.value).map_err(|e| config::err(&store.source, &e))?
        },
        store_ca: Some(src.get(STORE_CA_FILE).value)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        store_lease: {
            let lease = src.get(STORE_LEASE);
            match config::positive_duration(&lease)? {
                d if d < Duration::from_secs(2) => {
                    return Err(config::err(&lease.source, "must be at least 2s"));
                }
                d => d,
            }
        },
        metrics_listen,
        audit_log: nonempty(AUDIT_LOG),
        pid_file: nonempty(PID_FILE).map(PathBuf::from),
        drain_timeout: config::any_duration(&src.get(DRAIN_TIMEOUT))?,
        log: config::log_config(&src)?,
    }))
}

/// `--help` text for `mcp-tunnel relay`, generated from [`RELAY_OPTIONS`].
pub fn help() -> String {
    let mut text = config::help_text(
        "mcp-tunnel relay: self-hosted control plane and public MCP endpoint",
        "mcp-tunnel relay [OPTIONS]\n       mcp-tunnel relay tunnel <add|list|remove|rotate-key> [--help]\n       mcp-tunnel relay admin-key [create|rotate|remove] [--help]",
        RELAY_OPTIONS,
    );
    text.push_str(
        "\nEndpoints:\n  /v1/tunnels/{id}[/poll|/response]   tunnel clients (runtime key)\n  \
         /v1/mcp/{id}[/{channel}]            MCP hosts (connector key, or passthrough)\n  \
         /.well-known/oauth-protected-resource/v1/mcp/{id}[/{channel}]   OAuth metadata\n  \
         /healthz                            liveness (503 while draining)\n  \
         /metrics, /healthz, /readyz         on --metrics-listen only, never on --listen\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<RelayConfig, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        parse_config(args.iter().map(OsString::from).collect(), &lookup)
            .map(|cfg| cfg.expect("not --help"))
    }

    #[test]
    fn cors_origins_come_from_repeated_flags_commas_or_lines_and_default_to_none() {
        assert!(!parse(&[], &[]).unwrap().cors.enabled());
        let flags = parse(
            &[
                "--cors-origin",
                "http://localhost:6274",
                "--cors-origin=https://a.example,https://b.example",
            ],
            &[],
        )
        .unwrap();
        let env = parse(
            &[],
            &[(
                "RELAY_CORS_ORIGIN",
                "http://localhost:6274\nhttps://a.example, https://b.example",
            )],
        )
        .unwrap();
        assert!(flags.cors.enabled());
        assert_eq!(flags.cors, env.cors);
    }

    #[test]
    fn the_store_lease_defaults_to_30s_and_is_at_least_2s() {
        assert_eq!(
            parse(&[], &[]).unwrap().store_lease,
            Duration::from_secs(30)
        );
        let set = parse(&[], &[("RELAY_STORE_LEASE", "5s")]).unwrap();
        assert_eq!(set.store_lease, Duration::from_secs(5));
        let e = parse(&["--store.lease", "1s"], &[]).unwrap_err();
        assert_eq!(e.key, "--store.lease", "{e}");
        assert!(e.to_string().contains("at least 2s"), "{e}");
    }

    #[test]
    fn the_public_url_is_an_https_origin_or_loopback_http_and_errors_name_their_source() {
        assert_eq!(parse(&[], &[]).unwrap().public_url, None);
        let ok = parse(&["--public-url", "https://Relay.example.com/"], &[]).unwrap();
        assert_eq!(ok.public_url.as_deref(), Some("https://relay.example.com"));
        let ok = parse(&[], &[("RELAY_PUBLIC_URL", "http://127.0.0.1:8000")]).unwrap();
        assert_eq!(ok.public_url.as_deref(), Some("http://127.0.0.1:8000"));
        for bad in [
            "http://relay.example.com",
            "https://relay.example.com/prefix",
            "https://user@relay.example.com",
            "ftp://relay.example.com",
            "relay.example.com",
            "https://relay.example.com?x=1",
        ] {
            let e = parse(&["--public-url", bad], &[]).unwrap_err();
            assert_eq!(e.key, "--public-url", "{bad}: {e}");
            let e = parse(&[], &[("RELAY_PUBLIC_URL", bad)]).unwrap_err();
            assert_eq!(e.key, "RELAY_PUBLIC_URL", "{bad}: {e}");
        }
    }

    #[test]
    fn the_operator_options_default_to_off_and_metrics_never_share_the_public_listener() {
        let cfg = parse(&[], &[]).unwrap();
        assert_eq!(cfg.metrics_listen, None);
        assert_eq!(cfg.audit_log, None);
        assert_eq!(cfg.pid_file, None);
        assert_eq!(cfg.drain_timeout, Duration::from_secs(30));
        let e = parse(&["--metrics-listen", "127.0.0.1:8000"], &[]).unwrap_err();
        assert_eq!(e.key, "--metrics-listen", "{e}");
        let e = parse(&[], &[("RELAY_METRICS_LISTEN", "127.0.0.1:8000")]).unwrap_err();
        assert_eq!(e.key, "RELAY_METRICS_LISTEN", "{e}");
        let cfg = parse(&["--drain-timeout", "5s", "--pid.file", "/run/r.pid"], &[]).unwrap();
        assert_eq!(cfg.drain_timeout, Duration::from_secs(5));
        assert_eq!(cfg.pid_file, Some(PathBuf::from("/run/r.pid")));
    }

    #[test]
    fn a_bad_cors_origin_is_an_error_naming_its_source() {
        let e = parse(&["--cors-origin", "*"], &[]).unwrap_err();
        assert_eq!(e.key, "--cors-origin");
        assert!(e.message.contains("scheme://host"), "{e}");
        let e = parse(&[], &[("RELAY_CORS_ORIGIN", "http://ok.example\nnull")]).unwrap_err();
        assert_eq!(e.key, "RELAY_CORS_ORIGIN");
    }
}
