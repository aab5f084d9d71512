//! The engine: one per config instance, shared by every request thread.
//!
//! `decide` is the whole per-request path: token → (cache | parse → key → signature → claims)
//! → identity → roles → permission for (method, path) → assertion → decision.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_lc_rs::digest::{Context, SHA256};

use crate::alg::Alg;
use crate::assertion::Minter;
use crate::cache::{Entry, TokenCache};
use crate::claims::{self, ClaimsPolicy};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, HeaderNames, IssuerConfig, KeySource};
use crate::counter::StripedCounter;
use crate::error::{ConfigError, Denial, Error, ReasonCode, TokenError, truncate_for_log};
use crate::fetch::{HttpFetcher, KeyFetcher};
use crate::json::{Json, JsonObject};
use crate::jwk::{parse_jwks, parse_pem};
use crate::jws::parse_compact;
use crate::keyset::{FetchStats, IssuerKeys, RefreshPolicy, RemoteSource};
use crate::path;
use crate::permissions::Permissions;
use crate::roles::{RoleMatcher, RoleNames, RoleSet};

/// Most keys one token's signature is tried against.
const MAX_KEY_ATTEMPTS: usize = 4;

const DEFAULT_ALGS: [Alg; 5] = [Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA];

/// The facts of one HTTP request the engine decides on. Borrowed for the call only.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Request<'a> {
    /// HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// Host the request was sent to.
    pub host: &'a str,
    /// The escaped request path (Go's `URL.EscapedPath()`).
    pub path: &'a str,
    /// The presented token, if any.
    pub token: Option<&'a [u8]>,
    /// Where the token came from.
    pub source: TokenSource,
}

/// Where a token came from, which decides the audience it must carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// Presented by the caller (header or cookie): an access token for one of `audiences`.
    #[default]
    Bearer,
    /// The ID token of a browser session this gateway sealed: its audience is the issuer's
    /// `login_client_id`. Such tokens are never accepted as bearer tokens, and the two never
    /// share a cache entry.
    Session,
}

impl<'a> Request<'a> {
    /// A request with a bearer token.
    pub fn new(method: &'a str, host: &'a str, path: &'a str, token: Option<&'a [u8]>) -> Self {
        Self {
            method,
            host,
            path,
            token,
            source: TokenSource::Bearer,
        }
    }

    /// A request carried by a browser session, decided on the session's ID token.
    pub fn from_session(method: &'a str, host: &'a str, path: &'a str, id_token: &'a [u8]) -> Self {
        Self {
            source: TokenSource::Session,
            ..Self::new(method, host, path, Some(id_token))
        }
    }
}

/// Who the caller is, from verified claims.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Identity {
    /// The token's issuer.
    pub issuer: Arc<str>,
    /// `sub`.
    pub subject: Arc<str>,
    /// `email`, when a string.
    pub email: Option<Arc<str>>,
    /// `name`, when a string.
    pub name: Option<Arc<str>>,
    /// Role names granted by the rules, in config order.
    pub roles: Vec<Arc<str>>,
    /// The token's `exp`.
    pub expires_at: u64,
    /// Token metadata for logs: `kid`, `alg`, `jti`.
    pub kid: Option<Arc<str>>,
    /// The token's algorithm.
    pub alg: Alg,
    /// The token's `jti`.
    pub jti: Option<Arc<str>>,
    pub(crate) role_set: RoleSet,
    /// SHA-256 over issuer, subject, email, name and roles: the assertion cache key.
    pub(crate) fingerprint: [u8; 32],
    /// Identity headers (name, value) for the upstream, computed once per verification.
    pub(crate) headers: Vec<(Arc<str>, Arc<str>)>,
    /// The claim values the role rules look at, for denial logs (`groups=[a,b]`).
    pub(crate) claims_summary: String,
}

impl Identity {
    /// The claim values the role rules look at (`groups=[a,b]`), for denial logs.
    pub fn claims_summary(&self) -> &str {
        &self.claims_summary
    }

