"""A valid token gets through with the caller's identity; the upstream gets identity headers and
a signed assertion it can verify; nothing a client sends can pose as either."""

import json
import time

import jwt
import pytest

from iaplib import issuer_block, raw_request, unverified_claims

ASSERTION_AUD = "https://upstream.test"

RULES = """
role reader claim groups contains readers
role admin claim groups contains admins
allow reader GET,HEAD /items/*
allow admin * *
"""


def config(idp, *, assertion: str | None = None, extra: str = "") -> str:
    parts = [issuer_block(idp.issuer), RULES]
    if assertion is not None:
        parts.append(assertion)
    parts.append(extra)
    return "\n".join(parts)


def roles_header(value: str | None) -> set[str]:
    assert value is not None, "no roles header"
    return {r.strip() for r in value.split(",") if r.strip()}


def iap_jwks(site) -> dict:
    r = site.get("/.well-known/iap/jwks.json")
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    return r.json()


def verify_assertion(site, assertion: str, *, audience=ASSERTION_AUD, issuer="caddy-iap") -> dict:
    """Verifies an assertion with PyJWT against the JWKS Caddy publishes (ES256 only)."""
    keyset = jwt.PyJWKSet.from_dict(iap_jwks(site))
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == "ES256", header
    assert "kid" in header, header
    key = next((k for k in keyset.keys if k.key_id == header["kid"]), None)
    assert key is not None, f"assertion kid {header['kid']} is not in /.well-known/iap/jwks.json"
    return jwt.decode(
        assertion,
        key,
        algorithms=["ES256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )


def test_valid_token_reaches_upstream_with_identity_headers(idp, upstream, caddy):
    site = caddy(config(idp))
    token = idp.token("reader", scope="items:read")
    claims = unverified_claims(token)

    r = site.get("/items/1?x=1", token)
    assert r.status_code == 200, r.text
    assert r.json()["upstream"] is True

    assert upstream.count() == 1
    seen = upstream.last()
    assert seen.method == "GET"
    assert seen.path == "/items/1?x=1"
    assert seen.one("X-IAP-User") == claims["sub"] == "user-reader"
    assert seen.one("X-IAP-Email") == "reader@example.com"
    assert roles_header(seen.one("X-IAP-Roles")) == {"reader"}
    # No assertion configured: no assertion header.
    assert seen.one("X-IAP-Assertion") is None


def test_es256_token_and_all_roles(idp, upstream, caddy):
    site = caddy(config(idp))
    token = idp.token("admin", scope="items:read items:write")
    r = site.request("DELETE", "/anything", token)
    assert r.status_code == 200, r.text
    seen = upstream.last()
    assert seen.method == "DELETE"
    assert seen.one("X-IAP-User") == "admin"
    assert seen.one("X-IAP-Email") == "admin@example.com"
    assert roles_header(seen.one("X-IAP-Roles")) == {"admin"}


def test_repeated_requests_with_same_token(idp, upstream, caddy):
    """The verified-token cache must give the same identity every time."""
    site = caddy(config(idp))
    token = idp.token("reader")
    for i in range(20):
        assert site.get(f"/items/{i}", token).status_code == 200
    assert upstream.count() == 20
    assert {s.one("X-IAP-User") for s in upstream.requests} == {"user-reader"}


SPOOFED = [
    ("X-IAP-User", "mallory"),
    ("x-iap-user", "mallory2"),
    ("X-IAP-Email", "mallory@evil.test"),
    ("X-IAP-Roles", "admin"),
    ("x-iap-roles", "admin,reader"),
    ("X-IAP-Assertion", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0."),
]


def test_spoofed_identity_headers_are_replaced(idp, upstream, caddy):
    site = caddy(config(idp, assertion=f"assertion {{\n\taudience {ASSERTION_AUD}\n}}"))
    token = idp.token("reader")
    status, _, body = raw_request(site.url, "GET", "/items/1",
                                  [("Authorization", f"Bearer {token}"), *SPOOFED])
    assert status == 200, body
    seen = upstream.last()
    assert seen.all("X-IAP-User") == ["user-reader"]
    assert seen.all("X-IAP-Email") == ["reader@example.com"]
    assert roles_header(seen.one("X-IAP-Roles")) == {"reader"}
    assertions = seen.all("X-IAP-Assertion")
    assert len(assertions) == 1 and assertions[0] != SPOOFED[-1][1]
    assert verify_assertion(site, assertions[0])["sub"] == "user-reader"


def test_spoofed_headers_removed_when_not_set(idp, upstream, caddy):
    """A token without email and a config without assertion: the client's copies of those
    headers must still not reach the upstream."""
    site = caddy(config(idp))
    token = idp.token("noemail")
    status, _, body = raw_request(site.url, "GET", "/items/1",
                                  [("Authorization", f"Bearer {token}"), *SPOOFED])
    assert status == 200, body
    seen = upstream.last()
    assert seen.all("X-IAP-User") == ["noemail"]
    assert seen.all("X-IAP-Email") == [], "a client-sent X-IAP-Email reached the upstream"
    assert roles_header(seen.one("X-IAP-Roles")) == {"reader"}
    assert seen.all("X-IAP-Assertion") == [], "a client-sent X-IAP-Assertion reached the upstream"


@pytest.mark.parametrize("who", ["no-token", "garbage-token", "denied-token"])
def test_spoofed_headers_never_reach_upstream_on_refusal(idp, upstream, caddy, who):
    site = caddy(config(idp))
    auth = {
        "no-token": [],
        "garbage-token": [("Authorization", "Bearer not.a.token")],
        "denied-token": [("Authorization", f"Bearer {idp.token('nobody')}")],
    }[who]
    status, headers, body = raw_request(site.url, "GET", "/items/1", [*auth, *SPOOFED])
    assert status == (403 if who == "denied-token" else 401), body
    assert b"mallory" not in body
    assert upstream.count() == 0


def test_assertion_verifies_against_published_jwks(idp, upstream, caddy):
    site = caddy(config(idp, assertion=f"assertion {{\n\taudience {ASSERTION_AUD}\n}}"))

    jwks = iap_jwks(site)
    assert upstream.count() == 0, "the JWKS must be served by Caddy, not the upstream"
    assert jwks["keys"], jwks
    for k in jwks["keys"]:
        assert k["kty"] == "EC" and k["crv"] == "P-256", k
        assert k.get("kid"), k
        assert "d" not in k, "private key published"

    token = idp.token("reader")
    before = int(time.time())
    assert site.get("/items/1", token).status_code == 200
    assertion = upstream.last().one("X-IAP-Assertion")
    assert assertion, "no X-IAP-Assertion header at the upstream"
    claims = verify_assertion(site, assertion)
    assert claims["iss"] == "caddy-iap"
    assert claims["aud"] == ASSERTION_AUD or claims["aud"] == [ASSERTION_AUD]
    assert claims["sub"] == "user-reader"
    assert isinstance(claims["roles"], list) and set(claims["roles"]) == {"reader"}
    assert claims["jti"]
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert claims["exp"] > before
    assert claims["iat"] <= time.time() + 5


def test_assertion_with_configured_issuer_ttl_and_header(idp, upstream, caddy):
    site = caddy(config(idp, assertion=(
        "assertion {\n"
        f"\taudience {ASSERTION_AUD}\n"
        "\tissuer https://iap.example.test\n"
        "\tttl 2m\n"
        "\theader X-Identity-Assertion\n"
        "}"
    )))
    assert site.get("/items/1", idp.token("admin")).status_code == 200
    seen = upstream.last()
    assertion = seen.one("X-Identity-Assertion")
    assert assertion
    claims = verify_assertion(site, assertion, issuer="https://iap.example.test")
    assert claims["sub"] == "admin"
    assert set(claims["roles"]) == {"admin"}
    assert 0 < claims["exp"] - claims["iat"] <= 120


def test_forged_assertion_does_not_verify(idp, upstream, caddy):
    """Sanity check of verify_assertion itself: a changed payload fails."""
    site = caddy(config(idp, assertion=f"assertion {{\n\taudience {ASSERTION_AUD}\n}}"))
    assert site.get("/items/1", idp.token("reader")).status_code == 200
    h, p, s = upstream.last().one("X-IAP-Assertion").split(".")
    claims = json.loads(jwt.utils.base64url_decode(p))
    claims["roles"] = ["admin"]
    forged = ".".join([h, jwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), s])
    with pytest.raises(jwt.InvalidSignatureError):
        verify_assertion(site, forged)


def test_caddies_sharing_storage_share_assertion_keys(idp, upstream, caddy, tmp_path):
    """Assertion signing keys live in Caddy storage: a cluster publishes one key set, and an
    assertion minted by one instance verifies with any instance's JWKS."""
    shared = tmp_path / "shared-storage"
    cfg = config(idp, assertion=f"assertion {{\n\taudience {ASSERTION_AUD}\n}}")
    a = caddy(cfg, storage=shared)
    a_keys = {k["kid"] for k in iap_jwks(a)["keys"]}
    b = caddy(cfg, storage=shared)
    assert {k["kid"] for k in iap_jwks(b)["keys"]} == a_keys
    assert a.get("/items/1", idp.token("reader")).status_code == 200
    verify_assertion(b, upstream.last().one("X-IAP-Assertion"))


def test_logs_never_contain_tokens(idp, upstream, caddy):
    site = caddy(config(idp, extra="audit"))
    good = idp.token("reader")
    denied = idp.token("nobody")
    assert site.get("/items/1", good).status_code == 200
    assert site.get("/items/1", denied).status_code == 403
    assert site.get("/admin", good).status_code == 403
    wrong_aud = idp.token("reader", audience="https://other.test")
    assert site.get("/items/1", wrong_aud).status_code == 401
    time.sleep(0.5)  # let the log writer flush
    log = site.log_text()
    assert log, "caddy.log is empty: the decisions were not logged"
    for t in (good, denied, wrong_aud):
        header, payload, signature = t.split(".")
        assert signature not in log, "a token signature was logged"
        assert payload not in log, "a token payload was logged"
    assert "user-reader" in log, "the caller (sub) of decisions should be logged"


def test_no_token_for_jwks_endpoint_only(idp, upstream, caddy):
    """The assertion JWKS is public; everything else on the site still needs a token."""
    site = caddy(config(idp, assertion=f"assertion {{\n\taudience {ASSERTION_AUD}\n}}"))
    assert site.get("/.well-known/iap/jwks.json").status_code == 200
    assert site.get("/.well-known/iap/other").status_code == 401
    assert site.get("/").status_code == 401
    assert upstream.count() == 0


# --------------------------------------------------------------------------------------------
# The caller's token stays with Caddy (unless pass_token).


def test_bearer_token_is_not_forwarded(idp, upstream, caddy):
    site = caddy(config(idp))
    r = site.get("/items/1", idp.token("reader"), headers={"X-Other": "kept"})
    assert r.status_code == 200, r.text
    seen = upstream.last()
    assert seen.all("Authorization") == [], "the caller's token reached the upstream"
    assert seen.one("X-Other") == "kept"
    assert seen.one("X-IAP-User") == "user-reader"


def test_pass_token_forwards_the_token(idp, upstream, caddy):
    site = caddy(config(idp, extra="pass_token"))
    token = idp.token("reader")
    assert site.get("/items/1", token).status_code == 200
    assert upstream.last().all("Authorization") == [f"Bearer {token}"]


def test_token_from_a_header_is_not_forwarded(idp, upstream, caddy):
    site = caddy(config(idp, extra="token_source header X-Access-Token"))
    r = site.get("/items/1", headers={"X-Access-Token": idp.token("reader")})
    assert r.status_code == 200, r.text
    seen = upstream.last()
    assert seen.all("X-Access-Token") == []
    assert seen.one("X-IAP-User") == "user-reader"


@pytest.mark.parametrize("pass_token", [False, True])
def test_token_cookie_is_removed_and_other_cookies_kept(idp, upstream, caddy, pass_token):
    site = caddy(config(idp, extra="token_source cookie iap_session" + ("\npass_token" if pass_token else "")))
    token = idp.token("reader")
    cookie = f"theme=dark; iap_session={token}; lang=en"
    status, _, body = raw_request(site.url, "GET", "/items/1", [("Cookie", cookie)])
    assert status == 200, body
    seen = upstream.last()
    assert seen.one("X-IAP-User") == "user-reader"
    if pass_token:
        assert seen.all("Cookie") == [cookie]
    else:
        assert seen.all("Cookie") == ["theme=dark; lang=en"]
        assert all(token not in v for _, v in seen.headers), "the token reached the upstream"


def test_token_only_cookie_leaves_no_cookie_header(idp, upstream, caddy):
    site = caddy(config(idp, extra="token_source cookie iap_session"))
    status, _, body = raw_request(site.url, "GET", "/items/1", [("Cookie", f"iap_session={idp.token('reader')}")])
    assert status == 200, body
    assert upstream.last().all("Cookie") == []


# --------------------------------------------------------------------------------------------
# A client's Connection header cannot take the identity headers away.

IDENTITY_HEADERS = ["X-IAP-User", "X-IAP-Email", "X-IAP-Roles", "X-IAP-Assertion"]


def test_connection_header_cannot_remove_identity_headers(idp, upstream, caddy):
    """reverse_proxy deletes the headers a request's Connection header names, after iap has set
    them; iap must take those names out of Connection first."""
    site = caddy(config(idp, assertion=f"assertion {{\n\taudience {ASSERTION_AUD}\n}}"))
    token = idp.token("reader")
    status, _, body = raw_request(site.url, "GET", "/items/1", [
        ("Authorization", f"Bearer {token}"),
        ("Connection", "keep-alive, X-IAP-User, x-iap-assertion"),
        ("Connection", "X-Iap-Roles,X-IAP-EMAIL"),
    ])
    assert status == 200, body
    seen = upstream.last()
    assert seen.one("X-IAP-User") == "user-reader"
    assert seen.one("X-IAP-Email") == "reader@example.com"
    assert roles_header(seen.one("X-IAP-Roles")) == {"reader"}
    assert verify_assertion(site, seen.one("X-IAP-Assertion"))["sub"] == "user-reader"


def test_connection_upgrade_still_reaches_the_upstream(idp, upstream, caddy):
    """Only the tokens naming our headers go: an Upgrade request stays one."""
    site = caddy(config(idp))
    status, _, body = raw_request(site.url, "GET", "/items/1", [
        ("Authorization", f"Bearer {idp.token('reader')}"),
        ("Connection", "Upgrade, X-IAP-User"),
        ("Upgrade", "websocket"),
    ])
    assert status == 200, body
    seen = upstream.last()
    assert seen.one("X-IAP-User") == "user-reader"
    assert seen.one("Upgrade") == "websocket", seen.headers
    assert "upgrade" in (seen.one("Connection") or "").lower(), seen.headers


# --------------------------------------------------------------------------------------------
# Renamed identity headers: the default names are still the engine's.

# config, headers the upstream must get (a client sends each as "mallory" too), default names
# that must not reach it whatever the client sent.
RENAMED = {
    "user": (
        "headers {\n\tuser X-Remote-User\n}",
        {"X-Remote-User": "user-reader", "X-IAP-Email": "reader@example.com"},
        ["X-IAP-User"],
    ),
    "all": (
        "headers {\n\tuser X-Remote-User\n\temail X-Remote-Email\n\troles X-Remote-Roles\n}\n"
        f"assertion {{\n\taudience {ASSERTION_AUD}\n\theader X-Remote-Assertion\n}}",
        {"X-Remote-User": "user-reader", "X-Remote-Email": "reader@example.com", "X-Remote-Roles": "reader"},
        IDENTITY_HEADERS,
    ),
    "off": ("headers {\n\tuser off\n\temail off\n\troles off\n}", {}, IDENTITY_HEADERS),
}


@pytest.mark.parametrize("which", list(RENAMED))
def test_default_identity_headers_stripped_when_renamed(idp, upstream, caddy, which):
    extra, expected, absent = RENAMED[which]
    site = caddy(config(idp, extra=extra))
    status, _, body = raw_request(site.url, "GET", "/items/1", [
        ("Authorization", f"Bearer {idp.token('reader')}"),
        *SPOOFED,
        *[(name, "mallory") for name in expected if not name.startswith("X-IAP-")],
    ])
    assert status == 200, body
    seen = upstream.last()
    for name in absent:
        assert seen.all(name) == [], f"a client-sent {name} reached the upstream ({which} renamed)"
    for name, value in expected.items():
        assert seen.all(name) == [value], f"{name}: {seen.all(name)}"
    assert b"mallory" not in body
    if which == "all":
        assert verify_assertion(site, seen.one("X-Remote-Assertion"))["sub"] == "user-reader"


# --------------------------------------------------------------------------------------------
# Unverified email ("nOAuth"): an email is used only when email_verified is true.

STAFF = """
role staff claim email suffix @example.com
allow staff GET /staff/*
"""
ASSERTION = f"assertion {{\n\taudience {ASSERTION_AUD}\n}}"


def test_unverified_email_is_ignored(idp, upstream, caddy):
    site = caddy(config(idp, assertion=ASSERTION, extra=STAFF))
    token = idp.token("unverified")
    assert unverified_claims(token)["email_verified"] is False

    # The token is good and the reader role comes from groups: the request passes, without email.
    status, _, body = raw_request(site.url, "GET", "/items/1", [
        ("Authorization", f"Bearer {token}"),
        ("X-IAP-Email", "ceo@example.com"),
    ])
    assert status == 200, body
    seen = upstream.last()
    assert seen.one("X-IAP-User") == "unverified"
    assert seen.all("X-IAP-Email") == [], "an unverified email reached the upstream"
    assert roles_header(seen.one("X-IAP-Roles")) == {"reader"}, "an unverified email granted a role"
    claims = verify_assertion(site, seen.one("X-IAP-Assertion"))
    assert claims["sub"] == "unverified"
    assert "email" not in claims, f"an unverified email is in the assertion: {claims}"

    # A role rule on email does not match it.
    upstream.clear()
    r = site.get("/staff/x", token)
    assert r.status_code == 403, f"an unverified email granted staff: {r.status_code} {r.text}"
    assert upstream.count() == 0

    # A verified email from the same issuer still does.
    r = site.get("/staff/x", idp.token("reader"))
    assert r.status_code == 200, r.text
    assert upstream.last().one("X-IAP-Email") == "reader@example.com"
    assert roles_header(upstream.last().one("X-IAP-Roles")) == {"reader", "staff"}


def test_trust_unverified_email(idp, upstream, caddy):
    site = caddy("\n".join([issuer_block(idp.issuer, "trust_unverified_email"), RULES, ASSERTION, STAFF]))
    token = idp.token("unverified")
    assert site.get("/items/1", token).status_code == 200
    seen = upstream.last()
    assert seen.one("X-IAP-Email") == "ceo@example.com"
    assert roles_header(seen.one("X-IAP-Roles")) == {"reader", "staff"}
    assert verify_assertion(site, seen.one("X-IAP-Assertion"))["email"] == "ceo@example.com"
    assert site.get("/staff/x", token).status_code == 200
