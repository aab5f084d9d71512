//! The identity provider's side of the flow: its endpoints (from discovery or configured) and
//! the two back-channel calls, code exchange and refresh.

use std::io::Read;

use serde::Deserialize;
use zeroize::Zeroizing;

/// Largest discovery document or token response read.
const MAX_RESPONSE: u64 = 256 * 1024;

/// Where the provider takes each step.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Endpoints {
    /// The `authorization_endpoint` the browser is sent to.
    pub authorization_endpoint: String,
    /// The `token_endpoint` the gateway exchanges codes at.
    pub token_endpoint: String,
    /// The `end_session_endpoint` for RP-initiated logout, when the provider has one.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// Why the provider could not be used. Never holds a token, code or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// What happened, for the log.
    pub message: String,
    /// The provider refused the grant itself (`invalid_grant`: a code or refresh token that
    /// is spent, revoked or expired), as opposed to being unreachable or answering nonsense.
    pub rejected: bool,
}

impl ProviderError {
    /// An error that is not a refusal of the grant.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            rejected: false,
        }
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The tokens a token endpoint returns.
#[derive(Deserialize)]
pub struct Tokens {
    /// The ID token (required for sign-in; a refresh may omit it).
    #[serde(default)]
    pub id_token: Option<String>,
    /// A refresh token, when the provider issues one.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

/// The client's credentials at the provider.
pub struct Client {
    /// The client id.
    pub id: String,
    /// The client secret (sent with HTTP Basic, `client_secret_basic`).
    pub secret: Zeroizing<String>,
}

/// Reads `<issuer>/.well-known/openid-configuration` and checks that it names `issuer`.
pub fn discover(agent: &ureq::Agent, issuer: &str) -> Result<Endpoints, ProviderError> {
    #[derive(Deserialize)]
    struct Discovery {
        issuer: String,
        #[serde(flatten)]
        endpoints: Endpoints,
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let body = read(agent.get(&url).header("Accept", "application/json").call())
        .map_err(|e| ProviderError::new(format!("discovery {url}: {e}")))?;
    let d: Discovery = serde_json::from_slice(&body)
        .map_err(|e| ProviderError::new(format!("discovery {url}: {e}")))?;
    if d.issuer != issuer {
        return Err(ProviderError::new(format!(
            "discovery {url} names issuer {:?}",
            d.issuer
        )));
    }
    d.endpoints.check()?;
    Ok(d.endpoints)
}

impl Endpoints {
    /// Every endpoint must be https (or http on loopback), as for key sets.
    pub fn check(&self) -> Result<(), ProviderError> {
        let urls = [
            Some(&self.authorization_endpoint),
            Some(&self.token_endpoint),
            self.end_session_endpoint.as_ref(),
        ];
        for url in urls.into_iter().flatten() {
            caddy_iap_core::check_url(url)
                .map_err(|e| ProviderError::new(format!("{url}: {e}")))?;
        }
        Ok(())
    }
}

/// Exchanges an authorization code (with its PKCE verifier) for tokens.
pub fn exchange_code(
    agent: &ureq::Agent,
    endpoints: &Endpoints,
    client: &Client,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<Tokens, ProviderError> {
    token_request(
        agent,
        endpoints,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ],
    )
}

/// Uses a refresh token for a new ID token.
pub fn refresh(
    agent: &ureq::Agent,
    endpoints: &Endpoints,
    client: &Client,
    refresh_token: &str,
) -> Result<Tokens, ProviderError> {
    token_request(
        agent,
        endpoints,
        client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
}

fn token_request(
    agent: &ureq::Agent,
    endpoints: &Endpoints,
    client: &Client,
    form: &[(&str, &str)],
) -> Result<Tokens, ProviderError> {
    use base64::Engine as _;
    // RFC 6749 §2.3.1: both parts form-encoded before Basic.
    let basic = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        crate::flow::form_encode(&client.id),
        crate::flow::form_encode(&client.secret)
    )));
    let authorization = Zeroizing::new(format!("Basic {}", basic.as_str()));
    let response = agent
        .post(&endpoints.token_endpoint)
        .header("Accept", "application/json")
        .header("Authorization", authorization.as_str())
        .send_form(form.iter().copied());
    let body = read(response).map_err(|e| ProviderError {
        rejected: e.ends_with(" invalid_grant"),
        message: format!("token endpoint: {e}"),
    })?;
    serde_json::from_slice(&body)
        .map_err(|_| ProviderError::new("token endpoint: the response is not the expected JSON"))
}

/// The body of a 2xx response, bounded; otherwise the status and the OAuth `error` code (an
/// error body names no secret).
fn read(
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut resp = result.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let mut body = Zeroizing::new(Vec::new());
    resp.body_mut()
        .as_reader()
        .take(MAX_RESPONSE + 1)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    if body.len() as u64 > MAX_RESPONSE {
        return Err("response too large".into());
    }
    if !(200..300).contains(&status) {
        let error = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_default();
        return Err(format!("answered {status} {error}").trim_end().to_owned());
    }
    Ok(body)
}
