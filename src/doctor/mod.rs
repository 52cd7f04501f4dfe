//! `mcp-tunnel doctor`: reads exactly the configuration `run` would, then tries each hop for real
//! and prints one line per check, ✓ or ✗, with the fix for every failure.
//!
//! Control plane: DNS and TCP to its host (or, with a proxy, to the proxy), the proxy's `CONNECT`,
//! TLS, and the API key with the metadata call `GET /v1/tunnels/{id}`. It never polls: a poll may
//! hand out a real queued command, which doctor could not answer, and the contract has no
//! side-effect-free poll. Each MCP channel: reachability (DNS/TCP, proxy or Unix socket), then a
//! real MCP `initialize`, `notifications/initialized` and `tools/list` (ending the session with
//! `DELETE` over HTTP; closing stdin, then killing, for stdio servers). An HTTP `main` also gets
//! `run`'s OAuth discovery, reported as a line of its own.
//!
//! Every check has a deadline, so nothing hangs. Output never carries a secret: no API key,
//! header value, proxy credential, PEM or URL query; fixes name the variables to change.
//! Exit codes: 0 every check passed, 1 some failed, 2 configuration or usage error.
//!
//! This file holds the command, the report and the order of checks; one file per hop kind:
//! [`reach`] (DNS, TCP, proxy, Unix socket), [`tls`] (the first request: `CONNECT`, TLS),
//! [`control_plane`] (the metadata call), [`mcp`] (the MCP session, on `run`'s transports),
//! [`oauth`] (main's OAuth metadata).

use std::ffi::OsString;
use std::io::Write;
use std::time::Duration;

use crate::config::{self, ChannelTransport, Parsed, RunConfig};

mod control_plane;
mod mcp;
mod oauth;
mod reach;
mod tls;

use control_plane::*;
use mcp::*;
use oauth::*;
use reach::*;
use tls::*;

/// The longest any one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a stdio server to stop (`run`'s stop: stdin closed, SIGTERM, SIGKILL, each
/// after a grace), so doctor never exits leaving it behind.
const STDIO_STOP_TIMEOUT: Duration = Duration::from_secs(12);
/// The MCP protocol version doctor asks for.
const PROTOCOL_VERSION: &str = "2025-06-18";
/// `clientInfo.name` in doctor's `initialize`.
const CLIENT_INFO_NAME: &str = "mcp-tunnel-doctor";
/// Largest control-plane answer doctor reads.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// Longest piece of server-provided text (an error message, a name) shown.
const MAX_SHOWN: usize = 200;

const PASS: &str = "✓";
const FAIL: &str = "✗";
const SKIP: &str = "–";

/// `mcp-tunnel doctor [--json] [run's options]`. Returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    // Doctor starts the stdio servers `run` would: they get the same protection from us.
    crate::secret::make_non_dumpable();
    let json_output = args.iter().any(|a| a == "--json");
    let show_config = args.iter().any(|a| a == "--show-config");
    let args: Vec<OsString> = (args.into_iter())
        .filter(|a| a != "--json" && a != "--show-config")
        .collect();
    let env = |name: &str| std::env::var(name).ok();
    // Where each setting comes from; the same errors as below, so only a valid one is shown.
    let settings = match config::provenance::run_settings(args.clone(), &env) {
        Ok(Some(settings)) => settings,
        _ => Vec::new(),
    };
    if show_config && !settings.is_empty() {
        print!("{}", config::provenance::settings_text(&settings, true));
        return 0;
    }
    if !json_output && !settings.is_empty() {
        println!("configuration (values not from defaults, and where they come from):");
        print!("{}", config::provenance::settings_text(&settings, false));
    }
    let cfg = match config::parse_run(args, &env) {
        Ok(Parsed::Help) => {
            print!("{}", help());
            return 0;
        }
        Ok(Parsed::Run(cfg)) => cfg,
        Err(e) => {
            eprintln!("mcp-tunnel doctor: configuration error: {e}");
            if json_output {
                let mut report = Report::new(true);
                report.fail(
                    "configuration",
                    e.to_string(),
                    format!("fix {}; see `mcp-tunnel run --help`", e.key),
                );
                report.finish();
            }
            return 2;
        }
    };
    let mut report = Report::new(json_output);
    report.settings = settings.into_iter().filter(|s| !s.from_default).collect();
    check_all(&cfg, &mut report);
    report.finish()
}

