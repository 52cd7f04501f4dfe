//! The client's calls to the control plane: metadata, poll, and response POSTs with their retries.
//!
//! Every request carries the same identifying headers (added in one place, `decorate`). This
//! module makes single exchanges and the per-POST retries the contract prescribes; the poll loop's
//! own pacing lives in [`crate::dispatch`].
//!
//! Our extension of the contract ([`crate::wire::EXTENSIONS_HEADER`]): every request names the
//! features this build speaks, and every poll or metadata answer tells which of them the control
//! plane speaks too ([`ControlPlane::extensions`]). Until a control plane names one, it is not
//! used: a `cancel` command from a control plane that did not announce it is an unknown command
//! type, as the contract says, and no poll asks for cancellations only.
//!
//! A poll answer leaves here typed: each command is decoded on its own ([`Command::from_json`]),
//! so a malformed one cannot sink the others in its batch, and comes with its deadline, anchored
//! at the instant the answer's headers arrived. Nothing here counts or decides what a command's
//! fate is: a POST reports how it ended and how many retries it took, and the caller counts.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::value::RawValue;
use ureq::Agent;
use ureq::http::{HeaderName, HeaderValue, Uri};

use crate::backoff::{self, Backoff};
use crate::config::ControlPlaneConfig;
use crate::deadline;
use crate::http_client::{self, AgentOptions};
use crate::secret::Secret;
use crate::wire::{
    ApiErrorResponse, BadCommand, COMMAND_CANCEL, COMMAND_SERVER_RESPONSE, COMMAND_STREAM,
    ChannelInfo, Command, CommandKind, EXTENSIONS_HEADER, Extensions, FEATURE_CANCEL,
    FEATURE_SERVER_REQUESTS, FEATURE_STREAMS, POLL_ONLY_HEADER, PollEnvelope, ResponsePayload,
    SERVER_INFO_HEADER, ServerInfo, TunnelMetadata,
};

/// Largest poll answer we read: 25 commands with generous bodies. Beyond this the answer is
/// refused rather than buffered without bound.
const MAX_POLL_BODY: u64 = 64 * 1024 * 1024;
/// Largest error or ack body we read; only ever logged in part.
const MAX_SMALL_BODY: u64 = 64 * 1024;
/// Time allowed for one response POST when the command has no deadline.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts for a terminal response POST (the first plus retries).
const TERMINAL_POST_ATTEMPTS: u32 = 5;
/// Attempts for a notification POST.
const NOTIFY_POST_ATTEMPTS: u32 = 3;
/// Time allowed for the startup metadata request: diagnostics must not delay polling for long.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay for a POST; doubles per attempt.
const POST_RETRY_BASE: Duration = Duration::from_millis(200);
/// Longest single wait between POST attempts.
const POST_RETRY_CAP: Duration = Duration::from_secs(5);

/// The client's name in `X-Tunnel-Client-Name`.
pub const CLIENT_NAME: &str = "mcp-tunnel";

/// A poll that returned.
pub enum PollOk {
    /// `204`, or `200` with no commands.
    Empty,
    /// Commands, with the instant the answer's headers arrived: every deadline is anchored there.
    Commands {
        received: Instant,
        commands: Vec<Polled>,
    },
}

/// One command of a poll answer, decoded, with its deadline.
#[derive(Debug)]
pub struct Polled {
    /// The command, or why it cannot run ([`BadCommand`] says whether it can still be answered).
    pub command: Result<Command, BadCommand>,
    /// When its `response_timeout` runs out; `None` for no deadline (none given, or one too far
    /// to represent: the MCP call's own cap applies) and for a malformed command.
    pub deadline: Option<Instant>,
    /// The deadline comes from `created_at`, not the poll receipt (see [`crate::deadline`]).
    pub deadline_from_created_at: bool,
}

