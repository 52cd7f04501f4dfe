//! The relay's own errors on the public MCP endpoint (`/v1/mcp/…`), as JSON-RPC error objects an
//! MCP host can show:
//!
//! ```json
//! {"jsonrpc":"2.0","id":<the request's id, else null>,
//!  "error":{"code":-32088,"message":"tunnel client not connected: start …",
//!           "data":{"code":"tunnel_client_not_connected","fix":"…"}}}
//! ```
//!
//! An MCP SDK reads a JSON-RPC error out of any answer and shows its `message`; the relay's older
//! `{"error":{"code":"…","type":"…"}}` shape was shown as "the server returned an error" and the
//! cause was lost. The HTTP status is the one the relay always used; `error.data.code` is the
//! relay's stable string code (the one README names and scripts may match on), `error.data.fix`
//! what to do about it. The numeric codes sit in JSON-RPC's server-error range, in a block
//! (-32080 … -32099) clear of the codes MCP itself defines (-32002, -32020, -32042). The
//! control-plane routes (`/v1/tunnels/…`) keep the contract's shape: see [`super::api_error`].

use crate::http_server::Response;

/// One relay-made error of the MCP endpoint; the table below lists them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McpError {
    pub status: u16,
    /// The JSON-RPC `error.code`.
    pub rpc_code: i64,
    /// `error.data.code`: the relay's string code.
    pub code: &'static str,
    /// `error.message`: what happened, and in short what to do.
    pub message: &'static str,
    /// `error.data.fix`: what to do, in full.
    pub fix: &'static str,
}

pub const INVALID_CONNECTOR_KEY: McpError = McpError {
    status: 401,
    rpc_code: -32080,
    code: "invalid_connector_key",
    message: "missing or invalid connector key: send Authorization: Bearer <connector key>",
    fix: "Set the MCP host's Authorization header to 'Bearer <connector key>', the key printed by \
          `mcp-tunnel relay tunnel add` (or `rotate-key --role connector`). This relay runs no \
          OAuth server: there is nothing to sign in to, only the header to fix.",
};

pub const CLIENT_CERTIFICATE_REQUIRED: McpError = McpError {
    status: 403,
    rpc_code: -32081,
    code: "client_certificate_required",
    message: "this endpoint requires a TLS client certificate signed by the relay's client CA",
    fix: "Configure the MCP host with a client certificate from the relay's --tls-client-ca, or \
          run the relay with --tls-client-auth control-plane.",
};

pub const TUNNEL_NOT_FOUND: McpError = McpError {
    status: 404,
    rpc_code: -32082,
    code: "tunnel_not_found",
    message: "no such tunnel on this relay: check the tunnel id in the URL",
    fix: "Use the URL /v1/mcp/<tunnel id> with an id that `mcp-tunnel relay tunnel list` shows.",
};

pub const NOT_FOUND: McpError = McpError {
    status: 404,
    rpc_code: -32083,
    code: "not_found",
    message: "no such endpoint: use /v1/mcp/<tunnel id> or /v1/mcp/<tunnel id>/<channel>",
    fix: "Use the URL /v1/mcp/<tunnel id> or /v1/mcp/<tunnel id>/<channel>.",
};

pub const INVALID_CHANNEL_FORMAT: McpError = McpError {
    status: 400,
    rpc_code: -32084,
    code: "invalid_channel_format",
    message: "invalid channel name in the URL: channel names are lowercase letters, digits, - and _ \
              (at most 64)",
    fix: "Use /v1/mcp/<tunnel id>/<channel> with a channel the tunnel client serves, or no \
          channel for the default one.",
};

/// GET or DELETE without `Mcp-Session-Id`: a stateless (2026-07-28) host; only POST means
/// something.
pub const METHOD_NOT_ALLOWED_STATELESS: McpError = McpError {
    status: 405,
    rpc_code: -32085,
    code: "method_not_allowed",
    message: "method not allowed without an Mcp-Session-Id: send MCP requests with POST",
    fix: "Send JSON-RPC messages with POST. GET (a server stream) is not offered; DELETE ends a \
          session and needs its Mcp-Session-Id.",
};

