//! The official client's settings that `mcp-tunnel run` takes unchanged (issue 20, "small things
//! first"), each with the real binary against the fake control plane and fake MCP servers: the
//! organization header, the start-up listener wait, health over a Unix socket, the official flag
//! spellings and raw HTTP logging — and that every other setting of the official `run` is either
//! honoured or refused by name.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::{
    ClientBuilder, Command, FakeControlPlane, FakeMcp, McpReply, PROMPTLY, TUNNEL_ID, TempDir,
    TunnelClient, http_get, http_wire, tool_call,
};

/// Pause between two looks in a bounded polling loop.
const LOOK_AGAIN: Duration = Duration::from_millis(25);

/// Looks at `probe` until it returns something; panics at the deadline with `what`.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PROMPTLY:?}");
        std::thread::sleep(LOOK_AGAIN);
    }
}

/// The base URL a client wrote to its health URL file, once written.
fn health_base(url_file: &Path) -> String {
    eventually("health URL file", || {
        std::fs::read_to_string(url_file)
            .ok()
            .filter(|t| t.ends_with('\n'))
            .map(|t| t.trim().to_string())
    })
}

/// `(status, body)` of `GET {base}{path}` over TCP.
fn get(base: &str, path: &str) -> (u16, String) {
    let answer = http_get(&format!("{base}{path}"), &[]);
    (answer.status, answer.body)
}

/// A loopback port nothing listens on yet (bound, then released), for a server started later.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A `doctor` run's whole output, once it has finished.
fn doctor_output(builder: ClientBuilder) -> (Option<i32>, String) {
    let mut process: TunnelClient = builder.spawn();
    let status = process
        .wait_exit(Duration::from_secs(60))
        .expect("doctor finishes");
    (status.code(), process.stdout() + &process.stderr())
}

// ---------------------------------------------------------------------------------------------
// CONTROL_PLANE_ORGANIZATION_ID

#[test]
fn the_organization_header_goes_on_every_control_plane_request_and_never_to_mcp() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("CONTROL_PLANE_ORGANIZATION_ID", "org-Example123")
        .spawn();

    let command = Command::jsonrpc("req-org", tool_call(1, "echo"));
    control_plane.push(command);
    let posted = control_plane.wait_for_terminal_response("req-org", PROMPTLY);
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    assert_eq!(posted.header("OpenAI-Organization"), Some("org-Example123"));

    let requests = control_plane.requests();
    let tunnel_path = format!("/v1/tunnels/{TUNNEL_ID}");
    for kind in [tunnel_path.clone(), format!("{tunnel_path}/poll")] {
        assert!(
            requests.iter().any(|r| r.path() == kind),
            "no request to {kind}: {requests:#?}"
        );
    }
    for request in &requests {
        assert_eq!(
            request.header_values("OpenAI-Organization"),
            ["org-Example123"],
            "{} {}",
            request.method,
            request.target
        );
    }
    let mcp_requests = mcp.requests();
    assert!(!mcp_requests.is_empty());
    for request in &mcp_requests {
        assert!(
            !request.has_header("OpenAI-Organization"),
            "reached the MCP server: {} {}",
            request.method,
            request.target
        );
    }
}

#[test]
fn the_flag_spelling_wins_over_the_variable_and_doctor_shows_it() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let builder = ClientBuilder::bare()
        .arg("doctor")
        .arg("--control-plane.organization-id=org-FromFlag")
        .env("CONTROL_PLANE_BASE_URL", control_plane.base_url())
        .env("CONTROL_PLANE_TUNNEL_ID", TUNNEL_ID)
        .env("CONTROL_PLANE_API_KEY", control_plane.api_key())
        .env("CONTROL_PLANE_ORGANIZATION_ID", "org-FromEnv")
        .env("MCP_SERVER_URL", mcp.url());
    let (_, output) = doctor_output(builder.env("OPEN_WEB_UI", "true"));
    assert!(output.contains("organization org-FromFlag"), "{output}");
    assert!(output.contains("OPEN_WEB_UI is ignored"), "{output}");
    let metadata = control_plane
        .requests()
        .into_iter()
        .find(|r| r.path() == format!("/v1/tunnels/{TUNNEL_ID}"))
        .expect("doctor reads the tunnel's metadata");
    assert_eq!(metadata.header("OpenAI-Organization"), Some("org-FromFlag"));
}

