//! Strict JWS compact serialization parsing.
//!
//! Only the compact form with exactly three canonical base64url segments is accepted: no JWE
//! (five segments), no JSON serialization, no unencoded payloads. The header is checked before
//! the payload is decoded, and nothing here trusts a header parameter that could point at a key
//! (`jwk`, `jku`, `x5u`, `x5c`) or change how the token is read (`crit`, `b64`, `enc`, `zip`).
//! The claims are read from the decoded payload by [`CompactJws::claims`], borrowing from it.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::alg::Alg;
use crate::error::{TokenError, truncate_for_log};
use crate::json::{Json, JsonObject, parse_object};

#[cfg(test)]
mod tests;

/// The protected header fields we use. Anything we never trust was refused while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The algorithm (never `none`, never HMAC).
    pub alg: Alg,
    /// Key id, if any (shared: a verified token's identity keeps it).
    pub kid: Option<Arc<str>>,
}

/// A parsed but NOT verified token: header, payload, the signing input and the signature bytes.
#[non_exhaustive]
pub struct CompactJws<'a> {
    /// Protected header.
    pub header: Header,
    /// Decoded payload, not yet read as JSON: see [`CompactJws::claims`].
    pub payload: Vec<u8>,
    /// `base64url(header) "." base64url(payload)`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    /// Decoded signature.
    pub signature: Vec<u8>,
}

/// Parses a compact JWS, strictly: length cap, exactly three canonical unpadded base64url
/// segments, a header that is a JSON object without duplicate keys, a known `alg`, no untrusted
/// header parameter. The payload's JSON is checked by [`CompactJws::claims`].
pub fn parse_compact(token: &[u8], max_len: usize) -> Result<CompactJws<'_>, TokenError> {
    if token.len() > max_len {
        return Err(TokenError::TooLong {
            len: token.len(),
            max: max_len,
        });
    }
    // The JSON serialization is one document, whatever dots its strings contain.
    if token.first() == Some(&b'{') {
        return Err(TokenError::WrongSegmentCount { found: 1 });
    }
    let [header, payload, signature] = split3(token)?;
    // In bounds: header, a dot and payload are a prefix of `token`.
    let signing_input = &token[..header.len() + 1 + payload.len()];
    let header = header_of(header)?;
    let payload = decode(payload, "payload")?;
    let signature = decode(signature, "signature")?;
    Ok(CompactJws {
        header,
        payload,
        signing_input,
        signature,
    })
}

impl CompactJws<'_> {
    /// Reads the payload as the claims object, strictly (no duplicate keys, bounded nesting, no
    /// trailing data); strings borrow from the payload.
    pub fn claims(&self) -> Result<JsonObject<'_>, TokenError> {
        parse_object(&self.payload, "payload")
    }
}

/// Header parameters whose mere presence refuses the token. `crit` names extensions we do not
/// implement; `b64` (RFC 7797) changes what is signed; `jwk`/`jku`/`x5u`/`x5c` offer a key
/// chosen by the sender; `enc`/`zip` belong to JWE.
const FORBIDDEN_HEADERS: [&str; 8] = ["crit", "b64", "jwk", "jku", "x5u", "x5c", "enc", "zip"];

/// Accepted `typ` values, compared case-insensitively (RFC 7515 §4.1.9, RFC 9068).
const ACCEPTED_TYPES: [&str; 4] = ["JWT", "at+jwt", "application/at+jwt", "application/jwt"];

/// Splits `token` at its two dots, or reports how many segments it has.
fn split3(token: &[u8]) -> Result<[&[u8]; 3], TokenError> {
    let mut dots = memchr::memchr_iter(b'.', token);
    match (dots.next(), dots.next(), dots.next()) {
        (Some(a), Some(b), None) => Ok([&token[..a], &token[a + 1..b], &token[b + 1..]]),
        _ => Err(TokenError::WrongSegmentCount {
            found: memchr::memchr_iter(b'.', token).count() + 1,
        }),
    }
}

