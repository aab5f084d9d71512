//! [`SignIn`]: one site's browser sign-in, from the first redirect to sign-out.
//!
//! The HTTP handler (the Caddy module) asks four things of it, each answered with what to send
//! the browser: [`SignIn::begin`] (redirect to the provider, with a login cookie),
//! [`SignIn::callback`] (check the provider's answer, seal a session), [`SignIn::session`]
//! (open the session of a request: its ID token, renewed cookies) and [`SignIn::sign_out`].
//! Every request on a session is then decided by the engine on the session's ID token,
//! exactly as a bearer token is.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use caddy_iap_core::{Engine, TokenSource};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::cookies::{self, Lookup};
use crate::flow::{AuthorizeRequest, LoginState, authorize_url, form_encode, safe_return_path};
use crate::provider::{self, Client, Endpoints, ProviderError};
use crate::seal::Keyring;
use crate::session::{Lifetimes, MAX_CHUNKS, Session, SessionError};

/// The purpose a login cookie is sealed for.
const LOGIN_PURPOSE: &str = "caddy-iap login v1";
/// Most completed sign-ins remembered to refuse a replayed callback; past that the oldest is
/// forgotten (PKCE and the provider's one-time codes still stop a replay).
const USED_STATES: usize = 100_000;
/// A session's ID token is refreshed this long before it expires (or at half its lifetime,
/// when that is shorter).
const REFRESH_BEFORE_SECS: u64 = 30;
/// One refresh serves every request of a session for this long: a page's parallel requests
/// share it instead of each spending the refresh token (which rotating providers revoke).
const REFRESH_SHARED_SECS: u64 = 60;
/// Clocks of a cluster's instances may disagree by this much.
const CLOCK_SKEW_SECS: u64 = 60;
/// More login cookies than this in one request (abandoned sign-ins) are cleared by the next.
const MAX_LOGIN_COOKIES: usize = 4;
/// After a failed discovery, sign-ins fail fast for this long instead of each asking again.
const DISCOVERY_RETRY_SECS: u64 = 5;

/// The `login` block of a site, as JSON from the Caddy module.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInConfig {
    /// The issuer, one of the engine's (with `login_client_id` set to `client_id`).
    pub issuer: String,
    /// The gateway's client id at the provider.
    pub client_id: String,
    /// The environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Or the file holding it. Never the secret itself: configs are shown and logged.
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// Scopes asked for; `openid` is always added.
    #[serde(default = "default_scopes")]
    pub scopes: String,
    /// The session cookie's name; chunks add `-1`, `-2`, `-3`, login cookies `-login-…`.
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// Absolute session lifetime, seconds (default 12 h).
    #[serde(default = "default_lifetime")]
    pub session_lifetime_secs: u64,
    /// Idle timeout, seconds (default 1 h).
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// How long a started sign-in may take, seconds (default 10 min).
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
    /// Cookie keys, newest first: 32 bytes each, base64 (standard or URL-safe). The newest
    /// seals, all open, so a rotation keeps existing sessions.
    pub keys: Vec<String>,
    /// The provider's endpoints; discovered under `issuer` when absent.
    #[serde(default)]
    pub endpoints: Option<Endpoints>,
    /// Timeout of one call to the provider, milliseconds (default 5000).
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_ms: u64,
}

fn default_scopes() -> String {
    "openid email profile".into()
}
fn default_cookie_name() -> String {
    "__Host-caddy-iap".into()
}
fn default_lifetime() -> u64 {
    12 * 3600
}
fn default_idle() -> u64 {
    3600
}
fn default_login_timeout() -> u64 {
    600
}
fn default_fetch_timeout() -> u64 {
    5000
}

/// A redirect for the browser, with the cookies to set on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The `Location`.
    pub location: String,
    /// `Set-Cookie` values.
    pub set_cookies: Vec<String>,
}

/// A callback that could not complete. `message` is for the person at the browser, `reason`
/// for the log; neither holds a code, token or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackError {
    /// HTTP status of the error page.
    pub status: u16,
    /// One sentence for the error page.
    pub message: &'static str,
    /// Details for the log.
    pub reason: String,
    /// Where "try again" leads: the page the sign-in was for, when known.
    pub retry: String,
    /// Cookies to clear (the spent login cookie).
    pub set_cookies: Vec<String>,
}

