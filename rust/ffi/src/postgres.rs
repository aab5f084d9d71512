//! `iap_pg_gateway`: PostgreSQL logins minted for verified tokens (`caddy-iap-postgres`).
//!
//! A gateway shares its engine (token checks, role rules) and owns the admin connections. A
//! login is Box-owned by the caller and read through a borrowed view; freeing it wipes the
//! password Rust held.

use caddy_iap_postgres::{
    Gateway, Login, LoginRequest, Outcome, PolicyConfig, Refusal, SweepReport,
};

use crate::engine::{EngineBox, iap_engine};
use crate::error::iap_result;
use crate::ffi::{arc_free, arc_ref, box_free, box_into_ptr, box_ref, bytes, write_out};
use crate::gateway::new_gateway;
use crate::slice::{array_ptr, iap_str};

/// A PostgreSQL gateway. Opaque; shared (reference-counted) by all callers.
pub struct iap_pg_gateway {
    _private: [u8; 0],
}

type GatewayBox = crate::gateway::GatewayBox<Gateway>;

/// Builds a gateway for one policy (`policy_json`, UTF-8 JSON) on top of `engine`, which it
/// keeps alive. Does not connect to the database.
///
/// On success writes the gateway to `*gateway_out`; the caller owns it and releases it with
/// [`iap_pg_gateway_free`]. On `IAP_RESULT_INVALID_CONFIG` writes the reason into `err_buf`
/// as [`crate::iap_engine_new`] does.
#[unsafe(no_mangle)]
pub extern "C" fn iap_pg_gateway_new(
    engine: *const iap_engine,
    policy_json: *const u8,
    policy_len: usize,
    err_buf: *mut u8,
    err_buf_len: usize,
    err_written: *mut usize,
    gateway_out: *mut *const iap_pg_gateway,
) -> iap_result {
    ffi_panic_boundary! {
        let build = |json: &[u8], _engine: &EngineBox| {
            let policy = serde_json::from_slice::<PolicyConfig>(json)
                .map_err(|e| format!("postgres policy: {e}"))?;
            Gateway::new(&policy).map_err(|e| e.to_string())
        };
        // SAFETY: the arguments are as this function documents.
        unsafe {
            new_gateway::<Gateway, iap_pg_gateway>(
                engine, policy_json, policy_len, err_buf, err_buf_len, err_written, gateway_out, build,
            )
        }
    }
}

/// Releases the caller's reference to `gateway` (NULL is fine). The admin connections close
/// when the last reference goes. Must not be called twice, nor while a call is in flight.
#[unsafe(no_mangle)]
pub extern "C" fn iap_pg_gateway_free(gateway: *const iap_pg_gateway) {
    ffi_panic_boundary! {
        // SAFETY: per this function's contract, `gateway` is NULL or a live reference.
        unsafe { arc_free::<GatewayBox, iap_pg_gateway>(gateway) }
    }
}

/// One login attempt's facts, passed by value to [`iap_pg_gateway_login`]; the bytes its views
/// point at are borrowed for that call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iap_pg_login_request<'a> {
    /// The password the client sent: its token.
    pub token: iap_str<'a>,
    /// The `user` startup parameter.
    pub user: iap_str<'a>,
    /// The `database` startup parameter.
    pub database: iap_str<'a>,
    /// Mint a new password even if a cached one is still valid.
    pub fresh: bool,
    /// `token` is a browser session's ID token (from `iap_signin_session`), not a bearer token.
    pub session: bool,
}

/// The outcome of one login. Opaque; read with [`iap_pg_login_get`], free with
/// [`iap_pg_login_free`].
pub struct iap_pg_login {
    _private: [u8; 0],
}