/// GET with a session (a 2025 host asking for the standalone stream), or any other method.
pub const METHOD_NOT_ALLOWED: McpError = McpError {
    status: 405,
    rpc_code: -32085,
    code: "method_not_allowed",
    message: "this endpoint offers no standalone event stream; use POST or DELETE",
    fix: "Send JSON-RPC messages with POST; end a session with DELETE and its Mcp-Session-Id. \
          Server notifications arrive on the event stream of the POST they belong to.",
};

pub const REQUEST_BODY_TOO_LARGE: McpError = McpError {
    status: 413,
    rpc_code: -32086,
    code: "request_body_too_large",
    message: "request body too large: the MCP request is larger than this relay accepts \
              (--connector.max-body)",
    fix: "Send a smaller request, or raise the relay's --connector.max-body \
          (RELAY_CONNECTOR_MAX_BODY).",
};

pub const SESSION_NOT_FOUND: McpError = McpError {
    status: 404,
    rpc_code: -32087,
    code: "session_not_found",
    message: "session not found: the tunnel client holding this MCP session is gone; initialize \
              a new session",
    fix: "Start a new MCP session (initialize again without Mcp-Session-Id).",
};

pub const TUNNEL_CLIENT_NOT_CONNECTED: McpError = McpError {
    status: 503,
    rpc_code: -32088,
    code: "tunnel_client_not_connected",
    message: "tunnel client not connected: start mcp-tunnel run for this tunnel",
    fix: "Start `mcp-tunnel run` for this tunnel inside the private network (its runtime key and \
          CONTROL_PLANE_BASE_URL pointing at this relay), or check why it stopped polling \
          (`mcp-tunnel doctor`).",
};

pub const TUNNEL_QUEUE_FULL: McpError = McpError {
    status: 503,
    rpc_code: -32089,
    code: "tunnel_queue_full",
    message: "the tunnel's request queue is full: retry shortly",
    fix: "Retry after the Retry-After delay; if it persists, run more tunnel clients or raise \
          the client's --max-concurrent or the relay's --queue-capacity.",
};

pub const TUNNEL_RESPONSE_TIMEOUT: McpError = McpError {
    status: 504,
    rpc_code: -32090,
    code: "tunnel_response_timeout",
    message: "timeout: the tunnel client did not answer in time (--connector.timeout)",
    fix: "Check that the MCP server behind the tunnel answers; raise the relay's \
          --connector.timeout for tools that run longer.",
};

pub const CORS_ORIGIN_NOT_ALLOWED: McpError = McpError {
    status: 403,
    rpc_code: -32091,
    code: "cors_origin_not_allowed",
    message: "this origin may not call the relay from a browser (not in --cors-origin)",
    fix: "Add the page's origin to the relay's --cors-origin (RELAY_CORS_ORIGIN).",
};

/// The request broke HTTP itself (bad framing, both `Content-Length` and chunked …): the HTTP
/// server's 400, before the relay saw the request.
pub const MALFORMED_HTTP_REQUEST: McpError = McpError {
    status: 400,
    rpc_code: -32092,
    code: "malformed_http_request",
    message: "malformed HTTP request: the relay could not read this request's framing",
    fix: "Check any proxy between the MCP host and the relay; the request's Content-Length or \
          chunked encoding is broken.",
};

pub const REQUEST_TIMEOUT: McpError = McpError {
    status: 408,
    rpc_code: -32093,
    code: "request_timeout",
    message: "request not received in time: the request body stopped arriving",
    fix: "Check the network between the MCP host and the relay; a whole request must arrive \
          within the relay's read timeout.",
};

pub const HEADERS_TOO_LARGE: McpError = McpError {
    status: 431,
    rpc_code: -32094,
    code: "request_header_fields_too_large",
    message: "request header fields too large for this relay",
    fix: "Send fewer or smaller headers (cookies, large Mcp-Param-* values).",
};

pub const TRANSFER_CODING_NOT_SUPPORTED: McpError = McpError {
    status: 501,
    rpc_code: -32095,
    code: "not_implemented",
    message: "transfer coding not supported: send the body plain or chunked",
    fix: "Send the request body with Content-Length or Transfer-Encoding: chunked only.",
};

pub const RELAY_BUSY: McpError = McpError {
    status: 503,
    rpc_code: -32096,
    code: "server_busy",
    message: "relay busy: no connection slot is free for this request; retry shortly",
    fix: "Retry; if it persists, raise the relay's --max-connections or find the peer holding \
          many connections.",
};

