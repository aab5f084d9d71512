//! `iap_engine`: one per config instance, shared by every goroutine.

use base64::Engine as _;
use caddy_iap_core::{Alg, Config, Decision, Engine, Request, generate_signing_key};

use crate::decision::{DecisionBox, iap_decision, iap_decision_record, iap_decision_view};
use crate::error::{finish_new, iap_result};
use crate::ffi::{
    arc_clone, arc_free, arc_ref, box_into_ptr, box_into_ptr_with_view, bytes, bytes_mut, write_out,
};
use crate::slice::iap_str;

/// An engine built from one configuration. Opaque; shared (reference-counted) by all callers.
pub struct iap_engine {
    _private: [u8; 0],
}

/// What the engine wrapper owns besides the core engine: things decisions borrow.
pub(crate) struct EngineBox {
    pub(crate) engine: Engine,
    /// Views of `engine.strip_headers()`, lent out inside every decision view.
    pub(crate) strip_headers: Vec<iap_str<'static>>,
}

impl EngineBox {
    fn new(engine: Engine) -> Self {
        let strip_headers = engine
            .strip_headers()
            .iter()
            .map(|h| iap_str::detached(h))
            .collect();
        Self {
            engine,
            strip_headers,
        }
    }
}

// SAFETY: the raw pointers in `strip_headers` point into strings owned by `engine`, which is
// immutable after construction and dropped together with them; sharing them between threads
// is as sound as sharing `&str`s into `engine`.
unsafe impl Send for EngineBox {}
// SAFETY: as above.
unsafe impl Sync for EngineBox {}

/// One request's facts, passed by value to [`iap_engine_decide`]; the bytes its views point at
/// are borrowed for that call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iap_request<'a> {
    /// HTTP method.
    pub method: iap_str<'a>,
    /// Host.
    pub host: iap_str<'a>,
    /// Escaped request path.
    pub path: iap_str<'a>,
    /// The presented token; `len == 0` when none was presented.
    pub token: iap_str<'a>,
    /// `token` is a session's ID token (from [`crate::iap_signin_session`]), not a bearer
    /// token.
    pub session: bool,
}

/// Counters read at metrics scrape time.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct iap_engine_stats {
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
    /// Entries in the verified-token cache.
    pub cached_tokens: u64,
}

/// Builds an engine from a JSON configuration (`config_json`, `config_len` bytes, UTF-8).
///
/// On success writes the engine to `*engine_out`. The caller owns it and must release it with
/// [`iap_engine_free`] once no call using it is in flight. Starts the first key fetches on
/// background threads; does no network I/O on the calling thread.
///
/// On `IAP_RESULT_INVALID_CONFIG`, writes a message (UTF-8, not NUL-terminated, truncated to
/// `err_buf_len`) into `err_buf` and its length into `*err_written`, when those are non-NULL.
#[unsafe(no_mangle)]
pub extern "C" fn iap_engine_new(
    config_json: *const u8,
    config_len: usize,
    err_buf: *mut u8,
    err_buf_len: usize,
    err_written: *mut usize,
    engine_out: *mut *const iap_engine,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: the caller lends `config_len` readable bytes for this call.
        let Some(json) = (unsafe { bytes(config_json, config_len) }) else {
            return iap_result::NullParameter;
        };
        if engine_out.is_null() {
            return iap_result::NullParameter;
        }
        let built = serde_json::from_slice::<Config>(json)
            .map_err(|e| format!("config: {e}"))
            .and_then(|config| Engine::new(&config).map_err(|e| e.to_string()));
        // SAFETY: `engine_out` checked non-NULL above; the caller lends the error buffer and
        // length slot, or NULLs.
        unsafe { finish_new::<EngineBox, iap_engine>(built.map(EngineBox::new), engine_out, err_buf, err_buf_len, err_written) }
    }
}

/// Releases the caller's reference to `engine`. NULL is fine. Must not be called twice for the
/// same reference, nor while a call using it is in flight. Decisions still alive keep the
/// engine's memory alive until they are freed.
#[unsafe(no_mangle)]
pub extern "C" fn iap_engine_free(engine: *const iap_engine) {
    ffi_panic_boundary! {
        // SAFETY: per this function's contract, `engine` is NULL or a live reference.
        unsafe { arc_free::<EngineBox, iap_engine>(engine) }
    }
}