/// A borrowed view of a login; every pointer in it is valid until `iap_pg_login_free`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iap_pg_login_view<'a> {
    /// Whether a credential was minted (or re-used).
    pub ok: bool,
    /// Refusal: the SQLSTATE for the client's ErrorResponse.
    pub sqlstate: iap_str<'a>,
    /// Refusal: the message for the client (never token bytes).
    pub client_message: iap_str<'a>,
    /// Refusal: the reason for the log.
    pub log_reason: iap_str<'a>,
    /// The database role to log in as.
    pub role: iap_str<'a>,
    /// Its password. Secret: use it to log in, never log it.
    pub password: iap_str<'a>,
    /// `created`, `reactivated`, `extended` or `reused`.
    pub outcome: iap_str<'a>,
    /// When the password stops working (Unix seconds).
    pub expires_at: u64,
    /// When the relayed session must end (Unix seconds); 0 for no limit.
    pub session_deadline: u64,
    /// Group roles the login role is a member of.
    pub granted: *const iap_str<'a>,
    /// Number of granted roles.
    pub granted_len: usize,
    /// Verified subject; empty when the token was not valid.
    pub subject: iap_str<'a>,
    /// Verified email; may be empty.
    pub email: iap_str<'a>,
    /// Issuer of the verified token; may be empty.
    pub issuer: iap_str<'a>,
    /// The caddy-iap roles the token maps to.
    pub roles: *const iap_str<'a>,
    /// Number of roles.
    pub roles_len: usize,
}

struct LoginBox {
    result: Result<Login, Refusal>,
    granted: Vec<iap_str<'static>>,
    roles: Vec<iap_str<'static>>,
}

impl LoginBox {
    fn new(result: Result<Login, Refusal>) -> Self {
        let identity = match &result {
            Ok(l) => Some(&l.identity),
            Err(r) => r.identity.as_ref(),
        };
        let roles = identity
            .map(|id| id.roles.iter().map(|r| iap_str::detached(r)).collect())
            .unwrap_or_default();
        let granted = match &result {
            Ok(l) => l
                .credential
                .granted
                .iter()
                .map(|g| iap_str::detached(g))
                .collect(),
            Err(_) => Vec::new(),
        };
        Self {
            result,
            granted,
            roles,
        }
    }
}

/// Exchanges a token for a database login: verifies it, maps its roles, and provisions or
/// re-uses the identity's login role. Blocks for the database round trips this needs (none for
/// a re-used credential), each bounded by the policy's timeouts.
///
/// On `IAP_RESULT_OK` writes a login (minted or refused) to `*login_out`; the caller owns it
/// and must free it with [`iap_pg_login_free`]. `request` is passed by value; the bytes its
/// views point at are borrowed for this call only.
#[unsafe(no_mangle)]
pub extern "C" fn iap_pg_gateway_login(
    gateway: *const iap_pg_gateway,
    request: iap_pg_login_request<'_>,
    login_out: *mut *mut iap_pg_login,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: `gateway` is NULL or a live gateway for this call.
        let Some(gw) = (unsafe { arc_ref::<GatewayBox, iap_pg_gateway>(gateway) }) else {
            return iap_result::NullParameter;
        };
        let req = &request;
        if login_out.is_null() {
            return iap_result::NullParameter;
        }
        let text = |s: iap_str<'_>| -> Option<&str> {
            // SAFETY: the caller lends each view's bytes for this call.
            unsafe { bytes(s.data, s.len) }.and_then(|b| std::str::from_utf8(b).ok())
        };
        // SAFETY: the caller lends the token's bytes for this call.
        let Some(token) = (unsafe { bytes(req.token.data, req.token.len) }) else {
            return iap_result::NullParameter;
        };
        let (Some(user), Some(database)) = (text(req.user), text(req.database)) else {
            return iap_result::InvalidParameter;
        };
        let mut request = LoginRequest::new(token, user, database, req.fresh);
        if req.session {
            request = request.from_session();
        }
        let result = gw.gateway.login(&gw.engine.engine, &request);
        let boxed = box_into_ptr::<LoginBox, iap_pg_login>(LoginBox::new(result));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(login_out, boxed) };
        iap_result::Ok
    }
}

