#!/usr/bin/env bash
# Runs the caddy-iap end-to-end tests against bin/caddy (build it with `make caddy`).
#
#   tests/run-e2e.sh [pytest args...]     e.g. tests/run-e2e.sh -k refusals -x
#
# Needs node (>= 20), npm, go and python3 (>= 3.10). Installs nothing system-wide: the IdP's npm
# packages go to tests/idp/node_modules (npm ci, from package-lock.json) and the Python packages to
# tests/.venv (from tests/e2e/requirements.txt). Exits non-zero when any test fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if [[ ! -d idp/node_modules/oidc-provider || idp/package-lock.json -nt idp/node_modules/.package-lock.json ]]; then
    echo "run-e2e: npm ci in tests/idp" >&2
    (cd idp && npm ci --no-audit --no-fund)
fi

venv="$here/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum e2e/requirements.txt | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "run-e2e: creating $venv" >&2
    python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "run-e2e: installing e2e/requirements.txt into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r e2e/requirements.txt
    echo "$want" > "$stamp"
fi

# The Cosmos DB emulator (pikami/cosmium), from the Go module proxy at the version in
# tests/cosmium/go.mod.
if [[ ! -x .bin/cosmium || cosmium/go.sum -nt .bin/cosmium ]]; then
    echo "run-e2e: building the Cosmos DB emulator into tests/.bin/cosmium" >&2
    (cd cosmium && go build -o ../.bin/cosmium github.com/pikami/cosmium/cmd/server)
fi

if [[ ! -x "$here/../bin/caddy" ]]; then
    echo "run-e2e: $here/../bin/caddy is missing: run \`make caddy\` first (the tests that need it will fail)" >&2
fi

cd e2e
exec "$venv/bin/python" -m pytest -v -p no:cacheprovider "$@"
