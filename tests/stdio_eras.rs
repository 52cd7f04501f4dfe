//! Both MCP eras and the legacy handshake on stdio channels (issue 13): the real `mcp-tunnel run`
//! binary between the loopback fake control plane and `tests/fixtures/stdio_strict_server.py`, a
//! server that enforces the 2025 handshake (nothing before `initialize`, never a second one) and,
//! in `dual` mode, commits each process to one era like FastMCP. The script logs every message to
//! stderr (`strict-server: pid=<pid> …`), which the client forwards; tests read those lines.

mod support;

use serde_json::{Value, json};
use support::{
    ClientBuilder, Command, FakeControlPlane, PROMPTLY, PostedResponse, TunnelClient, notification,
    rpc_request,
};

const STRICT_SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/stdio_strict_server.py"
);

/// A client whose channel `main` runs the strict server in `mode`; returned once the channel's
/// era is known (the probe has run), so no test races it.
fn start_client(control_plane: &FakeControlPlane, mode: &str) -> TunnelClient {
    let client = ClientBuilder::run(control_plane.base_url(), control_plane.api_key(), "unused")
        .without_env("MCP_SERVER_URL")
        .env("MCP_COMMAND", &format!("python3 '{STRICT_SERVER}' {mode}"))
        .spawn();
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

/// A legacy `initialize` (no session yet: the relay mints one on the answer).
fn initialize(request_id: &str, id: Value) -> Command {
    Command::jsonrpc(
        request_id,
        rpc_request(
            id,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": request_id, "version": "1"}}),
        ),
    )
}

/// A message of legacy session `session`.
fn in_session(request_id: &str, session: &str, message: Value) -> Command {
    Command::jsonrpc(request_id, message)
        .header("Mcp-Session-Id", session)
        .header("MCP-Protocol-Version", "2025-06-18")
}

fn tool(id: impl Into<Value>, name: &str, arguments: Value) -> Value {
    rpc_request(
        id,
        "tools/call",
        json!({"name": name, "arguments": arguments}),
    )
}

/// A stateless 2026-07-28 request: the version in `_meta` and in the header, no session.
fn modern(request_id: &str, id: impl Into<Value>, method: &str, mut params: Value) -> Command {
    params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                             "io.modelcontextprotocol/clientCapabilities": {}});
    Command::jsonrpc(request_id, rpc_request(id, method, params))
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", method)
}

/// `result.structuredContent` of a successful tool call (panics with the answer otherwise).
fn report(posted: &PostedResponse) -> Value {
    let message = posted.resp_json().expect("a JSON-RPC answer");
    assert!(message.get("error").is_none(), "{posted:#?}");
    message["result"]["structuredContent"].clone()
}

fn pid_of(posted: &PostedResponse) -> u64 {
    report(posted)["pid"].as_u64().expect("a pid")
}

/// Initializes a legacy session the way a host does; returns the initialize answer.
fn open_session(control_plane: &FakeControlPlane, name: &str, id: Value) -> Value {
    let posted = exchange(
        control_plane,
        initialize(&format!("{name}-init"), id.clone()),
    );
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    let message = posted.resp_json().expect("an answer").clone();
    assert_eq!(message["id"], id, "the caller's id: {posted:#?}");
    assert!(message.get("error").is_none(), "{posted:#?}");
    let initialized = in_session(
        &format!("{name}-initialized"),
        name,
        notification("notifications/initialized"),
    );
    let posted = exchange(control_plane, initialized);
    assert_eq!(posted.resp_type(), "notify_ack", "{posted:#?}");
    assert_eq!(posted.resp_code(), Some(202), "{posted:#?}");
    message
}

#[test]
fn two_legacy_sessions_on_one_strict_child_each_initialize_and_both_work() {
    let control_plane = FakeControlPlane::start();
    let client = start_client(&control_plane, "legacy");

    let first = open_session(&control_plane, "sess-a", json!(1));
    let second = open_session(&control_plane, "sess-b", json!("b-init"));
    assert_eq!(
        first["result"], second["result"],
        "the second session gets the first one's result"
    );
    let a = exchange(
        &control_plane,
        in_session("a-pid", "sess-a", tool(2, "pid", json!({}))),
    );
    let b = exchange(
        &control_plane,
        in_session("b-pid", "sess-b", tool(2, "pid", json!({}))),
    );
    assert_eq!(a.resp_json().expect("answer")["id"], 2);
    assert_eq!(pid_of(&a), pid_of(&b), "one shared child");
    assert_eq!(report(&b)["initializes"], 1, "{b:#?}");

    let stderr = client.stderr();
    assert_eq!(
        stderr.matches("request initialize").count(),
        1,
        "exactly one initialize reached the child:\n{stderr}"
    );
    assert_eq!(
        stderr
            .matches("notification notifications/initialized")
            .count(),
        1,
        "notifications/initialized reached the child once:\n{stderr}"
    );
    assert!(!stderr.contains("already initialized"), "{stderr}");
}