#[test]
fn a_bad_organization_id_is_a_configuration_error_naming_it() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    for (bad, key) in [
        ("org-a\u{1}b", "CONTROL_PLANE_ORGANIZATION_ID"),
        ("org-é", "CONTROL_PLANE_ORGANIZATION_ID"),
    ] {
        let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
            .env("CONTROL_PLANE_ORGANIZATION_ID", bad)
            .spawn();
        let status = client.wait_exit(PROMPTLY).expect("exits");
        assert_eq!(status.code(), Some(2), "{bad:?}");
        assert!(client.stderr().contains(key), "{}", client.stderr());
    }
    // Given twice, once in the extra headers: refused rather than sent twice.
    let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("CONTROL_PLANE_ORGANIZATION_ID", "org-1")
        .env("CONTROL_PLANE_EXTRA_HEADERS", "openai-organization: org-2")
        .spawn();
    let status = client.wait_exit(PROMPTLY).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(
        client.stderr().contains("CONTROL_PLANE_EXTRA_HEADERS"),
        "{}",
        client.stderr()
    );
    assert_eq!(control_plane.poll_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// MCP_STARTUP_WAIT_TIMEOUT

#[test]
fn the_first_poll_waits_until_the_mcp_listener_accepts_and_readyz_says_why() {
    let control_plane = FakeControlPlane::start();
    let dir = TempDir::new("startup-wait");
    let url_file = dir.path().join("health.url");
    let port = free_port();
    let _client = ClientBuilder::for_fakes(&control_plane, &format!("http://127.0.0.1:{port}/mcp"))
        .env("MCP_STARTUP_WAIT_TIMEOUT", "60s")
        .env("HEALTH_URL_FILE", &url_file.display().to_string())
        .spawn();
    let base = health_base(&url_file);
    let (status, body) = get(&base, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body.trim(),
        "waiting for mcp channel main to accept connections (--mcp.startup-wait-timeout 60s)"
    );
    // Seen waiting (above) with the listener down: nothing polled meanwhile.
    assert_eq!(
        control_plane.poll_count(),
        0,
        "polled before the listener was up"
    );

    // The sidecar comes up: polling starts, and the wait no longer holds readiness.
    let _listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the MCP port");
    control_plane.wait_for_polls(1, PROMPTLY);
    let (_, body) = get(&base, "/readyz?format=json");
    assert!(!body.contains("startup-wait"), "{body}");
}

#[test]
fn when_the_wait_runs_out_polling_starts_anyway_and_readyz_names_the_channel() {
    let control_plane = FakeControlPlane::start();
    let dir = TempDir::new("startup-wait-out");
    let url_file = dir.path().join("health.url");
    let port = free_port();
    let client = ClientBuilder::for_fakes(&control_plane, &format!("http://127.0.0.1:{port}/mcp"))
        .env("MCP_STARTUP_WAIT_TIMEOUT", "300ms")
        .env("HEALTH_URL_FILE", &url_file.display().to_string())
        .spawn();
    control_plane.wait_for_polls(1, PROMPTLY);
    assert!(
        client.wait_for_stderr("did not accept connections within 300ms", PROMPTLY),
        "{}",
        client.stderr()
    );
    let base = health_base(&url_file);
    let (status, body) = get(&base, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with(
            "mcp channel main did not accept connections within 300ms (--mcp.startup-wait-timeout)"
        ),
        "{body}"
    );
}

#[test]
fn without_the_setting_polling_does_not_wait_for_a_missing_listener() {
    let control_plane = FakeControlPlane::start();
    let port = free_port();
    let _client =
        ClientBuilder::for_fakes(&control_plane, &format!("http://127.0.0.1:{port}/mcp")).spawn();
    control_plane.wait_for_polls(1, PROMPTLY);
}

#[test]
fn a_unix_socket_channel_is_waited_for_too() {
    let control_plane = FakeControlPlane::start();
    let dir = TempDir::new("startup-wait-unix");
    let socket = dir.path().join("mcp.sock");
    let url_file = dir.path().join("health.url");
    let client = ClientBuilder::for_fakes(
        &control_plane,
        &format!(
            "channel=main,url=http://mcp.local/mcp,unix-socket={}",
            socket.display()
        ),
    )
    .env("MCP_STARTUP_WAIT_TIMEOUT", "60s")
    .env("HEALTH_URL_FILE", &url_file.display().to_string())
    .spawn();
    let base = health_base(&url_file);
    let (_, body) = get(&base, "/readyz");
    assert!(body.contains("waiting for mcp channel main"), "{body}");
    assert_eq!(control_plane.poll_count(), 0);
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind the socket");
    control_plane.wait_for_polls(1, PROMPTLY);
    assert!(client.wait_for_stderr("mcp channel main accepts connections", PROMPTLY));
}

// ---------------------------------------------------------------------------------------------
// HEALTH_UNIX_SOCKET

/// `(status, body)` of `GET path` over the Unix socket at `socket`.
fn get_unix(socket: &Path, path: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).expect("connect to the health socket");
    stream.set_read_timeout(Some(PROMPTLY)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let reply = http_wire::read_reply_from(&mut stream, &mut Vec::new(), false);
    (reply.status, reply.text())
}

#[test]
fn health_is_served_on_a_private_unix_socket_instead_of_tcp() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let dir = TempDir::new("health-unix");
    let socket = dir.path().join("health.sock");
    let url_file = dir.path().join("health.url");
    // A socket left by a crashed run: nobody accepts on it any more.
    drop(UnixListener::bind(&socket).expect("a stale socket"));
    // The TCP address is taken: binding it would fail the start, so serving proves it is unused.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env(
            "HEALTH_LISTEN_ADDR",
            &taken.local_addr().unwrap().to_string(),
        )
        .env("HEALTH_UNIX_SOCKET", &socket.display().to_string())
        .env("HEALTH_URL_FILE", &url_file.display().to_string())
        .spawn();

    let url = health_base(&url_file);
    assert_eq!(url, mcp_tunnel::ops::health::unix_url(&socket));
    assert!(
        url.starts_with("http+unix://") && !url.contains('='),
        "{url}"
    );
    let mode = std::fs::metadata(&socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert_eq!(get_unix(&socket, "/healthz"), (200, "ok\n".to_string()));
    eventually("ready over the socket", || {
        (get_unix(&socket, "/readyz") == (200, "ready\n".to_string())).then_some(())
    });
    let (status, metrics) = get_unix(&socket, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE"), "{metrics}");

    client.send_sigterm();
    let status = client.wait_exit(PROMPTLY).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", client.stderr());
    assert!(!socket.exists(), "the socket is removed on exit");
    assert!(!url_file.exists(), "the URL file is removed on exit");
}

#[test]
fn a_health_socket_path_that_is_not_a_socket_or_is_in_use_is_refused() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let dir = TempDir::new("health-unix-bad");
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let live = dir.path().join("live.sock");
    let _live = UnixListener::bind(&live).expect("a live socket");
    for (path, why) in [(&file, "is not a socket"), (&live, "is in use")] {
        let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
            .env("HEALTH_UNIX_SOCKET", &path.display().to_string())
            .spawn();
        let status = client.wait_exit(PROMPTLY).expect("exits");
        assert_eq!(status.code(), Some(2), "{}", client.stderr());
        assert!(client.stderr().contains(why), "{}", client.stderr());
        assert!(
            client.stderr().contains("HEALTH_UNIX_SOCKET"),
            "{}",
            client.stderr()
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    assert!(live.exists());
}

// ---------------------------------------------------------------------------------------------
// The official flag spellings: --control-plane.poll-channel, --pid.file

#[test]
fn poll_channels_scope_the_poll_and_disable_the_channels_left_out() {
    let control_plane = FakeControlPlane::start();
    let main = FakeMcp::start();
    let tools = FakeMcp::start();
    let other = FakeMcp::start();
    let _client = ClientBuilder::for_fakes(&control_plane, main.url())
        .arg(&format!("--mcp.server-url={}", main.url()))
        .arg("--mcp.server-url")
        .arg(&format!("channel=tools,url={}", tools.url()))
        .arg("--mcp.server-url")
        .arg(&format!("channel=other,url={}", other.url()))
        .arg("--control-plane.poll-channel=tools")
        .arg("--control-plane.poll-channel")
        .arg("main")
        .env("CONTROL_PLANE_POLL_CHANNELS", "other")
        .spawn();
    control_plane.wait_for_polls(1, PROMPTLY);
    let polls: Vec<_> = control_plane
        .requests()
        .into_iter()
        .filter(|r| r.path().ends_with("/poll"))
        .collect();
    let poll = &polls[0];
    assert!(
        poll.target.ends_with("&channel=main&channel=tools"),
        "flags win over the variable, sorted: {}",
        poll.target
    );
    let info: serde_json::Value =
        serde_json::from_str(poll.header("X-Tunnel-MCP-Server-Info").unwrap()).unwrap();
    let mut declared: Vec<&str> = info["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    declared.sort();
    assert_eq!(declared, ["main", "tools"], "{info}");

    // A listed channel is served; one left out is not (as if it were not configured).
    let served = Command::jsonrpc("req-tools", tool_call(1, "echo")).channel("tools");
    control_plane.push(served);
    let posted = control_plane.wait_for_terminal_response("req-tools", PROMPTLY);
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    let refused = Command::jsonrpc("req-other", tool_call(2, "echo")).channel("other");
    control_plane.push(refused);
    let posted = control_plane.wait_for_terminal_response("req-other", PROMPTLY);
    assert_eq!(posted.resp_code(), Some(400), "{posted:#?}");
    assert!(
        posted.raw_body().contains("unsupported channel"),
        "{posted:#?}"
    );
    assert!(other.calls().is_empty(), "a disabled channel was called");
}

#[test]
fn the_poll_channel_variable_is_a_comma_list_and_mistakes_are_named() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("CONTROL_PLANE_POLL_CHANNELS", " main ")
        .spawn();
    control_plane.wait_for_polls(1, PROMPTLY);
    let poll = control_plane
        .requests()
        .into_iter()
        .find(|r| r.path().ends_with("/poll"))
        .expect("a poll");
    assert!(poll.target.ends_with("&channel=main"), "{}", poll.target);

    let refused = FakeControlPlane::start();
    for (value, why) in [
        ("main,harpoon", "harpoon, which has no MCP server"),
        ("main,main", "twice"),
        ("main,", "empty"),
        ("Main", "not a channel name"),
    ] {
        let mut client = ClientBuilder::for_fakes(&refused, mcp.url())
            .env("CONTROL_PLANE_POLL_CHANNELS", value)
            .spawn();
        let status = client.wait_exit(PROMPTLY).expect("exits");
        assert_eq!(status.code(), Some(2), "{value}: {}", client.stderr());
        let stderr = client.stderr();
        assert!(
            stderr.contains("CONTROL_PLANE_POLL_CHANNELS") && stderr.contains(why),
            "{value}: {stderr}"
        );
    }
    assert_eq!(refused.poll_count(), 0);
}

#[test]
fn pid_file_takes_the_official_spelling_and_the_old_one() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let dir = TempDir::new("pid-spelling");
    for spelling in ["--pid.file", "--pid-file"] {
        let pid_file = dir.path().join(format!("{spelling}.pid"));
        let client = ClientBuilder::for_fakes(&control_plane, mcp.url())
            .arg(&format!("{spelling}={}", pid_file.display()))
            .spawn();
        let written = eventually("the pid file", || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .filter(|t| t.ends_with('\n'))
        });
        assert_eq!(written.trim(), client.pid().to_string(), "{spelling}");
    }
    // Both at once is one option given twice.
    let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .arg("--pid.file=/tmp/a.pid")
        .arg("--pid-file=/tmp/b.pid")
        .spawn();
    let status = client.wait_exit(PROMPTLY).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(
        client.stderr().contains("--pid.file"),
        "{}",
        client.stderr()
    );
}

