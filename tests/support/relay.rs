//! The relay side of the end-to-end tests: temporary tunnels files managed with the real
//! `mcp-tunnel relay tunnel …` commands, the real relay and stub processes, and two plain-HTTP roles
//! the test plays itself: a *connector* (an MCP host calling the relay's public MCP endpoint) and a
//! *poller* (a tunnel client reduced to its control-plane calls). Every HTTP exchange is bounded by
//! the agent's global timeout, so a hanging relay fails the test instead of stalling it.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_tunnel::mcp::sse::SseReader;
use serde_json::{Value, json};

use super::PROMPTLY;
use super::process::{ClientBuilder, TunnelClient};

/// Longest any single HTTP exchange of a test may take. Well above every relay timeout the tests
/// configure, so reaching it means the relay hung.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest event read from an event-stream answer.
const MAX_EVENT: usize = 1024 * 1024;

/// The relay's startup log line, followed by its URL.
const RELAY_LISTENING: &str = "relay listening on ";

/// The stub's startup line on stdout, followed by its MCP URL.
const STUB_SERVING: &str = "mcp-tunnel stub serving ";

/// Pause between attempts of a bounded retry loop.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// Temporary directory and tunnels

/// A fresh directory under the system temporary directory, removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.subsec_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "mcp-tunnel-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where this directory's tunnels file lives (created by the first `tunnel add`).
    pub fn tunnels_file(&self) -> PathBuf {
        self.path.join("tunnels.toml")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A tunnel as `relay tunnel add` printed it: its id and both keys.
#[derive(Clone, Debug)]
pub struct Tunnel {
    pub id: String,
    pub runtime_key: String,
    pub connector_key: String,
}

/// `mcp-tunnel relay tunnel add` with the default connector auth (`relay-key`).
pub fn add_tunnel(tunnels_file: &Path, name: &str) -> Tunnel {
    add_tunnel_with_auth(tunnels_file, name, "relay-key")
}

/// `mcp-tunnel relay tunnel add --connector-auth <auth>`.
pub fn add_tunnel_with_auth(tunnels_file: &Path, name: &str, auth: &str) -> Tunnel {
    let printed = run_tunnel_command(&[
        "add",
        "--name",
        name,
        "--connector-auth",
        auth,
        "--tunnels-file",
        path_str(tunnels_file),
    ]);
    let tunnel = Tunnel {
        id: printed_value(&printed, "id:"),
        runtime_key: printed_value(&printed, "runtime key:"),
        connector_key: printed_value(&printed, "connector key:"),
    };
    assert!(tunnel.id.starts_with("tunnel_"), "{printed}");
    assert!(tunnel.runtime_key.starts_with("mcpt_rt_"), "{printed}");
    assert!(tunnel.connector_key.starts_with("mcpt_cn_"), "{printed}");
    tunnel
}

/// `mcp-tunnel relay tunnel remove <id>`.
pub fn remove_tunnel(tunnels_file: &Path, id: &str) {
    run_tunnel_command(&["remove", id, "--tunnels-file", path_str(tunnels_file)]);
}

/// `mcp-tunnel relay admin-key rotate`: a new admin key for the relay serving `tunnels_file`.
pub fn rotate_admin_key(tunnels_file: &Path) -> String {
    let printed = run_relay_command(
        "admin-key",
        &["rotate", "--tunnels-file", path_str(tunnels_file)],
    );
    let key = printed_value(&printed, "admin key:");
    assert!(key.starts_with("mcpt_ad_"), "{printed}");
    key
}

/// Runs `mcp-tunnel relay tunnel <args>` to completion; returns its stdout.
fn run_tunnel_command(args: &[&str]) -> String {
    run_relay_command("tunnel", args)
}

/// Runs `mcp-tunnel relay <command> <args>` to completion; returns its stdout.
fn run_relay_command(command: &str, args: &[&str]) -> String {
    let mut builder = ClientBuilder::bare().arg("relay").arg(command);
    for arg in args {
        builder = builder.arg(arg);
    }
    let mut process = builder.spawn();
    let status = process
        .wait_exit(PROMPTLY)
        .unwrap_or_else(|| panic!("`relay tunnel {args:?}` did not finish within {PROMPTLY:?}"));
    assert!(
        status.success(),
        "`relay tunnel {args:?}` failed ({status}): {}",
        process.stderr()
    );
    process.stdout()
}

/// The value printed after `label` at the start of a line, e.g. `  id:             tunnel_…`.
fn printed_value(printed: &str, label: &str) -> String {
    printed
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(label))
        .map(|value| value.trim().to_string())
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{printed}"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// The whitespace-delimited word that follows `marker` in `text`.
fn word_after(text: &str, marker: &str) -> Option<String> {
    let rest = &text[text.find(marker)? + marker.len()..];
    rest.split_whitespace().next().map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Processes: relay, stub, client

/// `mcp-tunnel relay` on `127.0.0.1:0` at debug level, with options added one by one.
pub struct RelayBuilder {
    builder: ClientBuilder,
}

impl RelayBuilder {
    pub fn new(tunnels_file: &Path) -> RelayBuilder {
        RelayBuilder {
            builder: ClientBuilder::bare()
                .arg("relay")
                .arg("--listen")
                .arg("127.0.0.1:0")
                .arg("--tunnels-file")
                .arg(path_str(tunnels_file))
                .env("LOG_LEVEL", "debug"),
        }
    }

    /// Adds `flag value`, e.g. `option("--connector.timeout", "3s")`.
    pub fn option(mut self, flag: &str, value: &str) -> RelayBuilder {
        self.builder = self.builder.arg(flag).arg(value);
        self
    }

    /// Sets an environment variable of the relay process.
    pub fn env(mut self, key: &str, value: &str) -> RelayBuilder {
        self.builder = self.builder.env(key, value);
        self
    }

    /// Starts the relay and waits for its `relay listening on` line.
    pub fn start(self) -> Relay {
        self.start_wrapped(&[])
    }

    /// `start` through a wrapper command that execs the relay (e.g. `prlimit --nofile=…`).
    pub fn start_wrapped(self, wrapper: &[&str]) -> Relay {
        let process = self.builder.spawn_wrapped(wrapper);
        assert!(
            process.wait_for_stderr(RELAY_LISTENING, PROMPTLY),
            "the relay did not report its address within {PROMPTLY:?}:\n{}",
            process.stderr()
        );
        let base_url = word_after(&process.stderr(), RELAY_LISTENING).expect("the relay's URL");
        assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
        Relay { process, base_url }
    }
}

/// A running relay process. Killed when dropped.
pub struct Relay {
    process: TunnelClient,
    base_url: String,
}

impl Relay {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The public MCP endpoint of a tunnel.
    pub fn mcp_url(&self, tunnel_id: &str) -> String {
        format!("{}/v1/mcp/{tunnel_id}", self.base_url)
    }

    /// The control-plane URL of a tunnel (metadata; `/poll` and `/response` below it).
    pub fn tunnel_url(&self, tunnel_id: &str) -> String {
        format!("{}/v1/tunnels/{tunnel_id}", self.base_url)
    }

    /// How many commands the relay has logged as queued for `tunnel_id` (debug log).
    pub fn queued_count(&self, tunnel_id: &str) -> usize {
        self.process
            .stderr()
            .matches(&queued_marker(tunnel_id))
            .count()
    }

    /// Waits until the relay has logged `count` commands queued for `tunnel_id`.
    pub fn wait_until_queued(&self, tunnel_id: &str, count: usize) {
        assert!(
            self.process
                .wait_for_stderr_count(&queued_marker(tunnel_id), count, PROMPTLY),
            "the relay did not queue {count} command(s) for {tunnel_id} within {PROMPTLY:?}:\n{}",
            self.process.stderr()
        );
    }

    /// The relay's process id (e.g. to read its memory use from `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Waits until the relay's log (stderr) holds `needle`: its output is read by another
    /// thread, so a line the relay wrote may not be there yet when an effect of it is seen.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.process.wait_for_stderr(needle, timeout)
    }

    /// Everything the relay has written so far, stdout then stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.process.stdout(), self.process.stderr())
    }

    /// The relay's process, to signal it or wait for its exit.
    pub fn process(&mut self) -> &mut TunnelClient {
        &mut self.process
    }

    /// With `--metrics-listen 127.0.0.1:0`: `http://127.0.0.1:PORT` of the metrics listener.
    pub fn metrics_url(&self) -> String {
        let marker = "metrics listening on ";
        assert!(
            self.process.wait_for_stderr(marker, PROMPTLY),
            "no metrics listener:\n{}",
            self.process.stderr()
        );
        word_after(&self.process.stderr(), marker).expect("the metrics URL")
    }

    /// Kills the relay and returns all of its output.
    pub fn stop_and_collect_output(&mut self) -> String {
        self.process.kill_and_collect();
        self.output()
    }
}

