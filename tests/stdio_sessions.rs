//! Per-session stdio children (`sessions=per-session`, issue 13): the real `mcp-tunnel run`
//! binary between the loopback fake control plane and `tests/fixtures/stdio_strict_server.py`
//! (a strict 2025 server that keeps a `value` per process and logs each message to stderr as
//! `strict-server: pid=<pid> …`). Each session's `initialize` gets a child of its own and a
//! session id minted by the client; DELETE, the idle timeout and the cap are seen at the child
//! processes themselves.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    ClientBuilder, Command, FakeControlPlane, PROMPTLY, PostedResponse, TunnelClient, notification,
    process_gone, rpc_request,
};

const STRICT_SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/stdio_strict_server.py"
);

/// A client whose channel `main` runs the strict server per session, with `extra` settings;
/// returned once the channel's first child has been probed.
fn start_client(control_plane: &FakeControlPlane, extra: &[(&str, &str)]) -> TunnelClient {
    let mut builder =
        ClientBuilder::run(control_plane.base_url(), control_plane.api_key(), "unused")
            .without_env("MCP_SERVER_URL")
            .env(
                "MCP_COMMAND",
                &format!(
                    "channel=main,sessions=per-session,command=python3 '{STRICT_SERVER}' legacy"
                ),
            );
    for (key, value) in extra {
        builder = builder.env(key, value);
    }
    let client = builder.spawn();
    assert!(
        client.wait_for_stderr("[main] stdio server speaks ", PROMPTLY),
        "the era probe never ran:\n{}",
        client.stderr()
    );
    client
}

fn exchange(control_plane: &FakeControlPlane, command: Command) -> PostedResponse {
    let request_id = command.request_id().to_string();
    control_plane.push(command);
    control_plane.wait_for_terminal_response(&request_id, PROMPTLY)
}

fn initialize(request_id: &str) -> Command {
    Command::jsonrpc(
        request_id,
        rpc_request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": request_id, "version": "1"}}),
        ),
    )
}

fn in_session(request_id: &str, session: &str, message: Value) -> Command {
    Command::jsonrpc(request_id, message)
        .header("Mcp-Session-Id", session)
        .header("MCP-Protocol-Version", "2025-06-18")
}

fn tool(id: u64, name: &str, arguments: Value) -> Value {
    rpc_request(
        id,
        "tools/call",
        json!({"name": name, "arguments": arguments}),
    )
}

/// Initializes a session the way a host does; returns the session id the client minted.
fn open_session(control_plane: &FakeControlPlane, name: &str) -> String {
    let posted = exchange(control_plane, initialize(&format!("{name}-init")));
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    let message = posted.resp_json().expect("an answer");
    assert!(message.get("result").is_some(), "{posted:#?}");
    let session = posted
        .resp_header("Mcp-Session-Id")
        .and_then(|v| v.first().map(|s| s.to_string()))
        .unwrap_or_else(|| panic!("no Mcp-Session-Id on the initialize answer: {posted:#?}"));
    assert!(
        session.starts_with("mcpt-") && session.len() == 37,
        "{session}"
    );
    let posted = exchange(
        control_plane,
        in_session(
            &format!("{name}-initialized"),
            &session,
            notification("notifications/initialized"),
        ),
    );
    assert_eq!(posted.resp_code(), Some(202), "{posted:#?}");
    session
}

/// `result.structuredContent` of a successful tool call.
fn report(posted: &PostedResponse) -> Value {
    let message = posted.resp_json().expect("a JSON-RPC answer");
    assert!(message.get("error").is_none(), "{posted:#?}");
    message["result"]["structuredContent"].clone()
}

fn call(
    control_plane: &FakeControlPlane,
    request_id: &str,
    session: &str,
    tool_call: Value,
) -> Value {
    report(&exchange(
        control_plane,
        in_session(request_id, session, tool_call),
    ))
}

fn pid_in(control_plane: &FakeControlPlane, request_id: &str, session: &str) -> u32 {
    call(
        control_plane,
        request_id,
        session,
        tool(7, "pid", json!({})),
    )["pid"]
        .as_u64()
        .expect("a pid") as u32
}

fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_sessions_get_two_children_with_independent_state() {
    let control_plane = FakeControlPlane::start();
    let client = start_client(&control_plane, &[]);
    let a = open_session(&control_plane, "a");
    let b = open_session(&control_plane, "b");
    assert_ne!(a, b);

    call(
        &control_plane,
        "a-set",
        &a,
        tool(2, "set", json!({"value": "apple"})),
    );
    call(
        &control_plane,
        "b-set",
        &b,
        tool(2, "set", json!({"value": "banana"})),
    );
    let got_a = call(&control_plane, "a-get", &a, tool(3, "get", json!({})));
    let got_b = call(&control_plane, "b-get", &b, tool(3, "get", json!({})));
    assert_eq!(got_a["value"], "apple", "{got_a}");
    assert_eq!(got_b["value"], "banana", "{got_b}");
    assert_ne!(got_a["pid"], got_b["pid"], "one child per session");
    assert_eq!(got_a["initializes"], 1);
    assert_eq!(got_b["initializes"], 1);

    let stderr = client.stderr();
    assert!(
        stderr.contains("[main/s1] stdio server started (pid "),
        "{stderr}"
    );
    assert!(
        stderr.contains("[main/s2] stdio server started (pid "),
        "{stderr}"
    );
    assert!(!stderr.contains("already initialized"), "{stderr}");
    // The session ids are never logged whole.
    assert!(!stderr.contains(&a) && !stderr.contains(&b), "{stderr}");
    // The probed first child got no initialize: sessions never reach it.
    let first_pid = stderr
        .lines()
        .find_map(|l| {
            l.split_once("[main] stdio server started (pid ")?
                .1
                .split(')')
                .next()
        })
        .expect("the first child's pid")
        .to_string();
    assert!(
        !stderr.contains(&format!(
            "strict-server: pid={first_pid} request initialize"
        )),
        "{stderr}"
    );
}

#[test]
fn delete_stops_the_sessions_child_and_its_id_is_then_unknown() {
    let control_plane = FakeControlPlane::start();
    let _client = start_client(&control_plane, &[]);
    let a = open_session(&control_plane, "a");
    let b = open_session(&control_plane, "b");
    let pid_a = pid_in(&control_plane, "a-pid", &a);
    let pid_b = pid_in(&control_plane, "b-pid", &b);

    let ended = exchange(&control_plane, Command::session_termination("a-del", &a));
    assert_eq!(
        ended.resp_type(),
        "session_termination_response",
        "{ended:#?}"
    );
    assert_eq!(ended.resp_code(), Some(204), "{ended:#?}");
    assert!(
        eventually(PROMPTLY, || process_gone(pid_a)),
        "the ended session's child still runs"
    );
    assert!(
        !process_gone(pid_b),
        "the other session's child was stopped too"
    );

    let stale = exchange(
        &control_plane,
        in_session("a-after", &a, tool(9, "pid", json!({}))),
    );
    assert_eq!(stale.resp_code(), Some(404), "{stale:#?}");
    let message = stale.resp_json().expect("a JSON-RPC error");
    assert_eq!(message["id"], 9);
    assert_eq!(message["error"]["code"], -32001, "{stale:#?}");
    let again = exchange(&control_plane, Command::session_termination("a-del-2", &a));
    assert_eq!(again.resp_code(), Some(404), "{again:#?}");
    assert_eq!(
        pid_in(&control_plane, "b-pid-2", &b),
        pid_b,
        "b is served as before"
    );
}

