//! What the database gateways (`iap_pg_gateway`, `iap_cosmos_gateway`) share: each holds its
//! engine alive next to the gateway, and is built from policy JSON the same way.

use std::sync::Arc;

use crate::engine::{EngineBox, iap_engine};
use crate::error::{finish_new, iap_result};
use crate::ffi::{arc_clone, bytes};

/// A gateway and the engine it verifies tokens with.
pub(crate) struct GatewayBox<G> {
    pub(crate) engine: Arc<EngineBox>,
    pub(crate) gateway: G,
}

/// The body of every `iap_*_gateway_new`: borrows the policy JSON, builds the gateway with
/// `build` on top of `engine` (which it keeps alive), and writes the gateway or the reason.
///
/// # Safety
/// As the exported constructors document: `engine` NULL or live, `policy_len` readable bytes
/// at `policy_json`, `gateway_out` NULL or writable, the error buffer and slot NULL or lent.
#[allow(clippy::too_many_arguments)] // the exported constructors' C parameters, then `build`
pub(crate) unsafe fn new_gateway<G, C>(
    engine: *const iap_engine,
    policy_json: *const u8,
    policy_len: usize,
    err_buf: *mut u8,
    err_buf_len: usize,
    err_written: *mut usize,
    gateway_out: *mut *const C,
    build: impl FnOnce(&[u8], &EngineBox) -> Result<G, String>,
) -> iap_result {
    // SAFETY: `engine` is NULL or a live engine for this call.
    let Some(engine) = (unsafe { arc_clone::<EngineBox, iap_engine>(engine) }) else {
        return iap_result::NullParameter;
    };
    // SAFETY: the caller lends `policy_len` readable bytes for this call.
    let Some(json) = (unsafe { bytes(policy_json, policy_len) }) else {
        return iap_result::NullParameter;
    };
    if gateway_out.is_null() {
        return iap_result::NullParameter;
    }
    let built = build(json, &engine).map(|gateway| GatewayBox { engine, gateway });
    // SAFETY: `gateway_out` checked non-NULL above; the caller lends the error buffer and
    // length slot, or NULLs.
    unsafe { finish_new::<GatewayBox<G>, C>(built, gateway_out, err_buf, err_buf_len, err_written) }
}
