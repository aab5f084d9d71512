//! `iap_signin`: browser sign-in for one site (`caddy-iap-browser`).
//!
//! A sign-in shares its engine, which validates ID tokens and decides every request made on a
//! session. Each call returns an outcome the caller owns (free it with
//! [`iap_signin_outcome_free`]) and reads through a borrowed view: what to send the browser
//! (a redirect, cookies, an error page) or, for a session, the ID token to decide on.

use caddy_iap_browser::{CallbackError, Redirect, SessionState, SignIn, SignInConfig};

use crate::engine::iap_engine;
use crate::error::iap_result;
use crate::ffi::{arc_free, arc_ref, box_free, box_into_ptr, box_ref, bytes, write_out};
use crate::gateway::new_gateway;
use crate::slice::{array_ptr, iap_str};

/// A site's browser sign-in. Opaque; shared (reference-counted) by all callers.
pub struct iap_signin {
    _private: [u8; 0],
}

/// The sign-in and its engine (the same pairing as the database gateways).
type SignInBox = crate::gateway::GatewayBox<SignIn>;

/// What an outcome asks of the caller.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum iap_signin_kind {
    /// Redirect the browser to `location` (302), setting `set_cookies`.
    Redirect = 0,
    /// Show an error page: `status`, `message`, a "try again" link to `location`; set
    /// `set_cookies`; log `reason`.
    Error = 1,
    /// A live session: decide the request on `id_token` (as a session token) and set
    /// `set_cookies` on the response.
    Active = 2,
    /// The request carries no session.
    None = 3,
    /// The session cannot be used (`reason`): sign in again; set `set_cookies` (clears).
    Ended = 4,
}

/// The outcome of one sign-in call. Opaque; read with [`iap_signin_outcome_get`].
pub struct iap_signin_outcome {
    _private: [u8; 0],
}

/// A borrowed view of an outcome; every pointer in it is valid until
/// `iap_signin_outcome_free`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iap_signin_outcome_view<'a> {
    /// What to do.
    pub kind: iap_signin_kind,
    /// ERROR: the page's HTTP status.
    pub status: u16,
    /// REDIRECT: the `Location`; ERROR: where "try again" leads.
    pub location: iap_str<'a>,
    /// ERROR: one sentence for the page (no secret, no token).
    pub message: iap_str<'a>,
    /// ERROR, ENDED: the reason for the log (no secret, no token).
    pub reason: iap_str<'a>,
    /// ACTIVE: the session's ID token. Secret: decide on it, never log or forward it.
    pub id_token: iap_str<'a>,
    /// ACTIVE: when the session ends (Unix seconds).
    pub expires_at: u64,
    /// `Set-Cookie` header values, in order.
    pub set_cookies: *const iap_str<'a>,
    /// Number of `set_cookies`.
    pub set_cookies_len: usize,
}

struct OutcomeBox {
    kind: iap_signin_kind,
    status: u16,
    location: String,
    message: &'static str,
    reason: String,
    id_token: String,
    expires_at: u64,
    /// Owns what `set_cookie_views` point into.
    _set_cookies: Vec<String>,
    set_cookie_views: Vec<iap_str<'static>>,
}

impl OutcomeBox {
    fn new(kind: iap_signin_kind, set_cookies: Vec<String>) -> Self {
        let set_cookie_views = set_cookies.iter().map(|c| iap_str::detached(c)).collect();
        Self {
            kind,
            status: 0,
            location: String::new(),
            message: "",
            reason: String::new(),
            id_token: String::new(),
            expires_at: 0,
            _set_cookies: set_cookies,
            set_cookie_views,
        }
    }

    fn redirect(r: Redirect) -> Self {
        Self {
            location: r.location,
            ..Self::new(iap_signin_kind::Redirect, r.set_cookies)
        }
    }

    fn error(e: CallbackError) -> Self {
        Self {
            status: e.status,
            message: e.message,
            reason: e.reason,
            location: e.retry,
            ..Self::new(iap_signin_kind::Error, e.set_cookies)
        }
    }

    fn session(s: SessionState) -> Self {
        match s {
            SessionState::Active {
                id_token,
                expires_at,
                set_cookies,
            } => Self {
                id_token,
                expires_at,
                ..Self::new(iap_signin_kind::Active, set_cookies)
            },
            SessionState::None => Self::new(iap_signin_kind::None, Vec::new()),
            SessionState::Ended {
                reason,
                set_cookies,
            } => Self {
                reason,
                ..Self::new(iap_signin_kind::Ended, set_cookies)
            },
        }
    }
}