// ---------------------------------------------------------------------------------------------
// LOG_HTTP_RAW_UNSAFE

#[test]
fn raw_http_logging_shows_the_exchanges_with_every_credential_redacted() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "echo",
        McpReply::result(serde_json::json!({"content": []}))
            .header("Set-Cookie", "sid=cookie-secret-1")
            .header("Mcp-Session-Id", "session-secret-2"),
    );
    let client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("LOG_HTTP_RAW_UNSAFE", "true")
        .env(
            "CONTROL_PLANE_EXTRA_HEADERS",
            "X-Gateway-Key: gateway-secret-3",
        )
        .env("MCP_EXTRA_HEADERS", "X-Mcp-Token: mcp-secret-4")
        .spawn();
    let command = Command::jsonrpc("req-raw", tool_call(1, "echo"))
        .header("Authorization", "Bearer user-secret-5");
    control_plane.push(command.clone());
    let posted = control_plane.wait_for_terminal_response("req-raw", PROMPTLY);
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    let call = mcp
        .calls()
        .into_iter()
        .find(|c| c.rpc_method().as_deref() == Some("tools/call"))
        .expect("the call reached the MCP server");
    assert_eq!(call.request.header("X-Mcp-Token"), Some("mcp-secret-4"));

    // The response POST's exchange is logged once it is answered.
    let posted_line = format!(
        "> POST {}/v1/tunnels/{TUNNEL_ID}/response",
        control_plane.base_url()
    );
    assert!(
        client.wait_for_stderr(&posted_line, PROMPTLY),
        "{}",
        client.stderr()
    );
    assert!(client.wait_for_stderr("< POST", PROMPTLY));
    let log = client.stderr();
    for expected in [
        format!(
            "> GET {}/v1/tunnels/{TUNNEL_ID}/poll?limit=",
            control_plane.base_url()
        ),
        format!("> POST {}", mcp.url()),
        "authorization: <redacted>".to_string(),
        "x-gateway-key: <redacted>".to_string(),
        "x-mcp-token: <redacted>".to_string(),
        "x-tunnel-shard-token: <redacted>".to_string(),
        "set-cookie: <redacted>".to_string(),
        "content-type: application/json".to_string(),
    ] {
        assert!(log.contains(&expected), "missing {expected:?} in:\n{log}");
    }
    for secret in [
        control_plane.api_key(),
        "cookie-secret-1",
        "session-secret-2",
        "gateway-secret-3",
        "mcp-secret-4",
        "user-secret-5",
        command.shard_token(),
    ] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
}

