//! One login: a token in, a database credential (or a PostgreSQL-shaped refusal) out.

use std::sync::Arc;

use caddy_iap_core::{Engine, Identity, TokenSource};

use crate::config::{ConfigError, OnExpiry, Policy, PolicyConfig};
use crate::provisioner::{
    Credential, Owner, ProvisionError, ProvisionStats, Provisioner, SweepReport,
};
use crate::role_name::role_name;

/// What a client sent at startup, borrowed for one login.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LoginRequest<'a> {
    /// The password message: the token.
    pub token: &'a [u8],
    /// The `user` startup parameter (may be empty).
    pub user: &'a str,
    /// The `database` startup parameter.
    pub database: &'a str,
    /// Mint a new password even if a cached one is valid.
    pub fresh: bool,
    /// Where `token` came from: a browser session's ID token (the access page) or a bearer
    /// token (a client's password, the credentials endpoint).
    pub source: TokenSource,
}

impl<'a> LoginRequest<'a> {
    /// A login request.
    pub fn new(token: &'a [u8], user: &'a str, database: &'a str, fresh: bool) -> Self {
        Self {
            token,
            user,
            database,
            fresh,
            source: TokenSource::Bearer,
        }
    }

    /// The same request for a browser session's ID token.
    pub fn from_session(self) -> Self {
        Self {
            source: TokenSource::Session,
            ..self
        }
    }
}

/// A successful login.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Login {
    /// Who logged in.
    pub identity: Arc<Identity>,
    /// The database credential.
    pub credential: Credential,
    /// When the relayed session must end (Unix seconds); 0 for no limit.
    pub session_deadline: u64,
}

/// A refused login, shaped for a PostgreSQL ErrorResponse.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Refusal {
    /// SQLSTATE: 28P01 for a bad token, 28000 for no access, 08006 when a dependency is down.
    pub sqlstate: &'static str,
    /// For the client; never token bytes.
    pub client_message: String,
    /// For the log: the full reason, with claim values when roles did not match.
    pub log_reason: String,
    /// The verified identity, when the token was valid.
    pub identity: Option<Arc<Identity>>,
}

/// The PostgreSQL gateway of one policy.
pub struct Gateway {
    policy: Policy,
    provisioner: Provisioner,
}

impl Gateway {
    /// Checks the policy and reads the admin password. Does not connect.
    pub fn new(config: &PolicyConfig) -> Result<Self, ConfigError> {
        let policy = config.compile()?;
        Ok(Self {
            provisioner: Provisioner::new(policy.clone()),
            policy,
        })
    }

    /// Verifies the token with `engine`, maps its roles through the policy's grants, and
    /// provisions or re-uses the identity's login role.
    pub fn login(&self, engine: &Engine, req: &LoginRequest<'_>) -> Result<Login, Refusal> {
        let identity = engine.identify_from(req.token, req.source).map_err(|d| {
            let (sqlstate, client_message) = match d.status() {
                503 => (
                    "08006",
                    "caddy-iap cannot check tokens right now (identity provider unavailable); try again".to_owned(),
                ),
                _ => (
                    "28P01",
                    format!("token rejected: {}", d.reason_code().as_str()),
                ),
            };
            Refusal {
                sqlstate,
                client_message,
                log_reason: d.reason.into_owned(),
                identity: None,
            }
        })?;
        let refuse = |sqlstate, client: &str, log: String| Refusal {
            sqlstate,
            client_message: client.to_owned(),
            log_reason: log,
            identity: Some(identity.clone()),
        };
        let role = role_name(
            &self.policy.prefix,
            &identity.issuer,
            &identity.subject,
            identity.email.as_deref(),
        );
        let user_ok = req.user.is_empty()
            || req.user == &*identity.subject
            || identity.email.as_deref() == Some(req.user)
            || req.user == role;
        if !user_ok {
            return Err(refuse(
                "28000",
                "user name does not match the token's identity (use its email, its subject, or leave it out)",
                format!(
                    "startup user {:?} is not the token's identity",
                    truncate(req.user)
                ),
            ));
        }
        if !self.policy.databases.is_empty()
            && !self.policy.databases.iter().any(|d| d == req.database)
        {
            return Err(refuse(
                "28000",
                "this database is not served through caddy-iap",
                format!(
                    "database {:?} is not in the policy's databases",
                    truncate(req.database)
                ),
            ));
        }
        let mut granted: Vec<String> = identity
            .roles
            .iter()
            .filter_map(|r| self.policy.grants.get(&**r))
            .flatten()
            .cloned()
            .collect();
        granted.sort();
        granted.dedup();
        if granted.is_empty() {
            let roles: Vec<&str> = identity.roles.iter().map(|r| &**r).collect();
            return Err(refuse(
                "28000",
                "your roles grant no access to this database",
                format!(
                    "roles [{}] grant no database role; {}",
                    roles.join(","),
                    identity.claims_summary()
                ),
            ));
        }
        let owner = Owner {
            issuer: &identity.issuer,
            subject: &identity.subject,
            email: identity.email.as_deref(),
        };
        let credential = self
            .provisioner
            .credential(&role, &owner, &granted, req.fresh)
            .map_err(|e| {
                let client = match &e {
                    ProvisionError::Unavailable(_) => {
                        "caddy-iap cannot reach the database to provision your role; try again"
                    }
                    ProvisionError::NotManaged { .. } | ProvisionError::OwnerMismatch { .. } => {
                        "your database role name is taken by a role caddy-iap does not manage; ask the DBA"
                    }
                    ProvisionError::Refused { .. } => {
                        "the database refused to provision your role; ask the DBA (see the gateway log)"
                    }
                };
                let sqlstate = match e {
                    ProvisionError::Unavailable(_) => "08006",
                    ProvisionError::Refused { .. } => "58000",
                    _ => "28000",
                };
                refuse(sqlstate, client, e.to_string())
            })?;
        let now = engine.clock().now();
        let session_deadline = match self.policy.on_expiry {
            OnExpiry::Terminate => identity.expires_at.min(credential.expires_at),
            OnExpiry::Continue => now + self.policy.max_ttl.as_secs(),
        };
        Ok(Login {
            identity,
            credential,
            session_deadline,
        })
    }

    /// One janitor pass.
    pub fn sweep(&self) -> Result<SweepReport, ProvisionError> {
        self.provisioner.sweep()
    }

    /// The provisioner, for callers that map identities themselves (and tests).
    pub fn provisioner(&self) -> &Provisioner {
        &self.provisioner
    }

    /// Provisioning counters.
    pub fn stats(&self) -> ProvisionStats {
        self.provisioner.stats()
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The policy holds the admin password: never printed.
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

/// A client-supplied string, cut for a log line.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
