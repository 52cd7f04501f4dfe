//! stdio child isolation and lifecycle (issue 11, item 9), with the real `mcp-tunnel run` binary,
//! the loopback fake control plane and `tests/fixtures/stdio_lifecycle_server.py`: the child cannot
//! read the client's environment, a child that stops reading its stdin costs bounded memory and
//! makes the channel unready, a leftover helper of an old child cannot end the new one, and helpers
//! a child forked die with it on restart and on stop.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    ClientBuilder, Command, FakeControlPlane, PROMPTLY, PostedResponse, TempDir, TunnelClient,
    as_nobody_if_root, fixture_copy, process_gone, rpc_request,
};

const LIFECYCLE_SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/stdio_lifecycle_server.py"
);

/// Pause between two looks in a bounded polling loop.
const LOOK_AGAIN: Duration = Duration::from_millis(25);

/// A client whose channel `main` runs the lifecycle server in `mode`, with its files in `dir`
/// and its health server's URL in `dir/health.url`; returned once the child has started.
fn start_client(control_plane: &FakeControlPlane, mode: &str, dir: &TempDir) -> TunnelClient {
    start_client_with(control_plane, mode, dir, "", |builder| builder)
}

/// [`start_client`] with the server's command line behind `wrapper` and more configuration.
fn start_client_with(
    control_plane: &FakeControlPlane,
    mode: &str,
    dir: &TempDir,
    wrapper: &str,
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> TunnelClient {
    let command = format!(
        "{wrapper} python3 '{LIFECYCLE_SERVER}' {mode} '{}'",
        dir.path().display()
    );
    let builder = ClientBuilder::run(control_plane.base_url(), control_plane.api_key(), "unused")
        .without_env("MCP_SERVER_URL")
        .env("MCP_COMMAND", command.trim_start())
        .env("HEALTH_URL_FILE", &health_url_file(dir));
    let client = configure(builder).spawn();
    assert!(
        client.wait_for_stderr("[main] stdio server started (pid ", PROMPTLY),
        "the stdio server never started:\n{}",
        client.stderr()
    );
    client
}

fn health_url_file(dir: &TempDir) -> String {
    dir.path().join("health.url").display().to_string()
}

fn tool_call(request_id: &str, tool: &str, arguments: Value) -> Command {
    Command::jsonrpc(
        request_id,
        rpc_request(
            request_id,
            "tools/call",
            json!({"name": tool, "arguments": arguments}),
        ),
    )
}

/// Calls `tool` and returns its `structuredContent`.
fn call_tool(control_plane: &FakeControlPlane, request_id: &str, tool: &str, args: Value) -> Value {
    control_plane.push(tool_call(request_id, tool, args));
    let posted = control_plane.wait_for_terminal_response(request_id, PROMPTLY);
    let result = &posted.json["resp_json"]["result"]["structuredContent"];
    assert!(result.is_object(), "{request_id}: {posted:#?}");
    result.clone()
}

fn tunnel_failure(posted: &PostedResponse) -> &Value {
    &posted.json["resp_json"]["error"]["data"]["tunnel_failure"]
}

/// Polls `condition` until it holds; false at the deadline.
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(LOOK_AGAIN);
    }
}

/// The pids listed one per line in `path`, once it lists at least `count`.
fn wait_for_pids(path: &Path, count: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    let listed = eventually(PROMPTLY, || {
        pids = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect();
        pids.len() >= count
    });
    assert!(listed, "{} never listed {count} pid(s)", path.display());
    pids
}

