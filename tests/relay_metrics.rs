//! The relay's `/metrics` on `--metrics-listen` (issue 18, item 1): each series moves when its
//! event happens, the exposition passes `promtool check metrics`, labels carry tunnel names and
//! never ids, keys or instance ids, and the public listener does not serve it.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    ClientBuilder, Connector, PROMPTLY, Poller, Relay, RelayBuilder, TempDir, Tunnel, add_tunnel,
    assert_valid_exposition, http_get, rpc_request, sample,
};

const NAME: &str = "metrics-one";

fn relay(dir: &TempDir, extra: &[(&str, &str)]) -> Relay {
    let mut builder = RelayBuilder::new(&dir.tunnels_file())
        .option("--metrics-listen", "127.0.0.1:0")
        .option("--connector.timeout", "2s");
    for (flag, value) in extra {
        builder = builder.option(flag, value);
    }
    builder.start()
}

fn scrape(relay: &Relay) -> String {
    let answer = http_get(&format!("{}/metrics", relay.metrics_url()), &[]);
    assert_eq!(answer.status, 200, "{answer:#?}");
    answer.body
}

/// Scrapes until `series` reaches `at_least` (bounded); returns that exposition.
fn wait_for(relay: &Relay, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let text = scrape(relay);
        if sample(&text, series).is_some_and(|v| v >= at_least) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {at_least} within {PROMPTLY:?}:\n{text}"
        );
        thread::sleep(Duration::from_millis(25));
    }
}

fn requests(method: &str, outcome: &str) -> String {
    format!(
        "mcp_tunnel_relay_connector_requests_total{{tunnel=\"{NAME}\",method=\"{method}\",outcome=\"{outcome}\"}}"
    )
}

fn tunnel_series(name: &str) -> String {
    format!("{name}{{tunnel=\"{NAME}\"}}")
}

fn assert_no_secrets(text: &str, tunnel: &Tunnel, also: &[&str]) {
    for needle in [
        tunnel.id.as_str(),
        tunnel.runtime_key.as_str(),
        tunnel.connector_key.as_str(),
        "127.0.0.1",
    ]
    .iter()
    .chain(also)
    {
        assert!(!text.contains(needle), "{needle} in the metrics:\n{text}");
    }
}