#[test]
fn without_the_setting_no_exchange_is_logged() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let client = ClientBuilder::for_fakes(&control_plane, mcp.url()).spawn();
    control_plane.push(Command::jsonrpc("req-quiet", tool_call(1, "echo")));
    control_plane.wait_for_terminal_response("req-quiet", PROMPTLY);
    // The client logs the delivery at debug after the exchange, so its absence would show by now.
    assert!(
        client.wait_for_stderr("req-quiet", PROMPTLY),
        "{}",
        client.stderr()
    );
    assert!(
        !client.stderr().contains("mcp_tunnel::http_raw"),
        "{}",
        client.stderr()
    );
}

// ---------------------------------------------------------------------------------------------
// Every setting of the official client's `run`: honoured, or refused / ignored by name

/// The official `run`'s flags and variables that `mcp-tunnel run` honours (its `--help` and
/// configuration reference, as of this writing).
const HONOURED: &[(&str, &str)] = &[
    ("--ca-bundle", "CA_BUNDLE"),
    ("--http-proxy", "TUNNEL_CLIENT_HTTP_PROXY"),
    ("--control-plane.base-url", "CONTROL_PLANE_BASE_URL"),
    ("--control-plane.url-path", "CONTROL_PLANE_URL_PATH"),
    ("--control-plane.tunnel-id", "CONTROL_PLANE_TUNNEL_ID"),
    (
        "--control-plane.organization-id",
        "CONTROL_PLANE_ORGANIZATION_ID",
    ),
    ("--control-plane.api-key", "CONTROL_PLANE_API_KEY"),
    ("--control-plane.api-key", "OPENAI_API_KEY"),
    ("--control-plane.client-cert", "CONTROL_PLANE_CLIENT_CERT"),
    ("--control-plane.client-key", "CONTROL_PLANE_CLIENT_KEY"),
    ("--control-plane.http-proxy", "CONTROL_PLANE_HTTP_PROXY"),
    (
        "--control-plane.max-inflight",
        "CONTROL_PLANE_MAX_INFLIGHT_REQUESTS",
    ),
    ("--control-plane.poll-timeout", "CONTROL_PLANE_POLL_TIMEOUT"),
    (
        "--control-plane.poll-deadline-guardrail",
        "CONTROL_PLANE_POLL_DEADLINE_GUARDRAIL",
    ),
    (
        "--control-plane.poll-channel",
        "CONTROL_PLANE_POLL_CHANNELS",
    ),
    (
        "--control-plane.extra-headers",
        "CONTROL_PLANE_EXTRA_HEADERS",
    ),
    ("--log.level", "LOG_LEVEL"),
    ("--log.format", "LOG_FORMAT"),
    ("--log.file", "LOG_FILE"),
    ("--log.http-raw-unsafe", "LOG_HTTP_RAW_UNSAFE"),
    ("--health.listen-addr", "HEALTH_LISTEN_ADDR"),
    ("--health.unix-socket", "HEALTH_UNIX_SOCKET"),
    ("--health.url-file", "HEALTH_URL_FILE"),
    ("--pid.file", "PID_FILE"),
    ("--mcp.server-url", "MCP_SERVER_URL"),
    ("--mcp.command", "MCP_COMMAND"),
    ("--mcp.http-proxy", "MCP_HTTP_PROXY"),
    ("--mcp.client-cert", "MCP_CLIENT_CERT"),
    ("--mcp.client-key", "MCP_CLIENT_KEY"),
    ("--mcp.extra-headers", "MCP_EXTRA_HEADERS"),
    (
        "--mcp.discovery-extra-headers",
        "MCP_DISCOVERY_EXTRA_HEADERS",
    ),
    ("--mcp.startup-wait-timeout", "MCP_STARTUP_WAIT_TIMEOUT"),
    ("--mcp.connection-max-ttl", "MCP_CONNECTION_MAX_TTL"),
    (
        "--mcp.max-concurrent-requests",
        "MCP_MAX_CONCURRENT_REQUESTS",
    ),
    // The YAML config file and profiles (tests/yaml_config.rs).
    ("--config", "TUNNEL_CLIENT_CONFIG"),
    ("--profile", "TUNNEL_CLIENT_PROFILE"),
    ("--profile-dir", "TUNNEL_CLIENT_PROFILE_DIR"),
    ("--profile-file", "TUNNEL_CLIENT_PROFILE_FILE"),
    ("--harpoon.target", "HARPOON_TARGETS"),
    (
        "--harpoon.allow-plaintext-http",
        "HARPOON_ALLOW_PLAINTEXT_HTTP",
    ),
    ("--harpoon.max-response-bytes", "HARPOON_MAX_RESPONSE_BYTES"),
    ("--harpoon.max-redirects", "HARPOON_MAX_REDIRECTS"),
    ("--harpoon.http-proxy", "HARPOON_HTTP_PROXY"),
];

