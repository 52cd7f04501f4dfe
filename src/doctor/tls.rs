//! The hop's first request through the agent `run` builds: the proxy's `CONNECT`, then TLS,
//! and for a TLS failure the most precise detail and fix rustls lets us give.

use super::*;

/// The stages of the hop's first request through its agent: the proxy's `CONNECT`, then TLS.
/// Reports a line for each stage it got through (or the one that failed); `stage` names the
/// check a plain transport failure is reported under. False when the request got no answer.
pub(super) fn first_answer(
    hop: &Hop<'_>,
    result: Result<(), &ureq::Error>,
    stage: &str,
    report: &mut Report,
) -> bool {
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
        Ok(()) => {
            if let Some(p) = connect_proxy {
                connect_ok(report, p);
            }
            if hop.https {
                tls_ok(report);
            }
            return true;
        }
        Err(e) => e,
    };
    if let ureq::Error::ConnectProxyFailed(reason) = e {
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
        return false;
    }
    if let Some(tls) = tls_problem(e) {
        // A plain-HTTP proxy has answered CONNECT before TLS starts; an https:// proxy may be the
        // TLS peer that failed.
        if let Some(p) = connect_proxy.filter(|p| p.shown.starts_with("http://")) {
            connect_ok(report, p);
        }
        let (detail, fix) = describe_tls(hop, &tls);
        report.fail(hop.name("TLS"), detail, fix);
        return false;
    }
    let via = match &hop.route {
        Route::Proxy(p) => format!(" through {}", p.shown),
        Route::Unix(path) => format!(" over {}", path.display()),
        Route::Direct => String::new(),
    };
    let (detail, fix) = match e {
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
    false
}

/// A TLS failure inside a transport error.
pub(super) enum TlsProblem<'e> {
    Rustls(&'e rustls::Error),
    Other(String),
}

pub(super) fn tls_problem(e: &ureq::Error) -> Option<TlsProblem<'_>> {
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
pub(super) fn describe_tls(hop: &Hop<'_>, problem: &TlsProblem<'_>) -> (String, String) {
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
