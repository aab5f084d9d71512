//! Fetching discovery documents and key sets over HTTP, with size and time caps.
//!
//! The fetcher is a trait so tests can count fetches or inject failures; the engine never
//! fetches on the request path except for a bounded wait on a first fetch or a kid-miss refresh.

use std::fmt::{self, Debug};
use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;

/// Why a fetch failed. Carries no response body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not `https://` (plain `http://` is accepted for loopback hosts only).
    InsecureUrl,
    /// Connection, TLS or protocol failure, or the time cap was hit.
    Transport(String),
    /// The server answered with a non-2xx status.
    Status(u16),
    /// The body exceeded the size cap.
    TooLarge {
        /// The cap in bytes.
        max: usize,
    },
}

/// A successful fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// The response body (at most the cap).
    pub body: Vec<u8>,
    /// `Cache-Control: max-age` in seconds, if the server sent one.
    pub max_age: Option<u64>,
}

/// Fetches a URL's body with size and time caps.
pub trait KeyFetcher: Send + Sync + Debug {
    /// GET `url`, giving up after `timeout` or when the body exceeds `max_bytes`.
    fn get(
        &self,
        url: &str,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<FetchResponse, FetchError>;
}

/// TLS for every outbound HTTPS call the gateway makes (key sets, discovery, token endpoints):
/// rustls on aws-lc-rs, the tree's one crypto provider, with the webpki roots. ureq is built
/// without a provider of its own, so an agent not given this one fails instead of quietly
/// bringing in a second crypto library.
pub fn tls_config() -> ureq::tls::TlsConfig {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    ureq::tls::TlsConfig::builder()
        .unversioned_rustls_crypto_provider(Arc::clone(provider))
        .build()
}

/// What every outbound call says it is.
const USER_AGENT: &str = concat!("caddy-iap/", env!("CARGO_PKG_VERSION"));

/// An agent for calls to an identity provider's own endpoints (token, discovery, managed
/// identity): one deadline for the whole call, no redirects, HTTP errors returned as responses
/// for the caller to read, and [`tls_config`]. Pooled connections live as long as the agent.
pub fn provider_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(USER_AGENT)
        .tls_config(tls_config())
        .build()
        .into()
}

/// The production fetcher: ureq over rustls ([`tls_config`]: aws-lc-rs, webpki roots), no redirects to
/// plain HTTP, one global deadline per fetch.
#[derive(Default)]
pub struct HttpFetcher {
    _private: (),
}

impl HttpFetcher {
    /// A fetcher with default settings.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Debug for HttpFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFetcher").finish_non_exhaustive()
    }
}

impl KeyFetcher for HttpFetcher {
    fn get(
        &self,
        url: &str,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<FetchResponse, FetchError> {
        let loopback = check_url(url)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .https_only(!loopback)
            .max_redirects(if loopback { 0 } else { 3 })
            .user_agent(USER_AGENT)
            .tls_config(tls_config())
            .build()
            .into();
        let mut resp = agent
            .get(url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| match e {
                ureq::Error::StatusCode(code) => FetchError::Status(code),
                other => FetchError::Transport(other.to_string()),
            })?;
        let max_age = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        // Read one byte past the cap so an oversized body is refused rather than truncated.
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(max_bytes as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        if body.len() > max_bytes {
            return Err(FetchError::TooLarge { max: max_bytes });
        }
        Ok(FetchResponse { body, max_age })
    }
}

/// Accepts `https://` URLs, and `http://` only for loopback hosts. Returns whether the host is
/// loopback.
pub fn check_url(url: &str) -> Result<bool, FetchError> {
    let (scheme, rest) = url.split_once("://").ok_or(FetchError::InsecureUrl)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme {
        "https" => Ok(loopback),
        "http" if loopback => Ok(true),
        _ => Err(FetchError::InsecureUrl),
    }
}

/// The `max-age` directive of a `Cache-Control` value; `no-store`/`no-cache` count as 0.
pub(crate) fn parse_max_age(value: &str) -> Option<u64> {
    let mut max_age = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "no-store" | "no-cache" => return Some(0),
            "max-age" => max_age = arg.trim().trim_matches('"').parse::<u64>().ok(),
            _ => {}
        }
    }
    max_age
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InsecureUrl => f.write_str("URL must be https (http only for loopback hosts)"),
            Self::Transport(e) => write!(f, "transport error: {e}"),
            Self::Status(code) => write!(f, "HTTP status {code}"),
            Self::TooLarge { max } => write!(f, "body larger than {max} bytes"),
        }
    }
}

impl std::error::Error for FetchError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(check_url("https://idp.example.com/jwks"), Ok(false));
        assert_eq!(check_url("http://127.0.0.1:8080/jwks"), Ok(true));
        assert_eq!(check_url("http://localhost/x"), Ok(true));
        assert_eq!(check_url("http://[::1]:9/x"), Ok(true));
        assert_eq!(
            check_url("http://idp.example.com/jwks"),
            Err(FetchError::InsecureUrl)
        );
        assert_eq!(
            check_url("http://127.0.0.1.evil.com/"),
            Err(FetchError::InsecureUrl)
        );
        assert_eq!(
            check_url("http://localhost@evil.com/"),
            Err(FetchError::InsecureUrl)
        );
        assert_eq!(
            check_url("file:///etc/passwd"),
            Err(FetchError::InsecureUrl)
        );
        assert_eq!(check_url("jwks"), Err(FetchError::InsecureUrl));
    }

    #[test]
    fn max_age() {
        assert_eq!(parse_max_age("public, max-age=3600"), Some(3600));
        assert_eq!(parse_max_age("max-age=\"60\", must-revalidate"), Some(60));
        assert_eq!(parse_max_age("no-store"), Some(0));
        assert_eq!(parse_max_age("private"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}