/// `--help` text for `doctor`.
pub fn help() -> String {
    "mcp-tunnel doctor: check the configuration `run` would use, then try each hop for real

Usage: mcp-tunnel doctor [--json | --show-config] [OPTIONS]

Reads exactly what `mcp-tunnel run` reads: it takes every option of `run` (flags, their
environment variables, --env-file and the YAML config file or profile), so run it with the same
environment as the service. See `mcp-tunnel run --help` for the options. First it lists each
setting not left at its default and where it came from (flag, env VAR, env file, or yaml
FILE:LINE KEY); secrets are shown as <redacted>, references such as env:VAR as written.

Checks, one line each with ✓ or ✗ and the fix for every failure:
  control plane  DNS, TCP (or the proxy's DNS, TCP and CONNECT), TLS, and the API key with
                 GET /v1/tunnels/{id}. It never polls: a poll could take a real queued command.
  MCP channels   DNS/TCP, proxy or Unix socket, then initialize, notifications/initialized and
                 tools/list (HTTP sessions are ended with DELETE; stdio servers are started,
                 asked, then stopped).
  OAuth          for an HTTP main, its protected-resource metadata (as the oauth_discovery
                 command finds it); informational unless --mcp.require-oauth-discovery.
Every check has a 10 s deadline. No secret is ever printed.

Options:
  --json         Print one JSON document: {\"ok\": bool, \"checks\": [{\"name\", \"ok\",
                 \"detail\", \"fix\"}], \"settings\": [{\"flag\", \"value\", \"origin\"}]}
  --show-config  Print every setting (defaults too) with where it came from, then exit 0
                 without checking anything (2 for a configuration error).
  -h, --help     Print this help.

Exit codes: 0 every check passed, 1 a check failed, 2 configuration or usage error.
"
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// The report

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    Pass,
    Fail,
    /// Informational: neither passes nor fails the run.
    Skip,
}

struct Check {
    name: String,
    verdict: Verdict,
    detail: String,
    fix: Option<String>,
}

/// The checks so far; in text mode each is printed as it completes.
struct Report {
    json: bool,
    checks: Vec<Check>,
    /// For `--json`: the settings not left at their defaults, and their origins.
    settings: Vec<config::provenance::Setting>,
}

impl Report {
    fn new(json: bool) -> Report {
        Report {
            json,
            checks: Vec::new(),
            settings: Vec::new(),
        }
    }

    fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name.into(), Verdict::Pass, detail.into(), None);
    }

    fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name.into(), Verdict::Fail, detail.into(), Some(fix.into()));
    }

    fn skip(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name.into(), Verdict::Skip, detail.into(), None);
    }

    fn push(&mut self, name: String, verdict: Verdict, detail: String, fix: Option<String>) {
        let check = Check {
            name,
            verdict,
            detail,
            fix,
        };
        if !self.json {
            let mark = match check.verdict {
                Verdict::Pass => PASS,
                Verdict::Fail => FAIL,
                Verdict::Skip => SKIP,
            };
            let mut line = format!("{mark} {} — {}\n", check.name, check.detail);
            if let Some(fix) = &check.fix {
                line.push_str(&format!("    fix: {fix}\n"));
            }
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
        self.checks.push(check);
    }

    fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.verdict != Verdict::Fail)
    }

    /// Prints the verdict (or the JSON document); returns the exit code.
    fn finish(self) -> i32 {
        let ok = self.ok();
        if self.json {
            #[derive(serde::Serialize)]
            struct Line<'a> {
                name: &'a str,
                ok: bool,
                detail: &'a str,
                fix: Option<&'a str>,
                #[serde(skip_serializing_if = "std::ops::Not::not")]
                skipped: bool,
            }
            #[derive(serde::Serialize)]
            struct Doc<'a> {
                ok: bool,
                checks: Vec<Line<'a>>,
                #[serde(skip_serializing_if = "<[_]>::is_empty")]
                settings: &'a [config::provenance::Setting],
            }
            let checks = self
                .checks
                .iter()
                .map(|c| Line {
                    name: &c.name,
                    ok: c.verdict != Verdict::Fail,
                    detail: &c.detail,
                    fix: c.fix.as_deref(),
                    skipped: c.verdict == Verdict::Skip,
                })
                .collect();
            let doc = Doc {
                ok,
                checks,
                settings: &self.settings,
            };
            let text =
                serde_json::to_string_pretty(&doc).expect("strings and booleans always serialize");
            println!("{text}");
        } else {
            let failed = self
                .checks
                .iter()
                .filter(|c| c.verdict == Verdict::Fail)
                .count();
            let run = self
                .checks
                .iter()
                .filter(|c| c.verdict != Verdict::Skip)
                .count();
            if ok {
                println!("\nAll {run} checks passed.");
            } else {
                println!("\n{failed} of {run} checks failed; see the fix under each ✗.");
            }
        }
        if ok { 0 } else { 1 }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks

