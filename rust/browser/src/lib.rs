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
//!
//! Work in progress (issue 5): the token exchange and the Caddy handler come next.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod flow;
pub mod pkce;
pub mod seal;
pub mod session;
