//! Reachability of a hop's first stop: DNS, TCP and the route the hop's agent will take (direct,
//! through a proxy, or a Unix socket), each under a deadline. The settings named in fixes come
//! from [`Keys`], per hop.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self};
use std::thread;
use std::time::{Duration, Instant};

use ureq::http::Uri;

use crate::net::{HopNet, ProxyChoice};

use super::*;

/// Setting names used in fixes, per hop.
pub(super) struct Keys {
    pub(super) url: &'static str,
    pub(super) proxy: &'static str,
    pub(super) client_cert: &'static str,
}

pub(super) const CONTROL_PLANE_KEYS: Keys = Keys {
    url: "CONTROL_PLANE_BASE_URL",
    proxy: "CONTROL_PLANE_HTTP_PROXY or TUNNEL_CLIENT_HTTP_PROXY",
    client_cert: "CONTROL_PLANE_CLIENT_CERT and CONTROL_PLANE_CLIENT_KEY",
};

pub(super) const MCP_KEYS: Keys = Keys {
    url: "MCP_SERVER_URL",
    proxy: "the channel's http-proxy=, MCP_HTTP_PROXY or TUNNEL_CLIENT_HTTP_PROXY",
    client_cert: "MCP_CLIENT_CERT and MCP_CLIENT_KEY (or client-cert=/client-key= on the channel)",
};

/// How a hop's connections leave this host.
pub(super) enum Route {
    Direct,
    Proxy(ProxyRoute),
    Unix(PathBuf),
}

pub(super) struct ProxyRoute {
    /// Credential-free, e.g. `http://proxy.corp:3128`.
    pub(super) shown: String,
    pub(super) host: String,
    pub(super) port: u16,
    /// An HTTP(S) proxy, used with `CONNECT` (SOCKS proxies are not).
    pub(super) connect: bool,
    /// Where its setting comes from, for fixes.
    pub(super) setting: String,
}

/// One hop as the checks see it: where it goes, how, and which settings fix what.
pub(super) struct Hop<'a> {
    /// `control plane` or `channel NAME`.
    pub(super) label: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) https: bool,
    pub(super) route: Route,
    pub(super) has_identity: bool,
    pub(super) keys: &'a Keys,
}

impl Hop<'_> {
    pub(super) fn name(&self, check: &str) -> String {
        format!("{}: {check}", self.label)
    }

    pub(super) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Builds the hop for `url`, or reports why it cannot be checked.
pub(super) fn hop<'a>(
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
pub(super) fn route(net: &HopNet, uri: &Uri, keys: &Keys) -> Result<Route, String> {
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

pub(super) fn scheme_of(protocol: ureq::ProxyProtocol) -> &'static str {
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
pub(super) fn reach(hop: &Hop<'_>, report: &mut Report) -> bool {
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
pub(super) fn resolve(
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
pub(super) fn connect(
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

pub(super) fn unix_socket(hop: &Hop<'_>, path: &Path, report: &mut Report) -> bool {
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
pub(super) fn within<T: Send + 'static>(
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
