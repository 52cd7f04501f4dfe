//! Harpoon's allowlist as URLs: the comparable key of a target URL, resolving a redirect's
//! `Location` against the URL it answered, and saying why a URL is not allowlisted.
//!
//! A URL is allowlisted when its scheme, host, port (default ports made explicit), path (empty
//! taken as `/`) and query are exactly those of a configured target. Paths with `.` or `..`
//! segments never match. Reasons name the scheme, host and path at fault, never a query (it may
//! carry a token).

use ureq::http::Uri;

/// The parts of a URL that must match a target's exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UrlKey {
    pub(super) scheme: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) path: String,
    pub(super) query: String,
}

impl UrlKey {
    /// The key of an absolute `http(s)://` URL; `None` for anything else (or dot segments).
    pub(super) fn of(url: &str) -> Option<UrlKey> {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        let host = uri.host().filter(|h| !h.is_empty())?.to_ascii_lowercase();
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return None;
        }
        let path = match uri.path() {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        if path.split('/').any(|s| s == "." || s == "..") {
            return None;
        }
        Some(UrlKey {
            scheme,
            host,
            port: uri.port_u16().unwrap_or(default_port),
            path,
            query: uri.query().unwrap_or("").to_string(),
        })
    }

    fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// `location` (absolute, scheme-relative, absolute-path, query-only or relative-path) resolved
/// against `base`, its fragment dropped; `None` when it cannot be read.
pub(super) fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let location = location.split('#').next().unwrap_or("");
    if location.is_empty() {
        return None;
    }
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Some(location.to_string());
    }
    let uri: Uri = base.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    let origin = format!("{scheme}://{}", uri.authority()?.as_str());
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    if location.starts_with('?') {
        return Some(format!("{origin}{path}{location}"));
    }
    if location.contains(':') && !location.contains('/') || lower.contains("://") {
        // Another scheme (mailto:, ftp://…): not something Harpoon follows.
        return None;
    }
    let dir = &path[..=path.rfind('/').unwrap_or(0)];
    Some(format!("{origin}{dir}{location}"))
}

/// Why `candidate` (a redirect's resolved URL) matches none of `targets`, in words for the
/// caller: the closest target decides which part is named.
pub(super) fn refusal(candidate: &str, targets: &[UrlKey]) -> String {
    let Some(c) = UrlKey::of(candidate) else {
        return "the redirect URL is not an absolute http(s) URL without . or .. segments".into();
    };
    let same_place = |t: &&UrlKey| t.host == c.host && t.path == c.path && t.query == c.query;
    if let Some(t) = targets.iter().find(same_place) {
        if t.scheme != c.scheme {
            return format!(
                "scheme mismatch (allowlisted {}, redirected to {})",
                t.scheme, c.scheme
            );
        }
        return format!(
            "port {} of {} is not allowlisted (the target uses {})",
            c.port, c.host, t.port
        );
    }
    let same_origin = |t: &&UrlKey| t.scheme == c.scheme && t.host == c.host && t.port == c.port;
    if targets.iter().filter(same_origin).any(|t| t.path == c.path) {
        return format!(
            "the query of {}://{}{} differs from the allowlisted target's",
            c.scheme,
            c.host_port(),
            c.path
        );
    }
    if targets.iter().any(|t| same_origin(&t)) {
        return format!(
            "path {} on {}://{} is not an allowlisted target",
            c.path,
            c.scheme,
            c.host_port()
        );
    }
    format!(
        "{}://{} is not an allowlisted target host",
        c.scheme,
        c.host_port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_make_default_ports_and_empty_paths_explicit() {
        let a = UrlKey::of("HTTPS://Auth.Example").unwrap();
        let b = UrlKey::of("https://auth.example:443/").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.path, "/");
        assert_ne!(
            UrlKey::of("https://a.example/t?x=1"),
            UrlKey::of("https://a.example/t?x=2")
        );
        assert!(UrlKey::of("https://a.example/a/../t").is_none());
        assert!(UrlKey::of("ftp://a.example/").is_none());
        assert!(UrlKey::of("/relative").is_none());
    }

    #[test]
    fn locations_resolve_against_the_url_they_answered() {
        let base = "http://127.0.0.1:8080/a/b?q=1";
        for (loc, want) in [
            ("https://x.example/y", "https://x.example/y"),
            ("//x.example/y", "http://x.example/y"),
            ("/c", "http://127.0.0.1:8080/c"),
            ("?z=2", "http://127.0.0.1:8080/a/b?z=2"),
            ("c?d", "http://127.0.0.1:8080/a/c?d"),
            ("/c#frag", "http://127.0.0.1:8080/c"),
        ] {
            assert_eq!(resolve(base, loc).as_deref(), Some(want), "{loc}");
        }
        assert_eq!(resolve(base, "mailto:x@y"), None);
        assert_eq!(resolve(base, ""), None);
    }

    #[test]
    fn refusals_name_the_part_that_differs() {
        let targets = [UrlKey::of("https://a.example/token?x=1").unwrap()];
        let why = |u| refusal(u, &targets);
        assert!(
            why("http://a.example/token?x=1")
                .contains("scheme mismatch (allowlisted https, redirected to http)")
        );
        assert!(why("https://a.example:8443/token?x=1").contains("port 8443"));
        assert!(why("https://a.example/token?x=2").contains("query"));
        assert!(!why("https://a.example/token?x=2").contains("x=2"));
        assert!(why("https://a.example/other").contains("path /other"));
        assert!(
            why("https://b.example/token")
                .contains("b.example:443 is not an allowlisted target host")
        );
    }
}
