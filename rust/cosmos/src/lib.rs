//! caddy-iap's Azure Cosmos DB gateway: clients bring OIDC tokens, never the account key.
//!
//! The flow of one request ([`Gateway::authorize`]):
//! 1. the caller's token is read from the `Authorization` header an SDK sends with a token
//!    credential (`type=aad&ver=1.0&sig=<jwt>`, raw or URL-encoded) or `Bearer <jwt>`
//!    ([`client_auth`]), and verified by the core [`caddy_iap_core::Engine`];
//! 2. the REST request is parsed into a Cosmos operation and resource exactly as the service
//!    does ([`request`]); unknown shapes are refused;
//! 3. the caller's roles are checked against grants in Cosmos's data-action vocabulary
//!    ([`permissions`]);
//! 4. an allowed request is signed for the account with a fresh `x-ms-date`: the master-key
//!    HMAC ([`signing`]) or the gateway's own Entra token ([`entra`]).
//!
//! The account document is rewritten so SDKs with endpoint discovery stay on the gateway
//! ([`account`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod account;
pub mod client_auth;
mod config;
pub mod entra;
mod gateway;
mod percent;
pub mod permissions;
pub mod request;
pub mod signing;

pub use account::rewrite_account_document;
pub use config::{
    ConfigError, CosmosConfig, DEFAULT_IMDS, DEFAULT_SCOPE, EntraConfig, GrantConfig,
};
pub use gateway::{Forward, Gateway, Refusal};
pub use permissions::Actions;
pub use request::{Flags, Operation, ParsedRequest, RequestFacts, Target, parse};
