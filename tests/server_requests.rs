//! Server→client requests through the tunnel (issue 14, item 3): the real binaries on loopback
//! and `tests/fixtures/asking_mcp_server.py`, a 2025-era HTTP MCP server whose `ask` tool sends
//! a `roots/list` request mid-call, on the call's own event stream or on the session's
//! standalone stream, and waits up to 5 s for the answer.
//!
//! With our relay and client (both announce `server-requests`) the host sees the request on the
//! stream it holds and its answer POST reaches the server with the server's own id. With a
//! control plane that does not announce it, the client refuses the request (-32601) within 1 s,
//! on either stream, so the tool call does not hang.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::thread;

use serde_json::{Value, json};
use support::{ClientBuilder, Connector, FakeControlPlane, PROMPTLY, RawHost, Stage};

/// What the issue asks: no request waits longer on the tunnel.
const REFUSED_WITHIN_MS: u64 = 1000;

/// The fixture server, killed when dropped.
struct AskingMcp {
    child: Child,
    url: String,
}

impl AskingMcp {
    fn start() -> AskingMcp {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/asking_mcp_server.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        // One line, printed at once; the read ends with the process if it fails to start.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("asking-mcp listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        AskingMcp {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

impl Drop for AskingMcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A [`Stage`] in front of the asking fixture (kept alive with it).
struct Setup {
    _mcp: AskingMcp,
    stage: Stage,
}

impl std::ops::Deref for Setup {
    type Target = Stage;
    fn deref(&self) -> &Stage {
        &self.stage
    }
}

fn start() -> Setup {
    start_with(None)
}

/// [`start`], with the stdio server `command` instead of the HTTP fixture when given.
fn start_with(command: Option<&str>) -> Setup {
    let mcp = AskingMcp::start();
    let stage = Stage::builder("server-requests", &mcp.url)
        .command(command)
        .start();
    Setup { _mcp: mcp, stage }
}

fn initialize(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize",
           "params": {"protocolVersion": "2025-06-18", "capabilities": {"roots": {}},
                      "clientInfo": {"name": "t", "version": "1"}}})
}

fn ask(id: i64, on: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "ask", "arguments": {"on": on}}})
}

/// A session at the fixture, through the relay.
fn session(setup: &Setup) -> String {
    let answer = Connector::new(&setup.relay, &setup.tunnel).post(&initialize(1));
    assert_eq!(answer.status, 200, "{answer:#?}");
    answer
        .header("Mcp-Session-Id")
        .expect("a session")
        .to_string()
}

/// Waits on `host` for the server's `roots/list` and answers it as a host would.
fn answer_roots(setup: &Setup, host: &mut RawHost, session: &str) -> String {
    let asked = asked_roots(setup, host);
    let posted = post_roots(setup, session, &asked, "file:///work");
    assert_eq!(posted.status, 202, "{posted:#?}");
    asked
}

/// The id of the server's `roots/list` request, once `host` sees it.
fn asked_roots(setup: &Setup, host: &mut RawHost) -> String {
    assert!(
        host.wait_for("roots/list", 1, PROMPTLY),
        "{}\n{}",
        host.text(),
        setup.client.stderr()
    );
    let request = host
        .messages()
        .into_iter()
        .find(|m| m["method"] == "roots/list")
        .expect("the request");
    let asked = request["id"].as_str().expect("a string id").to_string();
    assert!(asked.starts_with("mcpt-sr-"), "{request}");
    asked
}

/// A host's answer to `asked`, one root `uri`, posted in `session`.
fn post_roots(setup: &Setup, session: &str, asked: &str, uri: &str) -> support::HttpAnswer {
    let answer = json!({"jsonrpc": "2.0", "id": asked,
                        "result": {"roots": [{"uri": uri, "name": "work"}]}});
    Connector::new(&setup.relay, &setup.tunnel)
        .in_session(session)
        .post(&answer)
}