    /// A bare identity for unit tests of the parts that only carry one.
    #[cfg(test)]
    pub(crate) fn for_tests(subject: &str) -> Self {
        Self {
            issuer: "https://idp.test".into(),
            subject: subject.into(),
            email: None,
            name: None,
            roles: Vec::new(),
            expires_at: 0,
            kid: None,
            alg: Alg::ES256,
            jti: None,
            role_set: RoleSet::default(),
            fingerprint: [0; 32],
            headers: vec![("X-IAP-User".into(), subject.into())],
            claims_summary: String::new(),
        }
    }
}

/// The outcome of [`Engine::decide`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Decision {
    /// `None` when allowed; otherwise status and reason code.
    pub denial: Option<Denial>,
    /// Human-readable reason for the log (never token bytes).
    pub reason: Cow<'static, str>,
    /// The verified identity, when the token was valid (also on a 403).
    pub identity: Option<Arc<Identity>>,
    /// The assertion header (name, value) minted for this request, when allowed.
    assertion: Option<(Arc<str>, Arc<str>)>,
    /// The `WWW-Authenticate` value for a 401, empty otherwise.
    pub www_authenticate: String,
    /// Whether the verified-token cache answered.
    pub cache_hit: bool,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn allowed(&self) -> bool {
        self.denial.is_none()
    }

    /// The HTTP status: 200 when allowed.
    pub fn status(&self) -> u16 {
        self.denial.map_or(200, |d| d.status)
    }

    /// The reason code.
    pub fn reason_code(&self) -> ReasonCode {
        self.denial.map_or(ReasonCode::Allowed, |d| d.reason)
    }

    /// Headers (name, value) to set on the upstream request: the identity's and the assertion
    /// when allowed, none otherwise. Borrowed from the identity rather than copied into the
    /// decision: on a cache hit every thread reads the same identity, and cloning its `Arc`s
    /// would have the cores write to (and fight over) the same cache lines on every request.
    pub fn set_headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let identity = self.identity.as_deref().filter(|_| self.allowed());
        let headers = identity.map_or(&[][..], |id| &id.headers[..]);
        headers
            .iter()
            .map(|(n, v)| (&**n, &**v))
            .chain(self.assertion.as_ref().map(|(n, v)| (&**n, &**v)))
    }
}

/// Counters for metrics, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Verified-token cache hits.
    pub cache_hits: u64,
    /// Verified-token cache misses.
    pub cache_misses: u64,
    /// Successful key-set fetches.
    pub key_fetch_ok: u64,
    /// Failed key-set fetches.
    pub key_fetch_error: u64,
    /// Unknown-kid refreshes refused by the cooldown.
    pub key_fetch_skipped: u64,
}

/// One trusted issuer, compiled.
#[derive(Debug)]
struct Issuer {
    name: Arc<str>,
    algs: Vec<Alg>,
    policy: ClaimsPolicy,
    /// For session ID tokens; `None` when browser sign-in is not configured for this issuer.
    id_token_policy: Option<ClaimsPolicy>,
    keys: Arc<IssuerKeys>,
    trust_unverified_email: bool,
}

/// Everything one config enforces. Build once, share across threads.
#[derive(Debug)]
pub struct Engine {
    issuers: Vec<Issuer>,
    names: RoleNames,
    roles: RoleMatcher,
    permissions: Permissions,
    minter: Option<Minter>,
    cache: TokenCache,
    header_names: [Arc<str>; 3],
    strip_headers: Vec<Arc<str>>,
    max_token_bytes: usize,
    clock: Arc<dyn Clock>,
    fetch_stats: Arc<FetchStats>,
    cache_hits: StripedCounter,
    cache_misses: StripedCounter,
}

