//! The fault suite (issue 11, item 13): the real relay and client and a real MCP server
//! (`tests/fixtures/fault_mcp_server.py`, which logs every execution) on loopback, under steady
//! load from a few caller threads, then one fault per test: `kill -9` of the client (restarted),
//! of the relay (restarted on the same port with the same tunnels file), of the HTTP MCP server
//! (restarted), of the stdio child (the client's supervisor restarts it), SIGSTOP/SIGCONT of the
//! client shorter and longer than the commands' deadline, and tinyproxy between client and relay
//! killed and restarted (skipped, with a printed reason, without tinyproxy).
//!
//! Every scenario checks the same four promises (see `support/faults/verdict.rs`): no caller
//! waits longer than the scenario's stated bound, no call executes twice, every caller gets its
//! answer or a clear error, and the system serves normally again within a stated time. Each
//! bound is a named constant derived from the timeouts configured here, which are short (a few
//! seconds) so the whole file stays well under a minute or two. Scenarios share no process and
//! no port; every process is killed when its test ends, whether it passed or not.

mod support;

#[path = "support/faults/mod.rs"]
mod fault_support;

use std::time::{Duration, Instant};

use fault_support::load::TOOL_WORK;
use fault_support::processes::tinyproxy_installed;
use fault_support::system::{McpKind, Setup, System};
use fault_support::verdict::{Bounds, Observation, read_executions, summary, violations};
use support::{PROMPTLY, let_time_pass};

// ---------------------------------------------------------------------------------------------
// Configuration shared by the scenarios

/// Caller threads, each with one call at a time: enough that a fault always finds calls in
/// flight, few enough for a loaded 2-core machine.
const CALLERS: usize = 4;

/// Every caller gives up after this. Above every bound below, so a call that reaches it has
/// already broken its scenario's bound; it only keeps a hung system from hanging the test.
const CALLER_TIMEOUT: Duration = Duration::from_secs(25);

/// Headroom on top of every configured timeout for a loaded machine (other builds and tests run
/// beside this suite).
const SLACK: Duration = Duration::from_secs(3);

/// The relay's `--connector.timeout` in most scenarios: the callers' deadline, and the one the
/// relay gives the client with each command.
const CONNECTOR_TIMEOUT: Duration = Duration::from_secs(6);

/// The client's poll wait where nothing depends on it (the test support's default).
const SHORT_POLL: Duration = Duration::from_secs(1);

/// A long poll wait, as in production (default 30 s): a poll open while the client is stopped
/// is where commands pile up unread.
const LONG_POLL: Duration = Duration::from_secs(20);

/// Answers before a fault is injected: the system is serving under load.
const WARM_UP_ANSWERS: usize = 8;

/// "Serving normally again": this many answers in a row, among calls sent after the fault ended.
const RECOVERY_RUN: usize = 8;

/// How long a killed process stays down before it is restarted.
const DOWN_TIME: Duration = Duration::from_secs(1);

/// The longest the client waits between two poll attempts while the relay (or the proxy to it)
/// is unreachable: its backoff ceiling (200 ms doubling to 10 s, full jitter).
const POLL_BACKOFF_CAP: Duration = Duration::from_secs(10);

/// What a normal call costs at most when nothing is broken: the tool's work plus slack.
fn normal_call() -> Duration {
    TOOL_WORK + SLACK
}

/// Builds the system, warms it up under load, injects the fault, waits for recovery, then checks
/// every promise. `fault` returns when the fault began and when it ended.
fn run_scenario(
    setup: Setup,
    bounds: Bounds,
    fault: impl FnOnce(&mut System) -> (Instant, Instant),
) {
    let mut system = System::start(&setup);
    let load = system.load(setup.label, CALLERS, CALLER_TIMEOUT);
    assert!(
        load.wait_for_answers(WARM_UP_ANSWERS, PROMPTLY),
        "{}: fewer than {WARM_UP_ANSWERS} answers within {PROMPTLY:?} before any fault: {:#?}",
        bounds.scenario,
        load.records()
    );
    let (fault_started, fault_ended) = fault(&mut system);
    let recovered_at = load.wait_for_recovery(fault_ended, bounds.recovery_run, bounds.recovery);
    let calls = load.stop();
    let seen = Observation {
        calls,
        executions: read_executions(system.executions_log()),
        fault_started,
        fault_ended,
        recovered_at,
    };
    let summary = summary(&bounds, &seen);
    println!("{summary}");
    let broken = violations(&bounds, &seen);
    assert!(
        broken.is_empty(),
        "{}\n(summary: {summary})",
        broken.join("\n")
    );
}

