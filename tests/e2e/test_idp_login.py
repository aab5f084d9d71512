"""Browser sign-in at the test IdP itself (no gateway): the authorization code flow with PKCE
through the real login form in headless Chromium, the ID token's claims, refresh, and
RP-initiated logout. The gateway's own browser tests build on what these establish.

The redirect URIs point at a small HTTPS catcher on 127.0.0.1 with a self-signed certificate,
as the gateway's will (the browser context ignores certificate errors)."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iaplib import CLIENTS, USERS, b64url, browser_client, sign_in

CLIENT = "gateway"
SECRET = "gateway-secret"
ID_TOKEN_TTL = 120


# --------------------------------------------------------------------------------------------
# The relying party's side: a redirect URI catcher and the authorization request


class _Catch(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.seen.append(self.path)
        body = b"<!DOCTYPE html><title>caught</title><p>caught</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def self_signed(dirpath) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = dirpath / "catcher.crt", dirpath / "catcher.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


class Catcher:
    """An HTTPS server that answers every GET with a tiny page and records its path."""

    def __init__(self, dirpath):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Catch)
        self.server.daemon_threads = True
        self.server.seen = []
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(*self_signed(dirpath))
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.callback = f"{self.base}/.iap/callback"
        self.after_logout = f"{self.base}/signed-out"
        self.localhost_callback = self.callback.replace("127.0.0.1", "localhost")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def seen(self) -> list[str]:
        return list(self.server.seen)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@dataclass
class AuthRequest:
    url: str
    state: str
    nonce: str
    verifier: str


def auth_request(idp, redirect_uri: str, scope: str = "openid email profile", **override) -> AuthRequest:
    verifier = b64url(secrets.token_bytes(32))
    params = {
        "client_id": CLIENT,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": b64url(secrets.token_bytes(16)),
        "nonce": b64url(secrets.token_bytes(16)),
        "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
        **override,
    }
    params = {k: v for k, v in params.items() if v is not None}
    url = f"{idp.discovery()['authorization_endpoint']}?{urlencode(params)}"
    return AuthRequest(url, params.get("state"), params.get("nonce"), verifier)


def token_post(idp, data: dict) -> requests.Response:
    return requests.post(idp.discovery()["token_endpoint"], data=data, auth=(CLIENT, SECRET), timeout=10)


def exchange(idp, code: str, req: AuthRequest, redirect_uri: str, verifier: str | None = None) -> requests.Response:
    return token_post(idp, {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                            "code_verifier": verifier or req.verifier})


def verify_id_token(idp, token: str) -> dict:
    key = jwt.PyJWKClient(idp.discovery()["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, key, algorithms=["RS256", "ES256"], audience=CLIENT, issuer=idp.issuer)


def wait_for_redirect(page, prefix: str) -> dict[str, str]:
    """Waits until the browser is at prefix (the catcher) and returns its query parameters."""
    page.wait_for_url(lambda u: u.startswith(prefix))
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def catcher(tmp_path):
    c = Catcher(tmp_path)
    yield c
    c.close()


@pytest.fixture
def login_idp(idp_factory, catcher):
    """An IdP with the machine clients, the default USERS and a browser client `gateway` whose
    redirect URIs are the catcher's."""
    clients = {**CLIENTS, CLIENT: browser_client([catcher.callback, catcher.localhost_callback], [catcher.after_logout],
                                                 secret=SECRET,
                                                 id_token_ttl=ID_TOKEN_TTL)}
    return idp_factory("RS256", "ES256", clients=clients, name="login-idp")


def sign_in_and_get_code(page, idp, catcher, req: AuthRequest, user: str = "alice", shots=None) -> str:
    page.goto(req.url)
    if shots:
        page.wait_for_selector("#username")
        page.screenshot(path=str(shots / "login-form.png"), full_page=True)
    sign_in(page, user, USERS[user]["password"])
    got = wait_for_redirect(page, catcher.callback)
    assert got.get("state") == req.state, got
    assert got.get("iss") == idp.issuer, got  # RFC 9207: the RP can tell which IdP answered
    assert "error" not in got, got
    return got["code"]


# --------------------------------------------------------------------------------------------
# Tests


