//! Operator-surface checks shared by the client's and the relay's tests: a Prometheus
//! exposition read and validated with every real parser present, and a fake systemd
//! notification socket read with a deadline.

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use super::PROMPTLY;

/// The value of one series (`name{labels}` exactly as exposed) in an exposition text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a sample value is a number"))
        })
}

/// Checks an exposition with every real parser present: `promtool check metrics` (Debian's
/// `prometheus` package, installed by `tests/setup-deps.sh`) and the Python `prometheus_client`
/// parser from the end-to-end suite's venv. Says "skipped" when neither exists.
pub fn assert_valid_exposition(text: &str) {
    let mut checked = false;
    match Process::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(text.as_bytes())
                .expect("write the metrics to promtool");
            let output = child.wait_with_output().expect("run promtool");
            assert!(
                output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
                "promtool check metrics: {}\n{}{}\n--- the exposition:\n{text}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            checked = true;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => panic!("cannot run promtool: {e}"),
    }
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e/venv/bin/python");
    let has_parser = python.exists()
        && Process::new(&python)
            .args(["-c", "import prometheus_client.parser"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if has_parser {
        // Parses every family and sample; the parser raises on anything malformed.
        let script = "import sys\n\
                      from prometheus_client.parser import text_string_to_metric_families\n\
                      families = list(text_string_to_metric_families(sys.stdin.read()))\n\
                      print(sum(len(f.samples) for f in families))\n";
        let mut child = Process::new(&python)
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())
            .expect("write the metrics to python");
        let output = child.wait_with_output().expect("run python");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "prometheus_client parser: {}\n--- the exposition:\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let samples: usize = stdout.trim().parse().expect("a sample count");
        let expected = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(samples, expected, "every sample line parsed");
        checked = true;
    }
    if !checked {
        eprintln!("skipped: no prometheus parser (install promtool or run `make e2e` once)");
    }
}

/// The next datagram on `socket`, or `None` at `deadline`.
fn next_datagram(socket: &UnixDatagram, deadline: Instant) -> Option<String> {
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }
}

/// Reads datagrams until one equals `wanted`; returns everything read.
pub fn read_until(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + PROMPTLY;
    let mut seen = Vec::new();
    while let Some(message) = next_datagram(socket, deadline) {
        let done = message == wanted;
        seen.push(message);
        if done {
            return seen;
        }
    }
    panic!("no {wanted:?} within {PROMPTLY:?}; got {seen:?}");
}
