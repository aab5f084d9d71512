//! The panic boundary: every exported function body runs inside `catch_unwind`, and a panic
//! becomes a default value (`IAP_RESULT_PANIC`, NULL, or nothing) instead of unwinding into C.

/// The value an export returns when its body panicked.
pub(crate) trait PanicOrDefault {
    fn value() -> Self;
}

impl PanicOrDefault for crate::error::iap_result {
    fn value() -> Self {
        Self::Panic
    }
}

impl PanicOrDefault for () {
    fn value() -> Self {}
}

/// Runs the body, converting a panic into `PanicOrDefault::value()`.
macro_rules! ffi_panic_boundary {
    ( $($tt:tt)* ) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($tt)* })) {
            Ok(ret) => ret,
            Err(_) => return $crate::panic::PanicOrDefault::value(),
        }
    };
}