def test_discovery_advertises_browser_sign_in(login_idp):
    doc = login_idp.discovery()
    base = login_idp.issuer
    assert doc["authorization_endpoint"] == f"{base}/auth"
    assert doc["token_endpoint"] == f"{base}/token"
    assert doc["end_session_endpoint"] == f"{base}/session/end"
    assert doc["jwks_uri"] == f"{base}/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "authorization_code" in doc["grant_types_supported"]
    assert "refresh_token" in doc["grant_types_supported"]
    assert "client_credentials" in doc["grant_types_supported"]
    assert {"groups", "roles", "email", "email_verified", "name"} <= set(doc["claims_supported"])


def test_machine_clients_still_work_beside_browser_ones(login_idp):
    """A browser client in the clients file changes nothing for client_credentials."""
    assert jwt.decode(login_idp.token("reader", scope="items:read"), options={"verify_signature": False})["sub"] == "user-reader"
    r = requests.post(f"{login_idp.issuer}/token", data={"grant_type": "client_credentials"},
                      auth=(CLIENT, SECRET), timeout=5)
    assert r.status_code == 400 and "grant type is not allowed" in r.json()["error_description"], r.text


def test_sign_in_code_flow_with_pkce(login_idp, catcher, page, artifacts_dir):
    req = auth_request(login_idp, catcher.callback)
    code = sign_in_and_get_code(page, login_idp, catcher, req, shots=artifacts_dir)

    r = exchange(login_idp, code, req, catcher.callback)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["refresh_token"]
    claims = verify_id_token(login_idp, body["id_token"])
    assert claims["nonce"] == req.nonce
    assert claims["aud"] == CLIENT
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com"
    assert claims["email_verified"] is True
    assert claims["name"] == "Alice Adams"
    assert claims["groups"] == ["staff", "admins"]
    assert claims["roles"] == ["editor", "viewer"]
    assert claims["exp"] - claims["iat"] == ID_TOKEN_TTL
    assert jwt.get_unverified_header(body["id_token"])["kid"] == login_idp.keys[0]["kid"]

    # A code is good for one exchange only.
    again = exchange(login_idp, code, req, catcher.callback)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text

    log = login_idp.log_path.read_text()
    assert "idp: login user=alice client=gateway" in log
    assert USERS["alice"]["password"] not in log


def test_claims_follow_the_scopes(login_idp, catcher, page):
    """With scope `openid` alone, groups and roles still come (the gateway's rules need them);
    email and name only with the `email` and `profile` scopes."""
    req = auth_request(login_idp, catcher.callback, scope="openid")
    code = sign_in_and_get_code(page, login_idp, catcher, req, user="bob")
    claims = verify_id_token(login_idp, exchange(login_idp, code, req, catcher.callback).json()["id_token"])
    assert claims["sub"] == "bob"
    assert claims["groups"] == ["guests"]
    assert not {"email", "email_verified", "name", "roles"} & claims.keys(), claims


def test_wrong_password_shows_the_error_on_the_form(login_idp, catcher, page, artifacts_dir):
    req = auth_request(login_idp, catcher.callback)
    page.goto(req.url)
    sign_in(page, "alice", "not-her-password")
    page.wait_for_selector("#error")
    page.screenshot(path=str(artifacts_dir / "wrong-password.png"), full_page=True)
    assert page.title() == "Sign in"
    assert "Invalid username or password" in page.inner_text("#error")
    assert page.url.startswith(f"{login_idp.issuer}/interaction/")
    assert catcher.seen == [], "a wrong password reached the redirect URI"
    # An unknown user gets the same answer.
    sign_in(page, "mallory", "whatever")
    page.wait_for_selector("#error")
    assert catcher.seen == []
    # The form still works after that.
    sign_in(page, "alice", USERS["alice"]["password"])
    got = wait_for_redirect(page, catcher.callback)
    assert got["state"] == req.state and got["code"]
    log = login_idp.log_path.read_text()
    assert log.count("idp: login refused client=gateway") == 2
    assert "not-her-password" not in log and "mallory" not in log