/// The session a request carries.
#[derive(Debug)]
pub enum SessionState {
    /// A live session: decide on `id_token`; send `set_cookies` (renewed) with the response.
    Active {
        /// The ID token to decide on ([`caddy_iap_core::Request::from_session`]).
        id_token: String,
        /// When the session ends, whatever happens (Unix seconds).
        expires_at: u64,
        /// Renewed session cookies, when the idle clock or the ID token moved on.
        set_cookies: Vec<String>,
    },
    /// No session cookie.
    None,
    /// A session cookie that cannot be used: sign in again; send `set_cookies` (clears).
    Ended {
        /// Why, for the log.
        reason: String,
        /// Clears of the cookies presented.
        set_cookies: Vec<String>,
    },
}

/// One site's browser sign-in. Built once per config, shared by every request.
pub struct SignIn {
    issuer: String,
    client: Client,
    scopes: String,
    cookie_name: String,
    life: Lifetimes,
    login_timeout: u64,
    keys: Keyring,
    configured: Option<Arc<Endpoints>>,
    /// Discovered endpoints, or the time discovery last failed.
    discovered: RwLock<Option<Result<Arc<Endpoints>, u64>>>,
    agent: ureq::Agent,
    used_states: Mutex<UsedStates>,
    /// Recent refreshes by SHA-256 of the refresh token spent, so concurrent requests of one
    /// session refresh once. Each slot is locked while its refresh runs.
    refreshes: Mutex<HashMap<[u8; 32], RefreshSlot>>,
}

/// One session's latest refresh; locked while a refresh runs, so the others wait for it.
type RefreshSlot = Arc<Mutex<Option<Refreshed>>>;

/// Completed sign-ins' states, oldest first, kept for a login timeout.
#[derive(Default)]
struct UsedStates {
    set: HashSet<String>,
    order: VecDeque<(u64, String)>,
}

/// The outcome of one refresh, shared by the requests that arrive while it is fresh.
#[derive(Clone)]
struct Refreshed {
    at: u64,
    id_token: String,
    id_expires_at: u64,
    refresh_token: Option<String>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client.id)
            .finish_non_exhaustive()
    }
}

