//! Strict JSON for token segments and key sets. (STUB: being written.)
use serde_json::{Map, Value};

use crate::error::TokenError;

/// Parses `bytes` as one JSON object, refusing duplicate keys at any depth, nesting deeper than
/// [`MAX_DEPTH`], and trailing data. `segment` names the part for the error.
pub(crate) fn parse_object(bytes: &[u8], segment: &'static str) -> Result<Map<String, Value>, TokenError> {
    let _ = (bytes, segment);
    todo!()
}

/// Deepest nesting accepted.
pub(crate) const MAX_DEPTH: usize = 32;