/// The relay's HTTP server failed on its own (a handler fault): nothing of the request ran.
pub const RELAY_INTERNAL_ERROR: McpError = McpError {
    status: 500,
    rpc_code: -32097,
    code: "internal_error",
    message: "internal relay error: the request was not forwarded",
    fix: "Retry; the relay's log has the cause.",
};

/// The HTTP server's own refusal of a request to the MCP endpoint, as a JSON-RPC error (its
/// `Limits::error_shape` for `/v1/mcp/…`). The id is `null`: the body was never parsed.
pub fn server_refusal(status: u16) -> Response {
    match status {
        400 => MALFORMED_HTTP_REQUEST,
        408 => REQUEST_TIMEOUT,
        413 => REQUEST_BODY_TOO_LARGE,
        431 => HEADERS_TOO_LARGE,
        501 => TRANSFER_CODING_NOT_SUPPORTED,
        503 => RELAY_BUSY,
        _ => RELAY_INTERNAL_ERROR,
    }
    .response(None)
}

/// The body was not JSON at all: JSON-RPC's parse error.
pub const INVALID_JSON: McpError = McpError {
    status: 400,
    rpc_code: -32700,
    code: "invalid_json_payload",
    message: "parse error: the body must be one JSON-RPC message (a JSON object)",
    fix: "Send one JSON-RPC request, notification or response as the POST body.",
};

/// JSON, but not one JSON-RPC message (a batch, a bare value): JSON-RPC's invalid request.
pub const INVALID_JSON_RPC: McpError = McpError {
    status: 400,
    rpc_code: -32600,
    code: "invalid_json_payload",
    message: "invalid request: the body must be one JSON-RPC message (a JSON object)",
    fix: "Send one JSON-RPC request, notification or response as the POST body (no batches).",
};

/// The client that took the request went away. -32603 as the client's own failures, which is
/// what it is to the host: the request may or may not have run.
pub const TUNNEL_CLIENT_GONE: McpError = McpError {
    status: 502,
    rpc_code: -32603,
    code: "tunnel_client_gone",
    message: "tunnel client gone: the client that took this request disconnected and did not \
              come back; the request may or may not have been executed",
    fix: "Retry if the request is safe to repeat; check why the tunnel client stopped \
          (its supervisor's log).",
};

/// The request was cancelled: its caller sent `notifications/cancelled` for it while it was held
/// here. The caller does not wait for this answer; it only ends the held request cleanly.
pub const REQUEST_CANCELLED: McpError = McpError {
    status: 200,
    rpc_code: -32098,
    code: "request_cancelled",
    message: "request cancelled by its caller (notifications/cancelled)",
    fix: "Nothing to do: the caller cancelled this request itself.",
};

/// The tunnel has as many long-lived streams open as `--stream.max-per-tunnel` allows.
pub const TUNNEL_STREAM_LIMIT: McpError = McpError {
    status: 429,
    rpc_code: -32099,
    code: "tunnel_stream_limit",
    message: "too many open event streams on this tunnel (--stream.max-per-tunnel)",
    fix: "Close streams this host no longer reads, or raise the relay's --stream.max-per-tunnel.",
};

/// The shared store (`--store redis://…`) cannot be reached: nothing can be queued.
pub const TUNNEL_TRANSPORT_UNAVAILABLE: McpError = McpError {
    status: 503,
    rpc_code: -32070,
    code: "tunnel_transport_unavailable",
    message: "the relay's shared store (Redis) is unavailable: retry shortly",
    fix: "Retry after the Retry-After delay; the relay's operator should check its Redis \
          (--store, and the relay's /healthz).",
};

/// The relay is stopping (SIGTERM): it finishes the requests it holds and takes no new ones.
pub const RELAY_DRAINING: McpError = McpError {
    status: 503,
    rpc_code: -32071,
    code: "relay_draining",
    message: "relay stopping: it finishes the requests it holds and takes no new ones; retry \
              shortly",
    fix: "Retry after the Retry-After delay: another relay node, or this one once restarted, \
          takes it.",
};

