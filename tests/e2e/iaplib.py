"""Process wrappers for the caddy-iap end-to-end tests: the OpenID provider (tests/idp), a
recording upstream, and Caddy itself. conftest.py turns these into fixtures; tests import the
constants and the small token helpers from here."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
IDP_DIR = TESTS / "idp"
# `make caddy` builds it; IAP_CADDY_BIN points the tests at a Caddy built elsewhere.
CADDY_BIN = Path(os.environ.get("IAP_CADDY_BIN") or REPO / "bin" / "caddy")
ARTIFACTS = TESTS / "artifacts"

# Log files of the processes a test started, attached to its report when it fails (conftest.py).
LOGS = pytest.StashKey[list]()


def register_logs(request, *paths: Path) -> None:
    request.node.stash.setdefault(LOGS, []).extend(paths)

# The audience (resource indicator) the protected site accepts, and one it does not.
AUD = "https://api.test"
OTHER_AUD = "https://other.test"

# Clients of the test IdP. Each gets its claims in every access token it asks for.
# reader: RS256 (the IdP's first key), sub overridden.
# admin: ES256 token, sub is the client id.
# Every email is verified (email_verified: true), except the one of `unverified`.
CLIENTS: dict[str, dict] = {
    "reader": {
        "client_secret": "reader-secret",
        "scope": "items:read",
        "sub": "user-reader",
        "claims": {
            "email": "reader@example.com",
            "email_verified": True,
            "name": "Rita Reader",
            "groups": ["readers", "staff"],
            "https://example.com/roles": ["viewer"],
            "realm_access": {"roles": ["offline_access", "kc-reader"]},
        },
    },
    "admin": {
        "client_secret": "admin-secret",
        "scope": "items:read items:write",
        "alg": "ES256",
        "claims": {
            "email": "admin@example.com",
            "email_verified": True,
            "name": "Ada Admin",
            "groups": ["admins", "staff"],
            "https://example.com/roles": ["editor", "viewer"],
            "realm_access": {"roles": ["kc-admin"]},
        },
    },
    # Valid tokens that no role rule matches.
    "nobody": {
        "client_secret": "nobody-secret",
        "claims": {"groups": ["guests"]},
    },
    # A reader whose tokens carry no email claim.
    "noemail": {
        "client_secret": "noemail-secret",
        "claims": {"groups": ["readers"]},
    },
    # Tokens that expire two seconds after they are issued.
    "shortlived": {
        "client_secret": "shortlived-secret",
        "scope": "items:read",
        "access_token_ttl": 2,
        "claims": {"email": "short@example.com", "email_verified": True, "groups": ["readers"]},
    },
    # A reader whose email the IdP has not verified ("nOAuth": anyone could have typed it in):
    # the email must be ignored unless the issuer has trust_unverified_email.
    "unverified": {
        "client_secret": "unverified-secret",
        "claims": {"email": "ceo@example.com", "email_verified": False, "groups": ["readers"]},
    },
}


# People who sign in on the IdP's login form (browser sign-in); the user name is the sub.
# alice: email verified, groups and roles; bob: no roles, unverified email.
USERS: dict[str, dict] = {
    "alice": {
        "password": "alice-password",
        "claims": {
            "email": "alice@example.com",
            "email_verified": True,
            "name": "Alice Adams",
            "groups": ["staff", "admins"],
            "roles": ["editor", "viewer"],
        },
    },
    "bob": {
        "password": "bob-password",
        "claims": {"email": "bob@example.com", "email_verified": False, "name": "Bob Brown", "groups": ["guests"]},
    },
}


def browser_client(redirect_uris: list[str], post_logout_redirect_uris: list[str] = (), secret: str = "gateway-secret",
                   refresh: bool = True, **extra) -> dict:
    """A clients-file entry for a browser sign-in client (authorization code + PKCE S256), e.g.
    IdP(..., clients={**CLIENTS, "gateway": browser_client([f"https://127.0.0.1:{port}/.iap/callback"])}).
    extra: id_token_ttl, access_token_ttl, token_endpoint_auth_method, scope."""
    return {
        "client_secret": secret,
        "grant_types": ["authorization_code", *(["refresh_token"] if refresh else [])],
        "redirect_uris": list(redirect_uris),
        "post_logout_redirect_uris": list(post_logout_redirect_uris),
        **extra,
    }


def sign_in(page, username: str, password: str) -> None:
    """Fills in and submits the IdP's login form (the page must be showing it)."""
    page.wait_for_selector("#username")
    assert page.title() == "Sign in", f"not the IdP's login form: {page.title()!r} at {page.url}"
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#sign-in")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessExited(RuntimeError):
    """A process being waited for has exited: no point waiting any longer."""


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Polls predicate() until it returns a truthy value; returns it, or raises TimeoutError.
    Exceptions count as "not yet", except ProcessExited, which ends the wait at once."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f": {last_exc}" if last_exc else ""))


