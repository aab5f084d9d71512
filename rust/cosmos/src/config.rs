//! A Cosmos DB policy, as JSON handed over by the Caddy module, and its checks.
//!
//! Secrets (the account key, the client secret) are named by environment variable or file,
//! never written in the config itself.

use std::sync::Arc;
use std::time::Duration;

use caddy_iap_core::Clock;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::entra::{EntraCredential, TokenSource, check_token_url};
use crate::permissions::{Actions, Grant, Permissions, Scope};
use crate::signing::MasterKey;

/// The scope of Cosmos DB's data plane in Entra ID.
pub const DEFAULT_SCOPE: &str = "https://cosmos.azure.com/.default";
/// Azure's instance metadata endpoint for managed identities.
pub const DEFAULT_IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// One Cosmos DB account behind the gateway.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CosmosConfig {
    /// Policy name, for logs.
    #[serde(default)]
    pub name: String,
    /// What each role may do where.
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
    /// Environment variable holding the base64 account key.
    #[serde(default)]
    pub account_key_env: Option<String>,
    /// File holding the base64 account key.
    #[serde(default)]
    pub account_key_file: Option<String>,
    /// Sign with the gateway's own Entra ID token instead of a key.
    #[serde(default)]
    pub entra: Option<EntraConfig>,
}

/// One grant: `role` may perform `actions` on each of `scopes`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GrantConfig {
    /// The caddy-iap role.
    pub role: String,
    /// Data action names (`items/read`, `executeQuery`, `items/*`, `data_reader`, ...).
    pub actions: Vec<String>,
    /// `/` (the account), `dbs/{db}`, `dbs/{db}/colls/{coll}`; `*` for any name.
    pub scopes: Vec<String>,
}

/// The gateway's Entra identity.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EntraConfig {
    /// Client credentials: the token endpoint.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Client credentials: the application id; managed identity: a user-assigned identity.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Client credentials: environment variable holding the secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Client credentials: file holding the secret.
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// Client credentials: the scope (default `https://cosmos.azure.com/.default`).
    #[serde(default)]
    pub scope: Option<String>,
    /// Use a managed identity; the value is the endpoint (empty: Azure IMDS).
    #[serde(default)]
    pub managed_identity: Option<String>,
    /// Managed identity: the resource (default `https://cosmos.azure.com`).
    #[serde(default)]
    pub resource: Option<String>,
    /// Refresh this long before expiry (default 300 s).
    #[serde(default)]
    pub refresh_before_secs: Option<u64>,
    /// Give up on a token request after this long (default 10 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A config that cannot be used; names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// Why.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cosmos {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

/// How upstream requests are signed.
pub(crate) enum Signer {
    /// Boxed: an HMAC key is over a kilobyte of hash state.
    Master(Box<MasterKey>),
    Entra(EntraCredential),
}

/// Reads a secret from exactly one of an environment variable and a file.
fn read_secret(
    env: &Option<String>,
    file: &Option<String>,
    field: &'static str,
    what: &str,
) -> Result<Zeroizing<String>, ConfigError> {
    caddy_iap_core::read_secret(env.as_deref(), file.as_deref(), what).map_err(|e| err(field, e))
}

impl CosmosConfig {
    pub(crate) fn permissions(&self) -> Result<Permissions, ConfigError> {
        let mut grants = Vec::new();
        for g in &self.grants {
            if g.role.is_empty() {
                return Err(err("grants", "a grant has no role"));
            }
            if g.actions.is_empty() || g.scopes.is_empty() {
                return Err(err(
                    "grants",
                    format!("grant for role {:?} needs actions and scopes", g.role),
                ));
            }
            let actions = g.actions.iter().try_fold(Actions::empty(), |acc, a| {
                Actions::parse(a)
                    .map(|x| acc.union(x))
                    .ok_or_else(|| err("grants", format!("unknown Cosmos DB data action {a:?}")))
            })?;
            for s in &g.scopes {
                let scope = Scope::parse(s).ok_or_else(|| {
                    err("grants", format!("bad scope {s:?}: use /, dbs/<db> or dbs/<db>/colls/<container> (names or *)"))
                })?;
                grants.push(Grant {
                    role: g.role.as_str().into(),
                    actions,
                    scope,
                });
            }
        }
        if grants.is_empty() {
            return Err(err("grants", "no grants: nobody could do anything"));
        }
        Ok(Permissions::new(grants))
    }

    pub(crate) fn signer(&self, clock: Arc<dyn Clock>) -> Result<Signer, ConfigError> {
        let has_key = self.account_key_env.is_some() || self.account_key_file.is_some();
        match (&self.entra, has_key) {
            (Some(_), true) => Err(err("entra", "set an account key or entra, not both")),
            (None, false) => Err(err(
                "account_key_env",
                "set account_key_env, account_key_file or entra",
            )),
            (None, true) => {
                let key = read_secret(
                    &self.account_key_env,
                    &self.account_key_file,
                    "account_key_env",
                    "account key",
                )?;
                MasterKey::from_base64(&key)
                    .map(|key| Signer::Master(Box::new(key)))
                    .map_err(|e| err("account_key_env", e.0))
            }
            (Some(e), false) => e.credential(clock).map(Signer::Entra),
        }
    }
}

impl EntraConfig {
    fn credential(&self, clock: Arc<dyn Clock>) -> Result<EntraCredential, ConfigError> {
        let source = match (&self.managed_identity, &self.token_url) {
            (Some(_), Some(_)) => {
                return Err(err("entra", "set token_url or managed_identity, not both"));
            }
            (None, None) => {
                return Err(err(
                    "entra",
                    "set token_url (client credentials) or managed_identity",
                ));
            }
            (Some(endpoint), None) => {
                if self.client_secret_env.is_some()
                    || self.client_secret_file.is_some()
                    || self.scope.is_some()
                {
                    return Err(err(
                        "entra",
                        "a managed identity takes no client secret or scope",
                    ));
                }
                let endpoint = if endpoint.is_empty() {
                    DEFAULT_IMDS
                } else {
                    endpoint
                };
                check_token_url(endpoint).map_err(|m| err("entra", m))?;
                let resource = self
                    .resource
                    .as_deref()
                    .unwrap_or("https://cosmos.azure.com");
                let mut url = format!(
                    "{endpoint}{}api-version=2018-02-01&resource={}",
                    if endpoint.contains('?') { "&" } else { "?" },
                    form_encode(resource)
                );
                if let Some(id) = &self.client_id {
                    url.push_str("&client_id=");
                    url.push_str(&form_encode(id));
                }
                TokenSource::ManagedIdentity { url }
            }
            (None, Some(token_url)) => {
                check_token_url(token_url).map_err(|m| err("entra", m))?;
                if self.resource.is_some() {
                    return Err(err(
                        "entra",
                        "resource is for managed identities; client credentials use scope",
                    ));
                }
                let client_id = self
                    .client_id
                    .clone()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| err("entra", "client credentials need client_id"))?;
                TokenSource::ClientSecret {
                    token_url: token_url.clone(),
                    client_id,
                    secret: read_secret(
                        &self.client_secret_env,
                        &self.client_secret_file,
                        "entra",
                        "client secret",
                    )?,
                    scope: self
                        .scope
                        .clone()
                        .unwrap_or_else(|| DEFAULT_SCOPE.to_owned()),
                }
            }
        };
        Ok(EntraCredential::new(
            source,
            Duration::from_secs(self.refresh_before_secs.unwrap_or(300)),
            Duration::from_millis(self.timeout_ms.unwrap_or(10_000)),
            clock,
        ))
    }
}

/// `application/x-www-form-urlencoded` escaping for one query value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
