"""The Cosmos DB emulator (pikami/cosmium) for the gateway tests, and the Caddyfile that fronts it.

- `Cosmium`: the emulator on 127.0.0.1 with TLS (its own certificate, which the SDK clients do
  not trust) and a random, non-default account key. Built by tests/run-e2e.sh from the Go
  module proxy into tests/.bin/cosmium. Note: cosmium v0.1.20 listens on all interfaces (its
  listen address is ":<port>"); it runs only for the test, on a random port, with a random key.
  Every request it receives is a `[GIN] ... | <status> | ... | <METHOD> "<path>"` line in its
  log (debug level), which `requests()` counts; a path with a trailing slash (the Python SDK's
  form) is logged twice, with and without the slash, and counted once.
- `cosmos_caddyfile()`: bin/caddy serving HTTPS on 127.0.0.1 with `iap_cosmos` in front of
  `reverse_proxy` to the emulator.
- `OidcCredential`: an azure-core TokenCredential that hands the SDK an OIDC token; the SDK then
  sends `Authorization: type=aad&ver=1.0&sig=<token>`.
"""

from __future__ import annotations

import base64
import http.client
import re
import secrets
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from azure.core.credentials import AccessToken

from iaplib import TESTS, free_port, stop_process, tail, wait_for
from pglib import make_cert

COSMIUM_BIN = TESTS / ".bin" / "cosmium"
GIN_LINE = re.compile(r'\[GIN\] .*\|\s+(\d{3})\s+\|.*\|\s+(\w+)\s+"([^"]*)"')


class Cosmium:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        if not COSMIUM_BIN.is_file():
            pytest.fail(f"{COSMIUM_BIN} is missing: tests/run-e2e.sh builds it (go build in tests/cosmium)",
                        pytrace=False)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}/"
        self.key = base64.b64encode(secrets.token_bytes(64)).decode()
        self.key_file = workdir / "account-key"
        self.key_file.write_text(self.key + "\n")
        self.key_file.chmod(0o600)
        certdir = workdir / "cosmium-tls"
        certdir.mkdir(exist_ok=True)
        self.cert, self.cert_key = make_cert(certdir)
        self.log_path = workdir / "cosmium.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Cosmium":
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(
                [str(COSMIUM_BIN), "-Host", "127.0.0.1", "-Port", str(self.port), "-AccountKey", self.key,
                 "-Cert", str(self.cert), "-CertKey", str(self.cert_key), "-LogLevel", "debug"],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"cosmium exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            return "Listening and serving HTTPS" in self.log_path.read_text(errors="replace")

        wait_for(up, 20, what="cosmium to listen")
        return self

    def stop(self):
        stop_process(self.proc)

    def data_requests(self) -> list[tuple[int, str, str]]:
        """requests() without account reads (GET /), which SDK clients with endpoint discovery on
        repeat in the background through the gateway."""
        return [r for r in self.requests() if r[2] != "/"]

    def requests(self) -> list[tuple[int, str, str]]:
        """(status, method, path) of every request the emulator received, in order."""
        text = self.log_path.read_text(errors="replace")
        return [(int(s), m, p) for s, m, p in GIN_LINE.findall(text) if p == "/" or not p.endswith("/")]


class OidcCredential:
    """azure-core's TokenCredential protocol over a fixed OIDC token."""

    def __init__(self, token: str, expires_on: int):
        self.token, self.expires_on = token, expires_on
        self.calls = 0

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, self.expires_on)


def cosmos_caddyfile(*, admin_port: int, storage: Path, log_path: Path, port: int, cert: Path, key: Path,
                     upstream_url: str, upstream_ca: Path | None, policy: str, log_level: str = "DEBUG") -> str:
    """HTTPS on 127.0.0.1:<port>: `iap_cosmos { policy }`, then reverse_proxy to the account."""
    policy = "\n".join("\t\t" + line if line.strip() else line for line in policy.strip("\n").splitlines())
    transport = ""
    if upstream_url.startswith("https://"):
        transport = (f"\t\t\ttransport http {{\n\t\t\t\ttls_trust_pool file {upstream_ca}\n\t\t\t}}\n"
                     if upstream_ca else "")
    return f"""{{
	admin 127.0.0.1:{admin_port}
	auto_https off
	persist_config off
	storage file_system {storage}
	log {{
		level {log_level}
		output file {log_path}
	}}
}}

https://127.0.0.1:{port} {{
	bind 127.0.0.1
	tls {cert} {key}
	route {{
		iap_cosmos {{
{policy}
		}}
		reverse_proxy {upstream_url.rstrip("/")} {{
{transport}		}}
	}}
}}
"""


def raw_path(base_url: str, ca: Path, method: str, path: str, headers: dict) -> int:
    """One request with the path sent exactly as given (no `..` folding); returns the status."""
    parts = urlsplit(base_url)
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=ctx, timeout=15)
    try:
        conn.request(method, path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def raw(method: str, url: str, ca: Path, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 15)
    return requests.request(method, url, verify=str(ca), **kwargs)
