//! Which headers may cross the tunnel, in each direction.
//!
//! Toward the MCP server (command headers) we drop hop-by-hop and framing headers, anything that
//! claims to describe the original client's network position, cookies, and OpenAI-internal
//! headers. The service filters too; this is defence in depth. Back toward the connector only a
//! short allowlist of MCP-relevant response headers travels.
//!
//! It also holds the header grammar every other module checks against: what a header name is
//! (an RFC 9110 token), what our own HTTP server will write, and which names the client sets on
//! control-plane requests so that an operator's extra header may not replace them.
//!
//! Shared by the client, the relay and the HTTP server.

use std::collections::BTreeMap;

/// Never forwarded to the MCP server, matched case-insensitively.
const BLOCKED_FORWARD: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "te",
    "trailer",
    "connection",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "x-original-forwarded-for",
    "x-envoy-external-address",
    "cookie",
    "accept-encoding",
    "user-agent",
];

/// Prefixes of OpenAI-internal headers, never forwarded.
const BLOCKED_FORWARD_PREFIXES: &[&str] = &["openai-", "x-openai-", "x-oai-"];

/// The only MCP response headers returned to the connector.
const ALLOWED_RESPONSE: &[&str] = &[
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "access-control-expose-headers",
    "www-authenticate",
];

/// Headers this client sets on control-plane requests; operator extra headers may not override
/// them (matched case-insensitively).
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "accept",
    "user-agent",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "x-tunnel-client-name",
    "x-tunnel-client-version",
    "x-tunnel-client-instance-id",
    "x-tunnel-mcp-server-info",
    "x-tunnel-shard-token",
    "x-client-request-id",
];

/// Whether an operator extra header would clash with one we set.
pub fn is_reserved_header(name: &str) -> bool {
    RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str())
}

/// An HTTP header name (RFC 9110 token).
pub fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether a header can be written without breaking the message apart: a token name and a value
/// without CR, LF or NUL.
pub fn is_writable(name: &str, value: &str) -> bool {
    is_token(name) && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// Names nominated as hop-by-hop by any `Connection` header value in `headers`, lowercased.
fn connection_nominated<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    headers
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The command headers that may be sent to the MCP server, in their original order.
pub fn forwardable(headers: &[(String, String)]) -> Vec<(String, String)> {
    forwardable_except(headers, &[])
}

/// [`forwardable`], except that the (lowercase) names in `allowed` pass unless a `Connection`
/// header nominates them: a Harpoon caller sets its own body's `Content-Type`.
pub fn forwardable_except(headers: &[(String, String)], allowed: &[&str]) -> Vec<(String, String)> {
    let nominated = connection_nominated(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    headers
        .iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            is_token(name)
                && (allowed.contains(&lower.as_str()) || !BLOCKED_FORWARD.contains(&lower.as_str()))
                && !BLOCKED_FORWARD_PREFIXES
                    .iter()
                    .any(|p| lower.starts_with(p))
                && !nominated.contains(&lower)
        })
        .cloned()
        .collect()
}

/// The allowlisted, non-empty response headers, grouped by their name as first seen.
pub fn returnable<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> BTreeMap<String, Vec<String>> {
    let nominated = connection_nominated(headers.clone());
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if value.trim().is_empty()
            || !ALLOWED_RESPONSE.contains(&lower.as_str())
            || nominated.contains(&lower)
        {
            continue;
        }
        let key = canonical_case(&lower);
        out.entry(key).or_default().push(value.to_string());
    }
    out
}

/// `mcp-session-id` → `Mcp-Session-Id`: the spelling the contract's examples use.
fn canonical_case(lower: &str) -> String {
    lower
        .split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
        .replace("Www-", "WWW-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn control_plane_reserved_headers_match_any_case() {
        assert!(is_reserved_header("AUTHORIZATION"));
        assert!(is_reserved_header("x-tunnel-client-name"));
        assert!(!is_reserved_header("X-Gateway-Key"));
    }

    #[test]
    fn token_and_writable_grammar() {
        assert!(is_token("X-Trace_1.a~"));
        assert!(!is_token(""));
        assert!(!is_token("Bad Name"));
        assert!(!is_token("a:b"));
        assert!(is_writable("X-A", "v w"));
        assert!(!is_writable("X-A", "v\r\nX-B: y"));
        assert!(!is_writable("X-A", "v\0"));
        assert!(!is_writable("X A", "v"));
    }

    #[test]
    fn forward_blocklist() {
        let input = h(&[
            ("Authorization", "Bearer user"),
            ("Mcp-Session-Id", "s1"),
            ("X-Trace", "t"),
            ("Cookie", "c=1"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("OpenAI-Organization", "org"),
            ("X-OpenAI-Thing", "x"),
            ("x-oai-foo", "y"),
            ("Connection", "X-Custom-Hop, keep-alive"),
            ("X-Custom-Hop", "z"),
            ("Host", "evil"),
            ("User-Agent", "ua"),
            ("Bad Name", "v"),
        ]);
        let out = forwardable(&input);
        let names: Vec<_> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Authorization", "Mcp-Session-Id", "X-Trace"]);
    }

    #[test]
    fn response_allowlist() {
        let input = [
            ("content-type", "application/json"),
            ("mcp-session-id", "s1"),
            ("www-authenticate", "Bearer realm=x"),
            ("Set-Cookie", "a=b"),
            ("Mcp-Protocol-Version", ""),
            ("Server", "x"),
        ];
        let out = returnable(input.iter().copied());
        let keys: Vec<_> = out.keys().map(String::as_str).collect();
        assert_eq!(keys, ["Content-Type", "Mcp-Session-Id", "WWW-Authenticate"]);
    }

    #[test]
    fn response_connection_nominated_dropped() {
        let input = [("Connection", "mcp-session-id"), ("Mcp-Session-Id", "s1")];
        assert!(returnable(input.iter().copied()).is_empty());
    }
}
