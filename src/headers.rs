//! Which headers may cross the tunnel, in each direction.
//!
//! Toward the MCP server (command headers) we drop hop-by-hop and framing headers, anything that
//! claims to describe the original client's network position, cookies, and OpenAI-internal
//! headers. The service filters too; this is defence in depth. Back toward the connector only a
//! short allowlist of MCP-relevant response headers travels.
//!
//! Shared by the client and the relay.

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
    let nominated = connection_nominated(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    headers
        .iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            crate::config::is_token(name)
                && !BLOCKED_FORWARD.contains(&lower.as_str())
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
