//! OAuth discovery for the `main` Streamable HTTP server: finds its protected-resource metadata
//! (RFC 9728, "PRMD") from inside the network, for the `oauth_discovery` command.
//!
//! The steps, each bounded by the caller's deadline (at most [`OVERALL_TIMEOUT`]):
//! 1. **probe**: `POST`, then `GET`, of the MCP URL with an empty body, sharing
//!    [`PROBE_BUDGET`]; only a 401 whose `Bearer` challenge names an absolute
//!    `resource_metadata=` URL counts. A URL on another origin is used only when the operator
//!    allowed that origin (`--mcp.discovery-allow-origin`).
//! 2. **candidates**, deduplicated, queries dropped: the probe's URL,
//!    `<origin>/.well-known/oauth-protected-resource/<MCP path>` (non-empty path only), then
//!    `<origin>/.well-known/oauth-protected-resource`.
//! 3. **fetch** each with `GET`: a network error, a 404 or a 5xx moves on; the first other answer
//!    (or the last candidate's) must be PRMD with a non-empty `resource` and, when present, a
//!    parseable `authorization_servers[0]`. Redirects are followed by hand, within the fetched
//!    URL's origin, at most [`MAX_REDIRECTS`]; bodies beyond [`MAX_BODY`] are refused. When every
//!    candidate only timed out, one more pass runs with the longer [`RETRY_TIMEOUTS`].
//!
//! Requests go through the MCP hop's own agent (CA bundle, client certificate, proxy), with
//! `Accept: application/json`, our `User-Agent`, and, toward main's origin only, the operator's
//! MCP static headers overridden by the discovery headers. Header values are never logged.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;
use ureq::Agent;
use ureq::http::Response;

use super::{Headers, Reply};
use crate::config::origin_of;
use crate::failure::{Failure, Source};
use crate::headers;
use crate::http_client;
use crate::secret::Secret;
use crate::wire::RespType;

/// The whole discovery never takes longer than this.
pub const OVERALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The probe's `POST` and `GET` share this budget.
pub const PROBE_BUDGET: Duration = Duration::from_secs(1);
/// Per-request timeout of a candidate's fetch on the first pass.
const FIRST_PASS_TIMEOUT: Duration = Duration::from_secs(1);
/// Per-request timeouts of the second pass, by candidate (when the first only timed out).
const RETRY_TIMEOUTS: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];
/// Largest metadata document read.
pub const MAX_BODY: usize = 1024 * 1024;
/// Most redirects followed for one candidate.
pub const MAX_REDIRECTS: usize = 10;
/// The well-known path of RFC 9728.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// Found metadata, as the server sent it.
#[derive(Debug)]
pub struct Found {
    /// The URL the metadata came from (after redirects).
    pub prmd_url: String,
    /// The upstream status.
    pub status: u16,
    /// The document, byte-exact.
    pub body: Box<RawValue>,
    /// The MCP response-header allowlist, plus `Cache-Control`.
    pub headers: Headers,
    pub resource: String,
    pub authorization_server: Option<String>,
}

/// Why discovery found nothing usable. The text names URLs and statuses, never header values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// The server shows no sign of OAuth: no challenge, and every candidate answered 404.
    NoMetadata(String),
    /// Something failed: the network, invalid metadata, a refused redirect, the deadline.
    Failed(String),
}

impl NotFound {
    pub fn describe(&self) -> &str {
        match self {
            NotFound::NoMetadata(why) | NotFound::Failed(why) => why,
        }
    }
}

/// Discovery for one MCP URL, on the MCP hop's agent.
pub struct Discovery {
    agent: Agent,
    mcp_url: String,
    origin: String,
    /// Static headers, overridden by the discovery headers of the same name.
    headers: Vec<(String, Secret)>,
    allow_origins: Vec<String>,
}

/// How one candidate's fetch went.
enum Fetched {
    Answer {
        url: String,
        status: u16,
        headers: Headers,
        body: Result<Vec<u8>, String>,
    },
    /// No answer: a network error (or a refused redirect), with whether it only timed out.
    Unanswered { why: String, timed_out: bool },
}