/// Opens a session, makes the child go away with `kill`, and checks that the session's very next
/// call (sent without waiting for the restart) is served by a new child that had the handshake
/// replayed first.
fn session_survives_a_restart(
    kill: impl FnOnce(&FakeControlPlane, &TunnelClient, u64),
) -> TunnelClient {
    let control_plane = FakeControlPlane::start();
    let client = start_client(&control_plane, "legacy");
    open_session(&control_plane, "sess-k", json!(1));
    let before = exchange(
        &control_plane,
        in_session("k-pid-1", "sess-k", tool(2, "pid", json!({}))),
    );
    let first_pid = pid_of(&before);

    kill(&control_plane, &client, first_pid);
    let after = exchange(
        &control_plane,
        in_session("k-pid-2", "sess-k", tool(3, "pid", json!({}))),
    );
    assert_eq!(after.resp_code(), Some(200), "{after:#?}");
    let second_pid = pid_of(&after);
    assert_ne!(first_pid, second_pid, "a new child served the call");
    assert_eq!(report(&after)["initializes"], 1, "{after:#?}");

    // Its stderr comes through its own pipe: wait until the call's line is there too.
    let served = format!("strict-server: pid={second_pid} request tools/call pid");
    assert!(client.wait_for_stderr(&served, PROMPTLY));
    let stderr = client.stderr();
    assert!(
        stderr.contains("replayed the cached initialize"),
        "{stderr}"
    );
    // The new child's first message was the replayed initialize, then initialized.
    let new_child = format!("strict-server: pid={second_pid} ");
    let seen: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.split_once(&new_child).map(|(_, what)| what))
        .collect();
    assert_eq!(
        &seen[..4],
        [
            "started legacy",
            "request initialize",
            "notification notifications/initialized",
            "request tools/call pid"
        ],
        "{stderr}"
    );
    assert!(!stderr.contains("not initialized"), "{stderr}");
    client
}

#[test]
fn a_session_whose_child_crashes_is_served_by_the_restarted_child() {
    session_survives_a_restart(|control_plane, _, _| {
        let crash = exchange(
            control_plane,
            in_session("k-crash", "sess-k", tool(9, "crash", json!({}))),
        );
        assert_eq!(crash.resp_code(), Some(502), "{crash:#?}");
    });
}

#[test]
fn a_session_whose_child_is_killed_is_served_by_the_restarted_child() {
    session_survives_a_restart(|_, client, pid| {
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        // A call written in the very instant the child dies may have been read by it, so it is
        // failed rather than sent twice (MCP: in-flight requests of an exited server are lost).
        // Once the client has seen the exit, the next call waits for the restarted child.
        assert!(client.wait_for_stderr("stdio server exited", PROMPTLY));
    });
}

#[test]
fn a_legacy_only_server_gets_modern_requests_on_its_one_child() {
    let control_plane = FakeControlPlane::start();
    let client = start_client(&control_plane, "legacy");
    assert!(
        client.stderr().contains("speaks 2025 (legacy"),
        "{}",
        client.stderr()
    );
    open_session(&control_plane, "sess-l", json!(1));

    // The server's own refusal comes back, so the host falls back; no second child.
    let posted = exchange(
        &control_plane,
        modern(
            "m-discover",
            "openai-mcp-discover",
            "server/discover",
            json!({}),
        ),
    );
    let message = posted.resp_json().expect("an answer");
    assert_eq!(message["id"], "openai-mcp-discover", "{posted:#?}");
    assert_eq!(message["error"]["code"], -32601, "{posted:#?}");
    assert!(message["error"]["data"].get("tunnel_failure").is_none());
    assert_eq!(
        client
            .stderr()
            .matches("stdio server started (pid ")
            .count(),
        1,
        "{}",
        client.stderr()
    );
}

