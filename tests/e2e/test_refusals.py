"""Every way a request can be refused: 401 for a missing or bad token, 403 for a good token
without the rights. In every case the upstream is never reached."""

import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from iaplib import OTHER_AUD, b64url, issuer_block, raw_request, unverified_claims, unverified_header

RULES = """
role reader claim groups contains readers
role admin claim groups contains admins
allow reader GET /items/*
allow admin * *
"""


@pytest.fixture
def site(idp, caddy):
    return caddy(issuer_block(idp.issuer, "leeway 1s") + "\n" + RULES)


def assert_refused(resp, status, upstream):
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text}"
    if status == 401:
        www = resp.headers.get("WWW-Authenticate", "")
        assert www.startswith("Bearer"), f"401 without a Bearer challenge: {www!r}"
    assert upstream.count() == 0, f"the upstream was reached: {[(s.method, s.path) for s in upstream.requests]}"


def idp_private_key(idp, alg):
    jwk = next(k for k in idp.keys if k["alg"] == alg)
    return jwk["kid"], jwt.PyJWK(jwk).key


def fresh_claims(idp, client="reader") -> dict:
    """The claims of a real, current token (for re-signing)."""
    return unverified_claims(idp.token(client))


def sign(claims: dict, key, alg: str, kid: str, typ: str = "at+jwt") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": typ})


def test_no_token(site, upstream):
    assert_refused(site.get("/items/1"), 401, upstream)


@pytest.mark.parametrize("authorization", [
    "Bearer garbage",
    "Bearer a.b.c",
    "Bearer eyJhbGciOiJSUzI1NiJ9.e30.",
    "Bearer ",
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "bearer\tx",
])
def test_garbage_token(site, upstream, authorization):
    assert_refused(site.get("/items/1", headers={"Authorization": authorization}), 401, upstream)


def test_oversized_token(idp, site, upstream):
    token = idp.token("reader")
    assert_refused(site.get("/items/1", token + "A" * 9000), 401, upstream)


def test_token_for_another_audience(idp, site, upstream):
    token = idp.token("reader", audience=OTHER_AUD)
    assert unverified_claims(token)["aud"] == OTHER_AUD
    assert_refused(site.get("/items/1", token), 401, upstream)


def test_token_from_untrusted_issuer(idp_factory, site, upstream):
    stranger = idp_factory("RS256", name="stranger")
    token = stranger.token("reader")
    assert_refused(site.get("/items/1", token), 401, upstream)


def test_expired_token(idp, site, upstream):
    token = idp.token("shortlived")
    exp = unverified_claims(token)["exp"]
    assert site.get("/items/1", token).status_code == 200, "a fresh short-lived token must pass first"
    upstream.clear()
    # exp (2 s after issue) + leeway 1 s + margin; the token is now in the verified-token cache,
    # which must not outlive exp.
    time.sleep(max(0.0, exp + 1 + 1.5 - time.time()))
    assert_refused(site.get("/items/1", token), 401, upstream)


def test_roles_do_not_allow_route(idp, site, upstream):
    assert_refused(site.get("/items/1", idp.token("nobody")), 403, upstream)
    assert_refused(site.get("/admin", idp.token("reader")), 403, upstream)
    assert_refused(site.request("POST", "/items/1", idp.token("reader")), 403, upstream)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_token_signed_by_unpublished_key_with_known_kid(idp, site, upstream, alg):
    kid, _ = idp_private_key(idp, alg)
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    forged = sign(fresh_claims(idp), key, alg, kid)
    assert_refused(site.get("/items/1", forged), 401, upstream)


def test_alg_none(idp, site, upstream):
    kid = idp.keys[0]["kid"]
    claims = fresh_claims(idp, "admin")
    for alg in ("none", "None", "NONE"):
        header = {"alg": alg, "typ": "at+jwt", "kid": kid}
        unsigned = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."
        assert_refused(site.get("/admin", unsigned), 401, upstream)


