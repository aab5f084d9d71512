//! The gateway's own Entra ID token for Cosmos DB (`type=aad`), fetched and kept fresh.
//!
//! Two sources: the OAuth2 client-credentials grant against a token endpoint (Entra's
//! `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`, scope
//! `https://cosmos.azure.com/.default`), or a managed-identity endpoint (Azure IMDS). The token
//! is refreshed once it is within `refresh_before` of expiry; while a refresh runs, other
//! requests keep using the current token, and only an expired token makes a request wait.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use caddy_iap_core::Clock;
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::signing::auth_header;

/// Largest token response read.
const MAX_RESPONSE: usize = 64 * 1024;
/// After a failed fetch, requests fail fast for this long instead of each asking again.
const RETRY_AFTER_FAILURE_SECS: u64 = 5;

/// Where the gateway's token comes from.
pub enum TokenSource {
    /// OAuth2 client credentials (`client_secret_post`).
    ClientSecret {
        /// The token endpoint.
        token_url: String,
        /// The application (client) id.
        client_id: String,
        /// The client secret.
        secret: Zeroizing<String>,
        /// The scope asked for.
        scope: String,
    },
    /// A managed-identity endpoint (`GET ...&resource=...`, header `Metadata: true`).
    ManagedIdentity {
        /// The full request URL, query included.
        url: String,
    },
}

/// Why no token is available. Never holds a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraError(pub String);

impl std::fmt::Display for EntraError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone)]
struct Cached {
    /// The ready `Authorization` value.
    header: Arc<str>,
    expires_at: u64,
}

/// A cached, self-refreshing Entra token.
pub struct EntraCredential {
    source: TokenSource,
    refresh_before: u64,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    current: RwLock<Option<Cached>>,
    /// Held by the one caller that fetches; `Some(t)` records a failure at `t`.
    fetching: Mutex<Option<u64>>,
    fetches: AtomicU64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; a number from Entra, a string from IMDS.
    #[serde(default)]
    expires_in: Option<NumberOrString>,
    /// Unix seconds, as a string, from IMDS.
    #[serde(default)]
    expires_on: Option<NumberOrString>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    N(u64),
    S(String),
}

impl NumberOrString {
    fn get(&self) -> Option<u64> {
        match self {
            Self::N(n) => Some(*n),
            Self::S(s) => s.parse().ok(),
        }
    }
}

impl EntraCredential {
    /// A credential that fetches on first use.
    pub fn new(
        source: TokenSource,
        refresh_before: Duration,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            source,
            refresh_before: refresh_before.as_secs(),
            timeout,
            clock,
            current: RwLock::new(None),
            fetching: Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many token requests were made (for metrics and tests).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The `Authorization` value for the next upstream request.
    pub fn authorization(&self) -> Result<Arc<str>, EntraError> {
        let now = self.clock.now();
        let current = self.current.read().clone();
        if let Some(c) = &current
            && now.saturating_add(self.refresh_before) < c.expires_at
        {
            return Ok(c.header.clone());
        }
        let usable = current.filter(|c| now < c.expires_at);
        // Stale but valid: one caller refreshes, the rest go on with the current token.
        let mut guard = match (self.fetching.try_lock(), &usable) {
            (Some(g), _) => g,
            (None, Some(c)) => return Ok(c.header.clone()),
            (None, None) => self.fetching.lock(),
        };
        // Someone may have refreshed while this caller waited.
        if let Some(c) = self.current.read().as_ref()
            && now.saturating_add(self.refresh_before) < c.expires_at
        {
            return Ok(c.header.clone());
        }
        if let Some(failed_at) = *guard
            && now < failed_at + RETRY_AFTER_FAILURE_SECS
        {
            return usable
                .map(|c| c.header)
                .ok_or_else(|| EntraError("the Entra token endpoint failed moments ago".into()));
        }
        match self.fetch(now) {
            Ok(fresh) => {
                *guard = None;
                let header = fresh.header.clone();
                *self.current.write() = Some(fresh);
                Ok(header)
            }
            Err(e) => {
                *guard = Some(now);
                usable.map(|c| c.header).ok_or(e)
            }
        }
    }

    fn fetch(&self, now: u64) -> Result<Cached, EntraError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let url = match &self.source {
            TokenSource::ClientSecret { token_url, .. } => token_url,
            TokenSource::ManagedIdentity { url } => url,
        };
        let agent = caddy_iap_core::provider_agent(self.timeout);
        let result = match &self.source {
            TokenSource::ClientSecret {
                client_id,
                secret,
                scope,
                ..
            } => agent
                .post(url)
                .header("Accept", "application/json")
                .send_form([
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", secret.as_str()),
                    ("scope", scope.as_str()),
                ]),
            TokenSource::ManagedIdentity { .. } => agent.get(url).header("Metadata", "true").call(),
        };
        let mut resp = result.map_err(|e| EntraError(format!("token request failed: {e}")))?;
        let status = resp.status().as_u16();
        let mut body = Zeroizing::new(Vec::new());
        resp.body_mut()
            .as_reader()
            .take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| EntraError(format!("token response: {e}")))?;
        if !(200..300).contains(&status) {
            // The body of an error (`{"error":"invalid_client",...}`) names no secret.
            let error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_default();
            return Err(EntraError(format!(
                "token endpoint answered {status} {error}"
            )));
        }
        if body.len() > MAX_RESPONSE {
            return Err(EntraError("token response too large".into()));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| EntraError("token response is not the expected JSON".into()))?;
        let token = Zeroizing::new(parsed.access_token);
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(EntraError(
                "token response holds no usable access_token".into(),
            ));
        }
        let expires_at = parsed
            .expires_on
            .and_then(|e| e.get())
            .or_else(|| {
                parsed
                    .expires_in
                    .and_then(|e| e.get())
                    .map(|s| now.saturating_add(s))
            })
            .ok_or_else(|| EntraError("token response has no expiry".into()))?;
        if expires_at <= now {
            return Err(EntraError(
                "token endpoint returned an expired token".into(),
            ));
        }
        Ok(Cached {
            header: auth_header("aad", &token).into(),
            expires_at,
        })
    }
}

/// Accepts `https://`, `http://` to loopback, and `http://169.254.169.254` (Azure IMDS, which
/// is link-local and plain HTTP by design).
pub(crate) fn check_token_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://169.254.169.254/") {
        return Ok(());
    }
    caddy_iap_core::check_url(url)
        .map(|_| ())
        .map_err(|e| format!("{url}: {e}"))
}