#[test]
fn modern_and_legacy_hosts_alternating_on_one_dual_era_channel_are_all_served() {
    let control_plane = FakeControlPlane::start();
    let client = start_client(&control_plane, "dual");
    assert!(
        client.stderr().contains("speaks 2026-07-28 (modern)"),
        "{}",
        client.stderr()
    );

    let discover = exchange(
        &control_plane,
        modern("m-1", "openai-mcp-discover", "server/discover", json!({})),
    );
    let message = discover.resp_json().expect("an answer");
    assert_eq!(message["id"], "openai-mcp-discover");
    assert_eq!(
        message["result"]["supportedVersions"],
        json!(["2026-07-28"])
    );

    let init = open_session(&control_plane, "sess-d", json!(1));
    assert_eq!(init["result"]["serverInfo"]["name"], "strict");
    let mut modern_pids = Vec::new();
    let mut legacy_pids = Vec::new();
    for round in 0..3 {
        let m = exchange(
            &control_plane,
            modern(
                &format!("m-call-{round}"),
                round,
                "tools/call",
                json!({"name": "pid"}),
            ),
        );
        assert_eq!(report(&m)["era"], "modern", "{m:#?}");
        modern_pids.push(pid_of(&m));
        let l = exchange(
            &control_plane,
            in_session(
                &format!("l-call-{round}"),
                "sess-d",
                tool(round, "pid", json!({})),
            ),
        );
        assert_eq!(report(&l)["era"], "legacy", "{l:#?}");
        legacy_pids.push(pid_of(&l));
    }
    modern_pids.dedup();
    legacy_pids.dedup();
    assert_eq!(modern_pids.len(), 1, "one modern child: {modern_pids:?}");
    assert_eq!(legacy_pids.len(), 1, "one legacy child: {legacy_pids:?}");
    assert_ne!(modern_pids, legacy_pids, "each era has its own child");
    let stderr = client.stderr();
    assert!(!stderr.contains("connection is serving"), "{stderr}");
    let legacy_child = format!(
        "strict-server: pid={} request server/discover",
        legacy_pids[0]
    );
    assert!(
        !stderr.contains(&legacy_child),
        "the legacy child was probed:\n{stderr}"
    );
}

#[test]
fn the_era_probe_is_not_redone_after_a_restart() {
    let control_plane = FakeControlPlane::start();
    let client = start_client(&control_plane, "dual");
    let before = exchange(
        &control_plane,
        modern("m-pid-1", 1, "tools/call", json!({"name": "pid"})),
    );
    let crash = exchange(
        &control_plane,
        modern("m-crash", 2, "tools/call", json!({"name": "crash"})),
    );
    assert_eq!(crash.resp_code(), Some(502), "{crash:#?}");
    let after = exchange(
        &control_plane,
        modern("m-pid-2", 3, "tools/call", json!({"name": "pid"})),
    );
    assert_ne!(pid_of(&before), pid_of(&after), "the child was restarted");
    assert_eq!(report(&after)["era"], "modern");
    let stderr = client.stderr();
    assert_eq!(
        stderr.matches("request server/discover").count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.matches("stdio server speaks").count(), 1, "{stderr}");
}

#[test]
fn a_dual_era_child_that_answers_the_probe_too_late_is_replaced_before_serving_legacy() {
    // Slower than the probe's 3 s: the child commits to modern when it reads `server/discover`,
    // but its answer arrives after the client has settled on legacy.
    let control_plane = FakeControlPlane::start();
    let client = ClientBuilder::run(control_plane.base_url(), control_plane.api_key(), "unused")
        .without_env("MCP_SERVER_URL")
        .env("MCP_COMMAND", &format!("python3 '{STRICT_SERVER}' dual"))
        .env("STRICT_DISCOVER_DELAY_S", "4")
        .spawn();
    assert!(
        client.wait_for_stderr("is replaced before it serves anything", PROMPTLY * 2),
        "{}",
        client.stderr()
    );
    assert!(
        client.stderr().contains("speaks 2025 (legacy, initialize)"),
        "{}",
        client.stderr()
    );
    let init = open_session(&control_plane, "late", json!(1));
    assert_eq!(init["result"]["serverInfo"]["name"], "strict", "{init}");
    let call = exchange(
        &control_plane,
        in_session("late-call", "late", tool(2, "pid", json!({}))),
    );
    assert_eq!(report(&call)["era"], "legacy", "{call:#?}");
    assert!(
        !client
            .stderr()
            .contains("connection is serving the 2026-07-28"),
        "{}",
        client.stderr()
    );
}
