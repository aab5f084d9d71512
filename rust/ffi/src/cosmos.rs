//! `iap_cosmos_gateway`: Cosmos DB requests checked and re-signed (`caddy-iap-cosmos`).
//!
//! A gateway shares its engine (token checks, role rules) and owns the account key or Entra
//! credential. A decision is Box-owned by the caller and read through a borrowed view.

use caddy_iap_cosmos::{CosmosConfig, Forward, Gateway, Refusal, RequestFacts};

use crate::engine::{EngineBox, iap_engine};
use crate::error::iap_result;
use crate::ffi::{
    arc_free, arc_ref, box_free, box_into_ptr_with_view, box_ref, bytes, bytes_mut, write_out,
};
use crate::gateway::new_gateway;
use crate::slice::{array_ptr, iap_str};

/// A Cosmos DB gateway. Opaque; shared (reference-counted) by all callers.
pub struct iap_cosmos_gateway {
    _private: [u8; 0],
}

type GatewayBox = crate::gateway::GatewayBox<Gateway>;

/// Builds a gateway for one policy (`policy_json`, UTF-8 JSON) on top of `engine`, which it
/// keeps alive. Reads the account key or client secret the policy names; makes no network
/// call.
///
/// On success writes the gateway to `*gateway_out`; the caller owns it and releases it with
/// [`iap_cosmos_gateway_free`]. On `IAP_RESULT_INVALID_CONFIG` writes the reason into
/// `err_buf` as [`crate::iap_engine_new`] does (never secret material).
#[unsafe(no_mangle)]
pub extern "C" fn iap_cosmos_gateway_new(
    engine: *const iap_engine,
    policy_json: *const u8,
    policy_len: usize,
    err_buf: *mut u8,
    err_buf_len: usize,
    err_written: *mut usize,
    gateway_out: *mut *const iap_cosmos_gateway,
) -> iap_result {
    ffi_panic_boundary! {
        let build = |json: &[u8], engine: &EngineBox| {
            let policy = serde_json::from_slice::<CosmosConfig>(json)
                .map_err(|e| format!("cosmos policy: {e}"))?;
            Gateway::new(&policy, &engine.engine).map_err(|e| e.to_string())
        };
        // SAFETY: the arguments are as this function documents.
        unsafe {
            new_gateway::<Gateway, iap_cosmos_gateway>(
                engine, policy_json, policy_len, err_buf, err_buf_len, err_written, gateway_out, build,
            )
        }
    }
}

/// Releases the caller's reference to `gateway` (NULL is fine). Must not be called twice, nor
/// while a call is in flight.
#[unsafe(no_mangle)]
pub extern "C" fn iap_cosmos_gateway_free(gateway: *const iap_cosmos_gateway) {
    ffi_panic_boundary! {
        // SAFETY: per this function's contract, `gateway` is NULL or a live reference.
        unsafe { arc_free::<GatewayBox, iap_cosmos_gateway>(gateway) }
    }
}

/// One request's facts, passed by value to [`iap_cosmos_authorize`]; the bytes its views point
/// at are borrowed for that call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iap_cosmos_request<'a> {
    /// HTTP method, upper case.
    pub method: iap_str<'a>,
    /// The escaped path, without the query string.
    pub path: iap_str<'a>,
    /// The client's `Authorization` header value (empty when absent).
    pub authorization: iap_str<'a>,
    /// The `x-ms-documentdb-isquery` header value (empty when absent).
    pub is_query: iap_str<'a>,
    /// The `Content-Type` header value.
    pub content_type: iap_str<'a>,
    /// The `x-ms-documentdb-is-upsert` header value.
    pub is_upsert: iap_str<'a>,
    /// The `x-ms-cosmos-is-batch-request` header value.
    pub is_batch: iap_str<'a>,
    /// The body of a POST (empty for other methods).
    pub body: iap_str<'a>,
}

/// The outcome of one request. Opaque; read with [`iap_cosmos_decision_get`], free with
/// [`iap_cosmos_decision_free`].
pub struct iap_cosmos_decision {
    _private: [u8; 0],
}

