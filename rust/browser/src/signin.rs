//! [`SignIn`]: one site's browser sign-in, from the first redirect to sign-out.
//!
//! The HTTP handler (the Caddy module) asks four things of it, each answered with what to send
//! the browser: [`SignIn::begin`] (redirect to the provider, with a login cookie),
//! [`SignIn::callback`] (check the provider's answer, seal a session), [`SignIn::session`]
//! (open the session of a request: its ID token, renewed cookies) and [`SignIn::sign_out`].
//! Every request on a session is then decided by the engine on the session's ID token,
//! exactly as a bearer token is.

use std::collections::HashMap;
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
/// Most sign-ins completed within one login timeout that are remembered to refuse a replayed
/// callback; past that, further callbacks are refused until older ones age out.
const USED_STATES: usize = 100_000;
/// A session's ID token is refreshed this long before it expires.
const REFRESH_BEFORE_SECS: u64 = 30;
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
    configured: Option<Endpoints>,
    /// Discovered endpoints, or the time discovery last failed.
    discovered: RwLock<Option<Result<Arc<Endpoints>, u64>>>,
    agent: ureq::Agent,
    /// Completed sign-ins' states, with when they started: a login cookie is only good for
    /// `login_timeout`, so an entry older than that can go.
    used_states: Mutex<HashMap<String, u64>>,
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
        if !cookies::valid_name(&config.cookie_name) {
            return Err(format!(
                "cookie_name: {:?} is not a cookie name",
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
            configured: config.endpoints,
            discovered: RwLock::new(None),
            agent: provider::agent(Duration::from_millis(
                config.fetch_timeout_ms.clamp(100, 60_000),
            )),
            used_states: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a sign-in: the provider's authorization URL, and the login cookie that carries
    /// state, nonce and PKCE verifier to the callback. `return_to` is checked here (same site
    /// only); `redirect_uri` is this site's callback URL.
    pub fn begin(
        &self,
        return_to: &str,
        redirect_uri: &str,
        now: u64,
    ) -> Result<Redirect, ProviderError> {
        let endpoints = self.endpoints(now)?;
        let random = || {
            crate::pkce::random_token()
                .ok_or_else(|| ProviderError("the system random generator failed".into()))
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
            .map_err(|e| ProviderError(e.to_string()))?;
        Ok(Redirect {
            location,
            set_cookies: vec![cookies::set_cookie(
                &self.login_cookie(&login.state),
                &sealed,
                self.login_timeout,
            )],
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
        let params = parse_query(query).map_err(|()| fail(400, BAD_CALLBACK, "malformed query"))?;
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let state = param("state").unwrap_or_default();
        let cookie = (state.len() >= 8).then(|| self.login_cookie(state));
        // The login cookie is spent whatever happens next.
        let clear: Vec<String> = cookie
            .iter()
            .map(|name| cookies::set_cookie(name, "", 0))
            .collect();
        let fail = |status, message, reason: String, retry: &str| CallbackError {
            status,
            message,
            reason,
            retry: retry.to_owned(),
            set_cookies: clear.clone(),
        };
        let Some(Lookup::Found(sealed)) =
            cookie.as_deref().map(|c| cookies::find(cookie_headers, c))
        else {
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
        if now < login.started_at || now - login.started_at > self.login_timeout {
            return Err(fail(
                400,
                EXPIRED,
                "the sign-in took longer than login_timeout".into(),
                retry,
            ));
        }
        // Each state completes once (with a code or the provider's error): a replayed
        // callback (same cookie, same URL) is refused here, before the provider is asked
        // (which refuses a reused code too).
        if self.used_states.lock().contains_key(state) {
            return Err(fail(400, REPLAYED, "replayed callback".into(), retry));
        }
        if let Some(error) = param("error") {
            self.complete(state, login.started_at, now);
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
        if !self.complete(state, login.started_at, now) {
            return Err(fail(
                503,
                BUSY,
                "too many sign-ins within one login timeout".into(),
                retry,
            ));
        }

        let endpoints = self
            .endpoints(now)
            .map_err(|e| fail(502, PROVIDER_DOWN, e.0, retry))?;
        let tokens = provider::exchange_code(
            &self.agent,
            &endpoints,
            &self.client,
            code,
            &login.verifier,
            redirect_uri,
        )
        .map_err(|e| fail(502, PROVIDER_DOWN, e.0, retry))?;
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
        self.check_id_token_binding(&id_token, Some(&login.nonce))
            .map_err(|reason| fail(403, BAD_ID_TOKEN, reason, retry))?;
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
        set_cookies.extend(clear.iter().cloned());
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
        let mut chunks = Vec::with_capacity(MAX_CHUNKS);
        let mut present = Vec::new();
        for i in 0..MAX_CHUNKS {
            let name = self.chunk_name(i);
            match cookies::find(cookie_headers, &name) {
                Lookup::Found(v) => {
                    chunks.push(v);
                    present.push(name);
                }
                Lookup::Missing => {}
                Lookup::Ambiguous => {
                    return self.ended("two session cookies of one name", cookie_headers);
                }
            }
        }
        if present.is_empty() {
            return SessionState::None;
        }
        if present.len() != chunks.len() || present[0] != self.chunk_name(0) {
            return self.ended("session cookie chunks missing", cookie_headers);
        }
        let mut session = match Session::open(&self.keys, &chunks) {
            Ok(s) => s,
            Err(e) => return self.ended(&format!("session cookie: {e:?}"), cookie_headers),
        };
        if let Err(e) = session.check(now, self.life) {
            return self.ended(&format!("session: {e:?}"), cookie_headers);
        }
        let mut changed = false;
        if now + REFRESH_BEFORE_SECS >= session.id_expires_at {
            if let Err(reason) = self.refresh(engine, &mut session, now) {
                return self.ended(&reason, cookie_headers);
            }
            changed = true;
        }
        // Renew the idle clock now and then, not on every request (each renewal is a new
        // Set-Cookie).
        if changed || now - session.seen_at >= (self.life.idle / 4).min(300) {
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

    /// Marks a sign-in's state as completed; false when too many recent ones are kept.
    fn complete(&self, state: &str, started_at: u64, now: u64) -> bool {
        let mut used = self.used_states.lock();
        if used.len() >= USED_STATES {
            used.retain(|_, started| now.saturating_sub(*started) <= self.login_timeout);
            if used.len() >= USED_STATES {
                return false;
            }
        }
        used.insert(state.to_owned(), started_at);
        true
    }

    fn endpoints(&self, now: u64) -> Result<Arc<Endpoints>, ProviderError> {
        if let Some(e) = &self.configured {
            return Ok(Arc::new(e.clone()));
        }
        match &*self.discovered.read() {
            Some(Ok(e)) => return Ok(e.clone()),
            Some(Err(failed_at)) if now < failed_at + DISCOVERY_RETRY_SECS => {
                return Err(ProviderError(
                    "the provider's discovery failed moments ago".into(),
                ));
            }
            _ => {}
        }
        let mut slot = self.discovered.write();
        if let Some(Ok(e)) = &*slot {
            return Ok(e.clone());
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

    /// Replaces the session's ID token with a refreshed one, checked like the first.
    fn refresh(&self, engine: &Engine, session: &mut Session, now: u64) -> Result<(), String> {
        let Some(refresh_token) = session.refresh_token.as_deref() else {
            return Err("the ID token expired and there is no refresh token".into());
        };
        let endpoints = self.endpoints(now).map_err(|e| e.0)?;
        let tokens = provider::refresh(&self.agent, &endpoints, &self.client, refresh_token)
            .map_err(|e| format!("refresh: {e}"))?;
        let id_token = tokens
            .id_token
            .ok_or("refresh: the response has no id_token")?;
        let identity = engine
            .identify_from(id_token.as_bytes(), TokenSource::Session)
            .map_err(|d| format!("refreshed ID token refused: {}", d.reason))?;
        if *identity.issuer != session.iss || *identity.subject != session.sub {
            return Err("the refreshed ID token is for someone else".into());
        }
        self.check_id_token_binding(&id_token, None)?;
        session.id_token = id_token;
        session.id_expires_at = identity.expires_at;
        if tokens.refresh_token.is_some() {
            session.refresh_token = tokens.refresh_token;
        }
        Ok(())
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
        let tag: String = state.chars().take(8).collect();
        format!("{}-login-{tag}", self.cookie_name)
    }
}

const BAD_CALLBACK: &str = "The sign-in response was not understood.";
const NO_LOGIN: &str = "This sign-in was not started in this browser, or it was already completed.";
const EXPIRED: &str = "The sign-in took too long.";
const PROVIDER_REFUSED: &str = "The identity provider did not sign you in.";
const REPLAYED: &str = "This sign-in link was already used.";
const PROVIDER_DOWN: &str = "The identity provider could not be reached.";
const BAD_ID_TOKEN: &str = "The identity provider's answer was refused.";
const BUSY: &str = "Too many sign-ins at once; try again in a minute.";
const TOO_LARGE: &str = "The session is too large to keep in a cookie.";

fn fail(status: u16, message: &'static str, reason: &str) -> CallbackError {
    CallbackError {
        status,
        message,
        reason: reason.into(),
        retry: "/".into(),
        set_cookies: Vec::new(),
    }
}

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
