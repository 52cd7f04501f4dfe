//! `mcp-tunnel doctor`: reads exactly the configuration `run` would, then tries each hop for real
//! and prints one line per check, ✓ or ✗, with the fix for every failure.
//!
//! Control plane: DNS and TCP to its host (or, with a proxy, to the proxy), the proxy's `CONNECT`,
//! TLS, and the API key with the metadata call `GET /v1/tunnels/{id}`. It never polls: a poll may
//! hand out a real queued command, which doctor could not answer, and the contract has no
//! side-effect-free poll. Each MCP channel: reachability (DNS/TCP, proxy or Unix socket), then a
//! real MCP `initialize`, `notifications/initialized` and `tools/list` (ending the session with
//! `DELETE` over HTTP; closing stdin, then killing, for stdio servers).
//!
//! Every check has a deadline, so nothing hangs. Output never carries a secret: no API key,
//! header value, proxy credential, PEM or URL query; fixes name the variables to change.
//! Exit codes: 0 every check passed, 1 some failed, 2 configuration or usage error.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ureq::http::{Response, Uri};
use ureq::{Agent, Body};

use crate::config::{self, ChannelTransport, Parsed, RunConfig};
use crate::control_plane;
use crate::http_client::{self, AgentOptions};
use crate::mcp::sse::SseReader;
use crate::net::{HopNet, ProxyChoice};
use crate::secret::Secret;
use crate::wire::TunnelMetadata;
use crate::wire::{ChannelInfo, SERVER_INFO_HEADER, ServerInfo};

/// The longest any one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a stdio server gets to exit after its stdin closes, before it is killed.
const STDIO_GRACE: Duration = Duration::from_secs(2);
/// The MCP protocol version doctor asks for.
const PROTOCOL_VERSION: &str = "2025-06-18";
/// `clientInfo.name` in doctor's `initialize`.
const CLIENT_INFO_NAME: &str = "mcp-tunnel-doctor";
/// Largest answer (JSON body, one event, one stdio line) doctor reads.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// Most `tools/list` pages followed.
const MAX_TOOL_PAGES: usize = 20;
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
    let args: Vec<OsString> = args.into_iter().filter(|a| a != "--json").collect();
    let env = |name: &str| std::env::var(name).ok();
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
    check_all(&cfg, &mut report);
    report.finish()
}

