//! The unsafe helpers: pointer casts between opaque C handles and Rust values. Exported
//! functions use these and contain (almost) no unsafe code of their own.

use std::sync::Arc;

/// Moves `value` into an `Arc` and returns it as an opaque pointer owning one reference.
pub(crate) fn arc_into_ptr<T, C>(value: T) -> *const C {
    Arc::into_raw(Arc::new(value)).cast()
}

/// Borrows the value behind an `Arc` pointer made by [`arc_into_ptr`].
///
/// # Safety
/// `ptr` must be NULL or come from `arc_into_ptr::<T, C>` and still own a reference for the
/// whole lifetime `'a`.
pub(crate) unsafe fn arc_ref<'a, T, C>(ptr: *const C) -> Option<&'a T> {
    // SAFETY: per the contract, a non-NULL `ptr` points at a live `T` inside an `Arc`.
    unsafe { ptr.cast::<T>().as_ref() }
}

/// Releases the reference owned by `ptr`; NULL is a no-op.
///
/// # Safety
/// `ptr` must be NULL or come from `arc_into_ptr::<T, C>`, and this reference must not be
/// released twice.
pub(crate) unsafe fn arc_free<T, C>(ptr: *const C) {
    if !ptr.is_null() {
        // SAFETY: per the contract, `ptr` owns one reference made by `Arc::into_raw`.
        drop(unsafe { Arc::from_raw(ptr.cast::<T>()) });
    }
}

/// Gives a new owned `Arc` for the value behind `ptr`, leaving `ptr`'s own reference intact.
///
/// # Safety
/// As for [`arc_ref`].
pub(crate) unsafe fn arc_clone<T, C>(ptr: *const C) -> Option<Arc<T>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: per the contract the pointer came from `Arc::into_raw` and is live; incrementing
    // first makes the `from_raw` below own a fresh reference.
    unsafe {
        Arc::increment_strong_count(ptr.cast::<T>());
        Some(Arc::from_raw(ptr.cast::<T>()))
    }
}

/// Moves `value` into a `Box` and returns it as an opaque owning pointer.
pub(crate) fn box_into_ptr<T, C>(value: T) -> *mut C {
    Box::into_raw(Box::new(value)).cast()
}

/// [`box_into_ptr`] that also writes `view(&value)` to `*view_out` when it is non-NULL: a
/// decision and its view from one call.
///
/// # Safety
/// `view_out` must be NULL or valid for a write of `V`. The view borrows the boxed value for a
/// lifetime the caller chooses: the exported function's contract must say it is read only
/// until the returned pointer is freed.
pub(crate) unsafe fn box_into_ptr_with_view<'v, T: 'v, C, V>(
    value: T,
    view: impl FnOnce(&'v T) -> V,
    view_out: *mut V,
) -> *mut C {
    let boxed = Box::into_raw(Box::new(value));
    if !view_out.is_null() {
        // SAFETY: `boxed` is live until the caller frees it, and per the contract the view is
        // not read after that; `view_out` is valid for a write.
        unsafe { view_out.write(view(&*boxed)) };
    }
    boxed.cast()
}

/// Borrows the value behind a pointer made by [`box_into_ptr`].
///
/// # Safety
/// `ptr` must be NULL or come from `box_into_ptr::<T, C>` and not be freed during `'a`.
pub(crate) unsafe fn box_ref<'a, T, C>(ptr: *const C) -> Option<&'a T> {
    // SAFETY: per the contract, a non-NULL `ptr` points at a live boxed `T`.
    unsafe { ptr.cast::<T>().as_ref() }
}

/// Frees a pointer made by [`box_into_ptr`]; NULL is a no-op.
///
/// # Safety
/// `ptr` must be NULL or come from `box_into_ptr::<T, C>` and not be freed twice.
pub(crate) unsafe fn box_free<T, C>(ptr: *mut C) {
    if !ptr.is_null() {
        // SAFETY: per the contract, `ptr` came from `Box::into_raw` and is freed once.
        drop(unsafe { Box::from_raw(ptr.cast::<T>()) });
    }
}

/// Borrows `len` bytes at `data`. `len == 0` gives an empty slice even when `data` is NULL.
///
/// # Safety
/// When `len > 0`, `data` must point at `len` readable bytes that stay valid and unmodified
/// during `'a`.
pub(crate) unsafe fn bytes<'a>(data: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if data.is_null() {
        return None;
    }
    // SAFETY: per the contract, `data` points at `len` readable bytes for `'a`.
    Some(unsafe { std::slice::from_raw_parts(data, len) })
}

/// Borrows `len` writable bytes at `data`.
///
/// # Safety
/// When `len > 0`, `data` must point at `len` writable bytes not aliased during `'a`.
pub(crate) unsafe fn bytes_mut<'a>(data: *mut u8, len: usize) -> Option<&'a mut [u8]> {
    if len == 0 {
        return Some(&mut []);
    }
    if data.is_null() {
        return None;
    }
    // SAFETY: per the contract, `data` points at `len` writable, unaliased bytes for `'a`.
    Some(unsafe { std::slice::from_raw_parts_mut(data, len) })
}

/// Writes `value` through an out-pointer.
///
/// # Safety
/// `out` must be NULL (then this returns false) or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) -> bool {
    if out.is_null() {
        return false;
    }
    // SAFETY: per the contract, `out` is valid for a write of `T`.
    unsafe { out.write(value) };
    true
}
