"""Hostile input against bin/caddy, end to end: every attack class of
shared/reference/token-validation.md §1 that test_refusals.py, test_identity.py and test_keys.py
do not already send. Most hostile tokens here carry a *valid* signature by the IdP's real key
over a hostile header or hostile claims, so a refusal can only come from the check under test
(a control token minted the same way without the hostile part is accepted).

Every refused request also carries client-made identity and assertion headers; in every case the
status is the expected one, never a 5xx, the upstream is never reached, the client's copies are
not echoed, and Caddy keeps serving.

Already covered elsewhere (not repeated): alg none/None/NONE (test_alg_none), HS256 keyed with
the issuer's PEM public key (test_hmac_with_public_key_as_secret), a 9 KB token
(test_oversized_token), an `iss` with a trailing slash added (test_signed_by_idp_key_but_bad_claims
[iss-trailing-slash]), an audience list without ours (…[aud-list-other]), spoofed identity
headers on a refusal without/with a garbage/denied token
(test_spoofed_headers_never_reach_upstream_on_refusal)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from iaplib import AUD, OTHER_AUD, b64url, issuer_block, raw_request, unverified_claims

RULES = """
role reader claim groups contains readers
role admin claim groups contains admins
role staff claim email suffix @example.com
allow reader GET /items/*
allow admin * *
allow staff GET /staff/*
"""

# Client-made identity and assertion headers sent with every hostile request.
SPOOFED = {
    "X-IAP-User": "mallory",
    "X-IAP-Email": "mallory@evil.test",
    "X-IAP-Roles": "admin",
    "X-IAP-Assertion": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.",
}

# The order of the P-256 group.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


# --------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture
def site(idp, caddy):
    return caddy(issuer_block(idp.issuer, "leeway 1s") + "\n" + RULES)


def idp_key(idp, alg: str):
    """(kid, private key) of the IdP's real signing key for alg."""
    jwk = next(k for k in idp.keys if k["alg"] == alg)
    return jwk["kid"], jwt.PyJWK(jwk).key


def claims_of(idp, client: str = "reader") -> dict:
    """The claims of a real, current token of `client` (to re-sign)."""
    return unverified_claims(idp.token(client))


def _segment(part) -> str:
    if isinstance(part, (bytes, bytearray)):
        return b64url(bytes(part))
    if isinstance(part, str):  # raw JSON text, kept as is (duplicate keys, odd spacing)
        return b64url(part.encode())
    return b64url(json.dumps(part).encode())


def raw_signature(key, alg: str, data: bytes) -> bytes:
    if alg == "RS256":
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if alg == "ES256":
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    raise ValueError(alg)


def mint(header, claims, key, alg: str = "RS256") -> str:
    """A compact JWS with exactly this header and payload (dicts, or raw JSON text), signed."""
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    return f"{signing_input}.{b64url(raw_signature(key, alg, signing_input.encode()))}"


def real_header(kid: str, alg: str = "RS256", **extra) -> dict:
    return {"alg": alg, "typ": "at+jwt", "kid": kid, **extra}


def assert_refused(site, upstream, token: str | None, status=401, path="/items/1", headers=None):
    before = upstream.count()
    h = {**SPOOFED, **(headers or {})}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    r = site.get(path, headers=h)
    assert r.status_code < 500, f"server error {r.status_code}: {r.text[:500]}"
    expected = status if isinstance(status, (set, tuple, list)) else {status}
    assert r.status_code in expected, f"expected {expected}, got {r.status_code}: {r.text[:500]}"
    if r.status_code == 401:
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
    assert upstream.count() == before, (
        f"the upstream was reached: {[(s.method, s.path) for s in upstream.requests[before:]]}")
    assert b"mallory" not in r.content
    assert site.running, "caddy exited"
    return r


def assert_accepted(site, upstream, token: str, path="/items/1"):
    before = upstream.count()
    r = site.get(path, token)
    assert r.status_code == 200, f"control token refused: {r.status_code} {r.text[:500]}"
    assert upstream.count() == before + 1
    return r


def assert_still_serving(site, upstream, idp):
    assert_accepted(site, upstream, idp.token("reader"))


class Attacker:
    """An HTTP server on 127.0.0.1 the attacker controls: serves a JWKS with the attacker's key,
    a certificate, and a discovery document pointing at itself. Counts every request."""

    def __init__(self, jwks: dict, cert_pem: bytes):
        self.hits: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                with outer._lock:
                    outer.hits.append(self.path)
                if self.path.startswith("/.well-known/openid-configuration"):
                    body = json.dumps({"issuer": outer.url, "jwks_uri": f"{outer.url}/jwks.json"}).encode()
                    ctype = "application/json"
                elif self.path.startswith("/cert"):
                    body, ctype = cert_pem, "application/pem-certificate-chain"
                else:
                    body, ctype = json.dumps(jwks).encode(), "application/json"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_HEAD = do_GET  # noqa: N815

            def log_message(self, fmt, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self._lock:
            return len(self.hits)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def public_jwk(key, kid: str, alg: str) -> dict:
    d = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
    return {**d, "kid": kid, "alg": alg, "use": "sig"}


def self_signed_cert(key) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture
def attacker_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def attacker(attacker_key):
    cert = self_signed_cert(attacker_key)
    srv = Attacker({"keys": [public_jwk(attacker_key, "attacker-kid", "RS256")]},
                   cert.public_bytes(serialization.Encoding.PEM))
    yield srv
    srv.close()


# --------------------------------------------------------------------------------------------
# alg none (spellings not in test_alg_none) and HMAC confusion (secrets not in test_refusals)


@pytest.mark.parametrize("alg", ["nOnE", "NoNe", "none ", " none", "none\u0000", ""])
@pytest.mark.parametrize("sig", ["empty", "junk"])
def test_alg_none_spellings(idp, site, upstream, alg, sig):
    kid, _ = idp_key(idp, "RS256")
    claims = claims_of(idp, "admin")
    token = f"{_segment({'alg': alg, 'typ': 'at+jwt', 'kid': kid})}.{_segment(claims)}."
    if sig == "junk":
        token += b64url(b"\x00" * 32)
    assert_refused(site, upstream, token, path="/admin")


def test_alg_missing_or_not_a_string(idp, site, upstream):
    kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp, "admin")
    for header in ({"typ": "at+jwt", "kid": kid}, {"alg": ["RS256"], "kid": kid},
                   {"alg": None, "kid": kid}, {"alg": 256, "kid": kid}, {"alg": "rs256", "kid": kid}):
        assert_refused(site, upstream, mint(header, claims, key), path="/admin")


def test_hmac_keyed_with_other_encodings_of_the_issuer_keys(idp, site, upstream):
    """HS256/384/512 keyed with every public form of the IdP's keys: DER, the JWK JSON, the raw
    modulus, the EC point, and the kid itself."""
    claims = claims_of(idp, "admin")
    published = {k["kid"]: k for k in idp.jwks()["keys"]}
    for alg_name in ("RS256", "ES256"):
        kid, key = idp_key(idp, alg_name)
        pub = key.public_key()
        secrets = [
            pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
            json.dumps(published[kid]).encode(),
            json.dumps(published[kid], separators=(",", ":"), sort_keys=True).encode(),
            kid.encode(),
        ]
        if alg_name == "RS256":
            secrets.append(base64.urlsafe_b64decode(published[kid]["n"] + "=="))
            secrets.append(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1))
        else:
            secrets.append(pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
        for hs, digest in (("HS256", hashlib.sha256), ("HS384", hashlib.sha384), ("HS512", hashlib.sha512)):
            signing_input = f"{_segment(real_header(kid, hs))}.{_segment(claims)}"
            for secret in secrets:
                mac = hmac.new(secret, signing_input.encode(), digest).digest()
                assert_refused(site, upstream, f"{signing_input}.{b64url(mac)}", path="/admin")


# --------------------------------------------------------------------------------------------
# Keys offered by the token: jwk, x5c, jku, x5u


def test_control_token_with_plain_header_passes(idp, site, upstream):
    """Control for the header tests below: the same minting, without the hostile parameter."""
    for alg in ("RS256", "ES256"):
        kid, key = idp_key(idp, alg)
        assert_accepted(site, upstream, mint(real_header(kid, alg), claims_of(idp), key, alg))


def test_embedded_jwk_with_attackers_key(idp, site, upstream, attacker_key):
    claims = claims_of(idp, "admin")
    real_kid, _ = idp_key(idp, "RS256")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    cases = [
        (real_header("attacker-kid", jwk=public_jwk(attacker_key, "attacker-kid", "RS256")), attacker_key, "RS256"),
        ({"alg": "RS256", "typ": "at+jwt", "jwk": public_jwk(attacker_key, "attacker-kid", "RS256")}, attacker_key, "RS256"),
        (real_header(real_kid, jwk=public_jwk(attacker_key, real_kid, "RS256")), attacker_key, "RS256"),
        ({"alg": "ES256", "typ": "at+jwt", "jwk": public_jwk(ec_key, "ec-attacker", "ES256")}, ec_key, "ES256"),
    ]
    for header, key, alg in cases:
        assert_refused(site, upstream, mint(header, claims, key, alg), path="/admin")


def test_embedded_x5c_with_attackers_certificate(idp, site, upstream, attacker_key):
    cert = self_signed_cert(attacker_key).public_bytes(serialization.Encoding.DER)
    x5c = [base64.b64encode(cert).decode()]
    claims = claims_of(idp, "admin")
    real_kid, _ = idp_key(idp, "RS256")
    for header in ({"alg": "RS256", "typ": "at+jwt", "x5c": x5c}, real_header(real_kid, x5c=x5c)):
        assert_refused(site, upstream, mint(header, claims, attacker_key), path="/admin")


def test_key_parameters_refused_even_with_the_real_signature(idp, site, upstream, attacker_key):
    """jwk/x5c/jku/x5u are refused by their mere presence, even over a valid IdP signature."""
    kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp)
    jwk = public_jwk(key, kid, "RS256")
    for extra in ({"jwk": jwk}, {"x5c": []}, {"jku": f"{idp.issuer}/jwks"}, {"x5u": f"{idp.issuer}/jwks"},
                  {"jku": None}, {"x5t": "AAAA", "x5c": []}):
        assert_refused(site, upstream, mint(real_header(kid, **extra), claims, key))
    assert_still_serving(site, upstream, idp)


@pytest.mark.parametrize("param", ["jku", "x5u"])
def test_header_url_is_never_contacted(idp, site, upstream, attacker, attacker_key, param):
    kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp, "admin")
    target = f"{attacker.url}/jwks.json" if param == "jku" else f"{attacker.url}/cert.pem"
    tokens = [
        # The attacker's key, the attacker's kid, published at the attacker's URL.
        mint(real_header("attacker-kid", **{param: target}), claims, attacker_key),
        # The attacker's key under the IdP's kid.
        mint(real_header(kid, **{param: target}), claims, attacker_key),
        # No kid at all: only the URL names a key.
        mint({"alg": "RS256", "typ": "at+jwt", param: target}, claims, attacker_key),
        # A valid IdP signature: the URL alone must still refuse the token, and not be fetched.
        mint(real_header(kid, **{param: target}), claims, key),
        # Both parameters.
        mint(real_header("attacker-kid", jku=f"{attacker.url}/jwks.json", x5u=f"{attacker.url}/cert.pem"),
             claims, attacker_key),
    ]
    for token in tokens:
        assert_refused(site, upstream, token, path="/admin")
    time.sleep(1.5)
    assert attacker.count() == 0, f"caddy contacted the attacker's server: {attacker.hits}"
    assert_still_serving(site, upstream, idp)
    time.sleep(0.5)
    assert attacker.count() == 0, f"caddy contacted the attacker's server: {attacker.hits}"


def test_untrusted_iss_is_never_discovered(idp, site, upstream, attacker, attacker_key):
    """A token whose `iss` is the attacker's server (which serves discovery and a JWKS with the
    signing key): refused without a single request to that server."""
    claims = {**claims_of(idp, "admin"), "iss": attacker.url}
    for kid in ("attacker-kid", idp_key(idp, "RS256")[0]):
        assert_refused(site, upstream, mint(real_header(kid), claims, attacker_key), path="/admin")
    claims["iss"] = attacker.url + "/"
    assert_refused(site, upstream, mint(real_header("attacker-kid"), claims, attacker_key), path="/admin")
    time.sleep(1.5)
    assert attacker.count() == 0, f"caddy contacted the attacker's server: {attacker.hits}"


# --------------------------------------------------------------------------------------------
# kid traversal and injection


KIDS = {
    "traversal": "../../etc/passwd",
    "traversal-abs": "/dev/null",
    "traversal-win": "..\\..\\windows\\win.ini",
    "traversal-url": "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "sqli": "' OR '1'='1",
    "sqli-union": "x' UNION SELECT 'secret' --",
    "cmd": "x; curl http://127.0.0.1:1/ #",
    "cmd-subst": "$(sleep 10)",
    "nul": "\u0000",
    "nul-suffix": "KID\u0000",
    "crlf": "a\r\nX-IAP-User: mallory",
    "empty": "",
    "unicode": "\u202e\ufeffkid",
    "url": "http://127.0.0.1:1/jwks",
}
NON_STRING_KIDS = {"object": {"kid": "x"}, "number": 1, "float": 1.5, "array": ["x"], "null": None,
                   "bool": True}


@pytest.mark.parametrize("name", list(KIDS) + list(NON_STRING_KIDS))
def test_kid_injection(idp, site, upstream, name):
    """Validly signed by the IdP's RS256 key, but under a hostile kid."""
    real_kid, key = idp_key(idp, "RS256")
    kid = KIDS.get(name, NON_STRING_KIDS.get(name))
    if name == "nul-suffix":
        kid = real_kid + "\u0000"
    assert_refused(site, upstream, mint(real_header(kid), claims_of(idp), key))
    if name == "cmd-subst":
        # The whole request was refused at once: nothing was executed.
        t = time.monotonic()
        assert_refused(site, upstream, mint(real_header(kid), claims_of(idp), key))
        assert time.monotonic() - t < 5


def test_kid_real_plus_suffix_or_case_changed(idp, site, upstream):
    real_kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp)
    for kid in (real_kid + " ", " " + real_kid, real_kid.upper() if real_kid.upper() != real_kid else real_kid.lower(),
                real_kid + "/../" + real_kid, real_kid[:-1]):
        assert_refused(site, upstream, mint(real_header(kid), claims, key))


def test_ten_kilobyte_kid(idp, site, caddy, upstream):
    real_kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp)
    token = mint(real_header("k" * 10240), claims, key)
    assert_refused(site, upstream, token)
    # Also past the length cap: the kid itself must be refused, not only the token size.
    big = caddy(issuer_block(idp.issuer) + "\n" + RULES + "\nmax_token_size 65536")
    assert_refused(big, upstream, token)
    assert_refused(big, upstream, mint(real_header(real_kid + "k" * 10240), claims, key))
    assert_still_serving(big, upstream, idp)


def test_unknown_kid_flood_is_rate_limited(idp, caddy, upstream):
    """A flood of tokens with random kids (validly signed) must not turn into a JWKS fetch per
    token: at most one refetch per kid_miss_cooldown (default 30 s)."""
    jwks = idp.jwks()
    fetches: list[float] = []

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            fetches.append(time.monotonic())
            body = json.dumps(jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/jwks"
        site = caddy(issuer_block(idp.issuer, f"jwks_url {url}") + "\n" + RULES)
        assert_accepted(site, upstream, idp.token("reader"))
        baseline = len(fetches)
        _, key = idp_key(idp, "RS256")
        claims = claims_of(idp)
        for _ in range(40):
            assert_refused(site, upstream, mint(real_header(uuid.uuid4().hex), claims, key))
        time.sleep(0.5)
        assert len(fetches) - baseline <= 1, f"{len(fetches) - baseline} JWKS fetches for 40 unknown kids"
        assert_still_serving(site, upstream, idp)
    finally:
        srv.shutdown()
        srv.server_close()


# --------------------------------------------------------------------------------------------
# Psychic signatures and ECDSA encodings


def test_psychic_ecdsa_signatures(idp, site, upstream):
    kid, key = idp_key(idp, "ES256")
    claims = claims_of(idp, "admin")
    signing_input = f"{_segment(real_header(kid, 'ES256'))}.{_segment(claims)}"
    n = P256_N.to_bytes(32, "big")
    one = (1).to_bytes(32, "big")
    valid = raw_signature(key, "ES256", signing_input.encode())
    r, s = valid[:32], valid[32:]
    n_plus_s = (int.from_bytes(s, "big") + P256_N).to_bytes(33, "big")
    signatures = {
        "r=s=0": b"\x00" * 64,
        "r=s=n": n + n,
        "r=0,s=valid": b"\x00" * 32 + s,
        "r=valid,s=0": r + b"\x00" * 32,
        "r=s=1": one + one,
        "r=n,s=valid": n + s,
        "s+n (33 bytes)": r + n_plus_s,
        "r=s=n-1+1 overflow": (P256_N + 1).to_bytes(32, "big") * 2,
        "all ff": b"\xff" * 64,
        "DER of a valid signature": key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())),
        "truncated": valid[:63],
        "padded": valid + b"\x00",
        "empty-ish": b"\x00",
    }
    for name, sig in signatures.items():
        r_ = assert_refused(site, upstream, f"{signing_input}.{b64url(sig)}", path="/admin")
        assert r_.status_code == 401, name
    # The same signing input with its real P1363 signature passes (admin may GET /admin).
    assert_accepted(site, upstream, f"{signing_input}.{b64url(valid)}", path="/admin")


def test_rsa_signature_encodings(idp, site, upstream):
    kid, key = idp_key(idp, "RS256")
    signing_input = f"{_segment(real_header(kid))}.{_segment(claims_of(idp, 'admin'))}"
    valid = raw_signature(key, "RS256", signing_input.encode())
    for sig in (b"\x00" * 256, b"\x00" + valid, valid[1:], b"\x00" * 255 + b"\x01", b"\x01", valid[:-1] + bytes([valid[-1] ^ 1])):
        assert_refused(site, upstream, f"{signing_input}.{b64url(sig)}", path="/admin")


# --------------------------------------------------------------------------------------------
# crit, b64, typ


@pytest.mark.parametrize("extra", [
    {"crit": ["exp"]},
    {"crit": []},
    {"crit": ["x-unknown"], "x-unknown": 1},
    {"crit": "b64"},
    {"b64": True},
    {"b64": False},
    {"b64": False, "crit": ["b64"]},
    {"enc": "A256GCM"},
    {"zip": "DEF"},
], ids=lambda e: json.dumps(e, separators=(",", ":")))
def test_crit_b64_and_jwe_parameters_refused(idp, site, upstream, extra):
    kid, key = idp_key(idp, "RS256")
    assert_refused(site, upstream, mint(real_header(kid, **extra), claims_of(idp), key))


def test_unencoded_payload_rfc7797(idp, site, upstream):
    """b64:false with the signature over the raw payload, sent with the raw and with the
    encoded payload."""
    kid, key = idp_key(idp, "RS256")
    header = _segment(real_header(kid, b64=False, crit=["b64"]))
    raw = json.dumps(claims_of(idp), separators=(",", ":"))
    sig = b64url(raw_signature(key, "RS256", f"{header}.{raw}".encode()))
    for payload in (raw.replace(".", "_"), _segment(raw), ""):
        assert_refused(site, upstream, f"{header}.{payload}.{sig}")


@pytest.mark.parametrize("typ", ["JWE", "secevent+jwt", "logout+jwt", "dpop+jwt", "id_token", "", "JOSE+JSON",
                                 "at+jwt ", 1, None, ["JWT"]])
def test_cross_jwt_typ_refused(idp, site, upstream, typ):
    kid, key = idp_key(idp, "RS256")
    header = {"alg": "RS256", "kid": kid, "typ": typ}
    assert_refused(site, upstream, mint(header, claims_of(idp), key))


# --------------------------------------------------------------------------------------------
# JWE and JSON serialization


def test_jwe_compact_refused(idp, site, upstream):
    kid, _ = idp_key(idp, "RS256")
    token = idp.token("admin")
    h, p, s = token.split(".")
    rnd = lambda n: b64url(bytes(range(n)))  # noqa: E731
    for header in ({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": kid, "typ": "at+jwt"},
                   {"alg": "dir", "enc": "A128CBC-HS256"},
                   {"alg": "RS256", "kid": kid, "typ": "at+jwt"}):
        jwe = ".".join([_segment(header), rnd(256), rnd(12), p, rnd(16)])
        assert_refused(site, upstream, jwe, path="/admin")
    # A valid JWS with two empty segments tacked on, and with one more.
    assert_refused(site, upstream, f"{token}..", path="/admin")
    assert_refused(site, upstream, f"{h}.{p}.{s}.{s}", path="/admin")
    assert_refused(site, upstream, f"{h}.{p}.{s}.", path="/admin")
    assert_refused(site, upstream, f"{h}..{p}.{s}", path="/admin")


def test_json_serialization_refused(idp, site, upstream):
    """Flattened and general JWS JSON serialization of a *valid* token, and the python-jwt
    CVE-2022-39227 mix of both, are refused."""
    token = idp.token("admin")
    h, p, s = token.split(".")
    forged = {**unverified_claims(token), "sub": "mallory"}
    forged_h = _segment(jwt.get_unverified_header(token))
    flat = {"protected": h, "payload": p, "signature": s}
    general = {"payload": p, "signatures": [{"protected": h, "signature": s}]}
    mixed = {f"{forged_h}.{_segment(forged)}.": "", **flat}
    for doc in (flat, general, mixed, {**flat, "header": {"kid": "x"}}):
        text = json.dumps(doc)
        for bearer in (text, json.dumps(doc, separators=(",", ":")), b64url(text.encode())):
            assert_refused(site, upstream, bearer, path="/admin")
    # And as raw header lines, with leading whitespace the client library would strip.
    status, _, body = raw_request(site.url, "GET", "/admin",
                                  [("Authorization", "Bearer  " + json.dumps(flat)), *SPOOFED.items()])
    assert status == 401, body
    assert upstream.count() == 0


# --------------------------------------------------------------------------------------------
# Duplicate JSON keys


def _claims_json(claims: dict, *, prefix: str = "", suffix: str = "") -> str:
    body = json.dumps(claims)[1:-1]
    return "{" + prefix + body + suffix + "}"


@pytest.mark.parametrize("case", ["alg-header", "kid-header", "typ-header", "sub", "groups-first-admins",
                                  "groups-last-admins", "aud", "iss", "exp", "nested", "escaped-key"])
def test_duplicate_keys_refused(idp, site, upstream, case):
    kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp)
    header = json.dumps(real_header(kid))
    payload = json.dumps(claims)
    if case == "alg-header":
        header = header[:-1] + ', "alg": "none"}'
    elif case == "kid-header":
        header = header[:-1] + ', "kid": "other"}'
    elif case == "typ-header":
        header = header[:-1] + ', "typ": "JWE"}'
    elif case == "sub":
        payload = _claims_json(claims, suffix=', "sub": "admin"')
    elif case == "groups-first-admins":
        payload = _claims_json(claims, prefix='"groups": ["admins"], ')
    elif case == "groups-last-admins":
        payload = _claims_json(claims, suffix=', "groups": ["admins"]')
    elif case == "aud":
        claims["aud"] = OTHER_AUD
        payload = _claims_json(claims, suffix=f', "aud": "{AUD}"')
    elif case == "iss":
        claims["iss"] = "https://evil.test"
        payload = _claims_json(claims, suffix=f', "iss": "{idp.issuer}"')
    elif case == "exp":
        payload = _claims_json(claims, suffix=f', "exp": {int(time.time()) - 3600}')
    elif case == "nested":
        claims.pop("realm_access", None)
        payload = _claims_json(claims, suffix=', "realm_access": {"roles": ["a"], "roles": ["kc-admin"]}')
    elif case == "escaped-key":
        # "sub" and "\u0073ub" are the same key once unescaped.
        payload = _claims_json(claims, suffix=', "\\u0073ub": "admin"')
    path = "/admin" if "groups" in case else "/items/1"
    assert_refused(site, upstream, mint(header, payload, key), path=path)


# --------------------------------------------------------------------------------------------
# Size, nesting, encodings


def test_oversized_and_deeply_nested_tokens(idp, site, caddy, upstream):
    """Refused, never a 5xx, and the next valid request is served. bin/caddy answers 431 itself
    for request headers past about 20 KiB (before iap runs), so the deeply nested tokens that
    must reach the JSON parser are kept under that, on a site with the largest configurable
    max_token_size (64 KiB) so that the length cap does not hide the depth cap."""
    kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp)
    big = caddy(issuer_block(idp.issuer) + "\n" + RULES + "\nmax_token_size 65536")

    def deep(open_, close, n):
        return _claims_json(claims, suffix=', "deep": ' + open_ * n + "1" + close * n)

    deep_header = json.dumps(real_header(kid))[:-1] + ', "x": ' + "[" * 6000 + "]" * 6000 + "}"
    both, default_only = (site, big), (site,)
    within = {401}           # reaches iap: refused as an invalid token
    any_refusal = {401, 431}  # may be refused by Caddy's header limit first
    tokens = {
        # name: (token, sites, accepted statuses)
        "100KB claim": (mint(real_header(kid), {**claims, "pad": "A" * 100_000}, key), both, {431}),
        "100KB header": (mint(real_header(kid, pad="A" * 100_000), claims, key), both, {431}),
        "12KB claim": (mint(real_header(kid), {**claims, "pad": "A" * 12_000}, key), default_only, within),
        "10000 nested arrays": (mint(real_header(kid), deep("[", "]", 10000), key), both, any_refusal),
        "6000 nested arrays": (mint(real_header(kid), deep("[", "]", 6000), key), both, within),
        "1800 nested objects": (mint(real_header(kid), deep('{"a":', "}", 1800), key), both, within),
        "1200 nested arrays in objects": (mint(real_header(kid), deep('{"a":[', "]}", 1200), key), both, within),
        "40 nested arrays": (mint(real_header(kid), deep("[", "]", 40), key), both, within),
        "6000 nested arrays in the header": (mint(deep_header, claims, key), both, within),
        "100K dots": ("." * 100_000, both, {431}),
        "15K dots": ("." * 15_000, both, within),
        "a. x 7000": ("a." * 7_000, both, within),
        "100KB garbage": ("A" * 100_000, both, {431}),
    }
    for name, (token, sites, statuses) in tokens.items():
        for s in sites:
            started = time.monotonic()
            try:
                assert_refused(s, upstream, token, status=statuses)
            except AssertionError as exc:
                raise AssertionError(f"{name} ({len(token)} bytes): {exc}") from None
            assert time.monotonic() - started < 5, f"{name} took {time.monotonic() - started:.1f}s"
            assert_still_serving(s, upstream, idp)


def test_non_canonical_base64url(idp, site, upstream):
    kid, key = idp_key(idp, "RS256")
    token = mint(real_header(kid), claims_of(idp), key)
    assert_accepted(site, upstream, token)
    h, p, s = token.split(".")

    def flip_low_bits(seg: str) -> str:
        # Same decoded bytes, different encoding (non-zero trailing bits), when len % 4 != 0.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        i = alphabet.index(seg[-1])
        return seg[:-1] + alphabet[i ^ (1 if len(seg) % 4 == 3 else 3)]

    def std(seg: str) -> str:
        return seg.replace("-", "+").replace("_", "/")

    variants = []
    for idx, seg in enumerate((h, p, s)):
        parts = [h, p, s]
        for v in {seg + "=" * (-len(seg) % 4 or 4), flip_low_bits(seg) if len(seg) % 4 else None,
                  std(seg) if std(seg) != seg else None, seg[:10] + " " + seg[10:], seg[:10] + "\t" + seg[10:],
                  seg[:10] + "%2D" + seg[11:], seg + "A"}:
            if v is not None and v != seg:
                parts_v = list(parts)
                parts_v[idx] = v
                variants.append(".".join(parts_v))
    # The mutated-but-same-bytes variants must not be served from the verified-token cache.
    assert len(variants) >= 9
    for v in variants:
        assert_refused(site, upstream, v)


# --------------------------------------------------------------------------------------------
# Issuer


def test_issuer_configured_with_trailing_slash(idp, caddy, upstream):
    """The reverse of test_refusals' iss-trailing-slash: the configured issuer ends in "/", the
    IdP's tokens do not. Keys come from the IdP's jwks_url, so only `iss` differs."""
    site = caddy(issuer_block(idp.issuer + "/", f"jwks_url {idp.issuer}/jwks", "leeway 1s") + "\n" + RULES)
    kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp)
    assert_accepted(site, upstream, mint(real_header(kid), {**claims, "iss": idp.issuer + "/"}, key))
    assert_refused(site, upstream, idp.token("reader"))
    for iss in (idp.issuer, idp.issuer + "//", idp.issuer + "/.", idp.issuer.upper() + "/",
                idp.issuer.replace("127.0.0.1", "localhost") + "/", idp.issuer + "/ ", [idp.issuer + "/"]):
        assert_refused(site, upstream, mint(real_header(kid), {**claims, "iss": iss}, key))


@pytest.mark.parametrize("iss", ["upper", "array", "array-two", "null", "number", "scheme-upper", "path",
                                 "query", "fragment", "userinfo"])
def test_issuer_variants(idp, site, upstream, iss):
    kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp)
    value = {
        "upper": idp.issuer.upper(),
        "array": [idp.issuer],
        "array-two": [idp.issuer, "https://evil.test"],
        "null": None,
        "number": 1,
        "scheme-upper": idp.issuer.replace("http://", "HTTP://"),
        "path": idp.issuer + "/x/..",
        "query": idp.issuer + "?",
        "fragment": idp.issuer + "#",
        "userinfo": idp.issuer.replace("http://", "http://evil@"),
    }[iss]
    assert_refused(site, upstream, mint(real_header(kid), {**claims, "iss": value}, key))


# --------------------------------------------------------------------------------------------
# Audience


def test_audience_array_containing_ours_is_accepted(idp, site, upstream):
    """RFC 7519 §4.1.3: aud may be an array; ours among others is a match (documented:
    "a token must carry one of them")."""
    kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp)
    for aud in ([OTHER_AUD, AUD], [AUD, OTHER_AUD, "https://third.test"], [AUD]):
        assert_accepted(site, upstream, mint(real_header(kid), {**claims, "aud": aud}, key))


@pytest.mark.parametrize("aud", [
    "https://api.tes", "https://api.test/", "https://api.test.evil", "https://api.testx", "xhttps://api.test",
    "https://API.TEST", "HTTPS://api.test", " https://api.test", "https://api.test ", "https://api.test\u0000",
    123, 0, {"aud": AUD}, [], [AUD, 1], [AUD, None], [[AUD]], [{"aud": AUD}], None, True, "",
    "https://api.test,https://other.test",
], ids=lambda a: json.dumps(a))
def test_audience_tricks_refused(idp, site, upstream, aud):
    kid, key = idp_key(idp, "RS256")
    assert_refused(site, upstream, mint(real_header(kid), {**claims_of(idp), "aud": aud}, key))


# --------------------------------------------------------------------------------------------
# Type-confused claims


@pytest.mark.parametrize("claim,value", [
    ("exp", "9999999999"), ("exp", None), ("exp", -1), ("exp", True), ("exp", [9999999999]), ("exp", {"$n": 1}),
    ("exp", "1e400"), ("nbf", "0"), ("iat", "0"), ("nbf", -5), ("iat", None),
    ("sub", 12345), ("sub", ""), ("sub", None), ("sub", ["user-reader"]), ("sub", {"id": "admin"}),
    ("jti", 7), ("jti", ["a"]),
], ids=lambda v: json.dumps(v))
def test_type_confused_registered_claims_refused(idp, site, upstream, claim, value):
    kid, key = idp_key(idp, "RS256")
    claims = {**claims_of(idp), claim: value}
    assert_refused(site, upstream, mint(real_header(kid), claims, key))


def test_huge_and_float_exp(idp, site, upstream):
    """Floats are NumericDates (floored); 1e400 does not parse as a finite number; an exp past
    max_lifetime is refused."""
    kid, key = idp_key(idp, "RS256")
    claims = claims_of(idp)
    for raw in ("1e400", "-0.5", "1.8446744073709552e19", "99999999999999999999999999"):
        payload = _claims_json({k: v for k, v in claims.items() if k != "exp"}, suffix=f', "exp": {raw}')
        assert_refused(site, upstream, mint(real_header(kid), payload, key))
    assert_accepted(site, upstream, mint(real_header(kid), {**claims, "exp": claims["exp"] + 0.9}, key))


@pytest.mark.parametrize("groups,status", [
    # Documented (roles.rs, docs/caddyfile.md): `contains` matches a string equal to the value or
    # an array with such an element; only JSON strings ever match.
    ("readers", 200),
    ("readers staff", 403),
    ({"readers": True}, 403),
    ([["readers"]], 403),
    ([1, True, None], 403),
    ([{"name": "readers"}], 403),
    ("READERS", 403),
    (["readers "], 403),
    (None, 403),
])
def test_type_confused_groups(idp, site, upstream, groups, status):
    kid, key = idp_key(idp, "RS256")
    token = mint(real_header(kid), {**claims_of(idp), "groups": groups}, key)
    if status == 200:
        assert_accepted(site, upstream, token)
        roles = {r.strip() for r in upstream.last().one("X-IAP-Roles").split(",")}
        assert "reader" in roles and "admin" not in roles, roles
        # The string grants exactly that role: not admin.
        assert_refused(site, upstream, token, status=403, path="/admin")
    else:
        assert_refused(site, upstream, token, status=status)


@pytest.mark.parametrize("verified", ["true", 1, "True", ["true"], None])
def test_email_verified_must_be_json_true(idp, site, upstream, verified):
    kid, key = idp_key(idp, "RS256")
    claims = {**claims_of(idp, "nobody"), "email": "ceo@example.com", "email_verified": verified}
    assert_refused(site, upstream, mint(real_header(kid), claims, key), status=403, path="/staff/x")
    claims["email_verified"] = True
    assert_accepted(site, upstream, mint(real_header(kid), claims, key), path="/staff/x")


# --------------------------------------------------------------------------------------------
# Oversized headers and cookies


def test_oversized_headers_and_cookies(idp, caddy, upstream):
    site = caddy(issuer_block(idp.issuer) + "\n" + RULES + "\ntoken_source bearer\ntoken_source cookie iap_session")
    big = "A" * 65536
    cases = {
        "64KB bearer": [("Authorization", "Bearer " + big)],
        "64KB other header, no token": [("X-Junk", big)],
        "64KB cookie, no token": [("Cookie", "junk=" + big)],
        "64KB token cookie": [("Cookie", "iap_session=" + big)],
        "64KB token cookie among others": [("Cookie", "a=b; iap_session=" + big + "; c=d")],
        "64KB bearer and token cookie": [("Authorization", "Bearer " + big), ("Cookie", "iap_session=" + big)],
        "1000 cookies": [("Cookie", "; ".join(f"c{i}=v" for i in range(1000)))],
        "1000 headers": [(f"X-H{i}", "v") for i in range(1000)],
        "64KB header name": [("X" * 65536, "v")],
    }
    for name, lines in cases.items():
        status, _, body = raw_request(site.url, "GET", "/items/1", [*lines, *SPOOFED.items()])
        # bin/caddy refuses request headers past about 20 KiB itself; many small ones reach iap,
        # which finds no (valid) token.
        expected = 401 if name.startswith("1000") else 431
        assert status == expected, f"{name}: {status} {body[:300]!r}"
        assert b"mallory" not in body
        assert upstream.count() == 0, f"{name}: the upstream was reached"
        assert site.running, f"{name}: caddy exited"
    # Past Go's header limit (1 MiB by default): 431 from the server itself.
    status, _, body = _send_raw(site.url, "/items/1", [("X-Junk", "A" * (2 * 1024 * 1024))])
    assert status == 431, f"2 MiB header: {status} {body[:300]!r}"
    assert upstream.count() == 0
    assert site.running
    assert_still_serving(site, upstream, idp)


def _send_raw(url: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, dict, bytes]:
    """Like raw_request, but tolerant of the server answering before it read everything."""
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=15) as sock:
        req = f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        try:
            sock.sendall(req.encode())
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    assert data, "no response at all"
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, {}, body


def test_token_cookie_among_many_cookies(idp, caddy, upstream):
    """A token cookie after 100 other cookies (10 KB) still works; a forged one there does not."""
    site = caddy(issuer_block(idp.issuer) + "\n" + RULES + "\ntoken_source cookie iap_session")
    filler = "; ".join(f"f{i}={'x' * 100}" for i in range(100))
    good = idp.token("reader")
    status, _, body = raw_request(site.url, "GET", "/items/1", [("Cookie", f"{filler}; iap_session={good}")])
    assert status == 200, body[:300]
    assert upstream.count() == 1
    kid, key = idp_key(idp, "RS256")
    forged = mint(real_header(kid, jku="http://127.0.0.1:1/"), claims_of(idp), key)
    status, _, body = raw_request(site.url, "GET", "/items/1",
                                  [("Cookie", f"{filler}; iap_session={forged}"), *SPOOFED.items()])
    assert status == 401, body[:300]
    assert upstream.count() == 1


# --------------------------------------------------------------------------------------------
# Keys bound to their issuer, algorithms bound to the issuer's allowlist


def test_key_of_one_issuer_cannot_sign_for_another(idp, idp_factory, caddy, upstream):
    """Two trusted issuers: a token claiming issuer A, signed by issuer B's real key (under B's
    kid, A's kid or none), is refused; each issuer's own tokens pass."""
    other = idp_factory("RS256", name="other")
    site = caddy(issuer_block(idp.issuer, "leeway 1s") + "\n" + issuer_block(other.issuer, "leeway 1s") + "\n" + RULES)
    assert_accepted(site, upstream, idp.token("reader"))
    assert_accepted(site, upstream, other.token("reader"))
    a_kid, _ = idp_key(idp, "RS256")
    b_jwk = other.keys[0]
    b_kid, b_key = b_jwk["kid"], jwt.PyJWK(b_jwk).key
    a_claims, b_claims = claims_of(idp), unverified_claims(other.token("reader"))
    _, a_key = idp_key(idp, "RS256")
    # Controls: each issuer's claims signed by its own key pass.
    assert_accepted(site, upstream, mint(real_header(a_kid), a_claims, a_key))
    assert_accepted(site, upstream, mint(real_header(b_kid), b_claims, b_key))
    for header in (real_header(b_kid), real_header(a_kid), {"alg": "RS256", "typ": "at+jwt"}):
        assert_refused(site, upstream, mint(header, a_claims, b_key))
    for header in (real_header(a_kid), real_header(b_kid), {"alg": "RS256", "typ": "at+jwt"}):
        assert_refused(site, upstream, mint(header, b_claims, a_key))


def test_algorithm_outside_the_issuer_allowlist(idp, caddy, upstream):
    """`algorithms RS256`: the IdP's real ES256 tokens (and ES256 tokens minted with its real
    key) are refused; RS256 ones pass."""
    site = caddy(issuer_block(idp.issuer, "algorithms RS256") + "\n" + RULES)
    assert_accepted(site, upstream, idp.token("reader"))
    assert_refused(site, upstream, idp.token("admin"), path="/admin")
    kid, key = idp_key(idp, "ES256")
    assert_refused(site, upstream, mint(real_header(kid, "ES256"), claims_of(idp, "admin"), key, "ES256"), path="/admin")