/// `--help` text for `doctor`.
pub fn help() -> String {
    "mcp-tunnel doctor: check the configuration `run` would use, then try each hop for real

Usage: mcp-tunnel doctor [--json] [OPTIONS]

Reads exactly what `mcp-tunnel run` reads: it takes every option of `run` (flags, their
environment variables and --env-file), so run it with the same environment as the service.
See `mcp-tunnel run --help` for the options.

Checks, one line each with ✓ or ✗ and the fix for every failure:
  control plane  DNS, TCP (or the proxy's DNS, TCP and CONNECT), TLS, and the API key with
                 GET /v1/tunnels/{id}. It never polls: a poll could take a real queued command.
  MCP channels   DNS/TCP, proxy or Unix socket, then initialize, notifications/initialized and
                 tools/list (HTTP sessions are ended with DELETE; stdio servers are started,
                 asked, then stopped).
Every check has a 10 s deadline. No secret is ever printed.

Options:
  --json         Print one JSON document: {\"ok\": bool, \"checks\": [{\"name\", \"ok\",
                 \"detail\", \"fix\"}]}
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
}

impl Report {
    fn new(json: bool) -> Report {
        Report {
            json,
            checks: Vec::new(),
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
            let doc = Doc { ok, checks };
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
    report.pass(
        "configuration",
        format!(
            "read as `run` would: tunnel {} at {}{}; channels {}",
            cp.tunnel_id,
            cp.base_url,
            cp.url_path,
            channels.join(", ")
        ),
    );
    check_control_plane(cfg, report);
    for channel in &cfg.mcp.channels {
        let label = format!("channel {}", channel.name);
        match &channel.transport {
            ChannelTransport::Http { url, net } => {
                check_http_channel(cfg, &label, url, net, report)
            }
            ChannelTransport::Stdio { argv } => {
                check_stdio_channel(&label, argv, &cfg.secret_env_vars, report)
            }
        }
    }
}

/// Setting names used in fixes, per hop.
struct Keys {
    url: &'static str,
    proxy: &'static str,
    client_cert: &'static str,
}

const CONTROL_PLANE_KEYS: Keys = Keys {
    url: "CONTROL_PLANE_BASE_URL",
    proxy: "CONTROL_PLANE_HTTP_PROXY or TUNNEL_CLIENT_HTTP_PROXY",
    client_cert: "CONTROL_PLANE_CLIENT_CERT and CONTROL_PLANE_CLIENT_KEY",
};

const MCP_KEYS: Keys = Keys {
    url: "MCP_SERVER_URL",
    proxy: "the channel's http-proxy=, MCP_HTTP_PROXY or TUNNEL_CLIENT_HTTP_PROXY",
    client_cert: "MCP_CLIENT_CERT and MCP_CLIENT_KEY (or client-cert=/client-key= on the channel)",
};

/// How a hop's connections leave this host.
enum Route {
    Direct,
    Proxy(ProxyRoute),
    Unix(PathBuf),
}

struct ProxyRoute {
    /// Credential-free, e.g. `http://proxy.corp:3128`.
    shown: String,
    host: String,
    port: u16,
    /// An HTTP(S) proxy, used with `CONNECT` (SOCKS proxies are not).
    connect: bool,
    /// Where its setting comes from, for fixes.
    setting: String,
}

/// One hop as the checks see it: where it goes, how, and which settings fix what.
struct Hop<'a> {
    /// `control plane` or `channel NAME`.
    label: String,
    host: String,
    port: u16,
    https: bool,
    route: Route,
    has_identity: bool,
    keys: &'a Keys,
}

impl Hop<'_> {
    fn name(&self, check: &str) -> String {
        format!("{}: {check}", self.label)
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Builds the hop for `url`, or reports why it cannot be checked.
fn hop<'a>(
    label: &str,
    url: &str,
    net: &HopNet,
    keys: &'a Keys,
    report: &mut Report,
) -> Option<Hop<'a>> {
    let parsed = url.parse::<Uri>().ok().and_then(|uri| {
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Some((uri, https, host, port))
    });
    let Some((uri, https, host, port)) = parsed else {
        report.fail(
            format!("{label}: URL"),
            format!("{} is not a usable URL", shown_url(url)),
            format!("correct {}", keys.url),
        );
        return None;
    };
    let route = match route(net, &uri, keys) {
        Ok(route) => route,
        Err(problem) => {
            report.fail(
                format!("{label}: proxy"),
                problem,
                format!("correct the proxy URL in {}", keys.proxy),
            );
            return None;
        }
    };
    Some(Hop {
        label: label.to_string(),
        host,
        port,
        https,
        route,
        has_identity: net.identity.is_some(),
        keys,
    })
}

/// The route the hop's agent will take: the same choice [`http_client::build_agent`] makes.
fn route(net: &HopNet, uri: &Uri, keys: &Keys) -> Result<Route, String> {
    if let Some(path) = &net.unix_socket {
        return Ok(Route::Unix(path.clone()));
    }
    let (proxy, shown, setting) = match &net.proxy {
        ProxyChoice::Direct => return Ok(Route::Direct),
        ProxyChoice::Explicit(url) => {
            let proxy =
                ureq::Proxy::new(url.expose()).map_err(|_| format!("proxy {url} is not usable"))?;
            (proxy, url.to_string(), keys.proxy.to_string())
        }
        ProxyChoice::FromEnvironment => match ureq::Proxy::try_from_env() {
            Some(proxy) if !proxy.is_no_proxy(uri) => {
                let shown = format!(
                    "{}://{}:{}",
                    scheme_of(proxy.protocol()),
                    proxy.host(),
                    proxy.port()
                );
                let setting =
                    "the environment's HTTPS_PROXY/HTTP_PROXY/ALL_PROXY (or NO_PROXY)".to_string();
                (proxy, shown, setting)
            }
            _ => return Ok(Route::Direct),
        },
    };
    Ok(Route::Proxy(ProxyRoute {
        shown,
        host: proxy
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: proxy.port(),
        connect: matches!(
            proxy.protocol(),
            ureq::ProxyProtocol::Http | ureq::ProxyProtocol::Https
        ),
        setting,
    }))
}

fn scheme_of(protocol: ureq::ProxyProtocol) -> &'static str {
    match protocol {
        ureq::ProxyProtocol::Http => "http",
        ureq::ProxyProtocol::Https => "https",
        ureq::ProxyProtocol::Socks4 => "socks4",
        ureq::ProxyProtocol::Socks4A => "socks4a",
        ureq::ProxyProtocol::Socks5 => "socks5",
        _ => "socks5h",
    }
}

/// DNS and TCP to the hop's first stop: its host, its proxy, or its Unix socket. False when a
/// check failed (the later checks of the hop are then not run).
fn reach(hop: &Hop<'_>, report: &mut Report) -> bool {
    match &hop.route {
        Route::Direct => {
            let fix_dns = format!(
                "check the host name in {} and this host's DNS (/etc/resolv.conf); if only a \
                 proxy can resolve outside names, set a proxy ({})",
                hop.keys.url, hop.keys.proxy
            );
            let fix_tcp = format!(
                "make the server listen on {} or correct {}",
                hop.authority(),
                hop.keys.url
            );
            let fix_filtered = format!(
                "a firewall may drop the traffic to {}; if outbound connections must go through \
                 a proxy, set {}",
                hop.authority(),
                hop.keys.proxy
            );
            let Some(addrs) = resolve(hop, &hop.host, hop.port, "DNS", &fix_dns, report) else {
                return false;
            };
            connect(
                hop,
                &hop.authority(),
                &addrs,
                "TCP",
                &fix_tcp,
                &fix_filtered,
                report,
            )
        }
        Route::Proxy(proxy) => {
            let fix_dns = format!(
                "check the proxy's host name in {} and this host's DNS",
                proxy.setting
            );
            let fix_tcp = format!(
                "check the proxy's host and port in {} and that the proxy is running",
                proxy.setting
            );
            let fix_filtered = format!(
                "a firewall may drop the traffic to the proxy; check its address in {}",
                proxy.setting
            );
            let what = format!("proxy {}", proxy.shown);
            let Some(addrs) = resolve(hop, &proxy.host, proxy.port, "proxy DNS", &fix_dns, report)
            else {
                return false;
            };
            connect(
                hop,
                &what,
                &addrs,
                "proxy TCP",
                &fix_tcp,
                &fix_filtered,
                report,
            )
        }
        Route::Unix(path) => unix_socket(hop, path, report),
    }
}

/// Resolves `host`; IP literals need no lookup and get no line.
fn resolve(
    hop: &Hop<'_>,
    host: &str,
    port: u16,
    check: &str,
    fix: &str,
    report: &mut Report,
) -> Option<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    let name = host.to_string();
    let result = within(CHECK_TIMEOUT, move || {
        (name.as_str(), port)
            .to_socket_addrs()
            .map(|addrs| addrs.collect::<Vec<_>>())
    });
    match result {
        Some(Ok(addrs)) if !addrs.is_empty() => {
            let mut ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            ips.dedup();
            report.pass(hop.name(check), format!("{host} → {}", ips.join(", ")));
            Some(addrs)
        }
        Some(Ok(_)) => {
            report.fail(hop.name(check), format!("{host} has no address"), fix);
            None
        }
        Some(Err(e)) => {
            report.fail(hop.name(check), format!("cannot resolve {host}: {e}"), fix);
            None
        }
        None => {
            report.fail(
                hop.name(check),
                format!("no answer for {host} within {}s", CHECK_TIMEOUT.as_secs()),
                fix,
            );
            None
        }
    }
}

