//! C ABI over `caddy-iap-core` (and the PostgreSQL and Cosmos DB gateways), consumed by the Go Caddy module through cgo.
//!
//! Conventions (as in rustls-ffi):
//! - fallible functions return an [`iap_result`]; out-parameters come last and are written only
//!   on success;
//! - every `_new`/`_free` pair is documented with who owns what; `_free(NULL)` is fine, calling
//!   it twice is not;
//! - borrowed views ([`iap_str`]) state how long they live;
//! - no panic crosses the boundary: each export runs inside [`ffi_panic_boundary!`];
//! - Rust never prints; what Go should log comes back inside the decision.
//!
//! All `unsafe` code lives in `ffi.rs` helpers, each with a "Safety" section.

#![allow(non_camel_case_types)]
// The exports are called from C, where `unsafe fn` means nothing; each documents its pointer
// contract instead (as rustls-ffi does).
#![allow(clippy::not_unsafe_ptr_arg_deref)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod panic;

mod cosmos;
mod decision;
mod engine;
mod error;
mod ffi;
mod gateway;
mod postgres;
mod signin;
mod slice;

pub use cosmos::{
    iap_cosmos_authorize, iap_cosmos_decision, iap_cosmos_decision_free, iap_cosmos_decision_get,
    iap_cosmos_decision_view, iap_cosmos_gateway, iap_cosmos_gateway_free, iap_cosmos_gateway_new,
    iap_cosmos_request, iap_cosmos_rewrite_account,
};
pub use decision::{
    iap_decision, iap_decision_copy, iap_decision_free, iap_decision_get, iap_decision_record,
    iap_decision_view,
};
pub use engine::{
    iap_engine, iap_engine_decide, iap_engine_decide_into, iap_engine_free, iap_engine_new,
    iap_engine_public_jwks, iap_engine_stats, iap_engine_stats_get, iap_generate_signing_key,
    iap_request,
};
pub use error::iap_result;
pub use postgres::{
    iap_pg_gateway, iap_pg_gateway_free, iap_pg_gateway_login, iap_pg_gateway_new,
    iap_pg_gateway_stats, iap_pg_gateway_sweep, iap_pg_login, iap_pg_login_free, iap_pg_login_get,
    iap_pg_login_request, iap_pg_login_view, iap_pg_stats, iap_pg_sweep, iap_pg_sweep_free,
    iap_pg_sweep_get, iap_pg_sweep_view,
};
pub use signin::{
    iap_signin, iap_signin_begin, iap_signin_callback, iap_signin_free, iap_signin_kind,
    iap_signin_new, iap_signin_outcome, iap_signin_outcome_free, iap_signin_outcome_get,
    iap_signin_outcome_view, iap_signin_session, iap_signin_sign_out,
};
pub use slice::{iap_header, iap_str};

/// The library version, a static NUL-terminated string. Never free it.
#[unsafe(no_mangle)]
pub extern "C" fn iap_version() -> *const std::ffi::c_char {
    concat!("caddy-iap/", env!("CARGO_PKG_VERSION"), "\0")
        .as_ptr()
        .cast()
}
