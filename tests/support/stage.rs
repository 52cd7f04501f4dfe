//! The stage of the extension's tests (streams, cancellation, server requests): our relay, a
//! tunnel on it, and our client in front of one MCP server (HTTP or a stdio command), returned
//! once the client polls and has heard the relay announce the extension — so no test races the
//! start-up.

use super::{
    ClientBuilder, Connector, PROMPTLY, Relay, RelayBuilder, TempDir, Tunnel, TunnelClient,
    add_tunnel, tunnel_client,
};

/// What every client of a stage logs once it knows the relay speaks the extension.
const EXTENSION_HEARD: &str = "control plane speaks the mcp-tunnel extension: cancel";

pub struct Stage {
    pub client: TunnelClient,
    pub relay: Relay,
    pub tunnel: Tunnel,
    _dir: TempDir,
}

/// How to set a stage up; [`StageBuilder::start`] brings it up.
pub struct StageBuilder<'a> {
    name: &'a str,
    mcp_url: &'a str,
    command: Option<&'a str>,
    relay_options: Vec<(&'a str, &'a str)>,
    client_env: Vec<(&'a str, &'a str)>,
}

impl<'a> Stage {
    /// A stage named `name` (its temp dir and tunnel) in front of the MCP server at `mcp_url`.
    pub fn builder(name: &'a str, mcp_url: &'a str) -> StageBuilder<'a> {
        StageBuilder {
            name,
            mcp_url,
            command: None,
            relay_options: Vec::new(),
            client_env: Vec::new(),
        }
    }
}

impl<'a> StageBuilder<'a> {
    /// The stdio server `command` instead of the HTTP server, when given.
    pub fn command(mut self, command: Option<&'a str>) -> Self {
        self.command = command;
        self
    }

    /// A relay flag and its value.
    pub fn relay_option(mut self, flag: &'a str, value: &'a str) -> Self {
        self.relay_options.push((flag, value));
        self
    }

    /// An environment variable of the client.
    pub fn client_env(mut self, name: &'a str, value: &'a str) -> Self {
        self.client_env.push((name, value));
        self
    }

    pub fn start(self) -> Stage {
        let dir = TempDir::new(self.name);
        let tunnel = add_tunnel(&dir.tunnels_file(), self.name);
        let mut relay = RelayBuilder::new(&dir.tunnels_file());
        for (flag, value) in &self.relay_options {
            relay = relay.option(flag, value);
        }
        let relay = relay.start();
        let mut client: ClientBuilder = tunnel_client(&relay, &tunnel, self.mcp_url);
        for (name, value) in &self.client_env {
            client = client.env(name, value);
        }
        if let Some(command) = self.command {
            client = client
                .without_env("MCP_SERVER_URL")
                .env("MCP_COMMAND", command);
        }
        let client = client.spawn();
        let ready = Connector::new(&relay, &tunnel).wait_until_client_connected();
        assert_eq!(ready.status, 200, "{ready:#?}");
        assert!(
            client.wait_for_stderr(EXTENSION_HEARD, PROMPTLY),
            "{}",
            client.stderr()
        );
        Stage {
            client,
            relay,
            tunnel,
            _dir: dir,
        }
    }
}