/// Connects to each address in turn until one accepts.
fn connect(
    hop: &Hop<'_>,
    what: &str,
    addrs: &[SocketAddr],
    check: &str,
    fix_refused: &str,
    fix_filtered: &str,
    report: &mut Report,
) -> bool {
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let mut last: Option<std::io::Error> = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left.min(CONNECT_TIMEOUT)) {
            Ok(_) => {
                let at = if *what == addr.to_string() {
                    String::new()
                } else {
                    format!(" ({addr})")
                };
                report.pass(hop.name(check), format!("connected to {what}{at}"));
                return true;
            }
            Err(e) => last = Some(e),
        }
    }
    use std::io::ErrorKind as K;
    let (detail, fix) = match last.as_ref().map(std::io::Error::kind) {
        Some(K::ConnectionRefused) => ("connection refused".to_string(), fix_refused),
        Some(K::TimedOut | K::WouldBlock) | None => (
            format!("timed out after {}s", CONNECT_TIMEOUT.as_secs()),
            fix_filtered,
        ),
        Some(K::HostUnreachable | K::NetworkUnreachable) => {
            ("no route to the host".to_string(), fix_filtered)
        }
        Some(_) => (
            last.map(|e| e.to_string()).unwrap_or_default(),
            fix_filtered,
        ),
    };
    report.fail(hop.name(check), format!("{what}: {detail}"), fix);
    false
}

fn unix_socket(hop: &Hop<'_>, path: &Path, report: &mut Report) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let name = hop.name("Unix socket");
    let shown = path.display().to_string();
    let fix_path = "start the MCP server, or correct unix-socket= on the channel in MCP_SERVER_URL"
        .to_string();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.fail(name, format!("{shown} does not exist"), fix_path);
            return false;
        }
        Err(e) => {
            report.fail(
                name,
                format!("{shown}: {e}"),
                "run doctor as the user the service runs as, or fix the permissions",
            );
            return false;
        }
        Ok(meta) if !meta.file_type().is_socket() => {
            report.fail(name, format!("{shown} is not a socket"), fix_path);
            return false;
        }
        Ok(_) => {}
    }
    let target = path.to_path_buf();
    match within(CHECK_TIMEOUT, move || {
        std::os::unix::net::UnixStream::connect(target)
    }) {
        Some(Ok(_)) => {
            report.pass(name, format!("{shown} accepts connections"));
            true
        }
        Some(Err(e)) => {
            let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
                "run doctor as the user the service runs as, or fix the socket's permissions"
                    .to_string()
            } else {
                fix_path
            };
            let detail = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "connection refused".to_string()
            } else {
                e.to_string()
            };
            report.fail(name, format!("{shown}: {detail}"), fix);
            false
        }
        None => {
            report.fail(
                name,
                format!("{shown}: no connection within {}s", CHECK_TIMEOUT.as_secs()),
                fix_path,
            );
            false
        }
    }
}

/// Runs `work` on its own thread and waits at most `limit` for it (a stuck resolver or
/// connect is abandoned, not waited for).
fn within<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("doctor-check".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .ok()?;
    rx.recv_timeout(limit).ok()
}

/// The stages of the hop's first request through its agent: the proxy's `CONNECT`, then TLS.
/// Reports a line for each stage it got through (or the one that failed); `stage` names the
/// check a plain transport failure is reported under. `None` when the request got no answer.
fn first_answer(
    hop: &Hop<'_>,
    result: Result<Response<Body>, ureq::Error>,
    stage: &str,
    report: &mut Report,
) -> Option<Response<Body>> {
    let connect_proxy = match &hop.route {
        Route::Proxy(p) if p.connect => Some(p),
        _ => None,
    };
    let target = hop.authority();
    let connect_ok = |report: &mut Report, p: &ProxyRoute| {
        report.pass(
            hop.name("proxy CONNECT"),
            format!("{} opened a tunnel to {target}", p.shown),
        );
    };
    let tls_ok = |report: &mut Report| {
        report.pass(
            hop.name("TLS"),
            format!("certificate for {} verified", hop.host),
        );
    };
    let e = match result {
        Ok(resp) => {
            if let Some(p) = connect_proxy {
                connect_ok(report, p);
            }
            if hop.https {
                tls_ok(report);
            }
            return Some(resp);
        }
        Err(e) => e,
    };
    if let ureq::Error::ConnectProxyFailed(reason) = &e {
        let shown = connect_proxy.map_or("the proxy".to_string(), |p| p.shown.clone());
        let setting = connect_proxy.map_or(hop.keys.proxy.to_string(), |p| p.setting.clone());
        let status = reason
            .split_whitespace()
            .find_map(|w| w.split('/').next()?.parse::<u16>().ok());
        let (detail, fix) = match status {
            Some(407) => (
                format!("{shown} answered 407 Proxy Authentication Required"),
                format!(
                    "give the proxy's user and password in its URL (http://user:pass@host:port) \
                     in {setting}; for NTLM/Kerberos proxies run a local relay such as cntlm or px"
                ),
            ),
            Some(403) => (
                format!("{shown} refused CONNECT to {target} (403 Forbidden)"),
                format!("ask the proxy's administrators to allow CONNECT to {target}"),
            ),
            Some(status @ 502..=504) => (
                format!("{shown} could not reach {target} (it answered CONNECT with {status})"),
                format!(
                    "check {}; is the server up, and may the proxy connect to it?",
                    hop.keys.url
                ),
            ),
            Some(status) => (
                format!("{shown} answered {status} to CONNECT {target}"),
                format!(
                    "ask the proxy's administrators why CONNECT to {target} fails, or correct \
                     {setting}"
                ),
            ),
            None => (
                format!("{shown} did not answer CONNECT {target}"),
                format!("check that {setting} names an HTTP proxy"),
            ),
        };
        report.fail(hop.name("proxy CONNECT"), detail, fix);
        return None;
    }
    if let Some(tls) = tls_problem(&e) {
        // A plain-HTTP proxy has answered CONNECT before TLS starts; an https:// proxy may be the
        // TLS peer that failed.
        if let Some(p) = connect_proxy.filter(|p| p.shown.starts_with("http://")) {
            connect_ok(report, p);
        }
        let (detail, fix) = describe_tls(hop, &tls);
        report.fail(hop.name("TLS"), detail, fix);
        return None;
    }
    let via = match &hop.route {
        Route::Proxy(p) => format!(" through {}", p.shown),
        Route::Unix(path) => format!(" over {}", path.display()),
        Route::Direct => String::new(),
    };
    let (detail, fix) = match &e {
        ureq::Error::Timeout(_) => (
            format!(
                "no answer from {target}{via} within {}s",
                CHECK_TIMEOUT.as_secs()
            ),
            format!(
                "the server (or a proxy or firewall on the way) does not answer; check it is up \
                 and that {} is right",
                hop.keys.url
            ),
        ),
        ureq::Error::HostNotFound => (
            format!("cannot resolve {}{via}", hop.host),
            format!("check the host name in {}", hop.keys.url),
        ),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            format!("{target}{via}: connection refused"),
            format!(
                "make the server listen on {target} or correct {}",
                hop.keys.url
            ),
        ),
        ureq::Error::Io(io) => (
            format!("{target}{via}: {io}"),
            format!("check the server at {target} and {}", hop.keys.url),
        ),
        other => (
            format!(
                "{target}{via}: {}",
                crate::failure::Failure::from_ureq(other).describe()
            ),
            format!("check the server at {target} and {}", hop.keys.url),
        ),
    };
    report.fail(hop.name(stage), detail, fix);
    None
}

