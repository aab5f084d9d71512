//! `parse_compact` on arbitrary bytes.
//!
//! Properties, when it succeeds:
//! - the input is within the length cap and is exactly three non-empty segments, not JSON;
//! - every segment is canonical base64url: re-encoding the decoded bytes gives the input back
//!   byte for byte (signing input and signature), so one token has one spelling;
//! - the signing input is the input up to its second dot;
//! - the header's `alg` round-trips through its name, and the claims (when the payload reads as
//!   an object) re-serialized and put back in a token parse again with the same keys.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caddy_iap_core::Alg;
use caddy_iap_core::danger::parse_compact;
use libfuzzer_sys::fuzz_target;

const MAX: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let Ok(jws) = parse_compact(data, MAX) else {
        return;
    };
    assert!(data.len() <= MAX);
    assert_ne!(data.first(), Some(&b'{'));
    let segments: Vec<&[u8]> = data.split(|&b| b == b'.').collect();
    let [header, payload, signature] = segments[..] else {
        panic!("accepted {} segments", segments.len());
    };
    assert!(!header.is_empty() && !payload.is_empty() && !signature.is_empty());
    assert_eq!(jws.signing_input, &data[..header.len() + 1 + payload.len()]);
    assert_eq!(URL_SAFE_NO_PAD.encode(&jws.signature).as_bytes(), signature);
    for segment in [header, payload] {
        let decoded = URL_SAFE_NO_PAD
            .decode(segment)
            .expect("accepted segment decodes");
        assert_eq!(URL_SAFE_NO_PAD.encode(decoded).as_bytes(), segment);
    }
    assert_eq!(jws.header.alg.as_str().parse::<Alg>(), Ok(jws.header.alg));

    // Claims, when the payload is a strict JSON object, survive a round trip through serde_json
    // (compared by key: floats may move by one ulp without serde_json's float_roundtrip feature).
    let Ok(claims) = jws.claims() else {
        return;
    };
    let keys: Vec<String> = claims.keys().map(str::to_owned).collect();
    let reencoded = format!(
        "{}.{}.{}",
        std::str::from_utf8(header).unwrap(),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims.into_serde()).unwrap()),
        std::str::from_utf8(signature).unwrap(),
    );
    let again = parse_compact(reencoded.as_bytes(), usize::MAX)
        .unwrap_or_else(|e| panic!("re-serialized token is refused: {e}"));
    let again_claims = again
        .claims()
        .unwrap_or_else(|e| panic!("re-serialized claims are refused: {e}"));
    assert!(again_claims.keys().eq(keys.iter().map(String::as_str)));
    assert_eq!(again.header, jws.header);
});
