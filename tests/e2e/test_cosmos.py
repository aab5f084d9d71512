"""The Cosmos DB gateway end to end: the real Azure Cosmos Python SDK (azure-cosmos), holding only
an OIDC token from the real test IdP, talks to bin/caddy (iap_cosmos) over TLS; Caddy re-signs each
allowed request with the account key, which only it holds, for the cosmium emulator."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.cosmos import CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError

from cosmoslib import Cosmium, OidcCredential, cosmos_caddyfile, raw, raw_path
from iaplib import Caddy, IdP, Upstream, free_port, make_keys, register_logs, unverified_claims
from pglib import make_cert

AUD = "https://cosmos.test"

CLIENTS: dict[str, dict] = {
    "reader": {"client_secret": "s", "sub": "user-reader",
               "claims": {"email": "reader@example.com", "email_verified": True, "groups": ["cosmos-readers"]}},
    "writer": {"client_secret": "s", "sub": "user-writer",
               "claims": {"email": "writer@example.com", "email_verified": True, "groups": ["cosmos-writers"]}},
    "nobody": {"client_secret": "s", "claims": {"groups": ["guests"]}},
    "shortlived": {"client_secret": "s", "access_token_ttl": 2, "claims": {"groups": ["cosmos-readers"]}},
    # The gateway's own identity for the Entra mode (client credentials, secret in the body).
    "gateway": {"client_secret": "gateway-secret-for-tests", "token_endpoint_auth_method": "client_secret_post",
                "access_token_ttl": 6, "scope": "items:read"},
}

POLICY = """
issuer {issuer} {{
	audience {aud}
	leeway 1s
}}
role reader claim groups contains cosmos-readers
role writer claim groups contains cosmos-writers
grant reader data_reader on dbs/app/colls/orders
grant writer items/* readMetadata on dbs/app/colls/orders
{signing}
{audit}
"""


@pytest.fixture(scope="module")
def cosmos_idp(tmp_path_factory):
    d = tmp_path_factory.mktemp("cosmos-idp")
    keys = d / "keys.json"
    make_keys(keys, "RS256")
    idp = IdP(d, keys, clients=CLIENTS, name="cosmos-idp").start()
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    em = Cosmium(tmp_path_factory.mktemp("cosmium")).start()
    # Setup as the account owner, straight to the emulator: what a platform team does once.
    owner = CosmosClient(em.url, credential=em.key, connection_verify=str(em.cert), enable_endpoint_discovery=False)
    db = owner.create_database("app")
    for name in ("orders", "payroll"):
        c = db.create_container(name, partition_key=PartitionKey(path="/id"))
        c.create_item({"id": f"{name}-1", "total": 10})
    yield em
    em.stop()


class Gateway:
    def __init__(self, workdir: Path, idp: IdP, upstream_url: str, upstream_ca: Path | None, signing: str,
                 audit: bool = True, log_level: str = "DEBUG"):
        self.cert, self.key = make_cert(workdir)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}/"
        policy = POLICY.format(issuer=idp.issuer, aud=AUD, signing=signing, audit="audit" if audit else "")
        self.caddy = Caddy(workdir, upstream_address="", iap_config="", port=self.port)
        self.caddy.text = cosmos_caddyfile(
            admin_port=self.caddy.admin_port, storage=self.caddy.storage, log_path=self.caddy.log_path,
            port=self.port, cert=self.cert, key=self.key, upstream_url=upstream_url,
            upstream_ca=upstream_ca, policy=policy, log_level=log_level)

    def start(self) -> "Gateway":
        self.caddy.start()
        return self

    def client(self, token: str, discovery: bool = False) -> CosmosClient:
        exp = unverified_claims(token)["exp"]
        # The SDK verifies no certificate for 127.0.0.1 (it assumes a local emulator); the
        # tests count requests at the emulator to prove nothing goes around the gateway.
        return CosmosClient(self.url, credential=OidcCredential(token, exp), connection_verify=str(self.cert),
                            enable_endpoint_discovery=discovery)

    def allowed_count(self) -> int:
        return self.caddy.log_text().count('"cosmos request allowed"')


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, cosmos_idp, emulator):
    gw = Gateway(tmp_path_factory.mktemp("cosmos-gw"), cosmos_idp, emulator.url, emulator.cert,
                 f"account_key_file {emulator.key_file}").start()
    yield gw
    gw.caddy.stop()


@pytest.fixture(autouse=True)
def _logs(request, cosmos_idp, emulator):
    register_logs(request, cosmos_idp.log_path, emulator.log_path)


def watch(request, gw: Gateway):
    """Attach the gateway's Caddyfile and logs to the test's report if it fails."""
    register_logs(request, gw.caddy.caddyfile, gw.caddy.log_path, gw.caddy.stdout_path)


def orders(client: CosmosClient, name: str = "orders"):
    return client.get_database_client("app").get_container_client(name)


def status_of(call) -> int:
    with pytest.raises(CosmosHttpResponseError) as e:
        call()
    return e.value.status_code


def test_reader_reads_and_queries_but_cannot_write(request, gateway, cosmos_idp, emulator):
    watch(request, gateway)
    c = orders(gateway.client(cosmos_idp.token("reader", AUD)))
    assert c.read_item("orders-1", partition_key="orders-1")["total"] == 10
    rows = list(c.query_items("SELECT * FROM c WHERE c.total = @t", parameters=[{"name": "@t", "value": 10}],
                              enable_cross_partition_query=True))
    assert [r["id"] for r in rows] == ["orders-1"]
    before = len(emulator.data_requests())
    assert status_of(lambda: c.create_item({"id": "r-1", "total": 1})) == 403
    assert status_of(lambda: c.upsert_item({"id": "orders-1", "total": 0})) == 403
    assert status_of(lambda: c.replace_item("orders-1", {"id": "orders-1", "total": 0})) == 403
    assert status_of(lambda: c.delete_item("orders-1", partition_key="orders-1")) == 403
    assert len(emulator.data_requests()) == before, "a refused request reached the emulator"
    # Not even a read outside the grant.
    assert status_of(lambda: orders(gateway.client(cosmos_idp.token("reader", AUD)), "payroll")
                     .read_item("payroll-1", partition_key="payroll-1")) == 403
    assert c.read_item("orders-1", partition_key="orders-1")["total"] == 10, "the refused writes changed nothing"
    log = gateway.caddy.log_text()
    assert "cosmos request denied" in log and "items/create on dbs/app/colls/orders" in log
    assert "reader@example.com" in log


def test_writer_writes_orders_but_not_payroll(request, gateway, cosmos_idp, emulator):
    watch(request, gateway)
    client = gateway.client(cosmos_idp.token("writer", AUD))
    c = orders(client)
    c.create_item({"id": "w-1", "total": 1})
    c.upsert_item({"id": "w-1", "total": 2})
    c.replace_item("w-1", {"id": "w-1", "total": 3})
    assert c.read_item("w-1", partition_key="w-1")["total"] == 3
    c.delete_item("w-1", partition_key="w-1")
    assert status_of(lambda: c.read_item("w-1", partition_key="w-1")) == 404, "the delete reached the emulator"
    # items/* does not include executeQuery.
    assert status_of(lambda: list(c.query_items("SELECT * FROM c", enable_cross_partition_query=True))) == 403
    p = orders(client, "payroll")
    before = len(emulator.data_requests())
    assert status_of(lambda: p.create_item({"id": "w-2", "total": 1})) == 403
    assert len(emulator.data_requests()) == before
    # Management is never done through the gateway.
    assert status_of(lambda: client.create_database("other")) == 403
    assert status_of(lambda: client.get_database_client("app").delete_container("orders")) == 403


def test_bad_tokens_never_reach_the_emulator(request, gateway, cosmos_idp, emulator):
    watch(request, gateway)
    path = "dbs/app/colls/orders/docs/orders-1"
    short = cosmos_idp.token("shortlived", AUD)
    cases = {
        "no token": {},
        "other audience": {"Authorization": "type=aad&ver=1.0&sig=" + cosmos_idp.token("reader", "https://other.test")},
        "garbage": {"Authorization": "type=aad&ver=1.0&sig=not.a.token"},
        "master key from a client": {"Authorization": "type%3Dmaster%26ver%3D1.0%26sig%3DAAAA"},
        "no role": {"Authorization": "Bearer " + cosmos_idp.token("nobody", AUD)},
    }
    time.sleep(4.5)  # the short-lived token (2 s) is now past its expiry and the 1 s leeway (whole seconds)
    cases["expired"] = {"Authorization": "type=aad&ver=1.0&sig=" + short}
    before = len(emulator.data_requests())
    for name, headers in cases.items():
        r = raw("GET", gateway.url + path, gateway.cert, headers={"x-ms-version": "2020-07-15", **headers})
        want = 403 if name == "no role" else 401
        assert r.status_code == want, f"{name}: {r.status_code} {r.text}"
        body = r.json()
        assert body["code"] == ("Forbidden" if want == 403 else "Unauthorized"), f"{name}: {body}"
        for value in headers.values():
            assert value.split("sig=")[-1].split(" ")[-1] not in r.text, f"{name}: the token was echoed"
    assert len(emulator.data_requests()) == before, "a refused request reached the emulator"


def test_both_header_forms_and_bearer_work(request, gateway, cosmos_idp):
    watch(request, gateway)
    token = cosmos_idp.token("reader", AUD)
    encoded = "type%3Daad%26ver%3D1.0%26sig%3D" + token
    for auth in ("type=aad&ver=1.0&sig=" + token, encoded, "Bearer " + token):
        r = raw("GET", gateway.url + "dbs/app/colls/orders/docs/orders-1", gateway.cert,
                headers={"Authorization": auth, "x-ms-version": "2020-07-15",
                         "x-ms-documentdb-partitionkey": '["orders-1"]'})
        assert r.status_code == 200, f"{auth[:12]}: {r.status_code} {r.text}"
        assert r.json()["id"] == "orders-1"


def test_the_key_stays_in_the_gateway(request, gateway, cosmos_idp, emulator):
    watch(request, gateway)
    token = cosmos_idp.token("reader", AUD)
    # The same SDK, with the same token, straight to the emulator: refused by its signature check.
    def direct():
        client = CosmosClient(emulator.url, credential=OidcCredential(token, unverified_claims(token)["exp"]),
                              enable_endpoint_discovery=False)
        return orders(client).read_item("orders-1", partition_key="orders-1")

    assert status_of(direct) == 401
    # The gateway's config names a file, not the key; the key is in no log or response.
    assert emulator.key not in gateway.caddy.caddyfile.read_text()
    assert emulator.key not in gateway.caddy.log_text()


def test_endpoint_discovery_stays_on_the_gateway(request, gateway, cosmos_idp, emulator):
    watch(request, gateway)
    # The emulator advertises its own URL; the gateway rewrites the account document.
    r = raw("GET", gateway.url, gateway.cert,
            headers={"Authorization": "Bearer " + cosmos_idp.token("reader", AUD), "x-ms-version": "2020-07-15"})
    assert r.status_code == 200, r.text
    doc = r.json()
    endpoints = {loc["databaseAccountEndpoint"] for k in ("writableLocations", "readableLocations")
                 for loc in doc[k]}
    assert endpoints == {gateway.url}, doc
    assert str(emulator.port) not in r.text
    # With discovery on, every SDK request goes through the gateway: the emulator sees exactly
    # the requests the gateway allowed, none sent around it.
    before_em, before_gw = len(emulator.requests()), gateway.allowed_count()
    c = orders(gateway.client(cosmos_idp.token("reader", AUD), discovery=True))
    for _ in range(3):
        assert c.read_item("orders-1", partition_key="orders-1")["id"] == "orders-1"
    assert list(c.query_items("SELECT VALUE c.id FROM c", enable_cross_partition_query=True))
    sent = len(emulator.requests()) - before_em
    assert sent > 0 and sent == gateway.allowed_count() - before_gw


def test_hostile_requests_are_refused(request, gateway, cosmos_idp, emulator):
    watch(request, gateway)
    reader = cosmos_idp.token("reader", AUD)
    base = {"Authorization": "Bearer " + reader, "x-ms-version": "2020-07-15"}
    before = len(emulator.data_requests())
    cases = [
        # A create dressed as a query: the emulator would run the body as a create.
        ("POST", "dbs/app/colls/orders/docs", {"x-ms-documentdb-isquery": "true",
                                               "Content-Type": "application/query+json"},
         b'{"id":"sneaky","total":1}', 400),
        # A query header the backends parse differently.
        ("POST", "dbs/app/colls/orders/docs", {"x-ms-documentdb-isquery": "1",
                                               "Content-Type": "application/query+json"},
         b'{"query":"SELECT * FROM c"}', 400),
        ("GET", "dbs/app/colls/orders%2F..%2Fpayroll/docs/payroll-1", {}, b"", 400),
        ("GET", "dbs/app/users/u/permissions", {}, b"", 400),
        ("GET", "dbs/app/colls/payroll/docs/payroll-1", {}, b"", 403),
    ]
    for method, path, extra, body, want in cases:
        r = raw(method, gateway.url + path, gateway.cert, headers={**base, **extra}, data=body)
        assert r.status_code == want, f"{method} {path} {extra}: {r.status_code} {r.text}"
    # Paths sent byte for byte, as a hostile client would (no `..` folding by a client library).
    for path in ("/dbs/app/colls/orders/../payroll/docs/payroll-1", "/dbs/app/colls/orders/docs/./x",
                 "/dbs/app//colls/orders/docs/orders-1", "/dbs/app/colls/orders/docs/orders-1%00"):
        status = raw_path(gateway.url, gateway.cert, "GET", path, base)
        assert status in (400, 403, 404), f"{path}: {status}"
    sent = emulator.data_requests()[before:]
    # Whatever reached the emulator was an orders read the reader may do (a path Caddy cleaned
    # is signed and forwarded as cleaned); never payroll, never a malformed path.
    assert all(m == "GET" and p.startswith("/dbs/app/colls/orders/docs/") for _, m, p in sent), sent
    # A client's x-ms-date and Date never reach the account: the gateway signs its own date.
    r = raw("GET", gateway.url + "dbs/app/colls/orders/docs/orders-1", gateway.cert,
            headers={**base, "x-ms-date": "Thu, 01 Jan 1970 00:00:00 GMT", "Date": "Thu, 01 Jan 1970 00:00:00 GMT",
                     "x-ms-documentdb-partitionkey": '["orders-1"]'})
    assert r.status_code == 200, r.text


def test_entra_mode_sends_and_refreshes_the_gateways_own_token(request, tmp_path, cosmos_idp, monkeypatch):
    """The emulator does not check aad tokens, so a recording upstream stands in for the account:
    the test asserts the header the gateway sends and when it fetches a new token."""
    upstream = Upstream()
    monkeypatch.setenv("IAP_TEST_GATEWAY_SECRET", "gateway-secret-for-tests")
    signing = f"""entra {{
	token_url {cosmos_idp.issuer}/token
	client_id gateway
	client_secret_env IAP_TEST_GATEWAY_SECRET
	scope items:read
	refresh_before 3s
}}"""
    gw = Gateway(tmp_path, cosmos_idp, f"http://{upstream.address}", None, signing).start()
    watch(request, gw)
    try:
        token = cosmos_idp.token("reader", AUD)
        seen: list[tuple[float, str]] = []
        t0 = time.time()
        while time.time() - t0 < 8:
            r = raw("GET", gw.url + "dbs/app/colls/orders/docs/orders-1", gw.cert,
                    headers={"Authorization": "Bearer " + token, "x-ms-version": "2020-07-15"})
            assert r.status_code == 200, r.text
            auth = upstream.last().one("Authorization")
            assert auth.startswith("type%3Daad%26ver%3D1.0%26sig%3D"), auth[:40]
            assert upstream.last().one("x-ms-date")
            sent = auth.removeprefix("type%3Daad%26ver%3D1.0%26sig%3D")
            if sent not in {t for _, t in seen}:
                # A live token the IdP issued to the gateway's client, checked while it is fresh.
                info = requests.post(f"{cosmos_idp.issuer}/token/introspection", timeout=5,
                                     data={"token": sent, "client_id": "gateway",
                                           "client_secret": "gateway-secret-for-tests"}).json()
                assert info.get("active") and info.get("client_id") == "gateway", info
            seen.append((time.time() - t0, sent))
            time.sleep(0.25)
        tokens = list(dict.fromkeys(t for _, t in seen))
        assert token not in tokens, "the caller's token was forwarded"
        # 6 s tokens refreshed 3 s before expiry: a new one about every 3 s, never an expired one.
        assert 2 <= len(tokens) <= 4, [(round(t, 1), x[:8]) for t, x in seen]
        first_use = {t: min(s for s, x in seen if x == t) for t in tokens}
        last_use = {t: max(s for s, x in seen if x == t) for t in tokens}
        for t in tokens:
            assert last_use[t] - first_use[t] < 6 - 3 + 1.0, "a token was used into its refresh window"
        assert "gateway-secret-for-tests" not in gw.caddy.log_text()
    finally:
        gw.caddy.stop()
        upstream.close()


def test_no_token_key_or_signature_in_the_gateway_log(request, gateway, cosmos_idp, emulator):
    """After the tests above, which all ran at DEBUG through this gateway."""
    watch(request, gateway)
    token = cosmos_idp.token("reader", AUD)
    r = raw("GET", gateway.url + "dbs/app/colls/orders/docs/orders-1", gateway.cert,
            headers={"Authorization": "type=aad&ver=1.0&sig=" + token, "x-ms-version": "2020-07-15",
                     "x-ms-documentdb-partitionkey": '["orders-1"]'})
    assert r.status_code == 200, r.text
    log = gateway.caddy.log_text() + gateway.caddy.stdout_path.read_text(errors="replace")
    assert emulator.key not in log
    assert token not in log and token.split(".")[2] not in log
    # Neither the caller's nor the gateway's signature, raw or URL-encoded.
    assert not re.search(r"sig(=|%3[Dd])[A-Za-z0-9+/%_-]{16,}", log), re.search(r".{80}sig(=|%3[Dd]).{40}", log)


class _FakeImds(BaseHTTPRequestHandler):
    """A small fake of Azure's managed-identity endpoint (IMDS cannot run here): answers GET
    .../token?api-version=...&resource=...&client_id=... with IMDS's string-typed fields."""

    def do_GET(self):
        self.server.hits.append((self.path, self.headers.get("Metadata")))
        now = int(time.time())
        body = json.dumps({"access_token": f"imds-token-{len(self.server.hits)}", "expires_in": "3599",
                           "expires_on": str(now + 3599), "resource": "https://cosmos.azure.com",
                           "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def test_entra_mode_with_a_managed_identity(request, tmp_path, cosmos_idp):
    imds = ThreadingHTTPServer(("127.0.0.1", 0), _FakeImds)
    imds.hits = []
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    upstream = Upstream()
    signing = f"""entra {{
	managed_identity http://127.0.0.1:{imds.server_address[1]}/metadata/identity/oauth2/token
	client_id 11111111-2222-3333-4444-555555555555
}}"""
    gw = Gateway(tmp_path, cosmos_idp, f"http://{upstream.address}", None, signing).start()
    watch(request, gw)
    try:
        token = cosmos_idp.token("reader", AUD)
        for _ in range(3):
            r = raw("GET", gw.url + "dbs/app/colls/orders/docs/orders-1", gw.cert,
                    headers={"Authorization": "Bearer " + token})
            assert r.status_code == 200, r.text
            assert upstream.last().one("Authorization") == "type%3Daad%26ver%3D1.0%26sig%3Dimds-token-1"
        assert len(imds.hits) == 1, imds.hits  # fetched once, then cached
        path, metadata = imds.hits[0]
        assert metadata == "true"
        q = parse_qs(urlsplit(path).query)
        assert q == {"api-version": ["2018-02-01"], "resource": ["https://cosmos.azure.com"],
                     "client_id": ["11111111-2222-3333-4444-555555555555"]}, q
    finally:
        gw.caddy.stop()
        upstream.close()
        imds.shutdown()


def test_entra_token_endpoint_down_fails_closed(request, tmp_path, cosmos_idp):
    upstream = Upstream()
    signing = f"""entra {{
	token_url http://127.0.0.1:{free_port()}/token
	client_id gateway
	client_secret_file {tmp_path / "secret"}
	timeout 2s
}}"""
    (tmp_path / "secret").write_text("s3cret-for-tests\n")
    gw = Gateway(tmp_path, cosmos_idp, f"http://{upstream.address}", None, signing).start()
    watch(request, gw)
    try:
        token = cosmos_idp.token("reader", AUD)
        for _ in range(3):
            t0 = time.monotonic()
            r = raw("GET", gw.url + "dbs/app/colls/orders/docs/orders-1", gw.cert,
                    headers={"Authorization": "Bearer " + token})
            assert r.status_code == 503 and r.json()["code"] == "ServiceUnavailable", r.text
            assert time.monotonic() - t0 < 3, "a request waited past the token timeout"
        assert upstream.count() == 0, "an unsigned request went upstream"
        assert "no Entra token for the account" in gw.caddy.log_text()
    finally:
        gw.caddy.stop()
        upstream.close()
