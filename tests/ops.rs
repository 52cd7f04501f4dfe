//! The operator surface of `mcp-tunnel run` (issue 6), tested on the real binary between the
//! loopback fakes: `/healthz`, `/readyz` and `/metrics`, the pid file, `--env-file`,
//! `--exit-on-auth-failure`, JSON and file logs, secrets kept out of every output, systemd
//! notification, and `--version`/`help`/`--help`.
//!
//! Every wait is bounded by a deadline; every process is killed when its test ends, however it ends.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    ClientBuilder, Command, FakeControlPlane, FakeMcp, McpReply, PROMPTLY, PostedResponse,
    Scripted, TUNNEL_ID, TempDir, TunnelClient, assert_valid_exposition, dead_loopback_url,
    read_until, rpc_request, sample,
};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-tunnel");

/// Pause between two looks in a bounded polling loop.
const LOOK_AGAIN: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A client wired to the fakes that writes its health server's URL into `dir`.
fn client_for(control_plane: &FakeControlPlane, mcp_url: &str, dir: &TempDir) -> ClientBuilder {
    ClientBuilder::for_fakes(control_plane, mcp_url).env("HEALTH_URL_FILE", &url_file(dir))
}

fn url_file(dir: &TempDir) -> String {
    dir.path().join("health.url").display().to_string()
}

/// Queues `command` and waits for its terminal response, as a connector would.
fn exchange(control_plane: &FakeControlPlane, command: &Command) -> PostedResponse {
    control_plane.push(command.clone());
    control_plane.wait_for_terminal_response(command.request_id(), PROMPTLY)
}

/// A `ping` answered 200 end to end.
fn serve_ping(control_plane: &FakeControlPlane, request_id: &str) -> PostedResponse {
    let ping = Command::jsonrpc(request_id, rpc_request(request_id, "ping", json!({})));
    let posted = exchange(control_plane, &ping);
    assert_eq!(posted.resp_code(), Some(200), "{request_id}: {posted:#?}");
    posted
}

/// Waits until `path` exists and `accept` likes its text; panics at the deadline.
fn wait_for_file(path: &Path, what: &str, accept: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && accept(&text)
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} not as expected within {PROMPTLY:?}; it holds {:?}",
            path.display(),
            std::fs::read_to_string(path)
        );
        std::thread::sleep(LOOK_AGAIN);
    }
}

fn send_signal(client: &TunnelClient, signal: &str) {
    let status = Process::new("kill")
        .args([&format!("-{signal}"), &client.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {} failed", client.pid());
}

/// SIGTERM, then the exit code (which must come promptly).
fn stop(client: &mut TunnelClient) -> Option<i32> {
    client.send_sigterm();
    let status = client
        .wait_exit(PROMPTLY)
        .expect("the client exits promptly after SIGTERM");
    status.code()
}

/// The health server of one client, found through its `HEALTH_URL_FILE`.
struct Health {
    base: String,
    agent: ureq::Agent,
}

impl Health {
    /// Waits for the URL file (written atomically once the server listens).
    fn of(dir: &TempDir) -> Health {
        let path = PathBuf::from(url_file(dir));
        let text = wait_for_file(&path, "health URL file", |text| text.ends_with('\n'));
        let base = text.trim().to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "{base:?}");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        Health { base, agent }
    }

    /// `(status, content type, body)`.
    fn get(&self, path: &str) -> (u16, String, String) {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response
            .into_body()
            .read_to_string()
            .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
        (status, content_type, body)
    }

    /// Looks at `path` until it answers `status`; returns that answer's body.
    fn wait_for_status(&self, path: &str, status: u16) -> String {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let (got, _, body) = self.get(path);
            if got == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path}: still {got} ({body:?}) after {PROMPTLY:?}, expected {status}"
            );
            std::thread::sleep(LOOK_AGAIN);
        }
    }

    /// Like `wait_for_status`, until the body also contains `needle` (a client that has not
    /// polled yet is not ready either, for another reason).
    fn wait_for_reason(&self, path: &str, status: u16, needle: &str) -> String {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let (got, _, body) = self.get(path);
            if got == status && body.contains(needle) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path}: still {got} ({body:?}) after {PROMPTLY:?}, expected {status} with {needle:?}"
            );
            std::thread::sleep(LOOK_AGAIN);
        }
    }

    fn metrics(&self) -> String {
        let (status, content_type, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type:?}"
        );
        body
    }

    /// Scrapes until `series` reaches `at_least`; returns that scrape.
    fn wait_for_metric(&self, series: &str, at_least: f64) -> String {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let text = self.metrics();
            if sample(&text, series).unwrap_or(0.0) >= at_least {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{series} did not reach {at_least} within {PROMPTLY:?}:\n{text}"
            );
            std::thread::sleep(LOOK_AGAIN);
        }
    }
}

