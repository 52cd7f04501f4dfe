//! OAuth-protected MCP servers behind a tunnel, as a host sees them through OpenAI's service.
//!
//! - `GET /.well-known/oauth-protected-resource/v1/mcp/{tunnel_id}[/{channel}]` (RFC 9728
//!   protected-resource metadata, "PRMD") becomes an `oauth_discovery` command for the tunnel;
//!   the client fetches the MCP server's PRMD inside its network and answers with an
//!   `oauth_discovery_response`. The host gets that JSON with `resource` rewritten to the
//!   tunnel's public URL, `<public-url>/v1/mcp/{tunnel_id}[/{channel}]` (every other member
//!   kept), since that URL is what the host calls and asks tokens for (RFC 8707). A 4xx/5xx
//!   answer from the client passes through as its JSON error.
//! - On a passthrough tunnel, a `WWW-Authenticate` coming back from the MCP server has its
//!   `resource_metadata="…"` parameter pointed at that PRMD URL ([`rewrite_challenges`]); the
//!   rest of the header is untouched.
//!
//! Only passthrough tunnels qualify: the host's own bearer token must reach the MCP server, and a
//! relay-key tunnel uses `Authorization` for the connector key and strips it. The public origin
//! comes from `--public-url` alone, never from `Host`, which a caller chooses. The route is
//! unauthenticated (public metadata) but under the relay's connection, body and client
//! certificate rules; its errors use the contract's `{"error":{"message","type","code"}}`.
//! The authorization server itself is not tunnelled: the host must reach it directly.

use std::time::{Duration, Instant};

use super::cors::Preflight;
use super::hub::{CommandBody, SubmitError, Wait, now_rfc3339};
use super::mcp_error::{self, McpError};
use super::tunnels::ConnectorAuth;
use super::{Relay, api_error, unknown_tunnel};
use crate::config::is_loopback_host;
use crate::http_server::{Request, RequestHead, Response};
use crate::wire::{self, COMMAND_OAUTH_DISCOVERY, RespType, ResponsePayload};
use serde_json::Value;
use ureq::http::Uri;

/// The well-known prefix (RFC 9728 §3) of the metadata routes, as path segments.
pub const WELL_KNOWN: [&str; 2] = [".well-known", "oauth-protected-resource"];

/// Time reserved at the end of the budget for the client's response POST (as the connector's).
const RESPONSE_MARGIN: Duration = Duration::from_millis(500);

/// How often a waiting request checks its caller and the client that took its command.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The PRMD URL of a tunnel endpoint, `<public>/.well-known/oauth-protected-resource/v1/mcp/…`.
pub fn prmd_url(public_url: &str, endpoint_path: &str) -> String {
    format!(
        "{public_url}/{}/{}{endpoint_path}",
        WELL_KNOWN[0], WELL_KNOWN[1]
    )
}