/// A TLS failure inside a transport error.
enum TlsProblem<'e> {
    Rustls(&'e rustls::Error),
    Other(String),
}

fn tls_problem(e: &ureq::Error) -> Option<TlsProblem<'_>> {
    match e {
        ureq::Error::Rustls(r) => Some(TlsProblem::Rustls(r)),
        ureq::Error::Tls(text) => Some(TlsProblem::Other((*text).to_string())),
        ureq::Error::Pem(_) => Some(TlsProblem::Other("unreadable PEM data".to_string())),
        ureq::Error::TlsRequired => Some(TlsProblem::Other("TLS was not set up".to_string())),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(TlsProblem::Rustls),
        _ => None,
    }
}

/// The detail and fix for a TLS failure, as precisely as rustls tells it.
fn describe_tls(hop: &Hop<'_>, problem: &TlsProblem<'_>) -> (String, String) {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let host = &hop.host;
    let url_key = hop.keys.url;
    let cert_key = hop.keys.client_cert;
    let ca_fix = "set CA_BUNDLE to a PEM file with the CA that issued the server's certificate \
                  (behind a TLS-inspecting proxy: the proxy's CA), or CA_BUNDLE_SYSTEM=true to \
                  trust this host's CA bundle"
        .to_string();
    let error = match problem {
        TlsProblem::Other(text) => {
            return (
                format!("TLS with {host} failed: {text}"),
                format!("check {url_key} and the TLS settings (CA_BUNDLE, {cert_key})"),
            );
        }
        TlsProblem::Rustls(e) => *e,
    };
    match error {
        E::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => (
                format!(
                    "certificate not trusted — add the issuing CA with CA_BUNDLE (the issuer of \
                     {host}'s certificate is not among the trusted roots)"
                ),
                ca_fix,
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => (
                format!("the certificate is not valid for the name {host}"),
                format!(
                    "use in {url_key} a host name the certificate was issued for, or have the \
                     certificate reissued for {host}"
                ),
            ),
            C::Expired | C::ExpiredContext { .. } => (
                format!("the certificate of {host} has expired"),
                "renew the server's certificate (or correct this host's clock)".to_string(),
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => (
                format!("the certificate of {host} is not valid yet"),
                "correct this host's clock (or the certificate's start date)".to_string(),
            ),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => (
                format!("the certificate of {host} is not for server authentication"),
                "reissue the server certificate with the serverAuth extended key usage".to_string(),
            ),
            C::Revoked => (
                format!("the certificate of {host} is revoked"),
                "install a new server certificate".to_string(),
            ),
            other => (
                format!("the certificate of {host} was rejected: {other:?}"),
                format!("check the server's certificate; if it is from a private CA, {ca_fix}"),
            ),
        },
        E::AlertReceived(
            alert @ (A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::AccessDenied
            | A::HandshakeFailure),
        ) => {
            if hop.has_identity {
                (
                    format!("{host} rejected our client certificate (TLS alert {alert:?})"),
                    format!(
                        "check that {cert_key} hold a certificate issued by a CA the server trusts"
                    ),
                )
            } else if *alert == A::HandshakeFailure {
                (
                    format!("{host} ended the TLS handshake (alert {alert:?})"),
                    format!(
                        "the server may require a client certificate ({cert_key}) or TLS \
                         settings this client lacks"
                    ),
                )
            } else {
                (
                    format!("{host} requires a client certificate (TLS alert {alert:?})"),
                    format!("set {cert_key} (mutual TLS)"),
                )
            }
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => (
            format!("{host} did not answer with TLS: {error}"),
            format!("check the scheme and port in {url_key}: is it http:// rather than https://?"),
        ),
        E::PeerIncompatible(_) => (
            format!("no TLS version or cipher in common with {host}: {error}"),
            "the server needs TLS 1.2 or 1.3 with modern ciphers".to_string(),
        ),
        other => (
            format!("TLS with {host} failed: {other}"),
            format!("check {url_key} and the TLS settings (CA_BUNDLE, {cert_key})"),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Control plane

fn check_control_plane(cfg: &RunConfig, report: &mut Report) {
    let cp = &cfg.control_plane;
    if let Some(hop) = hop(
        "control plane",
        &cp.base_url,
        &cp.net,
        &CONTROL_PLANE_KEYS,
        report,
    ) && reach(&hop, report)
    {
        check_metadata(cfg, &hop, report);
    }
    report.skip(
        "control plane: poll",
        "skipped on purpose: a poll can hand out a real queued command, which doctor could not \
         answer, and the contract has no side-effect-free poll (`run` polls as soon as it starts)",
    );
}

/// `GET /v1/tunnels/{id}` with the headers `run` sends: proves the path, TLS and the key.
fn check_metadata(cfg: &RunConfig, hop: &Hop<'_>, report: &mut Report) {
    let cp = &cfg.control_plane;
    let agent = match http_client::build_agent(
        &AgentOptions {
            max_idle_age: Duration::from_secs(90),
            max_idle_per_host: 1,
        },
        &cp.net,
    ) {
        Ok(agent) => agent,
        Err(e) => {
            report.fail(
                hop.name("HTTP client"),
                e,
                format!("correct {}", CONTROL_PLANE_KEYS.proxy),
            );
            return;
        }
    };
    let channels: Vec<ChannelInfo> = cfg
        .mcp
        .channels
        .iter()
        .map(|c| ChannelInfo {
            name: c.name.clone(),
            proc_affinity: matches!(c.transport, ChannelTransport::Stdio { .. }),
        })
        .collect();
    let url = cp.tunnel_url();
    let mut req = agent.get(&url);
    for (name, value) in &cp.extra_headers {
        req = req.header(name.as_str(), value.expose());
    }
    let req = req
        .header("Authorization", format!("Bearer {}", cp.api_key.expose()))
        .header("Accept", "application/json")
        .header("X-Tunnel-Client-Name", control_plane::CLIENT_NAME)
        .header("X-Tunnel-Client-Version", env!("CARGO_PKG_VERSION"))
        .header("X-Tunnel-Client-Instance-Id", crate::crypto::random_hex(16))
        .header(SERVER_INFO_HEADER, ServerInfo::new(channels).to_header());
    let result = http_client::with_timeout(req, CHECK_TIMEOUT).call();
    let Some(mut resp) = first_answer(hop, result, "auth", report) else {
        return;
    };
    let status = resp.status().as_u16();
    let location = header(&resp, "location");
    let body = read_body(&mut resp);
    let path = format!("{}/v1/tunnels/{}", cp.url_path, cp.tunnel_id);
    let service = service_error(&body);
    let name = hop.name("auth");
    match status {
        200 => match serde_json::from_slice::<TunnelMetadata>(&body) {
            Ok(meta) => report.pass(
                name,
                format!(
                    "API key accepted for tunnel {} (name {:?}; GET {path} → 200)",
                    cp.tunnel_id,
                    shorten(&meta.name)
                ),
            ),
            Err(_) => report.fail(
                name,
                format!("GET {path} answered 200 but not with tunnel metadata"),
                "CONTROL_PLANE_BASE_URL or CONTROL_PLANE_URL_PATH points at something that is \
                 not the control plane",
            ),
        },
        401 => report.fail(
            name,
            format!("API key rejected: check CONTROL_PLANE_API_KEY (HTTP 401{service})"),
            "put this tunnel's runtime key in CONTROL_PLANE_API_KEY (or in OPENAI_API_KEY or \
             --control-plane.api-key, whichever you use); it may have been rotated",
        ),
        403 => report.fail(
            name,
            format!(
                "API key not allowed to use tunnel {} (HTTP 403{service})",
                cp.tunnel_id
            ),
            "check that CONTROL_PLANE_API_KEY belongs to the tunnel in CONTROL_PLANE_TUNNEL_ID \
             and may use it",
        ),
        404 => report.fail(
            name,
            format!("tunnel not found: GET {path} answered 404{service}"),
            "check CONTROL_PLANE_TUNNEL_ID, and behind an API gateway CONTROL_PLANE_URL_PATH",
        ),
        300..=399 => report.fail(
            name,
            format!(
                "GET {path} was redirected (HTTP {status}){}",
                location
                    .map(|l| format!(" to {}", shown_url(&l)))
                    .unwrap_or_default()
            ),
            "put the control plane's final origin in CONTROL_PLANE_BASE_URL (redirects are not \
             followed)",
        ),
        407 => report.fail(
            name,
            format!("a proxy asked for credentials (HTTP 407{service})"),
            format!(
                "give the proxy's credentials in {}",
                CONTROL_PLANE_KEYS.proxy
            ),
        ),
        429 | 500..=599 => report.fail(
            name,
            format!("the control plane answered HTTP {status}{service}"),
            "the service (or a gateway before it) has a problem or is rate limiting; try again \
             later",
        ),
        _ => report.fail(
            name,
            format!("GET {path} answered HTTP {status}{service}"),
            "check CONTROL_PLANE_BASE_URL, CONTROL_PLANE_URL_PATH and \
             CONTROL_PLANE_EXTRA_HEADERS",
        ),
    }
}

/// `: code: message` from a service error body, or nothing.
fn service_error(body: &[u8]) -> String {
    serde_json::from_slice::<crate::wire::ApiErrorResponse>(body)
        .ok()
        .map(|e| {
            let message = shorten(&e.error.message);
            match e.error.code {
                Some(code) => format!(": {}: {message}", shorten(&code)),
                None => format!(": {message}"),
            }
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// MCP over HTTP

/// One MCP session with a Streamable HTTP server, as `run` would talk to it.
struct HttpSession<'a> {
    agent: Agent,
    url: &'a str,
    extra_headers: &'a [(String, Secret)],
    session_id: Option<String>,
    protocol: Option<String>,
}

impl HttpSession<'_> {
    fn decorate<B>(&self, mut req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        for (name, value) in self.extra_headers {
            req = req.header(name.as_str(), value.expose());
        }
        req = req.header("Accept", "application/json, text/event-stream");
        if let Some(id) = &self.session_id {
            req = req.header("Mcp-Session-Id", id);
        }
        if let Some(version) = &self.protocol {
            req = req.header("MCP-Protocol-Version", version);
        }
        req
    }

    fn post(&self, message: &Value, timeout: Duration) -> Result<Response<Body>, ureq::Error> {
        let req = self
            .decorate(self.agent.post(self.url))
            .header("Content-Type", "application/json");
        http_client::with_timeout(req, timeout).send(message.to_string().as_str())
    }

    fn delete(&self) -> Result<u16, ureq::Error> {
        let req = self.decorate(self.agent.delete(self.url));
        let mut resp = http_client::with_timeout(req, CHECK_TIMEOUT).call()?;
        let _ = read_body(&mut resp);
        Ok(resp.status().as_u16())
    }
}

fn check_http_channel(cfg: &RunConfig, label: &str, url: &str, net: &HopNet, report: &mut Report) {
    let Some(hop) = hop(label, url, net, &MCP_KEYS, report) else {
        return;
    };
    if !reach(&hop, report) {
        return;
    }
    let agent = match http_client::build_agent(
        &AgentOptions {
            max_idle_age: cfg.mcp.connection_max_ttl,
            max_idle_per_host: 1,
        },
        net,
    ) {
        Ok(agent) => agent,
        Err(e) => {
            report.fail(
                hop.name("HTTP client"),
                e,
                format!("correct {}", MCP_KEYS.proxy),
            );
            return;
        }
    };
    let mut session = HttpSession {
        agent,
        url,
        extra_headers: &cfg.mcp.extra_headers,
        session_id: None,
        protocol: None,
    };
    let header_names: Vec<&str> = cfg
        .mcp
        .extra_headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();

    // initialize
    let init_name = hop.name("MCP initialize");
    let result = session.post(&initialize_request(), CHECK_TIMEOUT);
    let Some(mut resp) = first_answer(&hop, result, "MCP initialize", report) else {
        return;
    };
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let (detail, fix) = http_refusal(&mut resp, url, &header_names, "initialize");
        report.fail(init_name, detail, fix);
        return;
    }
    session.session_id = header(&resp, "mcp-session-id");
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let init = match read_rpc_answer(&mut resp, &json!(1), deadline) {
        Ok(message) => message,
        Err(problem) => {
            report.fail(
                init_name,
                format!("no usable answer to initialize: {problem}"),
                format!(
                    "check that {} is a Streamable HTTP MCP endpoint",
                    shown_url(url)
                ),
            );
            end_http_session(&session);
            return;
        }
    };
    let Some(summary) = initialize_summary(&init, &init_name, report) else {
        end_http_session(&session);
        return;
    };
    session.protocol = summary.protocol.clone();
    report.pass(
        init_name,
        format!(
            "{}{}",
            summary.text,
            if session.session_id.is_some() {
                ", session issued"
            } else {
                ""
            }
        ),
    );

    // notifications/initialized
    let initialized_name = hop.name("MCP initialized");
    match session.post(&initialized_notification(), CHECK_TIMEOUT) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                let (detail, fix) =
                    http_refusal(&mut resp, url, &header_names, "notifications/initialized");
                report.fail(initialized_name, detail, fix);
                end_http_session(&session);
                return;
            }
            let _ = read_body(&mut resp);
            report.pass(
                initialized_name,
                format!("notifications/initialized accepted (HTTP {status})"),
            );
        }
        Err(e) => {
            report.fail(
                initialized_name,
                format!(
                    "notifications/initialized failed: {}",
                    crate::failure::Failure::from_ureq(&e).describe()
                ),
                "check the MCP server's logs",
            );
            end_http_session(&session);
            return;
        }
    }

    // tools/list
    let tools_name = hop.name("MCP tools/list");
    if !summary.has_tools {
        report.skip(
            tools_name,
            "not asked: the server declares no tools capability",
        );
    } else {
        let deadline = Instant::now() + CHECK_TIMEOUT;
        let outcome = list_tools(deadline, |message, deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut resp = session.post(message, left).map_err(|e| {
                format!(
                    "no answer: {}",
                    crate::failure::Failure::from_ureq(&e).describe()
                )
            })?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(http_refusal(&mut resp, url, &header_names, "tools/list").0);
            }
            read_rpc_answer(&mut resp, &message["id"], deadline)
        });
        let ended = end_http_session(&session);
        match outcome {
            Ok(count) => report.pass(tools_name, format!("{}{ended}", tool_count(count))),
            Err(problem) => report.fail(
                tools_name,
                problem,
                "check the MCP server's logs; `run` forwards tools/list as it is",
            ),
        }
        return;
    }
    end_http_session(&session);
}