/// Every secret and a fragment of it, so a secret cut or wrapped in the output is still caught.
fn secret_fragments(secret: &str) -> [&str; 2] {
    let third = secret.len() / 3;
    [secret, &secret[third..2 * third]]
}

// ---------------------------------------------------------------------------------------------
// /healthz and /readyz

#[test]
fn readyz_is_ready_while_polling_works_and_names_the_key_on_401() {
    let dir = TempDir::new("ops-ready");
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = client_for(&control_plane, mcp.url(), &dir).spawn();
    let health = Health::of(&dir);

    let (status, _, body) = health.get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = health.get("/healthz?format=json");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "alive"})
    );

    assert_eq!(health.wait_for_status("/readyz", 200), "ready\n");
    let (status, _, body) = health.get("/readyz?format=json");
    assert_eq!(status, 200);
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["control_plane"]["ok"], true, "{ready}");

    // The control plane starts rejecting the key: not ready, and the reason names the fix.
    control_plane.script_polls(1, Scripted::status(401));
    let body = health.wait_for_status("/readyz", 503);
    assert_eq!(
        body,
        "control plane auth failed (401): check CONTROL_PLANE_API_KEY\n"
    );
    let (status, content_type, body) = health.get("/readyz?format=json");
    assert_eq!(status, 503);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let not_ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(not_ready["status"], "not_ready", "{not_ready}");
    assert_eq!(
        not_ready["reason"],
        "control plane auth failed (401): check CONTROL_PLANE_API_KEY"
    );
    assert_eq!(
        not_ready["checks"]["control_plane"],
        json!({"ok": false, "reason": "control plane auth failed (401): check CONTROL_PLANE_API_KEY"})
    );
    // Alive all the same.
    assert_eq!(health.get("/healthz").0, 200);
    // Back to ready once the key is accepted again: only after the client's next poll, which an
    // operator error puts off for at least 30 s; see the slow test below.
}

