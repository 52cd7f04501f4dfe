//! Runs the real `mcp-tunnel` binary with a clean environment, captures its output on reader
//! threads (so pipes never fill and tests can search the logs), and kills it on every exit path.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control_plane::{FakeControlPlane, TUNNEL_ID};
use super::watched::Watched;

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-tunnel");

/// Once the process is gone its pipes close at once; this only bounds the wait.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

/// Arguments and environment for one client process. The environment starts empty (plus `PATH`),
/// so the developer's own variables never leak into a test.
pub struct ClientBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ClientBuilder {
    /// `mcp-tunnel run` wired to the fakes: a short poll wait, debug logs.
    pub fn for_fakes(control_plane: &FakeControlPlane, mcp_url: &str) -> ClientBuilder {
        ClientBuilder::run(control_plane.base_url(), control_plane.api_key(), mcp_url)
    }

    /// `mcp-tunnel run` with a complete, valid configuration (tests then break one piece of it).
    pub fn run(control_plane_url: &str, api_key: &str, mcp_url: &str) -> ClientBuilder {
        ClientBuilder::bare()
            .arg("run")
            .env("CONTROL_PLANE_BASE_URL", control_plane_url)
            .env("CONTROL_PLANE_TUNNEL_ID", TUNNEL_ID)
            .env("CONTROL_PLANE_API_KEY", api_key)
            .env("MCP_SERVER_URL", mcp_url)
            .env("CONTROL_PLANE_POLL_TIMEOUT", "1s")
            .env("CONTROL_PLANE_POLL_DEADLINE_GUARDRAIL", "2s")
            .env("SHUTDOWN_DRAIN_TIMEOUT", "10s")
            .env("LOG_LEVEL", "debug")
            // Many clients run at once: each health server on its own free port.
            .env("HEALTH_LISTEN_ADDR", ":0")
    }

    /// No arguments, and only `PATH` in the environment.
    pub fn bare() -> ClientBuilder {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        ClientBuilder {
            args: Vec::new(),
            env: vec![("PATH".into(), path)],
        }
    }

    pub fn arg(mut self, arg: &str) -> ClientBuilder {
        self.args.push(arg.into());
        self
    }

    /// Sets (or replaces) one environment variable.
    pub fn env(self, key: &str, value: &str) -> ClientBuilder {
        let mut builder = self.without_env(key);
        builder.env.push((key.into(), value.into()));
        builder
    }

    pub fn without_env(mut self, key: &str) -> ClientBuilder {
        self.env.retain(|(existing, _)| existing != key);
        self
    }

    pub fn spawn(self) -> TunnelClient {
        self.spawn_wrapped(&[])
    }

    /// Like [`ClientBuilder::spawn`], with the binary started through `wrapper` (a program and
    /// its arguments that exec the rest, e.g. `setpriv --reuid=…`); the pid stays the client's.
    pub fn spawn_wrapped(self, wrapper: &[&str]) -> TunnelClient {
        let (program, wrapper_args) = match wrapper.split_first() {
            Some((program, rest)) => (*program, rest),
            None => (BINARY, &[][..]),
        };
        let binary: &[&str] = if wrapper.is_empty() { &[] } else { &[BINARY] };
        let mut child = Command::new(program)
            .args(wrapper_args)
            .args(binary)
            .args(&self.args)
            .env_clear()
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the mcp-tunnel binary");
        let output = Arc::new(Watched::new(Output::default()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        capture(stdout, Arc::clone(&output), |output| &mut output.stdout);
        capture(stderr, Arc::clone(&output), |output| &mut output.stderr);
        TunnelClient { child, output }
    }
}

#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    streams_closed: usize,
}

/// Copies one pipe into `output` until end of file, on its own thread.
fn capture(
    mut pipe: impl Read + Send + 'static,
    output: Arc<Watched<Output>>,
    buffer: fn(&mut Output) -> &mut Vec<u8>,
) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    output.update(|output| buffer(output).extend_from_slice(&chunk[..read]))
                }
            }
        }
        output.update(|output| output.streams_closed += 1);
    });
}

/// A running `mcp-tunnel` process. Killed when dropped; its stderr is printed if the test failed.
pub struct TunnelClient {
    child: Child,
    output: Arc<Watched<Output>>,
}

impl TunnelClient {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.output
            .read(|output| String::from_utf8_lossy(&output.stderr).into_owned())
    }

    pub fn stdout(&self) -> String {
        self.output
            .read(|output| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits until stderr contains `needle`; false if it did not within `timeout`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_occurrences(|output| &output.stderr, needle, 1, timeout)
    }

    /// Waits until stdout contains `needle`; false if it did not within `timeout`.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_occurrences(|output| &output.stdout, needle, 1, timeout)
    }

    /// Waits until stderr contains `needle` at least `count` times; false if it did not within
    /// `timeout`.
    pub fn wait_for_stderr_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        self.wait_for_occurrences(|output| &output.stderr, needle, count, timeout)
    }

    fn wait_for_occurrences(
        &self,
        stream: fn(&Output) -> &Vec<u8>,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> bool {
        let needle = needle.as_bytes();
        self.output
            .wait_until(Instant::now() + timeout, |output| {
                let found = stream(output)
                    .windows(needle.len())
                    .filter(|window| *window == needle)
                    .count();
                (found >= count).then_some(())
            })
            .is_some()
    }

    /// Sends SIGTERM through the `kill` utility (no `unsafe` needed).
    pub fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit; `None` if it was still running at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        // Both pipes reach end of file when the process exits: wait for that without polling...
        self.output.wait_until(deadline, |output| {
            (output.streams_closed == 2).then_some(())
        });
        // ...then collect the status, which follows at once (bounded, in case a pipe closed early).
        loop {
            if let Some(status) = self.child.try_wait().expect("query child status") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process and waits until all of its output has been captured.
    pub fn kill_and_collect(&mut self) {
        self.kill();
        self.output
            .wait_until(Instant::now() + OUTPUT_DRAIN, |output| {
                (output.streams_closed == 2).then_some(())
            });
    }

    fn kill(&mut self) {
        // Killing an already exited (and reaped) child is harmless: the error is ignored.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TunnelClient {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- mcp-tunnel stderr ----\n{}\n---- end of stderr ----",
                self.stderr()
            );
        }
    }
}

/// Whether process `pid` is gone (a zombie waiting for its reaper counts as gone).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Whether the tests run as root (CI does), which reads any process's memory whatever we do.
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// The wrapper that runs a client (and so its children) as `nobody` when the tests run as root:
/// root reads any process's environment whatever we do, and the deployment these tests guard is
/// a client and its stdio server under one ordinary uid. Opens `dir` to that user. Empty (no
/// wrapper) otherwise.
pub fn as_nobody_if_root(dir: &std::path::Path) -> &'static [&'static str] {
    if !running_as_root() {
        return &[];
    }
    let open = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(dir, open).expect("open the directory to nobody");
    &[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]
}

/// A copy of fixture script `path` inside `dir`, so that `nobody` (see [`as_nobody_if_root`]) can
/// run it even when the checkout is not readable by other users (a `mktemp -d` clone is 0700).
pub fn fixture_copy(dir: &std::path::Path, path: &str) -> String {
    let name = std::path::Path::new(path).file_name().expect("a file name");
    let copy = dir.join(name);
    std::fs::copy(path, &copy).expect("copy the fixture");
    copy.display().to_string()
}
