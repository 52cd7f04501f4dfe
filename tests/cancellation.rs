//! Cancellation end to end (issue 14, item 2): the real relay and client binaries on loopback,
//! an MCP host played by the test (raw TCP when it must hang up mid-call), and an MCP server that
//! records when its response stream was closed and every `notifications/cancelled` it got.
//!
//! With our relay both ends announce the extension, and a host leaving (or cancelling) ends the
//! MCP call within a second, freeing the worker; with a control plane that is not ours
//! (`FakeControlPlane`) a `cancel` command is an unknown type and nothing changes.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mcp_tunnel::http_server::{ChunkWriter, Limits, Request, Response, Server};
use serde_json::{Value, json};
use support::{
    Command, Connector, FakeControlPlane, FakeMcp, McpReply, PROMPTLY, Poller, Relay, RelayBuilder,
    Stage, TempDir, Tunnel, TunnelClient, add_tunnel, tool_call,
};

/// What the issue asks: the MCP server sees the cancellation within this.
const CANCEL_SEEN_WITHIN: Duration = Duration::from_secs(1);
/// A call that is not cancelled would hold its worker this long.
const HANG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// An MCP server that records cancellations

#[derive(Default, Debug)]
struct Seen {
    /// JSON-RPC id of each `hang` call, when it arrived.
    calls: Vec<(Value, Instant)>,
    /// JSON-RPC id of each `hang` call whose response stream the peer closed, and when.
    closed: Vec<(Value, Instant)>,
    /// `params.requestId` and `Mcp-Session-Id` of each `notifications/cancelled`.
    cancelled: Vec<(Value, Option<String>, Instant)>,
}

/// Streamable HTTP: `tools/call` of `hang` answers an event stream of comments, one each 50 ms
/// for [`HANG`] (of `chatty`: progress notifications instead), and records when writing to it
/// fails (the client closed it); any other request gets an empty result at once; notifications
/// get 202.
struct Recorder {
    seen: Arc<(Mutex<Seen>, Condvar)>,
    server: Option<Server>,
    url: String,
}

impl Recorder {
    fn start() -> Recorder {
        let seen: Arc<(Mutex<Seen>, Condvar)> = Arc::default();
        let state = Arc::clone(&seen);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server::start(listener, None, Limits::default(), move |req| {
            serve(&state, req)
        })
        .unwrap();
        let url = format!("http://{}/mcp", server.local_addr());
        Recorder {
            seen,
            server: Some(server),
            url,
        }
    }

