//! The Harpoon settings of `run`: the allowlist of HTTP targets the embedded MCP server on channel
//! `harpoon` may call, and its limits, validated into one [`HarpoonConfig`].
//!
//! A target entry is `label=NAME,url=URL[,unix-socket=PATH][,desc=TEXT]` (the official grammar:
//! comma-separated `key=value` pairs, surrounding quotes trimmed). `--harpoon.target` repeats;
//! `HARPOON_TARGETS` holds several entries separated by newlines or `;`. Labels are unique and
//! canonical (`[a-z0-9][a-z0-9_-]{0,63}`); URLs are absolute `https://` (or `http://` with
//! `--harpoon.allow-plaintext-http`) without credentials or fragment. Every error names the flag
//! or variable of the entry and the entry's key at fault; a URL is never echoed (it may carry a
//! token in its query).

use std::path::PathBuf;

use ureq::http::Uri;

use super::table::{ConfigError, Raw, err};
use crate::net::HopNet;

/// The reserved channel the server answers on.
pub const CHANNEL: &str = "harpoon";

/// Official ceilings (and defaults) of the per-call limits.
pub const MAX_RESPONSE_BYTES: usize = 102_400;
pub const MAX_REDIRECTS: usize = 5;

/// One allowlisted target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarpoonTarget {
    pub label: String,
    /// The URL as given (validated: absolute, http(s), no credentials, no fragment).
    pub url: String,
    /// Dial this Unix-domain socket instead of the URL's host.
    pub unix_socket: Option<PathBuf>,
    pub description: String,
}

/// Everything the Harpoon server needs; no targets means the channel is off.
#[derive(Debug, Clone)]
pub struct HarpoonConfig {
    pub targets: Vec<HarpoonTarget>,
    pub allow_plaintext_http: bool,
    /// Ceiling (and default) of `max_response_bytes` per call, ≤ [`MAX_RESPONSE_BYTES`].
    pub max_response_bytes: usize,
    /// Ceiling (and default) of `max_redirects` per call, ≤ [`MAX_REDIRECTS`].
    pub max_redirects: usize,
    /// CA roots and proxy for its calls (`--harpoon.http-proxy`, else `--http-proxy`).
    pub net: HopNet,
}

impl Default for HarpoonConfig {
    fn default() -> HarpoonConfig {
        HarpoonConfig {
            targets: Vec::new(),
            allow_plaintext_http: false,
            max_response_bytes: MAX_RESPONSE_BYTES,
            max_redirects: MAX_REDIRECTS,
            net: HopNet::plain(),
        }
    }
}

/// Whether `label` is a canonical target label: 1 to 64 of `a-z 0-9 _ -`, first a letter or digit.
pub fn is_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

/// The target entries of every raw value: a flag value is one entry, a variable's value one
/// per line or `;`-separated piece (blank pieces skipped).
pub fn split_entries(raws: &[Raw]) -> Vec<Raw> {
    let mut out = Vec::new();
    for raw in raws {
        if raw.source.starts_with("--") {
            out.push(Raw {
                source: raw.source.clone(),
                value: raw.value.trim().to_string(),
            });
            continue;
        }
        for piece in raw.value.split([';', '\n']).map(str::trim) {
            if !piece.is_empty() {
                out.push(Raw {
                    source: raw.source.clone(),
                    value: piece.to_string(),
                });
            }
        }
    }
    out
}

/// Parses and validates every target entry; `plaintext_key` names the switch for the error.
pub fn parse_targets(
    raws: &[Raw],
    allow_plaintext_http: bool,
    plaintext_key: &str,
) -> Result<Vec<HarpoonTarget>, ConfigError> {
    let mut targets: Vec<HarpoonTarget> = Vec::new();
    for raw in split_entries(raws) {
        let target = parse_target(&raw, allow_plaintext_http, plaintext_key)?;
        if targets.iter().any(|t| t.label == target.label) {
            return Err(err(
                &raw.source,
                &format!(
                    "label {} is given twice; labels must be unique",
                    target.label
                ),
            ));
        }
        targets.push(target);
    }
    Ok(targets)
}

