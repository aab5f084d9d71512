//! Provisioning login roles through the admin connection, re-using fresh credentials, and the
//! janitor that retires expired ones.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use postgres::{Client, NoTls};

use crate::config::{ExpiredRoles, OnExpiry, Policy};
use crate::scram::{Secret, random_password, random_salt, verifier};
use crate::sql;

/// Most admin connections open at once.
const MAX_CONNECTIONS: usize = 4;
/// Per-identity locks, by hash of the role name. More than the connection pool: two logins
/// of different identities rarely share one.
const LOCK_SHARDS: usize = 64;
/// Most cached credentials; expired ones are dropped first when full.
const MAX_CACHED: usize = 100_000;

/// Who a credential is for.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// Token issuer.
    pub issuer: &'a str,
    /// Token subject.
    pub subject: &'a str,
    /// Verified email, if any.
    pub email: Option<&'a str>,
}

/// How a credential came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A new login role.
    Created,
    /// An existing managed role got a new password.
    Reactivated,
    /// A cached password had its validity extended.
    Extended,
    /// A cached password, still valid long enough, without touching the database.
    Reused,
}

/// A database login for one identity.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Credential {
    /// The role to log in as.
    pub role: String,
    /// Its password.
    pub password: Secret,
    /// When the password stops working, Unix seconds (the database's clock).
    pub expires_at: u64,
    /// The group roles it is a member of.
    pub granted: Vec<String>,
    /// How it came about.
    pub outcome: Outcome,
}

/// Why no credential could be made. Never holds a password or verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The database could not be reached or did not answer in time.
    Unavailable(String),
    /// A role with the identity's name exists and is not managed by caddy-iap.
    NotManaged {
        /// The role.
        role: String,
    },
    /// The managed role with the identity's name was made for another identity.
    OwnerMismatch {
        /// The role.
        role: String,
    },
    /// The database refused (e.g. a granted group role does not exist).
    Refused {
        /// Its SQLSTATE.
        sqlstate: String,
        /// Its message.
        message: String,
    },
}

impl ProvisionError {
    /// The SQLSTATE a client is sent.
    pub fn sqlstate(&self) -> &str {
        match self {
            Self::Unavailable(_) => "08006",
            Self::NotManaged { .. } | Self::OwnerMismatch { .. } => "28000",
            Self::Refused { sqlstate, .. } => sqlstate,
        }
    }
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "database unavailable: {e}"),
            Self::NotManaged { role } => {
                write!(f, "role {role:?} exists and is not managed by caddy-iap")
            }
            Self::OwnerMismatch { role } => {
                write!(f, "managed role {role:?} belongs to another identity")
            }
            Self::Refused { sqlstate, message } => {
                write!(f, "database refused ({sqlstate}): {message}")
            }
        }
    }
}

impl std::error::Error for ProvisionError {}

fn classify(e: postgres::Error, role: &str) -> ProvisionError {
    match e.code().map(|c| c.code()) {
        Some(sql::NOT_MANAGED) => ProvisionError::NotManaged { role: role.into() },
        Some(sql::OTHER_OWNER) => ProvisionError::OwnerMismatch { role: role.into() },
        Some(code) if !code.starts_with("08") && code != "57014" && code != "55P03" => {
            ProvisionError::Refused {
                sqlstate: code.into(),
                message: e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
            }
        }
        _ => ProvisionError::Unavailable(e.to_string()),
    }
}

/// What one janitor pass did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SweepReport {
    /// Roles set to NOLOGIN with their grants revoked.
    pub deactivated: Vec<String>,
    /// Roles dropped.
    pub dropped: Vec<String>,
    /// Sessions terminated.
    pub terminated: u32,
    /// Another gateway held the janitor lock; nothing was done.
    pub skipped_locked: bool,
}

/// Provisioning counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProvisionStats {
    /// Roles created.
    pub created: u64,
    /// Managed roles given a new password.
    pub reactivated: u64,
    /// Credentials extended.
    pub extended: u64,
    /// Credentials re-used without a database round trip.
    pub reused: u64,
    /// Provisioning attempts that failed.
    pub failed: u64,
    /// Roles deactivated or dropped by the janitor.
    pub swept: u64,
}

#[derive(Clone)]
struct Cached {
    password: Secret,
    expires_at: u64,
    issued_at: u64,
    granted: Vec<String>,
}

/// Mints and retires login roles for one policy. Shared by every connection of the gateway.
pub struct Provisioner {
    policy: Policy,
    pool: Mutex<Pool>,
    pool_ready: Condvar,
    locks: Vec<Mutex<()>>,
    hasher: RandomState,
    cache: Mutex<HashMap<String, Cached>>,
    stats: [AtomicU64; 6],
}

struct Pool {
    idle: Vec<Client>,
    open: usize,
}

enum Stat {
    Created,
    Reactivated,
    Extended,
    Reused,
    Failed,
    Swept,
}