/// How many header segments each thread remembers, and the longest it keeps: one per signing
/// key in use covers an ordinary deployment; a header longer than a few hundred bytes is not
/// one an issuer sends.
const MEMO_ENTRIES: usize = 4;
const MEMO_MAX_SEGMENT: usize = 512;

thread_local! {
    /// Header segments this thread accepted lately, with what they read as. Every token signed
    /// by one key carries the same header, so a cache miss for the next one skips its base64
    /// and JSON. The header is a pure function of these bytes: a hit reads exactly what a
    /// fresh parse would. Refused headers are not kept, so their errors are always fresh.
    static HEADER_MEMO: RefCell<Vec<(Box<[u8]>, Header)>> = const { RefCell::new(Vec::new()) };
}

/// The header a segment reads as: remembered, or decoded, checked and then remembered.
fn header_of(segment: &[u8]) -> Result<Header, TokenError> {
    if segment.len() > MEMO_MAX_SEGMENT {
        return parse_header(&decode(segment, "header")?);
    }
    HEADER_MEMO.with_borrow_mut(|memo| {
        if let Some((_, header)) = memo.iter().find(|(seen, _)| **seen == *segment) {
            // Sound only while a header depends on its bytes alone: checked in every test and
            // fuzz run.
            debug_assert!(
                decode(segment, "header")
                    .and_then(|bytes| parse_header(&bytes))
                    .is_ok_and(|fresh| fresh == *header)
            );
            return Ok(header.clone());
        }
        let header = parse_header(&decode(segment, "header")?)?;
        if memo.len() == MEMO_ENTRIES {
            memo.remove(0); // the oldest
        }
        memo.push((segment.into(), header.clone()));
        Ok(header)
    })
}

/// Decodes one segment as canonical unpadded base64url; an empty segment is refused too.
fn decode(segment: &[u8], name: &'static str) -> Result<Vec<u8>, TokenError> {
    if segment.is_empty() {
        return Err(TokenError::BadBase64 { segment: name });
    }
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::BadBase64 { segment: name })
}

/// Checks the decoded protected header and keeps what we use.
fn parse_header(bytes: &[u8]) -> Result<Header, TokenError> {
    let header = parse_object(bytes, "header")?;
    let alg = match header.get("alg") {
        None => return Err(TokenError::DisallowedAlgorithm { alg: String::new() }),
        Some(Json::String(s)) => {
            Alg::from_str(s).map_err(|()| TokenError::DisallowedAlgorithm {
                alg: truncate_for_log(s),
            })?
        }
        Some(_) => return Err(bad_header("\"alg\" is not a string")),
    };
    if let Some(name) = FORBIDDEN_HEADERS
        .into_iter()
        .find(|name| header.get(name).is_some())
    {
        return Err(TokenError::ForbiddenHeader { name });
    }
    match header.get("typ") {
        None => {}
        Some(Json::String(t)) if ACCEPTED_TYPES.iter().any(|a| a.eq_ignore_ascii_case(t)) => {}
        Some(_) => return Err(TokenError::ForbiddenHeader { name: "typ" }),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Json::String(kid)) => Some(Arc::from(&**kid)),
        Some(_) => return Err(bad_header("\"kid\" is not a string")),
    };
    Ok(Header { alg, kid })
}

/// A `BadJson` error for the header.
fn bad_header(detail: &str) -> TokenError {
    TokenError::BadJson {
        segment: "header",
        detail: detail.into(),
    }
}

impl fmt::Debug for CompactJws<'_> {
    /// Shows the header and sizes only: payload and signature stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompactJws")
            .field("header", &self.header)
            .field("payload", &self.payload.len())
            .field("signing_input", &self.signing_input.len())
            .field("signature", &self.signature.len())
            .finish_non_exhaustive()
    }
}