/// `DELETE` for a session the server issued, and a note on how it went. Not a check of its own:
/// servers may refuse client-ended sessions (405).
fn end_http_session(session: &HttpSession<'_>) -> String {
    if session.session_id.is_none() {
        return String::new();
    }
    match session.delete() {
        Ok(status) => format!("; session ended (DELETE → {status})"),
        Err(e) => format!(
            "; ending the session failed ({})",
            crate::failure::Failure::from_ureq(&e).describe()
        ),
    }
}

fn initialize_request() -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": CLIENT_INFO_NAME, "version": env!("CARGO_PKG_VERSION")},
        },
    })
}

fn initialized_notification() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

fn tools_list_request(id: u64, cursor: Option<&str>) -> Value {
    let params = match cursor {
        Some(c) => json!({ "cursor": c }),
        None => json!({}),
    };
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})
}

/// Counts the tools over every page, calling `ask` for each `tools/list` request.
fn list_tools(
    deadline: Instant,
    mut ask: impl FnMut(&Value, Instant) -> Result<Value, String>,
) -> Result<usize, String> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    for page in 0..MAX_TOOL_PAGES {
        let request = tools_list_request(2 + page as u64, cursor.as_deref());
        let answer = ask(&request, deadline)?;
        if let Some(error) = answer.get("error") {
            return Err(format!("tools/list failed: {}", rpc_error_text(error)));
        }
        let tools = answer["result"]["tools"]
            .as_array()
            .ok_or("the tools/list answer has no tools array")?;
        count += tools.len();
        match answer["result"]["nextCursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
            _ => return Ok(count),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(count)
}

fn tool_count(count: usize) -> String {
    match count {
        1 => "1 tool".to_string(),
        n => format!("{n} tools"),
    }
}

struct InitSummary {
    text: String,
    protocol: Option<String>,
    has_tools: bool,
}

/// Reads an `initialize` answer; reports (and returns `None` for) a JSON-RPC error.
fn initialize_summary(answer: &Value, name: &str, report: &mut Report) -> Option<InitSummary> {
    if let Some(error) = answer.get("error") {
        report.fail(
            name,
            format!("initialize failed: {}", rpc_error_text(error)),
            "check the MCP server's logs; it refused to start a session",
        );
        return None;
    }
    let result = &answer["result"];
    let server = &result["serverInfo"];
    let server_name = server["name"].as_str().unwrap_or("(unnamed)");
    let version = server["version"]
        .as_str()
        .map(|v| format!(" {}", shorten(v)))
        .unwrap_or_default();
    let protocol = result["protocolVersion"].as_str().map(str::to_string);
    let has_tools = match result.get("capabilities") {
        Some(Value::Object(caps)) => caps.contains_key("tools"),
        // A server that declares nothing: ask anyway.
        _ => true,
    };
    Some(InitSummary {
        text: format!(
            "server {:?}{version}, protocol {}",
            shorten(server_name),
            protocol.as_deref().unwrap_or("(not stated)")
        ),
        protocol,
        has_tools,
    })
}

/// The detail and fix for a non-2xx answer of the MCP server.
fn http_refusal(
    resp: &mut Response<Body>,
    url: &str,
    header_names: &[&str],
    what: &str,
) -> (String, String) {
    let status = resp.status().as_u16();
    let location = header(resp, "location");
    let challenge = header(resp, "www-authenticate")
        .and_then(|v| v.split_whitespace().next().map(str::to_string));
    let body = read_body(resp);
    let rpc = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error").map(rpc_error_text))
        .map(|t| format!(": {t}"))
        .unwrap_or_default();
    let detail = format!("{what} answered HTTP {status}{rpc}");
    let fix = match status {
        401 | 403 => {
            let asks = challenge
                .map(|s| format!(" (it asks for {})", shorten(&s)))
                .unwrap_or_default();
            if header_names.is_empty() {
                format!(
                    "the server wants credentials{asks}: send them with MCP_EXTRA_HEADERS, e.g. \
                     \"Authorization: Bearer …\""
                )
            } else {
                format!(
                    "the server refused the credentials{asks}: check the values of the headers \
                     in MCP_EXTRA_HEADERS ({})",
                    header_names.join(", ")
                )
            }
        }
        404 => format!(
            "no MCP endpoint (or session) at {}: check the path in MCP_SERVER_URL",
            shown_url(url)
        ),
        405 | 406 | 415 => format!(
            "{} does not take Streamable HTTP MCP requests: check MCP_SERVER_URL (the legacy \
             HTTP+SSE transport is not supported)",
            shown_url(url)
        ),
        300..=399 => format!(
            "put the final URL{} in MCP_SERVER_URL (redirects are not followed)",
            location
                .map(|l| format!(" ({})", shown_url(&l)))
                .unwrap_or_default()
        ),
        407 => format!("give the proxy's credentials in {}", MCP_KEYS.proxy),
        500..=599 => "the MCP server failed: check its logs".to_string(),
        _ => "check the MCP server's logs and MCP_SERVER_URL".to_string(),
    };
    (detail, fix)
}

/// The JSON-RPC message answering `id`, from a JSON body or an event stream.
fn read_rpc_answer(
    resp: &mut Response<Body>,
    id: &Value,
    deadline: Instant,
) -> Result<Value, String> {
    let content_type = header(resp, "content-type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if content_type == "text/event-stream" {
        let reader = BufReader::new(resp.body_mut().as_reader());
        let mut events = SseReader::new(reader, MAX_ANSWER);
        loop {
            if Instant::now() >= deadline {
                return Err("no answer on the event stream in time".to_string());
            }
            let event = match events.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => return Err("the event stream ended without the answer".to_string()),
                Err(e) => return Err(format!("reading the event stream: {e}")),
            };
            if !event.is_message() {
                continue;
            }
            if let Ok(message) = serde_json::from_str::<Value>(&event.data)
                && is_answer(&message, id)
            {
                return Ok(message);
            }
        }
    }
    let body = read_body(resp);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("empty body".to_string());
    }
    let message: Value = serde_json::from_slice(&body).map_err(|_| {
        format!(
            "the body is not JSON (Content-Type {})",
            if content_type.is_empty() {
                "none"
            } else {
                &content_type
            }
        )
    })?;
    if is_answer(&message, id) {
        Ok(message)
    } else {
        Err("the body is not a JSON-RPC answer to the request".to_string())
    }
}