/// Those it refuses when given: running without them would behave differently.
const REFUSED: &[(&str, &str)] = &[
    ("--cloudflared.managed", "CLOUDFLARED_MANAGED"),
    ("--cloudflared.token", "CLOUDFLARED_TUNNEL_TOKEN"),
    ("--embedded-mcp-stub", ""),
    (
        "--mcp.stdio-send-initialized-notification",
        "MCP_STDIO_SEND_INITIALIZED_NOTIFICATION",
    ),
];

/// Those it accepts with a warning: parts it does not ship, which change nothing on the wire.
const IGNORED: &[(&str, &str)] = &[
    (
        "--harpoon.additional-transport",
        "HARPOON_ADDITIONAL_TRANSPORTS",
    ),
    ("--harpoon.capture-payloads", "HARPOON_CAPTURE_PAYLOADS"),
    (
        "--harpoon.hosts-include-suffix",
        "HARPOON_HOSTS_INCLUDE_SUFFIX",
    ),
    (
        "--harpoon.hosts-include-regex",
        "HARPOON_HOSTS_INCLUDE_REGEX",
    ),
    (
        "--harpoon.hosts-include-loopback",
        "HARPOON_HOSTS_INCLUDE_LOOPBACK",
    ),
    (
        "--harpoon.hosts-include-private",
        "HARPOON_HOSTS_INCLUDE_PRIVATE",
    ),
    ("--cloudflared.path", "CLOUDFLARED_PATH"),
    ("--cloudflared.ready-timeout", "CLOUDFLARED_READY_TIMEOUT"),
    ("--allow-remote-ui", "ALLOW_REMOTE_UI"),
    ("--open-web-ui", "OPEN_WEB_UI"),
    ("--admin-ui.log-buffer-events", "ADMIN_UI_LOG_BUFFER_EVENTS"),
    ("--proxy.check-interval", "PROXY_CHECK_INTERVAL"),
    ("--health.show-details", "HEALTH_SHOW_DETAILS"),
];

