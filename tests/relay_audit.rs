//! The relay's audit log (`--audit-log`, issue 18 item 2): one JSON line per connector request,
//! session termination and OAuth discovery, with the documented fields; never arguments,
//! results, keys, tokens or session ids; the file is 0600 and reopened on SIGHUP.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Connector, FakeMcp, McpReply, PROMPTLY, Poller, RelayBuilder, SseEvent, TempDir, add_tunnel,
    audit_lines, http_get, request_id_of, rpc_request, sample, shard_token_of, tunnel_client,
};

const NAME: &str = "audited";

#[test]
fn audit_lines_name_the_call_and_never_its_arguments_results_keys_or_sessions() {
    let dir = TempDir::new("relay-audit");
    let tunnel = add_tunnel(&dir.tunnels_file(), NAME);
    let idle = add_tunnel(&dir.tunnels_file(), "idle");
    let audit = dir.path().join("audit.log");
    let mut relay = RelayBuilder::new(&dir.tunnels_file())
        .option("--audit-log", audit.to_str().unwrap())
        .start();
    let connector = Connector::new(&relay, &tunnel);
    let poller = Poller::new(&relay, &tunnel.id, &tunnel.runtime_key, "instance-a");
    poller.register_as_connected();

    // 1. A tool call answered by the client.
    let call = {
        let connector = connector.clone();
        thread::spawn(move || {
            connector.post(&rpc_request(
                7,
                "tools/call",
                json!({"name": "lookup", "arguments": {"query": "argument-secret-1"}}),
            ))
        })
    };
    let command = poller.take_one_command();
    let answered = poller.answer_with_result(&command, json!({"text": "result-secret-2"}));
    assert_eq!(answered.status, 200);
    assert_eq!(call.join().unwrap().status, 200);
    // 2. A resource read whose URI carries a token in its query.
    let read = {
        let connector = connector.clone();
        thread::spawn(move || {
            connector.post(&rpc_request(
                8,
                "resources/read",
                json!({"uri": "file:///data/report.txt?token=uri-secret-3"}),
            ))
        })
    };
    let command = poller.take_one_command();
    poller.answer_with_result(&command, json!({"contents": []}));
    assert_eq!(read.join().unwrap().status, 200);
    // 3. A wrong key, refused at admission.
    let refused = connector
        .clone()
        .bearer("mcpt_cn_wrong-key-secret-4")
        .post(&rpc_request(9, "tools/list", json!({})));
    assert_eq!(refused.status, 401);
    // 4. A session termination.
    let ending = {
        let connector = connector.clone().in_session("session-secret-5");
        thread::spawn(move || connector.delete())
    };
    let command = poller.take_one_command();
    let payload = json!({
        "request_id": request_id_of(&command),
        "channel": command["channel"],
        "resp_code": 200,
        "resp_type": "session_termination_response",
    });
    poller.post_response(shard_token_of(&command), &payload);
    assert_eq!(ending.join().unwrap().status, 200);
    // 5. OAuth discovery (no --public-url: 404, still audited).
    let discovery = http_get(
        &format!(
            "{}/.well-known/oauth-protected-resource/v1/mcp/{}",
            relay.base_url(),
            tunnel.id
        ),
        &[],
    );
    assert_eq!(discovery.status, 404);

    let seen = audit_lines(&audit, 5);
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the audit file's mode");
    let tool = &seen[0];
    for field in [
        "ts",
        "event",
        "tunnel",
        "tunnel_id",
        "channel",
        "http_method",
        "rpc_method",
        "name",
        "auth",
        "peer",
        "client_instance",
        "status",
        "outcome",
        "latency_ms",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(tool.get(field).is_some(), "no {field} in {tool}");
    }
    assert_eq!(tool["event"], "connector_request");
    assert_eq!(tool["tunnel"], NAME);
    assert_eq!(tool["tunnel_id"], tunnel.id.as_str());
    assert_eq!(tool["channel"], "main");
    assert_eq!(tool["rpc_method"], "tools/call");
    assert_eq!(tool["name"], "lookup");
    assert_eq!(tool["auth"], "relay-key");
    assert_eq!(tool["status"], 200);
    assert_eq!(tool["outcome"], "2xx");
    assert!(
        tool["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{tool}"
    );
    assert!(tool["latency_ms"].as_f64().unwrap() > 0.0, "{tool}");
    assert!(tool["bytes_in"].as_u64().unwrap() > 0, "{tool}");
    assert!(tool["bytes_out"].as_u64().unwrap() > 0, "{tool}");
    // The instance whose poll took the command served it; a refusal reached no client.
    assert_eq!(tool["client_instance"], "instance-a");
    assert_eq!(seen[1]["rpc_method"], "resources/read");
    assert_eq!(seen[1]["name"], "file:///data/report.txt");
    assert_eq!(seen[2]["status"], 401);
    assert_eq!(seen[2]["outcome"], "invalid_connector_key");
    assert_eq!(seen[2]["client_instance"], Value::Null, "{}", seen[2]);
    assert_eq!(seen[3]["event"], "session_termination");
    assert_eq!(seen[3]["http_method"], "DELETE");
    assert_eq!(seen[3]["client_instance"], "instance-a");
    assert_eq!(seen[4]["event"], "oauth_discovery");
    assert_eq!(seen[4]["client_instance"], Value::Null);
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [
        "argument-secret-1",
        "result-secret-2",
        "uri-secret-3",
        "wrong-key-secret-4",
        "session-secret-5",
        tunnel.runtime_key.as_str(),
        tunnel.connector_key.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log:\n{text}");
    }

    // logrotate: the file is moved away, SIGHUP reopens a new one at the same path.
    let rotated = dir.path().join("audit.log.1");
    std::fs::rename(&audit, &rotated).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &relay.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + PROMPTLY;
    while !audit.exists() {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reopen the audit log"
        );
        thread::sleep(Duration::from_millis(25));
    }
    let ping = thread::spawn(move || connector.post(&rpc_request(10, "ping", json!({}))));
    let command = poller.take_one_command();
    poller.answer_with_result(&command, json!({}));
    assert_eq!(ping.join().unwrap().status, 200);
    // A call on a tunnel no client polls is refused by the hub: it reached no instance.
    let unserved = Connector::new(&relay, &idle).post(&rpc_request(11, "ping", json!({})));
    assert_eq!(unserved.status, 503, "{unserved:#?}");
    let after = audit_lines(&audit, 2);
    assert_eq!(after[0]["rpc_method"], "ping");
    assert_eq!(after[0]["client_instance"], "instance-a");
    assert_eq!(after[1]["tunnel"], "idle");
    assert_eq!(after[1]["outcome"], "tunnel_client_not_connected");
    assert_eq!(after[1]["client_instance"], Value::Null, "{}", after[1]);
    assert_eq!(
        audit_lines(&rotated, 5).len(),
        5,
        "nothing more in the rotated file"
    );
    let log = relay.stop_and_collect_output();
    assert!(!log.contains("argument-secret-1"), "{log}");
}

