//! CORS for browser-based MCP hosts on the public MCP endpoint (`/v1/mcp/…`), for the origins
//! `--cors-origin` lists and no other. With none listed (the default) the relay writes no CORS
//! header at all, and browsers keep pages of other origins out, as for any server.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from a listed
//!   origin is answered 204 before any key or certificate is checked: browsers send preflights
//!   without credentials, so a check could only fail. From an unlisted origin: 403
//!   `cors_origin_not_allowed` without CORS headers, which the browser reports as a CORS failure
//!   and a person using curl can read.
//! - Every other answer to a listed origin carries `Access-Control-Allow-Origin` (that origin) and
//!   `Access-Control-Expose-Headers`, so the page can read the session id, protocol version and
//!   a 401's challenge. Every answer of the endpoint carries `Vary: Origin` once CORS is on.
//!
//! No `Access-Control-Allow-Credentials`: the connector key travels in `Authorization`, which a
//! page sets itself; cookies play no part.

use crate::headers::is_token;
use crate::http_server::Response;

/// Request headers a page may send (browsers need them named; `*` does not cover
/// `Authorization`). `mcp-param-*` (one per mirrored tool parameter) are allowed by prefix.
const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

/// Prefix of the MCP 2026-07-28 headers mirrored from tool parameters.
const PARAM_HEADER_PREFIX: &str = "mcp-param-";

const ALLOWED_METHODS: &str = "POST, GET, DELETE, OPTIONS";

/// Response headers a page may read besides the CORS-safelisted ones (`Retry-After` of a full
/// queue, `Allow` of a 405 included).
const EXPOSED_HEADERS: &str =
    "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate, Last-Event-ID, Retry-After, Allow";

/// How long a browser may cache a preflight answer: ten minutes, under every browser's own cap
/// (Chromium: 2 h), so a changed relay is picked up soon.
const MAX_AGE_SECONDS: &str = "600";

/// The allowed origins, normalised (lowercase).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    origins: Vec<String>,
}

/// What an `OPTIONS` request gets.
pub enum Preflight {
    /// A preflight from a listed origin: the 204 answer.
    Allowed(Response),
    /// A preflight from an unlisted origin (or CORS off).
    Refused,
    /// Not a preflight (no `Origin` or no `Access-Control-Request-Method`).
    NotPreflight,
}

impl Cors {
    /// From `--cors-origin` values, each one origin or a comma-separated list of them.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Cors, String> {
        let mut origins = Vec::new();
        for part in values.into_iter().flat_map(|v| v.split(',')) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let origin = parse_origin(part)?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(Cors { origins })
    }

    pub fn enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    /// `origin` as listed, if it is.
    fn listed<'a>(&self, origin: Option<&'a str>) -> Option<&'a str> {
        let origin = origin?.trim();
        self.origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
            .then_some(origin)
    }

    /// Judges an `OPTIONS` request from its headers.
    pub fn preflight(&self, header: &dyn Fn(&str) -> Option<String>) -> Preflight {
        let origin = header("Origin");
        if origin.is_none() || header("Access-Control-Request-Method").is_none() {
            return Preflight::NotPreflight;
        }
        let Some(origin) = self.listed(origin.as_deref()) else {
            return Preflight::Refused;
        };
        let headers = header("Access-Control-Request-Headers")
            .filter(|requested| acceptable_request_headers(requested))
            .unwrap_or_else(|| ALLOWED_HEADERS.join(", "));
        let resp = Response::new(204, Vec::new())
            .with_header("Access-Control-Allow-Origin", origin)
            .with_header("Vary", "Origin")
            .with_header("Access-Control-Allow-Methods", ALLOWED_METHODS)
            .with_header("Access-Control-Allow-Headers", &headers)
            .with_header("Access-Control-Max-Age", MAX_AGE_SECONDS);
        Preflight::Allowed(resp)
    }

    /// Adds the CORS headers of an actual (non-preflight) answer to a request from `origin`.
    pub fn decorate(&self, mut resp: Response, origin: Option<&str>) -> Response {
        if !self.enabled() {
            return resp;
        }
        resp.headers.push(("Vary".into(), "Origin".into()));
        if let Some(origin) = self.listed(origin) {
            // Ours replace any the MCP server sent: one answer, one policy.
            resp.headers
                .retain(|(n, _)| !n.to_ascii_lowercase().starts_with("access-control-"));
            resp.headers
                .push(("Access-Control-Allow-Origin".into(), origin.to_string()));
            resp.headers.push((
                "Access-Control-Expose-Headers".into(),
                EXPOSED_HEADERS.into(),
            ));
        }
        resp
    }

    /// The `Allow` value of a 405 for stateless hosts: `POST`, plus `OPTIONS` when CORS is on.
    pub fn allow_post(&self) -> &'static str {
        if self.enabled() {
            "POST, OPTIONS"
        } else {
            "POST"
        }
    }
}

