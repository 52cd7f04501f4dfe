//! The channel-entry grammar of `--mcp.server-url` and `--mcp.command`, and the channel list it
//! builds.
//!
//! An entry is either bare — a URL or a command line, for channel `main` — or qualified:
//! `channel=NAME,url=URL[,client-cert=P,client-key=P,http-proxy=URL,unix-socket=PATH]` or
//! `channel=NAME[,sessions=shared|per-session],command=LINE` (the command takes the rest of the
//! entry, commas included, so a stdio channel's options come before `command=`). A channel's own
//! options win over the MCP-wide settings. The list must name `main`, no channel twice and at
//! most [`MAX_CHANNELS`]; errors name the flag or variable of the entry.

use std::time::Duration;

use super::network::identity;
use super::table::{ConfigError, Raw, err};
use super::values::{proxy_setting, validate_mcp_url};
use crate::net::{HopNet, ProxyChoice};
use crate::wire;

/// How one channel reaches its MCP server.
#[derive(Debug, Clone)]
pub enum ChannelTransport {
    /// Streamable HTTP at this URL, connecting as `net` says.
    Http { url: String, net: HopNet },
    /// A program speaking JSON-RPC on stdin/stdout, started with this argv (no shell).
    Stdio {
        argv: Vec<String>,
        options: StdioOptions,
    },
}

/// Whether a stdio channel's connector sessions share its server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdioSessions {
    /// One process (per era) for every session: cheap, but the sessions share its state.
    Shared,
    /// A process of its own for each session, started on its `initialize`.
    PerSession,
}

impl StdioSessions {
    /// `shared` or `per-session`, with an error naming `source`.
    pub(super) fn parse(source: &str, value: &str) -> Result<StdioSessions, ConfigError> {
        match value.trim() {
            "shared" => Ok(StdioSessions::Shared),
            "per-session" => Ok(StdioSessions::PerSession),
            other => Err(err(
                source,
                &format!("{other:?} is not a session mode: expected shared or per-session"),
            )),
        }
    }
}

/// How a stdio channel runs its server processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioOptions {
    pub sessions: StdioSessions,
    /// Per-session mode: the most sessions (processes) open at once on the channel.
    pub max_sessions: usize,
    /// Per-session mode: a session with no traffic for this long has its process stopped.
    pub session_idle_timeout: Duration,
}

impl Default for StdioOptions {
    fn default() -> StdioOptions {
        StdioOptions {
            sessions: StdioSessions::Shared,
            max_sessions: 16,
            session_idle_timeout: Duration::from_secs(600),
        }
    }
}

/// One named channel of the tunnel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub name: String,
    pub transport: ChannelTransport,
}

/// The most channels one client declares (the contract's limit for the server-info header).
pub const MAX_CHANNELS: usize = 32;

/// Builds the channel list from every `--mcp.server-url` and `--mcp.command` entry, HTTP
/// channels starting from `mcp_defaults`' networking, stdio channels from `stdio_defaults`.
pub(super) fn parse_channels(
    urls: &[Raw],
    commands: &[Raw],
    mcp_defaults: &HopNet,
    stdio_defaults: &StdioOptions,
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
        let (name, _, value) = split_channel_entry(raw, "url")?;
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
        let (name, leading, line) = split_channel_entry(raw, "command")?;
        let argv = crate::argv::split_command(&line)
            .map_err(|e| err(&raw.source, &format!("cannot split the command line: {e}")))?;
        let mut options = stdio_defaults.clone();
        for (key, value) in &leading {
            match key.as_str() {
                "sessions" => options.sessions = StdioSessions::parse(&raw.source, value)?,
                _ => unreachable!("split_channel_entry passes only known options"),
            }
        }
        add(
            raw,
            ChannelConfig {
                name,
                transport: ChannelTransport::Stdio { argv, options },
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

/// Options a qualified `command` entry may give between `channel=NAME,` and `command=` (the
/// command line takes the rest of the entry, so nothing can follow it).
const COMMAND_OPTIONS: &[&str] = &["sessions"];

/// `(channel, options before the value, value)` of one entry; `kind` is `url` or `command`.
/// Only a `command` entry has options before its value ([`COMMAND_OPTIONS`]).
type Entry = (String, Vec<(String, String)>, String);

fn split_channel_entry(raw: &Raw, kind: &str) -> Result<Entry, ConfigError> {
    let text = raw.value.trim();
    let Some(rest) = text.strip_prefix("channel=") else {
        return Ok((
            wire::DEFAULT_CHANNEL.to_string(),
            Vec::new(),
            text.to_string(),
        ));
    };
    let usage = match kind {
        "command" => "expected channel=NAME[,sessions=shared|per-session],command=LINE".to_string(),
        _ => format!("expected channel=NAME,{kind}=VALUE"),
    };
    let (name, mut rest) = rest
        .split_once(',')
        .ok_or_else(|| err(&raw.source, &usage))?;
    if wire::canonical_channel(Some(name)).as_deref() != Some(name) {
        return Err(err(
            &raw.source,
            &format!("{name:?} is not a channel name: use 1 to 64 of a-z 0-9 _ -"),
        ));
    }
    let mut options = Vec::new();
    let value = loop {
        rest = rest.trim_start();
        if let Some(value) = rest.strip_prefix(&format!("{kind}=")) {
            break value;
        }
        let known = (kind == "command")
            .then(|| rest.split_once(','))
            .flatten()
            .and_then(|(piece, after)| Some((piece.split_once('=')?, after)))
            .filter(|((key, _), _)| COMMAND_OPTIONS.contains(&key.trim()));
        let Some(((key, option), after)) = known else {
            return Err(err(&raw.source, &usage));
        };
        if options
            .iter()
            .any(|(k, _): &(String, String)| k == key.trim())
        {
            return Err(err(
                &raw.source,
                &format!("{}= is given twice; give it once", key.trim()),
            ));
        }
        options.push((key.trim().to_string(), option.trim().to_string()));
        rest = after;
    };
    Ok((name.to_string(), options, value.to_string()))
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

/// Fuzzing entry point (`fuzz/`): one `--mcp.server-url` (or, with `command`, `--mcp.command`)
/// entry through the parsing steps of `parse_channels`, without the per-channel options' file and
/// environment lookups. Returns the channel name.
#[doc(hidden)]
pub fn fuzz_channel_entry(raw: &Raw, command: bool) -> Result<String, ConfigError> {
    let (name, leading, value) = split_channel_entry(raw, if command { "command" } else { "url" })?;
    if command {
        for (_, sessions) in &leading {
            StdioSessions::parse(&raw.source, sessions)?;
        }
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
}
