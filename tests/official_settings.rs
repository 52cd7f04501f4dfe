//! The official client's settings that `mcp-tunnel run` takes unchanged (issue 20, "small things
//! first"), each with the real binary against the fake control plane and fake MCP servers: the
//! organization header, the start-up listener wait, health over a Unix socket, the official flag
//! spellings and raw HTTP logging — and that every other setting of the official `run` is either
//! honoured or refused by name.

mod support;

use std::time::Duration;

use support::{
    ClientBuilder, Command, FakeControlPlane, FakeMcp, PROMPTLY, TUNNEL_ID, TunnelClient, tool_call,
};

/// A `doctor` run's whole output, once it has finished.
fn doctor_output(builder: ClientBuilder) -> (Option<i32>, String) {
    let mut process: TunnelClient = builder.spawn();
    let status = process
        .wait_exit(Duration::from_secs(60))
        .expect("doctor finishes");
    (status.code(), process.stdout() + &process.stderr())
}

// ---------------------------------------------------------------------------------------------
// CONTROL_PLANE_ORGANIZATION_ID

#[test]
fn the_organization_header_goes_on_every_control_plane_request_and_never_to_mcp() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let _client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("CONTROL_PLANE_ORGANIZATION_ID", "org-Example123")
        .spawn();

    let command = Command::jsonrpc("req-org", tool_call(1, "echo"));
    control_plane.push(command);
    let posted = control_plane.wait_for_terminal_response("req-org", PROMPTLY);
    assert_eq!(posted.resp_code(), Some(200), "{posted:#?}");
    assert_eq!(posted.header("OpenAI-Organization"), Some("org-Example123"));

    let requests = control_plane.requests();
    let tunnel_path = format!("/v1/tunnels/{TUNNEL_ID}");
    for kind in [tunnel_path.clone(), format!("{tunnel_path}/poll")] {
        assert!(
            requests.iter().any(|r| r.path() == kind),
            "no request to {kind}: {requests:#?}"
        );
    }
    for request in &requests {
        assert_eq!(
            request.header_values("OpenAI-Organization"),
            ["org-Example123"],
            "{} {}",
            request.method,
            request.target
        );
    }
    let mcp_requests = mcp.requests();
    assert!(!mcp_requests.is_empty());
    for request in &mcp_requests {
        assert!(
            !request.has_header("OpenAI-Organization"),
            "reached the MCP server: {} {}",
            request.method,
            request.target
        );
    }
}

#[test]
fn the_flag_spelling_wins_over_the_variable_and_doctor_shows_it() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    let builder = ClientBuilder::bare()
        .arg("doctor")
        .arg("--control-plane.organization-id=org-FromFlag")
        .env("CONTROL_PLANE_BASE_URL", control_plane.base_url())
        .env("CONTROL_PLANE_TUNNEL_ID", TUNNEL_ID)
        .env("CONTROL_PLANE_API_KEY", control_plane.api_key())
        .env("CONTROL_PLANE_ORGANIZATION_ID", "org-FromEnv")
        .env("MCP_SERVER_URL", mcp.url());
    let (_, output) = doctor_output(builder);
    assert!(output.contains("organization org-FromFlag"), "{output}");
    let metadata = control_plane
        .requests()
        .into_iter()
        .find(|r| r.path() == format!("/v1/tunnels/{TUNNEL_ID}"))
        .expect("doctor reads the tunnel's metadata");
    assert_eq!(metadata.header("OpenAI-Organization"), Some("org-FromFlag"));
}

#[test]
fn a_bad_organization_id_is_a_configuration_error_naming_it() {
    let control_plane = FakeControlPlane::start();
    let mcp = FakeMcp::start();
    for (bad, key) in [
        ("org-a\u{1}b", "CONTROL_PLANE_ORGANIZATION_ID"),
        ("org-é", "CONTROL_PLANE_ORGANIZATION_ID"),
    ] {
        let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
            .env("CONTROL_PLANE_ORGANIZATION_ID", bad)
            .spawn();
        let status = client.wait_exit(PROMPTLY).expect("exits");
        assert_eq!(status.code(), Some(2), "{bad:?}");
        assert!(client.stderr().contains(key), "{}", client.stderr());
    }
    // Given twice, once in the extra headers: refused rather than sent twice.
    let mut client = ClientBuilder::for_fakes(&control_plane, mcp.url())
        .env("CONTROL_PLANE_ORGANIZATION_ID", "org-1")
        .env("CONTROL_PLANE_EXTRA_HEADERS", "openai-organization: org-2")
        .spawn();
    let status = client.wait_exit(PROMPTLY).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(
        client.stderr().contains("CONTROL_PLANE_EXTRA_HEADERS"),
        "{}",
        client.stderr()
    );
    assert_eq!(control_plane.poll_count(), 0);
}
