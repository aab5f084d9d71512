//! The authorization request, and where a user may be sent back to after signing in.

use serde::{Deserialize, Serialize};

/// What the login cookie carries between the redirect to the provider and the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// The `state` sent to the provider; the callback must return it.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// Where to go after signing in (checked by [`safe_return_path`]).
    pub return_to: String,
    /// When the login started (Unix seconds); a callback after the login lifetime is refused.
    pub started_at: u64,
}

/// The parameters of one authorization request.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizeRequest<'a> {
    /// The provider's `authorization_endpoint`.
    pub endpoint: &'a str,
    /// This gateway's client id.
    pub client_id: &'a str,
    /// The callback URL registered with the provider.
    pub redirect_uri: &'a str,
    /// Space-separated scopes (`openid` is added when missing).
    pub scope: &'a str,
    /// `state`.
    pub state: &'a str,
    /// `nonce`.
    pub nonce: &'a str,
    /// The S256 PKCE challenge.
    pub code_challenge: &'a str,
}

/// The URL to send the browser to.
pub fn authorize_url(r: &AuthorizeRequest<'_>) -> String {
    let scope = if r.scope.split(' ').any(|s| s == "openid") {
        r.scope.to_owned()
    } else if r.scope.is_empty() {
        "openid".to_owned()
    } else {
        format!("openid {}", r.scope)
    };
    let mut url = r.endpoint.to_owned();
    url.push(if r.endpoint.contains('?') { '&' } else { '?' });
    let params = [
        ("response_type", "code"),
        ("client_id", r.client_id),
        ("redirect_uri", r.redirect_uri),
        ("scope", &scope),
        ("state", r.state),
        ("nonce", r.nonce),
        ("code_challenge", r.code_challenge),
        ("code_challenge_method", "S256"),
    ];
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            url.push('&');
        }
        url.push_str(k);
        url.push('=');
        url.push_str(&form_encode(v));
    }
    url
}

/// `application/x-www-form-urlencoded` escaping of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The path to return to after signing in, when `requested` is a path on this same site; `/`
/// otherwise. Only an absolute path is accepted: not a URL with a scheme or host, not a
/// protocol-relative `//host` (nor `/\host`, which browsers read the same way), nothing with
/// control characters or backslashes, at most 1024 bytes (it rides in the login cookie).
pub fn safe_return_path(requested: &str) -> &str {
    let ok = requested.starts_with('/')
        && !requested.starts_with("//")
        && requested.len() <= 1024
        && !requested.bytes().any(|b| b == b'\\' || b.is_ascii_control())
        && !requested.to_ascii_lowercase().contains("/%2f") // decoded into `//` by some frameworks
        && !requested[1..].starts_with("%2F")
        && !requested[1..].starts_with("%2f")
        && !requested[1..].starts_with("%5C")
        && !requested[1..].starts_with("%5c");
    if ok { requested } else { "/" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_url_has_every_parameter_escaped() {
        let url = authorize_url(&AuthorizeRequest {
            endpoint: "https://idp.example.com/auth?tenant=a",
            client_id: "my app",
            redirect_uri: "https://app.example.com/.iap/callback",
            scope: "email profile",
            state: "s1",
            nonce: "n1",
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        });
        assert_eq!(
            url,
            "https://idp.example.com/auth?tenant=a&response_type=code&client_id=my+app\
             &redirect_uri=https%3A%2F%2Fapp.example.com%2F.iap%2Fcallback&scope=openid+email+profile\
             &state=s1&nonce=n1&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
        );
    }

    #[test]
    fn only_same_site_paths_are_returned_to() {
        for ok in ["/", "/items/1?x=2#frag", "/a/b/", "/%2e%2e/x", "/caf%C3%A9"] {
            assert_eq!(safe_return_path(ok), ok);
        }
        for bad in [
            "",
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example/",
            "\\\\evil.example",
            "/%2Fevil.example",
            "/%5cevil.example",
            "/a/%2f/evil",
            "javascript:alert(1)",
            "evil.example",
            "/a\r\nSet-Cookie: x=1",
            "/a\tb",
            &format!("/{}", "a".repeat(3000)),
        ] {
            assert_eq!(safe_return_path(bad), "/", "{bad:?}");
        }
    }
}