impl Discovery {
    /// `static_headers` are the MCP extra headers; `discovery_headers` win over them by name.
    pub fn new(
        agent: Agent,
        mcp_url: &str,
        static_headers: &[(String, Secret)],
        discovery_headers: &[(String, Secret)],
        allow_origins: &[String],
    ) -> Discovery {
        let overridden = |name: &str| {
            discovery_headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        let headers = static_headers
            .iter()
            .filter(|(n, _)| !overridden(n))
            .chain(discovery_headers)
            .filter(|(n, _)| !n.eq_ignore_ascii_case("accept"))
            .cloned()
            .collect();
        Discovery {
            agent,
            mcp_url: mcp_url.to_string(),
            origin: origin_of(mcp_url).unwrap_or_default(),
            headers,
            allow_origins: allow_origins.to_vec(),
        }
    }

    /// Runs the three steps, ending by `deadline` (and within [`OVERALL_TIMEOUT`]).
    pub fn run(&self, deadline: Instant) -> Result<Found, NotFound> {
        let deadline = deadline.min(Instant::now() + OVERALL_TIMEOUT);
        let mut from_probe = self.probe(deadline);
        if let Some(url) = &from_probe {
            let origin = origin_of(url).unwrap_or_default();
            if origin != self.origin && !self.allow_origins.contains(&origin) {
                log::warn!(
                    "oauth discovery: the MCP server names metadata at {url}, on another origin; \
                     refused (allow it with --mcp.discovery-allow-origin {origin})"
                );
                from_probe = None;
            }
        }
        let candidates = candidates(&self.mcp_url, from_probe.as_deref());
        let advertised = from_probe.is_some();
        let first = self.pass(&candidates, &[FIRST_PASS_TIMEOUT; 3], advertised, deadline);
        match first {
            Err(Pass::AllTimedOut(_)) => {}
            Err(Pass::Done(not_found)) => return Err(not_found),
            Ok(found) => return Ok(found),
        }
        log::debug!("oauth discovery: every candidate timed out; retrying with longer timeouts");
        self.pass(&candidates, &RETRY_TIMEOUTS, advertised, deadline)
            .map_err(|e| match e {
                Pass::AllTimedOut(why) | Pass::Done(NotFound::Failed(why)) => NotFound::Failed(why),
                Pass::Done(other) => other,
            })
    }

    /// Step 1: the `resource_metadata` URL of a 401's `Bearer` challenge, if any.
    fn probe(&self, deadline: Instant) -> Option<String> {
        let budget_end = deadline.min(Instant::now() + PROBE_BUDGET);
        for post in [true, false] {
            let left = budget_end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let result = if post {
                let req = self.with_headers(self.agent.post(&self.mcp_url), true);
                http_client::with_timeout(req, left).send("")
            } else {
                let req = self.with_headers(self.agent.get(&self.mcp_url), true);
                http_client::with_timeout(req, left).call()
            };
            let Ok(resp) = result else { continue };
            let found = (resp.status().as_u16() == 401)
                .then(|| challenged_metadata(&resp))
                .flatten();
            drain(resp);
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Step 3: one pass over the candidates with per-candidate timeouts.
    fn pass(
        &self,
        candidates: &[String],
        timeouts: &[Duration],
        advertised: bool,
        deadline: Instant,
    ) -> Result<Found, Pass> {
        let mut all_timed_out = true;
        // "No metadata" only when nothing advertised any and every candidate said 404.
        let mut all_404 = !advertised;
        let mut last_why = String::from("no candidate");
        for (i, url) in candidates.iter().enumerate() {
            let last = i + 1 == candidates.len();
            if Instant::now() >= deadline {
                return Err(Pass::Done(NotFound::Failed(format!(
                    "the discovery deadline passed ({last_why})"
                ))));
            }
            let timeout = timeouts.get(i).copied().unwrap_or(FIRST_PASS_TIMEOUT);
            match self.fetch(url, timeout, deadline) {
                Fetched::Unanswered { why, timed_out } => {
                    log::debug!("oauth discovery: {url}: {why}");
                    all_timed_out &= timed_out;
                    all_404 = false;
                    last_why = format!("{url}: {why}");
                }
                Fetched::Answer { status, .. } if !last && (status == 404 || status >= 500) => {
                    log::debug!("oauth discovery: {url}: HTTP {status}");
                    all_timed_out = false;
                    all_404 &= status == 404;
                }
                Fetched::Answer {
                    url: at,
                    status,
                    headers,
                    body,
                } => {
                    all_404 &= status == 404;
                    let why = format!("{at} answered HTTP {status}");
                    if all_404 {
                        return Err(Pass::Done(NotFound::NoMetadata(format!(
                            "no OAuth metadata: no resource_metadata challenge, and {why}"
                        ))));
                    }
                    return validate(at, status, headers, body).map_err(Pass::Done);
                }
            }
        }
        if all_timed_out && !candidates.is_empty() {
            Err(Pass::AllTimedOut(last_why))
        } else {
            Err(Pass::Done(NotFound::Failed(last_why)))
        }
    }

    /// One candidate's `GET`, following redirects within its origin.
    fn fetch(&self, candidate: &str, timeout: Duration, deadline: Instant) -> Fetched {
        let origin = origin_of(candidate).unwrap_or_default();
        let ours = origin == self.origin;
        let mut url = candidate.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let left = deadline.saturating_duration_since(Instant::now());
            let req = self.with_headers(self.agent.get(&url), ours);
            let resp = match http_client::with_timeout(req, timeout.min(left)).call() {
                Ok(resp) => resp,
                Err(e) => {
                    let failure = Failure::from_ureq(&e);
                    return Fetched::Unanswered {
                        why: failure.describe(),
                        timed_out: failure.source == Source::Timeout,
                    };
                }
            };
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let (300..=399, Some(location)) = (status, location) {
                drain(resp);
                let Some(next) = resolve(&url, &location) else {
                    return unanswered(format!("HTTP {status} to an unusable Location"));
                };
                if origin_of(&next).as_deref() != Some(origin.as_str()) {
                    log::warn!(
                        "oauth discovery: {url} redirects to {next}, on another origin; refused"
                    );
                    return unanswered(format!("redirect to another origin ({next}) refused"));
                }
                url = next;
                continue;
            }
            let headers = returned_headers(&resp);
            return Fetched::Answer {
                url,
                status,
                headers,
                body: read_body(resp),
            };
        }
        unanswered(format!("more than {MAX_REDIRECTS} redirects"))
    }

    /// `Accept: application/json`; toward main's origin also the static and discovery headers.
    fn with_headers<B>(
        &self,
        mut req: ureq::RequestBuilder<B>,
        ours: bool,
    ) -> ureq::RequestBuilder<B> {
        req = req.header("Accept", "application/json");
        if ours {
            for (name, value) in &self.headers {
                req = req.header(name.as_str(), value.expose());
            }
        }
        req
    }
}

/// How a pass ended without metadata.
enum Pass {
    /// Every candidate only timed out: worth a second pass.
    AllTimedOut(String),
    Done(NotFound),
}

fn unanswered(why: String) -> Fetched {
    Fetched::Unanswered {
        why,
        timed_out: false,
    }
}

/// The candidate URLs in order, deduplicated, without queries or fragments.
pub fn candidates(mcp_url: &str, from_probe: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |url: String| {
        if !out.contains(&url) {
            out.push(url);
        }
    };
    if let Some(url) = from_probe {
        add(without_query(url));
    }
    if let (Some(origin), Ok(uri)) = (origin_of(mcp_url), mcp_url.parse::<ureq::http::Uri>()) {
        let path = uri.path().trim_matches('/');
        if !path.is_empty() {
            add(format!("{origin}{WELL_KNOWN}/{path}"));
        }
        add(format!("{origin}{WELL_KNOWN}"));
    }
    out
}

fn without_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

/// The absolute `http(s)` `resource_metadata` of a response's `Bearer` challenges.
fn challenged_metadata(resp: &Response<ureq::Body>) -> Option<String> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(resource_metadata)
}

/// `resource_metadata` of a `Bearer` challenge in one `WWW-Authenticate` value, when absolute.
pub fn resource_metadata(challenge: &str) -> Option<String> {
    let lower = challenge.to_ascii_lowercase();
    let bearer = lower.find("bearer")?;
    let key = "resource_metadata=";
    let at = bearer + lower[bearer..].find(key)? + key.len();
    let rest = &challenge[at..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split([',', ' ']).next()?,
    };
    origin_of(value).map(|_| value.to_string())
}

/// Resolves a `Location` against the URL it answered.
fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if origin_of(location).is_some() {
        return Some(location.to_string());
    }
    let origin = origin_of(base)?;
    let scheme = origin.split("://").next()?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    if location.is_empty() || location.contains("://") {
        return None;
    }
    let path = base.parse::<ureq::http::Uri>().ok()?.path().to_string();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let (relative, query) = location.split_at(location.find('?').unwrap_or(location.len()));
    let merged = remove_dot_segments(&format!("{dir}{relative}"));
    Some(format!("{origin}{merged}{query}"))
}

