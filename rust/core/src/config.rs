//! The engine's configuration, as JSON handed over by the Caddy module at Provision.
//!
//! This is a plain data shape; [`crate::Engine::new`] compiles it into matchers and key sets and
//! refuses anything inconsistent, naming where (`issuers[1].audiences`) and what.

use serde::Deserialize;

/// Everything one `iap` handler instance needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Trusted token issuers. At least one.
    pub issuers: Vec<IssuerConfig>,
    /// Claim rules granting roles. Several rules may grant the same role (OR).
    #[serde(default)]
    pub roles: Vec<RoleRule>,
    /// What each role may do. Anything not allowed is denied.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// Identity assertion minted for the upstream; off when absent.
    #[serde(default)]
    pub assertion: Option<AssertionConfig>,
    /// Names of the identity headers set for the upstream.
    #[serde(default)]
    pub headers: HeaderNames,
    /// Verified-token cache settings.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Longest token accepted, in bytes (default 8192).
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
}

/// One trusted issuer and how to get its keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IssuerConfig {
    /// The exact `iss` value, compared byte for byte (trailing slash matters).
    pub issuer: String,
    /// Accepted `aud` values; a token must carry at least one of them.
    pub audiences: Vec<String>,
    /// Where the keys come from. Default: OIDC discovery under `issuer`.
    #[serde(default)]
    pub keys: KeySource,
    /// Allowed algorithms (default RS256, PS256, ES256, ES384, EdDSA).
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Clock-skew leeway for exp/nbf/iat, seconds (default 60).
    #[serde(default)]
    pub leeway_secs: Option<u64>,
    /// Longest accepted token lifetime, seconds (default 86400).
    #[serde(default)]
    pub max_lifetime_secs: Option<u64>,
    /// Minimum time between fetches triggered by an unknown `kid`, seconds (default 30).
    #[serde(default)]
    pub kid_miss_cooldown_secs: Option<u64>,
    /// Lower bound of the refresh interval, seconds (default 300).
    #[serde(default)]
    pub refresh_min_secs: Option<u64>,
    /// Upper bound of the refresh interval, seconds (default 86400).
    #[serde(default)]
    pub refresh_max_secs: Option<u64>,
    /// Timeout of one fetch, milliseconds (default 5000).
    #[serde(default)]
    pub fetch_timeout_ms: Option<u64>,
    /// Use `email` even when `email_verified` is not `true` (default false: an unverified
    /// email is treated as absent for roles, headers and assertions, against "nOAuth").
    #[serde(default)]
    pub trust_unverified_email: bool,
    /// The client id this gateway signs browsers in with (browser sign-in). ID tokens for it
    /// are accepted only from a sealed session ([`crate::TokenSource::Session`]), never as
    /// bearer tokens; `audiences` does not apply to them.
    #[serde(default)]
    pub login_client_id: Option<String>,
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum KeySource {
    /// `<issuer>/.well-known/openid-configuration`, then its `jwks_uri`.
    #[default]
    Discovery,
    /// A JWKS URL fetched directly.
    JwksUrl(String),
    /// A JWKS document given inline (the Caddy module reads files and passes their content).
    JwksInline(String),
    /// One or more PEM public keys (SPKI), given inline.
    Pem(Vec<String>),
}

/// `role <name> claim <path> <op> <value> [claim ...]`: all conditions must hold (AND).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RoleRule {
    /// The role granted.
    pub role: String,
    /// Conditions, all required.
    pub when: Vec<ClaimCondition>,
}

/// One test on one claim.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClaimCondition {
    /// Claim name. Names starting with `http://` or `https://` are taken literally (Auth0
    /// namespaced claims); others are dot-separated paths (`realm_access.roles`).
    pub claim: String,
    /// The test.
    pub op: ClaimOp,
    /// The operand.
    pub value: String,
}

/// How a claim is tested. Values may be a string or an array of strings; any element may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClaimOp {
    /// The claim (or an element of it) equals the value.
    Equals,
    /// Same as `equals`; reads better for arrays (`groups contains admins`).
    Contains,
    /// The claim is a space-separated list (OAuth `scope`) or array containing the value.
    Has,
    /// The claim (or an element) starts with the value.
    Prefix,
    /// The claim (or an element) ends with the value (e.g. `@example.com`).
    Suffix,
}

/// `allow <role> <methods> <paths>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AllowRule {
    /// The role this grant is for.
    pub role: String,
    /// HTTP methods, upper case; `*` for any.
    pub methods: Vec<String>,
    /// Path patterns: exact (`/items`), prefix (`/items/*`), suffix (`*.json`) or `*`.
    pub paths: Vec<String>,
}

/// The identity assertion minted for the upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AssertionConfig {
    /// `iss` of minted assertions (default `caddy-iap`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` of minted assertions.
    pub audience: String,
    /// Lifetime in seconds (default 300).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Header carrying the assertion (default `X-IAP-Assertion`).
    #[serde(default)]
    pub header: Option<String>,
    /// Signing keys as base64 PKCS#8 documents; the first signs, all are published.
    /// Filled in by the Caddy module from Caddy storage, never written in a Caddyfile.
    #[serde(default)]
    pub signing_keys: Vec<String>,
}

/// Header names for the identity given to the upstream. An empty name turns that header off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct HeaderNames {
    /// Subject (default `X-IAP-User`).
    pub user: String,
    /// Email (default `X-IAP-Email`).
    pub email: String,
    /// Roles, comma-separated (default `X-IAP-Roles`).
    pub roles: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        Self {
            user: "X-IAP-User".into(),
            email: "X-IAP-Email".into(),
            roles: "X-IAP-Roles".into(),
        }
    }
}

/// Bounds of the verified-token cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Most entries kept; 0 turns the cache off (default 65536).
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 65_536,
        }
    }
}

fn default_max_token_bytes() -> usize {
    8192
}
