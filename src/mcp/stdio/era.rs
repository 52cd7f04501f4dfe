//! The two MCP eras on a stdio channel: which one a message speaks, and which one the server can.
//!
//! A message is **modern** (2026-07-28, stateless) when its method is `server/discover`, its
//! `params._meta` carries `io.modelcontextprotocol/protocolVersion`, or its command headers carry
//! `MCP-Protocol-Version: 2026-07-28` (or later) and no `Mcp-Session-Id`; anything else
//! (`initialize`, a message of a session) is **legacy** (2025, sessions).
//!
//! The server's era is probed once per channel, on its first child: `server/discover`, as the
//! spec's stdio backward-compatibility rules say. A `DiscoverResult` (a result with
//! `supportedVersions`) or a recognisably modern error (an `UnsupportedProtocolVersionError`: its
//! `data.supported` lists versions, whatever its code) means modern-capable; any other error, no
//! answer within [`PROBE_TIMEOUT`], or the child exiting means legacy; a child that did not answer
//! is replaced before it serves anything, since it may still answer late and commit to modern. The
//! fallback is never keyed on one error code. The result is kept for the channel's life: a restart does not probe again,
//! and a child started later for the legacy era is never probed (a dual-era server commits to the
//! era of the first request it serves, so a probe would commit it to modern).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::object::Object;
use super::process::Shared;

/// The first revision without `initialize`.
pub(super) const MODERN_VERSION: &str = "2026-07-28";
/// How long the probe waits. A server that knows `server/discover` answers it as fast as any
/// request; a legacy server answers an error at once or, if it ignores unknown methods, never.
/// 3 s is what a silent legacy server costs its channel's first start (calls wait meanwhile),
/// and still leaves a slow-starting interpreter (Python, npx) time to answer.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Era {
    /// 2026-07-28 and later: stateless, no `initialize`.
    Modern,
    /// 2025-11-25 and earlier: an `initialize` handshake per process.
    Legacy,
}

/// The channel's probe result, written once.
#[derive(Default)]
pub(super) struct EraSlot {
    era: Mutex<Option<Era>>,
}

impl EraSlot {
    pub(super) fn new() -> Arc<EraSlot> {
        Arc::new(EraSlot::default())
    }

    /// What the probe found; `None` until it ran.
    pub(super) fn get(&self) -> Option<Era> {
        *self.era.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Probes the child `shared` has just started, unless the channel was probed already.
    /// `false` when the probe went unanswered: the channel is then legacy, but this child got a
    /// `server/discover` it may still answer late (a slow start under load) and so commit to the
    /// modern era; it must not serve legacy traffic (see [`super::supervisor`]).
    pub(super) fn probe_once(&self, shared: &Shared) -> bool {
        if self.get().is_some() {
            return true;
        }
        let params = json!({"_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-tunnel", "version": env!("CARGO_PKG_VERSION")},
        }});
        let params = RawValue::from_string(params.to_string()).ok();
        let answer = shared.internal_request("server/discover", params.as_deref(), PROBE_TIMEOUT);
        let era = answer.as_deref().map_or(Era::Legacy, era_of_discover);
        log::info!(
            "[{}] stdio server speaks {} MCP (server/discover {})",
            shared.channel,
            match era {
                Era::Modern => "2026-07-28 (modern)",
                Era::Legacy => "2025 (legacy, initialize)",
            },
            match (&answer, era) {
                (None, _) => "not answered",
                (Some(_), Era::Modern) => "answered",
                (Some(_), Era::Legacy) => "refused",
            }
        );
        *self.era.lock().unwrap_or_else(|e| e.into_inner()) = Some(era);
        answer.is_some()
    }
}

/// The era a `server/discover` answer reveals.
pub(super) fn era_of_discover(answer: &RawValue) -> Era {
    let Ok(answer) = serde_json::from_str::<Value>(answer.get()) else {
        return Era::Legacy;
    };
    let discovered = answer["result"]["supportedVersions"].is_array();
    let unsupported_version = answer["error"]["data"]["supported"].is_array();
    if discovered || unsupported_version {
        Era::Modern
    } else {
        Era::Legacy
    }
}

/// The era one message speaks.
pub(super) fn era_of_message(
    method: Option<&str>,
    object: &Object,
    headers: &[(String, String)],
) -> Era {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    if method == Some("server/discover") {
        return Era::Modern;
    }
    let in_meta = object
        .get("params")
        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
        .is_some_and(|p| {
            p["_meta"]
                .get("io.modelcontextprotocol/protocolVersion")
                .is_some()
        });
    // Dates compare as strings; anything not date-shaped is not a modern version.
    let modern_header = header("mcp-protocol-version").is_some_and(|v| {
        v.len() == MODERN_VERSION.len() && v.as_bytes()[4] == b'-' && v >= MODERN_VERSION
    });
    if in_meta || (modern_header && header("mcp-session-id").is_none()) {
        Era::Modern
    } else {
        Era::Legacy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    #[test]
    fn discover_answers_are_classified_by_shape_not_by_one_code() {
        let modern = [
            json!({"id": 1, "result": {"supportedVersions": ["2026-07-28"], "capabilities": {}}}),
            json!({"id": 1, "error": {"code": -32022, "message": "Unsupported protocol version",
                   "data": {"supported": ["2027-01-01"], "requested": "2026-07-28"}}}),
            json!({"id": 1, "error": {"code": -32004, "message": "x",
                   "data": {"supported": ["2026-07-28"]}}}),
        ];
        for answer in modern {
            assert_eq!(
                era_of_discover(&raw(answer.clone())),
                Era::Modern,
                "{answer}"
            );
        }
        let legacy = [
            json!({"id": 1, "error": {"code": -32601, "message": "Method not found"}}),
            json!({"id": 1, "error": {"code": -32602, "message": "not initialized"}}),
            json!({"id": 1, "result": {}}),
            json!({"id": 1, "result": {"content": []}}),
        ];
        for answer in legacy {
            assert_eq!(
                era_of_discover(&raw(answer.clone())),
                Era::Legacy,
                "{answer}"
            );
        }
    }

    #[test]
    fn messages_are_modern_by_method_meta_or_header_without_a_session() {
        let era = |text: &str, headers: &[(&str, &str)]| {
            let object = Object::parse(text).unwrap();
            let method = serde_json::from_str::<Value>(text).unwrap()["method"]
                .as_str()
                .map(str::to_string);
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            era_of_message(method.as_deref(), &object, &headers)
        };
        let v = "MCP-Protocol-Version";
        assert_eq!(
            era(r#"{"id":1,"method":"server/discover"}"#, &[]),
            Era::Modern
        );
        let meta = r#"{"id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        assert_eq!(era(meta, &[]), Era::Modern);
        let list = r#"{"id":1,"method":"tools/list"}"#;
        assert_eq!(era(list, &[(v, "2026-07-28")]), Era::Modern);
        assert_eq!(era(list, &[(v, "2027-03-01")]), Era::Modern);
        assert_eq!(era(list, &[(v, "2025-11-25")]), Era::Legacy);
        assert_eq!(era(list, &[(v, "garbage-xx")]), Era::Legacy);
        assert_eq!(
            era(list, &[(v, "2026-07-28"), ("Mcp-Session-Id", "s")]),
            Era::Legacy
        );
        assert_eq!(era(list, &[]), Era::Legacy);
        assert_eq!(era(r#"{"id":1,"method":"initialize"}"#, &[]), Era::Legacy);
    }
}