#[test]
fn a_long_lived_stream_is_audited_when_it_opens_and_when_it_closes() {
    let dir = TempDir::new("relay-audit-stream");
    let tunnel = add_tunnel(&dir.tunnels_file(), NAME);
    let audit = dir.path().join("audit.log");
    let relay = RelayBuilder::new(&dir.tunnels_file())
        .option("--audit-log", audit.to_str().unwrap())
        .option("--metrics-listen", "127.0.0.1:0")
        .start();
    let mcp = FakeMcp::start();
    let update = |seq: u64| {
        json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
               "params": {"uri": "test://r", "seq": seq}})
    };
    mcp.on_get(McpReply::sse(
        (0..3)
            .map(|i| SseEvent::message(Duration::from_millis(50), &update(i)))
            .collect(),
    ));
    let _client = tunnel_client(&relay, &tunnel, mcp.url()).spawn();
    let connector = Connector::new(&relay, &tunnel);
    assert_eq!(connector.wait_until_client_connected().status, 200);
    let before = audit_lines(&audit, 1).len();
    let stream = connector
        .clone()
        .in_session("stream-session-secret-6")
        .accepting("text/event-stream")
        .get();
    assert_eq!(stream.status, 200, "{stream:#?}");
    assert_eq!(stream.events.len(), 3, "{stream:#?}");
    let seen = audit_lines(&audit, before + 2);
    let events: Vec<&Value> = seen[before..].iter().collect();
    assert_eq!(events[0]["event"], "stream_open", "{events:?}");
    assert_eq!(events[1]["event"], "stream_close", "{events:?}");
    assert_eq!(events[1]["http_method"], "GET");
    assert_eq!(events[1]["outcome"], "2xx");
    let served_by = events[1]["client_instance"].as_str().unwrap_or_default();
    assert!(!served_by.is_empty(), "{events:?}");
    assert!(
        events[1]["latency_ms"].as_f64() >= events[0]["latency_ms"].as_f64(),
        "{events:?}"
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("stream-session-secret-6"), "{text}");
    // The stream's metrics: counted once it ended, and no longer in progress.
    let metrics = http_get(&format!("{}/metrics", relay.metrics_url()), &[]).body;
    let series = format!(
        "mcp_tunnel_relay_connector_requests_total{{tunnel=\"{NAME}\",method=\"stream\",outcome=\"2xx\"}}"
    );
    assert_eq!(sample(&metrics, &series), Some(1.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "mcp_tunnel_relay_requests_in_progress{kind=\"stream\"}"
        ),
        Some(0.0),
        "{metrics}"
    );
}