fn parse_target(
    raw: &Raw,
    allow_plaintext_http: bool,
    plaintext_key: &str,
) -> Result<HarpoonTarget, ConfigError> {
    const USAGE: &str = "expected label=NAME,url=URL[,unix-socket=PATH][,desc=TEXT]";
    let (mut label, mut url, mut socket, mut desc) = (None, None, None, None);
    for part in raw
        .value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((key, value)) = part.split_once('=') else {
            return Err(err(
                &raw.source,
                &format!("a piece of the entry is not key=value; {USAGE}"),
            ));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_string();
        let slot = match key.as_str() {
            "label" => &mut label,
            "url" => &mut url,
            "unix-socket" => &mut socket,
            "desc" | "description" => &mut desc,
            other => {
                return Err(err(
                    &raw.source,
                    &format!("unknown key {other:?} in a target entry; {USAGE}"),
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(err(&raw.source, &format!("key {key} is given twice")));
        }
    }
    let label = label.filter(|l| !l.is_empty()).ok_or_else(|| {
        err(
            &raw.source,
            &format!("key label is required in a target entry; {USAGE}"),
        )
    })?;
    if !is_label(&label) {
        return Err(err(
            &raw.source,
            &format!(
                "key label: {label:?} is not a label (1 to 64 of a-z 0-9 _ -, first a-z or 0-9)"
            ),
        ));
    }
    let url = url.filter(|u| !u.is_empty()).ok_or_else(|| {
        err(
            &raw.source,
            &format!("target {label}: key url is required; {USAGE}"),
        )
    })?;
    validate_url(&url)
        .map_err(|why| err(&raw.source, &format!("target {label}: key url {why}")))?;
    if url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        && !allow_plaintext_http
    {
        return Err(err(
            &raw.source,
            &format!(
                "target {label}: key url is plaintext http://, which needs {plaintext_key}; \
                 use https:// or set it"
            ),
        ));
    }
    let unix_socket = match socket.filter(|s| !s.is_empty()) {
        None => None,
        Some(path) if path.starts_with('/') => Some(PathBuf::from(path)),
        Some(_) => {
            return Err(err(
                &raw.source,
                &format!("target {label}: key unix-socket must be an absolute path"),
            ));
        }
    };
    Ok(HarpoonTarget {
        label,
        url,
        unix_socket,
        description: desc.unwrap_or_default(),
    })
}

/// Why `url` cannot be a target URL, if it cannot.
fn validate_url(url: &str) -> Result<(), String> {
    if url.contains('#') {
        return Err("must not have a #fragment".into());
    }
    let uri: Uri = url
        .parse()
        .map_err(|_| "is not an absolute URL, e.g. https://auth.internal/token".to_string())?;
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    if !(scheme == "https" || scheme == "http") || uri.host().is_none_or(str::is_empty) {
        return Err("must be an absolute https:// URL, e.g. https://auth.internal/token".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not contain credentials".into());
    }
    let path = uri.path();
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err("must not contain . or .. path segments".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(source: &str, value: &str) -> Raw {
        Raw {
            source: source.to_string(),
            value: value.to_string(),
        }
    }

    fn parse(source: &str, value: &str, plaintext: bool) -> Result<Vec<HarpoonTarget>, String> {
        parse_targets(
            &[raw(source, value)],
            plaintext,
            "--harpoon.allow-plaintext-http",
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_entry_parses_and_quotes_are_trimmed() {
        let t = parse(
            "--harpoon.target",
            "label=auth, url=\"https://auth.internal/token?x=1\",unix-socket=/run/a.sock,desc='Auth server'",
            false,
        )
        .unwrap();
        assert_eq!(
            t,
            vec![HarpoonTarget {
                label: "auth".into(),
                url: "https://auth.internal/token?x=1".into(),
                unix_socket: Some(PathBuf::from("/run/a.sock")),
                description: "Auth server".into(),
            }]
        );
    }

    #[test]
    fn the_variable_splits_on_newlines_and_semicolons_but_a_flag_does_not() {
        let t = parse(
            "HARPOON_TARGETS",
            "label=a,url=https://a.example\n label=b,url=https://b.example ;; label=c,url=https://c.example/x",
            false,
        )
        .unwrap();
        let labels: Vec<_> = t.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["a", "b", "c"]);
        let one = parse(
            "--harpoon.target",
            "label=a,url=https://a.example/x;y",
            false,
        )
        .unwrap();
        assert_eq!(one[0].url, "https://a.example/x;y");
    }

    #[test]
    fn mistakes_name_the_key_and_the_entry_key() {
        for (value, why) in [
            ("url=https://a.example", "key label is required"),
            (
                "label=Auth,url=https://a.example",
                "key label: \"Auth\" is not a label",
            ),
            ("label=a", "target a: key url is required"),
            (
                "label=a,url=/token",
                "key url must be an absolute https:// URL",
            ),
            ("label=a,url=https://a b", "key url is not an absolute URL"),
            (
                "label=a,url=ftp://a.example",
                "must be an absolute https:// URL",
            ),
            (
                "label=a,url=https://u:p@a.example",
                "must not contain credentials",
            ),
            ("label=a,url=https://a.example/#x", "fragment"),
            ("label=a,url=https://a.example/x/../y", ".. path segments"),
            (
                "label=a,url=https://a.example,port=1",
                "unknown key \"port\"",
            ),
            (
                "label=a,url=https://a.example,label=b",
                "key label is given twice",
            ),
            ("label=a,url=https://a.example,oops", "not key=value"),
            (
                "label=a,url=https://a.example,unix-socket=rel.sock",
                "absolute path",
            ),
            (
                "label=a,url=http://a.example",
                "needs --harpoon.allow-plaintext-http",
            ),
        ] {
            let e = parse("HARPOON_TARGETS", value, false).unwrap_err();
            assert!(
                e.starts_with("HARPOON_TARGETS: ") && e.contains(why),
                "{value}: {e}"
            );
            assert!(!e.contains("u:p@"), "{e}");
        }
        let e = parse(
            "HARPOON_TARGETS",
            "label=a,url=https://a.example;label=a,url=https://b.example",
            false,
        )
        .unwrap_err();
        assert!(e.contains("label a is given twice"), "{e}");
    }

    #[test]
    fn plaintext_is_allowed_with_the_switch() {
        let t = parse("HARPOON_TARGETS", "label=a,url=http://127.0.0.1:9/x", true).unwrap();
        assert_eq!(t[0].url, "http://127.0.0.1:9/x");
    }

    #[test]
    fn labels() {
        assert!(is_label("a") && is_label("auth-1_x") && is_label(&"a".repeat(64)));
        assert!(!is_label("") && !is_label("-a") && !is_label("A") && !is_label(&"a".repeat(65)));
    }
}