impl Polled {
    /// Decodes one element of a poll answer whose headers arrived at `received`, from a control
    /// plane speaking `extensions`: an extension's command type it did not announce is unknown.
    fn decode(raw: &RawValue, received: Instant, extensions: &Extensions) -> Polled {
        let mut command = Command::from_json(raw);
        if let Ok(c) = &mut command
            && matches!(c.kind, CommandKind::Cancel { .. })
            && !extensions.has(FEATURE_CANCEL)
        {
            c.kind = CommandKind::Unknown(COMMAND_CANCEL.to_string());
        }
        if let Ok(c) = &mut command
            && matches!(c.kind, CommandKind::Stream(_))
            && !extensions.has(FEATURE_STREAMS)
        {
            c.kind = CommandKind::Unknown(COMMAND_STREAM.to_string());
        }
        if let Ok(c) = &mut command
            && matches!(c.kind, CommandKind::ServerResponse(_))
            && !extensions.has(FEATURE_SERVER_REQUESTS)
        {
            c.kind = CommandKind::Unknown(COMMAND_SERVER_RESPONSE.to_string());
        }
        let bounded = match &command {
            Ok(command) => command.response_timeout.and_then(|timeout| {
                let created_at = deadline::created_at_of(raw);
                deadline::command_deadline(
                    received,
                    timeout,
                    created_at.as_deref(),
                    Instant::now(),
                    SystemTime::now(),
                )
            }),
            Err(_) => None,
        };
        Polled {
            command,
            deadline: bounded.map(|(at, _)| at),
            deadline_from_created_at: bounded.is_some_and(|(_, from_created_at)| from_created_at),
        }
    }
}

/// A poll that failed, classified by what the loop should do about it.
#[derive(Debug)]
pub enum PollError {
    /// 400/401/403/404: the configuration is wrong; quick retries cannot help.
    Operator { status: u16, message: String },
    /// Network trouble, 408, 429 or 5xx: retry with backoff, no sooner than `retry_after`.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// How a response POST ended, and what it cost.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery {
    pub outcome: PostOutcome,
    /// Attempts after the first (for the metrics).
    pub retries: u32,
}

/// The end of a response POST.
#[derive(Debug, PartialEq, Eq)]
pub enum PostOutcome {
    Accepted,
    /// 404: already fulfilled or no longer pending. Terminal; never replay the MCP call.
    NotPending,
    /// Given up: another 4xx, retries exhausted, or out of time.
    Failed(String),
}

pub struct ControlPlane {
    /// For the response POSTs of the workers.
    agent: Agent,
    /// For polls and metadata reads: a pool of their own, so that the poll thread never waits
    /// for (or wakes) a worker that returns or takes a POST connection at the same moment.
    poll_agent: Agent,
    tunnel_url: String,
    /// `{tunnel_url}/response`, parsed once.
    response_uri: Option<Uri>,
    api_key: Secret,
    extra_headers: Vec<(String, Secret)>,
    /// What [`ControlPlane::decorate`] adds, parsed once (header values are copied into every
    /// request otherwise); `None` when one does not parse, which the per-request path reports.
    fixed_headers: Option<Vec<(HeaderName, HeaderValue)>>,
    /// `&channel=…` for each polled channel (`--control-plane.poll-channel`), or empty.
    channel_query: String,
    poll_timeout: Duration,
    poll_http_timeout: Duration,
    instance_id: String,
    server_info: String,
    /// The proxy, as it may be shown, for errors about it.
    proxy_name: String,
    /// A metadata read succeeded: the control plane knows the tunnel and accepts our key.
    metadata_accepted: AtomicBool,
    /// The features of our extension this build speaks, as sent.
    offered: String,
    /// Those the control plane announced in its last answer (none until it does).
    extensions: Mutex<Extensions>,
}

impl ControlPlane {
    pub fn new(
        cfg: &ControlPlaneConfig,
        channels: &[ChannelInfo],
        workers: usize,
    ) -> Result<ControlPlane, String> {
        let options = |max_idle_per_host| AgentOptions {
            max_idle_age: Duration::from_secs(90),
            max_idle_per_host,
        };
        // One per worker posting at once; the poll and the poll for cancellations.
        let agent = http_client::build_agent(&options(workers), &cfg.net)?;
        let poll_agent = http_client::build_agent(&options(2), &cfg.net)?;
        let tunnel_url = cfg.tunnel_url();
        let mut plane = ControlPlane {
            agent,
            poll_agent,
            response_uri: Uri::try_from(format!("{tunnel_url}/response")).ok(),
            tunnel_url,
            api_key: cfg.api_key.clone(),
            extra_headers: cfg.extra_headers.clone(),
            fixed_headers: None,
            // Canonical names need no escaping.
            channel_query: (cfg.poll_channels.iter())
                .map(|c| format!("&channel={c}"))
                .collect(),
            poll_timeout: cfg.poll_timeout,
            poll_http_timeout: cfg.poll_timeout.saturating_add(cfg.poll_deadline_guardrail),
            instance_id: crate::crypto::random_hex(16),
            server_info: ServerInfo::new(channels.to_vec()).to_header(),
            proxy_name: cfg.net.proxy_name(),
            metadata_accepted: AtomicBool::new(false),
            offered: Extensions::ours().to_header(),
            extensions: Mutex::new(Extensions::default()),
        };
        plane.fixed_headers = plane.parsed_headers();
        Ok(plane)
    }