impl Engine {
    /// Builds an engine with the system clock and the HTTP fetcher, and starts the first key
    /// fetches in the background.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        Self::with_parts(config, Arc::new(SystemClock), Arc::new(HttpFetcher::new()))
    }

    /// Builds an engine with an injected clock and fetcher (tests use fixed ones).
    pub fn with_parts(
        config: &Config,
        clock: Arc<dyn Clock>,
        fetcher: Arc<dyn KeyFetcher>,
    ) -> Result<Self, ConfigError> {
        if config.issuers.is_empty() {
            return Err(ConfigError::new(
                "issuers",
                "at least one issuer is required",
            ));
        }
        if !(256..=65_536).contains(&config.max_token_bytes) {
            return Err(ConfigError::new(
                "max_token_bytes",
                "must be between 256 and 65536",
            ));
        }
        let fetch_stats = Arc::new(FetchStats::default());
        let mut issuers = Vec::with_capacity(config.issuers.len());
        for (i, ic) in config.issuers.iter().enumerate() {
            if config.issuers[..i]
                .iter()
                .any(|other| other.issuer == ic.issuer)
            {
                return Err(ConfigError::new(
                    format!("issuers[{i}]"),
                    format!("issuer {:?} is configured twice", ic.issuer),
                ));
            }
            issuers.push(compile_issuer(i, ic, &clock, &fetcher, &fetch_stats)?);
        }
        let names = RoleNames::new(&config.roles, &config.allow);
        let roles = RoleMatcher::compile(&config.roles, &names)?;
        let permissions = Permissions::compile(&config.allow, &names)?;
        let minter = config.assertion.as_ref().map(Minter::new).transpose()?;
        let h = &config.headers;
        let header_names =
            [h.user.as_str(), h.email.as_str(), h.roles.as_str()].map(Arc::<str>::from);
        let mut strip_headers: Vec<Arc<str>> = header_names
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        // The default names stay ours when renamed or turned off: an upstream written for
        // them must never receive a client's copy.
        let defaults = HeaderNames::default();
        for default in [&defaults.user, &defaults.email, &defaults.roles] {
            if !strip_headers
                .iter()
                .any(|n| n.eq_ignore_ascii_case(default))
            {
                strip_headers.push(default.as_str().into());
            }
        }
        // The assertion header is always ours, configured or not: an upstream that checks for
        // one must never receive a client's.
        let assertion_header = minter
            .as_ref()
            .map_or(crate::assertion::DEFAULT_HEADER, |m| &**m.header_name());
        strip_headers.push(assertion_header.into());
        if assertion_header != crate::assertion::DEFAULT_HEADER {
            strip_headers.push(crate::assertion::DEFAULT_HEADER.into());
        }
        for name in &strip_headers {
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(ConfigError::new(
                    "headers",
                    format!("{name:?} is not a valid header name"),
                ));
            }
        }
        let engine = Self {
            cache: TokenCache::new(config.cache.max_entries, fingerprint_config(config)),
            issuers,
            names,
            roles,
            permissions,
            minter,
            header_names,
            strip_headers,
            max_token_bytes: config.max_token_bytes,
            clock,
            fetch_stats,
            cache_hits: StripedCounter::default(),
            cache_misses: StripedCounter::default(),
        };
        for issuer in &engine.issuers {
            issuer.keys.start();
        }
        Ok(engine)
    }

    /// Decides one request.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let now = self.clock.now();
        let (identity, cache_hit) = match self.authenticate(req.token, req.source, now) {
            Ok(v) => v,
            Err(e) => return self.deny(&e, None, false),
        };
        let path = match path::normalize(req.path) {
            Ok(p) => p,
            Err(reason) => {
                let e = Error::BadRequest {
                    reason: reason.into(),
                };
                return self.deny(&e, Some(identity), cache_hit);
            }
        };
        if !self
            .permissions
            .allows(&identity.role_set, req.method, &path)
        {
            let roles: Vec<&str> = identity.roles.iter().map(|r| &**r).collect();
            let reason = format!(
                "no allow rule for {} {} with roles [{}]",
                req.method,
                truncate_for_log(&path),
                roles.join(",")
            );
            return self.deny(&Error::Forbidden { reason }, Some(identity), cache_hit);
        }
        let assertion = match &self.minter {
            None => None,
            Some(minter) => match minter.assertion(&identity, now) {
                Some(token) => Some((minter.header_name().clone(), token)),
                None => {
                    let e = Error::Config(ConfigError::new("assertion", "signing failed"));
                    return self.deny(&e, Some(identity), cache_hit);
                }
            },
        };
        Decision {
            denial: None,
            reason: Cow::Borrowed("allowed"),
            identity: Some(identity),
            assertion,
            www_authenticate: String::new(),
            cache_hit,
        }
    }

    /// Verifies a token and maps its roles, without an HTTP permission check: for fronts that
    /// are not HTTP (the PostgreSQL gateway), which apply their own grants to `roles`.
    /// A refusal comes back as the denying [`Decision`] (status, reason code, log reason).
    pub fn identify(&self, token: &[u8]) -> Result<Arc<Identity>, Decision> {
        self.identify_from(token, TokenSource::Bearer)
    }

    /// [`Self::identify`] for a token from `source`: the browser sign-in checks a new ID token
    /// with [`TokenSource::Session`] before sealing it into a session.
    pub fn identify_from(
        &self,
        token: &[u8],
        source: TokenSource,
    ) -> Result<Arc<Identity>, Decision> {
        let now = self.clock.now();
        match self.authenticate(Some(token), source, now) {
            Ok((identity, _)) => Ok(identity),
            Err(e) => Err(self.deny(&e, None, false)),
        }
    }

    /// The engine's clock, so fronts built on it agree on "now" (and tests can move it).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Headers the engine owns: every request has client-sent copies removed.
    pub fn strip_headers(&self) -> &[Arc<str>] {
        &self.strip_headers
    }

    /// The assertion public keys as a JWKS document, if assertions are on.
    pub fn public_jwks(&self) -> Option<&str> {
        self.minter.as_ref().map(Minter::public_jwks)
    }

    /// The `kid` assertions are signed with, if assertions are on.
    pub fn assertion_kid(&self) -> Option<&str> {
        self.minter.as_ref().map(Minter::kid)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            cache_hits: self.cache_hits.get(),
            cache_misses: self.cache_misses.get(),
            key_fetch_ok: self.fetch_stats.ok.load(Ordering::Relaxed),
            key_fetch_error: self.fetch_stats.error.load(Ordering::Relaxed),
            key_fetch_skipped: self.fetch_stats.kid_miss_refused.load(Ordering::Relaxed),
        }
    }

    /// The last key-fetch error per issuer, for diagnostics.
    pub fn key_errors(&self) -> Vec<(String, String)> {
        self.issuers
            .iter()
            .filter_map(|i| i.keys.last_error().map(|e| (i.keys.issuer().to_owned(), e)))
            .collect()
    }

    /// Number of cached verified tokens.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Mints an assertion for a synthetic identity, bypassing the assertion cache (benchmarks).
    pub(crate) fn mint_fresh(&self, subject: &str, now: u64) -> Option<Arc<str>> {
        let minter = self.minter.as_ref()?;
        let identity = Identity {
            issuer: "bench".into(),
            subject: subject.into(),
            email: Some("alice@example.com".into()),
            name: None,
            roles: vec!["reader".into()],
            expires_at: now + 3600,
            kid: None,
            alg: Alg::ES256,
            jti: None,
            role_set: RoleSet::default(),
            fingerprint: [0; 32],
            headers: Vec::new(),
            claims_summary: String::new(),
        };
        minter.mint(&identity, now).map(|m| m.token)
    }

    fn authenticate(
        &self,
        token: Option<&[u8]>,
        source: TokenSource,
        now: u64,
    ) -> Result<(Arc<Identity>, bool), Error> {
        let token = match token {
            Some(t) if !t.is_empty() => t,
            _ => return Err(Error::MissingToken),
        };
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLong {
                len: token.len(),
                max: self.max_token_bytes,
            }
            .into());
        }
        let key = self.cache.key(token, source);
        if let Some(entry) = self
            .cache
            .get(&key, now, |i| self.issuers[i].keys.current_epoch())
        {
            self.cache_hits.incr();
            return Ok((entry.identity, true));
        }
        self.cache_misses.incr();
        let (identity, issuer, epoch) = self.verify(token, source, now)?;
        let identity = Arc::new(identity);
        let valid_until = identity.expires_at;
        self.cache.insert(
            key,
            Entry {
                identity: identity.clone(),
                issuer,
                epoch,
                valid_until,
                verified_at: now,
            },
        );
        Ok((identity, false))
    }

    /// The uncached path: strict parse, issuer, key, signature, claims, roles.
    fn verify(
        &self,
        token: &[u8],
        source: TokenSource,
        now: u64,
    ) -> Result<(Identity, usize, u64), Error> {
        let jws = parse_compact(token, self.max_token_bytes)?;
        let mut claims = jws.claims()?;
        let iss = claims::issuer(&claims)?;
        let (index, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| *i.name == *iss)
            .ok_or(TokenError::UnknownIssuer)?;
        let alg = jws.header.alg;
        if !issuer.algs.contains(&alg) {
            return Err(TokenError::DisallowedAlgorithm {
                alg: alg.as_str().into(),
            }
            .into());
        }
        let kid = jws.header.kid.as_deref();
        let snapshot = issuer
            .keys
            .lookup(kid, alg)
            .map_err(|_| Error::KeysUnavailable {
                issuer: issuer.name.to_string(),
                last_error: issuer.keys.last_error(),
            })?;
        let mut candidates = snapshot.candidates(kid, alg).peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKey {
                kid: kid.map(truncate_for_log),
            }
            .into());
        }
        // A token without `kid` may match several keys; trying each is a verification per key,
        // so an unauthenticated caller gets a bounded number of attempts.
        if !candidates
            .take(MAX_KEY_ATTEMPTS)
            .any(|k| k.verify(alg, jws.signing_input, &jws.signature).is_ok())
        {
            return Err(TokenError::BadSignature.into());
        }
        let policy = match source {
            TokenSource::Bearer => &issuer.policy,
            TokenSource::Session => issuer
                .id_token_policy
                .as_ref()
                .ok_or(TokenError::UnknownIssuer)?,
        };
        let checked = claims::check(&claims, policy, now)?;
        // "nOAuth": where users can set their own email, an unverified one proves nothing. It
        // is treated as absent for roles, headers and the assertion unless the issuer is
        // configured to vouch for every email it puts in a token.
        if !issuer.trust_unverified_email && claims.get("email_verified") != Some(&Json::Bool(true))
        {
            claims.remove("email");
        }
        let role_set = self.roles.roles_for(&claims);
        let identity = self.identity(
            issuer,
            &claims,
            checked,
            role_set,
            jws.header.kid.clone(),
            alg,
        );
        Ok((identity, index, snapshot.epoch))
    }

    fn identity(
        &self,
        issuer: &Issuer,
        claims: &JsonObject<'_>,
        checked: claims::CheckedClaims,
        role_set: RoleSet,
        kid: Option<Arc<str>>,
        alg: Alg,
    ) -> Identity {
        let string = |name: &str| {
            claims
                .get(name)
                .and_then(Json::as_str)
                .map(Arc::<str>::from)
        };
        let roles: Vec<Arc<str>> = role_set
            .iter()
            .map(|i| self.names.name(i).clone())
            .collect();
        let subject = checked.sub;
        let email = string("email");
        let name = string("name");

        // Only the assertion cache reads the fingerprint: without a minter it is not worth a hash.
        let fingerprint = match self.minter {
            Some(_) => assertion_fingerprint(
                [
                    Some(&issuer.name),
                    Some(&subject),
                    email.as_ref(),
                    name.as_ref(),
                ],
                &roles,
                checked.exp,
            ),
            None => [0; 32],
        };

        let [user_h, email_h, roles_h] = &self.header_names;
        let mut headers = Vec::with_capacity(3);
        // Header values must not carry CR/LF or other controls; claims that do are not forwarded.
        let safe = |v: &str| !v.bytes().any(|b| b.is_ascii_control());
        if !user_h.is_empty() && safe(&subject) {
            headers.push((user_h.clone(), subject.clone()));
        }
        if let Some(email) = email.as_ref().filter(|e| !email_h.is_empty() && safe(e)) {
            headers.push((email_h.clone(), email.clone()));
        }
        if !roles_h.is_empty() {
            let joined = match &roles[..] {
                [one] => one.clone(),
                _ => roles.join(",").into(),
            };
            headers.push((roles_h.clone(), joined));
        }
        Identity {
            issuer: issuer.name.clone(),
            subject,
            email,
            name,
            roles,
            expires_at: checked.exp,
            kid,
            alg,
            jti: checked.jti,
            role_set,
            fingerprint,
            headers,
            claims_summary: self.roles.explain(claims),
        }
    }

    fn deny(&self, e: &Error, identity: Option<Arc<Identity>>, cache_hit: bool) -> Decision {
        let denial = Denial::from(e);
        let www_authenticate = match (denial.status, e) {
            (401, Error::MissingToken) => r#"Bearer realm="caddy-iap""#.to_owned(),
            (401, _) => format!(
                r#"Bearer realm="caddy-iap", error="invalid_token", error_description="{}""#,
                denial.reason.as_str()
            ),
            _ => String::new(),
        };
        let mut reason = e.to_string();
        if let (Error::Forbidden { .. }, Some(identity)) = (e, &identity) {
            // Say what the token carried, for whoever debugs the rules (claim values only).
            reason.push_str("; ");
            reason.push_str(&identity.claims_summary);
        }
        Decision {
            denial: Some(denial),
            reason: reason.into(),
            identity,
            assertion: None,
            www_authenticate,
            cache_hit,
        }
    }
}