fn queued_marker(tunnel_id: &str) -> String {
    format!("tunnel {tunnel_id}: queued ")
}

/// A running `mcp-tunnel stub`. Killed when dropped.
pub struct Stub {
    process: TunnelClient,
    url: String,
}

impl Stub {
    pub fn start() -> Stub {
        let process = ClientBuilder::bare()
            .arg("stub")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .spawn();
        assert!(
            process.wait_for_stdout(STUB_SERVING, PROMPTLY),
            "the stub did not report its URL within {PROMPTLY:?}:\n{}",
            process.stderr()
        );
        let url = word_after(&process.stdout(), STUB_SERVING).expect("the stub's URL");
        Stub { process, url }
    }

    /// The stub's MCP URL, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the stub and returns all of its output.
    pub fn stop_and_collect_output(&mut self) -> String {
        self.process.kill_and_collect();
        format!("{}{}", self.process.stdout(), self.process.stderr())
    }
}

/// `mcp-tunnel run` serving `tunnel` through `relay` to the MCP server at `mcp_url` (debug logs,
/// 1 s polls); tests may add settings before spawning.
pub fn tunnel_client(relay: &Relay, tunnel: &Tunnel, mcp_url: &str) -> ClientBuilder {
    ClientBuilder::run(relay.base_url(), &tunnel.runtime_key, mcp_url)
        .env("CONTROL_PLANE_TUNNEL_ID", &tunnel.id)
}