def test_pkce_is_required(login_idp, catcher, page):
    def auth_error(**override) -> dict:
        r = requests.get(auth_request(login_idp, catcher.callback, **override).url, allow_redirects=False, timeout=5)
        assert r.status_code in (302, 303), r.text
        assert r.headers["location"].startswith(catcher.callback)
        return {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}

    assert auth_error(code_challenge=None, code_challenge_method=None)["error"] == "invalid_request"
    assert auth_error(code_challenge_method="plain")["error"] == "invalid_request"

    # The code is bound to the challenge: another verifier cannot redeem it.
    req = auth_request(login_idp, catcher.callback)
    code = sign_in_and_get_code(page, login_idp, catcher, req)
    r = exchange(login_idp, code, req, catcher.callback, verifier=b64url(secrets.token_bytes(32)))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


def test_https_loopback_redirect_uris_are_accepted(login_idp, catcher):
    """The gateway's redirect URI is https on 127.0.0.1 or localhost, the issuer plain http."""
    for uri in (catcher.callback, catcher.localhost_callback):
        r = requests.get(auth_request(login_idp, uri).url, allow_redirects=False, timeout=5)
        assert r.status_code == 303 and r.headers["location"].startswith("/interaction/"), (uri, r.status_code, r.text)


def test_unregistered_redirect_uri_is_refused(login_idp, catcher):
    r = requests.get(auth_request(login_idp, f"{catcher.base}/elsewhere").url, allow_redirects=False, timeout=5)
    assert r.status_code == 400
    assert "redirect_uri" in r.text
    assert catcher.seen == []


def test_refresh_returns_a_new_id_token(login_idp, catcher, page):
    req = auth_request(login_idp, catcher.callback)
    first = exchange(login_idp, sign_in_and_get_code(page, login_idp, catcher, req), req, catcher.callback).json()

    # ID tokens have one-second timestamps and nothing random: within the same second the
    # refreshed one would be byte for byte the first.
    time.sleep(1.1)
    r = token_post(login_idp, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["access_token"] != first["access_token"]
    old, new = verify_id_token(login_idp, first["id_token"]), verify_id_token(login_idp, second["id_token"])
    print("refreshed ID token claims:", new)
    assert new["iat"] > old["iat"] and new["exp"] > old["exp"]
    assert new["sub"] == "alice" and new["aud"] == CLIENT
    assert new["groups"] == old["groups"] and new["email"] == old["email"] and new["roles"] == old["roles"]

    # Another client's secret cannot use it.
    r = requests.post(f"{login_idp.issuer}/token", auth=("reader", CLIENTS["reader"]["client_secret"]), timeout=5,
                      data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert r.status_code in (400, 401), r.text


def test_logout_ends_the_idp_session(login_idp, catcher, page, artifacts_dir):
    req = auth_request(login_idp, catcher.callback)
    tokens = exchange(login_idp, sign_in_and_get_code(page, login_idp, catcher, req), req, catcher.callback).json()

    # Signed in at the IdP: a new authorization request comes straight back with a code.
    again = auth_request(login_idp, catcher.callback)
    page.goto(again.url)
    assert wait_for_redirect(page, catcher.callback)["state"] == again.state
    assert login_idp.log_path.read_text().count("idp: login user=alice") == 1

    end = login_idp.discovery()["end_session_endpoint"]
    state = b64url(secrets.token_bytes(8))
    page.goto(f"{end}?" + urlencode({"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": catcher.after_logout,
                                     "state": state}))
    got = wait_for_redirect(page, catcher.after_logout)  # the confirmation submits itself
    assert got == {"state": state}
    assert "idp: logout client=gateway" in login_idp.log_path.read_text()

    # The refresh token was bound to that session.
    r = token_post(login_idp, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text

    # Signed out at the IdP: the login form again.
    page.goto(auth_request(login_idp, catcher.callback).url)
    page.wait_for_selector("#username")
    assert page.title() == "Sign in"
    page.screenshot(path=str(artifacts_dir / "login-after-logout.png"), full_page=True)


def test_logout_to_an_unregistered_uri_is_refused(login_idp, catcher, page):
    req = auth_request(login_idp, catcher.callback)
    tokens = exchange(login_idp, sign_in_and_get_code(page, login_idp, catcher, req), req, catcher.callback).json()
    end = login_idp.discovery()["end_session_endpoint"]
    r = requests.get(end, params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": f"{catcher.base}/evil"},
                     allow_redirects=False, timeout=5)
    assert r.status_code == 400, r.text
    assert "post_logout_redirect_uri" in r.text
