//! MCP 2026-07-28 as the stub speaks it, beside the 2025 sessions: stateless requests that carry
//! their protocol version in `_meta` (and the `MCP-Protocol-Version` header), `server/discover`,
//! and the header checks a server makes against the body.
//!
//! - **Which era**: a request is modern when its `params._meta` names a protocol version, when its
//!   `MCP-Protocol-Version` header names one that is not a 2025-or-earlier revision, or when it is
//!   `server/discover`. `initialize` is always legacy. A modern request is served without a
//!   session: an `Mcp-Session-Id` it carries is ignored and none is handed out.
//! - **Checks**, in the spec's order of concern: the header and `_meta` versions must agree
//!   (`-32020`), the version must be one we serve (`-32022` listing ours), and `Mcp-Method` /
//!   `Mcp-Name` must match the body when present (`-32020`, HTTP 400). Missing headers are
//!   tolerated, so a hand-written `curl` still works; a tunnel that altered them would not.
//! - **Methods**: `server/discover`, `tools/list`, `tools/call`; any other is `404` with
//!   `-32601`, as the modern transport asks. Results carry `resultType: "complete"`.

use serde_json::{Value, json};

use super::protocol::rpc_error;
use crate::http_server::{Request, Response};

/// The one modern revision we serve.
pub(super) const MODERN_PROTOCOL: &str = "2026-07-28";
/// Revisions that are sessions-era: their `MCP-Protocol-Version` header does not make a request
/// modern.
const LEGACY_PROTOCOLS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The `_meta` key naming a modern request's protocol version.
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const VERSION_HEADER: &str = "MCP-Protocol-Version";
const METHOD_HEADER: &str = "Mcp-Method";
const NAME_HEADER: &str = "Mcp-Name";
/// HeaderMismatch: a header disagrees with the body.
pub(super) const HEADER_MISMATCH: i64 = -32020;
/// UnsupportedProtocolVersion: the request's version is not one we serve.
pub(super) const UNSUPPORTED_VERSION: i64 = -32022;
/// How long a client may cache our `server/discover` answer: it never changes while we run.
const DISCOVER_TTL_MS: u64 = 60_000;

/// A modern request, as far as the checks need it.
pub(super) struct Modern<'a> {
    pub(super) id: &'a Value,
    pub(super) method: &'a str,
    pub(super) params: Option<&'a Value>,
}

/// Whether a request is served as MCP 2026-07-28.
pub(super) fn is_modern(req: &Request, method: &str, params: Option<&Value>) -> bool {
    if method == "initialize" {
        return false;
    }
    method == "server/discover"
        || meta_version(params).is_some()
        || req
            .header(VERSION_HEADER)
            .is_some_and(|v| !LEGACY_PROTOCOLS.contains(&v.trim()))
}

/// The checks of a modern request; `Err` is the answer (HTTP 400 and a JSON-RPC error).
pub(super) fn check(req: &Request, request: &Modern) -> Result<(), Response> {
    let reject = |code: i64, message: String, data: Option<Value>| {
        let mut error = rpc_error(request.id, code, &message);
        if let Some(data) = data {
            error["error"]["data"] = data;
        }
        Err(Response::json(400, error.to_string()))
    };
    let header = req.header(VERSION_HEADER).map(str::trim);
    let meta = meta_version(request.params);
    if let (Some(header), Some(meta)) = (header, meta)
        && header != meta
    {
        return reject(
            HEADER_MISMATCH,
            format!("Header mismatch: {VERSION_HEADER} {header:?} does not match _meta {meta:?}"),
            None,
        );
    }
    if let Some(requested) = meta.or(header)
        && requested != MODERN_PROTOCOL
    {
        return reject(
            UNSUPPORTED_VERSION,
            "Unsupported protocol version".into(),
            Some(json!({ "supported": supported_versions(), "requested": requested })),
        );
    }
    if let Some(header) = req.header(METHOD_HEADER)
        && header != request.method
    {
        return reject(
            HEADER_MISMATCH,
            format!(
                "Header mismatch: {METHOD_HEADER} {header:?} does not match method {:?}",
                request.method
            ),
            None,
        );
    }
    let named = match request.method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let (Some(field), Some(header)) = (named, req.header(NAME_HEADER)) {
        let body = request
            .params
            .and_then(|p| p.get(field))
            .and_then(Value::as_str);
        let decoded = decode_header_value(header);
        if decoded.is_none() || decoded.as_deref() != body {
            return reject(
                HEADER_MISMATCH,
                format!("Header mismatch: {NAME_HEADER} does not match params.{field}"),
                None,
            );
        }
    }
    Ok(())
}

/// Every revision we serve, modern first: what `server/discover` and `-32022` list.
fn supported_versions() -> Vec<&'static str> {
    std::iter::once(MODERN_PROTOCOL)
        .chain(super::SUPPORTED_PROTOCOLS)
        .collect()
}

/// The `server/discover` result.
pub(super) fn discover_result(name: &str, instructions: &str) -> Value {
    json!({
        "resultType": "complete",
        "supportedVersions": supported_versions(),
        "capabilities": { "tools": {} },
        "serverInfo": { "name": name, "version": env!("CARGO_PKG_VERSION") },
        "instructions": instructions,
        "ttlMs": DISCOVER_TTL_MS,
        "cacheScope": "public",
    })
}

/// A result as the modern protocol shapes it: with its `resultType`.
pub(super) fn complete(mut result: Value) -> Value {
    if let Value::Object(fields) = &mut result {
        fields
            .entry("resultType")
            .or_insert_with(|| Value::from("complete"));
    }
    result
}

fn meta_version(params: Option<&Value>) -> Option<&str> {
    params?.get("_meta")?.get(META_VERSION)?.as_str()
}

/// A `Mcp-Name` / `Mcp-Param-*` value: as sent, or decoded from the `=?base64?…?=` sentinel form
/// (UTF-8). `None` for a sentinel that is not valid Base64 of UTF-8.
fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => String::from_utf8(base64_decode(encoded)?).ok(),
        None => Some(value.to_string()),
    }
}

/// Standard Base64 (RFC 4648 §4, padding optional). Small enough not to warrant a crate here.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover character (6 bits) cannot end a valid encoding.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_sentinels_decode() {
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(
            decode_header_value("=?base64?IHBhZGRlZCA=?=").as_deref(),
            Some(" padded ")
        );
        assert_eq!(decode_header_value("echo").as_deref(), Some("echo"));
        assert_eq!(decode_header_value("=?base64?not base64?="), None);
        assert_eq!(decode_header_value("=?base64?QQ?=").as_deref(), Some("A"));
        assert_eq!(decode_header_value("=?base64?Q?="), None);
    }

    #[test]
    fn complete_adds_the_result_type_once() {
        assert_eq!(
            complete(json!({"tools": []})),
            json!({"tools": [], "resultType": "complete"})
        );
        assert_eq!(
            complete(json!({"resultType": "input_required"}))["resultType"],
            "input_required"
        );
    }
}