/// Writes a view of `login` to `*view_out`. Does nothing when either pointer is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn iap_pg_login_get(
    login: *const iap_pg_login,
    view_out: *mut iap_pg_login_view<'_>,
) {
    ffi_panic_boundary! {
        // SAFETY: `login` is NULL or a live login; the view borrows from it.
        let Some(b) = (unsafe { box_ref::<LoginBox, iap_pg_login>(login) }) else {
            return;
        };
        let identity = match &b.result {
            Ok(l) => Some(&*l.identity),
            Err(r) => r.identity.as_deref(),
        };
        let mut view = iap_pg_login_view {
            ok: b.result.is_ok(),
            sqlstate: iap_str::EMPTY,
            client_message: iap_str::EMPTY,
            log_reason: iap_str::EMPTY,
            role: iap_str::EMPTY,
            password: iap_str::EMPTY,
            outcome: iap_str::EMPTY,
            expires_at: 0,
            session_deadline: 0,
            granted: array_ptr(&b.granted),
            granted_len: b.granted.len(),
            subject: iap_str::from_opt(identity.map(|i| &*i.subject)),
            email: iap_str::from_opt(identity.and_then(|i| i.email.as_deref())),
            issuer: iap_str::from_opt(identity.map(|i| &*i.issuer)),
            roles: array_ptr(&b.roles),
            roles_len: b.roles.len(),
        };
        match &b.result {
            Ok(l) => {
                view.role = iap_str::from_str(&l.credential.role);
                view.password = iap_str::new(l.credential.password.expose().as_bytes());
                view.outcome = iap_str::from_str(outcome_name(l.credential.outcome));
                view.expires_at = l.credential.expires_at;
                view.session_deadline = l.session_deadline;
            }
            Err(r) => {
                view.sqlstate = iap_str::from_str(r.sqlstate);
                view.client_message = iap_str::from_str(&r.client_message);
                view.log_reason = iap_str::from_str(&r.log_reason);
            }
        }
        // SAFETY: `view_out` is NULL or a writable view.
        unsafe { write_out(view_out, view) };
    }
}

/// Frees a login (NULL is fine), wiping the password Rust held. Views of it become invalid.
#[unsafe(no_mangle)]
pub extern "C" fn iap_pg_login_free(login: *mut iap_pg_login) {
    ffi_panic_boundary! {
        // SAFETY: `login` is NULL or came from `iap_pg_gateway_login` and is freed once.
        unsafe { box_free::<LoginBox, iap_pg_login>(login) }
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Created => "created",
        Outcome::Reactivated => "reactivated",
        Outcome::Extended => "extended",
        Outcome::Reused => "reused",
        _ => "other",
    }
}

/// The outcome of one janitor pass. Opaque; read with [`iap_pg_sweep_get`], free with
/// [`iap_pg_sweep_free`].
pub struct iap_pg_sweep {
    _private: [u8; 0],
}

/// A borrowed view of a sweep, valid until `iap_pg_sweep_free`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct iap_pg_sweep_view<'a> {
    /// Roles set to NOLOGIN with their grants revoked.
    pub deactivated: *const iap_str<'a>,
    /// Number of deactivated roles.
    pub deactivated_len: usize,
    /// Roles dropped.
    pub dropped: *const iap_str<'a>,
    /// Number of dropped roles.
    pub dropped_len: usize,
    /// Sessions terminated.
    pub terminated: u32,
    /// Another gateway instance holds the janitor lock; nothing was done.
    pub skipped_locked: bool,
    /// The error that stopped the pass; empty on success.
    pub error: iap_str<'a>,
}

struct SweepBox {
    report: SweepReport,
    error: String,
    deactivated: Vec<iap_str<'static>>,
    dropped: Vec<iap_str<'static>>,
}

