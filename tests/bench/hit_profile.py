"""Where a cache hit's added CPU goes inside the running proxy: perf profiles of plain Caddy and of
caddy-iap with one hot RS256 token, from the same binary, in alternating rounds; flat samples per
symbol as µs per request, grouped (the engine, the Go side of caddy-iap, cgo, the collector and
allocator, reverse_proxy's header work, the kernel...), and the symbols that differ most.

    tests/.venv/bin/python tests/bench/hit_profile.py --caddy bin/caddy-symbols [--rounds N] [--duration S]
    make bench-hit-profile      (builds bin/caddy-symbols first)

Same setup as peers.py: the proxy on CPU 0, wrk and the upstream on CPU 1. The grouping goes by
symbol name, so it is a guide, not an exact split (a runtime function can serve more than one group).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from miss_profile import group, record, samples, setup  # noqa: E402
from peers import CADDY, LOAD_CPU, Server, iap_site, make_tokens  # noqa: E402

HZ = 4000

# Go runtime symbols by what they do for this comparison; the first matching prefix wins.
GO_GROUPS = (
    ("cgo", ("runtime.cgocall", "runtime.asmcgocall", "runtime.entersyscall", "runtime.exitsyscall",
             "runtime.reentersyscall", "runtime.cgoCheck", "runtime.cgoIsGoPointer", "_cgo_", "crosscall",
             "x_cgo")),
    ("allocator", ("runtime.mallocgc", "runtime.nextFreeFast", "runtime.(*mcache)", "runtime.(*mcentral)",
                   "runtime.newobject", "runtime.makeslice", "runtime.growslice", "runtime.heapSetType",
                   "runtime.memclrNoHeapPointers")),
    ("collector", ("runtime.gc", "runtime.scan", "runtime.greyobject", "runtime.markroot", "runtime.findObject",
                   "runtime.wbBuf", "runtime.bulkBarrier", "runtime.(*gcWork)", "runtime.tryDeferToSpanScan",
                   "runtime.(*spanSet)", "runtime.(*sweepLocked)", "runtime.sweepone", "runtime.bgsweep",
                   "runtime.(*mspan)", "runtime.step", "runtime.pcvalue", "runtime.(*unwinder)",
                   "runtime.funcspdelta", "gcWriteBarrier", "runtime.(*mheap)")),
)


def category(sym: str) -> str:
    g = group(sym)
    if g != "other":
        return f"engine: {g}"
    if sym.startswith("[k] "):
        return "kernel"
    if "caddy-iap/caddy-iap" in sym:
        return "caddy-iap Go"
    for name, prefixes in GO_GROUPS:
        if sym.startswith(prefixes):
            return name
    if sym.startswith("runtime."):
        return "runtime, other"
    if "reverseproxy" in sym:
        return "reverse_proxy"
    if sym.startswith(("net/http.", "net/textproto.")):
        return "net/http"
    if "zap" in sym or "LoggableHTTP" in sym or "LoggableString" in sym:
        return "logger encoding"
    return "Go, other"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--caddy", default=str(CADDY), help="a bin/caddy with symbols")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--top", type=int, default=30, help="symbols listed by their difference")
    args = ap.parse_args()
    work, keys, bench = setup("iap-hit-profile", args.duration)
    hot = work / "hot.txt"
    hot.write_text(make_tokens(keys, "RS256", 1, "hot")[0] + "\n")
    up = Server(work, "upstream", CADDY, '\trespond "ok" 200', cpu=LOAD_CPU).start()
    upstream = f"127.0.0.1:{up.port}"
    rows = [("plain", f"\treverse_proxy {upstream}"), ("caddy-iap", iap_site(upstream, keys))]
    per_round: dict[str, list[collections.Counter]] = {name: [] for name, _ in rows}
    by_symbol: dict[str, collections.Counter] = {name: collections.Counter() for name, _ in rows}
    try:
        for rnd in range(args.rounds):
            for name, site in rows if rnd % 2 == 0 else rows[::-1]:
                srv = Server(work, f"{name}-{rnd}", Path(args.caddy), site).start()
                try:
                    bench.wrk(srv.url, hot, 2)
                    data = work / f"perf-{name}-{rnd}.data"
                    rec = record(srv.pid, data, HZ)
                    r = bench.wrk(srv.url, hot, args.duration)
                    rec.send_signal(2)
                    rec.wait()
                    if r["bad"]:
                        sys.exit(f"{name}: {r['bad']} responses were not 2xx ({r['statuses']})")
                    us = 1e6 / HZ / r["requests"]
                    cats: collections.Counter = collections.Counter()
                    for n, sym in samples(data):
                        cats[category(sym)] += n * us
                        by_symbol[name][sym] += n * us / args.rounds
                    per_round[name].append(cats)
                    print(f"round {rnd} {name}: {r['rps']:.0f} req/s, {sum(cats.values()):.1f} µs per request",
                          flush=True)
                finally:
                    srv.stop()
    finally:
        up.stop()

    print(f"\nµs per request, medians of {args.rounds} rounds; the difference is taken round by round")
    print(f"{'':24} {'plain':>8} {'caddy-iap':>10} {'added':>8}   rounds")
    names = sorted({k for rounds in per_round.values() for c in rounds for k in c})
    for cat in [*names, "all"]:
        def value(c: collections.Counter, cat: str = cat) -> float:
            return sum(c.values()) if cat == "all" else c.get(cat, 0.0)
        p = [value(c) for c in per_round["plain"]]
        i = [value(c) for c in per_round["caddy-iap"]]
        d = [b - a for a, b in zip(p, i)]
        print(f"{cat:24} {statistics.median(p):8.2f} {statistics.median(i):10.2f} {statistics.median(d):+8.2f}   "
              + " ".join(f"{x:+.2f}" for x in d))
    print("\nsymbols by their difference (mean µs per request):")
    plain, iap = by_symbol["plain"], by_symbol["caddy-iap"]
    for sym in sorted(set(plain) | set(iap), key=lambda s: -abs(iap[s] - plain[s]))[:args.top]:
        print(f"  {iap[sym] - plain[sym]:+7.3f}  [{category(sym)}] {sym[:110]}")


if __name__ == "__main__":
    main()
