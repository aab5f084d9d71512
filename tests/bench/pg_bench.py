"""PostgreSQL gateway benchmark: connection setup and relay throughput, side by side in one run.

    tests/.venv/bin/python tests/bench/pg_bench.py [--connects N] [--seconds S]   (make bench-postgres)

Starts its own PostgreSQL (TLS on), OpenID provider and bin/caddy on loopback, then measures:
- connection setup (connect, SELECT 1, close), sequentially, for a direct SCRAM login over TLS, a
  direct SCRAM login without TLS, the gateway with a re-used credential, and the gateway for a
  fresh identity (the first login of an identity: token check + role provisioning);
- relay throughput: pgbench -S (select-only) direct over TLS, and through the gateway.
Prints a Markdown table; numbers are medians (setup) and pgbench's tps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

import psycopg  # noqa: E402

from iaplib import Caddy, IdP, free_port, make_keys  # noqa: E402
from pglib import ADMIN_PASSWORD, ADMIN_USER, DB, Postgres, make_cert, pg_bin, pg_caddyfile  # noqa: E402

AUD = "https://db.test"
FRESH = 30
CLIENTS = {f"u{i}": {"client_secret": "s", "claims": {"email": f"u{i}@example.com", "email_verified": True,
                                                      "groups": ["readers"]}} for i in range(FRESH + 1)}


def timed_connects(n: int, **kw) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        with psycopg.connect(**kw) as conn:
            conn.execute("SELECT 1").fetchone()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pgbench(seconds: int, clients: int, env: dict, *conn: str) -> float:
    r = subprocess.run([pg_bin("pgbench"), "-S", "-n", "-T", str(seconds), "-c", str(clients), "-j", "2", *conn],
                       env=env, capture_output=True, text=True, timeout=seconds + 60)
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        if line.startswith("tps ="):
            return float(line.split()[2])
    raise RuntimeError(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connects", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--unix", action="store_true",
                    help="the gateway reaches PostgreSQL over its Unix socket (co-located), not loopback TCP")
    ap.add_argument("--profile", help="write a CPU profile of Caddy during the gateway pgbench run here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="iap-pg-bench-"))
    pg = Postgres()
    idp = caddy = None
    try:
        pg.start()
        cert, key = make_cert(work)
        # TLS on the server too, so "direct" can be measured with the same encryption.
        for src, name in ((cert, "server.crt"), (key, "server.key")):
            dst = pg.data / name
            shutil.copy(src, dst)
            os.chmod(dst, 0o600)
            if pg.as_postgres:
                shutil.chown(dst, "postgres", "postgres")
        pg.sql("ALTER SYSTEM SET ssl = on", db="postgres")
        pg.sql("SELECT pg_reload_conf()", db="postgres")
        pg.sql("CREATE ROLE bench LOGIN PASSWORD 'bench-pw' IN ROLE app_reader", db="postgres")
        subprocess.run([pg_bin("pgbench"), "-i", "-q", "-s", "1", "-h", str(pg.dir), "-p", str(pg.port),
                        "-U", "postgres", DB], check=True, capture_output=True)
        pg.sql("GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers TO app_reader")

        keys = work / "keys.json"
        make_keys(keys, "RS256")
        idp = IdP(work / "idp", keys, clients=CLIENTS, name="bench-idp").start()
        os.environ["IAP_TEST_PG_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        caddy = Caddy(workdir=work / "caddy", upstream_address="", iap_config="")
        policy = f"""issuer {idp.issuer} {{
	audience {AUD}
}}
role reader claim groups contains readers
admin "host=127.0.0.1 port={pg.port} user={ADMIN_USER} dbname={DB} sslmode=disable" {{
	password_env IAP_TEST_PG_ADMIN_PASSWORD
}}
grant reader app_reader
ttl 1h"""
        if args.unix:
            policy += f'\nupstream "host={pg.dir} port={pg.port} sslmode=disable"'
        caddy.text = pg_caddyfile(admin_port=caddy.admin_port, storage=caddy.storage, log_path=caddy.log_path,
                                  pg_port=caddy.port, https_port=free_port(), cert=cert, key=key,
                                  policy=policy.replace("\n", "\n\t\t\t\t\t"))
        caddy.start()

        tokens = {c: idp.token(c, AUD) for c in CLIENTS}
        direct = dict(host="127.0.0.1", port=pg.port, dbname=DB, user="bench", password="bench-pw")
        gateway = dict(host="127.0.0.1", port=caddy.port, dbname=DB, sslmode="require")

        # Warm-up: connections, the engine's key set, the token cache, the admin pool.
        timed_connects(5, **direct, sslmode="require")
        timed_connects(5, **gateway, user="u0@example.com", password=tokens["u0"])

        n = args.connects
        rows = []
        for label, kw, count in [
            ("direct, SCRAM, TLS", dict(direct, sslmode="require"), n),
            ("direct, SCRAM, no TLS", dict(direct, sslmode="disable"), n),
            ("gateway, re-used credential", dict(gateway, user="u0@example.com", password=tokens["u0"]), n),
        ]:
            rows.append((label, timed_connects(count, **kw)))
        fresh = []
        for i in range(1, FRESH + 1):
            fresh += timed_connects(1, **gateway, user=f"u{i}@example.com", password=tokens[f"u{i}"])
        rows.append((f"gateway, fresh identity (n={FRESH})", fresh))

        base = statistics.median(rows[0][1])
        print("\n## Connection setup (connect + SELECT 1 + close, sequential)\n")
        print("| path | median ms | p90 ms | vs direct TLS |")
        print("| --- | --- | --- | --- |")
        for label, xs in rows:
            xs = sorted(xs)
            med, p90 = statistics.median(xs), xs[int(len(xs) * 0.9) - 1]
            print(f"| {label} | {med:.2f} | {p90:.2f} | {med - base:+.2f} ms |")

        env = dict(os.environ)
        tps_direct = pgbench(args.seconds, args.clients, dict(env, PGPASSWORD="bench-pw"),
                             f"host=127.0.0.1 port={pg.port} dbname={DB} user=bench sslmode=require")
        profiler = None
        if args.profile:
            import threading
            import urllib.request

            def fetch():
                url = f"http://127.0.0.1:{caddy.admin_port}/debug/pprof/profile?seconds={max(1, args.seconds - 4)}"
                Path(args.profile).write_bytes(urllib.request.urlopen(url, timeout=args.seconds + 30).read())

            profiler = threading.Timer(2, fetch)
            profiler.start()
        tps_gateway = pgbench(args.seconds, args.clients, dict(env, PGPASSWORD=tokens["u0"]),
                              f"host=127.0.0.1 port={caddy.port} dbname={DB} user=u0@example.com sslmode=require")
        if profiler:
            profiler.join()
        print(f"\n## Relay throughput (pgbench -S, {args.clients} clients, {args.seconds}s each)\n")
        print("| path | tps | ratio |")
        print("| --- | --- | --- |")
        print(f"| direct, TLS | {tps_direct:.0f} | 1.00 |")
        leg = "Unix socket" if args.unix else "loopback TCP"
        print(f"| gateway (TLS to the gateway, {leg} to the server) | {tps_gateway:.0f} | {tps_gateway / tps_direct:.2f} |")
    finally:
        if caddy:
            caddy.stop()
        if idp:
            idp.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
