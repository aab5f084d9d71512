"""Where a cache miss's CPU goes inside the running proxy: perf profiles of caddy-iap under wrk
with one hot RS256 token and with distinct RS256 tokens, split into the crypto library (aws-lc),
the rest of the Rust engine, libc's allocator and memory routines, and everything else (Go,
kernel), per request.

    tests/.venv/bin/python tests/bench/miss_profile.py --caddy PATH [--duration S]
    make bench-miss-profile     (builds an optimized bin/caddy-symbols with symbols first)

The binary needs symbols (xcaddy strips by default; the Makefile target builds with
XCADDY_GO_BUILD_FLAGS=-trimpath) and `perf` (linux-perf). Same setup as peers.py: the proxy on
CPU 0, wrk and the upstream on CPU 1. The miss's own cost is the difference of the two runs per
request; "× crypto" compares what the engine adds on a miss (crypto + Rust + libc) with the crypto
library's part of it. aws-lc allocates through libc's malloc too, so "libc" holds some of its cost.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import CADDY, LOAD_CPU, Bench, Keys, Server, iap_site, make_tokens  # noqa: E402

HZ = 2000


# What is left of the proxy's own binary once Go (package-qualified names, and its assembly
# bodies and cgo glue) and Rust (paths) are named is C code, and the only C code linked into it
# is aws-lc (libc is a shared library, told apart by perf's dso column), whose assembly labels
# carry no common prefix.
GO_C_PREFIXES = ("runtime", "_cgo", "x_cgo", "crosscall", "__vdso", "_rt0", "gosave", "gogo", "0x", "gcWriteBarrier",
                 "morestack", "asmcgocall", "systemstack", "mcall", "setg", "debugCall", "callRet", "sigtramp")


def group(sym: str) -> str:
    if sym.startswith("[k] "):
        return "other"
    if sym.startswith("libc:"):
        return "libc"
    # Rust symbols are paths (a::b); Go's carry a package path with '/' or start with runtime.
    if ("::" in sym and "/" not in sym and not sym.startswith("runtime")) or sym.startswith(("iap_", "<")):
        return "rust"
    if "." in sym or "/" in sym or sym.startswith(GO_C_PREFIXES) or sym.endswith("body"):
        return "other"
    return "crypto"


def setup(name: str, duration: int) -> tuple[Path, Keys, Bench]:
    """A fresh work directory under /tmp, signing keys in it, and wrk as peers.py runs it (one
    thread, 32 connections) for `duration` seconds."""
    work = Path(f"/tmp/{name}-{uuid.uuid4().hex[:6]}")
    work.mkdir(parents=True)
    return work, Keys(work), Bench(argparse.Namespace(threads=1, connections=32, duration=duration), work)


def record(pid: int, data: Path, hz: int) -> subprocess.Popen:
    """perf sampling process `pid` into `data` until sent SIGINT. It takes a moment to attach to
    every thread of a large binary (the first time, over a second), so this waits before the load
    it is to see starts."""
    # No build-ids: xcaddy builds of different code can carry the same GNU build-id, and perf
    # would then symbolize with whichever of them its ~/.debug cache saw first.
    rec = subprocess.Popen(["perf", "record", "--no-buildid", "--no-buildid-cache", "-F", str(hz),
                            "-o", str(data), "-p", str(pid)], stderr=subprocess.DEVNULL)
    time.sleep(2)
    return rec


def samples(data: Path) -> list[tuple[int, str]]:
    """(samples, symbol) per symbol; kernel symbols as "[k] name", libc's as "libc:name"."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "dso,sym", "-g", "none",
                          "-n"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s+[\d.]+%\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if m:
            n, dso, space, sym = int(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
            if space == "k":
                sym = f"[k] {sym}"
            elif dso.startswith("libc"):
                sym = f"libc:{sym}"
            rows.append((n, sym))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--caddy", default=str(CADDY), help="a bin/caddy with symbols")
    ap.add_argument("--duration", type=int, default=8)
    args = ap.parse_args()
    work, keys, bench = setup("iap-miss-profile", args.duration)
    up = Server(work, "upstream", CADDY, '\trespond "ok" 200', cpu=LOAD_CPU).start()
    srv = Server(work, "iap", Path(args.caddy), iap_site(f"127.0.0.1:{up.port}", keys)).start()
    try:
        hot = work / "hot.txt"
        hot.write_text(make_tokens(keys, "RS256", 1, "hot")[0] + "\n")
        distinct = work / "distinct.txt"
        distinct.write_text("\n".join(make_tokens(keys, "RS256", 12_000 * args.duration, "d")) + "\n")
        per_req: dict[str, dict[str, float]] = {}
        top: list[tuple[float, str]] = []
        for name, tokens in (("hot", hot), ("distinct", distinct)):
            bench.wrk(srv.url, hot, 1)  # warm the process, never the measured tokens
            data = work / f"perf-{name}.data"
            rec = record(srv.pid, data, HZ)
            r = bench.wrk(srv.url, tokens, args.duration)
            rec.send_signal(2)
            if r["bad"]:
                sys.exit(f"{name}: {r['bad']} responses were not 2xx ({r['statuses']}): the profile would be of refusals")
            rec.wait()
            us = 1e6 / HZ / r["requests"]
            g = {"crypto": 0.0, "rust": 0.0, "libc": 0.0, "other": 0.0}
            for n, sym in samples(data):
                g[group(sym)] += n * us
                if name == "distinct":
                    top.append((n * us, sym))
            per_req[name] = g
            print(f"{name}: {r['rps']:.0f} req/s; µs per request: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in g.items()) + f"; total {sum(g.values()):.1f}", flush=True)
        extra = {k: per_req["distinct"][k] - per_req["hot"][k] for k in ("crypto", "rust", "libc")}
        engine = sum(extra.values())
        print(f"a miss adds, in the engine: crypto {extra['crypto']:.2f} µs, other Rust {extra['rust']:.2f} µs,"
              f" libc {extra['libc']:.2f} µs = {engine:.2f} µs, {engine / extra['crypto']:.2f}× the crypto part")
        for label, pick in (("engine", lambda g: g != "other"), ("other (Go, kernel)", lambda g: g == "other")):
            print(f"top {label} symbols on the distinct run (µs per request):")
            for us, sym in sorted((t for t in top if pick(group(t[1]))), reverse=True)[:15]:
                print(f"  {us:6.2f}  {sym[:100]}")
    finally:
        srv.stop()
        up.stop()


if __name__ == "__main__":
    main()
