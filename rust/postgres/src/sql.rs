//! Every SQL text the gateway runs. Role DDL cannot take bind parameters, so it runs inside
//! PL/pgSQL functions that quote each identifier with `format('%I')` and each literal with
//! `%L`; the functions are created in `pg_temp` on each admin connection (session-local, no
//! schema privilege needed, nothing left in the database) and called with bind parameters only.
//!
//! A role is managed when it is an explicit member of the marker role (`pg_auth_members`, not
//! `pg_has_role`, which is true for a superuser). The gateway touches no other role.

/// Custom SQLSTATEs raised by the functions.
pub(crate) const NOT_MANAGED: &str = "IAP01";
pub(crate) const OTHER_OWNER: &str = "IAP02";

/// Installed on every new admin connection.
pub(crate) const FUNCTIONS: &str = r#"
CREATE FUNCTION pg_temp.iap_managed(role_name text, marker text) RETURNS boolean
LANGUAGE sql STABLE AS $f$
    SELECT EXISTS (
        SELECT 1 FROM pg_auth_members m
        JOIN pg_roles r ON r.oid = m.member
        JOIN pg_roles g ON g.oid = m.roleid
        WHERE r.rolname = role_name AND g.rolname = marker)
$f$;

CREATE FUNCTION pg_temp.iap_activate(role_name text, verifier text, valid_until timestamptz,
                                     grants text[], owner text, marker text) RETURNS text
LANGUAGE plpgsql AS $f$
DECLARE
    existing oid;
    outcome text;
    g text;
BEGIN
    -- One provisioning of a role at a time, across every gateway on this database.
    PERFORM pg_advisory_xact_lock(hashtextextended('caddy-iap:role:' || role_name, 0));
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = marker) THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('caddy-iap:marker:' || marker, 0));
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = marker) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', marker);
        END IF;
    END IF;
    SELECT oid INTO existing FROM pg_roles WHERE rolname = role_name;
    IF existing IS NULL THEN
        EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE '
                       'NOREPLICATION NOBYPASSRLS PASSWORD %L VALID UNTIL %L IN ROLE %I',
                       role_name, verifier, valid_until, marker);
        EXECUTE format('COMMENT ON ROLE %I IS %L', role_name, owner);
        outcome := 'created';
    ELSE
        IF NOT pg_temp.iap_managed(role_name, marker) THEN
            RAISE EXCEPTION 'role "%" exists and is not managed by caddy-iap', role_name
                USING ERRCODE = 'IAP01';
        END IF;
        IF shobj_description(existing, 'pg_authid') IS DISTINCT FROM owner THEN
            RAISE EXCEPTION 'managed role "%" belongs to another identity', role_name
                USING ERRCODE = 'IAP02';
        END IF;
        EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L VALID UNTIL %L',
                       role_name, verifier, valid_until);
        outcome := 'reactivated';
    END IF;
    FOR g IN
        SELECT gr.rolname FROM pg_auth_members m
        JOIN pg_roles gr ON gr.oid = m.roleid
        JOIN pg_roles r ON r.oid = m.member
        WHERE r.rolname = role_name AND gr.rolname <> marker AND gr.rolname <> ALL (grants)
    LOOP
        EXECUTE format('REVOKE %I FROM %I', g, role_name);
    END LOOP;
    FOREACH g IN ARRAY grants LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_auth_members m
            JOIN pg_roles gr ON gr.oid = m.roleid
            JOIN pg_roles r ON r.oid = m.member
            WHERE r.rolname = role_name AND gr.rolname = g)
        THEN
            EXECUTE format('GRANT %I TO %I', g, role_name);
        END IF;
    END LOOP;
    RETURN outcome;
END
$f$;

CREATE FUNCTION pg_temp.iap_extend(role_name text, valid_until timestamptz, marker text)
RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('caddy-iap:role:' || role_name, 0));
    IF NOT pg_temp.iap_managed(role_name, marker)
       OR NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = role_name) THEN
        RETURN false;
    END IF;
    EXECUTE format('ALTER ROLE %I VALID UNTIL %L', role_name, valid_until);
    RETURN true;