impl SignIn {
    /// Checks a config and builds the sign-in. Errors name the field.
    pub fn new(config: SignInConfig) -> Result<Self, String> {
        if config.issuer.is_empty() {
            return Err("issuer: must not be empty".into());
        }
        if config.client_id.is_empty() {
            return Err("client_id: must not be empty".into());
        }
        let secret = caddy_iap_core::read_secret(
            config.client_secret_env.as_deref(),
            config.client_secret_file.as_deref(),
            "client secret",
        )
        .map_err(|e| format!("client_secret: {e}"))?;
        // `__Host-` makes browsers refuse the cookie from a sibling subdomain or plain HTTP
        // (cookie tossing, session fixation); our cookies are Secure and host-only anyway.
        if !cookies::valid_name(&config.cookie_name) || !config.cookie_name.starts_with("__Host-") {
            return Err(format!(
                "cookie_name: {:?} must be a cookie name starting with __Host-",
                config.cookie_name
            ));
        }
        if config.session_lifetime_secs < 60 || config.idle_timeout_secs < 60 {
            return Err("session lifetime and idle timeout must be at least 1m".into());
        }
        if !(30..=3600).contains(&config.login_timeout_secs) {
            return Err("login_timeout: must be between 30s and 1h".into());
        }
        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                URL_SAFE_NO_PAD
                    .decode(k.trim_end_matches('='))
                    .or_else(|_| STANDARD.decode(k))
                    .map(Zeroizing::new)
                    .map_err(|_| format!("keys[{i}]: not base64"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keys = Keyring::new(&keys).map_err(|e| format!("keys: {e}"))?;
        if let Some(e) = &config.endpoints {
            e.check().map_err(|e| format!("endpoints: {e}"))?;
        } else {
            caddy_iap_core::check_url(&config.issuer)
                .map_err(|e| format!("issuer: cannot use discovery: {e}"))?;
        }
        Ok(Self {
            issuer: config.issuer,
            client: Client {
                id: config.client_id,
                secret,
            },
            scopes: config.scopes,
            cookie_name: config.cookie_name,
            life: Lifetimes {
                absolute: config.session_lifetime_secs,
                idle: config.idle_timeout_secs,
            },
            login_timeout: config.login_timeout_secs,
            keys,
            configured: config.endpoints.map(Arc::new),
            discovered: RwLock::new(None),
            agent: caddy_iap_core::provider_agent(Duration::from_millis(
                config.fetch_timeout_ms.clamp(100, 60_000),
            )),
            used_states: Mutex::new(UsedStates::default()),
            refreshes: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a sign-in: the provider's authorization URL, and the login cookie that carries
    /// state, nonce and PKCE verifier to the callback. `return_to` is checked here (same site
    /// only); `redirect_uri` is this site's callback URL.
    /// `cookie_headers` are the request's: login cookies of abandoned sign-ins beyond a few are
    /// cleared.
    pub fn begin<S: AsRef<str>>(
        &self,
        return_to: &str,
        redirect_uri: &str,
        cookie_headers: &[S],
        now: u64,
    ) -> Result<Redirect, ProviderError> {
        let endpoints = self.endpoints(now)?;
        let random = || {
            crate::pkce::random_token()
                .ok_or_else(|| ProviderError::new("the system random generator failed"))
        };
        let login = LoginState {
            state: random()?,
            nonce: random()?,
            verifier: random()?,
            return_to: safe_return_path(return_to).to_owned(),
            started_at: now,
        };
        let location = authorize_url(&AuthorizeRequest {
            endpoint: &endpoints.authorization_endpoint,
            client_id: &self.client.id,
            redirect_uri,
            scope: &self.scopes,
            state: &login.state,
            nonce: &login.nonce,
            code_challenge: &crate::pkce::challenge(&login.verifier),
        });
        let json = Zeroizing::new(serde_json::to_vec(&login).expect("plain struct"));
        let sealed = self
            .keys
            .seal(LOGIN_PURPOSE, &json)
            .map_err(|e| ProviderError::new(e.to_string()))?;
        let mut set_cookies = Vec::new();
        let pending = self.login_cookies(cookie_headers);
        if pending.len() >= MAX_LOGIN_COOKIES {
            set_cookies.extend(pending.iter().map(|n| cookies::set_cookie(n, "", 0)));
        }
        set_cookies.push(cookies::set_cookie(
            &self.login_cookie(&login.state),
            &sealed,
            self.login_timeout,
        ));
        Ok(Redirect {
            location,
            set_cookies,
        })
    }

    /// Completes a sign-in from the provider's redirect: `query` is the callback's raw query
    /// string, `cookie_headers` the request's `Cookie` values. On success, redirects to the
    /// page the sign-in was for, with the session cookies.
    pub fn callback<S: AsRef<str>>(
        &self,
        engine: &Engine,
        query: &str,
        cookie_headers: &[S],
        redirect_uri: &str,
        now: u64,
    ) -> Result<Redirect, CallbackError> {
        let malformed = || CallbackError {
            status: 400,
            message: BAD_CALLBACK,
            reason: "malformed query or state".into(),
            retry: "/".into(),
            set_cookies: Vec::new(),
        };
        let params = parse_query(query).map_err(|()| malformed())?;
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        // Only a state we could have made (43 base64url characters) names a cookie: nothing
        // else from the query reaches a Set-Cookie header.
        let state = param("state").unwrap_or_default();
        if state.len() != 43
            || !state
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(malformed());
        }
        let cookie = self.login_cookie(state);
        // The login cookie is spent whatever happens next.
        let clear = vec![cookies::set_cookie(&cookie, "", 0)];
        let fail = |status, message, reason: String, retry: &str| CallbackError {
            status,
            message,
            reason,
            retry: retry.to_owned(),
            set_cookies: clear.clone(),
        };
        let Lookup::Found(sealed) = cookies::find(cookie_headers, &cookie) else {
            return Err(fail(
                400,
                NO_LOGIN,
                "no login cookie for this state".into(),
                "/",
            ));
        };
        let login: LoginState = self
            .keys
            .open(LOGIN_PURPOSE, sealed)
            .and_then(|json| serde_json::from_slice(&Zeroizing::new(json)).ok())
            .ok_or_else(|| fail(400, NO_LOGIN, "the login cookie does not open".into(), "/"))?;
        let retry = login.return_to.as_str();
        if login.state != state {
            return Err(fail(400, NO_LOGIN, "state mismatch".into(), retry));
        }
        if now + CLOCK_SKEW_SECS < login.started_at
            || now.saturating_sub(login.started_at) > self.login_timeout
        {
            return Err(fail(
                400,
                EXPIRED,
                "the sign-in took longer than login_timeout".into(),
                retry,
            ));
        }
        if self.used_states.lock().set.contains(state) {
            return Err(fail(400, REPLAYED, "replayed callback".into(), retry));
        }
        if let Some(error) = param("error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(fail(
                403,
                PROVIDER_REFUSED,
                format!("the provider answered error={code}"),
                retry,
            ));
        }
        let Some(code) = param("code").filter(|c| !c.is_empty()) else {
            return Err(fail(400, BAD_CALLBACK, "no code".into(), retry));
        };
        // Each state completes once: a replayed callback (same cookie, same URL), also one
        // racing the first, is refused here, before the provider is asked (which would revoke
        // what it issued for a code used twice).
        if !self.complete(state, now) {
            return Err(fail(400, REPLAYED, "replayed callback".into(), retry));
        }

        let endpoints = self
            .endpoints(now)
            .map_err(|e| fail(502, PROVIDER_DOWN, e.message, retry))?;
        let tokens = provider::exchange_code(
            &self.agent,
            &endpoints,
            &self.client,
            code,
            &login.verifier,
            redirect_uri,
        )
        .map_err(|e| fail(502, PROVIDER_DOWN, e.message, retry))?;
        let Some(id_token) = tokens.id_token.map(Zeroizing::new) else {
            return Err(fail(
                502,
                PROVIDER_DOWN,
                "the token response has no id_token".into(),
                retry,
            ));
        };
        let identity = engine
            .identify_from(id_token.as_bytes(), TokenSource::Session)
            .map_err(|d| {
                fail(
                    403,
                    BAD_ID_TOKEN,
                    format!("ID token refused: {}", d.reason),
                    retry,
                )
            })?;
        if *identity.issuer != self.issuer {
            return Err(fail(
                403,
                BAD_ID_TOKEN,
                format!("ID token from issuer {:?}", identity.issuer),
                retry,
            ));
        }
        self.check_id_token_binding(&id_token, Some(&login.nonce))
            .map_err(|reason| fail(403, BAD_ID_TOKEN, reason, retry))?;
        if tokens.refresh_token.is_none() && identity.expires_at <= now + REFRESH_BEFORE_SECS {
            // Sealing it would end the session at once and send the browser round again.
            return Err(fail(
                502,
                SHORT_LIVED,
                "the ID token expires within 30 s and there is no refresh token".into(),
                retry,
            ));
        }
        let session = Session {
            iss: identity.issuer.to_string(),
            sub: identity.subject.to_string(),
            created_at: now,
            seen_at: now,
            id_token: id_token.to_string(),
            id_expires_at: identity.expires_at,
            refresh_token: tokens.refresh_token,
        };
        let mut set_cookies = self
            .seal_session(&session, now, cookie_headers)
            .map_err(|e| fail(500, TOO_LARGE, format!("session: {e:?}"), retry))?;
        // Signed in: every pending login cookie (abandoned tabs included) goes.
        let mut spent = self.login_cookies(cookie_headers);
        if !spent.contains(&cookie) {
            spent.push(cookie);
        }
        set_cookies.extend(spent.iter().map(|n| cookies::set_cookie(n, "", 0)));
        Ok(Redirect {
            location: login.return_to,
            set_cookies,
        })
    }

    /// The session a request carries, refreshed or renewed as needed. The caller decides the
    /// request on the returned ID token with [`caddy_iap_core::Request::from_session`].
    pub fn session<S: AsRef<str>>(
        &self,
        engine: &Engine,
        cookie_headers: &[S],
        now: u64,
    ) -> SessionState {
        // Chunks 0..n, each exactly once, with none after a gap.
        let mut chunks = Vec::with_capacity(MAX_CHUNKS);
        let mut gap = false;
        for i in 0..MAX_CHUNKS {
            match cookies::find(cookie_headers, &self.chunk_name(i)) {
                Lookup::Found(_) if gap => {
                    return self.ended("session cookie chunks missing", cookie_headers);
                }
                Lookup::Found(v) => chunks.push(v),
                Lookup::Missing => gap = true,
                Lookup::Ambiguous => {
                    return self.ended("two session cookies of one name", cookie_headers);
                }
            }
        }
        if chunks.is_empty() {
            return SessionState::None;
        }
        let mut session = match Session::open(&self.keys, &chunks) {
            Ok(s) => s,
            Err(e) => return self.ended(&format!("session cookie: {e:?}"), cookie_headers),
        };
        if let Err(e) = session.check(now, self.life) {
            return self.ended(&format!("session: {e:?}"), cookie_headers);
        }
        let mut changed = false;
        if now + self.refresh_window(&session) >= session.id_expires_at {
            match self.refresh(engine, &mut session, now) {
                Ok(()) => changed = true,
                // The provider refused the refresh token, or the ID token has run out.
                Err((reason, true)) => return self.ended(&reason, cookie_headers),
                Err((_, false)) if now < session.id_expires_at => {
                    // The provider is unreachable for now: the ID token is still good, and
                    // the next request tries again.
                }
                Err((reason, false)) => return self.ended(&reason, cookie_headers),
            }
        }
        // Renew the idle clock now and then, not on every request (each renewal is a new
        // Set-Cookie).
        if changed || now.saturating_sub(session.seen_at) >= (self.life.idle / 4).min(300) {
            session.seen_at = now;
            changed = true;
        }
        let set_cookies = if changed {
            match self.seal_session(&session, now, cookie_headers) {
                Ok(c) => c,
                Err(e) => return self.ended(&format!("session: {e:?}"), cookie_headers),
            }
        } else {
            Vec::new()
        };
        SessionState::Active {
            expires_at: session.created_at + self.life.absolute,
            id_token: session.id_token,
            set_cookies,
        }
    }

    /// Signs out: clears the session cookies and sends the browser to the provider's
    /// `end_session_endpoint` (RP-initiated logout, with `client_id` and
    /// `post_logout_redirect_uri`; no `id_token_hint`, so no token travels in a URL or an
    /// access log), or straight to `post_logout_uri` when the provider has none.
    pub fn sign_out<S: AsRef<str>>(
        &self,
        cookie_headers: &[S],
        post_logout_uri: &str,
        now: u64,
    ) -> Redirect {
        let location = match self
            .endpoints(now)
            .ok()
            .and_then(|e| e.end_session_endpoint.clone())
        {
            Some(end) => format!(
                "{end}{}client_id={}&post_logout_redirect_uri={}",
                if end.contains('?') { '&' } else { '?' },
                form_encode(&self.client.id),
                form_encode(post_logout_uri)
            ),
            None => post_logout_uri.to_owned(),
        };
        Redirect {
            location,
            set_cookies: self.clears(cookie_headers, true),
        }
    }

    /// The session cookie's name (chunk 0).
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Marks a sign-in's state as completed; false when it already was. Entries older than a
    /// login timeout go first; when full, the oldest goes.
    fn complete(&self, state: &str, now: u64) -> bool {
        let mut used = self.used_states.lock();
        let horizon = self.login_timeout + CLOCK_SKEW_SECS;
        while let Some((at, _)) = used.order.front() {
            if now.saturating_sub(*at) <= horizon && used.order.len() < USED_STATES {
                break;
            }
            if let Some((_, old)) = used.order.pop_front() {
                used.set.remove(&old);
            }
        }
        if !used.set.insert(state.to_owned()) {
            return false;
        }
        used.order.push_back((now, state.to_owned()));
        true
    }

    fn endpoints(&self, now: u64) -> Result<Arc<Endpoints>, ProviderError> {
        if let Some(e) = &self.configured {
            return Ok(e.clone());
        }
        match &*self.discovered.read() {
            Some(Ok(e)) => return Ok(e.clone()),
            Some(Err(failed_at)) if now < failed_at + DISCOVERY_RETRY_SECS => {
                return Err(ProviderError::new(
                    "the provider's discovery failed moments ago",
                ));
            }
            _ => {}
        }
        let mut slot = self.discovered.write();
        match &*slot {
            Some(Ok(e)) => return Ok(e.clone()),
            // Another caller failed while this one waited for the lock.
            Some(Err(failed_at)) if now < failed_at + DISCOVERY_RETRY_SECS => {
                return Err(ProviderError::new(
                    "the provider's discovery failed moments ago",
                ));
            }
            _ => {}
        }
        match provider::discover(&self.agent, &self.issuer) {
            Ok(e) => {
                let e = Arc::new(e);
                *slot = Some(Ok(e.clone()));
                Ok(e)
            }
            Err(err) => {
                *slot = Some(Err(now));
                Err(err)
            }
        }
    }

    /// How long before the ID token's expiry it is refreshed: 30 s, or half its remaining
    /// life when the provider issues very short ones.
    fn refresh_window(&self, session: &Session) -> u64 {
        let life = session
            .id_expires_at
            .saturating_sub(session.seen_at.min(session.created_at));
        REFRESH_BEFORE_SECS.min(life / 2)
    }

    /// Replaces the session's ID token with a refreshed one, checked like the first. Requests
    /// of one session arriving together share one refresh. The error says whether the session
    /// is over (`true`: refused by the provider, or no way to refresh) or the provider is only
    /// unavailable.
    fn refresh(
        &self,
        engine: &Engine,
        session: &mut Session,
        now: u64,
    ) -> Result<(), (String, bool)> {
        let Some(refresh_token) = session.refresh_token.clone() else {
            return Err((
                "the ID token expired and there is no refresh token".into(),
                true,
            ));
        };
        let key: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, refresh_token.as_bytes())
                .as_ref()
                .try_into()
                .expect("SHA-256 is 32 bytes");
        let slot = {
            let mut all = self.refreshes.lock();
            if all.len() >= USED_STATES {
                all.retain(|_, s| {
                    s.try_lock().is_none_or(|r| {
                        r.as_ref()
                            .is_some_and(|r| now.saturating_sub(r.at) <= REFRESH_SHARED_SECS)
                    })
                });
            }
            all.entry(key).or_default().clone()
        };
        let mut slot = slot.lock();
        let refreshed = match slot.as_ref() {
            Some(r) if now.saturating_sub(r.at) <= REFRESH_SHARED_SECS => r.clone(),
            _ => {
                let r = self.refresh_now(engine, session, &refresh_token, now)?;
                *slot = Some(r.clone());
                r
            }
        };
        session.id_token = refreshed.id_token;
        session.id_expires_at = refreshed.id_expires_at;
        if refreshed.refresh_token.is_some() {
            session.refresh_token = refreshed.refresh_token;
        }
        Ok(())
    }

    fn refresh_now(
        &self,
        engine: &Engine,
        session: &Session,
        refresh_token: &str,
        now: u64,
    ) -> Result<Refreshed, (String, bool)> {
        let endpoints = self.endpoints(now).map_err(|e| (e.message, false))?;
        let tokens = provider::refresh(&self.agent, &endpoints, &self.client, refresh_token)
            .map_err(|e| (format!("refresh: {e}"), e.rejected))?;
        let id_token = tokens
            .id_token
            .ok_or(("refresh: the response has no id_token".to_owned(), false))?;
        let identity = engine
            .identify_from(id_token.as_bytes(), TokenSource::Session)
            .map_err(|d| (format!("refreshed ID token refused: {}", d.reason), true))?;
        if *identity.issuer != session.iss || *identity.subject != session.sub {
            return Err(("the refreshed ID token is for someone else".into(), true));
        }
        self.check_id_token_binding(&id_token, None)
            .map_err(|e| (e, true))?;
        if identity.expires_at <= session.id_expires_at {
            return Err(("the refreshed ID token does not last longer".into(), false));
        }
        Ok(Refreshed {
            at: now,
            id_token,
            id_expires_at: identity.expires_at,
            refresh_token: tokens.refresh_token,
        })
    }

    /// OIDC Core §3.1.3.7 beyond the validator's checks: the nonce of this sign-in, and `azp`
    /// when the token is for several audiences. The token's signature is already verified.
    fn check_id_token_binding(&self, id_token: &str, nonce: Option<&str>) -> Result<(), String> {
        let payload = id_token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
            .ok_or("ID token payload unreadable")?;
        if let Some(nonce) = nonce
            && payload.get("nonce").and_then(Value::as_str) != Some(nonce)
        {
            return Err("ID token nonce does not match this sign-in".into());
        }
        if let Some(auds) = payload.get("aud").and_then(Value::as_array)
            && auds.len() > 1
            && payload.get("azp").and_then(Value::as_str) != Some(&self.client.id)
        {
            return Err("ID token for several audiences without azp = client_id".into());
        }
        Ok(())
    }

    fn seal_session<S: AsRef<str>>(
        &self,
        session: &Session,
        now: u64,
        cookie_headers: &[S],
    ) -> Result<Vec<String>, SessionError> {
        let chunks = session.seal(&self.keys)?;
        let max_age = (session.created_at + self.life.absolute).saturating_sub(now);
        let mut out: Vec<String> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| cookies::set_cookie(&self.chunk_name(i), c, max_age))
            .collect();
        // Chunks left over from a larger session would be read back with the new ones.
        for i in chunks.len()..MAX_CHUNKS {
            let name = self.chunk_name(i);
            if cookies::find(cookie_headers, &name) != Lookup::Missing {
                out.push(cookies::set_cookie(&name, "", 0));
            }
        }
        Ok(out)
    }

