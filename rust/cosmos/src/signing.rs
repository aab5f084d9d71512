//! Signing upstream requests: the master-key HMAC, or the gateway's own Entra token.
//!
//! Master key (Cosmos DB REST docs, "access control on Cosmos DB resources"):
//! `sig = base64(HMAC-SHA256(base64decode(key), "{verb}\n{type}\n{link}\n{date}\n\n"))`, with the
//! verb, type and date lower-cased and the link kept as is; the header is
//! `urlencode("type=master&ver=1.0&sig=" + sig)`. The fifth line is the HTTP `Date` header,
//! which the gateway never sends upstream, so it stays empty.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// An account key, ready to sign. The key bytes live only inside the HMAC state.
pub struct MasterKey {
    key: hmac::Key,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Why a key was refused. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub &'static str);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl MasterKey {
    /// Decodes a base64 account key (as Azure shows it; surrounding whitespace is ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let raw = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError("the account key is not valid base64"))?,
        );
        if raw.len() < 32 {
            return Err(KeyError("the account key is shorter than 32 bytes"));
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
        })
    }

    /// The signature (base64) over one request.
    pub fn signature(&self, verb: &str, resource_type: &str, link: &str, date: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        for (part, lower) in [
            (verb, true),
            (resource_type, true),
            (link, false),
            (date, true),
        ] {
            if lower && part.bytes().any(|b| b.is_ascii_uppercase()) {
                ctx.update(part.to_ascii_lowercase().as_bytes());
            } else {
                ctx.update(part.as_bytes());
            }
            ctx.update(b"\n");
        }
        ctx.update(b"\n");
        STANDARD.encode(ctx.sign().as_ref())
    }

    /// The `Authorization` header value for one request.
    pub fn authorization(&self, verb: &str, resource_type: &str, link: &str, date: &str) -> String {
        auth_header("master", &self.signature(verb, resource_type, link, date))
    }
}

/// `urlencode("type={kind}&ver=1.0&sig={sig}")`: the encoding every SDK but Python's applies.
pub(crate) fn auth_header(kind: &str, sig: &str) -> String {
    let mut out = String::with_capacity(sig.len() + 32);
    out.push_str("type%3D");
    out.push_str(kind);
    out.push_str("%26ver%3D1.0%26sig%3D");
    for c in sig.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            '&' => out.push_str("%26"),
            c => out.push(c),
        }
    }
    out
}

/// `x-ms-date` for a Unix time: an RFC 7231 HTTP-date (`Tue, 01 Nov 1994 08:12:31 GMT`).
pub fn http_date(unix_secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix_secs))
}

#[cfg(test)]
mod tests;
