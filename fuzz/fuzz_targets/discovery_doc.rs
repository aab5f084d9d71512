//! `parse_discovery` (the OpenID Provider Metadata reader) on arbitrary bytes, for the issuer
//! `https://idp.example.com/`.
//!
//! Properties, when it succeeds:
//! - the document is a JSON object whose `issuer` is the configured one, byte for byte, and
//!   whose `jwks_uri` is what was returned (checked when the whole document is valid JSON: the
//!   members nobody reads are skipped unvalidated);
//! - the key-set URL is `https://`, or `http://` to a loopback host as the HTTP client will
//!   read it (`http::Uri`, which ureq uses): `check_url` and the client never disagree on
//!   where a plain-HTTP fetch goes.
#![no_main]

use caddy_iap_core::danger::parse_discovery;
use caddy_iap_fuzz::ISS;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(jwks_uri) = parse_discovery(ISS, data) else {
        return;
    };
    // serde_json skips the members it does not read without validating them (invalid UTF-8
    // and lone surrogates pass there), so a document can be accepted that is not quite JSON.
    if let Ok(doc) = serde_json::from_slice::<Value>(data) {
        assert_eq!(doc["issuer"].as_str(), Some(ISS));
        assert_eq!(doc["jwks_uri"].as_str(), Some(jwks_uri.as_str()));
    }

    let Ok(uri) = jwks_uri.parse::<http::Uri>() else {
        return; // The client refuses it too.
    };
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            let host = uri.host().unwrap_or("");
            let ip = host.trim_start_matches('[').trim_end_matches(']');
            assert!(
                host == "localhost"
                    || ip
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|a| a.is_loopback()),
                "plain http accepted for {jwks_uri:?}, which the client sends to host {host:?}"
            );
        }
        other => panic!("scheme {other:?} accepted in {jwks_uri:?}"),
    }
});