/// `--public-url`: an `https://` origin, or `http://` to a loopback host; no credentials, path
/// or query (a trailing `/` is forgiven). Returns `scheme://authority`, lowercased.
pub fn parse_public_url(value: &str) -> Result<String, String> {
    let example = "expected the relay's external origin, e.g. https://relay.example.com";
    let uri: Uri = value
        .parse()
        .map_err(|_| format!("is not a URL; {example}"))?;
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    let host = uri.host().unwrap_or_default();
    if host.is_empty() || !(scheme == "https" || scheme == "http") {
        return Err(format!("must be an https:// origin; {example}"));
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    if authority.contains('@') {
        return Err("must not contain credentials".into());
    }
    if uri
        .path_and_query()
        .is_some_and(|pq| !matches!(pq.as_str(), "" | "/"))
    {
        return Err(format!(
            "must be an origin without path or query (the relay serves /v1/mcp/... at its root); \
             {example}"
        ));
    }
    if scheme == "http" && !is_loopback_host(host) {
        return Err(
            "must be https:// (hosts send their OAuth tokens to it); http:// is accepted only \
             for loopback hosts"
                .into(),
        );
    }
    Ok(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

impl Relay {
    /// Admission of the metadata routes: no key (public metadata), but the client certificate
    /// rule of the MCP endpoint; `OPTIONS` unchecked, as there.
    pub(super) fn admit_oauth(&self, head: &RequestHead<'_>) -> Result<usize, Response> {
        if head.method != "OPTIONS" {
            self.require_client_cert(head.client_cert_verified, false)?;
        }
        Ok(super::SMALL_BODY)
    }

    /// `…/oauth-protected-resource/v1/mcp/{rest}`, CORS headers added as on the MCP endpoint.
    pub(super) fn protected_resource(&self, rest: &[&str], req: Request) -> Response {
        let origin = req.header("Origin").map(str::to_string);
        let cors = &self.cfg.cors;
        let resp = match req.method.as_str() {
            "OPTIONS" => {
                let header = |name: &str| req.header(name).map(str::to_string);
                return match cors.preflight(&header) {
                    Preflight::Allowed(resp) => resp,
                    Preflight::Refused => error(mcp_error::CORS_ORIGIN_NOT_ALLOWED),
                    Preflight::NotPreflight => {
                        Response::new(204, Vec::new()).with_header("Allow", "GET, OPTIONS")
                    }
                };
            }
            "GET" => self.discover(rest, &req),
            _ => api_error(
                405,
                "invalid_request_error",
                "method_not_allowed",
                "protected-resource metadata is read with GET",
            )
            .with_header(
                "Allow",
                if cors.enabled() {
                    "GET, OPTIONS"
                } else {
                    "GET"
                },
            ),
        };
        cors.decorate(resp, origin.as_deref())
    }

    fn discover(&self, rest: &[&str], req: &Request) -> Response {
        let started = Instant::now();
        if let Err(denied) = self.require_client_cert(req.client_cert_verified, false) {
            return denied;
        }
        let rest = match rest.split_last() {
            Some((&"", before)) => before,
            _ => rest,
        };
        let (id, channel_segment) = match rest {
            [id] => (*id, None),
            [id, channel] => (*id, Some(*channel)),
            _ => return super::not_found(),
        };
        let Some(record) = self.record(id) else {
            return unknown_tunnel();
        };
        if record.connector_auth == ConnectorAuth::RelayKey {
            return oauth_not_available();
        }
        let Some(public_url) = &self.cfg.public_url else {
            return public_url_not_configured();
        };
        let channel = match channel_segment {
            None => wire::DEFAULT_CHANNEL.to_string(),
            Some(c) => match wire::canonical_channel(Some(c)) {
                Some(c) => c,
                None => return error(mcp_error::INVALID_CHANNEL_FORMAT),
            },
        };
        let resource = format!("{public_url}{}", endpoint_path(&record.id, channel_segment));
        let body = CommandBody {
            command_type: COMMAND_OAUTH_DISCOVERY,
            channel,
            headers: Default::default(),
            jsonrpc: None,
            created_at: now_rfc3339(),
        };
        let deadline = started + self.cfg.connector_timeout;
        let hub = self.hub(&record.id);
        let command_deadline = deadline.checked_sub(RESPONSE_MARGIN).unwrap_or(deadline);
        let ticket = match hub.submit(body, command_deadline, None, false) {
            Ok(ticket) => ticket,
            Err(SubmitError::QueueFull) => {
                return error(mcp_error::TUNNEL_QUEUE_FULL).with_header("Retry-After", "1");
            }
            Err(_) => return error(mcp_error::TUNNEL_CLIENT_NOT_CONNECTED),
        };
        log::debug!(
            "tunnel {}: queued {} (oauth_discovery)",
            record.id,
            ticket.request_id
        );
        let mut client_checked = Instant::now();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return error(mcp_error::TUNNEL_RESPONSE_TIMEOUT);
            }
            match ticket.next(left.min(CHECK_EVERY)) {
                Wait::Payload(payload) if payload.resp_type.is_terminal() => {
                    log::debug!(
                        "{}: oauth_discovery answered {}",
                        ticket.request_id,
                        payload.resp_code
                    );
                    return answer(payload, &resource);
                }
                Wait::Payload(_) => continue,
                Wait::Timeout if req.peer_gone() => {
                    ticket.cancel("host_closed");
                    return error(mcp_error::TUNNEL_RESPONSE_TIMEOUT)
                        .with_header("Connection", "close");
                }
                Wait::Timeout if client_checked.elapsed() >= Duration::from_millis(500) => {
                    client_checked = Instant::now();
                    if ticket.client_gone() {
                        return error(mcp_error::TUNNEL_CLIENT_GONE);
                    }
                }
                Wait::Timeout => continue,
                Wait::Cancelled | Wait::Dropped => {
                    return error(mcp_error::TUNNEL_RESPONSE_TIMEOUT);
                }
            }
        }
    }
}

/// `/v1/mcp/{id}[/{channel}]`, the channel as the caller wrote it (a valid name), so the
/// `resource` matches the URL the host uses.
pub fn endpoint_path(tunnel_id: &str, channel: Option<&str>) -> String {
    match channel {
        Some(c) => format!("/v1/mcp/{tunnel_id}/{c}"),
        None => format!("/v1/mcp/{tunnel_id}"),
    }
}

/// The host's answer to the client's `oauth_discovery_response`.
fn answer(payload: ResponsePayload, resource: &str) -> Response {
    let invalid = |why: &str| {
        api_error(
            502,
            "server_error",
            "oauth_discovery_failed",
            &format!("the tunnel client's discovery answer is unusable: {why}"),
        )
    };
    if payload.resp_type != RespType::OauthDiscoveryResponse {
        return invalid("not an oauth_discovery_response");
    }
    let json: Option<Value> = payload
        .resp_json
        .as_ref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok());
    let code = payload.resp_code;
    if (400..=599).contains(&code) {
        let body = match json {
            Some(body) => body.to_string(),
            None => return invalid(&format!("status {code} without a JSON body")),
        };
        return Response::json(code, body);
    }
    if !(200..=299).contains(&code) {
        return invalid(&format!("status {code}"));
    }
    let Some(Value::Object(mut metadata)) = json else {
        return invalid("the metadata is not a JSON object");
    };
    metadata.insert("resource".into(), Value::String(resource.to_string()));
    let mut resp = Response::json(200, Value::Object(metadata).to_string());
    let cache_control = payload
        .resp_headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("cache-control"))
        .and_then(|(_, values)| values.first());
    if let Some(value) = cache_control {
        resp = resp.with_header("Cache-Control", value);
    }
    resp
}

