"""The test identity provider itself: what the other tests take for granted about its tokens.
These need no Caddy, so they also check the harness on a machine without bin/caddy."""

import time

import jwt
import pytest

from iaplib import AUD, OTHER_AUD, CLIENTS, unverified_header


def verify_with_idp_jwks(idp, token, audience=AUD):
    """Verifies an access token with PyJWT against the IdP's published JWKS."""
    jwks = jwt.PyJWKClient(f"{idp.issuer}/jwks")
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key, algorithms=["RS256", "ES256"], audience=audience, issuer=idp.issuer)


def test_discovery_document(idp):
    import requests

    doc = requests.get(f"{idp.issuer}/.well-known/openid-configuration", timeout=5).json()
    assert doc["issuer"] == idp.issuer
    assert doc["jwks_uri"] == f"{idp.issuer}/jwks"
    assert "client_credentials" in doc["grant_types_supported"]
    published = idp.jwks()["keys"]
    assert [k["kid"] for k in published] == [k["kid"] for k in idp.keys]
    for k in published:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & k.keys(), "private key material published"


def test_reader_token_claims(idp):
    token = idp.token("reader", scope="items:read")
    header = unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert header["kid"] == idp.keys[0]["kid"]
    claims = verify_with_idp_jwks(idp, token)
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == AUD
    assert claims["sub"] == "user-reader"
    assert claims["client_id"] == "reader"
    assert claims["scope"] == "items:read"
    assert claims["email"] == "reader@example.com"
    assert claims["email_verified"] is True
    assert claims["groups"] == ["readers", "staff"]
    assert claims["https://example.com/roles"] == ["viewer"]
    assert claims["realm_access"] == {"roles": ["offline_access", "kc-reader"]}
    assert claims["jti"]
    assert 0 < claims["exp"] - claims["iat"] <= 300


def test_admin_token_is_es256_with_scopes(idp):
    token = idp.token("admin", scope="items:read items:write")
    header = unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == next(k["kid"] for k in idp.keys if k["alg"] == "ES256")
    claims = verify_with_idp_jwks(idp, token)
    assert claims["sub"] == "admin"
    assert claims["scope"] == "items:read items:write"
    assert claims["groups"] == ["admins", "staff"]


def test_audience_is_the_resource(idp):
    claims = verify_with_idp_jwks(idp, idp.token("reader", audience=OTHER_AUD), audience=OTHER_AUD)
    assert claims["aud"] == OTHER_AUD


def test_scope_outside_client_allowance_is_refused(idp):
    r = idp.token_response("reader", scope="items:write")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_scope"


def test_wrong_secret_is_refused(idp):
    import requests

    r = requests.post(f"{idp.issuer}/token", data={"grant_type": "client_credentials", "resource": AUD},
                      auth=("reader", "wrong"), timeout=5)
    assert r.status_code == 401


def test_short_lived_token(idp):
    claims = verify_with_idp_jwks(idp, idp.token("shortlived"))
    assert claims["exp"] - claims["iat"] == CLIENTS["shortlived"]["access_token_ttl"]


def test_restart_with_rotated_keys(idp_factory, tmp_path):
    from iaplib import make_keys, write_jwks

    p = idp_factory("RS256")
    old_kid = p.keys[0]["kid"]
    old_token = p.token("reader")
    new = make_keys(tmp_path / "new.json", "ES256")["keys"]
    started = time.monotonic()
    p.restart(write_jwks(tmp_path / "rotated.json", new + p.keys))
    assert time.monotonic() - started < 10, "IdP restart is too slow for the rotation tests"
    assert [k["kid"] for k in p.jwks()["keys"]] == [new[0]["kid"], old_kid]
    token = p.token("reader")
    assert unverified_header(token)["kid"] == new[0]["kid"]
    assert unverified_header(token)["alg"] == "ES256"
    verify_with_idp_jwks(p, token)
    verify_with_idp_jwks(p, old_token)


def test_stop_makes_the_idp_unreachable(idp_factory):
    import requests

    p = idp_factory("RS256")
    p.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{p.issuer}/jwks", timeout=2)


def test_unverified_client_says_its_email_is_unverified(idp):
    """The `unverified` client's token carries an email with email_verified JSON false, which
    caddy-iap must ignore (test_identity.py)."""
    claims = verify_with_idp_jwks(idp, idp.token("unverified"))
    assert claims["email"] == "ceo@example.com"
    assert claims["email_verified"] is False
    assert claims["groups"] == ["readers"]


@pytest.mark.parametrize("client", [c for c, cfg in CLIENTS.items() if "email" in cfg.get("claims", {})])
def test_every_email_says_whether_it_is_verified(idp, client):
    claims = verify_with_idp_jwks(idp, idp.token(client))
    assert claims["email_verified"] is (client != "unverified"), claims
