//! `call_target`: one constrained outbound HTTP exchange to an allowlisted target.
//!
//! The arguments are checked against the server's ceilings first (label known, method GET, POST
//! or PUT, timeout 100 ms to 120 s, `max_response_bytes` and `max_redirects` at most the
//! configured ones, the request body no larger than the response limit). Caller headers lose
//! hop-by-hop, framing, proxy-forwarding and identity names (and any a `Connection` header
//! nominates); our `User-Agent` is set. Redirects are followed by hand, each only to a URL that
//! is itself an allowlisted target ([`super::allowlist`]), at most `max_redirects` of them;
//! 301/302/303 turn a POST or PUT into a bodiless GET, 307/308 repeat it. The body is read up to
//! `max_response_bytes`; more is cut off and marked `truncated`.
//!
//! Every failure is a [`ToolError`] message for the caller; none quotes a URL's query, a header
//! value or a body.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::Harpoon;
use super::allowlist::{self, UrlKey};
use crate::http_client;

const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const MIN_TIMEOUT_MS: u64 = 100;
const MAX_TIMEOUT_MS: u64 = 120_000;

/// Caller headers never sent, besides those [`crate::headers::forwardable`] drops (prefixes).
const BLOCKED_PREFIXES: &[&str] = &["x-tunnel-", "x-custom-cf-witness-"];

/// A refusal or failure, answered as a tool error `label L: message`.
pub(super) type ToolError = String;

/// A `call_target`'s checked arguments.
struct Args {
    target: usize,
    method: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
    max_bytes: usize,
    max_redirects: Option<usize>,
}

impl Harpoon {
    /// Runs one `call_target` with `arguments`; the structured result, or the tool error.
    pub(super) fn call_target(
        &self,
        label: &str,
        arguments: &Map<String, Value>,
        deadline: Option<Instant>,
    ) -> Result<Value, ToolError> {
        let args = self.args(label, arguments)?;
        let until = {
            let own = Instant::now() + args.timeout;
            deadline.map_or(own, |d| d.min(own))
        };
        let started = Instant::now();
        let mut url = self.targets[args.target].url.clone();
        let mut target = args.target;
        let mut method = args.method;
        let mut body = args.body;
        let mut headers = args.headers;
        let mut redirects = 0;
        loop {
            let mut resp = self.send(target, &url, method, &headers, &body, until)?;
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let (Some(limit), true, Some(location)) =
                (args.max_redirects, is_redirect(status), location)
            {
                if redirects >= limit {
                    return Err(format!("redirect limit exceeded ({limit})"));
                }
                let next = allowlist::resolve(&url, &location)
                    .ok_or_else(|| "redirect blocked: unreadable Location".to_string())?;
                let keys: Vec<UrlKey> = self.targets.iter().map(|t| t.key.clone()).collect();
                let found = UrlKey::of(&next).and_then(|k| keys.iter().position(|t| *t == k));
                let Some(next_target) = found else {
                    let why = allowlist::refusal(&next, &keys);
                    log::info!(
                        target: super::LOG_TARGET,
                        "harpoon: label {label}: redirect refused: {why}"
                    );
                    return Err(format!("redirect blocked: {why}"));
                };
                if self.targets[next_target].key.host != self.targets[target].key.host {
                    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
                }
                if matches!(status, 301..=303) && method != "GET" {
                    method = "GET";
                    body.clear();
                    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
                }
                (url, target, redirects) = (next, next_target, redirects + 1);
                continue;
            }
            let mut out_headers = Map::new();
            for (name, value) in resp.headers() {
                let Ok(value) = value.to_str() else { continue };
                let entry = out_headers
                    .entry(canonical_name(name.as_str()))
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(values) = entry {
                    values.push(Value::from(value));
                }
            }
            let mut read = Vec::new();
            let limit = args.max_bytes as u64 + 1;
            resp.body_mut()
                .as_reader()
                .take(limit)
                .read_to_end(&mut read)
                .map_err(|_| "response read failed".to_string())?;
            let truncated = read.len() > args.max_bytes;
            read.truncate(args.max_bytes);
            log::info!(
                target: super::LOG_TARGET,
                "harpoon: label {label}: {method} answered {status} ({} bytes{}, {} redirects, {} ms)",
                read.len(),
                if truncated { ", truncated" } else { "" },
                redirects,
                started.elapsed().as_millis()
            );
            return Ok(json!({
                "status_code": status,
                "headers": out_headers,
                "body_base64": base64(&read),
                "body_size_bytes": read.len(),
                "truncated": truncated,
            }));
        }
    }

