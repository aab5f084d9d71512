//! `iap_decision`: the outcome of one request, owned by the caller until freed.

use std::sync::Arc;

use caddy_iap_core::Decision;

use crate::engine::EngineBox;
use crate::error::iap_result;
use crate::ffi::{box_free, box_ref, bytes_mut, write_out};
use crate::slice::{array_ptr, iap_header, iap_str};

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
        let [
            reason_name,
            reason,
            www_authenticate,
            subject,
            email,
            name,
            issuer,
            kid,
            alg,
            jti,
        ] = texts(d).map(iap_str::from_str);
        let strip = &self.engine.strip_headers;
        iap_decision_view {
            allowed: d.allowed(),
            status: d.status(),
            reason_code: d.reason_code() as u32,
            reason_name,
            reason,
            www_authenticate,
            subject,
            email,
            name,
            issuer,
            roles: array_ptr(&self.roles),
            roles_len: self.roles.len(),
            set_headers: array_ptr(&self.set_headers),
            set_headers_len: self.set_headers.len(),
            strip_headers: array_ptr(strip),
            strip_headers_len: strip.len(),
            kid,
            alg,
            jti,
            cache_hit: d.cache_hit,
            expires_at: expires_at(d),
        }
    }
}

/// A decision's single strings, in the order [`iap_decision_record`] lays them out (each empty
/// when absent).
fn texts(d: &Decision) -> [&str; 10] {
    let id = d.identity.as_deref();
    let text = |f: fn(&caddy_iap_core::Identity) -> Option<&str>| id.and_then(f).unwrap_or("");
    [
        d.reason_code().as_str(),
        &d.reason,
        &d.www_authenticate,
        text(|i| Some(&i.subject)),
        text(|i| i.email.as_deref()),
        text(|i| i.name.as_deref()),
        text(|i| Some(&i.issuer)),
        text(|i| i.kid.as_deref()),
        text(|i| Some(i.alg.as_str())),
        text(|i| i.jti.as_deref()),
    ]
}

fn expires_at(d: &Decision) -> u64 {
    d.identity.as_ref().map_or(0, |i| i.expires_at)
}

/// A decision copied out by `iap_engine_decide_into`: the fixed fields here, every
/// string in the caller's buffer. The buffer holds strings one after another, each as its
/// length (4 bytes, native byte order) then its bytes, in this order: reason name, reason,
/// `WWW-Authenticate`, subject, email, name, issuer, kid, alg, jti (as in
/// [`iap_decision_view`]); then each role; then each header to set, as its name then its value.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct iap_decision_record {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Whether the verified-token cache answered.
    pub cache_hit: bool,
    /// HTTP status (200 when allowed; 400, 401, 403, 500 or 503 otherwise).
    pub status: u16,
    /// Stable reason code (0 = allowed).
    pub reason_code: u32,
    /// The token's `exp` (Unix seconds), 0 when unknown.
    pub expires_at: u64,
    /// Number of roles.
    pub roles_len: u32,
    /// Number of headers to set.
    pub set_headers_len: u32,
    /// Bytes of the buffer the strings take; when larger than the buffer, none were written.
    pub len: usize,
}

/// The length prefix of each string in a record's buffer.
const PREFIX: usize = size_of::<u32>();

impl iap_decision_record {
    /// Fills the record from `d` and copies its strings into `buf` when they fit (`len` says
    /// how many bytes they take either way). Strings over 4 GiB cannot occur: the engine bounds
    /// tokens and everything derived from them far below that.
    pub(crate) fn write(d: &Decision, buf: &mut [u8]) -> Self {
        let roles = d.identity.as_deref().map_or(&[][..], |i| &i.roles[..]);
        let strings = || {
            let headers = d.set_headers().flat_map(|(name, value)| [name, value]);
            texts(d)
                .into_iter()
                .chain(roles.iter().map(|r| &**r))
                .chain(headers)
        };
        let len = strings().map(|s| PREFIX + s.len()).sum();
        if len <= buf.len() {
            let mut at = 0;
            for s in strings() {
                buf[at..at + PREFIX].copy_from_slice(&(s.len() as u32).to_ne_bytes());
                at += PREFIX;
                buf[at..at + s.len()].copy_from_slice(s.as_bytes());
                at += s.len();
            }
        }
        Self {
            allowed: d.allowed(),
            cache_hit: d.cache_hit,
            status: d.status(),
            reason_code: d.reason_code() as u32,
            expires_at: expires_at(d),
            roles_len: roles.len() as u32,
            set_headers_len: d.set_headers().count() as u32,
            len,
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

/// Copies a boxed decision out as `iap_engine_decide_into` does: the record to `*record_out`,
/// the strings into `buf` when they fit (`record_out->len` is the size they need either way;
/// the layout is on [`iap_decision_record`]). For a caller that got the decision boxed because
/// its buffer was too small, and now has one of `record_out->len` bytes.
/// `IAP_RESULT_NULL_PARAMETER` when `decision` or `record_out` is NULL, or `buf` is NULL with
/// `buf_len > 0`; nothing is written then.
#[unsafe(no_mangle)]
pub extern "C" fn iap_decision_copy(
    decision: *const iap_decision,
    buf: *mut u8,
    buf_len: usize,
    record_out: *mut iap_decision_record,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: `decision` is NULL or a live decision from `iap_engine_decide(_into)`.
        let Some(boxed) = (unsafe { box_ref::<DecisionBox, iap_decision>(decision) }) else {
            return iap_result::NullParameter;
        };
        // SAFETY: the caller lends `buf_len` writable bytes at `buf` for this call.
        let Some(out) = (unsafe { bytes_mut(buf, buf_len) }) else {
            return iap_result::NullParameter;
        };
        if record_out.is_null() {
            return iap_result::NullParameter;
        }
        // SAFETY: checked non-NULL above.
        unsafe { write_out(record_out, iap_decision_record::write(&boxed.decision, out)) };
        iap_result::Ok
    }
}

/// Frees a decision from `iap_engine_decide` (or the boxed one `iap_engine_decide_into` hands
/// over). NULL is fine; must not be called twice.
#[unsafe(no_mangle)]
pub extern "C" fn iap_decision_free(decision: *mut iap_decision) {
    ffi_panic_boundary! {
        // SAFETY: per this function's contract, `decision` is NULL or freed exactly once.
        unsafe { box_free::<DecisionBox, iap_decision>(decision) }
    }
}