/// A borrowed view of a decision; every pointer in it is valid until
/// `iap_cosmos_decision_free`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iap_cosmos_decision_view<'a> {
    /// Whether the request may go upstream.
    pub allowed: bool,
    /// Refusal: the HTTP status (400, 401, 403, 503); 200 when allowed.
    pub status: u16,
    /// Refusal: the JSON body, shaped like a Cosmos DB error.
    pub body: iap_str<'a>,
    /// Refusal: the reason for the log.
    pub log_reason: iap_str<'a>,
    /// What was asked (`items/read on dbs/app/colls/orders`); may be empty.
    pub operation: iap_str<'a>,
    /// Allowed: the upstream `Authorization` value. Secret: never log it.
    pub authorization: iap_str<'a>,
    /// Allowed: the upstream `x-ms-date` value.
    pub date: iap_str<'a>,
    /// Allowed: the response is the account document, to be rewritten with
    /// [`iap_cosmos_rewrite_account`].
    pub account_document: bool,
    /// Allowed: send `x-ms-documentdb-isquery: True` upstream (otherwise remove it).
    pub query: bool,
    /// Allowed: send `x-ms-documentdb-is-upsert: True` upstream (otherwise remove it).
    pub upsert: bool,
    /// Allowed: send `x-ms-cosmos-is-batch-request: True` upstream (otherwise remove it).
    pub batch: bool,
    /// Verified subject; empty when the token was not valid.
    pub subject: iap_str<'a>,
    /// Verified email; may be empty.
    pub email: iap_str<'a>,
    /// Issuer of the verified token; may be empty.
    pub issuer: iap_str<'a>,
    /// The caddy-iap roles the token maps to.
    pub roles: *const iap_str<'a>,
    /// Number of roles.
    pub roles_len: usize,
}

struct DecisionBox {
    result: Result<Forward, Refusal>,
    body: String,
    roles: Vec<iap_str<'static>>,
}

impl DecisionBox {
    /// The view [`iap_cosmos_decision_get`] writes; it borrows from `self`.
    fn view(&self) -> iap_cosmos_decision_view<'_> {
        let identity = match &self.result {
            Ok(f) => Some(&*f.identity),
            Err(r) => r.identity.as_deref(),
        };
        let mut view = iap_cosmos_decision_view {
            allowed: self.result.is_ok(),
            status: 200,
            body: iap_str::from_str(&self.body),
            log_reason: iap_str::EMPTY,
            operation: iap_str::EMPTY,
            authorization: iap_str::EMPTY,
            date: iap_str::EMPTY,
            account_document: false,
            query: false,
            upsert: false,
            batch: false,
            subject: iap_str::from_opt(identity.map(|i| &*i.subject)),
            email: iap_str::from_opt(identity.and_then(|i| i.email.as_deref())),
            issuer: iap_str::from_opt(identity.map(|i| &*i.issuer)),
            roles: array_ptr(&self.roles),
            roles_len: self.roles.len(),
        };
        match &self.result {
            Ok(f) => {
                view.operation = iap_str::from_str(&f.operation);
                view.authorization = iap_str::from_str(&f.authorization);
                view.date = iap_str::from_str(&f.date);
                view.account_document = f.account_document;
                view.query = f.flags.query;
                view.upsert = f.flags.upsert;
                view.batch = f.flags.batch;
            }
            Err(r) => {
                view.status = r.status;
                view.log_reason = iap_str::from_str(&r.log_reason);
                view.operation = iap_str::from_str(&r.operation);
            }
        }
        view
    }
}

