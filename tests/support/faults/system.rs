//! One fault scenario's whole system on loopback: a tunnels file with one tunnel, the real relay,
//! the real client, the fault MCP server (over HTTP, or as the client's stdio child), optionally
//! tinyproxy between client and relay; and the faults themselves: kill -9 and restart of each
//! piece, SIGSTOP/SIGCONT of the client. Each scenario builds its own, so scenarios share no
//! process and no port. Everything is killed when the `System` drops, stopped processes included.

use std::path::PathBuf;
use std::time::Duration;

use super::load::Load;
use super::processes::{
    HttpMcpServer, RestartableProxy, RestartableRelay, send_signal, stdio_mcp_command,
};
use crate::support::{ClientBuilder, PROMPTLY, TempDir, Tunnel, TunnelClient, add_tunnel};

/// The client's log line when its supervisor has started a stdio child, followed by the pid.
const STDIO_STARTED: &str = "[main] stdio server started (pid ";

/// Where the MCP server runs.
#[derive(Clone, Copy, PartialEq)]
pub enum McpKind {
    /// A separate process the client calls over HTTP.
    Http,
    /// The client's own stdio child, under its supervisor.
    Stdio,
}

/// How to build one scenario's system.
pub struct Setup {
    pub label: &'static str,
    /// The relay's `--connector.timeout`: every caller's deadline, and the commands'.
    pub connector_timeout: Duration,
    /// The client's `CONTROL_PLANE_POLL_TIMEOUT`.
    pub poll_timeout: Duration,
    pub mcp: McpKind,
    /// tinyproxy between the client and the relay.
    pub through_proxy: bool,
}

pub struct System {
    // Declared in the order they are dropped: the client before what it talks to.
    client: Option<TunnelClient>,
    proxy: Option<RestartableProxy>,
    mcp: Option<HttpMcpServer>,
    relay: RestartableRelay,
    tunnel: Tunnel,
    mcp_kind: McpKind,
    poll_timeout: Duration,
    executions_log: PathBuf,
    _dir: TempDir,
}

impl System {
    pub fn start(setup: &Setup) -> System {
        let dir = TempDir::new(&format!("faults-{}", setup.label));
        let tunnel = add_tunnel(&dir.tunnels_file(), setup.label);
        let executions_log = dir.path().join("executions.log");
        let timeout = format!("{}ms", setup.connector_timeout.as_millis());
        let relay =
            RestartableRelay::start(&dir.tunnels_file(), &[("--connector.timeout", &timeout)]);
        let mcp = (setup.mcp == McpKind::Http).then(|| HttpMcpServer::start(&executions_log));
        let proxy = setup.through_proxy.then(RestartableProxy::start);
        let mut system = System {
            client: None,
            proxy,
            mcp,
            relay,
            tunnel,
            mcp_kind: setup.mcp,
            poll_timeout: setup.poll_timeout,
            executions_log,
            _dir: dir,
        };
        system.start_client();
        system
    }

    /// Caller threads sending `tools/call`s through the relay's connector endpoint.
    pub fn load(&self, label: &str, callers: usize, caller_timeout: Duration) -> Load {
        Load::start(
            &self.relay.mcp_url(&self.tunnel.id),
            &self.tunnel.connector_key,
            label,
            callers,
            caller_timeout,
        )
    }

    pub fn executions_log(&self) -> &PathBuf {
        &self.executions_log
    }

    fn client_builder(&self) -> ClientBuilder {
        let builder = ClientBuilder::run(
            &self.relay.base_url(),
            &self.tunnel.runtime_key,
            &self
                .mcp
                .as_ref()
                .map(HttpMcpServer::url)
                .unwrap_or_default(),
        )
        .env("CONTROL_PLANE_TUNNEL_ID", &self.tunnel.id)
        .env(
            "CONTROL_PLANE_POLL_TIMEOUT",
            &format!("{}ms", self.poll_timeout.as_millis()),
        )
        .env("LOG_LEVEL", "info");
        let builder = match self.mcp_kind {
            McpKind::Http => builder,
            McpKind::Stdio => builder
                .without_env("MCP_SERVER_URL")
                .env("MCP_COMMAND", &stdio_mcp_command(&self.executions_log)),
        };
        match &self.proxy {
            Some(proxy) => builder.env("CONTROL_PLANE_HTTP_PROXY", &proxy.url()),
            None => builder,
        }
    }

    fn start_client(&mut self) {
        let client = self.client_builder().spawn();
        if self.mcp_kind == McpKind::Stdio {
            assert!(
                client.wait_for_stderr(STDIO_STARTED, PROMPTLY),
                "the stdio child did not start within {PROMPTLY:?}:\n{}",
                client.stderr()
            );
        }
        self.client = Some(client);
    }

    fn client(&self) -> &TunnelClient {
        self.client.as_ref().expect("the client is running")
    }

    /// `kill -9` of the client.
    pub fn kill_client(&mut self) {
        if let Some(client) = self.client.as_mut() {
            client.kill_and_collect();
        }
    }

    /// A new client process (a new instance) for the same tunnel.
    pub fn restart_client(&mut self) {
        self.start_client();
    }

    pub fn stop_client(&self) {
        send_signal(self.client().pid(), "STOP");
    }

    pub fn continue_client(&self) {
        send_signal(self.client().pid(), "CONT");
    }

    pub fn kill_relay(&mut self) {
        self.relay.kill();
    }

    /// The relay again, same port, same tunnels file.
    pub fn restart_relay(&mut self) {
        self.relay.restart();
    }

    pub fn kill_mcp_server(&mut self) {
        self.mcp.as_mut().expect("an HTTP MCP server").kill();
    }

    pub fn restart_mcp_server(&mut self) {
        self.mcp.as_mut().expect("an HTTP MCP server").restart();
    }

    pub fn kill_proxy(&mut self) {
        self.proxy.as_mut().expect("a proxy").kill();
    }

    pub fn restart_proxy(&mut self) {
        self.proxy.as_mut().expect("a proxy").restart();
    }

    /// How many stdio children the client's supervisor has started so far.
    pub fn stdio_starts(&self) -> usize {
        self.client().stderr().matches(STDIO_STARTED).count()
    }

    /// `kill -9` of the current stdio child; returns its pid.
    pub fn kill_stdio_child(&self) -> u32 {
        let stderr = self.client().stderr();
        let at = stderr.rfind(STDIO_STARTED).expect("a stdio child started") + STDIO_STARTED.len();
        let pid: u32 = stderr[at..]
            .split(')')
            .next()
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid after {STDIO_STARTED:?}"));
        send_signal(pid, "KILL");
        pid
    }

    /// Waits until the supervisor has started child number `count`.
    pub fn wait_for_stdio_starts(&self, count: usize, timeout: Duration) -> bool {
        self.client()
            .wait_for_stderr_count(STDIO_STARTED, count, timeout)
    }
}
