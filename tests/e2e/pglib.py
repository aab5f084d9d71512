"""A real PostgreSQL for the gateway tests, and a Caddy whose layer4 app fronts it.

- `Postgres`: a throwaway cluster (initdb + postgres) on 127.0.0.1, SCRAM for TCP logins, trust
  on its Unix socket for the test's own checks (`sql()`), stopped and removed afterwards.
  PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user.
- `pg_caddyfile()`: the Caddyfile of docs/postgres.md, with the test's ports, certificate and
  `iap_postgres` block.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from iaplib import free_port, stop_process, tail, wait_for

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)

ADMIN_USER = "iap_admin"
ADMIN_PASSWORD = "admin-pw-for-tests-only"
DB = "app"
PREFIX = "iap_"
MARKER = "caddy_iap_managed"

# The database the tests work on: two group roles and a table only one of them may write.
SETUP_SQL = f"""
CREATE ROLE {ADMIN_USER} LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}';
CREATE ROLE app_reader NOLOGIN;
CREATE ROLE app_writer NOLOGIN;
GRANT app_reader, app_writer TO {ADMIN_USER} WITH ADMIN OPTION;
"""
SETUP_APP_SQL = """
CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL);
INSERT INTO orders (item) VALUES ('apple'), ('pear');
GRANT SELECT ON orders TO app_reader;
GRANT SELECT, INSERT ON orders TO app_writer;
GRANT USAGE ON SEQUENCE orders_id_seq TO app_writer;
"""


def pg_bin(name: str) -> str:
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"PostgreSQL's {name} is missing: install postgresql (.ci/run does)", pytrace=False)
    return found


class Postgres:
    def __init__(self):
        # Not under pytest's tmp dir: its parents are private to root, and the server may run
        # as another user.
        self.dir = Path(tempfile.mkdtemp(prefix="iap-pg-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.as_postgres = os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", "postgres", "--"] if self.as_postgres else []) + list(args)

    def start(self) -> "Postgres":
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            self._cmd(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"),
            check=True, capture_output=True,
        )
        self.launch()
        self.sql(SETUP_SQL, db="postgres")
        self.sql(f"CREATE DATABASE {DB}", db="postgres")  # not inside a transaction
        self.sql(SETUP_APP_SQL)
        return self

    def launch(self) -> None:
        """Starts the server on the existing data directory and waits until it accepts."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(
                self._cmd(pg_bin("postgres"), "-D", str(self.data), "-k", str(self.dir),
                          "-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
                          "-c", "fsync=off", "-c", "log_connections=on",
                          "-c", "log_statement=all", "-c", "max_connections=200"),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        wait_for(lambda: self._ready(), 30, what="PostgreSQL to accept connections")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"postgres exited:\n{tail(self.log_path)}", pytrace=False)
        r = subprocess.run([pg_bin("pg_isready"), "-h", str(self.dir), "-p", str(self.port)], capture_output=True)
        return r.returncode == 0

    def sql(self, query: str, db: str = DB) -> str:
        """Runs SQL as the superuser over the Unix socket; returns psql's unaligned output."""
        r = subprocess.run(
            [pg_bin("psql"), "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-d", db,
             "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", query],
            capture_output=True, text=True, timeout=30,
        )
        assert r.returncode == 0, f"psql failed: {r.stderr}"
        return r.stdout.strip()

    def managed_roles(self) -> dict[str, bool]:
        """Login roles the gateway made: name -> can log in."""
        out = self.sql(
            "SELECT r.rolname || '|' || r.rolcanlogin FROM pg_roles r "
            "JOIN pg_auth_members m ON m.member = r.oid JOIN pg_roles g ON g.oid = m.roleid "
            f"WHERE g.rolname = '{MARKER}' ORDER BY 1"
        )
        roles = {}
        for line in filter(None, out.splitlines()):
            name, can = line.rsplit("|", 1)
            roles[name] = can == "true"
        return roles

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, for the gateway's TLS."""
    cert, key = directory / "pg-cert.pem", directory / "pg-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def pg_caddyfile(*, admin_port: int, storage: Path, log_path: Path, pg_port: int, https_port: int,
                 cert: Path, key: Path, policy: str) -> str:
    """A Caddyfile serving the PostgreSQL gateway on pg_port. The HTTPS site only loads the
    certificate the layer4 `tls` handler serves."""
    return f"""{{
	admin 127.0.0.1:{admin_port}
	auto_https off
	persist_config off
	storage file_system {storage}
	log {{
		level DEBUG
		output file {log_path}
	}}
	layer4 {{
		127.0.0.1:{pg_port} {{
			@pg_tls postgres {{
				tls enabled
			}}
			route @pg_tls {{
				postgres_tls
				tls {{
					connection_policy {{
						alpn postgresql
					}}
				}}
				iap_postgres {{
{policy}
				}}
			}}
			@pg postgres
			route @pg {{
				iap_postgres
			}}
		}}
	}}
}}

https://localhost:{https_port} {{
	bind 127.0.0.1
	tls {cert} {key}
	respond "ok"
}}
"""


def wait_until(predicate, timeout: float, what: str):
    return wait_for(predicate, timeout, interval=0.2, what=what)


def sleep_past(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.time()))
