"""Browser sign-in through the gateway: bin/caddy serving HTTPS (tls internal) with an `iap`
block whose `login` signs browsers in at the real test IdP, driven by headless Chromium.

A person opens a protected page, signs in on the IdP's form, comes back to that page with the
identity headers at the upstream, reloads without a new sign-in, sees the access page, signs
out (locally and at the IdP) and is asked to sign in again. Around that: what must never work
(tampered, foreign-key, replayed or mismatched callbacks and cookies, open redirects, XHR
redirects) and what must keep working (bearer tokens, key rotation, refresh)."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from iaplib import (
    AUD,
    CLIENTS,
    USERS,
    Caddy,
    IdP,
    browser_client,
    indent,
    register_logs,
    sign_in,
    wait_for,
)

CLIENT = "gateway"
SECRET = "gateway-secret"
COOKIE = "__Host-caddy-iap"


@dataclass
class Site:
    caddy: Caddy
    idp: IdP
    url: str
    storage: Path
    iap_extra: str = ""
    login_extra: str = ""

    def get(self, path: str, cookies: dict | None = None, headers: dict | None = None, **kw) -> requests.Response:
        h = {"Accept": "text/html"} | (headers or {})
        return self.caddy.send("GET", self.url + path, headers=h, cookies=cookies, verify=False,
                               allow_redirects=False, timeout=15, **kw)

    def caddyfile(self, login_extra: str = "") -> str:
        c = self.caddy
        login = "\n".join([
            f"client_id {CLIENT}",
            f"client_secret_file {c.workdir / 'client-secret'}",
            "scopes openid email profile",
            self.login_extra,
            login_extra,
        ])
        iap = "\n".join([
            f"issuer {self.idp.issuer} {{\n\taudience {AUD}\n}}",
            "role editor claim roles contains editor",
            "allow editor GET,HEAD /*",
            f"login {{\n{indent(login, chr(9))}\n}}",
            self.iap_extra,
        ])
        return (
            "{\n"
            f"\tadmin 127.0.0.1:{c.admin_port}\n"
            "\tdefault_bind 127.0.0.1\n"
            "\tpersist_config off\n"
            "\tskip_install_trust\n"
            "\tauto_https disable_redirects\n"
            f"\tstorage file_system {self.storage}\n"
            f"\tlog {{\n\t\tlevel DEBUG\n\t\toutput file {c.log_path}\n\t}}\n"
            "}\n\n"
            f"https://127.0.0.1:{c.port} {{\n"
            "\ttls internal\n"
            "\troute {\n"
            f"\t\tiap {{\n{indent(iap, chr(9) * 3)}\n\t\t}}\n"
            f"\t\treverse_proxy {c.upstream_address}\n"
            "\t}\n"
            "}\n"
        )

    def reload(self, login_extra: str = "") -> None:
        self.caddy.text = self.caddyfile(login_extra)
        self.caddy.reload(self.caddy.iap_config)


@pytest.fixture
def site(tmp_path, upstream, idp_factory, request) -> Site:
    return make_site(tmp_path / "caddy", upstream, idp_factory, request)


def make_site(workdir: Path, upstream, idp_factory, request, storage: Path | None = None,
              id_token_ttl: int = 300, iap_extra: str = "", login_extra: str = "") -> Site:
    caddy = Caddy(workdir=workdir, upstream_address=upstream.address, iap_config="")
    url = f"https://127.0.0.1:{caddy.port}"
    idp = idp_factory("RS256", clients={**CLIENTS, CLIENT: browser_client(
        [f"{url}/.iap/callback"], [f"{url}/.iap/signed_out"], secret=SECRET, id_token_ttl=id_token_ttl)})
    (workdir / "client-secret").write_text(SECRET + "\n")
    s = Site(caddy, idp, url, storage or workdir / "storage", iap_extra, login_extra)
    caddy.text = s.caddyfile()
    caddy.url = url
    register_logs(request, caddy.caddyfile, caddy.stdout_path, caddy.log_path)
    caddy.start()

    def stop():
        caddy.stop()
        caddy.check_after_stop()

    request.addfinalizer(stop)
    # Caddy listens before its internal CA has issued the site's certificate.
    wait_for(lambda: requests.get(url, verify=False, timeout=2) is not None, 30,
             what=f"a TLS handshake with {url}")
    return s


def signed_in_cookies(site: Site, page, user: str = "alice", path: str = "/orders/1") -> dict:
    """Signs `user` in through the browser and returns the session cookies it holds."""
    page.goto(site.url + path)
    sign_in(page, user, USERS[user]["password"])
    page.wait_for_url(re.compile(re.escape(site.url) + ".*"))
    return {c["name"]: c["value"] for c in page.context.cookies() if c["name"].startswith(COOKIE)}


def upstream_json(page) -> dict:
    return json.loads(page.inner_text("body"))


# --------------------------------------------------------------------------------------------
# The whole journey


def test_sign_in_reach_the_page_reload_access_page_sign_out(site, page, upstream, artifacts_dir):
    page.goto(site.url + "/orders/1?view=full")
    # Sent to the IdP's login form.
    assert page.url.startswith(site.idp.issuer), page.url
    page.wait_for_selector("#username")
    page.screenshot(path=str(artifacts_dir / "1-login.png"))
    sign_in(page, "alice", USERS["alice"]["password"])

    # Back at the page asked for, served by the upstream with the identity headers.
    page.wait_for_url(site.url + "/orders/1?view=full")
    body = upstream_json(page)
    assert body["upstream"] is True and body["path"] == "/orders/1?view=full"
    seen = upstream.last()
    assert seen.one("X-IAP-User") == "alice"
    assert seen.one("X-IAP-Email") == "alice@example.com"
    assert seen.one("X-IAP-Roles") == "editor"
    # Our cookies never reach the upstream.
    assert not any(COOKIE in v for v in seen.all("Cookie")), seen.all("Cookie")

    # The session cookie: host-only, Secure, HttpOnly, SameSite=Lax; the login cookie is gone.
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies[COOKIE]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Lax"
    assert session["path"] == "/" and session["domain"] == "127.0.0.1"
    assert not [n for n in cookies if n.startswith(COOKIE + "-login-")]

    # A reload needs no new sign-in.
    logins = site.idp.log_path.read_text().count("idp: login user=alice")
    page.reload()
    assert page.url == site.url + "/orders/1?view=full"
    assert upstream_json(page)["upstream"] is True
    assert site.idp.log_path.read_text().count("idp: login user=alice") == logins == 1

    # The access page says who this is.
    page.goto(site.url + "/.iap/")
    assert page.inner_text("#subject") == "alice"
    assert page.inner_text("#email") == "alice@example.com"
    assert page.inner_text("#roles") == "editor"
    assert page.inner_text("#expires")
    page.screenshot(path=str(artifacts_dir / "2-access-page.png"))

    # Sign out: the IdP's session ends too, and the next visit asks for a sign-in again.
    page.click("#sign-out")
    page.wait_for_url(site.url + "/.iap/signed_out")
    assert "You have signed out." in page.inner_text("#message")
    assert COOKIE not in {c["name"] for c in page.context.cookies()}
    assert "idp: logout client=gateway" in site.idp.log_path.read_text()
    page.goto(site.url + "/orders/1")
    assert page.url.startswith(site.idp.issuer)
    page.wait_for_selector("#username")


def test_a_user_without_roles_is_signed_in_but_refused(site, page, upstream):
    upstream.clear()
    page.goto(site.url + "/orders/1")
    with page.expect_response(lambda r: r.url == site.url + "/orders/1") as refused:
        sign_in(page, "bob", USERS["bob"]["password"])
    assert refused.value.status == 403
    assert upstream.count() == 0
    page.goto(site.url + "/.iap/")
    assert page.inner_text("#subject") == "bob"
    assert page.inner_text("#roles") == "none"
    # An unverified email is not shown as the identity's.
    assert page.locator("#email").count() == 0


# --------------------------------------------------------------------------------------------
# Only browser navigations are redirected; API clients keep bearer tokens


def test_non_navigations_get_401_and_navigations_a_redirect(site, upstream):
    for headers, method in [
        ({"Accept": "application/json"}, "GET"),
        ({"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"}, "GET"),
        ({"Accept": "text/html", "Sec-Fetch-Mode": "cors"}, "GET"),
        ({"Accept": "text/html;q=0, */*"}, "GET"),
        ({"Accept": "text/html"}, "POST"),
        ({}, "GET"),
    ]:
        r = requests.request(method, site.url + "/orders/1", headers=headers, verify=False,
                             allow_redirects=False, timeout=15)
        assert r.status_code == 401, (method, headers, r.status_code)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="caddy-iap"'
        assert "Location" not in r.headers

    r = site.get("/orders/1?x=1", headers={"Sec-Fetch-Mode": "navigate"})
    assert r.status_code == 302 and r.headers["Cache-Control"] == "no-store"
    loc = urlsplit(r.headers["Location"])
    q = parse_qs(loc.query)
    assert f"{loc.scheme}://{loc.netloc}" == site.idp.issuer
    assert q["client_id"] == [CLIENT] and q["response_type"] == ["code"]
    assert q["redirect_uri"] == [site.url + "/.iap/callback"]
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert len(q["state"][0]) == 43 and len(q["nonce"][0]) == 43
    login_cookie = r.headers["Set-Cookie"]
    assert login_cookie.startswith(f"{COOKIE}-login-{q['state'][0][:8]}=")
    assert login_cookie.endswith("Path=/; Max-Age=600; Secure; HttpOnly; SameSite=Lax")
    assert upstream.count() == 0

    # A bearer token is still decided as one, with no session involved.
    token = site.idp.token("reader")
    r = requests.get(site.url + "/orders/1", headers={"Authorization": f"Bearer {token}"}, verify=False, timeout=15)
    assert r.status_code == 403  # reader has no role in this site: decided, not redirected


def test_sign_out_needs_a_same_origin_post(site, page):
    cookies = signed_in_cookies(site, page)
    # A link or a prefetch only gets a confirmation page.
    r = site.get("/.iap/sign_out", cookies)
    assert r.status_code == 200 and 'id="sign-out"' in r.text and "Set-Cookie" not in r.headers
    # Another site's form is refused.
    r = requests.post(site.url + "/.iap/sign_out", cookies=cookies, verify=False, allow_redirects=False, timeout=15,
                      headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert site.get("/orders/1", cookies).status_code == 200, "still signed in"
    # The page's own button signs out.
    page.goto(site.url + "/.iap/sign_out")
    page.click("#sign-out")
    page.wait_for_url(site.url + "/.iap/signed_out")
    assert site.get("/orders/1", {c["name"]: c["value"] for c in page.context.cookies()}).status_code == 302


# --------------------------------------------------------------------------------------------
# Cookies and callbacks that must not work


def flip(value: str, at: int) -> str:
    c = "A" if value[at] != "A" else "B"
    return value[:at] + c + value[at + 1:]


def test_tampered_foreign_and_mixed_cookies_are_refused(site, page, upstream, tmp_path, idp_factory, request):
    cookies = signed_in_cookies(site, page)
    assert site.get("/orders/2", cookies).status_code == 200

    session = cookies[COOKIE]
    for at in (0, 10, len(session) // 2, len(session) - 1):
        r = site.get("/orders/2", {COOKIE: flip(session, at)})
        assert r.status_code == 302, at  # sent to sign in again
        assert f"{COOKIE}=; Path=/; Max-Age=0" in r.headers["Set-Cookie"]
    assert site.get("/orders/2", {COOKIE: session[:-20]}).status_code == 302
    assert site.get("/orders/2", {COOKIE: ""}).status_code == 302

    # A session sealed by another gateway (its own cookie keys) does not open here.
    other = make_site(tmp_path / "other", upstream, idp_factory, request)
    page2 = page.context.browser.new_context(ignore_https_errors=True).new_page()
    foreign = signed_in_cookies(other, page2)
    assert other.get("/orders/3", foreign).status_code == 200
    assert site.get("/orders/3", foreign).status_code == 302
    # Two session cookies of the name (cookie tossing) are refused, not one picked.
    r = requests.get(site.url + "/orders/3", verify=False, allow_redirects=False, timeout=15,
                     headers={"Accept": "application/json", "Cookie": f"{COOKIE}={session}; {COOKIE}={session}"})
    assert r.status_code == 401


def test_callbacks_that_must_fail_show_an_error_page(site, page, browser_context, artifacts_dir, upstream):
    # Record the real callback (code and state) and the login cookie set for it.
    callbacks: list[str] = []
    page.on("request", lambda r: callbacks.append(r.url) if "/.iap/callback" in r.url else None)
    page.goto(site.url + "/orders/9")
    page.wait_for_selector("#username")
    login = [c for c in page.context.cookies() if c["name"].startswith(COOKIE + "-login-")]
    assert len(login) == 1, login
    name, value = login[0]["name"], login[0]["value"]
    sign_in(page, "alice", USERS["alice"]["password"])
    page.wait_for_url(site.url + "/orders/9")
    assert len(callbacks) == 1
    callback = callbacks[0]
    path = callback[len(site.url):]

    # Replayed with its own login cookie: refused before the IdP is asked.
    r = site.get(path, {name: value})
    assert r.status_code == 400 and "This sign-in link was already used." in r.text
    assert COOKIE + "=" not in r.headers.get("Set-Cookie", "")
    # State that does not match the login cookie.
    state = parse_qs(urlsplit(callback).query)["state"][0]
    r = site.get(f"/.iap/callback?code=x&state={state[:8]}{'A' * 35}", {name: value})
    assert r.status_code == 400 and "not started in this browser" in r.text
    # The provider's own refusal.
    r = site.get(f"/.iap/callback?error=access_denied&state={state}", {name: value})
    assert r.status_code == 400  # this state was already completed: its cookie no longer counts
    # A callback this browser never started.
    fresh = browser_context.browser.new_context(ignore_https_errors=True).new_page()
    fresh.goto(site.url + path)
    assert "not started in this browser" in fresh.inner_text("#message")
    assert fresh.get_attribute("#retry", "href") == "/"
    fresh.screenshot(path=str(artifacts_dir / "3-callback-error.png"))
    # The error page never loops: it is a page, not a redirect, and its headers keep it private.
    r = site.get(path)
    assert r.status_code == 400 and r.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_provider_error_on_a_live_sign_in_shows_its_page(site):
    r = site.get("/orders/1")
    state = parse_qs(urlsplit(r.headers["Location"]).query)["state"][0]
    cookie = r.headers["Set-Cookie"].split(";")[0].split("=", 1)
    r = site.get(f"/.iap/callback?error=access_denied&state={state}", {cookie[0]: cookie[1]})
    assert r.status_code == 403
    assert "The identity provider did not sign you in." in r.text
    assert 'href="/orders/1"' in r.text  # try again leads back where the sign-in was for
    assert f"{cookie[0]}=; Path=/; Max-Age=0" in r.headers["Set-Cookie"]


def test_the_return_url_stays_on_this_site(site, page):
    for path in ["//evil.example/", "/%2F%2Fevil.example/", "/\\evil.example"]:
        r = site.get(path)
        if r.status_code != 302:
            continue  # refused before any sign-in (Caddy's own path handling)
        page.context.clear_cookies()
        page.goto(site.url + path)
        if page.url.startswith(site.idp.issuer):
            sign_in(page, "alice", USERS["alice"]["password"])
        page.wait_for_url(re.compile(re.escape(site.url) + ".*"))
        assert urlsplit(page.url).netloc == urlsplit(site.url).netloc, page.url


def b64u_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_expired_and_idle_sessions_are_refused(site, page):
    """A session resealed here with the gateway's own key from Caddy storage (so only its times
    differ) is refused once past its absolute or idle lifetime."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cookies = signed_in_cookies(site, page)
    key = base64.b64decode(stored_keys(site).read_text().split()[0])
    raw = b64u_decode("".join(v for _, v in sorted(cookies.items())))
    aad = b"caddy-iap session v1"
    session = json.loads(AESGCM(key).decrypt(raw[4:16], raw[16:], aad))
    assert session["sub"] == "alice" and session["id_token"].count(".") == 2

    def sealed(**times) -> dict:
        nonce = secrets.token_bytes(12)
        body = AESGCM(key).encrypt(nonce, json.dumps(session | times).encode(), aad)
        return {COOKIE: base64.urlsafe_b64encode(raw[:4] + nonce + body).decode().rstrip("=")}

    now = int(time.time())
    assert site.get("/orders/7", sealed(seen_at=now - 60)).status_code == 200, "the reseal itself is good"
    r = site.get("/orders/7", sealed(created_at=now - 13 * 3600, seen_at=now - 60))
    assert r.status_code == 302 and f"{COOKIE}=; Path=/; Max-Age=0" in r.headers["Set-Cookie"]
    assert site.get("/orders/7", sealed(seen_at=now - 3601)).status_code == 302, "idle for an hour"


