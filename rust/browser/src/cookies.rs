//! Reading our cookies from a `Cookie` header and writing `Set-Cookie` values.
//!
//! Every cookie is `Secure; HttpOnly; SameSite=Lax; Path=/` and host-only (no `Domain`), which
//! is what the default `__Host-` name prefix makes browsers enforce: a sibling subdomain or
//! a plain-HTTP page cannot set or overwrite them.

/// What a `Cookie` header holds under one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not there.
    Missing,
    /// Exactly once.
    Found(&'a str),
    /// More than once: refused rather than one picked (cookie tossing).
    Ambiguous,
}

/// Finds `name` in `Cookie` header values (a request may carry several `Cookie` lines).
pub fn find<'a, S: AsRef<str>>(headers: &'a [S], name: &str) -> Lookup<'a> {
    let mut found = Lookup::Missing;
    for pair in headers.iter().flat_map(|h| h.as_ref().split(';')) {
        let Some((n, v)) = trim(pair).split_once('=') else {
            continue;
        };
        if n == name {
            if found != Lookup::Missing {
                return Lookup::Ambiguous;
            }
            found = Lookup::Found(v.trim_matches('"'));
        }
    }
    found
}

/// The names of the cookies in `Cookie` header values.
pub fn names<S: AsRef<str>>(headers: &[S]) -> impl Iterator<Item = &str> {
    headers
        .iter()
        .flat_map(|h| h.as_ref().split(';'))
        .filter_map(|pair| Some(trim(pair).split_once('=')?.0))
}

/// A `Set-Cookie` value: `max_age` seconds, or 0 to delete the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax")
}

/// Trims ASCII spaces and tabs, as Go's net/http does (so both sides read the same names).
fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Whether `name` may be a cookie name we set (RFC 6265 token, no separators).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$&'*+^`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_one_value_across_header_lines() {
        let h = ["a=1; __Host-s=xyz", "b=2"];
        assert_eq!(find(&h, "__Host-s"), Lookup::Found("xyz"));
        assert_eq!(find(&h, "b"), Lookup::Found("2"));
        assert_eq!(find(&h, "c"), Lookup::Missing);
        assert_eq!(
            find(&h, "__Host"),
            Lookup::Missing,
            "a prefix is not a name"
        );
        assert_eq!(find(&["s=1; s=2"], "s"), Lookup::Ambiguous);
        assert_eq!(find(&["s=1", "s=1"], "s"), Lookup::Ambiguous);
        assert_eq!(find::<&str>(&[], "s"), Lookup::Missing);
        assert_eq!(find(&["junk; s=\"q\""], "s"), Lookup::Found("q"));
    }

    #[test]
    fn set_cookie_has_every_attribute() {
        assert_eq!(
            set_cookie("__Host-s", "v", 60),
            "__Host-s=v; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Lax"
        );
        assert!(valid_name("__Host-caddy-iap"));
        for bad in ["", "a b", "a;b", "a=b", "é", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
