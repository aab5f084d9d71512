//! A PostgreSQL policy, as JSON handed over by the Caddy module, and its checks.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use serde::Deserialize;

/// How database logins are minted for verified identities.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// Policy name, for logs.
    #[serde(default)]
    pub name: String,
    /// The admin connection (libpq key=value string or URL), without a password.
    pub admin_dsn: String,
    /// Environment variable holding the admin password.
    #[serde(default)]
    pub admin_password_env: Option<String>,
    /// File holding the admin password.
    #[serde(default)]
    pub admin_password_file: Option<String>,
    /// PEM CA certificates the admin server's certificate must chain to (TLS is verified).
    #[serde(default)]
    pub admin_ca_file: Option<String>,
    /// caddy-iap role -> PostgreSQL group roles.
    pub grants: BTreeMap<String, Vec<String>>,
    /// Databases clients may ask for; empty allows any.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Prefix of managed login roles (default `iap_`).
    #[serde(default = "default_prefix")]
    pub role_prefix: String,
    /// The NOLOGIN role marking managed roles (default `caddy_iap_managed`).
    #[serde(default = "default_marker")]
    pub marker_role: String,
    /// Password lifetime, seconds (default 900).
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    /// Longest life of one password, and of a session with `on_expiry: continue` (default 28800).
    #[serde(default = "default_max_ttl")]
    pub max_ttl_secs: u64,
    /// What happens to a session whose token or credential expires.
    #[serde(default)]
    pub on_expiry: OnExpiry,
    /// What the janitor does with expired roles.
    #[serde(default)]
    pub expired_roles: ExpiredRoles,
    /// PBKDF2 iterations of the SCRAM verifiers (default 4096, PostgreSQL's own).
    #[serde(default = "default_iterations")]
    pub scram_iterations: u32,
    /// Timeout of one admin statement, milliseconds (default 5000).
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_ms: u64,
    /// Timeout of connecting to the admin server, milliseconds (default 5000).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

/// What happens to a relayed session when its token or credential expires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnExpiry {
    /// End it.
    #[default]
    Terminate,
    /// Let it run up to `max_ttl`.
    Continue,
}

/// What the janitor does with an expired managed role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExpiredRoles {
    /// NOLOGIN, every grant but the marker revoked.
    #[default]
    Deactivate,
    /// DROP ROLE; deactivate when the role owns objects.
    Drop,
}

fn default_prefix() -> String {
    "iap_".into()
}
fn default_marker() -> String {
    "caddy_iap_managed".into()
}
fn default_ttl() -> u64 {
    900
}
fn default_max_ttl() -> u64 {
    28_800
}
fn default_iterations() -> u32 {
    4096
}
fn default_statement_timeout() -> u64 {
    5000
}
fn default_connect_timeout() -> u64 {
    5000
}

impl fmt::Debug for PolicyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The DSN holds no secret (one is refused); the password fields only name where it is.
        f.debug_struct("PolicyConfig")
            .field("name", &self.name)
            .field("admin_dsn", &self.admin_dsn)
            .field("grants", &self.grants)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

/// A refused policy: which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, e.g. `grants.reader`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres.{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// A checked policy, ready to use.
#[derive(Clone)]
pub(crate) struct Policy {
    pub(crate) admin: postgres::Config,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) grants: BTreeMap<String, Vec<String>>,
    pub(crate) databases: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) marker: String,
    pub(crate) ttl: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) on_expiry: OnExpiry,
    pub(crate) expired_roles: ExpiredRoles,
    pub(crate) iterations: std::num::NonZeroU32,
    pub(crate) statement_timeout: Duration,
}

impl PolicyConfig {
    /// Checks the policy and reads the admin password. No network I/O.
    pub(crate) fn compile(&self) -> Result<Policy, ConfigError> {
        for (field, name) in [
            ("role_prefix", &self.role_prefix),
            ("marker_role", &self.marker_role),
        ] {
            check_identifier(field, name)?;
        }
        if self.role_prefix.len() > 20 {
            return Err(err("role_prefix", "at most 20 bytes"));
        }
        if self.grants.is_empty() {
            return Err(err("grants", "at least one role must be granted something"));
        }
        for (role, groups) in &self.grants {
            if groups.is_empty() {
                return Err(err(format!("grants.{role}"), "grants no group role"));
            }
            for g in groups {
                check_identifier(&format!("grants.{role}"), g)?;
                if *g == self.marker_role {
                    return Err(err(
                        format!("grants.{role}"),
                        "the marker role cannot be granted",
                    ));
                }
            }
        }
        if self.ttl_secs == 0 || self.ttl_secs > self.max_ttl_secs {
            return Err(err("ttl_secs", "must be positive and at most max_ttl_secs"));
        }
        let iterations = std::num::NonZeroU32::new(self.scram_iterations)
            .filter(|n| n.get() <= 100_000)
            .ok_or_else(|| err("scram_iterations", "must be 1..=100000"))?;

        // rustls always verifies the server, so libpq's verify-ca/verify-full are our require.
        let dsn = self
            .admin_dsn
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        let mut admin = postgres::Config::from_str(&dsn)
            .map_err(|e| err("admin_dsn", format!("not a connection string: {e}")))?;
        if admin.get_password().is_some() {
            return Err(err(
                "admin_dsn",
                "contains a password: put it in admin_password_env or admin_password_file",
            ));
        }
        if admin.get_user().is_none() {
            return Err(err("admin_dsn", "names no user"));
        }
        if let Some(password) = self.admin_password()? {
            admin.password(password.as_bytes());
        }
        admin.connect_timeout(Duration::from_millis(self.connect_timeout_ms));
        admin.application_name("caddy-iap");
        let tls = self.admin_tls(&admin)?;
        if tls.is_some() {
            // With a verifier at hand, never fall back to plaintext (sslmode=prefer would).
            admin.ssl_mode(SslMode::Require);
        }
        Ok(Policy {
            admin,
            tls,
            grants: self.grants.clone(),
            databases: self.databases.clone(),
            prefix: self.role_prefix.clone(),
            marker: self.marker_role.clone(),
            ttl: Duration::from_secs(self.ttl_secs),
            max_ttl: Duration::from_secs(self.max_ttl_secs),
            on_expiry: self.on_expiry,
            expired_roles: self.expired_roles,
            iterations,
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
        })
    }

