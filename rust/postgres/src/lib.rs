//! caddy-iap's PostgreSQL gateway: a verified OIDC token becomes a short-lived database login.
//!
//! The flow of one login ([`Gateway::login`]):
//! 1. the token is verified and its roles mapped by the core [`caddy_iap_core::Engine`];
//! 2. the policy's grants turn those roles into PostgreSQL group roles (none: refused);
//! 3. the identity gets a deterministic, length-capped role name ([`role_name()`]);
//! 4. the [`Provisioner`] re-uses a fresh cached credential, or, through its admin
//!    connection, creates or re-activates the role with a new random password stored only as a
//!    SCRAM verifier ([`scram`]), `VALID UNTIL` now + ttl and exactly the granted memberships;
//! 5. the caller (the Go front) logs in upstream with it and relays the session until the
//!    returned deadline. A janitor ([`Gateway::sweep`]) retires expired roles.
//!
//! All SQL is in [`sql`](crate::sql): identifiers are quoted by `format('%I')` in PL/pgSQL,
//! claims travel only as bind parameters.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod login;
mod provisioner;
mod role_name;
pub mod scram;
mod sql;

pub use config::{ConfigError, ExpiredRoles, OnExpiry, PolicyConfig};
pub use login::{Gateway, Login, LoginRequest, Refusal};
pub use provisioner::{
    Credential, Outcome, Owner, ProvisionError, ProvisionStats, Provisioner, SweepReport,
};
pub use role_name::{MAX_NAME_BYTES, role_name};