/// RFC 3986 section 5.2.4 on an absolute path: `.` segments go, `..` drops the segment before
/// it (never above the root), so `../x` from `/a/b/c` is `/a/x` as a browser would go.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// The body, at most [`MAX_BODY`] bytes.
fn read_body(mut resp: Response<ureq::Body>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Failure::from_io(&e).describe())?;
    if body.len() > MAX_BODY {
        return Err(format!("metadata larger than {MAX_BODY} bytes"));
    }
    Ok(body)
}

/// The MCP allowlist plus `Cache-Control`.
fn returned_headers(resp: &Response<ureq::Body>) -> Headers {
    let pairs: Vec<(&str, &str)> = resp
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let mut out = headers::returnable(pairs.iter().copied());
    for (name, value) in &pairs {
        if name.eq_ignore_ascii_case("cache-control") && !value.trim().is_empty() {
            out.entry("Cache-Control".to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    out
}

/// The chosen answer must be PRMD: a 2xx JSON object with a non-empty `resource`, and a usable
/// `authorization_servers[0]` when there is one.
fn validate(
    url: String,
    status: u16,
    headers: Headers,
    body: Result<Vec<u8>, String>,
) -> Result<Found, NotFound> {
    let failed = |why: &str| NotFound::Failed(format!("{url}: {why}"));
    let body = body.map_err(|e| failed(&e))?;
    if !(200..300).contains(&status) {
        return Err(failed(&format!("HTTP {status}, not metadata")));
    }
    let text = String::from_utf8(body).map_err(|_| failed("metadata is not UTF-8"))?;
    let raw = RawValue::from_string(text).map_err(|_| failed("metadata is not JSON"))?;
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(raw.get()) else {
        return Err(failed("metadata is not a JSON object"));
    };
    let resource = match map.get("resource") {
        Some(Value::String(r)) if !r.trim().is_empty() => r.clone(),
        _ => return Err(failed("metadata has no resource")),
    };
    let authorization_server = match map.get("authorization_servers") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => match list.first() {
            None => None,
            Some(Value::String(s)) if origin_of(s).is_some() => Some(s.clone()),
            Some(_) => return Err(failed("authorization_servers[0] is not an http(s) URL")),
        },
        Some(_) => return Err(failed("authorization_servers is not a list")),
    };
    Ok(Found {
        prmd_url: url,
        status,
        body: raw,
        headers,
        resource,
        authorization_server,
    })
}

/// The `oauth_discovery_response` for a discovery's result: the metadata as received with its
/// status and headers, or a 502 `oauth_discovery_failed` saying why (URLs, never header values).
pub fn reply(result: Result<Found, NotFound>) -> Reply {
    match result {
        Ok(found) => Reply {
            resp_json: Some(found.body),
            resp_headers: found.headers,
            resp_code: found.status,
            resp_type: RespType::OauthDiscoveryResponse,
            failure: None,
        },
        Err(not_found) => Reply {
            failure: Some(Failure::new(Source::Protocol, "oauth_discovery_failed")),
            ..error_reply(
                502,
                &format!("oauth discovery failed: {}", not_found.describe()),
                "server_error",
                "oauth_discovery_failed",
            )
        },
    }
}

/// The 400 `unsupported_channel` answer, for a channel that is not `main` or not HTTP.
pub fn unsupported_channel(channel: &str) -> Reply {
    error_reply(
        400,
        &format!("unsupported channel {channel:?}"),
        "invalid_request_error",
        "unsupported_channel",
    )
}

fn error_reply(status: u16, message: &str, kind: &str, code: &str) -> Reply {
    let body = serde_json::json!({"error": {"message": message, "type": kind, "code": code}});
    Reply {
        resp_json: RawValue::from_string(body.to_string()).ok(),
        resp_headers: Headers::new(),
        resp_code: status,
        resp_type: RespType::OauthDiscoveryResponse,
        failure: None,
    }
}

/// Reads (a bounded amount of) an unused body so the connection can be reused.
fn drain(mut resp: Response<ureq::Body>) {
    let _ = std::io::copy(
        &mut resp.body_mut().as_reader().take(64 * 1024),
        &mut std::io::sink(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_client::{AgentOptions, build_agent};
    use crate::http_server::{Limits, Request, Response, Server};
    use crate::net::HopNet;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// What a fake saw of one request: method, target and headers.
    type Seen = (String, String, Vec<(String, String)>);

    /// A loopback server answering by `route(path, base_url)`, recording what it saw.
    struct Fake {
        server: Server,
        base: String,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Fake {
        fn start(route: impl Fn(&Request, &str) -> Response + Send + Sync + 'static) -> Fake {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (log, b) = (Arc::clone(&seen), base.clone());
            let server = Server::start(listener, None, Limits::default(), move |req| {
                let entry = (req.method.clone(), req.target.clone(), req.headers.clone());
                log.lock().unwrap().push(entry);
                route(&req, &b)
            })
            .unwrap();
            Fake { server, base, seen }
        }

        fn targets(&self) -> Vec<String> {
            let seen = self.seen.lock().unwrap();
            seen.iter().map(|(m, t, _)| format!("{m} {t}")).collect()
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            // Server::shutdown takes self; a moved-out placeholder is not needed for tests.
            let _ = &self.server;
        }
    }

    const PRMD: &str = r#"{"resource":"http://mcp.example/mcp","authorization_servers":["https://as.example"],  "x":1.50}"#;

    fn prmd() -> Response {
        Response::json(200, PRMD)
            .with_header("Cache-Control", "max-age=60")
            .with_header("Server", "fake")
    }

    fn not_found() -> Response {
        Response::new(404, "no")
    }

    fn discovery(mcp_url: &str, allow: &[String]) -> Discovery {
        let opts = AgentOptions {
            max_idle_age: Duration::from_secs(10),
            max_idle_per_host: 2,
        };
        let agent = build_agent(&opts, &HopNet::direct()).unwrap();
        let statics = [
            ("X-Static".to_string(), Secret::new("s")),
            ("X-Both".to_string(), Secret::new("static")),
        ];
        let discovery = [("x-both".to_string(), Secret::new("discovery"))];
        Discovery::new(agent, mcp_url, &statics, &discovery, allow)
    }

    fn run(d: &Discovery) -> Result<Found, NotFound> {
        d.run(Instant::now() + OVERALL_TIMEOUT)
    }

    #[test]
    fn candidates_are_ordered_deduplicated_and_without_queries() {
        assert_eq!(
            candidates(
                "https://h.example/a/mcp/?x=1",
                Some("https://h.example/prm?y#f")
            ),
            [
                "https://h.example/prm",
                "https://h.example/.well-known/oauth-protected-resource/a/mcp",
                "https://h.example/.well-known/oauth-protected-resource",
            ]
        );
        assert_eq!(
            candidates(
                "https://H.example:443/",
                Some("https://h.example/.well-known/oauth-protected-resource")
            ),
            ["https://h.example/.well-known/oauth-protected-resource"]
        );
    }

    #[test]
    fn resource_metadata_is_read_from_a_bearer_challenge_only_when_absolute() {
        let quoted = r#"Bearer realm="x", resource_metadata="https://h/.well-known/oauth-protected-resource/mcp""#;
        assert_eq!(
            resource_metadata(quoted).as_deref(),
            Some("https://h/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            resource_metadata("Bearer resource_metadata=http://h/p, error=x").as_deref(),
            Some("http://h/p")
        );
        assert_eq!(
            resource_metadata(r#"Bearer resource_metadata="/rel""#),
            None
        );
        assert_eq!(
            resource_metadata(r#"Basic resource_metadata="http://h/p""#),
            None
        );
    }

    #[test]
    fn locations_resolve_against_the_url_they_answered() {
        let base = "http://h:8/a/b?q";
        assert_eq!(resolve(base, "/c").as_deref(), Some("http://h:8/c"));
        assert_eq!(resolve(base, "c").as_deref(), Some("http://h:8/a/c"));
        assert_eq!(resolve(base, "//o/p").as_deref(), Some("http://o/p"));
        assert_eq!(resolve(base, "https://o/p").as_deref(), Some("https://o/p"));
        assert_eq!(resolve(base, "ftp://o/p"), None);
    }

    #[test]
    fn a_probe_challenge_leads_to_the_metadata_with_its_headers_and_exact_bytes() {
        let fake = Fake::start(|req, base| match (req.method.as_str(), req.path()) {
            ("POST", "/mcp") => Response::new(401, "").with_header(
                "WWW-Authenticate",
                &format!(r#"Bearer resource_metadata="{base}/meta/here?x=1""#),
            ),
            ("GET", "/meta/here") => prmd(),
            _ => not_found(),
        });
        let found = run(&discovery(&format!("{}/mcp", fake.base), &[])).unwrap();
        assert_eq!(found.body.get(), PRMD);
        assert_eq!(found.status, 200);
        assert_eq!(found.prmd_url, format!("{}/meta/here", fake.base));
        assert_eq!(found.resource, "http://mcp.example/mcp");
        assert_eq!(
            found.authorization_server.as_deref(),
            Some("https://as.example")
        );
        let names: Vec<&str> = found.headers.keys().map(String::as_str).collect();
        assert_eq!(names, ["Cache-Control", "Content-Type"]);
        assert_eq!(fake.targets(), ["POST /mcp", "GET /meta/here"]);
        let seen = fake.seen.lock().unwrap();
        let h = |i: usize, n: &str| {
            seen[i]
                .2
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        for i in 0..2 {
            assert_eq!(h(i, "accept"), ["application/json"]);
            assert_eq!(h(i, "x-both"), ["discovery"]);
            assert_eq!(h(i, "x-static"), ["s"]);
            assert!(h(i, "user-agent")[0].starts_with("mcp-tunnel/"));
        }
    }

    #[test]
    fn the_probe_tries_get_after_post_and_the_well_known_forms_follow() {
        let fake = Fake::start(|req, base| match (req.method.as_str(), req.path()) {
            ("POST", "/a/mcp/") => Response::new(405, ""),
            ("GET", "/a/mcp/") => Response::new(401, "").with_header(
                "WWW-Authenticate",
                &format!(r#"Bearer resource_metadata="{base}/gone""#),
            ),
            ("GET", "/.well-known/oauth-protected-resource") => prmd(),
            ("GET", "/gone") => Response::new(503, ""),
            _ => not_found(),
        });
        let found = run(&discovery(&format!("{}/a/mcp/", fake.base), &[])).unwrap();
        assert_eq!(found.body.get(), PRMD);
        assert_eq!(
            fake.targets(),
            [
                "POST /a/mcp/",
                "GET /a/mcp/",
                "GET /gone",
                "GET /.well-known/oauth-protected-resource/a/mcp",
                "GET /.well-known/oauth-protected-resource",
            ]
        );
    }

    #[test]
    fn no_challenge_and_only_404s_is_no_metadata() {
        let fake = Fake::start(|_, _| not_found());
        let got = run(&discovery(&format!("{}/mcp", fake.base), &[]));
        assert!(matches!(got, Err(NotFound::NoMetadata(_))), "{got:?}");
    }

    #[test]
    fn invalid_metadata_fails() {
        for body in [
            r#"{"authorization_servers":["https://as"]}"#,
            r#"{"resource":""}"#,
            r#"{"resource":"r","authorization_servers":["not a url"]}"#,
            r#"[1]"#,
            "<html>",
        ] {
            let fake = Fake::start(move |req, _| match req.path() {
                "/.well-known/oauth-protected-resource" => Response::json(200, body),
                _ => not_found(),
            });
            let got = run(&discovery(&format!("{}/mcp", fake.base), &[]));
            assert!(matches!(got, Err(NotFound::Failed(_))), "{body}: {got:?}");
        }
        // The first answer that is not 404/5xx decides, even if a later one would be fine.
        let fake = Fake::start(|req, _| match req.path() {
            "/.well-known/oauth-protected-resource/mcp" => Response::new(403, "no"),
            "/.well-known/oauth-protected-resource" => prmd(),
            _ => not_found(),
        });
        let got = run(&discovery(&format!("{}/mcp", fake.base), &[]));
        assert!(
            matches!(&got, Err(NotFound::Failed(why)) if why.contains("403")),
            "{got:?}"
        );
    }

    #[test]
    fn a_body_over_the_limit_is_refused() {
        let fake = Fake::start(|req, _| match req.path() {
            "/.well-known/oauth-protected-resource" => {
                let big = format!(r#"{{"resource":"r","pad":"{}"}}"#, "x".repeat(MAX_BODY));
                Response::json(200, big)
            }
            _ => not_found(),
        });
        let got = run(&discovery(&format!("{}/mcp", fake.base), &[]));
        assert!(
            matches!(&got, Err(NotFound::Failed(why)) if why.contains("larger")),
            "{got:?}"
        );
    }

    #[test]
    fn relative_locations_resolve_as_rfc_3986_says() {
        let base = "http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp";
        let at = |l| resolve(base, l).unwrap();
        assert_eq!(at("../../real?x"), "http://127.0.0.1:1/real?x");
        assert_eq!(at("../x"), "http://127.0.0.1:1/.well-known/x");
        assert_eq!(
            at("./y/."),
            "http://127.0.0.1:1/.well-known/oauth-protected-resource/y/"
        );
        assert_eq!(at("../../../../z"), "http://127.0.0.1:1/z");
        assert_eq!(at("/abs"), "http://127.0.0.1:1/abs");
    }

    #[test]
    fn redirects_are_followed_within_the_origin_only() {
        let other = Fake::start(|_, _| prmd());
        let target = other.base.clone();
        let fake = Fake::start(move |req, _| match req.path() {
            "/.well-known/oauth-protected-resource/mcp" => {
                Response::new(302, "").with_header("Location", "../../real?x")
            }
            "/real" => prmd(),
            "/.well-known/oauth-protected-resource" => {
                Response::new(307, "").with_header("Location", &format!("{target}/prmd"))
            }
            _ => not_found(),
        });
        let found = run(&discovery(&format!("{}/mcp", fake.base), &[])).unwrap();
        assert_eq!(found.prmd_url, format!("{}/real?x", fake.base));

        let fake2 = Fake::start({
            let target = other.base.clone();
            move |req, _| match req.path() {
                "/.well-known/oauth-protected-resource" => {
                    Response::new(307, "").with_header("Location", &format!("{target}/prmd"))
                }
                _ => not_found(),
            }
        });
        let got = run(&discovery(&format!("{}/mcp", fake2.base), &[]));
        assert!(
            matches!(&got, Err(NotFound::Failed(why)) if why.contains("another origin")),
            "{got:?}"
        );
        assert!(other.targets().is_empty(), "{:?}", other.targets());
        // A loop ends after MAX_REDIRECTS.
        let looping = Fake::start(|_, _| Response::new(302, "").with_header("Location", "/x"));
        let got = run(&discovery(&format!("{}/mcp", looping.base), &[]));
        assert!(
            matches!(&got, Err(NotFound::Failed(why)) if why.contains("redirects")),
            "{got:?}"
        );
    }

    #[test]
    fn metadata_on_another_origin_needs_the_operators_allowance() {
        let other = Fake::start(|_, _| prmd());
        let meta = format!("{}/prmd", other.base);
        let fake = Fake::start(move |req, _| match req.method.as_str() {
            "POST" => Response::new(401, "").with_header(
                "WWW-Authenticate",
                &format!(r#"Bearer resource_metadata="{meta}""#),
            ),
            _ => not_found(),
        });
        let mcp = format!("{}/mcp", fake.base);
        assert!(run(&discovery(&mcp, &[])).is_err());
        assert!(other.targets().is_empty());
        let allowed = [origin_of(&other.base).unwrap()];
        let found = run(&discovery(&mcp, &allowed)).unwrap();
        assert_eq!(found.prmd_url, format!("{}/prmd", other.base));
        // The operator's headers stay with main's origin.
        let seen = other.seen.lock().unwrap();
        assert!(
            !seen[0]
                .2
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("x-static")),
            "{:?}",
            seen[0].2
        );
    }

    #[test]
    fn a_pass_that_only_timed_out_is_retried_with_longer_timeouts() {
        let fake = Fake::start(|req, _| {
            std::thread::sleep(Duration::from_millis(1300));
            match req.path() {
                "/.well-known/oauth-protected-resource/mcp" => prmd(),
                _ => not_found(),
            }
        });
        let started = Instant::now();
        let found = run(&discovery(&format!("{}/mcp", fake.base), &[])).unwrap();
        assert_eq!(found.body.get(), PRMD);
        assert!(started.elapsed() < OVERALL_TIMEOUT);
        let gets = fake
            .targets()
            .iter()
            .filter(|t| t.starts_with("GET /.well"))
            .count();
        assert_eq!(gets, 3, "{:?}", fake.targets());
    }

    #[test]
    fn a_404_among_timeouts_ends_without_a_retry_and_the_deadline_bounds_everything() {
        let fake = Fake::start(|req, _| match req.path() {
            "/.well-known/oauth-protected-resource/mcp" => {
                std::thread::sleep(Duration::from_millis(1300));
                prmd()
            }
            _ => not_found(),
        });
        let got = run(&discovery(&format!("{}/mcp", fake.base), &[]));
        assert!(matches!(got, Err(NotFound::Failed(_))), "{got:?}");
        let gets = fake
            .targets()
            .iter()
            .filter(|t| t.starts_with("GET /.well"))
            .count();
        assert_eq!(gets, 2, "{:?}", fake.targets());

        let slow = Fake::start(|_, _| {
            std::thread::sleep(Duration::from_millis(1500));
            not_found()
        });
        let started = Instant::now();
        let got = discovery(&format!("{}/mcp", slow.base), &[])
            .run(Instant::now() + Duration::from_millis(400));
        assert!(matches!(got, Err(NotFound::Failed(_))), "{got:?}");
        assert!(started.elapsed() < Duration::from_millis(1200));
    }

    #[test]
    fn replies_have_the_discovery_shape() {
        let failed = reply(Err(NotFound::Failed("x".into())));
        assert_eq!(failed.resp_code, 502);
        assert_eq!(failed.resp_type, RespType::OauthDiscoveryResponse);
        let body: Value = serde_json::from_str(failed.resp_json.unwrap().get()).unwrap();
        assert_eq!(body["error"]["code"], "oauth_discovery_failed");
        assert_eq!(body["error"]["type"], "server_error");
        let refused = unsupported_channel("tools");
        assert_eq!(refused.resp_code, 400);
        assert!(refused.resp_headers.is_empty());
        assert_eq!(
            refused.resp_json.unwrap().get(),
            r#"{"error":{"code":"unsupported_channel","message":"unsupported channel \"tools\"","type":"invalid_request_error"}}"#
        );
    }
}