/// The recovery half of the test above. Slow on purpose (about 31 s): the client waits at least
/// 30 s before polling again after a 401, and recovery shows only after that poll. It runs in
/// parallel with the other tests.
#[test]
fn readyz_recovers_once_the_key_is_accepted_again() {
    let dir = TempDir::new("ops-recover");
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    control_plane.script_polls(1, Scripted::status(401));
    let _client = client_for(&control_plane, mcp.url(), &dir).spawn();
    let health = Health::of(&dir);
    health.wait_for_reason("/readyz", 503, "CONTROL_PLANE_API_KEY");
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (status, _, body) = health.get("/readyz");
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn readyz_names_an_unreachable_mcp_server() {
    let dir = TempDir::new("ops-mcp-down");
    let control_plane = FakeControlPlane::start();
    let _client = client_for(&control_plane, &dead_loopback_url("/mcp"), &dir).spawn();
    let health = Health::of(&dir);
    // Polling works and nothing has tried the MCP server yet.
    health.wait_for_status("/readyz", 200);

    let posted = exchange(
        &control_plane,
        &Command::jsonrpc("req-down", rpc_request(1, "ping", json!({}))),
    );
    assert_eq!(posted.resp_code(), Some(502), "{posted:#?}");

    let body = health.wait_for_status("/readyz", 503);
    assert_eq!(body, "mcp channel main unreachable: connection refused\n");
    let (_, _, body) = health.get("/readyz?format=json");
    let not_ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(not_ready["status"], "not_ready");
    assert_eq!(
        not_ready["checks"]["channel main"]["reason"],
        "mcp channel main unreachable: connection refused"
    );
    assert_eq!(not_ready["checks"]["control_plane"]["ok"], true);
    assert_eq!(
        sample(&health.metrics(), "mcp_tunnel_channel_up{channel=\"main\"}"),
        Some(0.0)
    );
}

// ---------------------------------------------------------------------------------------------
// /readyz: the start-up OAuth discovery of main

const WELL_KNOWN_MCP: &str = "/.well-known/oauth-protected-resource/mcp";
const AUTHORIZATION_SERVER: &str = "http://127.0.0.1:9/issuer";

/// Makes `mcp` an OAuth-protected server: `/mcp` challenges, the metadata is at the well-known
/// location. Returns the metadata URL.
fn protect(mcp: &FakeMcp) -> String {
    let metadata_url = format!("{}{WELL_KNOWN_MCP}", mcp.origin());
    let challenge = format!("Bearer resource_metadata=\"{metadata_url}\"");
    mcp.on_path(
        "/mcp",
        McpReply::text(401, "unauthorized").header("WWW-Authenticate", &challenge),
    );
    let prmd = json!({"resource": mcp.url(), "authorization_servers": [AUTHORIZATION_SERVER]});
    mcp.on_path(WELL_KNOWN_MCP, McpReply::raw_json(&prmd.to_string()));
    metadata_url
}

impl Health {
    /// `/readyz?format=json`: (status, document).
    fn readyz_json(&self) -> (u16, Value) {
        let (status, _, body) = self.get("/readyz?format=json");
        let doc = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (status, doc)
    }

    /// Looks at `/readyz?format=json` until its `oauth.state` is `state`; returns the answer.
    fn wait_for_oauth_state(&self, state: &str, within: Duration) -> (u16, Value) {
        let deadline = Instant::now() + within;
        loop {
            let (status, doc) = self.readyz_json();
            if doc["oauth"]["state"] == state {
                return (status, doc);
            }
            assert!(
                Instant::now() < deadline,
                "oauth state still not {state} after {within:?}: {doc}"
            );
            std::thread::sleep(LOOK_AGAIN);
        }
    }
}

#[test]
fn readyz_reports_main_as_oauth_protected_or_not() {
    let dir = TempDir::new("ops-oauth");
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let metadata_url = protect(&mcp);
    let _client = client_for(&control_plane, mcp.url(), &dir).spawn();
    let health = Health::of(&dir);
    health.wait_for_status("/readyz", 200);

    let (status, ready) = health.wait_for_oauth_state("protected", PROMPTLY);
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready["oauth"],
        json!({"state": "protected", "metadata_url": metadata_url,
               "authorization_server": AUTHORIZATION_SERVER}),
    );
    // The start-up discovery is no command: nothing was counted.
    let metrics = health.metrics();
    assert!(
        !metrics.contains("oauth_discovery"),
        "the start-up discovery shows in the metrics:\n{metrics}"
    );

    let dir = TempDir::new("ops-oauth-none");
    let plain = FakeMcp::start();
    let _client = client_for(&control_plane, plain.url(), &dir).spawn();
    let health = Health::of(&dir);
    let (_, ready) = health.wait_for_oauth_state("none", PROMPTLY);
    assert_eq!(ready["oauth"], json!({"state": "none"}));
    health.wait_for_status("/readyz", 200);
}

#[test]
fn a_slow_discovery_is_pending_and_does_not_hold_readiness_by_default() {
    let dir = TempDir::new("ops-oauth-pending");
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_path("/mcp", McpReply::empty(401).after(Duration::from_secs(30)));
    let _client = client_for(&control_plane, mcp.url(), &dir).spawn();
    let health = Health::of(&dir);

    assert_eq!(health.wait_for_status("/readyz", 200), "ready\n");
    let (status, ready) = health.readyz_json();
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["oauth"], json!({"state": "pending"}), "{ready}");
    // Commands are served meanwhile.
    mcp.on_path("/mcp", McpReply::empty(401));
    let posted = exchange(&control_plane, &Command::oauth_discovery("disc-meanwhile"));
    assert_eq!(posted.resp_code(), Some(502), "{posted:#?}");
}

#[test]
fn a_failed_start_up_discovery_is_retried_while_main_comes_up() {
    let dir = TempDir::new("ops-oauth-retry");
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    for path in [
        "/mcp",
        WELL_KNOWN_MCP,
        "/.well-known/oauth-protected-resource",
    ] {
        mcp.on_path(path, McpReply::text(503, "starting"));
    }
    let _client = client_for(&control_plane, mcp.url(), &dir).spawn();
    let health = Health::of(&dir);
    let (_, doc) = health.wait_for_oauth_state("failed", PROMPTLY);
    assert!(doc["oauth"]["error"].is_string(), "{doc}");
    // main is up now, OAuth-protected: the next try finds it without a restart of the client.
    let metadata_url = protect(&mcp);
    let (_, doc) = health.wait_for_oauth_state("protected", 2 * PROMPTLY);
    assert_eq!(doc["oauth"]["metadata_url"], metadata_url.as_str());
}

