//! SCRAM-SHA-256 verifiers, as PostgreSQL stores them in `pg_authid.rolpassword`, and the random
//! passwords they are made from.
//!
//! `ALTER ROLE … PASSWORD '<verifier>'` stores an already-hashed string as is, so the plaintext
//! never appears in SQL or in the server's logs; the gateway keeps it in memory to log in.

use std::fmt;
use std::num::NonZeroU32;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// A minted password. Wiped from memory when dropped; its `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// The plaintext, to log in with. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A new password: 256 random bits, base64url (43 characters).
pub fn random_password() -> Secret {
    let mut bytes = Zeroizing::new([0u8; 32]);
    fill(&mut *bytes);
    Secret(Zeroizing::new(URL_SAFE_NO_PAD.encode(*bytes)))
}

/// A new 16-byte salt.
pub fn random_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    fill(&mut salt);
    salt
}

fn fill(buf: &mut [u8]) {
    // The system RNG failing leaves nothing safe to do: no password can be made without it.
    SystemRandom::new()
        .fill(buf)
        .expect("the system random number generator failed");
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` for `password` (RFC 5802/7677).
pub fn verifier(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> String {
    let mut salted = Zeroizing::new([0u8; 32]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut *salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &*salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3 (password `pencil`), as in PostgreSQL's docs: reproduces the RFC's values.
    #[test]
    fn rfc7677_vector() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        assert_eq!(
            verifier(b"pencil", &salt, NonZeroU32::new(4096).unwrap()),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    #[test]
    fn passwords_are_random_and_redacted() {
        let (a, b) = (random_password(), random_password());
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(!format!("{a:?}").contains(a.expose()));
        assert_ne!(random_salt(), random_salt());
    }
}