// ---------------------------------------------------------------------------------------------
// HTTP answers

/// One event of an event-stream answer, with the instant the test read it.
#[derive(Clone, Debug)]
pub struct ArrivedEvent {
    pub at: Instant,
    pub message: Value,
}

/// One HTTP exchange as the test saw it, body fully read.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body of an answer that is not an event stream.
    pub body: String,
    /// The `message` events of an event-stream answer, in arrival order.
    pub events: Vec<ArrivedEvent>,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

impl HttpAnswer {
    /// First value of a header, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn content_type(&self) -> &str {
        self.header("Content-Type").unwrap_or_default()
    }

    pub fn is_event_stream(&self) -> bool {
        self.content_type().starts_with("text/event-stream")
    }

    /// The body as JSON; panics (showing the answer) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:#?}"))
    }

    /// The relay's string error code of an error body, if the body is one.
    pub fn error_code(&self) -> Option<String> {
        let body: Value = serde_json::from_str(&self.body).ok()?;
        // The MCP endpoint's JSON-RPC errors carry it in `error.data.code`, the control plane's
        // contract shape in `error.code`.
        body["error"]["data"]["code"]
            .as_str()
            .or_else(|| body["error"]["code"].as_str())
            .map(str::to_string)
    }
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into()
}

/// Reads the whole answer: event by event for event streams (each stamped when it arrived),
/// otherwise as text.
fn read_answer(
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    started: Instant,
    what: &str,
) -> HttpAnswer {
    let response = result.unwrap_or_else(|e| panic!("{what}: no HTTP answer: {e}"));
    let mut answer = HttpAnswer {
        status: response.status().as_u16(),
        headers: response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_string(), value)
            })
            .collect(),
        body: String::new(),
        events: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let mut body = response.into_body();
    if answer.is_event_stream() {
        let mut events = SseReader::new(BufReader::new(body.as_reader()), MAX_EVENT);
        while let Some(event) = events
            .next_event()
            .unwrap_or_else(|e| panic!("{what}: reading the event stream: {e}"))
        {
            if event.is_message() {
                let message = serde_json::from_str(&event.data)
                    .unwrap_or_else(|e| panic!("{what}: event data is not JSON ({e}): {event:?}"));
                answer.events.push(ArrivedEvent {
                    at: Instant::now(),
                    message,
                });
            }
        }
    } else {
        answer.body = body
            .read_to_string()
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
    }
    answer.elapsed = started.elapsed();
    answer
}

/// `method url` with `headers` and, when given, a JSON `body`; body of the answer fully read.
pub fn http_send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpAnswer {
    let started = Instant::now();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let result = match body {
        Some(body) => http_agent().run(
            request
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .expect("a valid request"),
        ),
        None => http_agent().run(request.body(()).expect("a valid request")),
    };
    read_answer(result, started, method)
}

/// A plain `GET url` with `headers` (e.g. a host reading metadata), body fully read.
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    let started = Instant::now();
    let mut request = http_agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read_answer(request.call(), started, "GET")
}

// ---------------------------------------------------------------------------------------------
// Connector: an MCP host calling the relay's public endpoint