/// Decides one request. On `IAP_RESULT_OK` writes a decision (allow or deny) to
/// `*decision_out`; the caller owns it and must free it with `iap_decision_free`. When
/// `view_out` is non-NULL it also gets the decision's view, as `iap_decision_get` would write
/// it (valid until the decision is freed), so a caller needs one call to decide and read.
///
/// `request` is passed by value; the bytes its views point at are borrowed for this call only.
#[unsafe(no_mangle)]
pub extern "C" fn iap_engine_decide(
    engine: *const iap_engine,
    request: iap_request<'_>,
    decision_out: *mut *mut iap_decision,
    view_out: *mut iap_decision_view<'_>,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: `engine` is NULL or a live engine for the duration of this call.
        let Some(engine) = (unsafe { arc_clone::<EngineBox, iap_engine>(engine) }) else {
            return iap_result::NullParameter;
        };
        if decision_out.is_null() {
            return iap_result::NullParameter;
        }
        // SAFETY: the caller lends the request's bytes for this call.
        let decision = match unsafe { decide(&engine, request) } {
            Ok(decision) => decision,
            Err(e) => return e,
        };
        let boxed: *mut iap_decision = {
            // SAFETY: `view_out` is NULL or a writable view, read (per this function's
            // contract) only until the caller frees the decision.
            unsafe { box_into_ptr_with_view(DecisionBox::new(decision, engine), DecisionBox::view, view_out) }
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(decision_out, boxed) };
        iap_result::Ok
    }
}

/// Decides one request and copies the decision out: its fixed fields to `*record_out`, its
/// strings into `buf` (`buf_len` bytes; the layout is on [`iap_decision_record`]). Nothing to
/// free and no allocation made for the caller: the form for a hot path.
///
/// When the strings do not fit, `record_out->len` is the size they need, nothing is written
/// to `buf`, and the decision comes boxed in `*decision_out` instead (copy it out with
/// `iap_decision_copy` into a buffer that size, or read it with `iap_decision_get`; free it with
/// `iap_decision_free`), so it is never made twice; otherwise
/// `*decision_out` is NULL. `buf` may be NULL when `buf_len` is 0. The length prefixes in `buf`
/// are not aligned: read them with `memcpy`. On any result but `IAP_RESULT_OK` nothing is
/// written to `buf`, `*record_out` or `*decision_out`.
///
/// `request` is passed by value; the bytes its views point at are borrowed for this call only,
/// and must not overlap `buf`.
#[unsafe(no_mangle)]
pub extern "C" fn iap_engine_decide_into(
    engine: *const iap_engine,
    request: iap_request<'_>,
    buf: *mut u8,
    buf_len: usize,
    record_out: *mut iap_decision_record,
    decision_out: *mut *mut iap_decision,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: `engine` is NULL or a live engine for the duration of this call.
        let Some(engine_ref) = (unsafe { arc_ref::<EngineBox, iap_engine>(engine) }) else {
            return iap_result::NullParameter;
        };
        // SAFETY: the caller lends `buf_len` writable bytes at `buf` for this call.
        let Some(out) = (unsafe { bytes_mut(buf, buf_len) }) else {
            return iap_result::NullParameter;
        };
        if record_out.is_null() || decision_out.is_null() {
            return iap_result::NullParameter;
        }
        // SAFETY: the caller lends the request's bytes for this call.
        let decision = match unsafe { decide(engine_ref, request) } {
            Ok(decision) => decision,
            Err(e) => return e,
        };
        let record = iap_decision_record::write(&decision, out);
        let boxed = if record.len > buf_len {
            // SAFETY: `engine` is a live engine (checked above); the box holds its own reference.
            let Some(engine) = (unsafe { arc_clone::<EngineBox, iap_engine>(engine) }) else {
                return iap_result::NullParameter;
            };
            box_into_ptr(DecisionBox::new(decision, engine))
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: both checked non-NULL above.
        unsafe {
            write_out(record_out, record);
            write_out(decision_out, boxed);
        }
        iap_result::Ok
    }
}