def test_hmac_with_public_key_as_secret(idp, site, upstream):
    """Algorithm confusion: HS256 keyed with the issuer's RSA public key."""
    kid, private = idp_private_key(idp, "RS256")
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(fresh_claims(idp, 'admin')).encode())}"
    for secret in (public_pem, public_pem.strip()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert_refused(site.get("/admin", f"{signing_input}.{b64url(mac)}"), 401, upstream)


def test_tampered_payload(idp, site, upstream):
    token = idp.token("reader")
    header, _, signature = token.split(".")
    claims = unverified_claims(token)
    claims["groups"] = ["admins"]
    tampered = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    assert_refused(site.get("/admin", tampered), 401, upstream)


def test_alg_header_swapped(idp, site, upstream):
    """An ES256 token relabelled RS256 (and the reverse) must not verify."""
    for client, fake in (("admin", "RS256"), ("reader", "ES256")):
        token = idp.token(client)
        header = unverified_header(token)
        header["alg"] = fake
        _, payload, signature = token.split(".")
        relabelled = f"{b64url(json.dumps(header).encode())}.{payload}.{signature}"
        assert_refused(site.get("/items/1", relabelled), 401, upstream)


def test_locally_minted_control_token_passes(idp, site, upstream):
    """Control for the claim tests below: a token this test signs with the IdP's real key and
    sound claims is accepted, so the refusals below are about the claims alone."""
    kid, key = idp_private_key(idp, "RS256")
    r = site.get("/items/1", sign(fresh_claims(idp), key, "RS256", kid))
    assert r.status_code == 200, r.text
    assert upstream.count() == 1


@pytest.mark.parametrize("case", [
    "wrong-iss", "iss-trailing-slash", "no-iss", "no-aud", "no-exp", "nbf-future",
    "iat-future", "lifetime-over-max", "exp-past", "aud-list-other",
])
def test_signed_by_idp_key_but_bad_claims(idp, site, upstream, case):
    kid, key = idp_private_key(idp, "RS256")
    claims = fresh_claims(idp)
    now = int(time.time())
    if case == "wrong-iss":
        claims["iss"] = "http://127.0.0.1:1"
    elif case == "iss-trailing-slash":
        claims["iss"] = idp.issuer + "/"
    elif case == "no-iss":
        del claims["iss"]
    elif case == "no-aud":
        del claims["aud"]
    elif case == "no-exp":
        del claims["exp"]
    elif case == "nbf-future":
        claims["nbf"] = now + 600
    elif case == "iat-future":
        claims["iat"] = now + 600
        claims["exp"] = now + 900
    elif case == "lifetime-over-max":
        claims["iat"] = now
        claims["exp"] = now + 48 * 3600
    elif case == "exp-past":
        claims["iat"] = now - 600
        claims["exp"] = now - 300
    elif case == "aud-list-other":
        claims["aud"] = [OTHER_AUD, "https://third.test"]
    assert_refused(site.get("/items/1", sign(claims, key, "RS256", kid)), 401, upstream)


def test_two_token_cookies_are_refused(idp, upstream, caddy):
    """Cookie tossing: a sibling domain or a more specific path can add a second cookie of the
    token's name. Which one a server reads first is a guess, so neither is used: 400."""
    site = caddy(issuer_block(idp.issuer) + "\n" + RULES + "\ntoken_source cookie iap_session")
    good = idp.token("reader")
    other = idp.token("admin")
    for cookies in ([f"iap_session={other}; iap_session={good}"],
                    [f"iap_session={good}", f"theme=dark; iap_session={other}"]):
        status, _, body = raw_request(site.url, "GET", "/items/1", [("Cookie", c) for c in cookies])
        assert status == 400, f"{cookies}: {status} {body!r}"
    assert upstream.count() == 0
    # One cookie of that name (and others of other names) is fine.
    status, _, body = raw_request(site.url, "GET", "/items/1", [("Cookie", f"iap_session_old=x; iap_session={good}")])
    assert status == 200, body