    fn ended<S: AsRef<str>>(&self, reason: &str, cookie_headers: &[S]) -> SessionState {
        SessionState::Ended {
            reason: reason.to_owned(),
            set_cookies: self.clears(cookie_headers, false),
        }
    }

    /// Clears of the session chunks the request carries (all of them when `all`).
    fn clears<S: AsRef<str>>(&self, cookie_headers: &[S], all: bool) -> Vec<String> {
        (0..MAX_CHUNKS)
            .map(|i| self.chunk_name(i))
            .filter(|n| all || cookies::find(cookie_headers, n) != Lookup::Missing)
            .map(|n| cookies::set_cookie(&n, "", 0))
            .collect()
    }

    fn chunk_name(&self, i: usize) -> String {
        if i == 0 {
            self.cookie_name.clone()
        } else {
            format!("{}-{i}", self.cookie_name)
        }
    }

    /// One login cookie per sign-in in progress, named by its state, so two tabs signing in
    /// at once do not overwrite each other's.
    fn login_cookie(&self, state: &str) -> String {
        format!("{}-login-{}", self.cookie_name, &state[..8])
    }

    /// The names of the login cookies a request carries.
    fn login_cookies<S: AsRef<str>>(&self, cookie_headers: &[S]) -> Vec<String> {
        let prefix = format!("{}-login-", self.cookie_name);
        let mut names: Vec<String> = cookies::names(cookie_headers)
            .filter(|n| n.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

const BAD_CALLBACK: &str = "The sign-in response was not understood.";
const NO_LOGIN: &str = "This sign-in was not started in this browser, or it was already completed.";
const EXPIRED: &str = "The sign-in took too long.";
const PROVIDER_REFUSED: &str = "The identity provider did not sign you in.";
const REPLAYED: &str = "This sign-in link was already used.";
const PROVIDER_DOWN: &str = "The identity provider could not be reached.";
const BAD_ID_TOKEN: &str = "The identity provider's answer was refused.";
const SHORT_LIVED: &str = "The identity provider's sign-in ends too soon to keep a session.";
const TOO_LARGE: &str = "The session is too large to keep in a cookie.";

/// Parses `application/x-www-form-urlencoded`; any malformed escape or non-UTF-8 fails.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, ()> {
    if query.len() > 8192 {
        return Err(());
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((form_decode(k)?, form_decode(v)?))
        })
        .collect()
}

fn form_decode(s: &str) -> Result<String, ()> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |c: Option<u8>| (c.ok_or(())? as char).to_digit(16).ok_or(());
                let (hi, lo) = (hex(bytes.next())?, hex(bytes.next())?);
                out.push((hi * 16 + lo) as u8);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

#[cfg(test)]
mod tests;
