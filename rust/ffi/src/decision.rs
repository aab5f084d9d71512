//! `iap_decision`: the outcome of one request, owned by the caller until freed.

use std::sync::Arc;

use caddy_iap_core::Decision;

use crate::engine::EngineBox;
use crate::ffi::{box_free, box_ref, write_out};
use crate::slice::{iap_header, iap_str};

/// One decision. Opaque; read it with [`iap_decision_get`], free it with [`iap_decision_free`].
pub struct iap_decision {
    _private: [u8; 0],
}

/// A borrowed view of a decision: every pointer in it is valid until `iap_decision_free`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iap_decision_view<'a> {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// HTTP status (200 when allowed; 400, 401, 403, 500 or 503 otherwise).
    pub status: u16,
    /// Stable reason code (0 = allowed), for metrics labels.
    pub reason_code: u32,
    /// Stable reason name (`bad_signature`), for metrics labels.
    pub reason_name: iap_str<'a>,
    /// Human-readable reason for the log; never contains token bytes.
    pub reason: iap_str<'a>,
    /// `WWW-Authenticate` value for a 401; empty otherwise.
    pub www_authenticate: iap_str<'a>,
    /// Verified subject; empty when the token was not valid.
    pub subject: iap_str<'a>,
    /// Verified email; may be empty.
    pub email: iap_str<'a>,
    /// Verified name; may be empty.
    pub name: iap_str<'a>,
    /// Issuer of the verified token; may be empty.
    pub issuer: iap_str<'a>,
    /// Role names.
    pub roles: *const iap_str<'a>,
    /// Number of roles.
    pub roles_len: usize,
    /// Headers to set on the upstream request when allowed.
    pub set_headers: *const iap_header<'a>,
    /// Number of headers to set.
    pub set_headers_len: usize,
    /// Headers to delete from every request first, allowed or not.
    pub strip_headers: *const iap_str<'a>,
    /// Number of headers to delete.
    pub strip_headers_len: usize,
    /// Token `kid`, for logs.
    pub kid: iap_str<'a>,
    /// Token `alg`, for logs.
    pub alg: iap_str<'a>,
    /// Token `jti`, for logs.
    pub jti: iap_str<'a>,
    /// Whether the verified-token cache answered.
    pub cache_hit: bool,
    /// The token's `exp` (Unix seconds), 0 when unknown.
    pub expires_at: u64,
}

/// A decision plus the arrays its view points into. Every pointer in those arrays refers to
/// string data owned by `decision` or `engine`, which this box keeps alive and never mutates.
pub(crate) struct DecisionBox {
    decision: Decision,
    engine: Arc<EngineBox>,
    roles: Vec<iap_str<'static>>,
    set_headers: Vec<iap_header<'static>>,
}

impl DecisionBox {
    pub(crate) fn new(decision: Decision, engine: Arc<EngineBox>) -> Self {
        let roles = decision
            .identity
            .as_ref()
            .map(|id| id.roles.iter().map(|r| iap_str::detached(r)).collect())
            .unwrap_or_default();
        let set_headers = decision
            .set_headers()
            .map(|(name, value)| iap_header {
                name: iap_str::detached(name),
                value: iap_str::detached(value),
            })
            .collect();
        Self {
            decision,
            engine,
            roles,
            set_headers,
        }
    }

    pub(crate) fn view(&self) -> iap_decision_view<'_> {
        let d = &self.decision;
        let id = d.identity.as_deref();
        let text =
            |f: fn(&caddy_iap_core::Identity) -> Option<&str>| iap_str::from_opt(id.and_then(f));
        let strip = &self.engine.strip_headers;
        iap_decision_view {
            allowed: d.allowed(),
            status: d.status(),
            reason_code: d.reason_code() as u32,
            reason_name: iap_str::from_str(d.reason_code().as_str()),
            reason: iap_str::from_str(&d.reason),
            www_authenticate: iap_str::from_str(&d.www_authenticate),
            subject: text(|i| Some(&i.subject)),
            email: text(|i| i.email.as_deref()),
            name: text(|i| i.name.as_deref()),
            issuer: text(|i| Some(&i.issuer)),
            roles: self.roles.as_ptr(),
            roles_len: self.roles.len(),
            set_headers: self.set_headers.as_ptr(),
            set_headers_len: self.set_headers.len(),
            strip_headers: strip.as_ptr(),
            strip_headers_len: strip.len(),
            kid: text(|i| i.kid.as_deref()),
            alg: text(|i| Some(i.alg.as_str())),
            jti: text(|i| i.jti.as_deref()),
            cache_hit: d.cache_hit,
            expires_at: id.map_or(0, |i| i.expires_at),
        }
    }
}

/// Writes a view of `decision` to `*out`. Every pointer in the view is borrowed from the
/// decision and valid until [`iap_decision_free`]. Does nothing when either pointer is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn iap_decision_get(decision: *const iap_decision, out: *mut iap_decision_view<'_>) {
    ffi_panic_boundary! {
        // SAFETY: `decision` is NULL or a live decision from `iap_engine_decide`.
        let Some(boxed) = (unsafe { box_ref::<DecisionBox, iap_decision>(decision) }) else {
            return;
        };
        // SAFETY: `out` is NULL or a writable view.
        unsafe { write_out(out, boxed.view()) };
    }
}

/// Frees a decision from `iap_engine_decide`. NULL is fine; must not be called twice.
#[unsafe(no_mangle)]
pub extern "C" fn iap_decision_free(decision: *mut iap_decision) {
    ffi_panic_boundary! {
        // SAFETY: per this function's contract, `decision` is NULL or freed exactly once.
        unsafe { box_free::<DecisionBox, iap_decision>(decision) }
    }
}
