//! Several relay nodes sharing their queues in one real Redis (`--store redis://…`): a command
//! queued on one node is taken by a poll on another and answered through either; two clients
//! polling two nodes never execute a command twice; while Redis is down connectors get 503
//! `tunnel_transport_unavailable` with `Retry-After` and `/healthz` says so, and everything works
//! again once Redis is back. Every key the relays leave in Redis has a TTL. Long-lived streams
//! (our `streams` extension) opened on one node are served by a client polling another: their
//! messages arrive in order whichever node they were posted on, a host's hang-up ends the
//! upstream, the per-tunnel cap holds across the nodes, and a server request's answer posted on
//! another node reaches the client that asked. The audit line on the connector's node names the
//! instance that took the command on another.
//!
//! A real `redis-server` on a free loopback port (tests/support/redis.rs), installed by the test
//! set-up (tests/setup-deps.sh); without it the tests print "skipped" and pass.

mod support;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Connector, FakeMcp, HttpAnswer, McpReply, PROMPTLY, Poller, RawHost, RedisServer, Relay,
    RelayBuilder, SseEvent, Stub, TempDir, Tunnel, add_tunnel, audit_lines, http_get,
    redis_installed, request_id_of, rpc_request, shard_token_of, tool_call, tunnel_client,
};

macro_rules! require_redis {
    () => {
        if !redis_installed() {
            println!("skipped: redis-server not installed");
            return;
        }
    };
}

/// One Redis, one tunnel, and relay nodes sharing them.
struct Cluster {
    redis: RedisServer,
    tunnel: Tunnel,
    nodes: Vec<Relay>,
    _dir: TempDir,
}

impl Cluster {
    fn start(nodes: usize) -> Cluster {
        Cluster::start_with(nodes, &[])
    }

    /// `nodes` relay nodes with `options` besides `--store`.
    fn start_with(nodes: usize, options: &[(&str, &str)]) -> Cluster {
        let redis = RedisServer::start();
        let dir = TempDir::new("relay-redis");
        let tunnel = add_tunnel(&dir.tunnels_file(), "shared");
        let nodes = (0..nodes)
            .map(|_| {
                let mut builder =
                    RelayBuilder::new(&dir.tunnels_file()).option("--store", &redis.url());
                if !options.iter().any(|(f, _)| *f == "--connector.timeout") {
                    builder = builder.option("--connector.timeout", "8s");
                }
                for (flag, value) in options {
                    builder = builder.option(flag, value);
                }
                builder.start()
            })
            .collect();
        Cluster {
            redis,
            tunnel,
            nodes,
            _dir: dir,
        }
    }

    fn connector(&self, node: usize) -> Connector {
        Connector::new(&self.nodes[node], &self.tunnel)
    }

    fn poller(&self, node: usize, instance: &str) -> Poller {
        let t = &self.tunnel;
        Poller::new(&self.nodes[node], &t.id, &t.runtime_key, instance)
    }

