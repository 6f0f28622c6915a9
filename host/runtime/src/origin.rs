//! The origin (`scheme://host:port`) of an API host the component may call:
//! parsed from a configured base URL, matched against every request, and
//! held to TLS unless it is this machine.

use anyhow::{Context, Result, bail};

/// `scheme://host:port` of an allowed API host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses the origin of an `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<Self> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a valid URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("{url:?} is not an http:// or https:// URL"),
        };
        let Some(authority) = uri.authority() else {
            bail!("{url:?} has no host");
        };
        if authority.as_str().contains('@') {
            bail!("{url:?} carries credentials; they belong in environment variables");
        }
        Ok(Origin {
            https,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }

    /// Whether the origin is this machine: `localhost`, 127.0.0.0/8 or `::1`.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Plain `http://` carries tokens, OAuth secrets and people's records in
    /// clear text: it is for loopback test servers only, unless `allowed`
    /// (`allow_plain_http`, for a TLS-terminating proxy on a private network).
    pub fn require_tls(&self, allowed: bool) -> Result<()> {
        if self.https || allowed || self.is_loopback() {
            return Ok(());
        }
        bail!(
            "plain http:// to {} would send the access token (and any OAuth secret) in clear \
             text; use https://, a loopback host (127.0.0.1, ::1, localhost) for a local test \
             server, or allow_plain_http = true in the same table for a TLS-terminating proxy \
             on a private network",
            self.host
        )
    }

    /// Whether a request URI goes to this origin.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return false,
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        https == self.https && host.eq_ignore_ascii_case(&self.host) && port == self.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_scheme_host_and_port() {
        let o = Origin::parse("http://127.0.0.1:8080/base").unwrap();
        assert!(
            o.allows(
                &"http://127.0.0.1:8080/crm/v3/objects/contacts"
                    .parse()
                    .unwrap()
            )
        );
        assert!(!o.allows(&"http://127.0.0.1:8081/x".parse().unwrap()));
        assert!(!o.allows(&"https://127.0.0.1:8080/x".parse().unwrap()));
        assert!(!o.allows(&"http://evil.example:8080/x".parse().unwrap()));
        let o = Origin::parse("https://API.hubapi.com").unwrap();
        assert!(o.allows(&"https://api.hubapi.com/crm".parse().unwrap()));
        assert!(Origin::parse("https://user:pw@api.hubapi.com").is_err());
    }
}
