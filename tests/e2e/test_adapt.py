"""The Caddyfile as users meet it: the shipped example adapts, and mistakes are reported with the
file name and line number."""

import json
import re
import subprocess
import time

import pytest

from iaplib import REPO, caddy_env, free_port, require_caddy

EXAMPLE = REPO / "Caddyfile.example"


def adapt(path, cwd, home):
    return subprocess.run(
        [str(require_caddy()), "adapt", "--config", str(path), "--adapter", "caddyfile"],
        cwd=cwd, env=caddy_env(home), capture_output=True, text=True, timeout=60,
    )


def test_example_caddyfile_adapts(tmp_path):
    require_caddy()
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing (it is part of the product and exercised here)"
    res = adapt(EXAMPLE, REPO, tmp_path)
    assert res.returncode == 0, f"caddy adapt {EXAMPLE.name} failed:\n{res.stdout}\n{res.stderr}"
    config = json.loads(res.stdout)
    assert '"iap"' in json.dumps(config), "the adapted example has no iap handler"


def test_example_caddyfile_validates(tmp_path):
    """`caddy validate` provisions every module: the example must load even though the
    identity providers it names are not reachable from here."""
    require_caddy()
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"
    res = subprocess.run(
        [str(require_caddy()), "validate", "--config", str(EXAMPLE), "--adapter", "caddyfile"],
        cwd=REPO, env=caddy_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, f"caddy validate {EXAMPLE.name} failed:\n{res.stdout}\n{res.stderr}"


GOOD_IAP = """\
		issuer https://idp.example.com {
			audience https://api.example.com
			leeway 30s
		}
		role reader claim groups contains readers
		allow reader GET /items/*
		assertion {
			audience https://upstream.example.com
		}
"""


def caddyfile(iap_body: str) -> str:
    return (
        "{\n"
        "\tadmin off\n"
        "\tauto_https off\n"
        "}\n"
        f"http://:{free_port()} {{\n"
        "\troute {\n"
        "\t\tiap {\n"
        f"{iap_body}"
        "\t\t}\n"
        "\t\treverse_proxy 127.0.0.1:9\n"
        "\t}\n"
        "}\n"
    )


def test_good_caddyfile_adapts(tmp_path):
    path = tmp_path / "Caddyfile"
    path.write_text(caddyfile(GOOD_IAP))
    res = adapt(path, tmp_path, tmp_path)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert '"iap"' in res.stdout


# (name, the wrong line, where it goes in GOOD_IAP: replacing which line)
MISTAKES = [
    ("unknown-subdirective", "\t\tfrobnicate yes\n", "\t\trole reader claim groups contains readers\n"),
    ("unknown-claim-op", "\t\trole reader claim groups containz readers\n", "\t\trole reader claim groups contains readers\n"),
    ("bad-duration", "\t\t\tleeway soon\n", "\t\t\tleeway 30s\n"),
    ("allow-without-path", "\t\tallow reader GET\n", "\t\tallow reader GET /items/*\n"),
    ("bad-assertion-alg", "\t\t\taudience https://upstream.example.com\n\t\t\talg HS256\n",
     "\t\t\taudience https://upstream.example.com\n"),
    ("unknown-issuer-option", "\t\t\taudiences https://api.example.com\n", "\t\t\taudience https://api.example.com\n"),
]


def names(out: str, filename: str, line: int) -> bool:
    """Whether Caddy's message points at filename:line (Caddy writes `at <path>:<line>`)."""
    return re.search(rf"{re.escape(filename)}:{line}(?!\d)", out) is not None


def line_of(text: str, fragment: str) -> int:
    """1-based line number of the last line of `fragment` in `text` (the wrong one)."""
    idx = text.index(fragment)
    return text[: idx + len(fragment.rstrip("\n"))].count("\n") + 1


@pytest.mark.parametrize("name,wrong,right", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_reports_file_and_line(tmp_path, name, wrong, right):
    require_caddy()
    assert right in GOOD_IAP
    text = caddyfile(GOOD_IAP.replace(right, wrong))
    path = tmp_path / f"{name}.Caddyfile"
    path.write_text(text)
    line = line_of(text, wrong)
    res = adapt(path, tmp_path, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"caddy adapt accepted a Caddyfile with a mistake ({name}):\n{out}"
    assert names(out, path.name, line), f"error does not name {path.name}:{line}:\n{out}"


def test_missing_audience_is_reported_with_file_and_line(tmp_path):
    require_caddy()
    body = GOOD_IAP.replace("\t\t\taudience https://api.example.com\n", "")
    text = caddyfile(body)
    path = tmp_path / "no-audience.Caddyfile"
    path.write_text(text)
    first = line_of(text, "\t\tissuer https://idp.example.com {\n")
    last = first + 2  # the issuer line, leeway, closing brace
    res = adapt(path, tmp_path, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"an issuer without audience was accepted:\n{out}"
    assert any(names(out, path.name, n) for n in range(first, last + 1)), \
        f"error does not name {path.name} at lines {first}-{last}:\n{out}"
    assert "audience" in out


def test_run_refuses_a_bad_caddyfile(tmp_path):
    text = caddyfile(GOOD_IAP.replace("contains readers", "containz readers"))
    path = tmp_path / "bad.Caddyfile"
    path.write_text(text)
    res = subprocess.run(
        [str(require_caddy()), "run", "--config", str(path), "--adapter", "caddyfile"],
        cwd=tmp_path, env=caddy_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert names(out, path.name, line_of(text, "containz")), out


def example_on_free_ports(admin: int, site: int, upstream: int) -> str:
    """Caddyfile.example with its fixed ports (2019, 8080, 8081) moved to free ones and every
    listener bound to 127.0.0.1."""
    text = EXAMPLE.read_text()
    for old, new in (("2019", admin), ("8080", site), ("8081", upstream)):
        assert re.search(rf":{old}\b", text), f"Caddyfile.example no longer uses port {old}: update this test"
        text = re.sub(rf":{old}\b", f":{new}", text)
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#"))
    assert lines[first].strip() == "{", "Caddyfile.example has no global options block first"
    lines.insert(first + 1, "\tdefault_bind 127.0.0.1\n\tpersist_config off\n")
    return "".join(lines)


def test_example_caddyfile_runs(tmp_path, request):
    """`make run` as a user would try it: the demo issuer's token opens /items/* for a reader,
    everything else is refused, and the demo upstream shows the identity."""
    import requests

    from iaplib import Caddy, register_logs

    require_caddy()
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"
    admin, port, upstream_port = free_port(), free_port(), free_port()
    inst = Caddy(workdir=tmp_path / "example", upstream_address="", iap_config="",
                 port=port, admin_port=admin, text=example_on_free_ports(admin, port, upstream_port))
    register_logs(request, inst.caddyfile, inst.stdout_path, inst.log_path)
    inst.start()
    try:
        base = f"http://127.0.0.1:{port}"

        def token(**q):
            r = requests.get(f"{base}/demo/token", params=q, timeout=10)
            assert r.status_code == 200, f"demo issuer: {r.status_code} {r.text}"
            return r.text.strip()

        reader = token(sub="alice", email="alice@example.com", groups="readers")
        admin_token = token(sub="bob", groups="admins")

        assert inst.get("/items/1").status_code == 401
        # The demo issuer lives in the same Caddy, so its keys may not be fetchable at the very
        # moment the config loads; a user trying it right after start must not wait long.
        started = time.monotonic()
        while True:
            r = inst.get("/items/1", reader)
            if r.status_code != 503 or time.monotonic() - started > 10:
                break
            time.sleep(0.25)
        assert r.status_code == 200, \
            f"{r.status_code} {r.text} ({time.monotonic() - started:.1f}s after the first try)"
        assert "user=alice" in r.text and "email=alice@example.com" in r.text and "reader" in r.text, r.text
        assert inst.request("POST", "/items/1", reader).status_code == 403
        assert inst.get("/admin", reader).status_code == 403
        assert inst.request("POST", "/admin", admin_token).status_code == 200
        assert inst.get("/items/1", token(sub="carol", groups="guests")).status_code == 403
        assert inst.get("/items/1", token(sub="dave", groups="readers", aud="other-api")).status_code == 401
        assert inst.get("/.well-known/iap/jwks.json").status_code == 200
    finally:
        inst.stop()