/// The `ask` tool's report in a call's final message.
fn report(message: &Value) -> &Value {
    &message["result"]["structuredContent"]
}

/// The server got the host's answer under its own id, the roots intact.
fn assert_answered(report: &Value) {
    let answer = &report["answer"];
    assert!(
        answer["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("srv-")),
        "{report:#}"
    );
    assert_eq!(
        answer["result"]["roots"][0]["uri"], "file:///work",
        "{report:#}"
    );
}

#[test]
fn a_request_on_the_calls_stream_reaches_the_host_and_its_answer_the_server() {
    let setup = start();
    let session = session(&setup);
    let mut call = RawHost::post(&setup.relay, &setup.tunnel, &session, &ask(2, "call"));
    answer_roots(&setup, &mut call, &session);
    assert!(
        call.wait_for("structuredContent", 1, PROMPTLY),
        "{}",
        call.text()
    );
    let done = call.messages().into_iter().find(|m| m["id"] == 2).unwrap();
    assert_answered(report(&done));
    assert!(
        setup
            .client
            .stderr()
            .contains("roots/list request; forwarded to the host"),
        "{}",
        setup.client.stderr()
    );
}

#[test]
fn a_request_on_the_standalone_stream_reaches_the_hosts_get_and_its_answer_the_server() {
    let setup = start();
    let session = session(&setup);
    let mut get = RawHost::get(&setup.relay, &setup.tunnel, &session);
    assert!(get.wait_for(": stream open", 1, PROMPTLY), "{}", get.text());
    let call = {
        let connector = Connector::new(&setup.relay, &setup.tunnel).in_session(&session);
        thread::spawn(move || connector.post(&ask(3, "standalone")))
    };
    answer_roots(&setup, &mut get, &session);
    let done = call.join().unwrap();
    assert_eq!(done.status, 200, "{done:#?}");
    assert_answered(report(&done.json()));
}

#[test]
fn with_the_extension_but_no_host_stream_a_standalone_request_is_refused_within_a_second() {
    let setup = start();
    let session = session(&setup);
    let done = Connector::new(&setup.relay, &setup.tunnel)
        .in_session(&session)
        .post(&ask(4, "standalone"));
    assert_eq!(done.status, 200, "{done:#?}");
    assert_refused_promptly(report(&done.json()));
}

/// The server's request got `-32601` within [`REFUSED_WITHIN_MS`].
fn assert_refused_promptly(report: &Value) {
    assert_eq!(report["stream_open"], true, "{report:#}");
    assert_eq!(report["answer"]["error"]["code"], -32601, "{report:#}");
    let waited = report["waited_ms"].as_u64().unwrap();
    assert!(waited < REFUSED_WITHIN_MS, "refused after {waited} ms");
}

/// A control plane that is not ours: the client announces, nobody answers in kind.
fn without_extension(on: &str) -> Value {
    let mcp = AskingMcp::start();
    let cp = FakeControlPlane::start();
    let client = ClientBuilder::for_fakes(&cp, &mcp.url).spawn();
    cp.push(support::Command::jsonrpc("init", initialize(1)));
    let init = cp.wait_for_terminal_response("init", PROMPTLY);
    let session = init
        .resp_header("Mcp-Session-Id")
        .and_then(|v| v.first().map(|s| s.to_string()))
        .unwrap_or_else(|| panic!("{init:#?}\n{}", client.stderr()));
    cp.push(support::Command::jsonrpc("ask", ask(2, on)).header("Mcp-Session-Id", &session));
    let done = cp.wait_for_terminal_response("ask", PROMPTLY);
    assert!(
        !client.stderr().contains("forwarded to the host"),
        "{}",
        client.stderr()
    );
    done.resp_json().cloned().expect("an answer")
}

#[test]
fn without_the_extension_a_request_on_the_calls_stream_is_refused_within_a_second() {
    let done = without_extension("call");
    assert_refused_promptly(report(&done));
}

#[test]
fn without_the_extension_a_request_on_the_standalone_stream_is_refused_within_a_second() {
    let done = without_extension("standalone");
    assert_refused_promptly(report(&done));
}

#[test]
fn an_answer_for_a_request_nobody_forwarded_takes_the_contracts_way() {
    let setup = start();
    let session = session(&setup);
    let stray = json!({"jsonrpc": "2.0", "id": "mcpt-sr-unknown-1", "result": {}});
    let posted = Connector::new(&setup.relay, &setup.tunnel)
        .in_session(&session)
        .post(&stray);
    // An ordinary jsonrpc command: the server acknowledges a response it did not ask for.
    assert_eq!(posted.status, 202, "{posted:#?}");
}

#[test]
fn an_answer_from_another_session_is_not_routed_to_the_asked_session() {
    let setup = start();
    let asked_session = session(&setup);
    let other_session = session(&setup);
    assert_ne!(asked_session, other_session);
    let mut call = RawHost::post(&setup.relay, &setup.tunnel, &asked_session, &ask(2, "call"));
    let asked = asked_roots(&setup, &mut call);
    // Another session's host names the id: the ordinary way, to the server in its own session,
    // which acknowledges a response it did not ask for; the asked call keeps waiting.
    let intruder = post_roots(&setup, &other_session, &asked, "file:///intruder");
    assert_eq!(intruder.status, 202, "{intruder:#?}");
    // The relay sent it as an ordinary command, not as the asked instance's server_response.
    let relay_log = setup.relay.output();
    assert!(relay_log.contains("(response)"), "{relay_log}");
    assert!(!relay_log.contains("(server_response)"), "{relay_log}");
    // The asked session's own answer still reaches the server.
    let posted = post_roots(&setup, &asked_session, &asked, "file:///work");
    assert_eq!(posted.status, 202, "{posted:#?}");
    assert!(
        call.wait_for("structuredContent", 1, PROMPTLY),
        "{}",
        call.text()
    );
    let done = call.messages().into_iter().find(|m| m["id"] == 2).unwrap();
    assert_answered(report(&done));
}

#[test]
fn a_stdio_childs_request_reaches_the_host_and_its_answer_the_child_under_its_own_id() {
    let server = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stdio_edge_server.py"
    );
    let setup = start_with(Some(&format!("python3 {server}")));
    let session = session(&setup);
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                      "params": {"name": "ask", "arguments": {}}});
    let mut host = RawHost::post(&setup.relay, &setup.tunnel, &session, &call);
    assert!(
        host.wait_for("sampling/createMessage", 1, PROMPTLY),
        "{}\n{}",
        host.text(),
        setup.client.stderr()
    );
    let request = host
        .messages()
        .into_iter()
        .find(|m| m["method"] == "sampling/createMessage")
        .unwrap();
    let asked = request["id"].as_str().unwrap().to_string();
    assert!(asked.starts_with("mcpt-sr-"), "{request}");
    let answer = json!({"jsonrpc": "2.0", "id": asked,
                        "result": {"role": "assistant", "model": "m",
                                   "content": {"type": "text", "text": "hello"}}});
    let posted = Connector::new(&setup.relay, &setup.tunnel)
        .in_session(&session)
        .post(&answer);
    assert_eq!(posted.status, 202, "{posted:#?}");
    assert!(
        host.wait_for("structuredContent", 1, PROMPTLY),
        "{}",
        host.text()
    );
    let done = host.messages().into_iter().find(|m| m["id"] == 5).unwrap();
    let report = report(&done);
    assert_eq!(report["answered"], true, "{report:#}");
    // The child got its answer under the id it used.
    assert_eq!(report["reply"]["id"], report["asked"], "{report:#}");
    assert_eq!(report["reply"]["result"]["content"]["text"], "hello");
}