/// Runs one janitor pass: expired managed roles are deactivated or dropped and their sessions
/// ended, as the policy says. Only one of several gateways on a database works at a time
/// (PostgreSQL advisory lock). Blocks for the database round trips.
///
/// On `IAP_RESULT_OK` writes the outcome (a database error is reported inside it) to
/// `*sweep_out`; the caller frees it with [`iap_pg_sweep_free`].
#[unsafe(no_mangle)]
pub extern "C" fn iap_pg_gateway_sweep(
    gateway: *const iap_pg_gateway,
    sweep_out: *mut *mut iap_pg_sweep,
) -> iap_result {
    ffi_panic_boundary! {
        // SAFETY: `gateway` is NULL or a live gateway for this call.
        let Some(gw) = (unsafe { arc_ref::<GatewayBox, iap_pg_gateway>(gateway) }) else {
            return iap_result::NullParameter;
        };
        if sweep_out.is_null() {
            return iap_result::NullParameter;
        }
        let (report, error) = match gw.gateway.sweep() {
            Ok(r) => (r, String::new()),
            Err(e) => (SweepReport::default(), e.to_string()),
        };
        let deactivated = report.deactivated.iter().map(|s| iap_str::detached(s)).collect();
        let dropped = report.dropped.iter().map(|s| iap_str::detached(s)).collect();
        let boxed = box_into_ptr::<SweepBox, iap_pg_sweep>(SweepBox { report, error, deactivated, dropped });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(sweep_out, boxed) };
        iap_result::Ok
    }
}

/// Writes a view of `sweep` to `*view_out`. Does nothing when either pointer is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn iap_pg_sweep_get(
    sweep: *const iap_pg_sweep,
    view_out: *mut iap_pg_sweep_view<'_>,
) {
    ffi_panic_boundary! {
        // SAFETY: `sweep` is NULL or a live sweep; the view borrows from it.
        let Some(b) = (unsafe { box_ref::<SweepBox, iap_pg_sweep>(sweep) }) else {
            return;
        };
        let view = iap_pg_sweep_view {
            deactivated: array_ptr(&b.deactivated),
            deactivated_len: b.deactivated.len(),
            dropped: array_ptr(&b.dropped),
            dropped_len: b.dropped.len(),
            terminated: b.report.terminated,
            skipped_locked: b.report.skipped_locked,
            error: iap_str::from_str(&b.error),
        };
        // SAFETY: `view_out` is NULL or a writable view.
        unsafe { write_out(view_out, view) };
    }
}

/// Frees a sweep (NULL is fine).
#[unsafe(no_mangle)]
pub extern "C" fn iap_pg_sweep_free(sweep: *mut iap_pg_sweep) {
    ffi_panic_boundary! {
        // SAFETY: `sweep` is NULL or came from `iap_pg_gateway_sweep` and is freed once.
        unsafe { box_free::<SweepBox, iap_pg_sweep>(sweep) }
    }
}

/// A gateway's provisioning counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct iap_pg_stats {
    /// Login roles created.
    pub created: u64,
    /// Existing managed roles given a new password.
    pub reactivated: u64,
    /// Credentials whose validity was extended.
    pub extended: u64,
    /// Logins that re-used a cached credential without touching the database.
    pub reused: u64,
    /// Provisioning attempts that failed.
    pub failed: u64,
    /// Roles the janitor deactivated or dropped.
    pub swept: u64,
}

/// Writes the gateway's counters to `*out`. Does nothing when either pointer is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn iap_pg_gateway_stats(gateway: *const iap_pg_gateway, out: *mut iap_pg_stats) {
    ffi_panic_boundary! {
        // SAFETY: `gateway` is NULL or a live gateway for this call.
        let Some(gw) = (unsafe { arc_ref::<GatewayBox, iap_pg_gateway>(gateway) }) else {
            return;
        };
        let s = gw.gateway.stats();
        let stats = iap_pg_stats {
            created: s.created,
            reactivated: s.reactivated,
            extended: s.extended,
            reused: s.reused,
            failed: s.failed,
            swept: s.swept,
        };
        // SAFETY: `out` is NULL or writable.
        unsafe { write_out(out, stats) };
    }
}
