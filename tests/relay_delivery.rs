//! The relay's delivery guarantees, end to end over loopback with the real relay and client
//! binaries: JSON-RPC bytes cross unchanged, poll answers stay within a byte budget, an unread
//! event stream cannot grow the relay's memory, the callers of a killed client are told so
//! within seconds (while a busy live client is left alone), and a poll answer that could not be
//! written is delivered again.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Connector, FakeMcp, McpReply, PROMPTLY, Poller, Relay, RelayBuilder, SseEvent, TempDir, Tunnel,
    add_tunnel, tunnel_client,
};

const MIB: usize = 1024 * 1024;

fn relay_with(dir: &TempDir, options: &[(&str, &str)]) -> (Relay, Tunnel) {
    let tunnel = add_tunnel(&dir.tunnels_file(), "delivery");
    let mut builder = RelayBuilder::new(&dir.tunnels_file());
    for (flag, value) in options {
        builder = builder.option(flag, value);
    }
    (builder.start(), tunnel)
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// A poll as a tunnel client makes it, reading answers up to the client's own 64 MiB limit
/// (the test helper's reader stops at 10 MiB): status and body.
fn poll_big(relay: &Relay, tunnel: &Tunnel, instance: &str, limit: usize) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PROMPTLY * 3))
        .build()
        .into();
    let url = format!(
        "{}/poll?limit={limit}&timeout_ms=1000",
        relay.tunnel_url(&tunnel.id)
    );
    let response = agent
        .get(&url)
        .header("Authorization", format!("Bearer {}", tunnel.runtime_key))
        .header("X-Tunnel-Client-Instance-Id", instance)
        .call()
        .expect("a poll answer");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .with_config()
        .limit(64 * MIB as u64)
        .read_to_string()
        .expect("the poll answer's body");
    (status, body)
}

/// A `tools/call` whose body is about `size` bytes.
fn big_call(id: usize, size: usize) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"text": "x".repeat(size)}}})
}

#[test]
fn jsonrpc_bytes_cross_the_relay_and_client_unchanged() {
    let dir = TempDir::new("bytes");
    let (relay, tunnel) = relay_with(&dir, &[]);
    let mcp = FakeMcp::start();
    // What the MCP server answers, byte for byte: an id beyond u64, a number spelled 1.50,
    // duplicate keys, unusual whitespace.
    let answer = "{\"result\" : {\"b\":1.50,\"a\":1,\"a\":2},\t\"id\":18446744073709551617,\"jsonrpc\":\"2.0\"}";
    mcp.on_tool("exact", McpReply::raw_json(answer));
    let _client = tunnel_client(&relay, &tunnel, mcp.url()).spawn();
    let connector = Connector::new(&relay, &tunnel).accepting("application/json");
    connector.wait_until_client_connected();

    let request = "{\"params\":{\"name\":\"exact\",\"arguments\":{\"z\":1.50,\"y\":1e2,\"y\":-0.0}},\n  \"method\":\"tools/call\",\"id\":18446744073709551617,\t\"jsonrpc\":\"2.0\"}";
    let got = connector.post_raw(request.as_bytes());
    assert_eq!(got.status, 200, "{got:#?}");
    assert_eq!(
        got.body, answer,
        "the host gets the server's bytes, with its exact id"
    );
    let seen = mcp
        .calls()
        .into_iter()
        .find(|c| c.rpc_method().as_deref() == Some("tools/call"))
        .expect("the MCP server got the call");
    assert_eq!(
        String::from_utf8_lossy(&seen.request.body),
        request,
        "the MCP server gets the host's bytes"
    );
}

#[test]
fn event_stream_messages_cross_the_relay_unchanged() {
    let dir = TempDir::new("sse-bytes");
    let (relay, tunnel) = relay_with(&dir, &[]);
    let mcp = FakeMcp::start();
    let note = "{\"method\":\"notifications/progress\",\"jsonrpc\":\"2.0\",\"params\":{\"progress\":1.50,\"x\":1,\"x\":2}}";
    let last = "{\"result\":{\"n\":1.50},  \"id\":18446744073709551617,\"jsonrpc\":\"2.0\"}";
    mcp.on_tool(
        "exact",
        McpReply::sse(vec![
            SseEvent::raw(Duration::ZERO, note),
            SseEvent::raw(Duration::from_millis(200), last),
        ]),
    );
    let _client = tunnel_client(&relay, &tunnel, mcp.url()).spawn();
    Connector::new(&relay, &tunnel).wait_until_client_connected();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PROMPTLY))
        .build()
        .into();
    let request = "{\"jsonrpc\":\"2.0\",\"id\":18446744073709551617,\"method\":\"tools/call\",\"params\":{\"name\":\"exact\"}}";
    let response = agent
        .post(relay.mcp_url(&tunnel.id))
        .header("Authorization", format!("Bearer {}", tunnel.connector_key))
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .send(request.as_bytes())
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.into_body().read_to_string().unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data, [note, last], "the stream: {text}");
}