impl Provisioner {
    pub(crate) fn new(policy: Policy) -> Self {
        Self {
            policy,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            pool_ready: Condvar::new(),
            locks: (0..LOCK_SHARDS).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
            cache: Mutex::new(HashMap::new()),
            stats: Default::default(),
        }
    }

    fn count(&self, s: Stat) {
        self.stats[s as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters.
    pub fn stats(&self) -> ProvisionStats {
        let g = |i: Stat| self.stats[i as usize].load(Ordering::Relaxed);
        ProvisionStats {
            created: g(Stat::Created),
            reactivated: g(Stat::Reactivated),
            extended: g(Stat::Extended),
            reused: g(Stat::Reused),
            failed: g(Stat::Failed),
            swept: g(Stat::Swept),
        }
    }

    /// A credential for `role`, member of exactly `granted`: the cached one while it has at
    /// least half its lifetime left, else extended (same password, still younger than
    /// max_ttl), else a new password. `fresh` skips the cache (the upstream refused it).
    pub fn credential(
        &self,
        role: &str,
        owner: &Owner<'_>,
        granted: &[String],
        fresh: bool,
    ) -> Result<Credential, ProvisionError> {
        let shard = self.hasher.hash_one(role) as usize % LOCK_SHARDS;
        let _one_at_a_time = self.locks[shard].lock();
        let now = unix_now();
        let ttl = self.policy.ttl.as_secs();
        let cached = if fresh {
            None
        } else {
            self.cache
                .lock()
                .get(role)
                .filter(|c| c.granted == granted)
                .cloned()
        };
        let result = match cached {
            Some(c) if c.expires_at >= now + ttl / 2 => {
                self.count(Stat::Reused);
                return Ok(Credential {
                    role: role.into(),
                    password: c.password,
                    expires_at: c.expires_at,
                    granted: c.granted,
                    outcome: Outcome::Reused,
                });
            }
            Some(c) if c.issued_at + self.policy.max_ttl.as_secs() >= now + ttl => {
                match self.extend(role) {
                    Ok(Some(expires_at)) => Ok(Credential {
                        role: role.into(),
                        password: c.password,
                        expires_at,
                        granted: c.granted,
                        outcome: Outcome::Extended,
                    }),
                    // Deactivated or taken over meanwhile: start over.
                    Ok(None) => self.mint(role, owner, granted),
                    Err(e) => Err(e),
                }
            }
            _ => self.mint(role, owner, granted),
        };
        match &result {
            Ok(cred) => {
                self.count(match cred.outcome {
                    Outcome::Created => Stat::Created,
                    Outcome::Reactivated => Stat::Reactivated,
                    _ => Stat::Extended,
                });
                let issued_at = match cred.outcome {
                    Outcome::Extended => None,
                    _ => Some(now),
                };
                self.remember(role, cred, issued_at);
            }
            Err(_) => {
                self.count(Stat::Failed);
                self.cache.lock().remove(role);
            }
        }
        result
    }

    fn remember(&self, role: &str, cred: &Credential, issued_at: Option<u64>) {
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED && !cache.contains_key(role) {
            let now = unix_now();
            cache.retain(|_, c| c.expires_at > now);
            if cache.len() >= MAX_CACHED {
                return;
            }
        }
        let issued_at = issued_at
            .or_else(|| cache.get(role).map(|c| c.issued_at))
            .unwrap_or_else(unix_now);
        cache.insert(
            role.into(),
            Cached {
                password: cred.password.clone(),
                expires_at: cred.expires_at,
                issued_at,
                granted: cred.granted.clone(),
            },
        );
    }

    /// A new password for the role, created or re-activated, in one transaction.
    fn mint(
        &self,
        role: &str,
        owner: &Owner<'_>,
        granted: &[String],
    ) -> Result<Credential, ProvisionError> {
        let password = random_password();
        // The expensive part (PBKDF2) before taking a connection.
        let verifier = verifier(
            password.expose().as_bytes(),
            &random_salt(),
            self.policy.iterations,
        );
        let owner_json = serde_json::json!({"iss": owner.issuer, "sub": owner.subject}).to_string();
        let ttl = self.policy.ttl.as_secs_f64();
        let row = self.with_client(role, |c| {
            let mut tx = c.transaction()?;
            let row = tx.query_one(
                sql::ACTIVATE,
                &[
                    &role,
                    &verifier,
                    &ttl,
                    &granted,
                    &owner_json,
                    &self.policy.marker,
                ],
            )?;
            tx.commit()?;
            Ok(row)
        })?;
        let outcome: String = row.get(0);
        let expires_at: f64 = row.get(1);
        Ok(Credential {
            role: role.into(),
            password,
            expires_at: expires_at.floor() as u64,
            granted: granted.to_vec(),
            outcome: if outcome == "created" {
                Outcome::Created
            } else {
                Outcome::Reactivated
            },
        })
    }

    /// Extends a role's VALID UNTIL; `None` when it is no longer an active managed role.
    fn extend(&self, role: &str) -> Result<Option<u64>, ProvisionError> {
        let ttl = self.policy.ttl.as_secs_f64();
        let row = self.with_client(role, |c| {
            let mut tx = c.transaction()?;
            let row = tx.query_one(sql::EXTEND, &[&role, &ttl, &self.policy.marker])?;
            tx.commit()?;
            Ok(row)
        })?;
        let extended: bool = row.get(0);
        let expires_at: f64 = row.get(1);
        Ok(extended.then_some(expires_at.floor() as u64))
    }

    /// One janitor pass; see [`SweepReport`].
    pub fn sweep(&self) -> Result<SweepReport, ProvisionError> {
        let mut report = SweepReport::default();
        let drop = self.policy.expired_roles == ExpiredRoles::Drop;
        let older_than: Option<f64> = match self.policy.on_expiry {
            OnExpiry::Terminate => None,
            OnExpiry::Continue => Some(self.policy.max_ttl.as_secs_f64()),
        };
        self.with_client("janitor", |c| {
            let locked: bool = c.query_one(sql::JANITOR_TRY_LOCK, &[])?.get(0);
            if !locked {
                report.skipped_locked = true;
                return Ok(());
            }
            let pass = (|| {
                let roles: Vec<String> = c
                    .query(sql::EXPIRED, &[&self.policy.marker, &drop])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                for role in roles {
                    let out: String = c
                        .query_one(
                            sql::DEACTIVATE,
                            &[&role, &self.policy.marker, &drop, &older_than],
                        )?
                        .get(0);
                    let (what, n) = out.split_once(':').unwrap_or((&out, "0"));
                    report.terminated += n.parse::<u32>().unwrap_or(0);
                    match what {
                        "deactivated" => report.deactivated.push(role),
                        "dropped" => report.dropped.push(role),
                        _ => continue,
                    }
                    self.count(Stat::Swept);
                }
                Ok(())
            })();
            let unlocked = c.query_one(sql::JANITOR_UNLOCK, &[]);
            pass.and(unlocked.map(|_| ()))
        })?;
        let now = unix_now();
        let mut cache = self.cache.lock();
        for role in report.deactivated.iter().chain(&report.dropped) {
            cache.remove(role);
        }
        cache.retain(|_, c| c.expires_at > now);
        Ok(report)
    }

    /// Runs `f` on a pooled admin connection. A connection that failed is closed rather than
    /// returned to the pool.
    fn with_client<T>(
        &self,
        role: &str,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, ProvisionError> {
        let mut client = self.acquire()?;
        let result = f(&mut client);
        let healthy = match &result {
            Ok(_) => !client.is_closed(),
            // A database refusal leaves the connection usable (the transaction rolled back).
            Err(e) => e.as_db_error().is_some() && !client.is_closed(),
        };
        self.release(healthy.then_some(client));
        result.map_err(|e| classify(e, role))
    }

    fn acquire(&self) -> Result<Client, ProvisionError> {
        let deadline = Instant::now() + self.policy.statement_timeout;
        let mut pool = self.pool.lock();
        loop {
            if let Some(c) = pool.idle.pop() {
                if c.is_closed() {
                    pool.open -= 1;
                    continue;
                }
                return Ok(c);
            }
            if pool.open < MAX_CONNECTIONS {
                pool.open += 1;
                drop(pool);
                return self.connect().inspect_err(|_| {
                    self.pool.lock().open -= 1;
                    self.pool_ready.notify_one();
                });
            }
            if self.pool_ready.wait_until(&mut pool, deadline).timed_out() {
                return Err(ProvisionError::Unavailable(
                    "every admin connection is busy".into(),
                ));
            }
        }
    }

    fn release(&self, client: Option<Client>) {
        let mut pool = self.pool.lock();
        match client {
            Some(c) => pool.idle.push(c),
            None => pool.open -= 1,
        }
        drop(pool);
        self.pool_ready.notify_one();
    }

    fn connect(&self) -> Result<Client, ProvisionError> {
        let p = &self.policy;
        let connected = match &p.tls {
            Some(tls) => p
                .admin
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                    rustls::ClientConfig::clone(tls),
                )),
            None => p.admin.connect(NoTls),
        };
        let mut client = connected.map_err(|e| ProvisionError::Unavailable(e.to_string()))?;
        let setup = format!(
            "SET statement_timeout = {}; SET lock_timeout = {}; {}",
            p.statement_timeout.as_millis(),
            p.statement_timeout.as_millis(),
            sql::FUNCTIONS
        );
        client
            .batch_execute(&setup)
            .map_err(|e| classify(e, "admin"))?;
        Ok(client)
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provisioner").finish_non_exhaustive()
    }
}

// The cache and pool are shared between threads through `Arc`s of the gateway.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Provisioner>();
    shared::<Arc<Provisioner>>();
};