/// An MCP host calling one tunnel's MCP endpoint. By default it presents the tunnel's connector
/// key and accepts JSON or an event stream; the builder methods change one of those.
#[derive(Clone)]
pub struct Connector {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
    accept: String,
    session: Option<String>,
}

impl Connector {
    pub fn new(relay: &Relay, tunnel: &Tunnel) -> Connector {
        Connector {
            agent: http_agent(),
            url: relay.mcp_url(&tunnel.id),
            authorization: Some(format!("Bearer {}", tunnel.connector_key)),
            accept: "application/json, text/event-stream".into(),
            session: None,
        }
    }

    /// Calls the tunnel's `channel` endpoint, `/v1/mcp/{id}/{channel}`.
    pub fn on_channel(mut self, channel: &str) -> Connector {
        self.url = format!("{}/{channel}", self.url);
        self
    }

    /// Presents `token` as `Authorization: Bearer <token>` instead of the connector key.
    pub fn bearer(self, token: &str) -> Connector {
        self.authorization(&format!("Bearer {token}"))
    }

    /// Sends this `Authorization` value instead of the connector key.
    pub fn authorization(mut self, value: &str) -> Connector {
        self.authorization = Some(value.to_string());
        self
    }

    /// Sends no `Authorization` header at all.
    pub fn without_authorization(mut self) -> Connector {
        self.authorization = None;
        self
    }

    pub fn accepting(mut self, accept: &str) -> Connector {
        self.accept = accept.to_string();
        self
    }

    /// Sends `Mcp-Session-Id: <session>`.
    pub fn in_session(mut self, session: &str) -> Connector {
        self.session = Some(session.to_string());
        self
    }

    /// POSTs one JSON-RPC message and reads the whole answer.
    pub fn post(&self, message: &Value) -> HttpAnswer {
        self.post_raw(message.to_string().as_bytes())
    }

    /// POSTs `body` as `application/json`, whatever it holds.
    pub fn post_raw(&self, body: &[u8]) -> HttpAnswer {
        let started = Instant::now();
        let request = self
            .decorate(self.agent.post(&self.url))
            .header("Content-Type", "application/json");
        read_answer(request.send(body), started, "connector POST")
    }

    /// DELETE (ends the session given with [`Connector::in_session`]).
    pub fn delete(&self) -> HttpAnswer {
        let started = Instant::now();
        let request = self.decorate(self.agent.delete(&self.url));
        read_answer(request.call(), started, "connector DELETE")
    }

    /// GET (a standalone server stream, which the relay does not offer).
    pub fn get(&self) -> HttpAnswer {
        let started = Instant::now();
        let request = self.decorate(self.agent.get(&self.url));
        read_answer(request.call(), started, "connector GET")
    }

    fn decorate<B>(&self, mut request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        request = request.header("Accept", &self.accept);
        if let Some(value) = &self.authorization {
            request = request.header("Authorization", value);
        }
        if let Some(session) = &self.session {
            request = request.header("Mcp-Session-Id", session);
        }
        request
    }

    /// Sends `ping`s until the relay stops answering `503 tunnel_client_not_connected`, i.e. until
    /// a tunnel client has polled; returns the first other answer (the ping crossed the tunnel).
    pub fn wait_until_client_connected(&self) -> HttpAnswer {
        let deadline = Instant::now() + PROMPTLY;
        for attempt in 0.. {
            let ping =
                json!({"jsonrpc": "2.0", "id": format!("readiness-{attempt}"), "method": "ping"});
            let answer = self.post(&ping);
            let not_connected = answer.status == 503
                && answer.error_code().as_deref() == Some("tunnel_client_not_connected");
            if !not_connected {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "no tunnel client polled within {PROMPTLY:?}: {answer:#?}"
            );
            std::thread::sleep(RETRY_PAUSE);
        }
        unreachable!("the loop returns or panics")
    }
}

// ---------------------------------------------------------------------------------------------
// Poller: the test acting as a tunnel client

/// The control-plane calls of a tunnel client, made by the test: poll, respond, metadata, for
/// `tunnel_id` with `key` as the bearer token, identifying as client instance `instance`.
#[derive(Clone)]
pub struct Poller {
    agent: ureq::Agent,
    tunnel_url: String,
    key: String,
    instance: String,
    /// Sent with every request (e.g. `X-Tunnel-MCP-Server-Info`).
    headers: Vec<(String, String)>,
}

impl Poller {
    pub fn new(relay: &Relay, tunnel_id: &str, key: &str, instance: &str) -> Poller {
        Poller {
            agent: http_agent(),
            tunnel_url: relay.tunnel_url(tunnel_id),
            key: key.to_string(),
            instance: instance.to_string(),
            headers: Vec::new(),
        }
    }

