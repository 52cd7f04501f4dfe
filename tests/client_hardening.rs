//! Hardening of `mcp-tunnel run` against what the control plane (or a proxy) may send (issue 11):
//! error messages cut inside a UTF-8 character, `response_timeout`s too large for the clock,
//! commands that outlived their caller, and empty polls answered instantly.

mod support;

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use support::{
    ClientBuilder, Command, FakeControlPlane, FakeMcp, McpReply, PROMPTLY, Scripted, TunnelClient,
    let_time_pass, rpc_request, secs, tool_call,
};

fn start_client(control_plane: &FakeControlPlane, mcp: &FakeMcp) -> TunnelClient {
    ClientBuilder::for_fakes(control_plane, mcp.url()).spawn()
}

/// Serves one `ping` end to end: proves the client is alive and has moved past earlier commands.
fn serve_marker(control_plane: &FakeControlPlane, marker: &str) {
    let ping = Command::jsonrpc(marker, rpc_request(marker, "ping", json!({})));
    control_plane.push(ping);
    let posted = control_plane.wait_for_terminal_response(marker, PROMPTLY);
    assert_eq!(
        posted.resp_code(),
        Some(200),
        "marker {marker}: {posted:#?}"
    );
}

/// RFC 3339 for `SystemTime::now() - ago` (UTC, seconds).
fn rfc3339_ago(ago: Duration) -> String {
    let t = SystemTime::now() - ago;
    let date = httpdate::fmt_http_date(t); // e.g. "Thu, 03 Dec 2026 11:42:58 GMT"
    let parts: Vec<&str> = date.split_whitespace().collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])
    .unwrap()
        + 1;
    format!("{}-{month:02}-{}T{}Z", parts[3], parts[1], parts[4])
}

#[test]
fn an_error_message_cut_inside_a_character_is_logged_and_the_client_keeps_running() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    // 'é' occupies bytes 199 and 200: a byte-index cut at 200 lands inside it.
    let message = format!("{}é and more", "a".repeat(199));
    let body = json!({"error": {"message": message, "type": "server_error", "code": "busy"}});
    control_plane.script_polls(1, Scripted::json(503, &body.to_string()));
    let client = start_client(&control_plane, &mcp);
    let truncated = format!("busy: {}…", "a".repeat(199));
    assert!(
        client.wait_for_stderr(&format!("HTTP 503: {truncated}"), PROMPTLY),
        "503 not logged with the truncated message"
    );
    serve_marker(&control_plane, "after-bad-message");
}

#[test]
fn a_response_timeout_too_large_for_the_clock_means_no_deadline() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool("echo", McpReply::result(json!({"content": []})));
    let _client = start_client(&control_plane, &mcp);
    for (n, timeout) in ["5124095576030431h", "18446744073709551615s"]
        .into_iter()
        .enumerate()
    {
        let id = format!("huge-timeout-{n}");
        control_plane
            .push(Command::jsonrpc(&id, tool_call(n as u64, "echo")).response_timeout(timeout));
        let posted = control_plane.wait_for_terminal_response(&id, PROMPTLY);
        assert_eq!(posted.resp_code(), Some(200), "{timeout}: {posted:#?}");
    }
    serve_marker(&control_plane, "after-huge-timeouts");
}

#[test]
fn a_command_older_than_its_response_timeout_is_not_executed() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool("echo", McpReply::result(json!({"content": []})));
    let client = start_client(&control_plane, &mcp);
    let stale = Command::jsonrpc("stale", tool_call(1, "echo"))
        .response_timeout("5s")
        .created_at(&rfc3339_ago(Duration::from_secs(60)));
    control_plane.push(stale);
    control_plane.wait_until_handed_out("stale", PROMPTLY);
    // A far-future or garbage created_at is ignored: those run as before.
    for (n, created_at) in ["2999-01-01T00:00:00Z", "not a date"]
        .into_iter()
        .enumerate()
    {
        let id = format!("ignored-created-at-{n}");
        let command = Command::jsonrpc(&id, tool_call(10 + n as u64, "echo"))
            .response_timeout("30s")
            .created_at(created_at);
        control_plane.push(command);
        let posted = control_plane.wait_for_terminal_response(&id, PROMPTLY);
        assert_eq!(posted.resp_code(), Some(200), "{created_at}: {posted:#?}");
    }
    serve_marker(&control_plane, "after-stale");
    assert!(control_plane.responses_for("stale").is_empty());
    assert!(
        !mcp.calls().iter().any(|c| c.rpc_id() == Some(json!(1))),
        "the expired command reached the MCP server"
    );
    assert!(client.wait_for_stderr("dropped command stale", PROMPTLY));
}

#[test]
fn a_client_stopped_longer_than_the_deadline_does_not_run_the_expired_command() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool("echo", McpReply::result(json!({"content": []})));
    // A guardrail longer than the stop, so the held poll's answer is still read after SIGCONT.
    let client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("CONTROL_PLANE_POLL_DEADLINE_GUARDRAIL", "30s")
        .spawn();
    serve_marker(&control_plane, "before-stop");
    signal(&client, "-STOP");
    let command = Command::jsonrpc("while-stopped", tool_call(7, "echo"))
        .response_timeout("1s")
        .created_at(&rfc3339_ago(Duration::ZERO));
    control_plane.push(command);
    // Longer than the timeout plus the 2 s clock-skew grace.
    let_time_pass(secs(6.0));
    signal(&client, "-CONT");
    serve_marker(&control_plane, "after-cont");
    assert!(control_plane.responses_for("while-stopped").is_empty());
    assert!(
        !mcp.calls().iter().any(|c| c.rpc_id() == Some(json!(7))),
        "the command expired while stopped reached the MCP server"
    );
}

fn signal(client: &TunnelClient, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &client.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} failed");
}

#[test]
fn empty_polls_answered_instantly_are_paced() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    control_plane.script_polls(5000, Scripted::json(200, r#"{"commands":[]}"#));
    let _client = start_client(&control_plane, &mcp);
    control_plane.wait_for_polls(1, PROMPTLY);
    let before = control_plane.poll_count();
    let window = Instant::now();
    let_time_pass(secs(2.0));
    let polls = control_plane.poll_count() - before;
    let per_second = polls as f64 / window.elapsed().as_secs_f64();
    assert!(per_second <= 25.0, "{per_second:.0} polls/s");
    assert!(polls >= 2, "the client stopped polling ({polls} polls)");
}

#[test]
fn a_non_empty_answer_is_followed_by_the_next_poll_at_once() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool("echo", McpReply::result(json!({"content": []})));
    // One command per poll; each poll that returns one is followed by another.
    let commands: Vec<_> = (0..20)
        .map(|n| Command::jsonrpc(&format!("burst-{n}"), tool_call(n, "echo")).into())
        .collect();
    control_plane.push_batch(commands);
    let _client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("CONTROL_PLANE_MAX_INFLIGHT", "1")
        .spawn();
    control_plane.wait_for_terminal_response("burst-19", PROMPTLY);
    let polls = control_plane.poll_instants();
    let mut gaps: Vec<Duration> = polls.windows(2).take(19).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    // With the 100 ms floor wrongly applied here the median gap would be at least 100 ms.
    assert!(median < Duration::from_millis(90), "median gap {median:?}");
}
