//! The browser session: who signed in, when the session ends, and how it is carried in
//! cookies small enough for every browser.

use serde::{Deserialize, Serialize};

use crate::seal::{KeyError, Keyring};

/// The purpose a session cookie is sealed for.
const PURPOSE: &str = "caddy-iap session v1";

/// Browsers keep cookies up to 4096 bytes (name, value and attributes); a chunk's value stays
/// well under that.
pub const MAX_CHUNK: usize = 3800;
/// A session that needs more chunks than this is refused rather than sent.
pub const MAX_CHUNKS: usize = 4;

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The ID token's issuer.
    pub iss: String,
    /// Its subject.
    pub sub: String,
    /// When the session was created (Unix seconds).
    pub created_at: u64,
    /// When it was last used; the idle lifetime counts from here.
    pub seen_at: u64,
    /// The provider's ID token: every request is decided on it, with the same validator,
    /// roles and permissions as a bearer token (audience: the gateway's client id).
    pub id_token: String,
    /// When that token expires (Unix seconds); it is refreshed shortly before.
    pub id_expires_at: u64,
    /// The refresh token, when the provider issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// Lifetimes of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// From sign-in, whatever happens (seconds).
    pub absolute: u64,
    /// Since the last request (seconds).
    pub idle: u64,
}

/// Why a session cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// No cookie, or one that does not open (tampered, foreign key, wrong purpose).
    Invalid,
    /// Past the absolute lifetime.
    Expired,
    /// Not used for longer than the idle lifetime.
    Idle,
    /// The session would not fit in the cookies browsers keep.
    TooLarge,
}

impl Session {
    /// Whether the session may still be used at `now`.
    pub fn check(&self, now: u64, life: Lifetimes) -> Result<(), SessionError> {
        // A clock up to a minute behind the one that created the session (another instance
        // of a cluster) is tolerated; further back is treated as expired.
        if now >= self.created_at.saturating_add(life.absolute) || now + 60 < self.created_at {
            return Err(SessionError::Expired);
        }
        if now >= self.seen_at.saturating_add(life.idle) {
            return Err(SessionError::Idle);
        }
        Ok(())
    }

    /// Seals the session into cookie values (one per chunk, in order).
    pub fn seal(&self, keys: &Keyring) -> Result<Vec<String>, SessionError> {
        let json = serde_json::to_vec(self).map_err(|_| SessionError::Invalid)?;
        let sealed = keys
            .seal(PURPOSE, &json)
            .map_err(|_: KeyError| SessionError::Invalid)?;
        let chunks: Vec<String> = sealed
            .as_bytes()
            .chunks(MAX_CHUNK)
            .map(|c| String::from_utf8(c.to_vec()).expect("base64 is ASCII"))
            .collect();
        if chunks.len() > MAX_CHUNKS {
            return Err(SessionError::TooLarge);
        }
        Ok(chunks)
    }

    /// Opens the session from its cookie values, in chunk order.
    pub fn open<S: AsRef<str>>(keys: &Keyring, chunks: &[S]) -> Result<Self, SessionError> {
        if chunks.is_empty() || chunks.len() > MAX_CHUNKS {
            return Err(SessionError::Invalid);
        }
        let sealed: String = chunks.iter().map(AsRef::as_ref).collect();
        let json = keys.open(PURPOSE, &sealed).ok_or(SessionError::Invalid)?;
        serde_json::from_slice(&json).map_err(|_| SessionError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(token_len: usize) -> Session {
        Session {
            iss: "https://idp.example.com/".into(),
            sub: "alice".into(),
            created_at: 1000,
            seen_at: 1000,
            id_token: "t".repeat(token_len),
            id_expires_at: 1300,
            refresh_token: Some("r".into()),
        }
    }

    #[test]
    fn sealed_round_trip_in_one_or_several_chunks() {
        let keys = Keyring::new(&[[3u8; 32]]).unwrap();
        for len in [10, 5000, 9000] {
            let s = session(len);
            let chunks = s.seal(&keys).unwrap();
            assert!(chunks.iter().all(|c| c.len() <= MAX_CHUNK));
            assert_eq!(chunks.len(), (len / 2800) + 1, "token {len}");
            assert_eq!(Session::open(&keys, &chunks).unwrap(), s);
            // Chunks out of order, missing or from another session do not open.
            if chunks.len() > 1 {
                let mut swapped = chunks.clone();
                swapped.swap(0, 1);
                assert_eq!(Session::open(&keys, &swapped), Err(SessionError::Invalid));
                assert_eq!(
                    Session::open(&keys, &chunks[1..]),
                    Err(SessionError::Invalid)
                );
            }
        }
        assert_eq!(session(20_000).seal(&keys), Err(SessionError::TooLarge));
        assert_eq!(
            Session::open::<&str>(&keys, &[]),
            Err(SessionError::Invalid)
        );
    }

    #[test]
    fn a_login_cookie_is_not_a_session() {
        let keys = Keyring::new(&[[3u8; 32]]).unwrap();
        let json = serde_json::to_vec(&session(10)).unwrap();
        let sealed_as_login = keys.seal("caddy-iap login v1", &json).unwrap();
        assert_eq!(
            Session::open(&keys, &[sealed_as_login]),
            Err(SessionError::Invalid)
        );
    }

    #[test]
    fn absolute_and_idle_lifetimes() {
        let life = Lifetimes {
            absolute: 3600,
            idle: 600,
        };
        let mut s = session(1);
        assert_eq!(s.check(1000, life), Ok(()));
        assert_eq!(s.check(1599, life), Ok(()));
        assert_eq!(s.check(1600, life), Err(SessionError::Idle));
        s.seen_at = 4400;
        assert_eq!(
            s.check(4650, life),
            Err(SessionError::Expired),
            "idle renewed, absolute still ends it"
        );
        assert_eq!(
            s.check(941, life),
            Ok(()),
            "another instance's clock a minute behind"
        );
        assert_eq!(
            s.check(939, life),
            Err(SessionError::Expired),
            "a clock further before creation"
        );
    }
}
