//! Strict JWS compact serialization parsing. (STUB: being written.)
use serde_json::{Map, Value};

use crate::alg::Alg;
use crate::error::TokenError;

/// The protected header fields we use. Anything we never trust was refused while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The algorithm (never `none`, never HMAC).
    pub alg: Alg,
    /// Key id, if any.
    pub kid: Option<String>,
}

/// A parsed but NOT verified token: header, claims, the signing input and the signature bytes.
pub struct CompactJws<'a> {
    /// Protected header.
    pub header: Header,
    /// Payload claims (duplicate keys already refused).
    pub claims: Map<String, Value>,
    /// `base64url(header) "." base64url(payload)`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    /// Decoded signature.
    pub signature: Vec<u8>,
}

/// Parses a compact JWS, strictly: length cap, exactly three canonical unpadded base64url
/// segments, JSON objects without duplicate keys, a known `alg`, no untrusted header parameter.
pub fn parse_compact(token: &[u8], max_len: usize) -> Result<CompactJws<'_>, TokenError> {
    let _ = (token, max_len);
    todo!()
}
