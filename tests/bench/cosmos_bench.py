"""Cosmos DB gateway benchmark: point reads through bin/caddy vs straight to the emulator, side
by side in one run, with wrk.

    tests/.venv/bin/python tests/bench/cosmos_bench.py [--seconds S] [--rounds N]   (make bench-cosmos)

Starts its own OpenID provider, cosmium emulator (TLS, random key) and bin/caddy (iap_cosmos) on
loopback, seeds one item, then alternates wrk runs (GET of that item, keep-alive, HTTPS):
- direct: to the emulator, signed with the master key here (the emulator does not check the
  date, so one signature serves the whole run), as a client holding the key would;
- plain Caddy: the same signed request through a Caddy `reverse_proxy` with no iap_cosmos (the
  cost of the extra TLS hop and proxying alone);
- gateway: to Caddy with a bearer token (cache hit after the first request); Caddy checks the
  token and the grant, signs per request and proxies over TLS to the emulator.
The rounds alternate so both see the same machine noise; the table gives the median round.
The core's own per-request cost (parse + authorize + sign) is `cargo bench -p caddy-iap-cosmos`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from azure.cosmos import CosmosClient, PartitionKey  # noqa: E402

from cosmoslib import Cosmium  # noqa: E402
from iaplib import Caddy, IdP, make_keys  # noqa: E402
from test_cosmos import AUD, CLIENTS, Gateway  # noqa: E402

ITEM = "dbs/app/colls/orders/docs/orders-1"


def master_auth(key: str, verb: str, rtype: str, link: str, date: str) -> str:
    """An independent (Python) implementation of the master-key signature."""
    payload = f"{verb.lower()}\n{rtype.lower()}\n{link}\n{date.lower()}\n\n".encode()
    sig = base64.b64encode(hmac.new(base64.b64decode(key), payload, hashlib.sha256).digest()).decode()
    return quote(f"type=master&ver=1.0&sig={sig}", safe="")


def wrk(url: str, headers: dict, seconds: int, connections: int) -> dict:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"wrk saw {non2xx.group(1)} failed responses for {url}:\n{out}")

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return {"rps": rps, "p50": pct("50"), "p99": pct("99")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="iap-cosmos-bench-"))
    make_keys(work / "keys.json", "RS256")
    idp = IdP(work / "idp", work / "keys.json", clients=CLIENTS, name="idp").start()
    em = Cosmium(work / "cosmium").start()
    gw = plain = None
    try:
        owner = CosmosClient(em.url, credential=em.key, enable_endpoint_discovery=False)
        c = owner.create_database("app").create_container("orders", partition_key=PartitionKey(path="/id"))
        c.create_item({"id": "orders-1", "total": 10})
        (work / "gw").mkdir()
        # No log line per request: the benchmark measures the gateway, not its log.
        gw = Gateway(work / "gw", idp, em.url, em.cert, f"account_key_file {em.key_file}",
                     audit=False, log_level="WARN").start()

        # Plain Caddy: the gateway's site with the iap_cosmos block removed.
        plain_text = re.sub(r"\t\tiap_cosmos \{.*?\n\t\t\}\n(?=\t\treverse_proxy)", "", gw.caddy.caddyfile.read_text(), flags=re.S)
        (work / "plain").mkdir()
        plain = Caddy(work / "plain", upstream_address="", iap_config="")
        plain.text = plain_text.replace(f"127.0.0.1:{gw.port}", f"127.0.0.1:{plain.port}").replace(
            f"admin 127.0.0.1:{gw.caddy.admin_port}", f"admin 127.0.0.1:{plain.admin_port}").replace(
            str(gw.caddy.storage), str(plain.storage)).replace(str(gw.caddy.log_path), str(plain.log_path))
        plain.start()
        plain_url = f"https://127.0.0.1:{plain.port}/"

        date = formatdate(usegmt=True)
        base = {"x-ms-version": "2020-07-15", "x-ms-documentdb-partitionkey": '["orders-1"]'}
        direct_h = {**base, "x-ms-date": date, "Authorization": master_auth(em.key, "GET", "docs", ITEM, date)}
        gateway_h = {**base, "Authorization": "Bearer " + idp.token("reader", AUD)}
        runs = {"direct": (em.url + ITEM, direct_h), "plain Caddy": (plain_url + ITEM, direct_h),
                "gateway": (gw.url + ITEM, gateway_h)}
        results: dict[str, list[dict]] = {name: [] for name in runs}
        for url, h in runs.values():
            wrk(url, h, 2, args.connections)  # warm-up (TLS sessions, caches)
        for _ in range(args.rounds):
            for name, (url, h) in runs.items():
                results[name].append(wrk(url, h, args.seconds, args.connections))

        def med(name: str, k: str) -> float:
            return statistics.median(r[k] for r in results[name])

        print(f"\nPoint reads, wrk -t1 -c{args.connections} -d{args.seconds}s x {args.rounds} rounds "
              "(median), HTTPS keep-alive, all on loopback\n")
        print("| path | requests/s | p50 ms | p99 ms | rps vs direct | rps vs plain Caddy |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in runs:
            print(f"| {name} | {med(name, 'rps'):.0f} | {med(name, 'p50'):.2f} | {med(name, 'p99'):.2f} | "
                  f"{med(name, 'rps') / med('direct', 'rps'):.2f} | {med(name, 'rps') / med('plain Caddy', 'rps'):.2f} |")
        print("\nrounds (rps):", {k: [round(r["rps"]) for r in v] for k, v in results.items()})
    finally:
        for c in (gw.caddy if gw else None, plain):
            if c:
                c.stop()
        em.stop()
        idp.stop()


if __name__ == "__main__":
    main()