/// Builds a sign-in (`config_json`, UTF-8 JSON: the `login` block with resolved secret and
/// keys) on top of `engine`, which it keeps alive. Does no network I/O: the provider's
/// discovery document is read at the first sign-in.
///
/// On success writes the sign-in to `*signin_out`; the caller owns it and releases it with
/// [`iap_signin_free`]. On `IAP_RESULT_INVALID_CONFIG` writes the reason into `err_buf` as
/// [`crate::iap_engine_new`] does.
#[unsafe(no_mangle)]
pub extern "C" fn iap_signin_new(
    engine: *const iap_engine,
    config_json: *const u8,
    config_len: usize,
    err_buf: *mut u8,
    err_buf_len: usize,
    err_written: *mut usize,
    signin_out: *mut *const iap_signin,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: forwarded under this function's own contract (see `new_gateway`).
        unsafe {
            new_gateway(engine, config_json, config_len, err_buf, err_buf_len, err_written, signin_out, |json, _| {
                let config: SignInConfig = serde_json::from_slice(json).map_err(|e| format!("login: {e}"))?;
                SignIn::new(config).map_err(|e| format!("login: {e}"))
            })
        }
    }
}

/// Releases the caller's reference to `signin`. NULL is fine. Must not be called twice for the
/// same reference, nor while a call using it is in flight.
#[unsafe(no_mangle)]
pub extern "C" fn iap_signin_free(signin: *const iap_signin) {
    ffi_panic_boundary! {
        // SAFETY: per this function's contract, `signin` is NULL or a live reference.
        unsafe { arc_free::<SignInBox, iap_signin>(signin) }
    }
}