/// Decides one request: verifies the token, parses the request, checks the grants, and for an
/// allowed request signs it for the account. May block once per token lifetime for an Entra
/// token request (bounded by the policy's timeout).
///
/// On `IAP_RESULT_OK` writes a decision to `*decision_out`; the caller owns it and must free it
/// with [`iap_cosmos_decision_free`]. When `view_out` is non-NULL it also gets the decision's
/// view, as [`iap_cosmos_decision_get`] would write it. `request` is passed by value; the bytes
/// its views point at are borrowed for this call only.
#[unsafe(no_mangle)]
pub extern "C" fn iap_cosmos_authorize(
    gateway: *const iap_cosmos_gateway,
    request: iap_cosmos_request<'_>,
    decision_out: *mut *mut iap_cosmos_decision,
    view_out: *mut iap_cosmos_decision_view<'_>,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: `gateway` is NULL or a live gateway for this call.
        let Some(gw) = (unsafe { arc_ref::<GatewayBox, iap_cosmos_gateway>(gateway) }) else {
            return iap_result::NullParameter;
        };
        let req = &request;
        if decision_out.is_null() {
            return iap_result::NullParameter;
        }
        let text = |s: iap_str<'_>| -> Option<&str> {
            // SAFETY: the caller lends each view's bytes for this call.
            unsafe { bytes(s.data, s.len) }.and_then(|b| std::str::from_utf8(b).ok())
        };
        let (Some(method), Some(path)) = (text(req.method), text(req.path)) else {
            return iap_result::InvalidParameter;
        };
        let (Some(is_query), Some(content_type), Some(is_upsert), Some(is_batch)) =
            (text(req.is_query), text(req.content_type), text(req.is_upsert), text(req.is_batch))
        else {
            return iap_result::InvalidParameter;
        };
        // SAFETY: the caller lends the body's bytes for this call.
        let Some(body) = (unsafe { bytes(req.body.data, req.body.len) }) else {
            return iap_result::NullParameter;
        };
        // SAFETY: the caller lends the header's bytes for this call.
        let Some(authorization) = (unsafe { bytes(req.authorization.data, req.authorization.len) }) else {
            return iap_result::NullParameter;
        };
        let facts = RequestFacts::new(method, path)
            .with_headers(is_query, content_type, is_upsert, is_batch, body);
        let result = gw.gateway.authorize(&gw.engine.engine, authorization, &facts);
        let identity = match &result {
            Ok(f) => Some(&f.identity),
            Err(r) => r.identity.as_ref(),
        };
        let roles = identity
            .map(|id| id.roles.iter().map(|r| iap_str::detached(r)).collect())
            .unwrap_or_default();
        let body = result.as_ref().err().map(Refusal::body).unwrap_or_default();
        let boxed: *mut iap_cosmos_decision = {
            // SAFETY: `view_out` is NULL or a writable view, read (per this function's
            // contract) only until the caller frees the decision.
            unsafe { box_into_ptr_with_view(DecisionBox { result, body, roles }, DecisionBox::view, view_out) }
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(decision_out, boxed) };
        iap_result::Ok
    }
}

/// Writes a view of `decision` to `*view_out`. Does nothing when either pointer is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn iap_cosmos_decision_get(
    decision: *const iap_cosmos_decision,
    view_out: *mut iap_cosmos_decision_view<'_>,
) {
    ffi_panic_boundary! {
        // SAFETY: `decision` is NULL or a live decision; the view borrows from it.
        let Some(b) = (unsafe { box_ref::<DecisionBox, iap_cosmos_decision>(decision) }) else {
            return;
        };
        // SAFETY: `view_out` is NULL or a writable view.
        unsafe { write_out(view_out, b.view()) };
    }
}

/// Frees a decision (NULL is fine). Views of it become invalid.
#[unsafe(no_mangle)]
pub extern "C" fn iap_cosmos_decision_free(decision: *mut iap_cosmos_decision) {
    ffi_panic_boundary! {
        // SAFETY: `decision` is NULL or came from `iap_cosmos_authorize` and is freed once.
        unsafe { box_free::<DecisionBox, iap_cosmos_decision>(decision) }
    }
}

/// Rewrites an account document (the body of `GET /`) so every advertised endpoint is
/// `gateway_url`, into the caller's buffer `out` of `out_len` bytes; `*written` gets the length.
///
/// Returns `IAP_RESULT_BUFFER_TOO_SMALL` with the needed length in `*written` when `out` is too
/// small (call again with a larger buffer), and `IAP_RESULT_INVALID_PARAMETER` when the body is
/// not an account document. Everything is borrowed for this call only.
#[unsafe(no_mangle)]
pub extern "C" fn iap_cosmos_rewrite_account(
    body: *const u8,
    body_len: usize,
    gateway_url: iap_str<'_>,
    out: *mut u8,
    out_len: usize,
    written: *mut usize,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: the caller lends `body_len` readable bytes for this call.
        let Some(body) = (unsafe { bytes(body, body_len) }) else {
            return iap_result::NullParameter;
        };
        // SAFETY: the caller lends the URL's bytes for this call.
        let Some(url) = (unsafe { bytes(gateway_url.data, gateway_url.len) })
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            return iap_result::InvalidParameter;
        };
        if written.is_null() {
            return iap_result::NullParameter;
        }
        let Ok(doc) = caddy_iap_cosmos::rewrite_account_document(body, url) else {
            return iap_result::InvalidParameter;
        };
        // SAFETY: checked non-NULL above; the caller lends the slot.
        unsafe { write_out(written, doc.len()) };
        // SAFETY: the caller lends `out_len` writable bytes for this call.
        let Some(out) = (unsafe { bytes_mut(out, out_len) }) else {
            return iap_result::NullParameter;
        };
        if out.len() < doc.len() {
            return iap_result::BufferTooSmall;
        }
        out[..doc.len()].copy_from_slice(&doc);
        iap_result::Ok
    }
}
