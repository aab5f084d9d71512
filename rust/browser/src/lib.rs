//! caddy-iap's browser sign-in: the pieces of the OpenID Connect authorization code flow that
//! must be right for a login to be safe, and the sealed cookies that carry it.
//!
//! - [`seal`]: AES-256-GCM sealing under a rotatable key ring (the newest key seals, every key
//!   opens), with the cookie's purpose bound in as associated data so a login cookie can never
//!   be replayed as a session.
//! - [`pkce`]: S256 code verifiers and challenges, and the random `state` and `nonce`.
//! - [`flow`]: the authorization request URL, and the return URL check that stops open
//!   redirects.
//! - [`session`]: the session a cookie holds, with absolute and idle lifetimes, split across
//!   cookies small enough for every browser.
//! - [`cookies`]: reading our cookies and writing `Set-Cookie` values.
//! - [`provider`]: the provider's endpoints, code exchange and refresh.
//! - [`signin`]: [`SignIn`], the whole flow for one site, as the HTTP handler uses it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cookies;
pub mod flow;
pub mod pkce;
pub mod provider;
pub mod seal;
pub mod session;
pub mod signin;

pub use signin::{CallbackError, Redirect, SessionState, SignIn, SignInConfig};