    /// The headers every request carries, in order: the operator's extra headers, then ours.
    fn header_strings(&self) -> Vec<(&str, String)> {
        let mut list: Vec<(&str, String)> = (self.extra_headers.iter())
            .map(|(name, value)| (name.as_str(), value.expose().to_string()))
            .collect();
        list.extend([
            ("Authorization", format!("Bearer {}", self.api_key.expose())),
            ("Accept", "application/json".to_string()),
            ("X-Tunnel-Client-Name", CLIENT_NAME.to_string()),
            (
                "X-Tunnel-Client-Version",
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            ("X-Tunnel-Client-Instance-Id", self.instance_id.clone()),
            (SERVER_INFO_HEADER, self.server_info.clone()),
            (EXTENSIONS_HEADER, self.offered.clone()),
        ]);
        list
    }

    /// [`ControlPlane::header_strings`] as header names and values; `None` if one is invalid.
    /// Every value but our identification is marked sensitive (kept out of `Debug`).
    fn parsed_headers(&self) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let identification = [
            "accept",
            "x-tunnel-client-name",
            "x-tunnel-client-version",
            "x-tunnel-client-instance-id",
        ];
        (self.header_strings().into_iter())
            .map(|(name, value)| {
                let name = HeaderName::try_from(name).ok()?;
                let mut value = HeaderValue::try_from(value).ok()?;
                value.set_sensitive(!identification.contains(&name.as_str()));
                Some((name, value))
            })
            .collect()
    }

