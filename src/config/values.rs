//! The value parsers every option table shares: booleans, durations, counts, header lists,
//! secret references, origins, paths and listen addresses, each turning one [`Raw`] into a typed
//! value.
//!
//! Every error names the key the value came from (`raw.source`) and says what is expected. A
//! value that may be secret (headers, keys, proxy credentials) is never repeated in a message;
//! the others are quoted so the operator sees what was read.

use std::net::IpAddr;
use std::time::Duration;

use ureq::http::Uri;

use super::table::{ConfigError, Raw, err};
use crate::duration;
use crate::net::ProxyUrl;
use crate::secret::Secret;

/// `true`/`false` (also `1`/`0`, `yes`/`no`).
pub fn parse_bool(raw: &Raw) -> Result<bool, ConfigError> {
    match raw.value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(err(&raw.source, "must be true or false")),
    }
}

/// A duration above zero, at most one year.
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

/// A duration, zero allowed, at most one year.
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

/// A whole number in `min..=max`.
pub fn count(raw: &Raw, min: usize, max: usize) -> Result<usize, ConfigError> {
    match raw.value.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(err(
            &raw.source,
            &format!("{:?} is not a whole number from {min} to {max}", raw.value),
        )),
    }
}

/// `host:port`, `:port` (loopback) or `[v6]:port`, checked to parse as a socket address once a
/// bare `:port` is given its loopback host.
pub fn validate_listen_addr(raw: &Raw, addr: &str) -> Result<String, ConfigError> {
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

/// A header set given in pieces (a repeatable flag, or the lines of its variable): each piece
/// `"K: V, K2: V2"` or a reference to such a text, and each header's value itself a literal or an
/// `env:VAR` / `file:/path` reference (the official client's form). Names are case-insensitive:
/// the same header twice with the same value is one header; with different values, an error.
pub fn header_set(
    pieces: &[Raw],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Secret)>, ConfigError> {
    let mut out: Vec<(String, Secret)> = Vec::new();
    for raw in pieces {
        for (name, value) in parse_headers(raw, &resolve_secret(raw, env)?)? {
            let value = if is_reference(value.expose()) {
                let reference = Raw {
                    source: raw.source.clone(),
                    value: value.expose().to_string(),
                };
                let resolved = resolve_secret(&reference, env)
                    .map_err(|e| err(&raw.source, &format!("header {name}: {}", e.message)))?;
                if resolved.expose().chars().any(|c| c.is_control()) {
                    return Err(err(
                        &raw.source,
                        &format!("header {name}: its value has a control character"),
                    ));
                }
                resolved
            } else {
                value
            };
            match out.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                Some((_, v)) if v.expose() == value.expose() => {}
                Some(_) => {
                    return Err(err(
                        &raw.source,
                        &format!("header {name} is given twice with different values"),
                    ));
                }
                None => out.push((name, value)),
            }
        }
    }
    Ok(out)
}

/// Whether a value is an `env:VAR` or `file:/path` reference rather than the secret itself.
pub fn is_reference(v: &str) -> bool {
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

/// A control-plane origin: `scheme://host[:port]`, no credentials, no path, plain http only to
/// a loopback host (the API key travels on it).
pub fn validate_base_url(raw: &Raw) -> Result<String, ConfigError> {
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

/// `localhost` or a loopback IP literal (brackets allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The origin of an absolute `http(s)` URL, normalized: `scheme://host[:port]`, scheme and host
/// lowercased, the scheme's default port left out. `None` when it is not such a URL.
pub fn origin_of(url: &str) -> Option<String> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    Some(match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// A gateway path prefix: `""` or `/prefix` without a trailing slash.
pub fn validate_url_path(raw: &Raw) -> Result<String, ConfigError> {
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

pub fn validate_tunnel_id(raw: &Raw) -> Result<String, ConfigError> {
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

/// An MCP server's `http(s)://` URL, without credentials.
pub fn validate_mcp_url(raw: &Raw) -> Result<String, ConfigError> {
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

/// A proxy URL or `env:VAR`; empty means "not set here".
pub fn proxy_setting(
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
