//! The caller's token, from the `Authorization` header a Cosmos SDK sends.
//!
//! With a token credential the SDKs send `type=aad&ver=1.0&sig=<jwt>`: Python raw, the others
//! URL-encoded (`type%3Daad%26ver%3D1.0%26sig%3D<jwt>`). A plain `Bearer <jwt>` works too. A
//! master key or resource token from a client is refused: this gateway's callers hold no keys.

/// Why no token could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No `Authorization` header.
    Missing,
    /// A master-key or resource-token signature: clients of the gateway must send OIDC tokens.
    KeyAuth,
    /// Not one of the accepted shapes.
    Malformed,
}

impl TokenError {
    /// A short reason for the client and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => {
                "no token (send Authorization: type=aad&ver=1.0&sig=<token> or Bearer <token>)"
            }
            Self::KeyAuth => {
                "master-key and resource-token signatures are not accepted here; send an OIDC token"
            }
            Self::Malformed => "malformed Authorization header",
        }
    }
}

/// The token in an `Authorization` header value (empty: none).
pub fn token_from_authorization(value: &[u8]) -> Result<Vec<u8>, TokenError> {
    if value.is_empty() {
        return Err(TokenError::Missing);
    }
    if let Some(rest) = strip_prefix_ignore_case(value, b"bearer ") {
        let token = trim(rest);
        return if token.is_empty() || token.contains(&b' ') {
            Err(TokenError::Malformed)
        } else {
            Ok(token.to_vec())
        };
    }
    let decoded;
    let value = if strip_prefix_ignore_case(value, b"type%3d").is_some() {
        decoded = crate::percent::percent_decode(value).ok_or(TokenError::Malformed)?;
        decoded.as_slice()
    } else {
        value
    };
    let mut parts = value.split(|&b| b == b'&');
    let (Some(kind), Some(ver), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    match kind {
        b"type=aad" => {}
        b"type=master" | b"type=resource" => return Err(TokenError::KeyAuth),
        _ => return Err(TokenError::Malformed),
    }
    let sig = sig.strip_prefix(b"sig=").ok_or(TokenError::Malformed)?;
    if ver != b"ver=1.0" || sig.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(sig.to_vec())
}

fn strip_prefix_ignore_case<'a>(v: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &v[prefix.len()..])
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &[u8] = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";

    #[test]
    fn every_sdk_shape_yields_the_token() {
        let raw = [b"type=aad&ver=1.0&sig=".as_slice(), JWT].concat();
        let encoded = [b"type%3Daad%26ver%3D1.0%26sig%3D".as_slice(), JWT].concat();
        let lower = [b"type%3daad%26ver%3d1.0%26sig%3d".as_slice(), JWT].concat();
        let bearer = [b"Bearer ".as_slice(), JWT].concat();
        for v in [raw, encoded, lower, bearer] {
            assert_eq!(
                token_from_authorization(&v).unwrap(),
                JWT,
                "{}",
                String::from_utf8_lossy(&v)
            );
        }
    }

    #[test]
    fn keys_and_junk_are_refused() {
        assert_eq!(token_from_authorization(b""), Err(TokenError::Missing));
        for v in [
            b"type%3Dmaster%26ver%3D1.0%26sig%3Dabc".as_slice(),
            b"type=resource&ver=1.0&sig=abc",
        ] {
            assert_eq!(token_from_authorization(v), Err(TokenError::KeyAuth));
        }
        for v in [
            b"type=aad&ver=2.0&sig=abc".as_slice(),
            b"type=aad&ver=1.0&sig=",
            b"type=aad&ver=1.0",
            b"type=aad&ver=1.0&sig=a&x=y",
            b"type=AAD&ver=1.0&sig=a",
            b"type%3Daad%26ver%3D1.0%26sig%3Dab%zz",
            b"Bearer ",
            b"Bearer a b",
            b"Basic dXNlcjpwYXNz",
        ] {
            assert_eq!(
                token_from_authorization(v),
                Err(TokenError::Malformed),
                "{}",
                String::from_utf8_lossy(v)
            );
        }
    }
}