    /// Checks `arguments` against the limits.
    fn args(&self, label: &str, arguments: &Map<String, Value>) -> Result<Args, ToolError> {
        let target = self
            .targets
            .iter()
            .position(|t| t.label == label)
            .ok_or_else(|| "unknown target".to_string())?;
        let method = match arguments
            .get("method")
            .and_then(Value::as_str)
            .map(str::trim)
        {
            Some(m) if m.eq_ignore_ascii_case("GET") => "GET",
            Some(m) if m.eq_ignore_ascii_case("POST") => "POST",
            Some(m) if m.eq_ignore_ascii_case("PUT") => "PUT",
            _ => return Err("invalid method: only GET, POST and PUT are allowed".into()),
        };
        let number = |name: &str| -> Result<Option<u64>, ToolError> {
            match arguments.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) => Ok(Some(n)),
                    None if v.as_i64().is_some() => Err(format!("{name} must not be negative")),
                    None => Err(format!("{name} must be a whole number")),
                },
            }
        };
        let timeout_ms = number("timeout_ms")?.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(format!(
                "timeout_ms must be from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}"
            ));
        }
        let max_bytes = match number("max_response_bytes")? {
            None => self.max_response_bytes,
            Some(0) => return Err("max_response_bytes must be positive".into()),
            Some(n) if n > self.max_response_bytes as u64 => {
                return Err(format!(
                    "max_response_bytes must be less than or equal to {}",
                    self.max_response_bytes
                ));
            }
            Some(n) => n as usize,
        };
        let follow = match arguments.get("follow_redirects") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("follow_redirects must be true or false".into()),
        };
        let max_redirects = match number("max_redirects")? {
            _ if !follow => None,
            None => Some(self.max_redirects),
            Some(n) if n > self.max_redirects as u64 => {
                return Err(format!(
                    "max_redirects must be less than or equal to {}",
                    self.max_redirects
                ));
            }
            Some(n) => Some(n as usize),
        };
        let body = match arguments.get("body") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(_) => return Err("body must be a string".into()),
        };
        if body.len() > max_bytes {
            return Err("request body exceeds size limit".into());
        }
        let headers = caller_headers(label, arguments.get("headers"))?;
        Ok(Args {
            target,
            method,
            headers,
            body,
            timeout: Duration::from_millis(timeout_ms),
            max_bytes,
            max_redirects,
        })
    }

    /// One exchange with `url` (an allowlisted URL of target `target`), within `until`.
    fn send(
        &self,
        target: usize,
        url: &str,
        method: &str,
        headers: &[(String, String)],
        body: &[u8],
        until: Instant,
    ) -> Result<ureq::http::Response<ureq::Body>, ToolError> {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timeout".into());
        }
        let agent = self.agent_of(target);
        let result = match method {
            "GET" => {
                let mut req = agent.get(url);
                for (n, v) in headers {
                    req = req.header(n.as_str(), v.as_str());
                }
                http_client::with_timeout(req, left).call()
            }
            _ => {
                let mut req = if method == "PUT" {
                    agent.put(url)
                } else {
                    agent.post(url)
                };
                for (n, v) in headers {
                    req = req.header(n.as_str(), v.as_str());
                }
                http_client::with_timeout(req, left).send(body)
            }
        };
        result.map_err(|e| {
            let why = match e {
                ureq::Error::Timeout(_) => "timeout",
                ureq::Error::HostNotFound => "request failed: host not found",
                ureq::Error::Io(_) | ureq::Error::ConnectionFailed => {
                    "request failed: cannot connect"
                }
                ureq::Error::Tls(_) | ureq::Error::Rustls(_) => "request failed: TLS failed",
                ureq::Error::ConnectProxyFailed(_) => "request failed: the proxy refused",
                _ => "request failed",
            };
            why.to_string()
        })
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// The caller's `headers` object, checked and filtered; dropped names are logged, never values.
fn caller_headers(label: &str, value: Option<&Value>) -> Result<Vec<(String, String)>, ToolError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err("headers must be an object of strings".into()),
    };
    let mut given = Vec::new();
    for (name, value) in map {
        let Some(value) = value.as_str() else {
            return Err(format!("header {name:?} must have a string value"));
        };
        let name = name.trim();
        if !crate::headers::is_writable(name, value) {
            return Err(format!(
                "header {name:?} is not a valid header name or has a line break in its value"
            ));
        }
        given.push((name.to_string(), value.to_string()));
    }
    let kept: Vec<(String, String)> = crate::headers::forwardable_except(&given, &["content-type"])
        .into_iter()
        .filter(|(n, _)| {
            let lower = n.to_ascii_lowercase();
            !BLOCKED_PREFIXES.iter().any(|p| lower.starts_with(p))
        })
        .collect();
    if kept.len() < given.len() {
        let dropped: Vec<&str> = given
            .iter()
            .filter(|g| !kept.contains(g))
            .map(|(n, _)| n.as_str())
            .collect();
        log::info!(
            target: super::LOG_TARGET,
            "harpoon: label {label}: dropped caller headers that are not forwarded: {}",
            dropped.join(", ")
        );
    }
    Ok(kept)
}

/// `content-type` → `Content-Type`, the form the official client answers with.
fn canonical_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Standard base64 with padding (RFC 4648 §4), as `body_base64` carries it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_the_padded_standard_alphabet() {
        for (raw, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"\xff\xfe\xfd\xfc", "//79/A=="),
        ] {
            assert_eq!(base64(raw), want);
        }
    }

    #[test]
    fn names_are_canonicalized_and_hop_by_hop_and_identity_headers_dropped() {
        assert_eq!(canonical_name("content-type"), "Content-Type");
        assert_eq!(canonical_name("www-authenticate"), "Www-Authenticate");
        let given = json!({
            "Authorization": "Basic x",
            "Content-Type": "application/x-www-form-urlencoded",
            "Connection": "x-nominated",
            "X-Nominated": "1",
            "Keep-Alive": "5",
            "X-Forwarded-For": "1.2.3.4",
            "Cookie": "a=b",
            "User-Agent": "evil",
            "OpenAI-Organization": "org",
            "X-Tunnel-Traffic-Source": "x",
            "Accept-Encoding": "gzip",
            "Accept": "application/json",
        });
        let kept = caller_headers("a", Some(&given)).unwrap();
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Accept", "Authorization", "Content-Type"]);
        assert!(caller_headers("a", Some(&json!({"X": "a\r\nb"}))).is_err());
        assert!(caller_headers("a", Some(&json!({"X": 1}))).is_err());
    }
}
