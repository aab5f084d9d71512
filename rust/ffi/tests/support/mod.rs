//! What the C ABI tests share: building an engine the way a caller does.

use std::ptr;

use caddy_iap::{iap_engine, iap_engine_new, iap_result};

/// `iap_engine_new` on `json`: the engine, or the result code and the message written.
pub(crate) fn new_engine(json: &str) -> Result<*const iap_engine, (iap_result, String)> {
    let mut err = vec![0u8; 512];
    let mut written = 0usize;
    let mut engine = ptr::null();
    let rc = iap_engine_new(
        json.as_ptr(),
        json.len(),
        err.as_mut_ptr(),
        err.len(),
        &mut written,
        &mut engine,
    );
    if rc == iap_result::Ok {
        assert!(!engine.is_null());
        Ok(engine)
    } else {
        assert!(engine.is_null(), "out-parameter written only on success");
        Err((rc, String::from_utf8(err[..written].to_vec()).unwrap()))
    }
}

/// An engine from a config that must be valid.
#[allow(dead_code)] // not every test file builds from a JSON value
pub(crate) fn engine(config: &serde_json::Value) -> *const iap_engine {
    new_engine(&config.to_string()).unwrap_or_else(|(rc, msg)| panic!("{rc:?}: {msg}"))
}
