//! The login role name of an identity: readable for the DBA, deterministic, and never the same
//! for two identities.

use aws_lc_rs::digest;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
pub const MAX_NAME_BYTES: usize = 63;

/// Hex characters of the identity hash at the end of every name.
const HASH_CHARS: usize = 10;

/// `<prefix><email or subject, sanitized>_<10 hex of SHA-256(issuer, subject)>`, at most 63
/// bytes. The readable part is lowercased ASCII with anything outside `[a-z0-9_.@-]` turned
/// into `_`; the hash keeps identities apart whatever their claims look like (two issuers, the
/// same email, a subject full of quotes).
pub fn role_name(prefix: &str, issuer: &str, subject: &str, email: Option<&str>) -> String {
    let mut h = digest::Context::new(&digest::SHA256);
    h.update(issuer.as_bytes());
    h.update(&[0]);
    h.update(subject.as_bytes());
    let hash = h.finish();

    let room = MAX_NAME_BYTES.saturating_sub(prefix.len() + 1 + HASH_CHARS);
    let mut readable = String::with_capacity(room);
    for c in email.filter(|e| !e.is_empty()).unwrap_or(subject).chars() {
        if readable.len() >= room {
            break;
        }
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '-') {
            c
        } else {
            '_'
        };
        if !(c == '_' && readable.ends_with('_')) {
            readable.push(c);
        }
    }
    let mut name = String::with_capacity(MAX_NAME_BYTES);
    name.push_str(prefix);
    name.push_str(readable.trim_end_matches('_'));
    name.push('_');
    for b in &hash.as_ref()[..HASH_CHARS / 2] {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str) {
        assert!(
            name.len() <= MAX_NAME_BYTES,
            "{name} is {} bytes",
            name.len()
        );
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.@-".contains(&b)),
            "{name}"
        );
    }

    #[test]
    fn readable_and_deterministic() {
        let n = role_name("iap_", "https://idp", "u1", Some("Alice@Example.com"));
        assert!(n.starts_with("iap_alice@example.com_"), "{n}");
        assert_eq!(
            n,
            role_name("iap_", "https://idp", "u1", Some("alice@example.com"))
        );
        ok(&n);
    }

    #[test]
    fn identities_never_collide() {
        let a = role_name("iap_", "https://idp-a", "u1", Some("alice@example.com"));
        let b = role_name("iap_", "https://idp-b", "u1", Some("alice@example.com"));
        let c = role_name("iap_", "https://idp-a", "u2", Some("alice@example.com"));
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn hostile_claims_stay_safe() {
        for s in [
            "o'hara\"; DROP ROLE postgres; --",
            "zoë.名前@example.com",
            &"x".repeat(500),
            "",
            "___",
            "\0\n\t",
        ] {
            let n = role_name("iap_", "https://idp", s, Some(s));
            ok(&n);
            assert!(n.starts_with("iap_"));
            let n = role_name("iap_", "https://idp", s, None);
            ok(&n);
        }
        let long = role_name("iap_", "i", "s", Some(&"é".repeat(300)));
        ok(&long);
    }
}
