//! One request: a token and a Cosmos DB REST request in, a signed upstream request (or a
//! Cosmos-shaped refusal) out.

use std::sync::Arc;

use caddy_iap_core::{Engine, Identity};

use crate::client_auth::token_from_authorization;
use crate::config::{ConfigError, CosmosConfig, Signer};
use crate::permissions::Permissions;
use crate::request::{Flags, Operation, ParsedRequest, RequestFacts, Target, parse};
use crate::signing::http_date;

/// An allowed request, ready to go upstream.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Forward {
    /// Who asked.
    pub identity: Arc<Identity>,
    /// The `Authorization` value for the upstream. Secret-bearing: never log it.
    pub authorization: Arc<str>,
    /// The `x-ms-date` value it was signed with.
    pub date: String,
    /// What was allowed, for the log (`items/read on dbs/app/colls/orders`).
    pub operation: String,
    /// Whether the response is the account document, to be rewritten.
    pub account_document: bool,
    /// The request-kind headers to forward (exactly these, normalized).
    pub flags: Flags,
}

/// A refused request, shaped like a Cosmos DB error.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Refusal {
    /// 400, 401, 403 or 503.
    pub status: u16,
    /// Cosmos's error code (`Unauthorized`, `Forbidden`, `BadRequest`, `ServiceUnavailable`).
    pub code: &'static str,
    /// For the client; never token bytes.
    pub message: String,
    /// For the log: the full reason.
    pub log_reason: String,
    /// The operation asked for, when the request was understood.
    pub operation: String,
    /// The verified identity, when the token was valid.
    pub identity: Option<Arc<Identity>>,
}

impl Refusal {
    /// The JSON body (`{"code": ..., "message": ...}`), as Cosmos DB returns errors.
    pub fn body(&self) -> String {
        serde_json::json!({"code": self.code, "message": self.message}).to_string()
    }
}

/// The Cosmos DB gateway of one policy.
pub struct Gateway {
    permissions: Permissions,
    signer: Signer,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// Checks the policy and reads its secret. Makes no network call (an Entra token is
    /// fetched at the first request).
    pub fn new(config: &CosmosConfig, engine: &Engine) -> Result<Self, ConfigError> {
        Ok(Self {
            permissions: config.permissions()?,
            signer: config.signer(engine.clock().clone())?,
        })
    }

    /// Decides one request: the token in `authorization` is verified with `engine`, the
    /// request is parsed into a Cosmos operation, the caller's roles are checked against the
    /// grants, and an allowed request is signed for the account.
    pub fn authorize(
        &self,
        engine: &Engine,
        authorization: &[u8],
        facts: &RequestFacts<'_>,
    ) -> Result<Forward, Refusal> {
        let refuse = |status, code, message: String, identity: Option<Arc<Identity>>| Refusal {
            status,
            code,
            log_reason: message.clone(),
            message,
            operation: String::new(),
            identity,
        };
        let token = token_from_authorization(authorization)
            .map_err(|e| refuse(401, "Unauthorized", e.reason().to_owned(), None))?;
        let identity = engine.identify(&token).map_err(|d| {
            let (status, code, message) = match d.status() {
                503 => (
                    503,
                    "ServiceUnavailable",
                    "caddy-iap cannot check tokens right now; try again".to_owned(),
                ),
                _ => (
                    401,
                    "Unauthorized",
                    format!("token rejected: {}", d.reason_code().as_str()),
                ),
            };
            Refusal {
                log_reason: d.reason.into_owned(),
                ..refuse(status, code, message, None)
            }
        })?;
        let parsed = parse(facts).map_err(|e| {
            refuse(
                400,
                "BadRequest",
                format!("caddy-iap: {e}"),
                Some(identity.clone()),
            )
        })?;
        let operation = describe(&parsed);
        if !self
            .permissions
            .allows(&identity.roles, parsed.operation, &parsed.target)
        {
            let roles = identity
                .roles
                .iter()
                .map(|r| &**r)
                .collect::<Vec<_>>()
                .join(",");
            let message = match parsed.operation {
                Operation::Management => format!(
                    "caddy-iap: {operation} is a management operation; use the control plane"
                ),
                _ => format!("caddy-iap: roles [{roles}] may not {operation}"),
            };
            return Err(Refusal {
                log_reason: format!("{message} (claims: {})", identity.claims_summary()),
                operation,
                ..refuse(403, "Forbidden", message, Some(identity))
            });
        }
        let date = http_date(engine.clock().now());
        let authorization = match &self.signer {
            Signer::Master(key) => key
                .authorization(
                    facts.method,
                    parsed.resource_type,
                    &parsed.resource_link,
                    &date,
                )
                .into(),
            Signer::Entra(cred) => cred.authorization().map_err(|e| Refusal {
                log_reason: format!("no Entra token for the account: {e}"),
                operation: operation.clone(),
                ..refuse(
                    503,
                    "ServiceUnavailable",
                    "caddy-iap cannot reach the account right now; try again".to_owned(),
                    Some(identity.clone()),
                )
            })?,
        };
        Ok(Forward {
            identity,
            authorization,
            date,
            account_document: parsed.resource_type.is_empty() && parsed.resource_link.is_empty(),
            flags: parsed.flags,
            operation,
        })
    }

    /// How many Entra token requests were made (0 with a master key).
    pub fn token_fetches(&self) -> u64 {
        match &self.signer {
            Signer::Master(_) => 0,
            Signer::Entra(c) => c.fetches(),
        }
    }
}

/// `items/read on dbs/app/colls/orders`, for logs and denials.
fn describe(p: &ParsedRequest) -> String {
    let what = match p.operation {
        Operation::StartupMetadata => "readMetadata".to_owned(),
        Operation::Actions(a) => a.to_string(),
        Operation::Management => format!(
            "write {}",
            if p.resource_type.is_empty() {
                "account"
            } else {
                p.resource_type
            }
        ),
    };
    let on = match &p.target {
        Target::Account => "the account".to_owned(),
        Target::Database(db) => format!("dbs/{db}"),
        Target::Container { db, coll } => format!("dbs/{db}/colls/{coll}"),
    };
    format!("{what} on {on}")
}
