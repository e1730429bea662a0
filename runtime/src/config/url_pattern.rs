//! URL patterns of HTTP grants: `scheme://host[:port][/path-prefix]`.
//!
//! | pattern | matches | does not match |
//! |---|---|---|
//! | `https://api.stripe.com` | `https://api.stripe.com/v1/charges` | `http://api.stripe.com/`, `https://api.stripe.com:8443/` |
//! | `http://127.0.0.1:8080` | `http://127.0.0.1:8080/pay` | `http://127.0.0.1:8081/`, `http://localhost:8080/` |
//! | `https://*.internal.example` | `https://a.internal.example/`, `https://a.b.internal.example/` | `https://internal.example/` |
//! | `https://h.example/v1` | `https://h.example/v1`, `https://h.example/v1/x` | `https://h.example/v10`, `https://h.example/` |
//!
//! The scheme and the port must match exactly (a pattern without a port means the scheme's
//! default port); hosts compare case-insensitively; a path prefix matches whole segments.

use url::Url;

/// One allowed URL pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPattern {
    text: String,
    scheme: String,
    /// Lower-case host; for a wildcard, the suffix after `*.`.
    host: String,
    wildcard: bool,
    port: u16,
    /// Path prefix without a trailing slash; empty for any path.
    path: String,
}

impl UrlPattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// A message saying what is wrong with it.
    pub fn parse(text: &str) -> Result<UrlPattern, String> {
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            format!("HTTP grant {text:?} needs a scheme: write http://HOST or https://HOST")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "HTTP grant {text:?}: only http:// and https:// URLs can be granted"
            ));
        }
        let (wildcard, probe) = match rest.strip_prefix("*.") {
            Some(r) => (true, format!("{scheme}://wildcard.{r}")),
            None => (false, format!("{scheme}://{rest}")),
        };
        if rest.contains('*') && !wildcard || rest[usize::from(wildcard) * 2..].contains('*') {
            return Err(format!(
                "HTTP grant {text:?}: a wildcard may only stand first in the host, as in https://*.example.com"
            ));
        }
        let url = Url::parse(&probe).map_err(|e| format!("HTTP grant {text:?}: {e}"))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "HTTP grant {text:?}: a grant names an origin and optionally a path prefix, not a query or fragment"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "HTTP grant {text:?}: credentials do not belong in a grant; give them to the activity as a secret"
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("HTTP grant {text:?} has no host"))?
            .to_ascii_lowercase();
        let host = if wildcard {
            host.strip_prefix("wildcard.").unwrap_or(&host).to_string()
        } else {
            host
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("HTTP grant {text:?} has no port"))?;
        Ok(UrlPattern {
            text: text.to_string(),
            scheme,
            host,
            wildcard,
            port,
            path: url.path().trim_end_matches('/').to_string(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `url` is inside this pattern.
    pub fn matches(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme || url.port_or_known_default() != Some(self.port) {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let host_ok = if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        };
        if !host_ok {
            return false;
        }
        if self.path.is_empty() {
            return true;
        }
        let path = url.path();
        path == self.path
            || path
                .strip_prefix(&self.path)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, url: &str) -> bool {
        UrlPattern::parse(pattern)
            .unwrap()
            .matches(&Url::parse(url).unwrap())
    }

    #[test]
    fn scheme_host_and_default_port_must_match() {
        assert!(m(
            "https://api.stripe.com",
            "https://api.stripe.com/v1/charges"
        ));
        assert!(m("https://API.stripe.com", "https://api.STRIPE.com/"));
        assert!(!m("https://api.stripe.com", "http://api.stripe.com/"));
        assert!(!m("https://api.stripe.com", "https://api.stripe.com:8443/"));
        assert!(!m(
            "https://api.stripe.com",
            "https://api.stripe.com.evil.example/"
        ));
        assert!(!m(
            "https://api.stripe.com",
            "https://evil.example/api.stripe.com"
        ));
    }

    #[test]
    fn explicit_ports_and_ip_hosts() {
        assert!(m("http://127.0.0.1:8080", "http://127.0.0.1:8080/pay"));
        assert!(!m("http://127.0.0.1:8080", "http://127.0.0.1:8081/pay"));
        assert!(!m("http://127.0.0.1:8080", "http://localhost:8080/pay"));
        assert!(m("http://[::1]:9000", "http://[::1]:9000/"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let p = "https://*.internal.example";
        assert!(m(p, "https://a.internal.example/"));
        assert!(m(p, "https://a.b.internal.example/x"));
        assert!(!m(p, "https://internal.example/"));
        assert!(!m(p, "https://xinternal.example/"));
        assert!(!m(p, "http://a.internal.example/"));
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        let p = "https://h.example/v1/";
        assert!(m(p, "https://h.example/v1"));
        assert!(m(p, "https://h.example/v1/charges"));
        assert!(!m(p, "https://h.example/v10"));
        assert!(!m(p, "https://h.example/"));
        assert!(!m(
            p,
            "https://h.example/v1/../admin"
                .replace("/../admin", "x")
                .as_str()
        ));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for (p, says) in [
            ("api.stripe.com", "needs a scheme"),
            ("ftp://h.example", "only http:// and https://"),
            ("https://a.*.example", "wildcard may only stand first"),
            ("https://*", "wildcard may only stand first"),
            ("https://", "empty host"),
            ("https://u:p@h.example", "credentials"),
            ("https://h.example/?x=1", "not a query"),
        ] {
            let e = UrlPattern::parse(p).unwrap_err();
            assert!(e.contains(says), "{p}: {e}");
        }
    }
}
