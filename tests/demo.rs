//! `mcp-tunnel demo --once` (issue 13, item 7): relay, client and stub in one process on
//! loopback, the scripted legacy session and then the stateless MCP 2026-07-28 exchange, each
//! crossing relay → client → stub. The test reads what the demo prints.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-tunnel");
/// The whole scripted run takes about a second; this only bounds a broken one.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `mcp-tunnel demo --once` on a free loopback port: exit code, stdout, stderr.
fn run_demo() -> (Option<i32>, String, String) {
    let mut child = Command::new(BINARY)
        .args(["demo", "--once", "--listen", "127.0.0.1:0"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the demo");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

/// The line that starts (after its indentation) with `→ {step}`.
fn line<'a>(stdout: &'a str, step: &str) -> &'a str {
    let wanted = format!("→ {step}");
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&wanted))
        .unwrap_or_else(|| panic!("no line for {step:?} in:\n{stdout}"))
}

#[test]
fn demo_runs_a_legacy_session_then_a_stateless_exchange() {
    let (code, stdout, stderr) = run_demo();
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    // The legacy session, as before.
    assert!(line(&stdout, "initialize").contains("protocol 2025-06-18, session "));
    assert!(line(&stdout, "notifications/initialized").ends_with("← HTTP 202"));
    assert!(
        line(&stdout, "tools/list").ends_with("← echo, add, slow, progress, fail, fail_rpc"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("← notification: progress").count(), 3);
    assert!(stdout.contains("← result: done after 3 steps"), "{stdout}");
    assert!(line(&stdout, "tools/call add 2 + 40").ends_with("← result: 42"));
    assert!(line(&stdout, "DELETE (end session)").ends_with("← HTTP 204"));

    // Then the modern exchange, after it.
    let modern = stdout
        .find("One stateless MCP 2026-07-28 exchange")
        .unwrap_or_else(|| panic!("no modern part:\n{stdout}"));
    assert!(modern > stdout.find("DELETE (end session)").unwrap());
    let discover = line(&stdout, "server/discover");
    assert!(
        discover.contains("← mcp-tunnel-stub ") && discover.contains("versions 2026-07-28,"),
        "{discover}"
    );
    assert!(line(&stdout, "tools/call echo").ends_with("← result: hello, stateless"));
    // The stub compared the headers with the body: they crossed relay and client untouched.
    let mismatch = line(&stdout, "tools/call, Mcp-Name: add");
    assert!(
        mismatch.contains("← HTTP 400, -32020: Header mismatch"),
        "{mismatch}"
    );
}