/// Borrows the sign-in, the text arguments (UTF-8, lent for the call) and the out slot, runs
/// `f` and writes its outcome. The body of every call below.
fn run<const N: usize>(
    signin: *const iap_signin,
    args: [iap_str<'_>; N],
    outcome_out: *mut *mut iap_signin_outcome,
    f: impl FnOnce(&SignInBox, [&str; N], u64) -> OutcomeBox,
) -> iap_result {
    // SAFETY: `signin` is NULL or a live sign-in for this call (each caller's contract).
    let Some(s) = (unsafe { arc_ref::<SignInBox, iap_signin>(signin) }) else {
        return iap_result::NullParameter;
    };
    if outcome_out.is_null() {
        return iap_result::NullParameter;
    }
    let mut texts = [""; N];
    for (text, arg) in texts.iter_mut().zip(args) {
        // SAFETY: the caller lends each view's bytes for this call.
        let Some(b) = (unsafe { bytes(arg.data, arg.len) }) else {
            return iap_result::NullParameter;
        };
        let Ok(t) = std::str::from_utf8(b) else {
            return iap_result::InvalidParameter;
        };
        *text = t;
    }
    let now = s.engine.engine.clock().now();
    let boxed = box_into_ptr::<OutcomeBox, iap_signin_outcome>(f(s, texts, now));
    // SAFETY: checked non-NULL above.
    unsafe { write_out(outcome_out, boxed) };
    iap_result::Ok
}

/// Starts a sign-in for a browser that asked for `return_to` (a path; anything not on this
/// site becomes `/`), with `redirect_uri` this site's callback URL and `cookies` the request's
/// `Cookie` values joined with `; `. Outcome: REDIRECT to the provider with the login cookie,
/// or ERROR (502) when the provider's discovery fails. May block for that discovery (bounded by
/// `fetch_timeout`). The caller frees the outcome.
#[unsafe(no_mangle)]
pub extern "C" fn iap_signin_begin(
    signin: *const iap_signin,
    return_to: iap_str<'_>,
    redirect_uri: iap_str<'_>,
    cookies: iap_str<'_>,
    outcome_out: *mut *mut iap_signin_outcome,
) -> iap_result {
    ffi_panic_boundary! {
        run(signin, [return_to, redirect_uri, cookies], outcome_out, |s, [return_to, redirect_uri, cookies], now| {
            match s.gateway.begin(return_to, redirect_uri, &[cookies], now) {
                Ok(r) => OutcomeBox::redirect(r),
                Err(e) => OutcomeBox::error(CallbackError {
                    status: 502,
                    message: "The identity provider could not be reached.",
                    reason: e.message,
                    retry: caddy_iap_browser::flow::safe_return_path(return_to).to_owned(),
                    set_cookies: Vec::new(),
                }),
            }
        })
    }
}

/// Completes a sign-in at the callback: `query` is the raw query string, `cookies` the
/// request's `Cookie` header values joined with `; `. Outcome: REDIRECT to the page the sign-in
/// was for with the session cookies, or ERROR. Blocks for the code exchange (bounded by
/// `fetch_timeout`). The caller frees the outcome.
#[unsafe(no_mangle)]
pub extern "C" fn iap_signin_callback(
    signin: *const iap_signin,
    query: iap_str<'_>,
    cookies: iap_str<'_>,
    redirect_uri: iap_str<'_>,
    outcome_out: *mut *mut iap_signin_outcome,
) -> iap_result {
    ffi_panic_boundary! {
        run(signin, [query, cookies, redirect_uri], outcome_out, |s, [query, cookies, redirect_uri], now| {
            match s.gateway.callback(&s.engine.engine, query, &[cookies], redirect_uri, now) {
                Ok(r) => OutcomeBox::redirect(r),
                Err(e) => OutcomeBox::error(e),
            }
        })
    }
}

/// Opens the session a request carries (`cookies`: its `Cookie` values joined with `; `).
/// Outcome: ACTIVE (with the ID token to decide on), NONE or ENDED. May block for a token
/// refresh when the session's ID token is about to expire. The caller frees the outcome.
#[unsafe(no_mangle)]
pub extern "C" fn iap_signin_session(
    signin: *const iap_signin,
    cookies: iap_str<'_>,
    outcome_out: *mut *mut iap_signin_outcome,
) -> iap_result {
    ffi_panic_boundary! {
        run(signin, [cookies], outcome_out, |s, [cookies], now| {
            OutcomeBox::session(s.gateway.session(&s.engine.engine, &[cookies], now))
        })
    }
}

/// Signs out: REDIRECT to the provider's end-session endpoint (or to `post_logout_uri`), with
/// cookie clears. May block for discovery. The caller frees the outcome.
#[unsafe(no_mangle)]
pub extern "C" fn iap_signin_sign_out(
    signin: *const iap_signin,
    cookies: iap_str<'_>,
    post_logout_uri: iap_str<'_>,
    outcome_out: *mut *mut iap_signin_outcome,
) -> iap_result {
    ffi_panic_boundary! {
        run(signin, [cookies, post_logout_uri], outcome_out, |s, [cookies, uri], now| {
            OutcomeBox::redirect(s.gateway.sign_out(&[cookies], uri, now))
        })
    }
}

/// Writes a view of `outcome` to `*view_out`. Does nothing when either pointer is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn iap_signin_outcome_get(
    outcome: *const iap_signin_outcome,
    view_out: *mut iap_signin_outcome_view<'_>,
) {
    ffi_panic_boundary! {
        // SAFETY: `outcome` is NULL or a live outcome; the view borrows from it.
        let Some(b) = (unsafe { box_ref::<OutcomeBox, iap_signin_outcome>(outcome) }) else {
            return;
        };
        let view = iap_signin_outcome_view {
            kind: b.kind,
            status: b.status,
            location: iap_str::from_str(&b.location),
            message: iap_str::from_str(b.message),
            reason: iap_str::from_str(&b.reason),
            id_token: iap_str::from_str(&b.id_token),
            expires_at: b.expires_at,
            set_cookies: array_ptr(&b.set_cookie_views),
            set_cookies_len: b.set_cookie_views.len(),
        };
        // SAFETY: `view_out` is NULL or a writable view.
        unsafe { write_out(view_out, view) };
    }
}

/// Frees an outcome (NULL is fine). Views of it become invalid.
#[unsafe(no_mangle)]
pub extern "C" fn iap_signin_outcome_free(outcome: *mut iap_signin_outcome) {
    ffi_panic_boundary! {
        // SAFETY: `outcome` is NULL or came from an `iap_signin_*` call and is freed once.
        unsafe { box_free::<OutcomeBox, iap_signin_outcome>(outcome) }
    }
}