    /// The extension features both ends speak, as of the control plane's last answer.
    pub fn extensions(&self) -> Extensions {
        self.extensions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes note of what a successful answer announced (see the module docs).
    fn learn(&self, headers: &ureq::http::HeaderMap) {
        let value = headers.get(EXTENSIONS_HEADER).and_then(|v| v.to_str().ok());
        let announced = Extensions::from_header(value);
        let mut known = self.extensions.lock().unwrap_or_else(|e| e.into_inner());
        if *known != announced {
            if announced.is_empty() {
                log::info!("control plane does not speak the mcp-tunnel extension");
            } else {
                log::info!(
                    "control plane speaks the mcp-tunnel extension: {}",
                    announced.to_header()
                );
            }
            *known = announced;
        }
    }

    /// The random id this process identifies itself with.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Adds the headers every control-plane request carries.
    fn decorate<B>(&self, mut req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.fixed_headers {
            Some(parsed) => {
                for (name, value) in parsed {
                    req = req.header(name.clone(), value.clone());
                }
            }
            None => {
                for (name, value) in self.header_strings() {
                    req = req.header(name, value);
                }
            }
        }
        req
    }

    /// Whether the control plane announced `feature` in its last answer (without copying the
    /// set, as [`ControlPlane::extensions`] does).
    pub fn speaks(&self, feature: &str) -> bool {
        (self.extensions.lock().unwrap_or_else(|e| e.into_inner())).has(feature)
    }

    /// A transport error for a log line, naming the proxy when it refused the tunnel (never its
    /// credentials).
    fn describe_transport(&self, e: &ureq::Error) -> String {
        match e {
            ureq::Error::HostNotFound => "DNS lookup failed".into(),
            ureq::Error::Timeout(_) => "timed out".into(),
            ureq::Error::Io(io) => format!("network error: {io}"),
            ureq::Error::ConnectProxyFailed(reason) => {
                format!("proxy {} refused the tunnel: {reason}", self.proxy_name)
            }
            other => format!("{other}"),
        }
    }

    /// Whether a metadata read has succeeded, i.e. the control plane accepted our key for the
    /// tunnel (readiness uses it; see [`crate::ops::Health`]).
    pub fn metadata_accepted(&self) -> bool {
        self.metadata_accepted.load(Ordering::SeqCst)
    }

    /// `GET /v1/tunnels/{id}`: for the startup log line, and as proof that the control plane
    /// accepts our key for the tunnel ([`metadata_accepted`](Self::metadata_accepted)).
    pub fn metadata(&self) -> Result<TunnelMetadata, String> {
        let req = http_client::with_timeout(
            self.decorate(self.poll_agent.get(&self.tunnel_url)),
            METADATA_TIMEOUT,
        );
        let mut resp = req.call().map_err(|e| self.describe_transport(&e))?;
        let status = resp.status().as_u16();
        let body = read_limited(resp.body_mut().as_reader(), MAX_SMALL_BODY);
        if status != 200 {
            return Err(describe_status(status, &body));
        }
        self.learn(resp.headers());
        let meta: TunnelMetadata =
            serde_json::from_slice(&body).map_err(|e| format!("unreadable metadata: {e}"))?;
        self.metadata_accepted.store(true, Ordering::SeqCst);
        Ok(meta)
    }

    /// One long-poll asking for at most `limit` commands.
    pub fn poll(&self, limit: usize) -> Result<PollOk, PollError> {
        self.poll_only(limit, None)
    }

    /// A long-poll for `cancel` commands only, for a client whose queue is full (our extension;
    /// only when the control plane announced it).
    pub fn poll_cancellations(&self) -> Result<PollOk, PollError> {
        self.poll_only(1, Some(COMMAND_CANCEL))
    }

    fn poll_only(&self, limit: usize, only: Option<&str>) -> Result<PollOk, PollError> {
        let url = format!(
            "{}/poll?limit={}&timeout_ms={}{}",
            self.tunnel_url,
            limit,
            self.poll_timeout.as_millis().max(1),
            self.channel_query
        );
        let mut req = self.decorate(self.poll_agent.get(&url));
        if let Some(only) = only {
            req = req.header(POLL_ONLY_HEADER, only);
        }
        let req = http_client::with_timeout(req, self.poll_http_timeout);
        let mut resp = req.call().map_err(|e| PollError::Transient {
            reason: self.describe_transport(&e),
            retry_after: None,
        })?;
        let received = Instant::now();
        let status = resp.status().as_u16();
        if matches!(status, 200 | 204) {
            self.learn(resp.headers());
        }
        match status {
            204 => return Ok(PollOk::Empty),
            200 => {}
            _ => {
                let retry_after = retry_after(resp.headers());
                let body = read_limited(resp.body_mut().as_reader(), MAX_SMALL_BODY);
                let message = describe_status(status, &body);
                return Err(match status {
                    400 | 401 | 403 | 404 => PollError::Operator { status, message },
                    _ => PollError::Transient {
                        reason: message,
                        retry_after,
                    },
                });
            }
        }
        let body = read_limited(resp.body_mut().as_reader(), MAX_POLL_BODY + 1);
        if body.len() as u64 > MAX_POLL_BODY {
            return Err(PollError::Transient {
                reason: format!("poll answer larger than {MAX_POLL_BODY} bytes was refused"),
                retry_after: None,
            });
        }
        let envelope: PollEnvelope =
            serde_json::from_slice(&body).map_err(|e| PollError::Transient {
                reason: format!("poll answer is not a command list: {e}"),
                retry_after: None,
            })?;
        if envelope.commands.is_empty() {
            return Ok(PollOk::Empty);
        }
        let extensions = self.extensions();
        Ok(PollOk::Commands {
            received,
            commands: envelope
                .commands
                .iter()
                .map(|raw| Polled::decode(raw, received, &extensions))
                .collect(),
        })
    }

    /// Posts one response. Terminal payloads retry transport errors and 408/429/502/503/504;
    /// notifications retry only 429 and connections that never opened. All attempts end by
    /// `deadline` when the command has one.
    pub fn post_response(
        &self,
        payload: &ResponsePayload,
        shard_token: &Secret,
        client_request_id: Option<&str>,
        deadline: Option<Instant>,
    ) -> Delivery {
        let mut retries = 0;
        let outcome = self.post_with_retries(
            payload,
            shard_token,
            client_request_id,
            deadline,
            &mut retries,
        );
        Delivery { outcome, retries }
    }

    /// [`post_response`](Self::post_response)'s attempts; `retries` counts the waits between.
    fn post_with_retries(
        &self,
        payload: &ResponsePayload,
        shard_token: &Secret,
        client_request_id: Option<&str>,
        deadline: Option<Instant>,
        retries: &mut u32,
    ) -> PostOutcome {
        let terminal = payload.resp_type.is_terminal();
        // Sized for the envelope at once, not grown by doubling.
        let answer_len = payload
            .resp_json
            .as_ref()
            .map_or(0, |json| json.get().len());
        let mut body = Vec::with_capacity(answer_len + 512);
        if let Err(e) = serde_json::to_writer(&mut body, payload) {
            return PostOutcome::Failed(format!("cannot encode response: {e}"));
        }
        let post = || match &self.response_uri {
            Some(uri) => self.agent.post(uri.clone()),
            None => self.agent.post(format!("{}/response", self.tunnel_url)),
        };
        let attempts = if terminal {
            TERMINAL_POST_ATTEMPTS
        } else {
            NOTIFY_POST_ATTEMPTS
        };
        let mut backoff = Backoff::new(POST_RETRY_BASE, POST_RETRY_CAP);
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            let timeout = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(POST_TIMEOUT),
                    _ => return PostOutcome::Failed(format!("deadline passed ({last_error})")),
                },
                None => POST_TIMEOUT,
            };
            let mut req = self
                .decorate(post())
                .header("Content-Type", "application/json")
                .header("X-Tunnel-Shard-Token", shard_token.expose());
            if let Some(id) = client_request_id {
                req = req.header("X-Client-Request-Id", id);
            }
            let req = http_client::with_timeout(req, timeout);
            let mut retry_after_hint = None;
            match req.send(body.as_slice()) {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    retry_after_hint = retry_after(resp.headers());
                    let text = read_limited(resp.body_mut().as_reader(), MAX_SMALL_BODY);
                    match status {
                        200..=299 => return PostOutcome::Accepted,
                        404 => return PostOutcome::NotPending,
                        _ => last_error = describe_status(status, &text),
                    }
                    let retryable =
                        status == 429 || (terminal && matches!(status, 408 | 502 | 503 | 504));
                    if !retryable {
                        return PostOutcome::Failed(last_error);
                    }
                }
                Err(e) => {
                    last_error = self.describe_transport(&e);
                    if !(terminal || never_sent(&e)) {
                        return PostOutcome::Failed(last_error);
                    }
                }
            }
            if attempt == attempts {
                break;
            }
            let mut wait = backoff.next_delay();
            if let Some(hint) = retry_after_hint {
                wait = wait.max(hint);
            }
            if let Some(d) = deadline
                && Instant::now().checked_add(wait).is_none_or(|at| at >= d)
            {
                return PostOutcome::Failed(format!(
                    "deadline leaves no time to retry ({last_error})"
                ));
            }
            log::debug!(
                "response POST for {} failed ({last_error}); retry {attempt} in {wait:?}",
                payload.request_id
            );
            *retries += 1;
            thread::sleep(wait);
        }
        PostOutcome::Failed(last_error)
    }
}

