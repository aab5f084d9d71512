//! Issuer key sets. (STUB: being written.)