#[test]
fn required_oauth_discovery_holds_readiness_until_metadata_appears() {
    let dir = TempDir::new("ops-oauth-required");
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let mut client = client_for(&control_plane, mcp.url(), &dir)
        .env("MCP_REQUIRE_OAUTH_DISCOVERY", "true")
        .env(
            "MCP_DISCOVERY_EXTRA_HEADERS",
            "X-Discovery-Secret: dsc-Hq7RtY2mWz",
        )
        .spawn();
    let health = Health::of(&dir);

    let body = health.wait_for_reason("/readyz", 503, "no OAuth metadata");
    assert_eq!(
        body,
        "main has no OAuth metadata yet (--mcp.require-oauth-discovery)\n"
    );
    let (status, doc) = health.readyz_json();
    assert_eq!(status, 503);
    assert_eq!(doc["oauth"], json!({"state": "none"}), "{doc}");
    assert_eq!(doc["checks"]["oauth"]["ok"], false, "{doc}");
    assert_eq!(doc["checks"]["control_plane"]["ok"], true, "{doc}");

    // The server turns OAuth-protected: the retried discovery finds it, and the client is ready.
    let metadata_url = protect(&mcp);
    let (_, doc) = health.wait_for_oauth_state("protected", 2 * PROMPTLY);
    assert_eq!(doc["oauth"]["metadata_url"], metadata_url.as_str());
    assert_eq!(health.wait_for_status("/readyz", 200), "ready\n");
    let requests = mcp.requests_to(WELL_KNOWN_MCP);
    assert!(
        requests
            .iter()
            .all(|r| r.header("X-Discovery-Secret") == Some("dsc-Hq7RtY2mWz")),
        "{requests:#?}"
    );

    client.kill_and_collect();
    let logs = format!("{}{}", client.stderr(), client.stdout());
    assert!(logs.contains("start-up OAuth discovery: main is OAuth-protected: PRMD at "));
    assert!(!logs.contains("dsc-Hq7RtY2mWz"), "{logs}");
}

// ---------------------------------------------------------------------------------------------
// /metrics

#[test]
fn metrics_are_valid_prometheus_text_and_count_commands() {
    const ANSWERED: &str =
        "mcp_tunnel_commands_total{type=\"jsonrpc\",channel=\"main\",outcome=\"answered\"}";
    const POLLS_WITH_COMMANDS: &str = "mcp_tunnel_polls_total{outcome=\"commands\"}";
    const MCP_CALLS: &str = "mcp_tunnel_mcp_request_duration_seconds_count{channel=\"main\"}";
    let dir = TempDir::new("ops-metrics");
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = client_for(&control_plane, mcp.url(), &dir).spawn();
    let health = Health::of(&dir);
    // Readiness turns before the poll is counted: wait for the count itself.
    let before = health.wait_for_metric("mcp_tunnel_polls_total{outcome=\"empty\"}", 1.0);
    assert_valid_exposition(&before);
    let answered = sample(&before, ANSWERED).unwrap_or(0.0);
    let polls = sample(&before, POLLS_WITH_COMMANDS).expect("polls by outcome from the start");
    let calls = sample(&before, MCP_CALLS).unwrap_or(0.0);
    assert_eq!(sample(&before, "mcp_tunnel_worker_capacity"), Some(10.0));
    assert!(sample(&before, "mcp_tunnel_last_successful_poll_timestamp_seconds").unwrap() > 0.0);

    serve_ping(&control_plane, "req-m1");
    serve_ping(&control_plane, "req-m2");
    let after = health.wait_for_metric(ANSWERED, answered + 2.0);
    assert_eq!(sample(&after, ANSWERED), Some(answered + 2.0), "{after}");
    assert!(sample(&after, POLLS_WITH_COMMANDS).unwrap() >= polls + 1.0);
    assert_eq!(sample(&after, MCP_CALLS), Some(calls + 2.0), "{after}");
    assert_eq!(
        sample(
            &after,
            "mcp_tunnel_mcp_request_duration_seconds_bucket{channel=\"main\",le=\"+Inf\"}"
        ),
        Some(calls + 2.0)
    );
    assert!(sample(&after, "mcp_tunnel_command_duration_seconds_count").unwrap() >= 2.0);
    assert_eq!(sample(&after, "mcp_tunnel_inflight_commands"), Some(0.0));
    // Low-cardinality labels only: no tunnel id, URL or request id.
    for needle in [TUNNEL_ID, "req-m1", "127.0.0.1", "http://"] {
        assert!(!after.contains(needle), "{needle} in\n{after}");
    }
    assert_valid_exposition(&after);
}