fn is_answer(message: &Value, id: &Value) -> bool {
    message.get("id") == Some(id)
        && message.get("method").is_none()
        && (message.get("result").is_some() || message.get("error").is_some())
}

fn rpc_error_text(error: &Value) -> String {
    let code = error["code"]
        .as_i64()
        .map(|c| format!("{c} "))
        .unwrap_or_default();
    let message = error["message"].as_str().unwrap_or("(no message)");
    format!("{code}{}", shorten(message))
}

fn read_body(resp: &mut Response<Body>) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut buf);
    buf
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
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

// ---------------------------------------------------------------------------------------------
// MCP over stdio

/// A stdio server started for the checks: killed when dropped, after its stdin closed and a
/// short grace.
struct StdioServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
}

impl StdioServer {
    fn send(&mut self, message: &Value) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin is closed")?;
        let mut line = message.to_string();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot write to its stdin: {e}"))
    }

    /// The answer to `id`, skipping everything else, until `deadline`.
    fn answer(&mut self, id: &Value, deadline: Instant) -> Result<Value, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(message) if is_answer(&message, id) => return Ok(message),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("timed out after {}s", CHECK_TIMEOUT.as_secs()));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.exit_status(Duration::from_millis(500));
                    return Err(format!("the server closed its stdout{status}"));
                }
            }
        }
    }

    /// `" and exited (…)"` once the child has exited, waiting at most `wait`; else nothing.
    fn exit_status(&mut self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return format!(" and exited ({status})"),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return String::new(),
            }
        }
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        // The MCP stdio convention: closing stdin asks the server to exit.
        drop(self.stdin.take());
        let deadline = Instant::now() + STDIO_GRACE;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of its process group (its pid, kept while any member lives): helpers
        // it forked, and the server itself if it ignored the hint.
        if let Some(group) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server as `run` would: without our secrets in its environment, in its own process