/// One of the MCP endpoint's errors in the contract's shape, for the metadata route.
fn error(e: McpError) -> Response {
    let kind = if e.status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    api_error(e.status, kind, e.code, e.message)
}

fn oauth_not_available() -> Response {
    api_error(
        404,
        "invalid_request_error",
        "oauth_not_available",
        "this tunnel uses connector_auth = \"relay-key\": its Authorization header carries the \
         relay's connector key, so a host's OAuth token cannot reach the MCP server; OAuth needs \
         a tunnel with connector_auth = \"passthrough\"",
    )
}

fn public_url_not_configured() -> Response {
    api_error(
        404,
        "invalid_request_error",
        "public_url_not_configured",
        "this relay has no --public-url (RELAY_PUBLIC_URL), so it cannot name the resource \
         hosts reach; the operator must set it to enable OAuth metadata",
    )
}

/// Points every `resource_metadata` parameter of the answer's `WWW-Authenticate` headers at
/// `prmd_url` (a passthrough tunnel's answer, `--public-url` set).
pub fn rewrite_challenges(mut resp: Response, prmd_url: &str) -> Response {
    for (name, value) in resp.headers.iter_mut() {
        if name.eq_ignore_ascii_case("www-authenticate")
            && let Some(rewritten) = rewrite_resource_metadata(value, prmd_url)
        {
            *value = rewritten;
        }
    }
    resp
}

