//! Borrowed byte views passed across the boundary.

use std::marker::PhantomData;

/// A borrowed run of bytes (UTF-8 for text), not NUL-terminated. Who lends it says how long it
/// lives. The library's views have `data` NULL when `len` is 0 (arrays too); a caller's may have
/// either.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iap_str<'a> {
    /// First byte.
    pub data: *const u8,
    /// Number of bytes.
    pub len: usize,
    _life: PhantomData<&'a [u8]>,
}

impl<'a> iap_str<'a> {
    /// An empty view.
    pub(crate) const EMPTY: Self = Self {
        data: std::ptr::null(),
        len: 0,
        _life: PhantomData,
    };

    /// A view of `bytes`, valid as long as `bytes` (for Rust callers and tests).
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            data: bytes.as_ptr(),
            len: bytes.len(),
            _life: PhantomData,
        }
    }

    /// The viewed bytes.
    ///
    /// # Safety
    /// The view must still be valid: whoever lent it has not freed or changed the bytes.
    pub unsafe fn as_bytes(&self) -> &'a [u8] {
        // SAFETY: forwarded to the caller; a zero length never dereferences `data`.
        unsafe { crate::ffi::bytes(self.data, self.len) }.unwrap_or_default()
    }

    /// A view of `s`, valid as long as `s`.
    pub(crate) fn from_str(s: &'a str) -> Self {
        if s.is_empty() {
            return Self::EMPTY;
        }
        Self {
            data: s.as_ptr(),
            len: s.len(),
            _life: PhantomData,
        }
    }

    /// A view of `s` whose lifetime the caller vouches for: only for views stored next to the
    /// data they point into, in a struct that keeps that data alive and unmoved (the string
    /// bytes of an `Arc<str>` never move).
    pub(crate) fn detached(s: &str) -> iap_str<'static> {
        if s.is_empty() {
            return iap_str::EMPTY;
        }
        iap_str {
            data: s.as_ptr(),
            len: s.len(),
            _life: PhantomData,
        }
    }

    /// A view of an optional string, empty when `None`.
    pub(crate) fn from_opt(s: Option<&'a str>) -> Self {
        s.map_or(Self::EMPTY, Self::from_str)
    }
}

/// A borrowed header (name, value) pair.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iap_header<'a> {
    /// Header name.
    pub name: iap_str<'a>,
    /// Header value.
    pub value: iap_str<'a>,
}

/// The pointer to lend for an array: NULL when it is empty. Rust's pointer for an empty slice
/// is a small non-zero address (its alignment), and Go, which types the field as a pointer,
/// stops the program if it finds such a value on a goroutine stack it is moving.
pub(crate) fn array_ptr<T>(items: &[T]) -> *const T {
    if items.is_empty() {
        std::ptr::null()
    } else {
        items.as_ptr()
    }
}