impl McpError {
    /// The JSON-RPC error text for a request whose raw `id` text is `id` (`None`: `null`). The id
    /// is spliced in as the caller wrote it, so it matches byte for byte.
    pub fn body(&self, id: Option<&str>) -> String {
        let error = serde_json::json!({
            "code": self.rpc_code,
            "message": self.message,
            "data": { "code": self.code, "fix": self.fix },
        });
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"error":{error}}}"#,
            id.unwrap_or("null")
        )
    }

    /// The HTTP answer: this error's status and [`McpError::body`] as `application/json`, plus
    /// the headers its status calls for (`Retry-After` on a full queue).
    pub fn response(&self, id: Option<&str>) -> Response {
        let resp = Response::json(self.status, self.body(id));
        if *self == TUNNEL_QUEUE_FULL
            || *self == TUNNEL_STREAM_LIMIT
            || *self == TUNNEL_TRANSPORT_UNAVAILABLE
            || *self == RELAY_DRAINING
        {
            return resp.with_header("Retry-After", "1");
        }
        resp
    }
}

/// The RFC 6750 challenge of the connector endpoint.
const REALM: &str = "Bearer realm=\"mcp-tunnel\"";

/// The 401 for a missing or wrong connector key. `presented`: a Bearer token was sent (and is
/// wrong), so the challenge says `invalid_token`; without one, RFC 6750 wants the bare realm.
/// Either way no OAuth metadata is advertised: there is no authorization server to find.
pub fn unauthorized(presented: bool) -> Response {
    let challenge = if presented {
        format!(
            "{REALM}, error=\"invalid_token\", error_description=\"the connector key is not valid \
             for this tunnel; send Authorization: Bearer <connector key>\""
        )
    } else {
        REALM.to_string()
    };
    INVALID_CONNECTOR_KEY
        .response(None)
        .with_header("WWW-Authenticate", &challenge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const ALL: &[McpError] = &[
        INVALID_CONNECTOR_KEY,
        CLIENT_CERTIFICATE_REQUIRED,
        TUNNEL_NOT_FOUND,
        NOT_FOUND,
        INVALID_CHANNEL_FORMAT,
        METHOD_NOT_ALLOWED_STATELESS,
        METHOD_NOT_ALLOWED,
        REQUEST_BODY_TOO_LARGE,
        SESSION_NOT_FOUND,
        TUNNEL_CLIENT_NOT_CONNECTED,
        TUNNEL_QUEUE_FULL,
        TUNNEL_RESPONSE_TIMEOUT,
        CORS_ORIGIN_NOT_ALLOWED,
        INVALID_JSON,
        INVALID_JSON_RPC,
        TUNNEL_CLIENT_GONE,
        MALFORMED_HTTP_REQUEST,
        REQUEST_TIMEOUT,
        HEADERS_TOO_LARGE,
        TRANSFER_CODING_NOT_SUPPORTED,
        RELAY_BUSY,
        RELAY_INTERNAL_ERROR,
        REQUEST_CANCELLED,
        TUNNEL_STREAM_LIMIT,
        TUNNEL_TRANSPORT_UNAVAILABLE,
    ];

    #[test]
    fn every_error_is_a_json_rpc_error_object() {
        for e in ALL {
            let body: Value = serde_json::from_str(&e.body(Some(r#""a-1""#))).unwrap();
            assert_eq!(body["jsonrpc"], "2.0");
            assert_eq!(body["id"], "a-1");
            assert_eq!(body["error"]["code"], e.rpc_code);
            assert_eq!(body["error"]["data"]["code"], e.code);
            assert!(!body["error"]["message"].as_str().unwrap().is_empty());
            assert!(!body["error"]["data"]["fix"].as_str().unwrap().is_empty());
            let null: Value = serde_json::from_str(&e.body(None)).unwrap();
            assert!(null["id"].is_null());
        }
    }

    #[test]
    fn the_servers_refusals_keep_their_status() {
        for status in [400, 408, 413, 431, 500, 501, 503] {
            assert_eq!(server_refusal(status).status, status);
        }
    }

    #[test]
    fn each_relay_code_has_one_number() {
        for a in ALL {
            assert!(
                (-32099..=-32000).contains(&a.rpc_code)
                    || [-32700, -32600, -32603].contains(&a.rpc_code),
                "{a:?}"
            );
            for b in ALL {
                if a.rpc_code == b.rpc_code {
                    assert_eq!(a.code, b.code, "{a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn the_id_is_kept_byte_for_byte() {
        let body = TUNNEL_RESPONSE_TIMEOUT.body(Some("1.0e3"));
        assert!(
            body.starts_with(r#"{"jsonrpc":"2.0","id":1.0e3,"error":"#),
            "{body}"
        );
    }
}
