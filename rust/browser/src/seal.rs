//! Sealed cookie values: AES-256-GCM under a key ring.
//!
//! A sealed value is `base64url(key id (4) ‖ nonce (12) ‖ ciphertext ‖ tag (16))`. The key id
//! is the first four bytes of SHA-256 over the key, so opening finds the key without trying
//! each. The purpose (`session`, `login`) is the associated data: a value sealed for one purpose
//! does not open for another. Nonces are random (96 bits); with one key sealing far fewer than
//! 2^32 values before rotation, a collision is negligible.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;

/// Why a key ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub &'static str);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

struct Key {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

/// The cookie keys: the first seals, all open.
pub struct Keyring {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

/// A fresh random 32-byte key, for the first start (stored by the caller, e.g. in Caddy's
/// storage, base64).
pub fn generate_key() -> Result<[u8; 32], KeyError> {
    let mut k = [0u8; 32];
    SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| KeyError("the system random generator failed"))?;
    Ok(k)
}

impl Keyring {
    /// A ring from raw 32-byte keys, newest first.
    pub fn new<K: AsRef<[u8]>>(keys: &[K]) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError("no cookie key"));
        }
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let k = k.as_ref();
            if k.len() != 32 {
                return Err(KeyError("a cookie key must be 32 bytes"));
            }
            let mut id = [0u8; KEY_ID_LEN];
            id.copy_from_slice(&digest(&SHA256, k).as_ref()[..KEY_ID_LEN]);
            let key = LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, k).map_err(|_| KeyError("bad cookie key"))?,
            );
            out.push(Key { id, key });
        }
        Ok(Self {
            keys: out,
            rng: SystemRandom::new(),
        })
    }

    /// Seals `plaintext` for `purpose` with the newest key.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, KeyError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| KeyError("the system random generator failed"))?;
        let mut buf = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        buf.extend_from_slice(&key.id);
        buf.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut body,
            )
            .map_err(|_| KeyError("sealing failed"))?;
        buf.extend_from_slice(&body);
        Ok(URL_SAFE_NO_PAD.encode(buf))
    }

    /// Opens a value sealed for `purpose` by any key of the ring; `None` for anything else
    /// (tampered, truncated, another purpose, an unknown key).
    pub fn open(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < KEY_ID_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (id, rest) = raw.split_at(KEY_ID_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let key = self.keys.iter().find(|k| k.id == id)?;
        let mut body = body.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[[u8; 32]]) -> Keyring {
        Keyring::new(keys).unwrap()
    }

    #[test]
    fn round_trip_and_rotation() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let sealed_old = ring(&[old]).seal("session", b"alice").unwrap();
        // After rotation the new key seals and the old one still opens.
        let rotated = ring(&[new, old]);
        assert_eq!(rotated.open("session", &sealed_old).unwrap(), b"alice");
        let sealed_new = rotated.seal("session", b"bob").unwrap();
        assert_eq!(ring(&[new]).open("session", &sealed_new).unwrap(), b"bob");
        // Once the old key is retired, its values no longer open.
        assert_eq!(ring(&[new]).open("session", &sealed_old), None);
        // Two seals of the same value differ (random nonce).
        assert_ne!(
            rotated.seal("session", b"x").unwrap(),
            rotated.seal("session", b"x").unwrap()
        );
    }

    #[test]
    fn tampered_foreign_and_cross_purpose_values_do_not_open() {
        let k = ring(&[[7u8; 32]]);
        let sealed = k.seal("session", b"{\"sub\":\"alice\"}").unwrap();
        assert_eq!(
            k.open("login", &sealed),
            None,
            "a value opens only for its purpose"
        );
        assert_eq!(
            ring(&[[8u8; 32]]).open("session", &sealed),
            None,
            "a foreign key"
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 1;
            assert_eq!(
                k.open("session", &URL_SAFE_NO_PAD.encode(&raw)),
                None,
                "bit {i}"
            );
            raw[i] ^= 1;
        }
        for junk in [
            "",
            "a",
            "not base64!",
            &sealed[..sealed.len() - 4],
            &format!("{sealed}AA"),
        ] {
            assert_eq!(k.open("session", junk), None, "{junk}");
        }
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(Keyring::new::<[u8; 32]>(&[]).is_err());
        assert!(Keyring::new(&[[0u8; 16]]).is_err());
        assert!(generate_key().is_ok());
        assert_eq!(format!("{:?}", ring(&[[1u8; 32]])), "Keyring(1 keys)");
    }
}
