"""Secret hygiene: after the main paths ran at DEBUG, no log and no error body holds a token, a
token's signature, a minted assertion, a minted database password, the admin password or the
assertion signing key. Caddy's reverse_proxy logs upstream request headers at DEBUG, and the
assertion is one: docs/caddyfile.md has the log filter that keeps it out, and caddy-iap warns at
start-up when that log is on."""

from __future__ import annotations

import base64
import json

import psycopg

from iaplib import b64url, issuer_block, unverified_claims
from pglib import ADMIN_PASSWORD, ADMIN_USER, DB, wait_until
from test_postgres import AUD as DB_AUD
from test_postgres import connect, gateway, login_lines, pg, pg_idp  # noqa: F401 - fixtures


# The log setting docs/caddyfile.md gives for DEBUG logs with assertions on.
ASSERTION_LOG_FILTER = "format filter {\n\trequest>headers>X-Iap-Assertion delete\n}"
ASSERTION_WARNING = "reverse_proxy logs upstream request headers at DEBUG, assertions included"


def tampered(token: str) -> str:
    """The same token with one claim changed and the original signature kept."""
    h, p, s = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["groups"] = ["admins"]
    return f"{h}.{b64url(json.dumps(claims).encode())}.{s}"


def test_no_secret_in_any_log_or_error_body(gateway, pg, pg_idp, caddy, upstream, monkeypatch):  # noqa: F811
    monkeypatch.setenv("IAP_TEST_PG_ADMIN_PASSWORD", ADMIN_PASSWORD)
    pg_log_start = len(pg.log_text())  # the test's own setup SQL (CREATE ROLE ... PASSWORD) is before
    idp_log_start = len(pg_idp.log_path.read_text(errors="replace"))
    site = caddy(
        issuer_block(pg_idp.issuer, audience=DB_AUD) + f"""
role reader claim groups contains readers
role writer claim groups contains writers
allow reader GET /items/*
assertion {{
	audience https://upstream.test
}}
postgres_credentials {{
	admin "host=127.0.0.1 port={pg.port} user={ADMIN_USER} dbname={DB} sslmode=disable" {{
		password_env IAP_TEST_PG_ADMIN_PASSWORD
	}}
	grant reader app_reader
	databases {DB}
	connect 127.0.0.1:{pg.port}
}}""",
        log_extra=ASSERTION_LOG_FILTER,
    )
    tokens: list[str] = []
    bodies: list[str] = []

    def tok(client: str) -> str:
        t = pg_idp.token(client, DB_AUD)
        tokens.append(t)
        return t

    # Bearer: allowed, denied (no role, wrong method), refused (bad signature, wrong audience).
    reader = tok("reader")
    r = site.get("/items/1", reader)
    assert r.status_code == 200, r.text
    assertion = upstream.last().one("X-IAP-Assertion")
    assert assertion and assertion.count(".") == 2, "the assertion was not set"
    for status, resp in [
        (403, site.get("/items/1", tok("nobody"))),
        (403, site.request("DELETE", "/items/1", reader)),
        (401, site.get("/items/1", tampered(reader))),
        (401, site.get("/items/1", pg_idp.token("reader", "https://other.test"))),
    ]:
        assert resp.status_code == status, (status, resp.status_code, resp.text)
        bodies.append(resp.text + json.dumps(dict(resp.headers)))
    tokens.append(pg_idp.token_response("reader", "https://other.test").json()["access_token"])

    # Vault-style credentials: a minted password, then refusals.
    r = site.request("POST", "/.iap/postgres/credentials", reader)
    assert r.status_code == 200, r.text
    creds = r.json()
    minted = creds["password"]
    assert len(minted) >= 16
    with psycopg.connect(host=creds["host"], port=creds["port"], dbname=creds["dbname"], user=creds["username"],
                         password=minted, sslmode="disable") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == creds["username"]
    for resp in (site.request("POST", "/.iap/postgres/credentials", tok("nobody")),
                 site.request("POST", "/.iap/postgres/credentials", tampered(reader))):
        assert resp.status_code in (401, 403), resp.text
        bodies.append(resp.text + json.dumps(dict(resp.headers)))

    # PostgreSQL gateway: a login, then refused logins whose error messages are bodies too.
    gw = gateway()
    with connect(gw, tok("writer"), "writer@example.com") as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] >= 2
    for token, user in [(tok("nobody"), "nobody"), (reader, "someone-else@example.com"),
                        (tampered(reader), "reader@example.com")]:
        try:
            connect(gw, token, user).close()
            raise AssertionError(f"login as {user} should have been refused")
        except psycopg.OperationalError as e:
            bodies.append(str(e))

    # Log lines may land just after the client got its answer: wait for all four logins.
    wait_until(lambda: len([l for l in login_lines(gw) if '"result":"refused"' in l]) >= 3
               and any('"result":"allowed"' in l for l in login_lines(gw)), 15, "the gateway's login log lines")

    # The assertion signing key(s) Caddy generated in its storage.
    key_files = list((site.storage / "iap" / "assertion").glob("*/signing-key.pk8.b64"))
    assert key_files, f"no assertion signing key under {site.storage}"
    signing_keys = [line.strip() for f in key_files for line in f.read_text().splitlines() if line.strip()]
    assert signing_keys and all(len(k) > 40 for k in signing_keys)

    secrets: dict[str, str] = {"minted password": minted, "admin password": ADMIN_PASSWORD,
                               "assertion": assertion, "assertion signature": assertion.split(".")[2]}
    for i, t in enumerate(tokens):
        assert t.count(".") == 2
        secrets[f"token {i}"] = t
        secrets[f"token {i} signature"] = t.split(".")[2]
    for i, k in enumerate(signing_keys):
        secrets[f"signing key {i}"] = k
        secrets[f"signing key {i} (middle)"] = k[len(k) // 3: len(k) // 3 + 40]

    logs = {
        "caddy.log (http)": site.log_text(),
        "caddy stdout (http)": site.stdout_path.read_text(errors="replace"),
        "caddy.log (gateway)": gw.log_text(),
        "caddy stdout (gateway)": gw.stdout_path.read_text(errors="replace"),
        "IdP log": pg_idp.log_path.read_text(errors="replace")[idp_log_start:],
        "PostgreSQL log": pg.log_text()[pg_log_start:],
        **{f"error body {i}": b for i, b in enumerate(bodies)},
    }
    # The logs are really there and cover what ran (so an empty search cannot pass by accident).
    assert '"result":"allowed"' in logs["caddy.log (gateway)"]
    assert '"level":"debug"' in logs["caddy.log (http)"]
    # reverse_proxy's line with the upstream request's headers is there, the identity ones in it.
    assert '"upstream roundtrip"' in logs["caddy.log (http)"] and "X-Iap-Email" in logs["caddy.log (http)"]
    assert ASSERTION_WARNING in logs["caddy.log (http)"]
    # The search does find a secret where one is: the test's own setup SQL, logged earlier.
    assert ADMIN_PASSWORD in pg.log_text()[:pg_log_start]
    assert "issued token" in logs["IdP log"]
    assert "connection authorized" in logs["PostgreSQL log"]
    assert len(bodies) >= 9

    leaks = [f"{what} in {where}" for where, text in logs.items() for what, value in secrets.items() if value in text]
    assert not leaks, leaks


def test_debug_logs_name_the_assertion_filter(idp, upstream, caddy):
    """Without the filter, reverse_proxy's DEBUG line would hold the assertion (the reason for the
    warning; a Caddy that redacts it makes this test fail, and the warning can go). A log that
    leaves reverse_proxy out gets no warning, though it still logs at DEBUG."""
    iap = issuer_block(idp.issuer) + """
role reader claim groups contains readers
allow reader GET /items/*
assertion {
	audience https://upstream.test
}"""
    site = caddy(iap)
    r = site.get("/items/1", idp.token("reader"))
    assert r.status_code == 200, r.text
    assertion = upstream.last().one("X-IAP-Assertion")
    assert unverified_claims(assertion)["aud"] == "https://upstream.test"
    log = site.log_text()
    warning = [line for line in log.splitlines() if ASSERTION_WARNING in line]
    assert len(warning) == 1, log[-3000:]
    assert "log { format filter { request>headers>X-Iap-Assertion delete } }" in warning[0]
    assert assertion in log, "reverse_proxy no longer logs the upstream headers: drop the warning"

    quiet = caddy(iap, log_extra="exclude http.handlers.reverse_proxy")
    r = quiet.get("/items/1", idp.token("reader"))
    assert r.status_code == 200, r.text
    log = quiet.log_text()
    assert '"engine ready"' in log and ASSERTION_WARNING not in log
    assert upstream.last().one("X-IAP-Assertion") not in log