/// `mcp-tunnel run --help`, split into one block per option.
fn help_blocks() -> Vec<String> {
    let mut process = ClientBuilder::bare().arg("run").arg("--help").spawn();
    process.wait_exit(PROMPTLY).expect("--help exits");
    let help = process.stdout();
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        if line.starts_with("  -") {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

fn block_of<'a>(blocks: &'a [String], flag: &str) -> &'a str {
    blocks
        .iter()
        .find(|b| {
            b.split_whitespace()
                .next()
                .is_some_and(|f| f.split('[').next() == Some(flag))
        })
        .unwrap_or_else(|| panic!("{flag} is not in `run --help`"))
}

#[test]
fn every_official_run_setting_is_in_the_option_table_and_help_says_which_are_not_supported() {
    let blocks = help_blocks();
    for (flag, env) in HONOURED {
        let block = block_of(&blocks, flag);
        assert!(block.contains(env), "{flag}: {env} missing in\n{block}");
        assert!(!block.contains("not supported"), "{block}");
    }
    for (flag, env) in REFUSED.iter().chain(IGNORED) {
        let block = block_of(&blocks, flag);
        assert!(block.contains(env), "{flag}: {env} missing in\n{block}");
        assert!(block.contains("not supported: "), "{block}");
    }
    // The official text format's name is ours too.
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("LOG_FORMAT", "struct-text")
        .spawn();
    control_plane.wait_for_polls(1, PROMPTLY);
}