#[test]
fn poll_answers_stay_within_the_byte_budget() {
    let dir = TempDir::new("budget");
    let (relay, tunnel) = relay_with(&dir, &[("--connector.timeout", "60s")]);
    let poller = Poller::new(&relay, &tunnel.id, &tunnel.runtime_key, "budget-poller");
    poller.register_as_connected();
    let rss_before = rss_bytes(relay.pid());
    let count = 20;
    let size = 3_900_000;
    let callers: Vec<_> = (0..count)
        .map(|i| {
            let connector = Connector::new(&relay, &tunnel).accepting("application/json");
            let body = big_call(i, size).to_string();
            thread::spawn(move || connector.post_raw(body.as_bytes()))
        })
        .collect();
    relay.wait_until_queued(&tunnel.id, count);
    let rss_queued = rss_bytes(relay.pid());
    let per_request = rss_queued.saturating_sub(rss_before) / count;
    eprintln!(
        "relay RSS: {rss_before} before, {rss_queued} with {count} queued: {per_request} per request"
    );
    assert!(
        per_request < size * 3 / 2,
        "the relay holds {per_request} bytes per queued {size}-byte request"
    );

    let mut delivered = Vec::new();
    let deadline = Instant::now() + PROMPTLY * 3;
    while delivered.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} delivered",
            delivered.len()
        );
        let (status, body) = poll_big(&relay, &tunnel, "budget-poller", 25);
        if status == 204 {
            continue;
        }
        assert_eq!(status, 200);
        assert!(
            body.len() <= 17 * MIB,
            "a poll answer of {} bytes is over the budget",
            body.len()
        );
        let answer: Value = serde_json::from_str(&body).unwrap();
        let commands = answer["commands"].as_array().unwrap().clone();
        assert!(!commands.is_empty());
        for command in commands {
            poller.answer_with_result(&command, json!({}));
            delivered.push(command);
        }
    }
    for caller in callers {
        assert_eq!(caller.join().unwrap().status, 200);
    }
}

#[test]
fn an_unread_event_stream_is_dropped_and_the_client_told_to_stop() {
    let dir = TempDir::new("unread");
    let (relay, tunnel) = relay_with(&dir, &[("--connector.timeout", "60s")]);
    let mcp = FakeMcp::start();
    // 600 notifications of 100 kB: 60 MB the host never reads.
    let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
                      "params": {"level": "info", "data": "n".repeat(100_000)}});
    let mut events: Vec<SseEvent> = (0..600)
        .map(|_| SseEvent::message(Duration::ZERO, &note))
        .collect();
    events.push(SseEvent::result(Duration::ZERO, json!({"content": []})));
    mcp.on_tool("flood", McpReply::sse(events));
    let client = tunnel_client(&relay, &tunnel, mcp.url()).spawn();
    Connector::new(&relay, &tunnel).wait_until_client_connected();
    let rss_before = rss_bytes(relay.pid());

    // A host that opens an event stream and never reads it.
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                      "params": {"name": "flood", "arguments": {}}})
    .to_string();
    let address = relay.base_url().trim_start_matches("http://").to_string();
    let mut host = TcpStream::connect(&address).unwrap();
    write!(
        host,
        "POST /v1/mcp/{} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream, application/json\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        tunnel.id,
        tunnel.connector_key,
        body.len()
    )
    .unwrap();

    let mut peak = 0;
    let deadline = Instant::now() + PROMPTLY * 4;
    let told_to_stop = loop {
        peak = peak.max(rss_bytes(relay.pid()));
        if client.stderr().contains("no longer waits for it (404)") {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(50));
    };
    mcp.wait_until_answered(&json!(7), PROMPTLY * 2);
    peak = peak.max(rss_bytes(relay.pid()));
    let growth = peak.saturating_sub(rss_before);
    eprintln!("relay RSS grew by {growth} bytes");
    assert!(
        told_to_stop,
        "the client was not told to stop:\n{}",
        client.stderr()
    );
    assert!(growth < 30 * MIB, "relay memory grew by {growth} bytes");
    drop(host);
}

