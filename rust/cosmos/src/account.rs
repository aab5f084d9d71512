//! The account document (`GET /`) rewritten to point at the gateway.
//!
//! SDKs with endpoint discovery on switch to the endpoints this document advertises
//! (`writableLocations` / `readableLocations`). Left alone, a client that can reach the real
//! account would go around the gateway; so every advertised endpoint becomes the gateway's.

use serde_json::Value;

/// Largest account document accepted (real ones are a few KiB).
pub const MAX_ACCOUNT_DOCUMENT: usize = 1 << 20;

/// Why a document could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteError(pub &'static str);

impl std::fmt::Display for RewriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Returns `body` with every advertised endpoint replaced by `gateway_url` (e.g.
/// `https://cosmos.example.com:443/`).
pub fn rewrite_account_document(body: &[u8], gateway_url: &str) -> Result<Vec<u8>, RewriteError> {
    if body.len() > MAX_ACCOUNT_DOCUMENT {
        return Err(RewriteError("account document too large"));
    }
    let mut doc: Value =
        serde_json::from_slice(body).map_err(|_| RewriteError("account document is not JSON"))?;
    let Some(obj) = doc.as_object_mut() else {
        return Err(RewriteError("account document is not a JSON object"));
    };
    let url = Value::String(gateway_url.to_owned());
    if obj.contains_key("databaseAccountEndpoint") {
        obj.insert("databaseAccountEndpoint".to_owned(), url.clone());
    }
    for field in ["writableLocations", "readableLocations"] {
        let Some(list) = obj.get_mut(field) else {
            continue;
        };
        let Some(list) = list.as_array_mut() else {
            return Err(RewriteError("account document locations are not a list"));
        };
        for loc in list {
            let Some(loc) = loc.as_object_mut() else {
                return Err(RewriteError("account document location is not an object"));
            };
            loc.insert("databaseAccountEndpoint".to_owned(), url.clone());
        }
    }
    serde_json::to_vec(&doc).map_err(|_| RewriteError("account document could not be encoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_points_at_the_gateway() {
        let body = br#"{"id":"acct","databaseAccountEndpoint":"https://acct.documents.azure.com:443/",
            "writableLocations":[{"name":"West","databaseAccountEndpoint":"https://acct-west.documents.azure.com:443/"}],
            "readableLocations":[{"name":"West","databaseAccountEndpoint":"https://acct-west.documents.azure.com:443/"},
                                 {"name":"East","databaseAccountEndpoint":"https://acct-east.documents.azure.com:443/"}]}"#;
        let out = rewrite_account_document(body, "https://gw.example:8443/").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("documents.azure.com"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["readableLocations"][1]["databaseAccountEndpoint"],
            "https://gw.example:8443/"
        );
        assert_eq!(v["readableLocations"][1]["name"], "East");
        assert_eq!(v["id"], "acct");
    }

    #[test]
    fn garbage_is_refused_not_passed_through() {
        for body in [
            &b"not json"[..],
            b"[]",
            br#"{"writableLocations":"x"}"#,
            br#"{"readableLocations":[1]}"#,
        ] {
            assert!(rewrite_account_document(body, "https://gw/").is_err());
        }
        let big = vec![b' '; MAX_ACCOUNT_DOCUMENT + 1];
        assert!(rewrite_account_document(&big, "https://gw/").is_err());
    }
}
