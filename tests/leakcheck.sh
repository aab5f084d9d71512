#!/usr/bin/env bash
# Runs the C ABI's tests (rust/ffi: unit tests and tests/*.rs) under valgrind's memcheck, as
# C calls them: every object the ABI hands out must be freed by its _free function, and no
# call may touch memory it does not own. A definite or indirect leak, an invalid read or
# write, or a use of uninitialised memory fails the run (`make leakcheck`).
#
# Possible leaks are not errors: Rust's test harness and std keep some thread-local and
# once-initialised allocations alive until exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
    echo "leakcheck: valgrind is missing (apt-get install valgrind)" >&2
    exit 1
fi

# The test binaries, built as `cargo test` builds them.
mapfile -t bins < <(cargo test --locked -p caddy-iap-ffi --lib --tests --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
if ((${#bins[@]} == 0)); then
    echo "leakcheck: no test binaries were built" >&2
    exit 1
fi

failed=0
for bin in "${bins[@]}"; do
    name=$(basename "$bin")
    log=$(mktemp)
    echo "== $name"
    if valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
        --errors-for-leak-kinds=definite,indirect --track-origins=yes --log-file="$log" \
        "$bin" --test-threads=1 -q; then
        echo "   no leaks, no invalid accesses"
    else
        echo "   FAILED under valgrind:" >&2
        cat "$log" >&2
        failed=1
    fi
    rm -f "$log"
done
exit $failed
