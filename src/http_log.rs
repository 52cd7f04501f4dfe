//! `--log.http-raw-unsafe`: every outbound HTTP exchange's head — request line and headers, then
//! status and headers — logged at debug, for debugging a proxy or gateway in between.
//!
//! "Unsafe" in name only, as far as credentials go: header values are shown only for an allowlist
//! of names that never carry one (content type and length, our client identification, retry
//! hints, …); every other value — `Authorization`, `Cookie`, `Set-Cookie`, `X-Tunnel-Shard-Token`,
//! `Mcp-Session-Id`, an operator's extra headers — is logged as `<redacted>`. The URL is logged
//! without user info, and with the values of query parameters other than `limit`, `timeout_ms`
//! and `channel` redacted. Bodies are never logged (they are the MCP traffic itself).
//!
//! Off unless [`enable`] was called; the check is one atomic load per request.

use std::sync::atomic::{AtomicBool, Ordering};

use ureq::http::{HeaderMap, Request, Response, Uri};
use ureq::middleware::MiddlewareNext;
use ureq::{Body, SendBody};

/// The log target, so that the lines can be filtered.
pub const TARGET: &str = "mcp_tunnel::http_raw";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Header names (lowercase) whose values are logged; all others are redacted.
const SHOWN: &[&str] = &[
    "accept",
    "accept-encoding",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "host",
    "last-event-id",
    "mcp-protocol-version",
    "openai-organization",
    "retry-after",
    "server",
    "transfer-encoding",
    "user-agent",
    "vary",
    "x-client-request-id",
    "x-request-id",
    "x-tunnel-client-instance-id",
    "x-tunnel-client-name",
    "x-tunnel-client-version",
    "x-tunnel-client-wire-protocol-version",
    "x-tunnel-extensions",
    "x-tunnel-mcp-server-info",
];

/// Query parameters whose values are logged.
const SHOWN_QUERY: &[&str] = &["limit", "timeout_ms", "channel"];

/// Turns the logging on for every agent, from now on.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The middleware every outbound agent carries.
pub fn middleware(
    req: Request<SendBody>,
    next: MiddlewareNext,
) -> Result<Response<Body>, ureq::Error> {
    if !ENABLED.load(Ordering::Relaxed) || !log::log_enabled!(target: TARGET, log::Level::Debug) {
        return next.handle(req);
    }
    let line = format!(
        "{} {} {:?}",
        req.method(),
        redacted_uri(req.uri()),
        req.version()
    );
    log::debug!(target: TARGET, "> {line}{}", headers(req.headers()));
    let result = next.handle(req);
    match &result {
        Ok(resp) => log::debug!(
            target: TARGET,
            "< {line}: {}{}",
            resp.status(),
            headers(resp.headers())
        ),
        Err(e) => log::debug!(target: TARGET, "< {line}: no answer ({})", error_kind(e)),
    }
    result
}

/// The request target as it may be logged.
fn redacted_uri(uri: &Uri) -> String {
    let mut out = String::new();
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        // host[:port] only: never user info.
        out.push_str(authority.host());
        if let Some(port) = authority.port_u16() {
            out.push_str(&format!(":{port}"));
        }
    }
    out.push_str(uri.path());
    if let Some(query) = uri.query() {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) if SHOWN_QUERY.contains(&name) => format!("{name}={value}"),
                Some((name, _)) => format!("{name}=<redacted>"),
                None => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// `\n  Name: value` per header, values outside [`SHOWN`] redacted.
fn headers(map: &HeaderMap) -> String {
    let mut out = String::new();
    for (name, value) in map {
        let value = if SHOWN.contains(&name.as_str()) {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        } else {
            "<redacted>".to_string()
        };
        out.push_str(&format!("\n  {name}: {value}"));
    }
    out
}

/// What kind of failure, without its text (which can quote a URL with credentials).
fn error_kind(e: &ureq::Error) -> &'static str {
    match e {
        ureq::Error::Timeout(_) => "timeout",
        ureq::Error::Io(_) => "i/o error",
        ureq::Error::HostNotFound => "host not found",
        ureq::Error::ConnectionFailed => "connection failed",
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => "TLS error",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harmless_values_and_query_parameters_are_shown() {
        let uri: Uri =
            "https://u:pw@cp.example:8443/v1/tunnels/t/poll?limit=5&key=sk-1&channel=main"
                .parse()
                .unwrap();
        assert_eq!(
            redacted_uri(&uri),
            "https://cp.example:8443/v1/tunnels/t/poll?limit=5&key=<redacted>&channel=main"
        );
        let mut map = HeaderMap::new();
        map.insert("authorization", "Bearer sk-secret".parse().unwrap());
        map.insert("cookie", "a=b".parse().unwrap());
        map.insert("x-tunnel-shard-token", "st-123".parse().unwrap());
        map.insert("content-type", "application/json".parse().unwrap());
        let text = headers(&map);
        assert!(text.contains("content-type: application/json"), "{text}");
        for secret in ["sk-secret", "a=b", "st-123"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(text.matches("<redacted>").count(), 3, "{text}");
    }
}