# --------------------------------------------------------------------------------------------
# Key rotation and refresh


def stored_keys(site: Site) -> Path:
    return site.storage / "iap" / "login" / "cookie-keys.b64"


def test_rotated_cookie_keys_keep_sessions_until_the_old_key_is_removed(site, page):
    cookies = signed_in_cookies(site, page)
    keys = stored_keys(site)
    old = keys.read_text().split()
    assert len(old) == 1 and len(base64.b64decode(old[0])) == 32
    new = base64.b64encode(secrets.token_bytes(32)).decode()
    keys.write_text(f"{new}\n{old[0]}\n")
    site.reload()
    assert site.get("/orders/4", cookies).status_code == 200, "a session sealed by the old key"
    # A new sign-in is sealed with the new key: it survives the old key's removal.
    page.context.clear_cookies()
    fresh = signed_in_cookies(site, page)
    keys.write_text(f"{new}\n")
    site.reload()
    assert site.get("/orders/4", cookies).status_code == 302, "the retired key no longer opens"
    assert site.get("/orders/4", fresh).status_code == 200


def test_an_expiring_id_token_is_refreshed(tmp_path, upstream, idp_factory, request, page):
    # The ID token lives 4 s; the gateway refreshes it when half of that is left (30 s before
    # its end for the usual, longer-lived ones).
    site = make_site(tmp_path / "caddy", upstream, idp_factory, request, id_token_ttl=4)
    cookies = signed_in_cookies(site, page)
    time.sleep(3)
    # A page's parallel requests arrive together: they share one refresh (a provider that
    # rotates refresh tokens would revoke a second use).
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda i: site.get(f"/orders/{i}", cookies), range(6)))
    assert [x.status_code for x in responses] == [200] * 6
    assert site.idp.log_path.read_text().count("grant=refresh_token") == 1
    r = responses[0]
    renewed = [c for c in r.headers.get("Set-Cookie", "").split(", ") if c.startswith(COOKIE + "=")]
    assert renewed, r.headers
    # A proxied response carrying someone's session cookie is never kept by a shared cache.
    assert r.headers["Cache-Control"] == "private, no-store"
    assert r.json()["upstream"] is True


