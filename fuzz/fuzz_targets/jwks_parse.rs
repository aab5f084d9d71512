//! `parse_jwks` on arbitrary bytes.
//!
//! Properties, when it succeeds:
//! - the document is a JSON object with a `keys` array; every entry (up to the 100-entry cap)
//!   becomes exactly one key or one skip line, in order, plus one line for the rest;
//! - a usable key came from a `kty` RSA/EC/OKP entry without private members, carries that
//!   entry's `kid` and, when the entry names one, its `alg`;
//! - no key verifies a signature made of the input bytes;
//! - `Debug` of a key and the skip lines carry no key material.
#![no_main]

use caddy_iap_core::Alg;
use caddy_iap_core::danger::parse_jwks;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MAX_KEYS: usize = 100;
const PRIVATE: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];
const MATERIAL: [&str; 10] = ["n", "e", "x", "y", "d", "p", "q", "dp", "dq", "k"];

fuzz_target!(|data: &[u8]| {
    let Ok(set) = parse_jwks(data) else {
        return;
    };
    let doc: Value = serde_json::from_slice(data).expect("accepted key set is JSON");
    let entries = doc["keys"]
        .as_array()
        .expect("accepted key set has a keys array");
    let looked_at = entries.len().min(MAX_KEYS);
    assert_eq!(
        set.keys.len() + set.skipped.len(),
        looked_at + usize::from(entries.len() > MAX_KEYS)
    );

    let skipped: Vec<usize> = set
        .skipped
        .iter()
        .filter_map(|line| line.strip_prefix("keys[")?.split(']').next()?.parse().ok())
        .collect();
    let used = (0..looked_at).filter(|i| !skipped.contains(i));
    for (key, i) in set.keys.iter().zip(used) {
        let entry = entries[i].as_object().expect("usable entry is an object");
        assert!(matches!(entry["kty"].as_str(), Some("RSA" | "EC" | "OKP")));
        assert!(
            PRIVATE.iter().all(|m| !entry.contains_key(*m)),
            "keys[{i}] has private members"
        );
        assert_eq!(
            key.kid.as_deref(),
            entry.get("kid").and_then(Value::as_str),
            "keys[{i}]"
        );
        if let Some(alg) = entry.get("alg") {
            // The JWK's alg, read as the engine reads names ("Ed25519" is RFC 9864's
            // fully-specified name for EdDSA over Ed25519).
            let named = alg.as_str().and_then(|a| a.parse::<Alg>().ok());
            assert_eq!(Some(key.alg), named, "keys[{i}]");
        }
        assert!(
            key.verify(key.alg, data, &data[..data.len().min(1024)])
                .is_err()
        );
        let debug = format!("{key:?}");
        for s in material(entry) {
            assert!(!debug.contains(s), "Debug shows key material");
        }
    }
    for (line, &i) in set.skipped.iter().zip(&skipped) {
        if let Some(entry) = entries[i].as_object() {
            for s in material(entry) {
                assert!(!line.contains(s), "a skip line shows key material: {line}");
            }
        }
    }
});

/// The entry's key material strings worth looking for: 16+ characters without a space (so not
/// a piece of an error message), and not also part of a member that may be quoted (`kid`, `kty`),
/// as logs quote it: control characters dropped, so `"ab\u007fcd"` shows as `abcd`.
fn material(entry: &serde_json::Map<String, Value>) -> Vec<&str> {
    let quotable: Vec<String> = entry
        .iter()
        .filter(|(name, _)| !MATERIAL.contains(&name.as_str()))
        .filter_map(|(_, v)| v.as_str())
        .flat_map(|v| {
            [
                v.to_owned(),
                v.chars().filter(|c| !c.is_control()).collect(),
            ]
        })
        .collect();
    MATERIAL
        .iter()
        .filter_map(|name| entry.get(*name)?.as_str())
        .filter(|s| s.len() >= 16 && !s.contains(' ') && !quotable.iter().any(|q| q.contains(s)))
        .collect()
}