fn compile_issuer(
    i: usize,
    ic: &IssuerConfig,
    clock: &Arc<dyn Clock>,
    fetcher: &Arc<dyn KeyFetcher>,
    stats: &Arc<FetchStats>,
) -> Result<Issuer, ConfigError> {
    let at = |field: &str| format!("issuers[{i}].{field}");
    if ic.issuer.is_empty() {
        return Err(ConfigError::new(at("issuer"), "must not be empty"));
    }
    if ic.audiences.is_empty() || ic.audiences.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            at("audiences"),
            "at least one non-empty audience is required",
        ));
    }
    let algs = if ic.algorithms.is_empty() {
        DEFAULT_ALGS.to_vec()
    } else {
        ic.algorithms
            .iter()
            .map(|a| {
                a.parse::<Alg>().map_err(|()| {
                    ConfigError::new(
                        at("algorithms"),
                        format!("{a:?} is not a supported algorithm"),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    let policy = ClaimsPolicy {
        audiences: ic.audiences.clone(),
        leeway: ic.leeway_secs.unwrap_or(60),
        max_lifetime: ic.max_lifetime_secs.unwrap_or(86_400),
    };
    let id_token_policy = match ic.login_client_id.as_deref() {
        None => None,
        Some("") => {
            return Err(ConfigError::new(at("login_client_id"), "must not be empty"));
        }
        // Were the client id also a bearer audience, every ID token issued to it (which
        // travel further than access tokens: other apps on the client, SPAs) would be accepted
        // as a bearer token.
        Some(client_id) if ic.audiences.iter().any(|a| a == client_id) => {
            return Err(ConfigError::new(
                at("login_client_id"),
                "must not also be one of audiences: ID tokens for it would pass as bearer tokens",
            ));
        }
        Some(client_id) => Some(ClaimsPolicy {
            audiences: vec![client_id.to_owned()],
            leeway: policy.leeway,
            max_lifetime: policy.max_lifetime,
        }),
    };
    for (field, value) in [
        ("kid_miss_cooldown", ic.kid_miss_cooldown_secs),
        ("refresh_min", ic.refresh_min_secs),
        ("refresh_max", ic.refresh_max_secs),
    ] {
        if value == Some(0) {
            // Zero would let a stream of unknown kids drive back-to-back fetches.
            return Err(ConfigError::new(at(field), "must be at least 1s"));
        }
    }
    if policy.leeway > 600 {
        return Err(ConfigError::new(at("leeway"), "must be at most 10m"));
    }
    let refresh = RefreshPolicy {
        kid_miss_cooldown: ic.kid_miss_cooldown_secs.unwrap_or(30),
        refresh_min: ic.refresh_min_secs.unwrap_or(300),
        refresh_max: ic.refresh_max_secs.unwrap_or(86_400),
        timeout: Duration::from_millis(ic.fetch_timeout_ms.unwrap_or(5_000).clamp(100, 60_000)),
    };
    let remote = |source| {
        IssuerKeys::remote(
            &ic.issuer,
            source,
            refresh,
            fetcher.clone(),
            clock.clone(),
            stats.clone(),
        )
    };
    let keys = match &ic.keys {
        KeySource::Discovery => {
            crate::fetch::check_url(&ic.issuer).map_err(|e| {
                ConfigError::new(at("issuer"), format!("cannot use discovery: {e}"))
            })?;
            remote(RemoteSource::Discovery)
        }
        KeySource::JwksUrl(url) => {
            crate::fetch::check_url(url)
                .map_err(|e| ConfigError::new(at("jwks_url"), e.to_string()))?;
            remote(RemoteSource::JwksUrl(url.clone()))
        }
        KeySource::JwksInline(doc) => {
            let parsed = parse_jwks(doc.as_bytes()).map_err(|e| ConfigError::new(at("jwks"), e))?;
            if parsed.keys.is_empty() {
                return Err(ConfigError::new(
                    at("jwks"),
                    format!("no usable key: {}", parsed.skipped.join("; ")),
                ));
            }
            IssuerKeys::fixed(&ic.issuer, parsed.keys)
        }
        KeySource::Pem(pems) => {
            let keys = pems
                .iter()
                .enumerate()
                .map(|(j, pem)| {
                    parse_pem(pem, None).map_err(|e| ConfigError::new(at(&format!("pem[{j}]")), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                return Err(ConfigError::new(at("pem"), "no key given"));
            }
            IssuerKeys::fixed(&ic.issuer, keys)
        }
    };
    Ok(Issuer {
        trust_unverified_email: ic.trust_unverified_email,
        name: ic.issuer.as_str().into(),
        algs,
        policy,
        id_token_policy,
        keys: Arc::new(keys),
    })
}

/// The assertion cache's key for an identity: who (issuer, subject, email, name, each length-
/// prefixed so no two differ only in where one ends), its roles, and the token's `exp` (the
/// assertion's exp is capped by it, so a cached one is only reused for tokens expiring then).
fn assertion_fingerprint(who: [Option<&Arc<str>>; 4], roles: &[Arc<str>], exp: u64) -> [u8; 32] {
    let mut fp = Context::new(&SHA256);
    let parts = who.into_iter().map(|p| p.map_or("", |p| &**p));
    for part in parts.chain(roles.iter().map(|r| &**r)) {
        fp.update(&(part.len() as u64).to_be_bytes());
        fp.update(part.as_bytes());
    }
    fp.update(&exp.to_be_bytes());
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(fp.finish().as_ref());
    fingerprint
}

/// A fingerprint of what decides a verification, salting the token cache so entries never
/// cross configs.
fn fingerprint_config(config: &Config) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(format!("{:?}", config.issuers).as_bytes());
    ctx.update(&(config.max_token_bytes as u64).to_be_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
