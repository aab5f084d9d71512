"""Reload soak: wrk keeps a valid token flowing through bin/caddy while `caddy reload --force`
swaps between two iap configs N times (default 50). Run by `make soak`.

    tests/.venv/bin/python tests/bench/reload_soak.py [--reloads N] [--connections C]

Checks, and exits non-zero when one fails:
- zero failed requests: every response wrk saw was 2xx (the token is allowed by both configs),
  and no socket error other than connections the server closed at a swap and wrk reopened;
- every reload succeeded;
- no leak across reloads: the Caddy process's open descriptors, idle before and idle after
  the soak, are the same (within 2); its resident memory, sampled after each reload, does not
  grow from reloads 11-20 to the last ten (beyond 15% + 8 MiB of allocator noise).
Prints the RSS and fd series, and a Markdown summary.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from iaplib import AUD, CLIENTS, Caddy, IdP, free_port, issuer_block, make_keys, require_caddy  # noqa: E402

CONFIGS = [
    # A: a role from groups, an allow rule, an assertion minted per identity.
    """role reader claim groups contains readers
allow reader GET /items/*
assertion {
	audience https://upstream.test
}""",
    # B: the same access through another rule set, no assertion, a smaller cache.
    """role reader claim scope has items:read
role staff claim groups contains staff
allow reader GET /items/*
allow staff GET /items/*
cache_size 1000""",
]


def proc_stats(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, open fds) of a process."""
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=50)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--pause", type=float, default=0.5, help="seconds of traffic between reloads")
    ap.add_argument("--inspect", action="store_true", help="list the Caddy process's sockets at the end")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="iap-reload-soak-"))
    make_keys(work / "keys.json", "RS256")
    duration = int(args.reloads * (args.pause + 1.5)) + 10
    # The one token wrk sends must outlive the run: the IdP's default lifetime (300 s) is shorter
    # than a 200-reload soak, and expiry would show up as failed requests.
    clients = {**CLIENTS, "soak": {**CLIENTS["reader"], "access_token_ttl": duration + 120}}
    idp = IdP(work / "idp", work / "keys.json", clients=clients).start()
    upstream = Caddy(work / "upstream", upstream_address="", iap_config="")
    upstream.text = (f"{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}}\n"
                     f"http://127.0.0.1:{upstream.port} {{\n\trespond \"ok\" 200\n}}\n")
    # Caddy's reverse_proxy keeps a replaced config's upstream connections open until its
    # keep-alive idle timeout (2 min by default), so with reloads every second the descriptor
    # count would climb for two minutes whatever the iap handler does. A 3 s timeout bounds
    # that, so growth seen here is the handler's own.
    site = Caddy(work / "site", upstream_address=f"127.0.0.1:{upstream.port} {{\n\t\t\ttransport http {{\n"
                 "\t\t\t\tkeepalive 3s\n\t\t\t}\n\t\t}",
                 iap_config=issuer_block(idp.issuer) + "\n" + CONFIGS[0])
    wrk = None
    try:
        upstream.start()
        site.start()
        token = idp.token("soak", AUD)
        # Both configs allow this token; check before loading it.
        for i, cfg in enumerate(CONFIGS):
            site.reload(issuer_block(idp.issuer) + "\n" + cfg)
            r = site.get("/items/1", token)
            assert r.status_code == 200, f"config {i}: {r.status_code} {r.text}"
        pid = site.proc.pid
        time.sleep(4)  # past the upstream keep-alive timeout
        base_rss, base_fds = proc_stats(pid)
        wrk = subprocess.Popen(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{duration}s", "--latency",
             "-H", f"Authorization: Bearer {token}", f"{site.url}/items/1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2)
        series: list[tuple[int, float, int, int]] = []
        t0 = time.monotonic()
        for n in range(1, args.reloads + 1):
            cfg = CONFIGS[n % 2]
            t = time.monotonic()
            site.reload(issuer_block(idp.issuer) + "\n" + cfg)  # asserts the reload succeeded
            took = time.monotonic() - t
            time.sleep(args.pause)
            rss, fds = proc_stats(pid)
            series.append((n, took, rss, fds))
            print(f"reload {n:3d}: {took * 1000:6.0f} ms  rss {rss / 1024:7.1f} MiB  fds {fds}", flush=True)
        elapsed = time.monotonic() - t0
        if args.inspect:
            kinds: dict[str, int] = {}
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = re.sub(r"\[\d+\]", "", str(fd.readlink()))
                except OSError:
                    continue
                kinds[target] = kinds.get(target, 0) + 1
            print("  fds by kind:", kinds)
            ss = subprocess.run(["ss", "-tanpH"], capture_output=True, text=True).stdout
            peers: dict[str, int] = {}
            for f in (ln.split() for ln in ss.splitlines() if f"pid={pid}," in ln):
                local_port, peer_port = f[3].rsplit(":", 1)[1], f[4].rsplit(":", 1)[1]
                key = f"{f[0]} {'local ' + local_port if local_port in (str(site.port),) else 'peer ' + peer_port}"
                peers[key] = peers.get(key, 0) + 1
            print("  tcp:", peers)
            print("  ports: site", site.port, "upstream", upstream.port, "idp", idp.port)
        # Let wrk finish on its own: it reports only at the end of -d.
        out, _ = wrk.communicate(timeout=duration + 60)
        wrk = None
        time.sleep(4)  # idle again: the old configs' upstream connections have timed out
        end_rss, end_fds = proc_stats(pid)
    finally:
        if wrk:
            wrk.kill()
        site.stop()
        upstream.stop()
        idp.stop()

    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    connect, read, write, timeout = (int(x) for x in sock.groups()) if sock else (0, 0, 0, 0)
    # The first ten reloads include warm-up growth (caches, allocator arenas); the trend is
    # judged on the second ten against the last ten.
    early = series[10:20] if len(series) >= 30 else series[: len(series) // 2]
    late = series[-10:]
    rss_first = statistics.median(s[2] for s in early) / 1024
    rss_last = statistics.median(s[2] for s in late) / 1024
    print(f"\nwrk: {total} requests, non-2xx {non2xx}, socket errors connect {connect} read {read} "
          f"write {write} timeout {timeout}\n")
    print("| reloads | requests | failed (non-2xx) | socket errors | RSS idle before | RSS early | RSS last 10 | "
          "RSS idle after | fds idle before | fds idle after | reload p50 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(series)} in {elapsed:.0f} s | {total} | {non2xx} | {connect + read + write + timeout} | "
          f"{base_rss / 1024:.1f} MiB | {rss_first:.1f} MiB | {rss_last:.1f} MiB | {end_rss / 1024:.1f} MiB | "
          f"{base_fds} | {end_fds} | {statistics.median(s[1] for s in series) * 1000:.0f} ms |")

    problems = []
    if non2xx:
        problems.append(f"{non2xx} requests failed")
    if connect or write or timeout:
        problems.append("socket errors other than reads at a swap")
    if read > args.reloads * args.connections:
        problems.append(f"{read} read errors: more than one per connection per reload")
    if rss_last > rss_first * 1.15 + 8:
        problems.append(f"RSS grew from {rss_first:.1f} to {rss_last:.1f} MiB")
    if end_fds > base_fds + 2:
        problems.append(f"open descriptors grew from {base_fds} to {end_fds} across the reloads")
    if problems:
        print("FAILED: " + "; ".join(problems))
        sys.exit(1)
    print("OK: no failed request, no growth in memory or descriptors")


if __name__ == "__main__":
    main()
