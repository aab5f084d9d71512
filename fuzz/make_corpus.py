#!/usr/bin/env python3
"""Writes the fuzzing fixtures (data/) and the checked-in seed corpora (corpus/<target>/).

data/jwks.json          the public halves of rust/core/tests/data's RSA, P-256 and Ed25519 keys
data/valid-*.jwt        one valid token per key (exp = NOW + 600); token_verify allows exactly these
corpus/token_verify/    valid tokens, Wycheproof JWS cases, hand-made refusals
corpus/compact_parse/   the same
corpus/jwks_parse/      data/jwks.json, Wycheproof key sets, hand-made bad entries
corpus/discovery_doc/   discovery documents, good and bad

corpus/role_rules/ is binary (arbitrary-derived input) and comes from fuzzing runs instead.

Needs python3-cryptography. ES256 signatures are randomized, so re-running changes
data/valid-es256.jwt; the target reads it at build time, so that is fine.
Usage: python3 fuzz/make_corpus.py [wycheproof-dir]
"""

import base64
import json
import pathlib
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
KEYS = ROOT / "rust/core/tests/data"
WYCHEPROOF = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared/testdata/wycheproof")

# Keep in sync with fuzz/src/lib.rs.
NOW = 1_800_000_000
ISS = "https://idp.example.com/"
AUD = "https://api.example.com"


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def uint(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def private(name):
    return serialization.load_pem_private_key((KEYS / name).read_bytes(), password=None)


def jwks():
    keys = []
    rsa_pub = private("rsa2048.pk8.pem").public_key().public_numbers()
    keys.append({"kty": "RSA", "kid": "rs", "alg": "RS256", "use": "sig", "n": b64(uint(rsa_pub.n)), "e": b64(uint(rsa_pub.e))})
    ec_pub = private("p256.pk8.pem").public_key().public_numbers()
    keys.append({"kty": "EC", "crv": "P-256", "kid": "es", "x": b64(ec_pub.x.to_bytes(32, "big")), "y": b64(ec_pub.y.to_bytes(32, "big"))})
    ed_pub = private("ed25519.pk8.pem").public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keys.append({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed_pub)})
    return {"keys": keys}


def sign(alg: str, kid: str, claims: dict) -> str:
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    signing_input = f"{b64(json.dumps(header, separators=(',', ':')).encode())}.{b64(json.dumps(claims, separators=(',', ':')).encode())}".encode()
    if alg == "RS256":
        sig = private("rsa2048.pk8.pem").sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        der = private("p256.pk8.pem").sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = private("ed25519.pk8.pem").sign(signing_input)
    return f"{signing_input.decode()}.{b64(sig)}"


def write(path: pathlib.Path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def main():
    claims = {"iss": ISS, "sub": "alice", "aud": AUD, "iat": NOW - 10, "exp": NOW + 600,
              "email": "alice@example.com", "email_verified": True, "groups": ["db-readers"]}
    keyset = jwks()
    write(FUZZ / "data/jwks.json", json.dumps(keyset, indent=1) + "\n")
    tokens = {}
    for alg, kid in [("RS256", "rs"), ("ES256", "es"), ("EdDSA", "ed")]:
        tokens[alg] = sign(alg, kid, claims)
        write(FUZZ / f"data/valid-{alg.lower()}.jwt", tokens[alg])

    # Tokens: the valid ones, Wycheproof's JWS cases of the algorithms we support, and refusals.
    seeds = {f"valid-{a.lower()}": t for a, t in tokens.items()}
    seeds["expired-eddsa"] = sign("EdDSA", "ed", {**claims, "exp": NOW - 3600})
    seeds["wrong-aud-es256"] = sign("ES256", "es", {**claims, "aud": "https://other.example.com"})
    head, payload, sig = tokens["EdDSA"].split(".")
    none = b64(b'{"alg":"none"}')
    seeds["alg-none"] = f"{none}.{payload}."
    seeds["json-serialization"] = json.dumps({"protected": head, "payload": payload, "signature": sig})
    seeds["five-segments"] = f"{head}.{payload}.{sig}.{sig}.{sig}"
    seeds["padded"] = f"{head}.{payload}.{sig}=="
    wanted = {"es256": 4, "rs256": 4, "SpecialCaseEs256": 4, "ps256": 2, "base64": 4, "rfc7520": 2}
    doc = json.loads((WYCHEPROOF / "json_web_signature_test.json").read_text())
    for group in doc["testGroups"]:
        n = wanted.get(group["comment"], 0)
        for t in group["tests"][:n]:
            seeds[f"wycheproof-{t['tcId']}"] = t["jws"]
        wanted[group["comment"]] = 0
    for target in ["token_verify", "compact_parse"]:
        for name, token in seeds.items():
            write(FUZZ / f"corpus/{target}/{name}", token)

    # Key sets.
    sets = {"fixture-keys.json": json.dumps(keyset)}
    doc = json.loads((WYCHEPROOF / "json_web_key_test.json").read_text())
    for i, group in enumerate(doc["testGroups"][:8]):
        for part in ["public", "private"]:
            if part in group:
                sets[f"wycheproof-{i}-{part}.json"] = json.dumps(group[part])
    sets["private-member.json"] = json.dumps({"keys": [{**keyset["keys"][2], "d": "AAAA"}]})
    sets["oct-and-dup.json"] = '{"keys":[{"kty":"oct","k":"AAAA"},{"kty":"EC","kty":"EC"}]}'
    sets["wrong-use.json"] = json.dumps({"keys": [{**keyset["keys"][1], "use": "enc", "key_ops": ["encrypt"]}]})
    sets["not-keys.json"] = '{"keys":{}}'
    for name, text in sets.items():
        write(FUZZ / f"corpus/jwks_parse/{name}", text)

    # Discovery documents (the target expects issuer ISS).
    docs = {
        "minimal.json": {"issuer": ISS, "jwks_uri": "https://idp.example.com/jwks"},
        "loopback-http.json": {"issuer": ISS, "jwks_uri": "http://127.0.0.1:8080/jwks"},
        "ipv6-loopback.json": {"issuer": ISS, "jwks_uri": "http://[::1]:9/keys"},
        "insecure.json": {"issuer": ISS, "jwks_uri": "http://idp.example.com/jwks"},
        "userinfo.json": {"issuer": ISS, "jwks_uri": "http://localhost@evil.example/jwks"},
        "wrong-issuer.json": {"issuer": ISS.rstrip("/"), "jwks_uri": "https://idp.example.com/jwks"},
        "full.json": {
            "issuer": ISS, "authorization_endpoint": "https://idp.example.com/authorize",
            "token_endpoint": "https://idp.example.com/token", "jwks_uri": "https://idp.example.com/.well-known/jwks.json",
            "response_types_supported": ["code", "id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        },
    }
    for name, d in docs.items():
        write(FUZZ / f"corpus/discovery_doc/{name}", json.dumps(d))
    write(FUZZ / "corpus/discovery_doc/duplicate-issuer.json",
          f'{{"issuer":"{ISS}","issuer":"{ISS}","jwks_uri":"https://idp.example.com/jwks"}}')


if __name__ == "__main__":
    main()
