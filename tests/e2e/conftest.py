"""Fixtures for the caddy-iap end-to-end tests.

- `idp`: one OpenID provider (tests/idp/server.mjs) for the whole session, keys RS256 (signs by
  default) + ES256. Never restart or stop it in a test: use `idp_factory` for that.
- `idp_factory(*key_specs, clients=None, users=None, start=True)`: a fresh IdP per call, for tests
  that rotate keys, stop the IdP, or need their own clients (a browser client with the redirect
  URI of their gateway: iaplib.browser_client) or users (default iaplib.USERS).
- `upstream`: a recording HTTP server; `upstream.requests` is everything it received.
- `caddy(iap_config, ...)`: a started `bin/caddy run` whose site is `iap { iap_config }` in front
  of the upstream; `.reload(new_iap_config)`. Fails (never skips) when bin/caddy is missing.
- `browser`: one headless Chromium for the session (Debian's `chromium` driven by Playwright;
  $IAP_CHROMIUM overrides the path). Fails (never skips) when it is missing.
- `browser_context`: a fresh context per test (no cookies), HTTPS errors ignored (Caddy's internal
  CA and the tests' self-signed certificates); `page`: a page in it. iaplib.sign_in(page, user,
  password) fills in the IdP's login form.
- `artifacts_dir`: tests/artifacts/<test>/ for screenshots (kept for every test of the last run).

On a failing test the logs of every process it started (Caddyfile, caddy stdout, caddy.log,
IdP log) are attached to the report and copied to tests/artifacts/<test>/, with a screenshot of
its `page` if it has one.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from iaplib import ARTIFACTS, LOGS, Caddy, IdP, Upstream, make_keys, register_logs, tail

_register_logs = register_logs


def pytest_sessionstart(session):
    # Artifacts are only for the tests that failed in this run.
    shutil.rmtree(ARTIFACTS, ignore_errors=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.failed and rep.when in ("setup", "call"):
        page = item.funcargs.get("page") if hasattr(item, "funcargs") else None
        if page is not None:
            try:
                shot = artifacts_path(item) / "failure.png"
                page.screenshot(path=str(shot), full_page=True)
                rep.sections.append(("browser", f"at {page.url}, screenshot {shot}"))
            except Exception as exc:  # noqa: BLE001 - the page may be gone; the report matters more
                rep.sections.append(("browser", f"no screenshot: {exc}"))
        paths = item.stash.get(LOGS, [])
        if paths:
            dest = artifacts_path(item)
            for p in dict.fromkeys(paths):
                rep.sections.append((f"log {p.name} ({p})", tail(p)))
                if p.exists():
                    shutil.copy(p, dest / f"{p.parent.name}-{p.name}")
    return rep


def artifacts_path(item) -> Path:
    dest = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)
    dest.mkdir(parents=True, exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def _session_idp(session_dir):
    keys = session_dir / "idp-keys.json"
    make_keys(keys, "RS256", "ES256")
    idp = IdP(session_dir / "idp", keys)
    idp.start()
    yield idp
    idp.stop()


@pytest.fixture
def idp(_session_idp, request):
    """The shared IdP (issuer, token(client, audience, scope), keys)."""
    if not _session_idp.running:
        _session_idp.start()
    _register_logs(request, _session_idp.log_path)
    return _session_idp


@pytest.fixture
def idp_factory(tmp_path, request):
    started: list[IdP] = []

    def make(*key_specs: str, start: bool = True, name: str | None = None,
             clients: dict[str, dict] | None = None, users: dict[str, dict] | None = None) -> IdP:
        name = name or f"idp{len(started) + 1}"
        keys = tmp_path / f"{name}-keys-1.json"
        make_keys(keys, *(key_specs or ("RS256",)))
        inst = IdP(tmp_path / name, keys, clients=clients, name=name, users=users)
        started.append(inst)
        _register_logs(request, inst.log_path)
        if start:
            inst.start()
        return inst

    yield make
    for inst in started:
        inst.stop()


@pytest.fixture
def upstream():
    up = Upstream()
    yield up
    up.close()


@pytest.fixture
def caddy(tmp_path, upstream, request):
    """Factory: caddy(iap_config, site_extra="", upstream_address=None, start=True, storage=None,
    log_extra="") -> a started Caddy (stopped at teardown)."""
    started: list[Caddy] = []

    def make(iap_config: str, site_extra: str = "", upstream_address: str | None = None,
             start: bool = True, storage: Path | None = None, log_extra: str = "") -> Caddy:
        inst = Caddy(
            workdir=tmp_path / f"caddy{len(started) + 1}",
            upstream_address=upstream_address or upstream.address,
            iap_config=iap_config,
            site_extra=site_extra,
            storage=storage,
            log_extra=log_extra,
        )
        started.append(inst)
        _register_logs(request, inst.caddyfile, inst.stdout_path, inst.log_path)
        if start:
            inst.start()
        return inst

    yield make
    for inst in started:
        inst.stop()
    for inst in started:
        inst.check_after_stop()


# --------------------------------------------------------------------------------------------
# Browser (Playwright driving Debian's chromium; `playwright install` is never needed)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright  # only the browser tests need it

    path = os.environ.get("IAP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no chromium: `apt-get install chromium` (or set IAP_CHROMIUM)", pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True)
        yield b
        b.close()


@pytest.fixture
def browser_context(browser):
    ctx = browser.new_context(ignore_https_errors=True)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(browser_context):
    return browser_context.new_page()


@pytest.fixture
def artifacts_dir(request) -> Path:
    """tests/artifacts/<test>/ for screenshots; its path is printed (shown with -s or on failure)."""
    dest = artifacts_path(request.node)
    print(f"artifacts: {dest}")
    return dest