// ---------------------------------------------------------------------------------------------
// Pid file, env file, exit codes

#[test]
fn a_second_copy_with_the_same_pid_file_exits_at_once_and_leaves_the_first_alone() {
    let dir = TempDir::new("ops-pid");
    let pid_file = dir.path().join("client.pid");
    let pid_arg = pid_file.display().to_string();
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let mut first = client_for(&control_plane, mcp.url(), &dir)
        .arg("--pid-file")
        .arg(&pid_arg)
        .spawn();
    let health = Health::of(&dir);
    health.wait_for_status("/readyz", 200);
    let first_pid = first.pid().to_string();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        first_pid
    );

    let second_dir = TempDir::new("ops-pid-second");
    let started = Instant::now();
    let mut second = client_for(&control_plane, mcp.url(), &second_dir)
        .arg("--pid-file")
        .arg(&pid_arg)
        .spawn();
    let status = second.wait_exit(PROMPTLY).expect("the second copy exits");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{}", second.stderr());
    assert!(
        took < Duration::from_secs(1),
        "the second copy took {took:?}"
    );
    assert!(
        second
            .stderr()
            .contains(&format!("another mcp-tunnel (pid {first_pid}) holds")),
        "{}",
        second.stderr()
    );
    assert!(
        !Path::new(&url_file(&second_dir)).exists(),
        "the second copy started a health server"
    );

    // The first copy is undisturbed: same pid file, still serving.
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        first_pid
    );
    serve_ping(&control_plane, "req-after-second");
    assert_eq!(health.get("/readyz").0, 200);

    assert_eq!(stop(&mut first), Some(0), "{}", first.stderr());
    assert!(!pid_file.exists(), "the pid file outlived its process");
    assert!(
        !Path::new(&url_file(&dir)).exists(),
        "the health URL file outlived its process"
    );
}

#[test]
fn env_file_sits_between_the_environment_and_the_defaults() {
    let dir = TempDir::new("ops-envfile");
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let env_file = dir.path().join("client.env");
    std::fs::write(
        &env_file,
        format!(
            "# as in /etc/default/mcp-tunnel\n\
             export CONTROL_PLANE_TUNNEL_ID=\"{TUNNEL_ID}\"\n\
             CONTROL_PLANE_API_KEY='sk-stale-key-from-the-file'\n\
             MCP_SERVER_URL={}\n",
            dead_loopback_url("/file")
        ),
    )
    .unwrap();
    // The tunnel id is only in the file; the key is in both (the environment's is right); the
    // MCP URL is in the file, the environment and a flag (only the flag's is right).
    let mut client = client_for(&control_plane, &dead_loopback_url("/env"), &dir)
        .without_env("CONTROL_PLANE_TUNNEL_ID")
        .arg("--env-file")
        .arg(&env_file.display().to_string())
        .arg("--mcp.server-url")
        .arg(mcp.url())
        .spawn();
    let posted = serve_ping(&control_plane, "req-envfile");
    assert_eq!(
        posted.resp_json().unwrap()["result"],
        json!({}),
        "{posted:#?}"
    );
    assert_eq!(mcp.calls().len(), 1, "the flag's MCP server answered");
    assert!(
        control_plane
            .requests()
            .iter()
            .all(|r| r.path().starts_with(&format!("/v1/tunnels/{TUNNEL_ID}"))),
        "the file's tunnel id is used"
    );
    assert_eq!(stop(&mut client), Some(0));
}