/// group (so its helpers end with it).
fn check_stdio_channel(label: &str, argv: &[String], scrub: &[String], report: &mut Report) {
    let name = |check: &str| format!("{label}: {check}");
    let Some(program) = argv.first() else {
        report.fail(name("start"), "the command is empty", "set MCP_COMMAND");
        return;
    };
    let mut command = Command::new(program);
    for name in scrub {
        command.env_remove(name);
    }
    let spawned = command
        .args(&argv[1..])
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let fix = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "install {program} or give its full path in MCP_COMMAND (it is run without a \
                     shell, with this PATH)"
                )
            } else {
                "check MCP_COMMAND and the program's permissions".to_string()
            };
            report.fail(name("start"), format!("cannot start {program}: {e}"), fix);
            return;
        }
    };
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        let _ = thread::Builder::new()
            .name("doctor-stdio".into())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match (&mut reader)
                        .take(MAX_ANSWER as u64)
                        .read_until(b'\n', &mut line)
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if let Ok(message) = serde_json::from_slice::<Value>(&line)
                        && tx.send(message).is_err()
                    {
                        break;
                    }
                }
            });
    }
    let stdin = child.stdin.take();
    let mut server = StdioServer {
        child,
        stdin,
        lines: rx,
    };
    report.pass(name("start"), format!("started {program} (pid {pid})"));

    let fix_init = format!(
        "run the command by hand ({program} …) to see its errors; it must speak MCP as \
         newline-delimited JSON-RPC on stdin/stdout"
    );
    let init_name = name("MCP initialize");
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let init = server
        .send(&initialize_request())
        .and_then(|()| server.answer(&json!(1), deadline));
    let init = match init {
        Ok(answer) => answer,
        Err(problem) => {
            report.fail(
                init_name,
                format!("no answer to initialize: {problem}"),
                fix_init,
            );
            return;
        }
    };
    let Some(summary) = initialize_summary(&init, &init_name, report) else {
        return;
    };
    report.pass(init_name, summary.text);
    let tools_name = name("MCP tools/list");
    if let Err(problem) = server.send(&initialized_notification()) {
        report.fail(tools_name, format!("after initialize: {problem}"), fix_init);
        return;
    }
    if !summary.has_tools {
        report.skip(
            tools_name,
            "not asked: the server declares no tools capability",
        );
        return;
    }
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let outcome = list_tools(deadline, |message, deadline| {
        server.send(message)?;
        server.answer(&message["id"], deadline)
    });
    match outcome {
        Ok(count) => report.pass(tools_name, tool_count(count)),
        Err(problem) => report.fail(tools_name, problem, fix_init),
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
    fn answers_match_their_id_only() {
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        assert!(is_answer(&answer, &json!(1)));
        assert!(!is_answer(&answer, &json!(2)));
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "roots/list"});
        assert!(!is_answer(&request, &json!(1)));
    }

    #[test]
    fn tools_are_counted_over_pages() {
        let mut pages = vec![
            json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [{}]}}),
            json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": [{}, {}], "nextCursor": "n"}}),
        ];
        let count = list_tools(Instant::now() + CHECK_TIMEOUT, |request, _| {
            assert_eq!(request["method"], "tools/list");
            Ok(pages.pop().unwrap())
        });
        assert_eq!(count, Ok(3));
        let error = list_tools(Instant::now() + CHECK_TIMEOUT, |_, _| {
            Ok(json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32601, "message": "nope"}}))
        });
        assert!(error.unwrap_err().contains("-32601 nope"));
    }

    #[test]
    fn long_server_text_is_cut_to_one_line() {
        let text = format!("a\nb{}", "x".repeat(500));
        let short = shorten(&text);
        assert!(!short.contains('\n'));
        assert!(short.chars().count() <= MAX_SHOWN + 1);
    }
}