#[test]
fn an_idle_sessions_child_is_stopped_and_a_busy_one_is_not() {
    let control_plane = FakeControlPlane::start();
    let client = start_client(
        &control_plane,
        &[("MCP_STDIO_SESSION_IDLE_TIMEOUT", "1500ms")],
    );
    let idle = open_session(&control_plane, "idle");
    let busy = open_session(&control_plane, "busy");
    let idle_pid = pid_in(&control_plane, "idle-pid", &idle);
    let busy_pid = pid_in(&control_plane, "busy-pid", &busy);
    // Keep `busy` in use, with gaps shorter than the timeout, until `idle` has been reaped.
    let started = Instant::now();
    let mut round = 0;
    while !process_gone(idle_pid) {
        assert!(
            started.elapsed() < PROMPTLY,
            "the idle session's child was never stopped:\n{}",
            client.stderr()
        );
        round += 1;
        assert_eq!(
            pid_in(&control_plane, &format!("busy-{round}"), &busy),
            busy_pid
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "reaped too early"
    );
    assert!(!process_gone(busy_pid), "a session in use was reaped");
    assert!(client.wait_for_stderr("idle for", PROMPTLY));
    let stale = exchange(
        &control_plane,
        in_session("idle-after", &idle, tool(4, "pid", json!({}))),
    );
    assert_eq!(stale.resp_code(), Some(404), "{stale:#?}");
}

#[test]
fn past_the_cap_a_new_initialize_is_refused_with_a_clear_error() {
    let control_plane = FakeControlPlane::start();
    let client = start_client(&control_plane, &[("MCP_STDIO_MAX_SESSIONS", "2")]);
    let a = open_session(&control_plane, "a");
    let _b = open_session(&control_plane, "b");

    let refused = exchange(&control_plane, initialize("refused-init"));
    assert_eq!(refused.resp_code(), Some(503), "{refused:#?}");
    assert!(
        refused.resp_header("Mcp-Session-Id").is_none(),
        "{refused:#?}"
    );
    let message = refused.resp_json().expect("a JSON-RPC error");
    assert_eq!(message["id"], 1);
    let text = message["error"]["message"].as_str().expect("a message");
    assert!(text.contains("--mcp.stdio-max-sessions"), "{text}");
    assert!(
        !client.stderr().contains("[main/s3]"),
        "{}",
        client.stderr()
    );

    // Ending a session frees its slot.
    let ended = exchange(&control_plane, Command::session_termination("a-del", &a));
    assert_eq!(ended.resp_code(), Some(204));
    open_session(&control_plane, "c");
    assert!(client.stderr().contains("[main/s3] stdio server started"));
}

#[test]
fn a_killed_per_session_child_is_restarted_and_its_session_goes_on() {
    let control_plane = FakeControlPlane::start();
    let client = start_client(&control_plane, &[]);
    let a = open_session(&control_plane, "a");
    call(
        &control_plane,
        "a-set",
        &a,
        tool(2, "set", json!({"value": "kept?"})),
    );
    let before = pid_in(&control_plane, "a-pid-1", &a);
    let status = std::process::Command::new("kill")
        .args(["-KILL", &before.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    assert!(client.wait_for_stderr("[main/s1] stdio server exited", PROMPTLY));

    let after = call(&control_plane, "a-pid-2", &a, tool(3, "pid", json!({})));
    let after_pid = after["pid"].as_u64().expect("a pid") as u32;
    assert_ne!(after_pid, before, "a new child serves the session");
    assert_eq!(
        after["initializes"], 1,
        "the handshake was replayed: {after}"
    );
    // A process's memory dies with it: the restarted child starts empty.
    assert_eq!(after["value"], Value::Null);
    // The answer can overtake the client's log line on its way through stderr: wait for it.
    assert!(
        client.wait_for_stderr("[main/s1] replayed the cached initialize", PROMPTLY),
        "{}",
        client.stderr()
    );
    let stderr = client.stderr();
    assert!(
        !stderr.contains("[main/s2]"),
        "no new session child: {stderr}"
    );
}

#[test]
fn shutdown_stops_every_per_session_child() {
    let control_plane = FakeControlPlane::start();
    let mut client = start_client(&control_plane, &[]);
    let a = open_session(&control_plane, "a");
    let b = open_session(&control_plane, "b");
    let pids = [
        pid_in(&control_plane, "a-pid", &a),
        pid_in(&control_plane, "b-pid", &b),
    ];
    client.send_sigterm();
    assert!(
        client.wait_exit(PROMPTLY).is_some(),
        "the client did not exit"
    );
    for pid in pids {
        assert!(
            eventually(PROMPTLY, || process_gone(pid)),
            "child {pid} outlived the client"
        );
    }
}

#[test]
fn stdio_session_settings_are_checked_and_named() {
    let cases: [(&str, &str, &str); 4] = [
        (
            "MCP_COMMAND",
            "channel=main,sessions=sometimes,command=srv",
            "MCP_COMMAND",
        ),
        ("MCP_STDIO_SESSIONS", "per-process", "MCP_STDIO_SESSIONS"),
        ("MCP_STDIO_MAX_SESSIONS", "0", "MCP_STDIO_MAX_SESSIONS"),
        (
            "MCP_STDIO_SESSION_IDLE_TIMEOUT",
            "soon",
            "MCP_STDIO_SESSION_IDLE_TIMEOUT",
        ),
    ];
    for (key, value, named) in cases {
        let mut client = ClientBuilder::run("http://127.0.0.1:9", "sk-unused", "unused")
            .without_env("MCP_SERVER_URL")
            .env("MCP_COMMAND", "srv")
            .env(key, value)
            .spawn();
        let status = client.wait_exit(PROMPTLY).expect("exits promptly");
        assert_eq!(status.code(), Some(2), "{key}={value}: {}", client.stderr());
        assert!(
            client.stderr().contains(named),
            "{key}={value}: {}",
            client.stderr()
        );
    }
}
