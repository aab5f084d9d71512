//! Request path normalization before permission checks.
//!
//! The permission check must see the same path the upstream will serve. Rather than resolve
//! ambiguous forms (and risk resolving them differently from the upstream), anything ambiguous
//! is refused: the client gets a 400, never a path we interpreted one way and the upstream
//! another.

use std::borrow::Cow;

/// Percent-decodes the escaped request path for matching. Refuses (with a short reason) what
/// could make the upstream see a different path than the one we checked: encoded `/`, `\` or
/// NUL, dot segments (`.`/`..`, also encoded), a backslash, a `;` raw or encoded (servlet
/// containers strip `;params` per segment, so `/public/..;/admin` is `/admin` to Tomcat), an
/// encoded `%` (double decoding), or a path not starting with `/`.
///
/// `escaped` is the path as sent (Go's `r.URL.EscapedPath()`), without the query. Returns the
/// input borrowed when it has no `%` escape, so the common case does not allocate.
pub(crate) fn normalize(escaped: &str) -> Result<Cow<'_, str>, &'static str> {
    let bytes = escaped.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err("path does not start with /");
    }
    // Allocated at the first escape, with everything before it copied in.
    let mut decoded: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = match bytes[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).and_then(|&h| hex(h)),
                    bytes.get(i + 2).and_then(|&l| hex(l)),
                ) else {
                    return Err("malformed percent-escape in path");
                };
                match hi << 4 | lo {
                    b'/' => return Err("encoded slash in path"),
                    b'\\' => return Err("encoded backslash in path"),
                    b';' => return Err("semicolon in path"),
                    b'%' => return Err("encoded percent sign in path"),
                    0 => return Err("NUL in path"),
                    c => {
                        decoded
                            .get_or_insert_with(|| {
                                let mut v = Vec::with_capacity(bytes.len());
                                v.extend_from_slice(&bytes[..i]);
                                v
                            })
                            .push(c);
                        i += 3;
                        continue;
                    }
                }
            }
            b'\\' => return Err("backslash in path"),
            b';' => return Err("semicolon in path"),
            0 => return Err("NUL in path"),
            b => b,
        };
        if let Some(out) = decoded.as_mut() {
            out.push(b);
        }
        i += 1;
    }

    // `/` cannot be encoded, so the decoded segments are exactly the raw ones, decoded.
    let check = decoded.as_deref().unwrap_or(bytes);
    if check
        .split(|&b| b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
    {
        return Err("dot segment in path");
    }
    match decoded {
        None => Ok(Cow::Borrowed(escaped)),
        Some(v) => String::from_utf8(v)
            .map(Cow::Owned)
            .map_err(|_| "invalid UTF-8 in path"),
    }
}

/// The value of one hex digit, either case.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
