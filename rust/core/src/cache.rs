//! Verified-token cache. (STUB: being written.)