# --------------------------------------------------------------------------------------------
# Database access from the access page


def test_the_access_page_gives_a_psql_command_that_works(tmp_path, upstream, idp_factory, request, page,
                                                          monkeypatch, artifacts_dir):
    from pglib import ADMIN_PASSWORD, ADMIN_USER, DB, Postgres

    pg = Postgres().start()
    request.addfinalizer(pg.stop)
    monkeypatch.setenv("IAP_TEST_PG_ADMIN_PASSWORD", ADMIN_PASSWORD)
    credentials = f"""postgres_credentials {{
	admin "host=127.0.0.1 port={pg.port} user={ADMIN_USER} dbname={DB} sslmode=disable" {{
		password_env IAP_TEST_PG_ADMIN_PASSWORD
	}}
	grant editor app_reader
	databases {DB}
	ttl 10m
	connect 127.0.0.1:{pg.port}
}}"""
    site = make_site(tmp_path / "caddy", upstream, idp_factory, request, iap_extra=credentials,
                     login_extra="cosmos_endpoint https://cosmos.example.test:8081/")
    signed_in_cookies(site, page)
    page.goto(site.url + "/.iap/")
    # The Cosmos DB gateway is listed with how to point the SDK at it.
    assert page.inner_text(".cosmos-endpoint") == 'CosmosClient("https://cosmos.example.test:8081/", credential=your_token_credential)'
    page.screenshot(path=str(artifacts_dir / "4-access-page-databases.png"))
    page.click(f"#psql-{DB}")
    page.wait_for_selector("#psql")
    command = page.inner_text("#psql")
    page.screenshot(path=str(artifacts_dir / "5-psql-command.png"))
    assert command.startswith("PGPASSWORD='") and f"dbname={DB}" in command
    assert "Valid until" in page.inner_text("#message")

    # Pasted into a shell, with a query added: logs in as the minted role, which may read only.
    out = subprocess.run(["bash", "-c", command + " -Atc 'SELECT current_user, count(*) FROM orders'"],
                         capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})
    assert out.returncode == 0, out.stderr
    role, rows = out.stdout.strip().split("|")
    assert role.startswith("iap_") and int(rows) >= 2
    out = subprocess.run(["bash", "-c", command + " -Atc \"INSERT INTO orders (item) VALUES ('x')\""],
                         capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})
    assert out.returncode != 0 and "permission denied" in out.stderr
    password = command.split("'")[1]
    assert password not in site.caddy.log_text()

    # A cross-site form cannot mint a login in the person's name.
    cookies = {c["name"]: c["value"] for c in page.context.cookies() if c["name"].startswith(COOKIE)}
    r = requests.post(site.url + "/.iap/postgres", data={"dbname": DB}, cookies=cookies, verify=False,
                      headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
                      allow_redirects=False, timeout=15)
    assert r.status_code == 403
    r = requests.post(site.url + "/.iap/postgres", data={"dbname": DB}, cookies=cookies, verify=False,
                      allow_redirects=False, timeout=15)
    assert r.status_code == 403, "no Origin at all"
