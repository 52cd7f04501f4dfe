//! The outbound networking of `run`: which CA roots every TLS connection trusts, which proxy each
//! hop goes through and which client certificate it presents, layered global → hop (→ channel,
//! in [`super::channels`]) into one [`HopNet`] per hop.
//!
//! Certificates and keys are loaded and matched here, at startup, so a wrong file is a
//! configuration error naming its key rather than a TLS failure later. Proxy URLs may carry
//! credentials; errors never repeat them.

use super::run_options::{
    CA_BUNDLE, CA_BUNDLE_SYSTEM, CP_CLIENT_CERT, CP_CLIENT_KEY, CP_HTTP_PROXY, HARPOON_HTTP_PROXY,
    HTTP_PROXY, MCP_CLIENT_CERT, MCP_CLIENT_KEY, MCP_HTTP_PROXY, first_env_var,
};
use super::table::{ConfigError, Raw, Sources, err};
use super::values::{parse_bool, proxy_setting};
use crate::net::{HopNet, ProxyChoice};
use crate::secret::Secret;
use crate::tls::{self, ClientIdentity, PemSource};

/// The networking of both hops before any channel's own options.
pub(super) struct HopNets {
    pub control_plane: HopNet,
    /// What every HTTP channel starts from.
    pub mcp_defaults: HopNet,
    /// Harpoon's calls: the same roots, no client certificate, its own proxy.
    pub harpoon: HopNet,
}

/// Reads the CA, proxy and client-certificate options of both hops. A hop's own proxy wins over
/// `--http-proxy`; without either, the proxy environment variables apply.
pub(super) fn hop_nets(src: &Sources<'_>) -> Result<HopNets, ConfigError> {
    let get = |flag| src.get(flag);
    let env = src.env();
    let ca = get(CA_BUNDLE);
    let system = parse_bool(&get(CA_BUNDLE_SYSTEM))?;
    let ca_path = (!ca.value.is_empty()).then(|| std::path::PathBuf::from(&ca.value));
    let roots = tls::client_roots(ca_path.as_deref(), system).map_err(|e| {
        let key = if ca_path.is_some() {
            &ca.source
        } else {
            CA_BUNDLE_SYSTEM
        };
        err(key, &e)
    })?;
    let global_proxy = proxy_setting(&get(HTTP_PROXY), env)?;
    let cp_proxy = proxy_setting(&get(CP_HTTP_PROXY), env)?.or_else(|| global_proxy.clone());
    let control_plane = HopNet {
        roots: roots.clone(),
        identity: identity(&get(CP_CLIENT_CERT), &get(CP_CLIENT_KEY), env)?,
        proxy: cp_proxy.map_or(ProxyChoice::FromEnvironment, ProxyChoice::Explicit),
        unix_socket: None,
    };
    let harpoon = HopNet {
        roots: roots.clone(),
        identity: None,
        proxy: proxy_setting(&get(HARPOON_HTTP_PROXY), env)?
            .or_else(|| global_proxy.clone())
            .map_or(ProxyChoice::FromEnvironment, ProxyChoice::Explicit),
        unix_socket: None,
    };
    let mcp_defaults = HopNet {
        roots,
        identity: identity(&get(MCP_CLIENT_CERT), &get(MCP_CLIENT_KEY), env)?,
        proxy: proxy_setting(&get(MCP_HTTP_PROXY), env)?
            .or(global_proxy)
            .map_or(ProxyChoice::FromEnvironment, ProxyChoice::Explicit),
        unix_socket: None,
    };
    Ok(HopNets {
        control_plane,
        mcp_defaults,
        harpoon,
    })
}

/// A client certificate and key: both or neither, each a path, `file:/path` or `env:VAR`.
pub(super) fn identity(
    cert: &Raw,
    key: &Raw,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ClientIdentity>, ConfigError> {
    // The missing half has no source of its own: name it the way its partner was given.
    let missing = |absent: &Raw, given: &Raw, what: &str| {
        let key = if given.source.starts_with("--") {
            absent.source.as_str()
        } else {
            first_env_var(&absent.source)
        };
        err(key, &format!("is required with a client {what}"))
    };
    match (cert.value.is_empty(), key.value.is_empty()) {
        (true, true) => return Ok(None),
        (false, true) => return Err(missing(key, cert, "certificate")),
        (true, false) => return Err(missing(cert, key, "key")),
        (false, false) => {}
    }
    let source = |raw: &Raw| -> Result<PemSource, ConfigError> {
        if let Some(var) = raw.value.strip_prefix("env:") {
            let pem = env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                err(
                    &raw.source,
                    &format!("refers to {var}, which is not set or empty"),
                )
            })?;
            return Ok(PemSource::Inline {
                var: var.to_string(),
                pem: Secret::new(pem),
            });
        }
        let path = raw.value.strip_prefix("file:").unwrap_or(&raw.value);
        Ok(PemSource::File(std::path::PathBuf::from(path)))
    };
    ClientIdentity::load(&source(cert)?, &source(key)?)
        .map(Some)
        .map_err(|e| err(&cert.source, &e))
}