#[test]
fn callers_of_a_killed_client_get_an_error_within_seconds() {
    let dir = TempDir::new("killed");
    let (relay, tunnel) = relay_with(&dir, &[("--connector.timeout", "60s")]);
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "slow",
        McpReply::result(json!({})).after(Duration::from_secs(40)),
    );
    let mut doomed = tunnel_client(&relay, &tunnel, mcp.url()).spawn();
    Connector::new(&relay, &tunnel).wait_until_client_connected();
    let callers: Vec<_> = [json!(18446744073709551615u64), json!("call-b")]
        .into_iter()
        .map(|id| {
            let connector = Connector::new(&relay, &tunnel).accepting("application/json");
            let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                              "params": {"name": "slow", "arguments": {}}});
            thread::spawn(move || (id, connector.post(&body)))
        })
        .collect();
    mcp.wait_for_call(&json!("call-b"), PROMPTLY);
    mcp.wait_for_call(&json!(18446744073709551615u64), PROMPTLY);
    // A replacement polls, as after a restart.
    let _replacement = tunnel_client(&relay, &tunnel, mcp.url()).spawn();
    let killed_at = Instant::now();
    doomed.kill_and_collect();
    for caller in callers {
        let (id, answer) = caller.join().unwrap();
        let waited = killed_at.elapsed();
        eprintln!("caller {id} answered {waited:?} after the kill");
        assert!(
            waited < Duration::from_secs(20),
            "the caller waited {waited:?}"
        );
        assert_eq!(answer.status, 502, "{answer:#?}");
        let error = answer.json();
        assert_eq!(error["id"], id);
        assert_eq!(error["error"]["code"], -32603);
        assert_eq!(error["error"]["data"]["code"], "tunnel_client_gone");
    }
}

#[test]
fn a_busy_live_client_keeps_its_commands() {
    let dir = TempDir::new("busy");
    let (relay, tunnel) = relay_with(&dir, &[("--connector.timeout", "60s")]);
    let mcp = FakeMcp::start();
    // Longer than the grace period plus its check: a wrong rule would fail the call.
    mcp.on_tool(
        "slow",
        McpReply::result(json!({"done": true})).after(Duration::from_secs(12)),
    );
    let _client = tunnel_client(&relay, &tunnel, mcp.url())
        .env("MCP_MAX_CONCURRENT_REQUESTS", "1")
        .env("CONTROL_PLANE_MAX_INFLIGHT_REQUESTS", "1")
        .spawn();
    let connector = Connector::new(&relay, &tunnel).accepting("application/json");
    connector.wait_until_client_connected();
    let answer = connector.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                         "params": {"name": "slow", "arguments": {}}}));
    assert_eq!(answer.status, 200, "{answer:#?}");
    assert_eq!(answer.json()["result"]["done"], true);
    assert!(answer.elapsed >= Duration::from_secs(12));
}

#[test]
fn a_poll_answer_that_could_not_be_written_is_delivered_again() {
    let dir = TempDir::new("requeue");
    let (relay, tunnel) = relay_with(&dir, &[("--connector.timeout", "60s")]);
    let poller = Poller::new(&relay, &tunnel.id, &tunnel.runtime_key, "second");
    poller.register_as_connected();
    let count = 4;
    let callers: Vec<_> = (0..count)
        .map(|i| {
            let connector = Connector::new(&relay, &tunnel).accepting("application/json");
            let body = big_call(i, 3_900_000).to_string();
            thread::spawn(move || connector.post_raw(body.as_bytes()))
        })
        .collect();
    relay.wait_until_queued(&tunnel.id, count);

    // A poller that takes the batch, reads a little of the answer and vanishes.
    let address = relay.base_url().trim_start_matches("http://").to_string();
    let mut vanishing = TcpStream::connect(&address).unwrap();
    write!(
        vanishing,
        "GET /v1/tunnels/{}/poll?limit={count}&timeout_ms=1000 HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {}\r\nX-Tunnel-Client-Instance-Id: vanishing\r\n\r\n",
        tunnel.id, tunnel.runtime_key
    )
    .unwrap();
    let mut start = [0u8; 1024];
    vanishing.read_exact(&mut start).unwrap();
    assert!(
        start.starts_with(b"HTTP/1.1 200"),
        "the batch was handed out"
    );
    drop(vanishing); // unread data: the kernel resets the connection

    let mut delivered = 0;
    let deadline = Instant::now() + PROMPTLY;
    while delivered < count {
        assert!(
            Instant::now() < deadline,
            "only {delivered} of {count} commands were delivered again"
        );
        let (status, body) = poll_big(&relay, &tunnel, "second", 25);
        if status == 204 {
            continue;
        }
        let answer: Value = serde_json::from_str(&body).unwrap();
        for command in answer["commands"].as_array().unwrap() {
            poller.answer_with_result(command, json!({}));
            delivered += 1;
        }
    }
    for caller in callers {
        assert_eq!(caller.join().unwrap().status, 200);
    }
}
