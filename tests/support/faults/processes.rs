//! The processes a fault scenario kills, stops and restarts: the relay on a port it keeps across
//! restarts, the fault MCP server (`tests/fixtures/fault_mcp_server.py`) over HTTP, tinyproxy on a
//! fixed port, and signals sent with the `kill` utility (no `unsafe`). Every handle kills its
//! process when dropped, so a failing test leaves nothing running; a stopped process is killed
//! just the same (SIGKILL also ends a SIGSTOPped process).

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::support::{ClientBuilder, PROMPTLY, TempDir, TunnelClient};

/// The fixture every HTTP and stdio scenario runs as its MCP server.
pub const FAULT_MCP_SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/fault_mcp_server.py"
);

/// The relay's startup log line, followed by its URL.
const RELAY_LISTENING: &str = "relay listening on ";

/// The fixture's readiness line on stdout, followed by its port.
const MCP_LISTENING: &str = "fault-mcp listening on ";

/// Pause between checks of a bounded start-up loop (a log file, a port).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Sends `signal` (`KILL`, `STOP`, `CONT`) to `pid` with the `kill` utility.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

// ---------------------------------------------------------------------------------------------
// Any child process, output captured

/// A child process that is not `mcp-tunnel` (python3, tinyproxy): output captured on reader
/// threads, killed when dropped, output printed if the test is failing.
pub struct Spawned {
    label: String,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Spawned {
    pub fn start(label: &str, command: &mut Command) -> Spawned {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {label}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped stderr")),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || copy_into(pipe, &output));
        }
        Spawned {
            label: label.to_string(),
            child,
            output,
        }
    }

    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the output contains `needle`; false at the deadline or when the process exited.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                return self.output().contains(needle);
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// `kill -9`, then reaps the process.
    pub fn kill(&mut self) {
        // An already exited (and reaped) child makes these fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_into(mut pipe: Box<dyn Read + Send>, output: &Mutex<String>) {
    let mut chunk = [0u8; 4096];
    while let Ok(read @ 1..) = pipe.read(&mut chunk) {
        output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_str(&String::from_utf8_lossy(&chunk[..read]));
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- {} output ----\n{}\n---- end of {} output ----",
                self.label,
                self.output(),
                self.label
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The relay, restartable on its port

/// `mcp-tunnel relay` on a loopback port that stays the same across restarts, serving one
/// tunnels file. Killed when dropped.
pub struct RestartableRelay {
    process: TunnelClient,
    port: u16,
    tunnels_file: PathBuf,
    options: Vec<(String, String)>,
}

impl RestartableRelay {
    /// Starts on a port the relay picks, with `options` (e.g. `--connector.timeout 6s`).
    pub fn start(tunnels_file: &Path, options: &[(&str, &str)]) -> RestartableRelay {
        let options: Vec<(String, String)> = options
            .iter()
            .map(|(flag, value)| (flag.to_string(), value.to_string()))
            .collect();
        let (process, port) = launch_relay(tunnels_file, 0, &options);
        RestartableRelay {
            process,
            port,
            tunnels_file: tunnels_file.to_path_buf(),
            options,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn mcp_url(&self, tunnel_id: &str) -> String {
        format!("{}/v1/mcp/{tunnel_id}", self.base_url())
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.process.kill_and_collect();
    }

    /// A new relay on the same port, same tunnels file, same options.
    pub fn restart(&mut self) {
        let (process, _) = launch_relay(&self.tunnels_file, self.port, &self.options);
        self.process = process;
    }
}

fn launch_relay(
    tunnels_file: &Path,
    port: u16,
    options: &[(String, String)],
) -> (TunnelClient, u16) {
    let mut builder = ClientBuilder::bare()
        .arg("relay")
        .arg("--listen")
        .arg(&format!("127.0.0.1:{port}"))
        .arg("--tunnels-file")
        .arg(path_str(tunnels_file))
        .env("LOG_LEVEL", "info");
    for (flag, value) in options {
        builder = builder.arg(flag).arg(value);
    }
    let process = builder.spawn();
    assert!(
        process.wait_for_stderr(RELAY_LISTENING, PROMPTLY),
        "the relay did not report its address within {PROMPTLY:?}:\n{}",
        process.stderr()
    );
    let stderr = process.stderr();
    let url = stderr[stderr.find(RELAY_LISTENING).expect("the line") + RELAY_LISTENING.len()..]
        .split_whitespace()
        .next()
        .expect("the relay's URL")
        .to_string();
    let bound = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|port| port.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or_else(|| panic!("not a loopback relay URL: {url}"));
    assert!(port == 0 || bound == port, "asked for {port}, got {url}");
    (process, bound)
}

// ---------------------------------------------------------------------------------------------
// The MCP server over HTTP, restartable on its port

/// The fault MCP server over HTTP at `http://127.0.0.1:PORT/mcp`, appending its executions to
/// `executions_log`. Killed when dropped.
pub struct HttpMcpServer {
    process: Spawned,
    port: u16,
    executions_log: PathBuf,
}

impl HttpMcpServer {
    pub fn start(executions_log: &Path) -> HttpMcpServer {
        let (process, port) = launch_http_mcp(executions_log, 0);
        HttpMcpServer {
            process,
            port,
            executions_log: executions_log.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// A new server process on the same port, appending to the same log.
    pub fn restart(&mut self) {
        let (process, _) = launch_http_mcp(&self.executions_log, self.port);
        self.process = process;
    }
}

fn launch_http_mcp(executions_log: &Path, port: u16) -> (Spawned, u16) {
    let mut process = Spawned::start(
        "fault MCP server",
        Command::new("python3")
            .arg(FAULT_MCP_SERVER)
            .arg("http")
            .arg(port.to_string())
            .arg(executions_log),
    );
    assert!(
        process.wait_for_output(MCP_LISTENING, PROMPTLY),
        "the fault MCP server did not start within {PROMPTLY:?}:\n{}",
        process.output()
    );
    let output = process.output();
    let bound = output[output.find(MCP_LISTENING).expect("the line") + MCP_LISTENING.len()..]
        .split_whitespace()
        .next()
        .and_then(|port| port.parse::<u16>().ok())
        .expect("the fault MCP server's port");
    (process, bound)
}

/// The command line (for `MCP_COMMAND`) that runs the fault MCP server on stdio.
pub fn stdio_mcp_command(executions_log: &Path) -> String {
    format!(
        "python3 '{FAULT_MCP_SERVER}' stdio '{}'",
        path_str(executions_log)
    )
}

// ---------------------------------------------------------------------------------------------
// tinyproxy, restartable on its port

/// Whether a real `tinyproxy` can be run; proxy scenarios are skipped without one.
pub fn tinyproxy_installed() -> bool {
    Command::new("tinyproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A real `tinyproxy` in the foreground on a loopback port it keeps across restarts. Killed
/// when dropped.
pub struct RestartableProxy {
    process: Spawned,
    port: u16,
    dir: TempDir,
}

impl RestartableProxy {
    pub fn start() -> RestartableProxy {
        let dir = TempDir::new("fault-proxy");
        // The port is found by binding and releasing it; if something takes it meanwhile,
        // tinyproxy exits and another one is tried.
        for _attempt in 0..3 {
            let port = free_port();
            if let Some(process) = launch_tinyproxy(&dir, port) {
                return RestartableProxy { process, port, dir };
            }
        }
        panic!("tinyproxy could not listen on a free loopback port");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// A new tinyproxy on the same port.
    pub fn restart(&mut self) {
        self.process = launch_tinyproxy(&self.dir, self.port)
            .unwrap_or_else(|| panic!("tinyproxy could not listen again on {}", self.port));
    }
}

/// Starts tinyproxy on `port`; `None` if it exited (the port was taken).
fn launch_tinyproxy(dir: &TempDir, port: u16) -> Option<Spawned> {
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = dir.path().join(format!("tinyproxy-{port}-{start}.log"));
    let conf = dir.path().join(format!("tinyproxy-{port}-{start}.conf"));
    let text = format!(
        "Port {port}\nListen 127.0.0.1\nLogFile \"{}\"\nLogLevel Info\nPidFile \"{}\"\n\
         MaxClients 100\nTimeout 60\n",
        path_str(&log),
        path_str(&dir.path().join(format!("tinyproxy-{port}-{start}.pid"))),
    );
    std::fs::write(&conf, text).expect("write tinyproxy.conf");
    let mut process = Spawned::start(
        "tinyproxy",
        Command::new("tinyproxy").arg("-d").arg("-c").arg(&conf),
    );
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let logged = std::fs::read(&log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        if logged.contains("Accepting connections") {
            return Some(process);
        }
        if matches!(process.child.try_wait(), Ok(Some(_))) {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "tinyproxy did not start within {PROMPTLY:?}:\n{logged}"
        );
        std::thread::sleep(RETRY_PAUSE);
    }
}