    fn admin_password(&self) -> Result<Option<zeroize::Zeroizing<String>>, ConfigError> {
        match (&self.admin_password_env, &self.admin_password_file) {
            (Some(_), Some(_)) => Err(err(
                "admin_password_env",
                "set admin_password_env or admin_password_file, not both",
            )),
            (Some(var), None) => std::env::var(var)
                .map(|v| Some(zeroize::Zeroizing::new(v)))
                .map_err(|_| err("admin_password_env", format!("${var} is not set"))),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|v| {
                    Some(zeroize::Zeroizing::new(
                        v.trim_end_matches(['\r', '\n']).into(),
                    ))
                })
                .map_err(|e| err("admin_password_file", format!("reading {path}: {e}"))),
            (None, None) => Ok(None),
        }
    }

    /// The admin connection's TLS: none only on this machine; otherwise verified against
    /// `admin_ca_file` (rustls always verifies, so `require` here is what libpq calls
    /// `verify-full`).
    fn admin_tls(
        &self,
        admin: &postgres::Config,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        let local = admin.get_hosts().iter().all(|h| match h {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
        });
        match admin.get_ssl_mode() {
            SslMode::Disable if local => return Ok(None),
            SslMode::Disable => {
                return Err(err(
                    "admin_dsn",
                    "sslmode=disable is only allowed for a database on this machine",
                ));
            }
            SslMode::Prefer if self.admin_ca_file.is_none() && local => return Ok(None),
            SslMode::Prefer if self.admin_ca_file.is_none() => {
                return Err(err(
                    "admin_dsn",
                    "set sslmode=require and admin_ca_file: a connection that may fall back to plaintext is refused",
                ));
            }
            _ => {}
        }
        let Some(path) = &self.admin_ca_file else {
            return Err(err(
                "admin_ca_file",
                "required with TLS: the server certificate is always verified",
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject as _;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| err("admin_ca_file", format!("reading {path}: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| err("admin_ca_file", format!("{path}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| err("admin_ca_file", format!("{path}: {e}")))?;
        }
        if roots.is_empty() {
            return Err(err("admin_ca_file", format!("{path} holds no certificate")));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err("admin_ca_file", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }
}

/// Group roles, the prefix and the marker are plain identifiers: `[A-Za-z_][A-Za-z0-9_-]*`,
/// at most 63 bytes. They are quoted anyway; this keeps configs readable and mistakes visible.
fn check_identifier(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphabetic() || b == b'_' || (i > 0 && (b.is_ascii_digit() || b == b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(err(
            field,
            format!("{name:?} is not a plain PostgreSQL role name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> Result<Policy, ConfigError> {
        serde_json::from_value::<PolicyConfig>(json)
            .unwrap()
            .compile()
    }

    #[test]
    fn checks_name_the_field() {
        let base = serde_json::json!({
            "admin_dsn": "host=127.0.0.1 user=admin dbname=app sslmode=disable",
            "grants": {"reader": ["app_reader"]}
        });
        assert!(policy(base.clone()).is_ok());
        for (patch, field) in [
            (
                serde_json::json!({"admin_dsn": "host=127.0.0.1 user=a password=x"}),
                "admin_dsn",
            ),
            (
                serde_json::json!({"admin_dsn": "host=db.example.com user=a sslmode=disable"}),
                "admin_dsn",
            ),
            (
                serde_json::json!({"admin_dsn": "host=db.example.com user=a sslmode=require"}),
                "admin_ca_file",
            ),
            (
                serde_json::json!({"grants": {"reader": ["app\"; DROP"]}}),
                "grants.reader",
            ),
            (
                serde_json::json!({"grants": {"reader": ["caddy_iap_managed"]}}),
                "grants.reader",
            ),
            (serde_json::json!({"grants": {}}), "grants"),
            (serde_json::json!({"ttl_secs": 100_000}), "ttl_secs"),
            (
                serde_json::json!({"admin_password_env": "IAP_TEST_SURELY_UNSET_VAR"}),
                "admin_password_env",
            ),
        ] {
            let mut v = base.clone();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            let e = policy(v)
                .err()
                .unwrap_or_else(|| panic!("{patch} accepted"));
            assert_eq!(e.field, field, "{patch}: {e}");
        }
    }
}