/// The client's resident set size in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// `GET /readyz` of the client's health server: (status, body).
fn readyz(dir: &TempDir) -> (u16, String) {
    let mut base = String::new();
    assert!(
        eventually(PROMPTLY, || {
            base = std::fs::read_to_string(health_url_file(dir)).unwrap_or_default();
            base.ends_with('\n')
        }),
        "no health URL file"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let url = format!("{}/readyz", base.trim());
    let response = agent.get(&url).call().expect("GET /readyz");
    let status = response.status().as_u16();
    let body = response.into_body().read_to_string().expect("a body");
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// Isolation

#[test]
fn a_stdio_child_cannot_read_the_runtime_key_from_its_parents_environment() {
    let control_plane = FakeControlPlane::start();
    let dir = TempDir::new("stdio-environ");
    let wrapper = as_nobody_if_root(dir.path());
    let server = fixture_copy(dir.path(), LIFECYCLE_SERVER);
    let command = format!(
        "/usr/bin/env python3 '{server}' serve '{}'",
        dir.path().display()
    );
    let client = ClientBuilder::run(control_plane.base_url(), control_plane.api_key(), "unused")
        .without_env("MCP_SERVER_URL")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("MCP_COMMAND", &command)
        .spawn_wrapped(wrapper);
    assert!(
        client.wait_for_stderr("[main] stdio server started (pid ", PROMPTLY),
        "the stdio server never started:\n{}",
        client.stderr()
    );
    let secret = control_plane.api_key().to_string();
    let seen = call_tool(
        &control_plane,
        "environ-1",
        "parent_environ",
        json!({"secret": secret}),
    );
    assert_eq!(
        seen["own_env_has_secret"], false,
        "the child inherited the key: {seen}"
    );
    assert_eq!(
        seen["has_secret"], false,
        "the child read the key from /proc/<client>/environ: {seen}"
    );
    // Non-dumpable: the kernel refuses the read outright (EACCES), it does not just hide the key.
    assert_eq!(seen["readable"], false, "{seen}");
    assert_eq!(seen["error"], "PermissionError", "{seen}");
    drop(client);
}

// ---------------------------------------------------------------------------------------------
// A child that stops reading

/// Size of each call's argument: 300 of them is 60 MB, far over the 4 MiB writer bound.
const BIG_ARGUMENT: usize = 200 * 1024;
const BATCHES: usize = 15;
const BATCH: usize = 20;
/// Each call's own deadline: the first calls hold their workers for the whole test.
const CALL_TIMEOUT: &str = "60s";
/// The first batch is larger than the queue (30 × 200 KiB > 4 MiB + the pipe's 64 KiB).
const FIRST_BATCH: usize = 30;

#[test]
fn a_child_that_stops_reading_costs_bounded_memory_fails_calls_fast_and_is_unready() {
    let control_plane = FakeControlPlane::start();
    let dir = TempDir::new("stdio-deaf");
    // Workers and commands in flight enough for the calls stuck on the full queue and a batch.
    let client = start_client_with(&control_plane, "deaf", &dir, "", |builder| {
        builder
            .env("MCP_MAX_CONCURRENT_REQUESTS", "40")
            .env("CONTROL_PLANE_MAX_INFLIGHT_REQUESTS", "80")
    });
    assert!(client.wait_for_stderr("lifecycle-server: deaf pid", PROMPTLY));
    let mut rss_before = 0;
    let blob = "x".repeat(BIG_ARGUMENT);
    let mut refused = 0;
    for batch in 0..BATCHES {
        let size = if batch == 0 { FIRST_BATCH } else { BATCH };
        let ids: Vec<String> = (0..size).map(|n| format!("big-{batch}-{n}")).collect();
        let commands = ids
            .iter()
            .map(|id| {
                tool_call(id, "echo", json!({"blob": blob}))
                    .response_timeout(CALL_TIMEOUT)
                    .into()
            })
            .collect();
        let pushed = Instant::now();
        control_plane.push_batch(commands);
        if batch == 0 {
            // The first calls fill the queue and wait for a child that never reads.
            assert!(
                client.wait_for_stderr("is not reading its stdin", PROMPTLY),
                "the queue never filled:\n{}",
                client.stderr()
            );
            rss_before = rss_kib(client.pid());
            continue;
        }
        for id in &ids {
            let posted = control_plane.wait_for_terminal_response(id, PROMPTLY);
            assert_eq!(
                tunnel_failure(&posted)["transport_error_kind"],
                "stdin_queue_full",
                "{id}: {posted:#?}"
            );
            assert_eq!(posted.json["resp_json"]["error"]["code"], -32603);
            refused += 1;
        }
        assert!(
            pushed.elapsed() < PROMPTLY,
            "batch {batch} took {:?}",
            pushed.elapsed()
        );
    }
    assert!(refused >= (BATCHES - 1) * BATCH, "{refused} refused");
    // 56 MB more went to a child that reads nothing and were refused: the client keeps only the
    // full 4 MiB queue and the calls waiting on it, plus one batch (4 MB) being decoded.
    // Without a bound every message stays queued, about 2.4 times its size in memory.
    let growth_mib = rss_kib(client.pid()).saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 24, "client RSS grew by {growth_mib} MiB");
    let (status, body) = readyz(&dir);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not reading its stdin"), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

#[test]
fn a_helper_of_an_old_child_closing_its_stdout_leaves_the_restarted_child_serving() {
    let control_plane = FakeControlPlane::start();
    let dir = TempDir::new("stdio-helper");
    let client = start_client(&control_plane, "fork-helper", &dir);
    let helper = wait_for_pids(&dir.path().join("helper.pid"), 1)[0];
    assert!(
        client.wait_for_stderr("restart #1", PROMPTLY),
        "{}",
        client.stderr()
    );
    assert!(
        client.wait_for_stderr("lifecycle-server: serving pid", PROMPTLY),
        "{}",
        client.stderr()
    );
    let serving = call_tool(&control_plane, "pid-1", "pid", json!({}))["pid"].clone();
    // The helper exits 2 s after it started and its end closes the old child's stdout.
    assert!(
        eventually(PROMPTLY, || process_gone(helper)),
        "helper lives on"
    );
    assert!(
        !client.wait_for_stderr("restart #2", Duration::from_secs(3)),
        "the old child's stdout closing tore down the new child:\n{}",
        client.stderr()
    );
    let still = call_tool(&control_plane, "pid-2", "pid", json!({}))["pid"].clone();
    assert_eq!(serving, still, "the restarted child was replaced");
}

#[test]
fn helpers_a_child_forked_die_on_restart_and_on_stop() {
    let control_plane = FakeControlPlane::start();
    let dir = TempDir::new("stdio-group");
    let mut client = start_client(&control_plane, "grandchild", &dir);
    let list = dir.path().join("grandchildren");
    let first = wait_for_pids(&list, 1)[0];
    assert!(!process_gone(first));
    // The child exits (without answering); the supervisor restarts it.
    control_plane.push(tool_call("exit-1", "exit", json!({})));
    assert!(
        client.wait_for_stderr("restart #1", PROMPTLY),
        "{}",
        client.stderr()
    );
    assert!(
        eventually(PROMPTLY, || process_gone(first)),
        "the first child's grandchild {first} outlived the restart"
    );
    let second = wait_for_pids(&list, 2)[1];
    assert!(!process_gone(second));
    client.send_sigterm();
    client
        .wait_exit(Duration::from_secs(30))
        .expect("the client exits after SIGTERM");
    assert!(
        eventually(PROMPTLY, || process_gone(second)),
        "the grandchild {second} outlived the client"
    );
}