/// Reads a C request and decides it.
///
/// # Safety
/// The request's views must be readable for this call (the caller lends them).
unsafe fn decide(engine: &EngineBox, request: iap_request<'_>) -> Result<Decision, iap_result> {
    let text = |s: iap_str<'_>| -> Option<&str> {
        // SAFETY: the caller lends each view's bytes for this call.
        unsafe { bytes(s.data, s.len) }.and_then(|b| std::str::from_utf8(b).ok())
    };
    let (Some(method), Some(host), Some(path)) =
        (text(request.method), text(request.host), text(request.path))
    else {
        return Err(iap_result::InvalidParameter);
    };
    // SAFETY: the caller lends the token's bytes for this call.
    let Some(token) = (unsafe { bytes(request.token.data, request.token.len) }) else {
        return Err(iap_result::NullParameter);
    };
    let token = (!token.is_empty()).then_some(token);
    let req = match token {
        Some(t) if request.session => Request::from_session(method, host, path, t),
        _ => Request::new(method, host, path, token),
    };
    Ok(engine.engine.decide(&req))
}

/// Writes the assertion public keys (a JWKS JSON document) to `*out`, borrowed from the engine
/// and valid until the engine is freed; an empty view when assertions are off.
#[unsafe(no_mangle)]
pub extern "C" fn iap_engine_public_jwks(
    engine: *const iap_engine,
    out: *mut iap_str<'_>,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: `engine` is NULL or a live engine; the view is documented to live as long.
        let Some(engine) = (unsafe { arc_ref::<EngineBox, iap_engine>(engine) }) else {
            return iap_result::NullParameter;
        };
        let view = iap_str::from_opt(engine.engine.public_jwks());
        // SAFETY: `out` is NULL or a writable `iap_str`.
        if unsafe { write_out(out, view) } { iap_result::Ok } else { iap_result::NullParameter }
    }
}

/// Writes the engine's counters to `*out`. Does nothing when either pointer is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn iap_engine_stats_get(engine: *const iap_engine, out: *mut iap_engine_stats) {
    ffi_panic_boundary! {
        // SAFETY: `engine` is NULL or a live engine for this call.
        let Some(engine) = (unsafe { arc_ref::<EngineBox, iap_engine>(engine) }) else {
            return;
        };
        let s = engine.engine.stats();
        let stats = iap_engine_stats {
            cache_hits: s.cache_hits,
            cache_misses: s.cache_misses,
            key_fetch_ok: s.key_fetch_ok,
            key_fetch_error: s.key_fetch_error,
            key_fetch_skipped: s.key_fetch_skipped,
            cached_tokens: engine.engine.cached_tokens() as u64,
        };
        // SAFETY: `out` is NULL or a writable `iap_engine_stats`.
        unsafe { write_out(out, stats) };
    }
}

/// Generates a new assertion signing key for `alg` (`"ES256"` or `"EdDSA"`) and writes it as
/// base64 PKCS#8 into `buf` (256 bytes suffice), its length into `*written`. The caller owns
/// `buf`; this is secret material: store it, never log it.
#[unsafe(no_mangle)]
pub extern "C" fn iap_generate_signing_key(
    alg: *const u8,
    alg_len: usize,
    buf: *mut u8,
    buf_len: usize,
    written: *mut usize,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: the caller lends `alg_len` readable bytes.
        let Some(alg) = (unsafe { bytes(alg, alg_len) }) else {
            return iap_result::NullParameter;
        };
        let Some(alg) = std::str::from_utf8(alg).ok().and_then(|a| a.parse::<Alg>().ok()) else {
            return iap_result::InvalidParameter;
        };
        let Ok(der) = generate_signing_key(alg) else {
            return iap_result::InvalidParameter;
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(der);
        // SAFETY: the caller lends `buf_len` writable bytes.
        let Some(out) = (unsafe { bytes_mut(buf, buf_len) }) else {
            return iap_result::NullParameter;
        };
        if out.len() < encoded.len() {
            return iap_result::BufferTooSmall;
        }
        out[..encoded.len()].copy_from_slice(encoded.as_bytes());
        // SAFETY: `written` is NULL or a writable usize.
        if unsafe { write_out(written, encoded.len()) } { iap_result::Ok } else { iap_result::NullParameter }
    }
}

impl std::fmt::Debug for EngineBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBox").finish_non_exhaustive()
    }
}
