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