    /// Sends `name: value` with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Poller {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `GET …/poll?limit=<limit>&timeout_ms=<timeout_ms>`.
    pub fn poll(&self, limit: usize, timeout_ms: u64) -> HttpAnswer {
        let url = format!(
            "{}/poll?limit={limit}&timeout_ms={timeout_ms}",
            self.tunnel_url
        );
        let started = Instant::now();
        let request = self.decorate(self.agent.get(&url));
        read_answer(request.call(), started, "poll")
    }

    /// A poll that must succeed: the commands it returned (none on 204).
    pub fn take_commands(&self, limit: usize, timeout_ms: u64) -> Vec<Value> {
        let answer = self.poll(limit, timeout_ms);
        match answer.status {
            204 => Vec::new(),
            200 => answer.json()["commands"]
                .as_array()
                .unwrap_or_else(|| panic!("a 200 poll answer without commands: {answer:#?}"))
                .clone(),
            _ => panic!("the poll failed: {answer:#?}"),
        }
    }

    /// Polls (bounded) until exactly one command arrives, and returns it.
    pub fn take_one_command(&self) -> Value {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let mut commands = self.take_commands(1, 1000);
            if let Some(command) = commands.pop() {
                return command;
            }
            assert!(
                Instant::now() < deadline,
                "no command was delivered within {PROMPTLY:?}"
            );
        }
    }

    /// A 1 ms poll on an empty queue: the relay then counts this client as connected for
    /// `--client-timeout`, while nobody waits for commands.
    pub fn register_as_connected(&self) {
        let answer = self.poll(1, 1);
        assert_eq!(answer.status, 204, "the queue should be empty: {answer:#?}");
    }

    /// `GET /v1/tunnels/{id}`.
    pub fn metadata(&self) -> HttpAnswer {
        let started = Instant::now();
        let request = self.decorate(self.agent.get(&self.tunnel_url));
        read_answer(request.call(), started, "metadata")
    }

    /// `POST …/response` with `X-Tunnel-Shard-Token: <shard_token>`.
    pub fn post_response(&self, shard_token: &str, payload: &Value) -> HttpAnswer {
        let url = format!("{}/response", self.tunnel_url);
        let started = Instant::now();
        let request = self
            .decorate(self.agent.post(&url))
            .header("Content-Type", "application/json")
            .header("X-Tunnel-Shard-Token", shard_token);
        read_answer(
            request.send(payload.to_string().as_bytes()),
            started,
            "response POST",
        )
    }

    /// Acknowledges a command that carries no answer (a notification, a forwarded server
    /// response): its `notify_ack` with status 202, on the command's own shard token.
    pub fn acknowledge(&self, command: &Value) -> HttpAnswer {
        let ack = serde_json::json!({"request_id": command["request_id"], "channel": command["channel"],
                                     "resp_headers": {}, "resp_code": 202, "resp_type": "notify_ack"});
        self.post_response(shard_token_of(command), &ack)
    }

    /// Answers `command` with a JSON-RPC result, using the command's own shard token.
    pub fn answer_with_result(&self, command: &Value, result: Value) -> HttpAnswer {
        self.post_response(shard_token_of(command), &result_payload(command, result))
    }

    fn decorate<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let mut request = request
            .header("Authorization", format!("Bearer {}", self.key))
            .header("Accept", "application/json")
            .header("X-Tunnel-Client-Instance-Id", &self.instance);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
    }
}

pub fn shard_token_of(command: &Value) -> &str {
    command["shard_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a command without shard_token: {command:#}"))
}

pub fn request_id_of(command: &Value) -> &str {
    command["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a command without request_id: {command:#}"))
}

/// A terminal `jsonrpc_response` payload answering `command`'s JSON-RPC request with `result`.
pub fn result_payload(command: &Value, result: Value) -> Value {
    json!({
        "request_id": request_id_of(command),
        "channel": command["channel"],
        "resp_json": {"jsonrpc": "2.0", "id": command["jsonrpc"]["id"], "result": result},
        "resp_headers": {"Content-Type": ["application/json"]},
        "resp_code": 200,
        "resp_type": "jsonrpc_response",
    })
}

/// The audit file's lines once it holds at least `count` (bounded wait).
pub fn audit_lines(path: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let parsed: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if parsed.len() >= count {
            return parsed;
        }
        assert!(
            Instant::now() < deadline,
            "{} held {} line(s), not {count}:\n{text}",
            path.display(),
            parsed.len()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}