def tail(path: Path, max_chars: int = 20000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    if len(text) > max_chars:
        text = f"... ({len(text) - max_chars} earlier characters cut)\n" + text[-max_chars:]
    return text


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after timeout. Only ever the process this harness started."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --------------------------------------------------------------------------------------------
# Tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unverified_claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def unverified_header(token: str) -> dict:
    return jwt.get_unverified_header(token)


def make_keys(path: Path, *specs: str) -> dict:
    """Writes a JWKS with private keys (tests/idp/keys.mjs) and returns it.
    specs: "RS256", "ES256", or "ALG:KID"."""
    subprocess.run(
        ["node", str(IDP_DIR / "keys.mjs"), "--out", str(path), *specs],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return json.loads(path.read_text())


def write_jwks(path: Path, keys: list[dict]) -> Path:
    path.write_text(json.dumps({"keys": keys}, indent=2))
    return path


# --------------------------------------------------------------------------------------------
# The OpenID provider


class IdP:
    """tests/idp/server.mjs on its own port; restartable on the same port with new keys."""

    def __init__(self, workdir: Path, keys_file: Path, clients: dict[str, dict] | None = None, name: str = "idp",
                 users: dict[str, dict] | None = None):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.keys_file = keys_file
        # Written at every start, so a test may add a client (e.g. with a redirect URI whose port it
        # only learnt later) to .clients before starting or restarting.
        self.clients = clients if clients is not None else CLIENTS
        self.users = users if users is not None else USERS
        self.clients_file = workdir / f"{name}-clients.json"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self.starts = 0

    @property
    def keys(self) -> list[dict]:
        return json.loads(self.keys_file.read_text())["keys"]

    def start(self, timeout: float = 20.0) -> "IdP":
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            pytest.fail(f"{IDP_DIR}/node_modules is missing: run `npm ci` in tests/idp (tests/run-e2e.sh does it)")
        self.starts += 1
        self.clients_file.write_text(
            json.dumps(
                {
                    "scopes": ["items:read", "items:write"],
                    "clients": [{"client_id": cid, **cfg} for cid, cfg in self.clients.items()],
                    "users": self.users,
                },
                indent=2,
            )
        )
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_file.write(f"---- start #{self.starts} keys={self.keys_file}\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            [
                "node",
                str(IDP_DIR / "server.mjs"),
                "--port", str(self.port),
                "--issuer", self.issuer,
                "--keys", str(self.keys_file),
                "--clients", str(self.clients_file),
            ],
            cwd=IDP_DIR,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

        def up():
            if self.proc.poll() is not None:
                raise ProcessExited(f"IdP exited with {self.proc.returncode}")
            r = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2)
            return r.status_code == 200 and r.json().get("issuer") == self.issuer

        try:
            wait_for(up, timeout, what=f"IdP discovery at {self.issuer}")
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            pytest.fail(f"IdP did not start: {exc}\n--- {self.log_path}\n{tail(self.log_path)}")
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def restart(self, keys_file: Path | None = None) -> "IdP":
        """Stops and starts again on the same port and issuer, optionally with a new keys file
        (oidc-provider's documented way to rotate keys)."""
        self.stop()
        if keys_file is not None:
            self.keys_file = keys_file
        # The port was just released; a fast restart can race the kernel, so retry a little.
        for attempt in range(3):
            try:
                return self.start()
            except pytest.fail.Exception:
                if attempt == 2:
                    raise
                time.sleep(0.5)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def token_response(self, client: str, audience: str | None = AUD, scope: str | None = None) -> requests.Response:
        cfg = self.clients[client]
        data = {"grant_type": "client_credentials"}
        if audience is not None:
            data["resource"] = audience
        if scope is not None:
            data["scope"] = scope
        return requests.post(
            f"{self.issuer}/token",
            data=data,
            auth=(client, cfg["client_secret"]),
            timeout=10,
        )

    def token(self, client: str, audience: str | None = AUD, scope: str | None = None) -> str:
        """A JWT access token from a real client_credentials request."""
        r = self.token_response(client, audience, scope)
        assert r.status_code == 200, f"IdP refused a token for {client}: {r.status_code} {r.text}"
        body = r.json()
        assert body["token_type"] == "Bearer"
        return body["access_token"]

    def jwks(self) -> dict:
        return requests.get(f"{self.issuer}/jwks", timeout=5).json()

    def discovery(self) -> dict:
        return requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=5).json()


