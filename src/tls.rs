//! TLS material: PEM certificates and keys, the trust roots and client identities of outbound
//! connections, and the rustls server configuration of the relay's listener. Always rustls with
//! the ring provider, TLS 1.2 and 1.3 only, verification always on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts};

use crate::secret::Secret;

/// Where distributions keep the operating system's CA bundle, in the order we look.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",   // RHEL, CentOS, Fedora
    "/etc/ssl/ca-bundle.pem",             // openSUSE
];

/// PEM text from a file, or from an environment variable (`env:VAR`, e.g. a mounted secret).
#[derive(Clone)]
pub enum PemSource {
    File(PathBuf),
    Inline { var: String, pem: Secret },
}

impl PemSource {
    fn name(&self) -> String {
        match self {
            PemSource::File(p) => p.display().to_string(),
            PemSource::Inline { var, .. } => format!("env:{var}"),
        }
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        match self {
            PemSource::File(p) => {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
            PemSource::Inline { pem, .. } => Ok(pem.expose().as_bytes().to_vec()),
        }
    }
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A client certificate chain and its key, validated at startup: a bad key must fail here with a
/// readable message, not as a panic inside the HTTP client at first use.
#[derive(Clone)]
pub struct ClientIdentity {
    certs: Vec<CertificateDer<'static>>,
    /// The key's PEM text, already proven to parse and to match the certificate.
    key_pem: Secret,
    /// Where it came from, for messages.
    pub origin: String,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientIdentity({}, key ***)", self.origin)
    }
}

impl ClientIdentity {
    pub fn load(cert: &PemSource, key: &PemSource) -> Result<ClientIdentity, String> {
        let cert_pem = cert.bytes()?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{} is not valid PEM: {e}", cert.name()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no CERTIFICATE block", cert.name()));
        }
        let key_pem = key.bytes()?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!(
                "{} holds no usable private key ({e}); expected a PEM PRIVATE KEY block",
                key.name()
            )
        })?;
        rustls::sign::CertifiedKey::from_der(certs.clone(), key_der.clone_key(), &provider())
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the key in {} does not belong to the certificate in {}",
                    key.name(),
                    cert.name()
                ),
                other => format!("the key in {} cannot be used: {other}", key.name()),
            })?;
        let key_pem =
            String::from_utf8(key_pem).map_err(|_| format!("{} is not PEM text", key.name()))?;
        // The HTTP client parses the key again when it first connects: prove now that it can.
        PrivateKey::from_pem(key_pem.as_bytes())
            .map_err(|e| format!("{} holds no usable private key: {e}", key.name()))?;
        Ok(ClientIdentity {
            certs,
            key_pem: Secret::new(key_pem),
            origin: cert.name(),
        })
    }

    /// The identity in the HTTP client's terms.
    pub fn to_client_cert(&self) -> ClientCert {
        let chain: Vec<Certificate<'static>> = self
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let key = PrivateKey::from_pem(self.key_pem.expose().as_bytes())
            .expect("the key parsed when the identity was loaded");
        ClientCert::new_with_certs(&chain, key)
    }
}

/// The built-in Mozilla roots (webpki-root-certs), as one shared list: every agent gets the same
/// `Arc`, so the HTTP client's per-agent TLS configuration cache recognises it. This is the only
/// copy of the Mozilla roots in the binary: ureq's own (`RootCerts::WebPki`, the webpki-roots
/// crate) is not compiled in, which saves its second copy of the same roots.
pub fn mozilla_roots() -> RootCerts {
    static ROOTS: OnceLock<RootCerts> = OnceLock::new();
    ROOTS
        .get_or_init(|| RootCerts::new_with_certs(&mozilla_certs()))
        .clone()
}

fn mozilla_certs() -> Vec<Certificate<'static>> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect()
}

/// Trust roots for outbound TLS: the built-in Mozilla roots, plus — added, never replacing them —
/// the certificates of `extra` (a private CA bundle) and, with `system`, the OS bundle.
pub fn client_roots(extra: Option<&Path>, system: bool) -> Result<RootCerts, String> {
    if extra.is_none() && !system {
        return Ok(mozilla_roots());
    }
    let mut roots = mozilla_certs();
    let mut add = |path: &Path| -> Result<(), String> {
        for cert in load_certs(path)? {
            roots.push(Certificate::from_der(cert.as_ref()).to_owned());
        }
        Ok(())
    };
    if let Some(path) = extra {
        add(path)?;
    }
    if system {
        let found = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file());
        match found {
            Some(path) => add(path)?,
            None => {
                return Err(format!(
                    "no operating-system CA bundle found (looked for {})",
                    SYSTEM_BUNDLES.join(", ")
                ));
            }
        }
    }
    Ok(RootCerts::new_with_certs(&roots))
}

/// The crypto provider everywhere in this program.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; an error names the file and says what is wrong, never
/// printing the file's contents.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no CERTIFICATE block", path.display()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "cannot read a private key from {}: {e} (expected a PEM PRIVATE KEY block)",
            path.display()
        )
    })
}

/// A server configuration presenting `cert_path` (a chain) with `key_path`. Fails when the key
/// does not belong to the certificate or is of an unsupported type.
///
/// With `client_ca`, clients may present a certificate, which must then chain to one of that
/// file's CAs (a wrong one fails the handshake). Presenting none is allowed at the TLS level so
/// that one listener can require certificates on some paths only: handlers check
/// [`crate::http_server::Request::client_cert_verified`].
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots.add(cert).map_err(|e| {
                    format!("{} holds an unusable CA certificate: {e}", ca.display())
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "the key in {} does not fit the certificate in {}: {e}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_adds_to_the_mozilla_roots_instead_of_replacing_them() {
        let dir = std::env::temp_dir().join(format!("mcp-tunnel-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let bundle = dir.join("ca.pem");
        std::fs::write(&bundle, ca.pem()).unwrap();

        let public = webpki_root_certs::TLS_SERVER_ROOT_CERTS.len();
        match client_roots(Some(&bundle), false).unwrap() {
            RootCerts::Specific(certs) => {
                assert_eq!(
                    certs.len(),
                    public + 1,
                    "every public root kept, ours added"
                );
                assert!(certs.iter().any(|c| c.der() == ca.der().as_ref()));
            }
            other => panic!("expected a combined list, got {other:?}"),
        }
        match client_roots(None, false).unwrap() {
            RootCerts::Specific(certs) => {
                assert_eq!(certs.len(), public, "the Mozilla roots alone");
                let RootCerts::Specific(again) = mozilla_roots() else {
                    panic!("the built-in roots are a certificate list");
                };
                assert!(Arc::ptr_eq(&certs, &again), "one shared list");
            }
            other => panic!("expected the Mozilla roots, got {other:?}"),
        }
        // The HTTP client turns the list into trust anchors and silently skips a certificate it
        // cannot parse: every Mozilla root must make it (as with ureq's own webpki-roots copy).
        let mut store = rustls::RootCertStore::empty();
        let (added, ignored) = store
            .add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
        assert_eq!((added, ignored), (public, 0));
        let err = client_roots(Some(&dir.join("missing.pem")), false).unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