fn check_all(cfg: &RunConfig, report: &mut Report) {
    let cp = &cfg.control_plane;
    let channels: Vec<String> = cfg
        .mcp
        .channels
        .iter()
        .map(|c| {
            let kind = match c.transport {
                ChannelTransport::Http { .. } => "http",
                ChannelTransport::Stdio { .. } => "stdio",
            };
            format!("{} ({kind})", c.name)
        })
        .collect();
    let organization = match &cp.organization_id {
        Some(id) => format!("; organization {id} (OpenAI-Organization)"),
        None => String::new(),
    };
    report.pass(
        "configuration",
        format!(
            "read as `run` would: tunnel {} at {}{}{organization}; channels {}",
            cp.tunnel_id,
            cp.base_url,
            cp.url_path,
            channels.join(", ")
        ),
    );
    for notice in &cfg.notices {
        // Settings of the official client for parts we do not ship: harmless, but said.
        report.pass("ignored setting", notice.clone());
    }
    check_control_plane(cfg, report);
    for channel in &cfg.mcp.channels {
        let label = format!("channel {}", channel.name);
        match &channel.transport {
            ChannelTransport::Http { url, net } => {
                check_http_channel(cfg, &label, url, net, report)
            }
            ChannelTransport::Stdio { argv, .. } => {
                check_stdio_channel(&channel.name, &label, argv, &cfg.secret_env_vars, report)
            }
        }
    }
    let main = (cfg.mcp.channels.iter()).find(|c| c.name == crate::wire::DEFAULT_CHANNEL);
    if let Some(ChannelTransport::Http { url, net }) = main.map(|c| &c.transport) {
        check_oauth(cfg, url, net, report);
    }
}

// ---------------------------------------------------------------------------------------------
// Wording helpers

/// A (bounded) response body; what could not be read is left out.
fn read_body(resp: &mut ureq::http::Response<ureq::Body>) -> Vec<u8> {
    use std::io::Read;
    let mut buf = Vec::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut buf);
    buf
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A URL without its query or fragment (which may carry tokens) and without user info.
fn shown_url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let (base, rest) = url.split_at(cut);
    let base = match base.split_once("://") {
        Some((scheme, after)) => {
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_string(),
    };
    if rest.is_empty() {
        base
    } else {
        format!("{base}?…")
    }
}

/// Server-provided text, cut to a readable length and to one line.
fn shorten(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > MAX_SHOWN {
        let cut: String = one_line.chars().take(MAX_SHOWN).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_lose_queries_and_credentials() {
        assert_eq!(
            shown_url("https://u:p@mcp.internal:8443/mcp?token=abc#x"),
            "https://mcp.internal:8443/mcp?…"
        );
        assert_eq!(
            shown_url("http://127.0.0.1:1/mcp"),
            "http://127.0.0.1:1/mcp"
        );
    }

    #[test]
    fn long_server_text_is_cut_to_one_line() {
        let text = format!("a\nb{}", "x".repeat(500));
        let short = shorten(&text);
        assert!(!short.contains('\n'));
        assert!(short.chars().count() <= MAX_SHOWN + 1);
    }
}