#[test]
fn a_malformed_env_file_is_a_configuration_error_naming_file_and_line() {
    let dir = TempDir::new("ops-envfile-bad");
    let env_file = dir.path().join("broken.env");
    std::fs::write(
        &env_file,
        "CONTROL_PLANE_TUNNEL_ID=tunnel_x\nthis line assigns nothing\n",
    )
    .unwrap();
    for flag in ["--env-file", "--config"] {
        let mut client = ClientBuilder::bare()
            .arg("run")
            .arg(flag)
            .arg(&env_file.display().to_string())
            .spawn();
        let status = client.wait_exit(PROMPTLY).expect("exits at once");
        let stderr = client.stderr();
        assert_eq!(status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!("{} line 2", env_file.display())),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn exit_on_auth_failure_exits_3_promptly_on_401() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let started = Instant::now();
    let mut client = ClientBuilder::run(control_plane.base_url(), "sk-not-this-tunnels", mcp.url())
        .arg("--exit-on-auth-failure=true")
        .spawn();
    let status = client.wait_exit(PROMPTLY).expect("exits on the 401");
    let stderr = client.stderr();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "{stderr}");
    assert!(stderr.contains("CONTROL_PLANE_API_KEY"), "{stderr}");
    assert!(control_plane.poll_count() >= 1);
}

/// The documented form: a bare switch, as README and `--help` name it.
#[test]
fn exit_on_auth_failure_works_as_a_bare_switch() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let mut client = ClientBuilder::run(control_plane.base_url(), "sk-not-this-tunnels", mcp.url())
        .arg("--exit-on-auth-failure")
        .spawn();
    let status = client.wait_exit(PROMPTLY).expect("exits on the 401");
    assert_eq!(status.code(), Some(3), "{}", client.stderr());
}

// ---------------------------------------------------------------------------------------------
// Logs

#[test]
fn json_logs_are_one_object_per_line_with_the_command_fields() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("LOG_FORMAT", "json")
        .spawn();
    serve_ping(&control_plane, "req-json-1");
    assert_eq!(stop(&mut client), Some(0));
    let stderr = client.stderr();
    assert!(client.stdout().is_empty(), "{}", client.stdout());

    let mut lines = 0;
    let mut command_line = None;
    for line in stderr.lines() {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{stderr}"));
        let ts = record["ts"]
            .as_str()
            .unwrap_or_else(|| panic!("ts: {line}"));
        assert!(
            ts.len() == 24 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
            "ts {ts:?}"
        );
        let level = record["level"].as_str().unwrap_or_default();
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
            "{line}"
        );
        assert!(record["target"].is_string(), "{line}");
        let msg = record["msg"]
            .as_str()
            .unwrap_or_else(|| panic!("msg: {line}"));
        if msg.contains("MCP answered") && record["request_id"] == "req-json-1" {
            command_line = Some(record.clone());
        }
        lines += 1;
    }
    assert!(lines >= 5, "{stderr}");
    let record = command_line.unwrap_or_else(|| panic!("no per-command line in\n{stderr}"));
    assert_eq!(record["level"], "DEBUG");
    assert_eq!(record["target"], "mcp_tunnel::dispatch");
    assert_eq!(record["channel"], "main", "{record}");
    assert_eq!(record["status"], 200, "{record}");
    assert!(record["duration_ms"].is_u64(), "{record}");
    assert!(
        stderr.contains(r#""msg":"stopped""#),
        "the last line is there too: {stderr}"
    );
}

#[test]
fn text_logs_carry_the_command_fields_as_key_value_pairs() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let client = ClientBuilder::for_fakes(&control_plane, mcp.url()).spawn();
    serve_ping(&control_plane, "req-text-1");
    // Logged before the response was posted; the capture thread may still be copying it.
    assert!(client.wait_for_stderr("command req-text-1 on main: MCP answered", PROMPTLY));
    let stderr = client.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("command req-text-1 on main: MCP answered 200"))
        .unwrap_or_else(|| panic!("no per-command line in\n{stderr}"));
    assert!(
        line.contains(" request_id=req-text-1 channel=main status=200 duration_ms="),
        "{line}"
    );
}