/// `value` with each `resource_metadata=<token or quoted-string>` auth-param (name in any case)
/// replaced by `resource_metadata="<url>"`; `None` when there is none. Quoted strings are
/// skipped whole, so a parameter name inside another parameter's value is left alone.
fn rewrite_resource_metadata(value: &str, url: &str) -> Option<String> {
    let b = value.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(value.len() + url.len());
    let mut changed = false;
    // The last byte that was not whitespace: after `=` a token is a value, not a name.
    let mut last = b',';
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            let end = quoted_end(b, i);
            out.extend_from_slice(&b[i..end]);
            i = end;
            last = b'"';
            continue;
        }
        if !is_tchar(c) {
            out.push(c);
            if c != b' ' && c != b'\t' {
                last = c;
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        out.extend_from_slice(&b[start..i]);
        let mut j = i;
        while j < b.len() && matches!(b[j], b' ' | b'\t') {
            j += 1;
        }
        let is_param = last != b'=' && j < b.len() && b[j] == b'=';
        last = b[i - 1];
        if !(is_param && value[start..i].eq_ignore_ascii_case("resource_metadata")) {
            continue;
        }
        j += 1;
        while j < b.len() && matches!(b[j], b' ' | b'\t') {
            j += 1;
        }
        let end = match b.get(j) {
            Some(b'"') => quoted_end(b, j),
            // A token, or (not valid, but seen) a bare URL: up to the next separator.
            _ => {
                let mut k = j;
                while k < b.len() && !matches!(b[k], b',' | b' ' | b'\t' | b'"') {
                    k += 1;
                }
                k
            }
        };
        out.extend_from_slice(b"=\"");
        out.extend_from_slice(url.as_bytes());
        out.push(b'"');
        changed = true;
        last = b'"';
        i = end;
    }
    // Only ASCII was inserted and every other byte copied whole, so this is still UTF-8.
    changed.then(|| String::from_utf8(out).ok()).flatten()
}

/// The index after the quoted-string starting at `b[start] == '"'` (end of input if unclosed).
fn quoted_end(b: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// RFC 9110 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const URL: &str = "https://relay.example/.well-known/oauth-protected-resource/v1/mcp/t1";

    #[test]
    fn resource_metadata_is_replaced_and_the_rest_kept() {
        let cases = [
            (
                r#"Bearer error="invalid_token", resource_metadata="http://10.0.0.5/.well-known/oauth-protected-resource/mcp", scope="a b""#,
                format!(r#"Bearer error="invalid_token", resource_metadata="{URL}", scope="a b""#),
            ),
            (
                "Bearer Resource_Metadata = http://10.0.0.5/x, scope=a",
                format!("Bearer Resource_Metadata=\"{URL}\", scope=a"),
            ),
            (
                r#"Bearer realm="resource_metadata=\"x\"", resource_metadata="a\"b""#,
                format!(r#"Bearer realm="resource_metadata=\"x\"", resource_metadata="{URL}""#),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                rewrite_resource_metadata(input, URL).as_deref(),
                Some(want.as_str()),
                "{input}"
            );
        }
        assert_eq!(rewrite_resource_metadata(r#"Bearer realm="x""#, URL), None);
        assert_eq!(
            rewrite_resource_metadata("Bearer error=resource_metadata", URL),
            None
        );
    }

    fn payload(code: u16, json: &str) -> ResponsePayload {
        ResponsePayload {
            request_id: "req_1".into(),
            channel: "main".into(),
            resp_json: serde_json::value::RawValue::from_string(json.into()).ok(),
            resp_headers: BTreeMap::new(),
            resp_code: code,
            resp_type: RespType::OauthDiscoveryResponse,
        }
    }

    #[test]
    fn the_metadata_gets_the_public_resource_and_keeps_its_other_members() {
        let resp = answer(
            payload(
                200,
                r#"{"resource":"http://10.0.0.5/mcp","authorization_servers":["https://as"],"x":1}"#,
            ),
            "https://relay.example/v1/mcp/t1",
        );
        assert_eq!(resp.status, 200);
        let crate::http_server::Body::Full(bytes) = &resp.body else {
            panic!("a full body")
        };
        let body: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(body["resource"], "https://relay.example/v1/mcp/t1");
        assert_eq!(body["authorization_servers"][0], "https://as");
        assert_eq!(body["x"], 1);
        let resp = answer(payload(200, "[1]"), "r");
        assert_eq!(resp.status, 502);
        let resp = answer(
            payload(502, r#"{"error":{"code":"oauth_discovery_failed"}}"#),
            "r",
        );
        assert_eq!(resp.status, 502);
    }
}