/// Whether a transport error happened before any of the request could have been sent, which
/// makes even a non-idempotent POST safe to retry.
fn never_sent(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// Reads at most `limit` bytes of a body; a body cut short yields what arrived.
fn read_limited(reader: impl Read, limit: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = reader.take(limit).read_to_end(&mut buf);
    buf
}

fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?;
    backoff::parse_retry_after(value, SystemTime::now())
}

/// A non-success status for a log line, with the service's error code and message when it sent
/// the contract's error body.
fn describe_status(status: u16, body: &[u8]) -> String {
    let detail = serde_json::from_slice::<ApiErrorResponse>(body)
        .ok()
        .map(|e| {
            let mut msg = e.error.message;
            crate::text::truncate_on_char_boundary(&mut msg, 200);
            match e.error.code {
                Some(code) => format!(": {code}: {msg}"),
                None => format!(": {msg}"),
            }
        })
        .unwrap_or_default();
    format!("HTTP {status}{detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_description_uses_the_error_body() {
        let body = br#"{"error":{"message":"bad key","type":"invalid_request_error","code":"tunnel_use_forbidden"}}"#;
        assert_eq!(
            describe_status(401, body),
            "HTTP 401: tunnel_use_forbidden: bad key"
        );
        assert_eq!(describe_status(502, b"<html>"), "HTTP 502");
    }
}
