//! How one outbound hop connects: trust roots, client identity (mutual TLS), proxy, or a Unix
//! socket. Resolved once at startup from the configuration's layers (per channel > MCP-wide >
//! global > environment), so the HTTP client setup only has to apply it.

use std::fmt;
use std::path::PathBuf;

use ureq::http::Uri;
use ureq::tls::RootCerts;

use crate::secret::Secret;
use crate::tls::ClientIdentity;

/// An explicit HTTP(S) proxy. The URL may carry Basic credentials, so it is kept secret; its
/// display form has none.
#[derive(Clone)]
pub struct ProxyUrl {
    url: Secret,
    shown: String,
}

impl ProxyUrl {
    /// Parses `http://[user:pass@]host:port` or `https://…`. The error never repeats the value.
    /// Without a scheme, `http://` is assumed (`proxy.corp:3128`).
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let text = text.trim();
        let text = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let text = text.as_str();
        let uri: Uri = text
            .parse()
            .map_err(|_| "is not a proxy URL; expected http://host:port".to_string())?;
        let scheme = uri.scheme_str().unwrap_or("");
        if scheme != "http" && scheme != "https" {
            return Err("must be an http:// or https:// proxy URL (CONNECT proxies)".into());
        }
        let authority = uri.authority().ok_or("has no host")?;
        let host_port = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, hp)| hp);
        if uri.host().is_none_or(str::is_empty) {
            return Err("has no host".into());
        }
        if uri
            .path_and_query()
            .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
        {
            return Err("must not have a path: give scheme://host:port".into());
        }
        Ok(ProxyUrl {
            url: Secret::new(text),
            shown: format!("{scheme}://{host_port}"),
        })
    }

    /// The URL with credentials, for the HTTP client only.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({})", self.shown)
    }
}

/// Which proxy a hop uses.
#[derive(Clone, Debug)]
pub enum ProxyChoice {
    /// This one, whatever `NO_PROXY` says.
    Explicit(ProxyUrl),
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` with `NO_PROXY`, as the environment says.
    FromEnvironment,
    /// No proxy whatever the environment says (loopback-only set-ups such as the demo).
    Direct,
}

/// Everything about how one hop connects.
#[derive(Clone, Debug)]
pub struct HopNet {
    pub roots: RootCerts,
    pub identity: Option<ClientIdentity>,
    pub proxy: ProxyChoice,
    /// Dial this Unix-domain socket instead of the URL's host (no proxy then).
    pub unix_socket: Option<PathBuf>,
}

impl HopNet {
    /// Built-in roots, no client certificate, proxies from the environment.
    pub fn plain() -> HopNet {
        HopNet {
            roots: crate::tls::mozilla_roots(),
            identity: None,
            proxy: ProxyChoice::FromEnvironment,
            unix_socket: None,
        }
    }
}

impl HopNet {
    /// The proxy this hop uses, as it may be shown (no credentials), for error messages.
    pub fn proxy_name(&self) -> String {
        match (&self.unix_socket, &self.proxy) {
            (Some(_), _) | (None, ProxyChoice::Direct) => "no proxy".into(),
            (None, ProxyChoice::Explicit(url)) => url.to_string(),
            (None, ProxyChoice::FromEnvironment) => {
                "the proxy from HTTPS_PROXY/HTTP_PROXY/ALL_PROXY".into()
            }
        }
    }

    /// Built-in roots, no client certificate, never a proxy: for connections to loopback.
    pub fn direct() -> HopNet {
        HopNet {
            proxy: ProxyChoice::Direct,
            ..HopNet::plain()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_never_show() {
        let p = ProxyUrl::parse("http://alice:s3cret@proxy.corp:3128").unwrap();
        assert_eq!(p.to_string(), "http://proxy.corp:3128");
        assert!(!format!("{p:?}").contains("s3cret"));
        assert_eq!(p.expose(), "http://alice:s3cret@proxy.corp:3128");
    }

    #[test]
    fn proxy_url_forms() {
        assert!(ProxyUrl::parse("https://proxy:8443").is_ok());
        assert_eq!(
            ProxyUrl::parse("proxy:3128").unwrap().to_string(),
            "http://proxy:3128"
        );
        for bad in ["socks5://p:1", "http://p:1/path", "http://", "not a url"] {
            let e = ProxyUrl::parse(bad);
            assert!(e.is_err(), "{bad}");
        }
        let e = ProxyUrl::parse("ftp://u:topsecret@p:1").unwrap_err();
        assert!(!e.contains("topsecret"));
    }
}