# --------------------------------------------------------------------------------------------
# The upstream


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def all(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def one(self, name: str) -> str | None:
        """The single value of header `name`, None if absent; fails if it came more than once."""
        values = self.all(name)
        assert len(values) <= 1, f"upstream got {name} {len(values)} times: {values}"
        return values[0] if values else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, list(self.headers.items()), body)
        self.server.upstream._record(seen)
        payload = json.dumps(
            {"method": seen.method, "path": seen.path, "headers": seen.headers, "upstream": True}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, fmt, *args):  # keep pytest output clean
        pass


class Upstream:
    """An HTTP server in a thread that records every request and echoes it back as JSON."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.upstream = self
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="upstream", daemon=True)
        self._thread.start()

    def _record(self, seen: Seen):
        with self._lock:
            self._seen.append(seen)

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def count(self) -> int:
        with self._lock:
            return len(self._seen)

    def last(self) -> Seen:
        with self._lock:
            assert self._seen, "the upstream was never reached"
            return self._seen[-1]

    def clear(self):
        with self._lock:
            self._seen.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------
# Caddy


def require_caddy() -> Path:
    if not (CADDY_BIN.is_file() and os.access(CADDY_BIN, os.X_OK)):
        pytest.fail(f"{CADDY_BIN} is missing: run `make caddy` first", pytrace=False)
    return CADDY_BIN


def caddy_env(home: Path) -> dict:
    """Caddy's environment: its home, config and data directories inside the test's tmp dir."""
    env = dict(os.environ)
    for d in ("home", "config", "data"):
        (home / d).mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home / "home"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
    )
    return env


def indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line.strip() else line for line in text.strip("\n").splitlines())


@dataclass
class Caddy:
    """One `caddy run` with a generated Caddyfile: a single site at http://127.0.0.1:<port> whose
    route is `iap { <iap_config> }` then `reverse_proxy <upstream>`."""

    workdir: Path
    upstream_address: str
    iap_config: str
    site_extra: str = ""
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    storage: Path | None = None
    # A whole Caddyfile to run instead of the generated one (its site must listen on `port`).
    text: str | None = None
    # Lines for the global log block after its level and output (a `format filter`, say).
    log_extra: str = ""
    proc: subprocess.Popen | None = None
    reloads: int = 0
    reloaded_at: float = 0.0  # time.monotonic() when the last reload returned
    resends: int = 0  # requests `send` sent again (see there)

    def __post_init__(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.caddyfile = self.workdir / "Caddyfile"
        self.log_path = self.workdir / "caddy.log"
        self.stdout_path = self.workdir / "caddy.stdout.log"
        self.storage = self.storage or self.workdir / "storage"
        self.url = f"http://127.0.0.1:{self.port}"

    def render(self, iap_config: str | None = None, site_extra: str | None = None) -> str:
        if self.text is not None:
            return self.text
        iap_config = self.iap_config if iap_config is None else iap_config
        site_extra = self.site_extra if site_extra is None else site_extra
        return (
            "{\n"
            f"\tadmin 127.0.0.1:{self.admin_port}\n"
            "\tdefault_bind 127.0.0.1\n"
            "\tauto_https off\n"
            "\tpersist_config off\n"
            f"\tstorage file_system {self.storage}\n"
            "\tlog {\n"
            "\t\tlevel DEBUG\n"
            f"\t\toutput file {self.log_path}\n"
            + (indent(self.log_extra, "\t\t") + "\n" if self.log_extra.strip() else "")
            + "\t}\n"
            "}\n\n"
            f"http://:{self.port} {{\n"
            + (indent(site_extra, "\t") + "\n" if site_extra.strip() else "")
            + "\troute {\n"
            "\t\tiap {\n"
            f"{indent(iap_config, chr(9) * 3)}\n"
            "\t\t}\n"
            f"\t\treverse_proxy {self.upstream_address}\n"
            "\t}\n"
            "}\n"
        )

    def start(self, timeout: float = 30.0) -> "Caddy":
        self.caddyfile.write_text(self.render())
        binary = require_caddy()
        out = open(self.stdout_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(
                [str(binary), "run", "--config", str(self.caddyfile), "--adapter", "caddyfile"],
                cwd=self.workdir,
                env=caddy_env(self.workdir),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            out.close()

        def up():
            if self.proc.poll() is not None:
                raise ProcessExited(f"caddy exited with {self.proc.returncode}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        try:
            wait_for(up, timeout, what=f"caddy to listen on {self.url}")
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            pytest.fail(f"caddy did not start: {exc}\n{self.dump()}", pytrace=False)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def check_after_stop(self) -> None:
        """Fails the test if Caddy logged a handler panic (net/http answers one by closing the
        connection, which `send` may have resent), or if more requests were resent than there
        were reloads to explain them."""
        for path in (self.log_path, self.stdout_path):
            if path.exists() and PANIC_LOG in path.read_text(errors="replace"):
                pytest.fail(f"caddy logged a panic:\n{self.dump()}", pytrace=False)
        assert self.resends <= self.reloads, f"{self.resends} requests resent after {self.reloads} reloads"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reload(self, iap_config: str, site_extra: str | None = None) -> subprocess.CompletedProcess:
        """`caddy reload` with a changed iap block; fails the test if the reload is refused."""
        self.iap_config = iap_config
        if site_extra is not None:
            self.site_extra = site_extra
        self.caddyfile.write_text(self.render())
        res = subprocess.run(
            [
                str(require_caddy()), "reload",
                "--config", str(self.caddyfile), "--adapter", "caddyfile",
                "--address", f"127.0.0.1:{self.admin_port}", "--force",
            ],
            cwd=self.workdir,
            env=caddy_env(self.workdir),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, f"caddy reload failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n{self.dump()}"
        self.reloads += 1
        self.reloaded_at = time.monotonic()
        return res

    def send(self, method: str, url: str, **kwargs) -> requests.Response:
        """`requests.request`, except that within RESEND_WINDOW seconds of a reload a GET or HEAD
        whose connection was closed before any response is sent once more, as browsers do.
        Caddy stops the old server in goroutines after `caddy reload` returns, so the old server
        can still accept a new connection, and net/http closes a connection whose request it
        reads once shutdown has begun. Each resend is counted (check_after_stop bounds them)."""
        try:
            return requests.request(method, url, **kwargs)
        except requests.ConnectionError as exc:
            recent = self.reloads and time.monotonic() - self.reloaded_at < RESEND_WINDOW
            if not (recent and method in ("GET", "HEAD") and _closed_unanswered(exc)):
                raise
        self.resends += 1
        return requests.request(method, url, **kwargs)

    def request(self, method: str, path: str, token: str | None = None, headers: dict | None = None,
                **kwargs) -> requests.Response:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 15)
        kwargs.setdefault("allow_redirects", False)
        return self.send(method, self.url + path, headers=h, **kwargs)

    def get(self, path: str, token: str | None = None, **kwargs) -> requests.Response:
        return self.request("GET", path, token, **kwargs)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def dump(self) -> str:
        return (
            f"--- {self.caddyfile}\n{tail(self.caddyfile)}\n"
            f"--- {self.stdout_path}\n{tail(self.stdout_path)}\n"
            f"--- {self.log_path}\n{tail(self.log_path)}"
        )


# What net/http logs when a handler panics (Caddy routes it to the http.stdlib logger).
PANIC_LOG = "http: panic serving"
# How long after a reload Caddy.send resends a dropped GET: the old server stops accepting within
# moments of the reload call's return; this leaves a loaded CI machine ample room.
RESEND_WINDOW = 2.0


def _closed_unanswered(exc: BaseException) -> bool:
    """Whether the server closed or reset the connection (not: refused it, or timed out)."""
    pending = [exc]
    while pending:
        e = pending.pop()
        if isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError)):
            return True
        pending.extend(a for a in e.args if isinstance(a, BaseException))
    return False


def raw_request(url: str, method: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, dict, bytes]:
    """One request with exactly these header lines (duplicates and odd casing kept), on a fresh
    connection. Returns (status, lower-cased headers, body)."""
    parsed = urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=15)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def issuer_block(issuer: str, *lines: str, audience: str = AUD) -> str:
    """`issuer <url> { audience <aud> ... }` for an iap block."""
    body = "\n".join([f"audience {audience}", *lines])
    return f"issuer {issuer} {{\n{indent(body, chr(9))}\n}}"