fn setup(label: &'static str, connector_timeout: Duration, mcp: McpKind) -> Setup {
    Setup {
        label,
        connector_timeout,
        poll_timeout: SHORT_POLL,
        mcp,
        through_proxy: false,
    }
}

// ---------------------------------------------------------------------------------------------
// kill -9 of the client

/// A connector timeout long enough to tell "failed fast" from "waited for the deadline".
const KILL_CLIENT_CONNECTOR_TIMEOUT: Duration = Duration::from_secs(15);

/// The relay counts a client instance as gone 5 s after its last connection closed with no poll
/// of it waiting, checked about every second; then its delivered, unanswered commands fail with a
/// JSON-RPC error. So a caller of the killed client waits about 5–7 s, plus slack: well under the
/// 15 s connector timeout.
const KILL_CLIENT_MAX_WAIT: Duration = Duration::from_secs(10);

#[test]
fn client_killed_and_restarted() {
    let bounds = Bounds {
        scenario: "kill -9 of the client",
        max_wait: KILL_CLIENT_MAX_WAIT,
        max_wait_why: "a gone client's commands fail about 5-7 s after the kill, plus slack, \
                       well under the 15 s connector timeout",
        // The callers held by the dead client are released by the max wait; the new client
        // serves from its first poll.
        recovery: KILL_CLIENT_MAX_WAIT,
        recovery_run: RECOVERY_RUN,
        transport_errors_allowed: false,
    };
    let setup = setup("kill-client", KILL_CLIENT_CONNECTOR_TIMEOUT, McpKind::Http);
    run_scenario(setup, bounds, |system| {
        let started = Instant::now();
        system.kill_client();
        let_time_pass(DOWN_TIME);
        system.restart_client();
        (started, Instant::now())
    });
}

// ---------------------------------------------------------------------------------------------
// kill -9 of the relay

#[test]
fn relay_killed_and_restarted_on_the_same_port() {
    let bounds = Bounds {
        scenario: "kill -9 of the relay",
        max_wait: normal_call(),
        max_wait_why: "calls in flight lose their connection at the kill, calls while it is down \
                       are refused, and the new relay answers 503 until the client polls it: \
                       nothing waits longer than a normal call",
        recovery: POLL_BACKOFF_CAP + SLACK,
        recovery_run: RECOVERY_RUN,
        transport_errors_allowed: true,
    };
    let setup = setup("kill-relay", CONNECTOR_TIMEOUT, McpKind::Http);
    run_scenario(setup, bounds, |system| {
        let started = Instant::now();
        system.kill_relay();
        let_time_pass(DOWN_TIME);
        system.restart_relay();
        (started, Instant::now())
    });
}

// ---------------------------------------------------------------------------------------------
// kill -9 of the MCP server

/// The client's next calls after the restart reach the new server at once (a pooled connection
/// to the old one fails one call); the run itself takes a few seconds of calls.
const MCP_RECOVERY: Duration = Duration::from_secs(5);

#[test]
fn http_mcp_server_killed_and_restarted() {
    let bounds = Bounds {
        scenario: "kill -9 of the HTTP MCP server",
        max_wait: normal_call(),
        max_wait_why: "a call in flight sees its connection reset and one while the server is \
                       down is refused: the client answers either with a JSON-RPC error at once",
        recovery: MCP_RECOVERY,
        recovery_run: RECOVERY_RUN,
        transport_errors_allowed: false,
    };
    let setup = setup("kill-mcp", CONNECTOR_TIMEOUT, McpKind::Http);
    run_scenario(setup, bounds, |system| {
        let started = Instant::now();
        system.kill_mcp_server();
        let_time_pass(DOWN_TIME);
        system.restart_mcp_server();
        (started, Instant::now())
    });
}

// ---------------------------------------------------------------------------------------------
// kill -9 of the stdio child

/// The supervisor restarts a child 200 ms after it died (first restart), and python starts in
/// well under a second; plus the run of calls and slack.
const STDIO_RECOVERY: Duration = Duration::from_secs(5);

