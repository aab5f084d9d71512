"""Role rules (claims → roles) and allow rules (roles → methods and paths), as a user writes them
in the Caddyfile."""

import pytest

from iaplib import issuer_block, raw_request

CLAIM_RULES = """
role grp claim groups contains readers
role ns claim https://example.com/roles contains editor
role writer claim scope has items:write
role kc claim realm_access.roles contains kc-reader
role staff_mail {
	claim groups contains staff
	claim email suffix @example.com
}
role eq claim email equals admin@example.com
role pre claim email prefix reader@
role partial_word claim scope has items:wri
role substring claim groups contains read
allow grp GET /grp/*
allow ns GET /ns/*
allow writer GET /scope/*
allow kc GET /kc/*
allow staff_mail GET /staff/*
allow eq GET /eq/*
allow pre GET /pre/*
allow partial_word GET /partial/*
allow substring GET /substring/*
"""

# What each client's token must get from CLAIM_RULES (see CLIENTS in iaplib.py).
EXPECTED = {
    # groups [readers, staff], ns [viewer], scope "items:read", realm [.., kc-reader], @example.com
    ("reader", "items:read"): {"grp", "kc", "staff_mail", "pre"},
    # groups [admins, staff], ns [editor, viewer], scope "items:read items:write", realm [kc-admin]
    ("admin", "items:read items:write"): {"ns", "writer", "staff_mail", "eq"},
    # groups [readers], email short@example.com, no staff group
    ("shortlived", None): {"grp"},
    # groups [readers], no email, no scope
    ("noemail", None): {"grp"},
}
ROUTES = {"grp", "ns", "writer", "kc", "staff_mail", "eq", "pre", "partial_word", "substring"}
PATH = {"writer": "/scope/x", "staff_mail": "/staff/x", "partial_word": "/partial/x", "substring": "/substring/x"}


def roles_of(seen) -> set[str]:
    value = seen.one("X-IAP-Roles") or ""
    return {r.strip() for r in value.split(",") if r.strip()}


@pytest.mark.parametrize("client,scope", list(EXPECTED))
def test_claim_rules(idp, upstream, caddy, client, scope):
    site = caddy(issuer_block(idp.issuer) + "\n" + CLAIM_RULES)
    token = idp.token(client, scope=scope)
    expected = EXPECTED[(client, scope)]
    for role in sorted(ROUTES):
        path = PATH.get(role, f"/{role}/x")
        upstream.clear()
        r = site.get(path, token)
        if role in expected:
            assert r.status_code == 200, f"{client} should have role {role} ({path}): {r.status_code} {r.text}"
            assert roles_of(upstream.last()) == expected, f"{client}: roles header"
        else:
            assert r.status_code == 403, f"{client} must not have role {role} ({path}): {r.status_code}"
            assert upstream.count() == 0


@pytest.fixture
def reader_site(idp, caddy):
    return caddy(issuer_block(idp.issuer) + """
role reader claim groups contains readers
allow reader GET /items/*
allow reader GET /exact *.json
""")


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/items/1", 200),
    ("GET", "/items/1/deeper", 200),
    ("POST", "/items/1", 403),
    ("DELETE", "/items/1", 403),
    ("PUT", "/items/1", 403),
    ("HEAD", "/items/1", 403),  # the grammar lists HEAD separately (GET,HEAD)
    ("GET", "/admin", 403),
    ("GET", "/itemsX/1", 403),
    ("GET", "/", 403),
    ("GET", "/exact", 200),
    ("GET", "/exact/", 403),
    ("GET", "/exactly", 403),
    ("GET", "/data/report.json", 200),
    ("GET", "/data/report.jsonx", 403),
    ("POST", "/data/report.json", 403),
])
def test_method_and_path_rules(idp, upstream, reader_site, method, path, status):
    r = reader_site.request(method, path, idp.token("reader"))
    assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
    assert upstream.count() == (1 if status == 200 else 0)
    if status == 200:
        assert upstream.last().method == method


@pytest.mark.parametrize("path", [
    "/items/../admin",
    "/items/%2e%2e/admin",
    "/items/%2E%2E/admin",
    "/items/./../admin",
    "/items/..%2fadmin",
    "/items%2f..%2fadmin",
])
def test_dot_segments_cannot_escape_an_allowed_prefix(idp, upstream, reader_site, path):
    """`allow reader GET /items/*` must not let the reader reach /admin through dot segments:
    either the request is refused, or what the upstream gets is still under /items/."""
    status, _, body = raw_request(reader_site.url, "GET", path,
                                  [("Authorization", f"Bearer {idp.token('reader')}")])
    if status == 200:
        seen = upstream.last().path
        assert seen.startswith("/items/") and ".." not in seen and "%2e" not in seen.lower(), \
            f"{path} reached the upstream as {seen}"
    else:
        assert status in (400, 403, 404), f"{path}: {status} {body!r}"
        assert upstream.count() == 0


def test_rules_are_or_across_rules_and_and_within_a_block(idp, upstream, caddy):
    site = caddy(issuer_block(idp.issuer) + """
role both {
	claim groups contains admins
	claim groups contains readers
}
role either claim groups contains admins
role either claim groups contains readers
allow both GET /both
allow either GET /either
""")
    for client in ("reader", "admin"):
        token = idp.token(client)
        assert site.get("/either", token).status_code == 200, client
        assert site.get("/both", token).status_code == 403, client
