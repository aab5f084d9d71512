"""Faults around the proxy: identity providers that hang, answer garbage or rotate keys under
load, and a PostgreSQL that goes down or refuses to provision. Caddy must refuse cleanly, in a
bounded time, keep serving everything else, and never crash.

"Provider down, known keys keep working, unknown kid refused quickly" is test_keys.py's
test_provider_down_known_keys_keep_working; it is not repeated here."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from iaplib import AUD, issuer_block, make_keys, unverified_header, write_jwks
from pglib import Postgres, pg_bin, wait_until
from test_postgres import AUD as DB_AUD
from test_postgres import connect, gateway, login_lines, pg_idp  # noqa: F401 - fixtures

RULES = """
role reader claim groups contains readers
allow reader GET /items/*
"""

# --------------------------------------------------------------------------------------------
# Misbehaving key servers


class Tarpit:
    """Accepts TCP connections on loopback and never answers (nor closes) them."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read from nor written to

    def close(self):
        self._stop = True
        self._thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


HUGE_BYTES = 50 * 1024 * 1024


class _GarbageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        self.server.hits.append(self.path)
        if self.path == "/text":
            body = b"<html>this is not JSON at all \x00\xff</html>"
        elif self.path == "/shape":
            body = json.dumps({"keys": {"kty": "RSA"}, "hello": [1, 2, 3]}).encode()
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            entry = b'{"kty":"RSA","kid":"k","n":"' + b"A" * 4000 + b'","e":"AQAB"},'
            sent = 0
            try:
                self.wfile.write(b'{"keys":[')
                while sent < HUGE_BYTES:
                    self.wfile.write(entry)
                    sent += len(entry)
                self.wfile.write(b'{"kty":"oct"}]}')
            except OSError:
                pass  # the client gave up: what we want
            self.server.huge_sent.append(sent)
            self.close_connection = True
            return
        else:
            body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


@pytest.fixture
def tarpit():
    t = Tarpit()
    yield t
    t.close()


@pytest.fixture
def garbage():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _GarbageHandler)
    srv.daemon_threads = True
    srv.hits = []
    srv.huge_sent = []
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def stray_token(issuer: str, kid: str = "stray") -> str:
    """A well-formed token for `issuer` signed by a key nobody publishes."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": issuer, "aud": AUD, "sub": "someone", "iat": now, "exp": now + 300,
              "groups": ["readers"]}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def timed_get(site, path, token):
    t0 = time.monotonic()
    r = site.get(path, token, timeout=60)
    return r, time.monotonic() - t0


def test_tarpit_provider_503_in_bounded_time_and_other_issuer_not_delayed(idp, tarpit, upstream, caddy):
    slow_iss = f"http://127.0.0.1:{tarpit.port}"
    fetch_timeout = 4
    site = caddy(
        issuer_block(idp.issuer) + "\n"
        + issuer_block(slow_iss, f"jwks_url {slow_iss}/jwks", f"fetch_timeout {fetch_timeout}s",
                       "kid_miss_cooldown 1s", "refresh_min 1s")
        + RULES
    )
    good = idp.token("reader")
    assert site.get("/items/0", good).status_code == 200  # the healthy issuer's keys are loaded

    slow_results: list[tuple[int, float]] = []

    def hit_tarpit(i: int):
        r, took = timed_get(site, f"/items/slow{i}", stray_token(slow_iss, kid=f"k{i}"))
        slow_results.append((r.status_code, took))

    threads = [threading.Thread(target=hit_tarpit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    # While those wait on the tarpit, the healthy issuer's requests go through at once.
    fast: list[float] = []
    t_end = time.monotonic() + fetch_timeout + 1
    while time.monotonic() < t_end:
        r, took = timed_get(site, "/items/fast", good)
        assert r.status_code == 200, r.text
        fast.append(took)
        time.sleep(0.1)
    for t in threads:
        t.join(60)

    assert len(fast) >= 5
    assert max(fast) < 2.0, f"the healthy issuer was held up by the tarpit: {sorted(fast)[-5:]}"
    assert len(slow_results) == 4
    for status, took in slow_results:
        assert status == 503, slow_results
        assert took < fetch_timeout + 6, f"a tarpit request took {took:.1f}s (fetch_timeout {fetch_timeout}s)"
    assert tarpit.accepted, "caddy never even tried the tarpit"
    assert all(s.path == "/items/fast" or s.path == "/items/0" for s in upstream.requests)
    assert site.running


def test_garbage_and_huge_key_sets_refused_with_bounded_time_and_memory(idp, garbage, upstream, caddy):
    base = f"http://127.0.0.1:{garbage.server_address[1]}"
    kinds = ("text", "shape", "huge")
    issuers = {k: f"{base}/iss-{k}" for k in kinds}
    site = caddy(
        issuer_block(idp.issuer) + "\n"
        + "\n".join(issuer_block(issuers[k], f"jwks_url {base}/{k}", "fetch_timeout 3s", "kid_miss_cooldown 1s")
                    for k in kinds)
        + RULES
    )
    good = idp.token("reader")
    assert site.get("/items/0", good).status_code == 200
    pid = site.proc.pid
    base_rss = rss_mb(pid)

    for rnd in range(2):
        for k in kinds:
            r, took = timed_get(site, f"/items/{k}", stray_token(issuers[k], kid=f"{k}{rnd}"))
            assert r.status_code == 503, f"{k}: {r.status_code} {r.text}"
            assert took < 15, f"{k}: took {took:.1f}s"
            assert site.running
            assert rss_mb(pid) < 300, f"caddy RSS {rss_mb(pid):.0f} MB after the {k} key set (was {base_rss:.0f})"
            assert site.get("/items/ok", good).status_code == 200, f"healthy issuer broken after {k}"
        time.sleep(1.2)  # past the kid-miss cooldown: fetch again
    assert {"/text", "/shape", "/huge"} <= set(garbage.hits), garbage.hits
    # Caddy stopped reading the 50 MB key set early (it hung up) rather than buffering it all.
    wait_until(lambda: len(garbage.huge_sent) >= 2, 30, "the huge key set responses to end")
    assert max(garbage.huge_sent) < HUGE_BYTES // 2, f"caddy read {garbage.huge_sent} bytes of the huge key set"
    assert all(s.path in ("/items/0", "/items/ok") for s in upstream.requests)


def test_keys_rotating_mid_load_no_failures(idp_factory, upstream, caddy, tmp_path):
    p = idp_factory("RS256")
    old_kid = p.keys[0]["kid"]
    site = caddy(issuer_block(p.issuer, "kid_miss_cooldown 1s", "fetch_timeout 3s") + "\ncache_size 0\n" + RULES)
    old_tokens = [p.token("reader") for _ in range(3)]
    assert all(unverified_header(t)["kid"] == old_kid for t in old_tokens)
    assert site.get("/items/0", old_tokens[0]).status_code == 200

    tokens = list(old_tokens)  # the load thread picks from these; new-key tokens are appended
    results: list[tuple[str, int]] = []
    stop = threading.Event()

    def load():
        i = 0
        while not stop.is_set():
            tok = tokens[i % len(tokens)]
            i += 1
            try:
                status = site.get(f"/items/{i}", tok, timeout=30).status_code
            except Exception as e:  # noqa: BLE001 - counted as a failure
                status = repr(e)
            results.append((unverified_header(tok)["kid"], status))
            time.sleep(0.02)

    th = threading.Thread(target=load, daemon=True)
    th.start()
    try:
        time.sleep(0.5)
        new_keys = make_keys(tmp_path / "new-key.json", "ES256")["keys"]
        p.restart(write_jwks(tmp_path / "rotated.json", new_keys + p.keys))
        new_token = p.token("reader")
        new_kid = unverified_header(new_token)["kid"]
        assert new_kid == new_keys[0]["kid"] != old_kid
        r = site.get("/items/new", new_token, timeout=30)
        assert r.status_code == 200, f"new-key token refused: {r.status_code} {r.text}"
        tokens.append(new_token)
        wait_until(lambda: sum(1 for k, _ in results if k == new_kid) >= 5, 30, "load with the new token")
    finally:
        stop.set()
        th.join(60)
    failures = [(k, s) for k, s in results if s != 200]
    assert not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:5]}"
    assert sum(1 for k, _ in results if k == old_kid) >= 10, "the load never ran"
    assert site.running


# --------------------------------------------------------------------------------------------
# PostgreSQL faults


@pytest.fixture(scope="module")
def pg():
    db = Postgres().start()
    yield db
    db.stop()


def pg_stop(pg: Postgres):
    subprocess.run(pg._cmd(pg_bin("pg_ctl"), "-D", str(pg.data), "-m", "fast", "-w", "-t", "30", "stop"),
                   check=True, capture_output=True, timeout=60)
    pg.proc.wait(30)


def pg_start_again(pg: Postgres):
    pg.launch()


def test_database_down_during_provisioning_then_back(gateway, pg, pg_idp):  # noqa: F811
    c = gateway()
    token = pg_idp.token("p1", DB_AUD)
    before = pg.managed_roles()
    pg_stop(pg)
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as exc:
            connect(c, token, "p1@example.com")
        took = time.monotonic() - t0
        assert took < 15, f"the refusal took {took:.1f}s"
        msg = str(exc.value)
        assert "cannot reach the database" in msg, msg
        assert token not in msg
        # The log line may be written just after the client got its error.
        wait_until(lambda: [l for l in login_lines(c) if '"result":"refused"' in l and '"sqlstate":"08006"' in l],
                   15, f"a refused login with 08006 in the log: {login_lines(c)[-1:]}")
        assert c.running
    finally:
        pg_start_again(pg)
    assert pg.managed_roles() == before

    def works():
        with connect(c, token, "p1@example.com") as conn:
            return conn.execute("SELECT current_user").fetchone()[0]

    role = wait_until(works, 30, "a login once PostgreSQL is back")
    assert pg.managed_roles().get(role) is True
    assert c.running


def test_admin_refusing_to_create_roles(gateway, pg, pg_idp):  # noqa: F811
    c = gateway()
    # The gateway is up and working (its marker role exists) before the admin loses CREATEROLE.
    with connect(c, pg_idp.token("p2", DB_AUD), "p2@example.com") as conn:
        conn.execute("SELECT 1")
    before = pg.managed_roles()
    pg.sql("ALTER ROLE iap_admin NOCREATEROLE", db="postgres")
    try:
        token = pg_idp.token("p3", DB_AUD)
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as exc:
            connect(c, token, "p3@example.com")
        assert time.monotonic() - t0 < 15
        msg = str(exc.value)
        assert "ask the DBA" in msg, msg
        assert token not in msg
        wait_until(lambda: [l for l in login_lines(c) if '"result":"refused"' in l and '"sqlstate":"58000"' in l],
                   15, f"a refused login with 58000 in the log: {login_lines(c)[-1:]}")
        assert pg.managed_roles() == before, "a half-made role was left behind"
        assert pg.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'iap_p3@%'") == "0"
        assert c.running
    finally:
        pg.sql("ALTER ROLE iap_admin CREATEROLE", db="postgres")
    with connect(c, pg_idp.token("p3", DB_AUD), "p3@example.com") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