#[test]
fn each_connector_metric_moves_and_labels_carry_tunnel_names_only() {
    let dir = TempDir::new("relay-metrics");
    let tunnel = add_tunnel(&dir.tunnels_file(), NAME);
    let relay = relay(&dir, &[("--queue-capacity", "2")]);
    let connector = Connector::new(&relay, &tunnel);
    let poller = Poller::new(&relay, &tunnel.id, &tunnel.runtime_key, "instance-secret-1");

    let first = scrape(&relay);
    assert_valid_exposition(&first);
    assert_eq!(
        sample(&first, &tunnel_series("mcp_tunnel_relay_queue_capacity")),
        Some(2.0)
    );
    assert_eq!(
        sample(&first, &tunnel_series("mcp_tunnel_relay_tunnel_connected")),
        Some(0.0)
    );
    assert_eq!(
        sample(&first, &tunnel_series("mcp_tunnel_relay_client_instances")),
        Some(0.0)
    );
    // The public listener does not serve metrics.
    assert_eq!(
        http_get(&format!("{}/metrics", relay.base_url()), &[]).status,
        404
    );

    // No client: 503 tunnel_client_not_connected, counted by method class.
    let refused = connector.post(&rpc_request(1, "ping", json!({})));
    assert_eq!(refused.status, 503);
    wait_for(
        &relay,
        &requests("ping", "tunnel_client_not_connected"),
        1.0,
    );
    // Wrong keys on both routes.
    assert_eq!(
        connector
            .clone()
            .bearer("mcpt_cn_wrong")
            .post(&rpc_request(2, "ping", json!({})))
            .status,
        401
    );
    let wrong = Poller::new(&relay, &tunnel.id, "mcpt_rt_wrong", "x");
    assert_eq!(wrong.poll(1, 1).status, 401);
    let text = wait_for(
        &relay,
        "mcp_tunnel_relay_auth_failures_total{route=\"control_plane\"}",
        1.0,
    );
    assert_eq!(
        sample(
            &text,
            "mcp_tunnel_relay_auth_failures_total{route=\"connector\"}"
        ),
        Some(1.0)
    );
    // Refused at admission, before the body is read: the method is unknown.
    assert_eq!(
        sample(&text, &requests("unknown", "invalid_connector_key")),
        Some(1.0)
    );

    // A client connects and holds a long-poll.
    poller.register_as_connected();
    let held = {
        let poller = poller.clone();
        thread::spawn(move || poller.take_one_command())
    };
    let text = wait_for(
        &relay,
        &tunnel_series("mcp_tunnel_relay_long_polls_held"),
        1.0,
    );
    assert_eq!(
        sample(
            &text,
            "mcp_tunnel_relay_requests_in_progress{kind=\"long_poll\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &tunnel_series("mcp_tunnel_relay_client_instances")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &tunnel_series("mcp_tunnel_relay_tunnel_connected")),
        Some(1.0)
    );

    // A tool call through it: 2xx, latency observed, bytes both ways.
    let call = {
        let connector = connector.clone();
        thread::spawn(move || {
            connector.post(&rpc_request(
                3,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "argument-secret"}}),
            ))
        })
    };
    let command = held.join().expect("the poll thread");
    let in_flight = wait_for(
        &relay,
        "mcp_tunnel_relay_requests_in_progress{kind=\"connector\"}",
        1.0,
    );
    assert_valid_exposition(&in_flight);
    assert_eq!(
        poller
            .answer_with_result(&command, json!({"content": []}))
            .status,
        200
    );
    assert_eq!(call.join().expect("the call thread").status, 200);
    let text = wait_for(&relay, &requests("tools/call", "2xx"), 1.0);
    let histogram = tunnel_series("mcp_tunnel_relay_connector_request_duration_seconds_count");
    assert!(sample(&text, &histogram).unwrap() >= 3.0, "{text}");
    assert!(sample(&text, "mcp_tunnel_relay_body_bytes_total{direction=\"in\"}").unwrap() > 0.0);
    assert!(
        sample(
            &text,
            "mcp_tunnel_relay_body_bytes_total{direction=\"out\"}"
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        sample(
            &text,
            "mcp_tunnel_relay_requests_in_progress{kind=\"connector\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, &tunnel_series("mcp_tunnel_relay_long_polls_held")),
        Some(0.0)
    );

    // Nobody polls now: two requests fill the queue (and time out), the third finds it full.
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let connector = connector.clone();
            thread::spawn(move || connector.post(&rpc_request(10 + i, "tools/list", json!({}))))
        })
        .collect();
    wait_for(&relay, &tunnel_series("mcp_tunnel_relay_queue_depth"), 2.0);
    let full = connector.post(&rpc_request(20, "tools/list", json!({})));
    assert_eq!(
        full.error_code().as_deref(),
        Some("tunnel_queue_full"),
        "{full:#?}"
    );
    for w in waiting {
        assert_eq!(w.join().expect("a waiting call").status, 504);
    }
    let text = wait_for(
        &relay,
        &requests("tools/list", "tunnel_response_timeout"),
        2.0,
    );
    assert_eq!(
        sample(&text, &requests("tools/list", "tunnel_queue_full")),
        Some(1.0)
    );
    assert_valid_exposition(&text);
    assert_no_secrets(
        &text,
        &tunnel,
        &["instance-secret-1", "argument-secret", "echo"],
    );
}

#[test]
fn tls_handshake_failures_are_counted() {
    let dir = TempDir::new("relay-metrics-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    add_tunnel(&dir.tunnels_file(), NAME);
    let process = ClientBuilder::bare()
        .arg("relay")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--tunnels-file")
        .arg(dir.tunnels_file().to_str().unwrap())
        .arg("--tls-cert")
        .arg(cert_path.to_str().unwrap())
        .arg("--tls-key")
        .arg(key_path.to_str().unwrap())
        .arg("--metrics-listen")
        .arg("127.0.0.1:0")
        .spawn();
    const LISTENING: &str = "relay listening on https://";
    const METRICS: &str = "metrics listening on ";
    for marker in [LISTENING, METRICS] {
        assert!(
            process.wait_for_stderr(marker, PROMPTLY),
            "{}",
            process.stderr()
        );
    }
    let word = |marker: &str| {
        let log = process.stderr();
        let rest = &log[log.find(marker).unwrap() + marker.len()..];
        rest.split_whitespace().next().unwrap().to_string()
    };
    let public = word(LISTENING);
    let metrics = word(METRICS);
    let failures = "mcp_tunnel_relay_tls_handshake_failures_total";
    let before = http_get(&format!("{metrics}/metrics"), &[]).body;
    assert_eq!(sample(&before, failures), Some(0.0), "{before}");
    // Plain HTTP on the TLS port: the handshake fails.
    let mut plain = TcpStream::connect(&public).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let text = http_get(&format!("{metrics}/metrics"), &[]).body;
        if sample(&text, failures) == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "not counted:\n{text}");
        thread::sleep(Duration::from_millis(25));
    }
}