/// Whether every name of an `Access-Control-Request-Headers` value is a header we allow, so the
/// value can be echoed as is (browsers then see their own spelling).
fn acceptable_request_headers(requested: &str) -> bool {
    requested.split(',').map(str::trim).all(|name| {
        let lower = name.to_ascii_lowercase();
        is_token(name)
            && (ALLOWED_HEADERS.contains(&lower.as_str())
                || (lower.starts_with(PARAM_HEADER_PREFIX)
                    && lower.len() > PARAM_HEADER_PREFIX.len()))
    })
}

/// A serialised origin as browsers send it: `http` or `https`, `://`, a host, an optional port,
/// nothing after (a trailing `/` is forgiven). `*` and `null` are refused: a page must be named.
fn parse_origin(value: &str) -> Result<String, String> {
    let lower = value.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('/').unwrap_or(&lower);
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| {
            format!(
                "{value:?} is not an origin: write scheme://host[:port], e.g. \
                 http://localhost:6274 (no * or null)"
            )
        })?;
    let bad = || {
        format!(
            "{value:?} is not an origin: write scheme://host[:port] with no path, query or user"
        )
    };
    let (host_ok, port) = match rest.strip_prefix('[') {
        // An IPv6 literal: [hex:digits]
        Some(after) => {
            let (inside, tail) = after.split_once(']').ok_or_else(bad)?;
            let ok =
                !inside.is_empty() && inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or_else(bad)?),
            };
            (ok, port)
        }
        None => {
            let (host, port) = match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            let ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            (ok, port)
        }
    };
    if !host_ok || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(bad());
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(list: &[&str]) -> Cors {
        Cors::parse(list.iter().copied()).unwrap()
    }

    fn header_of(resp: &Response, name: &str) -> Option<String> {
        resp.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn origins_are_validated_and_normalised() {
        let c = cors(&[
            "http://LocalHost:6274/, https://app.example.com",
            "http://[::1]:8080",
        ]);
        assert_eq!(
            c.origins,
            [
                "http://localhost:6274",
                "https://app.example.com",
                "http://[::1]:8080"
            ]
        );
        for bad in [
            "*",
            "null",
            "localhost:6274",
            "ftp://x",
            "http://x/path",
            "http://user@x",
            "http://x:port",
            "http://",
            "http://x?q",
        ] {
            assert!(Cors::parse([bad]).is_err(), "{bad}");
        }
        assert!(!cors(&[]).enabled());
        assert!(!cors(&[" , "]).enabled());
    }

    #[test]
    fn a_preflight_echoes_only_acceptable_request_headers() {
        let c = cors(&["http://localhost:6274"]);
        let ask = |origin: &str, headers: Option<&str>| {
            let (origin, headers) = (origin.to_string(), headers.map(str::to_string));
            c.preflight(&move |name| match name {
                "Origin" => Some(origin.clone()),
                "Access-Control-Request-Method" => Some("POST".into()),
                "Access-Control-Request-Headers" => headers.clone(),
                _ => None,
            })
        };
        let Preflight::Allowed(ok) = ask(
            "http://localhost:6274",
            Some("Authorization, mcp-param-city"),
        ) else {
            panic!("listed origin refused");
        };
        assert_eq!(ok.status, 204);
        assert_eq!(
            header_of(&ok, "Access-Control-Allow-Headers").unwrap(),
            "Authorization, mcp-param-city"
        );
        let Preflight::Allowed(fixed) = ask("http://localhost:6274", Some("authorization, x-evil"))
        else {
            panic!("listed origin refused");
        };
        let listed = header_of(&fixed, "Access-Control-Allow-Headers").unwrap();
        assert!(
            !listed.contains("x-evil") && listed.contains("mcp-session-id"),
            "{listed}"
        );
        assert!(matches!(
            ask("http://evil.example", None),
            Preflight::Refused
        ));
        assert!(matches!(c.preflight(&|_| None), Preflight::NotPreflight));
    }

    #[test]
    fn answers_to_listed_origins_are_decorated_and_others_only_vary() {
        let c = cors(&["http://localhost:6274"]);
        let upstream =
            Response::new(200, "{}").with_header("Access-Control-Expose-Headers", "X-Upstream");
        let resp = c.decorate(upstream, Some("http://localhost:6274"));
        assert_eq!(
            header_of(&resp, "Access-Control-Allow-Origin").as_deref(),
            Some("http://localhost:6274")
        );
        assert!(
            header_of(&resp, "Access-Control-Expose-Headers")
                .unwrap()
                .contains("Mcp-Session-Id")
        );
        let other = c.decorate(Response::new(200, "{}"), Some("http://evil.example"));
        assert_eq!(header_of(&other, "Access-Control-Allow-Origin"), None);
        assert_eq!(header_of(&other, "Vary").as_deref(), Some("Origin"));
        let off = cors(&[]).decorate(Response::new(200, "{}"), Some("http://localhost:6274"));
        assert!(off.headers.is_empty());
    }
}
