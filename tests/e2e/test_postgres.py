"""The PostgreSQL gateway end to end: psql and psycopg log in through bin/caddy (caddy-l4 +
iap_postgres) with a token from the real test IdP as their password, and land in a real
PostgreSQL as a role minted for them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter

import psycopg
import pytest

from iaplib import Caddy, IdP, free_port, make_keys, wait_for
from pglib import ADMIN_PASSWORD, ADMIN_USER, DB, Postgres, make_cert, pg_bin, pg_caddyfile, wait_until

AUD = "https://db.test"
ROLE_NAME = re.compile(r"^iap_[a-z0-9_.@-]+_[0-9a-f]{10}$")

WEIRD_EMAILS = {
    "quote": "o'hara\"; DROP ROLE postgres; --@example.com",
    "unicode": "zoë.名前@example.com",
    "long": ("a" * 480) + "@example.com",
}

# This module's own IdP clients: readers, a writer, someone no rule matches, a 2-second token,
# ten readers for the concurrency test and owners of hostile emails.
CLIENTS: dict[str, dict] = {
    "reader": {"client_secret": "s", "sub": "user-reader",
               "claims": {"email": "reader@example.com", "email_verified": True, "groups": ["readers"]}},
    "writer": {"client_secret": "s", "sub": "user-writer",
               "claims": {"email": "writer@example.com", "email_verified": True, "groups": ["writers"]}},
    "nobody": {"client_secret": "s", "claims": {"groups": ["guests"]}},
    "shortlived": {"client_secret": "s", "access_token_ttl": 2,
                   "claims": {"email": "short@example.com", "email_verified": True, "groups": ["readers"]}},
    **{f"p{i}": {"client_secret": "s", "claims": {"email": f"p{i}@example.com", "email_verified": True,
                                                  "groups": ["readers"]}} for i in range(10)},
    **{f"weird-{k}": {"client_secret": "s", "claims": {"email": v, "email_verified": True, "groups": ["readers"]}}
       for k, v in WEIRD_EMAILS.items()},
}


@pytest.fixture(scope="module")
def pg():
    db = Postgres().start()
    yield db
    db.stop()


@pytest.fixture(scope="module")
def pg_idp(tmp_path_factory):
    d = tmp_path_factory.mktemp("pg-idp")
    keys = d / "keys.json"
    make_keys(keys, "RS256")
    idp = IdP(d, keys, clients=CLIENTS, name="pg-idp").start()
    yield idp
    idp.stop()


def policy(idp: IdP, pg: Postgres, ttl: str = "15m", extra: str = "") -> str:
    return f"""issuer {idp.issuer} {{
	audience {AUD}
	leeway 1s
}}
role reader claim groups contains readers
role writer claim groups contains writers
admin "host=127.0.0.1 port={pg.port} user={ADMIN_USER} dbname={DB} sslmode=disable" {{
	password_env IAP_TEST_PG_ADMIN_PASSWORD
}}
grant reader app_reader
grant writer app_reader app_writer
databases {DB}
ttl {ttl}
janitor_interval 1s
{extra}"""


@pytest.fixture
def gateway(tmp_path, pg, pg_idp, monkeypatch, request):
    """gateway(ttl=..., extra=...) starts bin/caddy fronting `pg`; stopped after the test."""
    monkeypatch.setenv("IAP_TEST_PG_ADMIN_PASSWORD", ADMIN_PASSWORD)
    started: list[Caddy] = []

    def start(name: str = "caddy", **kw) -> Caddy:
        work = tmp_path / name
        work.mkdir()
        cert, key = make_cert(work)
        c = Caddy(workdir=work, upstream_address="", iap_config="")
        c.text = pg_caddyfile(admin_port=c.admin_port, storage=c.storage, log_path=c.log_path, pg_port=c.port,
                              https_port=free_port(), cert=cert, key=key,
                              policy=policy(pg_idp, pg, **kw).replace("\n", "\n\t\t\t\t\t"))
        started.append(c)
        request.node.stash.setdefault(__import__("iaplib").LOGS, []).extend([c.log_path, c.caddyfile, pg.log_path])
        return c.start()

    yield start
    for c in started:
        c.stop()


def dsn(c: Caddy, user: str, sslmode: str = "require") -> str:
    return f"host=127.0.0.1 port={c.port} dbname={DB} user={user} sslmode={sslmode} connect_timeout=10"


def psql(c: Caddy, token: str, user: str, sql: str, sslmode: str = "require") -> subprocess.CompletedProcess:
    env = dict(os.environ, PGPASSWORD=token)
    env.pop("PGSERVICEFILE", None)
    return subprocess.run([pg_bin("psql"), dsn(c, user, sslmode), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          env=env, capture_output=True, text=True, timeout=60)


def connect(c: Caddy, token: str, user: str, **kw) -> psycopg.Connection:
    # Keyword arguments, so a hostile user name needs no quoting.
    return psycopg.connect(host="127.0.0.1", port=c.port, dbname=DB, user=user, sslmode="require",
                           connect_timeout=10, password=token, **kw)


def login_lines(c: Caddy) -> list[str]:
    return [line for line in c.log_text().splitlines() if '"msg":"postgres login' in line]


def await_login_lines(c: Caddy, n: int) -> list[str]:
    """The gateway's login audit lines once there are `n`: a refusal is sent to the client before
    its line is written, so psql can exit before the line is in the log."""
    def enough() -> list[str] | None:
        lines = login_lines(c)
        return lines if len(lines) >= n else None

    return wait_for(enough, 10, what=f"{n} login audit lines")


def test_psql_reader_selects_but_cannot_insert(gateway, pg, pg_idp):
    c = gateway()
    token = pg_idp.token("reader", AUD)
    r = psql(c, token, "reader@example.com", "SELECT current_user, session_user, count(*) FROM orders")
    assert r.returncode == 0, r.stderr
    current, session, count = r.stdout.strip().split("|")
    assert ROLE_NAME.match(current) and current.startswith("iap_reader@example.com_"), current
    assert session == current
    assert int(count) >= 2

    r = psql(c, token, "reader@example.com", "INSERT INTO orders (item) VALUES ('stolen')")
    assert r.returncode != 0
    assert "permission denied" in r.stderr

    # Member of the marker and app_reader only; the DBA sees the identity in pg_stat_activity.
    groups = pg.sql(f"SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members m "
                    f"JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member "
                    f"WHERE r.rolname = '{current}'")
    assert groups == "app_reader,caddy_iap_managed"
    assert pg.managed_roles()[current] is True
    assert token not in c.log_text() and token not in pg.log_text()


def test_psycopg_prepared_copy_and_cancel(gateway, pg_idp):
    c = gateway()
    with connect(c, pg_idp.token("writer", AUD), "writer@example.com", autocommit=True) as conn:
        cur = conn.cursor()
        for i in range(3):  # prepared after the first runs (prepare=True forces it)
            cur.execute("INSERT INTO orders (item) VALUES (%s) RETURNING id", (f"w{i}",), prepare=True)
            assert cur.fetchone()[0] > 0
        with cur.copy("COPY (SELECT item FROM orders ORDER BY id) TO STDOUT") as copy:
            items = [row[0] for row in copy.rows()]
        assert "apple" in items and "w2" in items

        # A cancel request on a new connection reaches the right backend.
        timer = threading.Timer(1.0, conn.cancel)
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            cur.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - t0 < 10
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


@pytest.mark.parametrize(
    "case, sqlstate_or_text",
    [
        ("plaintext", "requires an encrypted connection"),
        ("garbage", "28P01"),
        ("other-audience", "28P01"),
        ("expired", "28P01"),
        ("no-grant", "28000"),
        ("wrong-user", "28000"),
    ],
)
def test_refusals_provision_nothing(gateway, pg, pg_idp, case, sqlstate_or_text):
    c = gateway()
    before = pg.managed_roles()
    user = "reader@example.com"
    sslmode = "require"
    if case == "plaintext":
        token, sslmode = pg_idp.token("reader", AUD), "disable"
    elif case == "garbage":
        token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."
    elif case == "other-audience":
        token = pg_idp.token("reader", "https://other.test")
    elif case == "expired":
        token = pg_idp.token("shortlived", AUD)  # 2 s lifetime, 1 s leeway, whole seconds
        time.sleep(5)
        user = "short@example.com"
    elif case == "no-grant":
        token, user = pg_idp.token("nobody", AUD), "nobody"
    else:
        token, user = pg_idp.token("reader", AUD), "someone-else@example.com"
    r = psql(c, token, user, "SELECT 1", sslmode=sslmode)
    assert r.returncode != 0
    text = r.stderr
    if case == "plaintext":
        assert sqlstate_or_text in text
    lines = await_login_lines(c, 1)
    assert '"result":"refused"' in lines[-1]
    assert f'"sqlstate":"{sqlstate_or_text}"' in lines[-1] or case == "plaintext"
    assert token not in text and token not in c.log_text()
    assert pg.managed_roles() == before


def test_credential_reused_then_session_ends_at_token_expiry(gateway, pg, pg_idp):
    c = gateway()
    token = pg_idp.token("reader", AUD)
    for _ in range(3):
        assert psql(c, token, "reader@example.com", "SELECT 1").returncode == 0
    outcomes = [re.search(r'"credential":"(\w+)"', line).group(1) for line in await_login_lines(c, 3)]
    assert outcomes[0] in ("created", "reactivated", "extended") and outcomes[1:] == ["reused", "reused"]

    # The session ends when the token does (2 s lifetime here), even while it is open.
    conn = connect(c, pg_idp.token("shortlived", AUD), "short@example.com", autocommit=True)
    conn.execute("SELECT 1")
    time.sleep(4)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    ended = [line for line in c.log_text().splitlines() if "postgres session ended" in line]
    assert any('"end":"deadline"' in line for line in ended)


def test_expired_roles_are_deactivated_even_after_a_crash(gateway, pg, pg_idp):
    c = gateway(name="crashing", ttl="3s")
    token = pg_idp.token("reader", AUD)
    conn = connect(c, token, "reader@example.com", autocommit=True)
    role = conn.execute("SELECT current_user").fetchone()[0]
    assert pg.managed_roles()[role] is True
    c.proc.send_signal(signal.SIGKILL)  # no cleanup of any kind
    c.proc.wait(10)
    conn.close()

    # The password stops working at VALID UNTIL whatever happens to the gateway...
    valid_until = float(pg.sql(f"SELECT extract(epoch FROM rolvaliduntil) FROM pg_roles WHERE rolname = '{role}'"))
    assert valid_until <= time.time() + 4
    # ...and the next gateway's janitor deactivates the role: NOLOGIN, no grants but the marker.
    gateway(name="next")
    wait_until(lambda: pg.managed_roles().get(role) is False, 20, f"janitor to deactivate {role}")
    groups = pg.sql(f"SELECT string_agg(g.rolname, ',') FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                    f"JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = '{role}'")
    assert groups == "caddy_iap_managed"


def test_parallel_logins_provision_each_role_once(gateway, pg, pg_idp):
    c = gateway()
    tokens = {f"p{i}": pg_idp.token(f"p{i}", AUD) for i in range(10)}
    errors: list[BaseException] = []
    roles: list[str] = []

    def login(i: int):
        client = f"p{i % 10}"
        try:
            with connect(c, tokens[client], f"{client}@example.com") as conn:
                roles.append(conn.execute("SELECT current_user").fetchone()[0])
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=login, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(roles) == 50 and len(set(roles)) == 10
    provisioned = Counter(re.search(r'"credential":"(\w+)"', line).group(1) for line in await_login_lines(c, 50)
                          if '"result":"allowed"' in line)
    assert provisioned["created"] + provisioned["reactivated"] + provisioned["extended"] == 10, provisioned
    assert provisioned["reused"] == 40, provisioned


@pytest.mark.parametrize("kind", sorted(WEIRD_EMAILS))
def test_hostile_claims_cannot_inject_sql(gateway, pg, pg_idp, kind):
    c = gateway()
    with connect(c, pg_idp.token(f"weird-{kind}", AUD), WEIRD_EMAILS[kind]) as conn:
        role = conn.execute("SELECT current_user").fetchone()[0]
    assert ROLE_NAME.match(role) and len(role.encode()) <= 63, role
    assert pg.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'postgres'") == "1"
    assert pg.managed_roles()[role] is True


def test_http_credentials_endpoint_vault_style(tmp_path, pg, pg_idp, monkeypatch, request):
    """POST /.iap/postgres/credentials with a bearer token: a login for direct use."""
    monkeypatch.setenv("IAP_TEST_PG_ADMIN_PASSWORD", ADMIN_PASSWORD)
    iap = f"""issuer {pg_idp.issuer} {{
	audience {AUD}
}}
role reader claim groups contains readers
role writer claim groups contains writers
allow writer GET /nothing
postgres_credentials {{
	admin "host=127.0.0.1 port={pg.port} user={ADMIN_USER} dbname={DB} sslmode=disable" {{
		password_env IAP_TEST_PG_ADMIN_PASSWORD
	}}
	grant reader app_reader
	grant writer app_reader app_writer
	databases {DB}
	connect 127.0.0.1:{pg.port}
}}"""
    c = Caddy(workdir=tmp_path / "http", upstream_address="127.0.0.1:9", iap_config=iap)
    request.node.stash.setdefault(__import__("iaplib").LOGS, []).extend([c.log_path, c.caddyfile])
    c.start()
    try:
        url = "/.iap/postgres/credentials"
        r = c.request("POST", url, pg_idp.token("reader", AUD))
        assert r.status_code == 200, r.text
        assert r.headers["Cache-Control"] == "no-store"
        creds = r.json()
        assert creds["dbname"] == DB and creds["port"] == pg.port and creds["granted_roles"] == ["app_reader"]
        assert ROLE_NAME.match(creds["username"])
        with psycopg.connect(host=creds["host"], port=creds["port"], dbname=creds["dbname"],
                             user=creds["username"], password=creds["password"], sslmode="disable") as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == creds["username"]
            assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] >= 2
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO orders (item) VALUES ('x')")
        assert creds["password"] not in c.log_text()

        assert c.request("POST", url, pg_idp.token("nobody", AUD)).status_code == 403
        r = c.request("POST", url)
        assert r.status_code == 401 and "Bearer" in r.headers["WWW-Authenticate"]
        assert c.request("POST", url, "not-a-token").status_code == 401
        assert c.request("GET", url, pg_idp.token("reader", AUD)).status_code == 405
    finally:
        c.stop()