#[test]
fn stdio_child_killed_and_restarted_by_the_supervisor() {
    let bounds = Bounds {
        scenario: "kill -9 of the stdio child",
        max_wait: normal_call(),
        max_wait_why: "the supervisor fails the calls in flight at once (transport_closed), and \
                       the child is back within a second",
        recovery: STDIO_RECOVERY,
        recovery_run: RECOVERY_RUN,
        transport_errors_allowed: false,
    };
    let setup = setup("kill-stdio", CONNECTOR_TIMEOUT, McpKind::Stdio);
    run_scenario(setup, bounds, |system| {
        let starts = system.stdio_starts();
        let started = Instant::now();
        system.kill_stdio_child();
        // The fault is the kill; the restart is the system's job, so recovery counts from here.
        let ended = Instant::now();
        assert!(
            system.wait_for_stdio_starts(starts + 1, PROMPTLY),
            "the supervisor did not restart the stdio child within {PROMPTLY:?}"
        );
        (started, ended)
    });
}

// ---------------------------------------------------------------------------------------------
// SIGSTOP / SIGCONT of the client

/// A stop well inside the 6 s connector timeout.
const SHORT_STOP: Duration = Duration::from_secs(2);

/// After a stop shorter than the deadline the client simply carries on; the run of calls and
/// slack.
const STOP_RECOVERY: Duration = Duration::from_secs(5);

#[test]
fn client_stopped_for_less_than_the_deadline() {
    let bounds = Bounds {
        scenario: "SIGSTOP of the client for 2 s (deadline 6 s)",
        max_wait: SHORT_STOP + normal_call(),
        max_wait_why: "a call held by the stopped client is answered once it continues: the \
                       stop plus a normal call",
        recovery: STOP_RECOVERY,
        recovery_run: RECOVERY_RUN,
        transport_errors_allowed: false,
    };
    let mut setup = setup("short-stop", CONNECTOR_TIMEOUT, McpKind::Http);
    setup.poll_timeout = LONG_POLL;
    run_scenario(setup, bounds, |system| {
        let started = Instant::now();
        system.stop_client();
        let_time_pass(SHORT_STOP);
        system.continue_client();
        (started, Instant::now())
    });
}

/// The connector timeout of the long-stop scenario: short, so a stop can outlast two rounds of
/// deadlines (the calls the client held, then the calls that piled up in its open poll).
const LONG_STOP_CONNECTOR_TIMEOUT: Duration = Duration::from_secs(3);

/// Longer than two connector timeouts: the callers of the calls that were delivered into the
/// stopped client's open poll have all had their 504 when it continues.
const LONG_STOP: Duration = Duration::from_secs(8);

#[test]
fn client_stopped_for_longer_than_the_deadline() {
    let bounds = Bounds {
        scenario: "SIGSTOP of the client for 8 s (deadline 3 s)",
        max_wait: LONG_STOP_CONNECTOR_TIMEOUT + SLACK,
        max_wait_why: "the relay answers 504 at the 3 s connector timeout",
        recovery: STOP_RECOVERY,
        recovery_run: RECOVERY_RUN,
        transport_errors_allowed: false,
    };
    let mut setup = setup("long-stop", LONG_STOP_CONNECTOR_TIMEOUT, McpKind::Http);
    setup.poll_timeout = LONG_POLL;
    run_scenario(setup, bounds, |system| {
        let started = Instant::now();
        system.stop_client();
        let_time_pass(LONG_STOP);
        system.continue_client();
        (started, Instant::now())
    });
}

// ---------------------------------------------------------------------------------------------
// A proxy between client and relay, killed and restarted

#[test]
fn proxy_between_client_and_relay_killed_and_restarted() {
    if !tinyproxy_installed() {
        println!("skipped: tinyproxy not installed (make test-deps installs it)");
        return;
    }
    let bounds = Bounds {
        scenario: "kill -9 of tinyproxy between client and relay",
        max_wait: CONNECTOR_TIMEOUT + SLACK,
        max_wait_why: "a poll answer the relay wrote into the dying proxy never reaches the \
                       client, so its callers get the 504 at the 6 s connector timeout",
        recovery: POLL_BACKOFF_CAP + SLACK,
        recovery_run: RECOVERY_RUN,
        transport_errors_allowed: false,
    };
    let mut setup = setup("kill-proxy", CONNECTOR_TIMEOUT, McpKind::Http);
    setup.through_proxy = true;
    run_scenario(setup, bounds, |system| {
        let started = Instant::now();
        system.kill_proxy();
        let_time_pass(DOWN_TIME);
        system.restart_proxy();
        (started, Instant::now())
    });
}
