//! Result codes. Numbered in blocks by origin; never renumber, retire numbers as comments.

/// What an `iap_*` function reports. `IAP_RESULT_OK` is the only success.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum iap_result {
    /// Success.
    Ok = 0,
    // 7000 block: problems at the boundary itself.
    /// A Rust panic was caught; the operation did not complete.
    Panic = 7000,
    /// A required pointer argument was NULL.
    NullParameter = 7001,
    /// The configuration was refused; the error buffer says why.
    InvalidConfig = 7002,
    /// An argument was malformed (not UTF-8, unknown algorithm name, ...).
    InvalidParameter = 7003,
    /// The caller's buffer is too small for the output.
    BufferTooSmall = 7004,
}

/// Writes `message` (UTF-8, not NUL-terminated, cut at a character boundary to fit) into the
/// caller's buffer and its length into `*written`. Does nothing when `buf` is NULL.
///
/// # Safety
/// `buf` must be NULL or point at `buf_len` writable bytes; `written` must be NULL or writable.
pub(crate) unsafe fn write_message(
    message: &str,
    buf: *mut u8,
    buf_len: usize,
    written: *mut usize,
) {
    // SAFETY: forwarded to the caller.
    if let Some(out) = unsafe { crate::ffi::bytes_mut(buf, buf_len) } {
        let mut n = message.len().min(out.len());
        while !message.is_char_boundary(n) {
            n -= 1;
        }
        out[..n].copy_from_slice(&message.as_bytes()[..n]);
        // SAFETY: forwarded to the caller.
        unsafe { crate::ffi::write_out(written, n) };
    }
}

/// The ending every `_new` shares: a built object is moved into an `Arc` and written to
/// `*out`; a refused config writes its reason into the error buffer instead.
///
/// # Safety
/// `out` must be valid for a write (checked non-NULL by the caller); `err_buf`/`err_written`
/// as for [`write_message`].
pub(crate) unsafe fn finish_new<T, C>(
    built: Result<T, String>,
    out: *mut *const C,
    err_buf: *mut u8,
    err_buf_len: usize,
    err_written: *mut usize,
) -> iap_result {
    match built {
        Ok(value) => {
            // SAFETY: forwarded to the caller.
            unsafe { crate::ffi::write_out(out, crate::ffi::arc_into_ptr::<T, C>(value)) };
            iap_result::Ok
        }
        Err(message) => {
            // SAFETY: forwarded to the caller.
            unsafe { write_message(&message, err_buf, err_buf_len, err_written) };
            iap_result::InvalidConfig
        }
    }
}
