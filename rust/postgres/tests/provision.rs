//! The provisioner against a real PostgreSQL, started by this test binary (no mocks): what it
//! creates, what it refuses to touch, and what it leaves behind when the database says no.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use caddy_iap_postgres::{Gateway, Owner, PolicyConfig, ProvisionError};

/// A throwaway cluster for this test binary. PostgreSQL refuses to run as root; then it runs as
/// the `postgres` user through runuser.
struct Cluster {
    port: u16,
    _watchdog: Child,
}

fn bin(name: &str) -> PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (/usr/lib/postgresql): .ci/run installs it")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found under /usr/lib/postgresql"))
}

fn as_postgres() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn command(program: &Path) -> Command {
    if as_postgres() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("iap-pg-rust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if as_postgres() {
            assert!(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let data = dir.join("data");
        let out = command(&bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--auth-host=scram-sha-256", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Statics are never dropped: a watchdog stops the server when this test process exits.
        let server = format!(
            "{} -D {} -k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c log_statement=all 2>>{}/server.log",
            bin("postgres").display(),
            data.display(),
            dir.display(),
            dir.display()
        );
        let watchdog = format!(
            "{server} & pid=$!; while [ -d /proc/{parent} ]; do sleep 0.5; done; kill -TERM $pid; wait; rm -rf {dir}",
            parent = std::process::id(),
            dir = dir.display()
        );
        let child = command(Path::new("/bin/sh"))
            .args(["-c", &watchdog])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let c = Cluster { port, _watchdog: child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while postgres::Client::connect(&dsn(port), postgres::NoTls).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            thread::sleep(Duration::from_millis(100));
        }
        let mut su = superuser(port);
        su.batch_execute(
            "CREATE ROLE app_reader NOLOGIN; CREATE ROLE app_writer NOLOGIN; \
             CREATE ROLE someone_else LOGIN;",
        )
        .unwrap();
        c
    })
}

/// The superuser, over the Unix socket (trusted); TCP logins need a password.
fn dsn(port: u16) -> String {
    let dir = std::env::temp_dir().join(format!("iap-pg-rust-{}", std::process::id()));
    format!(
        "host={} port={port} user=postgres dbname=postgres",
        dir.display()
    )
}

fn superuser(port: u16) -> postgres::Client {
    postgres::Client::connect(&dsn(port), postgres::NoTls).unwrap()
}

fn gateway_policy(port: u16, extra: serde_json::Value) -> PolicyConfig {
    let mut v = serde_json::json!({
        "admin_dsn": dsn(port),
        "grants": {"reader": ["app_reader"], "writer": ["app_reader", "app_writer"]},
        "ttl_secs": 60
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn provisioner(extra: serde_json::Value) -> Arc<Gateway> {
    let c = cluster();
    Arc::new(Gateway::new(&gateway_policy(c.port, extra)).unwrap())
}

fn owner(sub: &str) -> Owner<'_> {
    Owner {
        issuer: "https://idp.test",
        subject: sub,
        email: None,
    }
}

fn memberships(su: &mut postgres::Client, role: &str) -> Vec<String> {
    su.query(
        "SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
         JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1 ORDER BY 1",
        &[&role],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn login(port: u16, role: &str, password: &str) -> Result<postgres::Client, postgres::Error> {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(role)
        .password(password)
        .dbname("postgres")
        .connect(postgres::NoTls)
}

#[test]
fn minted_role_logs_in_with_exactly_its_grants() {
    let c = cluster();
    let p = provisioner(serde_json::json!({}));
    let reader = vec!["app_reader".to_owned()];
    let cred = p
        .provisioner()
        .credential("iap_t1_aaaa", &owner("t1"), &reader, false)
        .unwrap();
    let mut conn = login(c.port, "iap_t1_aaaa", cred.password.expose()).unwrap();
    let who: String = conn
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(who, "iap_t1_aaaa");
    let mut su = superuser(c.port);
    assert_eq!(
        memberships(&mut su, "iap_t1_aaaa"),
        ["app_reader", "caddy_iap_managed"]
    );
    let stored: String = su
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'iap_t1_aaaa'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$4096:") && !stored.contains(cred.password.expose()));
    // Every statement is logged (log_statement=all): the verifier may be, the password never.
    let log = std::fs::read_to_string(
        std::env::temp_dir().join(format!("iap-pg-rust-{}/server.log", std::process::id())),
    )
    .unwrap();
    assert!(
        log.contains("iap_activate"),
        "statements are not being logged"
    );
    assert!(!log.contains(cred.password.expose()));

    // Re-used without a database round trip; fresh mints another password; new grants swap.
    let again = p
        .provisioner()
        .credential("iap_t1_aaaa", &owner("t1"), &reader, false)
        .unwrap();
    assert_eq!(again.password, cred.password);
    assert_eq!(p.stats().reused, 1);
    let fresh = p
        .provisioner()
        .credential("iap_t1_aaaa", &owner("t1"), &reader, true)
        .unwrap();
    assert_ne!(fresh.password, cred.password);
    assert!(login(c.port, "iap_t1_aaaa", cred.password.expose()).is_err());
    p.provisioner()
        .credential(
            "iap_t1_aaaa",
            &owner("t1"),
            &["app_writer".to_owned()],
            false,
        )
        .unwrap();
    assert_eq!(
        memberships(&mut su, "iap_t1_aaaa"),
        ["app_writer", "caddy_iap_managed"]
    );
}

#[test]
fn roles_it_does_not_manage_are_never_touched() {
    let c = cluster();
    let p = provisioner(serde_json::json!({}));
    let e = p
        .provisioner()
        .credential(
            "someone_else",
            &owner("x"),
            &["app_reader".to_owned()],
            false,
        )
        .unwrap_err();
    assert_eq!(
        e,
        ProvisionError::NotManaged {
            role: "someone_else".into()
        }
    );
    let mut su = superuser(c.port);
    assert!(memberships(&mut su, "someone_else").is_empty());

    // A managed role made for one identity is not handed to another.
    p.provisioner()
        .credential(
            "iap_owned_bbbb",
            &owner("first"),
            &["app_reader".to_owned()],
            false,
        )
        .unwrap();
    let other = provisioner(serde_json::json!({}));
    let e = other
        .provisioner()
        .credential(
            "iap_owned_bbbb",
            &owner("second"),
            &["app_reader".to_owned()],
            false,
        )
        .unwrap_err();
    assert!(matches!(e, ProvisionError::OwnerMismatch { .. }), "{e}");
}

#[test]
fn a_refused_grant_leaves_no_role_behind() {
    let c = cluster();
    let p = provisioner(serde_json::json!({}));
    let e = p
        .provisioner()
        .credential(
            "iap_nogroup_cccc",
            &owner("n"),
            &["no_such_group".to_owned()],
            false,
        )
        .unwrap_err();
    assert!(e.to_string().contains("no_such_group"), "{e}");
    let n: i64 = superuser(c.port)
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'iap_nogroup_cccc'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn hostile_owners_are_bind_parameters() {
    let c = cluster();
    let p = provisioner(serde_json::json!({}));
    for (i, sub) in [
        "o'hara\"; DROP ROLE postgres; --",
        "zoë 名前 \\ $$ %I",
        &"z".repeat(500),
    ]
    .iter()
    .enumerate()
    {
        let role = format!("iap_hostile_{i}");
        p.provisioner()
            .credential(&role, &owner(sub), &["app_reader".to_owned()], false)
            .unwrap();
    }
    let n: i64 = superuser(c.port)
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname IN ('postgres', 'iap_hostile_0', 'iap_hostile_1', 'iap_hostile_2')", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
}

#[test]
fn parallel_logins_provision_each_role_once() {
    let c = cluster();
    // Two gateways on one database, as two Caddy instances would be.
    let a = provisioner(serde_json::json!({}));
    let b = provisioner(serde_json::json!({}));
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let p = if i % 2 == 0 { a.clone() } else { b.clone() };
            thread::spawn(move || {
                let role = format!("iap_par_{}", i % 10);
                let sub = format!("par-{}", i % 10);
                p.provisioner()
                    .credential(&role, &owner(&sub), &["app_reader".to_owned()], false)
                    .map(|c| c.outcome)
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.created + sb.created, 10, "{sa:?} {sb:?}");
    assert_eq!(sa.failed + sb.failed, 0);
    let n: i64 = superuser(c.port)
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'iap\\_par\\_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 10);
}

#[test]
fn janitor_deactivates_or_drops_expired_roles_and_ends_their_sessions() {
    let c = cluster();
    let p = provisioner(serde_json::json!({"ttl_secs": 1, "max_ttl_secs": 60}));
    let cred = p
        .provisioner()
        .credential(
            "iap_exp_dddd",
            &owner("exp"),
            &["app_reader".to_owned()],
            false,
        )
        .unwrap();
    let mut session = login(c.port, "iap_exp_dddd", cred.password.expose()).unwrap();
    thread::sleep(Duration::from_millis(2100));
    assert!(
        login(c.port, "iap_exp_dddd", cred.password.expose()).is_err(),
        "VALID UNTIL passed"
    );
    let report = p.sweep().unwrap();
    assert!(
        report.deactivated.contains(&"iap_exp_dddd".to_owned()),
        "{report:?}"
    );
    assert!(report.terminated >= 1);
    assert!(
        session.query_one("SELECT 1", &[]).is_err(),
        "session survived the janitor"
    );
    let mut su = superuser(c.port);
    assert_eq!(memberships(&mut su, "iap_exp_dddd"), ["caddy_iap_managed"]);
    let can: bool = su
        .query_one(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'iap_exp_dddd'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!can);

    // drop: gone, unless it owns something.
    let d = provisioner(serde_json::json!({"ttl_secs": 1, "expired_roles": "drop"}));
    d.provisioner()
        .credential(
            "iap_drop_eeee",
            &owner("drop"),
            &["app_reader".to_owned()],
            false,
        )
        .unwrap();
    d.provisioner()
        .credential(
            "iap_owns_ffff",
            &owner("owns"),
            &["app_reader".to_owned()],
            false,
        )
        .unwrap();
    su.batch_execute(
        "CREATE TABLE owned_thing (x int); ALTER TABLE owned_thing OWNER TO iap_owns_ffff",
    )
    .unwrap();
    thread::sleep(Duration::from_millis(2100));
    let report = d.sweep().unwrap();
    assert!(
        report.dropped.contains(&"iap_drop_eeee".to_owned()),
        "{report:?}"
    );
    assert!(
        report.deactivated.contains(&"iap_owns_ffff".to_owned()),
        "{report:?}"
    );
}

#[test]
fn a_database_that_is_down_is_reported_quickly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let g = Gateway::new(&gateway_policy(
        port,
        serde_json::json!({"connect_timeout_ms": 1000}),
    ))
    .unwrap();
    let p = &g;
    let t = Instant::now();
    let e = p
        .provisioner()
        .credential(
            "iap_down",
            &owner("down"),
            &["app_reader".to_owned()],
            false,
        )
        .unwrap_err();
    assert!(matches!(e, ProvisionError::Unavailable(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
}