    /// Waits until `found` finds something in what was seen, at most `timeout`.
    fn wait_for<T>(&self, timeout: Duration, found: impl Fn(&Seen) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let (lock, changed) = &*self.seen;
        let mut seen = lock.lock().unwrap();
        loop {
            if let Some(t) = found(&seen) {
                return Some(t);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            seen = changed.wait_timeout(seen, deadline - now).unwrap().0;
        }
    }

    fn call_arrived(&self, id: &Value) -> Instant {
        self.wait_for(PROMPTLY, |s| {
            s.calls.iter().find(|(i, _)| i == id).map(|(_, at)| *at)
        })
        .unwrap_or_else(|| panic!("the MCP server never got call {id}"))
    }

    fn closed_at(&self, id: &Value, timeout: Duration) -> Option<Instant> {
        self.wait_for(timeout, |s| {
            s.closed.iter().find(|(i, _)| i == id).map(|(_, at)| *at)
        })
    }

    fn cancelled(&self, id: &Value, timeout: Duration) -> Option<(Option<String>, Instant)> {
        self.wait_for(timeout, |s| {
            s.cancelled
                .iter()
                .find(|(i, _, _)| i == id)
                .map(|(_, session, at)| (session.clone(), *at))
        })
    }

    fn cancellations(&self) -> usize {
        self.seen.0.lock().unwrap().cancelled.len()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

fn record(state: &(Mutex<Seen>, Condvar), change: impl FnOnce(&mut Seen)) {
    change(&mut state.0.lock().unwrap());
    state.1.notify_all();
}

fn serve(state: &Arc<(Mutex<Seen>, Condvar)>, req: Request) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&req.body) else {
        return Response::new(405, Vec::new());
    };
    let now = Instant::now();
    if message["method"] == "notifications/cancelled" {
        let session = req.header("Mcp-Session-Id").map(str::to_string);
        let id = message["params"]["requestId"].clone();
        record(state, |s| s.cancelled.push((id, session, now)));
        return Response::new(202, Vec::new());
    }
    let Some(id) = message.get("id").cloned() else {
        return Response::new(202, Vec::new());
    };
    let chatty = message["params"]["name"] == "chatty";
    if message["params"]["name"] != "hang" && !chatty {
        let body = json!({"jsonrpc": "2.0", "id": id, "result": {}});
        return Response::json(200, body.to_string());
    }
    record(state, |s| s.calls.push((id.clone(), now)));
    let state = Arc::clone(state);
    Response::stream(
        200,
        vec![("Content-Type".into(), "text/event-stream".into())],
        Box::new(move |w: &mut ChunkWriter<'_>| {
            let until = Instant::now() + HANG;
            let chunk: &[u8] = if chatty {
                b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\
                  \"params\":{\"progressToken\":1,\"progress\":1}}\n\n"
            } else {
                b": working\n\n"
            };
            while Instant::now() < until {
                if let Err(e) = w.send(chunk) {
                    record(&state, |s| s.closed.push((id.clone(), Instant::now())));
                    return Err(e);
                }
                thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Relay, client and a host that hangs up

type Setup = Stage;

/// A relay, and one client with a single worker and a queue of one (so that while it works it
/// polls only for cancellations) in front of the MCP server at `mcp_url` or stdio `command`.
fn start(mcp_url: &str, command: Option<&str>) -> Setup {
    Stage::builder("cancellation", mcp_url)
        .command(command)
        .client_env("MCP_MAX_CONCURRENT_REQUESTS", "1")
        .client_env("CONTROL_PLANE_MAX_INFLIGHT_REQUESTS", "1")
        .start()
}

/// An MCP host that POSTs `message` on a raw connection; dropping the stream hangs up.
fn post_and_hold(
    relay: &Relay,
    tunnel: &Tunnel,
    message: &Value,
    session: Option<&str>,
) -> TcpStream {
    let authority = relay.base_url().trim_start_matches("http://");
    let mut stream = TcpStream::connect(authority).unwrap();
    let body = message.to_string();
    let session = session
        .map(|s| format!("Mcp-Session-Id: {s}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /v1/mcp/{} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         {session}Content-Length: {}\r\n\r\n",
        tunnel.id,
        tunnel.connector_key,
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    stream
}

fn hang_call(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "hang", "arguments": {}}})
}

/// The next call is served at once: the single worker is free again.
fn assert_worker_free(setup: &Setup, id: i64) {
    let started = Instant::now();
    let answer = Connector::new(&setup.relay, &setup.tunnel).post(&tool_call(id, "quick"));
    assert_eq!(answer.status, 200, "{answer:#?}");
    assert_eq!(answer.json()["id"], id, "{answer:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the next call waited {:?}: the worker was still held",
        started.elapsed()
    );
}

/// The client logged the call as cancelled with nothing posted, and never posted for it.
fn assert_nothing_posted(client: &TunnelClient) {
    assert!(
        client.wait_for_stderr("cancelled by the caller; nothing posted", PROMPTLY),
        "{}",
        client.stderr()
    );
    let log = client.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("cancelled by the caller; nothing posted"))
        .unwrap();
    let request_id = line
        .split_whitespace()
        .find(|w| w.starts_with("req_"))
        .unwrap()
        .trim_end_matches(':');
    assert!(
        !log.lines().any(|l| l.contains(request_id)
                // " 404": a status, never a match inside the hex of a request id
                && (l.contains("response delivered") || l.contains(" 404"))),
        "something was posted for {request_id}:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn a_host_closing_its_request_ends_the_mcp_call_and_frees_the_worker() {
    let mcp = Recorder::start();
    let setup = start(&mcp.url, None);
    let id = json!(7);
    let host = post_and_hold(
        &setup.relay,
        &setup.tunnel,
        &hang_call(7),
        Some("session-1"),
    );
    mcp.call_arrived(&id);
    let hung_up = Instant::now();
    drop(host);

    let closed = mcp
        .closed_at(&id, CANCEL_SEEN_WITHIN + Duration::from_millis(500))
        .expect("the upstream response was never closed");
    assert!(
        closed - hung_up < CANCEL_SEEN_WITHIN,
        "closed after {:?}",
        closed - hung_up
    );
    // A 2025 session (it has a session id) also gets notifications/cancelled with the id.
    let (session, at) = mcp
        .cancelled(&id, CANCEL_SEEN_WITHIN + Duration::from_millis(500))
        .expect("no notifications/cancelled for the call");
    assert_eq!(session.as_deref(), Some("session-1"));
    assert!(
        at - hung_up < CANCEL_SEEN_WITHIN,
        "notified after {:?}",
        at - hung_up
    );

    assert_worker_free(&setup, 8);
    assert_nothing_posted(&setup.client);
}

#[test]
fn a_host_closing_a_stream_of_frequent_notifications_ends_the_mcp_call() {
    // The relay finds the host gone by a failed write, before its idle check ever runs.
    let mcp = Recorder::start();
    let setup = start(&mcp.url, None);
    let id = json!(27);
    let call = json!({"jsonrpc": "2.0", "id": 27, "method": "tools/call",
                      "params": {"name": "chatty", "arguments": {}}});
    let mut host = post_and_hold(&setup.relay, &setup.tunnel, &call, Some("session-2"));
    mcp.call_arrived(&id);
    let mut seen = Vec::new();
    let deadline = Instant::now() + PROMPTLY;
    host.set_read_timeout(Some(PROMPTLY)).unwrap();
    while !String::from_utf8_lossy(&seen).contains("notifications/progress") {
        assert!(
            Instant::now() < deadline,
            "no notification reached the host"
        );
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut host, &mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let hung_up = Instant::now();
    drop(host);
    let closed = mcp
        .closed_at(&id, CANCEL_SEEN_WITHIN + Duration::from_millis(500))
        .expect("the upstream response was never closed");
    assert!(
        closed - hung_up < CANCEL_SEEN_WITHIN,
        "closed after {:?}",
        closed - hung_up
    );
    assert_worker_free(&setup, 28);
}

#[test]
fn a_2026_call_without_a_session_is_cancelled_by_closing_its_response_only() {
    let mcp = Recorder::start();
    let setup = start(&mcp.url, None);
    let id = json!(17);
    let host = post_and_hold(&setup.relay, &setup.tunnel, &hang_call(17), None);
    mcp.call_arrived(&id);
    drop(host);
    assert!(mcp.closed_at(&id, PROMPTLY).is_some(), "never closed");
    assert_worker_free(&setup, 18);
    assert_eq!(
        mcp.cancellations(),
        0,
        "a stateless server gets no notifications/cancelled"
    );
}

#[test]
fn notifications_cancelled_from_the_host_ends_the_request_in_flight() {
    let mcp = Recorder::start();
    let setup = start(&mcp.url, None);
    let host = Connector::new(&setup.relay, &setup.tunnel)
        .accepting("application/json")
        .in_session("session-2");
    let waiting = {
        let host = host.clone();
        thread::spawn(move || host.post(&hang_call(9)))
    };
    let id = json!(9);
    mcp.call_arrived(&id);
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": 9, "reason": "user pressed stop"}});
    let sent = Instant::now();
    let ack = host.post(&cancel);
    assert_eq!(ack.status, 202, "{ack:#?}");

    assert!(mcp.closed_at(&id, PROMPTLY).is_some(), "never closed");
    let (session, at) = mcp.cancelled(&id, PROMPTLY).expect("not told");
    assert_eq!(session.as_deref(), Some("session-2"));
    assert!(
        at - sent < CANCEL_SEEN_WITHIN,
        "notified after {:?}",
        at - sent
    );
    // The relay answered the host's notification itself: the server hears of it once.
    assert_worker_free(&setup, 10);
    assert_eq!(mcp.cancellations(), 1);

    let answer = waiting.join().unwrap();
    assert_eq!(
        answer.error_code().as_deref(),
        Some("request_cancelled"),
        "{answer:#?}"
    );
    assert_eq!(answer.json()["id"], 9);
    assert_nothing_posted(&setup.client);
}

#[test]
fn a_queued_command_is_withdrawn_when_its_host_leaves() {
    let dir = TempDir::new("cancellation-queued");
    let tunnel = add_tunnel(&dir.tunnels_file(), "queued");
    let relay = RelayBuilder::new(&dir.tunnels_file()).start();
    let poller = Poller::new(&relay, &tunnel.id, &tunnel.runtime_key, "test-poller");
    poller.register_as_connected();

    let host = post_and_hold(&relay, &tunnel, &hang_call(11), None);
    relay.wait_until_queued(&tunnel.id, 1);
    drop(host);
    let deadline = Instant::now() + PROMPTLY;
    while !relay
        .output()
        .contains("caller closed its request: Withdrawn")
    {
        assert!(
            Instant::now() < deadline,
            "never withdrawn:\n{}",
            relay.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        poller.take_commands(25, 300).is_empty(),
        "a withdrawn command was delivered"
    );
}

#[test]
fn a_stdio_call_gets_notifications_cancelled_with_the_id_the_child_knows() {
    let server = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stdio_edge_server.py"
    );
    let setup = start(
        "http://127.0.0.1:9/unused",
        Some(&format!("python3 {server}")),
    );
    let call = json!({"jsonrpc": "2.0", "id": 21, "method": "tools/call",
                      "params": {"name": "slow", "arguments": {"ms": HANG.as_millis() as u64}}});
    let host = post_and_hold(&setup.relay, &setup.tunnel, &call, None);
    assert!(
        setup
            .client
            .wait_for_stderr("edge-server: request tools/call slow id=", PROMPTLY),
        "{}",
        setup.client.stderr()
    );
    let log = setup.client.stderr();
    let child_id = log
        .split("edge-server: request tools/call slow id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let hung_up = Instant::now();
    drop(host);

    let expected = format!("notification notifications/cancelled requestId={child_id}");
    assert!(
        setup.client.wait_for_stderr(&expected, PROMPTLY),
        "the child was not told with its own id {child_id}:\n{}",
        setup.client.stderr()
    );
    assert!(hung_up.elapsed() < PROMPTLY);
    let started = Instant::now();
    let answer = Connector::new(&setup.relay, &setup.tunnel)
        .post(&json!({"jsonrpc": "2.0", "id": 22, "method": "ping"}));
    assert_eq!(answer.status, 200, "{answer:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the worker was still held"
    );
    assert_nothing_posted(&setup.client);
}

#[test]
fn a_control_plane_without_the_extension_sees_the_contract_unchanged() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "slow",
        McpReply::result(json!({"content": []})).after(Duration::from_millis(800)),
    );
    let client = support::ClientBuilder::for_fakes(&control_plane, mcp.url()).spawn();

    let call = Command::jsonrpc("req-slow", tool_call(31, "slow"));
    control_plane.push(call.clone());
    mcp.wait_for_call(&json!(31), PROMPTLY);
    // Not announced by this control plane: an unknown command type, skipped.
    control_plane.push(Command::jsonrpc("req-slow", tool_call(31, "slow")).command_type("cancel"));
    let posted = control_plane.wait_for_terminal_response("req-slow", PROMPTLY);
    assert_eq!(posted.resp_type(), "jsonrpc_response");
    assert!(
        client.wait_for_stderr("cancel", PROMPTLY)
            && client
                .stderr()
                .lines()
                .any(|l| l.contains("req-slow") && l.contains("unknown") && l.contains("cancel")),
        "{}",
        client.stderr()
    );
    assert!(!client.stderr().contains("speaks the mcp-tunnel extension"));
    // The only addition on the wire is the announcement; no poll asked for cancels only.
    let polls: Vec<_> = control_plane
        .requests()
        .into_iter()
        .filter(|r| r.path().ends_with("/poll"))
        .collect();
    assert!(!polls.is_empty());
    for poll in &polls {
        assert_eq!(
            poll.header("X-Mcp-Tunnel-Extensions"),
            Some("cancel,server-requests,streams")
        );
        assert!(!poll.has_header("X-Mcp-Tunnel-Poll-Only"));
    }
}
