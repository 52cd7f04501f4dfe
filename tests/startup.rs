//! The first seconds of `mcp-tunnel run` (issue 13, items 4 and 5), on the real binary between
//! loopback fakes: a tunnel the control plane does not know yet (404) is retried within a second
//! instead of after 30 s, and `/readyz` turns 200 as soon as a poll is held, not when the first
//! long-poll returns; a control plane that refuses (401, 404, 5xx, connection refused) never
//! shows ready.
//!
//! Every wait is bounded by a deadline; every process is killed when its test ends.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    ClientBuilder, Command, FakeControlPlane, FakeMcp, PROMPTLY, Scripted, TempDir, TunnelClient,
    dead_loopback_url, let_time_pass, rpc_request, secs,
};

/// Pause between two looks in a bounded polling loop.
const LOOK_AGAIN: Duration = Duration::from_millis(25);

/// A client whose health server writes its URL into `dir`.
fn client(control_plane_url: &str, api_key: &str, mcp: &FakeMcp, dir: &TempDir) -> ClientBuilder {
    ClientBuilder::run(control_plane_url, api_key, mcp.url())
        .env("HEALTH_URL_FILE", &url_file(dir).display().to_string())
}

fn url_file(dir: &TempDir) -> PathBuf {
    dir.path().join("health.url")
}

/// The health server of one client.
struct Health {
    base: String,
    agent: ureq::Agent,
}

impl Health {
    /// Waits for the client's health URL file (written atomically once the server listens).
    fn of(dir: &TempDir) -> Health {
        let path = url_file(dir);
        let deadline = Instant::now() + PROMPTLY;
        let base = loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && text.ends_with('\n')
            {
                break text.trim().to_string();
            }
            assert!(Instant::now() < deadline, "no {}", path.display());
            std::thread::sleep(LOOK_AGAIN);
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        Health { base, agent }
    }

    /// `/readyz`: status and body.
    fn readyz(&self) -> (u16, String) {
        let url = format!("{}/readyz", self.base);
        let mut response = self
            .agent
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }
}

// ---------------------------------------------------------------------------------------------
// Item 4: a tunnel the control plane does not know yet

#[test]
fn a_404_at_start_is_retried_within_a_second() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    // A relay that has not read the new tunnel yet: two 404s, then it knows it.
    control_plane.script_polls(2, Scripted::status(404));
    let ping = Command::jsonrpc("first", rpc_request(1, "ping", json!({})));
    control_plane.push(ping.clone());
    let started = Instant::now();
    let client = ClientBuilder::for_fakes(&control_plane, mcp.url()).spawn();

    // The third poll takes the command: within a few seconds of start, not after 30 s.
    control_plane.wait_until_handed_out("first", secs(3.0));
    let polls = control_plane.poll_instants();
    assert!(polls.len() >= 3, "{} polls", polls.len());
    for pair in polls[..3].windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap < secs(1.5), "a 404 was retried after {gap:?}");
    }
    let posted = control_plane.wait_for_terminal_response("first", PROMPTLY);
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    assert!(
        client.wait_for_stderr("the tunnel may have been added just now", PROMPTLY),
        "the quick retries are logged as such"
    );
    assert!(started.elapsed() < PROMPTLY);
}

#[test]
fn a_404_after_a_successful_poll_gets_the_slow_backoff() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let client = ClientBuilder::for_fakes(&control_plane, mcp.url()).spawn();
    // Polling works: a second poll means the first returned (empty, after the client's 1 s wait).
    control_plane.wait_for_polls(2, PROMPTLY);
    // Then the tunnel is removed: every poll is a 404 from now on.
    control_plane.script_polls(1000, Scripted::status(404));
    assert!(
        client.wait_for_stderr("the tunnel was not found", PROMPTLY),
        "the 404 is reported as an operator error"
    );
    let rejected = control_plane.poll_count();
    let_time_pass(secs(3.0));
    assert_eq!(
        control_plane.poll_count(),
        rejected,
        "a 404 that followed a success was retried within 3 s"
    );
    assert!(!client.stderr().contains("may have been added just now"));
}

// ---------------------------------------------------------------------------------------------
// Item 5: readiness from the first held poll

#[test]
fn readyz_turns_200_while_the_first_poll_is_held() {
    let dir = TempDir::new("startup-held");
    let control_plane = FakeControlPlane::start();
    control_plane.hold_polls_up_to(Duration::from_secs(20));
    let mcp = FakeMcp::start();
    let started = Instant::now();
    let _client = client(
        control_plane.base_url(),
        control_plane.api_key(),
        &mcp,
        &dir,
    )
    .env("CONTROL_PLANE_POLL_TIMEOUT", "20s")
    .spawn();
    let health = Health::of(&dir);
    let deadline = started + secs(2.0);
    let body = loop {
        let (status, body) = health.readyz();
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} {body:?} 2 s after start"
        );
        std::thread::sleep(LOOK_AGAIN);
    };
    assert_eq!(body, "ready\n");
    // It is the held poll that made it ready: the first poll has not returned yet.
    assert_eq!(control_plane.poll_count(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the first poll returned"
    );
}

#[test]
fn a_refusing_control_plane_never_shows_ready() {
    let mcp = FakeMcp::start();
    // 401: the key is wrong for every request, metadata included.
    let wrong_key = FakeControlPlane::start_with_key("sk-another-key-entirely-0123456789");
    // 404: metadata works, every poll says the tunnel is unknown (past the quick retries too).
    let unknown = FakeControlPlane::start();
    unknown.script_polls(1000, Scripted::status(404));
    // 503: metadata works, every poll fails.
    let failing = FakeControlPlane::start();
    failing.script_polls(1000, Scripted::status(503));
    let cases = [
        ("401", wrong_key.base_url().to_string(), "401"),
        ("404", unknown.base_url().to_string(), "404"),
        ("503", failing.base_url().to_string(), "503"),
        ("refused", dead_loopback_url(""), "last error"),
    ];
    let running: Vec<(&str, &str, TempDir, TunnelClient)> = cases
        .iter()
        .map(|(name, url, needle)| {
            let dir = TempDir::new(&format!("startup-refused-{name}"));
            let key = support::API_KEY;
            let process = client(url, key, &mcp, &dir)
                .env("CONTROL_PLANE_POLL_TIMEOUT", "20s")
                .spawn();
            (*name, *needle, dir, process)
        })
        .collect();
    let healths: Vec<Health> = running
        .iter()
        .map(|(_, _, dir, _)| Health::of(dir))
        .collect();
    let until = Instant::now() + secs(2.5);
    while Instant::now() < until {
        for ((name, ..), health) in running.iter().zip(&healths) {
            let (status, body) = health.readyz();
            assert_ne!(status, 200, "{name}: ready ({body:?})");
        }
        std::thread::sleep(LOOK_AGAIN);
    }
    // And each says why, so the check above did look at a client that had tried.
    for ((name, needle, ..), health) in running.iter().zip(&healths) {
        let (status, body) = health.readyz();
        assert_eq!(status, 503, "{name}: {body}");
        assert!(body.contains(needle), "{name}: {body:?}");
    }
}
