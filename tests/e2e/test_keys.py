"""Issuer keys over time: rotation at the IdP, the IdP going away, the IdP not there yet."""

import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from iaplib import issuer_block, make_keys, unverified_claims, unverified_header, write_jwks

RULES = """
role reader claim groups contains readers
allow reader GET /items/*
"""


def test_rotation_new_kid_is_fetched_without_restarting_caddy(idp_factory, upstream, caddy, tmp_path):
    p = idp_factory("RS256")
    old_kid = p.keys[0]["kid"]
    site = caddy(issuer_block(p.issuer) + RULES)
    old_token = p.token("reader")
    assert unverified_header(old_token)["kid"] == old_kid
    assert site.get("/items/1", old_token).status_code == 200

    # The documented oidc-provider rotation: a new signing key first, the old one kept.
    new_keys = make_keys(tmp_path / "new-key.json", "ES256")["keys"]
    p.restart(write_jwks(tmp_path / "rotated.json", new_keys + p.keys))
    new_token = p.token("reader")
    assert unverified_header(new_token)["kid"] == new_keys[0]["kid"] != old_kid

    caddy_pid = site.proc.pid
    r = site.get("/items/2", new_token)
    assert r.status_code == 200, f"a token signed by the new key was refused: {r.status_code} {r.text}"
    assert upstream.last().one("X-IAP-User") == unverified_claims(new_token)["sub"]
    assert site.get("/items/3", old_token).status_code == 200, "the old key is still published"
    assert site.proc.pid == caddy_pid and site.running


def test_second_rotation_within_kid_miss_cooldown_window(idp_factory, upstream, caddy, tmp_path):
    """Two rotations, each followed by a new kid: with a short cooldown both are picked up."""
    p = idp_factory("RS256")
    site = caddy(issuer_block(p.issuer, "kid_miss_cooldown 1s") + RULES)
    assert site.get("/items/1", p.token("reader")).status_code == 200
    for i in range(2):
        new = make_keys(tmp_path / f"k{i}.json", "RS256")["keys"]
        p.restart(write_jwks(tmp_path / f"rot{i}.json", new + p.keys))
        time.sleep(1.2)  # past the cooldown since the previous kid-miss fetch
        token = p.token("reader")
        assert unverified_header(token)["kid"] == new[0]["kid"]
        assert site.get("/items/1", token).status_code == 200, f"rotation {i + 1}"


def test_provider_down_known_keys_keep_working(idp_factory, upstream, caddy):
    p = idp_factory("RS256", "ES256")
    site = caddy(issuer_block(p.issuer, "fetch_timeout 2s") + RULES)
    first = p.token("reader")
    assert site.get("/items/1", first).status_code == 200
    unused = p.token("reader")  # never seen by Caddy: not in its verified-token cache
    assert unused != first
    p.stop()

    assert site.get("/items/2", unused).status_code == 200, "a token signed by a known key must verify with the IdP down"
    assert site.get("/items/3", first).status_code == 200

    # An unknown kid with the IdP down: refused, quickly, and Caddy keeps serving.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stray = jwt.encode(unverified_claims(unused), key, algorithm="RS256",
                       headers={"kid": "never-published", "typ": "at+jwt"})
    upstream.clear()
    started = time.monotonic()
    r = site.get("/items/4", stray)
    assert r.status_code == 401, r.text
    assert time.monotonic() - started < 5, "an unknown kid must not hang the request past the fetch timeout"
    assert upstream.count() == 0
    assert site.get("/items/5", unused).status_code == 200


def test_provider_down_at_start_then_back(idp_factory, upstream, caddy):
    """An unreachable IdP never fails the config load; with no keys yet requests get 503; once
    the IdP is back, the keys are fetched and tokens pass."""
    p = idp_factory("RS256")
    token = p.token("reader")
    p.stop()

    site = caddy(issuer_block(p.issuer, "fetch_timeout 1s", "refresh_min 1s") + RULES)
    assert site.running, "caddy must start with the identity provider down"
    r = site.get("/items/1", token)
    assert r.status_code == 503, f"no keys yet must answer 503, got {r.status_code}: {r.text}"
    assert upstream.count() == 0

    p.start()
    deadline = time.monotonic() + 20
    statuses = []
    while time.monotonic() < deadline:
        r = site.get("/items/1", token)
        statuses.append(r.status_code)
        if r.status_code == 200:
            break
        assert r.status_code == 503, f"while keys load only 503 is acceptable, got {r.status_code}: {r.text}"
        time.sleep(0.5)
    assert statuses[-1] == 200, f"keys never loaded after the IdP came back: {statuses}"
    assert upstream.count() == 1