/// Starts a client with one extra setting and expects a configuration error naming `key`.
fn assert_refused(builder: ClientBuilder, key: &str) {
    let mut client = builder.spawn();
    let status = client
        .wait_exit(PROMPTLY)
        .expect("a refused setting exits at once");
    let stderr = client.stderr();
    assert_eq!(status.code(), Some(2), "{key}: {stderr}");
    assert!(
        stderr.contains(&format!("{key}: is not supported: ")),
        "{key}: {stderr}"
    );
}

#[test]
fn official_settings_we_lack_are_refused_by_name_as_flag_and_as_variable() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let client = || ClientBuilder::for_fakes(&control_plane, mcp.url());
    for (flag, env) in REFUSED {
        let value = "true"; // a switch turned on; for the others, any value at all
        assert_refused(client().arg(&format!("{flag}={value}")), flag);
        if !env.is_empty() {
            assert_refused(client().env(env, value), env);
        }
    }
    // A switch turned off asks for nothing we lack.
    let _off = client()
        .env("MCP_STDIO_SEND_INITIALIZED_NOTIFICATION", "false")
        .arg("--cloudflared.managed=false")
        .spawn();
    control_plane.wait_for_polls(1, PROMPTLY);
}

#[test]
fn official_settings_for_parts_we_do_not_ship_are_accepted_with_a_warning_each() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let mut builder = ClientBuilder::for_fakes(&control_plane, mcp.url());
    for (_, env) in IGNORED {
        builder = builder.env(env, "true");
    }
    builder = builder.arg("--proxy.check-interval=30s");
    let client = builder.spawn();
    control_plane.wait_for_polls(1, PROMPTLY);
    for (flag, env) in IGNORED {
        let key = if *flag == "--proxy.check-interval" {
            flag
        } else {
            env
        };
        assert!(
            client.wait_for_stderr(&format!("{key} is ignored: "), PROMPTLY),
            "{key}: {}",
            client.stderr()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Extra headers in the official form: repeatable flags, a reference per value

#[test]
fn extra_header_values_may_be_references_and_the_flags_repeat() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("CP_HEADER_VALUE", "cp-secret")
        .env("MCP_HEADER_VALUE", "mcp-secret")
        .arg("--control-plane.extra-headers=X-Internal-Auth: env:CP_HEADER_VALUE")
        .arg("--control-plane.extra-headers=X-Debug-Mode: 1")
        .env("MCP_EXTRA_HEADERS", "X-Internal-Auth: env:MCP_HEADER_VALUE")
        .spawn();
    control_plane.push(Command::jsonrpc("req-hdr", tool_call(1, "echo")));
    let posted = control_plane.wait_for_terminal_response("req-hdr", PROMPTLY);
    assert_eq!(posted.header("X-Internal-Auth"), Some("cp-secret"));
    assert_eq!(posted.header("X-Debug-Mode"), Some("1"));
    let call = mcp
        .calls()
        .into_iter()
        .find(|c| c.rpc_method().as_deref() == Some("tools/call"))
        .expect("the call");
    assert_eq!(call.request.header("X-Internal-Auth"), Some("mcp-secret"));
}