    /// Commands Redis has run so far (`INFO commandstats`, scripts' inner calls included).
    fn redis_calls(&self) -> (u64, u64) {
        let stats = self.redis.command("INFO commandstats");
        let calls = |pick: &dyn Fn(&str) -> bool| -> u64 {
            stats
                .lines()
                .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info"))
                .filter(|l| pick(l))
                .filter_map(|l| {
                    l.split("calls=")
                        .nth(1)?
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum::<u64>()
        };
        // Round trips: scripts and blocking pops (a node sends little else itself).
        let trips = calls(&|l| l.starts_with("cmdstat_eval:") || l.starts_with("cmdstat_blpop:"));
        (calls(&|_| true), trips)
    }

    /// Every key in Redis (`SCAN`, as an operator would), with its remaining TTL in ms (-1:
    /// none).
    fn keys_and_ttls(&self) -> Vec<(String, i64)> {
        let mut keys = Vec::new();
        let mut cursor = "0".to_string();
        for _ in 0..1000 {
            let reply = self.redis.command(&format!("SCAN {cursor} COUNT 1000"));
            // *2, $n, the next cursor, *count, then $n and a key for each.
            let lines: Vec<&str> = reply.lines().collect();
            assert!(lines.len() >= 4 && lines[0] == "*2", "SCAN: {reply}");
            cursor = lines[2].to_string();
            keys.extend(lines[4..].iter().skip(1).step_by(2).map(|k| k.to_string()));
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(cursor, "0", "SCAN did not finish");
        keys.sort();
        keys.dedup();
        // A key deleted between SCAN and PTTL (-2: no such key) is not a key without a TTL.
        keys.into_iter()
            .map(|k| {
                let ttl = self.redis.command(&format!("PTTL {k}"));
                let ttl = ttl.trim().trim_start_matches(':').parse().unwrap_or(-3);
                (k, ttl)
            })
            .filter(|(_, ttl)| *ttl != -2)
            .collect()
    }
}

fn in_background<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Background<T> {
    Background(thread::spawn(work))
}

struct Background<T>(thread::JoinHandle<T>);

impl<T> Background<T> {
    fn join(self) -> T {
        self.0.join().expect("the background request panicked")
    }
}

fn assert_result(answer: &HttpAnswer, id: &Value) {
    assert_eq!(answer.status, 200, "{answer:#?}");
    let message = if answer.is_event_stream() {
        answer.events.last().expect("an event").message.clone()
    } else {
        answer.json()
    };
    assert_eq!(&message["id"], id, "{answer:#?}");
    assert!(message.get("result").is_some(), "{answer:#?}");
}

#[test]
fn a_command_queued_on_one_node_is_taken_and_answered_on_another() {
    require_redis!();
    let cluster = Cluster::start(2);
    let poller = cluster.poller(1, "client-b");
    poller.register_as_connected();
    let connector = cluster.connector(0);
    let call = in_background(move || connector.post(&rpc_request("p-1", "ping", json!({}))));
    let command = poller.take_one_command();
    assert_eq!(command["jsonrpc"]["id"], "p-1");
    let token = command["shard_token"].as_str().unwrap();
    // A wrong shard token is refused on the answering node, not forwarded.
    let mut forged = support::result_payload(&command, json!({}));
    forged["request_id"] = json!(request_id_of(&command));
    assert_eq!(
        poller.post_response("x.forged", &forged).status,
        404,
        "a forged shard token"
    );
    assert!(
        token.contains('.'),
        "the token names the waiting node: {token}"
    );
    let posted = poller.answer_with_result(&command, json!({"from": "b"}));
    assert_eq!(posted.status, 200, "{posted:#?}");
    let answer = call.join();
    assert_result(&answer, &json!("p-1"));
    // A second answer finds nothing pending, whichever node it is posted to.
    let again = cluster
        .poller(0, "client-b")
        .answer_with_result(&command, json!({}));
    assert_eq!(again.status, 404, "{again:#?}");
    assert_eq!(
        poller.answer_with_result(&command, json!({})).status,
        404,
        "answered twice"
    );
    for (key, ttl) in cluster.keys_and_ttls() {
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[test]
fn a_real_client_polling_one_node_serves_connectors_on_the_other() {
    require_redis!();
    let cluster = Cluster::start(2);
    let mcp = FakeMcp::start();
    let _client = tunnel_client(&cluster.nodes[1], &cluster.tunnel, mcp.url()).spawn();
    let connector = cluster.connector(0);
    connector.wait_until_client_connected();
    let answer = connector.post(&tool_call(7, "echo"));
    assert_result(&answer, &json!(7));
}

#[test]
fn the_audit_line_names_the_instance_that_took_the_command_on_another_node() {
    require_redis!();
    let dir = TempDir::new("relay-redis-audit");
    let audit = dir.path().join("audit.log");
    let cluster = Cluster::start_with(2, &[("--audit-log", audit.to_str().unwrap())]);
    // Before any client polls: refused, it reached no instance.
    let unserved = cluster
        .connector(0)
        .post(&rpc_request(0, "ping", json!({})));
    assert_eq!(unserved.status, 503, "{unserved:#?}");
    let poller = cluster.poller(1, "client-b");
    poller.register_as_connected();
    // Taken on node 1 for a connector on node 0, answered on node 1 (forwarded), then on node 0.
    for (n, answered_on) in [(1, 1), (2, 0)] {
        let connector = cluster.connector(0);
        let call = in_background(move || connector.post(&rpc_request(n, "ping", json!({}))));
        let command = poller.take_one_command();
        let answered = cluster
            .poller(answered_on, "client-b")
            .answer_with_result(&command, json!({}));
        assert_eq!(answered.status, 200, "{answered:#?}");
        assert_result(&call.join(), &json!(n));
    }
    let seen = audit_lines(&audit, 3);
    assert_eq!(
        seen[0]["outcome"], "tunnel_client_not_connected",
        "{seen:?}"
    );
    assert_eq!(seen[0]["client_instance"], Value::Null, "{seen:?}");
    for line in &seen[1..] {
        assert_eq!(line["client_instance"], "client-b", "{line}");
    }
}

#[test]
fn two_clients_polling_two_nodes_execute_each_command_exactly_once() {
    require_redis!();
    let cluster = Cluster::start(2);
    let mcp = FakeMcp::start();
    let _a = tunnel_client(&cluster.nodes[0], &cluster.tunnel, mcp.url()).spawn();
    let _b = tunnel_client(&cluster.nodes[1], &cluster.tunnel, mcp.url()).spawn();
    cluster.connector(0).wait_until_client_connected();
    cluster.connector(1).wait_until_client_connected();
    const CALLS: usize = 40;
    let calls_before = cluster.redis_calls();
    let callers: Vec<_> = (0..4)
        .map(|worker| {
            let connector = cluster.connector(worker % 2);
            in_background(move || {
                (0..CALLS / 4)
                    .map(|i| {
                        let id = json!(format!("c-{worker}-{i}"));
                        (id.clone(), connector.post(&tool_call(id, "count")))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for caller in callers {
        for (id, answer) in caller.join() {
            assert_result(&answer, &id);
        }
    }
    let mut executions: BTreeMap<String, usize> = BTreeMap::new();
    for call in mcp.calls() {
        if call.rpc_method().as_deref() == Some("tools/call") {
            let id = call.rpc_id().unwrap_or_default().to_string();
            *executions.entry(id).or_default() += 1;
        }
    }
    assert_eq!(executions.len(), CALLS, "{executions:?}");
    // For the record (polls also touch Redis while they wait, so this is an upper bound).
    let calls_after = cluster.redis_calls();
    let per_call = |n: u64| n as f64 / CALLS as f64;
    println!(
        "per tunnelled call, polls' included: {:.1} Redis commands, {:.1} scripts and BLPOPs",
        per_call(calls_after.0 - calls_before.0),
        per_call(calls_after.1 - calls_before.1)
    );
    let twice: Vec<_> = executions.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "executed more than once: {twice:?}");
}

#[test]
fn while_redis_is_down_connectors_get_503_and_it_recovers_by_itself() {
    require_redis!();
    let mut cluster = Cluster::start(1);
    let mcp = FakeMcp::start();
    let _client = tunnel_client(&cluster.nodes[0], &cluster.tunnel, mcp.url()).spawn();
    let connector = cluster.connector(0);
    connector.wait_until_client_connected();
    let healthz = format!("{}/healthz", cluster.nodes[0].base_url());
    assert_eq!(http_get(&healthz, &[]).status, 200);

    cluster.redis.stop();
    let answer = connector.post(&tool_call(1, "echo"));
    assert_eq!(answer.status, 503, "{answer:#?}");
    assert_eq!(
        answer.error_code().as_deref(),
        Some("tunnel_transport_unavailable"),
        "{answer:#?}"
    );
    assert_eq!(answer.header("Retry-After"), Some("1"), "{answer:#?}");
    let health = http_get(&healthz, &[]);
    assert_eq!(health.status, 503, "{health:#?}");
    assert!(health.body.contains("redis unavailable"), "{health:#?}");
    let log = cluster.nodes[0].output();
    assert!(
        !log.contains(&cluster.tunnel.runtime_key),
        "a key in the log"
    );

    cluster.redis.restart();
    // The client's next poll marks it connected again (Redis came back empty)...
    let alive = format!("EXISTS mcpt:t:{}:alive", cluster.tunnel.id);
    let deadline = Instant::now() + PROMPTLY;
    while cluster.redis.command(&alive).trim() != ":1" {
        assert!(Instant::now() < deadline, "the client did not poll again");
        thread::sleep(Duration::from_millis(20));
    }
    // ...and the very next call goes through: the relay's stale connections to the old Redis
    // are replaced, not reported as an outage.
    assert_result(&connector.post(&tool_call(2, "echo")), &json!(2));
    assert_eq!(http_get(&healthz, &[]).status, 200);
}

#[test]
fn notifications_posted_on_another_node_reach_the_caller_in_order() {
    require_redis!();
    let cluster = Cluster::start(2);
    let stub = Stub::start();
    let _client = tunnel_client(&cluster.nodes[1], &cluster.tunnel, stub.url()).spawn();
    let connector = cluster.connector(0);
    connector.wait_until_client_connected();
    let call = rpc_request(
        9,
        "tools/call",
        json!({
            "name": "progress",
            "arguments": {"steps": 5, "delay_ms": 20},
            "_meta": {"progressToken": "t-9"},
        }),
    );
    let answer = connector.post(&call);
    assert!(answer.is_event_stream(), "{answer:#?}");
    let messages: Vec<&Value> = answer.events.iter().map(|e| &e.message).collect();
    assert_eq!(messages.len(), 6, "{answer:#?}");
    for (step, message) in messages[..5].iter().enumerate() {
        assert_eq!(message["method"], "notifications/progress", "{answer:#?}");
        assert_eq!(
            message["params"]["progress"],
            step as u64 + 1,
            "{answer:#?}"
        );
    }
    assert_eq!(messages[5]["id"], 9, "{answer:#?}");
}

#[test]
fn queue_capacity_holds_per_tunnel_across_the_nodes() {
    require_redis!();
    let cluster = Cluster::start_with(2, &[("--queue-capacity", "2")]);
    let poller = cluster.poller(1, "client-b");
    poller.register_as_connected();
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let connector = cluster.connector(0);
            in_background(move || connector.post(&rpc_request(format!("q-{i}"), "ping", json!({}))))
        })
        .collect();
    cluster.nodes[0].wait_until_queued(&cluster.tunnel.id, 2);
    let refused = cluster
        .connector(1)
        .post(&rpc_request("q-2", "ping", json!({})));
    assert_eq!(refused.status, 503, "{refused:#?}");
    assert_eq!(refused.error_code().as_deref(), Some("tunnel_queue_full"));
    assert_eq!(refused.header("Retry-After"), Some("1"));
    let mut answered = 0;
    let deadline = Instant::now() + PROMPTLY;
    while answered < 2 {
        for command in poller.take_commands(2, 1000) {
            assert_eq!(poller.answer_with_result(&command, json!({})).status, 200);
            answered += 1;
        }
        assert!(
            Instant::now() < deadline,
            "the queued commands were not delivered"
        );
    }
    for call in waiting {
        assert_eq!(call.join().status, 200);
    }
}

#[test]
fn a_killed_node_fails_only_the_requests_it_held() {
    require_redis!();
    let mut cluster = Cluster::start(2);
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "slow",
        McpReply::result(json!({})).after(Duration::from_millis(1500)),
    );
    let _client = tunnel_client(&cluster.nodes[1], &cluster.tunnel, mcp.url()).spawn();
    cluster.connector(0).wait_until_client_connected();
    cluster.connector(1).wait_until_client_connected();
    let on_a = {
        let connector = cluster.connector(0);
        thread::spawn(move || connector.post(&tool_call("on-a", "slow")))
    };
    let on_b = {
        let connector = cluster.connector(1);
        in_background(move || connector.post(&tool_call("on-b", "slow")))
    };
    // Both are running at the MCP server (so both were delivered) when node A dies.
    let deadline = Instant::now() + PROMPTLY;
    while mcp
        .calls()
        .iter()
        .filter(|c| c.rpc_method().as_deref() == Some("tools/call"))
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the calls did not reach the MCP server"
        );
        thread::sleep(Duration::from_millis(20));
    }
    cluster.nodes[0].stop_and_collect_output();
    assert!(
        on_a.join().is_err(),
        "node A's caller saw its connection dropped"
    );
    assert_result(&on_b.join(), &json!("on-b"));
    // Node B keeps serving.
    assert_result(
        &cluster.connector(1).post(&tool_call("after", "echo")),
        &json!("after"),
    );
}

#[test]
fn process_affine_sessions_stay_on_their_instance_across_nodes() {
    require_redis!();
    let cluster = Cluster::start_with(2, &[("--client-timeout", "1s")]);
    let affine = r#"{"version":1,"channels":[{"name":"main","proc_affinity":true}]}"#;
    let x = cluster
        .poller(1, "x")
        .with_header("X-Tunnel-MCP-Server-Info", affine);
    let y = cluster
        .poller(0, "y")
        .with_header("X-Tunnel-MCP-Server-Info", affine);
    x.register_as_connected();
    y.register_as_connected();
    let connector = cluster.connector(0);
    let init = {
        let connector = connector.clone();
        in_background(move || {
            connector.post(&rpc_request(
                1,
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}),
            ))
        })
    };
    let command = x.take_one_command();
    assert_eq!(x.answer_with_result(&command, json!({})).status, 200);
    let init = init.join();
    assert_eq!(init.status, 200, "{init:#?}");
    // A stdio server issues no session id: the relay minted one, on the connector's node.
    let session = init
        .header("Mcp-Session-Id")
        .expect("a session id")
        .to_string();
    assert!(session.starts_with("mcpt-"), "{session}");

    for round in 0..3 {
        let id = json!(format!("s-{round}"));
        let call = {
            let connector = connector.clone().in_session(&session);
            let id = id.clone();
            in_background(move || connector.post(&rpc_request(id, "ping", json!({}))))
        };
        // The other instance, on the connector's own node, never gets the session's calls.
        assert!(y.take_commands(1, 300).is_empty(), "round {round}");
        let command = x.take_one_command();
        assert_eq!(command["jsonrpc"]["id"], id);
        assert_eq!(x.answer_with_result(&command, json!({})).status, 200);
        assert_result(&call.join(), &id);
    }

    // Once "x" has stopped polling for --client-timeout, its session is gone on every node.
    let alive = format!("EXISTS mcpt:t:{}:i:x:alive", cluster.tunnel.id);
    let deadline = Instant::now() + PROMPTLY;
    while cluster.redis.command(&alive).trim() != ":0" {
        assert!(Instant::now() < deadline, "x's alive key did not expire");
        thread::sleep(Duration::from_millis(50));
    }
    y.register_as_connected();
    let gone =
        cluster
            .connector(1)
            .in_session(&session)
            .post(&rpc_request("late", "ping", json!({})));
    assert_eq!(gone.status, 404, "{gone:#?}");
    assert_eq!(gone.error_code().as_deref(), Some("session_not_found"));
    for (key, ttl) in cluster.keys_and_ttls() {
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

/// What one caller of the load test saw.
#[derive(Debug)]
enum Outcome {
    Answered,
    /// A relay error with this status and code (the caller was told).
    Refused(u16, String),
    /// No HTTP answer (its node was killed).
    Dropped,
}

#[test]
fn three_nodes_under_load_survive_a_killed_node_and_a_redis_restart() {
    require_redis!();
    let mut cluster = Cluster::start_with(3, &[("--connector.timeout", "3s")]);
    let mcp = FakeMcp::start();
    let _b = tunnel_client(&cluster.nodes[1], &cluster.tunnel, mcp.url()).spawn();
    let _c = tunnel_client(&cluster.nodes[2], &cluster.tunnel, mcp.url()).spawn();
    for node in 0..3 {
        cluster.connector(node).wait_until_client_connected();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..6)
        .map(|worker| {
            let connector = cluster.connector(worker % 3);
            let stop = std::sync::Arc::clone(&stop);
            thread::spawn(move || {
                let mut seen = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let id = format!("load-{worker}-{i}");
                    i += 1;
                    let call = tool_call(json!(id), "count");
                    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        connector.post(&call)
                    }));
                    let outcome = match answer {
                        Err(_) => Outcome::Dropped,
                        Ok(a) if a.status == 200 => Outcome::Answered,
                        Ok(a) => Outcome::Refused(a.status, a.error_code().unwrap_or_default()),
                    };
                    if matches!(outcome, Outcome::Refused(..)) {
                        // Pacing, as Retry-After asks: not a synchronisation.
                        thread::sleep(Duration::from_millis(50));
                    }
                    let dropped = matches!(outcome, Outcome::Dropped);
                    seen.push((id, outcome));
                    if dropped {
                        break; // its node is gone
                    }
                }
                (worker % 3, seen)
            })
        })
        .collect();
    let answered_at_least = |n: usize| {
        let deadline = Instant::now() + PROMPTLY;
        while mcp.calls().len() < n {
            assert!(Instant::now() < deadline, "the load did not get through");
            thread::sleep(Duration::from_millis(20));
        }
    };
    answered_at_least(30);
    cluster.nodes[0].stop_and_collect_output();
    let after_kill = mcp.calls().len();
    answered_at_least(after_kill + 30);
    cluster.redis.restart();
    let after_restart = mcp.calls().len();
    answered_at_least(after_restart + 30);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let callers: Vec<_> = callers
        .into_iter()
        .map(|c| c.join().expect("a load thread panicked"))
        .collect();

    let mut executions: BTreeMap<String, usize> = BTreeMap::new();
    for call in mcp.calls() {
        if call.rpc_method().as_deref() == Some("tools/call") {
            let id = call.rpc_id().unwrap_or_default();
            *executions
                .entry(id.as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    let twice: Vec<_> = executions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "executed more than once: {twice:?}");
    let mut dropped = 0;
    let mut answered = 0;
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for (node, seen) in callers {
        for (id, outcome) in seen {
            match outcome {
                Outcome::Answered => {
                    answered += 1;
                    assert_eq!(executions.get(&id), Some(&1), "{id} answered, not executed");
                }
                Outcome::Dropped => {
                    assert_eq!(node, 0, "{id}: a caller of a live node was dropped");
                    dropped += 1;
                }
                Outcome::Refused(status, code) => {
                    *refused.entry(format!("{status} {code}")).or_default() += 1;
                    assert!(
                        matches!(
                            (status, code.as_str()),
                            (503, "tunnel_transport_unavailable")
                                | (503, "tunnel_client_not_connected")
                                | (504, "tunnel_response_timeout")
                        ),
                        "{id}: {status} {code}"
                    )
                }
            }
        }
    }
    println!("answered {answered}, dropped {dropped}, refused {refused:?}");
    // Each of node 0's two callers had at most one request in flight when it was killed.
    assert!(dropped <= 2, "{dropped} dropped");
    assert!(answered >= 90, "{answered} answered");
}

#[test]
fn a_cancellation_reaches_the_instance_that_took_the_command_on_another_node() {
    require_redis!();
    let cluster = Cluster::start(2);
    let x = cluster
        .poller(1, "x")
        .with_header("X-Mcp-Tunnel-Extensions", "cancel");
    x.register_as_connected();
    let connector = cluster.connector(0);
    let cancel = |id: &str| {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": id, "reason": "user"}});
        let answer = cluster.connector(0).post(&note);
        assert_eq!(answer.status, 202, "{answer:#?}");
    };

    // Taken by "x" through node 1: the cancellation posted on node 0 becomes a `cancel`
    // command in x's next poll, and the held request ends.
    let held = {
        let connector = connector.clone();
        in_background(move || connector.post(&rpc_request("c-1", "ping", json!({}))))
    };
    let command = x.take_one_command();
    cancel("c-1");
    let told = x.take_one_command();
    assert_eq!(told["command_type"], "cancel", "{told:#}");
    assert_eq!(told["request_id"], command["request_id"]);
    assert_eq!(told["shard_token"], command["shard_token"]);
    let held = held.join();
    assert_eq!(
        held.error_code().as_deref(),
        Some("request_cancelled"),
        "{held:#?}"
    );
    // Its late answer finds nothing pending.
    assert_eq!(x.answer_with_result(&command, json!({})).status, 404);

    // Still queued: withdrawn from Redis, never delivered.
    let held = {
        let connector = connector.clone();
        in_background(move || connector.post(&rpc_request("c-2", "ping", json!({}))))
    };
    cluster.nodes[0].wait_until_queued(&cluster.tunnel.id, 2);
    cancel("c-2");
    let held = held.join();
    assert_eq!(
        held.error_code().as_deref(),
        Some("request_cancelled"),
        "{held:#?}"
    );
    assert!(
        x.take_commands(1, 300).is_empty(),
        "a withdrawn command was delivered"
    );
}

#[test]
fn a_client_killed_while_polling_another_node_is_reported_gone_to_the_caller() {
    require_redis!();
    let cluster = Cluster::start_with(2, &[("--connector.timeout", "40s")]);
    let mcp = FakeMcp::start();
    mcp.on_tool(
        "slow",
        McpReply::result(json!({})).after(Duration::from_secs(30)),
    );
    let mut client = tunnel_client(&cluster.nodes[1], &cluster.tunnel, mcp.url()).spawn();
    let connector = cluster.connector(0);
    connector.wait_until_client_connected();
    let call = {
        let connector = connector.clone();
        in_background(move || connector.post(&tool_call("gone-1", "slow")))
    };
    let deadline = Instant::now() + PROMPTLY;
    while !mcp
        .calls()
        .iter()
        .any(|c| c.rpc_id() == Some(json!("gone-1")))
    {
        assert!(
            Instant::now() < deadline,
            "the call did not reach the MCP server"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let killed = Instant::now();
    client.kill_and_collect();
    let answer = call.join();
    assert_eq!(answer.status, 502, "{answer:#?}");
    assert_eq!(answer.error_code().as_deref(), Some("tunnel_client_gone"));
    // Node 1 saw the client's connections end and told node 0: seconds, not the 40 s timeout.
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "{:?}",
        killed.elapsed()
    );
}

/// A private CA and a certificate for `localhost` it signed, as PEM files in `dir`: (CA, chain,
/// key) paths.
fn localhost_pki(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a key")).expect("CA");
    let key = KeyPair::generate().expect("a key");
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf parameters");
    let leaf = leaf.signed_by(&key, &ca).expect("sign the leaf");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a PEM file");
        path.to_string_lossy().into_owned()
    };
    (
        write("ca.pem", ca.pem()),
        write("redis.pem", leaf.pem()),
        write("redis.key", key.serialize_pem()),
    )
}

#[test]
fn rediss_works_with_the_store_ca_file_and_not_without_it() {
    require_redis!();
    let dir = TempDir::new("rediss");
    let (ca, cert, key) = localhost_pki(dir.path());
    let redis = RedisServer::start_tls(&cert, &key);
    let tunnel = add_tunnel(&dir.tunnels_file(), "tls");
    let relay = RelayBuilder::new(&dir.tunnels_file())
        .option("--store", &redis.url())
        .option("--store.ca-file", &ca)
        .start();
    let poller = Poller::new(&relay, &tunnel.id, &tunnel.runtime_key, "x");
    poller.register_as_connected();
    let connector = Connector::new(&relay, &tunnel);
    let call = in_background(move || connector.post(&rpc_request("tls-1", "ping", json!({}))));
    let command = poller.take_one_command();
    assert_eq!(poller.answer_with_result(&command, json!({})).status, 200);
    assert_result(&call.join(), &json!("tls-1"));
    let healthz = format!("{}/healthz", relay.base_url());
    assert_eq!(http_get(&healthz, &[]).status, 200);

    // Without the CA the relay does not trust this Redis: nothing is queued.
    let untrusting = RelayBuilder::new(&dir.tunnels_file())
        .option("--store", &redis.url())
        .start();
    let answer =
        Connector::new(&untrusting, &tunnel).post(&rpc_request("tls-2", "ping", json!({})));
    assert_eq!(
        answer.error_code().as_deref(),
        Some("tunnel_transport_unavailable")
    );
    assert_eq!(
        http_get(&format!("{}/healthz", untrusting.base_url()), &[]).status,
        503
    );
}

// ---------------------------------------------------------------------------------------------
// Long-lived streams and server requests across nodes

const EXTENSIONS: &str = "X-Mcp-Tunnel-Extensions";

/// A `jsonrpc_notify` payload for `command`: `message` on its stream, or (none) the client's
/// "opened" marker.
fn stream_message(command: &Value, message: Option<Value>) -> Value {
    let mut payload = json!({
        "request_id": request_id_of(command),
        "channel": command["channel"],
        "resp_headers": {},
        "resp_code": 200,
        "resp_type": "jsonrpc_notify",
    });
    if let Some(m) = message {
        payload["resp_json"] = m;
    }
    payload
}

/// The empty `jsonrpc_response` a client posts when the server ended a stream.
fn stream_end(command: &Value) -> Value {
    json!({"request_id": request_id_of(command), "channel": command["channel"],
           "resp_headers": {}, "resp_code": 200, "resp_type": "jsonrpc_response"})
}

fn update(seq: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
           "params": {"uri": "test://r", "seq": seq}})
}

/// Takes a `stream` command and posts its "opened" marker.
fn take_stream(poller: &Poller) -> Value {
    let command = poller.take_one_command();
    assert_eq!(command["command_type"], "stream", "{command:#}");
    let opened = poller.post_response(shard_token_of(&command), &stream_message(&command, None));
    assert_eq!(opened.status, 200, "{opened:#?}");
    command
}

#[test]
fn a_stream_held_on_one_node_gets_its_messages_in_order_whichever_node_they_are_posted_on() {
    require_redis!();
    let cluster = Cluster::start(2);
    let on = |node| {
        cluster
            .poller(node, "s")
            .with_header(EXTENSIONS, "cancel,streams")
    };
    let (via_0, via_1) = (on(0), on(1));
    via_1.register_as_connected();
    let mut host = RawHost::get(&cluster.nodes[0], &cluster.tunnel, "sess-order");
    let command = take_stream(&via_1);
    assert_eq!(command["stream"], "get", "{command:#}");
    let token = shard_token_of(&command);
    assert!(
        host.wait_for(": stream open", 1, PROMPTLY),
        "{}",
        host.text()
    );
    for seq in 0..20 {
        let poster = if seq % 2 == 0 { &via_0 } else { &via_1 };
        let posted = poster.post_response(token, &stream_message(&command, Some(update(seq))));
        assert_eq!(posted.status, 200, "{posted:#?}");
    }
    assert!(host.wait_for("\"seq\":19", 1, PROMPTLY), "{}", host.text());
    let seqs: Vec<Value> = host
        .messages()
        .iter()
        .map(|m| m["params"]["seq"].clone())
        .collect();
    assert_eq!(seqs, (0..20).map(Value::from).collect::<Vec<_>>());
    // Its end, posted on the other node, ends the host's stream; later posts find nothing.
    assert_eq!(
        via_1.post_response(token, &stream_end(&command)).status,
        200
    );
    assert!(host.wait_for("0\r\n\r\n", 1, PROMPTLY), "{}", host.text());
    let late = via_0.post_response(token, &stream_message(&command, Some(update(20))));
    assert_eq!(late.status, 404, "{late:#?}");
}

#[test]
fn a_real_clients_get_stream_and_listen_opened_on_another_node_arrive_in_order() {
    require_redis!();
    let cluster = Cluster::start(2);
    let mcp = FakeMcp::start();
    let every = Duration::from_millis(50);
    mcp.on_get(McpReply::sse(
        (0..5)
            .map(|i| SseEvent::message(every, &update(i)))
            .collect(),
    ));
    mcp.on_method(
        "subscriptions/listen",
        McpReply::sse(vec![
            SseEvent::message(every, &update(7)),
            SseEvent::message(every, &update(8)),
            SseEvent::result(every, json!({"resultType": "complete"})),
        ]),
    );
    let client = tunnel_client(&cluster.nodes[1], &cluster.tunnel, mcp.url()).spawn();
    cluster.connector(0).wait_until_client_connected();
    assert!(
        client.wait_for_stderr("speaks the mcp-tunnel extension", PROMPTLY),
        "{}",
        client.stderr()
    );
    let deadline = Instant::now() + PROMPTLY;
    let get = loop {
        // The first poll announcing the extension may still be on its way.
        let get = cluster
            .connector(0)
            .in_session("sess-real")
            .accepting("text/event-stream")
            .get();
        if get.status != 405 || Instant::now() >= deadline {
            break get;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(get.status, 200, "{get:#?}");
    let seqs: Vec<Value> = get
        .events
        .iter()
        .map(|e| e.message["params"]["seq"].clone())
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4].map(Value::from), "{get:#?}");

    let listen = json!({"jsonrpc": "2.0", "id": 41, "method": "subscriptions/listen",
        "params": {"subscriptions": [{"uri": "test://r"}],
                   "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
    let answer = cluster.connector(0).post(&listen);
    assert_eq!(answer.status, 200, "{answer:#?}");
    let got: Vec<Value> = answer
        .events
        .iter()
        .map(|e| e.message["params"]["seq"].clone())
        .collect();
    assert_eq!(got, [json!(7), json!(8), Value::Null], "{answer:#?}");
    assert_eq!(answer.events[2].message["result"]["resultType"], "complete");
    assert!(
        client
            .stderr()
            .contains("holding a subscriptions/listen stream"),
        "{}",
        client.stderr()
    );
}

#[test]
fn a_host_hanging_up_on_one_node_ends_the_upstream_held_through_another() {
    require_redis!();
    let cluster = Cluster::start(2);
    let mcp = FakeMcp::start();
    mcp.on_get(McpReply::sse(
        (0..600)
            .map(|i| SseEvent::message(Duration::from_millis(50), &update(i)))
            .collect(),
    ));
    let client = tunnel_client(&cluster.nodes[1], &cluster.tunnel, mcp.url()).spawn();
    cluster.connector(0).wait_until_client_connected();
    assert!(client.wait_for_stderr("speaks the mcp-tunnel extension", PROMPTLY));
    let deadline = Instant::now() + PROMPTLY;
    let mut host = loop {
        let mut host = RawHost::get(&cluster.nodes[0], &cluster.tunnel, "sess-hangup");
        if host.wait_for("\"seq\":", 2, PROMPTLY) || Instant::now() >= deadline {
            break host;
        }
    };
    assert!(
        host.wait_for("\"seq\":", 2, Duration::ZERO),
        "{}",
        host.text()
    );
    let hung_up = Instant::now();
    drop(host);
    let get = mcp
        .wait_until_get_finished(Duration::from_secs(5))
        .expect("the upstream GET was never closed");
    let after = get.finished_at.unwrap() - hung_up;
    assert!(after < Duration::from_secs(3), "closed after {after:?}");
    assert!(
        client.wait_for_stderr("cancelled by the caller", PROMPTLY),
        "{}",
        client.stderr()
    );
}

#[test]
fn the_per_tunnel_stream_cap_holds_across_the_nodes() {
    require_redis!();
    let cluster = Cluster::start_with(2, &[("--stream.max-per-tunnel", "2")]);
    let client = cluster
        .poller(1, "s")
        .with_header(EXTENSIONS, "cancel,streams");
    client.register_as_connected();
    let mut first = RawHost::get(&cluster.nodes[0], &cluster.tunnel, "sess-1");
    let first_command = take_stream(&client);
    let mut second = RawHost::get(&cluster.nodes[1], &cluster.tunnel, "sess-2");
    take_stream(&client);
    assert!(
        first.wait_for(": stream open", 1, PROMPTLY),
        "{}",
        first.text()
    );
    assert!(
        second.wait_for(": stream open", 1, PROMPTLY),
        "{}",
        second.text()
    );
    for node in 0..2 {
        let third = cluster
            .connector(node)
            .in_session("sess-3")
            .accepting("text/event-stream")
            .get();
        assert_eq!(third.status, 429, "node {node}: {third:#?}");
        assert_eq!(third.error_code().as_deref(), Some("tunnel_stream_limit"));
    }
    assert!(
        client.take_commands(1, 200).is_empty(),
        "a refused stream was queued"
    );
    let keys = cluster.keys_and_ttls();
    assert!(keys.iter().any(|(k, _)| k.ends_with(":st")), "{keys:?}");
    assert!(
        keys.iter().all(|(_, ttl)| *ttl > 0),
        "a key without TTL: {keys:?}"
    );
    // One ends: its place is free for a stream on the other node.
    let ended = client.post_response(shard_token_of(&first_command), &stream_end(&first_command));
    assert_eq!(ended.status, 200, "{ended:#?}");
    assert!(first.wait_for("0\r\n\r\n", 1, PROMPTLY), "{}", first.text());
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let mut again = RawHost::get(&cluster.nodes[1], &cluster.tunnel, "sess-4");
        let queued = client.take_commands(1, 300);
        if let Some(command) = queued.first() {
            assert_eq!(command["command_type"], "stream", "{command:#}");
            break;
        }
        assert!(again.wait_for(" 429 ", 1, PROMPTLY), "{}", again.text());
        assert!(
            Instant::now() < deadline,
            "the ended stream's place was never freed"
        );
    }
}

#[test]
fn a_server_request_is_answered_through_another_node_to_the_instance_that_asked() {
    require_redis!();
    let cluster = Cluster::start(2);
    let client = cluster
        .poller(1, "asker")
        .with_header(EXTENSIONS, "cancel,server-requests,streams");
    client.register_as_connected();
    let call = tool_call(7, "needs-roots");
    let mut host = RawHost::post(&cluster.nodes[0], &cluster.tunnel, "sess-sr", &call);
    let command = client.take_one_command();
    assert_eq!(command["command_type"], "jsonrpc", "{command:#}");
    let token = shard_token_of(&command);
    let ask = json!({"jsonrpc": "2.0", "id": "mcpt-sr-1", "method": "roots/list"});
    let posted = client.post_response(token, &stream_message(&command, Some(ask)));
    assert_eq!(posted.status, 200, "{posted:#?}");
    assert!(host.wait_for("roots/list", 1, PROMPTLY), "{}", host.text());
    let keys = cluster.keys_and_ttls();
    assert!(keys.iter().any(|(k, _)| k.contains(":ask:")), "{keys:?}");
    assert!(
        keys.iter().all(|(_, ttl)| *ttl > 0),
        "a key without TTL: {keys:?}"
    );

    // The host answers on node 1; node 0 remembered who asked.
    let answer = json!({"jsonrpc": "2.0", "id": "mcpt-sr-1", "result": {"roots": []}});
    let answered = {
        let connector = cluster.connector(1).in_session("sess-sr");
        in_background(move || connector.post(&answer))
    };
    let forwarded = client.take_one_command();
    assert_eq!(
        forwarded["command_type"], "server_response",
        "{forwarded:#}"
    );
    assert_eq!(forwarded["jsonrpc"]["id"], "mcpt-sr-1", "{forwarded:#}");
    assert_eq!(client.acknowledge(&forwarded).status, 200);
    let answered = answered.join();
    assert!(answered.status < 300, "{answered:#?}");
    // Answered once: the same answer again takes the contract's way (an ordinary command).
    let again = {
        let connector = cluster.connector(0).in_session("sess-sr");
        let answer = json!({"jsonrpc": "2.0", "id": "mcpt-sr-1", "result": {"roots": []}});
        in_background(move || connector.post(&answer))
    };
    let ordinary = client.take_one_command();
    assert_eq!(
        ordinary["command_type"], "jsonrpc",
        "answered twice: {ordinary:#}"
    );
    assert_eq!(client.acknowledge(&ordinary).status, 200);
    assert!(again.join().status < 300);
    // The call itself is answered as usual.
    assert_eq!(client.answer_with_result(&command, json!({})).status, 200);
    assert!(host.wait_for("\"id\":7", 1, PROMPTLY), "{}", host.text());
    drop(host);
}

// ---------------------------------------------------------------------------------------------
// A node killed with what it held: leases (`--store.lease`) free what it held

/// The value of Redis's reply to `GET key`, if any.
fn redis_get(redis: &RedisServer, key: &str) -> Option<String> {
    let reply = redis.command(&format!("GET {key}"));
    let mut lines = reply.lines();
    match lines.next() {
        Some(l) if l.starts_with('$') && l != "$-1" => lines.next().map(str::to_string),
        _ => None,
    }
}

#[test]
fn a_killed_nodes_stream_frees_its_place_and_its_client_within_the_lease() {
    require_redis!();
    let lease = Duration::from_secs(2);
    let mut cluster = Cluster::start_with(
        2,
        &[("--stream.max-per-tunnel", "1"), ("--store.lease", "2s")],
    );
    let mcp = FakeMcp::start();
    // One message, then quiet for longer than the test: only a `cancel` ends it early.
    mcp.on_get(McpReply::sse(vec![
        SseEvent::message(Duration::from_millis(20), &update(0)),
        SseEvent::message(Duration::from_secs(120), &update(1)),
    ]));
    let client = tunnel_client(&cluster.nodes[1], &cluster.tunnel, mcp.url()).spawn();
    cluster.connector(0).wait_until_client_connected();
    assert!(client.wait_for_stderr("speaks the mcp-tunnel extension", PROMPTLY));
    let deadline = Instant::now() + PROMPTLY;
    let mut host = loop {
        // The first poll announcing the extension may still be on its way.
        let mut host = RawHost::get(&cluster.nodes[0], &cluster.tunnel, "sess-dead");
        if host.wait_for("\"seq\":0", 1, PROMPTLY) || Instant::now() >= deadline {
            break host;
        }
    };
    assert!(
        host.wait_for("\"seq\":0", 1, Duration::ZERO),
        "{}",
        host.text()
    );
    // The cap is reached cluster-wide.
    let refused = cluster
        .connector(1)
        .in_session("sess-refused")
        .accepting("text/event-stream")
        .get();
    assert_eq!(refused.status, 429, "{refused:#?}");
    let keys = cluster.keys_and_ttls();
    let delivered: Vec<&String> = keys
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("mcpt:d:"))
        .collect();
    assert_eq!(delivered.len(), 1, "{keys:?}");
    let rid = delivered[0].trim_start_matches("mcpt:d:").to_string();

    cluster.nodes[0].stop_and_collect_output();
    let killed = Instant::now();
    drop(host);
    // The client is told and closes its upstream request within the lease and an upkeep
    // round, though the stream is quiet (nothing it posts could meet a 404) and the node
    // holding it is gone. (The MCP server's side only notices at its next write.)
    let ended = format!("command {rid}: cancelled by the caller; nothing posted");
    assert!(
        client.wait_for_stderr(&ended, lease + Duration::from_secs(8)),
        "{}",
        client.stderr()
    );
    let after = killed.elapsed();
    assert!(
        after < lease + Duration::from_secs(5),
        "ended after {after:?}"
    );
    assert!(
        client
            .stderr()
            .contains("cancelled by the caller (host_closed)")
    );
    // Nothing of it is left in Redis: no key, no place in the count, no stored order.
    let keys = cluster.keys_and_ttls();
    assert!(
        !keys.iter().any(|(k, _)| k.contains(&rid)),
        "{rid}: {keys:?}"
    );
    let st = format!("ZSCORE mcpt:t:{}:st {rid}", cluster.tunnel.id);
    assert!(
        cluster.redis.command(&st).starts_with("$-1"),
        "{rid} still counted"
    );
    let sti = format!("HEXISTS mcpt:t:{}:sti {rid}", cluster.tunnel.id);
    assert_eq!(
        cluster.redis.command(&sti).trim(),
        ":0",
        "{rid}'s order kept"
    );
    assert!(
        keys.iter().all(|(_, ttl)| *ttl > 0),
        "a key without TTL: {keys:?}"
    );
    // Its place is free: a stream through the surviving node opens.
    let mut again = RawHost::get(&cluster.nodes[1], &cluster.tunnel, "sess-after");
    assert!(again.wait_for("\"seq\":0", 1, PROMPTLY), "{}", again.text());
}

#[test]
fn a_command_delivered_for_a_killed_node_is_cleaned_and_its_late_answer_refused() {
    require_redis!();
    let mut cluster = Cluster::start_with(2, &[("--store.lease", "2s")]);
    let poller = cluster.poller(1, "late");
    poller.register_as_connected();
    let connector = cluster.connector(0);
    let held = thread::spawn(move || connector.post(&rpc_request("late-1", "ping", json!({}))));
    let command = poller.take_one_command();
    let rid = request_id_of(&command).to_string();
    let token = shard_token_of(&command).to_string();
    let node = token.split('.').next().unwrap().to_string();
    let delivered = format!("mcpt:d:{rid}");
    assert_eq!(
        redis_get(&cluster.redis, &delivered).as_deref(),
        Some("late")
    );
    // A second command of node A waits in the queue, not taken yet.
    let connector = cluster.connector(0);
    let queued = thread::spawn(move || connector.post(&rpc_request("late-q", "ping", json!({}))));
    cluster.nodes[0].wait_until_queued(&cluster.tunnel.id, 2);

    cluster.nodes[0].stop_and_collect_output();
    assert!(
        held.join().is_err(),
        "the caller saw its connection dropped"
    );
    assert!(
        queued.join().is_err(),
        "the queued caller saw its connection dropped"
    );
    // The dead node's liveness runs out within its lease...
    let alive = format!("EXISTS mcpt:n:{node}:alive");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.redis.command(&alive).trim() != ":0" {
        assert!(
            Instant::now() < deadline,
            "the dead node's lease never ran out"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // ...and then the client's late answer, on the surviving node, is refused as for any
    // command no longer pending (404: terminal for the client, never retried), and the
    // command's keys are gone.
    let late = poller.answer_with_result(&command, json!({}));
    assert_eq!(late.status, 404, "{late:#?}");
    let keys = cluster.keys_and_ttls();
    assert!(
        !keys.iter().any(|(k, _)| k.contains(&rid)),
        "{rid}: {keys:?}"
    );
    assert_eq!(
        poller.answer_with_result(&command, json!({})).status,
        404,
        "answered twice"
    );
    assert!(
        keys.iter().all(|(_, ttl)| *ttl > 0),
        "a key without TTL: {keys:?}"
    );
    // The command still queued for the dead node's caller is not handed out (no one could get
    // its answer), and its keys go when a poll meets it.
    assert!(
        poller.take_commands(1, 300).is_empty(),
        "a dead node's command was delivered"
    );
    let keys = cluster.keys_and_ttls();
    assert!(
        !keys.iter().any(|(k, _)| k.starts_with("mcpt:p:")),
        "{keys:?}"
    );
    // The surviving node serves on.
    let connector = cluster.connector(1);
    let call = in_background(move || connector.post(&rpc_request("late-2", "ping", json!({}))));
    let next = poller.take_one_command();
    assert_eq!(poller.answer_with_result(&next, json!({})).status, 200);
    assert_result(&call.join(), &json!("late-2"));
}

#[test]
fn after_a_mixed_load_every_key_in_redis_has_a_ttl() {
    require_redis!();
    let cluster = Cluster::start(2);
    let affine = r#"{"version":1,"channels":[{"name":"main","proc_affinity":true}]}"#;
    let x = cluster
        .poller(1, "x")
        .with_header("X-Tunnel-MCP-Server-Info", affine)
        .with_header(EXTENSIONS, "cancel,server-requests,streams");
    x.register_as_connected();
    let answered = |node: usize, session: Option<&str>, id: &str| {
        let mut connector = cluster.connector(node);
        if let Some(s) = session {
            connector = connector.in_session(s);
        }
        let message = rpc_request(id, "ping", json!({}));
        let call = in_background(move || connector.post(&message));
        let command = x.take_one_command();
        assert_eq!(x.answer_with_result(&command, json!({})).status, 200);
        call.join()
    };
    // Calls on both nodes, and a session (minted, bound to "x" in Redis).
    assert_result(&answered(0, None, "m-1"), &json!("m-1"));
    assert_result(&answered(1, None, "m-2"), &json!("m-2"));
    let init = {
        let connector = cluster.connector(0);
        in_background(move || {
            connector.post(&rpc_request(
                "m-init",
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}),
            ))
        })
    };
    let command = x.take_one_command();
    assert_eq!(x.answer_with_result(&command, json!({})).status, 200);
    let init = init.join();
    let session = init
        .header("Mcp-Session-Id")
        .expect("a session")
        .to_string();
    for (node, id) in [(0, "m-3"), (1, "m-4")] {
        assert_result(&answered(node, Some(&session), id), &json!(id));
    }
    // A stream held on node 0, its messages posted on both.
    let mut host = RawHost::get(&cluster.nodes[0], &cluster.tunnel, &session);
    let stream = take_stream(&x);
    let token = shard_token_of(&stream).to_string();
    for (seq, poster) in [(0, 1), (1, 0)] {
        let via = cluster
            .poller(poster, "x")
            .with_header(EXTENSIONS, "cancel,server-requests,streams");
        let posted = via.post_response(&token, &stream_message(&stream, Some(update(seq))));
        assert_eq!(posted.status, 200, "{posted:#?}");
    }
    assert!(host.wait_for("\"seq\":1", 1, PROMPTLY), "{}", host.text());
    // A server request, answered through the other node.
    let call = tool_call("m-sr", "needs-roots");
    let mut asking = RawHost::post(&cluster.nodes[0], &cluster.tunnel, &session, &call);
    let command = x.take_one_command();
    let ask = json!({"jsonrpc": "2.0", "id": "mcpt-sr-9", "method": "roots/list"});
    let posted = x.post_response(
        shard_token_of(&command),
        &stream_message(&command, Some(ask)),
    );
    assert_eq!(posted.status, 200, "{posted:#?}");
    assert!(
        asking.wait_for("roots/list", 1, PROMPTLY),
        "{}",
        asking.text()
    );
    let reply = {
        let connector = cluster.connector(1).in_session(&session);
        let answer = json!({"jsonrpc": "2.0", "id": "mcpt-sr-9", "result": {"roots": []}});
        in_background(move || connector.post(&answer))
    };
    let forwarded = x.take_one_command();
    assert_eq!(
        forwarded["command_type"], "server_response",
        "{forwarded:#}"
    );
    assert_eq!(x.acknowledge(&forwarded).status, 200);
    assert!(reply.join().status < 300);
    // A second server request, left unanswered (its key waits for the host's answer).
    let ask = json!({"jsonrpc": "2.0", "id": "mcpt-sr-10", "method": "roots/list"});
    let posted = x.post_response(
        shard_token_of(&command),
        &stream_message(&command, Some(ask)),
    );
    assert_eq!(posted.status, 200, "{posted:#?}");
    assert!(
        asking.wait_for("roots/list", 2, PROMPTLY),
        "{}",
        asking.text()
    );
    // A delivered call cancelled: its `cancel` order waits for "x", which polls the other node.
    let cancelled = {
        let connector = cluster.connector(0).in_session(&session);
        in_background(move || connector.post(&rpc_request("m-c", "ping", json!({}))))
    };
    let taken = x.take_one_command();
    assert_eq!(taken["jsonrpc"]["id"], "m-c", "{taken:#}");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": "m-c", "reason": "user"}});
    assert_eq!(
        cluster.connector(0).in_session(&session).post(&note).status,
        202
    );
    assert_eq!(
        cancelled.join().error_code().as_deref(),
        Some("request_cancelled")
    );

    // Everything the load left, found as an operator would (SCAN), has a TTL.
    let keys = cluster.keys_and_ttls();
    let without: Vec<_> = keys.iter().filter(|(_, ttl)| *ttl <= 0).collect();
    assert!(
        without.is_empty(),
        "keys without a TTL: {without:?}\nall: {keys:?}"
    );
    // And the load did leave each kind of key (the scan saw what it should).
    let t = &cluster.tunnel.id;
    for kind in [
        format!("mcpt:t:{t}:alive"),
        format!("mcpt:t:{t}:salive"),
        format!("mcpt:t:{t}:i:x:alive"),
        format!("mcpt:t:{t}:i:x:c"),
        format!("mcpt:t:{t}:aff:"),
        format!("mcpt:t:{t}:s:{session}"),
        format!("mcpt:t:{t}:st"),
        format!("mcpt:t:{t}:sti"),
        format!("mcpt:t:{t}:ask:"),
        format!("mcpt:p:{}", request_id_of(&stream)),
        format!("mcpt:d:{}", request_id_of(&stream)),
        "mcpt:n:".to_string(),
    ] {
        assert!(
            keys.iter().any(|(k, _)| k.starts_with(&kind)),
            "no {kind}… key: {keys:?}"
        );
    }
    // Ends: the stream and the asking call.
    assert_eq!(x.post_response(&token, &stream_end(&stream)).status, 200);
    assert!(host.wait_for("0\r\n\r\n", 1, PROMPTLY), "{}", host.text());
    assert_eq!(x.answer_with_result(&command, json!({})).status, 200);
    assert!(
        asking.wait_for("\"id\":\"m-sr\"", 1, PROMPTLY),
        "{}",
        asking.text()
    );
    let keys = cluster.keys_and_ttls();
    assert!(
        keys.iter().all(|(_, ttl)| *ttl > 0),
        "a key without TTL: {keys:?}"
    );
    assert!(
        !keys.iter().any(|(k, _)| k.contains(request_id_of(&stream))),
        "an ended stream's keys: {keys:?}"
    );
}