#[test]
fn log_file_is_private_appended_and_reopened_on_sighup() {
    let dir = TempDir::new("ops-logfile");
    let log_path = dir.path().join("client.log");
    let rotated = dir.path().join("client.log.1");
    std::fs::write(&log_path, "an earlier run\n").unwrap();
    std::fs::set_permissions(&log_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("LOG_FILE", &log_path.display().to_string())
        .spawn();
    wait_for_file(&log_path, "first log lines", |t| t.contains(" polling; "));
    serve_ping(&control_plane, "req-before-rotation");
    let before = std::fs::read_to_string(&log_path).unwrap();
    assert!(before.starts_with("an earlier run\n"), "appended: {before}");
    assert!(
        before.contains("command req-before-rotation on main"),
        "{before}"
    );

    // logrotate: move the file, then SIGHUP; the client starts a new file at the path.
    std::fs::rename(&log_path, &rotated).unwrap();
    send_signal(&client, "HUP");
    wait_for_file(&log_path, "reopened log", |t| t.contains("reopened"));
    let mode = std::fs::metadata(&log_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "a new log file is private");
    serve_ping(&control_plane, "req-after-rotation");
    assert_eq!(stop(&mut client), Some(0));

    let new = std::fs::read_to_string(&log_path).unwrap();
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(new.contains("command req-after-rotation on main"), "{new}");
    assert!(new.contains(" stopped"), "{new}");
    assert!(!old.contains("req-after-rotation"), "{old}");
    assert!(old.contains("req-before-rotation"), "{old}");
    assert!(
        client.stderr().is_empty(),
        "nothing on stderr: {}",
        client.stderr()
    );
}

#[test]
fn no_secret_reaches_any_output_at_debug_level() {
    const KEY: &str = "sk-ops-Zq8mVf3LkP0wXr7Tn2YbQ5";
    const HEADER_VALUE: &str = "hdr-ops-K4pW9sQe2ZmXc7Lt";
    for format in ["text", "json"] {
        let control_plane = FakeControlPlane::start_with_key(KEY);
        let mcp = FakeMcp::start();
        let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
            .env("LOG_FORMAT", format)
            .env(
                "MCP_EXTRA_HEADERS",
                &format!("X-Ops-Secret: {HEADER_VALUE}"),
            )
            .spawn();
        serve_ping(&control_plane, &format!("req-secret-{format}"));
        let call = &mcp.calls()[0];
        assert_eq!(call.request.header("X-Ops-Secret"), Some(HEADER_VALUE));
        // A rejected poll too: the error path must not show the key either.
        control_plane.script_polls(1, Scripted::status(401));
        assert!(
            client.wait_for_stderr("CONTROL_PLANE_API_KEY", PROMPTLY),
            "{format}: the 401 was logged: {}",
            client.stderr()
        );
        assert_eq!(stop(&mut client), Some(0));
        let output = format!("{}\n{}", client.stdout(), client.stderr());
        assert!(output.lines().count() > 5, "{output}");
        for secret in [KEY, HEADER_VALUE] {
            for fragment in secret_fragments(secret) {
                assert!(
                    !output.contains(fragment),
                    "{format}: {fragment:?} appears in the output:\n{output}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// systemd notification

#[test]
fn sd_notify_reports_ready_watchdog_and_stopping() {
    let dir = TempDir::new("ops-notify");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("NOTIFY_SOCKET", &socket_path.display().to_string())
        .env("WATCHDOG_USEC", "200000")
        .spawn();

    let first = read_until(&socket, "READY=1");
    assert_eq!(first, ["READY=1"], "READY=1 comes first");
    let pings = read_until(&socket, "WATCHDOG=1");
    assert_eq!(pings, ["WATCHDOG=1"]);
    // The watchdog keeps pinging at half of WATCHDOG_USEC.
    assert_eq!(read_until(&socket, "WATCHDOG=1"), ["WATCHDOG=1"]);

    client.send_sigterm();
    let last = read_until(&socket, "STOPPING=1");
    assert!(
        last.iter().all(|m| m == "WATCHDOG=1" || m == "STOPPING=1"),
        "{last:?}"
    );
    let status = client.wait_exit(PROMPTLY).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// --version, help, --help

fn run_binary(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Process::new(BINARY)
        .args(args)
        .env_clear()
        .output()
        .expect("run mcp-tunnel");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_names_the_release_commit_and_target() {
    for flag in ["--version", "version", "-V"] {
        let (code, stdout, _) = run_binary(&[flag]);
        assert_eq!(code, Some(0), "{flag}");
        // `mcp-tunnel 0.1.0 (commit 0123abcd4567, x86_64-unknown-linux-gnu)`
        let line = stdout.trim_end();
        assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
        let rest = line
            .strip_prefix(&format!(
                "mcp-tunnel {} (commit ",
                env!("CARGO_PKG_VERSION")
            ))
            .unwrap_or_else(|| panic!("{line:?}"));
        let (commit, target) = rest
            .strip_suffix(')')
            .and_then(|r| r.split_once(", "))
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            commit == "unknown"
                || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "commit {commit:?}"
        );
        let parts: Vec<&str> = target.split('-').collect();
        assert!(
            (3..=4).contains(&parts.len())
                && parts[0] == std::env::consts::ARCH
                && target.contains(std::env::consts::OS),
            "target {target:?}"
        );
    }
}

#[test]
fn help_lists_every_subcommand() {
    let (code, stdout, _) = run_binary(&["help"]);
    assert_eq!(code, Some(0));
    let commands: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for command in ["run", "relay", "stub", "demo", "doctor"] {
        assert!(
            commands.contains(&command),
            "{command} missing in\n{stdout}"
        );
    }
}

/// Each option of `<command> --help`: its header line and the lines describing it.
fn option_blocks(help: &str) -> Vec<(String, Vec<String>)> {
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    for line in help
        .lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
    {
        if line.starts_with("  -") {
            blocks.push((line.trim().to_string(), Vec::new()));
        } else if let Some((_, body)) = blocks.last_mut() {
            body.push(line.trim().to_string());
        }
    }
    blocks
}

/// One expected option row of a `--help`: flag, variable, default.
type HelpRow = (&'static str, &'static str, &'static str);

#[test]
fn every_option_of_every_subcommand_shows_its_variable_and_default() {
    // A few known rows per command, so the parse below is known to read the right thing.
    let known: &[(&str, &[HelpRow])] = &[
        (
            "run",
            &[
                (
                    "--control-plane.tunnel-id",
                    "CONTROL_PLANE_TUNNEL_ID",
                    "(required)",
                ),
                ("--log.format", "LOG_FORMAT", "text"),
                ("--log.file", "LOG_FILE", "(none)"),
                (
                    "--health.listen-addr",
                    "HEALTH_LISTEN_ADDR",
                    "127.0.0.1:8080",
                ),
                ("--health.url-file", "HEALTH_URL_FILE", "(none)"),
                ("--pid.file", "PID_FILE", "(none)"),
                ("--env-file", "ENV_FILE", "(none)"),
                ("--exit-on-auth-failure", "EXIT_ON_AUTH_FAILURE", "false"),
            ],
        ),
        (
            "relay",
            &[
                ("--listen", "RELAY_LISTEN", "127.0.0.1:8000"),
                (
                    "--tunnels-file",
                    "RELAY_TUNNELS_FILE",
                    "/etc/mcp-tunnel/tunnels.toml",
                ),
            ],
        ),
        ("stub", &[("--listen", "STUB_LISTEN", "127.0.0.1:3000")]),
        ("demo", &[("--listen", "DEMO_LISTEN", "127.0.0.1:8000")]),
    ];
    for (command, rows) in known {
        let (code, stdout, stderr) = run_binary(&[command, "--help"]);
        assert_eq!(code, Some(0), "{command} --help: {stderr}");
        let blocks = option_blocks(&stdout);
        assert!(blocks.len() > rows.len(), "{command}: {stdout}");
        for (header, body) in &blocks {
            // Switches (`-h, --help`, `demo --once`) take no value and have no variable.
            // Options take a value; switches (true/false) may also be given bare.
            if !header.ends_with("<value>") && !header.ends_with("[=true|false]") {
                continue;
            }
            let env_line = body
                .iter()
                .find(|l| l.starts_with("env: "))
                .unwrap_or_else(|| panic!("{command} {header}: no env line in {body:?}"));
            let (vars, default) = env_line["env: ".len()..]
                .split_once("   default: ")
                .unwrap_or_else(|| panic!("{command} {header}: no default in {env_line:?}"));
            assert!(
                !vars.trim().is_empty() && !default.trim().is_empty(),
                "{command} {header}: {env_line:?}"
            );
        }
        for (flag, var, default) in *rows {
            let (_, body) = blocks
                .iter()
                .find(|(h, _)| {
                    h == &format!("{flag} <value>") || h == &format!("{flag}[=true|false]")
                })
                .unwrap_or_else(|| panic!("{command}: {flag} missing in\n{stdout}"));
            let expected = format!("env: {var}   default: {default}");
            assert!(
                body.contains(&expected),
                "{command} {flag}: {body:?} lacks {expected:?}"
            );
        }
    }
}