END
$f$;

CREATE FUNCTION pg_temp.iap_deactivate(role_name text, marker text, drop_role boolean,
                                       older_than interval) RETURNS text
LANGUAGE plpgsql AS $f$
DECLARE
    g text;
    changed boolean := false;
    terminated integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('caddy-iap:role:' || role_name, 0));
    IF NOT pg_temp.iap_managed(role_name, marker) THEN
        RETURN 'skipped:0';
    END IF;
    -- A role re-activated since the janitor looked is in use again: leave it.
    IF (SELECT rolvaliduntil FROM pg_roles WHERE rolname = role_name) >= now() THEN
        RETURN 'skipped:0';
    END IF;
    -- Login off first, so a terminated client cannot come back.
    IF (SELECT rolcanlogin FROM pg_roles WHERE rolname = role_name) THEN
        EXECUTE format('ALTER ROLE %I NOLOGIN', role_name);
        changed := true;
    END IF;
    FOR g IN
        SELECT gr.rolname FROM pg_auth_members m
        JOIN pg_roles gr ON gr.oid = m.roleid
        JOIN pg_roles r ON r.oid = m.member
        WHERE r.rolname = role_name AND gr.rolname <> marker
    LOOP
        EXECUTE format('REVOKE %I FROM %I', g, role_name);
        changed := true;
    END LOOP;
    SELECT count(*) INTO terminated FROM (
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE usename = role_name AND pid <> pg_backend_pid()
          AND (older_than IS NULL OR backend_start < now() - older_than)) t;
    IF drop_role AND NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = role_name
                                 AND pid <> pg_backend_pid() AND older_than IS NOT NULL) THEN
        BEGIN
            EXECUTE format('DROP ROLE %I', role_name);
            RETURN 'dropped:' || terminated;
        EXCEPTION WHEN dependent_objects_still_exist THEN
            NULL; -- owns objects: stays deactivated
        END;
    END IF;
    IF changed THEN
        RETURN 'deactivated:' || terminated;
    END IF;
    RETURN 'unchanged:' || terminated;
END
$f$;
"#;

/// Provisions (creates or re-activates) a role. Params: name, verifier, ttl seconds (float8),
/// grants, owner, marker. Returns the outcome and the new VALID UNTIL as Unix seconds, both in
/// the database's clock (the one VALID UNTIL is checked against).
pub(crate) const ACTIVATE: &str = "SELECT pg_temp.iap_activate($1, $2, now() + make_interval(secs => $3), $4, $5, $6), \
     extract(epoch FROM now() + make_interval(secs => $3))::float8";

/// Extends a managed role's VALID UNTIL. Params: name, ttl seconds, marker.
pub(crate) const EXTEND: &str = "SELECT pg_temp.iap_extend($1, now() + make_interval(secs => $2), $3), \
     extract(epoch FROM now() + make_interval(secs => $2))::float8";

/// Managed roles the janitor must look at: expired, and still able to log in or still holding
/// sessions (or, when dropping, still there). Param: marker, dropping.
pub(crate) const EXPIRED: &str = "SELECT r.rolname::text FROM pg_roles r \
     WHERE r.rolvaliduntil < now() AND pg_temp.iap_managed(r.rolname, $1) \
       AND (r.rolcanlogin OR $2 OR EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.usename = r.rolname)) \
     ORDER BY 1";

/// Deactivates or drops one role. Params: name, marker, drop, terminate-older-than (seconds, or
/// NULL for every session).
pub(crate) const DEACTIVATE: &str =
    "SELECT pg_temp.iap_deactivate($1, $2, $3, make_interval(secs => $4))";

/// One janitor at a time across every gateway on the database.
pub(crate) const JANITOR_TRY_LOCK: &str =
    "SELECT pg_try_advisory_lock(hashtextextended('caddy-iap:janitor', 0))";
pub(crate) const JANITOR_UNLOCK: &str =
    "SELECT pg_advisory_unlock(hashtextextended('caddy-iap:janitor', 0))";
